"""
What odd answers, odd stations and bugs must not do: lose points, flood the
log, or stop the packets that follow.
"""

from __future__ import annotations

import random
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.fakeinflux import FakeInfluxDB
from tests.support import (
    HEADER,
    RecordingSink,
    RecordingWriter,
    build_test_service,
    factory_options,
    journal_quarantined,
    journal_status,
    make_settings,
    reference_packet,
    started_journal,
    writer_options,
)
from weather.core.devices import REFERENCE_DEVICES
from weather.core.packet import Packet, Reason
from weather.server.influx import InfluxV1, error_message
from weather.server.interfaces import IPacketSink
from weather.server.pipeline import PacketPipeline
from weather.server.protocol import ACK, StationFactory
from weather.server.writer import (
    MAX_RETRY_AFTER,
    STOPPING_BACKOFF,
    PointWriter,
    retry_after_seconds,
)

SEED = 20240601
V1 = InfluxV1("http://influx.test:8086", "weather")
S = 1_000_000_000
T0 = 1_700_000_000
PEER = IPv4Address("TCP", "192.0.2.7", 40123)
#: A Retry-After of 308 digits: a valid delta-seconds, near float's maximum.
HUGE = "9" * 308
#: Deep enough to exhaust the JSON parser's recursion limit.
NESTED = b"[" * 100_000


def line(i: int) -> bytes:
    """A valid point whose timestamp is C{i}."""
    return b"m f=%d %d" % (i, i)


class WriterTestCase(SynchronousTestCase):
    def build(self, **options: Any) -> PointWriter:
        self.clock = Clock()
        self.fake = FakeInfluxDB()
        self.stub = StubTreq(self.fake)
        self.events: list[dict] = []
        self.patch(PointWriter, "log", Logger(observer=self.events.append))
        settings: dict[str, Any] = {
            "batch_size": 10,
            "flush_interval": 60.0,
            "initial_backoff": 1.0,
            "max_backoff": 60.0,
            "shutdown_timeout": 10.0,
        }
        settings.update(options)
        self.writer = PointWriter(
            V1, self.stub, self.clock, rng=random.Random(SEED), **writer_options(**settings)
        )
        return self.writer

    def next_calls(self) -> list[float]:
        """Seconds until each pending timed call, soonest first."""
        now = self.clock.seconds()
        return sorted(call.getTime() - now for call in self.clock.getDelayedCalls())

    def at(self, level: LogLevel) -> list[dict]:
        return [event for event in self.events if event["log_level"] == level]


class OddAnswerTests(WriterTestCase):
    """Answers that are hard to read keep the batch, to try again."""

    def test_hugeRetryAfter(self) -> None:
        """
        A 503 whose Retry-After is a huge number: the points are kept and
        tried again after the longest wait honoured, then delivered.
        """
        self.build()
        self.fake.fail_next(503, {"error": "busy"}, headers={"Retry-After": HUGE})
        d = self.writer.write([line(1), line(2)])
        self.writer.flush()
        self.assertEqual(len(self.fake.requests), 1)
        self.assertEqual(self.writer.pending, 2)
        self.assertEqual(self.writer.stats.requests_failed, 1)
        self.assertNoResult(d)
        self.assertEqual(self.next_calls(), [MAX_RETRY_AFTER])
        self.clock.advance(MAX_RETRY_AFTER - 0.001)
        self.assertEqual(len(self.fake.requests), 1)
        self.assertNoResult(d)
        self.assertEqual(self.writer.pending, 2)
        self.clock.advance(0.002)
        self.assertEqual(len(self.fake.requests), 2)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual([p.timestamp for p in self.fake.points], [1, 2])
        self.assertEqual(self.writer.pending, 0)
        self.assertEqual(self.at(LogLevel.error), [])
        self.assertEqual(self.at(LogLevel.critical), [])

    def assertKeptAfter500(self, body: bytes, why: str) -> None:
        self.build()
        self.fake.fail_next(500, body)
        d = self.writer.write([line(1), line(2), line(3)])
        self.writer.flush()
        self.assertEqual(len(self.fake.requests), 1)
        self.assertEqual(self.writer.pending, 3)
        self.assertEqual(self.writer.stats.requests_failed, 1)
        self.assertEqual(self.writer.stats.points_refused, 0)
        self.assertNoResult(d)
        [warning] = self.at(LogLevel.warn)
        self.assertEqual(warning["why"], why)
        self.assertEqual(warning["count"], 3)
        [delay] = self.next_calls()
        self.clock.advance(delay)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual([p.timestamp for p in self.fake.points], [1, 2, 3])
        self.assertEqual(self.writer.pending, 0)
        self.assertEqual(self.at(LogLevel.error), [])
        self.assertEqual(self.at(LogLevel.critical), [])

    def test_deeplyNestedJSON(self) -> None:
        self.assertKeptAfter500(NESTED, "HTTP 500: " + "[" * 497 + "...")

    def test_deeplyNestedObject(self) -> None:
        self.assertKeptAfter500(
            b'{"error": ' * 20_000, "HTTP 500: " + ('{"error": ' * 50)[:497] + "..."
        )

    def test_hugeBody(self) -> None:
        self.assertKeptAfter500(b"x" * 10_000_000, "HTTP 500: " + "x" * 497 + "...")


class ErrorMessageTests(SynchronousTestCase):
    def test_deeplyNestedList(self) -> None:
        self.assertEqual(error_message(NESTED), "[" * 497 + "...")

    def test_deeplyNestedObject(self) -> None:
        message = error_message(b'{"a":' * 100_000)
        self.assertIsInstance(message, str)
        self.assertEqual(len(message), 500)

    def test_deeplyNestedUnderError(self) -> None:
        """Nesting under the key InfluxDB uses: still no exception."""
        message = error_message(b'{"error": ' + NESTED + b"]" * 100_000 + b"}")
        self.assertEqual(message, ('{"error": ' + "[" * 500)[:497] + "...")

    def test_tenMegabytes(self) -> None:
        message = error_message(b"x" * 10_000_000)
        self.assertEqual(message, "x" * 497 + "...")

    def test_tenMegabytesOfWords(self) -> None:
        message = error_message(b"word \n\t" * (10_000_000 // 7))
        self.assertLessEqual(len(message), 500)
        self.assertTrue(message.startswith("word word "))

    def test_tenMegabytesOfJSON(self) -> None:
        """An error message too long to parse whole is shortened as text."""
        body = b'{"error": "' + b"e" * 10_000_000 + b'"}'
        message = error_message(body)
        self.assertEqual(message, ('{"error": "' + "e" * 500)[:497] + "...")

    def test_tenMegabytesNotUTF8(self) -> None:
        message = error_message(b"\xff\xfe" * 5_000_000)
        self.assertEqual(message, "\ufffd" * 497 + "...")


class RetryAfterTests(SynchronousTestCase):
    def test_hugeInteger(self) -> None:
        delay = retry_after_seconds(HUGE.encode(), 1_700_000_000.0)
        self.assertIsInstance(delay, float)
        self.assertEqual(delay, float(int(HUGE)))

    def test_beyondFloat(self) -> None:
        """
        A delta-seconds past what a float holds is still a request to wait a
        very long time (RFC 9111 1.2.2: take it as the greatest value one
        can represent), not an absent header that allows a retry at once.
        """
        for digits in (309, 400, 5000):
            delay = retry_after_seconds(b"9" * digits, 1_700_000_000.0)
            self.assertIsInstance(delay, float, f"{digits} digits")
            self.assertGreaterEqual(delay, MAX_RETRY_AFTER, f"{digits} digits")


class StoppingBackoffTests(WriterTestCase):
    """While stopping, a failed write is tried again within STOPPING_BACKOFF."""

    def test_constant(self) -> None:
        self.assertEqual(STOPPING_BACKOFF, 1.0)

    def assertShortRetry(self, **fault: Any) -> None:
        self.build(initial_backoff=30.0, max_backoff=300.0, shutdown_timeout=10.0)
        self.writer.startService()
        self.fake.fail_next(503, {"error": "busy"}, **fault)
        d = self.writer.write([line(1)])
        stopped = self.writer.stopService()
        self.assertEqual(len(self.fake.requests), 1)
        self.assertNoResult(stopped)
        # The retry, then the shutdown deadline.
        self.assertEqual(self.next_calls(), [STOPPING_BACKOFF, 10.0])
        [warning] = self.at(LogLevel.warn)
        self.assertEqual(warning["delay"], STOPPING_BACKOFF)
        self.clock.advance(STOPPING_BACKOFF - 0.001)
        self.assertEqual(len(self.fake.requests), 1)
        self.clock.advance(0.002)
        self.assertEqual(len(self.fake.requests), 2)
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failureWhileStopping(self) -> None:
        self.assertShortRetry()

    def test_retryAfterWhileStopping(self) -> None:
        """Even a server's Retry-After does not outlast the stop."""
        self.assertShortRetry(headers={"Retry-After": "120"})

    def test_longBackoffBeforeStopping(self) -> None:
        """A failure before the stop still gets its full backoff."""
        self.build(initial_backoff=30.0, max_backoff=300.0)
        self.writer.startService()
        self.fake.fail_next(503, {"error": "busy"})
        self.writer.write([line(1)])
        self.writer.flush()
        [delay] = self.next_calls()
        self.assertGreaterEqual(delay, 15.0)


PROFILES = REFERENCE_DEVICES


class PipelineTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.writer = RecordingWriter()
        self.journal = started_journal(self, self.clock)
        self.pipeline = PacketPipeline(PROFILES, self.journal, self.writer, self.clock)
        self.pipeline.startService()
        self.addCleanup(self.pipeline.stopService)

    def receive(self, data: bytes, arrival_ns: int) -> Deferred:
        return self.pipeline.packet_received(Packet(data, "192.0.2.7:1", arrival_ns))

    @staticmethod
    def warnings(events) -> list[dict]:
        return [event for event in events if event["log_level"] == LogLevel.warn]


class TooCloseTests(PipelineTestCase):
    def test_tenSecondsApart(self) -> None:
        t0 = T0 * S
        with capturedLogs() as events:
            self.receive(reference_packet(device_id=1, wake_every=3600), t0)
            self.receive(reference_packet(device_id=1, wake_every=3600), t0 + 10 * S)
        self.assertEqual(self.pipeline.stats.packets_too_close, 1)
        [warning] = self.warnings(events)
        self.assertEqual(warning["device"], 1)
        self.assertEqual(
            formatEvent(warning),
            "Device 1 sent a packet 10.0 s after its previous one, though it "
            "uploads every 3600 s: do two stations share this id? Their readings "
            "may overwrite each other",
        )
        # Both are still stored.
        self.assertEqual(self.pipeline.stats.packets_accepted, 2)
        self.assertEqual(len(self.writer.lines), 180)

    def test_hourly(self) -> None:
        t0 = T0 * S
        with capturedLogs() as events:
            for hour in range(5):
                # A station's clock drifts a little: 3 % either way.
                drift = (-108, 0, 108, 50, -50)[hour] * S
                self.receive(
                    reference_packet(wake_every=3600), t0 + hour * 3600 * S + drift
                )
        self.assertEqual(self.pipeline.stats.packets_too_close, 0)
        self.assertEqual(self.pipeline.stats.packets_accepted, 5)
        self.assertEqual(self.warnings(events), [])
        # Only each packet's info line.
        self.assertEqual(
            [e for e in events if not e["log_format"].startswith("Station ")], []
        )

    def test_firstPacketNeverTooClose(self) -> None:
        with capturedLogs() as events:
            self.receive(reference_packet(), T0 * S)
        self.assertEqual(self.pipeline.stats.packets_too_close, 0)
        self.assertEqual(self.warnings(events), [])


class UnknownDeviceTests(PipelineTestCase):
    @staticmethod
    def unknown(device: int) -> bytes:
        return HEADER.pack(6, 3600, 120, 6, device, 3) + bytes(6)

    def test_oneLinePerDevice(self) -> None:
        self.assertNotIn(9, PROFILES)
        self.assertNotIn(10, PROFILES)
        with capturedLogs() as events:
            for i in range(1000):
                self.successResultOf(self.receive(self.unknown(9), T0 * S + i * S))
                self.clock.advance(1)  # past any rate limit's period, many times
        self.assertEqual(len(events), 1)
        [first] = self.warnings(events)
        self.assertEqual(first["device"], 9)
        self.assertIn("Device 9", formatEvent(first))
        # Followed as printed, the hint replays with the profiles it names.
        self.assertIn(
            f"'weather replay --data-dir {self.journal.directory} --devices FILE'",
            formatEvent(first),
        )
        self.assertIn("restart the server with --devices FILE", formatEvent(first))
        self.pipeline.devices_file = "/etc/weather/devices.toml"
        with capturedLogs() as named:
            self.receive(self.unknown(11), T0 * S)
        self.assertIn(
            "in /etc/weather/devices.toml, then run 'weather "
            f"replay --data-dir {self.journal.directory} --devices "
            "/etc/weather/devices.toml'",
            formatEvent(self.warnings(named)[0]),
        )
        with capturedLogs() as more:
            for i in range(3):
                self.receive(self.unknown(10), T0 * S + i * S)
                self.receive(self.unknown(9), T0 * S + i * S)
        self.assertEqual(len(more), 1)
        [second] = self.warnings(more)
        self.assertEqual(second["device"], 10)
        stats = self.pipeline.stats
        self.assertEqual(stats.packets_rejected["unknown-device"], 1007)
        self.assertEqual(stats.packets_rejected.total(), 1007)
        self.assertEqual(stats.packets_accepted, 0)
        self.assertEqual(self.writer.writes, [])
        # Every one is kept, to be replayed once the device is described.
        status = self.journal.file.status()
        self.assertEqual((status.pending, status.quarantined), (0, 1007))


@implementer(IPacketSink)
class BrokenSink(RecordingSink):
    """A sink with a bug: the first C{failures} packets raise."""

    def __init__(self, failures: int = 1) -> None:
        super().__init__()
        self.failures = failures

    def packet_received(self, packet) -> Deferred:
        if self.failures:
            self.failures -= 1
            raise ZeroDivisionError("a bug")
        return super().packet_received(packet)


class DeliverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)

    def connect(self, sink):
        self.factory = StationFactory(sink, self.clock, **factory_options(self.clock))
        protocol = self.factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_nextPacketOfTheChunkDelivered(self) -> None:
        sink = BrokenSink()
        protocol, transport = self.connect(sink)
        first, second = reference_packet(start=0), reference_packet(start=100)
        with capturedLogs() as events:
            protocol.dataReceived(first + second)
        self.assertEqual([p.data for p in sink.received], [second])
        self.assertEqual(self.factory.stats.internal_errors, 1)
        self.assertFalse(transport.disconnecting)
        # Only the packet the sink kept is acknowledged.
        self.assertEqual(transport.value(), ACK)
        [critical] = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertTrue(critical["log_failure"].check(ZeroDivisionError))
        self.assertEqual(critical["peer"], "192.0.2.7:40123")
        self.assertEqual(
            formatEvent(critical), "Internal error handling a packet from 192.0.2.7:40123"
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_loggedOnceAMinute(self) -> None:
        """A bug hit by every packet: each counted, logged once a minute."""
        sink = BrokenSink(failures=5)
        protocol, _ = self.connect(sink)
        with capturedLogs() as events:
            protocol.dataReceived(reference_packet() * 6)
        self.assertEqual(len(sink.received), 1)
        self.assertEqual(self.factory.stats.internal_errors, 5)
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.critical]), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class TotalsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(T0)
        self.fake = FakeInfluxDB(clock=lambda: 0)
        self.settings = make_settings(
            self, "--flush-interval", "600", "--shutdown-timeout", "3"
        )
        self.service = build_test_service(
            self, self.settings, self.reactor, client=StubTreq(self.fake)
        )
        self.service.startService()

    def send(self, *packets: bytes) -> None:
        protocol = self.service.listener.factory.buildProtocol(PEER)
        transport = StringTransportWithDisconnection(peerAddress=PEER)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        protocol.dataReceived(b"".join(packets))
        transport.loseConnection()

    def stop(self) -> list[dict]:
        with capturedLogs() as events:
            stopped = self.service.stopService()
            self.reactor.advance(10)
        self.stopped = stopped
        return [
            event
            for event in events
            if event.get("log_namespace") == "weather.server.service.WeatherService"
            and event["log_format"].startswith("Totals:")
        ]

    def test_totals(self) -> None:
        unknown = HEADER.pack(6, 3600, 120, 6, 9, 3) + bytes(6)
        with capturedLogs():
            self.send(reference_packet(), unknown)
        [totals] = self.stop()
        self.assertIsNone(self.successResultOf(self.stopped))
        self.assertEqual(totals["log_level"], LogLevel.info)
        self.assertEqual(
            formatEvent(totals),
            "Totals: 1 packet accepted, 1 quarantined on arrival or decoding; "
            "90 points written, 0 refused by InfluxDB",
        )
        [kept] = journal_quarantined(self.settings.data_dir)
        self.assertEqual(kept.quarantine.reason, Reason.UNKNOWN_DEVICE)

    def test_totalsWhenInfluxIsDown(self) -> None:
        """What InfluxDB did not take is not in the totals: it is in the journal."""
        self.fake.fail_next(503, {"error": "busy"}, count=1000)
        self.send(reference_packet())
        [totals] = self.stop()
        self.assertIsNone(self.successResultOf(self.stopped))
        self.assertEqual((totals["accepted"], totals["written"]), (1, 0))
        self.assertEqual(self.service.writer.pending, 90)
        self.assertEqual(journal_status(self.settings.data_dir).pending, 1)

    def test_totalsWhenTheListenerFails(self) -> None:
        self.service.listener.port.stopListening = lambda: fail(RuntimeError("boom"))
        [totals] = self.stop()
        self.failureResultOf(self.stopped, RuntimeError)
        self.assertEqual(
            formatEvent(totals),
            "Totals: 0 packets accepted, 0 quarantined on arrival or decoding; "
            "0 points written, 0 refused by InfluxDB",
        )
