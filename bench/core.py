"""
The pure core alone: header checks, decoding, timestamps and line protocol for
the 30-record reference packet, on one core.  Run by hand:

    python bench/core.py [--seconds 3] [--runs 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import struct
import time

from weather.decode import decode_packet
from weather.devices import REFERENCE_DEVICES
from weather.lineprotocol import LineEncoder

S = 1_000_000_000


def reference_packet() -> bytes:
    body = b"".join(struct.pack("<HHH", 100 + i, 30000, 25000) for i in range(30))
    return struct.pack("<HHHBBB", len(body), 3600, 120, 6, 1, 3) + body


def run(seconds: float) -> float:
    """Packets per second over about C{seconds}."""
    packet = reference_packet()
    encoder = LineEncoder()
    arrival = 1_700_000_000 * S
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(1000):
            decoded = decode_packet(packet, arrival, arrival - 3600 * S, REFERENCE_DEVICES)
            b"\n".join(encoder.encode(decoded.readings))
            arrival += 3600 * S
        count += 1000
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rates = [run(args.seconds) for _ in range(args.runs)]
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"core: median {statistics.median(rates):,.0f} reference packets/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})"
    )


if __name__ == "__main__":
    main()
