"""
A private InfluxDB 1.x server (Debian's C{influxd}) on 127.0.0.1, for the
integration tests and for C{make run}.

Its configuration is C{influxd config}'s complete default with the data,
meta and WAL directories moved into one base directory and every listener on
127.0.0.1 (free ports unless given).  Everything here blocks (subprocess,
urllib): it is for test set-up and the quick start, never for the reactor.
C{terminate()} stops the process but keeps its data and ports, so C{start()}
brings the same server back, which is how tests take InfluxDB away while
readings arrive.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import IO, Any

LOOPBACK = "127.0.0.1"

#: Top-level (sectionless) and per-section settings forced into the config.
#: Values are TOML literals.  ``None`` section means the top level.
_FORCED: dict[str | None, dict[str, str]] = {
    None: {
        # Debian patches the upstream "reporting-disabled" key into an
        # opt-in "reporting-enabled"; whichever exists is switched off.
        "reporting-disabled": "true",
        "reporting-enabled": "false",
    },
    "meta": {"logging-enabled": "false"},
    "data": {"query-log-enabled": "false"},
    "monitor": {"store-enabled": "false"},
    "http": {
        "enabled": "true",
        "auth-enabled": "false",
        "log-enabled": "false",
        "suppress-write-log": "true",
        "https-enabled": "false",
        "unix-socket-enabled": "false",
        "pprof-enabled": "false",
    },
    "logging": {"suppress-logo": "true"},
    "ifql": {"enabled": "false"},
    "graphite": {"enabled": "false"},
    "collectd": {"enabled": "false"},
    "opentsdb": {"enabled": "false"},
    "udp": {"enabled": "false"},
    "subscriber": {"enabled": "false"},
    "continuous_queries": {"log-enabled": "false"},
}

_SECTION = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*$")
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_-]+)(\s*=\s*)(.*)$")


def find_influxd() -> str | None:
    """Return the path of the ``influxd`` binary, or None if not installed.

    ``$INFLUXD`` wins, so a developer can point the tests at another build.
    """
    explicit = os.environ.get("INFLUXD")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("influxd") or next(
        (p for p in ("/usr/bin/influxd", "/usr/sbin/influxd") if os.access(p, os.X_OK)),
        None,
    )


def free_port() -> int:
    """
    Return a TCP port on 127.0.0.1 that was free a moment ago.  influxd's
    configuration needs its port numbers before it starts: it cannot be given
    port 0 and asked which one it got.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _toml_string(value: str) -> str:
    """Quote ``value`` as a TOML basic string (JSON escapes are valid TOML)."""
    return json.dumps(value)


def adapt_config(default: str, overrides: dict[str | None, dict[str, str]]) -> str:
    """Rewrite ``influxd config`` output, replacing the given keys' values.

    ``overrides`` maps a section name (``None`` for the top level) to keys and
    TOML literal values.  Only keys already present are replaced: influxd's
    own defaults tell us which keys this version knows, and unknown keys are
    rejected by some versions.  Applies to every ``[[array]]`` table of that
    name too.
    """
    out: list[str] = []
    section: str | None = None
    for line in default.splitlines():
        header = _SECTION.match(line)
        if header:
            section = header.group(1)
        else:
            key = _KEY.match(line)
            if key and key.group(2) in overrides.get(section, {}):
                indent, name, eq, _ = key.groups()
                line = f"{indent}{name}{eq}{overrides[section][name]}"
        out.append(line)
    return "\n".join(out) + "\n"


class InfluxServer:
    """A private influxd on 127.0.0.1 with its own temporary data directory.

    ``start()`` creates the directory, config and ports on first use and
    waits for ``/ping``; ``terminate()`` stops the process but keeps data,
    config and ports so ``start()`` can bring the same server back;
    ``cleanup()`` removes the directory; ``stop()`` does both.
    """

    def __init__(
        self,
        influxd: str | None = None,
        startup_timeout: float = 30.0,
        config: dict[str, dict[str, str]] | None = None,
        base_dir: str | None = None,
        http_port: int | None = None,
    ):
        """``config`` adds settings: {section: {key: TOML literal}}, e.g.
        ``{"http": {"auth-enabled": "true"}}``.  Listener addresses and
        directories are always ours."""
        self.influxd = influxd or find_influxd()
        self.startup_timeout = startup_timeout
        self.extra_config = config or {}
        #: A directory given by the caller is kept; a temporary one is removed.
        self.keep_dir = base_dir is not None
        self.base_dir: str | None = base_dir
        self.fixed_http_port = http_port
        self.config_path: str | None = None
        self.log_path: str | None = None
        self.http_port: int | None = None
        self.rpc_port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- addresses -----------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:41234``."""
        if self.http_port is None:
            raise RuntimeError("server has not been started")
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def running(self) -> bool:
        """True while the influxd process is alive."""
        return self.process is not None and self.process.poll() is None

    # -- life cycle ----------------------------------------------------

    def _default_config(self) -> str:
        """Ask influxd for its complete default configuration.

        ``-config /dev/null`` stops it from merging /etc/influxdb/influxdb.conf.
        """
        assert self.influxd is not None
        result = subprocess.run(
            [self.influxd, "config", "-config", os.devnull],
            check=True,
            capture_output=True,
            env=self._environment(),
            timeout=60,
        )
        return result.stdout.decode("utf-8")

    def _write_config(self) -> None:
        """Pick ports and write a config that keeps influxd private."""
        assert self.base_dir is not None
        self.http_port = self.fixed_http_port or free_port()
        self.rpc_port = free_port()
        while self.rpc_port == self.http_port:
            self.rpc_port = free_port()
        overrides = {section: dict(keys) for section, keys in _FORCED.items()}
        for section, keys in self.extra_config.items():
            overrides.setdefault(section, {}).update(keys)
        overrides[None]["bind-address"] = _toml_string(f"{LOOPBACK}:{self.rpc_port}")
        overrides["meta"]["dir"] = _toml_string(os.path.join(self.base_dir, "meta"))
        overrides["data"]["dir"] = _toml_string(os.path.join(self.base_dir, "data"))
        overrides["data"]["wal-dir"] = _toml_string(os.path.join(self.base_dir, "wal"))
        overrides["http"]["bind-address"] = _toml_string(f"{LOOPBACK}:{self.http_port}")
        for section in ("ifql", "graphite", "collectd", "opentsdb", "udp"):
            # Disabled anyway; loopback in case a later edit enables one.
            overrides[section]["bind-address"] = _toml_string(f"{LOOPBACK}:0")
        overrides["http"]["bind-socket"] = _toml_string(
            os.path.join(self.base_dir, "influxd.sock")
        )
        config = adapt_config(self._default_config(), overrides)
        self._check_loopback_only(config)
        self.config_path = os.path.join(self.base_dir, "influxdb.conf")
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(config)

    @staticmethod
    def _check_loopback_only(config: str) -> None:
        """Refuse to run a config with a listener that is not on 127.0.0.1."""
        section: str | None = None
        enabled: dict[str | None, bool] = {}
        binds: dict[str | None, str] = {}
        for line in config.splitlines():
            header = _SECTION.match(line)
            if header:
                section = header.group(1)
                continue
            key = _KEY.match(line)
            if not key:
                continue
            if key.group(2) == "bind-address":
                binds[section] = key.group(4).strip().strip('"')
            elif key.group(2) == "enabled":
                enabled[section] = key.group(4).strip() == "true"
        for name, address in binds.items():
            if name is not None and not enabled.get(name, False):
                continue
            if not address.startswith(f"{LOOPBACK}:"):
                raise RuntimeError(f"refusing non-loopback [{name}] bind {address!r}")

    @staticmethod
    def _environment() -> dict[str, str]:
        """Our environment minus INFLUXDB_* variables, which override config."""
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def start(self) -> None:
        """Start influxd (first time: in a fresh directory) and wait for /ping.

        After ``terminate()`` this restarts on the same directory and ports.
        """
        if self.influxd is None:
            raise RuntimeError("influxd is not installed")
        if self.running:
            raise RuntimeError("influxd is already running")
        first = self.config_path is None
        if first:
            if self.base_dir is None:
                self.base_dir = tempfile.mkdtemp(prefix="influxd-test-")
            else:
                os.makedirs(self.base_dir, exist_ok=True)
            self.log_path = os.path.join(self.base_dir, "influxd.log")
        attempts = 3 if first else 1
        for attempt in range(attempts):
            if first:
                self._write_config()
            try:
                self._spawn_and_wait()
                return
            except _PortTaken:
                # Another process grabbed a port between our probe and
                # influxd's bind; pick new ports and try again.
                if attempt == attempts - 1:
                    raise RuntimeError(
                        "influxd could not bind its ports:\n" + self.log_tail()
                    ) from None

    def _spawn_and_wait(self) -> None:
        """Run influxd and block until it answers /ping with 204."""
        assert self.influxd and self.config_path and self.log_path
        self._log = open(self.log_path, "ab")  # closed by terminate()/kill()
        self._log.write(f"--- starting {self.influxd} at {time.ctime()}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            [self.influxd, "-config", self.config_path],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.base_dir,
            env=self._environment(),
            preexec_fn=die_with_parent,
            # Not in the terminal's process group: Ctrl-C stops make run's
            # server, which still writes to this one as it stops.
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._close_log()
                self.process = None
                tail = self.log_tail()
                if "address already in use" in tail:
                    raise _PortTaken(tail)
                raise RuntimeError(f"influxd exited with {code} at start-up:\n{tail}")
            if self.ping(timeout=1.0):
                return
            time.sleep(0.05)
        self.terminate()
        raise RuntimeError(
            f"influxd did not answer /ping within {self.startup_timeout}s:\n"
            + self.log_tail()
        )

    def terminate(self, timeout: float = 15.0) -> None:
        """Stop influxd (SIGTERM, then SIGKILL) but keep its data and ports."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._close_log()

    def kill(self) -> None:
        """Stop influxd abruptly (SIGKILL), as a crash would; data is kept."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._close_log()

    def cleanup(self) -> None:
        """Remove the temporary directory (the server must be stopped)."""
        if self.running:
            raise RuntimeError("terminate() influxd before cleanup()")
        if self.base_dir is not None and not self.keep_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        self.config_path = self.log_path = None
        self.http_port = self.rpc_port = None

    def stop(self, keep_data: bool = False) -> None:
        """Terminate influxd and, unless ``keep_data``, remove its directory."""
        self.terminate()
        if not keep_data:
            self.cleanup()

    def restart(self) -> None:
        """Terminate and start again on the same data directory and ports."""
        self.terminate()
        self.start()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of influxd's output, for failure messages."""
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no log)"
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- blocking HTTP helpers ----------------------------------------

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one HTTP request; return (status, headers, body), errors too."""
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read()

    def ping(self, timeout: float = 2.0) -> bool:
        """True if the server answers ``GET /ping`` with 204."""
        try:
            status, _, _ = self.request("GET", "/ping", timeout=timeout)
        except (OSError, urllib.error.URLError):
            return False
        return status == 204

    def query(self, q: str, db: str | None = None, method: str = "GET") -> Any:
        """Run InfluxQL ``q`` and return the parsed JSON (times in epoch ns).

        Raises if the server reports an error for any statement.
        """
        params = {"q": q, "epoch": "ns"}
        if db is not None:
            params["db"] = db
        if method == "POST":
            status, _, body = self.request(
                "POST",
                "/query",
                body=urllib.parse.urlencode(params).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            status, _, body = self.request("GET", "/query", params=params)
        result = json.loads(body)
        errors = [r["error"] for r in result.get("results", []) if "error" in r]
        if status != 200 or "error" in result or errors:
            raise RuntimeError(f"query {q!r} failed ({status}): {body!r}")
        return result

    def create_database(self, name: str) -> None:
        """Create database ``name`` (a no-op if it exists)."""
        self.query(f"CREATE DATABASE {_quote_ident(name)}", method="POST")

    def write(
        self, db: str, lines: str | bytes, precision: str = "ns"
    ) -> tuple[int, bytes]:
        """POST line protocol to ``/write``; return (status, body)."""
        data = lines.encode("utf-8") if isinstance(lines, str) else lines
        status, _, body = self.request(
            "POST", "/write", params={"db": db, "precision": precision}, body=data
        )
        return status, body

    def points(
        self, measurement: str, db: str, field: str | None = None
    ) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
        """Every point of ``measurement`` as (time_ns, fields, tags), by time.

        With ``field`` given, fields is just that field's value instead of a
        dict.  Tags are read with ``GROUP BY *`` so they come back separate
        from fields; tag-less points get ``{}``.
        """
        result = self.query(f"SELECT * FROM {_quote_ident(measurement)} GROUP BY *", db)
        rows: list[tuple[int, Any, dict[str, str]]] = []
        for series in result["results"][0].get("series", []):
            tags = {k: v for k, v in series.get("tags", {}).items() if v != ""}
            columns = series["columns"]
            for values in series["values"]:
                record = dict(zip(columns, values, strict=True))
                when = record.pop("time")
                fields = {k: v for k, v in record.items() if v is not None}
                rows.append((when, fields.get(field) if field else fields, tags))
        rows.sort(key=_by_time)
        return rows

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll ``predicate`` until true; raise AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            time.sleep(0.05)


def die_with_parent() -> None:
    """In a child: ask Linux to SIGTERM it when its parent dies, however it dies.

    Keeps a crashed or killed run from leaving servers behind.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


_PR_SET_PDEATHSIG = 1


class _PortTaken(Exception):
    """influxd lost a race for one of its ports."""


def _by_time(row: tuple[int, Any, dict[str, str]]) -> int:
    return row[0]


def _quote_ident(name: str) -> str:
    """Quote an InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
