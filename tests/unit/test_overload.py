"""
Back-pressure: a writer with too many points waiting says so, and new packets
wait in the journal until InfluxDB has caught up; a journal that is full (past
its high-water mark, short of disk space, or failing to write) stops the
station side reading until it has room again.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IStreamServerEndpoint
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
    Gate,
    PortEndpoint,
    RecordingPort,
    RecordingSink,
    build_test_service,
    factory_options,
    journal_status,
    make_settings,
    option_defaults,
    reference_packet,
    start_listening,
    writer_options,
)
from weather.journal import service as journalservice
from weather.journal.store import JournalFile, Sizes
from weather.server.influx import InfluxV1
from weather.server.protocol import ACK, StationFactory
from weather.server.service import StationListener
from weather.server.writer import PointWriter

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


@implementer(IStreamServerEndpoint)
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
            rng=random.Random(SEED),
            **writer_options(max_pending=max_pending, **settings),
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
            if event["log_level"] == level and "{wait} for InfluxDB" in event["log_format"]
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
            formatEvent(info), "80 points wait for InfluxDB: decoding packets again"
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
        self.assertEqual(self.writer.stats.requests_failed, 3)
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
        self.factory = StationFactory(
            self.sink, self.clock, **factory_options(self.clock, idle_timeout=30.0)
        )

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
        self.assertEqual(self.factory.stats.connections_timed_out, 0)
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
        self.assertEqual(self.factory.stats.connections_timed_out, 1)

    def test_connectionWhilePausedStartsPaused(self) -> None:
        self.factory.pause(True)
        protocol, transport = self.connect()
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertFalse(transport.disconnected)
        self.assertEqual(self.factory.stats.connections_timed_out, 0)
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
        self.sink, self.factory, self.port, self.listener = start_listening(
            self.clock, idle_timeout=30.0
        )
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
        factory = StationFactory(self.sink, self.clock, **factory_options(self.clock))
        listener = StationListener(
            PortEndpoint(port), factory, self.clock, "tcp:0", option_defaults().grace
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


class ServiceOverloadTests(SynchronousTestCase):
    """
    A whole service: the writer's overload makes new packets wait in the
    journal (stations are still read and acknowledged); the journal's being
    full pauses the listener.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(T0)
        #: What the journal's file system has free, as the journal sees it.
        self.free = 1 << 40
        self.patch(journalservice, "_free_bytes", lambda directory: self.free)
        self.start(
            "--max-pending",
            "1000",
            "--flush-interval",
            "600",
            "--max-backoff",
            "4",
            "--no-create-database",  # the writes alone reach InfluxDB
        )

    def start(self, *args: str) -> None:
        self.fake = FakeInfluxDB(clock=lambda: 0)
        self.settings = make_settings(self, *args)
        self.service = build_test_service(
            self, self.settings, self.reactor, client=StubTreq(self.fake)
        )
        self.service.startService()
        self.port = RecordingPort()
        self.service.listener.port = self.port
        self.factory = self.service.listener.factory
        self.writer = self.service.writer
        self.journal = self.service.journal
        self.pipeline = self.service.pipeline

    def connect(self, peer=PEER):
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransportWithDisconnection(peerAddress=peer)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def send_packets(self, protocol, count: int, first: int = 0) -> None:
        """Send C{count} packets, numbered from C{first} by their first light value."""
        with capturedLogs():  # "too close" warnings: same device, same moment
            protocol.dataReceived(
                b"".join(
                    reference_packet(start=100 * i) for i in range(first, first + count)
                )
            )

    def sent(self) -> list[int]:
        """The packets InfluxDB has, by number, in the order written."""
        return [
            int(p.fields["value"] - 100) // 100
            for p in self.fake.points
            if p.measurement == "light" and (p.fields["value"] - 100) % 100 == 0
        ]

    def pending(self) -> int:
        """Packets in the journal not yet acknowledged by InfluxDB."""
        return self.journal.file.status().pending

    def assertPaused(self, paused: bool, *transports) -> None:
        self.assertEqual(self.factory.paused, paused)
        state = "paused" if paused else "producing"
        for transport in transports:
            self.assertEqual(transport.producerState, state)

    def test_wired(self) -> None:
        self.assertEqual(self.writer.max_pending, 1000)
        self.assertEqual(self.writer.overload_observers, [self.pipeline.writer_overloaded])
        self.assertEqual(self.journal.full_observers, [self.service.listener.pause])

    def test_overloadKeepsPacketsInTheJournal(self) -> None:
        """
        Past --max-pending, packets are still read and acknowledged, and wait
        in the journal rather than in memory; no station is paused.
        """
        first, first_transport = self.connect(PEER)
        _, second_transport = self.connect(OTHER_PEER)
        self.send_packets(first, 11)
        self.assertEqual(self.writer.pending, 11 * POINTS_PER_PACKET)
        self.assertFalse(self.writer.overloaded)
        self.send_packets(first, 1, first=11)
        self.assertEqual(self.writer.pending, 12 * POINTS_PER_PACKET)
        self.assertTrue(self.writer.overloaded)
        self.send_packets(first, 3, first=12)
        self.assertEqual(first_transport.value(), ACK * 15)
        self.assertEqual(self.writer.pending, 12 * POINTS_PER_PACKET)
        self.assertEqual(self.pipeline.stats.packets_accepted, 12)
        self.assertEqual(self.pending(), 15)
        self.assertPaused(False, first_transport, second_transport)
        self.assertEqual(self.port.calls, [])
        _, third_transport = self.connect(PEER)
        self.assertPaused(False, third_transport)

    def test_sentOnceInfluxAcknowledges(self) -> None:
        """
        Once the writer has room again, the packets that waited in the
        journal are sent, in the order they arrived.
        """
        protocol, transport = self.connect()
        self.send_packets(protocol, 15)
        self.assertTrue(self.writer.overloaded)
        self.fake.fail_next(503, {"error": "busy"})
        self.writer.flush()
        self.assertEqual(len(self.fake.requests), 1)
        self.assertEqual(self.writer.pending, 12 * POINTS_PER_PACKET)
        self.assertTrue(self.writer.overloaded)
        self.assertEqual(self.pending(), 15)
        self.reactor.advance(4)
        self.assertEqual(len(self.fake.requests), 2)
        self.assertEqual(self.sent(), list(range(12)))
        self.assertFalse(self.writer.overloaded)
        # The three that waited are read back from the journal.
        self.assertEqual(self.pipeline.stats.packets_from_journal, 3)
        self.assertEqual(self.writer.pending, 3 * POINTS_PER_PACKET)
        self.assertEqual(self.pending(), 3)
        self.writer.flush()
        self.assertEqual(self.sent(), list(range(15)))
        self.assertEqual(self.pending(), 0)
        self.assertEqual(self.pipeline.stats.packets_accepted, 15)
        self.assertEqual(self.port.calls, [])
        self.assertPaused(False, transport)

    def test_stopWhileOverloadedKeepsTheRestInTheJournal(self) -> None:
        """
        Stopping while overloaded: what stations already sent is read during
        the grace period and journaled; what was not sent to InfluxDB is
        sent by the next start.
        """
        protocol, transport = self.connect()
        self.send_packets(protocol, 12)
        self.assertTrue(self.writer.overloaded)
        packet = reference_packet(start=1200)
        protocol.dataReceived(packet[:20])
        stopped = self.service.stopService()
        self.assertPaused(False, transport)
        self.reactor.advance(1)
        protocol.dataReceived(packet[20:])
        self.assertEqual(transport.value(), ACK * 13)
        transport.loseConnection()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.pipeline.stats.packets_accepted, 12)
        self.assertEqual(self.sent(), list(range(12)))
        self.assertEqual(self.writer.pending, 0)
        self.assertEqual(journal_status(self.settings.data_dir).pending, 1)

        self.start("--data-dir", self.settings.data_dir)
        self.assertEqual(self.pipeline.stats.packets_from_journal, 1)
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.sent(), [12])
        self.assertEqual(journal_status(self.settings.data_dir).pending, 0)

    def test_overloadDuringGraceDoesNotPause(self) -> None:
        """
        Once stopping, what stations already sent must be read, overloaded or
        not: a backlog that reaches --max-pending during the grace period does
        not pause the connections.
        """
        protocol, transport = self.connect()
        self.send_packets(protocol, 11)
        self.assertFalse(self.writer.overloaded)
        stopped = self.service.stopService()
        # Should an assertion fail, let the grace period end the stop.
        self.addCleanup(self.reactor.advance, 60)
        self.assertNoResult(stopped)
        self.assertEqual(self.port.calls, ["stopListening"])
        self.send_packets(protocol, 1, first=11)
        self.assertTrue(self.writer.overloaded)
        self.assertPaused(False, transport)
        transport.loseConnection()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(len(self.fake.points), 12 * POINTS_PER_PACKET)

    def fill_journal(self) -> None:
        """Make the next commit find the journal over its high-water mark."""
        self.patch(JournalFile, "sizes", lambda file: Sizes(pending=1 << 30))

    def empty_journal(self) -> None:
        """Make the next commit find the journal under its low-water mark."""
        self.patch(JournalFile, "sizes", lambda file: Sizes(pending=1 << 20))

    def test_highWaterPausesStations(self) -> None:
        """
        A journal past --journal-max-size pauses every connection and the
        port; InfluxDB's taking the backlog brings it under the low-water
        mark, and stations are read again.
        """
        first, first_transport = self.connect(PEER)
        _, second_transport = self.connect(OTHER_PEER)
        self.send_packets(first, 1)
        self.assertPaused(False, first_transport, second_transport)
        self.fill_journal()
        with capturedLogs() as events:
            self.send_packets(first, 1, first=1)
        self.assertTrue(self.journal.full)
        self.assertPaused(True, first_transport, second_transport)
        self.assertEqual(self.port.calls, ["stopReading"])
        # The packet that filled it is kept and acknowledged.
        self.assertEqual(first_transport.value(), ACK * 2)
        [critical] = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertIn("taking no more packets from stations", formatEvent(critical))
        _, third_transport = self.connect(PEER)
        self.assertPaused(True, third_transport)
        self.empty_journal()
        with capturedLogs():
            self.writer.flush()  # InfluxDB acknowledges: the journal shrinks
        self.assertEqual(self.sent(), [0, 1])
        self.assertFalse(self.journal.full)
        self.assertPaused(False, first_transport, second_transport, third_transport)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])

    def test_lowWaterMark(self) -> None:
        """Below the high-water mark but above the low-water mark: still full."""
        protocol, transport = self.connect()
        self.fill_journal()
        with capturedLogs():
            self.send_packets(protocol, 1)
        self.assertPaused(True, transport)
        limit = self.journal.max_bytes
        self.patch(JournalFile, "used_bytes", lambda file: int(limit * 0.95))
        with capturedLogs():
            self.writer.flush()
        self.assertEqual(self.pending(), 0)
        self.assertTrue(self.journal.full)
        self.assertPaused(True, transport)

    def test_diskShortOfSpacePausesStations(self) -> None:
        """
        Less than --journal-min-free left on the disk pauses the stations,
        until twice that is free again.
        """
        protocol, transport = self.connect()
        self.send_packets(protocol, 1)
        self.free = 16 << 20
        with capturedLogs():
            self.send_packets(protocol, 1, first=1)
        self.assertTrue(self.journal.full)
        self.assertPaused(True, transport)
        self.assertEqual(self.port.calls, ["stopReading"])
        self.free = 48 << 20  # more than the minimum, less than twice it
        self.fake.fail_next(503, {"error": "busy"})
        with capturedLogs():
            self.writer.flush()
        self.assertEqual(self.pending(), 2)
        self.assertTrue(self.journal.full)
        self.free = 64 << 20
        with capturedLogs():
            self.reactor.advance(4)
        self.assertEqual(self.sent(), [0, 1])
        self.assertFalse(self.journal.full)
        self.assertPaused(False, transport)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])

    def test_journalWriteErrorPausesStations(self) -> None:
        """
        A journal that cannot be written pauses the stations; the packets
        are not acknowledged until a retry writes them, and nothing is lost.
        """
        protocol, transport = self.connect()
        commit = JournalFile.commit
        broken = [True]

        def failing_commit(file, changes):
            if broken[0]:
                raise sqlite3.OperationalError("disk I/O error")
            return commit(file, changes)

        self.patch(JournalFile, "commit", failing_commit)
        with capturedLogs() as events:
            self.send_packets(protocol, 2)
        self.assertTrue(self.journal.full)
        self.assertPaused(True, transport)
        self.assertEqual(self.port.calls, ["stopReading"])
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.writer.pending, 0)
        [critical] = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertIn("disk I/O error", formatEvent(critical))
        with capturedLogs():
            self.reactor.advance(self.journal.retry_interval)
        self.assertTrue(self.journal.full)
        self.assertEqual(transport.value(), b"")
        broken[0] = False
        with capturedLogs():
            self.reactor.advance(self.journal.retry_interval)
        self.assertFalse(self.journal.full)
        self.assertPaused(False, transport)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])
        self.assertEqual(transport.value(), ACK * 2)
        self.assertEqual(self.pending(), 2)
        self.writer.flush()
        self.assertEqual(self.sent(), [0, 1])
        self.assertEqual(self.pending(), 0)

    def test_journalFullDuringGraceDoesNotPause(self) -> None:
        """Once stopping, a full journal does not pause what stations already sent."""
        protocol, transport = self.connect()
        stopped = self.service.stopService()
        self.addCleanup(self.reactor.advance, 60)
        self.assertNoResult(stopped)
        self.fill_journal()
        with capturedLogs():
            self.send_packets(protocol, 2)
        self.assertTrue(self.journal.full)
        self.assertPaused(False, transport)
        self.assertEqual(self.port.calls, ["stopListening"])
        self.assertEqual(transport.value(), ACK * 2)
        transport.loseConnection()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.sent(), [0, 1])
