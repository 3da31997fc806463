"""
The journal file: what it keeps, in one transaction, across reopening.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from tests.oracle import oracle_lines
from tests.support import reference_packet
from weather.core.devices import REFERENCE_DEVICES
from weather.core.lineprotocol import LineEncoder, packet_points
from weather.core.packet import Packet
from weather.core.timing import StationState, TimingInputs
from weather.journal.store import (
    FILENAME,
    SCHEMA_VERSION,
    WASTE_BYTES,
    Changes,
    JournalEntry,
    JournalError,
    JournalFile,
    Quarantine,
    Sizes,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S


def entry(entry_id: int, arrival_ns: int = T0, previous: int | None = None) -> JournalEntry:
    packet = Packet(reference_packet(2), "192.0.2.7:5", arrival_ns)
    return JournalEntry(entry_id, packet, TimingInputs.since(previous, arrival_ns))


class JournalFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.file = JournalFile(self.directory)
        self.addCleanup(lambda: self.file.close())

    def reopen(self) -> JournalFile:
        self.file.close()
        self.file = JournalFile(self.directory)
        return self.file

    def test_walAndFullSync(self) -> None:
        """Commits are durable: WAL mode, synchronous FULL, a private directory."""
        db = self.file.connection
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(db.execute("PRAGMA synchronous").fetchone()[0], 2)  # FULL
        self.assertEqual(os.stat(self.directory).st_mode & 0o777, 0o700)
        self.assertTrue(os.path.exists(os.path.join(self.directory, FILENAME)))

    def test_emptyJournal(self) -> None:
        self.assertEqual(self.file.next_id(), 1)
        self.assertEqual(self.file.pending(), [])
        self.assertEqual(self.file.quarantined(), [])
        self.assertEqual(self.file.stations(), {})
        status = self.file.status()
        self.assertEqual((status.pending, status.quarantined), (0, 0))
        self.assertIsNone(status.oldest_pending_ns)

    def test_packetsSurviveReopening(self) -> None:
        """Packets, their timing state and the device state are all kept."""
        timed = JournalEntry(
            3,
            Packet(reference_packet(2), "192.0.2.7:5", T0 + 2 * S, 7 * S),
            TimingInputs(T0 + S, S + 3, 1.0625, b"\x00\xff" * 6, learned=True),
            "boot-a",
        )
        stations = {
            1: StationState(T0 + 2 * S, 7 * S, "boot-a", (1.0625, 0.1 + 0.2), b"\x07" * 6),
            2: StationState(T0, None, None),
        }
        added = [(entry(1), None), (entry(2, T0 + S, T0), None), (timed, None)]
        self.file.commit(Changes(added=added, devices=stations))
        file = self.reopen()
        self.assertEqual(file.pending(), [entry(1), entry(2, T0 + S, T0), timed])
        self.assertEqual(file.stations(), stations)
        self.assertEqual(file.next_id(), 4)
        status = file.status()
        self.assertEqual(status.pending, 3)
        self.assertEqual(status.oldest_pending_ns, T0)

    def test_pendingAfterAndLimit(self) -> None:
        self.file.commit(Changes(added=[(entry(i, T0 + i), None) for i in range(1, 8)]))
        self.assertEqual([e.id for e in self.file.pending(after_id=2, limit=3)], [3, 4, 5])
        self.assertEqual([e.id for e in self.file.pending(after_id=5, limit=3)], [6, 7])

    def test_deliveredLeaves(self) -> None:
        self.file.commit(Changes(added=[(entry(1), None), (entry(2), None)]))
        self.file.commit(Changes(delivered={1}))
        self.assertEqual([e.id for e in self.reopen().pending()], [2])

    def test_quarantine(self) -> None:
        """Quarantined packets keep their bytes, reason, detail and refused lines."""
        self.file.commit(Changes(added=[(entry(1), None), (entry(2), None)]))
        refused = (b"temperature,place=x value=1 1", b"temperature,place=x value=2 2")
        self.file.commit(
            Changes(
                quarantined={2: Quarantine("refused", "HTTP 400: conflict", 7, refused)}
            )
        )
        file = self.reopen()
        self.assertEqual([e.id for e in file.pending()], [1])
        [kept] = file.quarantined()
        self.assertEqual(kept.entry, entry(2))
        self.assertEqual(
            kept.quarantine, Quarantine("refused", "HTTP 400: conflict", 7, refused)
        )
        self.assertEqual(file.status().quarantined, 1)

    def test_quarantinedOnArrival(self) -> None:
        """Bytes that are not a packet go straight to quarantine."""
        self.file.commit(
            Changes(added=[(entry(1), Quarantine("truncated", "9 of 189 bytes", 5))])
        )
        self.assertEqual(self.file.pending(), [])
        [kept] = self.file.quarantined()
        self.assertEqual(kept.quarantine.reason, "truncated")
        self.assertEqual(kept.quarantine.refused, ())

    def test_forgetAndRequarantine(self) -> None:
        """What the replay tool does: delivered ones go, the others get a new reason."""
        self.file.commit(
            Changes(
                added=[
                    (entry(1), Quarantine("unknown_device", "no profile", 1)),
                    (entry(2), Quarantine("unknown_device", "no profile", 1)),
                ]
            )
        )
        self.file.forget([1])
        self.file.requarantine({2: Quarantine("profile_mismatch", "4 values", 9)})
        [kept] = self.file.quarantined()
        self.assertEqual(kept.entry.id, 2)
        self.assertEqual(kept.quarantine.reason, "profile_mismatch")

    def test_dropOnlyQuarantined(self) -> None:
        """
        weather quarantine drop: packets in quarantine go for good; one
        waiting for InfluxDB never does, nor one that is not there.
        """
        self.file.commit(
            Changes(
                added=[
                    (entry(1), Quarantine("truncated", "3 bytes", 1)),
                    (entry(2), None),
                    (entry(3), Quarantine("unknown-device", "no profile", 1)),
                ]
            )
        )
        self.assertEqual(self.file.drop_quarantined([1, 2, 4]), 1)
        self.assertEqual([q.entry.id for q in self.file.quarantined()], [3])
        self.assertEqual([e.id for e in self.reopen().pending()], [2])
        self.assertEqual(self.file.drop_quarantined(iter([3])), 1)
        self.assertEqual(self.file.quarantined(), [])

    def test_oneTransaction(self) -> None:
        """A group that fails writes nothing at all."""
        self.file.commit(Changes(added=[(entry(1), None)]))
        with self.assertRaises(sqlite3.IntegrityError):
            # Entry 2 is new, entry 1 exists: the whole group is refused.
            self.file.commit(Changes(added=[(entry(2), None), (entry(1), None)]))
        self.assertEqual([e.id for e in self.file.pending()], [1])
        self.assertFalse(self.file.connection.in_transaction)
        self.file.commit(Changes(added=[(entry(2), None)]))
        self.assertEqual([e.id for e in self.file.pending()], [1, 2])

    def test_diskFull(self) -> None:
        """A full disk raises and leaves the journal as it was, usable again later."""
        db = self.file.connection
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        big = [
            (JournalEntry(i, Packet(os.urandom(4000), "p", T0)), None) for i in range(1, 20)
        ]
        with self.assertRaises(sqlite3.OperationalError) as caught:
            self.file.commit(Changes(added=big))
        self.assertIn("full", str(caught.exception))
        self.assertEqual(self.file.pending(), [])
        db.execute("PRAGMA max_page_count = 1000000")
        self.file.commit(Changes(added=big))
        self.assertEqual(len(self.file.pending()), 19)

    def test_spaceReclaimed(self) -> None:
        """Once a large backlog is delivered, the file gives its space back."""
        added = [
            (JournalEntry(i, Packet(os.urandom(60_000), "p", T0)), None)
            for i in range(1, 400)
        ]
        self.file.commit(Changes(added=added))
        full = self.file.used_bytes()
        self.assertGreater(full, 20_000_000)
        self.file.commit(Changes(delivered={i for i in range(1, 400)}))
        self.file.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.assertLess(self.file.used_bytes(), 1_000_000)
        self.assertLess(os.path.getsize(self.file.path), full // 2)

    def test_usedBytesGrow(self) -> None:
        before = self.file.used_bytes()
        self.file.commit(Changes(added=[(entry(i), None) for i in range(1, 200)]))
        self.assertGreater(self.file.used_bytes(), before)
        self.assertGreaterEqual(self.file.status().file_bytes, self.file.used_bytes())

    def test_newerSchemaRefused(self) -> None:
        self.file.connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        self.file.close()
        with self.assertRaises(JournalError) as caught:
            self.file = JournalFile(self.directory)
        self.assertIn("newer version", str(caught.exception))
        self.file = JournalFile(self.mktemp())

    def test_missingJournalNotCreated(self) -> None:
        """Tools reading a journal do not create one where there is none."""
        missing = self.mktemp()
        with self.assertRaises(JournalError) as caught:
            JournalFile(missing, create=False)
        self.assertIn("no journal in", str(caught.exception))
        self.assertFalse(os.path.exists(missing))

    def test_notADatabase(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, FILENAME), "wb") as f:
            f.write(b"this is not SQLite" * 100)
        with self.assertRaises(JournalError) as caught:
            JournalFile(directory)
        self.assertIn("is not an SQLite database", str(caught.exception))

    def test_uncreatableDirectory(self) -> None:
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        with self.assertRaises(JournalError):
            JournalFile(os.path.join(blocker, "data"))


class SizesTests(SynchronousTestCase):
    """
    The bytes of the packets pending and in quarantine, kept up to date by
    each commit without counting the file again.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.file = JournalFile(self.directory)
        self.addCleanup(lambda: self.file.close())

    def counted(self) -> Sizes:
        """What a fresh count of the file says."""
        fresh = JournalFile(self.directory, create=False, read_only=True)
        try:
            return fresh.status().sizes
        finally:
            fresh.close()

    def test_everyWayInAndOut(self) -> None:
        size = len(entry(1).packet.data)
        why = Quarantine("unknown-device", "no profile", 1)
        self.assertEqual(self.file.sizes(), Sizes(0, 0))
        added = [(entry(1), why), (entry(2), None), (entry(3), None)]
        self.file.commit(Changes(added=added))
        self.assertEqual(self.file.sizes(), Sizes(2 * size, size))
        # A pending packet that fails to decode, and one already there (again).
        self.file.commit(Changes(quarantined={2: why, 1: why}))
        self.assertEqual(self.file.sizes(), Sizes(size, 2 * size))
        # Refused lines count with their packet.
        refused = Quarantine("refused_by_influxdb", "HTTP 400", 1, (b"a 1", b"b 2"))
        self.file.commit(Changes(quarantined={2: refused}))
        self.assertEqual(self.file.sizes(), Sizes(size, 2 * size + 7))
        # Delivered and forgotten (a replay's) packets leave.
        self.file.commit(Changes(delivered={3}))
        self.file.forget([1])
        self.assertEqual(self.file.sizes(), Sizes(0, size + 7))
        self.assertEqual(self.counted(), Sizes(0, size + 7))

    def test_whatItIsTimedWithCounts(self) -> None:
        timed = JournalEntry(
            1,
            Packet(reference_packet(2), "p", T0),
            TimingInputs(T0 - S, S, 1.0, b"\x00" * 60, learned=True),
        )
        self.file.commit(Changes(added=[(timed, None)]))
        self.assertEqual(self.file.sizes(), Sizes(len(reference_packet(2)) + 60, 0))
        self.assertEqual(self.counted(), self.file.sizes())

    def test_failedCommitCountsNothing(self) -> None:
        why = Quarantine("truncated", "9 of 189 bytes", 1)
        self.file.commit(Changes(added=[(entry(1), why)]))
        with self.assertRaises(sqlite3.IntegrityError):
            self.file.commit(Changes(added=[(entry(2), why), (entry(1), why)]))
        self.assertEqual(self.file.sizes(), Sizes(0, len(entry(1).packet.data)))

    def test_anotherProcessShowsAtTheNextStatus(self) -> None:
        why = Quarantine("unknown-device", "no profile", 1)
        self.file.commit(Changes(added=[(entry(1), why), (entry(2), why)]))
        self.assertEqual(self.file.sizes().quarantined, 2 * len(entry(1).packet.data))
        replay = JournalFile(self.directory, create=False)
        replay.forget([1, 2])
        replay.close()
        self.assertEqual(self.file.status().sizes, Sizes(0, 0))
        self.assertEqual(self.file.sizes(), Sizes(0, 0))


class ReclaimTests(SynchronousTestCase):
    """
    Space given back when the live data is small: free pages and the
    write-ahead log, which a small disk cannot spare.
    """

    def setUp(self) -> None:
        self.file = JournalFile(self.mktemp())
        self.addCleanup(lambda: self.file.close())

    def sizes(self) -> tuple[int, int]:
        path = self.file.path
        return os.path.getsize(path), os.path.getsize(path + "-wal")

    def backlog_delivered(self, count: int = 2000) -> None:
        """A backlog of C{count} small packets, committed one by one, then delivered."""
        for i in range(1, count + 1):
            self.file.commit(Changes(added=[(entry(i), None)]))
        for start in range(1, count + 1, 100):
            self.file.commit(Changes(delivered=set(range(start, start + 100))))

    def test_smallLiveDataSmallFiles(self) -> None:
        """
        2,000 small packets one commit each (about 8 MB of log written),
        then delivered: the files shrink back to about the live data.
        """
        self.backlog_delivered()
        database, log = self.sizes()
        used = self.file.used_bytes()
        self.assertLess(used, 100_000)
        self.assertLessEqual(log, WASTE_BYTES + 100_000)
        self.assertLessEqual(database + log, 2 * WASTE_BYTES)
        self.file.reclaim()
        database, log = self.sizes()
        self.assertEqual(log, 0)
        self.assertLessEqual(database, used + 2 * 4096)  # the pointer-map pages

    def test_readerKeepsTheLogUntilDone(self) -> None:
        """
        A reader in the middle of the log (weather quarantine list) keeps it
        whole; reclaiming does not wait for it (no busy wait: the journal's
        own timeout is left as it was), and the next reclaim truncates.
        """
        self.backlog_delivered(200)
        self.file.commit(Changes(added=[(entry(9999), None)]))
        reader = JournalFile(self.file.directory, create=False, read_only=True)
        self.addCleanup(reader.close)
        reader.connection.execute("BEGIN")
        self.assertEqual(len(reader.pending()), 1)  # its snapshot holds the log
        self.file.commit(Changes(delivered={9999}))
        self.file.reclaim()
        self.assertGreater(self.sizes()[1], 0)
        timeout = self.file.connection.execute("PRAGMA busy_timeout").fetchone()[0]
        self.assertEqual(timeout, 10_000)
        reader.connection.execute("COMMIT")
        self.file.reclaim()
        self.assertEqual(self.sizes()[1], 0)


class ReadOnlyTests(SynchronousTestCase):
    """The tools' listings read without writing (they work on a full disk)."""

    def test_readsWhatTheServerCommitted(self) -> None:
        directory = self.mktemp()
        server = JournalFile(directory)
        self.addCleanup(server.close)
        server.commit(Changes(added=[(entry(1), None)]))
        reader = JournalFile(directory, create=False, read_only=True)
        self.addCleanup(reader.close)
        self.assertEqual([e.id for e in reader.pending()], [1])
        with self.assertRaises(sqlite3.OperationalError) as caught:
            reader.commit(Changes(added=[(entry(2), None)]))
        self.assertIn("readonly", str(caught.exception))

    def test_olderSchemaUpgradedFirst(self) -> None:
        directory = self.mktemp()
        schema_1_journal(directory)
        reader = JournalFile(directory, create=False, read_only=True)
        self.addCleanup(reader.close)
        self.assertEqual(reader.status().pending, 1)
        version = reader.connection.execute("PRAGMA user_version").fetchone()[0]
        self.assertEqual(version, SCHEMA_VERSION)


#: Schema 1, as weather wrote it before timing inputs were journaled.
SCHEMA_1 = """
CREATE TABLE packet (
    id INTEGER PRIMARY KEY,
    arrival_ns INTEGER NOT NULL,
    peer TEXT NOT NULL,
    data BLOB NOT NULL,
    previous_arrival_ns INTEGER,
    reason TEXT,
    detail TEXT,
    quarantined_ns INTEGER,
    refused BLOB
);
CREATE INDEX quarantined ON packet (id) WHERE reason IS NOT NULL;
CREATE TABLE device (
    id INTEGER PRIMARY KEY,
    last_arrival_ns INTEGER NOT NULL
);
"""


def schema_1_journal(directory: str) -> None:
    """
    A journal as schema 1 left it: a pending packet timed by its previous
    arrival, a quarantined one, and two devices' last arrivals.
    """
    os.makedirs(directory)
    db = sqlite3.connect(os.path.join(directory, FILENAME), isolation_level=None)
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(SCHEMA_1)
    db.execute("PRAGMA user_version = 1")
    insert = (
        "INSERT INTO packet (id, arrival_ns, peer, data, previous_arrival_ns, reason, "
        "detail, quarantined_ns, refused) VALUES (?,?,?,?,?,?,?,?,?)"
    )
    db.execute(
        insert,
        (7, T0, "192.0.2.7:5", reference_packet(30), T0 - 3590 * S, None, None, None, None),
    )
    db.execute(
        insert,
        (
            8,
            T0 + S,
            "192.0.2.9:5",
            reference_packet(2, device_id=9),
            None,
            "unknown-device",
            "no profile for device 9",
            T0 + 2 * S,
            None,
        ),
    )
    db.executemany("INSERT INTO device VALUES (?, ?)", [(1, T0), (9, T0 + S)])
    db.close()


class UpgradeTests(SynchronousTestCase):
    """A journal written by an older schema is upgraded in place, nothing lost."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        schema_1_journal(self.directory)
        self.file = JournalFile(self.directory)
        self.addCleanup(lambda: self.file.close())

    def test_version(self) -> None:
        version = self.file.connection.execute("PRAGMA user_version").fetchone()[0]
        self.assertEqual((version, SCHEMA_VERSION), (2, 2))

    def test_pendingKeptTimedAsBefore(self) -> None:
        """A schema-1 packet is timed with its previous arrival, on the wall clock."""
        [pending] = self.file.pending()
        self.assertEqual(pending.id, 7)
        self.assertEqual(pending.packet, Packet(reference_packet(30), "192.0.2.7:5", T0))
        self.assertEqual(pending.timing, TimingInputs.since(T0 - 3590 * S, T0))
        self.assertIsNone(pending.boot_id)
        points = packet_points(
            pending.packet.data, T0, pending.timing, REFERENCE_DEVICES, LineEncoder()
        )
        self.assertEqual(points.decoded.times[-1], T0)
        self.assertTrue(points.decoded.measured)
        self.assertEqual(
            points.lines,
            oracle_lines(pending.packet.data, T0, pending.timing, REFERENCE_DEVICES),
        )

    def test_quarantineKept(self) -> None:
        [kept] = self.file.quarantined()
        self.assertEqual(kept.entry.id, 8)
        self.assertEqual(kept.entry.timing, TimingInputs())
        self.assertEqual(
            kept.quarantine,
            Quarantine("unknown-device", "no profile for device 9", T0 + 2 * S),
        )
        self.assertEqual(self.file.status().quarantined, 1)

    def test_devicesKept(self) -> None:
        self.assertEqual(
            self.file.stations(),
            {1: StationState(T0, None, None), 9: StationState(T0 + S, None, None)},
        )

    def test_newRowsBeside(self) -> None:
        """The upgraded file takes new packets and states, and keeps them."""
        timed = JournalEntry(
            9,
            Packet(reference_packet(2), "192.0.2.7:5", T0 + 3600 * S, 5 * S),
            TimingInputs(T0, 3600 * S, 1.01, b"\x01" * 6),
            "boot-b",
        )
        state = StationState(T0 + 3600 * S, 5 * S, "boot-b", (1.01,), b"\x01" * 6)
        self.file.commit(Changes(added=[(timed, None)], devices={1: state}))
        self.file.close()
        self.file = JournalFile(self.directory)
        self.assertEqual([e.id for e in self.file.pending()], [7, 9])
        self.assertEqual(self.file.pending()[1], timed)
        self.assertEqual(self.file.stations()[1], state)


class ChangesTests(SynchronousTestCase):
    def test_then(self) -> None:
        """A failed group and the changes made since commit as one, in order."""
        first = Changes(
            added=[(entry(1), None)],
            delivered={7},
            devices={1: StationState(5, None, None)},
        )
        later = Changes(
            added=[(entry(2), None)],
            quarantined={7: Quarantine("r", "d", 1)},
            devices={1: StationState(9, None, None)},
        )
        merged = first.then(later)
        self.assertEqual([e.id for e, _ in merged.added], [1, 2])
        self.assertEqual(merged.delivered, set())  # quarantined later wins
        self.assertEqual(set(merged.quarantined), {7})
        self.assertEqual(merged.devices, {1: StationState(9, None, None)})
        self.assertFalse(Changes())
        self.assertTrue(merged)


class ReplayRequestTests(SynchronousTestCase):
    """What weather replay asks of a running server, kept in the journal."""

    def setUp(self) -> None:
        self.file = JournalFile(self.mktemp())
        self.addCleanup(lambda: self.file.close())
        unknown = Quarantine("unknown-device", "no profile for device 1", T0)
        self.file.commit(
            Changes(added=[(entry(1), unknown), (entry(2), None), (entry(3), unknown)])
        )

    def test_onlyQuarantinedPacketsMarked(self) -> None:
        """A pending packet (2) or one gone (9) is left alone."""
        self.assertEqual(self.file.request_replay([1, 2, 3, 9], "asked", T0 + 5), 2)
        self.assertEqual([e.id for e in self.file.replay_requested()], [1, 3])
        self.assertEqual([e.id for e in self.file.replay_requested(1, 10)], [3])
        self.assertEqual(self.file.count_replay_requested(), 2)
        [first, _] = self.file.quarantined()
        self.assertEqual(first.quarantine, Quarantine("replay-requested", "asked", T0 + 5))
        self.assertEqual(
            self.file.reasons([1, 2, 3, 9]),
            {1: "replay-requested", 2: None, 3: "replay-requested"},
        )
        # Still in quarantine: its budget counts them, the backlog does not.
        self.assertEqual(self.file.status().quarantined, 2)
        self.assertEqual([e.id for e in self.file.pending()], [2])

    def test_takenBecomesPending(self) -> None:
        """Its bytes move from the quarantine's to those to deliver."""
        self.file.request_replay([1, 3], "asked", T0)
        before = self.file.sizes()
        size = len(entry(1).packet.data)
        self.file.commit(Changes(taken={1}))
        self.assertEqual([e.id for e in self.file.pending()], [1, 2])
        self.assertEqual(
            self.file.sizes(), Sizes(before.pending + size, before.quarantined - size)
        )
        self.assertEqual(self.file.sizes(), self.file.status().sizes)
        self.assertEqual(self.file.reasons([1]), {1: None})

    def test_takenOnlyFromRequests(self) -> None:
        """A packet in quarantine for another reason is not made pending."""
        self.file.commit(Changes(taken={1}))
        self.assertEqual([e.id for e in self.file.pending()], [2])

    def test_takenThenDeliveredOrQuarantinedInOneGroup(self) -> None:
        self.file.request_replay([1, 3], "asked", T0)
        again = Quarantine("refused_by_influxdb", "HTTP 400: no", T0)
        self.file.commit(
            Changes(taken={1})
            .then(Changes(delivered={1}, taken={3}))
            .then(Changes(quarantined={3: again}))
        )
        self.assertEqual(self.file.reasons([1, 3]), {3: "refused_by_influxdb"})
        self.assertEqual(self.file.sizes(), self.file.status().sizes)
