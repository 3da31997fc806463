"""
How long the event loop stalls while the journal commits, and how many
packets share one fsync.

Run by hand:  python bench/journal.py [--seconds 5] [--rate 2000]

For each disk worker (the server's own thread; the same thread with an added
30 ms per commit, as an SD card's fsync can take; commits in the reactor
thread, for comparison), packets are appended at --rate per second in bursts
every 10 ms, while a probe scheduled every millisecond records how late it
runs: that lateness is the event-loop stall.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.defer import gatherResults  # noqa: E402

from tests.support import reference_packet  # noqa: E402
from weather.core.packet import Packet  # noqa: E402
from weather.journal.service import (  # noqa: E402
    ImmediateDiskWorker,
    Journal,
    ThreadDiskWorker,
)


class SlowDiskWorker(ThreadDiskWorker):
    """The server's worker thread on a disk whose every commit takes 30 ms more."""

    def run(self, f, *args):
        def slow():
            time.sleep(0.030)
            return f(*args)

        return super().run(slow)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(name: str, worker, seconds: float, rate: int) -> dict:
    directory = tempfile.mkdtemp(prefix="weather-bench-")
    journal = Journal(
        directory,
        reactor,
        worker,
        max_bytes=1 << 40,
        min_free_bytes=0,
        quarantine_max_bytes=1 << 40,
        shutdown_timeout=10.0,
    )
    journal.startService()
    data = reference_packet(30)
    burst = max(1, rate // 100)
    stalls: list[float] = []
    durable: list = []
    latencies: list[float] = []
    expected = [time.perf_counter()]

    def probe() -> None:
        now = time.perf_counter()
        stalls.append(max(0.0, now - expected[0]))
        expected[0] = now + 0.001

    def send() -> None:
        for _ in range(burst):
            sent = time.perf_counter()
            d = journal.append(Packet(data, "127.0.0.1:1", time.time_ns()))
            d.addCallback(lambda _, sent=sent: latencies.append(time.perf_counter() - sent))
            durable.append(d)

    probing = task.LoopingCall(probe)
    sending = task.LoopingCall(send)
    probing.start(0.001)
    sending.start(0.01)
    started = time.perf_counter()

    def finish():
        sending.stop()
        d = gatherResults(durable)
        d.addCallback(lambda _: probing.stop())
        d.addCallback(lambda _: journal.stopService())
        return d

    done = task.deferLater(reactor, seconds, finish)
    result: dict = {}

    def report(_):
        elapsed = time.perf_counter() - started
        result.update(
            name=name,
            packets=len(durable),
            rate=len(durable) / elapsed,
            commits=journal.stats.commits,
            per_commit=len(durable) / max(1, journal.stats.commits),
            stall_p99_ms=percentile(stalls, 0.99) * 1000,
            stall_max_ms=max(stalls) * 1000,
            durable_p50_ms=statistics.median(latencies) * 1000,
            durable_p99_ms=percentile(latencies, 0.99) * 1000,
        )

    done.addCallback(report)
    return done, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=2000, help="packets per second")
    args = parser.parse_args()
    runs = [
        ("worker thread (this disk)", lambda: ThreadDiskWorker(reactor)),
        ("worker thread, +30 ms per commit", lambda: SlowDiskWorker(reactor)),
        ("in the reactor thread (not used)", ImmediateDiskWorker),
    ]
    results: list[dict] = []

    def next_run(_=None):
        if not runs:
            reactor.stop()
            return
        name, make = runs.pop(0)
        d, result = measure(name, make(), args.seconds, args.rate)
        d.addCallback(lambda _: results.append(result))
        d.addCallback(next_run)
        d.addErrback(lambda f: (f.printTraceback(), reactor.stop()))

    reactor.callWhenRunning(next_run)
    reactor.run()
    print(f"{args.rate} packets/s offered for {args.seconds:g} s each, 189-byte packets")
    print(
        f"{'disk worker':34} {'pkt/s':>7} {'commits':>7} {'pkt/commit':>10} "
        f"{'stall p99':>9} {'stall max':>9} {'durable p50':>11} {'p99':>7}"
    )
    for r in results:
        print(
            f"{r['name']:34} {r['rate']:7.0f} {r['commits']:7d} {r['per_commit']:10.1f} "
            f"{r['stall_p99_ms']:7.2f}ms {r['stall_max_ms']:7.2f}ms "
            f"{r['durable_p50_ms']:9.2f}ms {r['durable_p99_ms']:5.1f}ms"
        )


if __name__ == "__main__":
    main()
