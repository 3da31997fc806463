"""
C{make run}: the server in the foreground, with an InfluxDB to write to.

Uses the InfluxDB answering at http://localhost:8086 if there is one; else
starts a private one (Debian's C{influxd}) on 127.0.0.1:8086 with its data in
C{./weather-data/influxdb}; else runs anyway and says where readings wait.
The server's journal is in C{./weather-data/journal}.
Extra arguments go to C{twistd weather}.
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


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ping", timeout=2) as response:
            return response.status == 204
    except (OSError, urllib.error.URLError):
        return False


def create_database(url: str, name: str) -> None:
    body = urllib.parse.urlencode({"q": f'CREATE DATABASE "{name}"'}).encode()
    with urllib.request.urlopen(url + "/query", data=body, timeout=10):
        pass


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
            "(Debian: apt-get install influxdb).\nThe server runs anyway: readings "
            "wait in its memory, retried until InfluxDB answers at "
            f"{URL}, and are lost if the server stops first."
        )
    if url is not None:
        create_database(url, DATABASE)
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
        *argv,
    ]
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
