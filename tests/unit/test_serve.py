"""
C{weather serve}: twistd's own runner with twistd's options, as C{twistd
--nodaemon --pidfile= weather ...} would have them (the process itself, its
signals and log: tests/integration/test_serve.py).
"""

from __future__ import annotations

import io
import sys

from twisted.python import usage
from twisted.scripts.twistd import ServerOptions as TwistdOptions
from twisted.trial.unittest import SynchronousTestCase

from weather.app.options import Options
from weather.tools import cli
from weather.tools.cli import main
from weather.tools.serve import ServeOptions, serve


def twistd_config(*argv: str) -> TwistdOptions:
    """What twistd makes of C{twistd ARGV}."""
    config = TwistdOptions()
    config.parseOptions(list(argv))
    return config


class ServeTests(SynchronousTestCase):
    def serve(self, *argv: str) -> TwistdOptions:
        """Run C{weather serve ARGV} with a runner that only keeps its config."""
        ran: list[TwistdOptions] = []
        options = ServeOptions()
        options.parseOptions(list(argv))
        self.assertEqual(serve(options, ran.append), 0)
        [config] = ran
        return config

    def test_asTwistdNoDaemon(self) -> None:
        """The plugin, its options and twistd's, as twistd -n --pidfile= has them."""
        argv = (
            "-p",
            "tcp:8266:interface=127.0.0.1",
            "--allow",
            "192.0.2.0/24",
            "--allow=10.0.0.7",
            "--insecure",
            "-d",
            "/var/lib/weather",
        )
        config = self.serve(*argv)
        expected = twistd_config("--nodaemon", "--pidfile=", "weather", *argv)
        self.assertEqual(config.subCommand, "weather")
        self.assertTrue(config["nodaemon"])
        self.assertEqual(config["pidfile"], "")
        self.assertIsNone(config["logfile"])
        for name in ("nodaemon", "pidfile", "logfile", "syslog", "umask", "uid"):
            self.assertEqual(config[name], expected[name], name)
        self.assertEqual(dict(config.subOptions), dict(expected.subOptions))
        self.assertEqual(config.subOptions["allow"], ["192.0.2.0/24", "10.0.0.7"])
        self.assertTrue(config.subOptions["insecure"])
        self.assertIs(config.subOptions.parent, config)  # as makeService finds twistd's

    def test_logfile(self) -> None:
        """twistd's --logfile, anywhere among the server's options."""
        config = self.serve("--port", "9000", "--logfile", "weather.log", "--log-keep=3")
        self.assertEqual(config["logfile"], "weather.log")
        self.assertEqual(config.subOptions["port"], "9000")
        self.assertEqual(config.subOptions["log-keep"], "3")
        self.assertNotIn("logfile", config.subOptions)

    def test_badOptionsBeforeTwistd(self) -> None:
        """The server's options are read first: a mistake is weather's usage error."""
        ran: list[object] = []
        self.patch(cli, "serve", lambda options: ran.append(options) or 0)
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["serve", "--prot", "1"], out, err), 2)
        self.assertEqual(
            err.getvalue(),
            "weather: unknown option --prot; did you mean --port? --help lists them\n",
        )
        self.assertEqual(main(["serve", "extra"], out, err), 2)
        self.assertEqual(ran, [])
        self.assertEqual(main(["serve", "-p", "1"], out, err), 0)
        self.assertEqual(len(ran), 1)

    def test_helpShowsTheServersOptions(self) -> None:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertRaises(SystemExit, main, ["serve", "--help"])
        text = out.getvalue()
        self.assertTrue(
            text.startswith("Usage: weather serve [--logfile FILE] [server options]\n")
        )
        self.assertIn("--logfile=", text)
        server_options = Options().getUsage().rsplit("\n\n", 1)[0]
        self.assertIn("\nStations and listener:\n  -p, --port=", server_options)
        self.assertIn(server_options, text)
        words = " ".join(text.split())
        self.assertIn("exactly as 'twistd --nodaemon --pidfile= weather' does", words)

    def test_sameDeclarations(self) -> None:
        """The server's options, each declared once: nothing of its own but --logfile."""
        own = set(ServeOptions().docs) - set(Options().docs)
        self.assertEqual(own, {"logfile"})
        self.assertTrue(issubclass(ServeOptions, Options))
        self.assertRaises(usage.UsageError, ServeOptions().parseOptions, ["--logfile"])
