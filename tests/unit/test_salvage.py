"""
A damaged journal is never quietly replaced: refused at start-up in one line,
read by C{weather journal check}, copied into a new journal by C{weather
journal salvage}, which keeps the damaged files.  The damage is made here, on
real journals: emptied, deleted, pages overwritten with random bytes.
"""

from __future__ import annotations

import errno
import io
import os
import pwd
import random
import shutil
import sqlite3

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import reference_packet
from tests.unit.test_journal import schema_1_journal
from weather.app import tap
from weather.app.settings import Options
from weather.core.packet import HEADER_SIZE, Packet
from weather.core.timing import StationState, TimingInputs
from weather.journal import salvage as salvaging
from weather.journal.pages import Pages, page_size, record, varint
from weather.journal.salvage import DEVICE, PACKET, fit, salvage
from weather.journal.service import take_lock
from weather.journal.store import (
    FILENAME,
    MARKER,
    SALVAGING,
    Changes,
    JournalDamaged,
    JournalEntry,
    JournalFile,
    Quarantine,
    check_journal,
    unusable_file,
)
from weather.tools.cli import ReplayOptions, main, replay

S = 1_000_000_000
T0 = 1_700_000_000 * S
PAGE = 4096


def fill(directory: str, count: int = 600, devices: int = 3) -> None:
    """
    A closed journal of C{count} packets, each with its timing inputs, every
    tenth in quarantine (every fiftieth with refused lines that overflow a
    page), and C{devices} stations' timing state.
    """
    file = JournalFile(directory)
    added = []
    for i in range(1, count + 1):
        data = reference_packet(30, device_id=1 + i % devices, start=i)
        packet = Packet(data, f"192.0.2.{i % 250}:5{i}", T0 + i * S, i * S)
        timing = TimingInputs(
            T0 + (i - 1) * S,
            S,
            1.0 + i / 10_000,
            data[HEADER_SIZE : HEADER_SIZE + 12],
            bool(i % 2),
        )
        quarantine = None
        if i % 10 == 0:
            refused = (b"light value=%d " % i + b"x" * 6000,) if i % 50 == 0 else ()
            quarantine = Quarantine(
                "unknown_device", f"no profile ({i})", T0 + i * S, refused
            )
        added.append((JournalEntry(i, packet, timing, "boot-a"), quarantine))
    stations = {
        d: StationState(T0 + d, d * S, "boot-a", (1.01, 0.99), bytes([d]) * 6)
        for d in range(1, devices + 1)
    }
    file.commit(Changes(added=added, devices=stations))
    file.close()


def contents(directory: str) -> tuple[dict, dict, dict]:
    """Every packet to deliver and in quarantine, by id, and the stations."""
    file = JournalFile(directory, create=False)
    try:
        pending = {e.id: e for e in file.pending(limit=-1)}
        kept = {q.entry.id: q for q in file.quarantined()}
        return pending, kept, file.stations()
    finally:
        file.close()


def garble(path: str, pages: list[int], seed: int = 0) -> None:
    """Overwrite C{pages} (numbered from 1) with random bytes."""
    chance = random.Random(seed)
    with open(path, "r+b") as f:
        for number in pages:
            f.seek((number - 1) * PAGE)
            f.write(chance.randbytes(PAGE))


def rows_by_page(path: str, columns: tuple = PACKET) -> dict[int, int]:
    """Each packet's (or station's) page, by id, read from a whole journal's pages."""
    with open(path, "rb") as f:
        return {
            row.rowid: row.page
            for row in Pages(f, PAGE).rows()
            if len(row.values) == len(columns) and row.values[0] is None
        }


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


class DamagedTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        self.path = os.path.join(self.directory, FILENAME)

    def assertDamaged(self, what: str) -> str:
        """Opening for the server and the start-up check refuse, in one line."""
        for opening in (lambda: JournalFile(self.directory), self.check_journal):
            error = self.assertRaises(JournalDamaged, opening)
            message = str(error)
            self.assertIn(what, message)
            self.assertIn(f"weather journal check --data-dir {self.directory}", message)
            self.assertIn(f"weather journal salvage --data-dir {self.directory}", message)
            self.assertNotIn("\n", message)
        return message

    def check_journal(self) -> None:
        check_journal(self.directory)

    def salvaged(self) -> salvaging.Salvaged:
        done = salvage(self.directory, T0 / S)
        self.assertTrue(os.path.isdir(done.kept))
        self.assertFalse(os.path.exists(os.path.join(self.directory, SALVAGING)))
        JournalFile(self.directory).close()  # the server opens it again
        check_journal(self.directory)
        return done


class FirstStartTests(DamagedTestCase):
    """A directory that never had a journal starts as before."""

    def test_newDirectory(self) -> None:
        check_journal(self.directory)  # nothing there: the server makes it
        self.assertFalse(os.path.exists(self.directory))
        JournalFile(self.directory).close()
        self.assertTrue(os.path.exists(os.path.join(self.directory, MARKER)))
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            sorted([FILENAME, MARKER]),
            "nothing else left",
        )
        check_journal(self.directory)

    def test_madeWhole(self) -> None:
        """The journal is linked into place with its schema in the file itself."""
        JournalFile(self.directory).close()
        self.assertEqual(os.listdir(self.directory).count(FILENAME + "-wal"), 0)
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 2)
        self.assertEqual(db.execute("PRAGMA auto_vacuum").fetchone()[0], 2)

    def test_olderJournalMarked(self) -> None:
        """A journal made before the marker existed gets it at the next start."""
        schema_1_journal(self.directory)
        self.assertFalse(os.path.exists(os.path.join(self.directory, MARKER)))
        JournalFile(self.directory, create=False).close()  # a tool: writes nothing
        self.assertFalse(os.path.exists(os.path.join(self.directory, MARKER)))
        JournalFile(self.directory).close()
        self.assertTrue(os.path.exists(os.path.join(self.directory, MARKER)))


class RefusedTests(DamagedTestCase):
    """Missing, empty or unreadable: refused, and the files left as they are."""

    def setUp(self) -> None:
        super().setUp()
        fill(self.directory, count=200)

    def test_emptied(self) -> None:
        os.truncate(self.path, 0)
        self.assertDamaged("is empty (0 bytes)")
        self.assertEqual(os.path.getsize(self.path), 0)

    def test_deleted(self) -> None:
        os.unlink(self.path)
        self.assertDamaged("is missing, though this directory had one")
        self.assertFalse(os.path.exists(self.path))

    def test_notSQLite(self) -> None:
        garble(self.path, [1])
        self.assertDamaged("is not an SQLite database")

    def test_noTables(self) -> None:
        """An SQLite database, but not a journal: a journal has its tables at once."""
        os.unlink(self.path)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE t (a)")
        db.execute("DROP TABLE t")
        db.close()
        self.assertDamaged("holds no journal tables")

    def test_garbledPage(self) -> None:
        """Damage past the first page: the start-up check reads every page."""
        garble(self.path, [10])
        JournalFile(self.directory, create=False).close()  # the first page reads
        message = str(self.assertRaises(JournalDamaged, self.check_journal))
        self.assertIn("is damaged (On tree page 11 cell 0: ", message)

    def test_salvageUnfinished(self) -> None:
        os.mkdir(os.path.join(self.directory, SALVAGING))
        self.assertDamaged("a salvage did not finish; run it again")

    def test_makeServiceOneLine(self) -> None:
        """C{twistd weather} stops before it starts, with one line."""
        os.truncate(self.path, 0)
        options = Options()
        options.parseOptions(["--data-dir", self.directory])
        error = self.assertRaises(SystemExit, tap.makeService, options)
        self.assertTrue(error.code.startswith(f"weather: the journal {self.path} is empty"))
        self.assertNotIn("\n", error.code)


class CheckTests(DamagedTestCase):
    def test_whole(self) -> None:
        fill(self.directory)
        code, out, _ = run("journal", "check", "--data-dir", self.directory)
        self.assertEqual(code, 0, out)
        self.assertIn("State:        whole", out)
        self.assertIn("600 packets (540 to deliver, 60 in quarantine)", out)
        self.assertIn("the timing state of 3 stations", out)
        self.assertEqual(
            sorted(os.listdir(self.directory)), sorted([FILENAME, MARKER, "server.lock"])
        )

    def test_damaged(self) -> None:
        fill(self.directory)
        before = rows_by_page(self.path)
        garble(self.path, [before[300]])
        on_it = sum(1 for page in before.values() if page == before[300])
        with open(self.path, "rb") as f:
            garbled = f.read()
        code, out, _ = run("journal", "check", "--data-dir", self.directory)
        self.assertEqual(code, 1, out)
        self.assertIn("State:        damaged: ", out)
        self.assertIn(f"Readable:     {600 - on_it} packets", out)
        self.assertIn(f"Lost:         at most {on_it} packets\n", out)
        self.assertIn(f"weather journal salvage --data-dir {self.directory}", out)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), garbled, "left as it was")
        self.assertEqual(
            sorted(os.listdir(self.directory)), sorted([FILENAME, MARKER, "server.lock"])
        )

    def test_endDamaged(self) -> None:
        """How many packets followed the last one read cannot be told."""
        fill(self.directory)
        pages = rows_by_page(self.path)
        garble(self.path, [pages[600]])
        last = max(i for i, page in pages.items() if page != pages[600])
        code, out, _ = run("journal", "check", "--data-dir", self.directory)
        self.assertEqual(code, 1)
        self.assertIn(
            f"Lost:         any journaled after id {last} (the end of the journal is "
            "damaged)\n",
            out,
        )

    def test_changesNothing(self) -> None:
        fill(self.directory, count=50)
        os.truncate(self.path, 0)
        code, out, _ = run("journal", "check", "--data-dir", self.directory)
        self.assertEqual(code, 1)
        self.assertIn("damaged: is empty (0 bytes)", out)
        self.assertIn("Readable:     0 packets", out)
        self.assertIn("Lost:         whatever it held: nothing of it can be read", out)
        self.assertEqual(
            sorted(os.listdir(self.directory)), sorted([FILENAME, MARKER, "server.lock"])
        )
        self.assertEqual(os.path.getsize(self.path), 0)

    def test_noJournal(self) -> None:
        code, _, err = run("journal", "check", "--data-dir", self.directory)
        self.assertEqual(
            (code, err),
            (1, f"weather: no journal in {self.directory} (is --data-dir right?)\n"),
        )
        self.assertFalse(os.path.exists(self.directory))

    def test_serverRunning(self) -> None:
        fill(self.directory, count=5)
        lock = take_lock(self.directory)
        self.addCleanup(os.close, lock)
        for command in ("check", "salvage"):
            code, _, err = run("journal", command, "--data-dir", self.directory)
            self.assertEqual(
                (code, err),
                (
                    1,
                    f"weather: a weather server is using {self.directory}: stop it first\n",
                ),
            )


class SalvageTests(DamagedTestCase):
    def setUp(self) -> None:
        super().setUp()
        fill(self.directory)
        self.before = contents(self.directory)

    def assertSalvaged(self, lost=frozenset(), gone=frozenset()) -> None:
        """
        Every packet but those in C{lost} and every station's state but those
        in C{gone} is in the new journal, exactly as it was.
        """
        pending, kept, stations = contents(self.directory)
        before = self.before
        self.assertEqual(pending, {i: e for i, e in before[0].items() if i not in lost})
        self.assertEqual(kept, {i: q for i, q in before[1].items() if i not in lost})
        self.assertEqual(stations, {i: s for i, s in before[2].items() if i not in gone})

    def test_whole(self) -> None:
        """A journal that is not damaged is left alone."""
        code, out, _ = run("journal", "salvage", "--data-dir", self.directory)
        self.assertEqual(code, 0)
        self.assertEqual(
            out, f"The journal {self.path} is not damaged: nothing to salvage.\n"
        )
        self.assertEqual(
            sorted(os.listdir(self.directory)), sorted([FILENAME, MARKER, "server.lock"])
        )

    def test_emptied(self) -> None:
        os.truncate(self.path, 0)
        done = self.salvaged()
        self.assertEqual(done.reading.packets, 0)
        self.assertEqual(os.path.getsize(os.path.join(done.kept, FILENAME)), 0)
        self.assertEqual(contents(self.directory), ({}, {}, {}))

    def test_deleted(self) -> None:
        os.unlink(self.path)
        code, out, _ = run("journal", "salvage", "--data-dir", self.directory)
        self.assertEqual(code, 0, out)
        self.assertIn("Salvaged:     0 packets", out)
        self.assertEqual(contents(self.directory), ({}, {}, {}))

    def test_garbledPages(self) -> None:
        """
        Random pages overwritten: every packet on another page is salvaged,
        values and timing inputs as they were, and the count of those lost
        is exact (no id was left unused).
        """
        pages = rows_by_page(self.path)
        stations = rows_by_page(self.path, DEVICE)
        count = os.path.getsize(self.path) // PAGE
        pristine = self.mktemp()
        shutil.copyfile(self.path, pristine)
        for seed in range(6):
            shutil.copyfile(pristine, self.path)
            chance = random.Random(seed)
            bad = chance.sample(range(2, count + 1), 4)
            garble(self.path, bad, seed)
            done = self.salvaged()
            # A packet whose quarantine's refused lines overflowed onto a
            # damaged page may be lost too.
            on_bad = {i for i, page in pages.items() if page in bad}
            lost = set(self.before[0]) | set(self.before[1])
            lost -= set(contents(self.directory)[0]) | set(contents(self.directory)[1])
            self.assertLessEqual(on_bad, lost, seed)
            self.assertLessEqual(lost - on_bad, {i for i in lost if i % 50 == 0}, seed)
            self.assertSalvaged(lost, {d for d, page in stations.items() if page in bad})
            at_most, more = done.reading.lost()
            # Damage at the end hides how many were journaled after the last read.
            top = done.reading.gap_top or 0
            self.assertEqual(at_most, len({i for i in lost if not more or i <= top}), seed)
            shutil.rmtree(done.kept)

    def test_garbledFirstPage(self) -> None:
        """The first page is the schema: a new journal's stands in, nothing is lost."""
        garble(self.path, [1])
        done = self.salvaged()
        self.assertIn("a new journal's stood in", done.reading.notes[0])
        self.assertSalvaged()

    def test_garbledRoot(self) -> None:
        """
        The packet table's first page, above all its others: SQLite reads
        none, every packet is read from the pages below it.
        """
        db = sqlite3.connect(self.path)
        [root] = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'packet'")
        db.close()
        garble(self.path, [root[0]])
        done = self.salvaged()
        self.assertEqual(done.reading.gap, (0, None))
        self.assertEqual(done.reading.from_pages, 600)
        self.assertSalvaged()

    def test_killedThenEmptied(self) -> None:
        """
        Killed with the packets still in the write-ahead log, then the journal
        emptied: they are read from the log (SQLite, opening the empty file,
        would have deleted it).
        """
        directory = os.path.abspath(self.mktemp())
        file = JournalFile(directory)
        file.commit(Changes(added=[(e, None) for e in self.before[0].values()]))
        killed = os.path.abspath(self.mktemp())
        shutil.copytree(directory, killed)  # as the files are while it runs
        file.close()
        self.assertGreater(os.path.getsize(os.path.join(killed, FILENAME + "-wal")), 0)
        os.truncate(os.path.join(killed, FILENAME), 0)
        self.assertRaises(JournalDamaged, JournalFile, killed)
        salvage(killed, T0 / S)
        self.assertEqual(contents(killed)[0], self.before[0])

    def test_killedThenDeleted(self) -> None:
        """
        Killed, then the journal (and the marker) deleted: its write-ahead log
        is still there, so the journal was lost, not yet to be made (a new
        journal would take the log for its own).  Salvaged from the log.
        """
        directory = os.path.abspath(self.mktemp())
        file = JournalFile(directory)
        file.commit(Changes(added=[(e, None) for e in self.before[0].values()]))
        killed = os.path.abspath(self.mktemp())
        shutil.copytree(directory, killed)
        file.close()
        os.unlink(os.path.join(killed, FILENAME))
        os.unlink(os.path.join(killed, MARKER))
        message = str(self.assertRaises(JournalDamaged, JournalFile, killed))
        self.assertIn("is missing, though its write-ahead log is there", message)
        salvage(killed, T0 / S)
        self.assertEqual(contents(killed)[0], self.before[0])

    def test_schema1(self) -> None:
        """An older journal's packets are salvaged timed as they were."""
        directory = os.path.abspath(self.mktemp())
        schema_1_journal(directory)
        upgraded = contents(directory)  # opened by a tool: not upgraded
        garble(os.path.join(directory, FILENAME), [1])
        salvage(directory, T0 / S)
        self.assertEqual(contents(directory), upgraded)

    def test_interrupted(self) -> None:
        """
        Stopped once the damaged files are moved aside: nothing opens the
        journal, and the next salvage finishes the work.
        """
        garble(self.path, [1])
        work = os.path.join(self.directory, SALVAGING)
        os.mkdir(work)
        salvaging._move_damaged(self.directory, work)
        self.assertRaises(JournalDamaged, JournalFile, self.directory)
        self.salvaged()
        self.assertSalvaged()

    def test_noRoomForTheCopy(self) -> None:
        """A salvage that fails says why in one line; run again, it finishes."""
        garble(self.path, [1])
        copyfile = shutil.copyfile

        def full(*args: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(shutil, "copyfile", full)
        code, out, err = run("journal", "salvage", "--data-dir", self.directory)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(
            err,
            f"weather: cannot copy the journal into {self.directory}/salvage/copy: "
            "[Errno 28] No space left on device\n",
        )
        message = str(self.assertRaises(JournalDamaged, JournalFile, self.directory))
        self.assertIn("a salvage did not finish; run it again", message)
        self.patch(shutil, "copyfile", copyfile)
        self.salvaged()
        self.assertSalvaged()

    def test_interruptedWhenPlaced(self) -> None:
        """Stopped once the new journal is in place: only the tidying is left."""
        garble(self.path, [1])
        done = salvage(self.directory, T0 / S)
        os.rename(done.kept, os.path.join(self.directory, SALVAGING))
        with open(os.path.join(self.directory, SALVAGING, salvaging.MOVED), "w"):
            pass
        code, out, _ = run("journal", "salvage", "--data-dir", self.directory)
        self.assertEqual(code, 0)
        self.assertIn("Salvaged:     into", out)
        self.assertSalvaged()

    def test_report(self) -> None:
        pages = rows_by_page(self.path)
        garble(self.path, [pages[123]])
        lost = sum(1 for page in pages.values() if page == pages[123])
        code, out, _ = run("journal", "salvage", "--data-dir", self.directory)
        self.assertEqual(code, 0)
        kept = [n for n in os.listdir(self.directory) if n.startswith("journal-damaged-")]
        self.assertEqual(len(kept), 1)
        self.assertIn(
            f"Kept:         the damaged journal's files in {self.directory}/{kept[0]}\n",
            out,
        )
        self.assertIn(f"Salvaged:     {600 - lost} packets", out)
        self.assertIn(f"Lost:         at most {lost} packets\n", out)
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.directory, kept[0]))), [FILENAME]
        )


class ToolsTests(DamagedTestCase):
    """The tools that read the journal say it is damaged in one line."""

    def setUp(self) -> None:
        super().setUp()
        fill(self.directory, count=200)
        db = sqlite3.connect(self.path)
        [root] = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'packet'")
        db.close()
        garble(self.path, [root[0]])

    def assertOneLine(self, *argv: str) -> None:
        code, out, err = run(*argv, "--data-dir", self.directory)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.startswith(f"weather: the journal {self.path} cannot be read"))
        self.assertIn("weather journal salvage", err)

    def test_status(self) -> None:
        self.assertOneLine("journal", "status")

    def test_quarantineList(self) -> None:
        self.assertOneLine("quarantine", "list")

    def test_replay(self) -> None:
        options = ReplayOptions()
        options.parseOptions(["--data-dir", self.directory, "--dry-run"])
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(self.successResultOf(replay(Clock(), options, out, err)), 1)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertTrue(
            err.getvalue().startswith(f"weather: the journal {self.path} cannot")
        )

    def test_emptied(self) -> None:
        os.truncate(self.path, 0)
        for argv in (("journal", "status"), ("quarantine", "list"), ("replay",)):
            code, _, err = run(*argv, "--data-dir", self.directory)
            self.assertEqual(code, 1)
            self.assertTrue(
                err.startswith(f"weather: the journal {self.path} is empty"), err
            )
            self.assertEqual(err.count("\n"), 1)


class PermissionTests(SynchronousTestCase):
    """
    The files at fault are named, with what to run.  (Tests run as root, whom
    file modes do not stop: L{os.access} is replaced here; the integration
    test runs the server without that privilege.)
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        fill(self.directory, count=3)
        self.path = os.path.join(self.directory, FILENAME)
        for suffix in ("-wal", "-shm"):
            with open(self.path + suffix, "wb"):
                pass

    def denied(self, *paths: str):
        return lambda path, mode: path not in paths

    def test_allWritable(self) -> None:
        self.assertIsNone(unusable_file(self.directory))

    def test_leftReadOnly(self) -> None:
        """
        chmod 444 and back leaves SQLite's log and index read-only (it made
        them with the journal's mode): both are named, in one line.
        """
        wal, shm = self.path + "-wal", self.path + "-shm"
        for path in (wal, shm):
            os.chmod(path, 0o444)
        self.assertEqual(
            unusable_file(self.directory, self.denied(wal, shm)),
            f"the journal's files cannot be read and written by root: {wal} (mode "
            f"0444), {shm} (mode 0444): run chmod u+rw {wal} {shm}",
        )

    def test_otherOwner(self) -> None:
        os.chown(self.path, 65534, 65534)
        message = unusable_file(self.directory, self.denied(self.path))
        nobody = pwd.getpwuid(65534).pw_name
        self.assertTrue(
            message.endswith(f"{self.path} (owner {nobody}): run chown root {self.path}"),
            message,
        )

    def test_directory(self) -> None:
        os.chmod(self.directory, 0o500)
        self.addCleanup(os.chmod, self.directory, 0o700)
        message = unusable_file(self.directory, self.denied(self.directory))
        self.assertTrue(message.endswith(f"run chmod u+rwx {self.directory}"), message)

    def test_modeNotTheCause(self) -> None:
        """Owner and mode are right, yet access is denied: an ACL, an attribute."""
        message = unusable_file(self.directory, self.denied(self.path))
        self.assertTrue(message.endswith("(getfacl, lsattr)"), message)


class PagesTests(SynchronousTestCase):
    """The pages read as SQLite reads them."""

    def test_sameRowsAsSQLite(self) -> None:
        directory = self.mktemp()
        fill(directory)
        path = os.path.join(directory, FILENAME)
        db = sqlite3.connect(path)
        self.addCleanup(db.close)
        names = ", ".join(name for name, _ in PACKET)
        expected = db.execute(f"SELECT {names} FROM packet ORDER BY id").fetchall()
        devices = db.execute("SELECT * FROM device ORDER BY id").fetchall()
        with open(path, "rb") as f:
            self.assertEqual(page_size(f.read(100)), PAGE)
            rows = list(Pages(f, PAGE).rows())
        packets = sorted(
            fit((r.rowid, *r.values[1:]), PACKET, 9) for r in rows if len(r.values) == 15
        )
        self.assertEqual(packets, expected)
        stations = [
            fit((r.rowid, *r.values[1:]), DEVICE, 2) for r in rows if len(r.values) == 6
        ]
        self.assertEqual(stations, devices)

    def test_varint(self) -> None:
        self.assertEqual(varint(b"\x7f", 0), (127, 1))
        self.assertEqual(varint(b"\x81\x00", 0), (128, 2))
        self.assertEqual(varint(b"\xff" * 9, 0), (2**64 - 1, 9))

    def test_record(self) -> None:
        # header 5 bytes: NULL, int8, float, 2-byte text, 1-byte blob
        payload = (
            bytes([6, 0, 1, 7, 17, 14]) + b"\x05" + b"\x3f\xf0" + bytes(6) + b"hi" + b"\x09"
        )
        self.assertEqual(record(payload), (None, 5, 1.0, "hi", b"\x09"))

    def test_recordGarbled(self) -> None:
        self.assertRaises(ValueError, record, bytes([3, 1, 1, 5]))  # one value too many
        self.assertRaises(ValueError, record, bytes([2, 10]))  # reserved type


class FitTests(SynchronousTestCase):
    """A row is taken only if it holds what the journal writes."""

    row = (7, T0, "192.0.2.7:5", b"\xb4", None, None, None, None, None)

    def test_schema1Row(self) -> None:
        self.assertEqual(fit(self.row, PACKET, 9), self.row + (None,) * 6)

    def test_wholeRatio(self) -> None:
        """SQLite keeps a whole REAL as an integer in its pages."""
        row = self.row + (S, 1, 1, b"", 5, "boot")
        self.assertEqual(fit(row, PACKET, 9)[10], 1.0)
        self.assertIsInstance(fit(row, PACKET, 9)[10], float)

    def test_wrongTypes(self) -> None:
        self.assertIsNone(fit((7, T0, b"peer", b"\xb4", *self.row[4:]), PACKET, 9))
        self.assertIsNone(fit((7, None, "p", b"\xb4", *self.row[4:]), PACKET, 9))
        self.assertIsNone(fit(self.row[:8], PACKET, 9))

    def test_device(self) -> None:
        self.assertEqual(fit((3, T0), DEVICE, 2), (3, T0, None, None, None, None))
        self.assertIsNone(fit((3, T0, None, None, "1.0,x", None), DEVICE, 2))
        self.assertIsNone(fit((300, T0), DEVICE, 2))
