"""
File descriptors: the budget the station listener keeps (stop accepting
with fewer than the reserve left) and listening sockets whose accept() never
lets Twisted's EMFILE recovery close waiting connections.  On fakes;
tests/integration/test_attacks_listener.py runs out of descriptors for real.
"""

from __future__ import annotations

import errno
import os

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.fakeinflux import FakeInfluxDB
from tests.support import (
    PortEndpoint,
    RecordingPort,
    RecordingSink,
    build_test_service,
    factory_options,
    make_settings,
    option_defaults,
    reference_packet,
)
from weather.app.tap import MonitoringEndpoint
from weather.server.descriptors import (
    DESCRIPTOR_RESERVE,
    RECOUNT_EVERY,
    DescriptorBudget,
    GuardedSocket,
    guard_accept,
    open_descriptors,
    pause_when_exhausted,
)
from weather.server.protocol import ACK, StationFactory
from weather.server.service import StationListener

T0 = 1_700_000_000


class FakeSocket:
    """A listening socket whose accept() gives what the test queues."""

    family = 2

    def __init__(self) -> None:
        self.results: list = []

    def accept(self):
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    def getsockname(self):
        return ("127.0.0.1", 8266)

    def getsockopt(self, level: int, option: int) -> int:
        return self.family


class SocketPort(RecordingPort):
    """A listening port with a socket and Twisted TCP ports' accept rounds."""

    def __init__(self) -> None:
        super().__init__()
        self.socket = FakeSocket()
        self.numberAccepts = 100
        self.rounds: list[int] = []
        self.arriving: list = []
        self.connected = True
        self.disconnecting = False

    def doRead(self) -> None:
        """An accept round: note its size, take the connections queued in C{arriving}."""
        self.rounds.append(self.numberAccepts)
        while self.arriving:
            factory, peer = self.arriving.pop(0)
            factory.buildProtocol(peer).makeConnection(StringTransport(peerAddress=peer))


class Counted:
    """What the budget counts: open descriptors and the limit, as the test sets them."""

    def __init__(self, open_now: int, limit: int | None) -> None:
        self.open = open_now
        self.limit = limit
        self.counts = 0

    def count(self) -> int:
        self.counts += 1
        return self.open


def capture_warnings(testcase) -> list[str]:
    events: list[str] = []

    def observer(event: dict) -> None:
        if event.get("log_level") in (LogLevel.warn, LogLevel.info) and event.get(
            "log_namespace", ""
        ).startswith("weather."):
            events.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class OpenDescriptorsTests(SynchronousTestCase):
    def test_countsThisProcess(self) -> None:
        before = open_descriptors()
        if before is None:
            self.skipTest("this system does not list a process's descriptors")
        fd = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        self.assertEqual(open_descriptors(), before + 1)


class DescriptorBudgetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.counted = Counted(100, 200)
        self.budget = DescriptorBudget(
            self.clock,
            reserve=32,
            count=self.counted.count,
            limit=lambda: self.counted.limit,
        )

    def test_reserve(self) -> None:
        self.assertEqual(DESCRIPTOR_RESERVE, 32)

    def test_spare(self) -> None:
        """Those left under the limit, less the reserve."""
        self.assertEqual(self.budget.spare(), 68)
        self.counted.open = 168
        self.assertEqual(self.budget.spare(recount=True), 0)
        self.counted.open = 190
        self.assertEqual(self.budget.spare(recount=True), -22)

    def test_countKept(self) -> None:
        """A count is used for RECOUNT_EVERY, less what was used meanwhile."""
        self.assertEqual(self.budget.spare(), 68)
        self.budget.use(10)
        self.counted.open = 150
        self.assertEqual(self.budget.spare(), 58)
        self.assertEqual(self.counted.counts, 1)
        self.clock.advance(RECOUNT_EVERY)
        self.assertEqual(self.budget.spare(), 18)
        self.assertEqual(self.counted.counts, 2)

    def test_unknown(self) -> None:
        """No limit, or no way to count: nothing to say."""
        self.counted.limit = None
        self.assertIsNone(self.budget.spare())
        self.budget.use(5)
        budget = DescriptorBudget(self.clock, count=lambda: None, limit=lambda: 100)
        self.assertIsNone(budget.spare())


class GuardedSocketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.listening = FakeSocket()
        self.exhausted: list[int] = []
        self.guarded = GuardedSocket(self.listening, self.exhausted.append)

    def test_accepts(self) -> None:
        self.listening.results.append(("socket", ("127.0.0.1", 5000)))
        self.assertEqual(self.guarded.accept(), ("socket", ("127.0.0.1", 5000)))
        self.assertEqual(self.exhausted, [])

    def test_exhaustedSaysNothingWaits(self) -> None:
        """
        Out of descriptors, accept() raises EAGAIN, which Twisted's port
        takes for an empty queue: it neither closes the waiting connections
        nor logs a line for each.
        """
        for code in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            self.listening.results.append(OSError(code, os.strerror(code)))
            with self.assertRaises(BlockingIOError) as caught:
                self.guarded.accept()
            self.assertEqual(caught.exception.args[0], errno.EAGAIN)
        self.assertEqual(
            self.exhausted, [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM]
        )

    def test_otherErrors(self) -> None:
        self.listening.results.append(OSError(errno.EPERM, "netfilter"))
        with self.assertRaises(OSError) as caught:
            self.guarded.accept()
        self.assertEqual(caught.exception.errno, errno.EPERM)
        self.assertEqual(self.exhausted, [])

    def test_restIsTheSocketsOwn(self) -> None:
        self.assertEqual(self.guarded.getsockname(), ("127.0.0.1", 8266))
        self.assertEqual(self.guarded.family, 2)

    def test_guardAccept(self) -> None:
        port = SocketPort()
        self.assertTrue(guard_accept(port, self.exhausted.append))
        guarded = port.socket
        self.assertIsInstance(guarded, GuardedSocket)
        self.assertTrue(guard_accept(port, self.exhausted.append))
        self.assertIs(port.socket, guarded)  # not twice
        self.assertFalse(guard_accept(RecordingPort(), self.exhausted.append))


class PauseWhenExhaustedTests(SynchronousTestCase):
    """For ports that nothing else stops: the HTTP endpoint's."""

    def test_pausedThenResumed(self) -> None:
        clock = Clock()
        port = SocketPort()
        warnings = capture_warnings(self)
        self.assertTrue(pause_when_exhausted(port, clock, "tcp:9266"))
        for _ in range(100):
            port.socket._socket.results.append(OSError(errno.EMFILE, "Too many"))
            with self.assertRaises(BlockingIOError):
                port.socket.accept()
        self.assertEqual(port.calls, ["stopReading"] * 100)
        clock.advance(RECOUNT_EVERY)
        self.assertEqual(port.calls[-1], "startReading")
        self.assertEqual(
            warnings,
            [
                "Out of file descriptors (EMFILE): not accepting connections on "
                "tcp:9266 for now; they wait in the listen queue"
            ],
        )

    def test_notResumedOnceClosed(self) -> None:
        clock = Clock()
        port = SocketPort()
        pause_when_exhausted(port, clock, "tcp:9266")
        port.socket._socket.results.append(OSError(errno.EMFILE, "Too many"))
        with self.assertRaises(BlockingIOError):
            port.socket.accept()
        port.connected = False
        clock.advance(RECOUNT_EVERY)
        self.assertEqual(port.calls, ["stopReading"])

    def test_metricsPortGuarded(self) -> None:
        """The HTTP endpoint's listening port is guarded once it listens."""
        port = SocketPort()
        clock = Clock()
        settings = make_settings(self, "--metrics-port", "9266")
        service = build_test_service(
            self, settings, MemoryReactorClock(), client=StubTreq(FakeInfluxDB())
        )
        [monitoring] = [s for s in service.monitoring if isinstance(s, MonitoringEndpoint)]
        monitoring.endpoint = PortEndpoint(port)
        monitoring.clock = clock
        monitoring.privilegedStartService()
        self.assertIsInstance(port.socket, GuardedSocket)
        port.socket._socket.results.append(OSError(errno.EMFILE, "Too many"))
        with self.assertRaises(BlockingIOError):
            port.socket.accept()
        self.assertEqual(port.calls, ["stopReading"])
        clock.advance(RECOUNT_EVERY)
        self.assertEqual(port.calls, ["stopReading", "startReading"])


class ListenerDescriptorTests(SynchronousTestCase):
    """The station listener stops accepting with fewer than the reserve left."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.counted = Counted(100, 200)
        self.sink = RecordingSink()
        self.factory = StationFactory(self.sink, self.clock, **factory_options(self.clock))
        self.port = SocketPort()
        self.listener = StationListener(
            PortEndpoint(self.port),
            self.factory,
            self.clock,
            "tcp:8266",
            option_defaults().grace,
            DescriptorBudget(
                self.clock,
                count=self.counted.count,
                limit=lambda: self.counted.limit,
            ),
        )
        self.listener.startService()
        self.addCleanup(self.listener.stopService)
        self.warnings = capture_warnings(self)

    def test_socketGuarded(self) -> None:
        self.assertIsInstance(self.port.socket, GuardedSocket)

    def test_roundsCappedToTheDescriptorsSpare(self) -> None:
        self.port.doRead()
        self.assertEqual(self.port.rounds, [68])
        self.counted.open = 190  # not counted again yet: the round took none
        self.port.doRead()
        self.assertEqual(self.port.rounds, [68, 68])

    def test_roundsUseTheCount(self) -> None:
        """Connections accepted in a round are taken off the count until the next."""
        self.port.arriving = [
            (self.factory, IPv4Address("TCP", "192.0.2.7", 4000 + i)) for i in range(3)
        ]
        self.port.doRead()
        self.assertEqual(self.listener.descriptors.spare(), 65)
        self.assertEqual(self.counted.counts, 1)

    def test_stopsAcceptingWithNoneToSpare(self) -> None:
        self.counted.open = 168
        self.port.doRead()
        self.assertEqual(self.port.rounds, [])  # no accept() at all
        self.assertEqual(self.port.calls, ["stopReading"])
        self.assertFalse(self.listener.accepting)
        self.assertEqual(self.factory.stats.descriptors_short, 1)
        self.assertEqual(self.listener.short_of_descriptors_for(T0 + 3), 3)
        self.clock.advance(RECOUNT_EVERY * 10)  # still none
        self.assertEqual(self.port.calls, ["stopReading"])
        self.counted.open = 160
        self.clock.advance(RECOUNT_EVERY)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])
        self.assertTrue(self.listener.accepting)
        self.assertEqual(self.listener.short_of_descriptors_for(self.clock.seconds()), 0)
        self.port.doRead()
        self.assertEqual(self.port.rounds, [8])
        self.assertEqual(
            self.warnings,
            [
                "Out of file descriptors (32 left, 32 kept for the journal, the log "
                "and InfluxDB): not accepting station connections until some are "
                "free; new ones wait in the listen queue",
                "File descriptors are free again after 2.8 s: accepting station "
                "connections",
            ],
        )

    def test_exhaustedInTheRound(self) -> None:
        """
        accept() failing with EMFILE all the same (something else took the
        descriptors since the count): accepting stops, nothing is closed.
        """
        self.port.socket._socket.results.append(OSError(errno.EMFILE, "Too many"))
        with self.assertRaises(BlockingIOError):
            self.port.socket.accept()
        self.assertEqual(self.port.calls, ["stopReading"])
        self.assertIn("Out of file descriptors (EMFILE)", self.warnings[0])
        self.clock.advance(RECOUNT_EVERY)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])

    def test_logRateLimited(self) -> None:
        for _ in range(50):
            self.port.socket._socket.results.append(OSError(errno.EMFILE, "Too many"))
            with self.assertRaises(BlockingIOError):
                self.port.socket.accept()
            self.clock.advance(RECOUNT_EVERY)
        shortages = [line for line in self.warnings if line.startswith("Out of")]
        self.assertEqual(len(shortages), 1)
        self.assertEqual(self.factory.stats.descriptors_short, 50)

    def test_stationsServedMeanwhile(self) -> None:
        """Connections already open are read and acknowledged while short."""
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.counted.open = 199
        self.port.doRead()
        self.assertFalse(self.listener.accepting)
        protocol.dataReceived(reference_packet())
        self.assertEqual(transport.value(), ACK)
