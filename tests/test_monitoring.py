"""
The operator's view of a running server on a fake reactor: the Prometheus
exposition (parsed back), /health through its transitions, the HTTP pages,
and the self-statistics written to InfluxDB.
"""

from __future__ import annotations

import json
import socket
from unittest.mock import Mock

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import Agent, ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from tests.fakeinflux import FakeInfluxDB
from tests.support import (
    build_test_service,
    header_bytes,
    make_settings,
    reference_packet,
)
from weather import web
from weather.metrics import REJECTION_REASONS
from weather.selfstats import MEASUREMENT, self_stat_readings
from weather.web import SIBLING_TIMEOUT, HealthPage

T0 = 1_700_000_000
PEER = IPv4Address("TCP", "192.0.2.7", 40123)


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
        return StubTreq(self.service.monitoring[0].factory.resource)

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
        self.assertEqual(
            set(samples["weather_packets_rejected_total"]),
            {(("reason", reason),) for reason in REJECTION_REASONS},
        )
        self.assertEqual(
            set(samples["weather_connections_refused_total"]),
            {
                (("reason", r),)
                for r in ("not_allowed", "peer_limit", "rate_limited", "server_limit")
            },
        )
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
        self.assertEqual(samples["weather_station_missed_uploads_total"], {key: 0.0})

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

    def test_atConnectionLimitPastThreshold(self) -> None:
        """
        At --max-connections: healthy for a moment (stations wait in the
        listen queue), 503 once it has lasted --unhealthy-after without a
        break; a connection closing ends it and starts the count again.
        """
        self.build("--max-connections", "2")
        self.service.startService()
        factory = self.service.listener.factory

        def connect() -> Protocol:
            protocol = factory.buildProtocol(PEER)
            protocol.makeConnection(StringTransport(peerAddress=PEER))
            self.addCleanup(protocol.connectionLost, None)
            return protocol

        first, _ = connect(), connect()
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
                "at the --max-connections limit (2 open) for 120 s: "
                "new stations wait or give up"
            ],
        )
        # One closes; room for 5 s ends the stretch.
        first.connectionLost(None)
        code, report = self.health()
        self.assertEqual((code, report["accepting"]), (503, True))
        self.reactor.advance(5)
        code, report = self.health()
        self.assertEqual((code, report["at_connection_limit_seconds"]), (200, 0))
        connect()
        self.reactor.advance(60)
        self.assertEqual(self.health()[0], 200)

    def test_atConnectionLimitWithChurn(self) -> None:
        """
        Stations closing only to let the next queued one in are no break: the
        limit holding for --unhealthy-after with churn is still a 503.
        """
        self.build("--max-connections", "2")
        self.service.startService()
        factory = self.service.listener.factory
        open_now = []
        for _ in range(2):
            protocol = factory.buildProtocol(PEER)
            protocol.makeConnection(StringTransport(peerAddress=PEER))
            open_now.append(protocol)
        for _ in range(12):
            self.reactor.advance(9)
            open_now.pop(0).connectionLost(None)
            self.reactor.advance(1)
            protocol = factory.buildProtocol(PEER)
            protocol.makeConnection(StringTransport(peerAddress=PEER))
            open_now.append(protocol)
        for protocol in open_now:
            self.addCleanup(protocol.connectionLost, None)
        code, report = self.health()
        self.assertEqual(code, 503)
        self.assertEqual(report["at_connection_limit_seconds"], 120)

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


class FakeWorkerAgent:
    """
    The other workers' /health as worker 0's agent sees them: by URL, an
    answer (code, body), a body that never ends (code, None), an exception,
    or nothing (a Deferred that never fires).  Asked URLs are kept.
    """

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.aborted: list[str] = []

    def request(self, method: bytes, uri: bytes, headers=None, bodyProducer=None):
        url = uri.decode()
        self.asked.append(url)
        answer = self.answers[url]
        if answer is None:
            return Deferred()
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(FakeResponse(*answer, lambda: self.aborted.append(url)))


class FakeResponse:
    """An L{IResponse} whose body comes whole, or never (C{body} None)."""

    phrase = b"OK"

    def __init__(self, code: int, body: bytes | None, aborted) -> None:
        self.code = code
        self.body = body
        self.aborted = aborted

    def deliverBody(self, protocol) -> None:
        transport = StringTransport()
        transport.abortConnection = self.aborted
        protocol.makeConnection(transport)
        if self.body is not None:
            protocol.dataReceived(self.body)
            protocol.connectionLost(Failure(ResponseDone()))


WORKER_1 = "http://127.0.0.1:9267/health"
WORKER_2 = "http://127.0.0.1:9268/health"
OK = json.dumps({"status": "ok", "reasons": []}).encode()


class WorkersHealthTests(MonitoringTestCase):
    """Worker 0's /health speaks for every worker under --workers."""

    def health_of(self, answers: dict) -> tuple[int, dict]:
        if not self.service.running:
            self.service.startService()
        self.agent = FakeWorkerAgent(answers)
        page = HealthPage(
            self.service,
            self.reactor,
            120,
            [(1, WORKER_1), (2, WORKER_2)],
            self.agent,
        )
        http = StubTreq(page)
        responding = http.get("http://localhost/health")
        http.flush()
        self.reactor.advance(SIBLING_TIMEOUT)  # a worker that does not answer
        http.flush()
        response = self.successResultOf(responding)
        body = self.successResultOf(response.content())
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/json"]
        )
        return response.code, json.loads(body)

    def test_allHealthy(self) -> None:
        code, report = self.health_of({WORKER_1: (200, OK), WORKER_2: (200, OK)})
        self.assertEqual((code, report["status"], report["reasons"]), (200, "ok", []))
        self.assertEqual(
            report["workers"],
            [
                {"worker": 0, "status": "ok", "reasons": []},
                {"worker": 1, "status": "ok", "reasons": []},
                {"worker": 2, "status": "ok", "reasons": []},
            ],
        )
        self.assertTrue(report["listening"])  # worker 0's own figures stay
        self.assertEqual(self.agent.asked, [WORKER_1, WORKER_2])

    def test_oneUnhealthy(self) -> None:
        full = {
            "status": "unhealthy",
            "reasons": ["the journal is over its high-water mark"],
        }
        code, report = self.health_of(
            {WORKER_1: (200, OK), WORKER_2: (503, json.dumps(full).encode())}
        )
        self.assertEqual((code, report["status"]), (503, "unhealthy"))
        self.assertEqual(
            report["reasons"], ["worker 2: the journal is over its high-water mark"]
        )
        self.assertEqual(report["workers"][2]["status"], "unhealthy")

    def test_unreachableAndSilentAndGarbled(self) -> None:
        """A worker that refuses, does not answer in time, or answers nonsense."""
        self.build()
        code, report = self.health_of(
            {WORKER_1: ConnectionRefusedError("Connection refused"), WORKER_2: None}
        )
        self.assertEqual(code, 503)
        self.assertEqual(
            report["reasons"],
            [
                "worker 1: its /health did not answer: Connection refused",
                "worker 2: its /health did not answer: no answer within "
                f"{SIBLING_TIMEOUT:g} s",
            ],
        )
        self.build()
        code, report = self.health_of({WORKER_1: (502, b"<html>"), WORKER_2: (200, OK)})
        self.assertEqual(
            report["reasons"], ["worker 1: its /health did not answer: HTTP 502, not JSON"]
        )

    def test_bodyNeverEnds(self) -> None:
        """A worker that stops mid-answer: a reason, and its connection aborted."""
        code, report = self.health_of({WORKER_1: (200, None), WORKER_2: (200, OK)})
        self.assertEqual(code, 503)
        self.assertEqual(
            report["reasons"],
            ["worker 1: its /health did not answer: no answer within 3 s"],
        )
        self.assertEqual(self.agent.aborted, [WORKER_1])

    def test_codeCounts(self) -> None:
        """
        Only a 200 saying ok is healthy; what is not a health report is
        said so, whatever its code.
        """
        code, report = self.health_of(
            {
                WORKER_1: (503, OK),
                WORKER_2: (200, json.dumps({"status": "ok", "reasons": 5}).encode()),
            }
        )
        self.assertEqual(code, 503)
        self.assertEqual(
            report["reasons"],
            [
                "worker 1: HTTP 503",
                "worker 2: its /health did not answer: HTTP 200, not a health report",
            ],
        )

    def test_cannotAsk(self) -> None:
        """An agent that raises at once: that worker's reason, not a 500."""

        class Raising(FakeWorkerAgent):
            def request(self, method, uri, headers=None, bodyProducer=None):
                raise ValueError("bad URL")

        self.service.startService()
        page = HealthPage(self.service, self.reactor, 120, [(1, WORKER_1)], Raising({}))
        http = StubTreq(page)
        responding = http.get("http://localhost/health")
        http.flush()
        response = self.successResultOf(responding)
        report = json.loads(self.successResultOf(response.content()))
        self.assertEqual(response.code, 503)
        self.assertEqual(
            report["reasons"], ["worker 1: its /health did not answer: bad URL"]
        )

    def test_mergeBug(self) -> None:
        """A bug merging the answers: a 500 and one logged failure, not a hang."""

        def broken(own, others):
            raise RuntimeError("bug")

        self.patch(web, "merge_worker_reports", broken)
        self.service.startService()
        page = HealthPage(
            self.service,
            self.reactor,
            120,
            [(1, WORKER_1)],
            FakeWorkerAgent({WORKER_1: (200, OK)}),
        )
        http = StubTreq(page)
        responding = http.get("http://localhost/health")
        http.flush()
        self.assertEqual(self.successResultOf(responding).code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_ownReasonsNamed(self) -> None:
        """Worker 0's own trouble says it is worker 0's."""
        self.service.startService()
        self.service.journal._check_water(self.service.journal.max_bytes + 1, free=1 << 40)
        code, report = self.health_of({WORKER_1: (200, OK), WORKER_2: (200, OK)})
        self.assertEqual(code, 503)
        self.assertEqual(len(report["reasons"]), 1)
        self.assertTrue(report["reasons"][0].startswith("worker 0: "), report["reasons"])


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

    def test_skippedWhileOverloaded(self) -> None:
        self.service.startService()
        writer = self.service.writer
        writer.overloaded = True
        self.reactor.advance(60)
        self.assertEqual(writer.stats["self_stats_skipped"], 1)

    def test_readingsFromRegistry(self) -> None:
        """Samples become readings; empty labels are not tags; NaN is skipped."""
        readings = self_stat_readings(self.service.metrics.registry, 5)
        names = {r.field for r in readings}
        self.assertIn("journal_full", names)
        self.assertTrue(all(r.time_ns == 5 for r in readings))
        self.assertTrue(all(v for r in readings for _, v in r.tags))

    def test_workerTag(self) -> None:
        """Under --workers, every point says which worker's figure it is."""
        readings = self_stat_readings(self.service.metrics.registry, 5, (("worker", "1"),))
        self.assertTrue(readings)
        for reading in readings:
            self.assertIn(("worker", "1"), reading.tags)
            self.assertEqual(list(reading.tags), sorted(reading.tags))


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
        self.assertGreaterEqual(self.service.writer.stats["self_stats_skipped"], 9)


class OpenFilesTests(SynchronousTestCase):
    """--max-connections must fit the open-files limit (see tap.open_files_plan)."""

    def test_fits(self) -> None:
        from weather.tap import open_files_plan

        self.assertEqual(open_files_plan(512, 1024, 4096), (1024, 512))

    def test_softRaised(self) -> None:
        from weather.tap import open_files_plan

        self.assertEqual(open_files_plan(10_000, 1024, 1 << 20), (10_064, 10_000))

    def test_clampedToHard(self) -> None:
        from weather.tap import open_files_plan

        self.assertEqual(open_files_plan(10_000, 1024, 4096), (4096, 4032))

    def test_infinite(self) -> None:
        import resource

        from weather.tap import open_files_plan

        infinite = resource.RLIM_INFINITY
        self.assertEqual(open_files_plan(10_000, 1024, infinite), (10_064, 10_000))
        self.assertEqual(open_files_plan(10_000, infinite, infinite), (infinite, 10_000))


class WorkersHealthOverLoopbackTests(TestCase):
    """Worker 0 asks another worker's /health with a real agent, also over IPv6."""

    def ask(self, interface: str, host: str):
        root = Resource()
        root.putChild(b"health", Data(OK, "application/json"))
        site = Site(root)
        try:
            port = reactor.listenTCP(0, site, interface=interface)
        except CannotListenError as e:  # pragma: no cover - no IPv6 loopback
            raise SkipTest(f"cannot listen on {interface}: {e}") from None
        self.addCleanup(port.stopListening)
        page = HealthPage(
            Mock(),
            reactor,
            120,
            [(1, f"http://{host}:{port.getHost().port}/health")],
            Agent(reactor),
        )
        return page._ask(page.siblings[0][1])

    @inlineCallbacks
    def test_ipv4(self):
        said = yield self.ask("127.0.0.1", "127.0.0.1")
        self.assertEqual(said, {"status": "ok", "reasons": []})

    @inlineCallbacks
    def test_ipv6(self):
        said = yield self.ask("::1", "[::1]")
        self.assertEqual(said, {"status": "ok", "reasons": []})
