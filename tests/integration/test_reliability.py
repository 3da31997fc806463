"""
Reliability: the issue's proofs that no reading is lost or stored twice, with
a real influxd, real TCP and real files.

  - InfluxDB stopped while packets arrive, started again: every reading
    lands, once (L{InfluxDBOutageTests});
  - the server killed with SIGKILL at random moments while a fleet of
    stations sends: every acknowledged packet lands, every packet at most once,
    with the timestamps it was first given (L{ServerCrashTests});
  - InfluxDB answering 500, 503, 429, 413, 401, and refusing points for good
    (a real field type conflict): the rest delivered, the refused points'
    packet in quarantine (L{InfluxFaultTests});
  - the journal's disk full: the listener stops, one critical line, and once
    there is space again everything lands (L{DiskFullTests}).

Nothing here is skipped in CI: without influxd the tests fail there (see
L{tests.integration.influxd.require_influxd}).  L{ServerCrashTests} prints its random
seed; C{WEATHER_TEST_SEED=...} repeats a run's kill moments.
"""

from __future__ import annotations

import calendar
import errno
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.integration.daemon import Daemon, free_listening_port
from tests.integration.fleet import (
    Attempt,
    Fleet,
    S,
    audit,
    deliver,
    expected_points,
    fleet_packet,
    send_attempt,
)
from tests.integration.influxd import InfluxServer, start_influxd
from tests.support import SetTime, reference_devices_toml, unavailable
from weather.app.settings import Options, settings_from_options
from weather.app.tap import build_service
from weather.journal.store import JournalFile

DATABASE = "weather_test"
WEEK = 7 * 24 * 3600


def tuesday_noon_last_week(now: float | None = None) -> int:
    """
    Noon UTC on the Tuesday of last week, in seconds: InfluxDB 1.x groups
    points into week-long shards starting on Mondays, so points an hour either
    side of this time share one shard, and with it one field type per field.
    """
    now = time.time() if now is None else now
    monday = calendar.timegm((1970, 1, 5, 0, 0, 0))  # a Monday 00:00 UTC
    this_monday = monday + (int(now) - monday) // WEEK * WEEK
    return this_monday - WEEK + 36 * 3600


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def poll(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05):
    """Wait until C{predicate()} holds; fail the test after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        yield sleep(interval)


def stored_series(influx: InfluxServer, measurements: Iterable[str]) -> dict:
    """(measurement, place) -> [(time, value)] as InfluxDB holds them, by time."""
    series: dict = {}
    for measurement in measurements:
        for when, value, tags in influx.points(measurement, DATABASE, "value"):
            series.setdefault((measurement, tags.get("place", "")), []).append(
                (when, value)
            )
    return {key: sorted(points) for key, points in series.items()}


def journal_status(data_dir: str):
    """The journal's status, read from its file (the server may be running)."""
    journal = JournalFile(data_dir, create=False)
    try:
        return journal.status()
    finally:
        journal.close()


def write_file(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def temporary_directory(testcase: TestCase, prefix: str) -> str:
    """A new directory, removed when the test ends (after what was started in it)."""
    path = tempfile.mkdtemp(prefix=prefix)
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


class InProcessMixin:
    """The assembled server in this process, on the real reactor."""

    def start_influx(self) -> InfluxServer:
        influx = start_influxd(self)
        influx.create_database(DATABASE)
        return influx

    def build(self, influx_url: str, devices_toml: str, *options: str, data_dir=None):
        """The service as twistd would build it; stopped when the test ends."""
        workdir = temporary_directory(self, "weather-reliability-")
        args = [
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--influx-url",
            influx_url,
            "--database",
            DATABASE,
            "--devices",
            write_file(workdir, "devices.toml", devices_toml),
            "--data-dir",
            data_dir or os.path.join(workdir, "data"),
            "--shutdown-timeout",
            "3",
            "--grace",
            "1",
            *options,
        ]
        parsed = Options()
        parsed.parseOptions(args)
        service = build_service(settings_from_options(parsed, {}), reactor)
        self.addCleanup(self._stop, service)
        return service

    @staticmethod
    def _stop(service) -> Deferred | None:
        if service.running:
            return service.stopService()
        return None

    @staticmethod
    def port_of(service) -> int:
        return service.listener.port.getHost().port


class InfluxDBOutageTests(InProcessMixin, TestCase):
    """InfluxDB goes away while packets arrive, and comes back."""

    timeout = 60

    @inlineCallbacks
    def test_influxdbStoppedWhilePacketsArrive(self):
        """
        Packets sent while influxd is stopped are acknowledged (they are in
        the journal), and once it is started again every reading lands:
        exactly the points expected per series, values and timestamps.
        """
        influx = self.start_influx()
        places = {1: "balcony", 2: "garden", 3: "roof"}
        service = self.build(
            influx.url,
            reference_devices_toml(**{str(d): p for d, p in places.items()}),
            "--flush-interval",
            "0.05",
            "--max-backoff",
            "1",
        )
        t0 = tuesday_noon_last_week()
        clock = SetTime(t0)
        service.listener.factory.wall = clock
        service.startService()
        port = self.port_of(service)
        journal = service.journal
        sent: list[tuple[bytes, int]] = []

        @inlineCallbacks
        def send_round(seq: int, arrival: int):
            """Each station sends packet C{seq}; they arrive at C{arrival}."""
            clock.now = arrival
            uploads = yield gatherResults(
                [deliver(reactor, port, fleet_packet(d, seq), seq) for d in places]
            )
            sent.extend((upload.data, arrival * S) for upload in uploads)
            return uploads

        started = time.monotonic()
        # InfluxDB up: the first round is delivered and leaves the journal.
        uploads = yield send_round(0, t0)
        self.assertTrue(all(u.acked for u in uploads), [u.error for u in uploads])
        yield poll(lambda: journal.stats.packets_delivered == 3, 10, "first round")

        influx.terminate()
        # Rounds while it is down: an hour and 100 s later (measured
        # interval), 58 min later (measured), 10 min later (nominal interval).
        arrivals = [t0 + 3700, t0 + 3700 + 3480, t0 + 3700 + 3480 + 601]
        for seq, arrival in enumerate(arrivals, start=1):
            uploads = yield send_round(seq, arrival)
            self.assertEqual(
                [u.error for u in uploads if not u.acked],
                [],
                "every station gets its ACK while InfluxDB is down",
            )
        # The writer has found InfluxDB gone, more than once, and keeps the points.
        yield poll(lambda: service.writer.stats.requests_failed >= 2, 10, "write fails")
        status = yield journal.status()
        self.assertEqual(status.pending, 3 * len(arrivals))
        self.assertEqual(journal.stats.packets_delivered, 3)

        influx.start()
        # One more round while the backlog drains.
        yield send_round(len(arrivals) + 1, arrivals[-1] + 3600)
        total = 3 * (len(arrivals) + 2)
        yield poll(
            lambda: journal.stats.packets_delivered == total, 15, "backlog delivered"
        )
        status = yield journal.status()
        self.assertEqual((status.pending, status.quarantined), (0, 0))
        yield service.stopService()
        elapsed = time.monotonic() - started
        print(f"\n  InfluxDB outage: {len(sent)} packets in {elapsed:.1f} s")

        want = expected_points(sent, places)
        have = stored_series(influx, ("light", "humidity", "temperature"))
        self.assertEqual(sorted(have), sorted(want))
        for series, points in want.items():
            self.assertEqual(len(have[series]), len(points), series)
            self.assertEqual(have[series], points, series)


# -- the server killed: twistd as a subprocess ------------------------------------------


class ServerCrashTests(TestCase):
    """The server process dies (SIGKILL) again and again while stations send."""

    timeout = 60
    stations = 12
    kills = 7

    @inlineCallbacks
    def test_sigkillWhileFleetSends(self):
        """
        A fleet of stations sends packets one after another while the server
        is killed with SIGKILL at random moments and started again.  At the end
        the journal is drained and InfluxDB holds every packet whose ACK
        reached its station, every stored packet whole and exactly once, each
        stamped within its own connection and timed by docs/protocol.md's rule from
        the device's previous packet: a replay with other timestamps would
        show as a packet stored twice or with the wrong interval.
        """
        seed = int(os.environ.get("WEATHER_TEST_SEED") or random.randrange(2**32))
        print(f"\n  SIGKILL test: seed {seed} (WEATHER_TEST_SEED={seed} repeats it)")
        rng = random.Random(seed)
        influx = start_influxd(self)
        influx.create_database(DATABASE)
        workdir = temporary_directory(self, "weather-kill9-")
        places = {d: f"station {d}" for d in range(1, self.stations + 1)}
        devices = write_file(
            workdir,
            "devices.toml",
            reference_devices_toml(**{str(d): p for d, p in places.items()}),
        )
        data_dir = os.path.join(workdir, "data")
        port = free_listening_port()
        args = [
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--influx-url",
            influx.url,
            "--database",
            DATABASE,
            "--devices",
            devices,
            "--data-dir",
            data_dir,
            "--flush-interval",
            "0.2",
            "--max-backoff",
            "1",
            "--grace",
            "1",
            "--shutdown-timeout",
            "5",
        ]
        runs: list[Daemon] = []

        def stop_all() -> None:
            for run in runs:
                run.kill()

        self.addCleanup(stop_all)

        @inlineCallbacks
        def start_server():
            run = Daemon(args, workdir, os.path.join(workdir, f"server-{len(runs)}.log"))
            runs.append(run)
            # The stations keep sending while it starts.
            yield run.when_ready(reactor, timeout=15)
            return run

        started = time.monotonic()
        server = yield start_server()
        # Packets a second apart are timed by their spacing (docs/protocol.md),
        # so the journaled timing state matters on every replay.
        fleet = Fleet(
            reactor,
            port,
            places,
            random.Random(rng.random()),
            wake_every=1,
            measurement_every=120,
            pause=(0.2, 1.0),
            ack_timeout=2.0,
            split=(0.0, 0.2),
        )
        fleet.start()
        moments = []
        try:
            for _ in range(self.kills):
                alive = rng.uniform(0.3, 1.6)
                yield sleep(alive)
                moments.append(round(alive, 2))
                self.assertEqual(server.kill(), -signal.SIGKILL, server.log_tail())
                yield sleep(rng.uniform(0.0, 0.4))
                server = yield start_server()
            yield sleep(1.5)
        finally:
            yield fleet.stop()
        sending = time.monotonic() - started

        def drained() -> bool:
            status = journal_status(data_dir)
            return status.pending == 0

        yield poll(drained, 20, "journal drained", interval=0.1)
        # twistd ends a run stopped by a signal with that signal.
        self.assertIn(server.stop(), [0, -signal.SIGTERM], server.log_tail())
        self.assertIn("Main loop terminated.", server.log(), server.log_tail())
        status = journal_status(data_dir)
        self.assertEqual((status.pending, status.quarantined), (0, 0))

        stored = {
            name: influx.points(name, DATABASE, "value")
            for name in ("light", "humidity", "temperature")
        }
        problems, counts = audit(stored, fleet.uploads, places, records=30)
        replays = [
            number
            for number, run in enumerate(runs)
            if number and "Sending packets kept in the journal" in run.log()
        ]
        print(
            f"  SIGKILL test: killed after {moments} s of running; "
            f"uploads {dict(fleet.summary())}; {dict(counts)}; runs that replayed "
            f"journaled packets: {replays}; sending {sending:.1f} s, "
            f"total {time.monotonic() - started:.1f} s"
        )
        if problems:
            self.fail(
                f"seed {seed}: {len(problems)} problems, the first ones:\n"
                + "\n".join(problems[:20])
            )
        self.assertGreater(counts["acknowledged, stored"], 0)
        for number, run in enumerate(runs):
            text = run.log()
            self.assertNotIn("Traceback", text, f"run {number}:\n{run.log_tail()}")
            self.assertNotIn("Unhandled", text, f"run {number}:\n{run.log_tail()}")


# -- InfluxDB's faults: a scripted proxy in front of the real influxd --------------------


class FaultyProxy(Resource):
    """
    In front of a real influxd: the first write requests get the scripted
    answers, in order; every other request is forwarded.  Every answer given
    to a write is recorded, with when and what it said.
    """

    isLeaf = True

    def __init__(self, upstream: str, script: list[tuple[int, dict, bytes]]) -> None:
        super().__init__()
        self.upstream = upstream.encode()
        self.script = list(script)
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.client = HTTPClient(Agent(reactor, pool=self.pool))
        #: (monotonic time, status, body) of each write answered.
        self.answers: list[tuple[float, int, bytes]] = []

    def render(self, request):
        body = request.content.read()
        if request.path == b"/write" and self.script:
            status, headers, answer = self.script.pop(0)
            self.answers.append((time.monotonic(), status, answer))
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"x-influxdb-version", b"1.6-scripted")
            for name, value in headers.items():
                request.setHeader(name.encode(), value.encode())
            return answer
        forwarded = self.client.request(
            request.method.decode("ascii"),
            (self.upstream + request.uri).decode("ascii"),
            data=body or None,
            headers=Headers(
                {k: v for k, v in request.requestHeaders.getAllRawHeaders() if k != b"Host"}
            ),
        )
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        @inlineCallbacks
        def relay(response):
            content = yield response.content()
            if request.path == b"/write":
                self.answers.append((time.monotonic(), response.code, content))
            if gone:
                return
            request.setResponseCode(response.code)
            for name, values in response.headers.getAllRawHeaders():
                if name.lower() not in (
                    b"content-length",
                    b"transfer-encoding",
                    b"connection",
                ):
                    request.responseHeaders.setRawHeaders(name, values)
            request.write(content)
            request.finish()

        def broken(failure):
            if not gone:
                request.setResponseCode(502)
                request.write(failure.getErrorMessage().encode())
                request.finish()

        forwarded.addCallback(relay).addErrback(broken)
        return NOT_DONE_YET


class InfluxFaultTests(InProcessMixin, TestCase):
    """InfluxDB's error answers, scripted and real."""

    timeout = 60

    SCRIPT = [
        (500, {}, b'{"error":"engine: scripted internal error"}\n'),
        (503, {"Retry-After": "1"}, b'{"error":"scripted: service unavailable"}\n'),
        (429, {}, b'{"error":"scripted: too many requests"}\n'),
        (413, {}, b'{"error":"Request Entity Too Large"}\n'),
        (401, {}, b'{"error":"authorization failed"}\n'),
    ]

    def start_proxy(self, upstream: str) -> tuple[FaultyProxy, str]:
        proxy = FaultyProxy(upstream, self.SCRIPT)
        wrapper = WrappingFactory(Site(proxy))
        port = reactor.listenTCP(0, wrapper, interface="127.0.0.1")

        @inlineCallbacks
        def close():
            yield port.stopListening()
            for protocol in list(wrapper.protocols):
                protocol.transport.abortConnection()
            yield poll(lambda: not wrapper.protocols, 5, "proxy connections closed")
            yield proxy.pool.closeCachedConnections()

        self.addCleanup(close)
        return proxy, f"http://127.0.0.1:{port.getHost().port}"

    @inlineCallbacks
    def test_scriptedFaultsAndRealFieldTypeConflict(self):
        """
        Writes go through a proxy answering 500, 503 (Retry-After: 1), 429,
        413 and 401 before it forwards; InfluxDB itself refuses one packet's
        soil temperatures (the field is a string there).  Every other reading
        lands once; that packet is in quarantine with InfluxDB's message and
        exactly its refused lines, and its other readings are stored.
        """
        influx = self.start_influx()
        t0 = tuesday_noon_last_week()
        # The garden station's soil temperature field is a string in this shard.
        hot_ns = (t0 - 1799) * S + 500_000_000
        status, body = influx.write(
            DATABASE, f'soil_temperature,place=garden value="hot" {hot_ns}'
        )
        self.assertEqual(status, 204, body)
        proxy, proxy_url = self.start_proxy(influx.url)
        places = {1: "balcony", 2: "garden", 3: "roof"}
        names = {2: ("light", "humidity", "soil_temperature")}
        devices = reference_devices_toml(**{"1": "balcony", "3": "roof"}) + (
            reference_devices_toml(**{"2": "garden"}).replace(
                '"temperature"', '"soil_temperature"'
            )
        )
        service = self.build(
            proxy_url, devices, "--flush-interval", "0.05", "--max-backoff", "1"
        )
        clock = SetTime(t0)
        service.listener.factory.wall = clock
        service.startService()
        port = self.port_of(service)
        started = time.monotonic()

        plan = [
            (1, 0, t0),
            (2, 0, t0),
            (3, 0, t0 + 60),
            (1, 1, t0 + 3700),
            (3, 1, t0 + 3650),
        ]
        plan += [(1, 2, t0 + 7300), (3, 2, t0 + 7300)]
        sent = []
        for device, seq, arrival in plan:
            clock.now = arrival
            upload = yield deliver(reactor, port, fleet_packet(device, seq), seq)
            self.assertTrue(upload.acked, upload.error)
            sent.append((upload.data, arrival * S))
        garden = sent[1][0]
        journal = service.journal
        yield poll(
            lambda: (
                (journal.stats.packets_delivered, journal.stats.packets_quarantined)
                == (len(plan) - 1, 1)
            ),
            30,
            "every packet delivered or quarantined",
        )
        yield service.stopService()
        elapsed = time.monotonic() - started

        # The proxy's script was played in order, and the writer waited as told.
        statuses = [status for _, status, _ in proxy.answers]
        print(
            f"\n  InfluxDB faults: {elapsed:.1f} s; write answers: first {statuses[:5]}, "
            f"then {dict(Counter(statuses[5:]))}"
        )
        self.assertEqual(statuses[:5], [500, 503, 429, 413, 401])
        self.assertGreaterEqual(proxy.answers[2][0] - proxy.answers[1][0], 0.95)
        conflicts = [body for _, status, body in proxy.answers if status == 400]
        self.assertTrue(conflicts, "InfluxDB refused the soil temperatures itself")
        self.assertIn(b"field type conflict", conflicts[0])
        self.assertEqual(service.writer.stats.requests_failed, 4)

        # InfluxDB holds everything but the garden's soil temperatures.
        want = expected_points(sent, places, names)
        refused = want.pop(("soil_temperature", "garden"))
        have = stored_series(
            influx, ("light", "humidity", "temperature", "soil_temperature")
        )
        self.assertEqual(have.pop(("soil_temperature", "garden")), [(hot_ns, "hot")])
        self.assertEqual(sorted(have), sorted(want))
        for series, points in want.items():
            self.assertEqual(have[series], points, series)

        # Their packet is in quarantine, with InfluxDB's words and those lines.
        journal_file = JournalFile(journal.directory, create=False)
        try:
            quarantined = journal_file.quarantined()
            status = journal_file.status()
        finally:
            journal_file.close()
        self.assertEqual((status.pending, status.quarantined), (0, 1))
        [packet] = quarantined
        self.assertEqual(packet.entry.packet.data, garden)
        self.assertEqual(packet.entry.packet.arrival_ns, t0 * S)
        self.assertEqual(packet.quarantine.reason, "refused_by_influxdb")
        detail = packet.quarantine.detail
        self.assertIn("HTTP 400", detail)
        self.assertIn("field type conflict", detail)
        self.assertIn("soil_temperature", detail)
        lines = []
        for line in packet.quarantine.refused:
            series, field, when = line.split(b" ")
            self.assertEqual(series, b"soil_temperature,place=garden")
            self.assertTrue(field.startswith(b"value="), line)
            lines.append((int(when), float(field[len(b"value=") :])))
        self.assertEqual(sorted(lines), refused)


# -- the journal's disk full -------------------------------------------------------------


class QuotaDisk:
    """
    A quota on the journal file: SQLite's C{max_page_count} on the journal's
    own connection, set to the file's present size.  Pages freed by delivered
    packets would make room again, so InfluxDB is stopped while it fills.
    """

    name = "simulated quota (PRAGMA max_page_count)"
    stop_influx = True

    def __init__(self, testcase: TestCase) -> None:
        self.data_dir = os.path.join(
            temporary_directory(testcase, "weather-quota-"), "data"
        )

    def fill(self, journal) -> Deferred:
        limiting = journal.worker.run(_max_pages, journal.file, None)
        return limiting.addCallback(lambda pages: f"the journal limited to {pages} pages")

    def free(self, journal) -> Deferred:
        return journal.worker.run(_max_pages, journal.file, 1 << 30)


def _max_pages(journal_file, pages: int | None) -> int:
    """In the journal's worker: limit the file to C{pages} (None: its size)."""
    connection = journal_file.connection
    if pages is None:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    return connection.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0]


class CannotMount(Exception):
    pass


class TmpfsDisk:
    """
    A real small file system: a tmpfs mounted for the test, filled by a
    ballast file; deleting the ballast frees the space.  InfluxDB stays up,
    so the commits that delete delivered packets fail too.
    """

    name = "tmpfs"
    stop_influx = False

    def __init__(self, testcase: TestCase, size: str = "4m") -> None:
        self.mountpoint = tempfile.mkdtemp(prefix="weather-tmpfs-")
        try:
            result = subprocess.run(
                [
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={size},mode=0700",
                    "tmpfs",
                    self.mountpoint,
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            os.rmdir(self.mountpoint)
            raise CannotMount(str(e)) from None
        if result.returncode != 0:
            os.rmdir(self.mountpoint)
            raise CannotMount(result.stderr.strip() or f"mount exited {result.returncode}")
        testcase.addCleanup(self.unmount)
        self.data_dir = os.path.join(self.mountpoint, "data")
        self.ballast = os.path.join(self.mountpoint, "ballast")

    def fill(self, journal) -> Deferred:
        chunk = b"\0" * 65536
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while chunk:
                try:
                    os.write(fd, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    chunk = chunk[: len(chunk) // 2]
        finally:
            os.close(fd)
        stats = os.statvfs(self.mountpoint)
        return succeed(f"{stats.f_bavail * stats.f_frsize} bytes left on the tmpfs")

    def free(self, journal) -> Deferred:
        os.remove(self.ballast)
        return succeed(None)

    def unmount(self) -> None:
        result = subprocess.run(
            ["umount", self.mountpoint], capture_output=True, timeout=30
        )
        if result.returncode != 0:
            subprocess.run(
                ["umount", "-l", self.mountpoint], capture_output=True, timeout=30
            )
        os.rmdir(self.mountpoint)


class DiskFullTests(InProcessMixin, TestCase):
    """The journal's disk fills up while stations send, then space returns."""

    timeout = 60
    retry_interval = 0.3

    def test_simulatedQuota(self):
        return self.disk_full(QuotaDisk(self))

    def test_smallTmpfs(self):
        """On a real file system that fills up, if this machine lets us mount one."""
        try:
            disk = TmpfsDisk(self)
        except CannotMount as e:
            unavailable(f"cannot mount a tmpfs here ({e}); test_simulatedQuota runs")
        return self.disk_full(disk)

    @inlineCallbacks
    def disk_full(self, disk):
        """
        Packets until the journal cannot be written: that packet gets no ACK
        (it is held in memory), the listener stops accepting, one critical
        line says so.  Once there is space the journal recovers within its
        retry interval, the listener accepts again (a station that connected
        meanwhile is served), and every packet sent lands in InfluxDB.
        """
        influx = self.start_influx()
        criticals: list[str] = []

        def observe(event) -> None:
            if event.get("log_level") == LogLevel.critical:
                criticals.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        places = {1: "balcony", 2: "garden", 3: "roof"}
        service = self.build(
            influx.url,
            reference_devices_toml(**{str(d): p for d, p in places.items()}),
            "--flush-interval",
            "0.05",
            "--max-backoff",
            "1",
            "--journal-min-free",
            "0",
            data_dir=disk.data_dir,
        )
        journal, factory, listener = (
            service.journal,
            service.listener.factory,
            service.listener,
        )
        journal.retry_interval = self.retry_interval
        t0 = tuesday_noon_last_week()
        clock = SetTime(t0)
        factory.wall = clock
        service.startService()
        port = self.port_of(service)
        started = time.monotonic()
        sent: list[tuple[bytes, int]] = []
        next_seq = {device: 0 for device in places}

        def packet(arrival: int) -> tuple[bytes, int]:
            device = 1 + len(sent) % len(places)
            seq, next_seq[device] = next_seq[device], next_seq[device] + 1
            sent.append((fleet_packet(device, seq), arrival * S))
            return sent[-1][0], seq

        # Before: a packet is journaled, acknowledged and delivered.
        data, seq = packet(t0)
        upload = yield deliver(reactor, port, data, seq)
        self.assertTrue(upload.acked, upload.error)
        yield poll(lambda: journal.stats.packets_delivered == 1, 10, "first delivered")
        if disk.stop_influx:
            influx.terminate()
        filled = yield disk.fill(journal)

        # Packets until one is not acknowledged: the journal cannot take it.
        for _ in range(200):
            data, seq = packet(clock.now + 1)
            clock.now += 1
            upload = yield deliver(reactor, port, data, seq, ack_timeout=1.0)
            if not upload.acked:
                break
        else:
            self.fail(f"{disk.name}: 200 packets and the journal still takes them")
        fill_count = len(sent) - 1
        self.assertTrue(journal.full, "the journal says it is full")
        self.assertIsNotNone(journal.failing)
        self.assertTrue(factory.paused, "station connections are not read")
        self.assertNotIn(listener.port, reactor.getReaders(), "the port is not accepting")

        # A station connecting now is not served (the kernel queues it)...
        accepted = factory.stats.connections_accepted
        clock.now += 1
        late_arrival = clock.now
        data, seq = packet(late_arrival)
        late_upload = Attempt(data[7], seq, data, time.time_ns())
        late = send_attempt(reactor, port, late_upload, ack_timeout=20.0)
        failed = journal.stats.commits_failed
        yield poll(lambda: journal.stats.commits_failed >= failed + 2, 5, "two retries")
        self.assertEqual(factory.stats.connections_accepted, accepted)
        self.assertTrue(late_upload.connected, "the kernel queued the connection")
        self.assertEqual((late_upload.ack_ns, late_upload.ended_ns), (None, 0))
        # ... and one critical line said why.
        self.assertEqual(len(criticals), 1, criticals)
        self.assertIn("Cannot write the journal", criticals[0])

        # Space returns: the journal recovers within its retry interval.
        freed_at = time.monotonic()
        yield disk.free(journal)
        yield poll(lambda: not journal.full, self.retry_interval + 5, "journal recovers")
        recovery = time.monotonic() - freed_at
        self.assertLessEqual(recovery, self.retry_interval + 1.0)
        self.assertIsNone(journal.failing)
        self.assertFalse(factory.paused)
        self.assertIn(listener.port, reactor.getReaders(), "the port accepts again")
        upload = yield late
        self.assertTrue(upload.acked, f"the station that waited is served: {upload.error}")
        self.assertEqual(factory.stats.connections_accepted, accepted + 1)
        clock.now += 1
        data, seq = packet(clock.now)
        upload = yield deliver(reactor, port, data, seq)
        self.assertTrue(upload.acked, upload.error)

        if disk.stop_influx:
            influx.start()
        yield poll(
            lambda: journal.stats.packets_delivered == len(sent), 20, "all delivered"
        )
        yield service.stopService()
        status = journal_status(disk.data_dir)
        self.assertEqual((status.pending, status.quarantined), (0, 0))
        print(
            f"\n  disk full ({disk.name}): {filled}, the journal full after "
            f"{fill_count} packets, recovered {recovery:.2f} s after space "
            f"returned, {len(sent)} packets in {time.monotonic() - started:.1f} s"
        )
        self.assertEqual(len(criticals), 1, criticals)
        want = expected_points(sent, places)
        have = stored_series(influx, ("light", "humidity", "temperature"))
        self.assertEqual(sorted(have), sorted(want))
        for series, points in want.items():
            self.assertEqual(have[series], points, series)


class JournalFullStateTests(InProcessMixin, TestCase):
    """
    The journal's full state at its edges: already full at start-up, and a
    small --journal-max-size with nothing waiting (both were bugs: the
    listener kept accepting, and the write-ahead log counted as backlog).
    """

    timeout = 60

    def test_fullAtStartDoesNotListen(self):
        """
        A journal that is already full when the server starts (here: its
        disk has less free space than --journal-min-free) must keep the
        listener from accepting stations, as it does when it fills later.
        """
        service = self.build(
            f"http://127.0.0.1:{free_listening_port()}",
            reference_devices_toml(**{"1": "balcony"}),
            "--journal-min-free",
            "1000T",
        )
        service.startService()
        self.assertTrue(service.journal.full)
        self.assertTrue(service.listener.factory.paused, "station connections are read")
        self.assertNotIn(service.listener.port, reactor.getReaders(), "the port accepts")

    @inlineCallbacks
    def test_writeAheadLogIsNotBacklog(self):
        """
        With InfluxDB up and taking every point, a small --journal-max-size is
        never reached: nothing waits in the journal.
        """
        influx = self.start_influx()
        service = self.build(
            influx.url,
            reference_devices_toml(**{"1": "balcony"}),
            "--journal-max-size",
            "1M",
            "--journal-min-free",
            "0",
            "--flush-interval",
            "0.01",
        )
        service.startService()
        port = self.port_of(service)
        journal = service.journal
        acked = 0
        for seq in range(300):
            upload = yield deliver(
                reactor, port, fleet_packet(1, seq, records=6), seq, ack_timeout=1.0
            )
            if not upload.acked:
                break
            acked += 1
        yield poll(lambda: journal.stats.packets_delivered == acked, 10, "all delivered")
        status = yield journal.status()
        self.assertEqual(status.pending, 0)
        self.assertFalse(
            journal.full,
            f"the journal is full with nothing pending after {acked} packets: "
            f"{status.used_bytes} bytes used, {status.file_bytes} on disk",
        )
        self.assertEqual(acked, 300, upload.error)
