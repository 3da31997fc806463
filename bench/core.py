"""
The pure core alone: header checks, decoding, timestamps and line protocol for
the 30-record reference packet (90 values), on one core.  Run by hand:

    python bench/core.py [--seconds 2] [--runs 5] [--per-reading]

Each packet goes the way the server sends it (PacketPipeline, weather replay):
packet_points, that is decode_packet, then LineEncoder.encode_packet, whose
lines are what the writer receives, and the count of values left out as NaN or
infinite.  --per-reading also times the older way, one Reading object and one
line at a time, kept as the tests' oracle (tests/oracle.py), for comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import sys
import time
from collections.abc import Callable

from weather.core.decode import decode_packet
from weather.core.devices import REFERENCE_DEVICES
from weather.core.lineprotocol import LineEncoder, packet_points
from weather.core.timing import TimingInputs

S = 1_000_000_000


def reference_packet() -> bytes:
    body = b"".join(struct.pack("<HHH", 100 + i, 30000, 25000) for i in range(30))
    return struct.pack("<HHHBBB", len(body), 3600, 120, 6, 1, 3) + body


def server_path(encoder: LineEncoder) -> Callable[[bytes, int], int]:
    """What the pipeline does with a packet; returns how many values it left out."""

    def step(packet: bytes, arrival: int) -> int:
        timing = TimingInputs.since(arrival - 3600 * S, arrival)
        points = packet_points(packet, arrival, timing, REFERENCE_DEVICES, encoder)
        return points.not_finite

    return step


def per_reading_path(_: LineEncoder) -> Callable[[bytes, int], int]:
    """The same through DecodedPacket.readings and the tests' per-reading oracle."""
    from tests.oracle import PerReadingEncoder

    encoder = PerReadingEncoder()

    def step(packet: bytes, arrival: int) -> int:
        timing = TimingInputs.since(arrival - 3600 * S, arrival)
        decoded = decode_packet(packet, arrival, timing, REFERENCE_DEVICES)
        lines = encoder.encode(decoded.readings)
        return len(decoded.readings) - len(lines)

    return step


def run(
    path: Callable[[LineEncoder], Callable[[bytes, int], int]], seconds: float
) -> tuple[float, float]:
    """
    Packets per second over about C{seconds} (with a fresh encoder): per
    second of wall time, and per second of this process's CPU time, which
    other work on the machine disturbs less.
    """
    packet = reference_packet()
    step = path(LineEncoder())
    arrival = 1_700_000_000 * S
    count = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    while True:
        for _ in range(1000):
            step(packet, arrival)
            arrival += 3600 * S
        count += 1000
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started), count / (time.process_time() - cpu_started)


def report(name: str, rates: list[tuple[float, float]]) -> None:
    wall = [w for w, _ in rates]
    cpu = [c for _, c in rates]
    print(
        f"{name}: median {statistics.median(wall):,.0f} reference packets/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in wall)}); "
        f"per CPU second: median {statistics.median(cpu):,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--per-reading", action="store_true")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    report("core", [run(server_path, args.seconds) for _ in range(args.runs)])
    if args.per_reading:
        # tests/oracle.py, in the project beside bench/.
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        report(
            "per-reading",
            [run(per_reading_path, args.seconds) for _ in range(args.runs)],
        )


if __name__ == "__main__":
    main()
