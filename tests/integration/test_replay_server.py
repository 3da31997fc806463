"""
C{weather replay} while a real C{twistd weather} holds the data directory:
the packets of a device that was unknown are handed to the server (SIGHUP),
which stores them in a real influxd, shows the station and its readings on
its status page and counts them on /metrics; the points are those a replay
with no server running writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request

from tests.integration.daemon import Daemon, environment, wait_until
from tests.integration.influxd import free_port
from tests.integration.test_integration import TwistdTestCase
from tests.integration.test_serve import weather
from tests.support import reference_devices_toml, reference_packet
from weather.server.protocol import ACK
from weather.tools.simulate import send_packet

MEASUREMENTS = ("light", "humidity", "temperature")


class ReplayThroughServerTests(TwistdTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.devices = os.path.join(self.workdir, "devices.toml")
        self.describe("1")
        self.data_dir = os.path.join(self.workdir, "data")

    def describe(self, *devices: str) -> None:
        places = {"1": "balcony", "7": "shed"}
        with open(self.devices, "w") as f:
            f.write(reference_devices_toml(**{d: places[d] for d in devices}))

    def start(self) -> Daemon:
        self.port, self.metrics_port = free_port(), free_port()
        server = Daemon(
            [
                "-p",
                f"tcp:{self.port}:interface=127.0.0.1",
                "--metrics-port",
                f"tcp:{self.metrics_port}:interface=127.0.0.1",
                "--influx-url",
                self.influx.url,
                "--database",
                self.database,
                "--devices",
                self.devices,
                "--flush-interval",
                "0.05",
                "--data-dir",
                self.data_dir,
            ],
            self.workdir,
        )
        self.addCleanup(server.kill)
        server.wait_ready()
        return server

    def replay(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.weather("replay", *args)

    def weather(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [weather(), *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            env=environment(self.workdir),
        )

    def get(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode("utf-8")

    def points(self, database: str) -> dict[str, list[tuple[int, float]]]:
        return {
            m: [(t, value) for t, value, _ in self.influx.points(m, database, "value")]
            for m in MEASUREMENTS
        }

    def test_replayThroughTheServer(self) -> None:
        # Device 7 is unknown: its two uploads go to quarantine.
        server = self.start()
        for start in (0, 100):
            packet = reference_packet(30, device_id=7, start=start)
            self.assertEqual(send_packet("127.0.0.1", self.port, packet), ACK)
        wait_until(lambda: "Device 7 (from" in server.log(), what="the hint")
        server.stop()
        # The same journal, for a replay with no server running.
        alone = os.path.join(self.workdir, "alone")
        shutil.copytree(self.data_dir, alone)

        # Described, the server running again: the replay goes through it.
        self.describe("1", "7")
        server = self.start()
        result = self.replay("--data-dir", self.data_dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stderr,
            f"Replayed 2 packets into InfluxDB through the server running on "
            f"{self.data_dir} (pid {server.pid}); 0 stay in quarantine.\n",
        )
        log = server.log()
        self.assertIn("SIGHUP: re-read", log)
        self.assertIn("Replaying 2 packets requested by weather replay", log)
        self.assertIn("Station 7 (place=shed)", log)
        through = self.points(self.database)
        self.assertEqual([len(through[m]) for m in MEASUREMENTS], [60, 60, 60])

        metrics = self.get("/metrics")
        self.assertIn("weather_packets_replayed_total 2.0\n", metrics)
        page = self.get("/")
        self.assertIn(
            '<tr data-device="7"><td data-label="Station"><strong>7</strong> shed', page
        )
        self.assertIn("light <strong>229</strong> lx", page)  # the newest reading
        self.assertIn('<td class="n" data-label="Packets">2</td>', page)
        self.assertIn(
            "Nothing in quarantine.",
            self.weather("quarantine", "list", "--data-dir", self.data_dir).stdout,
        )
        server.stop()

        # With no server: the tool writes the same points itself.
        self.influx.create_database("alone")
        result = self.replay(
            "--data-dir",
            alone,
            "--devices",
            self.devices,
            "--influx-url",
            self.influx.url,
            "--database",
            "alone",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("through the server", result.stderr)
        self.assertEqual(self.points("alone"), through)
