"""
Start-up, reload and shutdown failures of the real daemon (issue 15, points
3 and 8), loopback only:

  - each start-up mistake (bad port, port in use, unusable data directory,
    bad URL, absurd size, devices file nested too deeply or a FIFO) is one
    line naming the option, no traceback, a non-zero exit: under
    C{twistd -n} and daemonized;
  - SIGHUP while the devices file is a FIFO (or nested 5,000 deep) is one
    line, and a station is acknowledged after it;
  - SIGTERMs repeated while the server stops log one line, no traceback;
  - a burst of SIGUSR1 rotates the log once;
  - 1,100 idle connections to --metrics-port hold at most its limit of
    descriptors, /health still answers, a station is acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import signal
import socket
import stat
import sys
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.daemon import (
    LOOPBACK,
    Daemon,
    free_listening_port,
    run_twistd,
    twistd,
    wait_until,
)
from tests.support import journal_status, reference_devices_toml, reference_packet
from weather.ops.web import HTTP_CONNECTIONS
from weather.server.protocol import ACK
from weather.tools.simulate import send_packet

#: Nothing listens there: packets stay in the journal, waiting for InfluxDB.
NO_INFLUX = f"http://{LOOPBACK}:9"

#: Deeper than Python's recursion limit: tomllib's RecursionError, before.
NESTED_DEVICES = "[devices.1]\nvalues = " + "[" * 5000 + "]" * 5000 + "\n"


class StartupFailureTests(SynchronousTestCase):
    """Each mistake: one line, exit 1, no traceback, no daemon left behind."""

    def setUp(self) -> None:
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.data_dir = os.path.join(self.workdir, "data")

    def assertOneLine(self, *args: str, twistd_args: tuple[str, ...] = ()) -> None:
        """
        C{twistd weather ARGS}, under -n and daemonized: one line, starting
        C{weather: }, naming the option (the first of ARGS).
        """
        option = args[0]
        pidfile = os.path.join(self.workdir, "weather.pid")
        for mode in (
            ("-n", "--pidfile="),
            ("--pidfile", pidfile, "--logfile", os.path.join(self.workdir, "w.log")),
        ):
            result = run_twistd(self.workdir, *mode, *twistd_args, "weather", *args)
            output = (result.stdout + result.stderr).strip()
            self.assertEqual(result.returncode, 1, output)
            self.assertNotIn("Traceback", output)
            self.assertEqual(len(output.splitlines()), 1, output)
            self.assertTrue(output.startswith("weather: "), output)
            self.assertIn(option, output)
            self.assertFalse(os.path.exists(pidfile), "a daemon was left running")

    def args(self, option: str, value: str) -> tuple[str, ...]:
        """C{option value}, then what would start a server on loopback."""
        others = {
            "--port": f"tcp:0:interface={LOOPBACK}",
            "--data-dir": self.data_dir,
            "--influx-url": NO_INFLUX,
        }
        others.pop(option, None)
        return (option, value, *(text for pair in others.items() for text in pair))

    def hold_port(self) -> int:
        """A loopback port something else listens on."""
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind((LOOPBACK, 0))
        holder.listen()
        return holder.getsockname()[1]

    def test_portOutOfRange(self) -> None:
        self.assertOneLine("--port", "tcp:99999", "--data-dir", self.data_dir)

    def test_portInUse(self) -> None:
        port = self.hold_port()
        self.assertOneLine(
            "--port", f"tcp:{port}:interface={LOOPBACK}", "--data-dir", self.data_dir
        )

    def test_metricsPortInUse(self) -> None:
        self.assertOneLine(*self.args("--metrics-port", str(self.hold_port())))

    def test_dataDirNotWritable(self) -> None:
        """Not writable by the user the server runs as (twistd --uid, as root)."""
        parent = os.path.join(self.workdir, "private")
        os.makedirs(parent)
        self.data_dir = os.path.join(parent, "data")
        if os.geteuid() == 0:
            os.chmod(parent, stat.S_IRWXU)
            nobody = pwd.getpwnam("nobody")
            self.assertOneLine(
                *self.args("--data-dir", self.data_dir),
                twistd_args=("--uid", str(nobody.pw_uid), "--gid", str(nobody.pw_gid)),
            )
        else:
            os.chmod(parent, stat.S_IRUSR | stat.S_IXUSR)
            self.addCleanup(os.chmod, parent, stat.S_IRWXU)
            self.assertOneLine(*self.args("--data-dir", self.data_dir))

    def test_dataDirInProc(self) -> None:
        self.assertOneLine(*self.args("--data-dir", "/proc/1"))

    def test_influxUrl(self) -> None:
        self.assertOneLine(*self.args("--influx-url", "http://[::1"))

    def test_journalMinFreeAbsurd(self) -> None:
        self.assertOneLine(*self.args("--journal-min-free", "99999999G"))

    def test_devicesNestedDeep(self) -> None:
        path = os.path.join(self.workdir, "devices.toml")
        with open(path, "w") as f:
            f.write(NESTED_DEVICES)
        self.assertOneLine(*self.args("--devices", path))

    def test_devicesFifo(self) -> None:
        path = os.path.join(self.workdir, "devices.toml")
        os.mkfifo(path)
        self.assertOneLine(*self.args("--devices", path))


class RunningDaemonTests(SynchronousTestCase):
    """Signals and the HTTP endpoint of a running daemon."""

    def setUp(self) -> None:
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        self.devices = os.path.join(self.workdir, "devices.toml")
        with open(self.devices, "w") as f:
            f.write(reference_devices_toml(**{"1": "balcony"}))
        self.port = free_listening_port()

    def start(
        self, *args: str, command: list[str] | None = None, ready: Any = None
    ) -> Daemon:
        server = Daemon(
            [
                "--port",
                f"tcp:{self.port}:interface={LOOPBACK}",
                "--data-dir",
                self.data_dir,
                "--devices",
                self.devices,
                "--influx-url",
                NO_INFLUX,
                *args,
            ],
            self.workdir,
            command=command,
        )
        self.addCleanup(server.kill)
        server.wait_ready(ready, timeout=30)
        return server

    def upload(self) -> bytes:
        return send_packet(LOOPBACK, self.port, reference_packet(), timeout=10)

    def test_sighupWithFifoDoesNotFreeze(self) -> None:
        """
        SIGHUP with a FIFO (no writer) as the devices file: one line, the
        old profiles kept, and the server goes on taking packets.  So with
        a file nested 5,000 deep.
        """
        server = self.start()
        self.assertEqual(self.upload(), ACK)
        os.remove(self.devices)
        os.mkfifo(self.devices)
        server.signal(signal.SIGHUP)
        self.assertEqual(self.upload(), ACK)
        wait_until(
            lambda: "a FIFO, not a regular file" in server.log(), what="the FIFO refused"
        )
        os.remove(self.devices)
        with open(self.devices, "w") as f:
            f.write(NESTED_DEVICES)
        before = len(server.log_lines())
        server.signal(signal.SIGHUP)
        wait_until(lambda: "nested too deeply" in server.log(), what="the file refused")
        self.assertEqual(self.upload(), ACK)
        self.assertEqual(server.stop(), -signal.SIGTERM)
        log = server.log()
        self.assertNotIn("Traceback", log)
        refusals = [line for line in server.log_lines()[before:] if "SIGHUP" in line]
        self.assertEqual(len(refusals), 1, refusals)
        self.assertEqual(log.count("a FIFO, not a regular file"), 1)
        self.assertEqual(journal_status(self.data_dir).pending, 3)

    def test_repeatedSigtermQuiet(self) -> None:
        """
        SIGTERMs while the server stops (here waiting --shutdown-timeout for
        InfluxDB): one line, no ReactorNotRunning traceback each; the
        packet stays in the journal.
        """
        server = self.start("--shutdown-timeout", "3")
        self.assertEqual(self.upload(), ACK)
        wait_until(lambda: "InfluxDB write failed" in server.log(), what="a failed write")
        for _ in range(20):
            server.signal(signal.SIGTERM)
            time.sleep(0.02)
        server.process.wait(30)
        self.assertEqual(server.stop(), -signal.SIGTERM)
        log = server.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("ReactorNotRunning", log)
        self.assertEqual(log.count("Received SIGTERM"), 1)
        self.assertEqual(log.count("SIGTERM while stopping"), 1)
        self.assertEqual(journal_status(self.data_dir).pending, 1)

    def test_sigusr1BurstRotatesOnce(self) -> None:
        """
        200 SIGUSR1s 10 ms apart (2 s): one rotation, two lines; the history
        before it is in the one rotated file.
        """
        log_path = os.path.join(self.workdir, "server.log")
        command = [twistd(), "-n", "--pidfile=", "--logfile", log_path, "weather"]
        server = self.start(
            "--log-keep",
            "3",
            command=command,
            ready=lambda: "Listening for stations" in read(log_path),
        )
        for _ in range(200):
            server.signal(signal.SIGUSR1)
            time.sleep(0.01)
        self.assertEqual(self.upload(), ACK)
        self.assertEqual(server.stop(), -signal.SIGTERM)
        self.assertEqual(
            sorted(name for name in os.listdir(self.workdir) if "server.log" in name),
            ["server.log", "server.log.1"],
        )
        self.assertIn("Listening for stations", read(log_path + ".1"))
        lines = [line for line in read(log_path).splitlines() if "SIGUSR1" in line]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("rotated on SIGUSR1", lines[0])
        self.assertIn("kept on SIGUSR1", lines[1])

    def test_idleHttpConnectionsBounded(self) -> None:
        """
        1,100 idle connections to --metrics-port, under an open-files limit
        of 1,024: the server holds at most HTTP_CONNECTIONS of them, its
        descriptors stay few, /health answers, a station is acknowledged.
        Without the bound it ran out of descriptors, and stations were
        accepted and closed at once.
        """
        need = 1100 + 200
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < need:
            if hard != resource.RLIM_INFINITY and hard < need:
                self.skipTest(f"this test opens {need} sockets; the limit is {hard}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        metrics_port = free_listening_port()
        limited = [
            sys.executable,
            "-c",
            "import os, resource, sys;"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024));"
            "os.execv(sys.argv[1], sys.argv[1:])",
            twistd(),
            "-n",
            "--pidfile=",
            "weather",
        ]
        server = self.start("--metrics-port", str(metrics_port), command=limited)
        descriptors = len(os.listdir(f"/proc/{server.pid}/fd"))
        idle = []
        with contextlib.ExitStack() as stack:
            for _ in range(1100):
                connection = socket.create_connection((LOOPBACK, metrics_port), timeout=5)
                stack.callback(connection.close)
                idle.append(connection)
            wait_until(
                lambda: held(idle) <= HTTP_CONNECTIONS, what="the extra connections closed"
            )
            self.assertEqual(held(idle), HTTP_CONNECTIONS)
            self.assertLessEqual(
                len(os.listdir(f"/proc/{server.pid}/fd")),
                descriptors + 2 * HTTP_CONNECTIONS,
            )
            self.assertEqual(self.upload(), ACK)
            url = f"http://{LOOPBACK}:{metrics_port}/health"
            with urllib.request.urlopen(url, timeout=10) as response:
                self.assertEqual(response.status, 200)
        self.assertEqual(server.stop(), -signal.SIGTERM)
        log = server.log()
        self.assertNotIn("Traceback", log)
        self.assertEqual(log.count("connections to the monitoring endpoint"), 1)


def held(connections: list[socket.socket]) -> int:
    """How many of C{connections} the server has not closed."""
    count = 0
    for connection in connections:
        connection.setblocking(False)
        try:
            count += connection.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
