"""
A copy of the journal, taken while the server runs: SQLite's online backup.

The copy is one snapshot, what a reader of the journal sees at one moment:
every committed transaction, those still only in the write-ahead log
included, and nothing of one in progress.  The server goes on committing
meanwhile (in WAL mode a reader never blocks the writer).  C{cp} could catch
the file half-written, and misses what is only in C{journal.sqlite3-wal}.

The copy is a journal of its own in one file (rollback-journal mode: no
C{-wal} beside it), private (mode 0600), checked (C{PRAGMA quick_check}) and
on disk before it gets its name: a name never stands for half a copy.  The
journal is opened read-only; an existing file is replaced only when asked,
and never one the server uses.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import urllib.parse
from dataclasses import dataclass

from weather.journal.service import LOCKNAME
from weather.journal.store import FILENAME, JournalError

#: The files of a data directory the server uses: never a destination.
SERVER_FILES = frozenset(
    {FILENAME, *(FILENAME + suffix for suffix in ("-wal", "-shm", "-journal")), LOCKNAME}
)


@dataclass(frozen=True, slots=True)
class Backup:
    """Where the copy went, and what it holds."""

    path: str
    pending: int
    quarantined: int
    size: int


def backup_name(now: float, taken: int = 0) -> str:
    """
    C{journal-20260121T061500Z.sqlite3}: the time in UTC, no colons; when
    C{taken} names of that second are in use, C{journal-20260121T061500Z-2.sqlite3}...
    """
    second = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"journal-{second}-{taken + 1}.sqlite3" if taken else f"journal-{second}.sqlite3"


def backup_journal(
    directory: str,
    destination: str,
    now: float,
    *,
    replace: bool = False,
    busy_timeout: float = 10.0,
) -> Backup:
    """
    Copy the journal in C{directory} to C{destination}: a file, or an existing
    directory to hold it under a new L{backup_name}.

    @param replace: replace C{destination} if it exists.
    @raise JournalError: there is no journal; the destination exists (and not
        C{replace}), is one of the server's files, or cannot be written;
        SQLite could not read the journal or check the copy.
    """
    journal = os.path.join(directory, FILENAME)
    if not os.path.exists(journal):
        raise JournalError(f"no journal in {directory} (is --data-dir right?)")
    if os.path.isdir(destination):
        folder, taken = destination, 0
        destination = os.path.join(folder, backup_name(now))
        while os.path.lexists(destination):
            taken += 1
            destination = os.path.join(folder, backup_name(now, taken))
    destination = os.path.abspath(destination)
    folder, name = os.path.split(destination)
    if name in SERVER_FILES and os.path.realpath(folder) == os.path.realpath(directory):
        raise JournalError(f"{destination} is the server's own file: give another")
    if os.path.lexists(destination) and not replace:
        raise JournalError(
            f"{destination} exists: give --force to replace it, or a directory "
            "for a new name"
        )
    try:
        fd, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
        os.close(fd)
    except OSError as e:
        raise JournalError(f"cannot write in {folder}: {e.strerror}") from None
    try:
        pending, quarantined = _copy(journal, partial, busy_timeout)
        if os.path.lexists(destination) and not replace:  # made meanwhile
            raise JournalError(f"{destination} appeared meanwhile: not replaced")
        os.replace(partial, destination)
        _sync_directory(folder)
    except OSError as e:
        raise JournalError(f"cannot write {destination}: {e.strerror}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return Backup(destination, pending, quarantined, os.stat(destination).st_size)


def _copy(journal: str, target: str, busy_timeout: float) -> tuple[int, int]:
    """
    The backup itself, into the empty file C{target}; its packets, pending and
    quarantined.
    """
    uri = "file:" + urllib.parse.quote(os.path.abspath(journal)) + "?mode=ro"
    try:
        source = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
    except sqlite3.Error as e:
        raise JournalError(f"cannot open the journal {journal}: {e}") from None
    try:
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            copy.execute("PRAGMA synchronous = FULL")  # on disk when it returns
            # All pages in one step: one read transaction, one snapshot.  (In
            # steps, each commit of the server's would start the copy over.)
            source.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode = DELETE")
            check = copy.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                problems = "; ".join(row[0] for row in check[:3])
                raise JournalError(f"the copy of {journal} is damaged: {problems}")
            pending, quarantined = copy.execute(
                "SELECT count(*) - count(reason), count(reason) FROM packet"
            ).fetchone()
        finally:
            copy.close()
    except sqlite3.Error as e:
        raise JournalError(f"cannot back up {journal}: {e}") from None
    finally:
        source.close()
    return pending, quarantined


def _sync_directory(path: str) -> None:
    """Make a rename in C{path} durable, where the file system can (vfat may not)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
