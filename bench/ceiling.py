"""
The ceiling: a bare Twisted server that accepts a connection, reads until the
peer closes, counts the packet and does nothing else.  No journal, no
decoding, no acknowledgement, no InfluxDB: what one Python process on this
reactor can take at most, the reference the server's figures are set against.
Run alone:

    python bench/ceiling.py [--port tcp:8266:interface=127.0.0.1] [--packet-size 189]

and point a sender at it (bench/loadgen.c); bench/throughput.py runs it for you.
It listens with the same kind of endpoint string and the same default reactor
as `twistd weather`.  Every --interval seconds it prints one line,
`stats <wall time> <packets> <bad> <connections>` (cumulative counts: whole
packets, connections that closed with another byte count, connections
accepted), and a packets/s figure on stderr; the first line is
`listening <port>`.  SIGTERM or SIGINT stops it after a last `stats` line.
"""

from __future__ import annotations

import argparse
import sys
import time

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall


class Counting(Protocol):
    """Count the bytes of one connection; at close, count the packet."""

    received = 0

    def connectionMade(self) -> None:
        self.factory.connections += 1

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: object = None) -> None:
        if self.received == self.factory.packet_size:
            self.factory.packets += 1
        else:
            self.factory.bad += 1


class CountingFactory(Factory):
    protocol = Counting

    def __init__(self, packet_size: int) -> None:
        self.packet_size = packet_size
        self.packets = 0
        self.bad = 0
        self.connections = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument(
        "--port",
        default="tcp:0:interface=127.0.0.1",
        help="a Twisted endpoint string (default: a free port on 127.0.0.1)",
    )
    parser.add_argument("--packet-size", type=int, default=189)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--quiet", action="store_true", help="no packets/s on stderr")
    args = parser.parse_args()
    if args.port.isdigit():
        args.port = f"tcp:{args.port}:interface=127.0.0.1"

    factory = CountingFactory(args.packet_size)
    last = [time.monotonic(), 0, 0.0]

    def report() -> None:
        now = time.monotonic()
        print(
            f"stats {time.time():.6f} {factory.packets} {factory.bad} "
            f"{factory.connections}",
            flush=True,
        )
        if not args.quiet and now - last[2] >= 1.0 and factory.packets != last[1]:
            rate = (factory.packets - last[1]) / (now - last[0])
            print(f"ceiling: {rate:,.0f} packets/s", file=sys.stderr, flush=True)
        if now - last[2] >= 1.0:
            last[:] = [now, factory.packets, now]

    def listening(port: object) -> None:
        print(f"listening {port.getHost().port}", flush=True)
        LoopingCall(report).start(args.interval)

    def failed(failure: object) -> None:
        print(f"ceiling: cannot listen: {failure.getErrorMessage()}", file=sys.stderr)
        reactor.stop()

    serverFromString(reactor, args.port).listen(factory).addCallbacks(listening, failed)
    reactor.addSystemEventTrigger("before", "shutdown", report)
    reactor.run()


if __name__ == "__main__":
    main()
