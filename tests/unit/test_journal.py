"""
The journal file: what it keeps, in one transaction, across reopening.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from tests.support import reference_packet
from weather.core.packet import Packet
from weather.journal.store import (
    FILENAME,
    SCHEMA_VERSION,
    Changes,
    JournalEntry,
    JournalError,
    JournalFile,
    Quarantine,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S


def entry(entry_id: int, arrival_ns: int = T0, previous: int | None = None) -> JournalEntry:
    return JournalEntry(
        entry_id, Packet(reference_packet(2), "192.0.2.7:5", arrival_ns), previous
    )


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
        self.assertEqual(self.file.device_arrivals(), {})
        status = self.file.status()
        self.assertEqual((status.pending, status.quarantined), (0, 0))
        self.assertIsNone(status.oldest_pending_ns)

    def test_packetsSurviveReopening(self) -> None:
        """Packets, their timing state and the device state are all kept."""
        self.file.commit(
            Changes(
                added=[(entry(1), None), (entry(2, T0 + S, T0), None)], devices={1: T0 + S}
            )
        )
        file = self.reopen()
        self.assertEqual(file.pending(), [entry(1), entry(2, T0 + S, T0)])
        self.assertEqual(file.device_arrivals(), {1: T0 + S})
        self.assertEqual(file.next_id(), 3)
        status = file.status()
        self.assertEqual(status.pending, 2)
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
            (JournalEntry(i, Packet(os.urandom(4000), "p", T0), None), None)
            for i in range(1, 20)
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
            (JournalEntry(i, Packet(os.urandom(60_000), "p", T0), None), None)
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
        self.assertIn("cannot open the journal", str(caught.exception))

    def test_uncreatableDirectory(self) -> None:
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        with self.assertRaises(JournalError):
            JournalFile(os.path.join(blocker, "data"))


class ChangesTests(SynchronousTestCase):
    def test_then(self) -> None:
        """A failed group and the changes made since commit as one, in order."""
        first = Changes(added=[(entry(1), None)], delivered={7}, devices={1: 5})
        later = Changes(
            added=[(entry(2), None)],
            quarantined={7: Quarantine("r", "d", 1)},
            devices={1: 9},
        )
        merged = first.then(later)
        self.assertEqual([e.id for e, _ in merged.added], [1, 2])
        self.assertEqual(merged.delivered, set())  # quarantined later wins
        self.assertEqual(set(merged.quarantined), {7})
        self.assertEqual(merged.devices, {1: 9})
        self.assertFalse(Changes())
        self.assertTrue(merged)
