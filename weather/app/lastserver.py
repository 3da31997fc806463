"""
Which journal the C{weather} command reads when told none: the one the
running or last server used.

At start, the server records its data directory (and its status page's
address) in a small file beside the default data directory, L{record_path};
the journal tools, given neither C{--data-dir} nor C{$WEATHER_DATA_DIR},
read the journal it names if that directory still exists.  The record is a
convenience: a failure to write it is one log line, never a failed start.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from twisted.application.service import Service
from twisted.logger import Logger

#: The record's name, in the directory that holds the default data directory.
RECORD_NAME = "weather-server.json"


def state_home(environ: Mapping[str, str]) -> str:
    """$XDG_STATE_HOME, else ~/.local/state: where the default data directory is."""
    return environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "state"
    )


def record_path(environ: Mapping[str, str]) -> str:
    """Where the server records its data directory for the tools."""
    return os.path.join(state_home(environ), RECORD_NAME)


@dataclass(frozen=True)
class ServerRecord:
    """What a server recorded at its start."""

    data_dir: str
    #: When it started (seconds since the epoch).
    started: float
    #: Its status page (None: no --metrics-port, or not one a URL can name).
    status_page: str | None = None

    def describe(self) -> str:
        """Which journal this is, for a person."""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))
        page = f" (status page {self.status_page})" if self.status_page else ""
        return f"the journal of the server started {when} in {self.data_dir}{page}"


def read_record(environ: Mapping[str, str]) -> ServerRecord | None:
    """The record, if there is one that names an existing directory."""
    try:
        with open(record_path(environ), encoding="utf-8") as f:
            record = ServerRecord(**json.load(f))
    except (OSError, ValueError, TypeError):  # none, unreadable, or not a record
        return None
    if not isinstance(record.data_dir, str) or not isinstance(record.started, float):
        return None
    if not os.path.isdir(record.data_dir):
        return None  # stale: the directory was moved or removed
    return record


def status_page_url(endpoint: str | None) -> str | None:
    """
    The URL of the status page served on C{endpoint} (a --metrics-port
    endpoint string), for a TCP endpoint with a port number; else None.
    """
    if endpoint is None:
        return None
    kind, *args = [
        re.sub(r"\\(.)", r"\1", part) for part in re.split(r"(?<!\\):", endpoint)
    ]
    named = dict(arg.split("=", 1) for arg in args if "=" in arg)
    positional = [arg for arg in args if "=" not in arg]
    port = named.get("port", positional[0] if positional else "")
    if kind not in ("tcp", "tcp6") or not port.isdigit() or int(port) == 0:
        return None
    host = named.get("interface") or ("::" if kind == "tcp6" else "0.0.0.0")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{int(port)}/"


class RecordService(Service):
    """On start, record the server's data directory at C{path} (best effort)."""

    log = Logger()

    def __init__(
        self,
        path: str,
        data_dir: str,
        status_page: str | None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.data_dir = data_dir
        self.status_page = status_page
        self.wall = wall

    def startService(self) -> None:
        super().startService()
        record = ServerRecord(self.data_dir, self.wall(), self.status_page)
        partial = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                with open(partial, "w", encoding="utf-8") as f:
                    json.dump(asdict(record), f)
                os.replace(partial, self.path)  # the tools never read half a record
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
        except OSError as e:
            self.log.info(
                "Cannot record the data directory for the weather command in "
                "{path} ({why}): give it --data-dir {data_dir}",
                path=self.path,
                why=e.strerror or str(e),
                data_dir=self.data_dir,
            )
