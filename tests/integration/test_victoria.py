"""
VictoriaMetrics, for real: a private C{victoria-metrics} (Debian's package) on
loopback, deduplicating, fed by the assembled server through C{/write} and
C{/api/v2/write}, read back through its export API.

  - values and timestamps land, one sample per reading, through both
    endpoints (L{WriteTests});
  - a restart that replays the journal resends points VictoriaMetrics already
    holds: with C{-dedup.minScrapeInterval} one sample per reading is left,
    without it every replayed reading is stored twice (L{ReplayTests});
  - what it answers, and what the journal does then: basic authentication,
    lines it cannot parse, samples outside its retention, a read-only
    storage, a wrong path (L{AnswerTests}; docs/reliability.md's table).

VictoriaMetrics keeps milliseconds: a timestamp is stored truncated to its
millisecond.  Nothing here is skipped in CI: without victoria-metrics the
tests fail there (see L{tests.integration.victoria.require_victoria_metrics}).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from math import isclose

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.integration.fleet import S, deliver, expected_points, fleet_packet
from tests.integration.test_reliability import poll
from tests.integration.victoria import VictoriaServer, start_victoria_metrics
from tests.support import (
    SetTime,
    journal_status,
    make_settings,
    reference_devices_toml,
)
from weather.app.tap import build_service
from weather.server.service import WeatherService

PLACES = {1: "balcony", 2: "garden"}
NAMES = ("light", "humidity", "temperature")
#: (device, packet number, arrival in seconds after t0): device 1's second
#: packet is timed by its measured spacing, 3700 s / 30, so its readings'
#: timestamps have fractions of a millisecond.
PLAN = [(1, 0, 0), (2, 0, 0), (1, 1, 3700)]
POINTS = len(PLAN) * 30 * len(NAMES)
MS = 1_000_000

Stored = dict[tuple[str, str], list[tuple[int, float]]]


def stored(vm: VictoriaServer) -> Stored:
    """(measurement, place) -> [(ms, value)]: every raw sample of our series."""
    found: Stored = {}
    selector = '{__name__=~"(light|humidity|temperature)_value"}'
    for labels, samples in vm.export(selector, series=len(NAMES) * len(PLACES)):
        measurement = labels["__name__"].removesuffix("_value")
        found.setdefault((measurement, labels["place"]), []).extend(samples)
    return {key: sorted(samples) for key, samples in found.items()}


def in_milliseconds(sent: Iterable[tuple[bytes, int]], copies: int = 1) -> Stored:
    """What C{sent} must become in VictoriaMetrics: timestamps truncated to ms."""
    return {
        series: sorted((when // MS, value) for when, value in points for _ in range(copies))
        for series, points in expected_points(sent, PLACES).items()
    }


class ServerMixin:
    """The assembled server in this process, on the real reactor."""

    def assertStored(self, vm: VictoriaServer, sent, copies: int = 1) -> None:
        """
        C{vm} holds C{copies} samples of each reading C{sent} gives, at its
        timestamp truncated to the millisecond, with its value to 12
        significant digits (VictoriaMetrics stores values as decimals).
        """
        have, want = stored(vm), in_milliseconds(sent, copies)
        self.assertEqual(sorted(have), sorted(want))
        for series, points in want.items():
            self.assertEqual([t for t, _ in have[series]], [t for t, _ in points], series)
            for (_, got), (_, value) in zip(have[series], points, strict=True):
                self.assertTrue(isclose(got, value, rel_tol=1e-12), f"{got} != {value}")

    def build(self, *args: str) -> WeatherService:
        """The service as twistd builds it from C{args}; stopped when the test ends."""
        devices = self.mktemp()
        with open(devices, "w", encoding="utf-8") as f:
            f.write(reference_devices_toml(**{str(d): p for d, p in PLACES.items()}))
        settings = make_settings(
            self,
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--devices",
            devices,
            "--flush-interval",
            "0.05",
            "--max-backoff",
            "1",
            "--shutdown-timeout",
            "1",
            *args,
        )
        service = build_service(settings, reactor)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    @inlineCallbacks
    def send_plan(self, service: WeatherService, t0: int):
        """Start C{service}, send L{PLAN}'s packets; fires with (bytes, arrival ns)."""
        clock = SetTime(t0)
        service.listener.factory.wall = clock
        service.startService()
        port = service.listener.port.getHost().port
        sent = []
        for device, seq, after in PLAN:
            clock.now = t0 + after
            upload = yield deliver(reactor, port, fleet_packet(device, seq), seq)
            self.assertTrue(upload.acked, upload.error)
            sent.append((upload.data, (t0 + after) * S))
        return sent

    def delivered(self, service: WeatherService, count: int) -> Deferred:
        journal = service.journal
        return poll(lambda: journal.stats.packets_delivered == count, 10, "delivered")


def two_hours_ago() -> int:
    """A start time whose readings are all in the past and inside the retention."""
    return int(time.time()) - 2 * 3600


class WriteTests(ServerMixin, TestCase):
    """The server writes into VictoriaMetrics through both InfluxDB endpoints."""

    timeout = 30

    @inlineCallbacks
    def check_endpoint(self, *target: str):
        vm = start_victoria_metrics(self)
        service = self.build("--influx-url", vm.url, *target)
        sent = yield self.send_plan(service, two_hours_ago())
        yield self.delivered(service, len(PLAN))
        yield service.stopService()
        self.assertStored(vm, sent)
        self.assertEqual(service.writer.stats.points_written, POINTS)
        status = journal_status(service.journal.directory)
        self.assertEqual((status.pending, status.quarantined), (0, 0))
        return vm

    @inlineCallbacks
    def test_write(self):
        """
        C{--database} writes to C{/write?db=weather}: VictoriaMetrics names
        the series C{measurement_field} and adds the database as label C{db}.
        """
        vm = yield self.check_endpoint("--database", "weather")
        labels = [labels for labels, _ in vm.export('temperature_value{place="balcony"}')]
        self.assertEqual(
            labels, [{"__name__": "temperature_value", "db": "weather", "place": "balcony"}]
        )

    def test_apiV2Write(self):
        """C{--bucket} writes to C{/api/v2/write}, without a token."""
        return self.check_endpoint("--bucket", "weather")


class LostAnswers(Resource):
    """
    In front of VictoriaMetrics: forwards every request and keeps the answer
    to itself, as if the server had crashed before it heard back.
    """

    isLeaf = True

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = HTTPClient(Agent(reactor, pool=self.pool))
        #: VictoriaMetrics' status for each line it was sent.
        self.answered: list[int] = []

    def render(self, request) -> object:
        body = request.content.read()
        forwarded = self.client.request(
            request.method.decode("ascii"),
            self.upstream + request.uri.decode("ascii"),
            data=body,
            headers=Headers({b"Content-Type": [b"text/plain; charset=utf-8"]}),
        )

        @inlineCallbacks
        def heard(response):
            yield response.content()
            self.answered.extend([response.code] * len(body.splitlines()))

        forwarded.addCallback(heard)
        return NOT_DONE_YET


class ReplayTests(ServerMixin, TestCase):
    """
    The server stops after VictoriaMetrics stored a write but before the
    answer reached it: the packets are still pending in the journal, and the
    next start sends them again.
    """

    timeout = 30

    def lost_answers(self, upstream: str) -> tuple[LostAnswers, str]:
        proxy = LostAnswers(upstream)
        port = reactor.listenTCP(0, Site(proxy), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return proxy, f"http://127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def replayed(self, vm: VictoriaServer):
        """
        Crash and replay against C{vm}; fires with what was sent.  In the
        first run the flush interval is long, so every point goes out in the
        one request made on stopping, whose answer is lost.
        """
        proxy, proxy_url = self.lost_answers(vm.url)
        data_dir = self.mktemp()
        target = ("--database", "weather", "--data-dir", data_dir)
        # The writes alone through the proxy: the answer it loses is the write's.
        first = self.build(
            "--influx-url",
            proxy_url,
            *target,
            "--flush-interval",
            "60",
            "--no-create-database",
        )
        sent = yield self.send_plan(first, two_hours_ago())
        yield first.stopService()
        self.assertEqual(proxy.answered, [204] * POINTS, "VictoriaMetrics took the write")
        self.assertEqual(journal_status(data_dir).pending, len(PLAN))
        self.assertStored(vm, sent)

        second = self.build("--influx-url", vm.url, *target)
        second.startService()
        yield self.delivered(second, len(PLAN))
        yield second.stopService()
        self.assertEqual(second.writer.stats.points_written, POINTS, "all sent again")
        self.assertEqual(journal_status(data_dir).pending, 0)
        return sent

    @inlineCallbacks
    def test_replayLeavesOneSamplePerReading(self):
        """With C{-dedup.minScrapeInterval=1ms} the replayed copies are dropped."""
        vm = start_victoria_metrics(self)
        sent = yield self.replayed(vm)
        self.assertStored(vm, sent)

    @inlineCallbacks
    def test_withoutDedupReplayStoresEveryReadingTwice(self):
        """Without deduplication VictoriaMetrics keeps both copies: the flag is needed."""
        vm = start_victoria_metrics(self, dedup=False)
        sent = yield self.replayed(vm)
        self.assertStored(vm, sent, copies=2)


class AnswerTests(ServerMixin, TestCase):
    """What VictoriaMetrics answers, and what the journal does then."""

    timeout = 30

    def password_file(self, password: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        os.chmod(path, 0o600)
        return path

    @inlineCallbacks
    def test_basicAuthentication(self):
        """
        With C{-httpAuth.*}, a wrong password is answered 401 (an empty body)
        and the writer keeps trying, the packets pending; restarted with the
        right C{--password-file}, the server delivers them.
        """
        vm = start_victoria_metrics(self, username="weather", password="s3cret")
        self.assertEqual(vm.write("x value=1", db="weather", credentials=None)[0], 401)
        data_dir = self.mktemp()
        target = ("--influx-url", vm.url, "--database", "weather", "--data-dir", data_dir)
        user = ("--username", "weather")
        wrong = self.build(*target, *user, "--password-file", self.password_file("wrong"))
        sent = yield self.send_plan(wrong, two_hours_ago())
        yield poll(lambda: wrong.writer.stats.requests_failed >= 2, 10, "refused twice")
        yield wrong.stopService()
        self.assertEqual(wrong.writer.stats.points_written, 0)
        self.assertEqual(journal_status(data_dir).pending, len(PLAN))

        right = self.build(*target, *user, "--password-file", self.password_file("s3cret"))
        right.startService()
        yield self.delivered(right, len(PLAN))
        yield right.stopService()
        self.assertStored(vm, sent)

    def test_unparsableLinesAreSkippedSilently(self):
        """
        A line it cannot parse is skipped and logged by VictoriaMetrics, the
        rest stored, and the answer is 204: the server cannot tell, so the
        packet counts as delivered (our encoder writes valid lines only).
        """
        vm = start_victoria_metrics(self)
        now = time.time_ns()
        status, body = vm.write(
            f"t,place=a value=1 {now}\nnot line protocol\nt,place=b value=2 {now}"
        )
        self.assertEqual((status, body), (204, b""))
        places = sorted(labels["place"] for labels, _ in vm.export("t_value", series=2))
        self.assertEqual(places, ["a", "b"])

    def test_outsideRetentionIsDroppedSilently(self):
        """
        A sample older than C{-retentionPeriod} (default: one month) is
        answered 204 and dropped: a journal replay after a longer outage
        stores nothing of it.  Later than two days ahead: the same.
        """
        vm = start_victoria_metrics(self)
        day = 24 * 3600 * S
        now = time.time_ns()
        status, _ = vm.write(
            f"old,place=a value=1 {now - 40 * day}\n"
            f"now,place=a value=1 {now}\n"
            f"new,place=a value=1 {now + 5 * day}"
        )
        self.assertEqual(status, 204)
        found = vm.export('{__name__=~"old_value|now_value|new_value"}')
        self.assertEqual([labels["__name__"] for labels, _ in found], ["now_value"])

    @inlineCallbacks
    def test_readOnlyStorage(self):
        """
        Short of disk space (C{-storage.minFreeDiskSpaceBytes}) it refuses
        writes with 503 and a text body: the writer retries, the packets wait.
        """
        vm = start_victoria_metrics(self, "-storage.minFreeDiskSpaceBytes=1000000GB")
        status, body = vm.write(f"t,place=a value=1 {time.time_ns()}")
        self.assertEqual(status, 503)
        self.assertIn(b"the storage is in read-only mode", body)
        service = self.build("--influx-url", vm.url, "--database", "weather")
        yield self.send_plan(service, two_hours_ago())
        yield poll(lambda: service.writer.stats.requests_failed >= 2, 10, "refused twice")
        yield service.stopService()
        status = journal_status(service.journal.directory)
        self.assertEqual((status.pending, status.quarantined), (len(PLAN), 0))

    @inlineCallbacks
    def test_unknownPath(self):
        """
        A path it does not serve (here a wrong prefix in --influx-url) is
        answered 400, not 404 as InfluxDB does: the writer takes it for the
        mistake it is, not for refused points, and retries; the packets wait
        in the journal until the URL is fixed.
        """
        vm = start_victoria_metrics(self)
        service = self.build("--influx-url", vm.url + "/prefix", "--database", "weather")
        yield self.send_plan(service, two_hours_ago())
        yield poll(lambda: service.writer.stats.requests_failed >= 2, 10, "retried twice")
        yield service.stopService()
        self.assertEqual(service.writer.stats.points_refused, 0)
        status = journal_status(service.journal.directory)
        self.assertEqual((status.pending, status.quarantined), (len(PLAN), 0))
