"""
The weather command finds the journal of the running or last server: the
server records its data directory at start (best effort), the tools read it
when told no directory.  Precedence: --data-dir, the --config file's,
$WEATHER_DATA_DIR, the record, the default.
"""

from __future__ import annotations

import json
import os
import time

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_cli import JournalFixture, run
from weather.app.lastserver import (
    RECORD_NAME,
    RecordService,
    ServerRecord,
    read_record,
    record_path,
    status_page_url,
)
from weather.app.options import metrics_port
from weather.tools.cli import ReplayOptions

T0 = 1_700_000_000.5


class StatusPageTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        for endpoint, url in [
            (metrics_port("9266"), "http://127.0.0.1:9266/"),
            ("tcp:9266", "http://127.0.0.1:9266/"),
            ("tcp:port=9266:interface=0.0.0.0", "http://127.0.0.1:9266/"),
            ("tcp:9266:interface=192.168.1.5", "http://192.168.1.5:9266/"),
            ("tcp6:9266", "http://[::1]:9266/"),
            ("tcp6:9266:interface=2001\\:db8\\:\\:5", "http://[2001:db8::5]:9266/"),
            ("tcp:interface=127.0.0.2:9266", "http://127.0.0.2:9266/"),
        ]:
            self.assertEqual(status_page_url(endpoint), url, endpoint)

    def test_noURL(self) -> None:
        """No status page, or none whose URL the endpoint string gives."""
        for endpoint in [
            None,
            "tcp:0:interface=127.0.0.1",
            "tcp:interface=127.0.0.1",
            "unix:/run/weather-status.sock",
            "ssl:9266:privateKey=key.pem",
            "systemd:domain=INET:index=1",
        ]:
            self.assertIsNone(status_page_url(endpoint), endpoint)


class RecordTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = os.path.abspath(self.mktemp())
        self.environ = {"HOME": self.home}
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)

    def start(self, status_page: str | None = None) -> RecordService:
        service = RecordService(
            record_path(self.environ), self.data_dir, status_page, wall=lambda: T0
        )
        service.startService()
        return service

    def test_where(self) -> None:
        """Beside the default data directory."""
        self.assertEqual(
            record_path(self.environ), f"{self.home}/.local/state/{RECORD_NAME}"
        )
        self.assertEqual(
            record_path({"XDG_STATE_HOME": "/state", "HOME": self.home}),
            f"/state/{RECORD_NAME}",
        )

    def test_written(self) -> None:
        self.start("http://127.0.0.1:9266/")
        record = read_record(self.environ)
        self.assertEqual(record, ServerRecord(self.data_dir, T0, "http://127.0.0.1:9266/"))
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(T0))
        self.assertEqual(
            record.describe(),
            f"the journal of the server started {when} in {self.data_dir} "
            "(status page http://127.0.0.1:9266/)",
        )
        self.assertEqual(
            os.listdir(os.path.dirname(record_path(self.environ))), [RECORD_NAME]
        )

    def test_replaced(self) -> None:
        """The last server started wins."""
        self.start()
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)
        self.start()
        self.assertEqual(read_record(self.environ).data_dir, self.data_dir)
        self.assertIsNone(read_record(self.environ).status_page)

    def test_cannotWrite(self) -> None:
        """A record that cannot be written is one info line; the server starts."""
        with open(self.home, "w"):
            pass  # HOME is a file: no directory can be made in it
        with capturedLogs() as events:
            service = self.start()
        self.assertTrue(service.running)
        (event,) = events
        self.assertEqual(event["log_level"].name, "info")
        self.assertEqual(
            formatEvent(event),
            "Cannot record the data directory for the weather command in "
            f"{record_path(self.environ)} (Not a directory): give it --data-dir "
            f"{self.data_dir}",
        )
        self.assertIsNone(read_record(self.environ))

    def test_stale(self) -> None:
        """A record whose directory is gone is ignored."""
        self.start()
        os.rmdir(self.data_dir)
        self.assertIsNone(read_record(self.environ))

    def test_notARecord(self) -> None:
        path = record_path(self.environ)
        os.makedirs(os.path.dirname(path))
        for text in [
            "",
            "{",
            "[]",
            json.dumps({"data_dir": self.data_dir}),
            json.dumps({"data_dir": self.data_dir, "started": "now"}),
            json.dumps({"data_dir": 7, "started": T0}),
            json.dumps({"data_dir": self.data_dir, "started": T0, "pid": 1}),
        ]:
            with open(path, "w") as f:
                f.write(text)
            self.assertIsNone(read_record(self.environ), text)


class PrecedenceTests(SynchronousTestCase, JournalFixture):
    """Which journal weather journal status reads."""

    def setUp(self) -> None:
        self.home = os.path.abspath(self.mktemp())
        self.patch(os, "environ", {"HOME": self.home})
        self.recorded = os.path.abspath(self.make_journal())
        RecordService(record_path(os.environ), self.recorded, None).startService()

    def journal(self, *argv: str) -> tuple[str, str]:
        """The journal read and what was said on stderr."""
        code, out, err = run("journal", "status", *argv)
        self.assertEqual(code, 0, err)
        return out.splitlines()[0].split()[1], err

    def config(self, data_dir: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f'data-dir = "{data_dir}"\n')
        return path

    def test_recorded(self) -> None:
        """Nothing given: the last server's, and the tools say so."""
        journal, err = self.journal()
        self.assertEqual(journal, f"{self.recorded}/journal.sqlite3")
        self.assertTrue(
            err.startswith("weather: reading the journal of the server started "), err
        )
        self.assertTrue(err.endswith(f" in {self.recorded}\n"), err)

    def test_quarantineAndReplay(self) -> None:
        code, out, err = run("quarantine", "list")
        self.assertEqual(code, 0, err)
        self.assertIn(f" in {self.recorded}\n", err)
        self.assertIn("unknown_device", out)
        replay = ReplayOptions()
        replay.parseOptions(["--dry-run"])
        self.assertEqual(replay.data_dir(), self.recorded)
        self.assertEqual(replay.last_server(), read_record(os.environ))

    def test_variableWins(self) -> None:
        other = self.make_journal()
        os.environ["WEATHER_DATA_DIR"] = other
        self.assertEqual(self.journal(), (f"{os.path.abspath(other)}/journal.sqlite3", ""))

    def test_configWins(self) -> None:
        other, third = self.make_journal(), self.make_journal()
        os.environ["WEATHER_DATA_DIR"] = third
        self.assertEqual(
            self.journal("--config", self.config(other)),
            (f"{os.path.abspath(other)}/journal.sqlite3", ""),
        )

    def test_optionWins(self) -> None:
        other, third = self.make_journal(), self.make_journal()
        os.environ["WEATHER_DATA_DIR"] = third
        self.assertEqual(
            self.journal("--data-dir", other, "--config", self.config(third)),
            (f"{os.path.abspath(other)}/journal.sqlite3", ""),
        )

    def test_badConfig(self) -> None:
        """A --config file that cannot be used: one line, exit 1."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("prot = 1\n")
        code, _, err = run("journal", "status", "--config", path)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("weather: --config "), err)
        self.assertIn("unknown option 'prot'", err)
        self.assertEqual(err.count("\n"), 1)

    def test_staleRecord(self) -> None:
        """A record whose directory is gone: the default directory."""
        os.rename(self.recorded, self.mktemp())
        code, _, err = run("journal", "status")
        self.assertEqual(code, 1)
        self.assertIn(f"no journal in {self.home}/.local/state/weather", err)
        self.assertNotIn("reading", err)
