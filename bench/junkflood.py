"""
A flood of well-framed 65 KB packets of a device no devices file describes,
from one loopback client, while a described station uploads every 100 ms:
how large the journal grows, what is refused, how much memory and how many
log lines it costs, and whether the station is still acknowledged.  Run by
hand:

    python bench/junkflood.py [--seconds 10] [--per-connection 4] [-- OPTION ...]

The server is assembled in this process (as twistd would), on the real
reactor, with every option at its default but those given after C{--};
InfluxDB is a closed port, so the station's packets wait in the journal
(the flood is about the journal, not the writer).  The journal lives in a
temporary directory, removed afterwards.  Run it from another checkout to
compare (options that checkout does not know are left out).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: E402
from twisted.internet.protocol import Protocol  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402
from twisted.logger import formatEvent, globalLogBeginner  # noqa: E402

from tests.support import HEADER, reference_devices_toml, reference_packet  # noqa: E402
from weather.app.options import TOPICS  # noqa: E402
from weather.app.settings import Options, settings_from_options  # noqa: E402
from weather.app.tap import build_service  # noqa: E402
from weather.journal.store import FILENAME  # noqa: E402
from weather.tools.simulate import ACK, Upload, tcp_connector  # noqa: E402

#: 10,920 six-byte records of device 200: 65,529 bytes.
JUNK = HEADER.pack(65_520, 3600, 120, 6, 200, 3) + bytes(range(240)) * 273


class JunkConnection(Protocol):
    """Writes C{count} junk packets at once; C{done} fires once the connection is gone."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.acknowledged = 0
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(JUNK * self.count)

    def dataReceived(self, data: bytes) -> None:
        self.acknowledged += data.count(ACK)
        if self.acknowledged >= self.count:
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.done.callback(None)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def known_options(given: list[str]) -> list[str]:
    """C{given} without the options this checkout does not declare (with their values)."""
    names = {option.name for topic in TOPICS for option in topic.options}
    kept, skip = [], False
    for word in given:
        if skip:
            skip = False
        elif word.startswith("--") and word[2:] not in names:
            print(f"(this checkout has no {word}: left out)")
            skip = True
        else:
            kept.append(word)
    return kept


@inlineCallbacks
def flood(_reactor, args: argparse.Namespace):
    workdir = tempfile.mkdtemp(prefix="weather-junkflood-")
    devices = os.path.join(workdir, "devices.toml")
    with open(devices, "w") as f:
        f.write(reference_devices_toml(**{"1": "balcony"}))
    options = Options()
    options.parseOptions(
        [
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--influx-url",
            f"http://127.0.0.1:{closed_port()}",
            "--devices",
            devices,
            "--data-dir",
            os.path.join(workdir, "data"),
            *known_options(args.options),
        ]
    )
    service = build_service(settings_from_options(options, {}), reactor)
    # The server's log lines, kept (the client's "Starting factory" ones are
    # not); logging begun, so that nothing is buffered for later either.
    events: list[dict] = []

    def keep(event: dict) -> None:
        if str(event.get("log_namespace", "")).startswith("weather"):
            events.append(event)

    globalLogBeginner.beginLoggingTo([keep], redirectStandardIO=False)
    service.startService()
    port = service.listener.port.getHost().port
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    rss_before = rss_kib()
    lines_before = len(events)
    deadline = time.monotonic() + args.seconds
    station = {"sent": 0, "acknowledged": 0}

    @inlineCallbacks
    def uploads():
        seq = 0
        while time.monotonic() < deadline:
            upload = Upload(reference_packet(30, start=30 * seq), reactor, ack_timeout=5.0)
            yield tcp_connector(reactor, "127.0.0.1", port)(upload)
            yield upload.done
            station["sent"] += 1
            station["acknowledged"] += upload.acknowledged
            seq += 1
            yield deferLater(reactor, 0.1, lambda: None)

    stations = uploads()
    written = acknowledged = connections = 0
    while time.monotonic() < deadline:
        connection = JunkConnection(args.per_connection)
        yield connectProtocol(endpoint, connection)
        yield connection.done
        written += connection.count
        acknowledged += connection.acknowledged
        connections += 1
    yield stations
    path = os.path.join(workdir, "data", FILENAME)
    files = sum(
        os.path.getsize(path + s) for s in ("", "-wal", "-shm") if os.path.exists(path + s)
    )
    refused = getattr(service.pipeline.stats, "packets_refused", None)
    said = events[lines_before:]
    print(
        f"{args.seconds:g} s of junk: {written} packets written "
        f"({written * len(JUNK) >> 20} MiB) on {connections} connections, "
        f"{acknowledged} acknowledged, "
        f"{'-' if refused is None else refused.total()} refused\n"
        f"journal files: {files >> 20} MiB; full: {service.journal.full}\n"
        f"station: {station['acknowledged']} of {station['sent']} uploads acknowledged\n"
        f"memory (VmRSS): {rss_before >> 10} MiB before, {rss_kib() >> 10} MiB after\n"
        f"log lines during the flood: {len(said)}"
        + "".join("\n  " + formatEvent(e)[:150] for e in said)
    )
    yield service.stopService()
    shutil.rmtree(workdir, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--per-connection", type=int, default=4)
    parser.add_argument("options", nargs="*", help="server options, after --")
    react(flood, (parser.parse_args(),))


if __name__ == "__main__":
    main()
