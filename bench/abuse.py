"""
An abusive peer opening 10,000 idle connections: what the server holds, what
it refuses, how much memory that costs, and how long a real station waits
for its acknowledgement meanwhile.  Run by hand:

    python bench/abuse.py [--connections 10000] [--scenario NAME ...]

Each scenario starts the server as `twistd -n weather` in a subprocess,
writing to a private influxd (L{weather.tools.localinflux}), with --metrics-port
for the counts.  A station on 127.0.0.1 sends a reference packet and waits
for the ACK byte; the server's resident memory (VmRSS) is read; the abuser
opens its connections from other loopback addresses (127.0.0.2 and up),
never sending a byte; once the server has settled, its memory is read
again and the station sends another packet, timed from connect to ACK.
The abuser opens its connections in batches of 40, each once the server has
taken the last (it polls /metrics, whose cost is in the server CPU figure):
faster, the kernel's listen queue overflows and the rest trickle in over a
minute of SYN-ACK retries.

Scenarios:

  one-address    default limits, every connection from 127.0.0.2: 32 read,
                 the rest held unread up to --max-connections
  many-addresses default limits, the connections spread over 400 addresses
                 (25 each, under the per-address limit): --max-connections
                 is reached, accepting stops until the oldest have gone 5 s
                 without a packet, then each new connection takes the place
                 of one
  all-accepted   --max-connections 10100 --max-connections-per-peer 10000
                 --idle-timeout 600: the worst case, every connection held;
                 gives the memory per connection
  partial-packets  default limits, 480 connections from 15 addresses (32
                 each), every one sending all but the last byte of the
                 largest packet --max-packet-size lets through (1,023 bytes)
                 and then nothing: the most a connection can make the server
                 hold

Loopback addresses only; needs `ulimit -n` above the connection count.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import socket
import struct
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.integration.daemon import Daemon  # noqa: E402
from weather.tools.localinflux import InfluxServer, free_port  # noqa: E402
from weather.tools.simulate import (  # noqa: E402
    ACK,
    StationModel,
    build_packet,
    send_packet,
)

DATABASE = "weather"

SCENARIOS: dict[str, dict] = {
    "one-address": {"args": [], "sources": 1},
    "many-addresses": {"args": [], "sources": 400},
    "partial-packets": {"args": [], "sources": 15, "count": 480, "partial": True},
    "all-accepted": {
        "args": [
            "--max-connections",
            "10100",
            "--max-connections-per-peer",
            "10000",
            "--idle-timeout",
            "600",
        ],
        "sources": 1,
    },
}


def source_addresses(count: int) -> list[str]:
    """127.0.0.2, 127.0.0.3, ... (loopback only)."""
    addresses = []
    for i in range(2, 2 + count):
        addresses.append(f"127.0.{i >> 8}.{i & 255}")
    return addresses


def rss_kib(pid: int) -> int:
    """The process's resident memory in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_socket_bytes() -> int | None:
    """The size of the kernel's TCP socket object (/proc/slabinfo), if readable."""
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] == "TCP":
                    return int(fields[3])
    except OSError:
        pass
    return None


def metrics(port: int) -> dict[str, float]:
    """The server's /metrics, as {name or name{labels}: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(weather_[a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def upload(hours: int) -> bytes:
    """Station 1's packet of C{hours} hours from now (30 records)."""
    station = StationModel(1)
    return station.packet(station.wake(time.time() + 3600 * hours))


def station(port: int, packet: bytes, timeout: float = 120.0) -> float:
    """Connect from 127.0.0.1, send C{packet}, wait for the ACK: seconds taken."""
    started = time.perf_counter()
    answer = send_packet("127.0.0.1", port, packet, timeout)
    if answer != ACK:
        raise RuntimeError(f"the station got {answer!r}, not the ACK")
    return time.perf_counter() - started


class Abuser:
    """Idle connections from given source addresses, made without blocking."""

    def __init__(
        self, port: int, sources: list[str], count: int, payload: bytes = b""
    ) -> None:
        self.port = port
        self.sources = sources
        self.count = count
        self.payload = payload
        self.sockets: list[socket.socket] = []

    def connect_one(self, i: int) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Closed with a reset at the end: no TIME_WAIT left behind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.bind((self.sources[i % len(self.sources)], 0))
        if self.payload:
            s.settimeout(30)
            s.connect(("127.0.0.1", self.port))
            s.sendall(self.payload)
            s.setblocking(False)
        else:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
        self.sockets.append(s)

    def open(self, server: Server, batch: int = 40) -> float:
        """
        Open every connection, C{batch} at a time, each batch once the server
        has taken the previous one (accepted or refused it): faster, the
        kernel's listen queue (50) overflows and the rest trickle in over a
        minute of SYN-ACK retries.  Once the server stops accepting (the
        overall limit), the rest are opened at once.  Seconds it took.
        """
        started = time.perf_counter()
        base = seen(metrics(server.metrics_port))
        opened = 0
        while opened < self.count:
            for _ in range(min(batch, self.count - opened)):
                self.connect_one(opened)
                opened += 1
            deadline = time.monotonic() + 30
            while True:
                figures = metrics(server.metrics_port)
                if seen(figures) - base >= opened or not figures["weather_accepting"]:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the server stopped taking connections")
                time.sleep(0.002)
            if not figures["weather_accepting"]:
                while opened < self.count:
                    self.connect_one(opened)
                    opened += 1
        return time.perf_counter() - started

    def states(self) -> dict[str, int]:
        """How many are connected, reset, or still connecting."""
        counts = {"connected": 0, "reset": 0, "connecting": 0}
        for s in self.sockets:
            error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                counts["reset"] += 1
                continue
            try:
                s.getpeername()
            except OSError:
                counts["connecting"] += 1
                continue
            try:
                data = s.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                counts["connected"] += 1
            except OSError:
                counts["reset"] += 1
            else:
                counts["connected" if data else "reset"] += 1
        return counts

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets = []


class Server(Daemon):
    """`twistd -n weather` in a subprocess, on loopback ports of its own."""

    def __init__(
        self,
        influx_url: str,
        args: list[str],
        workdir: str,
        command: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.workdir = workdir
        arguments = [
            "--port",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--influx-url",
            influx_url,
            "--database",
            DATABASE,
            "--data-dir",
            os.path.join(workdir, "data"),
            "--metrics-port",
            str(self.metrics_port),
            *args,
        ]
        super().__init__(arguments, workdir, command=command)


def seen(figures: dict[str, float]) -> int:
    """Connections the server has taken: accepted or refused."""
    return int(
        figures.get("weather_connections_accepted_total", 0)
        + sum(
            v
            for k, v in figures.items()
            if k.startswith("weather_connections_refused_total")
        )
    )


def run(name: str, influx: InfluxServer, connections: int) -> dict:
    scenario = SCENARIOS[name]
    workdir = tempfile.mkdtemp(prefix=f"weather-abuse-{name}-")
    server = Server(influx.url, scenario["args"], workdir)
    abuser = None
    try:
        server.wait_ready(lambda: metrics(server.metrics_port), timeout=30)
        first_ack = station(server.port, upload(0))
        station(server.port, upload(1))
        time.sleep(0.5)
        rss_before = rss_kib(server.pid)
        cpu_before = cpu_seconds(server.pid)
        sources = source_addresses(scenario["sources"])
        count = scenario.get("count", connections)
        payload = b""
        if scenario.get("partial"):
            # The largest packet of the reference layout under the default
            # --max-packet-size (169 records of 6 bytes: 1,023 bytes with the
            # header), less its last byte.
            payload = build_packet(1, [(0, 0, 0)] * 169)[:-1]
        abuser = Abuser(server.port, sources, count, payload)
        opening = abuser.open(server)
        time.sleep(2.0)
        rss_after = rss_kib(server.pid)
        cpu_flood = cpu_seconds(server.pid) - cpu_before
        states = abuser.states()
        figures = metrics(server.metrics_port)
        ack = station(server.port, upload(2))
        after_station = metrics(server.metrics_port)
        refused = {
            k.split('"')[1]: int(v)
            for k, v in after_station.items()
            if k.startswith("weather_connections_refused_total") and v
        }
        return {
            "name": name,
            "args": " ".join(scenario["args"]) or "(defaults)",
            "sources": len(sources),
            "connections": count,
            "partial": len(payload),
            "opening": opening,
            "active": int(figures.get("weather_connections_active", 0)),
            "held": int(figures.get("weather_connections_held_now", 0)),
            "cut": int(after_station.get("weather_connections_cut_for_room_total", 0)),
            "accepting": int(figures.get("weather_accepting", -1)),
            "refused": refused,
            "timed_out": int(after_station.get("weather_connections_timed_out_total", 0)),
            "client_states": states,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "cpu_flood": cpu_flood,
            "first_ack": first_ack,
            "ack": ack,
            "log_lines": sum("Refused a connection" in line for line in server.log_lines()),
            "log_lines_total": len(server.log_lines()),
        }
    finally:
        if abuser is not None:
            abuser.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(result: dict) -> None:
    grown = result["rss_after"] - result["rss_before"]
    print(f"\n== {result['name']}: {result['args']}")
    print(
        f"abuser: {result['connections']:,} idle connections"
        + (f" holding {result['partial']:,} bytes of a packet" if result["partial"] else "")
        + " from "
        f"{result['sources']} address(es), started in {result['opening']:.2f} s; "
        f"server CPU for them {result['cpu_flood']:.2f} s"
    )
    states = result["client_states"]
    print(
        f"server holds {result['active']:,} connections ({result['held']:,} held "
        f"unread; accepting: {'yes' if result['accepting'] else 'no'}); refused "
        f"{result['refused'] or 0}; "
        f"abuser sees {states['connected']:,} connected, {states['reset']:,} reset, "
        f"{states['connecting']:,} still connecting (listen queue or SYN retries)"
    )
    per = ""
    if result["active"] > 100:
        per = f", {grown * 1024 / result['active']:,.0f} bytes per held connection"
    print(
        f"server RSS {result['rss_before'] / 1024:.1f} MiB before, "
        f"{result['rss_after'] / 1024:.1f} MiB after (+{grown / 1024:.1f} MiB{per})"
    )
    print(
        f"station ACK: {result['first_ack'] * 1000:.1f} ms before the flood, "
        f"{result['ack'] * 1000:.1f} ms during it"
        + (
            f" ({result['timed_out']} idle connections timed out, {result['cut']} cut "
            "for a new one meanwhile)"
            if result["timed_out"] or result["cut"]
            else ""
        )
    )
    print(
        f"log: {result['log_lines']} 'Refused a connection' lines, "
        f"{result['log_lines_total']} lines in all"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only these (repeatable; default: all)",
    )
    args = parser.parse_args()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 200:
        raise SystemExit(
            f"ulimit -n is {soft}: raise it above {args.connections + 200} "
            "(the abuser and the server each hold that many sockets)"
        )
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )
    slab = tcp_socket_bytes()
    if slab:
        print(
            f"kernel: each TCP socket is a {slab:,}-byte slab object, not in the "
            "RSS below (idle sockets hold no buffers)"
        )
    influx = InfluxServer()
    influx.start()
    try:
        influx.create_database(DATABASE)
        for name in args.scenario or list(SCENARIOS):
            report(run(name, influx, args.connections))
    finally:
        influx.stop()


if __name__ == "__main__":
    main()
