"""
Back-pressure: a writer with too many points waiting says so, and the
station side stops reading until InfluxDB has caught up.
"""

from __future__ import annotations

import random
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
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
from tests.support import Gate, RecordingSink, reference_packet
from weather.influx import InfluxV1
from weather.protocol import StationFactory
from weather.service import StationListener
from weather.settings import Options, settings_from_options
from weather.tap import build_service
from weather.writer import PointWriter

SEED = 20240601
V1 = InfluxV1("http://influx.test:8086", "weather")
T0 = 1_700_000_000
PEER = IPv4Address("TCP", "192.0.2.7", 40123)
OTHER_PEER = IPv4Address("TCP", "192.0.2.8", 40124)
#: Points in one default reference packet (30 records of 3 readings).
POINTS_PER_PACKET = 90


def line(i: int) -> bytes:
    """A valid point whose timestamp is C{i}."""
    return b"m f=%d %d" % (i, i)


@implementer(IListeningPort)
class RecordingPort:
    """A listening port that notes stopReading, startReading and stopListening."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def startListening(self) -> None:
        pass

    def stopReading(self) -> None:
        self.calls.append("stopReading")

    def startReading(self) -> None:
        self.calls.append("startReading")

    def stopListening(self) -> Deferred:
        self.calls.append("stopListening")
        return succeed(None)

    def getHost(self):
        return IPv4Address("TCP", "0.0.0.0", 8266)


@implementer(IStreamServerEndpoint)
class PortEndpoint:
    """An endpoint whose listen gives C{port} at once."""

    def __init__(self, port: object) -> None:
        self.port = port

    def listen(self, factory) -> Deferred:
        return succeed(self.port)


class WriterOverloadTests(SynchronousTestCase):
    """L{PointWriter.overloaded} and its observers."""

    def build(self, max_pending: int = 100, **options: Any) -> PointWriter:
        self.clock = Clock()
        self.fake = FakeInfluxDB()
        self.gate = Gate(self.fake)
        self.stub = StubTreq(self.gate)
        self.events: list[dict] = []
        self.patch(PointWriter, "log", Logger(observer=self.events.append))
        settings: dict[str, Any] = {
            "batch_size": 1000,
            "flush_interval": 60.0,
            "initial_backoff": 1.0,
            "max_backoff": 4.0,
        }
        settings.update(options)
        self.writer = PointWriter(
            V1,
            self.stub,
            self.clock,
            max_pending=max_pending,
            rng=random.Random(SEED),
            **settings,
        )
        #: (value the observers were called with, pending then)
        self.changes: list[tuple[bool, int]] = []
        self.writer.overload_observers.append(
            lambda overloaded: self.changes.append((overloaded, self.writer.pending))
        )
        return self.writer

    def release(self) -> None:
        """Let the oldest held request through and deliver its answer."""
        self.gate.release()
        self.stub.flush()

    def overload_events(self, level: LogLevel) -> list[dict]:
        """Events at C{level} about the backlog (not about failed requests)."""
        return [
            event
            for event in self.events
            if event["log_level"] == level
            and "points wait for InfluxDB" in event["log_format"]
        ]

    def test_notOverloadedBelowLimit(self) -> None:
        self.build(max_pending=100)
        self.assertFalse(self.writer.overloaded)
        self.writer.write([line(i) for i in range(99)])
        self.assertEqual(self.writer.pending, 99)
        self.assertFalse(self.writer.overloaded)
        self.assertEqual(self.changes, [])
        self.assertEqual(self.overload_events(LogLevel.warn), [])

    def test_overloadedAtLimit(self) -> None:
        """The write that brings the backlog to C{max_pending} overloads it."""
        self.build(max_pending=100)
        self.writer.write([line(i) for i in range(99)])
        self.assertFalse(self.writer.overloaded)
        self.writer.write([line(99)])
        self.assertEqual(self.writer.pending, 100)
        self.assertTrue(self.writer.overloaded)
        self.assertEqual(self.changes, [(True, 100)])

    def test_overloadedOnceOnly(self) -> None:
        """More writes past the limit call no observer and log nothing more."""
        self.build(max_pending=100)
        self.writer.write([line(i) for i in range(150)])
        self.assertTrue(self.writer.overloaded)
        for i in range(150, 160):
            self.writer.write([line(i)])
        self.assertTrue(self.writer.overloaded)
        self.assertEqual(self.changes, [(True, 150)])
        [warning] = self.overload_events(LogLevel.warn)
        self.assertEqual((warning["count"], warning["limit"]), (150, 100))
        self.assertIn("(limit 100)", formatEvent(warning))
        self.assertEqual(self.overload_events(LogLevel.info), [])

    def test_resumesAtResumeFraction(self) -> None:
        """
        Acknowledged points bring the backlog down one at a time: the writer
        stays overloaded down to 81 points and takes points again at 80
        (0.8 x 100), calling each observer once each way.
        """
        self.build(max_pending=100, batch_size=1, flush_interval=1.0)
        self.gate.closed = True
        writes = [self.writer.write([line(i)]) for i in range(100)]
        self.assertEqual(len(self.gate.held), 1)
        self.assertEqual(self.changes, [(True, 100)])
        for expected in range(99, 80, -1):
            self.release()
            self.assertEqual(self.writer.pending, expected)
            self.assertTrue(self.writer.overloaded, expected)
        self.assertEqual(self.changes, [(True, 100)])
        self.assertEqual(self.overload_events(LogLevel.info), [])
        self.release()
        self.assertEqual(self.writer.pending, 80)
        self.assertFalse(self.writer.overloaded)
        self.assertEqual(self.changes, [(True, 100), (False, 80)])
        for _ in range(80):
            self.release()
        self.assertEqual(self.writer.pending, 0)
        self.assertEqual(self.changes, [(True, 100), (False, 80)])
        for d in writes:
            self.assertIsNone(self.successResultOf(d))
        [warning] = self.overload_events(LogLevel.warn)
        self.assertEqual((warning["count"], warning["limit"]), (100, 100))
        [info] = self.overload_events(LogLevel.info)
        self.assertEqual(info["count"], 80)
        self.assertEqual(
            formatEvent(info), "80 points wait for InfluxDB: taking packets again"
        )

    def test_failuresKeepItOverloaded(self) -> None:
        """
        While InfluxDB fails, the backlog does not shrink and the writer stays
        overloaded; once a batch is acknowledged it takes points again.
        """
        self.build(max_pending=100, batch_size=50)
        self.fake.fail_next(503, {"error": "busy"}, count=3)
        d = self.writer.write([line(i) for i in range(100)])
        self.assertEqual(len(self.fake.requests), 1)
        self.assertTrue(self.writer.overloaded)
        self.assertEqual(self.changes, [(True, 100)])
        while self.fake.pending_faults:
            self.clock.advance(0.25)
            self.assertTrue(self.clock.seconds() < 60, "never retried")
            self.assertEqual(self.fake.points, [])
            self.assertEqual(self.writer.pending, 100)
            self.assertTrue(self.writer.overloaded)
        self.assertEqual(self.changes, [(True, 100)])
        self.assertEqual(self.writer.stats["requests_failed"], 3)
        # The third failure's backoff runs out: the retry lands.
        while not self.fake.points:
            self.clock.advance(0.25)
            self.assertTrue(self.clock.seconds() < 60, "never retried")
        self.assertEqual(self.writer.pending, 0)
        self.assertFalse(self.writer.overloaded)
        self.assertEqual(self.changes, [(True, 100), (False, 50)])
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(self.fake.points), 100)
        self.assertEqual(len(self.overload_events(LogLevel.warn)), 1)
        [info] = self.overload_events(LogLevel.info)
        self.assertEqual(info["count"], 50)

    def test_overloadedAgain(self) -> None:
        """Each crossing of the limit is a new overload, seen once."""
        self.build(max_pending=10, batch_size=1000)
        self.writer.write([line(i) for i in range(10)])
        self.writer.flush()
        self.assertEqual(self.writer.pending, 0)
        self.writer.write([line(i) for i in range(10, 25)])
        self.writer.flush()
        self.assertEqual(self.changes, [(True, 10), (False, 0), (True, 15), (False, 0)])
        self.assertEqual(len(self.overload_events(LogLevel.warn)), 2)
        self.assertEqual(len(self.overload_events(LogLevel.info)), 2)


class FactoryPauseTests(SynchronousTestCase):
    """L{StationFactory.pause}: no connection is read, none times out."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.sink = RecordingSink()
        self.factory = StationFactory(self.sink, self.clock, idle_timeout=30.0)

    def connect(self, peer=PEER):
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_pausesOpenConnections(self) -> None:
        _, first = self.connect(PEER)
        _, second = self.connect(OTHER_PEER)
        self.assertEqual((first.producerState, second.producerState), ("producing",) * 2)
        self.factory.pause(True)
        self.assertTrue(self.factory.paused)
        self.assertEqual((first.producerState, second.producerState), ("paused",) * 2)

    def test_pausedConnectionDoesNotTimeOut(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(reference_packet()[:20])
        self.factory.pause(True)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100 * self.factory.idle_timeout)
        self.assertFalse(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.assertEqual(self.factory.stats["connections_timed_out"], 0)
        self.assertEqual(self.factory.connections, {protocol})

    def test_resumeRestartsIdleTimeout(self) -> None:
        """After a resume the connection gets a whole idle timeout again."""
        protocol, transport = self.connect()
        self.clock.advance(29)
        self.factory.pause(True)
        self.clock.advance(1000)
        self.factory.pause(False)
        self.assertFalse(self.factory.paused)
        self.assertEqual(transport.producerState, "producing")
        self.clock.advance(29.999)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.002)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.factory.stats["connections_timed_out"], 1)

    def test_connectionWhilePausedStartsPaused(self) -> None:
        self.factory.pause(True)
        protocol, transport = self.connect()
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertFalse(transport.disconnected)
        self.assertEqual(self.factory.stats["connections_timed_out"], 0)
        self.factory.pause(False)
        self.assertEqual(transport.producerState, "producing")
        self.clock.advance(29.999)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.002)
        self.assertTrue(transport.disconnected)

    def test_resumedConnectionReadsAgain(self) -> None:
        protocol, transport = self.connect()
        packet = reference_packet()
        protocol.dataReceived(packet[:20])
        self.factory.pause(True)
        self.factory.pause(False)
        protocol.dataReceived(packet[20:])
        self.assertEqual([p.data for p in self.sink.received], [packet])

    def test_closedConnectionsLeftAlone(self) -> None:
        """A connection that ended is not paused or resumed any more."""
        protocol, transport = self.connect()
        protocol.connectionLost(None)
        self.factory.pause(True)
        self.factory.pause(False)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.factory.connections, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ListenerPauseTests(SynchronousTestCase):
    """L{StationListener.pause} and its stop."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.sink = RecordingSink()
        self.factory = StationFactory(self.sink, self.clock, idle_timeout=30.0)
        self.port = RecordingPort()
        self.listener = StationListener(
            PortEndpoint(self.port), self.factory, self.clock, "tcp:8266", grace=5.0
        )
        self.listener.startService()
        self.assertIs(self.listener.port, self.port)

    def connect(self, peer=PEER):
        return self.connectTo(self.factory, peer)

    @staticmethod
    def connectTo(factory: StationFactory, peer=PEER):
        protocol = factory.buildProtocol(peer)
        transport = StringTransportWithDisconnection(peerAddress=peer)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_pauseStopsReadingThePort(self) -> None:
        _, transport = self.connect()
        self.listener.pause(True)
        self.assertEqual(self.port.calls, ["stopReading"])
        self.assertTrue(self.factory.paused)
        self.assertEqual(transport.producerState, "paused")
        self.listener.pause(False)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])
        self.assertFalse(self.factory.paused)
        self.assertEqual(transport.producerState, "producing")

    def test_portWithoutStopReading(self) -> None:
        """A port that cannot stop reading: the connections are still paused."""
        port = MemoryReactorClock().listenTCP(0, self.factory)
        self.assertFalse(hasattr(port, "stopReading"))
        factory = StationFactory(self.sink, self.clock)
        listener = StationListener(
            PortEndpoint(port),
            factory,
            self.clock,
            "tcp:0",
        )
        listener.startService()
        _, transport = self.connectTo(factory)
        listener.pause(True)
        self.assertTrue(factory.paused)
        self.assertEqual(transport.producerState, "paused")
        listener.pause(False)
        self.assertFalse(factory.paused)
        self.assertEqual(transport.producerState, "producing")

    def test_stopResumesForTheGracePeriod(self) -> None:
        """
        Stopping while paused: the port is not read again, but the open
        connections are, so the bytes already sent arrive during the grace.
        """
        protocol, transport = self.connect()
        packet = reference_packet()
        protocol.dataReceived(packet[:20])
        self.listener.pause(True)
        stopped = self.listener.stopService()
        self.assertEqual(self.port.calls, ["stopReading", "stopListening"])
        self.assertFalse(self.factory.paused)
        self.assertEqual(transport.producerState, "producing")
        self.assertNoResult(stopped)
        self.clock.advance(2)
        protocol.dataReceived(packet[20:])
        self.assertEqual([p.data for p in self.sink.received], [packet])
        transport.loseConnection()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.sink.rejected, [])


def make_settings(*args: str):
    options = Options()
    options.parseOptions(list(args))
    return settings_from_options(options, {})


class ServiceOverloadTests(SynchronousTestCase):
    """The writer's overload pauses the listener of a whole service."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(T0)
        self.fake = FakeInfluxDB(clock=lambda: 0)
        settings = make_settings(
            "--max-pending", "1000", "--flush-interval", "600", "--max-backoff", "4"
        )
        self.service = build_service(settings, self.reactor, client=StubTreq(self.fake))
        self.service.startService()
        self.port = RecordingPort()
        self.service.listener.port = self.port
        self.factory = self.service.listener.factory
        self.writer = self.service.writer

    def connect(self, peer=PEER):
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransportWithDisconnection(peerAddress=peer)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def send_packets(self, protocol, count: int) -> None:
        with capturedLogs():  # "too close" warnings: same device, same moment
            protocol.dataReceived(reference_packet() * count)

    def test_wired(self) -> None:
        self.assertEqual(self.writer.max_pending, 1000)
        self.assertIn(self.service.listener.pause, self.writer.overload_observers)

    def test_overloadPausesStations(self) -> None:
        first, first_transport = self.connect(PEER)
        _, second_transport = self.connect(OTHER_PEER)
        self.send_packets(first, 11)
        self.assertEqual(self.writer.pending, 11 * POINTS_PER_PACKET)
        self.assertFalse(self.writer.overloaded)
        self.assertFalse(self.factory.paused)
        self.assertEqual(self.port.calls, [])
        self.send_packets(first, 1)
        self.assertEqual(self.writer.pending, 12 * POINTS_PER_PACKET)
        self.assertTrue(self.writer.overloaded)
        self.assertTrue(self.factory.paused)
        self.assertEqual(self.port.calls, ["stopReading"])
        self.assertEqual(first_transport.producerState, "paused")
        self.assertEqual(second_transport.producerState, "paused")
        _, third_transport = self.connect(PEER)
        self.assertEqual(third_transport.producerState, "paused")

    def test_resumesOnceInfluxAcknowledges(self) -> None:
        protocol, transport = self.connect()
        self.send_packets(protocol, 12)
        self.assertTrue(self.factory.paused)
        self.fake.fail_next(503, {"error": "busy"})
        self.writer.flush()
        self.assertEqual(len(self.fake.requests), 1)
        self.assertEqual(self.writer.pending, 12 * POINTS_PER_PACKET)
        self.assertTrue(self.factory.paused)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.port.calls, ["stopReading"])
        self.reactor.advance(4)
        self.assertEqual(len(self.fake.requests), 2)
        self.assertEqual(len(self.fake.points), 12 * POINTS_PER_PACKET)
        self.assertEqual(self.writer.pending, 0)
        self.assertFalse(self.writer.overloaded)
        self.assertFalse(self.factory.paused)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])

    def test_stopWhileOverloadedReadsWhatWasSent(self) -> None:
        protocol, transport = self.connect()
        self.send_packets(protocol, 12)
        packet = reference_packet(start=1000)
        protocol.dataReceived(packet[:20])
        self.assertTrue(self.factory.paused)
        stopped = self.service.stopService()
        self.assertFalse(self.factory.paused)
        self.assertEqual(transport.producerState, "producing")
        self.reactor.advance(1)
        protocol.dataReceived(packet[20:])
        transport.loseConnection()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.service.pipeline.stats["packets_accepted"], 13)
        self.assertEqual(len(self.fake.points), 13 * POINTS_PER_PACKET)
        self.assertEqual(self.writer.pending, 0)

    def test_overloadDuringGraceDoesNotPause(self) -> None:
        """
        Once stopping, what stations already sent must be read, overloaded or
        not: a backlog that reaches --max-pending during the grace period must
        not pause the connections again.
        """
        protocol, transport = self.connect()
        self.send_packets(protocol, 11)
        self.assertFalse(self.writer.overloaded)
        stopped = self.service.stopService()
        # Should an assertion fail, let the grace period end the stop.
        self.addCleanup(self.reactor.advance, 60)
        self.assertNoResult(stopped)
        self.assertEqual(self.port.calls, ["stopListening"])
        self.send_packets(protocol, 1)
        self.assertTrue(self.writer.overloaded)
        self.assertFalse(self.factory.paused)
        self.assertEqual(transport.producerState, "producing")
        transport.loseConnection()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(len(self.fake.points), 12 * POINTS_PER_PACKET)
