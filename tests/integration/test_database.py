"""
The database the server writes into, against a real influxd 1.6 and a real
VictoriaMetrics, with C{twistd -n weather} as a process:

  - influxd without the database: the server creates it at start and a
    station's packet lands in it; influxd started after the server (at boot):
    the first write that finds the database missing has it created;
  - authentication on and a user who may only write: one line naming what an
    admin runs, no traceback; the packet waits in the journal and lands once
    the admin has made the database; started again, no warning;
  - C{--no-create-database}: nothing is created, the write's line says what to run;
  - VictoriaMetrics (no databases): no warning, no error, the packet lands.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import urllib.parse

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.daemon import Daemon, wait_until
from tests.integration.influxd import (
    InfluxServer,
    free_port,
    require_influxd,
    start_influxd,
)
from tests.integration.victoria import start_victoria_metrics
from tests.support import reference_devices_toml, reference_packet
from weather.server.protocol import ACK
from weather.tools.simulate import send_packet

DATABASE = "weather"
ADMIN = ("admin", "admin-pa55")
WRITER = ("writer", "writer-pa55")
CREATED = "InfluxDB database weather is ready (created if it was missing)"


def query(influx: InfluxServer, q: str, user: tuple[str, str] | None = None) -> bytes:
    """One InfluxQL statement (POST /query), as C{user}; its answer's body."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if user is not None:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(":".join(user).encode()).decode()
        )
    status, _, body = influx.request(
        "POST", "/query", body=urllib.parse.urlencode({"q": q}).encode(), headers=headers
    )
    if status != 200 or b'"error"' in body:
        raise RuntimeError(f"{q!r} answered {status}: {body!r}")
    return body


def readings(influx: InfluxServer) -> int:
    """How many temperatures the database holds (none while it is missing)."""
    try:
        return len(influx.points("temperature", DATABASE))
    except RuntimeError:  # database not found
        return 0


def databases(influx: InfluxServer, user: tuple[str, str] | None = None) -> bytes:
    return query(influx, "SHOW DATABASES", user)


class DatabaseTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="weather-database-")
        self.addCleanup(shutil.rmtree, self.workdir, True)
        self.port = free_port()

    def start(self, url: str, *extra: str) -> Daemon:
        """twistd -n weather writing to C{url}, database weather, and C{extra}."""
        devices = os.path.join(self.workdir, "devices.toml")
        with open(devices, "w") as f:
            f.write(reference_devices_toml(**{"1": "balcony"}))
        arguments = [
            "-p",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--influx-url",
            url,
            "--database",
            DATABASE,
            "--devices",
            devices,
            "--flush-interval",
            "0.05",
            "--max-backoff",
            "1",
            "--data-dir",
            os.path.join(self.workdir, "data"),
            *extra,
        ]
        server = Daemon(arguments, self.workdir)
        self.addCleanup(server.kill)
        server.wait_ready()
        return server

    def upload(self) -> None:
        self.assertEqual(send_packet("127.0.0.1", self.port, reference_packet(30)), ACK)

    def assertClean(self, server: Daemon) -> None:
        """It runs on, with no traceback in its log."""
        self.assertTrue(server.running)
        self.assertNotIn("Traceback", server.log())


class InfluxDBTests(DatabaseTestCase):
    def test_created(self) -> None:
        influx = start_influxd(self)
        self.assertNotIn(b'"weather"', databases(influx))
        server = self.start(influx.url)
        wait_until(lambda: CREATED in server.log(), what="the database created")
        self.assertIn(b'["weather"]', databases(influx))
        self.upload()
        wait_until(
            lambda: len(influx.points("temperature", DATABASE)) == 30, what="30 readings"
        )
        self.assertNotIn("write failed", server.log())
        self.assertClean(server)

    def test_influxdLater(self) -> None:
        """
        At boot, influxd not up yet: the server starts all the same; the first
        write that finds the database missing has it created, and lands.
        """
        influx = InfluxServer(require_influxd(self), http_port=free_port())
        self.addCleanup(influx.stop)
        server = self.start(f"http://127.0.0.1:{influx.fixed_http_port}")
        wait_until(lambda: "Cannot create InfluxDB database" in server.log(), what="try")
        self.upload()
        influx.start()
        wait_until(lambda: readings(influx) == 30, timeout=30, what="30 readings")
        self.assertIn("it is created before the next try", server.log())
        self.assertIn(CREATED, server.log())
        self.assertClean(server)

    def test_userMayOnlyWrite(self) -> None:
        """Authentication on, a user who may only write: one line; the admin acts."""
        influx = start_influxd(self, config={"http": {"auth-enabled": "true"}})
        query(
            influx, f"CREATE USER {ADMIN[0]} WITH PASSWORD '{ADMIN[1]}' WITH ALL PRIVILEGES"
        )
        query(influx, f"CREATE USER {WRITER[0]} WITH PASSWORD '{WRITER[1]}'", ADMIN)
        password = os.path.join(self.workdir, "password")
        with open(password, "w") as f:
            f.write(WRITER[1] + "\n")
        os.chmod(password, 0o600)
        server = self.start(
            influx.url, "--username", WRITER[0], "--password-file", password
        )
        wait_until(lambda: "Cannot create" in server.log(), what="the refusal")
        command = (
            f"influx -host 127.0.0.1 -port {influx.http_port} -username ADMIN "
            """-password '' -execute 'CREATE DATABASE "weather"'"""
        )
        [line] = [text for text in server.log_lines() if "Cannot create" in text]
        self.assertIn(
            "Cannot create InfluxDB database weather as user writer (HTTP 403: error "
            "authorizing query: writer not authorized to execute statement 'CREATE "
            "DATABASE weather', requires admin privilege): if it does not exist yet, "
            f"an admin creates it with: {command} (or pass --no-create-database",
            line,
        )
        self.upload()  # acknowledged: it waits in the journal
        wait_until(lambda: "write failed" in server.log(), what="a failed write")
        self.assertIn(f"create it: {command}", server.log())
        query(influx, 'CREATE DATABASE "weather"', ADMIN)
        query(influx, 'GRANT WRITE ON "weather" TO writer', ADMIN)
        wait_until(lambda: "InfluxDB writes work again" in server.log(), what="delivery")
        self.assertEqual(server.log().count("Cannot create"), 1)
        self.assertClean(server)
        server.stop()

        # Started again, now that it exists: no warning.
        server = self.start(
            influx.url, "--username", WRITER[0], "--password-file", password
        )
        exists = "it exists; this user may not create databases, and need not"
        wait_until(lambda: exists in server.log(), what="the database found")
        self.assertNotIn("#warn]", server.log())
        self.assertClean(server)

    def test_noCreateDatabase(self) -> None:
        influx = start_influxd(self)
        server = self.start(influx.url, "--no-create-database")
        self.upload()
        wait_until(lambda: "write failed" in server.log(), what="a failed write")
        self.assertIn(
            'database not found: "weather"; create it: influx -host 127.0.0.1 -port '
            f"{influx.http_port} -username ADMIN -password '' -execute "
            """'CREATE DATABASE "weather"'""",
            server.log(),
        )
        self.assertNotIn(b'"weather"', databases(influx))
        self.assertNotIn(CREATED, server.log())
        self.assertClean(server)


class VictoriaMetricsTests(DatabaseTestCase):
    def test_noDatabases(self) -> None:
        """Its /query lists databases: one info line, no warning, the packet lands."""
        vm = start_victoria_metrics(self)
        server = self.start(vm.url)
        wait_until(lambda: "did not create database" in server.log(), what="the answer")
        self.upload()

        def samples() -> int:
            return sum(len(s) for _, s in vm.export('{__name__="temperature_value"}'))

        wait_until(lambda: samples() == 30, what="30 readings")
        log = server.log()
        self.assertNotIn("#warn]", log)
        self.assertNotIn("#error]", log)
        self.assertNotIn("#critical]", log)
        self.assertClean(server)
