"""
The last 24 hours of each station's readings, kept in memory for the status
page's charts: the page works without querying InfluxDB.

Readings are summed into buckets (mean, lowest, highest) in a ring of 96
buckets per series, in compact arrays: about 4 KiB per series whatever
arrives, so 256 stations of 16 values each hold about 16 MiB.  The buckets
are as narrow as the readings' span allows: a series starts with 1-second
buckets and widens them (merging what it holds) as its readings spread, up
to quarter hours for 24 hours.  A two-minute demo is charted in 2-second
steps, a day in quarter hours.  A packet is added one step per bucket it
covers and value, not per reading: this is on every packet's path.
Readings may come late (a packet stored by C{weather replay}): those within
24 hours of a series' newest are placed at their times, older ones skipped.
Pure bookkeeping: every time is given by the caller.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

NANOSECONDS = 1_000_000_000
BUCKETS = 96
#: Bucket widths in seconds, narrowest first; the widest covers 24 hours.
WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900)
#: What the charts show at most: the last 24 hours.
WINDOW_NS = BUCKETS * WIDTHS[-1] * NANOSECONDS
#: A station with more values than this keeps charts of its first ones only.
MAX_SERIES = 16
_EMPTY = -1


@dataclass(frozen=True, slots=True)
class Bucket:
    """A stretch of one series: when it starts, and what it held."""

    start_ns: int
    mean: float
    low: float
    high: float
    count: int


#: Bucket number, first and past-the-last index of a packet's records in it.
Span = tuple[int, int, int]


def spans(times: Sequence[int], width_ns: int) -> list[Span]:
    """Cut ascending C{times} into the buckets of C{width_ns} they fall in."""
    found = []
    i = 0
    n = len(times)
    while i < n:
        number = times[i] // width_ns
        j = bisect_left(times, (number + 1) * width_ns, i + 1)
        found.append((number, i, j))
        i = j
    return found


def fitting_width(first_ns: int, last_ns: int, at_least: int = WIDTHS[0]) -> int:
    """
    The narrowest width (seconds, at least C{at_least}) whose L{BUCKETS}
    buckets cover C{first_ns} to C{last_ns}; the widest if none does.
    """
    for width in WIDTHS:
        if width >= at_least:
            width_ns = width * NANOSECONDS
            if last_ns // width_ns - first_ns // width_ns < BUCKETS:
                return width
    return WIDTHS[-1]


class SeriesHistory:
    """One series' ring of buckets, L{width} seconds each."""

    __slots__ = (
        "width",
        "_first",
        "_last",
        "_number",
        "_total",
        "_low",
        "_high",
        "_count",
        "version",
    )

    def __init__(self) -> None:
        #: Changes whenever a reading is counted (for drawings made of it).
        self.version = 0
        self.width = WIDTHS[0]
        self._clear()

    def _clear(self) -> None:
        #: The oldest and newest bucket numbers held (L{_EMPTY}: none); the
        #: oldest is None once its bucket is replaced, until L{_oldest} asks.
        self._first: int | None = _EMPTY
        self._last = _EMPTY
        self._number = array("q", [_EMPTY]) * BUCKETS
        self._total = array("d", [0.0]) * BUCKETS
        self._low = array("d", [0.0]) * BUCKETS
        self._high = array("d", [0.0]) * BUCKETS
        self._count = array("i", [0]) * BUCKETS

    @property
    def width_ns(self) -> int:
        return self.width * NANOSECONDS

    def fit(self, first_ns: int, last_ns: int) -> int:
        """
        Widen the buckets, if needed, so that readings from C{first_ns} to
        C{last_ns} fit beside those held (or replace them, once the span
        is more than 24 hours); return the bucket width in nanoseconds.
        """
        if self._last == _EMPTY:
            self.width = fitting_width(first_ns, last_ns)
            return self.width_ns
        width_ns = self.width_ns
        if self.width == WIDTHS[-1]:
            return width_ns  # the widest: a ring of the last 24 hours
        low = min(first_ns // width_ns, self._oldest())
        high = max(last_ns // width_ns, self._last)
        if high - low >= BUCKETS:
            self._regroup(fitting_width(low * width_ns, high * width_ns, self.width))
        return self.width_ns

    def _regroup(self, width: int) -> None:
        """Merge what is held into buckets of C{width} seconds."""
        held = sorted(
            (n, self._total[i], self._count[i], self._low[i], self._high[i])
            for i, n in enumerate(self._number)
            if n != _EMPTY
        )
        old_ns = self.width_ns
        self.width = width
        self._clear()
        for number, total, count, low, high in held:
            self._merge(number * old_ns // self.width_ns, total, count, low, high)

    def add(self, time_ns: int, value: float) -> None:
        """Count one reading (non-finite values are not charted)."""
        width_ns = self.fit(time_ns, time_ns)
        self.add_spans([(time_ns // width_ns, 0, 1)], [value])

    def add_spans(self, spans: Sequence[Span], values: Sequence[float]) -> None:
        """Count a packet's column, cut by L{spans} (of its times, at L{fit}'s width)."""
        for number, start, end in spans:
            part = values[start:end]
            total = sum(part)
            if not math.isfinite(total):
                part = [v for v in part if math.isfinite(v)]
                if not part:
                    continue
                total = sum(part)
            self._merge(number, total, len(part), min(part), max(part))

    def _merge(
        self, number: int, total: float, count: int, low: float, high: float
    ) -> None:
        slot = number % BUCKETS
        held = self._number[slot]
        if held == number:
            self._total[slot] += total
            self._count[slot] += count
            self._low[slot] = min(self._low[slot], low)
            self._high[slot] = max(self._high[slot], high)
        elif number > held:
            # A new bucket replaces one from a day ago (or an empty slot).
            self._number[slot] = number
            self._total[slot] = total
            self._count[slot] = count
            self._low[slot] = low
            self._high[slot] = high
            if held == self._first and held != _EMPTY:
                self._first = None  # found again when needed: not on this path
        else:
            return  # older than the ring reaches: dropped
        self.version += 1
        if self._last == _EMPTY:
            self._first = self._last = number
        else:
            if self._first is not None:
                self._first = min(self._first, number)
            self._last = max(self._last, number)

    def kept_from(self) -> int:
        """
        The earliest time a reading is kept from: 24 hours before the end of
        the newest bucket held (any time, while none is).
        """
        if self._last == _EMPTY:
            return -(2**63)
        return (self._last + 1) * self.width_ns - WINDOW_NS

    def _oldest(self) -> int:
        if self._first is None:
            self._first = min(n for n in self._number if n != _EMPTY)
        return self._first

    def shown(self, now_ns: int) -> tuple[int, int]:
        """
        The oldest and newest bucket numbers held that a chart at C{now_ns}
        shows (the 24 hours up to then); the first is past the second if none.
        """
        if self._last == _EMPTY:
            return 0, -1
        width_ns = self.width_ns
        oldest = (now_ns - WINDOW_NS) // width_ns + 1
        return max(oldest, self._oldest()), min(now_ns // width_ns, self._last)

    def buckets(self, now_ns: int | None = None) -> list[Bucket]:
        """
        The buckets held, oldest first: all of them, or those of the 24
        hours up to C{now_ns}.
        """
        if self._last == _EMPTY:
            return []
        first, last = (self._oldest(), self._last) if now_ns is None else self.shown(now_ns)
        width_ns = self.width_ns
        found = [
            Bucket(
                number * width_ns,
                self._total[slot] / self._count[slot],
                self._low[slot],
                self._high[slot],
                self._count[slot],
            )
            for slot, number in enumerate(self._number)
            if number != _EMPTY and first <= number <= last
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
        """
        A decoded packet: its record times (ascending, some) and one column
        per name; readings older than a series keeps (L{SeriesHistory.kept_from})
        are skipped.
        """
        cuts: dict[tuple[int, int], list[Span]] = {}
        for name, column in zip(names, columns, strict=True):
            series = self._series(name)
            if series is None:
                continue
            start = bisect_left(times, series.kept_from())
            if start == len(times):
                continue
            width_ns = series.fit(times[start], times[-1])
            cut = cuts.get((width_ns, start))
            if cut is None:
                cut = cuts[width_ns, start] = spans(times[start:], width_ns)
            series.add_spans(cut, column[start:] if start else column)

    def _series(self, measurement: str) -> SeriesHistory | None:
        series = self.series.get(measurement)
        if series is None:
            if len(self.series) >= MAX_SERIES:
                return None
            series = self.series[measurement] = SeriesHistory()
        return series
