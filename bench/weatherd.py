"""
`twistd -n weather` as the benchmarks run it: a subprocess of the project's
Python on loopback ports, its output in a log file, its environment without
WEATHER_* variables, ready once a probe (its /metrics) answers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable


def twistd() -> str:
    """The twistd next to this Python (the project's virtualenv), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "twistd")
    found = here if os.path.exists(here) else shutil.which("twistd")
    if not found:
        raise SystemExit("twistd not found: run with the project's virtualenv's python")
    return found


def die_with_parent() -> None:
    """In a child: SIGTERM it when the benchmark dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(process: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM (after SIGCONT, in case it was stopped), then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class WeatherDaemon:
    """
    `twistd -n weather ARGUMENTS` started in C{workdir}, logging to
    C{log_path}; returns once C{ready()} stops raising OSError.

    @raise RuntimeError: it exited, or was not ready within C{timeout}
        seconds (with the end of its log).
    """

    def __init__(
        self,
        arguments: list[str],
        workdir: str,
        log_path: str,
        ready: Callable[[], object],
        timeout: float = 60.0,
    ) -> None:
        self.log_path = log_path
        environ = {k: v for k, v in os.environ.items() if not k.startswith("WEATHER_")}
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "weather", *arguments],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=environ,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited:\n{self.log_tail()}")
            try:
                ready()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"twistd did not start:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_lines(self) -> list[str]:
        with open(self.log_path, errors="replace") as f:
            return f.readlines()

    def log_tail(self, lines: int = 20) -> str:
        return "".join(self.log_lines()[-lines:])

    def stop(self) -> None:
        stop_process(self.process, 60)
        self.log.close()
