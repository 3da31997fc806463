"""
The server end to end against a bare Twisted server, on this machine, with one load
generator.  Run by hand, from the project root:

    python bench/throughput.py              # everything, 3 runs: about 12 minutes
    python bench/throughput.py --quick      # a few seconds per phase: a self-check (1 min)

What it measures (docs/performance.md explains each method):

1. ceiling: bench/ceiling.py (accept, read until close, count) under the
   sender at full speed: packets/s.
2. end to end: `twistd -n weather` (default settings, journal in a temporary
   --data-dir, --devices with many reference-layout stations) writing to a
   private influxd started for the run: packets/s counted only once InfluxDB has
   acknowledged every point (influxd's /debug/vars pointsWrittenOK, checked
   against a count query), at full load and, the headline, sustained: the
   highest fixed rate (--probes bisecting probes) after which every point is
   in InfluxDB within --keep-up seconds; twistd's and influxd's CPU seconds
   per 1,000 packets, twistd's main-thread CPU and run-queue time, twistd's
   peak RSS (VmHWM).
3. latency at a fixed rate (--latency-rate, default 500/s): from the moment
   the sender wrote a packet's last byte to the moment a poller finds the
   packet's last point in InfluxDB; p50, p99.
4. overload (--no-overload skips it): at full load InfluxDB is stopped
   (SIGSTOP) for --outage-seconds; the server's RSS meanwhile, then the time
   the server takes to empty its journal once InfluxDB continues, and whether
   every point arrived.

The sender is bench/loadgen.c, compiled with `cc -O2` into the run's temporary
directory.  Every process started here (influxd, twistd, ceiling, sender) is
stopped on exit, Ctrl-C included; only loopback addresses are used.  Figures
are the median of --runs runs; the ceiling and end-to-end runs alternate, and
the ratio is taken within each run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.integration.daemon import (  # noqa: E402
    Daemon,
    die_with_parent,
    stop_process,
    twistd,
)
from weather.tools import simulate  # noqa: E402
from weather.tools.localinflux import InfluxServer, free_port  # noqa: E402

DATABASE = "weather"
RECORDS = 30
POINTS_PER_PACKET = 3 * RECORDS
#: The sender puts (seq % SEQ_CODES) << 2 in the last record's temperature code
#: (not 16384: 16383 << 2 is 0xfffc, the SI7021's failure code, never stored).
SEQ_CODES = 16383
MEASUREMENTS = ("light", "humidity", "temperature")
NS = 1_000_000_000


# -- processes ----------------------------------------------------------------


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), or of one thread."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runnable_seconds(pid: int, thread: int) -> float:
    """
    Seconds a thread spent on a CPU or waiting in a run queue for one
    (/proc/.../schedstat): busy, whether or not the machine had a core free.
    """
    with open(f"/proc/{pid}/task/{thread}/schedstat") as f:
        running, waiting, _ = (int(x) for x in f.read().split())
    return (running + waiting) / NS


def memory_kib(pid: int, key: str = "VmRSS") -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def build_loadgen(directory: str) -> str:
    """Compile bench/loadgen.c into C{directory}; the path of the program."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("a C compiler (cc) is needed for bench/loadgen.c")
    program = os.path.join(directory, "loadgen")
    subprocess.run(
        [compiler, "-O2", "-o", program, os.path.join(HERE, "loadgen.c")], check=True
    )
    return program


@dataclass
class Load:
    """How the sender runs."""

    program: str
    concurrency: int
    devices: int
    sources: int

    def start(
        self,
        port: int,
        seconds: float,
        rate: float = 0,
        times: str | None = None,
    ) -> subprocess.Popen:
        command = [
            self.program,
            "--port",
            str(port),
            "--seconds",
            str(seconds),
            "--rate",
            str(rate),
            "--concurrency",
            str(self.concurrency),
            "--devices",
            str(self.devices),
            "--sources",
            str(self.sources),
        ]
        if times:
            command += ["--times", times]
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )

    @staticmethod
    def result(process: subprocess.Popen) -> dict:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"loadgen exited with {process.returncode}")
        result = json.loads(out)
        result["cpu"] = result["cpu_user"] + result["cpu_sys"]
        return result


def devices_toml(count: int) -> str:
    """Stations 1..count of the reference layout, placed at bench001, bench002..."""
    devices = range(1, count + 1)
    return simulate.devices_toml(devices, {d: f"bench{d:03d}" for d in devices})


class Ceiling:
    """bench/ceiling.py in a subprocess, its cumulative counts read as it prints them."""

    def __init__(self, backlog: int) -> None:
        self.samples: list[tuple[float, int, int]] = []
        port = "tcp:0:interface=127.0.0.1" + (f":backlog={backlog}" if backlog else "")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-u",
                os.path.join(HERE, "ceiling.py"),
                "--quiet",
                "--port",
                port,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "listening":
            stop_process(self.process)
            raise RuntimeError(f"bench/ceiling.py did not start: {line}")
        self.port = int(line[1])
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.split()
            if parts and parts[0] == "stats":
                self.samples.append((float(parts[1]), int(parts[2]), int(parts[3])))

    def stop(self) -> None:
        stop_process(self.process)
        self._reader.join(5)


class Weather(Daemon):
    """`twistd -n weather` in a subprocess, on loopback ports of its own."""

    def __init__(
        self, influx_url: str, workdir: str, devices: str, args: list[str], backlog: int
    ):
        self.port = free_port()
        self.metrics_port = free_port()
        self.data_dir = os.path.join(workdir, "data")
        arguments = [
            "--port",
            f"tcp:{self.port}:interface=127.0.0.1"
            + (f":backlog={backlog}" if backlog else ""),
            "--influx-url",
            influx_url,
            "--database",
            DATABASE,
            "--data-dir",
            self.data_dir,
            "--devices",
            devices,
            "--metrics-port",
            str(self.metrics_port),
            *args,
        ]
        super().__init__(arguments, workdir, os.path.join(workdir, "twistd.log"))

    def cpu(self) -> float:
        """CPU seconds of the server (all its threads)."""
        return cpu_seconds(self.pid)

    def main_thread(self) -> tuple[float, float]:
        """The main thread's CPU seconds and on-CPU-or-waiting seconds."""
        return cpu_seconds(self.pid, self.pid), runnable_seconds(self.pid, self.pid)

    @staticmethod
    def main_shares(
        before: tuple[float, float], after: tuple[float, float], elapsed: float
    ) -> tuple[float, float]:
        """The main thread's (CPU, busy) shares of C{elapsed} between two L{main_thread}."""
        return (after[0] - before[0]) / elapsed, (after[1] - before[1]) / elapsed

    def memory_kib(self, key: str = "VmRSS") -> int:
        """The server's VmRSS or VmHWM."""
        return memory_kib(self.pid, key)

    def metrics(self) -> dict[str, float]:
        """The server's /metrics: {name or name{labels}: value}."""
        values: dict[str, float] = {}
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith("weather_"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def received(self) -> int:
        """
        Connections the server took, once none is open: each carried one
        packet.  Packets the sender wrote but the kernel dropped (a listen
        queue overflow ends in a reset) are not among them.
        """
        deadline = time.monotonic() + 30
        while True:
            figures = self.metrics()
            if not figures.get("weather_connections_active") or time.monotonic() > deadline:
                return int(figures.get("weather_connections_accepted_total", 0))
            time.sleep(0.1)

    def journal_pending(self) -> int:
        """Packets in the journal not yet acknowledged by InfluxDB.

        The query `weather journal status` runs, on a read-only connection."""
        path = os.path.join(self.data_dir, "journal.sqlite3")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(
                "SELECT count(*) FROM packet WHERE reason IS NULL"
            ).fetchone()[0]
        finally:
            db.close()

    def journal_status(self) -> str:
        """`weather journal status --data-dir D`, as the operator would run it."""
        weather = os.path.join(os.path.dirname(twistd()), "weather")
        result = subprocess.run(
            [weather, "journal", "status", "--data-dir", self.data_dir],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout + result.stderr


class Influx:
    """A private influxd for one phase (L{weather.tools.localinflux.InfluxServer})."""

    def __init__(self, workdir: str) -> None:
        self.server = InfluxServer(base_dir=os.path.join(workdir, "influxd"))
        self.server.start()
        self.server.create_database(DATABASE)

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    @property
    def url(self) -> str:
        return self.server.url

    def points_written(self) -> int:
        """influxd's count of points written through its HTTP API (pointsWrittenOK)."""
        _, _, body = self.server.request("GET", "/debug/vars", timeout=30)
        stats = json.loads(body)
        return sum(
            int(value["values"].get("pointsWrittenOK", 0))
            for key, value in stats.items()
            if key.startswith("httpd")
        )

    def counts(self) -> dict[str, int]:
        """Points stored per measurement."""
        counts = {}
        for measurement in MEASUREMENTS:
            result = self.server.query(
                f'SELECT count("value") FROM "{measurement}"', DATABASE
            )
            series = result["results"][0].get("series")
            counts[measurement] = int(series[0]["values"][0][1]) if series else 0
        return counts

    def stop(self) -> None:
        process = self.server.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
        self.server.stop()


@contextlib.contextmanager
def guarded_stop(pid: int) -> Iterator[None]:
    """
    While influxd is SIGSTOPped: a watchdog that continues and stops it should this
    script be killed outright (a stopped process ignores the SIGTERM it would get).
    """
    watchdog = subprocess.Popen(
        [
            "sh",
            "-c",
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"kill -CONT {pid} 2>/dev/null; kill -TERM {pid} 2>/dev/null",
        ],
        start_new_session=True,
    )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        watchdog.kill()
        watchdog.wait()


def wait_until(predicate, timeout: float, interval: float = 0.1) -> float | None:
    """Poll C{predicate}; the time.time() it first held, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.time()
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


# -- phases -------------------------------------------------------------------


@dataclass
class Settings:
    load: Load
    seconds: float
    latency_rate: float
    latency_seconds: float
    outage_seconds: float
    server_args: list[str]
    devices_file: str
    tmp: str
    backlog: int = 0
    probes: int = 5
    probe_seconds: float = 10.0
    keep_up: float = 2.0
    drain_timeout: float = 600.0
    run_number: int = field(default=0)


def ceiling_run(settings: Settings) -> dict:
    ceiling = Ceiling(settings.backlog)
    try:
        cpu0 = cpu_seconds(ceiling.process.pid)
        started = time.time()
        sender = settings.load.start(ceiling.port, settings.seconds)
        sent = Load.result(sender)
        finished = time.time()
        time.sleep(0.5)
        cpu = cpu_seconds(ceiling.process.pid) - cpu0
    finally:
        ceiling.stop()
    # The rate between 1 s after the start and the end of the load.
    window = [s for s in ceiling.samples if started + 1 <= s[0] <= finished]
    if len(window) < 2:
        raise RuntimeError("the ceiling server reported too little; use more --seconds")
    (t0, p0, _), (t1, p1, _) = window[0], window[-1]
    total = ceiling.samples[-1][1] if ceiling.samples else 0
    bad = ceiling.samples[-1][2] if ceiling.samples else 0
    return {
        "rate": (p1 - p0) / (t1 - t0),
        "received": total,
        "bad": bad,
        "sent": sent["sent"],
        "cpu_per_1000": cpu / max(total, 1) * 1000,
        "cpu_share": cpu / (finished - started),
        "sender": sent,
        "sender_share": sent["cpu"] / sent["elapsed"],
    }


def _workdir(settings: Settings, name: str) -> str:
    return tempfile.mkdtemp(prefix=f"{name}-", dir=settings.tmp)


@contextlib.contextmanager
def servers(settings: Settings, name: str) -> Iterator[tuple[str, Influx, Weather]]:
    """A fresh influxd and twistd weather for one phase; both stopped, files removed."""
    workdir = _workdir(settings, name)
    influx = server = None
    try:
        influx = Influx(workdir)
        server = Weather(
            influx.url,
            workdir,
            settings.devices_file,
            settings.server_args,
            settings.backlog,
        )
        server.wait_ready(server.metrics)
        yield workdir, influx, server
    finally:
        if server is not None:
            server.stop()
        if influx is not None:
            influx.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def probe(settings: Settings, server: Weather, influx: Influx, rate: float) -> dict:
    """
    Send at a fixed C{rate} for --probe-seconds; kept up with if the sender
    kept its schedule and InfluxDB had every point within --keep-up seconds
    of the last packet.
    """
    written0, received0 = influx.points_written(), server.received()
    cpu0, icpu0 = server.cpu(), cpu_seconds(influx.pid)
    main0 = server.main_thread()
    started = time.time()
    sent = Load.result(settings.load.start(server.port, settings.probe_seconds, rate=rate))
    load_end = time.time()
    received = server.received() - received0
    expected = received * POINTS_PER_PACKET
    done = wait_until(
        lambda: influx.points_written() - written0 >= expected, settings.drain_timeout, 0.05
    )
    if done is None:
        raise RuntimeError(f"InfluxDB did not get all {expected} points")
    elapsed = done - started
    achieved = received / sent["elapsed"]
    lag = done - load_end
    cpu = server.cpu() - cpu0
    main_share, main_busy = Weather.main_shares(main0, server.main_thread(), elapsed)
    result = {
        "rate": rate,
        "achieved": achieved,
        "lag": lag,
        "ok": lag <= settings.keep_up and achieved >= 0.97 * rate,
        "cpu_per_1000": cpu / max(received, 1) * 1000,
        "cpu_share": cpu / elapsed,
        "main_share": main_share,
        "main_busy": main_busy,
        "influx_cpu_per_1000": (cpu_seconds(influx.pid) - icpu0) / max(received, 1) * 1000,
        "influx_share": (cpu_seconds(influx.pid) - icpu0) / elapsed,
        "sender_share": sent["cpu"] / sent["elapsed"],
    }
    progress(
        f"  probe {rate:,.0f}/s: {achieved:,.0f}/s taken, all points in InfluxDB "
        f"{lag:.2f} s after the last packet: {'kept up' if result['ok'] else 'behind'}"
    )
    return result


def search(settings: Settings, server: Weather, influx: Influx, start: float) -> list[dict]:
    """The highest fixed rate the server keeps up with: --probes probes from C{start}."""
    low, high = 0.0, math.inf
    rate = round(start, -1)
    probes = []
    for _ in range(settings.probes):
        result = probe(settings, server, influx, rate)
        probes.append(result)
        if result["ok"]:
            low = max(low, rate)
        else:
            high = min(high, rate)
        if high == math.inf:
            rate = low * 1.25
        elif low == 0:
            rate = high * 0.7
        else:
            rate = (low + high) / 2
        rate = round(rate, -1)
    return probes


def end_to_end_run(settings: Settings) -> dict:
    with servers(settings, "e2e") as (workdir, influx, server):
        written0 = influx.points_written()
        cpu0, icpu0 = server.cpu(), cpu_seconds(influx.pid)
        main0 = server.main_thread()
        samples: list[tuple[float, int]] = []
        started = time.time()
        sender = settings.load.start(server.port, settings.seconds)
        while sender.poll() is None:
            samples.append((time.time(), influx.points_written() - written0))
            time.sleep(0.5)
        sent = Load.result(sender)
        load_end = time.time()
        received = server.received()
        expected = received * POINTS_PER_PACKET

        def written() -> bool:
            count = influx.points_written() - written0
            samples.append((time.time(), count))
            if len(samples) > 600 and count == samples[-600][1]:
                raise RuntimeError(
                    f"InfluxDB got {count} of {expected} points and no more for 60 s:\n"
                    + server.log_tail()
                )
            return count >= expected

        done = wait_until(written, settings.drain_timeout, 0.1)
        if done is None:
            raise RuntimeError(
                f"InfluxDB did not get all {expected} points within "
                f"{settings.drain_timeout} s:\n{server.log_tail()}"
            )
        cpu = server.cpu() - cpu0
        main, busy = (
            share * (done - started)
            for share in Weather.main_shares(main0, server.main_thread(), done - started)
        )
        icpu = cpu_seconds(influx.pid) - icpu0
        counts = influx.counts()
        figures = server.metrics()
        points_written_ok = influx.points_written() - written0
        full_rate = received / (done - started)
        probes = search(settings, server, influx, full_rate) if settings.probes else []
        kept = [p for p in probes if p["ok"]]
        best = max(kept, key=lambda p: p["rate"]) if kept else None
        hwm = server.memory_kib("VmHWM")
        # The delivery rate while the load ran, from 2 s in.
        window = [s for s in samples if started + 2 <= s[0] <= load_end]
        delivering = (
            (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) / 90
            if len(window) >= 2 and window[-1][0] > window[0][0]
            else float("nan")
        )
        return {
            "sent": sent["sent"],
            "received": received,
            "sender": sent,
            "sender_share": sent["cpu"] / sent["elapsed"],
            "accepted_rate": received / sent["elapsed"],
            "full_rate": full_rate,
            "rate": best["achieved"] if best else (float("nan") if probes else full_rate),
            "best": best,
            "probes": probes,
            "delivering_rate": delivering,
            "drain_after_load": done - load_end,
            "cpu_per_1000": cpu / received * 1000,
            "cpu_share": cpu / (done - started),
            "main_share": main / (done - started),
            "main_busy": busy / (done - started),
            "influx_cpu_per_1000": icpu / received * 1000,
            "influx_share": icpu / (done - started),
            "hwm_kib": hwm,
            "points_written_ok": points_written_ok,
            "counts": counts,
            "counts_ok": all(c == received * RECORDS for c in counts.values()),
            "refused": sum(
                v for k, v in figures.items() if k.startswith("weather_connections_refused")
            ),
            "rejected": sum(
                v for k, v in figures.items() if k.startswith("weather_packets_rejected")
            ),
            "retried": figures.get("weather_points_retried_total", 0),
            "accepted": figures.get("weather_packets_accepted_total", 0),
        }


class Poller:
    """
    Finds each packet's last point (the last record's temperature) in InfluxDB
    as soon as it is queryable.

    The sender writes "seq device t_ns" for each packet once its last byte is
    written; the packet's last record carries seq: temperature code
    (seq % SEQ_CODES) << 2.  Every --poll-interval the poller asks InfluxDB for the
    temperature points stamped since the oldest packet not yet found (less a
    margin: the server stamps a packet with the arrival of its last byte, after
    the sender wrote it), and a packet's latency is the time the answer that
    first held its point came back, less the time its last byte was written.
    That is an upper bound: the point became queryable at most one poll
    interval plus one query earlier.
    """

    MARGIN_NS = 200_000_000

    def __init__(self, influx: Influx, times_path: str, interval: float) -> None:
        self.influx = influx
        self.times_path = times_path
        self.interval = interval
        #: (device, seq % SEQ_CODES) -> (seq, sent_ns), packets sent and not yet found.
        self.unseen: dict[tuple[int, int], tuple[int, int]] = {}
        #: Points found before the sender's line for them was read.
        self.early: dict[tuple[int, int], int] = {}
        self.latencies: dict[int, int] = {}
        self.found: set[tuple[int, int]] = set()
        self.error: Exception | None = None
        self.queries = 0
        self.query_seconds = 0.0
        self.sent_lines = 0
        self._offset = 0
        self._partial = ""
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        parsed = urllib.parse.urlsplit(influx.url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, 30)

    def start(self) -> None:
        self.thread.start()

    def _read_times(self) -> int:
        """Read the sender's new lines; the wall-clock time the read began."""
        now = time.time_ns()
        with contextlib.suppress(FileNotFoundError), open(self.times_path) as f:
            f.seek(self._offset)
            data = f.read()
            self._offset = f.tell()
            lines = (self._partial + data).split("\n")
            self._partial = lines.pop()
            for line in lines:
                seq, device, sent_ns = (int(x) for x in line.split())
                self.sent_lines += 1
                key = (device, seq % SEQ_CODES)
                if key in self.early:
                    self.latencies[seq] = self.early.pop(key) - sent_ns
                    self.found.add(key)
                else:
                    self.unseen[key] = (seq, sent_ns)
        return now

    def _query(self, since_ns: int) -> list[tuple[int, float]]:
        q = f'SELECT "value" FROM "temperature" WHERE time >= {since_ns} GROUP BY "place"'
        path = "/query?" + urllib.parse.urlencode({"db": DATABASE, "q": q, "epoch": "ns"})
        started = time.perf_counter()
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        body = response.read()
        self.queries += 1
        self.query_seconds += time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"query failed: {response.status} {body[:200]!r}")
        rows = []
        for series in json.loads(body)["results"][0].get("series", []):
            device = int(series["tags"]["place"].removeprefix("bench"))
            rows.extend((device, value) for _, value in series["values"])
        return rows

    def poll(self) -> None:
        read_at = self._read_times()
        oldest = min((sent for _, sent in self.unseen.values()), default=read_at)
        rows = self._query(min(oldest, read_at) - self.MARGIN_NS)
        seen_at = time.time_ns()
        for device, value in rows:
            code = round((value + 46.85) * 65536 / 175.72)
            key = (device, (code >> 2) % SEQ_CODES)
            found = self.unseen.pop(key, None)
            if found is not None:
                self.latencies[found[0]] = seen_at - found[1]
                self.found.add(key)
            elif key not in self.found:
                self.early.setdefault(key, seen_at)  # its sender line is not read yet

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                self.poll()
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self, expected: int, timeout: float) -> None:
        """Stop once all C{expected} packets are found, or after C{timeout} s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.thread.is_alive():
            if self.sent_lines >= expected and not self.unseen:
                break
            time.sleep(0.1)
        self.stopping.set()
        self.thread.join(10)
        if self.error is not None:
            raise RuntimeError(f"the latency poller failed: {self.error!r}")


def latency_run(settings: Settings, rate: float, seconds: float) -> dict:
    with servers(settings, "latency") as (workdir, influx, server):
        times = os.path.join(workdir, "times.txt")
        count = int(rate * seconds)
        devices = settings.load.devices
        if count > math.lcm(devices, SEQ_CODES):
            raise SystemExit("too many packets for unique sequence numbers: lower the rate")
        poller = Poller(influx, times, 0.02)
        poller.start()
        sender = settings.load.start(server.port, seconds, rate=rate, times=times)
        sent = Load.result(sender)
        poller.finish(sent["sent"], timeout=30)
        latencies = sorted(poller.latencies.values())
        missing = sent["sent"] - len(latencies)
        received = server.received()
        counts = influx.counts()
        if missing:
            print(
                f"  latency: {missing} packets not found within 30 s of the end",
                file=sys.stderr,
            )
        return {
            "sent": sent["sent"],
            "received": received,
            "rate": sent["sent"] / sent["elapsed"],
            "max_behind": sent["max_behind"],
            "found": len(latencies),
            "missing": missing,
            "p50": quantile(latencies, 0.50) / 1e9,
            "p99": quantile(latencies, 0.99) / 1e9,
            "max": latencies[-1] / 1e9 if latencies else float("nan"),
            "queries": poller.queries,
            "query_ms": poller.query_seconds / max(poller.queries, 1) * 1000,
            "poll_interval": poller.interval,
            "counts_ok": all(c == received * RECORDS for c in counts.values()),
        }


def quantile(values: list[int], q: float) -> float:
    """The q-quantile of sorted values (nearest rank)."""
    if not values:
        return float("nan")
    return float(values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))])


def overload_run(settings: Settings, before: float = 10.0) -> dict:
    with servers(settings, "overload") as (workdir, influx, server):
        written0 = influx.points_written()
        sender = settings.load.start(server.port, before + settings.outage_seconds)
        time.sleep(before)
        rss_before = server.memory_kib()
        rss: list[tuple[float, int]] = []
        pending: list[tuple[float, int]] = []
        with guarded_stop(influx.pid):
            os.kill(influx.pid, signal.SIGSTOP)
            stopped = time.time()
            next_pending = 0.0
            while sender.poll() is None:
                now = time.time()
                rss.append((now - stopped, server.memory_kib()))
                if now >= next_pending:
                    pending.append((now - stopped, server.journal_pending()))
                    next_pending = now + 5
                time.sleep(1.0)
            sent = Load.result(sender)
            outage_end = time.time()
            rss.append((outage_end - stopped, server.memory_kib()))
            at_end = server.journal_pending()
            figures = server.metrics()
            os.kill(influx.pid, signal.SIGCONT)
            continued = time.time()
        received = server.received()
        expected = received * POINTS_PER_PACKET
        drained = wait_until(
            lambda: server.journal_pending() == 0, settings.drain_timeout, 0.25
        )
        all_written = wait_until(
            lambda: influx.points_written() - written0 >= expected, 60, 0.25
        )
        counts = influx.counts()
        status = server.journal_status()
        return {
            "sent": sent["sent"],
            "received": received,
            "rate_during": received / sent["elapsed"],
            "outage": outage_end - stopped,
            "rss_before_kib": rss_before,
            "rss_max_kib": max(r for _, r in rss),
            "rss_end_kib": rss[-1][1],
            "rss": rss,
            "pending": pending,
            "pending_at_end": at_end,
            "writer_pending_points": figures.get("weather_points_pending", 0),
            "hwm_kib": server.memory_kib("VmHWM"),
            "drain": (drained - continued) if drained else None,
            "all_written": all_written is not None,
            "counts": counts,
            "counts_ok": all(c == received * RECORDS for c in counts.values()),
            "journal_status": status,
        }


# -- report -------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import twisted

    influxd = InfluxServer().influxd
    version = ""
    if influxd:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run(
                [influxd, "version"], capture_output=True, text=True, timeout=10
            ).stdout.split(" (")[0]
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "influxd": version,
        "kernel": platform.release(),
    }


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], fmt: str) -> str:
    return ", ".join(format(v, fmt) for v in values)


def report(
    args, info, ceilings, ends, latencies, overload, load_before, load_after
) -> None:
    today = datetime.date.today().isoformat()
    ratios = [e["rate"] / c["rate"] for c, e in zip(ceilings, ends, strict=False)]
    runs = max(len(ends), len(ceilings), len(latencies))
    print()
    print(
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}, "
        f"Python {info['python']}, Twisted {info['twisted']}, {info['influxd']}; "
        f"load average {load_before:.2f} before, {load_after:.2f} after; {today}."
    )
    print(
        f"Sender: bench/loadgen.c, {args.concurrency} connections in flight from "
        f"{args.sources} loopback addresses, {args.devices} devices; "
        f"{args.seconds:g} s per full-load run; median of {runs} run(s)."
    )
    print()
    print("| figure | median | runs |")
    print("|---|---|---|")
    rows: list[tuple[str, list[float], str]] = []
    if ceilings:
        rows.append(
            ("ceiling (bench/ceiling.py), packets/s", [c["rate"] for c in ceilings], ",.0f")
        )

    def at_best(key: str) -> list[float]:
        return [e["best"][key] if e["best"] else float("nan") for e in ends]

    if ends:
        rows.append(
            (
                f"end to end, sustained: highest fixed rate with every point in InfluxDB "
                f"within {args.keep_up:g} s, packets/s",
                [e["rate"] for e in ends],
                ",.0f",
            )
        )
    if ceilings and ends:
        rows.append(("ratio sustained end to end / ceiling (same run)", ratios, ".3f"))
    if ends:
        rows += [
            (
                "end to end at full load: packets/s until every point is acknowledged",
                [e["full_rate"] for e in ends],
                ",.0f",
            ),
            (
                "end to end at full load: packets/s taken in (journaled)",
                [e["accepted_rate"] for e in ends],
                ",.0f",
            ),
            ("twistd CPU s per 1,000 packets, sustained", at_best("cpu_per_1000"), ".3f"),
            (
                "twistd CPU s per 1,000 packets, full load",
                [e["cpu_per_1000"] for e in ends],
                ".3f",
            ),
            ("twistd CPU use (cores), sustained", at_best("cpu_share"), ".2f"),
            (
                "twistd main (reactor) thread CPU use (cores), sustained",
                at_best("main_share"),
                ".2f",
            ),
            (
                "twistd main thread on a CPU or waiting for one (cores), sustained",
                at_best("main_busy"),
                ".2f",
            ),
            (
                "twistd main thread CPU use (cores), full load",
                [e["main_share"] for e in ends],
                ".2f",
            ),
            (
                "twistd main thread on a CPU or waiting for one (cores), full load",
                [e["main_busy"] for e in ends],
                ".2f",
            ),
            (
                "influxd CPU s per 1,000 packets, sustained",
                at_best("influx_cpu_per_1000"),
                ".3f",
            ),
            ("influxd CPU use (cores), sustained", at_best("influx_share"), ".2f"),
            ("twistd peak RSS (VmHWM), MiB", [e["hwm_kib"] / 1024 for e in ends], ".1f"),
            (
                "sender CPU use (cores), full load end to end",
                [e["sender_share"] for e in ends],
                ".2f",
            ),
        ]
    if ceilings:
        rows += [
            ("ceiling server CPU use (cores)", [c["cpu_share"] for c in ceilings], ".2f"),
            (
                "sender CPU use (cores), ceiling",
                [c["sender_share"] for c in ceilings],
                ".2f",
            ),
        ]
    if latencies:
        rate = args.latency_rate
        rows += [
            (
                f"latency p50 at {rate:g} packets/s, ms",
                [x["p50"] * 1000 for x in latencies],
                ".0f",
            ),
            (
                f"latency p99 at {rate:g} packets/s, ms",
                [x["p99"] * 1000 for x in latencies],
                ".0f",
            ),
            (
                f"latency max at {rate:g} packets/s, ms",
                [x["max"] * 1000 for x in latencies],
                ".0f",
            ),
        ]
    for name, values, fmt in rows:
        print(f"| {name} | {format(median(values), fmt)} | {spread(values, fmt)} |")
    if overload:
        o = overload
        drain = f"{o['drain']:.1f} s" if o["drain"] is not None else "did not drain"
        print(
            f"| overload: influxd stopped {o['outage']:.0f} s at full load "
            f"({o['rate_during']:,.0f} packets/s taken): twistd RSS, MiB | "
            f"{o['rss_before_kib'] / 1024:.1f} before, max {o['rss_max_kib'] / 1024:.1f}, "
            f"{o['rss_end_kib'] / 1024:.1f} at the end | 1 |"
        )
        print(
            f"| overload: journal backlog at the end of the outage, then time to "
            f"drain it once influxd continues | {o['pending_at_end']:,} packets, {drain} "
            f"| 1 |"
        )
    print()
    checks = []
    for e in ends:
        checks.append(
            f"end to end: {e['sent']:,} packets sent, {e['received']:,} received "
            f"(resets seen by the sender: {e['sender']['resets']}), "
            f"pointsWrittenOK {e['points_written_ok']:,} "
            f"(expected {e['received'] * POINTS_PER_PACKET:,}), stored "
            f"{'/'.join(str(c) for c in e['counts'].values())} "
            f"({'all' if e['counts_ok'] else 'NOT all'} there), refused "
            f"{e['refused']:.0f}, rejected {e['rejected']:.0f}, points retried "
            f"{e['retried']:.0f}; delivering {e['delivering_rate']:,.0f}/s during "
            f"the load, {e['drain_after_load']:.1f} s to finish after it"
        )
    for e in ends:
        checks.append(
            "probes (rate: taken/s, seconds to all points, kept up): "
            + "; ".join(
                f"{p['rate']:,.0f}: {p['achieved']:,.0f}, {p['lag']:.2f} s, "
                f"{'yes' if p['ok'] else 'no'}"
                for p in e["probes"]
            )
        )
    for c in ceilings:
        checks.append(
            f"ceiling: {c['sent']:,} sent, {c['received']:,} counted, {c['bad']} bad, "
            f"resets seen by the sender: {c['sender']['resets']}"
        )
    for x in latencies:
        checks.append(
            f"latency: {x['sent']:,} packets ({x['received']:,} received) at "
            f"{x['rate']:,.0f}/s (sender at most "
            f"{x['max_behind']} behind schedule), {x['found']:,} found, "
            f"{x['missing']} missing; {x['queries']:,} polls of {x['query_ms']:.1f} ms; "
            f"{'all' if x['counts_ok'] else 'NOT all'} points stored"
        )
    if overload:
        o = overload
        checks.append(
            f"overload: {o['sent']:,} packets sent, {o['received']:,} received; "
            "RSS every second (s, MiB): "
            + ", ".join(f"{t:.0f}:{r / 1024:.0f}" for t, r in o["rss"])
        )
        checks.append(
            "overload: journal pending (s, packets): "
            + ", ".join(f"{t:.0f}:{p}" for t, p in o["pending"])
            + f"; writer held {o['writer_pending_points']:,.0f} points at the end; "
            f"peak RSS {o['hwm_kib'] / 1024:.1f} MiB; every point arrived: "
            f"{'yes' if o['counts_ok'] and o['all_written'] else 'NO'}"
            + (
                ""
                if o["counts_ok"] and o["all_written"]
                else f" (stored {'/'.join(map(str, o['counts'].values()))} of "
                f"{o['received'] * RECORDS:,} each; pointsWrittenOK "
                f"{'reached' if o['all_written'] else 'did not reach'} the expected count)"
            )
        )
        checks.append(
            "overload: weather journal status after: "
            + " / ".join(line.strip() for line in o["journal_status"].splitlines()[1:3])
        )
    for line in checks:
        print(f"- {line}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20, help="per full-load run")
    parser.add_argument("--concurrency", type=int, default=32, help="connections in flight")
    parser.add_argument("--devices", type=int, default=250, help="station ids 1..N")
    parser.add_argument("--sources", type=int, default=64, help="loopback source addresses")
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="listen queue of both servers (endpoint backlog=); 0: Twisted's (50)",
    )
    parser.add_argument(
        "--probes",
        type=int,
        default=5,
        help="fixed-rate probes searching the highest rate kept up with (0: none)",
    )
    parser.add_argument("--probe-seconds", type=float, default=10)
    parser.add_argument(
        "--keep-up",
        type=float,
        default=2.0,
        help="a probe is kept up with if every point is in InfluxDB this soon after it",
    )
    parser.add_argument("--latency-rate", type=float, default=500)
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--outage-seconds", type=float, default=60)
    parser.add_argument(
        "--overload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the InfluxDB outage phase",
    )
    parser.add_argument(
        "--phase",
        action="append",
        choices=["ceiling", "end-to-end", "latency"],
        help="run only these phases (repeatable; default: all)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra option for twistd weather, e.g. --server-arg=--flush-interval=0.5",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="self-check: 1 run, 4 s phases, a 10 s outage",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.latency_seconds, args.outage_seconds = 1, 4, 4, 10
        args.probes, args.probe_seconds = 2, 4
    if not 1 <= args.devices <= 255:
        parser.error("--devices: 1 to 255")
    phases = set(args.phase or ["ceiling", "end-to-end", "latency"])

    # A SIGTERM unwinds like Ctrl-C: every finally below stops what it started.
    signal.signal(signal.SIGTERM, _interrupted)
    info = machine()
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        progress(
            f"load average {load_before:.2f}: other work on this machine will show "
            "in the figures (see `uptime`)"
        )
    tmp = tempfile.mkdtemp(prefix="weather-throughput-")
    try:
        devices_file = os.path.join(tmp, "devices.toml")
        with open(devices_file, "w") as f:
            f.write(devices_toml(args.devices))
        load = Load(build_loadgen(tmp), args.concurrency, args.devices, args.sources)
        settings = Settings(
            load=load,
            seconds=args.seconds,
            latency_rate=args.latency_rate,
            latency_seconds=args.latency_seconds,
            outage_seconds=args.outage_seconds,
            server_args=args.server_arg,
            devices_file=devices_file,
            tmp=tmp,
            backlog=args.backlog,
            probes=args.probes,
            probe_seconds=args.probe_seconds,
            keep_up=args.keep_up,
        )
        ceilings, ends, latencies = [], [], []
        overload = None
        for run in range(1, args.runs + 1):
            settings.run_number = run
            if "ceiling" in phases:
                c = ceiling_run(settings)
                ceilings.append(c)
                progress(f"run {run}: ceiling {c['rate']:,.0f} packets/s")
            if "end-to-end" in phases:
                e = end_to_end_run(settings)
                ends.append(e)
                progress(
                    f"run {run}: end to end {e['rate']:,.0f} packets/s "
                    f"({e['accepted_rate']:,.0f}/s accepted), "
                    f"{e['cpu_per_1000']:.3f} CPU s/1000, "
                    f"peak RSS {e['hwm_kib'] / 1024:.1f} MiB"
                )
            if "latency" in phases:
                x = latency_run(settings, args.latency_rate, args.latency_seconds)
                latencies.append(x)
                progress(
                    f"run {run}: latency at {x['rate']:,.0f}/s: "
                    f"p50 {x['p50'] * 1000:.0f} ms, "
                    f"p99 {x['p99'] * 1000:.0f} ms, max {x['max'] * 1000:.0f} ms"
                )
        if args.overload:
            overload = overload_run(settings)
            progress(
                f"overload: RSS max {overload['rss_max_kib'] / 1024:.1f} MiB, "
                f"{overload['pending_at_end']:,} packets in the journal, drained in "
                f"{overload['drain'] or float('nan'):.1f} s"
            )
        report(
            args,
            info,
            ceilings,
            ends,
            latencies,
            overload,
            load_before,
            os.getloadavg()[0],
        )
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything started", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
