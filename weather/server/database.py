"""
The database the writer writes into: made at start when it is missing, as
Telegraf does, and named in a command to run when the server cannot make it.

Only InfluxDB 1.x has a way in its write API's server to make one:
C{POST /query} with C{CREATE DATABASE "name"}, which is idempotent there,
sent with the writes' credentials.  What influxd 1.6 answers:

  - 200 C{{"results":[{"statement_id":0}]}}: made, or it was there;
  - 403 C{error authorizing query: USER not authorized to execute statement
    'CREATE DATABASE name', requires admin privilege} (403 C{create admin user
    first or disable authentication} when no user exists), 401 for a wrong
    user name or password: L{REFUSED}, unless C{SHOW DATABASES} lists it
    (a user sees the databases it has rights on): then it exists, L{READY};
  - VictoriaMetrics, which has no databases, answers any C{/query} with 200 and
    its list of databases, and other stores 4xx: L{DECLINED}, nothing to do.

InfluxDB 2.x and 3 are not asked (Telegraf's v2 output does not make buckets
either): a write that finds its bucket or database missing says what to run
(L{create_command}).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from weather.server.influx import InfluxV1, InfluxV2, InfluxV3, IWriteTarget, error_message

#: The database is there (made now, or before).
READY = "ready"
#: The user may not make it (401, 403): a person must, or it exists already.
REFUSED = "refused"
#: Any other answer: a store without databases, or one that makes none.
DECLINED = "declined"
#: No answer (refused connection, timeout, 5xx): try again when a write needs it.
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Creation:
    """What came of asking for the database: an outcome above, and why."""

    outcome: str
    why: str = ""


def quote_identifier(name: str) -> str:
    """An InfluxQL identifier in double quotes, its backslashes and quotes escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def create_statement(database: str) -> str:
    """The InfluxQL that makes C{database}."""
    return f"CREATE DATABASE {quote_identifier(database)}"


def creatable(target: IWriteTarget) -> bool:
    """Whether the server makes C{target}'s database itself: InfluxDB 1.x only."""
    return isinstance(target, InfluxV1)


def missing_database(status: int, message: str) -> bool:
    """
    Whether a write's answer says its database or bucket does not exist:
    1.x's 404 C{database not found: "weather"}, 2.x's 404 C{bucket "weather"
    not found} (not a wrong path's C{404 page not found}, nor 2.x's missing
    organization).
    """
    text = message.lower()
    return status == 404 and (
        "database not found" in text or (text.startswith("bucket") and "not found" in text)
    )


def create_command(target: IWriteTarget) -> str:
    """The command a person runs to make C{target}'s database or bucket."""
    url = urlsplit(getattr(target, "base_url", ""))
    if isinstance(target, InfluxV2):
        where = "" if _is(url, 8086) else f" --host {shlex.quote(target.base_url)}"
        org = f" --org {shlex.quote(target.org)}" if target.org else ""
        return f"influx bucket create{where} --name {shlex.quote(target.bucket)}{org}"
    if isinstance(target, InfluxV3):
        where = "" if _is(url, 8181) else f" --host {shlex.quote(target.base_url)}"
        token = " --token ADMIN-TOKEN" if target.token else ""
        return f"influxdb3 create database{where}{token} {shlex.quote(target.database)}"
    database = getattr(target, "database", "")
    where = "" if _is(url, 8086) else f" -host {url.hostname} -port {url.port or 8086}"
    ssl = " -ssl" if url.scheme == "https" else ""
    return f"influx{where}{ssl} -username ADMIN -password '' -execute " + shlex.quote(
        create_statement(database)
    )


def _is(url: Any, port: int) -> bool:
    """Whether C{url} is the CLI's default: plain HTTP on this machine, at C{port}."""
    return (
        url.scheme == "http"
        and url.hostname in ("localhost", "127.0.0.1", "::1")
        and (url.port or 80) == port
    )


def create_database(
    target: InfluxV1, client: Any, clock: IReactorTime, timeout: float
) -> Deferred[Creation]:
    """
    Ask InfluxDB 1.x for C{target}'s database with treq-like C{client}, as
    C{target}'s user; the result never fails (a failure is L{UNREACHABLE}).
    """

    def ask(statement: str) -> Deferred[tuple[int, bytes]]:
        headers = {}
        if target.authorization is not None:
            headers["Authorization"] = [target.authorization]
        request = maybeDeferred(
            client.post,
            target.base_url.rstrip("/") + "/query",
            data={"q": statement},
            headers=headers,
        )
        request.addCallback(
            lambda response: response.content().addCallback(
                lambda body: (response.code, body)
            )
        )
        return request.addTimeout(timeout, clock)

    def listed_anyway(creation: Creation) -> Creation | Deferred[Creation]:
        """Refused: it may exist all the same (a user sees what it has rights on)."""
        if creation.outcome != REFUSED:
            return creation
        shown = ask("SHOW DATABASES").addCallback(lambda answer: listed(*answer))
        shown.addCallback(
            lambda names: Creation(READY, EXISTS) if target.database in names else creation
        )
        return shown.addErrback(lambda _: creation)

    request = ask(create_statement(target.database))
    request.addCallback(lambda answer: read_answer(*answer))
    request.addCallback(listed_anyway)
    return request.addErrback(_unreachable, timeout)


#: Why a database this user may not create is ready all the same.
EXISTS = "it exists; this user may not create databases, and need not"


def listed(status: int, body: bytes) -> set[str]:
    """The databases an answer to C{SHOW DATABASES} lists (none: not such an answer)."""
    if status != 200:
        return set()
    try:
        [series] = json.loads(body.decode("utf-8"))["results"][0]["series"]
        return {str(row[0]) for row in series.get("values", [])}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return set()


def read_answer(status: int, body: bytes) -> Creation:
    """What an answer to C{CREATE DATABASE} means."""
    if status >= 500:
        return Creation(UNREACHABLE, f"HTTP {status}: {error_message(body)}")
    if status in (401, 403):
        return Creation(REFUSED, f"HTTP {status}: {error_message(body)}")
    if not 200 <= status < 300:
        return Creation(DECLINED, f"HTTP {status}: {error_message(body)}")
    try:
        results = json.loads(body.decode("utf-8"))["results"]
        errors = [r["error"] for r in results if "error" in r]
        listed = any("series" in r for r in results)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return Creation(DECLINED, f"HTTP {status}: not InfluxDB's answer")
    if errors:
        return Creation(DECLINED, f"HTTP {status}: {'; '.join(map(str, errors))}")
    if listed:  # VictoriaMetrics answers every query with its list
        return Creation(
            DECLINED, "it answers with a list of databases: a store without any"
        )
    return Creation(READY, "created if it was missing")


def _unreachable(failure: Failure, timeout: float) -> Creation:
    if failure.check(TimeoutError):
        return Creation(UNREACHABLE, f"no answer within {timeout} s")
    if failure.check(CancelledError):
        return Creation(UNREACHABLE, "cancelled")
    return Creation(UNREACHABLE, failure.getErrorMessage() or failure.type.__name__)
