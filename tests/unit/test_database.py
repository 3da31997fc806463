"""
Tests for L{weather.server.database}: the InfluxDB 1.x database is created at
start and when a write finds it missing, a refusal is one line naming what to
run, and the writes to InfluxDB 2.x/3 name the command that makes a missing
bucket or database.  The answers are influxd 1.6's, as the fake gives them.
"""

from __future__ import annotations

import base64
from typing import Any

from treq.testing import StubTreq
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.fakeinflux import FakeInfluxDB
from tests.support import build_test_service, make_settings
from tests.unit.test_writer import V2, V3, WriterTestCase, line
from weather.server.database import (
    DECLINED,
    READY,
    REFUSED,
    UNREACHABLE,
    create_command,
    create_statement,
    listed,
    missing_database,
    read_answer,
)
from weather.server.influx import InfluxV1, InfluxV2, InfluxV3

USER = InfluxV1("http://influx.test:8086", "weather", None, "writer", "s3cret")
#: influxd 1.6's answer to CREATE DATABASE from a user who is not an admin.
NOT_ADMIN = (
    b'{"error":"error authorizing query: writer not authorized to execute statement '
    b"'CREATE DATABASE weather', requires admin privilege\"}\n"
)
#: What VictoriaMetrics answers to any /query, CREATE DATABASE included.
VICTORIA = (
    b'{"results":[{"statement_id":0,"series":[{"name":"databases",'
    b'"columns":["name"],"values":[["_internal"]]}]}]}'
)
ADMIN_COMMAND = (
    "influx -host influx.test -port 8086 -username ADMIN -password '' "
    """-execute 'CREATE DATABASE "weather"'"""
)


class StatementTests(SynchronousTestCase):
    def test_quoted(self) -> None:
        """The name is a quoted identifier, whatever it holds."""
        self.assertEqual(create_statement("weather"), 'CREATE DATABASE "weather"')
        self.assertEqual(
            create_statement('we"ird\\ db'), 'CREATE DATABASE "we\\"ird\\\\ db"'
        )

    def test_commands(self) -> None:
        """What a person runs: the CLI's defaults left out, the rest given."""
        self.assertEqual(
            create_command(InfluxV1("http://localhost:8086", "weather")),
            """influx -username ADMIN -password '' -execute 'CREATE DATABASE "weather"'""",
        )
        self.assertEqual(create_command(USER), ADMIN_COMMAND)
        self.assertEqual(
            create_command(InfluxV1("https://db.example", "it's")),
            "influx -host db.example -port 8086 -ssl -username ADMIN -password '' "
            """-execute 'CREATE DATABASE "it'"'"'s"'""",
        )
        self.assertEqual(
            create_command(InfluxV2("http://localhost:8086", "weather", "home")),
            "influx bucket create --name weather --org home",
        )
        self.assertEqual(
            create_command(V2),
            "influx bucket create --host http://influx.test:8086 --name weather "
            "--org weather",
        )
        self.assertEqual(
            create_command(InfluxV3("http://127.0.0.1:8181", "weather")),
            "influxdb3 create database weather",
        )
        self.assertEqual(
            create_command(V3),
            "influxdb3 create database --host http://influx.test:8181 "
            "--token ADMIN-TOKEN weather",
        )

    def test_missing(self) -> None:
        """1.x's and 2.x's 404s for a missing database or bucket, nothing else."""
        self.assertTrue(missing_database(404, 'database not found: "weather"'))
        self.assertTrue(missing_database(404, 'bucket "weather" not found'))
        self.assertFalse(missing_database(404, "404 page not found"))
        self.assertFalse(missing_database(404, 'organization name "home" not found'))
        self.assertFalse(missing_database(500, 'database not found: "weather"'))


class AnswerTests(SynchronousTestCase):
    def test_created(self) -> None:
        self.assertEqual(
            read_answer(200, b'{"results":[{"statement_id":0}]}\n').outcome, READY
        )

    def test_refused(self) -> None:
        """401 and 403, with InfluxDB's own words."""
        creation = read_answer(403, NOT_ADMIN)
        self.assertEqual(creation.outcome, REFUSED)
        self.assertIn("requires admin privilege", creation.why)
        creation = read_answer(401, b'{"error":"authorization failed"}\n')
        self.assertEqual(creation.outcome, REFUSED)
        self.assertEqual(creation.why, "HTTP 401: authorization failed")

    def test_declined(self) -> None:
        """VictoriaMetrics' list, a statement's error, a path not served."""
        self.assertEqual(read_answer(200, VICTORIA).outcome, DECLINED)
        error = b'{"results":[{"statement_id":0,"error":"database name required"}]}'
        self.assertEqual(read_answer(200, error).why, "HTTP 200: database name required")
        self.assertEqual(read_answer(200, b"<html>").outcome, DECLINED)
        self.assertEqual(read_answer(404, b"404 page not found\n").outcome, DECLINED)

    def test_listed(self) -> None:
        """SHOW DATABASES' answer, as influxd 1.6 gives it, with and without any."""
        body = (
            b'{"results":[{"statement_id":0,"series":[{"name":"databases",'
            b'"columns":["name"],"values":[["weather"],["_internal"]]}]}]}\n'
        )
        self.assertEqual(listed(200, body), {"weather", "_internal"})
        none = (
            b'{"results":[{"statement_id":0,"series":[{"name":"databases",'
            b'"columns":["name"]}]}]}'
        )
        self.assertEqual(listed(200, none), set())
        self.assertEqual(listed(401, b'{"error":"authorization failed"}'), set())
        self.assertEqual(listed(200, b"[]"), set())

    def test_unreachable(self) -> None:
        self.assertEqual(read_answer(503, b"busy").outcome, UNREACHABLE)


class CreationTestCase(WriterTestCase):
    def lines(self, level: LogLevel | None = None) -> list[str]:
        return [
            formatEvent(event)
            for event in self.capture()
            if level is None or event["log_level"] == level
        ]

    def queries(self) -> list[tuple[str, dict[str, Any]]]:
        return [(url, kw) for url, kw in self.client.posts if url.endswith("/query")]


class AtStartTests(CreationTestCase):
    def test_created(self) -> None:
        """POST /query, CREATE DATABASE, the writes' credentials; one info line."""
        fake = FakeInfluxDB(databases=(), username="writer", password="s3cret")
        self.build(USER, fake=fake, create_database=True)
        self.writer.startService()
        [(url, kwargs)] = self.queries()
        self.assertEqual(url, "http://influx.test:8086/query")
        self.assertEqual(kwargs["data"], {"q": 'CREATE DATABASE "weather"'})
        auth = "Basic " + base64.b64encode(b"writer:s3cret").decode()
        self.assertEqual(kwargs["headers"], {"Authorization": [auth]})
        self.assertEqual(fake.databases, {"weather"})
        self.assertEqual(
            self.lines(), ["InfluxDB database weather is ready (created if it was missing)"]
        )
        written = self.writer.write([line(1)])
        self.clock.advance(1)
        self.successResultOf(written)
        self.assertEqual(len(fake.points_in("weather")), 1)

    def test_writesWait(self) -> None:
        """A write waits for the answer: it never meets the missing database."""
        fake = FakeInfluxDB(databases=())
        self.build(fake=fake, create_database=True)
        self.gate.closed = True
        self.writer.startService()
        written = self.writer.write([line(1)])
        self.clock.advance(5)
        self.assertEqual(self.sent, 1)
        self.gate.closed = False
        self.release()
        self.assertEqual(self.sent, 2)
        self.successResultOf(written)
        self.assertEqual(self.writer.stats.requests_failed, 0)

    def test_notAdmin(self) -> None:
        """
        403 for a user who may only write: one warning naming what to run,
        and never asked again; the writes' lines name it too.
        """
        fake = FakeInfluxDB(databases=(), username="writer", password="s3cret", admin=False)
        self.build(USER, fake=fake, create_database=True)
        self.writer.startService()
        [warning] = self.lines(LogLevel.warn)
        self.assertEqual(
            warning,
            "Cannot create InfluxDB database weather as user writer (HTTP 403: error "
            "authorizing query: writer not authorized to execute statement 'CREATE "
            "DATABASE weather', requires admin privilege): if it does not exist yet, "
            f"an admin creates it with: {ADMIN_COMMAND} (or pass --no-create-database "
            "if it exists and this user may only write); packets wait in the journal "
            "until it does",
        )
        written = self.writer.write([line(1)])
        for _ in range(5):
            self.clock.advance(60)
        self.assertEqual(  # asked once, never again
            [kwargs["data"]["q"] for _, kwargs in self.queries()],
            ['CREATE DATABASE "weather"', "SHOW DATABASES"],
        )
        self.assertNoResult(written)
        failures = [text for text in self.lines(LogLevel.warn) if "write failed" in text]
        self.assertIn(
            f'database not found: "weather"; create it: {ADMIN_COMMAND}', failures[0]
        )
        fake.databases.add("weather")  # the admin did
        self.clock.advance(60)
        self.successResultOf(written)

    def test_notAdminButThere(self) -> None:
        """
        403, but SHOW DATABASES lists it (a user sees those it has rights on):
        no warning, and a write needs nothing more.
        """
        fake = FakeInfluxDB(username="writer", password="s3cret", admin=False)
        self.build(USER, fake=fake, create_database=True)
        self.writer.startService()
        self.assertEqual(
            [kwargs["data"]["q"] for _, kwargs in self.queries()],
            ['CREATE DATABASE "weather"', "SHOW DATABASES"],
        )
        self.assertEqual(
            self.lines(),
            [
                "InfluxDB database weather is ready (it exists; this user may not "
                "create databases, and need not)"
            ],
        )

    def test_stopped(self) -> None:
        """Stopped with nothing to write, the request is cancelled, quietly."""
        self.build(create_database=True)
        self.gate.closed = True
        self.writer.startService()
        self.successResultOf(self.writer.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.lines(), [])

    def test_wrongPassword(self) -> None:
        fake = FakeInfluxDB(username="writer", password="other")
        self.build(USER, fake=fake, create_database=True)
        self.writer.startService()
        [warning] = self.lines(LogLevel.warn)
        self.assertIn("(HTTP 401: authorization failed)", warning)

    def test_refusedThenReady(self) -> None:
        """
        InfluxDB down at start (influxd not up yet at boot): one info line;
        the first write finds the database missing, it is created, and the
        write goes again.
        """
        fake = FakeInfluxDB(databases=())
        self.build(fake=fake, create_database=True, script=[ConnectionRefusedError()])
        self.writer.startService()
        self.assertEqual(
            self.lines(),
            [
                "Cannot create InfluxDB database weather yet (Connection was refused "
                "by other side.); it is created when a write finds "
                "it missing"
            ],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing until a write
        written = self.writer.write([line(1)])
        self.clock.advance(1)
        [failure] = [text for text in self.lines(LogLevel.warn)]
        self.assertIn(
            'HTTP 404: database not found: "weather"; it is created before the next try',
            failure,
        )
        self.clock.advance(self.next_try())
        self.successResultOf(written)
        self.assertEqual(len(self.queries()), 2)
        self.assertEqual(len(fake.points_in("weather")), 1)

    def test_victoriaMetrics(self) -> None:
        """Its list of databases for an answer: one info line, no warning."""
        fake = FakeInfluxDB()
        fake.fail_next(200, VICTORIA, path="/query")
        self.build(fake=fake, create_database=True)
        self.writer.startService()
        self.assertEqual(
            self.lines(),
            [
                "InfluxDB at http://influx.test:8086 did not create database weather "
                "(it answers with a list of databases: a store without any); writing "
                "into it as it is"
            ],
        )
        written = self.writer.write([line(1)])
        self.clock.advance(1)
        self.successResultOf(written)

    def test_declinedThenMissing(self) -> None:
        """
        A store that made none (an answer that is not InfluxDB 1.x's, such
        as 2.x's compatible API) is not asked again: a missing database's
        line says what to run, not that it is made before the next try.
        """
        fake = FakeInfluxDB(databases=())
        fake.fail_next(200, VICTORIA, path="/query")
        self.build(fake=fake, create_database=True)
        self.writer.startService()
        self.writer.write([line(1)])
        self.clock.advance(1)
        self.clock.advance(self.next_try())
        self.assertEqual(len(self.queries()), 1)
        failures = self.lines(LogLevel.warn)
        self.assertTrue(failures)
        for failure in failures:
            self.assertIn("create it: influx -host influx.test", failure)

    def test_notAsked(self) -> None:
        """--no-create-database: no query; a missing database's line says what to run."""
        fake = FakeInfluxDB(databases=())
        self.build(fake=fake)
        self.writer.startService()
        self.writer.write([line(1)])
        self.clock.advance(1)
        self.assertEqual(self.queries(), [])
        [failure] = self.lines(LogLevel.warn)
        self.assertIn(
            'database not found: "weather"; create it: influx -host influx.test -port '
            "8086 -username ADMIN -password '' -execute 'CREATE DATABASE \"weather\"'",
            failure,
        )


class WhileRunningTests(CreationTestCase):
    def test_dropped(self) -> None:
        """The database dropped while the server runs: made again, nothing lost."""
        fake = FakeInfluxDB(databases=())
        self.build(fake=fake, create_database=True)
        self.writer.startService()
        written = self.writer.write([line(1)])
        self.clock.advance(1)
        self.successResultOf(written)
        fake.databases.clear()
        written = self.writer.write([line(2)])
        self.clock.advance(1)
        self.assertNoResult(written)
        self.clock.advance(self.next_try())
        self.successResultOf(written)
        self.assertEqual([p.timestamp for p in fake.points_in("weather")], [1, 2])
        self.assertEqual(len(self.queries()), 2)

    def missing(self, target, fake: FakeInfluxDB) -> str:
        """One write into a store without the database: nothing made, its one line."""
        self.build(target, fake=fake, create_database=True)
        self.writer.startService()
        self.writer.write([line(1)])
        self.clock.advance(1)
        self.assertEqual(self.queries(), [])
        [failure] = self.lines(LogLevel.warn)
        return failure

    def test_bucket(self) -> None:
        """InfluxDB 2.x: no bucket made, the line says how."""
        failure = self.missing(V2, FakeInfluxDB(buckets=(), token="t0k3n"))
        self.assertIn(
            'HTTP 404: bucket "weather" not found; create it: influx bucket create '
            "--host http://influx.test:8086 --name weather --org weather",
            failure,
        )

    def test_influxdb3(self) -> None:
        """InfluxDB 3 that makes no database on a write: the line says how."""
        fake = FakeInfluxDB(databases=(), token="t0k3n", v3_creates=False)
        failure = self.missing(V3, fake)
        self.assertIn(
            'database not found: "weather"; create it: influxdb3 create database '
            "--host http://influx.test:8181 --token ADMIN-TOKEN weather",
            failure,
        )


class ServiceTests(SynchronousTestCase):
    """The option reaches the writer: twistd weather creates unless told not to."""

    def start(self, *args: str) -> FakeInfluxDB:
        fake = FakeInfluxDB(databases=())
        settings = make_settings(self, *args)
        service = build_test_service(
            self, settings, MemoryReactorClock(), client=StubTreq(fake)
        )
        service.startService()
        self.addCleanup(service.stopService)
        return fake

    def test_created(self) -> None:
        self.assertEqual(self.start().databases, {"weather"})

    def test_noCreateDatabase(self) -> None:
        fake = self.start("--no-create-database")
        self.assertEqual(fake.databases, set())
        self.assertEqual(fake.requests, [])
