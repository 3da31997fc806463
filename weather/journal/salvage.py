"""
What a damaged journal still holds: C{weather journal check} reads it,
C{weather journal salvage} copies it into a new journal and keeps the
damaged files aside.

Both read a copy of the journal and its write-ahead log, never the files
themselves, which stay as they were found:

  1. the copy gets a new journal's first page if its own is not SQLite's,
     and its write-ahead log is copied into it (a checkpoint);
  2. SQLite reads the packets in id order from the first until it meets
     damage, and from the last back down to it;
  3. the packets between are read from the pages themselves
     (L{weather.journal.pages}): a damaged page loses its own rows only;
  4. the stations' timing state likewise.

Every row must hold what a journal's row holds (L{PACKET}, L{DEVICE}); one
that does not is counted as unreadable.  Ids are given in order and
delivered packets leave gaps, so the packets lost are counted as "at most".

Blocking I/O, for the command-line tool with the server stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from weather.journal.pages import HEADER_SIZE, Pages, page_size

# The server's own lock on the directory: held, no server starts meanwhile.
from weather.journal.service import JournalLocked, take_lock
from weather.journal.store import (
    FILENAME,
    SALVAGING,
    SCHEMA_VERSION,
    SUFFIXES,
    JournalError,
    JournalFile,
    create_journal,
    damaged,
    mark_journal,
    problems,
    sync_directory,
)

#: A packet row's columns, in the journal's order, and what each may hold.
PACKET = (
    ("id", int),
    ("arrival_ns", int),
    ("peer", str),
    ("data", bytes),
    ("previous_arrival_ns", int | None),
    ("reason", str | None),
    ("detail", str | None),
    ("quarantined_ns", int | None),
    ("refused", bytes | None),
    ("spacing_ns", int | None),
    ("ratio", float | None),
    ("learned", int | None),
    ("previous_records", bytes | None),
    ("boot_ns", int | None),
    ("boot_id", str | None),
)
#: A station's timing state (the C{device} table).
DEVICE = (
    ("id", int),
    ("last_arrival_ns", int),
    ("boot_ns", int | None),
    ("boot_id", str | None),
    ("ratios", str | None),
    ("records", bytes | None),
)
#: Rows written by schema 1 have this many columns (later ones were added).
PACKET_SCHEMA_1 = 9
DEVICE_SCHEMA_1 = 2
#: Rows written to the new journal per transaction.
BATCH = 1000
#: SQLite's page size when nothing says what it was.
DEFAULT_PAGE_SIZE = 4096
#: The write-ahead log's first four bytes (either byte order of its checksums).
LOG_MAGIC = (0x377F0682, 0x377F0683)
#: Inside L{SALVAGING}: written once the damaged files are all in it.
MOVED = "moved"
#: What the damaged files' directory is called once a salvage is done.
KEPT = "journal-damaged-"


@dataclass
class Reading:
    """What could be read of a journal."""

    #: What shows before SQLite opens it (missing, empty, ...), if anything.
    found: str | None = None
    #: What had to be done to read it.
    notes: list[str] = field(default_factory=list)
    #: What SQLite's integrity check found (empty: nothing).
    problems: list[str] = field(default_factory=list)
    pending: int = 0
    quarantined: int = 0
    stations: int = 0
    #: Ids of packets read whose values are not a journal's.
    garbled: list[int] = field(default_factory=list)
    #: Packet ids SQLite could not read: above the first, below the second
    #: (None: up to the last).
    gap: tuple[int, int | None] | None = None
    #: Packets of the gap read from the pages.
    from_pages: int = 0
    #: The highest packet id of the gap read from the pages.
    gap_top: int | None = None

    @property
    def packets(self) -> int:
        return self.pending + self.quarantined

    @property
    def damaged(self) -> bool:
        return bool(self.found or self.notes or self.problems or self.garbled or self.gap)

    def lost(self) -> tuple[int, bool]:
        """
        At most how many packets are lost, and whether more may be (packets
        journaled after the last one read, when the end is damaged).
        """
        lost = len(self.garbled)
        if self.gap is None:
            return lost, False
        low, high = self.gap
        if high is None:
            top = self.gap_top if self.gap_top is not None else low
            return lost + top - low - self.from_pages, True
        return lost + high - low - 1 - self.from_pages, False


@dataclass(frozen=True)
class Salvaged:
    """What a salvage did."""

    #: What was read into the new journal (None: an earlier salvage had
    #: already put its new journal in place, and only its tidying was left).
    reading: Reading | None
    #: Where the damaged files are kept (None: nothing was damaged).
    kept: str | None


def check(directory: str) -> Reading:
    """
    Read the journal in C{directory} (a copy of it, removed after), change
    nothing.

    @raise JournalError: there is none, or a server is using it.
    """
    with _stopped(directory, "check"):
        found = damaged(directory)
        if found is not None and os.path.isdir(os.path.join(directory, SALVAGING)):
            return Reading(found=found)
        return _read_aside(directory, found)


def salvage(directory: str, now: float) -> Salvaged:
    """
    Copy every packet and station state that can be read from the damaged
    journal in C{directory} into a new journal there; keep the damaged
    files in a directory of their own, named with C{now} (UTC).  A journal
    that is not damaged is left as it is.  A salvage that was interrupted
    is taken up again: until the new journal is in place, no server opens
    the journal.

    @raise JournalError: there is no journal, a server is using it, or
        this one cannot be read or written (the message says why).
    """
    work = os.path.join(directory, SALVAGING)
    journal = os.path.join(directory, FILENAME)
    with _stopped(directory, "salvage"):
        if not os.path.exists(os.path.join(work, MOVED)):
            if not os.path.isdir(work):
                found = damaged(directory)
                if found is None and not _read_aside(directory, None).damaged:
                    return Salvaged(None, None)
                os.mkdir(work, 0o700)
            _move_damaged(directory, work)
        elif os.path.exists(journal):
            return Salvaged(None, _finish(directory, work, now))
        for scratch in ("new", "copy"):  # an interrupted salvage's, if any
            shutil.rmtree(os.path.join(work, scratch), ignore_errors=True)
        new_directory = os.path.join(work, "new")
        new = JournalFile(new_directory)
        try:
            copier = _Copier(new.connection)
            reading = _read(work, os.path.join(work, "copy"), copier)
            copier.flush()
        finally:
            new.close()
        os.rename(os.path.join(new_directory, FILENAME), journal)
        sync_directory(directory)
        mark_journal(directory)
        return Salvaged(reading, _finish(directory, work, now))


@contextlib.contextmanager
def _stopped(directory: str, doing: str) -> Iterator[None]:
    """
    Hold C{directory}'s lock: no server starts meanwhile.  A file that
    cannot be read or written is said in a L{JournalError}.
    """
    if not os.path.isdir(directory):
        raise JournalError(f"no journal in {directory} (is --data-dir right?)")
    try:
        lock = take_lock(directory)
    except JournalLocked:
        raise JournalError(
            f"a weather server is using {directory}: stop it first"
        ) from None
    try:
        yield
    except (OSError, sqlite3.Error) as e:
        raise JournalError(f"cannot {doing} the journal in {directory}: {e}") from None
    finally:
        os.close(lock)


def _read_aside(directory: str, found: str | None) -> Reading:
    """L{_read} on a copy in a scratch directory inside C{directory}."""
    if found is None and not os.path.exists(os.path.join(directory, FILENAME)):
        raise JournalError(f"no journal in {directory} (is --data-dir right?)")
    scratch = tempfile.mkdtemp(prefix=".check-", dir=directory)
    try:
        reading = _read(directory, scratch, None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    reading.found = found
    return reading


def _move_damaged(directory: str, work: str) -> None:
    """
    Move the journal's files into C{work}, the journal first: from then on
    there is no journal to open.  A file already moved is not there to move.
    """
    journal = os.path.join(directory, FILENAME)
    for suffix in SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.rename(journal + suffix, os.path.join(work, FILENAME) + suffix)
    sync_directory(work)
    sync_directory(directory)
    with open(os.path.join(work, MOVED), "w") as f:
        f.write("The damaged journal's files are all here.\n")
        f.flush()
        os.fsync(f.fileno())
    sync_directory(work)


def _finish(directory: str, work: str, now: float) -> str:
    """Tidy C{work} and give it its lasting name: the damaged files, kept."""
    for scratch in ("new", "copy"):
        shutil.rmtree(os.path.join(work, scratch), ignore_errors=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    kept = os.path.join(directory, KEPT + stamp)
    number = 1
    while os.path.exists(kept):
        number += 1
        kept = os.path.join(directory, f"{KEPT}{stamp}-{number}")
    os.rename(work, kept)
    sync_directory(directory)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(kept, MOVED))
    return kept


class _Copier:
    """Writes rows into the new journal, L{BATCH} to a transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.rows: dict[str, list[tuple]] = {"packet": [], "device": []}

    def add(self, table: str, row: tuple) -> None:
        self.rows[table].append(row)
        if len(self.rows[table]) >= BATCH:
            self.flush()

    def flush(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        for table, columns in (("packet", PACKET), ("device", DEVICE)):
            names = ", ".join(name for name, _ in columns)
            marks = ", ".join("?" * len(columns))
            self.db.executemany(
                f"INSERT INTO {table} ({names}) VALUES ({marks})", self.rows[table]
            )
            self.rows[table] = []
        self.db.execute("COMMIT")


def _read(source: str, scratch: str, copier: _Copier | None) -> Reading:
    """
    Read the journal in C{source} on a copy in C{scratch}, giving each
    readable row to C{copier} (if any).
    """
    reading = Reading()
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    copy = os.path.join(scratch, FILENAME)
    try:
        size = _prepare_copy(os.path.join(source, FILENAME), copy, reading.notes)
    except OSError as e:
        raise JournalError(f"cannot copy the journal into {scratch}: {e}") from None
    db = sqlite3.connect(copy, isolation_level=None)
    try:
        rows = _Rows(reading, copier)
        reading.problems = _integrity(db)
        _newer(db, source)
        packets_whole = rows.packets_through_sqlite(db)
        devices_whole = rows.devices_through_sqlite(db)
    finally:
        db.close()
    if not (packets_whole and devices_whole):
        with open(copy, "rb") as f:
            rows.from_pages(f, size, packets_whole, devices_whole)
    return reading


def _prepare_copy(path: str, copy: str, notes: list[str]) -> int:
    """
    Copy the journal at C{path} and its write-ahead log to C{copy}, give the
    copy a first page SQLite reads, and copy the log into it; its page size.
    """
    log = path + "-wal"
    if os.path.exists(path):
        shutil.copyfile(path, copy)
    else:
        open(copy, "wb").close()
    if os.path.exists(log):
        shutil.copyfile(log, copy + "-wal")
    with open(copy, "r+b") as f:
        size = page_size(f.read(HEADER_SIZE))
        if size is None:
            size = _log_page_size(log) or DEFAULT_PAGE_SIZE
            f.seek(0)
            f.write(_first_page(size))
            notes.append("its first page was not SQLite's: a new journal's stood in for it")
        elif os.path.exists(log):
            f.seek(18)  # that the log is to be read, whatever the header said
            f.write(b"\x02\x02")
    try:
        db = sqlite3.connect(copy, isolation_level=None)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        notes.append(f"its write-ahead log could not be read ({e})")
    return size


def _log_page_size(log: str) -> int | None:
    try:
        with open(log, "rb") as f:
            header = f.read(12)
    except OSError:
        return None
    if len(header) < 12 or int.from_bytes(header[:4], "big") not in LOG_MAGIC:
        return None
    size = int.from_bytes(header[8:12], "big")
    return size if 512 <= size <= 65536 and not size & (size - 1) else None


def _first_page(size: int) -> bytes:
    """A new journal's first page, saying the file is as long as it is."""
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, FILENAME)
        create_journal(path, size)
        with open(path, "rb") as f:
            page = bytearray(f.read(size))
    page[28:32] = bytes(4)  # no page count: SQLite goes by the file's size
    return bytes(page)


def _integrity(db: sqlite3.Connection) -> list[str]:
    """What SQLite's integrity check finds, a problem a line (at most 100)."""
    try:
        return problems(db.execute("PRAGMA integrity_check(100)"))
    except sqlite3.Error as e:
        return [str(e)]


def _newer(db: sqlite3.Connection, source: str) -> None:
    with contextlib.suppress(sqlite3.Error):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal in {source} was written by a newer version of weather "
                f"(schema {version}): salvage it with that version"
            )


def _select(db: sqlite3.Connection, table: str, columns: tuple) -> str | None:
    """A SELECT of C{columns} (NULL for those C{table} lacks); None: unreadable."""
    try:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    except sqlite3.Error:
        return None
    if "id" not in present:
        return None
    names = ", ".join(name if name in present else "NULL" for name, _ in columns)
    return f"SELECT {names} FROM {table} NOT INDEXED"


def fit(values: tuple, columns: tuple, least: int) -> tuple | None:
    """
    C{values} as a row of C{columns} (missing last columns None), or None
    if they cannot be one.
    """
    if not least <= len(values) <= len(columns):
        return None
    values = values + (None,) * (len(columns) - len(values))
    fitted = []
    for value, (name, kind) in zip(values, columns, strict=True):
        if name == "ratio" and isinstance(value, int):
            value = float(value)  # SQLite keeps a whole REAL as an integer
        if not isinstance(value, kind):
            return None
        fitted.append(value)
    if columns is DEVICE:
        if not 0 <= fitted[0] <= 255:
            return None
        try:
            for ratio in fitted[4].split(",") if fitted[4] else ():
                float(ratio)
        except ValueError:
            return None
    return tuple(fitted)


class _Rows:
    """Takes the rows read, once each, into a L{Reading} and a L{_Copier}."""

    def __init__(self, reading: Reading, copier: _Copier | None) -> None:
        self.reading = reading
        self.copier = copier
        self.devices: set[int] = set()
        self.gap_ids: set[int] = set()

    def packet(self, row: tuple) -> None:
        if row[5] is None:
            self.reading.pending += 1
        else:
            self.reading.quarantined += 1
        if self.copier is not None:
            self.copier.add("packet", row)

    def device(self, row: tuple) -> None:
        self.devices.add(row[0])
        self.reading.stations += 1
        if self.copier is not None:
            self.copier.add("device", row)

    def packets_through_sqlite(self, db: sqlite3.Connection) -> bool:
        """Read from the first packet up and the last down; whether all were read."""
        select = _select(db, "packet", PACKET)
        low: int | None = None
        high: int | None = None
        if select is not None:
            try:
                for row in db.execute(f"{select} ORDER BY id"):
                    low = row[0]
                    self._sqlite_packet(row)
                return True
            except sqlite3.DatabaseError:
                pass
            with contextlib.suppress(sqlite3.DatabaseError):
                after = low if low is not None else -(1 << 63)
                for row in db.execute(f"{select} WHERE id > ? ORDER BY id DESC", (after,)):
                    high = row[0]
                    self._sqlite_packet(row)
        self.reading.gap = (low if low is not None else 0, high)
        return False

    def _sqlite_packet(self, row: tuple) -> None:
        fitted = fit(row, PACKET, len(PACKET))
        if fitted is None:
            self.reading.garbled.append(row[0])
        else:
            self.packet(fitted)

    def devices_through_sqlite(self, db: sqlite3.Connection) -> bool:
        select = _select(db, "device", DEVICE)
        if select is None:
            return False
        try:
            for row in db.execute(f"{select} ORDER BY id"):
                fitted = fit(row, DEVICE, len(DEVICE))
                if fitted is not None:
                    self.device(fitted)
            return True
        except sqlite3.DatabaseError:
            return False

    def from_pages(
        self, f: BinaryIO, size: int, packets_whole: bool, devices_whole: bool
    ) -> None:
        """The rows SQLite could not read, from the pages themselves."""
        reading = self.reading
        low, high = reading.gap if reading.gap is not None else (0, None)
        for found in Pages(f, size).rows():
            if not found.values or found.values[0] is not None:
                continue  # not a row of a table whose id is its rowid
            values = (found.rowid, *found.values[1:])
            if len(values) >= PACKET_SCHEMA_1:
                row = fit(values, PACKET, PACKET_SCHEMA_1)
                inside = low < found.rowid and (high is None or found.rowid < high)
                if row is None or packets_whole or not inside:
                    continue
                if found.rowid in self.gap_ids:
                    continue
                self.gap_ids.add(found.rowid)
                reading.from_pages += 1
                reading.gap_top = max(found.rowid, reading.gap_top or found.rowid)
                self.packet(row)
            else:
                row = fit(values, DEVICE, DEVICE_SCHEMA_1)
                if row is None or devices_whole or row[0] in self.devices:
                    continue
                self.device(row)
