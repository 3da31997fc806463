"""
Integration: real TCP, a real influxd started for these tests, and the real
twistd plugin.

Nothing here is skipped in CI: without influxd the tests fail there (see
L{tests.integration.influxd.require_influxd}).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.daemon import alive, kill, listening, run_twistd, wait_until
from tests.integration.influxd import InfluxServer, free_port, require_influxd
from tests.support import (
    SetTime,
    journal_status,
    make_settings,
    reference_devices_toml,
    reference_packet,
)
from weather.app.settings import Options, settings_from_options
from weather.app.tap import build_service
from weather.core.devices import si7021_humidity, si7021_temperature
from weather.server.protocol import ACK
from weather.tools.simulate import Upload, devices_toml, send_packet, tcp_connector

S = 1_000_000_000
DEVICES = reference_devices_toml(**{"1": "balcony", "2": "garden, north"})


def expected(packet: bytes, arrival_ns: int, interval_ns: int) -> dict[str, list]:
    """What a reference packet should become: (time, value) per measurement."""
    import struct

    records = list(struct.iter_unpack("<HHH", packet[9:]))
    n = len(records)
    result: dict[str, list] = {"light": [], "humidity": [], "temperature": []}
    for i, (lux, rh, t) in enumerate(records):
        when = arrival_ns - (n - 1 - i) * interval_ns
        result["light"].append((when, float(lux)))
        result["humidity"].append((when, si7021_humidity(rh)))
        result["temperature"].append((when, si7021_temperature(t)))
    return result


class InfluxTestCase(TestCase):
    database = "weather_test"

    def setUp(self) -> None:
        """A private influxd per test: it starts in well under a second."""
        require_influxd(self)
        self.influx = InfluxServer()
        self.influx.start()
        self.addCleanup(self.influx.stop)
        self.influx.create_database(self.database)

    def stored(self, measurement: str, place: str) -> list[tuple[int, float]]:
        return [
            (when, value)
            for when, value, tags in self.influx.points(measurement, self.database, "value")
            if tags.get("place") == place
        ]

    def start_simulated_fleet_server(self, device_ids, *args: str):
        """
        The assembled service on the real reactor, listening on a free
        loopback port, writing here, knowing simulated devices C{device_ids}.
        Returns the started service and its port; stopped after the test.
        """
        devices = self.mktemp()
        with open(devices, "w") as f:
            f.write(devices_toml(device_ids))
        settings = make_settings(
            self,
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--influx-url",
            self.influx.url,
            "--database",
            self.database,
            "--devices",
            devices,
            "--flush-interval",
            "0.05",
            *args,
        )
        service = build_service(settings, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service, service.listener.port.getHost().port


class ServiceIntoInfluxDBTests(InfluxTestCase):
    """The assembled service, in this process, over real TCP into real InfluxDB."""

    @inlineCallbacks
    def test_packetsLandWithValuesAndTimestamps(self):
        devices = self.mktemp()
        with open(devices, "w") as f:
            f.write(DEVICES)
        options = Options()
        options.parseOptions(
            [
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--influx-url",
                self.influx.url,
                "--database",
                self.database,
                "--devices",
                devices,
                "--flush-interval",
                "0.05",
                "--data-dir",
                self.mktemp(),
            ]
        )
        settings = settings_from_options(options, {})
        # The real thing: the journal commits in a thread of its own.
        service = build_service(settings, reactor)
        t0 = float(int(time.time()) - 7200)
        clock = SetTime(t0)
        service.listener.factory.wall = clock
        service.startService()
        stopped = False
        try:
            connect = tcp_connector(
                reactor, "127.0.0.1", service.listener.port.getHost().port
            )

            @inlineCallbacks
            def send(packet, cuts=()):
                """
                Send (in pieces cut at C{cuts}, a little apart), and wait
                until the server has taken the packet.
                """
                stats = service.pipeline.stats
                seen = stats.packets_accepted
                upload = Upload(packet, reactor, cuts, delay=0.01, ack_timeout=10)
                yield connect(upload)
                self.assertEqual((yield upload.done), "acknowledged")
                for _ in range(1000):
                    if stats.packets_accepted > seen:
                        return
                    yield deferLater(reactor, 0.01, lambda: None)
                self.fail("the server did not take the packet within 10 s")

            # Device 1: first packet in one piece; device 2 at the same moment,
            # split into three segments.
            first = reference_packet(30, device_id=1)
            other = reference_packet(30, device_id=2, start=7)
            yield send(first)
            yield send(other, [5, 100])
            # An hour and 100 s later (the station's clock runs slow), device 1
            # again, with two packets on one connection would be two uploads;
            # a station sends one: 30 more records.
            clock.now = t0 + 3700
            second = reference_packet(30, device_id=1, start=30)
            yield send(second, [1])
            yield service.stopService()
            stopped = True
        finally:
            if not stopped:
                yield service.stopService()

        t0_ns = int(t0) * S
        want = expected(first, t0_ns, 120 * S)
        later = expected(second, t0_ns + 3700 * S, 3700 * S // 30)
        for name in ("light", "humidity", "temperature"):
            self.assertEqual(self.stored(name, "balcony"), want[name] + later[name], name)
        self.assertEqual(
            self.stored("temperature", "garden, north"),
            expected(other, t0_ns, 120 * S)["temperature"],
        )
        self.assertEqual(service.pipeline.stats.packets_accepted, 3)
        self.assertEqual(service.writer.stats.points_written, 270)
        self.assertEqual(service.listener.factory.stats.packets_acknowledged, 3)
        status = journal_status(settings.data_dir)
        self.assertEqual((status.pending, status.quarantined), (0, 0))


class TwistdTestCase(InfluxTestCase):
    """Runs the installed twistd in a work directory of its own."""

    def setUp(self) -> None:
        super().setUp()
        self.workdir = tempfile.mkdtemp(prefix="weather-twistd-")
        self.addCleanup(shutil.rmtree, self.workdir, True)

    def run_twistd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_twistd(self.workdir, *args, timeout=timeout)


class TwistdPluginTests(TwistdTestCase):
    """The installed plugin, run as users run it."""

    def test_helpFromAnywhere(self) -> None:
        """twistd finds the plugin from the installed package, not the source tree."""
        result = self.run_twistd("weather", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in ("--port", "--influx-url", "--database", "--devices", "--batch-size"):
            self.assertIn(option, result.stdout)
        self.assertIn("[default: 8266]", result.stdout)

    def test_badOptionOneLine(self) -> None:
        result = self.run_twistd(
            "-n", "weather", "--data-dir", self.workdir, "--batch-size", "lots"
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.strip(), "weather: --batch-size 'lots': give a whole number"
        )

    def test_daemonLifecycle(self) -> None:
        """
        Daemonized with a log file: a packet lands in InfluxDB, SIGTERM stops
        the daemon cleanly, and the log holds no secret.
        """
        port = free_port()
        password = "pa55-Wd-never-logged"
        password_file = os.path.join(self.workdir, "password")
        with open(password_file, "w") as f:
            f.write(password + "\n")
        os.chmod(password_file, 0o600)
        logfile = os.path.join(self.workdir, "weather.log")
        pidfile = os.path.join(self.workdir, "weather.pid")
        data_dir = os.path.join(self.workdir, "data")
        result = self.run_twistd(
            "--logfile",
            logfile,
            "--pidfile",
            pidfile,
            "weather",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--influx-url",
            self.influx.url,
            "--database",
            self.database,
            "--username",
            "station-owner",
            "--password-file",
            password_file,
            "--flush-interval",
            "0.1",
            "--data-dir",
            data_dir,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        wait_until(lambda: os.path.exists(pidfile), what="pid file")
        with open(pidfile) as f:
            pid = int(f.read())
        self.addCleanup(kill, pid)
        wait_until(lambda: listening(port), what="daemon listening")
        packet = reference_packet(30)
        before = time.time_ns()
        self.assertEqual(send_packet("127.0.0.1", port, packet), ACK)
        wait_until(
            lambda: len(self.stored("temperature", "balcony")) == 30,
            what="30 temperatures in InfluxDB",
        )
        after = time.time_ns()
        stored = self.stored("temperature", "balcony")
        self.assertTrue(before <= stored[-1][0] <= after)
        self.assertEqual(stored[-1][0] - stored[0][0], 29 * 120 * S)
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), what="daemon exit")
        with open(logfile) as f:
            log = f.read()
        self.assertNotIn(password, log)
        self.assertIn("Listening for stations on", log)
        self.assertIn("InfluxDB 1.x at", log)
        self.assertIn("Main loop terminated.", log)
        self.assertIn(
            "Totals: 1 packet accepted, 0 quarantined on arrival or decoding; "
            "90 points written",
            log,
        )
        self.assertIn(f"journal in {data_dir}", log)
        self.assertIn("Journal closed: 0 packets to deliver", log)
        status = journal_status(data_dir)
        self.assertEqual((status.pending, status.quarantined), (0, 0))
        self.assertNotIn("Starting factory", log)
        self.assertFalse(os.path.exists(pidfile))
