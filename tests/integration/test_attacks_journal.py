"""
Attacks on the journal (issue 15, items 1 and 6), with real sockets, real
files and a real influxd:

  - a flood of well-framed 65 KB packets of a device no devices file
    describes, from one loopback client, while a described station keeps
    uploading: the quarantine spends its budget and then refuses the junk
    before acknowledging it; the station is acknowledged throughout and every
    one of its readings lands (L{QuarantineFloodTests});
  - a 3 MB file system: the journal fills it while InfluxDB is down, gives
    the space back once the backlog is delivered (its write-ahead log
    truncated), and takes stations again by itself (L{SmallDiskTests});
  - that file system full to the last byte: a server still starts, and
    C{weather journal status} and C{weather quarantine list} still read the
    journal (L{FullDiskTests}).

Without mount permission the file-system tests skip, and fail under CI=true
(L{tests.support.unavailable}).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.integration.daemon import free_listening_port
from tests.integration.fleet import (
    LOOPBACK,
    deliver,
    expected_points,
    fleet_packet,
    read_packet,
)
from tests.integration.test_reliability import (
    DATABASE,
    CannotMount,
    InProcessMixin,
    TmpfsDisk,
    journal_status,
    poll,
    sleep,
    stored_series,
    tuesday_noon_last_week,
)
from tests.support import (
    HEADER,
    SetTime,
    reference_devices_toml,
    reference_packet,
    unavailable,
)
from weather.core.packet import MAX_PACKET_SIZE, Reason
from weather.journal.store import FILENAME, WASTE_BYTES, JournalFile
from weather.tools.cli import main as weather

S = 1_000_000_000
#: A well-framed packet of device 200, which no devices file here describes:
#: 10,920 six-byte records, 65,529 bytes, as the issue's flood sent.
JUNK = HEADER.pack(65_520, 3600, 120, 6, 200, 3) + bytes(range(240)) * 273
PLACES = {1: "balcony", 2: "garden", 3: "roof"}
MEASUREMENTS = ("light", "humidity", "temperature")


class JunkConnection(Protocol):
    """
    Writes C{count} junk packets at once, counts the ACK bytes that come
    back; C{done} fires when the connection is gone (the server cut it, or
    this side closed it once every packet was acknowledged).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.acknowledged = 0
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(JUNK * self.count)

    def dataReceived(self, data: bytes) -> None:
        self.acknowledged += data.count(b"\x06")
        if self.acknowledged >= self.count:
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.done.callback(None)


@inlineCallbacks
def junk_flood(port: int, enough: Callable[[int], bool], per_connection: int):
    """
    One loopback client sending junk packets, C{per_connection} back to back
    on each connection, a new connection whenever the server cuts one, until
    C{enough(packets written)}.  Fires with (packets written, ACK bytes
    received).
    """
    written = acknowledged = 0
    endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port)
    while not enough(written):
        connection = JunkConnection(per_connection)
        yield connectProtocol(endpoint, connection)
        written += connection.count
        yield connection.done
        acknowledged += connection.acknowledged
    return written, acknowledged


def log_lines(testcase: TestCase) -> list[dict]:
    """Every log event from now until the test ends."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    testcase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def sizes(data_dir: str) -> dict[str, int]:
    """The journal's files, and the free space on their file system."""
    path = os.path.join(data_dir, FILENAME)
    found = {}
    for suffix in ("", "-wal", "-shm"):
        exists = os.path.exists(path + suffix)
        found[suffix or "db"] = os.path.getsize(path + suffix) if exists else 0
    stats = os.statvfs(data_dir)
    found["free"] = stats.f_bavail * stats.f_frsize
    return found


def light_summary(
    packets: list[tuple[bytes, int]], places: dict[int, str]
) -> dict[str, tuple[int, float]]:
    """
    Each place's light values in short: how many, and their sum (each
    record's light value names its packet and position).  Compared rather
    than every point: InfluxDB answers a query with at most 10,000 rows.
    """
    lights: dict[str, list[int]] = {}
    for data, _ in packets:
        device, _, _, values = read_packet(data)
        lights.setdefault(places[device], []).extend(values)
    return {place: (len(values), sum(values)) for place, values in lights.items()}


def stored_light_summary(influx) -> dict[str, tuple[int, float]]:
    """L{light_summary} of what InfluxDB holds, from its own aggregates."""
    found: dict[str, list] = {}
    for function in ("count", "sum"):
        result = influx.query(
            f'SELECT {function}("value") FROM "light" GROUP BY "place"', DATABASE
        )
        for series in result["results"][0].get("series", []):
            place = series["tags"]["place"]
            _, value = series["values"][0]
            found.setdefault(place, []).append(value)
    return {place: tuple(values) for place, values in found.items()}


def mount_tmpfs(testcase: TestCase, size: str) -> TmpfsDisk:
    try:
        return TmpfsDisk(testcase, size)
    except CannotMount as e:
        unavailable(f"cannot mount a tmpfs here ({e})")


class QuarantineFloodTests(InProcessMixin, TestCase):
    """Junk spends the quarantine's budget; described stations are served all along."""

    timeout = 60
    BUDGET = 8 << 20

    @inlineCallbacks
    def test_floodOfUnknownDevice(self):
        influx = self.start_influx()
        service = self.build(
            influx.url,
            reference_devices_toml(**{str(d): p for d, p in PLACES.items()}),
            "--quarantine-max-size",
            str(self.BUDGET),
            "--max-packet-size",
            str(MAX_PACKET_SIZE),
            "--flush-interval",
            "0.05",
        )
        events = log_lines(self)
        clock = SetTime(tuesday_noon_last_week())
        service.listener.factory.wall = clock
        service.startService()
        port = self.port_of(service)
        journal, pipeline = service.journal, service.pipeline
        sent: list[tuple[bytes, int]] = []
        uploads = []

        @inlineCallbacks
        def station(stop: list[bool]):
            """Stations 1-3 in turn, an upload every 50 ms, until told to stop."""
            while not stop:
                device = 1 + len(sent) % len(PLACES)
                seq = len(sent) // len(PLACES)
                clock.now += 1200  # each station every hour
                data = fleet_packet(device, seq)
                sent.append((data, round(clock.now * S)))
                upload = yield deliver(reactor, port, data, seq, ack_timeout=5.0)
                uploads.append(upload)
                yield sleep(0.05)

        stop: list[bool] = []
        stations = station(stop)
        started = time.monotonic()
        # Eight times the budget's worth (64 MB) and more, four packets a
        # connection, until the stations have uploaded 20 times meanwhile.
        written, acknowledged = yield junk_flood(
            port,
            lambda written: written * len(JUNK) > 8 * self.BUDGET and len(uploads) >= 20,
            4,
        )
        flood_seconds = time.monotonic() - started
        during = len(uploads)
        # After the flood, the stations go on.
        yield poll(lambda: len(uploads) >= during + 6, 10, "uploads after the flood")
        stop.append(True)
        yield stations

        self.assertGreater(during, 0, "no station upload during the flood")
        not_acked = [u for u in uploads if not u.acked]
        self.assertEqual(not_acked, [], "every station upload is acknowledged")
        # The junk: kept up to the budget and acknowledged, the rest refused.
        refused = pipeline.stats.packets_refused
        # The rest of a cut connection's bytes: truncated, refused too.
        self.assertEqual({source for source, _ in refused}, {"127.0.0.1"})
        self.assertEqual(
            {reason for _, reason in refused}, {Reason.UNKNOWN_DEVICE, Reason.TRUNCATED}
        )
        kept = pipeline.stats.packets_rejected[Reason.UNKNOWN_DEVICE]
        # (A packet kept just before its connection was cut misses its ACK.)
        self.assertLessEqual(acknowledged, kept)
        self.assertGreater(acknowledged, 0)
        self.assertGreater(refused.total(), 0)
        self.assertTrue(journal.quarantine_full)
        self.assertFalse(journal.full)
        self.assertLessEqual(journal.quarantined_bytes, self.BUDGET + 2 * len(JUNK))
        # Every reading of the stations lands, once.
        yield poll(
            lambda: journal.stats.packets_delivered == len(sent), 20, "all delivered"
        )
        on_disk = (yield journal.status()).file_bytes
        yield service.stopService()
        self.assertLessEqual(on_disk, self.BUDGET * 1.1 + (8 << 20))
        want = expected_points(sent, PLACES)
        have = stored_series(influx, MEASUREMENTS)
        self.assertEqual(have, want)
        # The log: one line for the budget, one per source and reason refused.
        said = [e for e in events if e.get("log_namespace", "").startswith("weather")]
        budget_lines = [e for e in said if "--quarantine-max-size" in e["log_format"]]
        self.assertEqual(
            len(budget_lines), 1 + len(refused), [e["log_format"] for e in budget_lines]
        )
        self.assertLess(len(said), 40, [e["log_format"] for e in said])
        print(
            f"\n  junk flood: {written} packets of {len(JUNK)} bytes "
            f"({written * len(JUNK) >> 20} MiB) in {flood_seconds:.1f} s, "
            f"{kept} kept, {refused.total()} refused; quarantine "
            f"{journal.quarantined_bytes >> 10} KiB of {self.BUDGET >> 10} KiB, "
            f"journal files {on_disk >> 10} KiB; {len(uploads)} station uploads, "
            f"{during} during the flood, all acknowledged; {len(said)} log lines"
        )


class SmallDiskTests(InProcessMixin, TestCase):
    """
    A 3 MB file system, --journal-min-free 1M: InfluxDB down, the journal
    fills it until the server stops taking stations; InfluxDB back, the
    backlog is delivered, the space given back, and stations taken again
    without anyone freeing anything.
    """

    timeout = 60
    maxDiff = None
    PLACES = {device: f"station-{device}" for device in range(1, 7)}

    @inlineCallbacks
    def test_spaceComesBack(self):
        disk = mount_tmpfs(self, "3m")
        influx = self.start_influx()
        service = self.build(
            influx.url,
            reference_devices_toml(**{str(d): p for d, p in self.PLACES.items()}),
            "--journal-min-free",
            "1M",
            "--max-packet-size",
            str(MAX_PACKET_SIZE),
            "--flush-interval",
            "0.05",
            "--max-backoff",
            "1",
            data_dir=disk.data_dir,
        )
        journal, listener = service.journal, service.listener
        journal.retry_interval = 0.3
        clock = SetTime(tuesday_noon_last_week())
        listener.factory.wall = clock
        service.startService()
        port = self.port_of(service)
        sent: list[tuple[bytes, int]] = []

        def packet() -> bytes:
            # 500 records (3 KB), each station an hour after its previous.
            device = 1 + len(sent) % len(self.PLACES)
            clock.now += 3600 / len(self.PLACES)
            data = fleet_packet(device, len(sent) // len(self.PLACES), 500, 3600, 7)
            sent.append((data, round(clock.now * S)))
            return data

        # The files when the journal stops taking packets, and when it
        # takes them again.
        at_full: list[dict[str, int]] = []
        at_room: list[dict[str, int]] = []
        journal.full_observers.append(
            lambda full: (at_full if full else at_room).append(sizes(disk.data_dir))
        )
        influx.terminate()
        for _ in range(600):
            yield deliver(reactor, port, packet(), ack_timeout=1.0)
            if journal.full:
                break
        else:
            self.fail("600 packets and the journal still takes them on 3 MB")
        full, fill_count = at_full[0], len(sent)
        self.assertIn("--journal-min-free", journal.full_reason)
        self.assertFalse(listener.accepting)
        # A station that connects now waits in the kernel's queue...
        waiting = deliver(reactor, port, packet(), ack_timeout=30.0)

        # ... until InfluxDB is back: the backlog goes, the space comes back.
        influx.start()
        yield poll(lambda: not journal.full, 20, "the journal takes packets again")
        upload = yield waiting
        self.assertTrue(upload.acked, f"the station that waited: {upload.error}")
        yield poll(
            lambda: journal.stats.packets_delivered == len(sent), 20, "all delivered"
        )
        reclaimed = at_room[0]
        self.assertLess(reclaimed["-wal"], full["-wal"])
        self.assertLessEqual(reclaimed["-wal"], WASTE_BYTES)
        self.assertGreaterEqual(reclaimed["free"], 2 << 20)
        # And the write-ahead log stays small as stations go on.
        for _ in range(30):
            upload = yield deliver(reactor, port, packet())
            self.assertTrue(upload.acked, upload.error)
        yield poll(
            lambda: journal.stats.packets_delivered == len(sent), 20, "all delivered"
        )
        after = sizes(disk.data_dir)
        self.assertLessEqual(after["db"] + after["-wal"], 2 * WASTE_BYTES)
        yield service.stopService()
        self.assertEqual(journal_status(disk.data_dir).pending, 0)
        # Every record of every packet sent, once (their light values name
        # them); the times are other tests' business (a packet not
        # acknowledged before the pause is stamped when it is read).
        self.assertEqual(stored_light_summary(influx), light_summary(sent, self.PLACES))
        print(
            f"\n  3 MB file system: full after {fill_count} packets with the "
            f"journal at {full['db'] >> 10} KiB + {full['-wal'] >> 10} KiB of "
            f"write-ahead log, {full['free'] >> 10} KiB free; after the backlog "
            f"was delivered {reclaimed['db'] >> 10} KiB + {reclaimed['-wal'] >> 10} "
            f"KiB, {reclaimed['free'] >> 10} KiB free; 30 packets later "
            f"{after['db'] >> 10} KiB + {after['-wal'] >> 10} KiB"
        )


class FullDiskTests(InProcessMixin, TestCase):
    """
    The data directory's file system full to the last byte: a server
    starts (taking no stations), the commands that read work, and once
    there is room the server takes stations by itself.
    """

    timeout = 60

    def run_weather(self, *args: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        code = weather(list(args), out=out, err=err)
        self.assertEqual(code, 0, f"weather {' '.join(args)}: {err.getvalue()}")
        return out.getvalue()

    def read_commands(self, data_dir: str) -> None:
        status = self.run_weather("journal", "status", "--data-dir", data_dir)
        self.assertIn("Pending:      3 packets", status)
        self.assertIn("Quarantined:  1 packet, ", status)
        listing = self.run_weather("quarantine", "list", "--data-dir", data_dir)
        self.assertIn(Reason.UNKNOWN_DEVICE, listing)

    @inlineCallbacks
    def test_startsAndReads(self):
        disk = mount_tmpfs(self, "3m")
        nowhere = f"http://127.0.0.1:{free_listening_port()}"
        devices = reference_devices_toml(**{"1": "balcony"})
        options = ("--journal-min-free", "64K", "--max-backoff", "1")
        first = self.build(nowhere, devices, *options, data_dir=disk.data_dir)
        first.startService()
        port = self.port_of(first)
        for seq in range(3):
            upload = yield deliver(reactor, port, fleet_packet(1, seq), seq)
            self.assertTrue(upload.acked, upload.error)
        upload = yield deliver(reactor, port, reference_packet(2, device_id=200))
        self.assertTrue(upload.acked, upload.error)
        # Stopped as if killed: a reader keeps SQLite from tidying up its
        # shared memory and write-ahead log, and the disk fills up.
        reader = JournalFile(disk.data_dir, create=False, read_only=True)
        reader.pending()
        yield first.stopService()
        disk.fill(None)
        reader.close()
        self.assertEqual(sizes(disk.data_dir)["free"], 0)
        self.read_commands(disk.data_dir)

        second = self.build(nowhere, devices, *options, data_dir=disk.data_dir)
        second.journal.retry_interval = 0.3
        second.startService()  # does not raise
        self.assertTrue(second.journal.full)
        self.assertFalse(second.listener.accepting)
        self.read_commands(disk.data_dir)
        yield disk.free(None)
        yield poll(lambda: second.listener.accepting, 5, "accepting again")
        upload = yield deliver(reactor, self.port_of(second), fleet_packet(1, 3), 3)
        self.assertTrue(upload.acked, upload.error)
        yield second.stopService()

        # Stopped cleanly, SQLite's files are gone; then the disk fills up.
        self.assertEqual(sizes(disk.data_dir)["-shm"], 0)
        disk.fill(None)
        status = self.run_weather("journal", "status", "--data-dir", disk.data_dir)
        self.assertIn("Pending:      4 packets", status)
        listing = self.run_weather("quarantine", "list", "--data-dir", disk.data_dir)
        self.assertIn(Reason.UNKNOWN_DEVICE, listing)
