"""
The server's own timers run on a monotonic clock, its stamps on the wall
clock: a step of the wall clock neither holds nor hastens idle timeouts,
flushes and backoff, while arrivals, quarantine times, self-statistics and the
status page still say the wall clock's time (L{weather.app.tap.monotonic_timers}
and every component's C{wall}).
"""

from __future__ import annotations

import time

from treq.testing import StubTreq
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakeinflux import FakeInfluxDB
from tests.support import build_test_service, make_settings, reference_packet
from tests.unit.test_service import PEER, Connection
from weather.app.tap import monotonic_timers
from weather.server.protocol import ACK

#: The reactor's (monotonic) clock when the tests start: hours since boot.
BOOTED = 7_200.0
#: The wall clock then.
T0 = 1_700_000_000.0
S = 1_000_000_000


class SteppingWall:
    """A wall clock that follows C{timers} until someone steps it."""

    def __init__(self, timers: MemoryReactorClock) -> None:
        self.timers = timers
        self.offset = T0 - timers.seconds()

    def __call__(self) -> float:
        return self.timers.seconds() + self.offset

    def step(self, seconds: float) -> None:
        self.offset += seconds


class MonotonicReactorTests(SynchronousTestCase):
    """L{monotonic_timers} on one of Twisted's real reactors (not installed)."""

    def setUp(self) -> None:
        self.reactor = SelectReactor()
        self.addCleanup(self.reactor.waker.connectionLost, None)

    def assertNear(self, when: float, expected: float) -> None:
        self.assertLess(abs(when - expected), 1, f"{when} != {expected}")

    def test_timersOnMonotonicClock(self) -> None:
        reactor = self.reactor
        earlier = reactor.callLater(30, lambda: None)
        self.addCleanup(earlier.cancel)
        monotonic_timers(reactor)
        self.assertIs(reactor.seconds, time.monotonic)
        later = reactor.callLater(5, lambda: None)
        self.addCleanup(later.cancel)
        now = time.monotonic()
        # Both calls are due on the monotonic clock, the earlier one moved
        # over with what was left of its delay.
        self.assertNear(later.getTime(), now + 5)
        self.assertNear(earlier.getTime(), now + 30)
        self.assertNear(reactor.timeout(), 5)
        later.reset(10)
        self.assertNear(later.getTime(), time.monotonic() + 10)


class WallClockStepTests(SynchronousTestCase):
    """
    The assembled server, its timers on a L{MemoryReactorClock} standing for
    the monotonic clock, its wall clock stepped under it.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(BOOTED)
        self.wall = SteppingWall(self.reactor)
        self.fake = FakeInfluxDB(clock=lambda: 0)
        self.service = build_test_service(
            self,
            make_settings(self, "--flush-interval", "2", "--idle-timeout", "5"),
            self.reactor,
            client=StubTreq(self.fake),
            wall=self.wall,
        )
        self.service.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        stopped = self.service.stopService()
        self.reactor.advance(60)
        self.successResultOf(stopped)

    def connect(self):
        protocol = self.service.listener.factory.buildProtocol(PEER)
        transport = Connection([], PEER)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_idleTimeoutAfterBackwardStep(self) -> None:
        """An hour back on the wall clock: an idle connection still goes in 5 s."""
        _, transport = self.connect()
        self.wall.step(-3600)
        self.reactor.advance(4.9)
        self.assertTrue(transport.connected)
        self.reactor.advance(0.2)
        self.assertFalse(transport.connected)

    def test_forwardStepCutsNoUpload(self) -> None:
        """An hour forward in mid-upload: the station's packet is whole."""
        protocol, transport = self.connect()
        packet = reference_packet()
        protocol.dataReceived(packet[:40])
        self.wall.step(3600)
        self.reactor.advance(1)
        protocol.dataReceived(packet[40:])
        self.assertEqual(transport.value(), ACK)
        self.assertEqual(self.service.pipeline.stats.packets_rejected.total(), 0)

    def test_stampsOnWallFlushOnTimers(self) -> None:
        """Arrivals carry the stepped wall time; the flush comes 2 s later."""
        protocol, _ = self.connect()
        self.wall.step(-3600)
        protocol.dataReceived(reference_packet())
        self.assertEqual(self.fake.points, [])
        self.reactor.advance(2)
        arrival_ns = round((T0 - 3600) * S)
        self.assertEqual(max(p.timestamp for p in self.fake.points), arrival_ns)
