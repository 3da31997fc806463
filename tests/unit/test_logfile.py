"""
The daemon's log file: rotation by size and on SIGUSR1, external logrotate
(both modes), and what L{attach} gives twistd.  The lines: test_logformat.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pwd
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import Application
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.support import option_defaults, unavailable
from weather.app.logfile import (
    FILE_MODE,
    SIGUSR1_INTERVAL,
    RotatingLogFile,
    attach,
    install_sigusr1,
    rotate_or_reopen,
)
from weather.app.logformat import (
    text_observer,
)


def rotation(**overrides: Any) -> dict[str, Any]:
    """L{RotatingLogFile}'s max_bytes and keep: the options' defaults, or C{overrides}."""
    defaults = option_defaults()
    return {"max_bytes": defaults.log_max_bytes, "keep": defaults.log_keep, **overrides}


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class FakeReactor:
    """Records what is to be called from a thread instead of calling it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append((f, *args))


class LogFileTestMixin:
    """
    A temporary directory and log files in it, closed after the test; their
    clock only moves when told to.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "weather.log")
        self.clock = Clock()

    def open(self, **kwargs: Any) -> RotatingLogFile:
        log_file = RotatingLogFile(
            "weather.log", self.directory, seconds=self.clock.seconds, **rotation(**kwargs)
        )
        self.addCleanup(lambda: log_file.closed or log_file.close())
        return log_file

    def rotated(self) -> list[str]:
        return sorted(
            name for name in os.listdir(self.directory) if name.startswith("weather.log.")
        )


class RotatingLogFileTests(LogFileTestMixin, SynchronousTestCase):
    def test_appends(self) -> None:
        """An existing log is appended to; text is written as UTF-8 at once."""
        with open(self.path, "wb") as f:
            f.write(b"old\n")
        log_file = self.open()
        log_file.write("new \u00e9\n")
        self.assertEqual(read(self.path), "old\nnew \u00e9\n".encode())
        self.assertEqual(log_file.size, 11)  # bytes, not characters

    def test_sizeRotation(self) -> None:
        """Past max_bytes the next write goes to a new file; name.1 is the newest."""
        log_file = self.open(max_bytes=20, keep=5)
        for n in range(5):
            log_file.write(f"line {n} of ten..\n")  # 18 bytes
        self.assertEqual(self.rotated(), ["weather.log.1", "weather.log.2"])
        self.assertEqual(read(self.path + ".2"), b"line 0 of ten..\nline 1 of ten..\n")
        self.assertEqual(read(self.path + ".1"), b"line 2 of ten..\nline 3 of ten..\n")
        self.assertEqual(read(self.path), b"line 4 of ten..\n")

    def test_failedRotationSaysSoOnce(self) -> None:
        """
        A rotation that fails says so in the file itself, and is tried again
        only once the file has grown by max_bytes more: not on every line.
        """
        os.makedirs(os.path.join(self.path + ".1", "in-the-way"))
        log_file = self.open(max_bytes=100, keep=1)
        for n in range(20):
            log_file.write(f"line {n:02} ....\n")  # 14 bytes: 280 in all
        text = read(self.path).decode()
        self.assertEqual(
            text.count("cannot rotate"), 2, text
        )  # per 100 bytes, not per line
        self.assertIn(f"cannot rotate {self.path} (", text)
        self.assertIn("line 19 ....", text)
        os.rmdir(os.path.join(self.path + ".1", "in-the-way"))
        os.rmdir(self.path + ".1")
        for _ in range(10):
            log_file.write("more .......\n")
        self.assertEqual(self.rotated(), ["weather.log.1"])

    def test_strayNumberedFileIgnored(self) -> None:
        """weather.log.01 is not ours: it neither blocks rotation nor is deleted."""
        with open(self.path + ".01", "w") as f:
            f.write("someone else's\n")
        log_file = self.open(max_bytes=20, keep=1)
        for n in range(3):
            log_file.write(f"line {n} of ten..\n")
        self.assertEqual(self.rotated(), ["weather.log.01", "weather.log.1"])

    def test_retention(self) -> None:
        """Only keep rotated files remain; older ones (a bigger keep's) are deleted."""
        with open(self.path + ".7", "wb") as f:
            f.write(b"from when keep was 10\n")
        log_file = self.open(max_bytes=10, keep=2)
        for n in range(6):
            log_file.write(f"line {n}...\n")  # 11 bytes: a rotation per line
        self.assertEqual(self.rotated(), ["weather.log.1", "weather.log.2"])
        self.assertEqual(read(self.path + ".2"), b"line 3...\n")
        self.assertEqual(read(self.path + ".1"), b"line 4...\n")
        self.assertEqual(read(self.path), b"line 5...\n")

    def test_otherFilesLeftAlone(self) -> None:
        """Compressed or unrelated files next to the log are not rotated."""
        for name in ("weather.log.1.gz", "weather.log.old", "weather.log.0"):
            with open(os.path.join(self.directory, name), "wb") as f:
                f.write(b"x")
        log_file = self.open(max_bytes=1, keep=1)
        log_file.write("a\n")
        log_file.write("b\n")
        log_file.write("c\n")
        self.assertEqual(
            self.rotated(),
            ["weather.log.0", "weather.log.1", "weather.log.1.gz", "weather.log.old"],
        )
        self.assertEqual(read(self.path + ".1"), b"b\n")

    def test_noSizeRotation(self) -> None:
        """max_bytes 0 never rotates, whatever the size."""
        log_file = self.open(max_bytes=0)
        for _ in range(100):
            log_file.write("x" * 99 + "\n")
        self.assertEqual(self.rotated(), [])
        self.assertEqual(os.path.getsize(self.path), 10_000)

    def test_keepNone(self) -> None:
        """keep 0: a full log is deleted and started afresh."""
        with open(self.path + ".1", "wb") as f:
            f.write(b"from when keep was 1\n")
        log_file = self.open(max_bytes=10, keep=0)
        for n in range(3):
            log_file.write(f"line {n}...\n")
        self.assertEqual(self.rotated(), [])
        self.assertEqual(read(self.path), b"line 2...\n")

    def test_badLimits(self) -> None:
        self.assertRaises(ValueError, self.open, max_bytes=-1)
        self.assertRaises(ValueError, self.open, keep=-1)

    def test_modes(self) -> None:
        """
        New files are 0640 whatever the umask (twistd sets 0077 when
        daemonizing); an existing file keeps its mode.
        """
        old_umask = os.umask(0o077)
        self.addCleanup(os.umask, old_umask)
        log_file = self.open(max_bytes=1)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, FILE_MODE)
        log_file.write("a\n")
        log_file.write("b\n")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, FILE_MODE)
        self.assertEqual(os.stat(self.path + ".1").st_mode & 0o777, FILE_MODE)
        log_file.close()
        os.chmod(self.path, 0o600)
        self.open().write("c\n")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)

    def test_owner(self) -> None:
        """Files created as root go to the given owner; existing ones stay."""
        if os.geteuid() != 0:
            unavailable("changing a file's owner needs root")
        with open(self.path + "-existing", "wb"):
            pass
        existing = RotatingLogFile(
            "weather.log-existing", self.directory, owner=(65534, 1), **rotation()
        )
        self.addCleanup(existing.close)
        self.assertEqual(os.stat(existing.path).st_uid, 0)
        log_file = self.open(max_bytes=1, owner=(65534, 1))
        log_file.write("a\n")
        log_file.write("b\n")
        for path in (self.path, self.path + ".1"):
            self.assertEqual(os.stat(path)[4:6], (65534, 1))
        other = RotatingLogFile("gid-only.log", self.directory, owner=(-1, 1), **rotation())
        self.addCleanup(other.close)
        self.assertEqual(os.stat(other.path)[4:6], (0, 1))

    def test_copytruncate(self) -> None:
        """
        After an external truncate the next line starts the file: no NUL
        bytes where the old offset was, and the size counts from there.
        """
        log_file = self.open(max_bytes=100)
        log_file.write("a line written before logrotate copied the file\n")
        os.truncate(self.path, 0)
        log_file.write("after\n")
        self.assertEqual(read(self.path), b"after\n")
        log_file.write("x" * 60 + "\n")
        self.assertEqual(self.rotated(), [])
        self.assertNotIn(b"\0", read(self.path))

    def test_unencodable(self) -> None:
        """Lone surrogates (undecodable bytes) are escaped, not an error."""
        log_file = self.open()
        log_file.write("peer sent \udcff\n")
        log_file.write(b"raw bytes \xff\n")
        self.assertEqual(read(self.path), b"peer sent \\udcff\nraw bytes \xff\n")

    def test_threads(self) -> None:
        """Writes and rotations from several threads lose and mix no lines."""
        log_file = self.open(max_bytes=500, keep=1000)

        def write(name: str) -> None:
            for n in range(300):
                log_file.write(f"{name} {n:04d}\n")

        threads = [threading.Thread(target=write, args=(name,)) for name in "abc"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lines = []
        for name in [*self.rotated(), "weather.log"]:
            lines += read(os.path.join(self.directory, name)).decode().splitlines()
        expected = sorted(f"{name} {n:04d}" for name in "abc" for n in range(300))
        self.assertEqual(sorted(lines), expected)


class RotateOrReopenTests(LogFileTestMixin, SynchronousTestCase):
    """SIGUSR1's action: rotate, or reopen after an external logrotate."""

    def setUp(self) -> None:
        super().setUp()
        self.log_file = self.open(max_bytes=0, keep=3)
        observer = text_observer(self.log_file)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def test_rotates(self) -> None:
        """The file at the path is the open one: it becomes name.1."""
        self.log_file.write("before\n")
        self.assertEqual(rotate_or_reopen(self.log_file), "rotated")
        self.log_file.write("after\n")
        self.assertEqual(read(self.path + ".1"), b"before\n")
        lines = read(self.path).decode().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertRegex(lines[0], r"Log file .*weather\.log rotated on SIGUSR1$")
        self.assertEqual(lines[1], "after")

    def test_rotatesKeepingKeep(self) -> None:
        for n in range(5):
            self.log_file.write(f"{n}\n")
            rotate_or_reopen(self.log_file)
            self.clock.advance(SIGUSR1_INTERVAL)
        self.assertEqual(
            self.rotated(), ["weather.log.1", "weather.log.2", "weather.log.3"]
        )
        self.assertTrue(read(self.path + ".3").endswith(b"2\n"))

    def test_burstRotatesOnce(self) -> None:
        """
        A burst of SIGUSR1s (each less than a second after the one before)
        rotates once however long it lasts, not pushing the history out of
        the kept files with files of a line each, and logs two lines; after
        a second without one, a signal rotates again.
        """
        self.log_file.write("history\n")
        actions = []
        for _ in range(40):  # 20 s of a signal every half second
            actions.append(rotate_or_reopen(self.log_file))
            self.clock.advance(SIGUSR1_INTERVAL / 2)
        self.assertEqual(actions, ["rotated"] + ["kept"] * 39)
        self.assertEqual(self.rotated(), ["weather.log.1"])
        self.assertEqual(read(self.path + ".1"), b"history\n")
        lines = read(self.path).decode().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertRegex(lines[0], r"Log file .*weather\.log rotated on SIGUSR1$")
        self.assertRegex(
            lines[1],
            r"Log file .*weather\.log kept on SIGUSR1: signals less than 1 s apart are "
            r"one burst, which rotates once; the rest of it is not logged$",
        )
        self.clock.advance(SIGUSR1_INTERVAL / 2)
        self.assertEqual(rotate_or_reopen(self.log_file), "rotated")
        self.assertEqual(self.rotated(), ["weather.log.1", "weather.log.2"])

    def test_sizeRotationIsNoSignal(self) -> None:
        """A rotation by size does not make the next SIGUSR1 part of a burst."""
        self.log_file.rotate()
        self.assertEqual(rotate_or_reopen(self.log_file), "rotated")

    def test_reopenNotHeldBack(self) -> None:
        """
        A log moved away just after a rotation is reopened all the same:
        logrotate's signal is never ignored.
        """
        self.assertEqual(rotate_or_reopen(self.log_file), "rotated")
        os.rename(self.path, self.path + "-moved")
        self.assertEqual(rotate_or_reopen(self.log_file), "reopened")
        self.log_file.write("after\n")
        self.assertTrue(read(self.path).endswith(b"after\n"))

    def test_pathNeverMissing(self) -> None:
        """
        While rotating, every rename and removal leaves a file at the path
        (readers and C{tail -F} never find it gone), and the lines before and
        after land in name.1 and name.
        """
        self.log_file.write("before\n")
        missing = []

        def check(real: Callable[..., None]) -> Callable[..., None]:
            def call(*args: Any) -> None:
                real(*args)
                if not os.path.exists(self.path):
                    missing.append((real.__name__, args))

            return call

        self.patch(os, "rename", check(os.rename))
        self.patch(os, "remove", check(os.remove))
        self.patch(os, "link", check(os.link))
        for _ in range(4):
            self.assertEqual(rotate_or_reopen(self.log_file), "rotated")
            self.clock.advance(SIGUSR1_INTERVAL)
        self.log_file.write("after\n")
        self.assertEqual(missing, [])
        self.assertTrue(read(self.path).endswith(b"after\n"))
        self.assertNotEqual(os.stat(self.path).st_ino, os.stat(self.path + ".1").st_ino)
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            ["weather.log", "weather.log.1", "weather.log.2", "weather.log.3"],
        )

    def test_noHardLinks(self) -> None:
        """A file system without hard links: the open file is renamed instead."""

        def refuse(source: str, target: str) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted", source)

        self.patch(os, "link", refuse)
        self.log_file.write("before\n")
        self.assertEqual(rotate_or_reopen(self.log_file), "rotated")
        self.log_file.write("after\n")
        self.assertEqual(read(self.path + ".1"), b"before\n")
        self.assertTrue(read(self.path).endswith(b"after\n"))
        self.assertEqual(self.rotated(), ["weather.log.1"])

    def test_failureAfterLink(self) -> None:
        """
        The new file cannot be put in place after name.1 was linked: name.1
        goes again (else it would grow with the open file) and nothing is left
        behind; the open file stays in use.
        """

        def refuse(source: str, target: str) -> None:
            raise OSError(errno.EIO, "Input/output error", source)

        self.log_file.write("before\n")
        self.patch(os, "rename", refuse)
        self.assertEqual(rotate_or_reopen(self.log_file), "failed")
        self.log_file.write("after\n")
        self.assertEqual(sorted(os.listdir(self.directory)), ["weather.log"])
        lines = read(self.path).decode().splitlines()
        self.assertEqual(lines[0], "before")
        self.assertRegex(lines[1], r"not rotated: ")
        self.assertEqual(lines[2], "after")

    def test_killedBetweenLinkAndRename(self) -> None:
        """
        A server killed after linking name.1 and before renaming the new file:
        at the next rotation name.1 is not kept as a second name of the live
        file; its lines stay in the file rotated now.
        """
        self.log_file.write("before\n")
        os.link(self.path, self.path + ".1")
        self.log_file.write("after the kill\n")
        self.assertEqual(rotate_or_reopen(self.log_file), "rotated")
        self.log_file.write("new\n")
        self.assertEqual(read(self.path + ".1"), b"before\nafter the kill\n")
        self.assertEqual(self.rotated(), ["weather.log.1"])
        self.assertTrue(read(self.path).endswith(b"new\n"))

    def test_newFileNotFollowed(self) -> None:
        """
        A link put at the hidden name between clearing it and opening it is
        not written through: the rotation fails, the target is untouched.
        """
        target = os.path.join(self.directory, "elsewhere")
        with open(target, "wb") as f:
            f.write(b"untouched\n")
        real_remove = os.remove

        def remove_then_plant(path: str) -> None:
            real_remove(path)
            if path.endswith(".weather.log.new"):
                os.symlink(target, path)

        with open(os.path.join(self.directory, ".weather.log.new"), "wb"):
            pass
        self.log_file.write("before\n")
        self.patch(os, "remove", remove_then_plant)
        self.assertEqual(rotate_or_reopen(self.log_file), "failed")
        self.assertEqual(read(target), b"untouched\n")
        self.assertTrue(read(self.path).startswith(b"before\n"))

    def test_leftoverNewFile(self) -> None:
        """A hidden new file left by a crash mid-rotation is replaced."""
        with open(os.path.join(self.directory, ".weather.log.new"), "wb") as f:
            f.write(b"stale\n")
        self.log_file.write("before\n")
        self.assertEqual(rotate_or_reopen(self.log_file), "rotated")
        self.assertNotIn(b"stale", read(self.path))
        self.assertEqual(
            sorted(os.listdir(self.directory)), ["weather.log", "weather.log.1"]
        )

    def test_reopensMoved(self) -> None:
        """
        Moved away (logrotate without copytruncate): a new file is opened at
        the path and later lines go there; the moved file is left as it was.
        """
        self.log_file.write("before\n")
        moved = self.path + "-20261121"
        os.rename(self.path, moved)
        self.assertEqual(rotate_or_reopen(self.log_file), "reopened")
        self.log_file.write("after\n")
        self.assertEqual(read(moved), b"before\n")
        lines = read(self.path).decode().splitlines()
        self.assertRegex(lines[0], r"Log file .*weather\.log reopened on SIGUSR1$")
        self.assertEqual(lines[1:], ["after"])
        self.assertEqual(self.rotated(), [])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, FILE_MODE)

    def test_reopensCreatedByLogrotate(self) -> None:
        """logrotate's C{create} made the new file: it is used, its mode kept."""
        os.rename(self.path, self.path + ".1")
        with open(self.path, "wb"):
            pass
        os.chmod(self.path, 0o644)
        self.assertEqual(rotate_or_reopen(self.log_file), "reopened")
        self.log_file.write("after\n")
        self.assertTrue(read(self.path).endswith(b"after\n"))
        self.assertEqual(read(self.path + ".1"), b"")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o644)

    def test_reopensDeleted(self) -> None:
        os.remove(self.path)
        self.assertEqual(rotate_or_reopen(self.log_file), "reopened")
        self.log_file.write("after\n")
        self.assertTrue(read(self.path).endswith(b"after\n"))

    def test_sizeRotationAfterMove(self) -> None:
        """Rotation by size of a file moved away reopens: it renames nobody's file."""
        self.log_file.rotateLength = 5
        self.log_file.write("before\n")
        os.rename(self.path, self.path + ".moved")
        with open(self.path, "wb") as f:
            f.write(b"someone else's\n")
        self.log_file.write("after\n")
        self.assertEqual(read(self.path), b"someone else's\nafter\n")
        self.assertEqual(read(self.path + ".moved"), b"before\n")
        self.assertEqual(self.rotated(), ["weather.log.moved"])

    def test_failure(self) -> None:
        """It cannot rotate: a warning, and the open file stays in use."""
        os.mkdir(self.path + ".3")
        with open(os.path.join(self.path + ".3", "x"), "wb"):
            pass
        self.log_file.write("before\n")
        self.assertEqual(rotate_or_reopen(self.log_file), "failed")
        self.log_file.write("after\n")
        lines = read(self.path).decode().splitlines()
        self.assertEqual(lines[0], "before")
        self.assertRegex(
            lines[1], r"\[weather\.app\.logfile#warn\] Log file .* not rotated: "
        )
        self.assertEqual(lines[2], "after")


class SignalTests(LogFileTestMixin, SynchronousTestCase):
    def test_sigusr1(self) -> None:
        """SIGUSR1 schedules rotate_or_reopen in the reactor thread, nothing more."""
        log_file = self.open()
        reactor = FakeReactor()
        previous = install_sigusr1(log_file, reactor)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
        self.assertEqual(reactor.calls, [(rotate_or_reopen, log_file)])
        self.assertEqual(self.rotated(), [])


class AttachTests(LogFileTestMixin, SynchronousTestCase):
    """attach(): the application's log observer from twistd's options."""

    def setUp(self) -> None:
        super().setUp()
        self.application = Application("weather")
        self.reactor = FakeReactor()
        self.previous_handler = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, self.previous_handler)

    def attach(self, json: bool = False, **options: Any) -> RotatingLogFile | None:
        twistd_options = {"logfile": None, "logger": None, "syslog": 0, "nodaemon": 0}
        twistd_options.update(options)
        log_file = attach(
            self.application,
            twistd_options,
            max_bytes=100,
            keep=2,
            json=json,
            reactor=self.reactor,
        )
        if log_file is not None:
            self.addCleanup(log_file.close)
        return log_file

    def emit(self, message: str) -> None:
        observer = self.application.getComponent(ILogObserver)
        self.assertIsNotNone(observer)
        Logger("weather.test", observer=observer).info(message)

    def test_file(self) -> None:
        """--logfile: that file, rotating, SIGUSR1 installed."""
        log_file = self.attach(logfile=self.path)
        assert log_file is not None
        self.assertIsInstance(log_file, RotatingLogFile)
        self.assertEqual(
            (log_file.path, log_file.rotateLength, log_file.maxRotatedFiles),
            (self.path, 100, 2),
        )
        self.emit("hello")
        self.assertRegex(read(self.path).decode(), r"^\S+ \[weather\.test#info\] hello\n$")
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        self.assertEqual(self.reactor.calls, [(rotate_or_reopen, log_file)])

    def test_json(self) -> None:
        self.attach(json=True, logfile=self.path)
        self.emit("hello")
        self.assertEqual(json.loads(read(self.path))["message"], "hello")

    def test_relative(self) -> None:
        """A relative --logfile is made absolute now: twistd changes directory later."""
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self.directory)
        log_file = self.attach(logfile="relative.log")
        assert log_file is not None
        os.chdir(cwd)
        self.assertEqual(log_file.path, os.path.join(self.directory, "relative.log"))
        self.emit("there")
        self.assertIn(b"there", read(os.path.join(self.directory, "relative.log")))

    def test_defaultFile(self) -> None:
        """A daemon without --logfile: twistd.log, like twistd."""
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self.directory)
        log_file = self.attach()
        assert log_file is not None
        self.assertEqual(log_file.path, os.path.join(self.directory, "twistd.log"))

    def test_stdout(self) -> None:
        """--logfile - (or --nodaemon alone): stdout, no file, no signal handler."""
        for options in ({"logfile": "-", "nodaemon": 1}, {"nodaemon": 1}, {"debug": 1}):
            for as_json in (False, True):
                out = io.StringIO()
                self.patch(sys, "stdout", out)
                self.assertIsNone(self.attach(json=as_json, **options))
                self.emit("to stdout")
                text = out.getvalue()
                if as_json:
                    self.assertEqual(json.loads(text)["message"], "to stdout")
                else:
                    self.assertTrue(text.endswith(" [weather.test#info] to stdout\n"))
        self.assertEqual(os.listdir(self.directory), [])
        self.assertEqual(signal.getsignal(signal.SIGUSR1), self.previous_handler)

    def test_daemonToStdout(self) -> None:
        """A daemon's stdout is /dev/null: refused, as twistd does."""
        self.assertRaises(SystemExit, self.attach, logfile="-")

    def test_theirChoice(self) -> None:
        """--logger or --syslog: nothing is done."""
        self.assertIsNone(self.attach(logger="mymodule.observer", logfile=self.path))
        self.assertIsNone(self.attach(syslog=1, logfile=self.path))
        self.assertIsNone(self.application.getComponent(ILogObserver))
        self.assertEqual(os.listdir(self.directory), [])

    def test_cannotOpen(self) -> None:
        """A log file that cannot be opened stops twistd with one line."""
        path = os.path.join(self.directory, "missing", "weather.log")
        error = self.assertRaises(SystemExit, self.attach, logfile=path)
        self.assertEqual(str(error), f"weather: log file {path}: No such file or directory")
        self.assertIsNone(self.application.getComponent(ILogObserver))

    def test_badKeep(self) -> None:
        error = self.assertRaises(
            SystemExit,
            attach,
            self.application,
            {"logfile": self.path},
            max_bytes=0,
            keep=-1,
            json=False,
            reactor=self.reactor,
        )
        self.assertIn("0 or more", str(error))

    def test_owner(self) -> None:
        """--uid and --gid (or the uid's group) own the files created as root."""
        if os.geteuid() != 0:
            unavailable("changing a file's owner needs root")
        self.attach(logfile=self.path, uid=65534, gid=1)
        self.assertEqual(os.stat(self.path)[4:6], (65534, 1))
        other = os.path.join(self.directory, "other.log")
        self.attach(logfile=other, uid=0)
        self.assertEqual(os.stat(other)[4:6], (0, pwd.getpwuid(0).pw_gid))
