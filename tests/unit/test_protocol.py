"""
The station protocol on fake transports and a fake clock.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.support import HEADER, RecordingSink, factory_options, reference_packet
from weather.core.packet import Reason
from weather.server.protocol import ACK, StationFactory, describe_peer

PEER = IPv4Address("TCP", "192.0.2.7", 40123)


class StationProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000.25)
        self.sink = RecordingSink()
        self.factory = StationFactory(
            self.sink,
            self.clock,
            **factory_options(self.clock, idle_timeout=30.0, max_packet_size=400),
        )

    def connect(self, peer=PEER):
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_onePacketOneSegment(self) -> None:
        protocol, transport = self.connect()
        packet = reference_packet()
        protocol.dataReceived(packet)
        self.assertEqual(len(self.sink.received), 1)
        received = self.sink.received[0]
        self.assertEqual(received.data, packet)
        self.assertEqual(received.peer, "192.0.2.7:40123")
        self.assertEqual(received.arrival_ns, 1_700_000_000_250_000_000)
        self.assertFalse(transport.disconnecting)
        # The sink kept it at once: the station is told.
        self.assertEqual(transport.value(), ACK)

    def test_splitAtEveryOffset(self) -> None:
        """Wherever TCP splits the packet, it arrives whole, stamped at its last byte."""
        packet = reference_packet(records=5)
        for cut in range(1, len(packet)):
            self.sink.received.clear()
            protocol, _ = self.connect()
            protocol.dataReceived(packet[:cut])
            self.assertEqual(self.sink.received, [])
            self.clock.advance(1)
            protocol.dataReceived(packet[cut:])
            self.assertEqual([p.data for p in self.sink.received], [packet])
            self.assertEqual(
                self.sink.received[0].arrival_ns,
                round(self.clock.seconds() * 1_000_000) * 1000,
            )
            protocol.connectionLost(None)
        self.assertEqual(self.sink.rejected, [])

    def test_byteByByte(self) -> None:
        protocol, _ = self.connect()
        packet = reference_packet()
        for i in range(len(packet)):
            protocol.dataReceived(packet[i : i + 1])
        self.assertEqual([p.data for p in self.sink.received], [packet])

    def test_manyPacketsOneConnection(self) -> None:
        protocol, transport = self.connect()
        packets = [reference_packet(records=n, start=n) for n in (1, 30, 58, 2)]
        stream = b"".join(packets)
        protocol.dataReceived(stream[:100])
        protocol.dataReceived(stream[100:])
        self.assertEqual(transport.value(), ACK * 4)
        protocol.connectionLost(None)
        self.assertEqual([p.data for p in self.sink.received], packets)
        self.assertEqual(self.sink.rejected, [])

    def test_truncatedOnClose(self) -> None:
        """Bytes left when the peer closes are a truncated packet, kept whole."""
        protocol, _ = self.connect()
        packet = reference_packet()
        protocol.dataReceived(packet + packet[:50])
        protocol.connectionLost(None)
        self.assertEqual(len(self.sink.received), 1)
        [(rejected, error)] = self.sink.rejected
        self.assertEqual(error.reason, Reason.TRUNCATED)
        self.assertEqual(rejected.data, packet[:50])
        self.assertEqual(rejected.peer, "192.0.2.7:40123")

    def test_shortHeaderOnClose(self) -> None:
        protocol, _ = self.connect()
        protocol.dataReceived(b"\x01\x02\x03")
        protocol.connectionLost(None)
        [(rejected, error)] = self.sink.rejected
        self.assertEqual((rejected.data, error.reason), (b"\x01\x02\x03", Reason.TRUNCATED))

    def test_emptyConnection(self) -> None:
        protocol, _ = self.connect()
        protocol.connectionLost(None)
        self.assertEqual((self.sink.received, self.sink.rejected), ([], []))

    def test_oversizedIsCut(self) -> None:
        """A header announcing more than the maximum cuts the connection."""
        protocol, transport = self.connect()
        good = reference_packet(records=2)
        huge = HEADER.pack(60000, 3600, 120, 6, 1, 3) + b"x" * 500
        protocol.dataReceived(good + huge)
        self.assertTrue(transport.disconnected)
        self.assertEqual([p.data for p in self.sink.received], [good])
        [(rejected, error)] = self.sink.rejected
        self.assertEqual(error.reason, Reason.OVERSIZED)
        self.assertEqual(rejected.data, huge[:400])
        # Whatever else arrives before the close is ignored, and the close
        # does not report the same bytes twice.
        protocol.dataReceived(b"y" * 1000)
        protocol.connectionLost(None)
        self.assertEqual(len(self.sink.rejected), 1)
        self.assertEqual(len(self.sink.received), 1)

    def test_idleTimeout(self) -> None:
        self.factory.packet_deadline = 3600.0  # the idle timeout alone
        protocol, transport = self.connect()
        protocol.dataReceived(reference_packet()[:20])
        self.clock.advance(29)
        self.assertFalse(transport.disconnected)
        protocol.dataReceived(reference_packet()[20:30])  # activity resets the timer
        self.clock.advance(29)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.factory.stats.connections_timed_out, 1)
        protocol.connectionLost(None)
        [(rejected, error)] = self.sink.rejected
        self.assertEqual(error.reason, Reason.TRUNCATED)
        self.assertEqual(rejected.data, reference_packet()[:30])
        self.assertEqual(
            error.detail, "connection ended after 30 bytes of a packet (idle for 30 s)"
        )
        # Stamped when its last bytes arrived, as a whole packet would have
        # been: not 30 s later, when the connection timed out.
        self.assertEqual(rejected.arrival_ns, 1_700_000_029_250_000_000)

    def test_packetDeadline(self) -> None:
        """
        A packet has --packet-deadline from its first byte to its last: a
        peer sending a byte now and then, never idle, is cut there, and what
        it sent is quarantined as truncated.
        """
        self.assertEqual(self.factory.packet_deadline, 20.0)
        protocol, transport = self.connect()
        self.clock.advance(25)  # before the first byte: the idle timeout alone
        self.assertFalse(transport.disconnected)
        packet = reference_packet()
        for i in range(4):
            protocol.dataReceived(packet[i : i + 1])
            self.clock.advance(5 if i < 3 else 4.9)
        protocol.dataReceived(packet[4:5])  # 19.9 s after the first byte
        self.assertFalse(transport.disconnected)
        self.assertEqual(self.factory.stats.connections_past_deadline, 0)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.factory.stats.connections_past_deadline, 1)
        self.assertEqual(self.factory.stats.connections_timed_out, 0)
        protocol.connectionLost(None)
        [(rejected, error)] = self.sink.rejected
        self.assertEqual((rejected.data, error.reason), (packet[:5], Reason.TRUNCATED))
        self.assertEqual(
            error.detail,
            "connection ended after 5 bytes of a packet "
            "(not complete 20 s after its first byte)",
        )
        self.assertEqual(rejected.arrival_ns, 1_700_000_045_150_000_000)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_packetDeadlineLogged(self) -> None:
        with capturedLogs() as events:
            protocol, _ = self.connect()
            protocol.dataReceived(reference_packet()[:7])
            self.clock.advance(20)
        [event] = [e for e in events if "--packet-deadline" in e["log_format"]]
        self.assertEqual(
            formatEvent(event),
            "Cut 192.0.2.7:40123: its packet was not complete 20 s after its first "
            "byte (--packet-deadline); its 7 bytes are quarantined",
        )

    def test_eachPacketItsOwnDeadline(self) -> None:
        """The deadline runs from each packet's first byte, not the connection's."""
        protocol, transport = self.connect()
        first, second = reference_packet(start=0), reference_packet(start=30)
        protocol.dataReceived(first[:10])
        self.clock.advance(19)
        # The first completes, the second starts in the same segment.
        protocol.dataReceived(first[10:] + second[:10])
        self.clock.advance(19)
        protocol.dataReceived(second[10:])
        self.clock.advance(19)
        self.assertFalse(transport.disconnected)
        self.assertEqual([p.data for p in self.sink.received], [first, second])
        self.assertEqual(self.factory.stats.connections_past_deadline, 0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the idle timeout

    def test_deadlineWaitsWhilePaused(self) -> None:
        """
        While the server does not read (the journal is full) the packet's
        deadline waits: the station is not slow, the server is.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(reference_packet()[:10])
        self.clock.advance(15)
        self.factory.pause(True)
        self.clock.advance(1000)
        self.assertFalse(transport.disconnected)
        self.factory.pause(False)
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.factory.stats.connections_past_deadline, 1)

    def test_timeoutCancelledOnClose(self) -> None:
        protocol, _ = self.connect()
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectionsTrackedAndDrained(self) -> None:
        first, _ = self.connect()
        second, _ = self.connect()
        self.assertEqual(self.factory.connections, {first, second})
        drained = self.factory.drained()
        first.connectionLost(None)
        self.assertNoResult(drained)
        second.connectionLost(None)
        self.successResultOf(drained)
        self.successResultOf(self.factory.drained())
        self.assertEqual(self.factory.stats.connections_accepted, 2)

    def test_garbageNeverRaises(self) -> None:
        """Random garbage is rejected, never raised."""
        import random

        rng = random.Random(7)
        for _ in range(200):
            protocol, _ = self.connect()
            for _ in range(rng.randrange(1, 5)):
                protocol.dataReceived(rng.randbytes(rng.randrange(0, 300)))
            protocol.connectionLost(None)


class AcknowledgementTests(SynchronousTestCase):
    """One ACK byte per packet, once the sink has it durably."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.sink = RecordingSink(hold=True)
        self.factory = StationFactory(
            self.sink,
            self.clock,
            **factory_options(self.clock, idle_timeout=30.0, max_packet_size=400),
        )
        self.protocol = self.factory.buildProtocol(PEER)
        self.transport = StringTransport(peerAddress=PEER)
        self.protocol.makeConnection(self.transport)

    def test_ackByte(self) -> None:
        self.assertEqual(ACK, b"\x06")

    def test_writtenOnceDurable(self) -> None:
        self.protocol.dataReceived(reference_packet())
        [durable] = self.sink.durable
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.factory.stats.packets_acknowledged, 0)
        durable.callback(None)
        self.assertEqual(self.transport.value(), ACK)
        self.assertEqual(self.factory.stats.packets_acknowledged, 1)
        self.assertFalse(self.transport.disconnecting)

    def test_notWrittenBeforeTheWholePacket(self) -> None:
        packet = reference_packet()
        self.protocol.dataReceived(packet[:-1])
        self.assertEqual(self.sink.durable, [])
        self.assertEqual(self.transport.value(), b"")
        self.protocol.dataReceived(packet[-1:])
        self.sink.durable[0].callback(None)
        self.assertEqual(self.transport.value(), ACK)

    def test_notWrittenAfterConnectionLost(self) -> None:
        self.protocol.dataReceived(reference_packet())
        self.protocol.connectionLost(None)
        self.sink.durable[0].callback(None)
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.factory.stats.packets_acknowledged, 0)

    def test_notWrittenWhileClosing(self) -> None:
        self.protocol.dataReceived(reference_packet())
        self.transport.loseConnection()
        self.sink.durable[0].callback(None)
        self.assertEqual(self.transport.value(), b"")

    def test_onePerPacket(self) -> None:
        """Two packets on one connection: one ACK each, as each is durable."""
        packets = reference_packet(start=0) + reference_packet(start=30)
        self.protocol.dataReceived(packets[:100])
        self.protocol.dataReceived(packets[100:])
        first, second = self.sink.durable
        self.assertEqual(self.transport.value(), b"")
        second.callback(None)
        self.assertEqual(self.transport.value(), ACK)
        first.callback(None)
        self.assertEqual(self.transport.value(), ACK * 2)
        self.assertEqual(self.factory.stats.packets_acknowledged, 2)

    def test_rejectedBytesNotAcknowledged(self) -> None:
        """An oversized packet is cut, not acknowledged."""
        self.protocol.dataReceived(HEADER.pack(60000, 3600, 120, 6, 1, 3) + b"x" * 500)
        self.assertEqual(len(self.sink.rejected), 1)
        self.assertEqual(self.sink.durable, [])
        self.assertEqual(self.transport.value(), b"")


class HalfCloseTests(SynchronousTestCase):
    """
    A station that shuts its side of the connection after its packet
    (C{shutdown(SHUT_WR)}) and waits for the ACK gets it, then the server
    closes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.sink = RecordingSink(hold=True)
        self.factory = StationFactory(
            self.sink,
            self.clock,
            **factory_options(self.clock, idle_timeout=30.0, max_packet_size=400),
        )
        self.protocol = self.factory.buildProtocol(PEER)
        self.transport = StringTransport(peerAddress=PEER)
        self.protocol.makeConnection(self.transport)

    def test_halfCloseable(self) -> None:
        """Twisted's TCP transport calls readConnectionLost, not connectionLost."""
        self.assertTrue(IHalfCloseableProtocol.providedBy(self.protocol))

    def test_ackThenClose(self) -> None:
        self.protocol.dataReceived(reference_packet())
        self.protocol.readConnectionLost()
        [durable] = self.sink.durable
        self.assertFalse(self.transport.disconnecting)
        durable.callback(None)
        self.assertEqual(self.transport.value(), ACK)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.factory.stats.packets_acknowledged, 1)
        self.protocol.connectionLost(None)
        self.assertEqual(self.sink.rejected, [])

    def test_severalPackets(self) -> None:
        """Closed once the last of them is acknowledged, whichever order."""
        self.protocol.dataReceived(reference_packet(start=0) + reference_packet(start=30))
        self.protocol.readConnectionLost()
        first, second = self.sink.durable
        second.callback(None)
        self.assertFalse(self.transport.disconnecting)
        first.callback(None)
        self.assertEqual(self.transport.value(), ACK * 2)
        self.assertTrue(self.transport.disconnecting)

    def test_alreadyDurable(self) -> None:
        """A packet durable before the half-close: closed at once."""
        self.protocol.dataReceived(reference_packet())
        self.sink.durable[0].callback(None)
        self.assertFalse(self.transport.disconnecting)
        self.protocol.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), ACK)

    def test_nothingSent(self) -> None:
        self.protocol.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")

    def test_unfinishedPacketQuarantined(self) -> None:
        """Bytes of a packet left at the half-close: truncated, once."""
        packet = reference_packet()
        self.protocol.dataReceived(packet + packet[:40])
        self.protocol.readConnectionLost()
        [(rejected, error)] = self.sink.rejected
        self.assertEqual((rejected.data, error.reason), (packet[:40], Reason.TRUNCATED))
        self.sink.durable[0].callback(None)
        self.assertEqual(self.transport.value(), ACK)
        self.protocol.connectionLost(None)
        self.assertEqual(len(self.sink.rejected), 1)

    def test_notKept(self) -> None:
        """A packet the sink could not keep: no ACK, and the connection closes."""
        self.protocol.dataReceived(reference_packet())
        self.protocol.readConnectionLost()
        failed = self.sink.durable[0]
        failed.errback(RuntimeError("disk on fire"))
        self.assertEqual(self.transport.value(), b"")
        self.assertTrue(self.transport.disconnecting)
        self.failureResultOf(failed, RuntimeError)

    def test_notReadAgain(self) -> None:
        """
        Pausing and resuming (the journal full, then not) does not read a
        connection the station has shut: Twisted would see its end again.
        """
        self.protocol.dataReceived(reference_packet())
        self.protocol.readConnectionLost()
        self.transport.pauseProducing()  # what Twisted does at the end of input
        self.factory.pause(True)
        self.factory.pause(False)
        self.assertEqual(self.transport.producerState, "paused")
        self.protocol.readConnectionLost()  # said twice: nothing more
        self.assertEqual(self.sink.rejected, [])
        self.sink.durable[0].callback(None)
        self.assertEqual(self.transport.value(), ACK)

    def test_idleTimeoutStillHolds(self) -> None:
        """A packet that is never durable does not keep the connection forever."""
        self.protocol.dataReceived(reference_packet())
        self.protocol.readConnectionLost()
        self.clock.advance(30)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.factory.stats.connections_timed_out, 1)


class DescribePeerTests(SynchronousTestCase):
    def test_ipv6(self) -> None:
        self.assertEqual(describe_peer(IPv6Address("TCP", "::1", 8266)), "[::1]:8266")

    def test_ipv4(self) -> None:
        self.assertEqual(describe_peer(PEER), "192.0.2.7:40123")


class BootClockTests(SynchronousTestCase):
    """Packets are stamped on the boot clock too; wall-clock steps are seen."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        #: The boot clock: seconds since boot, in step with C{clock} until set.
        self.booted_at = 1_699_999_000
        self.sink = RecordingSink()
        self.factory = StationFactory(
            self.sink,
            self.clock,
            boot_clock=self.boot_ns,
            **factory_options(self.clock, idle_timeout=30.0, max_packet_size=400),
        )

    def boot_ns(self) -> int:
        return round((self.clock.seconds() - self.booted_at) * 1e9)

    def send(self, data: bytes) -> list[dict]:
        """Send C{data} on a connection of its own: the steps logged meanwhile."""
        with capturedLogs() as events:
            protocol = self.factory.buildProtocol(PEER)
            protocol.makeConnection(StringTransport(peerAddress=PEER))
            protocol.dataReceived(data)
            protocol.connectionLost(None)
        return [e for e in events if "stepped" in e["log_format"]]

    def test_stampedOnBothClocks(self) -> None:
        self.send(reference_packet())
        self.send(reference_packet()[:20])  # truncated: stamped the same way
        [received] = self.sink.received
        self.assertEqual(received.arrival_ns, 1_700_000_000 * 10**9)
        self.assertEqual(received.boot_ns, 1000 * 10**9)
        [(rejected, _)] = self.sink.rejected
        self.assertEqual(rejected.boot_ns, 1000 * 10**9)

    def test_noBootClock(self) -> None:
        factory = StationFactory(
            self.sink, self.clock, **factory_options(self.clock, max_packet_size=400)
        )
        self.assertEqual(factory.stamp(), (1_700_000_000 * 10**9, None))

    def test_clockStep(self) -> None:
        """More than 1 s of change in (wall - boot clock) is a step: counted, logged."""
        self.assertEqual(self.send(reference_packet()), [])
        self.clock.advance(3600)
        self.booted_at += 1  # the boot clock ran 1 s less than the wall clock
        self.assertEqual(self.send(reference_packet()), [])
        self.assertEqual(self.factory.stats.clock_steps, 0)
        self.booted_at += 1.001
        [event] = self.send(reference_packet())
        self.assertAlmostEqual(event["seconds"], 1.001, places=6)
        self.assertEqual(self.factory.stats.clock_steps, 1)
        self.booted_at -= 7200  # set back two hours
        self.assertEqual(self.send(reference_packet()), [])  # rate-limited
        self.assertEqual(self.factory.stats.clock_steps, 2)
        self.clock.advance(3600)
        self.booted_at += 5
        [event] = self.send(reference_packet())
        self.assertAlmostEqual(event["seconds"], 5.0, places=6)
        self.assertEqual(event["suppressed"], 1)
        self.assertEqual(self.factory.stats.clock_steps, 3)
