"""
Which station connections the server takes, and which it reads now: the
allow-list, the per-address connection and rate limits, and the overall
limit.

Refusing means accepting and closing at once, which a station whose firmware
writes without waiting for the acknowledgement byte may take for a
successful upload.  So only addresses outside the allow-list are refused.
At the overall limit the listener stops calling accept(): new connections
wait in the kernel's listen queue (or are not established at all) until
there is room, or take the place of a connection that has been read for a
while without delivering a packet (L{weather.server.protocol}).  A
connection from an address over its per-address limit or rate is accepted
and held unread until its address has room again.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Why a connection was refused (the label of the refused-connections counter).
NOT_ALLOWED = "not_allowed"
SERVER_LIMIT = "server_limit"
REFUSALS = (NOT_ALLOWED, SERVER_LIMIT)
#: Why a connection is held unread for now (the label of the held-connections
#: counter).
PEER_LIMIT = "peer_limit"
RATE_LIMITED = "rate_limited"
HOLDS = (PEER_LIMIT, RATE_LIMITED)


def parse_network(text: str) -> Network:
    """
    A network of the allow-list: C{192.168.1.0/24}, C{2001:db8::/32}, or one
    address.  @raise ValueError: with what is wrong.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as e:
        raise ValueError(f"{text!r} is not an address or a network ({e})") from None


#: Parsed peer addresses an L{Admission} keeps (then it starts again).
ADDRESSES_KEPT = 4096
_UNKNOWN = object()

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: What the per-address limits count: an IPv4 address or an IPv6 /64.
LimitKey = ipaddress.IPv4Address | ipaddress.IPv6Network


def peer_address(host: str | None) -> Address | None:
    """The peer's IP address (IPv4-mapped IPv6 addresses as IPv4), or None."""
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def limit_key(address: Address, ipv6_prefix: int) -> LimitKey:
    """
    What C{address} counts as for the per-address limits: itself (IPv4),
    or its network of C{ipv6_prefix} bits (IPv6): a host picks new (privacy)
    addresses within its /64 at will, as an IPv4 LAN shares its router's one
    address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        return ipaddress.IPv6Network((address, ipv6_prefix), strict=False)
    return address


@dataclass(frozen=True)
class RateLimit:
    """At most C{connections} new connections per address per C{period} seconds."""

    connections: int
    period: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """C{N/s}, C{N/min} or C{N/h}.  @raise ValueError: with what is wrong."""
        count, _, unit = text.strip().partition("/")
        periods = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
        if not (count.isascii() and count.isdigit()) or unit not in periods:
            raise ValueError(f"{text!r}: give connections per time, such as 30/min")
        if int(count) < 1:
            raise ValueError(f"{text!r}: give at least 1 connection")
        return cls(int(count), periods[unit])


class AddressBuckets:
    """
    One token bucket per address, holding at most C{max_addresses} of them.

    Buckets are kept in the order they were last used.  When the table is
    full, the least recently used bucket is dropped if it has filled up
    again (it says nothing an empty table would not); if it has not, every
    address in the table is busy: a flood from more addresses than that
    within one period.  New addresses are then let through: the connection
    limits still hold, and real stations must not be refused because of
    someone else's flood.  Each decision costs the same, whatever the size.
    """

    def __init__(
        self, limit: RateLimit, clock: IReactorTime, max_addresses: int = 65536
    ) -> None:
        self.limit = limit
        self.clock = clock
        self.max_addresses = max_addresses
        self._buckets: dict[object, tuple[float, float]] = {}  # tokens, when

    def take(self, address: object) -> bool:
        """Count one connection from C{address}; False if it is over its rate."""
        now = self.clock.seconds()
        capacity = float(self.limit.connections)
        rate = capacity / self.limit.period
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses and not self._drop_oldest(
                now, capacity, rate
            ):
                return True
            tokens = capacity
        else:
            tokens = min(capacity, bucket[0] + (now - bucket[1]) * rate)
        allowed = tokens >= 1.0
        self._buckets[address] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def wait(self, address: object) -> float:
        """Seconds until C{address} may connect again (0: now)."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return 0.0
        rate = self.limit.connections / self.limit.period
        tokens = bucket[0] + (self.clock.seconds() - bucket[1]) * rate
        return max(0.0, (1.0 - tokens) / rate)

    def __len__(self) -> int:
        return len(self._buckets)

    def _drop_oldest(self, now: float, capacity: float, rate: float) -> bool:
        """Drop the least recently used bucket if it is full again."""
        oldest = next(iter(self._buckets))
        tokens, when = self._buckets[oldest]
        if tokens + (now - when) * rate < capacity:
            return False
        del self._buckets[oldest]
        return True


class Admission:
    """
    Decide, connection by connection, whether a peer may talk to the server
    and whether it is read now, and keep count of the connections open
    (each holds a slot under C{max_connections}) and of those read per
    address (per network of C{ipv6_prefix} bits for IPv6: see
    L{limit_key}); the allow-list is matched against the whole address.  An
    empty C{allow} takes every address; a C{rate} of None puts no limit on
    how often one connects.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_connections: int,
        max_per_peer: int,
        ipv6_prefix: int,
        allow: Iterable[Network],
        rate: RateLimit | None,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.ipv6_prefix = ipv6_prefix
        self.allow = tuple(allow)
        self.rate = AddressBuckets(rate, clock) if rate is not None else None
        #: Connections open, read or held.
        self.open = 0
        #: Connections read, per limit key.
        self._per_peer: Counter[LimitKey] = Counter()
        # Each connection asks several times; a station keeps its address.
        self._addresses: dict[str, tuple[Address, LimitKey] | None] = {}

    @property
    def at_capacity(self) -> bool:
        """True while the overall limit is reached: stop accepting."""
        return self.open >= self.max_connections

    def _peer(self, host: str | None) -> tuple[Address, LimitKey] | None:
        """
        C{host}'s address and limit key, remembered for the last
        L{ADDRESSES_KEPT} peers.
        """
        if host is None:
            return None
        peer = self._addresses.get(host, _UNKNOWN)
        if peer is _UNKNOWN:
            if len(self._addresses) >= ADDRESSES_KEPT:
                self._addresses.clear()
            address = peer_address(host)
            peer = self._addresses[host] = (
                None if address is None else (address, limit_key(address, self.ipv6_prefix))
            )
        return peer  # type: ignore[return-value]

    def address(self, host: str | None) -> Address | None:
        """L{peer_address}, remembered for the last L{ADDRESSES_KEPT} peers."""
        peer = self._peer(host)
        return None if peer is None else peer[0]

    def limit_key(self, host: str | None) -> LimitKey | None:
        """What C{host} counts as for the limits (L{limit_key}), or None."""
        peer = self._peer(host)
        return None if peer is None else peer[1]

    def refusal(self, host: str | None) -> str | None:
        """
        Why a connection from C{host} is not taken (one of L{REFUSALS}), or
        None to take it.  L{SERVER_LIMIT}: no slot is free; the caller may
        free one and ask again.
        """
        peer = self._peer(host)
        if self.allow and peer is not None:
            if not any(peer[0] in network for network in self.allow):
                return NOT_ALLOWED
        if self.open >= self.max_connections:
            return SERVER_LIMIT
        return None

    def wait(self, host: str | None) -> str | None:
        """
        Why a connection from C{host} must wait before it is read (one of
        L{HOLDS}), or None: it may be read now, and has used one of its
        address's connections per --rate-limit period (L{reading} counts it).
        """
        key = self.limit_key(host)
        if key is None:
            return None  # a UNIX socket: no address to share out
        if self._per_peer[key] >= self.max_per_peer:
            return PEER_LIMIT
        if self.rate is not None and not self.rate.take(key):
            return RATE_LIMITED
        return None

    def rate_wait(self, host: str | None) -> float:
        """Seconds until C{host}'s rate lets one more connection be read."""
        key = self.limit_key(host)
        if key is None or self.rate is None:
            return 0.0
        return self.rate.wait(key)

    def opened(self) -> None:
        """A connection takes a slot."""
        self.open += 1

    def reading(self, host: str | None) -> None:
        """A connection from C{host} is read from now on."""
        key = self.limit_key(host)
        if key is not None:
            self._per_peer[key] += 1

    def closed(self, host: str | None, read: bool) -> None:
        """A connection's slot is free again; C{read}: it was read."""
        self.open -= 1
        key = self.limit_key(host) if read else None
        if key is None:
            return
        self._per_peer[key] -= 1
        if self._per_peer[key] <= 0:
            del self._per_peer[key]

    def open_from(self, host: str | None) -> int:
        """Connections read from C{host}'s address (its /64 for IPv6)."""
        key = self.limit_key(host)
        return 0 if key is None else self._per_peer.get(key, 0)

    @property
    def peers(self) -> int:
        """Addresses (IPv6: /64 networks) with at least one connection read."""
        return len(self._per_peer)
