"""
Issue 15's attacks on the station listener, at their full size, against the
real server: what a real station waits meanwhile, and what the attacks cost
in memory and log lines.  Run by hand:

    python bench/listener_attacks.py [--scenario NAME ...]

Each scenario starts `twistd -n weather` in a subprocess writing to a
private influxd, with --metrics-port for the counts (bench/abuse.py's
harness).  The attackers use loopback addresses 127.0.0.2 and up; the
stations 127.0.0.1, each sending a packet and timing connect to ACK.

Scenarios:

  slow-senders  defaults; 540 connections from 18 addresses (30 each, under
                the per-address limit), each sending a byte every 10 s and
                connecting again whenever cut, for 60 s; a station every 2 s
  nat-burst     defaults; 500 uploads from one address written and closed
                back to back without waiting for the ACK (today's firmware
                behind one NAT), a station elsewhere meanwhile
  half-close    defaults; 200 stations at once from one address, each
                sending its packet, shutting its side (SHUT_WR) and reading
  descriptors   the server under RLIMIT_NOFILE 1024 (soft and hard) with
                1,100 idle connections to --metrics-port; a station waiting
                for its ACK and one that writes and closes, served once the
                idle connections go

Loopback addresses only; needs `ulimit -n` above 2,000.
"""

from __future__ import annotations

import argparse
import errno
import os
import platform
import resource
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from abuse import (  # noqa: E402
    DATABASE,
    Server,
    metrics,
    rss_kib,
    source_addresses,
    station,
    upload,
)

from tests.integration.daemon import twistd  # noqa: E402
from weather.tools.localinflux import InfluxServer  # noqa: E402
from weather.tools.simulate import ACK  # noqa: E402


def limited_command(nofile: int) -> list[str]:
    """C{twistd -n weather} under RLIMIT_NOFILE C{nofile}."""
    limited = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", limited, twistd(), "-n", "--pidfile=", "weather"]


def start(influx: InfluxServer, args: list[str], nofile: int | None = None) -> Server:
    """The server with C{args}, under RLIMIT_NOFILE C{nofile} if given, once ready."""
    workdir = tempfile.mkdtemp(prefix="weather-listener-")
    command = None if nofile is None else limited_command(nofile)
    server = Server(influx.url, args, workdir, command=command)
    server.wait_ready(lambda: metrics(server.metrics_port), timeout=30)
    return server


def stop(server: Server) -> None:
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def summary(times: list[float]) -> str:
    return (
        f"{len(times)} stations: median {statistics.median(times) * 1000:.0f} ms, "
        f"max {max(times):.2f} s"
    )


class SlowSender:
    """A connection sending a packet a byte every C{every} s; again when cut."""

    def __init__(self, port: int, source: str, every: float) -> None:
        self.port = port
        self.source = source
        self.every = every
        self.data = upload(0)
        self.connections = 0
        self.socket: socket.socket | None = None
        self.connect()

    def connect(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.bind((self.source, 0))
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", self.port))
        self.socket = s
        self.sent = 0
        self.due = time.monotonic()
        self.connections += 1

    def tick(self, now: float) -> None:
        if now < self.due:
            return
        self.due = now + self.every
        try:
            if self.socket.recv(1, socket.MSG_PEEK) == b"":
                raise ConnectionResetError
        except BlockingIOError:
            pass
        except OSError:
            self.socket.close()
            self.connect()
            return
        try:
            at = self.sent % len(self.data)
            self.socket.send(self.data[at : at + 1])
            self.sent += 1
        except BlockingIOError:
            pass  # still connecting (in the listen queue)
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.socket.close()
                self.connect()

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()


def slow_senders(influx: InfluxServer) -> None:
    server = start(influx, [])
    senders: list[SlowSender] = []
    try:
        station(server.port, upload(1))
        rss_before, lines_before = rss_kib(server.pid), len(server.log_lines())
        sources = source_addresses(18)
        for i in range(540):
            senders.append(SlowSender(server.port, sources[i // 30], every=10.0))
            if i % 40 == 39:
                time.sleep(0.05)  # the listen queue holds 50
        times = []
        started = time.monotonic()
        next_station = started + 2
        while time.monotonic() - started < 60:
            now = time.monotonic()
            for sender in senders:
                sender.tick(now)
            if now >= next_station:
                times.append(station(server.port, upload(2 + len(times)), timeout=60))
                next_station = time.monotonic() + 2
            time.sleep(0.05)
        figures = metrics(server.metrics_port)
        rss_after, lines_after = rss_kib(server.pid), len(server.log_lines())
    finally:
        for sender in senders:
            sender.close()
        stop(server)
    print("\n== slow-senders: 540 connections (18 addresses x 30), a byte every 10 s, 60 s")
    print(
        f"attack: {sum(s.connections for s in senders)} connections in all; server "
        f"cut {int(figures['weather_connections_cut_for_room_total'])} for a new one, "
        f"{int(figures['weather_connections_past_deadline_total'])} at "
        "--packet-deadline, "
        f"{int(figures['weather_connections_timed_out_total'])} idle"
    )
    print(f"stations: {summary(times)}")
    print(
        f"server RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB; "
        f"log {lines_after - lines_before} lines in the 60 s"
    )


def fire_and_forget(port: int, source: str, packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((source, 0))
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
        s.sendall(packet)


def nat_burst(influx: InfluxServer) -> None:
    server = start(influx, [])
    try:
        station(server.port, upload(1))
        base = metrics(server.metrics_port)
        lines_before = len(server.log_lines())
        started = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            during = pool.submit(station, server.port, upload(2))
            for i in range(500):
                fire_and_forget(server.port, "127.0.0.2", upload(3 + i))
            sent = time.monotonic() - started
            waited = during.result()
        while True:
            figures = metrics(server.metrics_port)
            done = (
                figures["weather_packets_acknowledged_total"]
                - base["weather_packets_acknowledged_total"]
            )
            if done >= 501 or time.monotonic() - started > 120:
                break
            time.sleep(0.05)
        took = time.monotonic() - started
        after = station(server.port, upload(600))
        lines = len(server.log_lines()) - lines_before
    finally:
        stop(server)
    held = int(figures['weather_connections_held_total{reason="peer_limit"}'])
    refused = sum(
        v for k, v in figures.items() if k.startswith("weather_connections_refused")
    )
    print("\n== nat-burst: 500 uploads from one address, written and closed back to back")
    print(
        f"sent in {sent:.2f} s; {int(done) - 1} of 500 journaled and acknowledged "
        f"{took:.2f} s after the first; {held} held for a while, {int(refused)} refused"
    )
    print(
        f"a station elsewhere: {waited * 1000:.0f} ms during, {after * 1000:.0f} ms after; "
        f"log {lines} lines"
    )


def half_closer(port: int, packet: bytes) -> tuple[bytes | str, float]:
    """Send, SHUT_WR, read to the end: what came back (or the error), and when."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(packet)
            s.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := s.recv(16):
                received += chunk
    except OSError as e:
        return e.strerror or str(e), time.perf_counter() - started
    return received, time.perf_counter() - started


def half_close(influx: InfluxServer) -> None:
    server = start(influx, [])
    try:
        with ThreadPoolExecutor(200) as pool:
            results = list(
                pool.map(lambda i: half_closer(server.port, upload(1 + i)), range(200))
            )
    finally:
        stop(server)
    acks = sum(received == ACK for received, _ in results)
    other = sorted({str(received) for received, _ in results if received != ACK})
    print("\n== half-close: 200 stations at once, each SHUT_WR after its packet")
    print(
        f"{acks} of 200 got the ACK then the end{f' (others: {other})' if other else ''}; "
        f"{summary([t for _, t in results])}"
    )


def descriptors(influx: InfluxServer) -> None:
    server = start(influx, [], nofile=1024)
    idle: list[socket.socket] = []
    try:
        station(server.port, upload(1))
        lines_before = len(server.log_lines())
        rss_before = rss_kib(server.pid)
        for i in range(1100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", server.metrics_port))
            idle.append(s)
            if i % 40 == 39:
                time.sleep(0.05)  # the listen queue holds 50
        held, deadline = -1, time.monotonic() + 30
        while time.monotonic() < deadline:  # until the server takes no more
            time.sleep(1)
            now_held = len(os.listdir(f"/proc/{server.pid}/fd"))
            if now_held == held:
                break
            held = now_held
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        waiting.sendall(upload(2))
        fire_and_forget(server.port, "127.0.0.1", upload(3))
        waiting.settimeout(3)
        try:
            early = waiting.recv(1)
        except TimeoutError:
            early = None
        started = time.monotonic()
        for s in idle:
            s.close()
        idle = []
        waiting.settimeout(30)
        answer = waiting.recv(1) if early is None else early
        served = time.monotonic() - started
        waiting.close()
        time.sleep(1)
        figures = metrics(server.metrics_port)
        lines = server.log_lines()[lines_before:]
        rss_after = rss_kib(server.pid)
    finally:
        for s in idle:
            s.close()
        stop(server)
    print("\n== descriptors: RLIMIT_NOFILE 1024, 1,100 idle connections to --metrics-port")
    print(
        f"server held {held} descriptors; the waiting station got "
        f"{'nothing (not accepted, not closed)' if early is None else repr(early)} in 3 s, "
        f"then {answer!r} {served * 1000:.0f} ms after the idle connections closed; "
        f"{int(figures['weather_packets_acknowledged_total'])} packets acknowledged in all"
    )
    print(
        f"log: {len(lines)} lines, "
        f"{sum('Out of file descriptors' in line for line in lines)} about descriptors, "
        f"{sum('EMFILE recovery' in line for line in lines)} 'EMFILE recovery'; "
        f"RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB"
    )


SCENARIOS = {
    "slow-senders": slow_senders,
    "nat-burst": nat_burst,
    "half-close": half_close,
    "descriptors": descriptors,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2000:
        raise SystemExit(f"ulimit -n is {soft}: raise it above 2,000")
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )
    influx = InfluxServer()
    influx.start()
    try:
        influx.create_database(DATABASE)
        for name in args.scenario or list(SCENARIOS):
            SCENARIOS[name](influx)
    finally:
        influx.stop()


if __name__ == "__main__":
    main()
