"""
The operator's HTTP endpoint (C{--metrics-port}): C{/} the stations' status
page, C{/metrics} for Prometheus, C{/health} for checks.

Everything is rendered in the reactor thread from what the services hold in
memory: a scrape reads no disk and waits for nothing.

The endpoint is bounded, so that clients that misbehave (or many idle
connections) cannot take the descriptors and memory stations need: at most
L{HTTP_CONNECTIONS} connections (a new one takes the place of the one idle
longest), each given L{HTTP_REQUEST_TIMEOUT} seconds for each whole
request, whose body may be L{HTTP_MAX_BODY} bytes at most.
The request line and headers are bounded by twisted.web itself (16 KiB and
500 headers: L{HTTPChannel.totalHeadersSize}, C{maxHeaders}).  Fixed, not
options: a Prometheus server and a few browsers stay well within them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client.exposition import choose_encoder
from twisted.internet.interfaces import IAddress, IReactorTime, ITransport
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.template import renderElement

from weather.ops.health import HealthReport, check_health
from weather.ops.metrics import ServerMetrics
from weather.ops.statuspage import ChartCache, StatusElement
from weather.server.logs import RateLimitedLog

if TYPE_CHECKING:
    from weather.server.service import WeatherService


class MetricsPage(Resource):
    """Prometheus' text format (or OpenMetrics, if the scraper asks for it)."""

    isLeaf = True

    def __init__(self, metrics: ServerMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        accept = (request.getHeader("accept") or "").strip()
        encoder, content_type = choose_encoder(accept)
        request.setHeader("content-type", content_type)
        request.setHeader("cache-control", "no-store")
        return encoder(self.metrics.registry)


class ServerPage(Resource):
    """
    A page about the running server, judged at the time of C{clock} (the
    reactor's timers' clock); C{wall} (default: C{clock.seconds}) dates it.
    """

    isLeaf = True

    def __init__(
        self,
        server: WeatherService,
        clock: IReactorTime,
        unreachable_after: float,
        wall: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.weather_service = server
        self.clock = clock
        self.wall = wall if wall is not None else clock.seconds
        self.unreachable_after = unreachable_after

    def health(self, now: float) -> HealthReport:
        return check_health(self.weather_service, now, self.unreachable_after)


class HealthPage(ServerPage):
    """200 with C{"status": "ok"}, or 503 with the reasons, as JSON."""

    def render_GET(self, request: Request) -> bytes:
        report = self.health(self.clock.seconds())
        request.setResponseCode(200 if report.healthy else 503)
        request.setHeader("content-type", "application/json")
        request.setHeader("cache-control", "no-store")
        return json.dumps(report.as_dict(), indent=1).encode() + b"\n"


class StatusPage(ServerPage):
    """The stations at a glance (L{weather.ops.statuspage}), for people."""

    def __init__(
        self,
        server: WeatherService,
        clock: IReactorTime,
        unreachable_after: float,
        wall: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(server, clock, unreachable_after, wall)
        self.charts = ChartCache()

    def render_GET(self, request: Request) -> bytes | int:
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return b"Not found: try / (stations), /metrics or /health\n"
        server = self.weather_service
        report = self.health(self.clock.seconds())
        request.setHeader("content-type", "text/html; charset=utf-8")
        request.setHeader("cache-control", "no-store")
        page = StatusElement(
            server.stations,
            server.pipeline.profiles,
            int(self.wall() * 1_000_000_000),
            report.reasons,
            self.charts,
            server.listener.factory.stats.clock_steps,
            server.pipeline.clock_waiting,
            quarantine=(
                server.journal.quarantined_bytes,
                server.journal.quarantine_max_bytes,
            ),
        )
        return renderElement(request, page)


#: Connections held at once (see L{ConnectionLimit}).  Prometheus keeps one
#: per server that scrapes, a browser one or two for a page (up to six); a
#: newcomer past the limit is served all the same.  Twice this is the most
#: descriptors the endpoint uses: half of those kept beside the stations'
#: (L{weather.app.tap}'s C{SPARE_DESCRIPTORS}), the rest left to the
#: journal, the log, InfluxDB and the listeners.
HTTP_CONNECTIONS = 16

#: Seconds a connection has to send a whole request, from its start or from
#: its previous response; then it is closed.  Bytes trickled in do not
#: extend it (twisted.web's own timeout starts again at each).  Prometheus
#: scraping every 15 s keeps its connection; less often, it reconnects.
HTTP_REQUEST_TIMEOUT = 30.0

#: The largest request body taken, in bytes: the pages are read with GET,
#: and twisted.web would keep a larger body in a temporary file.
HTTP_MAX_BODY = 1024


class BoundedRequest(Request):
    """A request with a body of at most L{HTTP_MAX_BODY} bytes, of known length."""

    def gotLength(self, length: int | None) -> None:
        """
        Answer 413 and close, rather than read, a body that is too large,
        or chunked (of no length announced).
        """
        super().gotLength(0)  # kept in memory: no more than HTTP_MAX_BODY is read
        if length is None or length > HTTP_MAX_BODY:
            self.channel.transport.write(
                b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\n"
                b"content-length: 0\r\n\r\n"
            )
            self.channel.loseConnection()  # reads no further


class DeadlineChannel(HTTPChannel):
    """
    HTTPChannel whose timeout (the site's, L{HTTP_REQUEST_TIMEOUT}) is not
    started again by each byte received, only by each response: a
    connection that trickles a byte at a time is closed all the same.
    """

    def dataReceived(self, data: bytes) -> None:
        LineReceiver.dataReceived(self, data)


class QuietSite(Site):
    """
    A site that does not log each request (a scrape every 15 s is no news),
    with L{BoundedRequest}s on L{DeadlineChannel}s.
    """

    protocol = DeadlineChannel
    requestFactory = BoundedRequest

    def log(self, request: Request) -> None:
        pass


class TimedWrapper(ProtocolWrapper):
    """A connection that knows when it last did something: connected, or answered."""

    factory: ConnectionLimit

    def makeConnection(self, transport: ITransport) -> None:
        self.active_at = self.factory.clock.seconds()
        super().makeConnection(transport)

    def write(self, data: bytes) -> None:
        self.active_at = self.factory.clock.seconds()
        super().write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.active_at = self.factory.clock.seconds()
        super().writeSequence(data)


class ConnectionLimit(WrappingFactory):
    """
    At most C{limit} connections to C{wrappedFactory} at once.  At the
    limit a new connection takes the place of the one idle longest (since
    it connected or was last answered), which is closed at once: clients
    holding idle connections cannot keep a health check or a scrape out.
    Closed ones count until their descriptor is let go (the next turn of
    the reactor), and while C{limit} of those wait, new connections are
    closed instead: never more than twice C{limit} descriptors.  Said at
    most once a minute.

    Why not L{twisted.protocols.policies.LimitTotalConnectionsFactory}: it
    refuses the newcomer, and builds protocols of its own class, not a
    wrapped factory's (a site's channels).
    """

    protocol = TimedWrapper
    log = Logger()
    noisy = False

    def __init__(self, wrapped: Site, limit: int, clock: IReactorTime) -> None:
        super().__init__(wrapped)
        self.limit = limit
        self.clock = clock
        #: Connections closed to make room for newer ones, and closed at once.
        self.evicted = 0
        self.refused = 0
        self._closing: set[TimedWrapper] = set()
        self._limited = RateLimitedLog(self.log, clock)

    def buildProtocol(self, addr: IAddress) -> ProtocolWrapper | None:
        if len(self.protocols) >= self.limit:
            if len(self._closing) >= self.limit:
                self.refused += 1
                return None
            self._evict()
        return super().buildProtocol(addr)

    def _evict(self) -> None:
        """Close the connection idle longest, at once."""
        now = self.clock.seconds()
        idle = min(self.protocols, key=lambda connection: connection.active_at)
        del self.protocols[idle]
        self._closing.add(idle)
        self.evicted += 1
        self._limited.warn(
            "limit",
            "{limit} connections to the monitoring endpoint, the most it holds: "
            "closed the one idle longest ({idle:.0f} s, from {peer}) for a new one",
            limit=self.limit,
            idle=now - idle.active_at,
            peer=getattr(idle.getPeer(), "host", "?"),
        )
        idle.abortConnection()

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        self.protocols.pop(p, None)
        self._closing.discard(p)  # type: ignore[arg-type]


def monitoring_site(
    server: WeatherService,
    metrics: ServerMetrics,
    clock: IReactorTime,
    unreachable_after: float,
    wall: Callable[[], float] | None = None,
) -> ConnectionLimit:
    """The site served on C{--metrics-port}, bounded."""
    root = Resource()
    index = StatusPage(server, clock, unreachable_after, wall)
    root.putChild(b"", index)
    root.putChild(b"metrics", MetricsPage(metrics))
    root.putChild(b"health", HealthPage(server, clock, unreachable_after, wall))
    site = QuietSite(root, timeout=HTTP_REQUEST_TIMEOUT, reactor=clock)
    site.displayTracebacks = False
    site.noisy = False
    return ConnectionLimit(site, HTTP_CONNECTIONS, clock)
