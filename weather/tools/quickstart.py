"""
C{make run}: the server in the foreground, with an InfluxDB to write to.

Uses the InfluxDB answering at http://localhost:8086 if there is one; else
starts a private one (Debian's C{influxd}) on 127.0.0.1:8086 with its data in
C{./weather-data/influxdb}; else runs anyway and says where readings wait.
The server's journal is in C{./weather-data/journal}; its status page on
L{STATUS_PORT} and its self-statistics are on.  The server creates its
database itself, as it does wherever it runs.  Extra arguments go to
C{twistd weather} (C{make run ARGS="--devices devices.toml"}), and win over
these.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

from weather.app.options import declared
from weather.tools.localinflux import InfluxServer, find_influxd

#: The server's own defaults: the InfluxDB it writes to when not told.
URL = declared("influx-url").default
DATABASE = declared("database").default
#: The status page's port: loopback only, as a first look needs.
STATUS_PORT = 9266
#: Seconds between self-statistics: the dashboard's "Station health".
SELF_STATS_INTERVAL = 60


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ping", timeout=2) as response:
            return response.status == 204
    except (OSError, urllib.error.URLError):
        return False


def given(argv: list[str], option: str) -> bool:
    """Whether C{--option} is among the user's arguments."""
    return any(a == f"--{option}" or a.startswith(f"--{option}=") for a in argv)


def defaults(argv: list[str]) -> list[str]:
    """The status page and self-statistics, unless the user chose otherwise."""
    extra = []
    if not given(argv, "metrics-port"):
        extra += ["--metrics-port", f"tcp:{STATUS_PORT}:interface=127.0.0.1"]
    if not given(argv, "self-stats-interval"):
        extra += ["--self-stats-interval", str(SELF_STATS_INTERVAL)]
    return extra


def next_steps(argv: list[str]) -> str:
    """What to try once the server runs, in another terminal."""
    bin_dir = os.path.relpath(os.path.dirname(sys.executable))
    lines = [
        "",
        "Next, in another terminal:",
        f"  . {bin_dir}/activate        # puts the weather command on PATH",
        "  weather simulate --port 8266   # one station's hourly upload",
        "  weather journal status         # finds this server's journal",
    ]
    if not given(argv, "metrics-port"):
        lines.append(f"Status page: http://127.0.0.1:{STATUS_PORT}/")
    return "\n".join([*lines, ""])


def main(argv: list[str]) -> int:
    url, server = URL, None
    if answers(URL):
        print(f"Using the InfluxDB at {URL}, database {DATABASE}.")
    elif find_influxd():
        server = InfluxServer(
            base_dir=os.path.abspath("weather-data/influxdb"),
            http_port=urllib.parse.urlsplit(URL).port,
        )
        server.start()
        url = server.url
        print(f"Started a private InfluxDB at {url}; its data is in {server.base_dir}.")
    else:
        url = None
        print(
            f"No InfluxDB answers at {URL} and influxd is not installed "
            "(Debian: apt-get install influxdb).\nThe server runs anyway: packets "
            "wait in its journal (weather-data/journal), retried until InfluxDB "
            f"answers at {URL}, and sent at the next start if the server stops first."
        )
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    command = [
        twistd,
        "--nodaemon",
        "--pidfile=",
        "weather",
        "--influx-url",
        url or URL,
        "--database",
        DATABASE,
        "--data-dir",
        os.path.abspath("weather-data/journal"),
        *defaults(argv),
        *argv,
    ]
    print(next_steps(argv))
    print("Running:", " ".join(command), "(Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.terminate()
            print(f"Stopped the private InfluxDB; its data stays in {server.base_dir}.")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
