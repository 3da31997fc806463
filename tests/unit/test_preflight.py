"""
What makeService checks before twistd daemonizes: ports (with a fake bind),
the data directory's permissions, --journal-min-free against its file
system; each failure one line that names the option and what to change.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
import tempfile

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from weather.app.options import ConfigurationError
from weather.app.preflight import (
    Listener,
    check_data_dir_writable,
    check_listeners,
    check_min_free,
    size_floor,
    size_text,
    tcp_address,
)


def listener(option: str, description: str) -> Listener:
    return Listener(option, description, serverFromString(MemoryReactor(), description))


class FakeBind:
    """Binds what it is told is free; raises the error given for an address."""

    def __init__(self, errors: dict[tuple[str, int], Exception] | None = None) -> None:
        self.errors = errors or {}
        self.bound: list[tuple[str, int]] = []

    def __call__(self, interface: str, port: int) -> None:
        if (interface, port) in self.errors:
            raise self.errors[interface, port]
        self.bound.append((interface, port))


class ListenerTests(SynchronousTestCase):
    def refused(self, error: Exception, description: str = "tcp:8266") -> str:
        probe = FakeBind({tcp_address(listener("--port", description).endpoint): error})
        with self.assertRaises(ConfigurationError) as caught:
            check_listeners([listener("--port", description)], probe)
        message = str(caught.exception)
        self.assertTrue(message.startswith(f"--port {description}: "), message)
        self.assertNotIn("\n", message)
        return message

    def test_addresses(self) -> None:
        """TCP, TCP6 and TLS endpoints bind an address; others have none here."""
        self.assertEqual(tcp_address(listener("", "tcp:8266").endpoint), ("", 8266))
        self.assertEqual(
            tcp_address(listener("", "tcp6:9266:interface=\\:\\:1").endpoint),
            ("::1", 9266),
        )
        self.assertEqual(tcp_address(listener("", "unix:/run/w.sock").endpoint), None)

    def test_bothBound(self) -> None:
        probe = FakeBind()
        check_listeners(
            [
                listener("--port", "tcp:8266"),
                listener("--metrics-port", "tcp:9266:interface=127.0.0.1"),
                listener("--metrics-port", "unix:/run/w.sock"),
            ],
            probe,
        )
        self.assertEqual(probe.bound, [("", 8266), ("127.0.0.1", 9266)])

    def test_inUse(self) -> None:
        message = self.refused(OSError(errno.EADDRINUSE, "Address already in use"))
        self.assertIn("port 8266 is in use: stop what listens there", message)

    def test_noPermission(self) -> None:
        message = self.refused(OSError(errno.EACCES, "Permission denied"), "tcp:80")
        self.assertIn("ports below 1024 need root", message)

    def test_notThisMachine(self) -> None:
        message = self.refused(
            OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"),
            "tcp:8266:interface=192.0.2.1",
        )
        self.assertIn("192.0.2.1 is not an address of this machine", message)

    def test_notAnAddress(self) -> None:
        message = self.refused(
            socket.gaierror(-2, "Name or service not known"),
            "tcp:8266:interface=nowhere",
        )
        self.assertIn("'nowhere' is not an IP address", message)

    def test_portOutOfRange(self) -> None:
        message = self.refused(OverflowError("bind(): port must be 0-65535."), "tcp:99999")
        self.assertEqual(message, "--port tcp:99999: the port must be 0-65535")

    def test_otherError(self) -> None:
        message = self.refused(OSError(errno.ENOBUFS, "No buffer space available"))
        self.assertIn("(No buffer space available)", message)

    def test_samePort(self) -> None:
        """Both on one port (a wildcard takes every address): refused before binding."""
        for station, metrics in (
            ("tcp:8266", "tcp:8266:interface=127.0.0.1"),
            ("tcp:8266:interface=127.0.0.1", "tcp:8266:interface=127.0.0.1"),
            ("tcp6:8266", "tcp:8266:interface=127.0.0.1"),
        ):
            with self.assertRaises(ConfigurationError) as caught:
                check_listeners(
                    [listener("--port", station), listener("--metrics-port", metrics)],
                    FakeBind(),
                )
            self.assertEqual(
                str(caught.exception),
                f"--metrics-port {metrics}: the same port as --port {station}: give "
                "another",
            )

    def test_distinctAddressesOrAnyPort(self) -> None:
        check_listeners(
            [
                listener("--port", "tcp:8266:interface=127.0.0.1"),
                listener("--metrics-port", "tcp:8266:interface=127.0.0.2"),
            ],
            FakeBind(),
        )
        check_listeners(
            [listener("--port", "tcp:0"), listener("--metrics-port", "tcp:0")], FakeBind()
        )


class DataDirTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def test_writable(self) -> None:
        """Checked with a file made and removed: nothing is left behind."""
        check_data_dir_writable(os.path.join(self.directory, "data", "journal"))
        check_data_dir_writable(self.directory)
        self.assertEqual(os.listdir(self.directory), [])

    def assertRefused(self, user: tuple[int, int] | None, who: str) -> None:
        data_dir = os.path.join(self.directory, "data")
        with self.assertRaises(ConfigurationError) as caught:
            check_data_dir_writable(data_dir, user)
        self.assertEqual(
            str(caught.exception),
            f"--data-dir {data_dir}: cannot create files in {self.directory} as user "
            f"{who} (Permission denied): give a directory on a writable file system "
            f"that {who} can write to",
        )

    def test_notWritable(self) -> None:
        """
        Not writable by the user the server will run as: twistd's --uid,
        checked as that user (when root), else this process's.
        """
        os.chmod(self.directory, stat.S_IRWXU)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self.assertRefused((nobody.pw_uid, nobody.pw_gid), "nobody")
            self.assertEqual(os.geteuid(), 0)  # and back
            check_data_dir_writable(self.directory, None)
        else:
            os.chmod(self.directory, stat.S_IRUSR | stat.S_IXUSR)
            self.addCleanup(os.chmod, self.directory, stat.S_IRWXU)
            self.assertRefused(None, pwd.getpwuid(os.geteuid()).pw_name)

    def test_diskFullIsNoReason(self) -> None:
        """A full disk does not stop the start: the journal waits for room."""

        def full(**kwargs: object) -> tuple[int, str]:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(tempfile, "mkstemp", full)
        check_data_dir_writable(self.directory)

    def test_procfs(self) -> None:
        """/proc/1, say: a directory no one can create files in."""
        if not os.path.isdir("/proc/1"):
            self.skipTest("no /proc/1 here")
        with self.assertRaises(ConfigurationError) as caught:
            check_data_dir_writable("/proc/1")
        self.assertTrue(str(caught.exception).startswith("--data-dir /proc/1: cannot"))


class MinFreeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        stats = os.statvfs(os.path.dirname(self.directory))
        self.capacity = (stats.f_blocks - stats.f_bfree + stats.f_bavail) * stats.f_frsize

    def test_halfFits(self) -> None:
        check_min_free(self.directory, self.capacity // 2)
        check_min_free(self.directory, 32 << 20)

    def test_moreThanHalf(self) -> None:
        """
        Refused: accepting resumes only with twice --journal-min-free free,
        which this file system can never have.
        """
        with self.assertRaises(ConfigurationError) as caught:
            check_min_free(self.directory, 99999999 << 30)
        self.assertEqual(
            str(caught.exception),
            f"--journal-min-free 99999999G: more than half of the file system of "
            f"--data-dir {self.directory} ({size_floor(self.capacity)} in all), so "
            f"stations would be refused for good: give at most "
            f"{size_floor(self.capacity // 2)}, or a --data-dir on a larger disk",
        )
        self.assertRaises(
            ConfigurationError, check_min_free, self.directory, self.capacity // 2 + 1
        )

    def test_sizes(self) -> None:
        self.assertEqual(
            [size_text(n) for n in (32 << 20, 5 << 30, 1000, 0, 1536 << 10)],
            ["32M", "5G", "1000", "0", "1536K"],
        )
        self.assertEqual(
            [size_floor(n) for n in (103897 << 20, 3 << 20, 9000, (10 << 20) - 1)],
            ["101G", "3072K", "9000", "10239K"],
        )
