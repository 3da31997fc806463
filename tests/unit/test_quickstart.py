"""C{make run}'s choices: the status page and self-statistics on, unless told."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from weather.tools.quickstart import (
    STATUS_PORT,
    defaults,
    influx_url,
    next_steps,
    parse,
)


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


class PortsTests(SynchronousTestCase):
    """make run PORT=... STATUS_PORT=... INFLUX_PORT=...: the Makefile's variables."""

    def test_defaults(self) -> None:
        options = parse(["--", "--devices", "d.toml"])
        self.assertEqual(
            (options.port, options.status_port, options.influx_port), ("8266", 9266, 8086)
        )
        self.assertEqual(options.args, ["--devices", "d.toml"])
        self.assertEqual(influx_url(options.influx_port), "http://localhost:8086")

    def test_otherPorts(self) -> None:
        options = parse(["--port=8267", "--status-port=9267", "--influx-port=8087", "--"])
        self.assertIn("--port 8267", next_steps([], "tcp:8267:interface=127.0.0.1"))
        self.assertEqual(options.args, [])
        self.assertEqual(influx_url(options.influx_port), "http://localhost:8087")
        self.assertEqual(
            defaults([], options.status_port)[1], "tcp:9267:interface=127.0.0.1"
        )
        steps = next_steps([], options.port, options.status_port)
        self.assertIn("weather simulate --port 8267", steps)
        self.assertIn("http://127.0.0.1:9267/", steps)
