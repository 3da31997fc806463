"""
The operator's HTTP endpoint (C{--metrics-port}): C{/} the stations' status
page, C{/metrics} for Prometheus, C{/health} for checks.

Everything is rendered in the reactor thread from what the services hold in
memory: a scrape reads no disk and waits for nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client.exposition import choose_encoder
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.template import renderElement

from weather.ops.health import HealthReport, check_health
from weather.ops.metrics import ServerMetrics
from weather.ops.statuspage import ChartCache, StatusElement

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
        )
        return renderElement(request, page)


class QuietSite(Site):
    """A site that does not log each request: a scrape every 15 s is no news."""

    def log(self, request: Request) -> None:
        pass


def monitoring_site(
    server: WeatherService,
    metrics: ServerMetrics,
    clock: IReactorTime,
    unreachable_after: float,
    wall: Callable[[], float] | None = None,
) -> Site:
    """The site served on C{--metrics-port}."""
    root = Resource()
    index = StatusPage(server, clock, unreachable_after, wall)
    root.putChild(b"", index)
    root.putChild(b"metrics", MetricsPage(metrics))
    root.putChild(b"health", HealthPage(server, clock, unreachable_after, wall))
    site = QuietSite(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
