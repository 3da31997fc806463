"""
The daemon's log: a file that rotates by size and keeps a set number of old
files, SIGUSR1 to rotate (or to reopen after an external logrotate), and text
or JSON lines.

twistd looks for an L{ILogObserver} component on the application before it
builds its own observer from C{--logfile}; L{attach} sets that component, so
twistd opens no log file of its own and its start lines come to ours.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import math
import os
import pwd
import signal
import sys
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import IO, Any, BinaryIO, cast

from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python import threadable
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

__all__ = [
    "RotatingLogFile",
    "attach",
    "event_as_json",
    "install_sigusr1",
    "json_observer",
    "rotate_or_reopen",
    "text_observer",
]

log = Logger()

#: Mode of log files this module creates: the owner writes, a log group
#: (adm, a log shipper) reads, others nothing.  Exact, whatever the umask.
FILE_MODE = 0o640

#: Non-scalar field values are logged as their text, cut to this length.
MAX_FIELD_TEXT = 500

#: Keys a JSON line sets itself, and the bookkeeping keys of twisted.python.log
#: events: an event's fields of these names are left out.
_NOT_FIELDS = frozenset(
    {"time", "level", "namespace", "system", "message", "failure"}
    | {"isError", "format", "why", "printed", "logLevel"}
)

_LEVEL_NAMES = frozenset(level.name for level in LogLevel.iterconstants())

# What os.link raises where a file system has no hard links (FAT, some FUSE
# and network mounts, some container overlays) or a policy forbids them
# (fs.protected_hardlinks, a security module).
_NO_HARD_LINKS = frozenset(
    {
        errno.EPERM,
        errno.EACCES,
        errno.EXDEV,
        errno.EMLINK,
        errno.ENOTSUP,
        errno.EOPNOTSUPP,
        errno.ENOSYS,
    }
)


class RotatingLogFile(LogFile):
    """
    A log file that rotates by size and keeps C{keep} rotated files
    (C{name.1} the newest).

    Unlike Twisted's L{LogFile} it writes in append mode (C{O_APPEND}): after
    logrotate's C{copytruncate} the next line lands at the start of the
    emptied file, not at the old offset behind a hole of NUL bytes.  New files
    are created with L{FILE_MODE} exactly, so a file made on rotation, under
    the umask twistd sets when daemonizing (0077), looks like the first one;
    an existing file (or one logrotate created) keeps its owner and mode.
    Writes are unbuffered: each line reaches the kernel when it is logged.
    """

    synchronized = ["write", "rotate", "reopen", "rotate_or_reopen"]

    def __init__(
        self,
        name: str,
        directory: str,
        max_bytes: int = 10 * 1024 * 1024,
        keep: int = 10,
        mode: int = FILE_MODE,
        owner: tuple[int, int] | None = None,
    ) -> None:
        """
        @param max_bytes: rotate before a write once the file has this many
            bytes; 0 never rotates by size (for an external logrotate).
        @param keep: rotated files kept, older ones are deleted; 0 keeps none
            (a full log is deleted and started afresh).
        @param mode: permissions of files this creates.
        @param owner: uid and gid (-1: unchanged) to give files this creates
            while running as root: the user twistd switches to (C{--uid}),
            who has to rotate them later, as has logrotate's C{su} user.
        @raise ValueError: C{max_bytes} or C{keep} is negative.
        @raise OSError: the file cannot be opened.
        """
        if max_bytes < 0:
            raise ValueError(f"the log's maximum size must be 0 or more, not {max_bytes}")
        if keep < 0:
            raise ValueError(
                f"the number of rotated logs to keep must be 0 or more, not {keep}"
            )
        self.max_bytes = max_bytes
        self.keep = keep
        self.owner = owner
        LogFile.__init__(
            self,
            name,
            directory,
            rotateLength=max_bytes or None,
            defaultMode=mode,
            maxRotatedFiles=keep,
        )

    def _open(self, path: str | None = None) -> BinaryIO:
        """
        Open the file at C{path} (ours by default) for appending, creating it
        if it is missing; any other C{path} must not exist yet (a link put
        there is not followed).
        """
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path if path is None else path, flags | os.O_EXCL, 0o600)
        except FileExistsError:
            if path is not None:
                raise
            fd = os.open(self.path, flags)
        else:
            try:
                if self.owner is not None and os.geteuid() == 0:
                    os.fchown(fd, *self.owner)
                os.fchmod(fd, cast(int, self.defaultMode))
            except OSError:
                pass  # a file system without owners or modes: as created then
        return cast(BinaryIO, os.fdopen(fd, "ab", buffering=0))

    def _openFile(self) -> None:
        self._file = self._open()
        self.closed = False
        self.size = self._size()

    def _size(self) -> int:
        """The open file's size now (the file system's, so truncation counts)."""
        return os.fstat(self._file.fileno()).st_size

    def shouldRotate(self) -> bool:
        if not self.max_bytes:
            return False
        size = self._size()
        # After a failed rotation, try again once it has grown as much again.
        return size >= self.max_bytes and size >= getattr(self, "_retry_at_size", 0)

    def write(self, data: str | bytes) -> None:
        """Append C{data} (text as UTF-8; unencodable characters escaped)."""
        if isinstance(data, str):
            data = data.encode("utf-8", "backslashreplace")
        if self.shouldRotate():
            self.rotate()
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written:]
        self.size = self._size()

    def is_current(self) -> bool:
        """Whether the file at C{path} is the one open (not moved or deleted)."""
        return self._is_open_file(self.path)

    def _is_open_file(self, path: str) -> bool:
        """Whether C{path} names the file open (False if nothing is there)."""
        try:
            there = os.stat(path)
        except OSError:
            return False
        here = os.fstat(self._file.fileno())
        return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)

    def listLogs(self) -> list[int]:
        """The numbers of the rotated files there are, in order."""
        prefix = self.name + "."
        numbers = []
        for entry in os.listdir(self.directory):
            suffix = entry[len(prefix) :]
            if (
                entry.startswith(prefix)
                and suffix.isascii()
                and suffix.isdigit()
                and suffix == str(int(suffix))  # not "01": ours are name.1, name.2
                and int(suffix) > 0
            ):
                numbers.append(int(suffix))
        return sorted(numbers)

    def rotate_or_reopen(self) -> str:
        """
        Rotate if the file at C{path} is still ours, else (an external tool
        moved or deleted it) open C{path} afresh; say which: C{"rotated"} or
        C{"reopened"}.

        @raise OSError: neither could be done; the open file is kept.
        """
        if not self.is_current():
            self.reopen()
            return "reopened"
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "directory not writable", self.directory)
        self._unlink_stale_link()
        for number in reversed(self.listLogs()):
            older = f"{self.path}.{number}"
            if number >= self.keep:
                os.remove(older)
            else:
                os.rename(older, f"{self.path}.{number + 1}")
        self._replace()
        return "rotated"

    def _unlink_stale_link(self) -> None:
        """
        A server killed between linking C{path.1} and renaming the new file
        over C{path} left both names on the open file: drop C{path.1}, or it
        would go on growing (and be rotated on as a copy of the live log).
        """
        if self._is_open_file(self.path + ".1"):
            os.remove(self.path + ".1")

    def _replace(self) -> None:
        """
        Put a new empty file at C{path} and write there, the open one becoming
        C{path.1} (or deleted when none are kept), without a moment when
        C{path} is missing: C{tail -F} and other readers never see it gone.
        The new file is made under a hidden name and renamed over C{path};
        where hard links are not possible the open file is renamed first.
        """
        fresh = os.path.join(self.directory, f".{self.name}.new")
        with contextlib.suppress(FileNotFoundError):
            os.remove(fresh)  # left by a crash in the middle of a rotation
        new = self._open(fresh)
        linked = False
        try:
            if self.keep:
                try:
                    os.link(self.path, self.path + ".1")
                    linked = True
                except OSError as e:
                    if e.errno not in _NO_HARD_LINKS:
                        raise
                    os.rename(self.path, self.path + ".1")
            os.rename(fresh, self.path)
        except BaseException:
            new.close()
            with contextlib.suppress(OSError):
                os.remove(fresh)
            if linked:  # else path.1 would go on growing with the open file
                with contextlib.suppress(OSError):
                    os.remove(self.path + ".1")
            raise
        old, self._file = self._file, new
        self.closed = False
        self.size = self._size()
        old.close()

    def rotate(self) -> None:
        """
        Rotate by size.  Failing that (the directory is not writable, say)
        keep writing to the open file: nothing can be logged from here.
        """
        try:
            self.rotate_or_reopen()
        except OSError as e:
            # Into the file itself: the logging system is what is writing.
            line = (
                f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} [weather.app.logfile] cannot "
                f"rotate {self.path} ({e.strerror or e}): it keeps growing; trying "
                f"again once {self.max_bytes} more bytes are written\n"
            )
            self._file.write(line.encode("utf-8", "backslashreplace"))
            self._retry_at_size = self._size() + self.max_bytes
        else:
            self._retry_at_size = 0

    def reopen(self) -> None:
        """Open C{path} afresh; if that fails the open file stays in use."""
        new = self._open()
        old, self._file = self._file, new
        self.closed = False
        self.size = self._size()
        old.close()


threadable.synchronize(RotatingLogFile)


def rotate_or_reopen(log_file: RotatingLogFile) -> str:
    """
    What SIGUSR1 does: rotate the log now, or reopen it if an external tool
    moved it away.  Logs what was done (in the new file) and returns it:
    C{"rotated"}, C{"reopened"} or C{"failed"}.
    """
    try:
        action = log_file.rotate_or_reopen()
    except OSError as e:
        log.warn(
            "Log file {path} not rotated: {error}",
            path=log_file.path,
            error=e.strerror or str(e),
        )
        return "failed"
    log.info("Log file {path} {action} on SIGUSR1", path=log_file.path, action=action)
    return action


def install_sigusr1(
    log_file: RotatingLogFile, reactor: IReactorFromThreads
) -> Callable[[int, FrameType | None], Any] | int | None:
    """
    Make SIGUSR1 call L{rotate_or_reopen} in the reactor (the signal may
    arrive in the middle of a write); return the previous handler.  Must be
    called from the main thread.
    """

    def on_sigusr1(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(rotate_or_reopen, log_file)

    return signal.signal(signal.SIGUSR1, on_sigusr1)


def _encoding(out: object) -> str:
    """The encoding text written to C{out} ends up in (a file without one: UTF-8)."""
    try:
        return codecs.lookup(getattr(out, "encoding", None) or "utf-8").name
    except LookupError:
        return "ascii"


def _encodable(text: str, encoding: str = "utf-8") -> str:
    """C{text} with what C{encoding} cannot encode (lone surrogates) escaped."""
    if text.isascii():
        return text
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    return text


def text_observer(out: IO[Any] | LogFile) -> FileLogObserver:
    """
    twistd's text lines (time, [system], message, traceback) to C{out}, with
    characters its encoding cannot take escaped rather than raising.
    """
    encoding = _encoding(out)

    def format_event(event: dict[str, Any]) -> str | None:
        text = formatEventAsClassicLogText(
            event, formatTime=lambda when: formatTime(when, timeFormatRFC3339)
        )
        return _encodable(text, encoding) if text else text

    return FileLogObserver(cast(IO[Any], out), format_event)


def json_observer(out: IO[Any] | LogFile) -> FileLogObserver:
    """
    One JSON object per line (see L{event_as_json}) to C{out}: a log file or
    a text stream such as stdout; ASCII-only JSON if C{out} is not UTF-8.
    """
    ascii_only = _encoding(out) != "utf-8"
    return FileLogObserver(
        cast(IO[Any], out), lambda event: event_as_json(event, ascii_only) + "\n"
    )


def _iso_time(when: object) -> str:
    """ISO 8601 UTC with milliseconds: C{2026-11-21T10:00:00.123Z}."""
    if not isinstance(when, (int, float)) or not math.isfinite(when):
        when = time.time()
    seconds, millis = divmod(math.floor(when * 1000), 1000)
    try:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return _iso_time(time.time())
    return f"{stamp}.{millis:03d}Z"


def _short_text(value: object) -> str:
    """C{value} as text of at most L{MAX_FIELD_TEXT} characters, whatever it is."""
    try:
        text = repr(value) if isinstance(value, (bytes, bytearray)) else str(value)
    except Exception:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {type(value).__name__}>"
    if len(text) > MAX_FIELD_TEXT:
        text = text[: MAX_FIELD_TEXT - 3] + "..."
    return _encodable(text)


def _json_value(value: object) -> str | int | float | bool | None:
    """A JSON scalar as is; anything else (bytes, NaN, objects) as short text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if -(2**63) <= value < 2**64 else _short_text(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _encodable(str(value))
    return _short_text(value)


def event_as_json(event: dict[str, Any], ascii_only: bool = False) -> str:
    """
    An event as one line of JSON (no newline): C{time} (UTC, ms), C{level},
    C{namespace}, C{system} if any, C{message} (formatted), the event's own
    fields that are not C{log_*} (scalars as they are, other values as short
    text) and C{failure} (a traceback) if it has one.  Never raises: an event
    that cannot be rendered gives a line that says so.
    """
    try:
        return _event_as_json(event, ascii_only)
    except Exception as e:
        return json.dumps(
            {
                "time": _iso_time(None),
                "level": "error",
                "namespace": __name__,
                "message": "Unable to write a log event as JSON: " + _short_text(e),
            },
            ensure_ascii=True,
        )


def _event_as_json(event: dict[str, Any], ascii_only: bool) -> str:
    level = event.get("log_level")
    failure = event.get("log_failure")
    message = formatEvent(event)
    if failure is None and isinstance(event.get("failure"), Failure):
        failure = event["failure"]  # twisted.python.log.err(): the message has it too
        message = str(event.get("why") or "Unhandled Error")
    line: dict[str, Any] = {
        "time": _iso_time(event.get("log_time")),
        "level": level.name if getattr(level, "name", None) in _LEVEL_NAMES else "info",
        "namespace": _json_value(event.get("log_namespace", "")),
    }
    system = event.get("log_system")
    if system is not None and system != "-":
        line["system"] = _json_value(system)
    line["message"] = _encodable(message)
    for key, value in event.items():
        if isinstance(key, str) and not key.startswith("log_") and key not in _NOT_FIELDS:
            line[_encodable(key)] = _json_value(value)
    if isinstance(failure, Failure):
        try:
            line["failure"] = _encodable(failure.getTraceback())
        except Exception as e:
            line["failure"] = "Unable to format the traceback: " + _short_text(e)
    return json.dumps(line, ensure_ascii=ascii_only, allow_nan=False, separators=(",", ":"))


def _owner(twistd_options: Mapping[str, Any]) -> tuple[int, int] | None:
    """The uid and gid twistd will switch to (C{--uid}, C{--gid}), if any."""
    uid, gid = twistd_options.get("uid"), twistd_options.get("gid")
    if uid is None and gid is None:
        return None
    if gid is None:
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = -1
    return (-1 if uid is None else uid, gid)


def attach(
    application: Componentized,
    twistd_options: Mapping[str, Any],
    *,
    max_bytes: int,
    keep: int,
    json: bool,
    reactor: IReactorFromThreads,
) -> RotatingLogFile | None:
    """
    Set the application's log observer from twistd's options, as twistd
    would but with rotation by size and optional JSON; call it before twistd
    starts logging (from C{setServiceParent}) and before it changes directory.

      - C{--logger} or C{--syslog}: nothing is done, twistd uses them.
      - C{--logfile -}, or C{--nodaemon} without C{--logfile}: stdout.
      - otherwise C{--logfile} (default C{twistd.log}, relative to the
        directory twistd was started in), rotating; SIGUSR1 rotates it.  A
        file created as root is given to C{--uid}/C{--gid}.

    @return: the log file, or L{None} if there is none.
    @raise SystemExit: a daemon is to log to stdout, or the file cannot be
        opened (twistd prints the message and stops).
    """
    if twistd_options.get("logger") or twistd_options.get("syslog"):
        return None
    filename = twistd_options.get("logfile") or ""
    nodaemon = bool(twistd_options.get("nodaemon") or twistd_options.get("debug"))
    make_observer = json_observer if json else text_observer
    if filename == "-" or (nodaemon and not filename):
        if not nodaemon:
            raise SystemExit("Daemons cannot log to stdout, exiting!")
        application.setComponent(ILogObserver, make_observer(sys.stdout))
        return None
    path = os.path.abspath(filename or "twistd.log")
    try:
        log_file = RotatingLogFile(
            os.path.basename(path),
            os.path.dirname(path),
            max_bytes=max_bytes,
            keep=keep,
            owner=_owner(twistd_options),
        )
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SystemExit(f"weather: log file {path}: {reason}") from None
    application.setComponent(ILogObserver, make_observer(log_file))
    install_sigusr1(log_file, reactor)
    return log_file
