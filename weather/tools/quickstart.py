"""
C{make run}: the server in the foreground, with an InfluxDB to write to.

Uses the InfluxDB answering at http://localhost:8086 if there is one; else
starts a private one (Debian's C{influxd}) on 127.0.0.1:8086 with its data in
C{./weather-data/influxdb}; else runs anyway and says where readings wait.
The server's journal is in C{./weather-data/journal}; its status page on
L{STATUS_PORT} and its self-statistics are on.  The server creates its
database itself, as it does wherever it runs.  C{--port}, C{--status-port}
and C{--influx-port} (C{make run PORT=8267 STATUS_PORT=9267
INFLUX_PORT=8087}) move it all to other ports; the arguments after C{--} go
to C{twistd weather} (C{make run ARGS="--devices devices.toml"}), and win
over these.

Ctrl-C in the terminal reaches the whole foreground process group: twistd
stops by itself, cleanly, and this waits for it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

from weather.app.options import declared
from weather.tools.localinflux import InfluxServer, find_influxd

#: The server's own defaults: its port, the InfluxDB it writes to when not told.
PORT = int(declared("port").default)
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


def influx_url(port: int) -> str:
    """L{URL} on another port."""
    parts = urllib.parse.urlsplit(URL)
    return parts._replace(netloc=f"{parts.hostname}:{port}").geturl()


def parse(argv: list[str]) -> argparse.Namespace:
    """make run's own options, then C{--} and the server's (C{args})."""
    parser = argparse.ArgumentParser(prog="make run")
    parser.add_argument("--port", default=str(PORT), help="a number or an endpoint")
    parser.add_argument("--status-port", type=int, default=STATUS_PORT)
    parser.add_argument("--influx-port", type=int, default=urllib.parse.urlsplit(URL).port)
    parser.add_argument("args", nargs="*", help="twistd weather's options, after --")
    return parser.parse_args(argv)


def defaults(argv: list[str], status_port: int = STATUS_PORT) -> list[str]:
    """The status page and self-statistics, unless the user chose otherwise."""
    extra = []
    if not given(argv, "metrics-port"):
        extra += ["--metrics-port", f"tcp:{status_port}:interface=127.0.0.1"]
    if not given(argv, "self-stats-interval"):
        extra += ["--self-stats-interval", str(SELF_STATS_INTERVAL)]
    return extra


def next_steps(
    argv: list[str], port: str = str(PORT), status_port: int = STATUS_PORT
) -> str:
    """What to try once the server runs, in another terminal."""
    number = port.split(":")[1] if port.startswith("tcp") else port
    bin_dir = os.path.relpath(os.path.dirname(sys.executable))
    lines = [
        "",
        "Next, in another terminal:",
        f"  . {bin_dir}/activate        # puts the weather command on PATH",
        f"  weather simulate --port {number}   # one station's hourly upload",
        "  weather journal status         # finds this server's journal",
    ]
    if not given(argv, "metrics-port"):
        lines.append(f"Status page: http://127.0.0.1:{status_port}/")
    return "\n".join([*lines, ""])


def main(arguments: list[str]) -> int:
    options = parse(arguments)
    argv = options.args
    url = influx_url(options.influx_port)
    server = None
    if answers(url):
        print(f"Using the InfluxDB at {url}, database {DATABASE}.")
    elif find_influxd():
        server = InfluxServer(
            base_dir=os.path.abspath("weather-data/influxdb"),
            http_port=options.influx_port,
        )
        server.start()
        url = server.url
        print(f"Started a private InfluxDB at {url}; its data is in {server.base_dir}.")
    else:
        print(
            f"No InfluxDB answers at {url} and influxd is not installed "
            "(Debian: apt-get install influxdb).\nThe server runs anyway: packets "
            "wait in its journal (weather-data/journal), retried until InfluxDB "
            f"answers at {url}, and sent at the next start if the server stops first."
        )
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    command = [
        twistd,
        "--nodaemon",
        "--pidfile=",
        "weather",
        "--port",
        options.port,
        "--influx-url",
        url,
        "--database",
        DATABASE,
        "--data-dir",
        os.path.abspath("weather-data/journal"),
        *defaults(argv, options.status_port),
        *argv,
    ]
    print(next_steps(argv, options.port, options.status_port))
    print("Running:", " ".join(command), "(Ctrl-C stops it)", flush=True)
    try:
        return run(command)
    finally:
        if server is not None:
            server.terminate()
            print(f"Stopped the private InfluxDB; its data stays in {server.base_dir}.")


def run(command: list[str]) -> int:
    """
    Run the server to its end.  Ctrl-C reaches it from the terminal as it
    reaches us: we wait while it stops cleanly (subprocess.call would kill it
    a quarter of a second later), then report a clean stop as success.
    """
    process = subprocess.Popen(command)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0 if code in (-signal.SIGINT, -signal.SIGTERM) else code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
