"""
The journal file: every packet on local disk, in SQLite, until InfluxDB has it.

One SQLite database in WAL mode with C{synchronous=FULL}: a commit returns only
once its packets are on disk (fsync), and a crash at any moment leaves either
the whole transaction or none of it.  The database holds

  - C{packet}: each packet's bytes, peer, arrival time and the timing state
    used to decode it (the arrival of the same device's previous packet).  A row
    with no C{reason} is pending: not yet acknowledged by InfluxDB.  A row with
    a C{reason} is in quarantine: it could not be decoded, or InfluxDB refused
    its points for good.  A delivered packet's row is deleted;
  - C{device}: each device's latest arrival, the timing state the next packet
    of that device is decoded with.

This module is synchronous and does blocking I/O: the server calls it from
one worker thread (L{weather.journal.service}), the command-line tool directly.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from weather.core.packet import Packet

FILENAME = "journal.sqlite3"
#: The schema this code reads and writes (SQLite's C{user_version}).
SCHEMA_VERSION = 1
#: Past this many free pages' worth of bytes, give space back to the file system.
RECLAIM_BYTES = 16 * 1024 * 1024

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
    refused BLOB
);
CREATE INDEX quarantined ON packet (id) WHERE reason IS NOT NULL;
CREATE TABLE device (
    id INTEGER PRIMARY KEY,
    last_arrival_ns INTEGER NOT NULL
);
"""


class JournalError(Exception):
    """The journal cannot be opened or read; the message says why."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A packet as the journal holds it: what is needed to decode it again."""

    id: int
    packet: Packet
    #: When the same device's previous packet arrived, or None.
    previous_arrival_ns: int | None


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
class JournalStatus:
    pending: int
    oldest_pending_ns: int | None
    quarantined: int
    #: Bytes of live data: what the high-water mark is measured against.
    used_bytes: int
    #: Bytes of the database files on disk (free pages included).
    file_bytes: int


@dataclass
class Changes:
    """What one transaction writes: grouped so a burst costs one fsync."""

    added: list[tuple[JournalEntry, Quarantine | None]] = field(default_factory=list)
    quarantined: dict[int, Quarantine] = field(default_factory=dict)
    delivered: set[int] = field(default_factory=set)
    devices: dict[int, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.quarantined or self.delivered or self.devices)

    def then(self, later: Changes) -> Changes:
        """These changes followed by C{later}'s, as one group."""
        quarantined = {**self.quarantined, **later.quarantined}
        return Changes(
            self.added + later.added,
            quarantined,
            (self.delivered | later.delivered) - quarantined.keys(),
            {**self.devices, **later.devices},
        )


class JournalFile:
    """
    The SQLite journal in C{directory}.  Not thread-safe: use it from one
    thread at a time.

    @raise JournalError: the file cannot be opened, or is from a newer version.
    """

    def __init__(self, directory: str, *, create: bool = True, busy_timeout: float = 10.0):
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        if create:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as e:
                raise JournalError(f"cannot create {directory}: {e.strerror}") from None
        elif not os.path.exists(self.path):
            raise JournalError(f"no journal in {directory} (is --data-dir right?)")
        if create and not os.path.exists(self.path):
            try:  # private: SQLite gives its -wal and -shm files the same mode
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as e:
                raise JournalError(f"cannot create {self.path}: {e.strerror}") from None
        try:
            self.connection = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,  # transactions are explicit
                check_same_thread=False,  # one worker thread, not the opener's
            )
            self._prepare()
        except sqlite3.Error as e:
            raise JournalError(f"cannot open the journal {self.path}: {e}") from None

    def _prepare(self) -> None:
        db = self.connection
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path} was written by a newer version of weather "
                f"(schema {version}); upgrade weather to read it"
            )
        # auto_vacuum must be chosen before the first table exists.
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise JournalError(f"{self.path}: SQLite cannot use WAL mode here ({mode})")
        db.execute("PRAGMA synchronous = FULL")
        db.execute(f"PRAGMA journal_size_limit = {RECLAIM_BYTES}")
        if version == 0:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()

    # -- the server's writes -------------------------------------------------

    def commit(self, changes: Changes) -> int:
        """
        Write C{changes} in one transaction, durable when this returns.

        @return: the bytes of live data afterwards (L{used_bytes}).
        @raise sqlite3.Error: nothing was written (the disk is full, ...).
        """
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO packet (id, arrival_ns, peer, data, previous_arrival_ns, "
                "reason, detail, quarantined_ns, refused) VALUES (?,?,?,?,?,?,?,?,?)",
                (_row(entry, quarantine) for entry, quarantine in changes.added),
            )
            db.executemany(
                "UPDATE packet SET reason = ?, detail = ?, quarantined_ns = ?, "
                "refused = ? WHERE id = ?",
                (
                    (*_quarantine_columns(quarantine), entry_id)
                    for entry_id, quarantine in changes.quarantined.items()
                ),
            )
            db.executemany(
                "DELETE FROM packet WHERE id = ?", ((i,) for i in changes.delivered)
            )
            db.executemany(
                "INSERT INTO device (id, last_arrival_ns) VALUES (?, ?) ON CONFLICT "
                "(id) DO UPDATE SET last_arrival_ns = excluded.last_arrival_ns",
                changes.devices.items(),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if changes.delivered:
            self._reclaim()
        return self.used_bytes()

    def _reclaim(self) -> None:
        """Give the space of delivered packets back once there is a lot of it."""
        page_size, _, free = self._pages()
        if free * page_size > RECLAIM_BYTES:
            # It frees one page per step; execute() steps once, executescript()
            # to the end.  (No transaction is open here.)
            self.connection.executescript("PRAGMA incremental_vacuum;")

    # -- reading -------------------------------------------------------------

    def next_id(self) -> int:
        return self.connection.execute(
            "SELECT coalesce(max(id), 0) + 1 FROM packet"
        ).fetchone()[0]

    def device_arrivals(self) -> dict[int, int]:
        """Each device's latest arrival: the timing state to go on with."""
        return dict(self.connection.execute("SELECT id, last_arrival_ns FROM device"))

    def pending(self, after_id: int = 0, limit: int = 1000) -> list[JournalEntry]:
        """Packets not yet delivered nor quarantined, oldest first."""
        rows = self.connection.execute(
            "SELECT id, data, peer, arrival_ns, previous_arrival_ns FROM packet "
            "WHERE id > ? AND reason IS NULL ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [_entry(*row) for row in rows]

    def quarantined(self, after_id: int = 0, limit: int = -1) -> list[QuarantinedPacket]:
        """Packets in quarantine, oldest first."""
        rows = self.connection.execute(
            "SELECT id, data, peer, arrival_ns, previous_arrival_ns, reason, detail, "
            "quarantined_ns, refused FROM packet WHERE reason IS NOT NULL AND id > ? "
            "ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [
            QuarantinedPacket(
                _entry(*row[:5]),
                Quarantine(
                    row[5],
                    row[6] or "",
                    row[7] or 0,
                    tuple(row[8].split(b"\n")) if row[8] else (),
                ),
            )
            for row in rows
        ]

    def status(self) -> JournalStatus:
        db = self.connection
        pending, oldest = db.execute(
            "SELECT count(*), min(arrival_ns) FROM packet WHERE reason IS NULL"
        ).fetchone()
        quarantined = db.execute(
            "SELECT count(*) FROM packet WHERE reason IS NOT NULL"
        ).fetchone()[0]
        return JournalStatus(
            pending, oldest, quarantined, self.used_bytes(), self.file_bytes()
        )

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


def _row(entry: JournalEntry, quarantine: Quarantine | None) -> tuple:
    packet = entry.packet
    return (
        entry.id,
        packet.arrival_ns,
        packet.peer,
        packet.data,
        entry.previous_arrival_ns,
        *_quarantine_columns(quarantine),
    )


def _entry(
    entry_id: int, data: bytes, peer: str, arrival_ns: int, previous: int | None
) -> JournalEntry:
    return JournalEntry(entry_id, Packet(bytes(data), peer, arrival_ns), previous)
