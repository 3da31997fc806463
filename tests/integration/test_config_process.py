"""
A server run from a config file alone (options and station profiles, SIGHUP
re-reading the profiles), and the weather command finding its journal
without being told where.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.daemon import (
    LOOPBACK,
    Daemon,
    environment,
    free_listening_port,
    wait_until,
)
from tests.support import reference_devices_toml, reference_packet
from weather.server.protocol import ACK
from weather.tools.simulate import send_packet

#: Nothing listens there: packets stay in the journal, waiting for InfluxDB.
NO_INFLUX = f"http://{LOOPBACK}:9"


class ConfigFileServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        self.config = os.path.join(self.workdir, "weather.toml")
        self.port = free_listening_port()
        self.metrics_port = free_listening_port()

    def write_config(self, **places: str) -> None:
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(
                f'port = "tcp:{self.port}:interface={LOOPBACK}"\n'
                f'data-dir = "{self.data_dir}"\n'
                f'influx-url = "{NO_INFLUX}"\n'
                "shutdown-timeout = 0.5\n"
                f"metrics-port = {self.metrics_port}\n\n" + reference_devices_toml(**places)
            )

    def upload(self, device: int) -> bytes:
        packet = reference_packet(device_id=device)
        return send_packet(LOOPBACK, self.port, packet, timeout=10)

    def weather(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The weather command, as the user who ran the server, elsewhere."""
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        return subprocess.run(
            [sys.executable, "-m", "weather.tools.cli", *argv],
            cwd=elsewhere,
            env=environment(self.workdir),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_configAlone(self) -> None:
        self.write_config(**{"1": "balcony"})
        server = Daemon(["--config", self.config], self.workdir)
        self.addCleanup(server.kill)
        server.wait_ready(timeout=30)
        log = server.log()
        self.assertIn(f"Options from {self.config} (the command line wins)", log)
        self.assertIn(f"1 station profile from {self.config}", log)
        self.assertIn(
            f"Listening for stations on tcp:{self.port}:interface={LOOPBACK}", log
        )

        self.assertEqual(self.upload(7), ACK)  # unknown: quarantined
        self.write_config(**{"1": "balcony", "7": "shed"})
        server.signal(signal.SIGHUP)
        wait_until(lambda: f"SIGHUP: re-read {self.config}" in server.log(), what="reload")
        self.assertIn("added 7", server.log())
        self.assertEqual(self.upload(7), ACK)  # known now: waits for InfluxDB

        status = self.weather("journal", "status")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn(f"Journal:      {self.data_dir}/journal.sqlite3", status.stdout)
        self.assertIn("Pending:      1 packet", status.stdout)
        self.assertRegex(
            status.stderr,
            rf"^weather: reading the journal of the server started [0-9: -]+ in "
            rf"{self.data_dir} \(status page http://127\.0\.0\.1:{self.metrics_port}/\)\n$",
        )
        self.assertEqual(server.stop(), -signal.SIGTERM)
        self.assertNotIn("Traceback", server.log())

        listed = self.weather("quarantine", "list")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn("unknown-device: no profile for device 7", listed.stdout)
        self.assertIn(f" in {self.data_dir} ", listed.stderr)
