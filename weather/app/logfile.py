"""
The daemon's log file: Twisted's L{LogFile}, rotating by size and keeping a
set number of old files, with SIGUSR1 to rotate it (or to reopen it after an
external logrotate).

twistd looks for an L{ILogObserver} component on the application before it
builds its own observer from C{--logfile}; L{attach} sets that component, so
twistd opens no log file of its own and its start lines come to ours.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, BinaryIO, cast

from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import ILogObserver, Logger
from twisted.python import threadable
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile

from weather.app.logformat import json_observer, text_observer

__all__ = [
    "RotatingLogFile",
    "attach",
    "install_sigusr1",
    "rotate_or_reopen",
    "twistd_user",
]

log = Logger()

#: Mode of log files this module creates: the owner writes, a log group
#: (adm, a log shipper) reads, others nothing.  Exact, whatever the umask.
FILE_MODE = 0o640

#: A SIGUSR1 less than this many seconds after the one before belongs to the
#: same burst: a burst rotates once, however long it lasts, instead of
#: pushing the history out of the kept files.
SIGUSR1_INTERVAL = 1.0


class RotatingLogFile(LogFile):
    """
    Twisted's L{LogFile}: rotation by size (C{rotateLength}, 0 never), the
    newest rotated file C{name.1}, at most C{maxRotatedFiles} of them.  Each
    override says where LogFile falls short for a daemon's log.
    """

    synchronized = ["write", "rotate", "reopen", "rotate_or_reopen"]

    def __init__(
        self,
        name: str,
        directory: str,
        *,
        max_bytes: int,
        keep: int,
        mode: int = FILE_MODE,
        owner: tuple[int, int] | None = None,
        seconds: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param max_bytes: rotate before a write once the file has this many
            bytes (C{--log-max-bytes}); 0 never rotates by size (for an
            external logrotate).
        @param keep: rotated files kept (C{--log-keep}), older ones are
            deleted; 0 keeps none (a full log is deleted and started afresh).
        @param mode: permissions of files this creates.
        @param owner: uid and gid (-1: unchanged) to give files this creates
            while running as root: the user twistd switches to (C{--uid}),
            who has to rotate them later, as has logrotate's C{su} user.
        @param seconds: a monotonic clock, for the gaps between signals.
        @raise ValueError: C{max_bytes} or C{keep} is negative.
        @raise OSError: the file cannot be opened.
        """
        if max_bytes < 0:
            raise ValueError(f"the log's maximum size must be 0 or more, not {max_bytes}")
        if keep < 0:
            raise ValueError(
                f"the number of rotated logs to keep must be 0 or more, not {keep}"
            )
        self.owner = owner
        self._seconds = seconds
        self._asked_at = -float("inf")  # the last signal
        #: Signals of the current burst that rotated nothing.
        self.kept = 0
        self._retry_at = 0  # the size at which to try a failed rotation again
        LogFile.__init__(
            self,
            name,
            directory,
            rotateLength=max_bytes,
            defaultMode=mode,
            maxRotatedFiles=keep,
        )

    def _openFile(self) -> None:
        """
        Open C{path} for appending.  LogFile opens it C{r+} and writes at its
        own offset: after logrotate's C{copytruncate} that leaves a hole of NUL
        bytes.  LogFile also sets C{defaultMode} on an existing file, which
        keeps its own here (logrotate's C{create}, an operator's choice).
        Called again by L{reopen}, it closes the file open until then.
        """
        self._use(self._open(self.path))

    def _open(self, path: str) -> BinaryIO:
        """
        Open C{path} for appending, creating it if it is missing with
        C{owner} and exactly C{defaultMode}, set on the open file (LogFile
        sets the process's umask meanwhile, which other threads would feel).
        A name other than the log's own must not exist yet: a link planted
        there is not followed.
        """
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(path, flags | os.O_EXCL, 0o600)
        except FileExistsError:
            if path != self.path:
                raise
            fd = os.open(path, flags)
        else:
            with contextlib.suppress(OSError):  # a file system without owners or modes
                if self.owner is not None and os.geteuid() == 0:
                    os.fchown(fd, *self.owner)
                os.fchmod(fd, cast(int, self.defaultMode))
        return cast(BinaryIO, os.fdopen(fd, "ab"))

    def _use(self, new: BinaryIO) -> None:
        """Write to C{new} from now on; close the file written to until now."""
        old = getattr(self, "_file", None)
        self._file, self.closed, self.size = new, False, new.tell()
        if old is not None:
            old.close()

    def write(self, data: str | bytes) -> None:
        """
        LogFile's, but text UTF-8 cannot encode (lone surrogates from
        undecodable bytes) is escaped rather than raising, and each write
        reaches the kernel at once.
        """
        if isinstance(data, str):
            data = data.encode("utf-8", "backslashreplace")
        LogFile.write(self, data)
        self.flush()

    def shouldRotate(self) -> bool:
        """
        LogFile's test on the size the file has now (logrotate's
        C{copytruncate} sets it back to 0); after a failed rotation, not
        again until the file has grown by C{rotateLength} more.
        """
        self.size = os.fstat(self._file.fileno()).st_size
        return bool(LogFile.shouldRotate(self)) and self.size >= self._retry_at

    def listLogs(self) -> list[int]:
        """
        The numbers of the rotated files, in order.  LogFile globs (a path
        with C{[} in it finds nothing) and takes whatever C{int()} reads:
        someone else's C{name.01} or C{name.1_0} would be renamed as ours.
        """
        ours = re.compile(re.escape(self.name) + r"\.([1-9][0-9]*)")
        found = (ours.fullmatch(entry) for entry in os.listdir(self.directory))
        return sorted(int(match[1]) for match in found if match)

    def reopen(self) -> None:
        """
        Open C{path} afresh.  LogFile closes the open file first: if opening
        fails, nothing can be logged any more; here logging goes on there.
        """
        self._openFile()

    def rotate(self) -> None:
        """
        Rotate by size (L{rotate_or_reopen}).  Where LogFile gives up
        silently, this says so in the file itself (the logging system is
        what is writing), keeps writing there, and tries again once the file
        has grown by C{rotateLength} more: not on every line.
        """
        try:
            self._rotate_or_reopen()
        except OSError as e:
            line = (
                f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} [{__name__}] cannot rotate "
                f"{self.path} ({e.strerror or e}): it keeps growing; trying again "
                f"once {self.rotateLength} more bytes are written\n"
            ).encode("utf-8", "backslashreplace")
            self._file.write(line)
            self._retry_at = self.size + len(line) + self.rotateLength
        else:
            self._retry_at = 0

    def rotate_or_reopen(self, burst_gap: float = 0.0) -> str:
        """
        Rotate if the file at C{path} is still ours, else (an external tool
        moved or deleted it) open C{path} afresh; say which: C{"rotated"},
        C{"reopened"}, or C{"kept"}: asked less than C{burst_gap} seconds
        after the last time, in a burst that has rotated already (L{kept}
        counts those).  An external tool's move is always followed.
        LogFile can only rotate, renaming whatever file is at C{path} now.

        @raise OSError: neither could be done; the open file is kept.
        """
        now = self._seconds()
        in_burst, self._asked_at = now - self._asked_at < burst_gap, now
        if in_burst and self._names_open_file(self.path):
            self.kept += 1
            return "kept"
        self.kept = 0
        return self._rotate_or_reopen()

    def _rotate_or_reopen(self) -> str:
        """L{rotate_or_reopen}, now."""
        if not self._names_open_file(self.path):
            self.reopen()
            return "reopened"
        self._shift()
        self._replace()
        return "rotated"

    def _names_open_file(self, path: str) -> bool:
        """Whether C{path} names the file open (False if nothing is there)."""
        try:
            there = os.stat(path)
        except OSError:
            return False
        here = os.fstat(self._file.fileno())
        return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)

    def _shift(self) -> None:
        """
        Make room for a new C{name.1}, as LogFile does: C{name.N} becomes
        C{name.N+1}, those past C{maxRotatedFiles} are deleted.  First drops
        a C{name.1} that is the open file: a server killed while rotating
        (between the link and the rename of L{_replace}) left it, and it
        would go on growing as a copy of the live log.
        """
        if self._names_open_file(self.path + ".1"):
            os.remove(self.path + ".1")
        for number in reversed(self.listLogs()):
            older = f"{self.path}.{number}"
            if number >= self.maxRotatedFiles:
                os.remove(older)
            else:
                os.rename(older, f"{self.path}.{number + 1}")

    def _replace(self) -> None:
        """
        Put a new empty file at C{path} and write there, the open one becoming
        C{path.1} (or deleted when none are kept).  LogFile closes the full
        file, renames it and opens C{path}: for a moment C{tail -F} and other
        readers find no file, and if the open fails nothing more is logged.
        Here the new file is made under a hidden name and renamed over
        C{path} once the full one is also C{path.1}: hard-linked, or renamed
        first (a moment without C{path}) where links are refused.
        """
        fresh = os.path.join(self.directory, f".{self.name}.new")
        with contextlib.suppress(FileNotFoundError):
            os.remove(fresh)  # left by a crash in the middle of a rotation
        new = self._open(fresh)
        linked = False
        try:
            if self.maxRotatedFiles:
                try:
                    os.link(self.path, self.path + ".1")
                    linked = True
                except OSError:  # no hard links here (FAT, some mounts) or a policy
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
        self._use(new)


threadable.synchronize(RotatingLogFile)


def rotate_or_reopen(log_file: RotatingLogFile) -> str:
    """
    What SIGUSR1 does: rotate the log now, or reopen it if an external tool
    moved it away; nothing within a burst (signals less than
    L{SIGUSR1_INTERVAL} apart) that has rotated already.  Logs what was done
    (in the new file; in a burst, only the first signal left alone) and
    returns it: C{"rotated"}, C{"reopened"}, C{"kept"} or C{"failed"}.
    """
    try:
        action = log_file.rotate_or_reopen(burst_gap=SIGUSR1_INTERVAL)
    except OSError as e:
        log.warn(
            "Log file {path} not rotated: {error}",
            path=log_file.path,
            error=e.strerror or str(e),
        )
        return "failed"
    if action == "kept":
        if log_file.kept == 1:
            log.info(
                "Log file {path} kept on SIGUSR1: signals less than {interval:g} s "
                "apart are one burst, which rotates once; the rest of it is not logged",
                path=log_file.path,
                interval=SIGUSR1_INTERVAL,
            )
    else:
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


def twistd_user(twistd_options: Mapping[str, Any]) -> tuple[int, int] | None:
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
            owner=twistd_user(twistd_options),
        )
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SystemExit(f"weather: log file {path}: {reason}") from None
    application.setComponent(ILogObserver, make_observer(log_file))
    install_sigusr1(log_file, reactor)
    return log_file
