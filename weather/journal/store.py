"""
The journal file: every packet on local disk, in SQLite, until InfluxDB has it.

One SQLite database in WAL mode with C{synchronous=FULL}: a commit returns only
once its packets are on disk (fsync), and a crash at any moment leaves either
the whole transaction or none of it.  The database holds

  - C{packet}: each packet's bytes, peer, arrival time (wall and boot clock,
    and the machine's boot id) and everything it is timed with
    (L{TimingInputs}: the previous arrival, the spacing, the station's clock
    ratio and the previous packet's records).  A row with no C{reason} is
    pending: not yet acknowledged by InfluxDB.  A row with a C{reason} is in
    quarantine: it could not be decoded, or InfluxDB refused its points for
    good.  A delivered packet's row is deleted, and so is a quarantined one a
    person drops (C{weather quarantine drop}), never another.  A quarantined
    packet C{weather replay} hands to the running server has the reason
    L{REPLAY_REQUESTED} until the server takes it up (L{request_replay});
    it is in quarantine all the same;
  - C{device}: each device's L{StationState}, what the next packet of that
    device is timed with.

A journal of an older schema is upgraded in place when opened (L{UPGRADES}).

A damaged journal is never quietly replaced by an empty one.  A new journal
is written whole under another name and then linked into place, so a
journal file always holds the schema; once it exists, a marker file
(L{MARKER}) records that this directory had one.  A journal that is then
missing, empty or not an SQLite file is refused (L{JournalDamaged}) with
what to run: C{weather journal check} and C{weather journal salvage}
(L{weather.journal.salvage}).

This module is synchronous and does blocking I/O: the server calls it from
one worker thread (L{weather.journal.service}), the command-line tool directly.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from weather.core.packet import Packet
from weather.core.timing import StationState, TimingInputs

FILENAME = "journal.sqlite3"
#: Written once the directory's first journal is in place: a journal missing
#: from a directory that has it was lost, not yet to be made.
MARKER = "journal.created"
#: Where C{weather journal salvage} works; while it is there, nothing opens
#: the journal.
SALVAGING = "salvage"
#: The journal's files: itself, its write-ahead log and shared-memory index.
SUFFIXES = ("", "-wal", "-shm")
SQLITE_MAGIC = b"SQLite format 3\x00"
#: The schema this code reads and writes (SQLite's C{user_version}).
SCHEMA_VERSION = 2
#: Past this many free pages' worth of bytes, give space back to the file system.
RECLAIM_BYTES = 16 * 1024 * 1024
#: Give space back, too, once the files hold this much more than the live
#: data and more than the live data itself (L{JournalFile.reclaim}); the
#: write-ahead log is also cut to this size after each checkpoint.
WASTE_BYTES = 1024 * 1024
#: Ids per statement when summing packet sizes (SQLite's limit on parameters).
IDS_PER_QUERY = 500
#: The quarantine reason of a packet C{weather replay} asked the running
#: server to decode again: it waits, in quarantine, for the server to take
#: it (at its next SIGHUP or start), which makes it pending (L{Changes.taken})
#: or puts it back in quarantine with why.
REPLAY_REQUESTED = "replay-requested"

SCHEMA = """
CREATE TABLE packet (
    id INTEGER PRIMARY KEY,
    arrival_ns INTEGER NOT NULL,
    peer TEXT NOT NULL,
    data BLOB NOT NULL,
    previous_arrival_ns INTEGER,
    reason TEXT,
    detail TEXT,
    quarantined_ns INTEGER,
    refused BLOB,
    spacing_ns INTEGER,
    ratio REAL,
    learned INTEGER,
    previous_records BLOB,
    boot_ns INTEGER,
    boot_id TEXT
);
CREATE INDEX quarantined ON packet (id) WHERE reason IS NOT NULL;
CREATE TABLE device (
    id INTEGER PRIMARY KEY,
    last_arrival_ns INTEGER NOT NULL,
    boot_ns INTEGER,
    boot_id TEXT,
    ratios TEXT,
    records BLOB
);
"""

#: The statements that take a journal from schema C{version} to the next.
#: Schema 1 journaled only the previous arrival: its rows have no C{ratio}
#: and are timed as they were then (L{TimingInputs.since}).
UPGRADES = {
    1: """
ALTER TABLE packet ADD COLUMN spacing_ns INTEGER;
ALTER TABLE packet ADD COLUMN ratio REAL;
ALTER TABLE packet ADD COLUMN learned INTEGER;
ALTER TABLE packet ADD COLUMN previous_records BLOB;
ALTER TABLE packet ADD COLUMN boot_ns INTEGER;
ALTER TABLE packet ADD COLUMN boot_id TEXT;
ALTER TABLE device ADD COLUMN boot_ns INTEGER;
ALTER TABLE device ADD COLUMN boot_id TEXT;
ALTER TABLE device ADD COLUMN ratios TEXT;
ALTER TABLE device ADD COLUMN records BLOB;
""",
}
#: What a packet's row holds, in bytes, as L{Sizes} count it: its data and
#: what it is timed with and, in quarantine, the lines InfluxDB refused.
ROW_BYTES = (
    "length(data) + coalesce(length(previous_records), 0) + coalesce(length(refused), 0)"
)
#: The columns a L{JournalEntry} is read from, in L{_entry}'s order.
ENTRY_COLUMNS = (
    "id, data, peer, arrival_ns, boot_ns, boot_id, "
    "previous_arrival_ns, spacing_ns, ratio, learned, previous_records"
)


class JournalError(Exception):
    """The journal cannot be opened or read; the message says why."""


class JournalDamaged(JournalError):
    """
    The data directory had a journal and now holds a missing, empty or
    unreadable one; the message says which and what to run.
    """

    def __init__(self, directory: str, what: str) -> None:
        path = os.path.join(directory, FILENAME)
        super().__init__(f"the journal {path} {what}: {recovery(directory)}")


def recovery(directory: str) -> str:
    """What to run about a damaged journal in C{directory}."""
    given = f" --data-dir {shlex.quote(directory)}"
    return (
        f"run 'weather journal check{given}' to see what can be read, then "
        f"'weather journal salvage{given}' to copy every readable packet into a "
        "new journal (the damaged one is kept)"
    )


def journal_error(directory: str, error: sqlite3.Error) -> JournalError:
    """What to say when using the journal in C{directory} failed with C{error}."""
    if _damage_error(error):
        return JournalDamaged(directory, f"cannot be read ({error})")
    why = f"cannot use the journal {os.path.join(directory, FILENAME)}: {error}"
    return JournalError(unusable_file(directory) or why)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A packet as the journal holds it: what is needed to decode it again."""

    id: int
    packet: Packet
    #: What the packet is timed with.
    timing: TimingInputs = TimingInputs()
    #: The server machine's boot id when the packet arrived (with
    #: C{packet.boot_ns}, when it arrived on that boot's clock), or None.
    boot_id: str | None = None

    @property
    def previous_arrival_ns(self) -> int | None:
        """When the same device's previous packet arrived, or None."""
        return self.timing.previous_arrival_ns


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Why a packet is kept aside rather than delivered."""

    reason: str
    detail: str
    quarantined_ns: int
    #: Line protocol InfluxDB refused, when it did.
    refused: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class QuarantinedPacket:
    entry: JournalEntry
    quarantine: Quarantine


@dataclass(frozen=True, slots=True)
class Sizes:
    """
    The bytes of the packets the journal holds (L{ROW_BYTES}; SQLite's
    own overhead is not counted): those to deliver, those in quarantine.
    """

    pending: int = 0
    quarantined: int = 0

    def __add__(self, other: Sizes) -> Sizes:
        return Sizes(self.pending + other.pending, self.quarantined + other.quarantined)

    def __sub__(self, other: Sizes) -> Sizes:
        return Sizes(self.pending - other.pending, self.quarantined - other.quarantined)


@dataclass(frozen=True, slots=True)
class JournalStatus:
    pending: int
    oldest_pending_ns: int | None
    quarantined: int
    #: Bytes of live data: what the high-water mark is measured against.
    used_bytes: int
    #: Bytes of the database files on disk (free pages included).
    file_bytes: int
    #: The bytes of the packets pending and in quarantine.
    sizes: Sizes = Sizes()


@dataclass
class Changes:
    """What one transaction writes: grouped so a burst costs one fsync."""

    added: list[tuple[JournalEntry, Quarantine | None]] = field(default_factory=list)
    quarantined: dict[int, Quarantine] = field(default_factory=dict)
    delivered: set[int] = field(default_factory=set)
    devices: dict[int, StationState] = field(default_factory=dict)
    #: New arrival times of packets, by id (the clock was put right since).
    rebased: dict[int, int] = field(default_factory=dict)
    #: Packets taken from a replay request that decoded: pending again.
    taken: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.added
            or self.quarantined
            or self.delivered
            or self.devices
            or self.rebased
            or self.taken
        )

    def then(self, later: Changes) -> Changes:
        """These changes followed by C{later}'s, as one group."""
        quarantined = {**self.quarantined, **later.quarantined}
        return Changes(
            self.added + later.added,
            quarantined,
            (self.delivered | later.delivered) - quarantined.keys(),
            {**self.devices, **later.devices},
            {**self.rebased, **later.rebased},
            self.taken | later.taken,
        )


class JournalFile:
    """
    The SQLite journal in C{directory}, made there if C{create} and the
    directory never had one.  Not thread-safe: use it from one thread at a
    time.

    @raise JournalDamaged: the directory had a journal and holds a missing,
        empty or unreadable one (L{damaged}).
    @raise JournalError: the file cannot be opened (its files that cannot be
        read and written are named), or is from a newer version.
    """

    def __init__(
        self,
        directory: str,
        *,
        create: bool = True,
        busy_timeout: float = 10.0,
        read_only: bool = False,
    ):
        """
        @param read_only: only read (the tools' listings): nothing is
            written, so a full disk does not stop it (L{_connect}).  A journal
            of an older schema is opened to be written all the same: it is
            upgraded first.
        """
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self.busy_timeout = busy_timeout
        #: What L{sizes} counted, kept up to date by each commit since.
        self._sizes: Sizes | None = None
        if create:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as e:
                raise JournalError(f"cannot create {directory}: {e.strerror}") from None
        damage = damaged(directory)
        if damage is not None:
            raise JournalDamaged(directory, damage)
        if not os.path.exists(self.path):
            if not create:
                raise JournalError(f"no journal in {directory} (is --data-dir right?)")
            self._create()
        else:  # SQLite would open it read-only, and make read-only files beside it
            problem = unusable_file(directory)
            if problem is not None:
                raise JournalError(problem)
        try:
            self.connection = self._connect(read_only)
            if read_only and _version(self.connection) < SCHEMA_VERSION:
                # An older schema is upgraded first: that writes.
                self.connection.close()
                self.connection, read_only = self._connect(False), False
        except sqlite3.Error as e:
            raise journal_error(directory, e) from None
        try:
            self._prepare(read_only)
        except BaseException as e:
            self.connection.close()
            if isinstance(e, sqlite3.Error):
                raise journal_error(directory, e) from None
            raise
        if create:
            mark_journal(directory)

    def _create(self) -> None:
        """Write a new journal whole, then link it into place: never half made."""
        try:
            descriptor, new = tempfile.mkstemp(
                prefix=f".{FILENAME}.new-", dir=self.directory
            )
            os.close(descriptor)
        except OSError as e:
            raise JournalError(
                unusable_file(self.directory)
                or f"cannot create a journal in {self.directory}: {e.strerror}"
            ) from None
        try:
            create_journal(new)
            try:
                os.link(new, self.path)
            except FileExistsError:
                pass  # another opener made it meanwhile
            except OSError:  # no hard links here: the server's lock keeps others out
                os.rename(new, self.path)
            sync_directory(self.directory)
        except (OSError, sqlite3.Error) as e:
            raise JournalError(f"cannot create {self.path}: {e}") from None
        finally:
            for suffix in SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(new + suffix)

    def verify(self) -> None:
        """
        SQLite's quick check of every page (reads the whole file).

        @raise JournalDamaged: it found damage.
        """
        try:
            found = problems(self.connection.execute("PRAGMA quick_check(5)"))
        except sqlite3.Error as e:
            raise journal_error(self.directory, e) from None
        if found:
            raise JournalDamaged(self.directory, f"is damaged ({'; '.join(found)})")

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        """
        A connection to the file.  Read-only, it is opened C{mode=ro}; where
        SQLite cannot even set up the shared memory a reader of a
        write-ahead log needs (the disk is full, and no server has it open)
        and the log is empty, the main file is the whole journal: it is read
        alone (C{immutable}).
        """
        options = {
            "timeout": self.busy_timeout,
            "isolation_level": None,  # transactions are explicit
            "check_same_thread": False,  # one worker thread, not the opener's
        }
        if not read_only:
            return sqlite3.connect(self.path, **options)
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        connection = sqlite3.connect(uri, uri=True, **options)
        try:
            _version(connection)
        except sqlite3.OperationalError:
            connection.close()
            if _size(self.path + "-wal"):
                raise
            connection = sqlite3.connect(uri + "&immutable=1", uri=True, **options)
        return connection

    def _prepare(self, read_only: bool = False) -> None:
        """
        Check the schema and, unless C{read_only}, set the connection up and
        upgrade an older schema.  Nothing is written otherwise: a journal on
        a full disk opens.
        """
        db = self.connection
        version = _version(db)
        if version == 0:  # a journal is linked into place with its schema
            raise JournalDamaged(self.directory, "holds no journal tables")
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path} was written by a newer version of weather "
                f"(schema {version}); upgrade weather to read it"
            )
        if read_only:
            return
        # (auto_vacuum was chosen when the journal was made, create_journal:
        # setting it again writes, which a full disk refuses.)
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise JournalError(f"{self.path}: SQLite cannot use WAL mode here ({mode})")
        db.execute("PRAGMA synchronous = FULL")
        db.execute(f"PRAGMA journal_size_limit = {WASTE_BYTES}")
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                # Again inside the transaction: another opener may have done it.
                version = _version(db)
                for old in range(version, SCHEMA_VERSION):
                    _execute(db, UPGRADES[old])
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.connection.close()

    # -- the server's writes -------------------------------------------------

    def commit(self, changes: Changes) -> int:
        """
        Write C{changes} in one transaction, durable when this returns; then
        give space back if there is much to give (L{reclaim}).

        @return: the bytes of live data afterwards (L{used_bytes}).
        @raise sqlite3.Error: nothing was written (the disk is full, ...).
        """
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                f"INSERT INTO packet ({ENTRY_COLUMNS}, reason, detail, quarantined_ns, "
                "refused) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (_row(entry, quarantine) for entry, quarantine in changes.added),
            )
            db.executemany(
                "UPDATE packet SET arrival_ns = ? WHERE id = ?",
                ((arrival_ns, i) for i, arrival_ns in changes.rebased.items()),
            )
            growth = Sizes()
            for entry, quarantine in changes.added:
                size = row_bytes(entry, quarantine)
                growth += Sizes(0, size) if quarantine else Sizes(size, 0)
            # Taken before the rest: a packet taken and then quarantined
            # again, or delivered, in one group ends so.
            growth -= _sizes_of(db, changes.taken)
            db.executemany(
                "UPDATE packet SET reason = NULL, detail = NULL, quarantined_ns = NULL, "
                "refused = NULL WHERE id = ? AND reason = ?",
                ((i, REPLAY_REQUESTED) for i in changes.taken),
            )
            growth += _sizes_of(db, changes.taken)
            growth -= _sizes_of(db, changes.quarantined)
            db.executemany(
                "UPDATE packet SET reason = ?, detail = ?, quarantined_ns = ?, "
                "refused = ? WHERE id = ?",
                (
                    (*_quarantine_columns(quarantine), entry_id)
                    for entry_id, quarantine in changes.quarantined.items()
                ),
            )
            growth += _sizes_of(db, changes.quarantined)
            growth -= _sizes_of(db, changes.delivered)
            db.executemany(
                "DELETE FROM packet WHERE id = ?", ((i,) for i in changes.delivered)
            )
            db.executemany(
                "INSERT OR REPLACE INTO device (id, last_arrival_ns, boot_ns, boot_id, "
                "ratios, records) VALUES (?,?,?,?,?,?)",
                (_device_row(*item) for item in changes.devices.items()),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if self._sizes is not None:
            self._sizes += growth
        used = self.used_bytes()
        if self.wasteful(used):
            self.reclaim()
            used = self.used_bytes()
        return used

    def wasteful(self, used: int) -> bool:
        """
        Whether the files hold much more than the C{used} bytes of live
        data: more than L{RECLAIM_BYTES} of free pages, or more than
        L{WASTE_BYTES} of free pages and write-ahead log that is also more
        than the live data (a small journal on a small disk gives its space
        back; a large backlog being delivered is not moved around for it).
        """
        page_size, _, free = self._pages()
        waste = self.file_bytes() - used
        return free * page_size > RECLAIM_BYTES or waste > max(WASTE_BYTES, used)

    def reclaim(self) -> None:
        """
        Give the space that holds no live data back to the file system:
        free pages (incremental vacuum: the file shrinks at the next
        checkpoint), then the write-ahead log (a checkpoint that truncates
        it).  Vacuuming first leaves the checkpoint less to copy, so it
        needs less room on a disk that is nearly full; if the vacuum could
        not be written, it is tried again after the checkpoint made room.

        Best effort, and never waits: a reader in the middle of the log
        (C{weather quarantine list}), another writer or a full disk leave
        the rest for the next time.
        """
        db = self.connection
        db.execute("PRAGMA busy_timeout = 0")
        try:
            vacuumed = _vacuum(db)
            if _checkpoint(db) and not vacuumed and _vacuum(db):
                _checkpoint(db)
        finally:
            db.execute(f"PRAGMA busy_timeout = {round(self.busy_timeout * 1000)}")

    # -- reading -------------------------------------------------------------

    def next_id(self) -> int:
        return self.connection.execute(
            "SELECT coalesce(max(id), 0) + 1 FROM packet"
        ).fetchone()[0]

    def stations(self) -> dict[int, StationState]:
        """Each device's timing state, to go on with."""
        rows = self.connection.execute(
            "SELECT id, last_arrival_ns, boot_ns, boot_id, ratios, records FROM device"
        )
        return {row[0]: _station(*row[1:]) for row in rows}

    def pending(self, after_id: int = 0, limit: int = 1000) -> list[JournalEntry]:
        """Packets not yet delivered nor quarantined, oldest first."""
        rows = self.connection.execute(
            f"SELECT {ENTRY_COLUMNS} FROM packet "
            "WHERE id > ? AND reason IS NULL ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [_entry(*row) for row in rows]

    def replay_requested(self, after_id: int = 0, limit: int = -1) -> list[JournalEntry]:
        """Packets C{weather replay} asked the server to decode again, oldest first."""
        rows = self.connection.execute(
            f"SELECT {ENTRY_COLUMNS} FROM packet WHERE reason = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (REPLAY_REQUESTED, after_id, limit),
        )
        return [_entry(*row) for row in rows]

    def count_replay_requested(self) -> int:
        return self.connection.execute(
            "SELECT count(*) FROM packet WHERE reason = ?", (REPLAY_REQUESTED,)
        ).fetchone()[0]

    def reasons(self, ids: Iterable[int]) -> dict[int, str | None]:
        """
        Where these packets are: their quarantine reason, or None while they
        are pending; a packet not in the result is gone (delivered).
        """
        ids = list(ids)
        found: dict[int, str | None] = {}
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start : start + IDS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            found.update(
                self.connection.execute(
                    f"SELECT id, reason FROM packet WHERE id IN ({marks})", chunk
                )
            )
        return found

    def quarantined(self, after_id: int = 0, limit: int = -1) -> list[QuarantinedPacket]:
        """Packets in quarantine, oldest first."""
        rows = self.connection.execute(
            f"SELECT {ENTRY_COLUMNS}, reason, detail, quarantined_ns, refused "
            "FROM packet WHERE reason IS NOT NULL AND id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [
            QuarantinedPacket(
                _entry(*row[:-4]),
                Quarantine(
                    row[-4],
                    row[-3] or "",
                    row[-2] or 0,
                    tuple(row[-1].split(b"\n")) if row[-1] else (),
                ),
            )
            for row in rows
        ]

    def status(self) -> JournalStatus:
        """What the journal holds: one pass over its packets."""
        pending, oldest, quarantined, pending_bytes, quarantined_bytes = (
            self.connection.execute(
                "SELECT count(*) - count(reason), "
                "min(CASE WHEN reason IS NULL THEN arrival_ns END), count(reason), "
                f"coalesce(sum(CASE WHEN reason IS NULL THEN {ROW_BYTES} END), 0), "
                f"coalesce(sum(CASE WHEN reason IS NOT NULL THEN {ROW_BYTES} END), 0) "
                "FROM packet"
            ).fetchone()
        )
        self._sizes = Sizes(pending_bytes, quarantined_bytes)
        return JournalStatus(
            pending,
            oldest,
            quarantined,
            self.used_bytes(),
            self.file_bytes(),
            self._sizes,
        )

    def sizes(self) -> Sizes:
        """
        The bytes of the packets pending and in quarantine: counted once
        (and by each L{status}: another process's changes, C{weather replay}'s,
        show then), kept up to date by each L{commit} in between.
        """
        if self._sizes is None:
            self.status()
        assert self._sizes is not None
        return self._sizes

    def _pages(self) -> tuple[int, int, int]:
        db = self.connection
        return (
            db.execute("PRAGMA page_size").fetchone()[0],
            db.execute("PRAGMA page_count").fetchone()[0],
            db.execute("PRAGMA freelist_count").fetchone()[0],
        )

    def used_bytes(self) -> int:
        """
        Live data: the database's used pages (those still in the write-ahead
        log included; the log file itself is capped by C{journal_size_limit}).
        """
        page_size, count, free = self._pages()
        return (count - free) * page_size

    def file_bytes(self) -> int:
        return sum(_size(self.path + suffix) for suffix in ("", "-wal", "-shm"))

    # -- the command-line tool's writes -----------------------------------------

    def forget(self, ids: Iterable[int]) -> None:
        """Remove quarantined packets that were delivered by a replay."""
        self.commit(Changes(delivered=set(ids)))

    def requarantine(self, quarantined: Mapping[int, Quarantine]) -> None:
        """Record why packets are still in quarantine after a replay."""
        self.commit(Changes(quarantined=dict(quarantined)))

    def request_replay(self, ids: Iterable[int], detail: str, now_ns: int) -> int:
        """
        Ask the running server to decode these quarantined packets again
        (L{REPLAY_REQUESTED}, with C{detail}), in one transaction; a packet
        no longer in quarantine is left alone.  The number marked.
        """
        return self._each_in_quarantine(
            "UPDATE packet SET reason = ?, detail = ?, quarantined_ns = ? "
            "WHERE id = ? AND reason IS NOT NULL",
            ((REPLAY_REQUESTED, detail, now_ns, i) for i in ids),
        )

    def drop_quarantined(self, ids: Iterable[int]) -> int:
        """
        Delete these packets for good if they are in quarantine, in one
        transaction; a packet waiting for InfluxDB (or gone) is left alone.
        Safe while a server uses the journal: it never holds a quarantined
        packet it could lose.  The number deleted.
        """
        deleted = self._each_in_quarantine(
            "DELETE FROM packet WHERE id = ? AND reason IS NOT NULL",
            ((i,) for i in ids),
        )
        self.reclaim()
        return deleted

    def _each_in_quarantine(self, statement: str, rows: Iterable[tuple]) -> int:
        """
        C{statement}, which touches only packets in quarantine, for each of
        C{rows}, in one transaction (a server may be writing the journal
        too); the number of packets it changed.
        """
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            changed = sum(db.execute(statement, row).rowcount for row in rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return changed


def _version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def problems(rows: Iterable[tuple[str]]) -> list[str]:
    """What SQLite's integrity or quick check found, a problem a line; [] for none."""
    found = [line for (text,) in rows for line in text.splitlines()]
    if found == ["ok"]:
        return []
    return [line for line in found if not line.startswith("*** in database")]


def check_journal(directory: str) -> None:
    """
    The server's check before it starts, creating nothing: a journal this
    directory had is there, its files can be read and written, and every
    page of it reads (SQLite's quick check: it reads the whole file).  A
    directory that never had one passes: the server makes it.

    @raise JournalError: it cannot be used; the message says why and what
        to run (L{JournalDamaged}: it is damaged).
    """
    found = damaged(directory)
    if found is not None:
        raise JournalDamaged(directory, found)
    if not os.path.exists(os.path.join(directory, FILENAME)):
        return
    file = JournalFile(directory, create=False)
    try:
        file.verify()
    finally:
        file.close()


def create_journal(path: str, page_size: int | None = None) -> None:
    """
    A new, empty journal at C{path} (which must not exist, or be empty),
    closed: its schema is in the file itself, not in a write-ahead log.
    """
    # Private: SQLite gives its -wal and -shm files the same mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        if page_size is not None:
            db.execute(f"PRAGMA page_size = {int(page_size)}")
        # auto_vacuum must be chosen before the first table exists.
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        _execute(db, SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    finally:
        db.close()  # the last connection: the log is copied in and removed
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def damaged(directory: str) -> str | None:
    """
    What is wrong with C{directory}'s journal that shows before SQLite
    opens it, or None.  Opening an empty file, or one that does not start
    as SQLite's, would lose its write-ahead log: SQLite takes such a file
    for a new database and deletes the log when it closes it.
    """
    path = os.path.join(directory, FILENAME)
    if os.path.isdir(os.path.join(directory, SALVAGING)):
        return (
            f"is being salvaged ({os.path.join(directory, SALVAGING)} is there: "
            "a salvage did not finish; run it again)"
        )
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        marker = os.path.join(directory, MARKER)
        if os.path.exists(marker):
            return f"is missing, though this directory had one ({marker})"
        if os.path.exists(path + "-wal"):  # a new journal would take it for its own
            return f"is missing, though its write-ahead log is there ({path}-wal)"
        return None
    except OSError:
        return None  # said by unusable_file
    if not header:
        return "is empty (0 bytes)"
    if not header.startswith(SQLITE_MAGIC):
        return "is not an SQLite database (its first page is damaged)"
    return None


def unusable_file(
    directory: str, access: Callable[[str, int], bool] = os.access
) -> str | None:
    """
    Which of the journal's files (its directory, the journal, its
    write-ahead log and shared-memory index) this process cannot read and
    write, in a line that says what to run; None if it can use them all.
    SQLite makes the log and the index with the journal's mode, so a
    journal made read-only once leaves files that stay read-only after it
    is made writable again: all are named at once.  C{access} is
    L{os.access} (tests give another).
    """
    me = os.geteuid()
    path = os.path.join(directory, FILENAME)
    found: list[str] = []
    chown: list[str] = []
    chmod: dict[str, list[str]] = {"rwx": [], "rw": []}
    for name in (directory, *(path + suffix for suffix in SUFFIXES)):
        wanted = "rwx" if name == directory else "rw"
        try:
            status = os.stat(name)
        except OSError:
            continue
        if access(name, os.R_OK | os.W_OK | (os.X_OK if name == directory else 0)):
            continue
        found.append(f"{name} (mode {status.st_mode & 0o7777:04o})")
        if status.st_uid != me:
            found[-1] = f"{name} (owner {_user(status.st_uid)})"
            chown.append(shlex.quote(name))
        bits = 0o700 if wanted == "rwx" else 0o600
        if status.st_mode & bits != bits:
            chmod[wanted].append(shlex.quote(name))
    if not found:
        return None
    commands = [f"chown {_user(me)} {' '.join(chown)}"] if chown else []
    commands += [f"chmod u+{w} {' '.join(n)}" for w, n in chmod.items() if n]
    if _read_only_mount(directory):
        fix = "its file system is mounted read-only: remount it read-write"
    elif commands:
        fix = "run " + " && ".join(commands)
    else:
        fix = "see their access lists and attributes (getfacl, lsattr)"
    return (
        f"the journal's files cannot be read and written by {_user(me)}: "
        f"{', '.join(found)}: {fix}"
    )


def _read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _damage_error(error: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged (not: cannot be opened, or locked)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def mark_journal(directory: str) -> None:
    """Record, once, that C{directory} has a journal."""
    marker = os.path.join(directory, MARKER)
    if os.path.exists(marker):
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        with open(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(
                f"weather made its journal ({FILENAME}) here on {when}.\n"
                "While this file is here, a missing journal stops the server "
                "from starting: see weather journal check.\n"
            )
            f.flush()
            os.fsync(f.fileno())
        sync_directory(directory)
    except FileExistsError:
        pass
    except OSError as e:
        raise JournalError(f"cannot write {marker}: {e.strerror}") from None


def sync_directory(directory: str) -> None:
    """Make a new name in C{directory} durable."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _quarantine_columns(quarantine: Quarantine | None) -> tuple:
    if quarantine is None:
        return (None, None, None, None)
    return (
        quarantine.reason,
        quarantine.detail,
        quarantine.quarantined_ns,
        b"\n".join(quarantine.refused) or None,
    )


def _sizes_of(db: sqlite3.Connection, ids: Iterable[int]) -> Sizes:
    """The L{Sizes} of the packets C{ids}, as they are now."""
    ids = list(ids)
    total = Sizes()
    for start in range(0, len(ids), IDS_PER_QUERY):
        chunk = ids[start : start + IDS_PER_QUERY]
        total += Sizes(
            *db.execute(
                f"SELECT coalesce(sum(CASE WHEN reason IS NULL THEN {ROW_BYTES} END), 0), "
                f"coalesce(sum(CASE WHEN reason IS NOT NULL THEN {ROW_BYTES} END), 0) "
                f"FROM packet WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchone()
        )
    return total


def row_bytes(entry: JournalEntry, quarantine: Quarantine | None) -> int:
    """L{ROW_BYTES} of a packet not yet written."""
    refused = b"\n".join(quarantine.refused) if quarantine is not None else b""
    return len(entry.packet.data) + len(entry.timing.previous_records) + len(refused)


def _vacuum(db: sqlite3.Connection) -> bool:
    """Free every free page (False: it could not be written)."""
    try:
        # It frees one page per step; execute() steps once, executescript()
        # to the end.  (No transaction is open here.)
        db.executescript("PRAGMA incremental_vacuum;")
    except sqlite3.Error:
        return False
    return True


def _checkpoint(db: sqlite3.Connection) -> bool:
    """Copy the write-ahead log into the file and truncate it (False: not all of it)."""
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error:
        return False
    return not busy


def _execute(db: sqlite3.Connection, script: str) -> None:
    """Run C{script}'s statements one by one, in the open transaction."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _row(entry: JournalEntry, quarantine: Quarantine | None) -> tuple:
    packet, timing = entry.packet, entry.timing
    return (
        entry.id,
        packet.data,
        packet.peer,
        packet.arrival_ns,
        packet.boot_ns,
        entry.boot_id,
        timing.previous_arrival_ns,
        timing.spacing_ns,
        timing.ratio,
        timing.learned,
        timing.previous_records,
        *_quarantine_columns(quarantine),
    )


def _entry(
    entry_id: int,
    data: bytes,
    peer: str,
    arrival_ns: int,
    boot_ns: int | None,
    boot_id: str | None,
    previous: int | None,
    spacing: int | None,
    ratio: float | None,
    learned: int | None,
    previous_records: bytes | None,
) -> JournalEntry:
    if ratio is None:  # journaled by schema 1: only the previous arrival
        timing = TimingInputs.since(previous, arrival_ns)
    else:
        timing = TimingInputs(
            previous, spacing, ratio, bytes(previous_records or b""), bool(learned)
        )
    packet = Packet(bytes(data), peer, arrival_ns, boot_ns)
    return JournalEntry(entry_id, packet, timing, boot_id)


def _device_row(device: int, state: StationState) -> tuple:
    ratios = ",".join(repr(ratio) for ratio in state.ratios)
    return (device, state.arrival_ns, state.boot_ns, state.boot_id, ratios, state.records)


def _station(
    arrival_ns: int,
    boot_ns: int | None,
    boot_id: str | None,
    ratios: str | None,
    records: bytes | None,
) -> StationState:
    measured = tuple(float(r) for r in ratios.split(",")) if ratios else ()
    return StationState(arrival_ns, boot_ns, boot_id, measured, bytes(records or b""))
