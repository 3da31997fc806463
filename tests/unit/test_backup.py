"""
weather journal backup: a consistent copy of a journal a writer holds open.
"""

from __future__ import annotations

import io
import os
import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from tests.support import reference_packet
from weather.core.packet import Packet
from weather.core.timing import StationState, TimingInputs
from weather.journal.backup import backup_journal
from weather.journal.service import LOCKNAME
from weather.journal.store import (
    FILENAME,
    Changes,
    JournalEntry,
    JournalError,
    JournalFile,
    Quarantine,
)
from weather.tools.cli import main

S = 1_000_000_000
T0 = 1_700_000_000 * S
#: A moment for the backups' names: 2023-11-14 22:13:20 UTC.
NOW = T0 / S


def entry(entry_id: int) -> JournalEntry:
    arrival = T0 + entry_id * 3600 * S
    packet = Packet(reference_packet(30), f"192.0.2.{entry_id}:4000", arrival)
    return JournalEntry(entry_id, packet, TimingInputs.since(arrival - 3600 * S, arrival))


def contents(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class LiveJournalTests(SynchronousTestCase):
    """A journal a writer holds open, its last commits only in the -wal file."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.writer = JournalFile(self.directory)
        self.addCleanup(self.writer.close)
        self.journal = os.path.join(self.directory, FILENAME)
        self.station = StationState(T0 + 2 * 3600 * S, None, None, (1.0625,), b"\x01" * 6)
        self.writer.commit(
            Changes(
                added=[
                    (entry(1), None),
                    (entry(2), Quarantine("unknown_device", "no profile", T0)),
                ],
                devices={1: self.station},
            )
        )
        self.target = self.mktemp()
        os.mkdir(self.target)

    def restored(self, path: str) -> JournalFile:
        """The copy, opened as the journal of a data directory of its own."""
        directory = self.mktemp()
        os.mkdir(directory)
        os.rename(path, os.path.join(directory, FILENAME))
        file = JournalFile(directory, create=False)
        self.addCleanup(file.close)
        return file

    def test_walIncluded(self) -> None:
        """
        What is committed is in the copy, though only in the -wal file yet;
        the copy opens as a journal with the same packets and station state.
        """
        self.assertGreater(os.path.getsize(self.journal + "-wal"), 0)
        copy = backup_journal(self.directory, self.target, NOW)
        self.assertEqual((copy.pending, copy.quarantined), (1, 1))
        restored = self.restored(copy.path)
        self.assertEqual(restored.pending(), self.writer.pending())
        self.assertEqual(restored.quarantined(), self.writer.quarantined())
        self.assertEqual(restored.stations(), {1: self.station})

    def test_snapshotWhileTheWriterCommits(self) -> None:
        """
        A transaction in progress is not in the copy and is not held up: the
        writer commits it afterwards, and goes on.
        """
        db = self.writer.connection
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM packet WHERE id = 1")
        db.execute(
            "INSERT INTO packet (id, arrival_ns, peer, data) VALUES (3, 0, 'p', x'00')"
        )
        copy = backup_journal(self.directory, self.target, NOW)
        db.execute("COMMIT")
        self.writer.commit(Changes(added=[(entry(4), None)]))
        self.assertEqual([e.id for e in self.writer.pending()], [3, 4])
        self.assertEqual([e.id for e in self.restored(copy.path).pending()], [1])

    def test_journalUntouched(self) -> None:
        """The journal is read, never written: its files are byte for byte the same."""
        files = [self.journal + suffix for suffix in ("", "-wal")]
        before = [contents(path) for path in files]
        backup_journal(self.directory, self.target, NOW)
        self.assertEqual([contents(path) for path in files], before)

    def test_oneFilePrivateAndNamed(self) -> None:
        """
        Into a directory: journal-<UTC time>.sqlite3, one self-contained
        file (no -wal), mode 0600, nothing else left beside it.
        """
        copy = backup_journal(self.directory, self.target, NOW)
        self.assertEqual(os.path.dirname(copy.path), os.path.abspath(self.target))
        self.assertEqual(os.path.basename(copy.path), "journal-20231114T221320Z.sqlite3")
        self.assertEqual(os.listdir(self.target), [os.path.basename(copy.path)])
        self.assertEqual(os.stat(copy.path).st_mode & 0o777, 0o600)
        self.assertEqual(copy.size, os.path.getsize(copy.path))
        db = sqlite3.connect(copy.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "delete")

    def test_sameSecondNewName(self) -> None:
        """A second copy in the same second gets a name of its own."""
        first = backup_journal(self.directory, self.target, NOW)
        second = backup_journal(self.directory, self.target, NOW)
        self.assertEqual(
            sorted(os.listdir(self.target)),
            ["journal-20231114T221320Z-2.sqlite3", "journal-20231114T221320Z.sqlite3"],
        )
        self.assertEqual(contents(first.path), contents(second.path))

    def test_existingFileKept(self) -> None:
        """A file of that name is replaced only when asked."""
        path = os.path.join(self.target, "journal.bak")
        with open(path, "wb") as f:
            f.write(b"an older copy")
        with self.assertRaises(JournalError) as raised:
            backup_journal(self.directory, path, NOW)
        self.assertIn("exists: give --force", str(raised.exception))
        self.assertEqual(contents(path), b"an older copy")
        self.assertEqual(os.listdir(self.target), ["journal.bak"])
        backup_journal(self.directory, path, NOW, replace=True)
        self.assertEqual(len(self.restored(path).pending()), 1)

    def test_neverTheServersFiles(self) -> None:
        """Not even when asked: the journal, its -wal and -shm, the server's lock."""
        for name in (FILENAME, FILENAME + "-wal", FILENAME + "-shm", LOCKNAME):
            with self.assertRaises(JournalError):
                backup_journal(
                    self.directory, os.path.join(self.directory, name), NOW, replace=True
                )
        self.assertEqual([e.id for e in self.writer.pending()], [1])

    def test_intoTheDataDirectory(self) -> None:
        """The data directory itself can hold a copy, under a name of its own."""
        copy = backup_journal(self.directory, self.directory, NOW)
        self.assertEqual(os.path.dirname(copy.path), os.path.abspath(self.directory))
        self.assertEqual(len(self.restored(copy.path).pending()), 1)


class FailureTests(SynchronousTestCase):
    def test_noJournal(self) -> None:
        """No journal: an error, and nothing is created, there or at the destination."""
        directory, target = self.mktemp(), self.mktemp()
        os.mkdir(directory)
        os.mkdir(target)
        with self.assertRaises(JournalError) as raised:
            backup_journal(directory, target, NOW)
        self.assertIn("no journal in", str(raised.exception))
        self.assertEqual((os.listdir(directory), os.listdir(target)), ([], []))

    def test_notAJournalLeavesNoPartialCopy(self) -> None:
        directory, target = self.mktemp(), self.mktemp()
        os.mkdir(directory)
        os.mkdir(target)
        with open(os.path.join(directory, FILENAME), "wb") as f:
            f.write(b"not SQLite at all" * 512)
        with self.assertRaises(JournalError) as raised:
            backup_journal(directory, target, NOW)
        self.assertIn("cannot back up", str(raised.exception))
        self.assertEqual(os.listdir(target), [])

    def test_missingDestinationDirectory(self) -> None:
        directory = self.mktemp()
        JournalFile(directory).close()
        missing = os.path.join(self.mktemp(), "copy.sqlite3")
        with self.assertRaises(JournalError) as raised:
            backup_journal(directory, missing, NOW)
        self.assertIn("cannot write in", str(raised.exception))


class CommandTests(SynchronousTestCase):
    """weather journal backup: where the copy went, what it holds; refusals exit 1."""

    def run_command(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["journal", "backup", *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    def test_backupAndRefusal(self) -> None:
        directory = self.mktemp()
        file = JournalFile(directory)
        file.commit(Changes(added=[(entry(1), None)]))
        path = os.path.abspath(self.mktemp())
        code, out, err = self.run_command("--data-dir", directory, path)
        file.close()
        self.assertEqual((code, err), (0, ""))
        self.assertRegex(
            out,
            rf"^Journal backed up to {path} \(\d+\.\d KiB\): 1 packet to deliver, "
            r"0 in quarantine\.\n$",
        )
        code, out, err = self.run_command("-d", directory, path)
        self.assertEqual((code, out), (1, ""))
        self.assertIn("exists: give --force", err)
        self.assertEqual(self.run_command("-d", directory, "--force", path)[0], 0)

    def test_defaultIsTheCurrentDirectory(self) -> None:
        directory = os.path.abspath(self.mktemp())
        JournalFile(directory).close()
        here = os.path.abspath(self.mktemp())
        os.mkdir(here)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(here)
        code, out, _ = self.run_command("-d", directory)
        self.assertEqual(code, 0)
        self.assertIn(f"Journal backed up to {here}{os.sep}journal-", out)
        self.assertEqual(len(os.listdir(here)), 1)
