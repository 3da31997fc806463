"""
The station protocol: one instance per TCP connection.

It accumulates the connection's bytes, cuts them into packets by their headers
(L{PacketFramer}), stamps each packet with the time its last byte arrived (on
the wall clock and on the machine's boot clock, which is never stepped) and
hands it to an L{IPacketSink}.  A connection idle past the timeout is closed;
one whose packet is not complete by its deadline (from its first byte) is
cut; one whose header announces more than the maximum packet size is cut.
Bytes left when the connection ends are a truncated packet.  Nothing the
peer sends raises out of here.

Once a packet is durable in the journal, the protocol writes one byte,
L{ACK} (0x06), back on the connection if it is still open: firmware that
waits for it can delete its records knowing the server has them.  A station
that shuts its side of the connection after its packet (half-close) still
gets its ACK; then the server closes.

Which connections are read, and which make room for others, is the
factory's (L{StationFactory}): a connection from an address over its
per-address limit or rate is held unread until there is room; at the
connection limit, a new connection takes the place of the one that has gone
longest without a complete packet (L{CUT_AFTER}).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from weather.core.dump import counted
from weather.core.packet import Packet, PacketFramer, PacketRejected, Reason
from weather.server.admission import (
    HOLDS,
    NOT_ALLOWED,
    RATE_LIMITED,
    REFUSALS,
    SERVER_LIMIT,
    Admission,
    LimitKey,
    peer_address,
)
from weather.server.counts import ReasonCounts
from weather.server.interfaces import IPacketSink, PacketRefused
from weather.server.logs import RateLimitedLog

#: Written back once a packet is durable (ASCII ACK).
ACK = b"\x06"
#: Addresses outside the allow-list are logged once each, up to this many.
MAX_LOGGED_ADDRESSES = 4096
#: A change of (wall clock - boot clock) larger than this between two packets
#: is a step of the wall clock (NTP's first sync, a person setting it).
CLOCK_STEP_NS = 1_000_000_000
#: Seconds a connection must have been read without completing a packet (or
#: since its last packet was acknowledged) before a new connection may take
#: its place at the connection limit.  A station writes its packet as soon as
#: it is connected, in one go: it is read within a round trip or a few
#: retransmissions; a burst of stations must not cut each other.
CUT_AFTER = 5.0


def describe_peer(address: IAddress) -> str:
    """C{host:port} for IP peers, the address's text otherwise."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(getattr(address, "name", None) or address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class ConnectionCounts:
    """What a L{StationFactory} counts, since it was made."""

    connections_accepted: int = 0
    #: By reason: one of L{weather.server.admission.REFUSALS}.
    connections_refused: ReasonCounts = field(
        default_factory=lambda: ReasonCounts(REFUSALS)
    )
    #: Held unread for a while, by reason: one of L{weather.server.admission.HOLDS}.
    connections_held: ReasonCounts = field(default_factory=lambda: ReasonCounts(HOLDS))
    #: Held ones read over their address's limit: their hold ran out
    #: (--idle-timeout), or the server reached --max-connections.
    connections_held_too_long: int = 0
    connections_timed_out: int = 0
    #: Cut because a packet was not complete by --packet-deadline.
    connections_past_deadline: int = 0
    #: Cut at --max-connections to take a new connection (L{CUT_AFTER}).
    connections_cut_for_room: int = 0
    #: Times accept() was stopped because file descriptors ran short.
    descriptors_short: int = 0
    packets_acknowledged: int = 0
    internal_errors: int = 0
    #: Steps of the wall clock seen between two packets (L{CLOCK_STEP_NS}).
    clock_steps: int = 0


@implementer(IHalfCloseableProtocol)
class StationProtocol(Protocol, TimeoutMixin):
    """Receive one station's packets on one connection."""

    factory: StationFactory
    log = Logger()

    def connectionMade(self) -> None:
        self.callLater = self.factory.clock.callLater
        address = self.transport.getPeer()
        self.host = getattr(address, "host", None)
        self.peer = describe_peer(address)
        self.framer = PacketFramer(self.factory.max_packet_size)
        #: The stamp of the last bytes received (L{StationFactory.stamp}).
        self._received: tuple[int, int | None] | None = None
        #: Why this connection is held unread (one of L{HOLDS}), or None.
        self.held: str | None = None
        #: Packets handed to the sink whose ACK is not written yet.
        self.unacknowledged = 0
        #: The station shut its side of the connection (half-close).
        self.read_closed = False
        #: Why the server cut the connection, for what it leaves in quarantine.
        self._cut_because: str | None = None
        #: The deadline of the packet being received, or (while paused) the
        #: seconds it had left.
        self._deadline: IDelayedCall | None = None
        self._deadline_left: float | None = None
        self.factory.connection_opened(self)

    # -- reading, holding, pausing ------------------------------------------

    def read(self) -> None:
        """Read this connection, from its start or after it was held."""
        self.held = None
        if self.factory.paused:
            self.pause(True)
        else:
            self.transport.resumeProducing()
            self.setTimeout(self.factory.idle_timeout)

    def hold(self, reason: str) -> None:
        """
        Leave this connection unread: its address is over a limit.  After
        --idle-timeout it is read all the same (L{timeoutConnection}).
        """
        self.held = reason
        self.transport.pauseProducing()
        self.setTimeout(None if self.factory.paused else self.factory.idle_timeout)

    def pause(self, paused: bool) -> None:
        """
        Stop reading this connection, or start again.  A paused connection
        is not idle: its timeout and its packet's deadline wait too, so
        nothing the station sent is cut.
        """
        if paused:
            self.setTimeout(None)
            if self._deadline is not None:
                now = self.factory.clock.seconds()
                self._deadline_left = self._deadline.getTime() - now
                self._deadline.cancel()
                self._deadline = None
            self.transport.pauseProducing()
            return
        self.setTimeout(self.factory.idle_timeout)
        if self.held is None and not self.read_closed:
            self.transport.resumeProducing()
            if self._deadline_left is not None:
                left, self._deadline_left = self._deadline_left, None
                self._deadline = self.callLater(max(0.0, left), self._past_deadline)

    # -- receiving ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.framer.error is not None:
            return  # already cut; ignore what was in flight
        self.resetTimeout()
        packets = self.framer.feed(data)
        if packets or len(self.framer):
            # When these bytes arrived: a whole packet's arrival, and a
            # truncated one's (its connection may end or time out later).
            self._received = arrival_ns, boot_ns = self.factory.stamp()
            for raw in packets:
                self._deliver(Packet(raw, self.peer, arrival_ns, boot_ns))
        if self.framer.error is not None:
            self._reject(self.framer.take_pending(), self.framer.error)
            self.transport.abortConnection()
            return
        self._time_packet(bool(packets))

    def _deliver(self, packet: Packet) -> None:
        durable = self.factory.deliver(packet)
        if durable is None:
            return
        self.unacknowledged += 1
        self.factory.keep(self)
        durable.addCallbacks(self._acknowledge, self._not_kept)
        durable.addErrback(self._refused)

    def _time_packet(self, completed: bool) -> None:
        """The packet in progress has a deadline from its first byte."""
        if completed and self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if len(self.framer) and self._deadline is None:
            deadline = self.factory.packet_deadline
            self._deadline = self.callLater(deadline, self._past_deadline)

    def _past_deadline(self) -> None:
        self._deadline = None
        self.factory.stats.connections_past_deadline += 1
        deadline = self.factory.packet_deadline
        self._cut_because = f"not complete {deadline:g} s after its first byte"
        self.factory.past_deadline(self, len(self.framer))
        self.transport.abortConnection()

    # -- answering --------------------------------------------------------------

    def _acknowledge(self, _: object) -> None:
        """The packet is durable: tell the station, if it still listens."""
        if self.connected and not self.transport.disconnecting:
            self.transport.write(ACK)
            self.factory.stats.packets_acknowledged += 1
        self._answered()

    def _not_kept(self, failure: Failure) -> Failure:
        """The packet could not be kept: no ACK (the failure goes on)."""
        self._answered()
        return failure

    def _answered(self) -> None:
        self.unacknowledged -= 1
        if self.unacknowledged or not self.connected:
            return
        if self.read_closed:
            self.transport.loseConnection()
        else:
            self.factory.cuttable(self)

    def readConnectionLost(self) -> None:
        """
        The station shut its side after sending (half-close): what it left
        unfinished is a truncated packet; once every packet it sent is
        durable and acknowledged, close.
        """
        if self.read_closed:
            return
        self.read_closed = True
        self.factory.keep(self)
        self._stop_deadline()
        self._reject_rest()
        if not self.unacknowledged:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """The server never shuts its side alone: nothing to do."""

    # -- ending -------------------------------------------------------------------

    def _refused(self, failure: Failure) -> None:
        """The sink did not keep the packet: no ACK, and the connection is cut."""
        self.transport.abortConnection()
        failure.trap(PacketRefused)

    def timeoutConnection(self) -> None:
        if self.held is not None:
            self.factory.held_too_long(self)
            return
        self.factory.stats.connections_timed_out += 1
        self._cut_because = f"idle for {self.factory.idle_timeout:g} s"
        self.transport.abortConnection()

    def cut_for_room(self) -> None:
        """Make room at the connection limit: the factory counts and logs it."""
        self._cut_because = "cut at --max-connections for a new connection"
        self.setTimeout(None)
        self._stop_deadline()
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        self.connected = False
        self.setTimeout(None)
        self._stop_deadline()
        self._reject_rest()
        self.factory.connection_closed(self)

    def _stop_deadline(self) -> None:
        self._deadline_left = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _reject_rest(self) -> None:
        """Bytes of an unfinished packet, when nothing more will come."""
        rest = self.framer.take_pending()
        if rest:
            why = f" ({self._cut_because})" if self._cut_because else ""
            self._reject(
                rest,
                PacketRejected(
                    Reason.TRUNCATED,
                    f"connection ended after {len(rest)} bytes of a packet{why}",
                ),
            )

    def _reject(self, data: bytes, error: PacketRejected) -> None:
        """Bytes that are not a whole packet, stamped when they arrived."""
        packet = Packet(data, self.peer, *(self._received or self.factory.stamp()))
        self.factory.sink.packet_rejected(packet, error)


class RefusedProtocol(Protocol):
    """A connection the server does not take: closed at once, nothing read."""

    def connectionMade(self) -> None:
        self.transport.abortConnection()


class StationFactory(Factory):
    """
    Build L{StationProtocol}s that hand packets to C{sink}, stamping arrival
    times from C{wall} and C{boot_clock}, and keep track of open
    connections: refuse the connections L{Admission} says no to, hold unread
    those it says must wait, and at the connection limit make room for a
    new connection by cutting the one that has gone longest without a
    complete packet.  Timers (idle timeouts, packet deadlines, holds, rate
    limits) run on C{clock}.

    @param packet_deadline: seconds from a packet's first byte to its last,
        after which its connection is cut.
    @param wall: the wall clock in seconds since the epoch (default:
        C{clock.seconds}, for a reactor whose timers run on the wall clock).
    @param boot_clock: the machine's boot clock in nanoseconds
        (C{CLOCK_BOOTTIME}: monotonic, counting suspend), or None where there
        is none.
    """

    protocol = StationProtocol
    noisy = False

    log = Logger()

    def __init__(
        self,
        sink: IPacketSink,
        clock: IReactorTime,
        *,
        idle_timeout: float,
        packet_deadline: float,
        max_packet_size: int,
        admission: Admission,
        boot_clock: Callable[[], int] | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.wall = wall if wall is not None else clock.seconds
        self.boot_clock = boot_clock
        #: (wall - boot clock) at the last packet, to see the wall clock step.
        self._clock_offset: int | None = None
        self.idle_timeout = idle_timeout
        self.packet_deadline = packet_deadline
        self.max_packet_size = max_packet_size
        self.admission = admission
        self.connections: set[StationProtocol] = set()
        #: Connections that may be cut to make room, in the order they were
        #: last read from the start of a packet: since when.
        self._cuttable: OrderedDict[StationProtocol, float] = OrderedDict()
        #: Connections held unread, oldest first, per limit key.
        self._held: dict[LimitKey | None, OrderedDict[StationProtocol, None]] = {}
        #: Per limit key: a call to read its held connections once its rate allows.
        self._rate_retries: dict[LimitKey | None, IDelayedCall] = {}
        #: True while connections are not read (the journal is full).
        self.paused = False
        #: Called with L{Admission.at_capacity} when it changes, and again at
        #: the limit when whether a connection may be cut for a new one may
        #: have changed.
        self.capacity_observers: list[Callable[[bool], object]] = []
        self._limited = RateLimitedLog(self.log, clock)
        # Its own table: a flood of refusals must not crowd out other lines.
        self._refusals = RateLimitedLog(self.log, clock)
        self._logged_addresses: set[str] = set()
        self._drain_waiters: list[Deferred[None]] = []
        self.stats = ConnectionCounts()

    @property
    def held(self) -> int:
        """Connections held unread now."""
        return sum(len(queue) for queue in self._held.values())

    def buildProtocol(self, addr: IAddress) -> Protocol:
        host = getattr(addr, "host", None)
        reason = self.admission.refusal(host)
        if reason == SERVER_LIMIT and self._cut_for_room():
            reason = self.admission.refusal(host)
        if reason is not None:
            self._refused(host, describe_peer(addr), reason)
            protocol: Protocol = RefusedProtocol()
            protocol.factory = self
            return protocol
        self.stats.connections_accepted += 1
        return super().buildProtocol(addr)

    def _refused(self, host: str | None, peer: str, reason: str) -> None:
        self.stats.connections_refused.add(reason)
        if reason == NOT_ALLOWED:
            address = str(peer_address(host) or host)  # one form per address
            if address in self._logged_addresses:
                return
            if len(self._logged_addresses) >= MAX_LOGGED_ADDRESSES:
                return
            self._logged_addresses.add(address)
            more = len(self._logged_addresses) == MAX_LOGGED_ADDRESSES
            self.log.warn(
                "Refused a connection from {host}: not in the --allow networks "
                "(logged once per address{more})",
                host=host,
                more="; no more addresses will be logged" if more else "",
                reason=reason,
            )
            return
        self._refusals.warn(
            reason,
            "Refused a connection from {peer} ({reason}): {connections} open, "
            "the --max-connections limit, none of them to be cut",
            peer=peer,
            reason=reason,
            open=self.admission.open,
            connections=counted(self.admission.open, "connection"),
        )

    # -- holding connections whose address is over a limit ------------------------

    def _hold(self, protocol: StationProtocol, reason: str) -> None:
        key = self.admission.limit_key(protocol.host)
        self._held.setdefault(key, OrderedDict())[protocol] = None
        self.stats.connections_held.add(reason)
        protocol.hold(reason)
        source = "that address"
        if isinstance(key, ipaddress.IPv6Network) and key.prefixlen < 128:
            source = "its network " + key.compressed
        if reason == RATE_LIMITED:
            why = f"{source} is over --rate-limit"
        else:
            reading = self.admission.open_from(protocol.host)
            why = f"{reading} connections are read from {source}"
        self._refusals.warn(
            (reason, key if key is not None else protocol.host),
            "Holding a connection from {peer} unread ({reason}): {why}; it is read "
            "when there is room, at the latest in {timeout:g} s",
            peer=protocol.peer,
            reason=reason,
            why=why,
            timeout=self.idle_timeout,
        )
        if reason == RATE_LIMITED:
            self._retry_when_rate_allows(key, protocol.host)

    def _read_held(self, key: LimitKey | None) -> None:
        """Read C{key}'s held connections, oldest first, while it has room."""
        queue = self._held.get(key)
        while queue:
            protocol = next(iter(queue))
            reason = self.admission.wait(protocol.host)
            if reason == RATE_LIMITED:
                self._retry_when_rate_allows(key, protocol.host)
            if reason is not None:
                return
            self._stop_holding(protocol)
            self._read(protocol)

    def _retry_when_rate_allows(self, key: LimitKey | None, host: str | None) -> None:
        if key in self._rate_retries:
            return

        def retry() -> None:
            del self._rate_retries[key]
            self._read_held(key)

        self._rate_retries[key] = self.clock.callLater(
            self.admission.rate_wait(host), retry
        )

    def _stop_holding(self, protocol: StationProtocol) -> None:
        key = self.admission.limit_key(protocol.host)
        queue = self._held.get(key)
        if queue is None or protocol not in queue:
            return
        del queue[protocol]
        if not queue:
            del self._held[key]
            retry = self._rate_retries.pop(key, None)
            if retry is not None:
                retry.cancel()

    def held_too_long(self, protocol: StationProtocol) -> None:
        """Read C{protocol} now, over its address's limit or not."""
        self.stats.connections_held_too_long += 1
        self._stop_holding(protocol)
        self._read(protocol)

    def read_all_held(self) -> None:
        """
        Read every held connection, over its address's limit: the server
        is stopping, or has reached --max-connections.  Held ones cannot be
        cut for room (that would close them unread): read, a station's
        packet is taken at once, and an idle peer's connection may be cut
        after L{CUT_AFTER}.  So one address cannot keep the slots with held
        connections.
        """
        for queue in list(self._held.values()):
            for protocol in list(queue):
                self.held_too_long(protocol)

    def _read(self, protocol: StationProtocol) -> None:
        self.admission.reading(protocol.host)
        protocol.read()
        self.cuttable(protocol)

    # -- making room at the connection limit ----------------------------------------

    def keep(self, protocol: StationProtocol) -> None:
        """Not to be cut for room: a packet waits for its ACK, or the station is done."""
        if self._cuttable.pop(protocol, None) is not None:
            self._cuttable_changed()

    def cuttable(self, protocol: StationProtocol) -> None:
        """C{protocol} may be cut for room once it has sent no packet for L{CUT_AFTER}."""
        if protocol.connected and protocol.held is None and not protocol.read_closed:
            self._cuttable.pop(protocol, None)
            self._cuttable[protocol] = self.clock.seconds()
            self._cuttable_changed()

    def _cuttable_changed(self) -> None:
        """
        At the limit, whether a connection may be cut decides whether to
        accept: tell the capacity observers again (the listener).
        """
        if self.admission.at_capacity:
            self._capacity_changed(True)

    def next_cut_at(self) -> float:
        """
        When (on the clock) the first connection may be cut for room; a
        connection that becomes cuttable later can be cut no sooner than
        L{CUT_AFTER} from now.
        """
        if self._cuttable and not self.paused:
            return next(iter(self._cuttable.values())) + CUT_AFTER
        return self.clock.seconds() + CUT_AFTER

    def can_cut(self) -> bool:
        """Whether a connection may be cut for room now."""
        if not self._cuttable or self.paused:
            return False
        return next(iter(self._cuttable.values())) + CUT_AFTER <= self.clock.seconds()

    def _cut_for_room(self) -> bool:
        """Cut the connection longest without a complete packet, if one may be."""
        if not self.can_cut():
            return False
        protocol, since = self._cuttable.popitem(last=False)  # its close tells
        self.stats.connections_cut_for_room += 1
        self._limited.warn(
            "cut-for-room",
            "At the --max-connections limit ({open}): cut {peer} for a new connection, "
            "{seconds:.1f} s without a complete packet ({bytes} of one)",
            open=self.admission.open,
            peer=protocol.peer,
            seconds=self.clock.seconds() - since,
            pending=len(protocol.framer),
            bytes=counted(len(protocol.framer), "byte"),
        )
        self.connection_closed(protocol)  # its slot is free now; its bytes are kept
        protocol.cut_for_room()
        return True

    def past_deadline(self, protocol: StationProtocol, received: int) -> None:
        """C{protocol}'s packet was not complete by its deadline: say so (rarely)."""
        self._limited.warn(
            "packet-deadline",
            "Cut {peer}: its packet was not complete {deadline:g} s after its first "
            "byte (--packet-deadline); its {bytes} {verb} quarantined",
            peer=protocol.peer,
            deadline=self.packet_deadline,
            received=received,
            bytes=counted(received, "byte"),
            verb="is" if received == 1 else "are",
        )

    def deliver(self, packet: Packet) -> Deferred | None:
        """
        Hand a packet to the sink; a bug there must not lose the next ones.
        The result fires once the packet is durable (None after a bug).
        """
        try:
            return self.sink.packet_received(packet)
        except Exception:
            self.stats.internal_errors += 1
            self._limited.emit(
                LogLevel.critical,
                "deliver",
                "Internal error handling a packet from {peer}",
                peer=packet.peer,
                log_failure=Failure(),
            )
            return None

    def pause(self, paused: bool) -> None:
        """Stop reading every connection (and those to come), or start again."""
        self.paused = paused
        for protocol in list(self.connections):
            protocol.pause(paused)
        if not paused:  # the time not read was not theirs
            now = self.clock.seconds()
            for protocol in self._cuttable:
                self._cuttable[protocol] = now

    def drained(self) -> Deferred[None]:
        """A L{Deferred} that fires once no connection is open."""
        if not self.connections:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def connection_opened(self, protocol: StationProtocol) -> None:
        """Count C{protocol}, and read it or hold it (behind those held before it)."""
        self.connections.add(protocol)
        queue = self._held.get(self.admission.limit_key(protocol.host))
        if queue:
            reason = next(iter(queue)).held
        else:
            reason = self.admission.wait(protocol.host)
        if reason is None:
            self._read(protocol)
        else:
            self._hold(protocol, reason)
        self.admission.opened()
        if self.admission.at_capacity and self._held:
            self.read_all_held()
        if self.admission.open == self.admission.max_connections:
            self._limited.warn(
                "capacity",
                "{count} station connections are open, the --max-connections "
                "limit: a new one takes the place of one {cut_after:g} s without a "
                "complete packet, or waits in the listen queue until one closes",
                count=self.admission.open,
                cut_after=CUT_AFTER,
            )
            self._capacity_changed(True)

    def connection_closed(self, protocol: StationProtocol) -> None:
        if protocol not in self.connections:
            return
        self.connections.discard(protocol)
        self._cuttable.pop(protocol, None)
        was_read = protocol.held is None
        if not was_read:
            self._stop_holding(protocol)
        self.admission.closed(protocol.host, was_read)
        if was_read:
            self._read_held(self.admission.limit_key(protocol.host))
        if self.admission.open == self.admission.max_connections - 1:
            self._capacity_changed(False)
        if not self.connections:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _capacity_changed(self, at_capacity: bool) -> None:
        for observer in list(self.capacity_observers):
            observer(at_capacity)

    def stamp(self) -> tuple[int, int | None]:
        """
        The current time on the wall clock and on the boot clock; a step of
        the wall clock since the last call is counted and logged.
        """
        arrival_ns = self.now_ns()
        if self.boot_clock is None:
            return arrival_ns, None
        boot_ns = self.boot_clock()
        previous, self._clock_offset = self._clock_offset, arrival_ns - boot_ns
        if previous is not None and abs(self._clock_offset - previous) > CLOCK_STEP_NS:
            self.stats.clock_steps += 1
            self._limited.warn(
                "clock-step",
                "The wall clock stepped by {seconds:+.3f} s since the last packet "
                "(NTP synchronized, or it was set); spacing between packets is "
                "measured on the boot clock and is not affected",
                seconds=(self._clock_offset - previous) / 1e9,
            )
        return arrival_ns, boot_ns

    def now_ns(self) -> int:
        """The current time, to the microsecond, in nanoseconds since the epoch."""
        return round(self.wall() * 1_000_000) * 1000
