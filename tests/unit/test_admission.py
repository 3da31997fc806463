"""
Connection admission: the allow-list, the per-address and overall connection
limits, the per-address rate limit, and the listener that stops calling
accept() at the overall limit.

All on Twisted's fakes (L{Clock}, string transports, a listening port that
notes stopReading/startReading); tests/integration/test_admission_sockets.py
runs the assembled server on real sockets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransportWithDisconnection,
)
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.fakeinflux import FakeInfluxDB
from tests.support import (
    PortEndpoint,
    RecordingPort,
    RecordingSink,
    admission_options,
    build_test_service,
    factory_options,
    make_settings,
    option_defaults,
    reference_packet,
    start_listening,
)
from weather.app.settings import ConfigurationError, Options
from weather.app.tap import makeService
from weather.server import protocol as protocol_module
from weather.server.admission import (
    ADDRESSES_KEPT,
    NOT_ALLOWED,
    PEER_LIMIT,
    RATE_LIMITED,
    SERVER_LIMIT,
    AddressBuckets,
    Admission,
    RateLimit,
    parse_network,
    peer_address,
)
from weather.server.protocol import (
    ACK,
    CUT_AFTER,
    RefusedProtocol,
    StationFactory,
    StationProtocol,
)
from weather.server.service import FULL_BREAK, StationListener

T0 = 1_700_000_000
STATION = IPv4Address("TCP", "192.0.2.7", 40123)
ABUSER_HOST = "203.0.113.66"


def v4(host: str, port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


def v6(host: str, port: int = 40000) -> IPv6Address:
    return IPv6Address("TCP", host, port)


class Connection(StringTransportWithDisconnection):
    """A transport that notes abortConnection and ends the connection."""

    def __init__(self, peer) -> None:
        super().__init__(peerAddress=peer)
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def connect(factory: StationFactory, peer) -> tuple[Protocol, Connection]:
    """What the reactor does for an accepted connection: build, then connect."""
    protocol = factory.buildProtocol(peer)
    transport = Connection(peer)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport


def capture_logs(testcase, namespace: str = "weather.") -> list[dict]:
    """The events logged (in C{namespace}) until the test ends."""
    events: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_namespace", "").startswith(namespace):
            events.append(event)

    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class AcceptRoundPort(RecordingPort):
    """
    A port with Twisted TCP ports' C{numberAccepts} (the most connections
    one C{doRead} accepts); C{doRead} notes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.numberAccepts = 100
        self.rounds: list[int] = []

    def doRead(self) -> None:
        self.rounds.append(self.numberAccepts)


@implementer(IStreamServerEndpoint)
class ReadCountingDict(dict):
    """A dict that counts the entries read by walking it, whichever way."""

    read = 0

    def __iter__(self) -> Iterator:
        for key in super().__iter__():
            self.read += 1
            yield key

    def keys(self) -> list:  # type: ignore[override]
        return list(self)

    def values(self) -> list:  # type: ignore[override]
        return [self[key] for key in self]

    def items(self) -> list:  # type: ignore[override]
        return [(key, self[key]) for key in self]


class ParseTests(SynchronousTestCase):
    def test_networks(self) -> None:
        self.assertEqual(
            parse_network("192.168.1.0/24"), ipaddress.ip_network("192.168.1.0/24")
        )
        self.assertEqual(parse_network(" 10.0.0.1 "), ipaddress.ip_network("10.0.0.1/32"))
        self.assertEqual(
            parse_network("2001:db8::/32"), ipaddress.ip_network("2001:db8::/32")
        )
        self.assertEqual(parse_network("::1"), ipaddress.ip_network("::1/128"))

    def test_hostBitsSet(self) -> None:
        """An address with its prefix length means its network."""
        self.assertEqual(
            parse_network("192.168.1.77/24"), ipaddress.ip_network("192.168.1.0/24")
        )

    def test_badNetworks(self) -> None:
        for text in (
            "",
            "nonsense",
            "example.com",
            "300.1.1.1",
            "10.0.0.0/33",
            "10.0.0.0/8/8",
            "2001:db8::/129",
            "10.0.0.0/-1",
        ):
            with self.assertRaises(ValueError) as caught:
                parse_network(text)
            message = str(caught.exception)
            self.assertIn(repr(text), message)
            self.assertIn("not an address or a network", message)
            self.assertNotIn("\n", message)

    def test_rateLimits(self) -> None:
        self.assertEqual(RateLimit.parse("30/min"), RateLimit(30, 60.0))
        self.assertEqual(RateLimit.parse("30/m"), RateLimit(30, 60.0))
        self.assertEqual(RateLimit.parse("5/s"), RateLimit(5, 1.0))
        self.assertEqual(RateLimit.parse("5/sec"), RateLimit(5, 1.0))
        self.assertEqual(RateLimit.parse("100/h"), RateLimit(100, 3600.0))
        self.assertEqual(RateLimit.parse(" 1/min "), RateLimit(1, 60.0))

    def test_badRateLimits(self) -> None:
        for text in (
            "",
            "30",
            "30/",
            "/min",
            "30/day",
            "30/MIN",
            "thirty/min",
            "3.5/min",
            "-1/min",
            "+3/min",
            "\u0663/min",  # an Arabic-Indic digit: isdigit() but not ASCII
            "30 / min",
        ):
            with self.assertRaises(ValueError) as caught:
                RateLimit.parse(text)
            self.assertIn(
                "give connections per time, such as 30/min", str(caught.exception)
            )
        with self.assertRaises(ValueError) as caught:
            RateLimit.parse("0/min")
        self.assertIn("give at least 1 connection", str(caught.exception))


class PeerAddressTests(SynchronousTestCase):
    def test_ipv4(self) -> None:
        self.assertEqual(peer_address("10.0.0.1"), ipaddress.ip_address("10.0.0.1"))

    def test_ipv6(self) -> None:
        self.assertEqual(peer_address("2001:db8::1"), ipaddress.ip_address("2001:db8::1"))

    def test_mapped(self) -> None:
        """An IPv4 peer on a dual-stack listener is its IPv4 address."""
        self.assertEqual(peer_address("::ffff:10.0.0.1"), ipaddress.ip_address("10.0.0.1"))
        self.assertEqual(peer_address("::ffff:10.0.0.1"), peer_address("10.0.0.1"))

    def test_scopeId(self) -> None:
        """A link-local address's scope id is left out."""
        self.assertEqual(peer_address("fe80::1%eth0"), ipaddress.ip_address("fe80::1"))
        self.assertEqual(peer_address("fe80::1%2"), peer_address("fe80::1%eth1"))

    def test_none(self) -> None:
        self.assertIsNone(peer_address(None))
        self.assertIsNone(peer_address("not an address"))
        self.assertIsNone(peer_address(""))


class AddressBucketsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)

    def test_burstThenRefill(self) -> None:
        """C{connections} at once, then one per period/connections seconds."""
        buckets = AddressBuckets(RateLimit(3, 60.0), self.clock)
        self.assertEqual([buckets.take("a") for _ in range(4)], [True, True, True, False])
        self.clock.advance(19.9)
        self.assertFalse(buckets.take("a"))
        self.clock.advance(0.1)
        self.assertTrue(buckets.take("a"))
        self.assertFalse(buckets.take("a"))
        self.clock.advance(600)
        self.assertEqual([buckets.take("a") for _ in range(4)], [True, True, True, False])

    def test_refusedDoNotDelayTheRefill(self) -> None:
        """Attempts over the rate cost nothing: the bucket fills on time."""
        buckets = AddressBuckets(RateLimit(3, 60.0), self.clock)
        for _ in range(3):
            buckets.take("a")
        for _ in range(19):
            self.clock.advance(1)
            self.assertFalse(buckets.take("a"))
        self.clock.advance(1)
        self.assertTrue(buckets.take("a"))

    def test_addressesApart(self) -> None:
        buckets = AddressBuckets(RateLimit(1, 60.0), self.clock)
        self.assertTrue(buckets.take("a"))
        self.assertFalse(buckets.take("a"))
        self.assertTrue(buckets.take("b"))
        self.assertEqual(len(buckets), 2)

    def test_maxAddresses(self) -> None:
        """
        With the table full of buckets still refilling, new addresses are
        let through without being recorded: the table stays bounded.
        """
        buckets = AddressBuckets(RateLimit(1, 60.0), self.clock, max_addresses=3)
        for address in "abc":
            self.assertTrue(buckets.take(address))
        for _ in range(5):
            self.assertTrue(buckets.take("d"))
        self.assertEqual(len(buckets), 3)
        # The recorded ones are still limited.
        self.assertFalse(buckets.take("a"))

    def test_fullBucketsDropped(self) -> None:
        """
        Once the least recently used bucket has filled up again it makes
        room for a new address, which is then limited like the others.
        """
        buckets = AddressBuckets(RateLimit(1, 60.0), self.clock, max_addresses=3)
        for address in "abc":
            buckets.take(address)
        self.clock.advance(60)
        self.assertTrue(buckets.take("d"))
        self.assertFalse(buckets.take("d"))
        self.assertEqual(len(buckets), 3)
        self.assertTrue(buckets.take("e"))
        self.assertFalse(buckets.take("e"))
        self.assertEqual(len(buckets), 3)

    def test_leastRecentlyUsedDroppedFirst(self) -> None:
        """
        A bucket used again moves to the back: the one dropped for a new
        address is the one used longest ago, and only if it is full again.
        """
        buckets = AddressBuckets(RateLimit(1, 60.0), self.clock, max_addresses=2)
        buckets.take("a")
        self.clock.advance(30)
        buckets.take("b")
        self.clock.advance(30)
        # "a" is full again; "b" is not.
        self.assertTrue(buckets.take("a"))  # used again: "b" is now the oldest
        self.assertTrue(buckets.take("c"))  # "b" still refilling: not recorded
        self.assertEqual(len(buckets), 2)
        self.assertTrue(buckets.take("c"))
        self.clock.advance(30)
        self.assertTrue(buckets.take("c"))  # "b" is full again: dropped for "c"
        self.assertFalse(buckets.take("c"))
        self.assertTrue(buckets.take("b"))  # "a" is still refilling: not recorded
        self.assertEqual(set(buckets._buckets), {"a", "c"})

    def test_memoryBounded(self) -> None:
        buckets = AddressBuckets(RateLimit(30, 60.0), self.clock, max_addresses=100)
        for i in range(10_000):
            buckets.take(ipaddress.ip_address(f"2001:db8::{i:x}"))
            self.clock.advance(0.001)
        self.assertEqual(len(buckets), 100)

    def test_newAddressWhenFullIsCheap(self) -> None:
        """
        With the table full of buckets still refilling, a connection from
        a new address looks at one bucket, not the whole table.

        Regression: each new address used to scan the whole table (65,536
        buckets) for full ones, about 8 ms each on the bench machine, in the
        reactor thread: with --rate-limit 1/h, a peer with more addresses
        than that (one IPv6 /64) could keep the reactor busy.
        """
        buckets = AddressBuckets(RateLimit(1, 3600.0), self.clock)
        buckets._buckets = table = ReadCountingDict()
        for i in range(buckets.max_addresses):
            buckets.take(i)
        table.read = 0
        for i in range(200):
            self.assertTrue(buckets.take(-1 - i))
        self.assertEqual(len(buckets), buckets.max_addresses)
        self.assertLessEqual(table.read, 200, "buckets read for 200 new addresses")


def take(admission: Admission, host: str | None) -> None:
    """A connection from C{host} takes a slot and is read."""
    admission.opened()
    admission.reading(host)


def release(admission: Admission, host: str | None) -> None:
    """That connection ends."""
    admission.closed(host, read=True)


class AdmissionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)

    def test_defaults(self) -> None:
        """No defaults of its own: the options' defaults take every peer."""
        self.assertRaises(TypeError, Admission, self.clock)
        admission = Admission(self.clock, **admission_options())
        self.assertEqual((admission.max_connections, admission.max_per_peer), (512, 32))
        self.assertEqual(admission.allow, ())
        self.assertIsNone(admission.rate)
        self.assertIsNone(admission.refusal("198.51.100.1"))
        self.assertIsNone(admission.refusal("2001:db8::1"))
        self.assertIsNone(admission.refusal(None))
        self.assertFalse(admission.at_capacity)

    def test_addressesRemembered(self) -> None:
        """Parsed once per peer, the same as L{peer_address}; bounded."""
        admission = Admission(self.clock, **admission_options())
        for host in ("198.51.100.1", "::ffff:198.51.100.1", "fe80::1%eth0", "x", None):
            self.assertEqual(admission.address(host), peer_address(host))
            self.assertIs(admission.address(host), admission.address(host))
        for i in range(ADDRESSES_KEPT + 10):
            admission.address(f"10.0.{i // 256}.{i % 256}")
        self.assertLessEqual(len(admission._addresses), ADDRESSES_KEPT)
        # The counts still match whatever was forgotten meanwhile.
        take(admission, "10.0.0.1")
        admission._addresses.clear()
        self.assertEqual(admission.open_from("10.0.0.1"), 1)
        release(admission, "10.0.0.1")
        self.assertEqual(admission.peers, 0)

    def test_allowIPv4(self) -> None:
        admission = Admission(
            self.clock, **admission_options(allow=[parse_network("192.168.1.0/24")])
        )
        self.assertIsNone(admission.refusal("192.168.1.7"))
        self.assertIsNone(admission.refusal("192.168.1.255"))
        self.assertEqual(admission.refusal("192.168.2.7"), NOT_ALLOWED)
        self.assertEqual(admission.refusal("10.0.0.1"), NOT_ALLOWED)
        # An IPv6 peer is in no IPv4 network.
        self.assertEqual(admission.refusal("2001:db8::1"), NOT_ALLOWED)

    def test_allowMapped(self) -> None:
        """An IPv4 peer on a dual-stack listener is checked as IPv4."""
        admission = Admission(
            self.clock, **admission_options(allow=[parse_network("192.168.1.0/24")])
        )
        self.assertIsNone(admission.refusal("::ffff:192.168.1.7"))
        self.assertEqual(admission.refusal("::ffff:192.168.2.7"), NOT_ALLOWED)

    def test_allowIPv6(self) -> None:
        admission = Admission(
            self.clock,
            **admission_options(
                allow=[parse_network("2001:db8::/32"), parse_network("fe80::/10")]
            ),
        )
        self.assertIsNone(admission.refusal("2001:db8:1::5"))
        self.assertIsNone(admission.refusal("fe80::1%eth0"))
        self.assertEqual(admission.refusal("2001:db9::1"), NOT_ALLOWED)
        self.assertEqual(admission.refusal("192.168.1.7"), NOT_ALLOWED)

    def test_allowSeveral(self) -> None:
        admission = Admission(
            self.clock,
            **admission_options(
                allow=[parse_network("10.0.0.0/8"), parse_network("192.0.2.7")]
            ),
        )
        self.assertIsNone(admission.refusal("10.200.0.1"))
        self.assertIsNone(admission.refusal("192.0.2.7"))
        self.assertEqual(admission.refusal("192.0.2.8"), NOT_ALLOWED)

    def test_allowListBeforeLimits(self) -> None:
        """A peer outside the list is refused as such, whatever the load."""
        admission = Admission(
            self.clock,
            **admission_options(max_connections=1, allow=[parse_network("10.0.0.0/8")]),
        )
        take(admission, "10.0.0.1")
        self.assertEqual(admission.refusal("192.0.2.1"), NOT_ALLOWED)
        self.assertEqual(admission.refusal("10.0.0.2"), SERVER_LIMIT)

    def test_perPeer(self) -> None:
        admission = Admission(self.clock, **admission_options(max_per_peer=2))
        take(admission, "10.0.0.1")
        self.assertIsNone(admission.wait("10.0.0.1"))
        take(admission, "10.0.0.1")
        self.assertEqual(admission.wait("10.0.0.1"), PEER_LIMIT)
        self.assertIsNone(admission.wait("10.0.0.2"))
        self.assertEqual(admission.open_from("10.0.0.1"), 2)
        self.assertEqual(admission.peers, 1)
        release(admission, "10.0.0.1")
        self.assertIsNone(admission.wait("10.0.0.1"))
        release(admission, "10.0.0.1")
        self.assertEqual(admission.open_from("10.0.0.1"), 0)
        self.assertEqual((admission.open, admission.peers), (0, 0))

    def test_perPeerMappedIsTheSamePeer(self) -> None:
        """An address seen as IPv4 and as IPv4-mapped IPv6 is one peer."""
        admission = Admission(self.clock, **admission_options(max_per_peer=2))
        take(admission, "::ffff:10.0.0.1")
        take(admission, "10.0.0.1")
        self.assertEqual(admission.wait("10.0.0.1"), PEER_LIMIT)
        self.assertEqual(admission.wait("::ffff:10.0.0.1"), PEER_LIMIT)
        self.assertEqual(admission.peers, 1)

    def test_perPeerScopeIds(self) -> None:
        admission = Admission(self.clock, **admission_options(max_per_peer=1))
        take(admission, "fe80::1%eth0")
        self.assertEqual(admission.wait("fe80::1%eth1"), PEER_LIMIT)

    def test_perPeerIPv6Network(self) -> None:
        """
        IPv6 peers are limited per /64: a host may take any address in it;
        another /64 is another peer.  The allow-list still sees addresses.
        """
        admission = Admission(
            self.clock,
            **admission_options(max_per_peer=2, allow=[parse_network("2001:db8:0:7::5")]),
        )
        self.assertIsNone(admission.refusal("2001:db8:0:7::5"))
        self.assertEqual(admission.refusal("2001:db8:0:7::6"), NOT_ALLOWED)
        admission = Admission(self.clock, **admission_options(max_per_peer=2))
        take(admission, "2001:db8:0:7::5")
        take(admission, "2001:db8:0:7:abcd:1:2:3")
        self.assertEqual(admission.wait("2001:db8:0:7::99"), PEER_LIMIT)
        self.assertIsNone(admission.wait("2001:db8:0:8::5"))
        self.assertEqual(admission.open_from("2001:db8:0:7::1"), 2)
        self.assertEqual(admission.peers, 1)
        self.assertEqual(
            admission.limit_key("2001:db8:0:7::1"), parse_network("2001:db8:0:7::/64")
        )
        self.assertEqual(
            admission.limit_key("::ffff:10.0.0.1"), parse_network("10.0.0.1")[0]
        )
        self.assertIsNone(admission.limit_key(None))
        release(admission, "2001:db8:0:7::5")
        release(admission, "2001:db8:0:7:abcd:1:2:3")
        self.assertEqual((admission.open, admission.peers), (0, 0))

    def test_ipv6PrefixChosen(self) -> None:
        """--ipv6-peer-prefix 128: each address alone; 56: a whole delegation."""
        admission = Admission(
            self.clock, **admission_options(max_per_peer=1, ipv6_prefix=128)
        )
        take(admission, "2001:db8::1")
        self.assertIsNone(admission.wait("2001:db8::2"))
        self.assertEqual(admission.wait("2001:db8::1"), PEER_LIMIT)
        admission = Admission(
            self.clock, **admission_options(max_per_peer=1, ipv6_prefix=56)
        )
        take(admission, "2001:db8:0:1::1")
        self.assertEqual(admission.wait("2001:db8:0:ff::1"), PEER_LIMIT)
        self.assertIsNone(admission.wait("2001:db8:0:100::1"))
        self.assertEqual(admission.limit_key("10.0.0.1"), parse_network("10.0.0.1")[0])

    def test_rateLimitIPv6Network(self) -> None:
        """A new address in the same /64 takes from the same bucket."""
        admission = Admission(self.clock, **admission_options(rate=RateLimit(2, 60.0)))
        self.assertIsNone(admission.wait("2001:db8::1"))
        self.assertIsNone(admission.wait("2001:db8::2"))
        self.assertEqual(admission.wait("2001:db8::ffff:3"), RATE_LIMITED)
        self.assertIsNone(admission.wait("2001:db8:0:1::1"))

    def test_serverLimit(self) -> None:
        admission = Admission(self.clock, **admission_options(max_connections=2))
        take(admission, "10.0.0.1")
        self.assertFalse(admission.at_capacity)
        take(admission, "10.0.0.2")
        self.assertTrue(admission.at_capacity)
        self.assertEqual(admission.refusal("10.0.0.3"), SERVER_LIMIT)
        release(admission, "10.0.0.1")
        self.assertFalse(admission.at_capacity)
        self.assertIsNone(admission.refusal("10.0.0.3"))

    def test_rateLimit(self) -> None:
        admission = Admission(self.clock, **admission_options(rate=RateLimit(2, 60.0)))
        self.assertIsNone(admission.wait("10.0.0.1"))
        self.assertIsNone(admission.wait("10.0.0.1"))
        self.assertEqual(admission.wait("10.0.0.1"), RATE_LIMITED)
        self.assertIsNone(admission.wait("10.0.0.2"))
        self.clock.advance(30)
        self.assertIsNone(admission.wait("10.0.0.1"))
        self.assertEqual(admission.wait("10.0.0.1"), RATE_LIMITED)

    def test_rateLimitMapped(self) -> None:
        admission = Admission(self.clock, **admission_options(rate=RateLimit(1, 60.0)))
        self.assertIsNone(admission.wait("10.0.0.1"))
        self.assertEqual(admission.wait("::ffff:10.0.0.1"), RATE_LIMITED)

    def test_refusedForLimitCostsNoToken(self) -> None:
        """A connection refused for the per-peer limit does not use the rate."""
        admission = Admission(
            self.clock, **admission_options(max_per_peer=1, rate=RateLimit(2, 60.0))
        )
        self.assertIsNone(admission.wait("10.0.0.1"))
        take(admission, "10.0.0.1")
        for _ in range(10):
            self.assertEqual(admission.wait("10.0.0.1"), PEER_LIMIT)
        release(admission, "10.0.0.1")
        self.assertIsNone(admission.wait("10.0.0.1"))


class FactoryTests(SynchronousTestCase):
    """L{StationFactory} refusing what L{Admission} says no to."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.sink = RecordingSink()
        self.events = capture_logs(self, "weather.server.protocol")

    def factory(self, **kwargs) -> StationFactory:
        return StationFactory(
            self.sink,
            self.clock,
            **factory_options(
                self.clock,
                idle_timeout=3600,
                admission=Admission(self.clock, **admission_options(**kwargs)),
            ),
        )

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.warn]

    def test_defaultAdmission(self) -> None:
        """No defaults of its own: the options' give the connection limits."""
        self.assertRaises(TypeError, StationFactory, self.sink, self.clock)
        factory = StationFactory(self.sink, self.clock, **factory_options(self.clock))
        self.assertEqual(factory.admission.max_connections, 512)
        self.assertEqual(factory.admission.max_per_peer, 32)

    def test_accepted(self) -> None:
        factory = self.factory()
        protocol, transport = connect(factory, STATION)
        self.assertIsInstance(protocol, StationProtocol)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(factory.stats.connections_accepted, 1)
        self.assertEqual(factory.admission.open, 1)
        transport.loseConnection()
        self.assertEqual(factory.admission.open, 0)
        self.assertEqual(factory.admission.peers, 0)

    def test_refusedAbortedAtOnce(self) -> None:
        """A refused connection is aborted as it is made; nothing is read."""
        factory = self.factory(allow=[parse_network("10.0.0.0/8")])
        protocol, transport = connect(factory, STATION)
        self.assertIsInstance(protocol, RefusedProtocol)
        self.assertTrue(transport.aborted)
        self.assertTrue(transport.disconnected)
        self.assertFalse(transport.connected)
        protocol.dataReceived(reference_packet())
        self.assertEqual(self.sink.received, [])
        self.assertEqual(transport.value(), b"")
        self.assertEqual(factory.connections, set())
        self.assertEqual(factory.admission.open, 0)

    def test_refusedCountedByReason(self) -> None:
        """
        Only two kinds of connections are closed unread: from outside
        --allow, and past --max-connections with none to cut for them (on a
        port that cannot stop accepting: see L{ListenerTests}).
        """
        factory = self.factory(allow=[parse_network("10.0.0.0/8")], max_connections=2)
        connect(factory, v4("192.0.2.1"))  # not allowed
        connect(factory, v4("10.0.0.1"))
        connect(factory, v4("10.0.0.1"))
        protocol, transport = connect(factory, v4("10.0.0.2"))  # none to cut
        self.assertIsInstance(protocol, RefusedProtocol)
        self.assertTrue(transport.aborted)
        self.assertEqual(factory.stats.connections_accepted, 2)
        self.assertEqual(
            factory.stats.connections_refused, {NOT_ALLOWED: 1, SERVER_LIMIT: 1}
        )
        self.assertEqual(factory.stats.connections_held, {PEER_LIMIT: 0, RATE_LIMITED: 0})

    def test_notAllowedLoggedOncePerAddress(self) -> None:
        factory = self.factory(allow=[parse_network("10.0.0.0/8")])
        for port in range(5):
            connect(factory, v4("192.0.2.1", 1000 + port))
        connect(factory, v6("2001:db8::1"))
        connect(factory, v4("192.0.2.1"))
        connect(factory, v4("10.0.0.1"))
        self.assertEqual(factory.stats.connections_refused["not_allowed"], 7)
        self.assertEqual(
            self.warnings(),
            [
                "Refused a connection from 192.0.2.1: not in the --allow networks "
                "(logged once per address)",
                "Refused a connection from 2001:db8::1: not in the --allow networks "
                "(logged once per address)",
            ],
        )
        self.assertEqual(self.events[0]["host"], "192.0.2.1")
        self.assertEqual(self.events[0]["reason"], NOT_ALLOWED)
        # Not rate-limited: the next period logs nothing more either.
        self.clock.advance(3600)
        connect(factory, v4("192.0.2.1"))
        self.assertEqual(len(self.warnings()), 2)

    def test_notAllowedAddressesLoggedBounded(self) -> None:
        """Past MAX_LOGGED_ADDRESSES, refusals are counted and not logged."""
        self.patch(protocol_module, "MAX_LOGGED_ADDRESSES", 3)
        factory = self.factory(allow=[parse_network("10.0.0.0/8")])
        for i in range(10):
            connect(factory, v4(f"192.0.2.{i}"))
        warnings = self.warnings()
        self.assertEqual(len(warnings), 3)
        self.assertTrue(warnings[-1].endswith("; no more addresses will be logged)"))
        self.assertNotIn("no more", warnings[-2])
        self.assertEqual(len(factory._logged_addresses), 3)
        self.assertEqual(factory.stats.connections_refused["not_allowed"], 10)

    def test_holdsRateLimitedInTheLog(self) -> None:
        """An address over its limit gets one line a minute, with the count left out."""
        factory = self.factory(max_per_peer=2)
        connect(factory, v4(ABUSER_HOST))
        connect(factory, v4(ABUSER_HOST))
        for _ in range(100):
            connect(factory, v4(ABUSER_HOST))
        self.assertEqual(
            self.warnings(),
            [
                f"Holding a connection from {ABUSER_HOST}:40000 unread (peer_limit): "
                "2 connections are read from that address; it is read when there is "
                "room, at the latest in 3600 s"
            ],
        )
        self.clock.advance(60)
        connect(factory, v4(ABUSER_HOST))
        self.assertEqual(len(self.warnings()), 2)
        self.assertIn("(99 more like this were not logged)", self.warnings()[1])
        self.assertEqual(factory.stats.connections_held[PEER_LIMIT], 101)
        self.assertEqual(factory.stats.connections_refused.total(), 0)

    def test_ipv6Peer(self) -> None:
        factory = self.factory(max_per_peer=1)
        connect(factory, v6("2001:db8::1"))
        protocol, transport = connect(factory, v6("2001:db8::1"))
        self.assertEqual(protocol.held, PEER_LIMIT)
        self.assertIn("[2001:db8::1]:40000 unread (peer_limit)", self.warnings()[0])
        self.assertIn(
            "1 connections are read from its network 2001:db8::/64", self.warnings()[0]
        )
        # Another address of that /64 is the same peer: its line is held back.
        protocol, transport = connect(factory, v6("2001:db8::2"))
        self.assertEqual(protocol.held, PEER_LIMIT)
        self.assertEqual(len(self.warnings()), 1)

    def test_ipv6PeerPerAddress(self) -> None:
        """With --ipv6-peer-prefix 128 the line speaks of the address."""
        factory = self.factory(max_per_peer=1, ipv6_prefix=128)
        connect(factory, v6("2001:db8::1"))
        connect(factory, v6("2001:db8::1"))
        self.assertIn("1 connections are read from that address", self.warnings()[0])

    def test_capacityWarning(self) -> None:
        factory = self.factory(max_connections=2)
        changes: list[bool] = []
        factory.capacity_observers.append(changes.append)
        _, first = connect(factory, v4("10.0.0.1"))
        self.assertEqual(changes, [])
        _, second = connect(factory, v4("10.0.0.2"))
        self.assertEqual(changes, [True])
        self.assertEqual(
            self.warnings(),
            [
                "2 station connections are open, the --max-connections limit: a new "
                "one takes the place of one 5 s without a complete packet, or waits "
                "in the listen queue until one closes"
            ],
        )
        first.loseConnection()
        self.assertEqual(changes, [True, False])
        second.loseConnection()
        self.assertEqual(changes, [True, False])
        connect(factory, v4("10.0.0.1"))
        connect(factory, v4("10.0.0.2"))
        self.assertEqual(changes, [True, False, True])

    def test_unixSocketPeersAreNotOneAddress(self) -> None:
        """
        Connections without an IP address (C{--port unix:/run/weather.sock},
        which the README lists) have no peer address to share a limit: they
        are not refused by the per-peer limit, as they are not by the rate
        limit nor the allow-list.

        Regression: every such connection used to be counted under the
        address None, so the per-peer limit (32 by default) was the limit
        for the whole UNIX socket, and the 33rd station was refused.
        """
        factory = self.factory(allow=[parse_network("10.0.0.0/8")], rate=RateLimit(1, 60))
        connections = [connect(factory, UNIXAddress(None)) for _ in range(40)]
        self.assertEqual(
            sum(isinstance(p, StationProtocol) for p, _ in connections),
            40,
            "UNIX-socket connections were refused for the per-peer limit",
        )
        self.assertEqual((factory.admission.open, factory.admission.peers), (40, 0))
        for _, transport in connections:
            transport.loseConnection()
        self.assertEqual(factory.admission.open, 0)

    def test_capacityWarningDuringARefusalFlood(self) -> None:
        """
        The --max-connections warning is logged even while peers from many
        addresses are being refused.

        Regression: the refusal lines (now the lines of connections held),
        keyed by (reason, address), used to share one L{RateLimitedLog} with
        the capacity warning and the internal-error line of C{deliver}.
        More than its 1,024 keys in a minute (a peer with a thousand
        addresses, each over its per-address limit or --rate-limit) filled
        the table, and the server's own lines fell under the overflow key,
        already used that minute: they were not logged.
        """
        factory = self.factory(max_per_peer=1, max_connections=2000)
        for i in range(1030):  # a thousand /64s
            connect(factory, v6(f"2001:db8:0:{i:x}::1"))
            connect(factory, v6(f"2001:db8:0:{i:x}::2"))  # over its limit: held
        for i in range(970):
            connect(factory, v6(f"2001:db8:1:{i:x}::1"))
        self.assertTrue(factory.admission.at_capacity)
        self.assertTrue(
            any("--max-connections" in text for text in self.warnings()),
            "the --max-connections warning was not logged",
        )


class HoldTests(SynchronousTestCase):
    """
    A connection from an address over its per-address limit or rate is
    accepted and held unread, not closed: read once its address has room,
    oldest first, or after --idle-timeout whatever the limits say.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.sink = RecordingSink()
        capture_logs(self)

    def factory(self, **kwargs) -> StationFactory:
        return StationFactory(
            self.sink,
            self.clock,
            **factory_options(
                self.clock,
                idle_timeout=30.0,
                admission=Admission(self.clock, **admission_options(**kwargs)),
            ),
        )

    def test_heldUntilOneCloses(self) -> None:
        factory = self.factory(max_per_peer=1)
        first, first_transport = connect(factory, v4("10.0.0.1"))
        second, transport = connect(factory, v4("10.0.0.1"))
        self.assertIsInstance(second, StationProtocol)
        self.assertEqual(second.held, PEER_LIMIT)
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(transport.aborted)
        self.assertEqual((factory.held, factory.admission.open), (1, 2))
        self.assertEqual(factory.admission.open_from("10.0.0.1"), 1)
        first_transport.loseConnection()
        self.assertIsNone(second.held)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual((factory.held, factory.admission.open), (0, 1))
        self.assertEqual(factory.admission.open_from("10.0.0.1"), 1)
        # What it sent meanwhile is read and acknowledged.
        second.dataReceived(reference_packet())
        self.assertEqual(transport.value(), ACK)
        self.assertEqual(factory.stats.connections_held, {PEER_LIMIT: 1, RATE_LIMITED: 0})
        self.assertEqual(factory.stats.connections_refused.total(), 0)

    def test_oldestFirst(self) -> None:
        """Held connections are read in the order they came, later ones behind."""
        factory = self.factory(max_per_peer=1)
        _, first = connect(factory, v4("10.0.0.1"))
        held = [connect(factory, v4("10.0.0.1", 40001 + i)) for i in range(3)]
        self.assertEqual([p.held for p, _ in held], [PEER_LIMIT] * 3)
        first.loseConnection()
        self.assertEqual([p.held for p, _ in held], [None, PEER_LIMIT, PEER_LIMIT])
        held[0][1].loseConnection()
        self.assertEqual([p.held for p, _ in held[1:]], [None, PEER_LIMIT])
        self.assertEqual(factory.admission.open_from("10.0.0.1"), 1)

    def test_otherAddressesNotHeld(self) -> None:
        factory = self.factory(max_per_peer=1)
        connect(factory, v4("10.0.0.1"))
        connect(factory, v4("10.0.0.1"))
        protocol, transport = connect(factory, v4("10.0.0.2"))
        self.assertIsNone(protocol.held)
        protocol.dataReceived(reference_packet())
        self.assertEqual(transport.value(), ACK)

    def test_heldClosed(self) -> None:
        """A held connection that ends (on stop, say) frees its slot; no timer is left."""
        factory = self.factory(max_per_peer=1)
        _, first = connect(factory, v4("10.0.0.1"))
        _, second = connect(factory, v4("10.0.0.1"))
        second.loseConnection()
        self.assertEqual((factory.held, factory.admission.open), (0, 1))
        first.loseConnection()
        self.assertEqual((factory.admission.open, factory.admission.peers), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_heldTooLong(self) -> None:
        """
        Held --idle-timeout: read all the same, over the limit, rather than
        closed (its station may have written and gone).
        """
        factory = self.factory(max_per_peer=1)
        first, first_transport = connect(factory, v4("10.0.0.1"))
        second, transport = connect(factory, v4("10.0.0.1"))
        self.clock.advance(20)
        first.dataReceived(reference_packet())  # busy: not idle
        self.clock.advance(9.9)
        self.assertEqual(second.held, PEER_LIMIT)
        self.clock.advance(0.1)
        self.assertIsNone(second.held)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(factory.stats.connections_held_too_long, 1)
        self.assertEqual(factory.admission.open_from("10.0.0.1"), 2)
        self.assertFalse(first_transport.aborted)
        # Now it is read, its idle timeout runs.
        self.clock.advance(30)
        self.assertTrue(transport.aborted)
        self.assertEqual(factory.admission.open_from("10.0.0.1"), 0)

    def test_rateLimitedHeldUntilTheRateAllows(self) -> None:
        factory = self.factory(rate=RateLimit(2, 20.0))  # then one every 10 s
        connect(factory, v4("10.0.0.1"))
        connect(factory, v4("10.0.0.1"))
        third, transport = connect(factory, v4("10.0.0.1"))
        fourth, _ = connect(factory, v4("10.0.0.1"))
        self.assertEqual((third.held, fourth.held), (RATE_LIMITED, RATE_LIMITED))
        self.clock.advance(9.9)
        self.assertEqual(third.held, RATE_LIMITED)
        self.clock.advance(0.1)
        self.assertIsNone(third.held)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(fourth.held, RATE_LIMITED)
        self.clock.advance(10)
        self.assertIsNone(fourth.held)
        self.assertEqual(factory.stats.connections_held_too_long, 0)
        self.assertEqual(factory.stats.connections_held, {PEER_LIMIT: 0, RATE_LIMITED: 2})
        self.assertEqual(factory._rate_retries, {})

    def test_rateRetryCancelled(self) -> None:
        """The last held connection of an address gone: its retry goes too."""
        factory = self.factory(rate=RateLimit(1, 3600.0))
        connect(factory, v4("10.0.0.1"))
        _, transport = connect(factory, v4("10.0.0.1"))
        self.assertEqual(len(factory._rate_retries), 1)
        transport.loseConnection()
        self.assertEqual(factory._rate_retries, {})

    def test_unixSocketsNeverHeld(self) -> None:
        factory = self.factory(max_per_peer=1, rate=RateLimit(1, 60.0))
        protocols = [connect(factory, UNIXAddress(None))[0] for _ in range(5)]
        self.assertEqual([p.held for p in protocols], [None] * 5)

    def test_heldWhilePaused(self) -> None:
        """The journal full: a connection let out of its hold is not read yet."""
        factory = self.factory(max_per_peer=1)
        _, first = connect(factory, v4("10.0.0.1"))
        second, transport = connect(factory, v4("10.0.0.1"))
        factory.pause(True)
        first.loseConnection()
        self.assertIsNone(second.held)
        self.assertEqual(transport.producerState, "paused")
        factory.pause(False)
        self.assertEqual(transport.producerState, "producing")

    def test_heldStayUnreadAfterAPause(self) -> None:
        factory = self.factory(max_per_peer=1)
        connect(factory, v4("10.0.0.1"))
        second, transport = connect(factory, v4("10.0.0.1"))
        factory.pause(True)
        self.clock.advance(1000)  # the hold waits too
        factory.pause(False)
        self.assertEqual((second.held, transport.producerState), (PEER_LIMIT, "paused"))


class HeldOnStopTests(SynchronousTestCase):
    def test_readOnStop(self) -> None:
        """Stopping, the server reads what held connections sent, within --grace."""
        clock = Clock()
        sink, factory, port, listener = start_listening(
            clock, admission=Admission(clock, **admission_options(max_per_peer=1))
        )
        _, first = connect(factory, v4("10.0.0.1"))
        held, transport = connect(factory, v4("10.0.0.1"))
        stopped = listener.stopService()
        self.assertIsNone(held.held)
        self.assertEqual(transport.producerState, "producing")
        held.dataReceived(reference_packet())
        self.assertEqual(transport.value(), ACK)
        first.loseConnection()
        transport.loseConnection()
        self.successResultOf(stopped)


class CutForRoomTests(SynchronousTestCase):
    """
    At --max-connections a new connection takes the place of the one that
    has gone longest (at least CUT_AFTER) without a complete packet: slow
    and idle peers cannot keep stations out.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.sink = RecordingSink()
        self.events = capture_logs(self, "weather.server.protocol")

    def factory(self, max_connections: int = 3, **kwargs) -> StationFactory:
        return StationFactory(
            self.sink,
            self.clock,
            **factory_options(
                self.clock,
                idle_timeout=3600.0,
                packet_deadline=3600.0,
                admission=Admission(
                    self.clock,
                    **admission_options(max_connections=max_connections, **kwargs),
                ),
            ),
        )

    def fill(self, factory: StationFactory, count: int = 3) -> list[Connection]:
        """C{count} idle connections, one a second."""
        transports = []
        for i in range(count):
            transports.append(connect(factory, v4(f"10.0.0.{i}"))[1])
            self.clock.advance(1)
        return transports

    def test_cutAfter(self) -> None:
        self.assertEqual(CUT_AFTER, 5.0)

    def test_longestWithoutAPacketCut(self) -> None:
        factory = self.factory()
        first, second, third = self.fill(factory)
        self.assertEqual(self.clock.seconds(), T0 + 3)
        self.assertFalse(factory.can_cut())
        self.clock.advance(2)
        self.assertTrue(factory.can_cut())
        protocol, transport = connect(factory, STATION)
        self.assertIsInstance(protocol, StationProtocol)
        self.assertTrue(first.aborted)
        self.assertFalse(second.aborted or third.aborted)
        self.assertEqual(factory.admission.open, 3)
        self.assertEqual(factory.stats.connections_cut_for_room, 1)
        self.assertEqual(factory.stats.connections_refused.total(), 0)
        protocol.dataReceived(reference_packet())
        self.assertEqual(transport.value(), ACK)

    def test_youngNotCut(self) -> None:
        """Connections younger than CUT_AFTER are not cut: a burst of stations."""
        factory = self.factory()
        self.fill(factory)
        self.clock.advance(1.9)
        self.assertEqual(factory.next_cut_at(), T0 + 5)
        protocol, _ = connect(factory, STATION)
        self.assertIsInstance(protocol, RefusedProtocol)
        self.assertEqual(factory.stats.connections_cut_for_room, 0)

    def test_packetMovesToTheBack(self) -> None:
        """A connection that just delivered a packet is the last to be cut."""
        factory = self.factory()
        protocols = [connect(factory, v4(f"10.0.0.{i}"))[0] for i in range(3)]
        self.clock.advance(4)
        protocols[0].dataReceived(reference_packet())
        self.clock.advance(1)
        connect(factory, STATION)
        self.assertEqual([p.transport.aborted for p in protocols], [False, True, False])

    def test_waitingForItsAckNotCut(self) -> None:
        """A connection whose packet is not durable yet is never cut."""
        self.sink.hold = True
        factory = self.factory(max_connections=1)
        protocol, transport = connect(factory, v4("10.0.0.1"))
        protocol.dataReceived(reference_packet())
        self.clock.advance(60)
        self.assertFalse(factory.can_cut())
        self.assertIsInstance(connect(factory, STATION)[0], RefusedProtocol)
        self.sink.durable[0].callback(None)
        self.assertEqual(transport.value(), ACK)
        self.assertEqual(factory.next_cut_at(), T0 + 65)
        self.clock.advance(5)
        self.assertIsInstance(connect(factory, STATION)[0], StationProtocol)
        self.assertTrue(transport.aborted)

    def test_heldReadAtTheLimit(self) -> None:
        """
        Held connections cannot be cut (that would close them unread): once
        the limit is reached they are read, over their address's limit, and
        may be cut like the others later.  Nothing is held at the limit.
        """
        factory = self.factory(max_connections=3, max_per_peer=1)
        connect(factory, v4("10.0.0.1"))
        held, transport = connect(factory, v4("10.0.0.1"))
        self.assertEqual(held.held, PEER_LIMIT)
        connect(factory, v4("10.0.0.2"))  # the limit
        self.assertIsNone(held.held)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(factory.stats.connections_held_too_long, 1)
        held.dataReceived(reference_packet())
        self.assertEqual(transport.value(), ACK)
        self.clock.advance(CUT_AFTER)
        connect(factory, STATION)
        self.assertEqual(factory.stats.connections_cut_for_room, 1)

    def test_halfClosedNotCut(self) -> None:
        self.sink.hold = True
        factory = self.factory(max_connections=1)
        protocol, transport = connect(factory, v4("10.0.0.1"))
        protocol.dataReceived(reference_packet())
        protocol.readConnectionLost()
        self.sink.durable[0].callback(None)
        self.clock.advance(60)
        self.assertFalse(factory.can_cut())

    def test_cutBytesQuarantined(self) -> None:
        factory = self.factory(max_connections=1)
        protocol, _ = connect(factory, v4("10.0.0.1"))
        protocol.dataReceived(reference_packet()[:20])
        self.clock.advance(5)
        connect(factory, STATION)
        [(rejected, error)] = self.sink.rejected
        self.assertEqual(rejected.data, reference_packet()[:20])
        self.assertEqual(
            error.detail,
            "connection ended after 20 bytes of a packet "
            "(cut at --max-connections for a new connection)",
        )

    def test_notWhilePaused(self) -> None:
        """The journal full: nothing is read, so nothing is slow."""
        factory = self.factory()
        self.fill(factory)
        factory.pause(True)
        self.clock.advance(60)
        self.assertFalse(factory.can_cut())
        factory.pause(False)
        self.assertFalse(factory.can_cut())
        self.assertEqual(factory.next_cut_at(), T0 + 68)

    def test_loggedOnceAMinute(self) -> None:
        factory = self.factory()
        self.fill(factory)
        self.clock.advance(10)
        for i in range(3):
            connect(factory, v4(f"10.1.0.{i}"))
        lines = [formatEvent(e) for e in self.events if "cut {peer}" in e["log_format"]]
        self.assertEqual(
            lines,
            [
                "At the --max-connections limit (3): cut 10.0.0.0:40000 for a new "
                "connection, 13.0 s without a complete packet (0 bytes of one)"
            ],
        )
        self.assertEqual(factory.stats.connections_cut_for_room, 3)


class AbuseTests(SynchronousTestCase):
    """
    The issue's cases: abusive hosts holding every connection, idle or
    sending a byte now and then, must not stop real stations from being
    served for more than a few seconds.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.sink, self.factory, self.port, self.listener = start_listening(
            self.clock, idle_timeout=30.0
        )
        self.events = capture_logs(self, "weather.server.protocol")

    def station(self, peer=STATION) -> Connection:
        """A station connects, sends a packet and waits for the ACK."""
        self.assertTrue(self.listener.accepting)
        protocol, transport = connect(self.factory, peer)
        self.assertIsInstance(protocol, StationProtocol)
        self.assertIsNone(protocol.held)
        packet = reference_packet()
        protocol.dataReceived(packet)
        self.assertEqual(self.sink.received[-1].data, packet)
        self.assertEqual(transport.value(), ACK)
        return transport

    def flood(self, peer) -> list[Protocol]:
        """Connections from C{peer(i)} while the listener accepts them."""
        protocols = []
        while self.listener.accepting:
            protocols.append(connect(self.factory, peer(len(protocols)))[0])
        return protocols

    def test_oneAddressTenThousandConnections(self) -> None:
        """
        One address opening connections as fast as it can: 32 read, the
        rest held until --max-connections (512), when they are read too and
        accepting stops (the others wait in the kernel's queue).  None is
        closed unread.  After CUT_AFTER each new connection, a station's or
        the abuser's, takes the place of one of them.
        """
        protocols = self.flood(lambda i: v4(ABUSER_HOST, 1024 + i))
        self.assertEqual(len(protocols), 512)
        self.assertEqual(self.factory.held, 0)
        self.assertEqual(self.factory.stats.connections_held[PEER_LIMIT], 480)
        self.assertEqual(self.factory.stats.connections_held_too_long, 480)
        self.assertEqual(self.factory.admission.open_from(ABUSER_HOST), 512)
        self.assertEqual(self.factory.stats.connections_refused.total(), 0)
        self.assertEqual(self.port.calls, ["stopReading"])
        # One line for the flood, one for the limit.
        self.assertEqual(len(self.events), 2)
        self.clock.advance(CUT_AFTER)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])
        for i in range(200):
            self.station(v4(f"192.0.2.{i}"))
        self.assertEqual(self.factory.stats.connections_cut_for_room, 200)
        self.assertEqual(self.factory.admission.open_from(ABUSER_HOST), 312)
        self.assertEqual(self.factory.stats.packets_acknowledged, 200)

    def test_manyAddressesIdle(self) -> None:
        """
        A peer with many addresses fills --max-connections: accepting stops
        (a station waits in the listen queue, it is not refused) for
        CUT_AFTER; then the station takes the place of the oldest.
        """
        protocols = self.flood(lambda i: v4(f"198.51.{i >> 8}.{i & 255}"))
        self.assertEqual(len(protocols), 512)
        self.assertEqual(self.port.calls, ["stopReading"])
        self.clock.advance(4.9)
        self.assertFalse(self.listener.accepting)
        self.clock.advance(0.1)
        self.station()
        self.assertTrue(protocols[0].transport.aborted)
        self.assertEqual(self.factory.stats.connections_refused.total(), 0)
        self.assertTrue(self.listener.accepting)  # 511 more to cut
        for i in range(20):
            self.station(v4(f"192.0.2.{i}"))
        self.assertEqual(self.factory.stats.connections_cut_for_room, 21)

    def test_slowSenders(self) -> None:
        """
        The issue's attack: 540 connections, 30 per address, each sending a
        byte every 10 s.  A station arriving every 3 s waits CUT_AFTER at
        most; every slow packet is cut at its deadline, its bytes
        quarantined, or for a station.
        """
        protocols = []
        for address in range(18):
            for _ in range(30):
                if self.listener.accepting:
                    peer = v4(f"203.0.113.{address}", 1024 + len(protocols))
                    protocols.append(connect(self.factory, peer)[0])
        self.assertEqual(len(protocols), 512)
        waiting: list[float] = []  # in the listen queue, since
        waited = []
        for second in range(1, 61):
            if second % 10 == 0:
                for protocol in protocols:
                    if protocol.connected:
                        protocol.dataReceived(b"\x01")
            self.clock.advance(1)
            if second % 3 == 0:
                waiting.append(self.clock.seconds())
            while waiting and self.listener.accepting:
                waited.append(self.clock.seconds() - waiting.pop(0))
                self.station(v4(f"192.0.2.{len(waited)}"))
        self.assertEqual(len(waited), 20)
        self.assertLessEqual(max(waited), CUT_AFTER)
        self.assertEqual(waited.count(0), 19)
        stats = self.factory.stats
        self.assertEqual(
            stats.connections_past_deadline + stats.connections_cut_for_room, 512
        )
        # All but the three cut before their first byte (for the stations of
        # 3, 6 and 9 s) left bytes in quarantine.
        self.assertEqual(len(self.sink.rejected), 512 - 3)
        self.assertEqual(stats.connections_refused.total(), 0)
        self.assertFalse(any(p.connected for p in protocols))


class ListenerTests(SynchronousTestCase):
    """L{StationListener} stopping and starting accept() at the overall limit."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.sink, self.factory, self.port, self.listener = start_listening(
            self.clock,
            admission=Admission(self.clock, **admission_options(max_connections=3)),
        )
        self.endpoint = self.listener.endpoint
        capture_logs(self)

    def connect(self, n: int = 1) -> list[Connection]:
        return [connect(self.factory, v4(f"10.0.0.{i}"))[1] for i in range(n)]

    def test_listening(self) -> None:
        self.assertEqual(self.endpoint.factories, [self.factory])
        self.assertIs(self.listener.port, self.port)
        self.assertTrue(self.listener.accepting)
        self.assertEqual(self.port.calls, [])

    def test_stopAcceptingAtTheLimit(self) -> None:
        first, second = self.connect(2)
        self.assertEqual(self.port.calls, [])
        connect(self.factory, v4("10.0.0.9"))
        self.assertEqual(self.port.calls, ["stopReading"])
        self.assertFalse(self.listener.accepting)
        first.loseConnection()
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])
        self.assertTrue(self.listener.accepting)
        connect(self.factory, v4("10.0.0.10"))
        self.assertEqual(self.port.calls, ["stopReading", "startReading", "stopReading"])

    def test_acceptingAgainOnceOneMayBeCut(self) -> None:
        """
        At the limit, accepting stops only while no connection may be cut
        for a new one: CUT_AFTER later it starts again, and each connection
        accepted takes the place of the oldest.
        """
        first, second, third = self.connect(3)
        self.assertEqual(self.port.calls, ["stopReading"])
        self.clock.advance(CUT_AFTER - 0.1)
        self.assertFalse(self.listener.accepting)
        self.clock.advance(0.1)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])
        for i in range(3):
            self.assertTrue(self.listener.accepting)
            connect(self.factory, v4(f"10.0.1.{i}"))
        self.assertEqual([t.aborted for t in (first, second, third)], [True] * 3)
        # The three new ones are young: accepting stops until they are not.
        self.assertFalse(self.listener.accepting)
        self.assertEqual(
            [
                call.getTime()
                for call in self.clock.getDelayedCalls()
                if call.func == self.listener._look
            ],
            [self.clock.seconds() + CUT_AFTER],
        )
        self.assertEqual(self.factory.stats.connections_cut_for_room, 3)
        self.assertEqual(self.factory.stats.connections_refused.total(), 0)

    def test_atLimitForCountsOnlyWhileNoneMayBeCut(self) -> None:
        """
        /health's stretch at the limit (L{StationListener.at_limit_for})
        runs while no connection may be cut: packets waiting for the
        journal, not idle or slow peers.
        """
        self.sink, self.factory, self.port, self.listener = start_listening(
            self.clock,
            idle_timeout=3600.0,
            admission=Admission(self.clock, **admission_options(max_connections=3)),
        )
        self.sink.hold = True
        protocols = [connect(self.factory, v4(f"10.0.0.{i}"))[0] for i in range(3)]
        self.clock.advance(CUT_AFTER)
        self.assertTrue(self.listener.accepting)
        # Room (to cut) for less than FULL_BREAK is no break.
        self.assertEqual(self.listener.at_limit_for(self.clock.seconds()), 5)
        for protocol in protocols:
            protocol.dataReceived(reference_packet())
        self.clock.advance(0)
        self.assertFalse(self.listener.accepting)
        self.clock.advance(100)
        self.assertEqual(self.listener.at_limit_for(self.clock.seconds()), 105)
        for durable in self.sink.durable:
            durable.callback(None)
        self.clock.advance(CUT_AFTER)
        self.assertTrue(self.listener.accepting)
        self.assertEqual(self.listener.at_limit_for(self.clock.seconds()), 110)
        self.clock.advance(FULL_BREAK)
        self.assertEqual(self.listener.at_limit_for(self.clock.seconds()), 0)
        # Idle connections, cuttable, hold no stretch however long they stay.
        self.clock.advance(1000)
        self.assertEqual(self.listener.at_limit_for(self.clock.seconds()), 0)
        self.assertEqual(len(self.factory.connections), 3)

    def test_onceEach(self) -> None:
        """Closing several below the limit starts reading once."""
        transports = self.connect(3)
        for transport in transports:
            transport.loseConnection()
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])
        self.assertTrue(self.listener.accepting)

    def test_journalFullWhileAtCapacity(self) -> None:
        """At the limit and then the journal full: accept resumes when both clear."""
        first, second, third = self.connect(3)
        self.listener.pause(True)
        self.assertEqual(self.port.calls, ["stopReading"])
        first.loseConnection()  # room again, but the journal is full
        self.assertEqual(self.port.calls, ["stopReading"])
        self.assertFalse(self.listener.accepting)
        self.listener.pause(False)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])
        self.assertTrue(self.listener.accepting)

    def test_capacityWhileJournalFull(self) -> None:
        """The journal full and then at the limit: the same, the other way round."""
        self.listener.pause(True)
        self.assertEqual(self.port.calls, ["stopReading"])
        first, second, third = self.connect(3)  # already in the listen queue
        self.listener.pause(False)  # the journal has room, the limit is reached
        self.assertEqual(self.port.calls, ["stopReading"])
        self.assertFalse(self.listener.accepting)
        first.loseConnection()
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])
        self.assertTrue(self.listener.accepting)

    def test_bothAtOnceThenJournalLast(self) -> None:
        self.listener.pause(True)
        first, second, third = self.connect(3)
        first.loseConnection()
        self.assertEqual(self.port.calls, ["stopReading"])
        self.listener.pause(False)
        self.assertEqual(self.port.calls, ["stopReading", "startReading"])

    def test_pausedConnectionsAreNotCountedTwice(self) -> None:
        """Connections made while paused count toward the limit as others do."""
        self.listener.pause(True)
        self.connect(3)
        self.assertTrue(self.factory.admission.at_capacity)
        self.assertTrue(
            all(p.transport.producerState == "paused" for p in self.factory.connections)
        )

    def test_stopListeningAtCapacity(self) -> None:
        """Stopping at the limit stops listening; closes later do not read again."""
        transports = self.connect(3)
        stopped = self.listener.stopService()
        for transport in transports:
            transport.loseConnection()
        self.successResultOf(stopped)
        self.assertEqual(self.port.calls, ["stopReading", "stopListening"])
        self.assertFalse(self.listener.accepting)

    def test_listeningStartsAtCapacity(self) -> None:
        """A listener whose port comes while the limit is reached does not read."""
        factory = StationFactory(
            self.sink,
            self.clock,
            **factory_options(
                self.clock,
                admission=Admission(self.clock, **admission_options(max_connections=1)),
            ),
        )
        connect(factory, STATION)
        port = RecordingPort()
        listener = StationListener(
            PortEndpoint(port), factory, self.clock, "tcp:8266", option_defaults().grace
        )
        listener.startService()
        self.assertEqual(port.calls, ["stopReading"])
        self.assertFalse(listener.accepting)

    def test_acceptRoundsCappedToTheRoom(self) -> None:
        """
        Before each accept round of a Twisted TCP port (C{doRead}), its
        C{numberAccepts} is capped to the room left under the limit: no
        connection past it is accepted only to be closed.
        """
        port = AcceptRoundPort()
        factory = StationFactory(
            self.sink,
            self.clock,
            **factory_options(
                self.clock,
                admission=Admission(self.clock, **admission_options(max_connections=20)),
            ),
        )
        listener = StationListener(
            PortEndpoint(port), factory, self.clock, "tcp:8266", option_defaults().grace
        )
        listener.startService()
        port.doRead()
        self.assertEqual(port.rounds, [20])
        transports = [connect(factory, v4(f"10.0.0.{i}"))[1] for i in range(15)]
        port.numberAccepts = 120  # Twisted grows it after full rounds
        port.doRead()
        self.assertEqual(port.rounds, [20, 5])
        transports += [connect(factory, v4(f"10.0.1.{i}"))[1] for i in range(5)]
        self.assertEqual(port.calls, ["stopReading"])
        for transport in transports[:3]:
            transport.loseConnection()
        port.doRead()
        self.assertEqual(port.rounds, [20, 5, 3])
        transports += [connect(factory, v4(f"10.0.2.{i}"))[1] for i in range(3)]
        self.clock.advance(CUT_AFTER)
        port.doRead()  # at the limit: one, for the one connection cut for it
        self.assertEqual(port.rounds, [20, 5, 3, 1])
        self.assertEqual(factory.stats.connections_refused.total(), 0)

    def test_portWithoutStopReading(self) -> None:
        """A port that cannot stop reading: nothing breaks at the limit."""
        port = MemoryReactorClock().listenTCP(0, self.factory)
        self.assertFalse(hasattr(port, "stopReading"))
        factory = StationFactory(
            self.sink,
            self.clock,
            **factory_options(
                self.clock,
                admission=Admission(self.clock, **admission_options(max_connections=1)),
            ),
        )
        listener = StationListener(
            PortEndpoint(port), factory, self.clock, "tcp:0", option_defaults().grace
        )
        listener.startService()
        _, transport = connect(factory, STATION)
        protocol, _ = connect(factory, v4("10.0.0.1"))
        self.assertIsInstance(protocol, RefusedProtocol)
        transport.loseConnection()


class SettingsTests(SynchronousTestCase):
    """The options reach the factory's admission; bad ones say so in one line."""

    def build(self, *args: str):
        settings = make_settings(self, *args)
        service = build_test_service(
            self, settings, MemoryReactorClock(), client=StubTreq(FakeInfluxDB())
        )
        return service.listener.factory

    def test_defaults(self) -> None:
        factory = self.build()
        admission = factory.admission
        self.assertEqual((admission.max_connections, admission.max_per_peer), (512, 32))
        self.assertEqual(admission.allow, ())
        self.assertIsNone(admission.rate)
        self.assertEqual(factory.idle_timeout, 30.0)

    def test_options(self) -> None:
        factory = self.build(
            "--allow",
            "10.0.0.0/8",
            "--allow",
            "2001:db8::/32",
            "--allow",
            "192.0.2.7",
            "--max-connections",
            "100",
            "--max-connections-per-peer",
            "5",
            "--rate-limit",
            "30/min",
            "--idle-timeout",
            "10",
            "--max-packet-size",
            "1000",
        )
        admission = factory.admission
        self.assertEqual(
            admission.allow,
            (
                ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("2001:db8::/32"),
                ipaddress.ip_network("192.0.2.7/32"),
            ),
        )
        self.assertEqual((admission.max_connections, admission.max_per_peer), (100, 5))
        self.assertEqual(admission.rate.limit, RateLimit(30, 60.0))
        self.assertEqual(factory.idle_timeout, 10.0)
        self.assertEqual(factory.max_packet_size, 1000)
        self.assertIsNone(admission.refusal("10.1.2.3"))
        self.assertEqual(admission.refusal("192.0.2.8"), NOT_ALLOWED)

    def assertConfigurationError(self, *args: str) -> str:
        with self.assertRaises(ConfigurationError) as caught:
            make_settings(self, *args)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(args[-2]), message)
        return message

    def test_badAllow(self) -> None:
        for network in ("10.0.0.300/8", "nonsense", "10.0.0.0/33", ""):
            message = self.assertConfigurationError(
                "--allow", "10.0.0.0/8", "--allow", network
            )
            self.assertIn("is not an address or a network", message)

    def test_badRateLimit(self) -> None:
        self.assertEqual(
            self.assertConfigurationError("--rate-limit", "30/day"),
            "--rate-limit '30/day': give connections per time, such as 30/min",
        )
        self.assertEqual(
            self.assertConfigurationError("--rate-limit", "0/min"),
            "--rate-limit '0/min': give at least 1 connection",
        )

    def test_badLimits(self) -> None:
        self.assertEqual(
            self.assertConfigurationError("--max-connections", "0"),
            "--max-connections 0: give a value from 1 to 1000000",
        )
        self.assertEqual(
            self.assertConfigurationError("--max-connections-per-peer", "lots"),
            "--max-connections-per-peer 'lots': give a whole number",
        )

    def test_twistdSaysItInOneLine(self) -> None:
        """What twistd prints: one line, prefixed with the plugin's name."""
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--allow", "192.168.1.0/240"])
        with self.assertRaises(SystemExit) as caught:
            makeService(options)
        message = str(caught.exception.code)
        self.assertTrue(message.startswith("weather: --allow '192.168.1.0/240' is not"))
        self.assertNotIn("\n", message)
