"""
The status page: the 24-hour history it charts, and what the page shows,
rendered from the server's memory (and served on the monitoring endpoint).
"""

from __future__ import annotations

import io
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta, timezone, tzinfo
from html.parser import HTMLParser
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.template import Flattenable, flattenString

from tests.support import reference_packet, unavailable
from tests.unit.test_monitoring import MonitoringTestCase
from weather.core.decode import decode_packet, timed_device
from weather.core.devices import DeviceProfile, ValueSpec, parse_devices
from weather.core.packet import HEADER
from weather.core.timing import StationState, TimingInputs, first_state
from weather.ops.history import (
    BUCKETS,
    MAX_SERIES,
    SeriesHistory,
    StationHistory,
    fitting_width,
)
from weather.ops.stations import LatestReading, StationBook, StationRecord
from weather.ops.statuspage import (
    PLOT_RIGHT,
    ChartCache,
    StatusElement,
    ago,
    decimals,
    draw,
    number,
    peer_host,
    runs,
    time_ticks,
    when,
)
from weather.tools.simulate import Simulation, StationModel, Upload, devices_toml

S = 1_000_000_000
NOW = 1_795_262_400 * S  # 2026-11-21 12:00 UTC
BERLIN = "Europe/Berlin"


def zone(name: str) -> tzinfo:
    """A zone of the system's time zone database (Debian's tzdata)."""
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        unavailable(f"time zone {name} unknown: apt-get install tzdata")


def flat(root: Flattenable) -> str:
    """C{root} flattened at once: nothing on the status page waits."""
    result: list[bytes | Failure] = []
    flattenString(None, root).addBoth(result.append)
    (done,) = result
    if isinstance(done, Failure):
        done.raiseException()
    return done.decode("utf-8")


def render_status(
    stations: Iterable[StationRecord],
    profiles: Mapping[int, DeviceProfile],
    now_ns: int,
    problems: Iterable[str] = (),
    charts: ChartCache | None = None,
    zone: tzinfo | None = timezone.utc,
) -> bytes:
    """The status page as the monitoring endpoint serves it (in UTC unless told)."""
    page = StatusElement(stations, profiles, now_ns, problems, charts, zone=zone)
    return b"<!DOCTYPE html>\n" + flat(page).encode("utf-8")


def filled(readings: Iterable[tuple[int, float]]) -> SeriesHistory:
    series = SeriesHistory()
    for time_ns, value in readings:
        series.add(time_ns, value)
    return series


class SeriesHistoryTests(SynchronousTestCase):
    def test_bucketsHoldMeanLowHigh(self) -> None:
        """A day of readings: quarter hours, each its mean, lowest and highest."""
        series = filled([(NOW - 23 * 3600 * S, 0.0)])
        start = NOW - 10 * 900 * S
        for i, value in enumerate([1.0, 3.0, 2.0]):
            series.add(start + i * 60 * S, value)
        self.assertEqual(series.width, 900)
        series.add(start + 900 * S, 7.5)
        (_, first, second) = series.buckets(NOW)
        self.assertEqual(
            (first.start_ns, first.mean, first.low, first.high, first.count),
            (start, 2.0, 1.0, 3.0, 3),
        )
        self.assertEqual((second.mean, second.count), (7.5, 1))

    def test_widthFromTheReadingsSpan(self) -> None:
        """
        The narrowest buckets that hold the readings' span: the README's demo
        (records 2 s apart for 2 minutes) in 2-second buckets, one hourly
        upload (30 records 2 minutes apart) in minutes, a day in quarter hours.
        """
        for step, count, width in [(2, 60, 2), (120, 30, 60), (120, 720, 900), (1, 1, 1)]:
            series = filled((NOW + i * step * S, float(i)) for i in range(count))
            self.assertEqual(series.width, width)
            buckets = series.buckets()
            self.assertEqual(sum(b.count for b in buckets), count)
            self.assertLessEqual(len(buckets), BUCKETS)
        self.assertEqual(fitting_width(NOW, NOW + 95 * S), 1)
        self.assertEqual(fitting_width(NOW, NOW + 96 * S), 2)
        self.assertEqual(fitting_width(NOW, NOW + 2 * 86400 * S), 900)

    def test_widenedKeepsWhatItHeld(self) -> None:
        """
        Readings later than the buckets reach widen them: what was held is
        merged into the wider buckets, nothing lost.
        """
        series = filled((NOW + i * 2 * S, float(i % 7)) for i in range(60))
        self.assertEqual(series.width, 2)
        version = series.version
        series.add(NOW + 3600 * S, 100.0)
        self.assertEqual(series.width, 60)
        self.assertGreater(series.version, version)
        first, second, last = series.buckets(NOW + 3601 * S)
        self.assertEqual((first.start_ns, first.count), (NOW, 30))
        self.assertEqual((second.start_ns, second.count), (NOW + 60 * S, 30))
        self.assertEqual((first.low, first.high, second.high), (0.0, 6.0, 6.0))
        self.assertEqual(first.mean, sum(i % 7 for i in range(30)) / 30)
        self.assertEqual((last.start_ns, last.mean), (NOW + 3600 * S, 100.0))
        # An older reading within the buckets' reach joins; the span grows.
        series.add(NOW - 3 * 3600 * S, -1.0)
        self.assertEqual(series.width, 300)
        self.assertEqual(series.buckets(NOW + 3601 * S)[0].mean, -1.0)
        self.assertEqual(sum(b.count for b in series.buckets(NOW + 3601 * S)), 62)

    def test_onlyTheLastDay(self) -> None:
        """A day later the ring's slots are reused; older readings never enter."""
        series = SeriesHistory()
        bucket = 900 * S
        for i in range(2 * BUCKETS):
            series.add(NOW - 2 * BUCKETS * bucket + i * bucket, float(i))
        # The ring holds the newest day; NOW's own bucket is still empty.
        held = series.buckets()
        self.assertEqual(len(held), BUCKETS)
        self.assertEqual(held[0].start_ns, NOW - BUCKETS * bucket)
        self.assertEqual(held[0].mean, float(BUCKETS))
        self.assertEqual(held[-1].start_ns, NOW - bucket)
        buckets = series.buckets(NOW)
        self.assertEqual(buckets, held[1:])
        series.add(NOW - 3 * BUCKETS * bucket, 1e6)  # a replayed old packet
        self.assertEqual(series.buckets(NOW), buckets)
        # Later, with nothing new, the chart empties as the day passes.
        self.assertEqual(len(series.buckets(NOW + BUCKETS * bucket // 2)), BUCKETS // 2 - 1)

    def test_aDemoLongAgo(self) -> None:
        """Narrow buckets leave the chart too once they are a day old."""
        series = filled((NOW + i * 2 * S, 1.0) for i in range(60))
        self.assertEqual(len(series.buckets(NOW + 86399 * S)), 60)
        self.assertEqual(len(series.buckets(NOW + 86401 * S)), 59)
        self.assertEqual(series.buckets(NOW + 86520 * S), [])

    def test_notFiniteIsNotCharted(self) -> None:
        series = SeriesHistory()
        series.add(NOW, math.nan)
        series.add(NOW, math.inf)
        self.assertEqual(series.buckets(NOW + 1), [])

    def test_seriesPerStationBounded(self) -> None:
        history = StationHistory()
        for i in range(MAX_SERIES + 5):
            history.add(f"value{i}", NOW, 1.0)
        self.assertEqual(len(history.series), MAX_SERIES)

    def test_packetCutForEachWidth(self) -> None:
        """A packet's values go to series of different widths, each its own way."""
        history = StationHistory()
        history.add("old", NOW - 3600 * S, 5.0)
        times = [NOW + i * 2 * S for i in range(30)]
        history.add_packet(["old", "new"], times, [[1.0] * 30, [2.0] * 30])
        old, new = history.series["old"], history.series["new"]
        self.assertEqual((old.width, new.width), (60, 1))
        self.assertEqual([b.count for b in old.buckets()], [1, 30])
        self.assertEqual([b.count for b in new.buckets()], [1] * 30)


def simulated_book(now_ns: int, silent_hours: dict[int, float]) -> tuple[StationBook, dict]:
    """A day of uploads of simulated stations 1..3 decoded into a L{StationBook}."""
    profiles = parse_devices(devices_toml([1, 2, 3]))
    book = StationBook()
    for device in (1, 2, 3):
        station = StationModel(device, drift=0.01)
        last = now_ns / S - silent_hours.get(device, 0) * 3600
        count = int(24 * 3600 // station.true_wake_every)
        previous = None
        for k in range(count, -1, -1):
            t = last - k * station.true_wake_every
            records = station.wake(t)
            station.delivered(records)
            arrival = int(t * S)
            inputs = TimingInputs.since(previous, arrival)
            decoded = decode_packet(station.packet(records), arrival, inputs, profiles)
            book.packet_decoded(decoded, f"192.0.2.{device}:4000", arrival, previous)
            previous = arrival
    return book, profiles


def demo_book(start_ns: int) -> tuple[StationBook, Mapping[int, DeviceProfile], int, str]:
    """
    The README's demo, C{weather simulate --stations 3 --packets 20
    --wake-every 6 --measure-every 2 --miss 0.1} from C{start_ns}, on a
    fake clock, each packet decoded into a L{StationBook} as it is written:
    the book, the devices file's profiles, the time the last packet came
    and what the simulator printed.
    """
    clock = Clock()
    clock.advance(start_ns / S)
    profiles = parse_devices(devices_toml([1, 2, 3]))
    book = StationBook()
    states: dict[int, StationState] = {}

    def connect(upload: Upload):
        # Timed as the server times them, from each station's state.
        packet = b"".join(upload.pieces)
        device = timed_device(packet)
        arrival = round(clock.seconds() * S)
        state = states.get(device)
        inputs = TimingInputs() if state is None else state.inputs(arrival, None, None)
        decoded = decode_packet(packet, arrival, inputs, profiles)
        book.packet_decoded(decoded, f"127.0.0.1:{40000 + len(states)}", arrival, None)
        records = packet[HEADER.size :]
        states[device] = (
            first_state(records, arrival, None, None)
            if state is None
            else state.after(decoded.timing, records, arrival, None, None)
        )
        upload.written = True
        upload.done.callback("sent")
        return succeed(upload)

    stations = [StationModel(d, wake_every=6, measure_every=2) for d in (1, 2, 3)]
    out = io.StringIO()
    done = Simulation(clock, connect, stations, 20, out, miss=0.1).run()
    while not done.called:
        clock.advance(min(c.getTime() for c in clock.getDelayedCalls()) - clock.seconds())
    return book, profiles, max(s.arrival_ns for s in states.values()), out.getvalue()


class PageParser(HTMLParser):
    """
    The rows of a status page, their classes and text, and their charts:
    each chart's label, the texts on its axes and the x extent of its lines.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, dict] = {}
        self.row: dict | None = None
        self.chart: dict | None = None
        self.title = ""
        self.summary = ""
        self._in: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag == "tr" and "data-device" in attrs:
            self.row = {"class": attrs.get("class") or "", "charts": [], "text": []}
            self.row["svgs"] = []
            self.rows[int(attrs["data-device"])] = self.row
        elif tag == "svg" and self.row is not None:
            self.row["charts"].append(attrs["aria-label"])
            self.chart = {"labels": [], "xs": [], "runs": 0}
            self.row["svgs"].append(self.chart)
        elif tag in ("polyline", "rect") and self.chart is not None:
            self.chart["runs"] += 1
            if tag == "polyline":
                self.chart["xs"] += [
                    float(p.split(",")[0]) for p in attrs["points"].split()
                ]
            else:
                x, width = float(attrs["x"]), float(attrs["width"])
                self.chart["xs"] += [x, x + width]
        elif tag in ("title", "text"):
            self._in = tag
        elif tag == "p" and attrs.get("class") == "summary":
            self._in = "summary"

    def handle_endtag(self, tag) -> None:
        if tag == "tr":
            self.row = None
        elif tag == "svg":
            self.chart = None
        elif tag in ("title", "text", "p"):
            self._in = None

    def handle_data(self, data) -> None:
        if self._in == "title" and self.row is None:
            self.title += data
        elif self._in == "summary":
            self.summary += data
        elif self.chart is not None:
            if self._in == "text":
                self.chart["labels"].append(data)
        elif self.row is not None and data.strip():
            self.row["text"].append(data.strip())


class StatusPageTests(SynchronousTestCase):
    def parse(self, page: bytes) -> PageParser:
        parser = PageParser()
        parser.feed(page.decode("utf-8"))
        return parser

    def test_rowsReadingsCharts(self) -> None:
        book, profiles = simulated_book(NOW, {3: 2})
        page = self.parse(render_status(book, profiles, NOW))
        self.assertEqual(sorted(page.rows), [1, 2, 3])
        one = page.rows[1]
        text = " ".join(one["text"])
        self.assertIn("station-1", text)
        self.assertIn("just now", text)
        self.assertIn("from 192.0.2.1", text)
        self.assertNotIn(":4000", text)
        latest = book.get(1).latest
        self.assertIn(f"temperature {latest['temperature'].value:.2f} °C", text)
        self.assertRegex(text, r"light \d+ lx")
        self.assertEqual(
            [c.split(":")[0] for c in one["charts"]], ["light", "humidity", "temperature"]
        )
        self.assertIn("121.2 s vs 120 s (+1.0 %)", text)
        self.assertEqual(one["class"], "")
        for quiet in ("irregular", "repeated", "lost", "sensor failures"):
            self.assertNotIn(quiet, text)

    def test_whatTheTimestampRuleCounted(self) -> None:
        """Irregular packets, repeated and lost records and sensor failures, when any."""
        profiles = parse_devices(devices_toml([1]))
        station = StationRecord(
            1,
            tags=profiles[1].tags,
            packets=3,
            records=120,
            missed_uploads=1,
            records_repeated=10,
            records_lost=92,
            irregular_packets=1,
            sensor_failures={"light": 0, "humidity": 2, "temperature": 3},
        )
        page = self.parse(render_status([station], profiles, NOW))
        text = " ".join(page.rows[1]["text"])
        self.assertIn("3 1 irregular 120 10 repeated 92 lost on the station", text)
        self.assertIn("sensor failures: humidity 2, temperature 3", text)

    def test_overdueStandsOut(self) -> None:
        """No packet for more than 1.5 wake intervals: marked, counted, titled."""
        book, profiles = simulated_book(NOW, {3: 2})
        page = self.parse(render_status(book, profiles, NOW))
        self.assertEqual(page.rows[3]["class"], "overdue")
        self.assertIn("overdue", page.rows[3]["text"])
        self.assertIn("2 h ago", page.rows[3]["text"])
        self.assertEqual(page.title, "weather: 1 of 3 stations overdue")
        # An hour and a half after its last packet, not yet overdue.
        book, profiles = simulated_book(NOW, {3: 1.4})
        self.assertEqual(
            self.parse(render_status(book, profiles, NOW)).rows[3]["class"], ""
        )

    def test_describedButNeverSeen(self) -> None:
        profiles = parse_devices(devices_toml([7]))
        page = self.parse(render_status(StationBook(), profiles, NOW))
        self.assertIn("never", page.rows[7]["text"])
        self.assertIn("no readings yet", page.rows[7]["text"])
        self.assertEqual(page.rows[7]["class"], "")

    def test_escapesWhatStationsAndFilesSay(self) -> None:
        profiles = parse_devices(
            devices_toml([1]).replace('"station-1"', '"<script>x</script>"')
        )
        page = render_status(StationBook(), profiles, NOW, ["InfluxDB <down>"])
        self.assertNotIn(b"<script>", page)
        self.assertIn(b"&lt;script&gt;", page)
        self.assertIn(b"InfluxDB &lt;down&gt;", page)

    def test_tagsFromTheDevicesFileAreText(self) -> None:
        """Markup and ampersands in a station's tags show as written, never as markup."""
        place = '<script>alert("a&b")</script>'
        profiles = parse_devices(
            devices_toml([1]).replace(
                'place = "station-1"', f"place = '{place}', owner = 'Q&A <lab>'"
            )
        )
        page = render_status(StationBook(), profiles, NOW)
        self.assertNotIn(b"<script>", page)
        self.assertNotIn(b"<lab>", page)
        self.assertIn(b'&lt;script&gt;alert("a&amp;b")&lt;/script&gt;', page)
        self.assertIn(b"owner=Q&amp;A &lt;lab&gt;", page)
        text = self.parse(page).rows[1]["text"]
        self.assertEqual(text[:3], ["1", place, "owner=Q&A <lab>"])

    def test_demoChartsShowSomething(self) -> None:
        """
        The README's demo (two minutes of records 2 s apart): every chart
        draws a line across the plot, its lowest and highest value on the
        left, round times below.
        """
        book, profiles, last, _ = demo_book(NOW)
        page = self.parse(render_status(book, profiles, last + S))
        for row in page.rows.values():
            self.assertEqual(len(row["svgs"]), 3)
            for label, svg in zip(row["charts"], row["svgs"], strict=True):
                self.assertEqual(svg["runs"], 1, label)
                self.assertGreater(max(svg["xs"]) - min(svg["xs"]), 0.9 * (PLOT_RIGHT - 48))
                values, times = svg["labels"][:2], svg["labels"][2:]
                self.assertLess(float(values[1]), float(values[0]), label)
                self.assertGreaterEqual(len(times), 3, label)
                self.assertTrue(
                    all(re.fullmatch(r"(11:59|12:0[0-2])(:[0-5]\d)?", t) for t in times)
                )
                self.assertRegex(
                    label, r": [\d.]+ to [\d.]+ .*, 11:59:5\d to 12:0[12]:\d\d UTC$"
                )

    def test_draw(self) -> None:
        """Hourly readings, then silence: a line, a gap, a lone mark."""
        series = filled((NOW - hours * 3600 * S, float(hours)) for hours in (1, 2, 3, 10))
        self.assertEqual(series.width, 600)
        drawing = flat(
            draw(series.buckets(NOW), series.width_ns, "t", "°C", 1, timezone.utc)
        )
        self.assertIn('aria-label="t: 1.0 to 10.0 °C, 02:00:00 to 11:10:00 UTC"', drawing)
        self.assertEqual(drawing.count("<rect"), 1)
        self.assertEqual(drawing.count("<polyline"), 1)
        texts = re.findall(r"<text[^>]*>([^<]*)</text>", drawing)
        self.assertEqual(texts, ["10.0", "1.0", "03:00", "06:00", "09:00"])
        self.assertEqual(flat(draw([], series.width_ns, "t", "", 0, None)), "")

    def test_runs(self) -> None:
        """Records every other bucket make one line; twice the usual gap breaks it."""
        series = filled((NOW + i * 120 * S, 1.0) for i in range(30))
        self.assertEqual(series.width, 60)
        (run,) = runs(series.buckets(), series.width_ns)
        self.assertEqual(len(run), 30)
        series.add(NOW + 29 * 120 * S + 5 * 60 * S, 2.0)
        self.assertEqual([len(r) for r in runs(series.buckets(), series.width_ns)], [30, 1])

    def test_timeTicks(self) -> None:
        """At most 4 labels at round local times, with seconds only when needed."""
        berlin, kolkata = zone(BERLIN), zone("Asia/Kolkata")

        def labels(start: int, seconds: int, where: tzinfo) -> list[str]:
            ticks, shape = time_ticks(start, start + seconds * S, where)
            return [
                when(t, where)[11:] if shape.endswith("%S") else when(t, where)[11:16]
                for t in ticks
            ]

        self.assertEqual(
            labels(NOW + 7 * S, 120, berlin),
            ["13:00:30 CET", "13:01:00 CET", "13:01:30 CET", "13:02:00 CET"],
        )
        self.assertEqual(
            labels(NOW - 86400 * S, 86400, berlin), ["18:00", "00:00", "06:00", "12:00"]
        )
        # Round hours of a zone half an hour off UTC.
        self.assertEqual(
            labels(NOW - 3 * 3600 * S, 3 * 3600, kolkata), ["15:00", "16:00", "17:00"]
        )
        # Across the change to summer time each label is its own local time.
        change = 1_774_746_000 * S  # 2026-03-29 01:00 UTC: 02:00 CET is 03:00 CEST
        self.assertEqual(
            labels(change - 3 * 3600 * S, 6 * 3600, berlin), ["00:00", "03:00", "05:00"]
        )

    def test_hugeAndFlatValues(self) -> None:
        series = filled([(NOW - 3600 * S, 1e300), (NOW - 1800 * S, 1e300)])
        drawing = flat(draw(series.buckets(NOW), series.width_ns, "big", "", None, None))
        self.assertNotIn("nan", drawing)
        self.assertNotIn("inf", drawing)
        self.assertEqual(re.findall(r"<text[^>]*>([^<]*)</text>", drawing)[0], "1e+300")
        flat_series = filled((NOW + i * S, 5.0) for i in range(10))
        drawing = flat(draw(flat_series.buckets(), flat_series.width_ns, "f", "", 0, None))
        self.assertEqual(
            re.findall(r'<polyline class="line" points="([^"]*)"', drawing)[0].count(
                ",26.0"
            ),
            10,
        )

    def test_drawnOncePerChange(self) -> None:
        """
        A reload redraws nothing; a new reading redraws that series only, and
        a bucket leaving the 24 hours all of them.
        """
        book, profiles = simulated_book(NOW, {})
        charts = ChartCache()

        def drawn() -> dict:
            return {k: id(svg) for k, (_, svg) in charts._drawings.items()}

        render_status(book, profiles, NOW, charts=charts)
        first = drawn()
        self.assertEqual(len(first), 9)
        render_status(book, profiles, NOW + 60 * S, charts=charts)
        self.assertEqual(drawn(), first)
        book.get(2).history.add("light", NOW, 5.0)
        render_status(book, profiles, NOW + 120 * S, charts=charts)
        changed = {k for k, d in drawn().items() if d != first[k]}
        self.assertEqual(changed, {(2, "light")})
        before = drawn()
        render_status(book, profiles, NOW + 900 * S, charts=charts)
        self.assertFalse(set(drawn().values()) & set(before.values()))
        # A station no longer shown is forgotten.
        render_status(StationBook(), {}, NOW, charts=charts)
        self.assertEqual(charts._drawings, {})

    def test_localTime(self) -> None:
        """Times in the zone given, named, with its offset in the summary."""
        book, profiles = simulated_book(NOW, {3: 2})
        page = render_status(book, profiles, NOW, zone=zone(BERLIN))
        parsed = self.parse(page)
        self.assertIn("updated 2026-11-21 13:00:00 CET (UTC+01:00)", parsed.summary)
        self.assertIn(b'title="2026-11-21 11:00:00 CET"', page)
        self.assertIn("Times are the server's: CET (UTC+01:00).", page.decode())
        labels = parsed.rows[1]["svgs"][0]["labels"]
        self.assertEqual(labels[2:], ["18:00", "00:00", "06:00", "12:00"])
        # A zone without a name is its offset.
        india = timezone(timedelta(hours=5, minutes=30))
        parsed = self.parse(render_status(book, profiles, NOW, zone=india))
        self.assertIn("updated 2026-11-21 17:30:00 UTC+05:30 ", parsed.summary + " ")
        self.assertIn(
            "updated 2026-11-21 12:00:00 UTC",
            self.parse(render_status(book, profiles, NOW)).summary,
        )

    def test_serversZoneByDefault(self) -> None:
        """Without a zone, the server's local zone (TZ), read when the page is made."""
        book, profiles = simulated_book(NOW, {})
        saved = os.environ.get("TZ")

        def restore() -> None:
            if saved is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = saved
            time.tzset()

        self.addCleanup(restore)
        for tz, shown in [
            ("IST-5:30", "17:30:00 IST (UTC+05:30)"),
            ("UTC0", "12:00:00 UTC"),
        ]:
            os.environ["TZ"] = tz
            time.tzset()
            summary = self.parse(render_status(book, profiles, NOW, zone=None)).summary
            self.assertIn(f"updated 2026-11-21 {shown}", summary)

    def test_precision(self) -> None:
        """As many decimals as the profile gives a value, no more, no fewer."""
        cases = [
            (ValueSpec("p", scale=0.1), 1),
            (ValueSpec("p", scale=0.25), 2),
            (ValueSpec("p", scale=0.01, offset=-40), 2),
            (ValueSpec("p"), 0),
            (ValueSpec("p", scale=10), 0),
            (ValueSpec("p", offset=0.5), 1),
            (ValueSpec("p", scale=1 / 3), 1),
            (ValueSpec("p", "u16", "si7021_temperature"), 2),
            (ValueSpec("p", "u16", "si7021_humidity"), 2),
            (ValueSpec("p", "u16", "si7021_humidity", scale=10), 1),
            (ValueSpec("p", "u16", "si7021_humidity", scale=100), 0),
            (ValueSpec("p", "f32"), None),
        ]
        self.assertEqual([decimals(spec) for spec, _ in cases], [d for _, d in cases])
        self.assertEqual(
            [
                number(v, d)
                for v, d in [
                    (1012.9000000000001, 1),
                    (1013.2, 1),
                    (1013.0, 1),
                    (-0.04, 1),
                    (21.347, 2),
                    (129.0, 0),
                    (math.nan, 1),
                ]
            ],
            ["1012.9", "1013.2", "1013.0", "0.0", "21.35", "129", "NaN"],
        )
        self.assertEqual(
            [number(v) for v in (0.10000000149011612, 1013.25, 1e8)],
            ["0.1", "1013.25", "100000000"],
        )

    def test_pressureAtItsPrecision(self) -> None:
        """A scale of 0.1 shows one decimal: 1013.2 hPa, not 1013."""
        profiles = parse_devices(
            '[devices.5]\ntags = { place = "roof" }\n'
            'values = [{ name = "pressure", scale = 0.1, unit = "hPa" }]\n'
        )
        station = StationRecord(5, tags=profiles[5].tags, last_seen_ns=NOW)
        for i, code in enumerate([10132, 10129, 10140]):
            station.history.add("pressure", NOW - (2 - i) * 60 * S, code * 0.1)
        station.latest["pressure"] = LatestReading(1012.9000000000001, NOW, "hPa")
        page = self.parse(render_status([station], profiles, NOW))
        text = " ".join(page.rows[5]["text"])
        self.assertIn("pressure 1012.9 hPa", text)
        self.assertEqual(page.rows[5]["svgs"][0]["labels"][:2], ["1014.0", "1012.9"])

    def test_peerHost(self) -> None:
        """The station's address without its ephemeral port."""
        self.assertEqual(
            [
                peer_host(p)
                for p in (
                    "192.0.2.1:40123",
                    "[2001:db8::1]:40123",
                    "[::ffff:192.0.2.7]:40123",
                    "station.example:40123",
                    "/run/weather.sock",
                    "2001:db8::1",
                    "",
                )
            ],
            [
                "192.0.2.1",
                "2001:db8::1",
                "192.0.2.7",
                "station.example",
                "/run/weather.sock",
                "2001:db8::1",
                "",
            ],
        )

    def test_ago(self) -> None:
        self.assertEqual(
            [ago(s) for s in (3, 45, 720, 3 * 3600 + 300, 50 * 3600, -5)],
            [
                "just now",
                "45 s ago",
                "12 min ago",
                "3 h 5 min ago",
                "2 d 2 h ago",
                "in the future",
            ],
        )


class ServedPageTests(MonitoringTestCase):
    def test_clockStepsShown(self) -> None:
        """Wall-clock steps the listener counted are on the page and in /health."""
        self.service.startService()
        _, body = self.get("/")
        self.assertNotIn(b"wall-clock steps", body)
        self.service.listener.factory.stats.clock_steps += 2
        _, body = self.get("/")
        self.assertIn(b"2 wall-clock steps", body)

    def test_pageFromTheServersMemory(self) -> None:
        """A packet sent to the server shows on / at once, InfluxDB or not."""
        self.service.startService()
        self.send(reference_packet(30))
        response, body = self.get("/")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"]
        )
        page = PageParser()
        page.feed(body.decode())
        self.assertEqual(list(page.rows), [1])
        text = " ".join(page.rows[1]["text"])
        self.assertIn("balcony", text)
        self.assertIn("light 129 lx", text)
        self.assertIn("just now", text)
        self.assertIn("from 192.0.2.7", text)
        self.assertNotIn("40123", text)
        self.assertEqual(len(page.rows[1]["charts"]), 3)
        # Two hours later, silent: overdue.
        self.reactor.advance(7200)
        _, body = self.get("/")
        self.assertIn(b'class="overdue"', body)
