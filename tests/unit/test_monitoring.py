"""
The operator's view of a running server on a fake reactor: the Prometheus
exposition (parsed back), /health through its transitions, the HTTP pages,
and the self-statistics written to InfluxDB.
"""

from __future__ import annotations

import json
import socket

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.fakeinflux import FakeInfluxDB
from tests.support import (
    ManualDiskWorker,
    build_packet,
    build_test_service,
    header_bytes,
    make_settings,
    reference_packet,
)
from weather.app.tap import SPARE_DESCRIPTORS
from weather.ops.selfstats import MEASUREMENT, SelfStatsReporter, self_stat_readings
from weather.ops.web import (
    HTTP_CONNECTIONS,
    HTTP_MAX_BODY,
    HTTP_REQUEST_TIMEOUT,
    ConnectionLimit,
)
from weather.server.clock import FakeClockStatus
from weather.server.pipeline import REJECTION_REASONS
from weather.server.service import WeatherService

T0 = 1_700_000_000
PEER = IPv4Address("TCP", "192.0.2.7", 40123)


def self_stats_reporter(service: WeatherService) -> SelfStatsReporter:
    """The reporter whose timer the service runs (see L{weather.app.tap})."""
    for timer in service.monitoring:
        call = getattr(timer, "call", (None,))[0]
        reporter = getattr(call, "__self__", None)
        if isinstance(reporter, SelfStatsReporter):
            return reporter
    raise AssertionError("no self-statistics timer")


class MonitoringTestCase(SynchronousTestCase):
    ARGS = ("--flush-interval", "600", "--metrics-port", "9266")

    def setUp(self) -> None:
        self.build()

    def build(self, *args: str) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(T0)
        self.fake = FakeInfluxDB(clock=lambda: 0)
        self.influx = StubTreq(self.fake)
        self.settings = make_settings(self, *self.ARGS, *args)
        self.service = build_test_service(self, self.settings, self.reactor, self.influx)
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.service.running:
            self.service.stopService()
            self.reactor.advance(60)
            self.influx.flush()

    @property
    def http(self) -> StubTreq:
        return StubTreq(self.service.monitoring[0].factory.wrappedFactory.resource)

    def send(self, data: bytes, peer=PEER) -> StringTransport:
        factory = self.service.listener.factory
        protocol = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        protocol.connectionLost(None)
        return transport

    def deliver(self) -> None:
        """Let the writer send what it holds and InfluxDB answer."""
        self.service.writer.flush()
        self.influx.flush()

    def get(self, path: str, **kwargs):
        client = self.http
        response = self.successResultOf(client.get(f"http://localhost{path}", **kwargs))
        body = self.successResultOf(response.content())
        return response, body

    def metrics(self) -> dict[str, dict[tuple, float]]:
        """Every sample of /metrics: name -> {sorted labels: value}."""
        response, body = self.get("/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(
            response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
        )
        samples: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[key] = sample.value
        return samples


class MetricsTests(MonitoringTestCase):
    def test_listensOnLoopback(self) -> None:
        """A bare --metrics-port number is bound to 127.0.0.1 only."""
        self.service.startService()
        ports = [(port, interface) for port, _, _, interface in self.reactor.tcpServers]
        self.assertIn((9266, "127.0.0.1"), ports)

    def test_countsBeforeAnything(self) -> None:
        """Every counter exists at zero from the start, every reason labelled."""
        self.service.startService()
        samples = self.metrics()
        self.assertEqual(samples["weather_packets_accepted_total"], {(): 0.0})
        self.assertEqual(samples["weather_packets_replayed_total"], {(): 0.0})
        self.assertEqual(
            set(samples["weather_packets_rejected_total"]),
            {(("reason", reason),) for reason in REJECTION_REASONS},
        )
        self.assertEqual(
            set(samples["weather_connections_refused_total"]),
            {(("reason", r),) for r in ("not_allowed", "server_limit")},
        )
        self.assertEqual(
            samples["weather_connections_held_total"],
            {(("reason", r),): 0.0 for r in ("peer_limit", "rate_limited")},
        )
        for name in (
            "weather_connections_held_too_long_total",
            "weather_connections_past_deadline_total",
            "weather_connections_cut_for_room_total",
            "weather_descriptors_short_total",
        ):
            self.assertEqual(samples[name], {(): 0.0}, name)
        self.assertEqual(samples["weather_connections_held_now"], {(): 0.0})
        self.assertEqual(samples["weather_accepting"], {(): 1.0})
        self.assertEqual(samples["weather_journal_full"], {(): 0.0})
        self.assertIn("process_resident_memory_bytes", samples)
        self.assertEqual(
            samples["weather_build_info"][
                (("version", __import__("weather").__version__),)
            ],
            1.0,
        )

    def test_packetsAndPoints(self) -> None:
        """Packets, records, readings, points and write figures after two uploads."""
        self.service.startService()
        self.send(reference_packet())
        self.deliver()
        self.reactor.advance(3600)
        self.send(reference_packet())
        self.send(header_bytes(6, measurement_every=0) + bytes(6))
        self.deliver()
        samples = self.metrics()
        self.assertEqual(samples["weather_connections_accepted_total"], {(): 3.0})
        self.assertEqual(samples["weather_connections_active"], {(): 0.0})
        self.assertEqual(samples["weather_packets_accepted_total"], {(): 2.0})
        # The rejected packet is kept too (in quarantine): acknowledged.
        self.assertEqual(samples["weather_packets_acknowledged_total"], {(): 3.0})
        self.assertEqual(samples["weather_records_decoded_total"], {(): 60.0})
        self.assertEqual(samples["weather_readings_decoded_total"], {(): 180.0})
        self.assertEqual(samples["weather_points_written_total"], {(): 180.0})
        rejected = samples["weather_packets_rejected_total"]
        self.assertEqual(sum(rejected.values()), 1.0)
        self.assertEqual(rejected[(("reason", "zero-measurement-every"),)], 1.0)
        self.assertEqual(samples["weather_write_duration_seconds_count"], {(): 2.0})
        self.assertEqual(samples["weather_write_batch_points_sum"], {(): 180.0})
        buckets = samples["weather_write_batch_points_bucket"]
        self.assertEqual(buckets[(("le", "50.0"),)], 0.0)
        self.assertEqual(buckets[(("le", "100.0"),)], 2.0)
        self.assertEqual(samples["weather_points_pending"], {(): 0.0})

    def test_stations(self) -> None:
        """Per station: last seen, packets, records, intervals and drift."""
        self.service.startService()
        self.send(reference_packet())
        self.deliver()
        # One hour later by the station's clock, 36 s later by ours: 1 % slow.
        self.reactor.advance(3636)
        self.send(reference_packet())
        self.deliver()
        samples = self.metrics()
        key = (("device", "1"), ("place", "balcony"))
        self.assertEqual(samples["weather_station_packets_total"], {key: 2.0})
        self.assertEqual(samples["weather_station_records_total"], {key: 60.0})
        self.assertEqual(
            samples["weather_station_last_seen_timestamp_seconds"][key],
            self.reactor.seconds(),
        )
        self.assertEqual(samples["weather_station_nominal_interval_seconds"][key], 120.0)
        self.assertAlmostEqual(
            samples["weather_station_measured_interval_seconds"][key], 121.2
        )
        self.assertAlmostEqual(samples["weather_station_clock_drift_ppm"][key], 10_000)
        self.assertAlmostEqual(samples["weather_station_clock_ratio"][key], 1.01)
        for counter in (
            "missed_uploads",
            "records_repeated",
            "records_lost",
            "irregular_packets",
        ):
            self.assertEqual(samples[f"weather_station_{counter}_total"], {key: 0.0})
        failures = samples["weather_station_sensor_failures_total"]
        self.assertEqual(
            {dict(labels)["measurement"]: count for labels, count in failures.items()},
            {"light": 0.0, "humidity": 0.0, "temperature": 0.0},
        )

    def test_stationsPathsOfRealStations(self) -> None:
        """
        A missed upload, a lost clear command and failed sensor reads, as
        /metrics counts them per station.
        """
        self.service.startService()
        records = [(100 + i, 30000 + 4 * i, 25000 + 4 * i) for i in range(150)]
        records[70] = (170, 0xFFFC, 0xFFFC)  # a failed SI7021 read
        self.send(build_packet(1, records[:30]))
        self.deliver()
        self.reactor.advance(3600)
        self.send(build_packet(1, records[30:60]))
        self.deliver()
        # Two hours later: one upload missed.
        self.reactor.advance(7200)
        self.send(build_packet(1, records[60:120]))
        self.deliver()
        # The clear command was lost: the next packet repeats the last 10.
        self.reactor.advance(3600)
        self.send(build_packet(1, records[110:150]))
        self.deliver()
        samples = self.metrics()
        key = (("device", "1"), ("place", "balcony"))
        counts = {
            name: samples[f"weather_station_{name}_total"][key]
            for name in ("packets", "records", "missed_uploads", "records_repeated")
        }
        self.assertEqual(
            counts,
            {
                "packets": 4.0,
                "records": 150.0,
                "missed_uploads": 1.0,
                "records_repeated": 10.0,
            },
        )
        failures = samples["weather_station_sensor_failures_total"]
        self.assertEqual(
            {dict(labels)["measurement"]: count for labels, count in failures.items()},
            {"light": 0.0, "humidity": 1.0, "temperature": 1.0},
        )
        self.assertEqual(samples["weather_readings_not_finite_total"], {(): 2.0})

    def test_journalCounts(self) -> None:
        """Pending packets and the oldest's age, counted on the status timer."""
        self.service.startService()
        self.fake.fail_next(503, count=100)  # nothing is delivered from now on
        self.send(reference_packet())
        self.deliver()
        self.reactor.advance(10)
        samples = self.metrics()
        self.assertEqual(samples["weather_journal_pending_packets"], {(): 1.0})
        self.assertEqual(samples["weather_journal_oldest_pending_age_seconds"], {(): 10.0})

    def test_openMetrics(self) -> None:
        """A scraper asking for OpenMetrics gets it."""
        self.service.startService()
        response, body = self.get(
            "/metrics",
            headers={"Accept": ["application/openmetrics-text; version=1.0.0"]},
        )
        self.assertIn("openmetrics", response.headers.getRawHeaders("content-type")[0])
        self.assertTrue(body.endswith(b"# EOF\n"))


class HealthTests(MonitoringTestCase):
    ARGS = MonitoringTestCase.ARGS + ("--unhealthy-after", "120")

    def health(self) -> tuple[int, dict]:
        response, body = self.get("/health")
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/json"]
        )
        return response.code, json.loads(body)

    def test_notListening(self) -> None:
        code, report = self.health()
        self.assertEqual(code, 503)
        self.assertEqual(report["reasons"], ["not listening for stations"])

    def test_healthy(self) -> None:
        self.service.startService()
        code, report = self.health()
        self.assertEqual((code, report["status"], report["reasons"]), (200, "ok", []))
        self.assertTrue(report["accepting"])
        self.assertEqual(report["clock_steps"], 0)

    def test_influxUnreachablePastThreshold(self) -> None:
        """Failing writes: healthy until --unhealthy-after, then 503, then 200 again."""
        self.service.startService()
        self.fake.fail_next(500, count=1000)
        self.send(reference_packet())
        self.deliver()
        self.assertEqual(self.health()[0], 200)
        self.reactor.advance(119)
        self.influx.flush()
        self.assertEqual(self.health()[0], 200)
        self.reactor.advance(2)
        self.influx.flush()
        code, report = self.health()
        self.assertEqual(code, 503)
        self.assertEqual(len(report["reasons"]), 1)
        self.assertIn(
            "InfluxDB writes have failed for 121 s: HTTP 500", report["reasons"][0]
        )
        self.fake._faults.clear()
        self.reactor.advance(120)
        self.influx.flush()
        self.assertEqual(self.health(), (200, self.health()[1]))
        self.assertEqual(len(self.fake.points), 90)

    def connect_waiting(self) -> Protocol:
        """
        A connection whose packet waits for the journal's commit (a stalled
        disk): it is not cut for a new connection.
        """
        factory = self.service.listener.factory
        protocol = factory.buildProtocol(PEER)
        protocol.makeConnection(StringTransport(peerAddress=PEER))
        protocol.dataReceived(reference_packet())
        self.addCleanup(protocol.connectionLost, None)
        return protocol

    def build_stalled(self) -> ManualDiskWorker:
        """The server with --max-connections 2 and a disk that commits when told."""
        worker = ManualDiskWorker()
        self.reactor = MemoryReactorClock()
        self.reactor.advance(T0)
        self.settings = make_settings(self, *self.ARGS, "--max-connections", "2")
        self.service = build_test_service(
            self, self.settings, self.reactor, self.influx, worker=worker
        )
        self.service.startService()
        worker.run_all()
        return worker

    def test_atConnectionLimitPastThreshold(self) -> None:
        """
        At --max-connections with no connection to cut for a new one:
        healthy for a moment (stations wait in the listen queue), 503 once
        it has lasted --unhealthy-after without a break; room for 5 s ends it.
        """
        worker = self.build_stalled()
        first, _ = self.connect_waiting(), self.connect_waiting()
        code, report = self.health()
        self.assertEqual((code, report["accepting"]), (200, False))
        self.reactor.advance(119)
        self.assertEqual(self.health()[1]["at_connection_limit_seconds"], 119)
        self.assertEqual(self.health()[0], 200)
        self.reactor.advance(1)
        code, report = self.health()
        self.assertEqual(code, 503)
        self.assertEqual(
            report["reasons"],
            [
                "at the --max-connections limit (2 open, none to cut for a new one) "
                "for 120 s: new stations wait or give up"
            ],
        )
        # One closes; room for 5 s ends the stretch.
        first.connectionLost(None)
        code, report = self.health()
        self.assertEqual((code, report["accepting"]), (503, True))
        self.reactor.advance(5)
        code, report = self.health()
        self.assertEqual((code, report["at_connection_limit_seconds"]), (200, 0))
        self.connect_waiting()
        self.reactor.advance(60)
        self.assertEqual(self.health()[0], 200)
        worker.run_all()

    def test_atConnectionLimitWithChurn(self) -> None:
        """
        Stations closing only to let the next queued one in are no break: the
        limit holding for --unhealthy-after with churn is still a 503.
        """
        worker = self.build_stalled()
        open_now = [self.connect_waiting() for _ in range(2)]
        for _ in range(12):
            self.reactor.advance(9)
            open_now.pop(0).connectionLost(None)
            self.reactor.advance(1)
            open_now.append(self.connect_waiting())
        code, report = self.health()
        self.assertEqual(code, 503)
        self.assertEqual(report["at_connection_limit_seconds"], 120)
        worker.run_all()

    def test_slowPeersAtTheLimitStayHealthy(self) -> None:
        """
        The issue's case: slow or idle peers holding every slot used to
        leave /health at "ok" for --unhealthy-after while stations were kept
        out.  Now a new connection takes the place of one of them: stations
        are served, and /health is right to say so.
        """
        self.build("--max-connections", "2", "--idle-timeout", "3600")
        self.service.startService()
        factory = self.service.listener.factory
        for port in (1, 2):
            peer = IPv4Address("TCP", "198.51.100.1", port)
            protocol = factory.buildProtocol(peer)
            protocol.makeConnection(StringTransport(peerAddress=peer))
            protocol.dataReceived(b"\x01")  # a byte of a packet, then nothing
            self.addCleanup(protocol.connectionLost, None)
        self.assertFalse(self.health()[1]["accepting"])
        self.reactor.advance(5)
        code, report = self.health()
        self.assertEqual((code, report["accepting"]), (200, True))
        for _ in range(30):
            self.reactor.advance(10)
            transport = self.send(reference_packet())
            self.assertEqual(transport.value(), b"\x06")
        code, report = self.health()
        self.assertEqual((code, report["at_connection_limit_seconds"]), (200, 0))
        # One made room for the first station; the other reached its deadline.
        self.assertEqual(factory.stats.connections_cut_for_room, 1)
        self.assertEqual(factory.stats.connections_past_deadline, 1)

    def test_outOfDescriptorsPastThreshold(self) -> None:
        self.service.startService()
        listener = self.service.listener
        listener._out_of_descriptors(24)  # EMFILE
        self.assertEqual(self.health()[0], 200)
        listener.descriptors.spare = lambda recount=False: 0
        self.reactor.advance(120)
        code, report = self.health()
        self.assertEqual(code, 503)
        self.assertEqual(
            report["reasons"],
            ["out of file descriptors for 120 s: new stations wait or give up"],
        )
        self.assertEqual(report["out_of_descriptors_seconds"], 120)

    def test_journalFull(self) -> None:
        """Over the high-water mark: 503 saying so; under it again: 200."""
        self.service.startService()
        journal = self.service.journal
        journal._check_water(journal.max_bytes + 1, free=1 << 40)
        code, report = self.health()
        self.assertEqual(code, 503)
        self.assertIn("high-water mark", report["reasons"][0])
        self.assertFalse(report["accepting"])
        journal._check_water(0, free=1 << 40)
        self.assertEqual(self.health()[0], 200)


class PagesTests(MonitoringTestCase):
    def test_index(self) -> None:
        response, body = self.get("/")
        self.assertEqual(response.code, 200)
        self.assertIn(b"/metrics", body)

    def test_unknown(self) -> None:
        response, _ = self.get("/nothing-here")
        self.assertEqual(response.code, 404)


class SelfStatsTests(MonitoringTestCase):
    ARGS = MonitoringTestCase.ARGS + (
        "--self-stats-interval",
        "60",
        "--self-stats-host",
        "pi-garden",
    )

    def test_writtenOnInterval(self) -> None:
        """Every interval, the figures land in InfluxDB as weather_internal."""
        self.service.startService()
        self.send(reference_packet())
        self.deliver()
        self.reactor.advance(60)
        self.deliver()
        internal = [p for p in self.fake.points if p.measurement == MEASUREMENT]
        fields = {}
        for point in internal:
            for name, value in point.fields.items():
                fields[(name, tuple(sorted(point.tags.items())))] = value
        host = ("host", "pi-garden")
        self.assertEqual(fields[("packets_accepted_total", (host,))], 1.0)
        self.assertEqual(
            fields[
                ("station_records_total", (("device", "1"), host, ("place", "balcony")))
            ],
            30.0,
        )
        self.assertTrue(all(("host", "pi-garden") in p.tags.items() for p in internal))
        self.assertNotIn(("build_info", (host,)), fields)
        self.assertFalse(any(name.endswith("_bucket") for name, _ in fields))
        times = {p.timestamp for p in internal}
        self.assertEqual(len(times), 2)  # at start, and 60 s later
        self.assertEqual(
            self_stats_reporter(self.service).stats.points_queued, len(internal)
        )

    def test_skippedWhileOverloaded(self) -> None:
        self.service.startService()
        writer = self.service.writer
        writer.overloaded = True
        self.reactor.advance(60)
        self.assertEqual(self_stats_reporter(self.service).stats.reports_skipped, 1)

    def test_readingsFromRegistry(self) -> None:
        """Samples become readings; empty labels are not tags; NaN is skipped."""
        readings = self_stat_readings(self.service.metrics.registry, 5)
        names = {r.field for r in readings}
        self.assertIn("journal_full", names)
        self.assertTrue(all(r.time_ns == 5 for r in readings))
        self.assertTrue(all(v for r in readings for _, v in r.tags))


class SelfStatsDefaultHostTests(MonitoringTestCase):
    ARGS = MonitoringTestCase.ARGS + ("--self-stats-interval", "60")

    def test_machineName(self) -> None:
        """Without --self-stats-host, the host tag is the machine's name."""
        self.service.startService()
        self.deliver()
        internal = [p for p in self.fake.points if p.measurement == MEASUREMENT]
        self.assertTrue(internal)
        self.assertEqual({p.tags["host"] for p in internal}, {socket.gethostname()})


class StationsWhileInfluxDown(MonitoringTestCase):
    def test_lastSeenAtArrival(self) -> None:
        """A station whose packets wait in the journal is still seen alive."""
        self.service.startService()
        self.fake.fail_next(503, count=1000)
        self.send(reference_packet())
        self.deliver()
        samples = self.metrics()
        key = (("device", "1"), ("place", "balcony"))
        self.assertEqual(
            samples["weather_station_last_seen_timestamp_seconds"][key],
            self.reactor.seconds(),
        )

    def test_lastSeenAcrossRestart(self) -> None:
        """After a restart, a station heard from before is known, and can be overdue."""
        self.service.startService()
        self.send(reference_packet())
        self.deliver()
        heard = self.reactor.seconds()
        self.stop()
        self.build("--data-dir", self.settings.data_dir)
        self.service.startService()
        samples = self.metrics()
        key = (("device", "1"), ("place", "balcony"))
        self.assertEqual(samples["weather_station_last_seen_timestamp_seconds"][key], heard)


class SelfStatsWhileFailing(MonitoringTestCase):
    ARGS = MonitoringTestCase.ARGS + ("--self-stats-interval", "60")

    def test_skippedWhileWritesFail(self) -> None:
        """Failing writes: no self-statistics pile up in memory."""
        self.service.startService()
        self.deliver()
        self.fake.fail_next(503, count=1000)
        self.send(reference_packet())
        self.deliver()
        pending = self.service.writer.pending
        for _ in range(10):
            self.reactor.advance(60)
        self.assertEqual(self.service.writer.pending, pending)
        self.assertGreaterEqual(self_stats_reporter(self.service).stats.reports_skipped, 9)


class OpenFilesTests(SynchronousTestCase):
    """--max-connections must fit the open-files limit (see tap.open_files_plan)."""

    def test_fits(self) -> None:
        from weather.app.tap import open_files_plan

        self.assertEqual(open_files_plan(512, 1024, 4096), (1024, 512))

    def test_softRaised(self) -> None:
        from weather.app.tap import open_files_plan

        self.assertEqual(open_files_plan(10_000, 1024, 1 << 20), (10_128, 10_000))

    def test_clampedToHard(self) -> None:
        from weather.app.tap import open_files_plan

        self.assertEqual(open_files_plan(10_000, 1024, 4096), (4096, 3968))

    def test_infinite(self) -> None:
        import resource

        from weather.app.tap import open_files_plan

        infinite = resource.RLIM_INFINITY
        self.assertEqual(open_files_plan(10_000, 1024, infinite), (10_128, 10_000))
        self.assertEqual(open_files_plan(10_000, infinite, infinite), (infinite, 10_000))


class ClockWaitTests(MonitoringTestCase):
    """--clock-sync wait seen by the operator: /health, /metrics, the status page."""

    ARGS = MonitoringTestCase.ARGS + ("--unhealthy-after", "120", "--clock-sync", "wait")

    def build(self, *args: str) -> None:
        self.status = FakeClockStatus(False)
        self.reactor = MemoryReactorClock()
        self.reactor.advance(T0)
        self.fake = FakeInfluxDB(clock=lambda: 0)
        self.influx = StubTreq(self.fake)
        self.settings = make_settings(self, *self.ARGS, *args)
        with capturedLogs():
            self.service = build_test_service(
                self,
                self.settings,
                self.reactor,
                self.influx,
                boot_clock=lambda: round(self.reactor.seconds() * 1e9) - T0 * 10**9,
                boot_id="boot",
                clock_status=self.status,
            )
        self.addCleanup(self.stop)

    def health(self) -> tuple[int, dict]:
        response, body = self.get("/health")
        return response.code, json.loads(body)

    def test_waitingShown(self) -> None:
        with capturedLogs():
            self.service.startService()
            self.send(reference_packet())
        code, report = self.health()
        self.assertEqual(code, 200)
        self.assertIs(report["clock_synchronized"], False)
        self.assertEqual(report["packets_waiting_for_clock"], 1)
        samples = self.metrics()
        self.assertEqual(samples["weather_packets_waiting_for_clock"], {(): 1.0})
        self.assertEqual(samples["weather_clock_synchronized"], {(): 0.0})
        _, page = self.get("/")
        self.assertIn(b"1 packets wait for the clock", page)
        # Past --unhealthy-after of waiting: 503, saying why.
        self.reactor.advance(121)
        code, report = self.health()
        self.assertEqual(code, 503)
        self.assertEqual(
            report["reasons"],
            [
                "1 packets have waited 121 s for the wall clock to be synchronized "
                "(--clock-sync)"
            ],
        )
        # Synchronized: the packet is stored, nothing waits.
        self.status.is_synchronized = True
        with capturedLogs():
            self.reactor.advance(10)
            self.deliver()
        code, report = self.health()
        self.assertEqual((code, report["packets_waiting_for_clock"]), (200, 0))
        self.assertIs(report["clock_synchronized"], True)
        self.assertEqual(len(self.fake.points), 90)
        samples = self.metrics()
        self.assertEqual(samples["weather_packets_waiting_for_clock"], {(): 0.0})
        self.assertEqual(samples["weather_clock_synchronized"], {(): 1.0})
        _, page = self.get("/")
        self.assertNotIn(b"wait for the clock", page)


class BoundedEndpointTests(MonitoringTestCase):
    """
    The HTTP endpoint holds at most HTTP_CONNECTIONS connections, gives each
    HTTP_REQUEST_TIMEOUT seconds per request however it trickles, and takes
    no body larger than HTTP_MAX_BODY.
    """

    def setUp(self) -> None:
        super().setUp()
        self.service.startService()
        self.factory: ConnectionLimit = self.service.monitoring[0].factory
        self.peers = 0

    def connect(self) -> tuple[Protocol, StringTransport] | None:
        self.peers += 1
        peer = IPv4Address("TCP", "127.0.0.1", 40000 + self.peers)
        protocol = self.factory.buildProtocol(peer)
        if protocol is None:
            return None
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        self.addCleanup(self.lose, protocol)
        return protocol, transport

    def lose(self, protocol: Protocol) -> None:
        """What a real transport does once closed: the timeouts are cancelled."""
        if protocol.wrappedProtocol is not None:
            protocol.connectionLost(Failure(ConnectionDone()))

    def test_idleLongestMakesRoom(self) -> None:
        """
        At the limit a new connection is taken and the one idle longest
        (since it connected or was answered) is closed at once: idle
        connections cannot keep a health check out.
        """
        held = []
        for _ in range(HTTP_CONNECTIONS):
            held.append(self.connect())
            self.reactor.advance(0.5)
        first, second = held[0], held[1]
        first[0].dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", first[1].value())
        with capturedLogs() as events:
            newcomer = self.connect()
        self.assertIsNotNone(newcomer)
        self.assertTrue(second[1].disconnecting)
        self.assertFalse(first[1].disconnecting)
        self.assertEqual((self.factory.evicted, self.factory.refused), (1, 0))
        [line] = [formatEvent(e) for e in events]
        self.assertEqual(
            line,
            f"{HTTP_CONNECTIONS} connections to the monitoring endpoint, the most it "
            f"holds: closed the one idle longest ({HTTP_CONNECTIONS / 2 - 0.5:.0f} s, "
            "from 127.0.0.1) for a new one",
        )
        newcomer[0].dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", newcomer[1].value())

    def test_neverTwiceTheLimit(self) -> None:
        """
        Closed connections count until they are gone: with as many of them
        as the limit, a new connection is closed instead.
        """
        held = [self.connect() for _ in range(2 * HTTP_CONNECTIONS)]
        self.assertEqual(self.factory.evicted, HTTP_CONNECTIONS)
        self.assertIsNone(self.connect())
        self.assertEqual(self.factory.refused, 1)
        closed = [c for c in held if c[1].disconnecting]
        self.assertEqual(len(closed), HTTP_CONNECTIONS)
        closed[0][0].connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.connect())

    def test_trickledRequestCut(self) -> None:
        """A byte now and then does not extend the time for a request."""
        protocol, transport = self.connect()
        request = b"GET /health HTTP/1.1\r\nHost: x\r\n"
        for byte in request:  # a byte every half second, never the end of the headers
            protocol.dataReceived(bytes([byte]))
            self.reactor.advance(0.5)
        self.reactor.advance(HTTP_REQUEST_TIMEOUT - len(request) / 2 - 0.5)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_timeFromEachAnswer(self) -> None:
        """A kept-alive connection (Prometheus') gets the time again after each answer."""
        protocol, transport = self.connect()
        for _ in range(3):
            self.reactor.advance(HTTP_REQUEST_TIMEOUT - 1)
            protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value().count(b"200 OK"), 3)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(HTTP_REQUEST_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_largeBodyRefused(self) -> None:
        """A body over HTTP_MAX_BODY, or of no stated length, is not read: 413."""
        for headers in (
            f"Content-Length: {HTTP_MAX_BODY + 1}",
            "Transfer-Encoding: chunked",
        ):
            protocol, transport = self.connect()
            protocol.dataReceived(
                f"POST /metrics HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n".encode()
                + b"x" * 100
            )
            self.assertTrue(
                transport.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n"),
                transport.value(),
            )
            self.assertTrue(transport.disconnecting)

    def test_smallBodyTaken(self) -> None:
        protocol, transport = self.connect()
        head = f"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: {HTTP_MAX_BODY}\r\n"
        protocol.dataReceived(head.encode() + b"\r\n" + b"x" * HTTP_MAX_BODY)
        self.assertIn(b"200 OK", transport.value())

    def test_fitsTheSpareDescriptors(self) -> None:
        """At most twice the limit, and room left for the journal, log and InfluxDB."""
        self.assertLessEqual(2 * HTTP_CONNECTIONS, SPARE_DESCRIPTORS - 16)
