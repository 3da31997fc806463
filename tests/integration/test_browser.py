"""
The status page in a real browser: Debian's chromium, headless, loads it from
a running server fed by the simulator, and the test reads what it shows and
how wide it lays out, on a desk and on a phone (390 px).

Under CI (C{CI=true}) a missing chromium fails the test instead of skipping
it.  C{WEATHER_SCREENSHOT=path} keeps a screenshot of the README's demo (the
one in C{docs/status-page.png} was made so).
"""

from __future__ import annotations

import html
import io
import os
import re
import shutil

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue

from tests.integration.influxd import free_port
from tests.integration.test_integration import InfluxTestCase
from tests.support import unavailable
from tests.unit.test_statuspage import (
    NOW,
    PageParser,
    S,
    demo_book,
    render_status,
    simulated_book,
    zone,
)
from weather.tools.simulate import Simulation, StationModel, tcp_connector


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    unavailable("chromium is not installed (apt-get install chromium)")


def chromium_args(profile: str, *args: str) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]


#: Widths the page must fit without sideways scrolling: a phone, a desk.
PHONE, DESK = 390, 1300


def measuring_page(page: str, width: int) -> str:
    """
    A page that shows C{page} in a frame C{width} CSS pixels wide and, once
    loaded, writes how wide its content is into C{data-scroll-width}: a
    headless window cannot be made narrower than 500 pixels, a frame can.
    """
    return (
        '<!DOCTYPE html><html><body style="margin:0">'
        f'<iframe id="page" style="border:0;width:{width}px;height:844px" '
        f'srcdoc="{html.escape(page, quote=True)}"></iframe><script>\n'
        "window.onload = function () {\n"
        '  var shown = document.getElementById("page").contentDocument;\n'
        "  document.body.setAttribute(\n"
        '    "data-scroll-width", shown.scrollingElement.scrollWidth);\n'
        "};\n</script></body></html>"
    )


class BrowserTests(InfluxTestCase):
    timeout = 120

    def setUp(self) -> None:
        self.chromium = find_chromium()
        super().setUp()

    @inlineCallbacks
    def browse(self, url: str, *args: str):
        """Chromium's rendered DOM of C{url} (the reactor keeps serving meanwhile)."""
        out, err, code = yield getProcessOutputAndValue(
            self.chromium,
            chromium_args(self.mktemp(), *args, "--dump-dom", url),
            env=dict(os.environ),
        )
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        return out.decode("utf-8")

    @inlineCallbacks
    def scroll_width(self, page: str, width: int):
        """How wide C{page}'s content lays out in a window C{width} pixels wide."""
        path = self.mktemp() + ".html"
        with open(path, "w", encoding="utf-8") as f:
            f.write(measuring_page(page, width))
        dom = yield self.browse("file://" + os.path.abspath(path))
        found = re.search(r'data-scroll-width="(\d+)"', dom)
        self.assertIsNotNone(found, dom[-2000:])
        return int(found.group(1))

    @inlineCallbacks
    def assertFits(self, page: str):
        """No sideways scrolling, on a phone or a desk."""
        for width in (PHONE, DESK):
            self.assertLessEqual((yield self.scroll_width(page, width)), width)

    @inlineCallbacks
    def test_liveServerFedBySimulator(self):
        metrics_port = free_port()
        service, port = self.start_simulated_fleet_server(
            [1, 2, 3], "--metrics-port", str(metrics_port)
        )
        # Stations 1 and 2 upload hourly; station 3 every 2 s, and then
        # falls silent: after 3 s it is overdue.
        stations = [
            StationModel(1),
            StationModel(2, drift=0.01),
            StationModel(3, wake_every=2, measure_every=1),
        ]
        out = io.StringIO()
        simulation = Simulation(
            reactor, tcp_connector(reactor, "127.0.0.1", port), stations, 1, out
        )
        totals = yield simulation.run()
        self.assertEqual(totals.packets, 3)
        for _ in range(500):
            if service.pipeline.stats.packets_accepted == 3:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        else:
            self.fail(f"3 packets not accepted within 5 s: {service.pipeline.stats}")
        yield deferLater(reactor, 3.2, lambda: None)

        shown = yield self.browse(f"http://127.0.0.1:{metrics_port}/")
        page = PageParser()
        page.feed(shown)
        self.assertEqual(sorted(page.rows), [1, 2, 3])
        self.assertEqual(
            {d: row["class"] for d, row in page.rows.items()}, {1: "", 2: "", 3: "overdue"}
        )
        self.assertEqual(page.title, "weather: 1 of 3 stations overdue")
        # Each station's latest values are what the simulator says it sent
        # last, at the precision it prints them (0.01 for the SI7021's).
        last_sent: dict[int, list[str]] = {}
        device = 0
        for line in out.getvalue().splitlines():
            if line.startswith("station "):
                device = int(line.split()[1].rstrip(":"))
            else:
                last_sent[device] = line.split()
        for device, row in page.rows.items():
            text = " ".join(row["text"])
            sent = last_sent[device]
            self.assertIn(f"station-{device}", text)
            self.assertIn(f"light {sent[2]} lx", text)
            self.assertIn(f"humidity {sent[5]} %", text)
            self.assertIn(f"temperature {sent[8]} °C", text)
            # The host, not the station's ephemeral port.
            self.assertIn("from 127.0.0.1", text)
            self.assertNotRegex(text, r"127\.0\.0\.1:")
            self.assertEqual(len(row["charts"]), 3)
        self.assertIn("overdue", page.rows[3]["text"])
        yield self.assertFits(shown)

    @inlineCallbacks
    def test_aSimulatedDay(self):
        """A day of three stations, one silent for two hours, on a phone and a desk."""
        book, profiles = simulated_book(NOW, {3: 2})
        page = PageParser()
        rendered = render_status(book, profiles, NOW, zone=zone("Europe/Berlin"))
        path = self.mktemp() + ".html"
        with open(path, "wb") as f:
            f.write(rendered)
        page.feed((yield self.browse("file://" + os.path.abspath(path))))
        self.assertEqual(sorted(page.rows), [1, 2, 3])
        self.assertEqual(page.rows[3]["class"], "overdue")
        self.assertEqual(sum(len(r["charts"]) for r in page.rows.values()), 9)
        yield self.assertFits(rendered.decode("utf-8"))

    @inlineCallbacks
    def test_theReadmeDemo(self):
        """
        The README's demo (records 2 s apart for two minutes) as the server
        shows it just after: charts with lines, on a phone and a desk.  Its
        screenshot (server in Berlin) is docs/status-page.png.
        """
        book, profiles, last, _ = demo_book(NOW)
        rendered = render_status(book, profiles, last + 2 * S, zone=zone("Europe/Berlin"))
        yield self.assertFits(rendered.decode("utf-8"))
        path = self.mktemp() + ".html"
        with open(path, "wb") as f:
            f.write(rendered)
        url = "file://" + os.path.abspath(path)
        page = PageParser()
        page.feed((yield self.browse(url)))
        self.assertEqual(sorted(page.rows), [1, 2, 3])
        for row in page.rows.values():
            self.assertEqual([svg["runs"] for svg in row["svgs"]], [1, 1, 1])
        # trial runs in _trial_temp: a relative path is the caller's.
        wanted = os.environ.get("WEATHER_SCREENSHOT")
        screenshot = (
            os.path.join(os.environ.get("PWD", ".."), wanted)
            if wanted and not os.path.isabs(wanted)
            else wanted or os.path.abspath(self.mktemp() + ".png")
        )
        _, err, code = yield getProcessOutputAndValue(
            self.chromium,
            chromium_args(
                self.mktemp(), "--window-size=1300,880", f"--screenshot={screenshot}", url
            ),
            env=dict(os.environ),
        )
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
