"""
The status page (C{/} on C{--metrics-port}): one row per station with when it
was last heard from, its latest readings and a chart of each over the last
24 hours, and what it sent.  Overdue stations stand out.

Server-rendered HTML with inline SVG and CSS: no JavaScript, readable on a
phone, reloading itself every minute.  Built with L{twisted.web.template},
which escapes what stations and the devices file say.  Pure: the caller
gives the time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

from twisted.web.iweb import IRequest
from twisted.web.template import Element, Flattenable, Tag, XMLString, renderer, tags

from weather.core.devices import DeviceProfile
from weather.ops.history import BUCKET_NS, BUCKETS, Bucket, SeriesHistory
from weather.ops.stations import OVERDUE_FACTOR, StationRecord

NANOSECONDS = 1_000_000_000
CHART_HEIGHT = 40

# The page around the rows.  The flattener escapes text, so the style sheet
# must not use ">", "<" or "&".
PAGE = """\
<html xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1" lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<meta http-equiv="refresh" content="60" />
<title t:render="title" />
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:84rem;padding:1rem;
color:#1d232a;background:#f6f7f9}
h1{font-size:1.3rem;margin:0 0 .2rem}
.summary{margin:0 0 1rem;color:#505a66}
.summary .bad{color:#b3261e;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.5rem .6rem;border-bottom:1px solid #e1e4e8;text-align:left;
vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;color:#505a66;background:#eef0f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.overdue{background:#fdecea}
tr.overdue td:first-child{border-left:6px solid #b3261e}
.badge{display:inline-block;margin-top:.2rem;padding:0 .4rem;border-radius:.3rem;
background:#b3261e;color:#fff;font-size:.8rem;font-weight:600}
.quiet{color:#6b7580;font-size:.85rem}
.reading{display:flex;align-items:center;gap:.5rem;margin:.1rem 0}
.reading .v{min-width:11rem;white-space:nowrap;font-variant-numeric:tabular-nums}
svg.chart{width:240px;height:40px;flex:none}
svg.chart .band{fill:#c9dcf5}
svg.chart .line{fill:none;stroke:#1f5fbf;stroke-width:1.5}
svg.chart .axis{stroke:#d0d5db;stroke-width:1}
@media (max-width:720px){
 table,thead,tbody,tr,td{display:block}
 thead{display:none}
 tr{margin:0 0 .8rem;border:1px solid #e1e4e8}
 td{border:0;padding:.25rem .6rem}
 td.n{text-align:left}
 td[data-label]::before{content:attr(data-label) ": ";color:#505a66;font-size:.85rem}
 svg.chart{width:100%;max-width:240px}
}
</style>
</head>
<body>
<h1>Weather stations</h1>
<p class="summary" t:render="summary" />
<table>
<thead><tr><th>Station</th><th>Last seen</th><th>Latest (24 h)</th><th>Packets</th>
<th>Records</th><th>Record interval</th><th>Missed uploads</th><th>Rejected</th></tr>
</thead>
<tbody t:render="rows" />
</table>
<p class="quiet">Charts: the last 24 hours in quarter-hour steps (line: mean, band:
lowest to highest), kept in memory since the server started.
<a href="/metrics">/metrics</a> · <a href="/health">/health</a></p>
</body>
</html>"""


def ago(seconds: float) -> str:
    """How long ago, the way a person says it: just now, 12 min ago, 3 h 5 min ago."""
    seconds = int(seconds)
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return "just now" if seconds < 10 else f"{seconds} s ago"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    return f"{hours // 24} d {hours % 24} h ago"


def every(seconds: float) -> str:
    """An interval: 120 s, 60 min, 2 h."""
    if seconds < 600 or seconds % 60:
        return f"{seconds:g} s"
    if seconds < 7200 or seconds % 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def size(count: int) -> str:
    """A size: 999 bytes, 12.5 KiB, 64.0 MiB."""
    if count < 1024:
        return f"{count} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        count /= 1024
        if count < 1024 or unit == "GiB":
            break
    return f"{count:.1f} {unit}"


def utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / NANOSECONDS, timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def number(value: float) -> str:
    if value != value:
        return "NaN"
    if abs(value) >= 1000 or value.is_integer():
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


class Drawing:
    """A series' chart drawn in bucket units, valid until the series changes."""

    __slots__ = ("series", "version", "base", "shapes", "label")

    def __init__(self, series: SeriesHistory, title: str) -> None:
        self.series = series
        self.version = series.version
        buckets = series.buckets()
        self.base = buckets[0].start_ns // BUCKET_NS if buckets else 0
        self.shapes, self.label = _shapes(buckets, self.base, title)


def _shapes(buckets: list[Bucket], base: int, title: str) -> tuple[list[Tag], str]:
    """
    The mean as a line, lowest to highest as a band, a gap where no bucket
    is; x in buckets from C{base}, y in pixels.
    """
    if not buckets:
        return [], ""
    low = min(b.low for b in buckets)
    high = max(b.high for b in buckets)
    pad = 3
    span = high - low
    if not (math.isfinite(span) and span > 1e-9 * max(1.0, abs(high))):
        # Flat, or wider than a float holds: centred, one percent each way.
        middle = low / 2 + high / 2
        half = max(1.0, abs(middle) / 100)
        low, high = middle - half, middle + half
        span = high - low
    scale = (CHART_HEIGHT - 2 * pad) / span

    def y(value: float) -> str:
        return f"{pad + (high - value) * scale:.1f}"

    runs: list[list[Bucket]] = []
    previous = None
    for b in buckets:
        index = b.start_ns // BUCKET_NS
        if runs and index - previous == 1:
            runs[-1].append(b)
        else:
            runs.append([b])
        previous = index
    shapes = []
    for run in runs:
        xs = [b.start_ns // BUCKET_NS - base + 0.5 for b in run]
        if len(run) == 1:
            b = run[0]
            top = float(y(b.high))
            height = max(float(y(b.low)) - top, 1.5)
            shapes.append(
                Tag(
                    "rect",
                    {
                        "class": "band",
                        "x": f"{xs[0] - 0.4:g}",
                        "y": f"{top:.1f}",
                        "width": "0.8",
                        "height": f"{height:.1f}",
                    },
                )
            )
            continue
        band = " ".join(
            [f"{x:g},{y(b.high)}" for x, b in zip(xs, run, strict=True)]
            + [
                f"{x:g},{y(b.low)}"
                for x, b in zip(reversed(xs), reversed(run), strict=True)
            ]
        )
        line = " ".join(f"{x:g},{y(b.mean)}" for x, b in zip(xs, run, strict=True))
        shapes.append(Tag("polygon", {"class": "band", "points": band}))
        shapes.append(
            Tag(
                "polyline",
                {"class": "line", "vector-effect": "non-scaling-stroke", "points": line},
            )
        )
    return shapes, f"{title}: last 24 h, {number(low)} to {number(high)}"


class ChartCache:
    """
    Drawings by station and measurement, redrawn only when their series
    changed (about once an upload): a page reload redraws nothing.  Only the
    view box moves with time.  Holds what the last page showed, no more.
    """

    def __init__(self) -> None:
        self._drawings: dict[tuple[int, str], Drawing] = {}
        self._used: set[tuple[int, str]] = set()

    def drawing(self, device_id: int, name: str, series: SeriesHistory) -> Drawing:
        key = (device_id, name)
        self._used.add(key)
        drawn = self._drawings.get(key)
        if drawn is None or drawn.series is not series or drawn.version != series.version:
            drawn = self._drawings[key] = Drawing(series, name)
        return drawn

    def forget_unused(self) -> None:
        """Drop drawings the page no longer shows (stations removed)."""
        for key in set(self._drawings) - self._used:
            del self._drawings[key]
        self._used.clear()


def chart(drawing: Drawing, now_ns: int) -> Flattenable:
    """The last 24 hours of a drawing up to C{now_ns}; empty if nothing to draw."""
    if not drawing.shapes:
        return ""
    left = now_ns // BUCKET_NS - BUCKETS + 1 - drawing.base
    svg = {
        "class": "chart",
        "viewBox": f"{left} 0 {BUCKETS} {CHART_HEIGHT}",
        "preserveAspectRatio": "none",
        "role": "img",
        "aria-label": drawing.label,
    }
    axis = {
        "class": "axis",
        "x1": f"{left}",
        "y1": f"{CHART_HEIGHT - 0.5}",
        "x2": f"{left + BUCKETS}",
        "y2": f"{CHART_HEIGHT - 0.5}",
        "vector-effect": "non-scaling-stroke",
    }
    return Tag("svg", svg, [tags.title(drawing.label), Tag("line", axis), *drawing.shapes])


def _cell(label: str, *content: Flattenable, numeric: bool = False) -> Tag:
    """A cell, labelled for the phone layout where each cell is a line of its own."""
    css = {"class": "n"} if numeric else {}
    return Tag("td", {**css, "data-label": label}, list(content))


def _quiet(text: str) -> Tag:
    return tags.span(text, class_="quiet")


# What the timestamp rule's counts mean, shown on hover.
IRREGULAR = "more records than the time since the previous packet explains"
REPEATED = "sent again after a lost clear command: stored once"
LOST = "dropped by the station's full ring before it could upload them"


def _details(*counts: tuple[int, str, str]) -> list[Flattenable]:
    """A quiet line under a number for each count that is not 0, explained on hover."""
    return [
        [tags.br(), tags.span(f"{count} {what}", class_="quiet", title=why)]
        for count, what, why in counts
        if count
    ]


def _place(described: Iterable[tuple[str, str]]) -> list[Flattenable]:
    """The station's place, then its other tags, quieter."""
    others = dict(described)
    place = others.pop("place", "")
    rest = ", ".join(f"{k}={v}" for k, v in sorted(others.items()))
    return [place, " ", _quiet(rest)] if rest else [place]


def _row(station: StationRecord, names: list[str], now_ns: int, charts: ChartCache) -> Tag:
    overdue = station.overdue(now_ns)
    who: list[Flattenable] = [
        tags.strong(str(station.device_id)),
        " ",
        _place(station.tags),
    ]
    if overdue:
        assumed = "" if station.wake_every else " (assumed until it uploads)"
        who += [
            tags.br(),
            tags.span("overdue", class_="badge"),
            " ",
            _quiet(
                f"no packet for more than {OVERDUE_FACTOR:g} × "
                f"{every(station.expected_wake_every)}{assumed}"
            ),
        ]
    seen = station.last_seen_ns
    heard: list[Flattenable] = [
        _quiet("never")
        if seen is None
        else tags.span(ago((now_ns - seen) / NANOSECONDS), title=utc(seen))
    ]
    if station.peer:
        heard += [tags.br(), _quiet(f"from {station.peer}")]
    readings = []
    for name in names + [n for n in station.latest if n not in names]:
        latest = station.latest.get(name)
        if latest is None:
            continue
        series = station.history.series.get(name)
        drawing = (
            chart(charts.drawing(station.device_id, name, series), now_ns)
            if series is not None
            else ""
        )
        unit = f" {latest.unit}" if latest.unit else ""
        value = tags.span(name, " ", tags.strong(number(latest.value)), unit, class_="v")
        readings.append(
            Tag("div", {"class": "reading", "data-measurement": name}, [value, drawing])
        )
    failed = [f"{name} {n}" for name, n in station.sensor_failures.items() if n]
    if failed:
        readings.append(
            Tag(
                "div",
                {"class": "quiet", "title": "values that were not readings, not stored"},
                [f"sensor failures: {', '.join(failed)}"],
            )
        )
    nominal = station.measurement_every
    measured = station.measured_interval
    if nominal is None:
        interval: list[Flattenable] = [_quiet("-")]
    elif measured is None:
        interval = [every(nominal), " ", _quiet("nominal")]
    else:
        drift = (measured / nominal - 1) * 100
        interval = [f"{measured:.1f} s ", _quiet(f"vs {every(nominal)} ({drift:+.1f} %)")]
    irregular = _details((station.irregular_packets, "irregular", IRREGULAR))
    records = _details(
        (station.records_repeated, "repeated", REPEATED),
        (station.records_lost, "lost on the station", LOST),
    )
    css = {"class": "overdue"} if overdue else {}
    return Tag(
        "tr",
        {**css, "data-device": str(station.device_id)},
        [
            _cell("Station", *who),
            _cell("Last seen", *heard),
            _cell("Latest", *(readings or [_quiet("no readings yet")])),
            _cell("Packets", str(station.packets), *irregular, numeric=True),
            _cell("Records", str(station.records), *records, numeric=True),
            _cell("Record interval", *interval, numeric=True),
            _cell("Missed uploads", str(station.missed_uploads), numeric=True),
            _cell("Rejected packets", str(station.rejected), numeric=True),
        ],
    )


class StatusElement(Element):
    """
    The whole page: the stations heard from, and those the devices file
    describes that have not been heard from since the server started.
    C{charts} keeps drawings from one page to the next.
    """

    loader = XMLString(PAGE)

    def __init__(
        self,
        stations: Iterable[StationRecord],
        profiles: Mapping[int, DeviceProfile],
        now_ns: int,
        problems: Iterable[str] = (),
        charts: ChartCache | None = None,
        clock_steps: int = 0,
        clock_waiting: int = 0,
        quarantine: tuple[int, int] | None = None,
    ) -> None:
        """
        @param quarantine: the bytes in quarantine and its budget (None:
            not shown).
        """
        super().__init__()
        self.clock_steps = clock_steps
        self.quarantine = quarantine
        #: Packets waiting in the journal for the wall clock (--clock-sync).
        self.clock_waiting = clock_waiting
        self.profiles = profiles
        self.now_ns = now_ns
        self.problems = list(problems)
        self.charts = ChartCache() if charts is None else charts
        self.stations = {s.device_id: s for s in stations}
        for device_id, profile in profiles.items():
            if device_id not in self.stations:
                self.stations[device_id] = StationRecord(device_id, tags=profile.tags)
        self.overdue = sorted(d for d, s in self.stations.items() if s.overdue(now_ns))

    @renderer
    def title(self, request: IRequest | None, tag: Tag) -> Tag:
        return tag(f"weather: {len(self.overdue)} of {len(self.stations)} stations overdue")

    @renderer
    def summary(self, request: IRequest | None, tag: Tag) -> Tag:
        parts: list[Flattenable] = [f"{len(self.stations)} stations"]
        if self.overdue:
            overdue = ", ".join(map(str, self.overdue))
            parts.append(tags.span(f"{len(self.overdue)} overdue: {overdue}", class_="bad"))
        else:
            parts.append("none overdue")
        parts += [tags.span(problem, class_="bad") for problem in self.problems]
        if self.clock_steps:
            parts.append(
                tags.span(
                    f"{self.clock_steps} wall-clock steps",
                    title="The server's clock jumped by more than 1 s between two "
                    "packets (see the log); station intervals are measured on the "
                    "boot clock and are not affected.",
                )
            )
        if self.clock_waiting:
            parts.append(
                tags.span(
                    f"{self.clock_waiting} packets wait for the clock",
                    title="The server's wall clock is not synchronized yet: these "
                    "packets are kept in the journal and stored once it is "
                    "(--clock-sync).",
                )
            )
        if self.quarantine is not None:
            used, budget = self.quarantine
            parts.append(
                tags.span(
                    f"quarantine {size(used)} of {size(budget)}",
                    title="Packets that could not be decoded (weather quarantine "
                    "list), and the budget (--quarantine-max-size); once it is spent, "
                    "packets that are not from a station in the devices file are "
                    "refused.",
                    **({"class_": "bad"} if used >= budget else {}),
                )
            )
        parts.append(f"updated {utc(self.now_ns)}")
        return tag(parts[0], [(" · ", part) for part in parts[1:]])

    @renderer
    def rows(self, request: IRequest | None, tag: Tag) -> Tag:
        rows = []
        for device_id in sorted(self.stations):
            profile = self.profiles.get(device_id)
            names = [spec.name for spec in profile.values] if profile else []
            rows += ["\n", _row(self.stations[device_id], names, self.now_ns, self.charts)]
        self.charts.forget_unused()
        if not rows:
            empty = "No stations described or heard from yet."
            rows = ["\n", tags.tr(tags.td(empty, colspan="8", class_="quiet"))]
        return tag(rows, "\n")
