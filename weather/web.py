"""
The operator's HTTP endpoint (C{--metrics-port}): C{/} the stations' status
page, C{/metrics} for Prometheus, C{/health} for checks.

Everything is rendered in the reactor thread from what the services hold in
memory: a scrape reads no disk and waits for nothing (but worker 0's
C{/health} under C{--workers}, which asks the other workers' too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import choose_encoder
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    gatherResults,
    maybeDeferred,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import readBody
from twisted.web.iweb import IAgent, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from weather.health import HealthReport, check_health, merge_worker_reports
from weather.metrics import ServerMetrics
from weather.statuspage import ChartCache, render_status

if TYPE_CHECKING:
    from weather.service import WeatherService

log = Logger()


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
    """A page about the running server, judged at the clock's time."""

    isLeaf = True

    def __init__(
        self, server: WeatherService, clock: IReactorTime, unreachable_after: float
    ) -> None:
        super().__init__()
        self.weather_service = server
        self.clock = clock
        self.unreachable_after = unreachable_after

    def health(self, now: float) -> HealthReport:
        return check_health(self.weather_service, now, self.unreachable_after)


#: How long worker 0's /health waits for the other workers' answers.
SIBLING_TIMEOUT = 3.0


class HealthPage(ServerPage):
    """
    200 with C{"status": "ok"}, or 503 with the reasons, as JSON.  In worker
    0 of several (C{siblings}: the other workers' numbers and /health URLs,
    asked through C{agent}, an L{IAgent}), for the whole server.
    """

    def __init__(
        self,
        server: WeatherService,
        clock: IReactorTime,
        unreachable_after: float,
        siblings: Sequence[tuple[int, str]] = (),
        agent: IAgent | None = None,
    ) -> None:
        super().__init__(server, clock, unreachable_after)
        self.siblings = tuple(siblings)
        self.agent = agent

    def render_GET(self, request: Request) -> bytes | int:
        report = self.health(self.clock.seconds())
        if not self.siblings:
            return self._answer(request, report)
        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)  # the checker went away: nothing to write

        def answer(answers: list[Mapping[str, Any] | str]) -> None:
            others = [
                (index, said)
                for (index, _), said in zip(self.siblings, answers, strict=True)
            ]
            if not finished.called:
                request.write(self._answer(request, merge_worker_reports(report, others)))
                request.finish()

        def failed(failure: Failure) -> None:
            log.failure("Cannot merge the workers' health", failure)
            if not finished.called:
                request.setResponseCode(500)
                request.finish()

        asked = [self._ask(url) for _, url in self.siblings]
        gatherResults(asked).addCallback(answer).addErrback(failed)
        return NOT_DONE_YET

    def _ask(self, url: str) -> Deferred[Mapping[str, Any] | str]:
        """
        A worker's /health report, or why it could not be had.  The timeout
        covers the whole answer (cancelling the body read aborts the
        connection).
        """

        def read(response: IResponse) -> Deferred[tuple[int, bytes]]:
            return readBody(response).addCallback(lambda body: (response.code, body))

        def parse(answer: tuple[int, bytes]) -> Mapping[str, Any] | str:
            code, body = answer
            try:
                report = json.loads(body)
            except ValueError:
                return f"HTTP {code}, not JSON"
            reasons = report.get("reasons") if isinstance(report, dict) else None
            if not (
                isinstance(reasons, list)
                and all(isinstance(reason, str) for reason in reasons)
                and report.get("status") in ("ok", "unhealthy")
            ):
                return f"HTTP {code}, not a health report"
            if code != 200 and not reasons:
                reasons = [f"HTTP {code}"]
            return {
                "status": "ok" if code == 200 and not reasons else "unhealthy",
                "reasons": reasons,
            }

        def failed(failure: Failure) -> str:
            if failure.check(TimeoutError, CancelledError):
                return f"no answer within {SIBLING_TIMEOUT:g} s"
            return failure.getErrorMessage() or type(failure.value).__name__

        assert self.agent is not None
        asking = maybeDeferred(self.agent.request, b"GET", url.encode("ascii"))
        asking.addCallback(read).addCallback(parse)
        return asking.addTimeout(SIBLING_TIMEOUT, self.clock).addErrback(failed)

    def _answer(self, request: Request, report: HealthReport) -> bytes:
        request.setResponseCode(200 if report.healthy else 503)
        request.setHeader("content-type", "application/json")
        request.setHeader("cache-control", "no-store")
        return json.dumps(report.as_dict(), indent=1).encode() + b"\n"


class StatusPage(ServerPage):
    """The stations at a glance (L{weather.statuspage}), for people."""

    def __init__(
        self, server: WeatherService, clock: IReactorTime, unreachable_after: float
    ) -> None:
        super().__init__(server, clock, unreachable_after)
        self.charts = ChartCache()

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return b"Not found: try / (stations), /metrics or /health\n"
        now = self.clock.seconds()
        server = self.weather_service
        report = self.health(now)
        request.setHeader("content-type", "text/html; charset=utf-8")
        request.setHeader("cache-control", "no-store")
        return render_status(
            server.pipeline.stations,
            server.pipeline.profiles,
            int(now * 1_000_000_000),
            report.reasons,
            self.charts,
        )


class QuietSite(Site):
    """A site that does not log each request: a scrape every 15 s is no news."""

    def log(self, request: Request) -> None:
        pass


def monitoring_site(
    server: WeatherService,
    metrics: ServerMetrics,
    clock: IReactorTime,
    unreachable_after: float,
    siblings: Sequence[tuple[int, str]] = (),
    agent: IAgent | None = None,
) -> Site:
    """
    The site served on C{--metrics-port}; C{siblings} and C{agent}: see
    L{HealthPage}.
    """
    root = Resource()
    index = StatusPage(server, clock, unreachable_after)
    root.putChild(b"", index)
    root.putChild(b"metrics", MetricsPage(metrics))
    root.putChild(b"health", HealthPage(server, clock, unreachable_after, siblings, agent))
    site = QuietSite(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
