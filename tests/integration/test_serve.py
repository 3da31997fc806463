"""
C{weather serve}, the virtualenv's console script, as a process: the server
as C{twistd -n weather} runs it, for installs without twistd on PATH (pipx).
A station's upload is acknowledged and lands in a real influxd; SIGHUP
re-reads the devices file, SIGUSR1 rotates the log file (or says there is
none); SIGTERM and SIGINT stop it cleanly, and it ends by the signal, as
twistd does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.daemon import Daemon, environment, wait_until
from tests.integration.influxd import free_port
from tests.integration.test_integration import TwistdTestCase
from tests.support import reference_devices_toml, reference_packet
from weather.server.protocol import ACK
from weather.tools.simulate import send_packet


def weather() -> str:
    """The console script next to this Python: the virtualenv's."""
    path = os.path.join(os.path.dirname(sys.executable), "weather")
    if not os.path.exists(path):
        raise RuntimeError("weather not found: run with the project's virtualenv's python")
    return path


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class ServeTests(TwistdTestCase):
    def start(self, *extra: str) -> Daemon:
        self.port = free_port()
        self.devices = os.path.join(self.workdir, "devices.toml")
        with open(self.devices, "w") as f:
            f.write(reference_devices_toml(**{"1": "balcony"}))
        arguments = [
            "-p",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--influx-url",
            self.influx.url,
            "--database",
            self.database,
            "--devices",
            self.devices,
            "--flush-interval",
            "0.05",
            "--data-dir",
            os.path.join(self.workdir, "data"),
            *extra,
        ]
        server = Daemon(arguments, self.workdir, command=[weather(), "serve"])
        self.addCleanup(server.kill)
        return server

    def test_asTwistdNoDaemon(self) -> None:
        server = self.start()
        server.wait_ready()
        self.assertEqual(send_packet("127.0.0.1", self.port, reference_packet(30)), ACK)
        wait_until(
            lambda: len(self.stored("temperature", "balcony")) == 30, what="30 readings"
        )

        # SIGHUP: the devices file is read again.
        with open(self.devices, "w") as f:
            f.write(reference_devices_toml(**{"1": "balcony", "2": "garden"}))
        server.signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: re-read" in server.log(), what="SIGHUP reload")
        self.assertEqual(
            send_packet("127.0.0.1", self.port, reference_packet(30, device_id=2)), ACK
        )
        wait_until(lambda: len(self.stored("light", "garden")) == 30, what="garden")

        # SIGUSR1 without a log file: said, and the server runs on.
        server.signal(signal.SIGUSR1)
        wait_until(lambda: "nothing to rotate" in server.log(), what="SIGUSR1 answered")
        self.assertTrue(server.running)

        self.assertEqual(server.stop(), -signal.SIGTERM)  # as twistd -n ends
        log = server.log()
        self.assertIn("Received SIGTERM, shutting down.", log)
        self.assertIn("Journal closed: 0 packets to deliver at the next start", log)
        self.assertTrue(log.rstrip().endswith("Server Shut Down."), log[-500:])
        self.assertNotIn("Traceback", log)
        self.assertEqual(os.listdir(self.workdir).count("twistd.pid"), 0)

    def test_logFile(self) -> None:
        """--logfile: the log goes there, SIGUSR1 rotates it, Ctrl-C stops."""
        logfile = os.path.join(self.workdir, "weather.log")
        server = self.start("--logfile", logfile, "--log-keep", "2")
        server.wait_ready(lambda: "Listening for stations on" in read(logfile))
        self.assertEqual(send_packet("127.0.0.1", self.port, reference_packet(3)), ACK)
        server.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(logfile + ".1"), what="rotated log")
        self.assertIn("Listening for stations on", read(logfile + ".1"))
        server.signal(signal.SIGINT)
        server.process.wait(30)
        self.assertEqual(server.returncode, -signal.SIGINT)
        self.assertIn("Server Shut Down.", read(logfile))
        self.assertNotIn("Listening for stations on", server.log())  # not on stdout
        server.stop()


class ServeStartTests(SynchronousTestCase):
    def test_badOptionOneLine(self) -> None:
        """A start-up mistake: one line and exit status 1, as twistd -n weather."""
        workdir = self.mktemp()
        os.makedirs(workdir)
        result = subprocess.run(
            [weather(), "serve", "--data-dir", workdir, "--batch-size", "lots"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
            env=environment(workdir),
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.strip(), "weather: --batch-size 'lots': give a whole number"
        )
