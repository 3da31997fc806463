"""
The one launcher of server processes for integration tests and benchmarks:
C{twistd -n weather ...} (or another command line, such as
systemd-socket-activate's) in a work directory of its own, its output in a log
file, its environment without C{WEATHER_*} variables, killed by the kernel
should the test or benchmark die, ready once a probe says so, stopped with
SIGTERM (SIGKILL if that does not do).  L{run_twistd} runs a twistd that
daemonizes (or only prints) and returns.

Blocking (subprocess, sleeps): the benchmarks run no reactor.  A trial test
that must keep its reactor turning while the server starts waits with
L{Daemon.when_ready}.  The benchmarks import this from the project's root.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from weather.tools.localinflux import die_with_parent

LOOPBACK = "127.0.0.1"
#: What the server logs once it takes connections.
LISTENING = "Listening for stations on"


def twistd() -> str:
    """The twistd next to this Python (the project's virtualenv), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "twistd")
    found = here if os.path.exists(here) else shutil.which("twistd")
    if not found:
        raise RuntimeError("twistd not found: run with the project's virtualenv's python")
    return found


def environment(home: str) -> dict[str, str]:
    """
    This process's environment for a server: no C{WEATHER_*} settings, and
    HOME (without XDG_STATE_HOME) in C{home}, so that a forgotten --data-dir
    is not the real home's.
    """
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("WEATHER_") and name != "XDG_STATE_HOME"
    }
    environ["HOME"] = home
    return environ


def run_twistd(
    workdir: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """C{twistd ARGS} in C{workdir} to the end (a daemonizing twistd returns at once)."""
    return subprocess.run(
        [twistd(), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(workdir),
    )


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (after SIGCONT, in case it was stopped), then SIGKILL; its return code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_until(
    predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll C{predicate} (blocking) until it holds; AssertionError after C{timeout} s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


def listening(port: int, host: str = LOOPBACK) -> bool:
    """Whether something takes TCP connections on C{host}:C{port}."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill(pid: int) -> None:
    """SIGKILL C{pid} if it is still there (a daemonized twistd's cleanup)."""
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def free_listening_port() -> int:
    """
    A free loopback port below the ephemeral range.  A server that is down
    while stations keep connecting to its port must not have that port picked
    as a client's ephemeral port (a TCP self-connect would hold it).
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


class Daemon:
    """
    C{twistd -n --pidfile= weather ARGUMENTS} (or C{command}) started in
    C{workdir}, its output in C{log_path}, its environment L{environment}'s
    unless C{environ} is given.  Nothing waits here: see L{wait_ready},
    L{when_ready}.
    """

    def __init__(
        self,
        arguments: Sequence[str],
        workdir: str,
        log_path: str | None = None,
        command: Sequence[str] | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        if command is None:
            command = [twistd(), "-n", "--pidfile=", "weather"]
        self.log_path = log_path or os.path.join(workdir, "weather.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(
            [*command, *arguments],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment(workdir) if environ is None else environ,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """As L{subprocess.Popen}'s: -N if signal N ended it."""
        return self.process.poll()

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_lines(self) -> list[str]:
        return self.log().splitlines(keepends=True)

    def log_tail(self, lines: int = 30) -> str:
        return "".join(self.log_lines()[-lines:])

    def is_ready(self, ready: Callable[[], object] | None = None) -> bool:
        """
        Whether C{ready()} holds (without raising OSError); by default,
        whether the server logged that it listens.

        @raise RuntimeError: the process has exited (with the end of its log).
        """
        if not self.running:
            raise RuntimeError(
                f"{os.path.basename(self.process.args[0])} exited with "
                f"{self.returncode}:\n{self.log_tail()}"
            )
        try:
            return bool(ready()) if ready is not None else LISTENING in self.log()
        except OSError:
            return False

    def wait_ready(
        self, ready: Callable[[], object] | None = None, timeout: float = 60.0
    ) -> None:
        """
        Block until L{is_ready}.

        @raise RuntimeError: it exited, or was not ready within C{timeout}
            seconds (with the end of its log).
        """
        deadline = time.monotonic() + timeout
        while not self.is_ready(ready):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    @inlineCallbacks
    def when_ready(
        self, reactor: Any, ready: Callable[[], object] | None = None, timeout: float = 60.0
    ) -> Any:
        """L{wait_ready}, on a reactor that keeps running meanwhile: a Deferred."""
        deadline = time.monotonic() + timeout
        while not self.is_ready(ready):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within {timeout} s:\n{self.log_tail()}")
            yield deferLater(reactor, 0.05, lambda: None)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """L{stop_process}: its return code (-SIGTERM if twistd ended on it)."""
        try:
            return stop_process(self.process, timeout)
        finally:
            self._log.close()

    def kill(self) -> int:
        """SIGKILL, as a crash would; its return code."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process.wait()
        self._log.close()
        return self.process.returncode
