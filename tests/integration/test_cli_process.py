"""The C{weather} command as a process: the console script's module runs."""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_cli import JournalFixture


class ConsoleScriptTests(SynchronousTestCase, JournalFixture):
    def test_consoleScript(self) -> None:
        """Installed as 'weather' (and runnable as python -m weather.tools.cli)."""
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "weather.tools.cli",
                "journal",
                "status",
                "-d",
                self.make_journal(),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Pending:", result.stdout)
