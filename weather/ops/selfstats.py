"""
The server's own figures written to InfluxDB on an interval
(C{--self-stats-interval}), as Telegraf's C{internal} plugin does: the same
numbers as C{/metrics}, so a Grafana dashboard can show the server's health
next to the readings without a Prometheus.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from weather.core.decode import Reading
from weather.core.lineprotocol import line
from weather.server.logs import RateLimitedLog
from weather.server.writer import PointWriter

#: The measurement the figures are stored in.
MEASUREMENT = "weather_internal"
#: Samples that say nothing over time or that InfluxDB can compute.
SKIPPED_SUFFIXES = ("_bucket", "_created")


def self_stat_readings(
    registry: CollectorRegistry,
    time_ns: int,
    tags: tuple[tuple[str, str], ...] = (),
) -> list[Reading]:
    """
    Every sample of C{registry} as a reading of L{MEASUREMENT}: its name
    (without C{weather_}) is the field, its labels and C{tags} the tags.
    """
    readings = []
    for metric in registry.collect():
        if metric.type == "info":
            continue
        for sample in metric.samples:
            if sample.name.endswith(SKIPPED_SUFFIXES) or not math.isfinite(sample.value):
                continue
            labels = {**{k: v for k, v in sample.labels.items() if v}, **dict(tags)}
            name = sample.name.removeprefix("weather_")
            readings.append(
                Reading(
                    MEASUREMENT,
                    tuple(sorted(labels.items())),
                    name,
                    float(sample.value),
                    time_ns,
                )
            )
    return readings


@dataclass(slots=True)
class SelfStatsCounts:
    """What a L{SelfStatsReporter} counts, since it was made."""

    points_queued: int = 0
    #: Intervals with nothing written: writes failing, or the writer overloaded.
    reports_skipped: int = 0


class SelfStatsReporter:
    """
    Write the registry's figures through C{writer}, one call per interval,
    with C{tags} on every point (C{host}).
    """

    log = Logger()

    def __init__(
        self,
        registry: CollectorRegistry,
        writer: PointWriter,
        clock: IReactorTime,
        tags: tuple[tuple[str, str], ...] = (),
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.tags = tags
        self.registry = registry
        self.writer = writer
        self.clock = clock
        #: The wall clock, for the points' timestamps.
        self.wall = wall if wall is not None else clock.seconds
        self._limited = RateLimitedLog(self.log, clock, period=3600)
        self.stats = SelfStatsCounts()

    def report(self) -> None:
        """
        Queue one point per figure; skipped while writes fail or the writer
        is overloaded: they would pile up in memory ahead of the readings
        waiting in the journal, and say nothing new once InfluxDB is back.
        """
        writer = self.writer
        if writer.overloaded or not writer.running or writer.failing_since is not None:
            self.stats.reports_skipped += 1
            return
        time_ns = round(self.wall() * 1e6) * 1000
        lines = [line(r) for r in self_stat_readings(self.registry, time_ns, self.tags)]
        self.stats.points_queued += len(lines)
        self.writer.write(lines).addErrback(self._refused)

    def _refused(self, failure: Failure) -> None:
        self._limited.error(
            "refused",
            "InfluxDB refused the server's own statistics: {why}",
            why=failure.getErrorMessage(),
        )
