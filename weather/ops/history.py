"""
The last 24 hours of each station's readings, kept in memory for the status
page's charts: the page works without querying InfluxDB.

Readings are summed into quarter-hour buckets (mean, lowest, highest) in a
ring of 96 buckets per series, in compact arrays: about 3 KiB per series
whatever arrives (the page's charts are 240 pixels wide), so 256 stations of
16 values each hold about 12 MiB.  A packet is added one step per bucket it
covers and value, not per reading: this is on every packet's path.
Pure bookkeeping: every time is given by the caller.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

NANOSECONDS = 1_000_000_000
BUCKET_NS = 900 * NANOSECONDS
BUCKETS = 96  # 24 hours
#: A station with more values than this keeps charts of its first ones only.
MAX_SERIES = 16
_EMPTY = -1


@dataclass(frozen=True, slots=True)
class Bucket:
    """A quarter of an hour of one series: when it starts, and what it held."""

    start_ns: int
    mean: float
    low: float
    high: float
    count: int


#: Bucket number, first and past-the-last index of a packet's records in it.
Span = tuple[int, int, int]


def spans(times: Sequence[int]) -> list[Span]:
    """Cut ascending C{times} into the buckets they fall in."""
    found = []
    i = 0
    n = len(times)
    while i < n:
        number = times[i] // BUCKET_NS
        j = bisect_left(times, (number + 1) * BUCKET_NS, i + 1)
        found.append((number, i, j))
        i = j
    return found


class SeriesHistory:
    """One series' ring of buckets."""

    __slots__ = ("_number", "_total", "_low", "_high", "_count", "version")

    def __init__(self) -> None:
        #: Changes whenever a reading is counted (for drawings made of it).
        self.version = 0
        self._number = array("i", [_EMPTY]) * BUCKETS
        self._total = array("d", [0.0]) * BUCKETS
        self._low = array("d", [0.0]) * BUCKETS
        self._high = array("d", [0.0]) * BUCKETS
        self._count = array("i", [0]) * BUCKETS

    def add(self, time_ns: int, value: float) -> None:
        """Count one reading (non-finite values are not charted)."""
        self._merge(time_ns // BUCKET_NS, [value])

    def add_spans(self, spans: Sequence[Span], values: Sequence[float]) -> None:
        """Count a packet's column, cut by L{spans} (of its times)."""
        for number, start, end in spans:
            self._merge(number, values[start:end])

    def _merge(self, number: int, values: Sequence[float]) -> None:
        total = sum(values)
        if not math.isfinite(total):
            values = [v for v in values if math.isfinite(v)]
            if not values:
                return
            total = sum(values)
        slot = number % BUCKETS
        held = self._number[slot]
        self.version += 1
        if held == number:
            self._total[slot] += total
            self._count[slot] += len(values)
            self._low[slot] = min(self._low[slot], min(values))
            self._high[slot] = max(self._high[slot], max(values))
        elif number > held:
            # A new bucket replaces one from a day ago (or an empty slot).
            self._number[slot] = number
            self._total[slot] = total
            self._count[slot] = len(values)
            self._low[slot] = min(values)
            self._high[slot] = max(values)
        # else: older than the ring reaches; dropped.

    def buckets(self, now_ns: int | None = None) -> list[Bucket]:
        """
        The buckets held, oldest first: all of them, or those of the 24
        hours up to C{now_ns}.
        """
        last = None if now_ns is None else now_ns // BUCKET_NS
        found = [
            Bucket(
                number * BUCKET_NS,
                self._total[slot] / self._count[slot],
                self._low[slot],
                self._high[slot],
                self._count[slot],
            )
            for slot, number in enumerate(self._number)
            if number != _EMPTY and (last is None or last - BUCKETS < number <= last)
        ]
        found.sort(key=lambda b: b.start_ns)
        return found


class StationHistory:
    """A station's series by measurement name, at most L{MAX_SERIES}."""

    __slots__ = ("series",)

    def __init__(self) -> None:
        self.series: dict[str, SeriesHistory] = {}

    def add(self, measurement: str, time_ns: int, value: float) -> None:
        series = self._series(measurement)
        if series is not None:
            series.add(time_ns, value)

    def add_packet(
        self, names: Sequence[str], times: Sequence[int], columns: Sequence[Sequence[float]]
    ) -> None:
        """A decoded packet: its record times and one column per name."""
        cut = spans(times)
        for name, column in zip(names, columns, strict=True):
            series = self._series(name)
            if series is not None:
                series.add_spans(cut, column)

    def _series(self, measurement: str) -> SeriesHistory | None:
        series = self.series.get(measurement)
        if series is None:
            if len(self.series) >= MAX_SERIES:
                return None
            series = self.series[measurement] = SeriesHistory()
        return series
