"""
The assembled server on a fake reactor: listening, start order, and the stop
sequence (stop listening, grace period, abort, stop decoding, flush the
writer, close the journal), and what the journal keeps for the next start.
"""

from __future__ import annotations

import os
from collections import Counter

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.fakeinflux import FakeInfluxDB
from tests.support import (
    build_test_service,
    journal_quarantined,
    journal_status,
    make_settings,
    reference_packet,
)
from weather.core.packet import Reason
from weather.journal.service import Journal, JournalLocked
from weather.server.pipeline import PacketPipeline
from weather.server.protocol import ACK
from weather.server.service import CannotListen, StationListener, WeatherService
from weather.server.writer import PointWriter

T0 = 1_700_000_000
S = 1_000_000_000
PEER = IPv4Address("TCP", "192.0.2.7", 40123)
OTHER_PEER = IPv4Address("TCP", "192.0.2.8", 40124)


class RecordingClient:
    """A treq-like client that notes each POST in C{events}, then makes it."""

    def __init__(self, client, events: list[str]) -> None:
        self.client = client
        self.events = events

    def post(self, url, **kwargs):
        self.events.append("POST")
        return self.client.post(url, **kwargs)


class Connection(StringTransportWithDisconnection):
    """A transport whose abortConnection is noted and ends the connection."""

    def __init__(self, events: list[str], peer) -> None:
        super().__init__(peerAddress=peer)
        self.events = events
        self.aborted = False

    def abortConnection(self) -> None:
        self.events.append(f"abort {self.getPeer().host}")
        self.aborted = True
        super().abortConnection()


@implementer(IListeningPort)
class FakePort:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred:
        self.events.append("stopListening")
        return succeed(None)

    def getHost(self):
        return IPv4Address("TCP", "0.0.0.0", 8266)


@implementer(IStreamServerEndpoint)
class FakeEndpoint:
    """An endpoint whose listen returns C{result()} and notes each call."""

    def __init__(self, result) -> None:
        self.result = result
        self.factories = []

    def listen(self, factory) -> Deferred:
        self.factories.append(factory)
        return self.result()


class PortInUseReactor(MemoryReactorClock):
    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


class ServiceTestCase(SynchronousTestCase):
    #: A flush interval long enough that no timer flush happens in a test;
    #: the writes alone reach InfluxDB (test_writer tests CREATE DATABASE).
    ARGS = ("--flush-interval", "600", "--no-create-database")

    def setUp(self) -> None:
        self.build()

    def build(self, *args: str, reactor: MemoryReactorClock | None = None) -> None:
        self.reactor = reactor if reactor is not None else MemoryReactorClock()
        self.reactor.advance(T0)
        self.events: list[str] = []
        self.fake = FakeInfluxDB(clock=lambda: 0)
        self.settings = make_settings(self, *self.ARGS, *args)
        self.service = build_test_service(
            self,
            self.settings,
            self.reactor,
            client=RecordingClient(StubTreq(self.fake), self.events),
        )
        for name in ("pipeline", "writer", "journal"):
            self.note_stop(name, getattr(self.service, name))

    def note_stop(self, name: str, service) -> None:
        """Note C{"<name> stop"} in the events when C{service} is stopped."""
        stop = service.stopService

        def noted():
            self.events.append(f"{name} stop")
            return stop()

        service.stopService = noted

    def start(self) -> None:
        self.service.startService()
        port = self.service.listener.port
        self.assertIsNotNone(port)
        stop_listening = port.stopListening

        def stopListening():
            self.events.append("stopListening")
            return stop_listening()

        port.stopListening = stopListening

    def connect(self, peer=PEER):
        protocol = self.service.listener.factory.buildProtocol(peer)
        transport = Connection(self.events, peer)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def assertDelivered(self, arrival_s: float, packets: int = 1) -> None:
        """InfluxDB has the points of C{packets} reference packets of 3 records."""
        arrival_ns = round(arrival_s * S)
        self.assertEqual(len(self.fake.points), 9 * packets)
        self.assertEqual(
            Counter(p.measurement for p in self.fake.points),
            {"light": 3 * packets, "humidity": 3 * packets, "temperature": 3 * packets},
        )
        self.assertEqual(
            sorted({p.timestamp for p in self.fake.points}),
            [arrival_ns - 240 * S, arrival_ns - 120 * S, arrival_ns],
        )
        self.assertEqual({p.tags["place"] for p in self.fake.points}, {"balcony"})


class StartTests(ServiceTestCase):
    def test_listens(self) -> None:
        self.service.startService()
        factory = self.service.listener.factory
        self.assertEqual(self.reactor.tcpServers, [(8266, factory, 50, "")])
        self.assertTrue(self.service.running)
        self.assertTrue(self.service.journal.running)
        self.assertTrue(self.service.writer.running)
        self.assertTrue(self.service.pipeline.running)
        self.assertTrue(self.service.listener.running)
        self.assertIsNotNone(self.service.listener.port)
        self.assertTrue(
            os.path.exists(os.path.join(self.settings.data_dir, "journal.sqlite3"))
        )

    def test_listensOnInterface(self) -> None:
        self.build("--port", "tcp:8300:interface=127.0.0.1")
        self.service.startService()
        factory = self.service.listener.factory
        self.assertEqual(self.reactor.tcpServers, [(8300, factory, 50, "127.0.0.1")])

    def test_assembly(self) -> None:
        service = self.service
        self.assertIsInstance(service, WeatherService)
        self.assertIsInstance(service.journal, Journal)
        self.assertIsInstance(service.writer, PointWriter)
        self.assertIsInstance(service.pipeline, PacketPipeline)
        self.assertIsInstance(service.listener, StationListener)
        self.assertEqual(
            list(service),
            [service.journal, service.writer, service.pipeline, service.listener],
        )
        self.assertIs(service.pipeline.writer, service.writer)
        self.assertIs(service.pipeline.journal, service.journal)
        self.assertIs(service.listener.factory.sink, service.pipeline)
        self.assertEqual(service.journal.directory, self.settings.data_dir)
        self.assertEqual(service.journal.max_bytes, 1 << 30)
        self.assertEqual(service.journal.min_free_bytes, 32 << 20)
        self.assertEqual(service.journal.full_observers, [service.listener.pause])
        self.assertEqual(
            service.writer.overload_observers, [service.pipeline.writer_overloaded]
        )
        self.assertEqual(service.listener.grace, 5.0)
        self.assertEqual(service.listener.description, "tcp:8266")
        self.assertEqual(service.writer.flush_interval, 600.0)
        self.assertEqual(service.writer.batch_size, 5000)
        self.assertEqual(service.listener.factory.idle_timeout, 30.0)
        self.assertEqual(service.listener.factory.packet_deadline, 20.0)
        self.assertEqual(service.listener.factory.max_packet_size, 1024)

    def test_settingsReachTheParts(self) -> None:
        self.build(
            "--batch-size",
            "10",
            "--request-timeout",
            "7",
            "--max-backoff",
            "9",
            "--shutdown-timeout",
            "4",
            "--idle-timeout",
            "11",
            "--packet-deadline",
            "13",
            "--max-packet-size",
            "300",
            "--grace",
            "2",
            "--journal-max-size",
            "64M",
            "--journal-min-free",
            "1G",
        )
        writer = self.service.writer
        self.assertEqual(
            (
                writer.batch_size,
                writer.request_timeout,
                writer.max_backoff,
                writer.shutdown_timeout,
            ),
            (10, 7.0, 9.0, 4.0),
        )
        factory = self.service.listener.factory
        self.assertEqual(
            (factory.idle_timeout, factory.packet_deadline, factory.max_packet_size),
            (11.0, 13.0, 300),
        )
        self.assertEqual(self.service.listener.grace, 2.0)
        journal = self.service.journal
        self.assertEqual(
            (journal.max_bytes, journal.min_free_bytes, journal.shutdown_timeout),
            (64 << 20, 1 << 30, 4.0),
        )

    def test_privilegedStartListensOnce(self) -> None:
        """twistd calls privilegedStartService, then startService: one listen."""
        self.service.privilegedStartService()
        factory = self.service.listener.factory
        self.assertEqual(self.reactor.tcpServers, [(8266, factory, 50, "")])
        self.service.startService()
        self.assertEqual(self.reactor.tcpServers, [(8266, factory, 50, "")])

    def test_listenerStartsLast(self) -> None:
        """Journal, writer and pipeline run before the first station connects."""
        running = []
        service = self.service

        def listen():
            running.append(
                [s.running for s in (service.journal, service.writer, service.pipeline)]
                + [service.listener.running]
            )
            return succeed(FakePort(self.events))

        self.service.listener.endpoint = FakeEndpoint(listen)
        self.assertFalse(self.service.writer.running)
        self.service.startService()
        self.assertEqual(running, [[True, True, True, False]])
        self.assertTrue(self.service.listener.running)

    def test_dataDirInUse(self) -> None:
        """A second server on the same --data-dir does not start."""
        self.service.startService()
        other = build_test_service(
            self, self.settings, MemoryReactorClock(), client=StubTreq(self.fake)
        )
        error = self.assertRaises(JournalLocked, other.startService)
        self.assertIn(self.settings.data_dir, str(error))

    def test_interruptedWhileStarting(self) -> None:
        """
        Ctrl-C while the journal opens (before the reactor runs, so Python's
        KeyboardInterrupt) stops the start with one line, not a traceback.
        """

        def interrupted() -> None:
            raise KeyboardInterrupt

        self.service.journal.startService = interrupted
        with capturedLogs() as events:
            error = self.assertRaises(SystemExit, self.service.startService)
        self.assertEqual(error.code, 1)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["Interrupted while starting: stopped before taking any packet"],
        )
        self.assertFalse(self.service.listener.running)

    def test_cannotListen(self) -> None:
        """An endpoint whose listen fails at once: CannotListen, saying why."""
        endpoint = FakeEndpoint(
            lambda: fail(CannotListenError("", 8266, OSError(13, "Permission denied")))
        )
        self.service.listener.endpoint = endpoint
        error = self.assertRaises(CannotListen, self.service.startService)
        self.assertEqual(str(error), "tcp:8266: Permission denied")
        self.assertEqual(endpoint.factories, [self.service.listener.factory])
        self.assertIsNone(self.service.listener.port)

    def test_cannotListenPrivileged(self) -> None:
        self.service.listener.endpoint = FakeEndpoint(
            lambda: fail(CannotListenError("", 80, OSError(13, "Permission denied")))
        )
        error = self.assertRaises(CannotListen, self.service.privilegedStartService)
        self.assertEqual(str(error), "tcp:8266: Permission denied")

    def test_portInUse(self) -> None:
        self.build(reactor=PortInUseReactor())
        error = self.assertRaises(CannotListen, self.service.startService)
        self.assertEqual(str(error), "tcp:8266: Address already in use")

    def test_asynchronousListen(self) -> None:
        """
        An endpoint whose listen answers later is listened on once, even when
        twistd calls privilegedStartService and then startService before the
        answer; the port it gives is the one stopped.
        """
        pending: Deferred = Deferred()
        endpoint = FakeEndpoint(lambda: pending)
        self.service.listener.endpoint = endpoint
        self.service.privilegedStartService()
        self.service.startService()
        self.assertEqual(len(endpoint.factories), 1)
        pending.callback(FakePort(self.events))
        self.successResultOf(self.service.stopService())
        self.assertEqual(
            self.events, ["stopListening", "pipeline stop", "writer stop", "journal stop"]
        )


class StopTests(ServiceTestCase):
    def test_flushesOnStop(self) -> None:
        """
        Points queued when the service stops are written at once, not after
        the flush interval.
        """
        self.start()
        protocol, transport = self.connect()
        self.reactor.advance(3)
        protocol.dataReceived(reference_packet(records=3))
        # Durable in the journal: the station is told before InfluxDB has it.
        self.assertEqual(transport.value(), ACK)
        transport.loseConnection()
        self.assertEqual(self.service.writer.pending, 9)
        self.assertEqual(self.fake.requests, [])
        stopped = self.service.stopService()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(
            self.events,
            ["stopListening", "pipeline stop", "writer stop", "POST", "journal stop"],
        )
        self.assertEqual(self.reactor.seconds(), T0 + 3)
        self.assertDelivered(T0 + 3)
        self.assertEqual(self.service.writer.pending, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertFalse(self.service.running)
        self.assertFalse(self.service.listener.running)
        self.assertFalse(self.service.pipeline.running)
        self.assertFalse(self.service.writer.running)
        self.assertFalse(self.service.journal.running)
        # Delivered: nothing is left in the journal, which is closed.
        self.assertIsNone(self.service.journal.file)
        status = journal_status(self.settings.data_dir)
        self.assertEqual((status.pending, status.quarantined), (0, 0))

    def test_nothingToDo(self) -> None:
        self.start()
        self.assertIsNone(self.successResultOf(self.service.stopService()))
        self.assertEqual(
            self.events, ["stopListening", "pipeline stop", "writer stop", "journal stop"]
        )
        self.assertEqual(self.fake.requests, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_graceExpires(self) -> None:
        """
        An open connection holds the stop for C{grace} seconds; then it is
        aborted, its partial packet counted as truncated, and the writer
        flushes.
        """
        self.start()
        protocol, transport = self.connect()
        packet = reference_packet(records=3)
        protocol.dataReceived(packet)
        protocol.dataReceived(packet[:10])
        stopped = self.service.stopService()
        self.assertNoResult(stopped)
        self.assertEqual(self.events, ["stopListening"])

        self.reactor.advance(4.999)
        self.assertNoResult(stopped)
        self.assertEqual(self.events, ["stopListening"])
        self.assertFalse(transport.aborted)
        self.assertEqual(self.fake.requests, [])

        self.reactor.advance(0.001)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(
            self.events,
            [
                "stopListening",
                "abort 192.0.2.7",
                "pipeline stop",
                "writer stop",
                "POST",
                "journal stop",
            ],
        )
        self.assertTrue(transport.aborted)
        self.assertEqual(self.service.listener.factory.connections, set())
        stats = self.service.pipeline.stats
        self.assertEqual(stats.packets_accepted, 1)
        self.assertEqual(stats.packets_rejected.total(), 1)
        self.assertEqual(stats.packets_rejected["truncated"], 1)
        self.assertDelivered(T0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        # The partial packet is kept in quarantine, whole, with why.
        [kept] = journal_quarantined(self.settings.data_dir)
        self.assertEqual(kept.entry.packet.data, packet[:10])
        self.assertEqual(kept.quarantine.reason, Reason.TRUNCATED)
        self.assertEqual(journal_status(self.settings.data_dir).pending, 0)

    def test_finishedDuringGrace(self) -> None:
        """
        A connection that finishes its packet and closes during the grace
        period: its points are written before the stop completes.
        """
        self.start()
        protocol, transport = self.connect()
        packet = reference_packet(records=3)
        protocol.dataReceived(packet[:20])
        stopped = self.service.stopService()
        delivered_when_stopped = []
        stopped.addCallback(lambda _: delivered_when_stopped.append(len(self.fake.points)))

        self.reactor.advance(2)
        protocol.dataReceived(packet[20:])
        self.assertNoResult(stopped)
        self.assertEqual(self.events, ["stopListening"])

        transport.loseConnection()
        self.assertEqual(delivered_when_stopped, [9])
        self.assertEqual(
            self.events,
            ["stopListening", "pipeline stop", "writer stop", "POST", "journal stop"],
        )
        self.assertFalse(transport.aborted)
        self.assertEqual(self.service.pipeline.stats.packets_rejected.total(), 0)
        self.assertEqual(self.service.pipeline.stats.packets_accepted, 1)
        self.assertDelivered(T0 + 2)
        self.assertEqual(self.reactor.seconds(), T0 + 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_finishedButLeftOpen(self) -> None:
        """
        A connection that finishes its packet but stays open is aborted at
        the end of the grace period with nothing to reject.
        """
        self.start()
        protocol, transport = self.connect()
        packet = reference_packet(records=3)
        protocol.dataReceived(packet[:20])
        stopped = self.service.stopService()
        self.reactor.advance(1)
        protocol.dataReceived(packet[20:])
        self.reactor.advance(3.999)
        self.assertNoResult(stopped)
        self.reactor.advance(0.001)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(
            self.events,
            [
                "stopListening",
                "abort 192.0.2.7",
                "pipeline stop",
                "writer stop",
                "POST",
                "journal stop",
            ],
        )
        self.assertEqual(self.service.pipeline.stats.packets_rejected.total(), 0)
        self.assertDelivered(T0 + 1)

    def test_onlyLeftoversAborted(self) -> None:
        self.start()
        first, first_transport = self.connect(PEER)
        second, second_transport = self.connect(OTHER_PEER)
        packet = reference_packet(records=3)
        first.dataReceived(packet[:15])
        second.dataReceived(packet[:5])
        stopped = self.service.stopService()
        self.reactor.advance(1)
        first.dataReceived(packet[15:])
        first_transport.loseConnection()
        self.assertNoResult(stopped)
        self.reactor.advance(4)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(
            self.events,
            [
                "stopListening",
                "abort 192.0.2.8",
                "pipeline stop",
                "writer stop",
                "POST",
                "journal stop",
            ],
        )
        self.assertFalse(first_transport.aborted)
        self.assertTrue(second_transport.aborted)
        stats = self.service.pipeline.stats
        self.assertEqual(
            (stats.packets_accepted, stats.packets_rejected["truncated"]), (1, 1)
        )
        self.assertDelivered(T0 + 1)

    def test_zeroGrace(self) -> None:
        self.build("--grace", "0")
        self.start()
        protocol, transport = self.connect()
        protocol.dataReceived(reference_packet(records=3)[:10])
        stopped = self.service.stopService()
        self.reactor.advance(0)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(
            self.events,
            [
                "stopListening",
                "abort 192.0.2.7",
                "pipeline stop",
                "writer stop",
                "journal stop",
            ],
        )
        self.assertEqual(self.service.pipeline.stats.packets_rejected["truncated"], 1)
        self.assertEqual(self.reactor.seconds(), T0)

    def test_stopWaitsForTheWriter(self) -> None:
        """The stop completes once the writer has delivered, after a retry."""
        self.start()
        self.fake.fail_next(503, {"error": "busy"})
        protocol, transport = self.connect()
        protocol.dataReceived(reference_packet(records=3))
        transport.loseConnection()
        stopped = self.service.stopService()
        self.assertEqual(
            self.events, ["stopListening", "pipeline stop", "writer stop", "POST"]
        )
        self.assertNoResult(stopped)
        self.assertEqual(self.fake.points, [])
        self.reactor.advance(1)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(
            self.events,
            [
                "stopListening",
                "pipeline stop",
                "writer stop",
                "POST",
                "POST",
                "journal stop",
            ],
        )
        self.assertDelivered(T0)

    def test_writerShutdownTimeout(self) -> None:
        self.build("--shutdown-timeout", "3")
        self.start()
        self.fake.fail_next(503, {"error": "busy"}, count=100)
        protocol, transport = self.connect()
        protocol.dataReceived(reference_packet(records=3))
        transport.loseConnection()
        stopped = self.service.stopService()
        self.reactor.advance(2.999)
        self.assertNoResult(stopped)
        self.reactor.advance(0.001)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.fake.points, [])
        self.assertEqual(self.service.writer.pending, 9)
        # Not lost: the packet stays in the journal for the next start.
        self.assertEqual(journal_status(self.settings.data_dir).pending, 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_nextStartSendsWhatWasLeft(self) -> None:
        """
        What InfluxDB did not acknowledge before the stop is sent by the next
        server on the same --data-dir, with the timestamps it first had.
        """
        self.build("--shutdown-timeout", "3")
        self.start()
        self.fake.fail_next(503, {"error": "busy"}, count=100)
        protocol, transport = self.connect()
        protocol.dataReceived(reference_packet(records=3))
        transport.loseConnection()
        stopped = self.service.stopService()
        self.reactor.advance(3)
        self.successResultOf(stopped)
        self.assertEqual(self.fake.points, [])

        self.build("--data-dir", self.settings.data_dir)  # InfluxDB works again
        self.start()
        self.assertEqual(self.service.pipeline.stats.packets_from_journal, 1)
        self.assertEqual(self.service.writer.pending, 9)
        self.successResultOf(self.service.stopService())
        self.assertDelivered(T0)
        self.assertEqual(journal_status(self.settings.data_dir).pending, 0)

    def test_journalClosedWhenTheWriterFails(self) -> None:
        self.start()
        self.service.writer.stopService = lambda: fail(RuntimeError("boom"))
        stopped = self.service.stopService()
        self.failureResultOf(stopped, RuntimeError)
        self.assertEqual(self.events, ["stopListening", "pipeline stop", "journal stop"])
        self.assertFalse(self.service.journal.running)
        self.assertIsNone(self.service.journal.file)

    def test_writerStopsWhenListenerFails(self) -> None:
        self.start()
        self.service.listener.port.stopListening = lambda: fail(RuntimeError("boom"))
        self.service.writer.write([b"light,place=balcony value=1 1700000000000000000"])
        stopped = self.service.stopService()
        self.failureResultOf(stopped, RuntimeError)
        self.assertEqual(
            self.events, ["pipeline stop", "writer stop", "POST", "journal stop"]
        )
        self.assertEqual(len(self.fake.points), 1)
        self.assertFalse(self.service.writer.running)
        self.assertIsNone(self.service.journal.file)
