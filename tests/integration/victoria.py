"""
The integration tests' access to a real VictoriaMetrics (Debian's
C{victoria-metrics}): a private single-node server on 127.0.0.1 with its own
temporary data directory, and the rule that decides whether a test may run
without one.

Everything here blocks (subprocess, urllib): it is for set-up and checks,
never for the reactor.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from tests.integration.daemon import free_listening_port, stop_process
from tests.support import unavailable
from weather.tools.localinflux import die_with_parent

LOOPBACK = "127.0.0.1"
#: Deduplication at VictoriaMetrics' timestamp resolution: of the samples of
#: one series within one millisecond, one is kept.  A replayed point has the
#: same series and timestamp as the first copy, so it is dropped; distinct
#: readings are seconds apart, so none is.
DEDUP_INTERVAL = "1ms"

#: (timestamp in ms, value) samples of one series, by time.
Samples = list[tuple[int, float]]


def find_victoria_metrics() -> str | None:
    """The C{victoria-metrics} binary, or None; C{$VICTORIA_METRICS} wins."""
    explicit = os.environ.get("VICTORIA_METRICS")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("victoria-metrics") or (
        "/usr/bin/victoria-metrics"
        if os.access("/usr/bin/victoria-metrics", os.X_OK)
        else None
    )


def require_victoria_metrics(testcase: object = None) -> str:
    """Its path; else skip the test (fail it under C{CI=true})."""
    path = find_victoria_metrics()
    if path is not None:
        return path
    who = getattr(testcase, "__name__", None) or type(testcase).__name__
    unavailable(
        f"{who}: victoria-metrics is not installed; install it with "
        "'apt-get install victoria-metrics' or set $VICTORIA_METRICS"
    )


def start_victoria_metrics(
    testcase: unittest.TestCase, *flags: str, **kwargs
) -> VictoriaServer:
    """A private VictoriaMetrics for one test, stopped and removed after it.

    C{flags} are extra command-line flags; C{kwargs} go to L{VictoriaServer}.
    """
    server = VictoriaServer(require_victoria_metrics(testcase), *flags, **kwargs)
    testcase.addCleanup(server.stop)
    server.start()
    return server


class VictoriaServer:
    """
    C{victoria-metrics} on a free 127.0.0.1 port with a temporary
    C{-storageDataPath}, deduplicating unless told not to, with basic
    authentication when given a user name and password.
    """

    def __init__(
        self,
        binary: str,
        *flags: str,
        dedup: bool = True,
        username: str | None = None,
        password: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.binary = binary
        self.flags = flags
        self.dedup = dedup
        self.credentials = (username, password or "") if username else None
        self.startup_timeout = startup_timeout
        self.base_dir: str | None = None
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. C{http://127.0.0.1:41234}; C{/write} is under it."""
        if self.port is None:
            raise RuntimeError("victoria-metrics has not been started")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> str:
        assert self.base_dir is not None
        return os.path.join(self.base_dir, "victoria-metrics.log")

    # -- life cycle ------------------------------------------------------

    def command(self) -> list[str]:
        assert self.base_dir is not None and self.port is not None
        command = [
            self.binary,
            f"-storageDataPath={os.path.join(self.base_dir, 'data')}",
            f"-httpListenAddr={LOOPBACK}:{self.port}",
            # Warnings and errors only: the lines it skips and the samples
            # it drops are logged as such.
            "-loggerLevel=WARN",
            *self.flags,
        ]
        if self.dedup:
            command.append(f"-dedup.minScrapeInterval={DEDUP_INTERVAL}")
        if self.credentials:
            username, password = self.credentials
            command += [f"-httpAuth.username={username}", f"-httpAuth.password={password}"]
        return command

    def start(self) -> None:
        """Start in a fresh directory and wait until C{/health} answers OK."""
        if self.process is not None:
            raise RuntimeError("victoria-metrics is already running")
        self.base_dir = tempfile.mkdtemp(prefix="victoria-metrics-test-")
        for _ in range(3):
            self.port = free_listening_port()
            if self._spawn_and_wait():
                return
        raise RuntimeError("victoria-metrics could not bind a port:\n" + self.log_tail())

    def _spawn_and_wait(self) -> bool:
        """Run it and block until it is healthy; False if its port was taken."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                if "address already in use" in self.log_tail():
                    return False
                raise RuntimeError(
                    f"victoria-metrics exited with {code} at start-up:\n{self.log_tail()}"
                )
            if self.healthy():
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"victoria-metrics was not healthy within {self.startup_timeout} s"
        )

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and remove its directory."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout=15)
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of its output, for failure messages."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- blocking HTTP ---------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        credentials: tuple[str, str] | None | bool = True,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """
        One request, its (status, body), errors included.  C{credentials}:
        True for the server's own (if it has any), None for none, or a
        (user, password) pair.
        """
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        if credentials is True:
            credentials = self.credentials
        headers = {}
        if credentials:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def healthy(self) -> bool:
        """Whether C{GET /health} answers 200 (it needs no credentials)."""
        try:
            status, _ = self.request("GET", "/health", credentials=None, timeout=1.0)
        except OSError:
            return False
        return status == 200

    def write(
        self,
        lines: str,
        path: str = "/write",
        credentials: tuple[str, str] | None | bool = True,
        **params: str,
    ) -> tuple[int, bytes]:
        """POST line protocol (nanosecond timestamps) as a client would."""
        return self.request(
            "POST", path, {"precision": "ns", **params}, lines.encode("utf-8"), credentials
        )

    def export(
        self, selector: str, series: int = 1, timeout: float = 5.0
    ) -> list[tuple[dict[str, str], Samples]]:
        """
        Every raw sample of the series C{selector} matches, as (labels, samples)
        with the metric name in label C{__name__}.

        Samples are searchable after C{/internal/force_flush}, but the series
        of the first write after start-up show up to a second later: this
        asks again until at least C{series} series match, or C{timeout} passes.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self._export(selector)
            if len(found) >= series or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def _export(self, selector: str) -> list[tuple[dict[str, str], Samples]]:
        status, body = self.request("GET", "/internal/force_flush")
        if status != 200:
            raise RuntimeError(f"force_flush answered {status}: {body!r}")
        status, body = self.request("POST", "/api/v1/export", {"match[]": selector})
        if status != 200:
            raise RuntimeError(f"export {selector} answered {status}: {body!r}")
        found = []
        for line in body.decode("utf-8").splitlines():
            series = json.loads(line)
            samples = zip(series["timestamps"], series["values"], strict=True)
            found.append((series["metric"], sorted(samples)))
        return found
