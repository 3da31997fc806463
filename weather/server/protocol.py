"""
The station protocol: one instance per TCP connection.

It accumulates the connection's bytes, cuts them into packets by their headers
(L{PacketFramer}), stamps each packet with the time its last byte arrived (on
the wall clock and on the machine's boot clock, which is never stepped) and
hands it to an L{IPacketSink}.  A connection idle past the timeout is closed;
one whose header announces more than the maximum packet size is cut.  Bytes
left when the connection ends are a truncated packet.  Nothing the peer sends
raises out of here.

Once a packet is durable in the journal, the protocol writes one byte,
L{ACK} (0x06), back on the connection if it is still open: firmware that
waits for it can delete its records knowing the server has them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from weather.core.packet import Packet, PacketFramer, PacketRejected, Reason
from weather.server.admission import NOT_ALLOWED, REASONS, Admission, peer_address
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
    #: By reason: one of L{weather.server.admission.REASONS}.
    connections_refused: ReasonCounts = field(default_factory=lambda: ReasonCounts(REASONS))
    connections_timed_out: int = 0
    packets_acknowledged: int = 0
    internal_errors: int = 0
    #: Steps of the wall clock seen between two packets (L{CLOCK_STEP_NS}).
    clock_steps: int = 0


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
        self.factory.connection_opened(self)
        self.setTimeout(self.factory.idle_timeout)
        if self.factory.paused:
            self.pause(True)

    def pause(self, paused: bool) -> None:
        """
        Stop reading this connection, or start again.  A paused connection
        is not idle: its timeout waits too, so nothing the station sent is cut.
        """
        if paused:
            self.setTimeout(None)
            self.transport.pauseProducing()
        else:
            self.transport.resumeProducing()
            self.setTimeout(self.factory.idle_timeout)

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
                durable = self.factory.deliver(Packet(raw, self.peer, arrival_ns, boot_ns))
                if durable is not None:
                    durable.addCallbacks(self._acknowledge, self._refused)
        if self.framer.error is not None:
            self._reject(self.framer.take_pending(), self.framer.error)
            self.transport.abortConnection()

    def _acknowledge(self, _: object) -> None:
        """The packet is durable: tell the station, if it still listens."""
        if self.connected and not self.transport.disconnecting:
            self.transport.write(ACK)
            self.factory.stats.packets_acknowledged += 1

    def _refused(self, failure: Failure) -> None:
        """The sink did not keep the packet: no ACK, and the connection is cut."""
        self.transport.abortConnection()
        failure.trap(PacketRefused)

    def timeoutConnection(self) -> None:
        self.factory.stats.connections_timed_out += 1
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        self.connected = False
        self.setTimeout(None)
        rest = self.framer.take_pending()
        if rest:
            self._reject(
                rest,
                PacketRejected(
                    Reason.TRUNCATED,
                    f"connection ended after {len(rest)} bytes of a packet",
                ),
            )
        self.factory.connection_closed(self)

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
    connections; refuse the connections L{Admission} says no to.  Timers
    (idle timeouts, rate limits) run on C{clock}.

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
        self.max_packet_size = max_packet_size
        self.admission = admission
        self.connections: set[StationProtocol] = set()
        #: True while connections are not read (the journal is full).
        self.paused = False
        #: Called with L{Admission.at_capacity} when it changes.
        self.capacity_observers: list[Callable[[bool], object]] = []
        self._limited = RateLimitedLog(self.log, clock)
        # Its own table: a flood of refusals must not crowd out other lines.
        self._refusals = RateLimitedLog(self.log, clock)
        self._logged_addresses: set[str] = set()
        self._drain_waiters: list[Deferred[None]] = []
        self.stats = ConnectionCounts()

    def buildProtocol(self, addr: IAddress) -> Protocol:
        host = getattr(addr, "host", None)
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
        key = self.admission.limit_key(host)
        source = "that address"
        if isinstance(key, ipaddress.IPv6Network) and key.prefixlen < 128:
            source = "its network " + key.compressed
        self._refusals.warn(
            (reason, key if key is not None else host),
            "Refused a connection from {peer} ({reason}): {open} connections open "
            "from {source}, {total} in all",
            peer=peer,
            reason=reason,
            open=self.admission.open_from(host),
            source=source,
            total=self.admission.open,
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

    def drained(self) -> Deferred[None]:
        """A L{Deferred} that fires once no connection is open."""
        if not self.connections:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def connection_opened(self, protocol: StationProtocol) -> None:
        self.connections.add(protocol)
        self.admission.opened(protocol.host)
        if self.admission.open == self.admission.max_connections:
            self._limited.warn(
                "capacity",
                "{count} station connections are open, the --max-connections "
                "limit: not accepting more until some close",
                count=self.admission.open,
            )
            self._capacity_changed(True)

    def connection_closed(self, protocol: StationProtocol) -> None:
        if protocol not in self.connections:
            return
        self.connections.discard(protocol)
        self.admission.closed(protocol.host)
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
