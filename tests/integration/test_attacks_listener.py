"""
Issue 15's attacks on the station listener, on real loopback sockets, each
showing a real station acknowledged during and after the attack with nothing
lost: slow senders holding every slot (2), one address uploading in a burst
(4, stations behind one NAT), a station that half-closes and waits for its
ACK (5), and the server out of file descriptors (3: in this process, the
test taking them, and in a daemon whose RLIMIT_NOFILE is lowered).  Bounded
in size and time (each under ~20 s); the figures are in docs/limits.md
(bench/listener_attacks.py).
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.fakeinflux import FakeInfluxDB
from tests.integration.daemon import LOOPBACK, Daemon, free_listening_port, twistd
from tests.integration.test_admission_sockets import until
from tests.support import (
    Station,
    build_test_service,
    journal_status,
    make_settings,
    numbered_packet,
    reference_packet,
)
from weather.app.tap import SPARE_DESCRIPTORS
from weather.core.packet import Reason
from weather.server.interfaces import IPacketSink
from weather.server.protocol import ACK


@implementer(IPacketSink)
class Tap:
    """Notes what reaches the pipeline, whole or not, and hands it on."""

    def __init__(self, sink: IPacketSink) -> None:
        self.sink = sink
        self.received: list[bytes] = []
        self.rejected: list[tuple[bytes, str]] = []

    def packet_received(self, packet):
        self.received.append(packet.data)
        return self.sink.packet_received(packet)

    def packet_rejected(self, packet, error) -> None:
        self.rejected.append((packet.data, error.reason))
        self.sink.packet_rejected(packet, error)


class SlowSender(Protocol):
    """
    Sends a packet a byte every C{every} seconds, and connects again
    whenever it is cut, until L{stop}: a peer that holds a slot as long as
    the server lets it.
    """

    def __init__(self, connect, every: float) -> None:
        self.connect = connect
        self.every = every
        self.data = reference_packet(records=58)
        self.stopped = False
        self.connections = 0
        self.lost: Deferred | None = None
        self._call = None

    def connectionMade(self) -> None:
        self.connections += 1
        self.sent = 0
        self.lost = Deferred()
        self._send()

    def _send(self) -> None:
        self._call = None
        if self.stopped or self.sent >= len(self.data):
            return
        self.transport.write(self.data[self.sent : self.sent + 1])
        self.sent += 1
        self._call = reactor.callLater(self.every, self._send)

    def connectionLost(self, reason) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
        lost, self.lost = self.lost, None
        if not self.stopped:
            self.connect(self)
        if lost is not None:
            lost.callback(None)

    def stop(self) -> Deferred | None:
        self.stopped = True
        if self.lost is not None and self.transport is not None:
            self.transport.abortConnection()
        return self.lost


class FireAndForget(Protocol):
    """Today's firmware: write the packet and close, never read."""

    def __init__(self, packet: bytes) -> None:
        self.packet = packet

    def connectionMade(self) -> None:
        self.transport.write(self.packet)
        self.transport.loseConnection()


def half_close(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """
    As firmware that half-closes: send, C{shutdown(SHUT_WR)}, read to the
    end; what the server wrote.  Blocking: run in a thread.
    """
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = s.recv(16)
            if not chunk:
                return received
            received += chunk


class InProcessTestCase(TestCase):
    """The assembled server on 127.0.0.1, the real reactor, InfluxDB faked."""

    timeout = 60

    def start(self, *args: str) -> None:
        self.fake = FakeInfluxDB()
        settings = make_settings(
            self, "--port", "tcp:0:interface=127.0.0.1", "--grace", "1", *args
        )
        self.service = build_test_service(self, settings, reactor, StubTreq(self.fake))
        self.factory = self.service.listener.factory
        self.tap = self.factory.sink = Tap(self.factory.sink)
        self.service.startService()
        self.addCleanup(self.stop)
        self.port = self.service.listener.port.getHost().port

    def stop(self) -> Deferred | None:
        if self.service.running:
            return self.service.stopService()
        return None

    def endpoint(self, source: str) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.port, timeout=10, bindAddress=(source, 0)
        )

    @inlineCallbacks
    def station(self, packet: bytes, source: str = "127.0.0.1"):
        """A station that waits for the ACK: what it received, and how long it took."""
        started = time.monotonic()
        station = Station(packet)
        yield connectProtocol(self.endpoint(source), station)
        received = yield station.done.addTimeout(20, reactor)
        return received, time.monotonic() - started


class SlowSendersTests(InProcessTestCase):
    """
    Attack 2, scaled down: 90 connections from three addresses (30 each,
    under the per-address limit) against --max-connections 60, each sending
    a byte every 0.5 s and connecting again whenever cut.  Stations arriving
    meanwhile (one every 0.5 s for 8 s) are acknowledged, and every packet
    they sent reaches the journal; the slow senders' bytes are quarantined.
    """

    @inlineCallbacks
    def attack(self, *args: str):
        """The attack with C{args}: the station's connect-to-ACK times."""
        self.start("--max-connections", "60", *args)
        senders: list[SlowSender] = []

        def connect(sender: SlowSender) -> None:
            source = f"127.0.0.{2 + senders.index(sender) % 3}"
            d = connectProtocol(self.endpoint(source), sender)
            d.addErrback(lambda _: None)  # the server is stopping

        for _ in range(90):
            senders.append(SlowSender(connect, every=0.5))
            connect(senders[-1])
        yield until(
            lambda: (
                len(self.factory.connections) == 60 and not self.service.listener.accepting
            ),
            what="the slow senders to hold every slot",
        )
        packets = [numbered_packet(range(30 * i, 30 * i + 30)) for i in range(17)]
        results = []
        for packet in packets[:16]:
            results.append(self.station(packet))
            yield deferLater(reactor, 0.5, lambda: None)
        answers = yield gatherResults(results)
        self.assertEqual([received for received, _ in answers], [ACK] * 16)
        after, _ = yield self.station(packets[16])
        self.assertEqual(after, ACK)
        yield gatherResults([d for d in (s.stop() for s in senders) if d is not None])
        self.assertEqual(self.tap.received, packets)
        self.assertEqual(self.factory.stats.connections_refused.total(), 0)
        self.assertGreater(len(self.tap.rejected), 0)
        self.assertEqual({reason for _, reason in self.tap.rejected}, {Reason.TRUNCATED})
        return [seconds for _, seconds in answers]

    @inlineCallbacks
    def test_cutForStations(self):
        """
        The slow senders are cut for new connections once they have gone
        CUT_AFTER without a complete packet (before the default deadline):
        a station waits that long at most, in the listen queue.
        """
        waited = yield self.attack()
        stats = self.factory.stats
        self.assertGreater(stats.connections_cut_for_room, 16)
        self.assertEqual(stats.connections_past_deadline, 0)
        self.assertLess(max(waited), 15)

    @inlineCallbacks
    def test_cutAtTheirDeadline(self):
        """With --packet-deadline 3 they are cut at their deadline first."""
        yield self.attack("--packet-deadline", "3")
        stats = self.factory.stats
        self.assertGreater(stats.connections_past_deadline, 60)
        self.assertEqual(stats.connections_cut_for_room, 0)


class BurstFromOneAddressTests(InProcessTestCase):
    @inlineCallbacks
    def test_fiveHundredUploadsBackToBack(self):
        """
        Attack 4: 500 uploads from one address (stations behind one NAT),
        each written and closed without waiting for the ACK.  Over
        --max-connections-per-peer they are held unread, not refused: every
        packet reaches the journal.  A station elsewhere is acknowledged
        during and after.
        """
        self.start()
        packets = [numbered_packet(range(i, i + 1)) for i in range(500)]
        during = None
        for first in range(0, 500, 50):
            yield DeferredList(
                [
                    connectProtocol(self.endpoint("127.0.0.2"), FireAndForget(packet))
                    for packet in packets[first : first + 50]
                ],
                consumeErrors=True,
            )
            if during is None and self.factory.held:
                during = self.station(reference_packet(), source="127.0.0.3")
        received, _ = yield during
        self.assertEqual(received, ACK)
        yield until(
            lambda: len(self.tap.received) == 501, timeout=20, what="all 500 packets"
        )
        after, _ = yield self.station(reference_packet(start=30), source="127.0.0.3")
        self.assertEqual(after, ACK)
        self.assertEqual(
            sorted(self.tap.received[:-1]), sorted([*packets, reference_packet()])
        )
        stats = self.factory.stats
        self.assertEqual(stats.connections_refused.total(), 0)
        self.assertGreater(stats.connections_held["peer_limit"], 0)
        self.assertEqual(self.tap.rejected, [])


class HalfCloseTests(InProcessTestCase):
    @inlineCallbacks
    def test_ackAfterHalfClose(self):
        """
        Attack 5: send a packet, shutdown(SHUT_WR), read: the ACK, then the
        end; the packet is stored once.
        """
        self.start()
        packet = reference_packet()
        received = yield deferToThread(half_close, self.port, packet)
        self.assertEqual(received, ACK)
        self.assertEqual(self.tap.received, [packet])
        # And firmware that then sends it again is not needed: one packet.
        yield until(lambda: not self.factory.connections, what="the connection to end")
        self.assertEqual(self.factory.stats.packets_acknowledged, 1)

    @inlineCallbacks
    def test_halfCloseAfterPartOfAPacket(self):
        """A whole packet and part of the next: one ACK; the part quarantined."""
        self.start()
        packet = reference_packet()
        received = yield deferToThread(half_close, self.port, packet + packet[:40])
        self.assertEqual(received, ACK)
        self.assertEqual(self.tap.received, [packet])
        self.assertEqual(self.tap.rejected, [(packet[:40], Reason.TRUNCATED)])

    @inlineCallbacks
    def test_severalStationsHalfClosing(self):
        """Fifty at once, over the per-address limit: each gets its ACK."""
        self.start("--max-connections-per-peer", "8")
        packets = [numbered_packet(range(i, i + 2)) for i in range(50)]
        answers = yield gatherResults(
            [deferToThread(half_close, self.port, packet) for packet in packets]
        )
        self.assertEqual(answers, [ACK] * 50)
        self.assertEqual(sorted(self.tap.received), sorted(packets))


#: The daemon's open-files limit (soft and hard) in the descriptor test.
NOFILE = 200
WEATHER = ("weather",)


class TakenDescriptorsTests(InProcessTestCase):
    """
    The server in this process, whose descriptors the test takes itself
    (files of /dev/null, under a lowered RLIMIT_NOFILE): with fewer than the
    reserve left, station connections are not accepted at all, and out of
    descriptors altogether accept() does not let Twisted's EMFILE recovery
    close them; once descriptors are free they are served.
    """

    def setUp(self) -> None:
        soft, self.hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, self.hard))
        self.limit = len(os.listdir("/proc/self/fd")) + 100
        if self.hard != resource.RLIM_INFINITY and self.limit > self.hard:
            raise SkipTest("the open-files limit is too low for the test")
        self.taken: list[int] = []
        self.addCleanup(self.free)
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def take(self, leave: int) -> None:
        """Take descriptors until C{leave} are left under the limit."""
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.limit, self.hard))
        while True:
            try:
                self.taken.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        for _ in range(leave):
            os.close(self.taken.pop())

    def free(self) -> None:
        for fd in self.taken:
            os.close(fd)
        self.taken = []

    def lines(self, text: str) -> list[dict]:
        return [e for e in self.events if text in str(e.get("log_format", ""))]

    @inlineCallbacks
    def stations_wait_then_are_served(self, none_left: bool):
        """
        With 20 descriptors left (fewer than the reserve), two stations
        connect: one waits for its ACK, one writes and closes; C{none_left}:
        then every descriptor is taken, and the server's count says there
        is room (as if something had taken them since), so that accept()
        meets EMFILE.  Neither station is accepted; once descriptors are
        free, both are served.
        """
        self.start("--max-connections", "20")
        waiting = Station(numbered_packet(range(0, 30)))
        gone = FireAndForget(numbered_packet(range(30, 60)))
        yield deferLater(reactor, 0, lambda: None)  # the reactor running
        self.take(20)
        try:
            yield gatherResults(
                [
                    connectProtocol(self.endpoint("127.0.0.1"), waiting),
                    connectProtocol(self.endpoint("127.0.0.1"), gone),
                ]
            )
            yield deferLater(reactor, 0.5, lambda: None)
            if none_left:
                self.service.listener.descriptors.reserve = -1000
                self.take(0)
            yield deferLater(reactor, 1, lambda: None)
            accepting = self.service.listener.accepting
        finally:
            self.free()  # before anything else needs a descriptor
        self.assertEqual(waiting.received, b"")
        self.assertFalse(waiting.done.called, "the station's connection was closed")
        self.assertEqual(self.factory.stats.connections_accepted, 0)
        self.assertFalse(accepting)
        received = yield waiting.done.addTimeout(10, reactor)
        self.assertEqual(received, ACK)
        yield until(lambda: len(self.tap.received) == 2, what="both packets")
        self.assertEqual(sorted(self.tap.received), sorted([waiting.packet, gone.packet]))
        self.assertEqual(self.factory.stats.connections_refused.total(), 0)
        self.assertEqual(self.lines("EMFILE recovery"), [])
        [line] = self.lines("Out of file descriptors")  # once a minute
        self.assertIn("32 kept for the journal", formatEvent(line))

    def test_fewerThanTheReserve(self):
        return self.stations_wait_then_are_served(none_left=False)

    @inlineCallbacks
    def test_noneLeft(self):
        yield self.stations_wait_then_are_served(none_left=True)
        # Short again each time accept() met EMFILE after a look.
        self.assertGreater(self.factory.stats.descriptors_short, 1)


class OutOfDescriptorsTests(SynchronousTestCase):
    """
    Attack 3 end to end, in a daemon whose RLIMIT_NOFILE is NOFILE, with
    --max-connections as high as that allows: idle connections to
    --metrics-port and to the station port, as many as the server takes,
    then a station that waits for its ACK and one that writes and closes.
    Once the idle connections go, both are served: nothing is lost, and the
    log does not fill with Twisted's EMFILE recovery lines.
    """

    def setUp(self) -> None:
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        self.data_dir = os.path.join(workdir, "data")
        self.port = free_listening_port()
        self.metrics_port = free_listening_port()
        limited = (
            "import os, resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        self.server = Daemon(
            [
                "--port",
                f"tcp:{self.port}:interface={LOOPBACK}",
                "--metrics-port",
                f"tcp:{self.metrics_port}:interface={LOOPBACK}",
                "--data-dir",
                self.data_dir,
                # Nothing listens there: packets stay in the journal.
                "--influx-url",
                f"http://{LOOPBACK}:{free_listening_port()}",
                "--max-connections",
                str(NOFILE - SPARE_DESCRIPTORS),  # the most the limit allows
                "--shutdown-timeout",
                "1",
            ],
            workdir,
            command=[
                sys.executable,
                "-c",
                limited,
                twistd(),
                "-n",
                "--pidfile=",
                "weather",
            ],
        )
        self.addCleanup(self.server.kill)
        self.server.wait_ready(timeout=30)
        self.sockets: list[socket.socket] = []
        self.addCleanup(self.close_all)

    def close_all(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets = []

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.server.pid}/fd"))

    def connect(self, port: int) -> socket.socket:
        s = socket.create_connection((LOOPBACK, port), timeout=10)
        self.sockets.append(s)
        return s

    def fill(self, port: int) -> int:
        """Idle connections to C{port} until the daemon takes no more: its descriptors."""
        held = -1
        while self.open_descriptors() != held:
            held = self.open_descriptors()
            for _ in range(5):
                self.connect(port)
            time.sleep(0.3)
        return held

    def test_outOfDescriptors(self) -> None:
        self.fill(self.metrics_port)
        self.fill(self.port)
        waiting = self.connect(self.port)
        waiting.sendall(numbered_packet(range(0, 30)))
        gone = self.connect(self.port)  # today's firmware: write and close
        gone.sendall(numbered_packet(range(30, 60)))
        gone.close()
        for s in self.sockets[:]:
            if s is not waiting:
                s.close()
                self.sockets.remove(s)
        waiting.settimeout(10)
        self.assertEqual(waiting.recv(1), ACK)
        waiting.close()
        self.server.stop()
        self.assertEqual(journal_status(self.data_dir).pending, 2)
        log = self.server.log_lines()
        self.assertEqual([line for line in log if "EMFILE recovery" in line], [])
        shortages = [line for line in log if "Out of file descriptors" in line]
        self.assertLessEqual(len(shortages), 2, "".join(shortages))
        self.assertLess(len(log), 60, "".join(log))
