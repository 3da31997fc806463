"""
The last 24 hours of each station's readings, kept in memory for the status
page's charts: the page works without querying InfluxDB.

Readings are summed into five-minute buckets (mean, lowest, highest) in a
ring of 288 buckets per series, in compact arrays: about 6 KiB per series
whatever arrives, so a server with 256 stations of a dozen values each holds
under 20 MiB.  Pure bookkeeping: every time is given by the caller.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

NANOSECONDS = 1_000_000_000
BUCKET_NS = 300 * NANOSECONDS
BUCKETS = 288  # 24 hours
#: A station with more values than this keeps charts of its first ones only.
MAX_SERIES = 16
_EMPTY = -1


@dataclass(frozen=True, slots=True)
class Bucket:
    """Five minutes of one series: when they start, and what they held."""

    start_ns: int
    mean: float
    low: float
    high: float
    count: int


class SeriesHistory:
    """One series' ring of buckets."""

    __slots__ = ("_number", "_total", "_low", "_high", "_count")

    def __init__(self) -> None:
        self._number = array("q", [_EMPTY]) * BUCKETS
        self._total = array("d", [0.0]) * BUCKETS
        self._low = array("f", [0.0]) * BUCKETS
        self._high = array("f", [0.0]) * BUCKETS
        self._count = array("l", [0]) * BUCKETS

    def add(self, time_ns: int, value: float) -> None:
        """Count one reading (non-finite values are not charted)."""
        if not math.isfinite(value):
            return
        number = time_ns // BUCKET_NS
        slot = number % BUCKETS
        held = self._number[slot]
        if held == number:
            self._total[slot] += value
            self._count[slot] += 1
            self._low[slot] = min(self._low[slot], value)
            self._high[slot] = max(self._high[slot], value)
        elif number > held:
            # A new bucket replaces one from a day ago (or an empty slot).
            self._number[slot] = number
            self._total[slot] = value
            self._count[slot] = 1
            self._low[slot] = self._high[slot] = value
        # else: older than the ring reaches; dropped.

    def buckets(self, now_ns: int, span_ns: int = BUCKETS * BUCKET_NS) -> list[Bucket]:
        """The buckets of the last C{span_ns} before C{now_ns}, oldest first."""
        first = (now_ns - span_ns) // BUCKET_NS
        last = now_ns // BUCKET_NS
        found = [
            Bucket(
                number * BUCKET_NS,
                self._total[slot] / self._count[slot],
                self._low[slot],
                self._high[slot],
                self._count[slot],
            )
            for slot, number in enumerate(self._number)
            if first <= number <= last
        ]
        found.sort(key=lambda b: b.start_ns)
        return found


class StationHistory:
    """A station's series by measurement name, at most L{MAX_SERIES}."""

    __slots__ = ("series",)

    def __init__(self) -> None:
        self.series: dict[str, SeriesHistory] = {}

    def add(self, measurement: str, time_ns: int, value: float) -> None:
        series = self.series.get(measurement)
        if series is None:
            if len(self.series) >= MAX_SERIES:
                return
            series = self.series[measurement] = SeriesHistory()
        series.add(time_ns, value)
