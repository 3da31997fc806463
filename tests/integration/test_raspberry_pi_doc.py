"""
docs/raspberry-pi.md, followed as written, so that the page cannot rot.

Every C{```sh} block of the page has a marker on the line before it
(L{tests.integration.docwalk}):

    <!-- test: run -->                              run here, as written
    <!-- test: skip (REASON) -->                    not here (apt, systemd, Grafana)
    <!-- test: skip (REASON), instead: NAME -->     not here; the test does NAME

The blocks run in order, each with C{bash -euo pipefail}, and each must exit 0.
"Here" is a scratch directory, not the machine:

  - C{/etc}, C{/opt}, C{/var} (and the other system roots in L{SYSTEM}) are
    directories in the scratch directory: the blocks install into those.
    After the substitution a block may name no other absolute path but
    L{ALLOWED}, so that a later edit of the page cannot touch the machine
    running the test;
  - C{sudo} runs the command as the test's user (a C{sudo} on PATH that drops
    C{-u USER}); C{install}'s C{-o USER -g GROUP} are dropped (no such user
    here, no root needed);
  - C{influx} talks to a private influxd (an C{influx} on PATH that adds
    C{-host} and C{-port}); the ports 8266 and 9266 are free ports (8086
    is left as it is: the page writes it into files, and C{influx} is the
    only command here that talks to InfluxDB);
  - C{~} is a home of its own, where C{~/weather} is a copy of this source
    tree (what C{git clone} would give), so pip installs this very code
    (its dependencies come from PyPI).

What the skipped blocks would do, the test does where the next blocks need
it (the C{instead:} names): restart the influxd with authentication on, once
it has checked that the page's C{sed} turned it on in a copy of Debian's own
C{/etc/influxdb/influxdb.conf}; start the server as C{weather.service}
would (the unit's own C{ExecStart=}, with the page's installed twistd, a TCP
port for the socket it would inherit); stop it as C{systemctl stop} would.

At the end: InfluxDB holds the simulated station's readings and refuses a
request without a user; the journal's copies are there, private; the
dashboard Grafana would read names the data source.  Needs Debian's
C{influxdb} and C{influxdb-client} (skipped outside CI without them, an
error under CI=true), C{curl}, and PyPI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.parse

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.daemon import Daemon, environment, free_listening_port
from tests.integration.docwalk import (
    Block,
    blocks,
    copy_source,
    read,
    run_script,
    shim,
    substitute,
)
from tests.integration.influxd import InfluxServer, free_port, start_influxd
from tests.integration.test_contrib import exec_start, replace_option
from tests.support import ROOT, unavailable

PAGE = os.path.join(ROOT, "docs", "raspberry-pi.md")
#: The directories Debian's packages would have made.
PACKAGED = (
    "etc/influxdb",
    "etc/cron.daily",
    "etc/grafana/provisioning/datasources",
    "etc/grafana/provisioning/dashboards",
    "var/lib/grafana",
    "var/backups",
)
#: Debian's configuration file, which the page edits.
INFLUXDB_CONF = "/etc/influxdb/influxdb.conf"


def page_blocks() -> list[Block]:
    return blocks(read(PAGE), "raspberry-pi.md")


class MarkerTests(SynchronousTestCase):
    """The page as the walk reads it: no process runs here."""

    def test_everyBlockMarked(self) -> None:
        found = page_blocks()
        self.assertGreaterEqual(sum(b.run for b in found), 12)
        self.assertEqual({(b.kind, b.needs) for b in found}, {("run", None), (None, None)})
        self.assertEqual(
            {b.instead for b in found} - {None}, set(RaspberryPiDocTests.STAND_INS)
        )

    def test_unmarkedBlockFound(self) -> None:
        with self.assertRaises(AssertionError):
            blocks("Text\n\n```sh\necho hi\n```\n", "page")
        with self.assertRaises(AssertionError):
            blocks("<!-- test: run -->\nText\n```sh\necho hi\n```\n", "page")


class RaspberryPiDocTests(SynchronousTestCase):
    STAND_INS = ("restart-influxdb", "start-weather", "stop-weather")

    def setUp(self) -> None:
        influx = shutil.which("influx")
        if influx is None or not os.path.exists(INFLUXDB_CONF):
            unavailable(
                "the InfluxDB client and Debian's influxdb.conf are not installed "
                "(apt-get install influxdb influxdb-client)"
            )
        if shutil.which("curl") is None:
            unavailable("curl is not installed (apt-get install curl)")
        self.scratch = os.path.realpath(tempfile.mkdtemp(prefix="weather-pi-"))
        self.addCleanup(shutil.rmtree, self.scratch, True)
        for directory in PACKAGED:
            os.makedirs(self.system(directory))
        shutil.copy(INFLUXDB_CONF, self.system(INFLUXDB_CONF))
        self.home = os.path.join(self.scratch, "home")
        os.mkdir(self.home)
        copy_source(os.path.join(self.home, "weather"))
        self.influx_dir = os.path.join(self.scratch, "influxdb")
        self.influx = start_influxd(self, base_dir=self.influx_dir)
        self.ports = {8266: free_listening_port(), 9266: free_port()}
        self.bin = os.path.join(self.scratch, "bin")
        os.mkdir(self.bin)
        # sudo [-u USER] COMMAND: COMMAND, as the test's user.
        shim(self.bin, "sudo", '[ "$1" = -u ] && shift 2', 'exec "$@"')
        port = self.influx.http_port
        shim(self.bin, "influx", f'exec {influx} -host 127.0.0.1 -port {port} "$@"')
        self.environ = environment(self.home)
        self.environ["PATH"] = f"{self.bin}:{self.environ['PATH']}"
        # trial -j sets PYTHONPATH to its own path: pip in the page's new
        # virtualenv would take Twisted there for installed, and install no
        # twistd.
        self.environ.pop("PYTHONPATH", None)
        self.server: Daemon | None = None
        self.starts = 0

    def system(self, path: str) -> str:
        """Where the system's C{path} is, in the scratch directory."""
        return os.path.join(self.scratch, path.lstrip("/"))

    def here(self, text: str) -> str:
        """C{text} with the substitutions of the module's docstring."""
        return substitute(text, self.scratch, self.ports)

    def run_block(self, block: Block) -> None:
        where = f"raspberry-pi.md:{block.line}"
        run_script(self, where, self.here(block.text), self.home, self.environ)

    # -- what the skipped blocks would do -------------------------------------

    def restart_influxdb(self) -> None:
        """
        The page's sed turned authentication on (and bound InfluxDB to the Pi
        itself) in Debian's file, as influxd reads it: restart ours so.
        """
        shown = subprocess.run(
            ["influxd", "config", "-config", self.system(INFLUXDB_CONF)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        http = shown.split("\n[http]\n", 1)[1].split("\n[", 1)[0]
        self.assertIn("auth-enabled = true", http)
        self.assertIn('bind-address = "127.0.0.1:8086"', http)
        self.influx.terminate()
        self.influx = InfluxServer(
            self.influx.influxd,
            base_dir=self.influx_dir,
            http_port=self.influx.http_port,
            config={"http": {"auth-enabled": "true"}},
        )
        self.addCleanup(self.influx.stop)
        self.influx.start()

    def start_weather(self) -> None:
        """weather.service's ExecStart=, with what systemd would give it."""
        # LoadCredential= copies /etc/weather/influx-password into
        # $CREDENTIALS_DIRECTORY: the same file, for this test.
        unit = exec_start({"CREDENTIALS_DIRECTORY": "/etc/weather"})
        argv = [self.here(word) for word in unit]
        self.assertEqual(argv[0], self.system("/opt/weather/bin/twistd"))
        replace_option(argv, "--port", f"tcp:{self.ports[8266]}:interface=127.0.0.1")
        replace_option(argv, "--influx-url", self.influx.url)
        # StateDirectory=weather, StateDirectoryMode=0700; WorkingDirectory= it.
        state = self.system("/var/lib/weather")
        os.makedirs(state, mode=0o700, exist_ok=True)
        self.starts += 1
        log = os.path.join(self.scratch, f"weather-{self.starts}.log")
        self.server = Daemon(argv, state, log, command=[], environ=environment(state))
        self.addCleanup(self.server.kill)
        self.server.wait_ready()

    def stop_weather(self) -> None:
        """SIGTERM, as systemctl stop sends: a clean stop."""
        assert self.server is not None
        self.assertEqual(self.server.stop(), -signal.SIGTERM, self.server.log())
        self.server = None

    # -- the walk -------------------------------------------------------------

    def test_followThePage(self) -> None:
        for block in page_blocks():
            if block.run:
                self.run_block(block)
            elif block.instead is not None:
                getattr(self, block.instead.replace("-", "_"))()
        self.assertTrue(self.server is not None and self.server.running)

        # InfluxDB: users with passwords, the simulated readings stored.
        self.assertEqual(self.query("SHOW DATABASES")[0], 401)
        admin = read(self.system("/etc/weather/influx-admin-password")).strip()
        status, body = self.query(
            "SELECT count(value) FROM temperature WHERE place = 'balcony'", admin
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(
            json.loads(body)["results"][0]["series"][0]["values"][0][1], 30, body
        )

        # Copies of the journal: the manual one, the daily one, the one
        # before the upgrade; the journal put aside when one was restored.
        copies = self.system("/var/backups/weather")
        self.assertEqual(len(os.listdir(copies)), 3)
        for name in os.listdir(copies):
            self.assertRegex(name, r"^journal-\d{8}T\d{6}Z(-\d+)?\.sqlite3$")
            self.assertEqual(os.stat(os.path.join(copies, name)).st_mode & 0o777, 0o600)
        state = self.system("/var/lib/weather")
        (replaced,) = [n for n in os.listdir(state) if n.startswith("replaced-")]
        self.assertIn("journal.sqlite3", os.listdir(os.path.join(state, replaced)))

        # What Grafana would read.
        dashboard = read(self.system("/var/lib/grafana/dashboards/weather/weather.json"))
        json.loads(dashboard)
        self.assertNotIn("${DS_INFLUXDB}", dashboard)
        self.assertIn("weather-influxdb", dashboard)

    def query(self, q: str, admin_password: str | None = None) -> tuple[int, str]:
        """An InfluxQL query to the private influxd, as admin or as no one."""
        params = {"q": q, "db": "weather"}
        if admin_password is not None:
            params.update(u="admin", p=admin_password)
        status, _, body = self.influx.request(
            "POST", "/query?" + urllib.parse.urlencode(params)
        )
        return status, body.decode()
