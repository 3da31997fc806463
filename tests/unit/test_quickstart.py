"""C{make run}'s choices: the status page and self-statistics on, unless told."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from weather.tools.quickstart import STATUS_PORT, defaults, next_steps


class DefaultsTests(SynchronousTestCase):
    def test_statusPageAndSelfStatistics(self) -> None:
        self.assertEqual(
            defaults([]),
            [
                "--metrics-port",
                f"tcp:{STATUS_PORT}:interface=127.0.0.1",
                "--self-stats-interval",
                "60",
            ],
        )

    def test_usersChoiceWins(self) -> None:
        self.assertEqual(
            defaults(["--metrics-port=tcp:9000", "--self-stats-interval", "0"]), []
        )
        self.assertEqual(defaults(["--devices", "d.toml"])[0], "--metrics-port")

    def test_nextSteps(self) -> None:
        steps = next_steps([])
        self.assertIn("activate", steps)
        self.assertIn("weather simulate --port 8266", steps)
        self.assertIn(f"http://127.0.0.1:{STATUS_PORT}/", steps)
        self.assertNotIn("Status page", next_steps(["--metrics-port", "tcp:9000"]))
