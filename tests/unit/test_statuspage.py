"""
The status page: the 24-hour history it charts, and what the page shows,
rendered from the server's memory (and served on the monitoring endpoint).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from html.parser import HTMLParser

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.template import Flattenable, flattenString

from tests.support import reference_packet
from tests.unit.test_monitoring import MonitoringTestCase
from weather.core.decode import decode_packet
from weather.core.devices import DeviceProfile, parse_devices
from weather.core.timing import TimingInputs
from weather.ops.history import (
    BUCKET_NS,
    BUCKETS,
    MAX_SERIES,
    SeriesHistory,
    StationHistory,
)
from weather.ops.stations import StationBook, StationRecord
from weather.ops.statuspage import ChartCache, Drawing, StatusElement, ago, chart
from weather.tools.simulate import StationModel, devices_toml

S = 1_000_000_000
NOW = 1_795_262_400 * S  # 2026-11-21 12:00 UTC


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
) -> bytes:
    """The status page as the monitoring endpoint serves it."""
    page = StatusElement(stations, profiles, now_ns, problems, charts)
    return b"<!DOCTYPE html>\n" + flat(page).encode("utf-8")


class SeriesHistoryTests(SynchronousTestCase):
    def test_bucketsHoldMeanLowHigh(self) -> None:
        series = SeriesHistory()
        start = NOW - 10 * BUCKET_NS
        for i, value in enumerate([1.0, 3.0, 2.0]):
            series.add(start + i * 60 * S, value)
        series.add(start + BUCKET_NS, 7.5)
        (first, second) = series.buckets(NOW)
        self.assertEqual(
            (first.start_ns, first.mean, first.low, first.high, first.count),
            (start, 2.0, 1.0, 3.0, 3),
        )
        self.assertEqual((second.mean, second.count), (7.5, 1))

    def test_onlyTheLastDay(self) -> None:
        """A day later the ring's slots are reused; older readings never enter."""
        series = SeriesHistory()
        for i in range(2 * BUCKETS):
            series.add(NOW - 2 * BUCKETS * BUCKET_NS + i * BUCKET_NS, float(i))
        # The ring holds the newest day; NOW's own bucket is still empty.
        held = series.buckets()
        self.assertEqual(len(held), BUCKETS)
        self.assertEqual(held[0].start_ns, NOW - BUCKETS * BUCKET_NS)
        self.assertEqual(held[0].mean, float(BUCKETS))
        self.assertEqual(held[-1].start_ns, NOW - BUCKET_NS)
        buckets = series.buckets(NOW)
        self.assertEqual(buckets, held[1:])
        series.add(NOW - 3 * BUCKETS * BUCKET_NS, 1e6)  # a replayed old packet
        self.assertEqual(series.buckets(NOW), buckets)
        # Later, with nothing new, the chart empties as the day passes.
        self.assertEqual(
            len(series.buckets(NOW + BUCKETS * BUCKET_NS // 2)), BUCKETS // 2 - 1
        )

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


class PageParser(HTMLParser):
    """The rows, their classes and the charts of a status page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, dict] = {}
        self.row: dict | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag == "tr" and "data-device" in attrs:
            self.row = {"class": attrs.get("class") or "", "charts": [], "text": []}
            self.rows[int(attrs["data-device"])] = self.row
        elif tag == "svg" and self.row is not None:
            self.row["charts"].append(attrs["aria-label"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag) -> None:
        if tag == "tr":
            self.row = None
        self._in_title = False

    def handle_data(self, data) -> None:
        if self._in_title and self.row is None:
            self.title += data
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
        self.assertIn("from 192.0.2.1:4000", text)
        latest = book.get(1).latest
        self.assertIn(f"temperature {latest['temperature'].value:.1f} °C", text)
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

    def test_chartGapsAndScale(self) -> None:
        series = SeriesHistory()
        for hour in (1, 2, 10):
            series.add(NOW - hour * 3600 * S, float(hour))
        drawing = flat(chart(Drawing(series, "t"), NOW))
        self.assertIn('aria-label="t: last 24 h, 1 to 10"', drawing)
        # Three separate buckets: three marks, no line joining across the gaps.
        self.assertEqual(drawing.count("<rect"), 3)
        self.assertNotIn("<polyline", drawing)
        xs = [float(x) for x in re.findall(r'<rect class="band" x="([\d.]+)"', drawing)]
        self.assertEqual(xs, [0.1, 32.1, 36.1])
        # The view box ends with NOW's bucket: 24 h of quarter hours.
        self.assertIn('viewBox="-55 0 96 40"', drawing)
        self.assertEqual(flat(chart(Drawing(SeriesHistory(), "t"), NOW)), "")

    def test_hugeAndFlatValues(self) -> None:
        series = SeriesHistory()
        series.add(NOW - 3600 * S, 1e300)
        series.add(NOW - 1800 * S, 1e300)
        drawing = flat(chart(Drawing(series, "big"), NOW))
        self.assertNotIn("nan", drawing)
        self.assertNotIn("inf", drawing)

    def test_drawnOncePerChange(self) -> None:
        """A reload redraws nothing; a new reading redraws that series only."""
        book, profiles = simulated_book(NOW, {})
        charts = ChartCache()
        render_status(book, profiles, NOW, charts=charts)
        first = {k: id(d) for k, d in charts._drawings.items()}
        self.assertEqual(len(first), 9)
        render_status(book, profiles, NOW + 60 * S, charts=charts)
        self.assertEqual({k: id(d) for k, d in charts._drawings.items()}, first)
        book.get(2).history.add("light", NOW, 5.0)
        render_status(book, profiles, NOW + 120 * S, charts=charts)
        changed = {k for k, d in charts._drawings.items() if id(d) != first[k]}
        self.assertEqual(changed, {(2, "light")})
        # A station no longer shown is forgotten.
        render_status(StationBook(), {}, NOW, charts=charts)
        self.assertEqual(charts._drawings, {})

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
        self.assertEqual(len(page.rows[1]["charts"]), 3)
        # Two hours later, silent: overdue.
        self.reactor.advance(7200)
        _, body = self.get("/")
        self.assertIn(b'class="overdue"', body)
