"""
The status page (C{/} on C{--metrics-port}): one row per station with when it
was last heard from, its latest readings and a chart of each over the last
24 hours, and what it sent.  Overdue stations stand out.

Server-rendered HTML with inline SVG and CSS: no JavaScript, readable on a
phone, reloading itself every minute.  Built with L{twisted.web.template},
which escapes what stations and the devices file say.  Times are the
server's local time (or a given zone), values shown with the decimals their
profile gives them.  Pure: the caller gives the time.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import statistics
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo

from twisted.web.iweb import IRequest
from twisted.web.template import Element, Flattenable, Tag, XMLString, renderer, tags

from weather.core.devices import DeviceProfile, ValueSpec
from weather.ops.history import Bucket, SeriesHistory
from weather.ops.stations import OVERDUE_FACTOR, StationRecord

NANOSECONDS = 1_000_000_000

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
td.latest{min-width:29rem}
tr.overdue{background:#fdecea}
tr.overdue td:first-child{border-left:6px solid #b3261e}
.badge{display:inline-block;margin-top:.2rem;padding:0 .4rem;border-radius:.3rem;
background:#b3261e;color:#fff;font-size:.8rem;font-weight:600}
.quiet{color:#6b7580;font-size:.85rem}
.reading{display:flex;align-items:center;column-gap:.8rem;margin:.2rem 0}
.reading .v{min-width:10rem;white-space:nowrap;font-variant-numeric:tabular-nums}
svg.chart{display:block;flex:0 1 300px;width:300px;max-width:100%;min-width:8rem;
height:auto}
svg.chart .band{fill:#c9dcf5}
svg.chart .line{fill:none;stroke:#1f5fbf;stroke-width:1.5}
svg.chart .axis{fill:none;stroke:#d0d5db;stroke-width:1}
svg.chart text{font-size:10px;fill:#6b7580;font-variant-numeric:tabular-nums;
text-anchor:middle}
svg.chart text.value{text-anchor:end;dominant-baseline:middle}
@media (max-width:1120px){
 body{padding:.5rem}
 table,thead,tbody,tr,td{display:block}
 thead{display:none}
 tr{margin:0 0 .8rem;border:1px solid #e1e4e8}
 td,td.latest{border:0;padding:.25rem .6rem;overflow-wrap:anywhere;min-width:0}
 td.n{text-align:left}
 td[data-label]::before{content:attr(data-label) ": ";color:#505a66;font-size:.85rem}
 .reading{flex-wrap:wrap}
 svg.chart{flex:1 1 100%;max-width:300px}
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
<p class="quiet">Charts: up to the last 24 hours, in steps that fit the readings'
span (line: mean, band: lowest to highest), kept in memory since the server started.
<t:transparent t:render="times" /> <a href="/metrics">/metrics</a> ·
<a href="/health">/health</a></p>
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


def local(ns: int, zone: tzinfo | None = None) -> datetime:
    """
    The time C{ns} in C{zone}; by default in the server's local zone, read
    from the system at each call (as C{TZ} and C{/etc/localtime} say).
    """
    return datetime.fromtimestamp(ns / NANOSECONDS, timezone.utc).astimezone(zone)


def utc_offset(moment: datetime) -> str:
    """The offset of C{moment}'s zone then: UTC+01:00, UTC-03:00."""
    offset = moment.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def zone_name(moment: datetime) -> str:
    """The zone's name (CET, UTC), or its offset (UTC+05:30) where it has none."""
    name = moment.tzname() or ""
    return name if name.isalpha() else utc_offset(moment)


def zone_label(moment: datetime) -> str:
    """The zone's name and offset: CET (UTC+01:00); UTC; UTC+05:30."""
    name, offset = zone_name(moment), utc_offset(moment)
    return name if name in (offset, "UTC") else f"{name} ({offset})"


def when(ns: int, zone: tzinfo | None = None) -> str:
    """A date and time with its zone: 2026-11-21 13:00:00 CET."""
    moment = local(ns, zone)
    return f"{moment:%Y-%m-%d %H:%M:%S} {zone_name(moment)}"


def peer_host(peer: str) -> str:
    """
    The host of a peer's C{host:port} or C{[host]:port}: a station's port is
    a new ephemeral one each upload, and says nothing.  IPv4-mapped IPv6
    addresses are shown as IPv4; other addresses (a UNIX socket) as given.
    """
    host, colon, port = peer.rpartition(":")
    if not (colon and port.isdigit()):
        return peer
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host if ":" not in host else peer
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


#: The resolution of the named conversions' sensors at their default
#: settings (SI7021 datasheet: 12-bit humidity, 14-bit temperature).
RESOLUTION = {"si7021_humidity": 0.025, "si7021_temperature": 0.01}
#: Most decimals a value is shown with.
MAX_DECIMALS = 6


def _whole(value: float) -> bool:
    return abs(value - round(value)) <= 1e-9 * max(1.0, abs(value))


def decimals(spec: ValueSpec) -> int | None:
    """
    The decimals a value carries: an integer code times C{scale} plus
    C{offset} has as many as they have (scale 0.1: 1, 0.25: 2); a named
    conversion those of its sensor's resolution, times C{scale}; C{f32}
    values have no fixed number (None: shown to 7 significant digits).
    """
    if spec.type == "f32":
        return None
    step = abs(spec.scale) * RESOLUTION.get(spec.conversion, 1.0)
    if step == 0 or not math.isfinite(step):
        return 0
    if spec.conversion == "raw":
        for places in range(MAX_DECIMALS + 1):
            if _whole(spec.scale * 10**places) and _whole(spec.offset * 10**places):
                return places
    # Enough to tell one step from the next.
    return min(max(0, math.ceil(-math.log10(step) - 1e-9)), MAX_DECIMALS)


def number(value: float, places: int | None = None) -> str:
    """C{value} with C{places} decimals (None: 7 significant digits)."""
    if not math.isfinite(value):
        return str(value) if math.isinf(value) else "NaN"
    if places is None or abs(value) >= 1e15:
        text = f"{value:.0f}" if 1e7 <= abs(value) < 1e15 else f"{value:.7g}"
    else:
        text = f"{value:.{places}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


#: The chart's size in SVG units (CSS scales it, text too, keeping its
#: shape) and its plot area.
CHART_WIDTH = 300
CHART_HEIGHT = 64
PLOT_TOP = 6
PLOT_BOTTOM = 46
PLOT_RIGHT = 296
#: About the width of a digit of the labels (10 px, in the style sheet).
DIGIT = 6.2
#: Steps between time labels, in seconds: the first that gives at most 4.
TICKS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800)
TICKS += (21600, 43200, 86400)


def time_ticks(start_ns: int, end_ns: int, zone: tzinfo | None) -> tuple[list[int], str]:
    """
    Times from C{start_ns} to C{end_ns} at round local times (at most 4),
    and their strftime format: with seconds if they are less than a minute
    apart.
    """
    offset = local(start_ns, zone).utcoffset() or timedelta(0)
    offset_ns = offset // timedelta(microseconds=1) * 1000
    for step in TICKS:
        step_ns = step * NANOSECONDS
        first = -(-(start_ns + offset_ns) // step_ns) * step_ns - offset_ns
        if (end_ns - first) // step_ns < 4:
            break
    return list(range(first, end_ns + 1, step_ns)), "%H:%M:%S" if step < 60 else "%H:%M"


def runs(buckets: list[Bucket], width_ns: int) -> list[list[Bucket]]:
    """
    Buckets joined into runs, cut where more than twice the usual spacing
    (and more than two buckets) has no reading: records two minutes apart
    in one-minute buckets make one line, a silent hour a gap.
    """
    gaps = [(b.start_ns - a.start_ns) // width_ns for a, b in itertools.pairwise(buckets)]
    usual = statistics.median_low(gaps) if gaps else 1
    found: list[list[Bucket]] = []
    for bucket, gap in zip(buckets, [None, *gaps], strict=True):
        if gap is None or gap > max(2, 2 * usual):
            found.append([bucket])
        else:
            found[-1].append(bucket)
    return found


def _text(x: float, y: float, text: str, css: str = "") -> Tag:
    """A label at C{x}, C{y}: centred, or (class value) ending there, middle high."""
    where = {"x": f"{x:.1f}", "y": f"{y:.1f}"}
    return Tag("text", {"class": css, **where} if css else where, [text])


def draw(
    buckets: list[Bucket],
    width_ns: int,
    title: str,
    unit: str,
    places: int | None,
    zone: tzinfo | None,
) -> Tag | str:
    """
    The chart of C{buckets}: the mean as a line, lowest to highest as a
    band, gaps where no readings came; across the buckets' own span (the
    readings', up to 24 hours), the lowest and highest value on the left,
    round local times below.  Empty if no bucket.
    """
    if not buckets:
        return ""
    start, end = buckets[0].start_ns, buckets[-1].start_ns + width_ns
    low = min(b.low for b in buckets)
    high = max(b.high for b in buckets)
    lowest, highest = number(low, places), number(high, places)
    left = max(36.0, 8 + DIGIT * max(len(lowest), len(highest)))

    def x(ns: float) -> float:
        return left + (ns - start) * (PLOT_RIGHT - left) / (end - start)

    span = high - low
    if math.isfinite(span) and span > 1e-9 * max(1.0, abs(high)):

        def y(value: float) -> float:
            return PLOT_BOTTOM - (value - low) * ((PLOT_BOTTOM - PLOT_TOP) / span)

    else:  # flat, or wider than a float holds: in the middle

        def y(value: float) -> float:
            return (PLOT_TOP + PLOT_BOTTOM) / 2

    def point(ns: float, value: float) -> str:
        return f"{x(ns):.1f},{y(value):.1f}"

    shapes: list[Tag] = []
    for run in runs(buckets, width_ns):
        middles = [b.start_ns + width_ns / 2 for b in run]
        if len(run) == 1:
            b = run[0]
            wide = max((PLOT_RIGHT - left) * width_ns / (end - start) * 0.8, 2.0)
            top = y(b.high)
            box = {"x": f"{x(middles[0]) - wide / 2:.1f}", "y": f"{top:.1f}"}
            box |= {"width": f"{wide:.1f}", "height": f"{max(y(b.low) - top, 1.5):.1f}"}
            shapes.append(Tag("rect", {"class": "band", **box}))
            continue
        band = [point(t, b.high) for t, b in zip(middles, run, strict=True)]
        band += [point(t, b.low) for t, b in zip(middles[::-1], run[::-1], strict=True)]
        line = [point(t, b.mean) for t, b in zip(middles, run, strict=True)]
        shapes.append(Tag("polygon", {"class": "band", "points": " ".join(band)}))
        shapes.append(Tag("polyline", {"class": "line", "points": " ".join(line)}))

    labels = [_text(left - 4, y(high), highest, "value")]
    if lowest != highest:
        labels.append(_text(left - 4, y(low), lowest, "value"))
    # The plot's top and bottom lines, and a tick under each time.
    axes = [f"M{left:.1f} {PLOT_TOP}H{PLOT_RIGHT}M{left:.1f} {PLOT_BOTTOM}H{PLOT_RIGHT}"]
    ticks, shape = time_ticks(start, end, zone)
    for tick in ticks:
        text = f"{local(tick, zone):{shape}}"
        half = DIGIT * len(text) / 2
        middle = min(max(x(tick), left + half - 8), CHART_WIDTH - half)
        labels.append(_text(middle, CHART_HEIGHT - 4, text))
        axes.append(f"M{x(tick):.1f} {PLOT_BOTTOM}v3")
    frame = [Tag("path", {"class": "axis", "d": "".join(axes)})]
    shown = f" {unit}" if unit else ""
    first, last = local(start, zone), local(end, zone)
    label = (
        f"{title}: {lowest} to {highest}{shown}, "
        f"{first:%H:%M:%S} to {last:%H:%M:%S} {zone_name(last)}"
    )
    svg = {
        "class": "chart",
        "viewBox": f"0 0 {CHART_WIDTH} {CHART_HEIGHT}",
        "width": f"{CHART_WIDTH}",
        "height": f"{CHART_HEIGHT}",
        "role": "img",
        "aria-label": label,
    }
    return Tag("svg", svg, [*frame, *shapes, *labels])


class ChartCache:
    """
    Charts by station and measurement, redrawn only when what they show
    changed: a reading came (about once an upload), a bucket left the 24
    hours, or the value's unit or precision changed.  A reload redraws
    nothing else.  Holds what the last page showed, no more.
    """

    def __init__(self) -> None:
        self._drawings: dict[tuple[int, str], tuple[tuple, Flattenable]] = {}
        self._used: set[tuple[int, str]] = set()

    def drawing(
        self,
        device_id: int,
        name: str,
        series: SeriesHistory,
        now_ns: int,
        unit: str = "",
        places: int | None = None,
        zone: tzinfo | None = None,
    ) -> Flattenable:
        """The chart of C{series} at C{now_ns}."""
        key = (device_id, name)
        self._used.add(key)
        shown = series.shown(now_ns)
        inputs = (series, series.version, series.width, shown, unit, places, zone)
        drawn = self._drawings.get(key)
        if drawn is None or drawn[0] != inputs:
            svg = draw(series.buckets(now_ns), series.width_ns, name, unit, places, zone)
            drawn = self._drawings[key] = (inputs, svg)
        return drawn[1]

    def forget_unused(self) -> None:
        """Drop drawings the page no longer shows (stations removed)."""
        for key in set(self._drawings) - self._used:
            del self._drawings[key]
        self._used.clear()


def _cell(label: str, *content: Flattenable, numeric: bool = False, css: str = "") -> Tag:
    """A cell, labelled for the phone layout where each cell is a line of its own."""
    classes = {"class": "n" if numeric else css} if numeric or css else {}
    return Tag("td", {**classes, "data-label": label}, list(content))


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


def _row(
    station: StationRecord,
    specs: Mapping[str, ValueSpec],
    now_ns: int,
    charts: ChartCache,
    zone: tzinfo | None,
) -> Tag:
    """A station's row; C{specs}, its profile's values by name, say their precision."""
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
        else tags.span(ago((now_ns - seen) / NANOSECONDS), title=when(seen, zone))
    ]
    if station.peer:
        heard += [tags.br(), _quiet(f"from {peer_host(station.peer)}")]
    readings = []
    for name in [*specs, *(n for n in station.latest if n not in specs)]:
        latest = station.latest.get(name)
        if latest is None:
            continue
        spec = specs.get(name)
        places = None if spec is None else decimals(spec)
        series = station.history.series.get(name)
        drawing = (
            charts.drawing(
                station.device_id, name, series, now_ns, latest.unit, places, zone
            )
            if series is not None
            else ""
        )
        unit = f" {latest.unit}" if latest.unit else ""
        shown = number(latest.value, places)
        value = tags.span(name, " ", tags.strong(shown), unit, class_="v")
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
            _cell("Latest", *(readings or [_quiet("no readings yet")]), css="latest"),
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
        zone: tzinfo | None = None,
        quarantine: tuple[int, int] | None = None,
    ) -> None:
        """
        @param quarantine: the bytes in quarantine and its budget (None:
            not shown).
        """
        super().__init__()
        #: The zone times are shown in; None: the server's local zone.
        self.zone = zone
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
        now = local(self.now_ns, self.zone)
        parts.append(f"updated {now:%Y-%m-%d %H:%M:%S} {zone_label(now)}")
        return tag(parts[0], [(" · ", part) for part in parts[1:]])

    @renderer
    def rows(self, request: IRequest | None, tag: Tag) -> Tag:
        rows = []
        for device_id in sorted(self.stations):
            profile = self.profiles.get(device_id)
            specs = {spec.name: spec for spec in profile.values} if profile else {}
            station = self.stations[device_id]
            rows += ["\n", _row(station, specs, self.now_ns, self.charts, self.zone)]
        self.charts.forget_unused()
        if not rows:
            empty = "No stations described or heard from yet."
            rows = ["\n", tags.tr(tags.td(empty, colspan="8", class_="quiet"))]
        return tag(rows, "\n")

    @renderer
    def times(self, request: IRequest | None, tag: Tag) -> Tag:
        return tag(f"Times are the server's: {zone_label(local(self.now_ns, self.zone))}.")
