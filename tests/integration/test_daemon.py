"""
The daemon as an operator runs it for months: daemonized with a log file,
scraped for metrics, its log rotated with SIGUSR1, its devices file re-read
with SIGHUP (a good one and a bad one), stopped with SIGTERM; every reading
lands in a real influxd.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon import alive, kill, wait_until
from tests.integration.influxd import free_port
from tests.integration.test_integration import TwistdTestCase
from tests.support import journal_status, reference_devices_toml, reference_packet
from weather.server.protocol import ACK
from weather.tools.simulate import send_packet


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def samples(text: str) -> dict[str, dict[tuple, float]]:
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value
            )
    return found


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class OperatedDaemonTests(TwistdTestCase):
    def start_daemon(self, *args: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.logfile = os.path.join(self.workdir, "weather.log")
        self.pidfile = os.path.join(self.workdir, "weather.pid")
        self.data_dir = os.path.join(self.workdir, "data")
        self.devices = os.path.join(self.workdir, "devices.toml")
        self.write_devices(reference_devices_toml(**{"1": "balcony"}))
        result = self.run_twistd(
            "--logfile",
            self.logfile,
            "--pidfile",
            self.pidfile,
            "weather",
            "--port",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--influx-url",
            self.influx.url,
            "--database",
            self.database,
            "--devices",
            self.devices,
            "--flush-interval",
            "0.1",
            "--data-dir",
            self.data_dir,
            *args,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        wait_until(lambda: os.path.exists(self.pidfile), what="pid file")
        self.pid = int(read(self.pidfile))
        self.addCleanup(kill, self.pid)
        wait_until(lambda: self.get("/health")[0] == 200, what="daemon healthy", timeout=30)

    def write_devices(self, text: str) -> None:
        with open(self.devices, "w", encoding="utf-8") as f:
            f.write(text)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            return http_get(f"http://127.0.0.1:{self.metrics_port}{path}")
        except OSError:
            return 0, b""

    def signal_and_wait(self, signum: int, text: str, what: str) -> None:
        """Send C{signum}; wait for C{text} in the current log file."""
        os.kill(self.pid, signum)
        wait_until(lambda: text in read(self.logfile), what=what)
        self.assertTrue(alive(self.pid), f"the daemon died of {what}")

    def test_operatedForMonths(self) -> None:
        self.start_daemon("--log-keep", "3")
        # A packet lands; /metrics and /health say so.
        self.assertEqual(send_packet("127.0.0.1", self.port, reference_packet(30)), ACK)
        wait_until(
            lambda: len(self.stored("temperature", "balcony")) == 30, what="30 temperatures"
        )
        code, body = self.get("/metrics")
        self.assertEqual(code, 200)
        figures = samples(body.decode())
        self.assertEqual(figures["weather_packets_accepted_total"], {(): 1.0})
        self.assertEqual(figures["weather_points_written_total"], {(): 90.0})
        self.assertEqual(figures["weather_connections_accepted_total"][()], 1.0)
        station = (("device", "1"), ("place", "balcony"))
        self.assertEqual(figures["weather_station_records_total"], {station: 30.0})
        last_seen = figures["weather_station_last_seen_timestamp_seconds"][station]
        self.assertLess(abs(last_seen - time.time()), 60)
        self.assertGreater(figures["process_resident_memory_bytes"][()], 1e6)
        code, body = self.get("/health")
        self.assertEqual((code, json.loads(body)["status"]), (200, "ok"))

        # SIGUSR1: the log is rotated; the old lines are in weather.log.1.
        self.signal_and_wait(signal.SIGUSR1, "rotated", "rotation on SIGUSR1")
        rotated = read(self.logfile + ".1")
        self.assertIn("Listening for stations on", rotated)
        self.assertNotIn("Listening for stations on", read(self.logfile))

        # Device 2 is unknown: quarantined, not lost.
        self.assertEqual(
            send_packet("127.0.0.1", self.port, reference_packet(30, device_id=2)), ACK
        )
        wait_until(
            lambda: "Device 2 (from" in read(self.logfile), what="unknown device line"
        )

        # SIGHUP with a bad file: old profiles kept, the daemon runs on.
        self.write_devices("[devices.1]\nvalues = 7\n")
        self.signal_and_wait(
            signal.SIGHUP, "still using the 1 profile loaded", "a bad devices file"
        )
        # SIGHUP with a good file: device 2 is decoded from the next packet on.
        self.write_devices(reference_devices_toml(**{"1": "balcony", "2": "garden"}))
        self.signal_and_wait(signal.SIGHUP, "SIGHUP: re-read", "a good devices file")
        self.assertEqual(
            send_packet("127.0.0.1", self.port, reference_packet(30, device_id=2)), ACK
        )
        wait_until(
            lambda: len(self.stored("temperature", "garden")) == 30, what="garden stored"
        )
        self.assertEqual(
            send_packet("127.0.0.1", self.port, reference_packet(30, start=30)), ACK
        )
        wait_until(
            lambda: len(self.stored("temperature", "balcony")) == 60,
            what="second balcony packet",
        )

        # SIGTERM: a clean exit, everything accounted for.
        os.kill(self.pid, signal.SIGTERM)
        wait_until(lambda: not alive(self.pid), what="daemon exit")
        self.assertFalse(os.path.exists(self.pidfile))
        log = read(self.logfile)
        self.assertIn("Main loop terminated.", log)
        self.assertIn(
            "Totals: 3 packets accepted, 1 quarantined on arrival or decoding; "
            "270 points written",
            log,
        )
        for measurement in ("light", "humidity", "temperature"):
            self.assertEqual(len(self.stored(measurement, "balcony")), 60)
            self.assertEqual(len(self.stored(measurement, "garden")), 30)
        status = journal_status(self.data_dir)
        # The first device-2 packet waits in quarantine for 'weather replay'.
        self.assertEqual((status.pending, status.quarantined), (0, 1))
        self.assertEqual(
            sorted(os.listdir(self.workdir)),
            # .local: HOME is the work directory; the server records its
            # data directory there for the weather command.
            [".local", "data", "devices.toml", "weather.log", "weather.log.1"],
        )

    def test_jsonLogLines(self) -> None:
        """--log-format json: every line of the log file is one JSON object."""
        self.start_daemon("--log-format", "json")
        self.assertEqual(send_packet("127.0.0.1", self.port, reference_packet(30)), ACK)
        wait_until(lambda: len(self.stored("temperature", "balcony")) == 30, what="stored")
        os.kill(self.pid, signal.SIGTERM)
        wait_until(lambda: not alive(self.pid), what="daemon exit")
        events = [json.loads(line) for line in read(self.logfile).splitlines()]
        self.assertTrue(all({"time", "level", "message"} <= set(e) for e in events))
        listening = [e for e in events if e["message"].startswith("Listening for")]
        self.assertEqual(len(listening), 1)
        self.assertEqual(listening[0]["where"], f"tcp:{self.port}:interface=127.0.0.1")
