"""An in-memory fake of InfluxDB's HTTP write APIs, for unit tests.

``FakeInfluxDB`` is a ``twisted.web`` resource meant for
``treq.testing.StubTreq(FakeInfluxDB(...))``.  It serves

* InfluxDB 1.x ``POST /write?db=NAME[&rp=..][&precision=..]``,
* InfluxDB 2.x ``POST /api/v2/write?org=ORG&bucket=NAME[&precision=..]``,
* InfluxDB 3's ``POST /api/v3/write_lp?db=NAME[&precision=..][&accept_partial=..]``,
* ``GET``/``HEAD /ping``,
* InfluxDB 1.x ``POST /query`` with ``q=CREATE DATABASE "NAME"`` or ``SHOW
  DATABASES`` (and nothing else),

validates the line protocol the way InfluxDB does, stores accepted points in
``fake.points`` (nanosecond timestamps, as the server stores them) and answers
with the status codes, JSON bodies and headers that the real servers send.
Those were taken from a real ``influxd`` 1.6 (see
``tests/integration/influxd.py``), from InfluxDB 2.x's write handler, and for
InfluxDB 3 from its documentation and HTTP handler (influxdb3_server's
``http.rs``): a partial write is a 400 with ``{"error": "partial write of line
protocol occurred", "data": [{"original_line", "line_number" (from 1),
"error_message"}, ...]}`` and the good lines are stored; a wrong token is a 401
``{"error": "the request was not authenticated"}``; a body over the limit is a
500 ``max request size (N bytes) exceeded``.  So a client's error handling can
be tested without a server.  ``fail_next()`` queues canned responses (500, 503
with Retry-After, 429, ...) and ``fake.requests`` records every request.

Differences from the real servers, on purpose: field types are remembered per
database (or bucket) and measurement, where InfluxDB remembers them per shard
(one week of data by default), so the fake can only be stricter; there is
one user (1.x, an admin unless ``admin=False``) and one token (2.x), the
token with every permission; InfluxQL queries other than ``CREATE DATABASE``
are not served (influxd 1.6 answers that 200 ``{"results":[{"statement_id":0}]}``,
and for a user who is not an admin 403 ``error authorizing query: USER not
authorized to execute statement 'CREATE DATABASE NAME', requires admin
privilege``).  On ``/api/v3/write_lp``, a line that does not parse
is described in 1.x's words (InfluxDB 3's parser words it differently), the
``original_line`` of a type conflict is the line as sent (InfluxDB 3 writes it
out again from what it parsed), and a write creates its database, as InfluxDB 3
Core does (with ``v3_creates=False`` it answers 404 ``database not found:
"NAME"`` instead, in 1.x's words: InfluxDB 3 Core has no such answer).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Union

from twisted.web import resource
from twisted.web.server import Request

FieldValue = Union[float, int, str, bool]

#: InfluxDB 1.x: precision name -> nanoseconds per unit.  Unknown names,
#: including "us", are silently taken as nanoseconds, as influxd 1.x does.
V1_PRECISION: dict[str, int] = {
    "": 1,
    "n": 1,
    "ns": 1,
    "u": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}

#: InfluxDB 3's /api/v3/write_lp: precision name -> nanoseconds per unit
#: ("auto", the default, guesses from the timestamp's size).
V3_PRECISION: dict[str, int] = {
    "nanosecond": 1,
    "microsecond": 1_000,
    "millisecond": 1_000_000,
    "second": 1_000_000_000,
}

#: InfluxDB 2.x: the only precisions accepted; anything else is a 400.
V2_PRECISION: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
}

MIN_NANO_TIME = -9223372036854775806
MAX_NANO_TIME = 9223372036854775806
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1

_BOOLEANS = {
    "t": True,
    "T": True,
    "true": True,
    "True": True,
    "TRUE": True,
    "f": False,
    "F": False,
    "false": False,
    "False": False,
    "FALSE": False,
}
_FLOAT = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FLOAT_NO_EXPONENT_DIGITS = re.compile(r"-?(?:\d+\.?\d*|\.\d+)[eE][+-]?")
_INTEGER = re.compile(r"-?\d+i")
_UNSIGNED = re.compile(r"\d+u")
_TIMESTAMP = re.compile(r"-?\d+")
_CREATE_DATABASE = re.compile(
    r'\s*CREATE\s+DATABASE\s+(?P<name>"(?:[^"\\]|\\.)*"|\w+)\s*;?\s*\Z', re.IGNORECASE
)


class Point(NamedTuple):
    """One accepted point, as InfluxDB stores it (timestamp in ns)."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    timestamp: int


class RecordedRequest(NamedTuple):
    """One request the fake received (header names in lower case)."""

    method: str
    path: str
    args: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class LineProtocolError(ValueError):
    """A line that InfluxDB would refuse, with InfluxDB's wording."""

    def __init__(self, line: str, reason: str):
        super().__init__(f"unable to parse '{line}': {reason}")
        self.line = line
        self.reason = reason


class _Fault(NamedTuple):
    status: int
    body: bytes
    headers: dict[str, str]
    path: str | None


# -- line protocol -----------------------------------------------------------


def split_lines(text: str) -> list[str]:
    """Split a write body into lines as InfluxDB does.

    A newline inside a quoted string field value does not end the line;
    blank lines and ``#`` comments are dropped; leading white space is
    ignored but a trailing carriage return is kept (and then fails to parse,
    as in InfluxDB).
    """
    lines: list[str] = []
    i, n, start = 0, len(text), 0
    quoted = in_fields = False
    equals = commas = 0
    while i <= n:
        if i == n or (text[i] == "\n" and not quoted):
            line = text[start:i].lstrip(" \t")
            if line and not line.startswith("#"):
                lines.append(line)
            start = i + 1
            quoted = in_fields = False
            equals = commas = 0
            i += 1
            continue
        c = text[i]
        if c == "\\" and i + 2 < n:
            i += 2
            continue
        if c == " ":
            in_fields = True
        if in_fields:
            if not quoted and c == "=":
                equals += 1
            elif not quoted and c == ",":
                commas += 1
            elif c == '"' and equals > commas:
                quoted = not quoted
        i += 1
    return lines


def _scan(line: str, i: int, stops: str) -> int:
    """Index of the first unescaped character of ``stops`` at or after i."""
    n = len(line)
    while i < n:
        if line[i] == "\\" and i + 1 < n:
            i += 2
            continue
        if line[i] in stops:
            return i
        i += 1
    return n


def _unescape(raw: str, chars: str) -> str:
    """Undo backslash escapes of ``chars``; other backslashes stay."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in chars:
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def _field_value(line: str, raw: str, allow_unsigned: bool) -> FieldValue:
    """Decode an unquoted field value: number or boolean."""
    if raw[0] in "-.0123456789":
        if _INTEGER.fullmatch(raw):
            value = int(raw[:-1])
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise LineProtocolError(
                    line,
                    f"unable to parse integer {raw[:-1]}: strconv.ParseInt: "
                    f'parsing "{raw[:-1]}": value out of range',
                )
            return value
        if _UNSIGNED.fullmatch(raw) and allow_unsigned:
            value = int(raw[:-1])
            if value > _UINT64_MAX:
                raise LineProtocolError(
                    line,
                    f"unable to parse unsigned {raw[:-1]}: strconv.ParseUint: "
                    f'parsing "{raw[:-1]}": value out of range',
                )
            return value
        if _FLOAT.fullmatch(raw):
            number = float(raw)
            if number in (float("inf"), float("-inf")):
                raise LineProtocolError(line, "invalid float")
            return number
        if _FLOAT_NO_EXPONENT_DIGITS.fullmatch(raw):
            raise LineProtocolError(line, "invalid float")
        raise LineProtocolError(line, "invalid number")
    if raw in _BOOLEANS:
        return _BOOLEANS[raw]
    if raw.lower() == "nan":
        raise LineProtocolError(line, "invalid number")
    raise LineProtocolError(line, "invalid boolean")


def _parse_line(
    line: str, multiplier: int, now_ns: int, allow_unsigned: bool
) -> tuple[Point, list[tuple[str, FieldValue]]]:
    """Parse one line; also return its fields in order, duplicates kept."""
    n = len(line)
    i = _scan(line, 0, ", ")
    if i == 0:
        raise LineProtocolError(line, "missing measurement")
    measurement = _unescape(line[:i], ", ")
    tags: dict[str, str] = {}
    while i < n and line[i] == ",":
        key_end = _scan(line, i + 1, "=, ")
        if key_end == i + 1:
            raise LineProtocolError(line, "missing tag key")
        if key_end == n or line[key_end] != "=":
            raise LineProtocolError(line, "missing tag value")
        value_end = _scan(line, key_end + 1, ", ")
        if value_end == key_end + 1:
            raise LineProtocolError(line, "missing tag value")
        key = _unescape(line[i + 1 : key_end], ",= ")
        if key in tags:
            raise LineProtocolError(line, "duplicate tags")
        tags[key] = _unescape(line[key_end + 1 : value_end], ",= ")
        i = value_end
    while i < n and line[i] == " ":
        i += 1
    if i == n:
        raise LineProtocolError(line, "missing fields")

    pairs: list[tuple[str, FieldValue]] = []
    while True:
        key_end = _scan(line, i, "=, ")
        if key_end == n or line[key_end] != "=":
            raise LineProtocolError(line, "invalid field format")
        if key_end == i:
            raise LineProtocolError(line, "missing field key")
        key = _unescape(line[i:key_end], ",= ")
        i = key_end + 1
        if i < n and line[i] == '"':
            end = _scan(line, i + 1, '"')
            if end == n:
                raise LineProtocolError(line, "unbalanced quotes")
            value: FieldValue = _unescape(line[i + 1 : end], '"\\')
            i = end + 1
            if i < n and line[i] not in ", ":
                raise LineProtocolError(line, "invalid field format")
        else:
            end = i
            while end < n and line[end] not in ", ":
                end += 1
            if end == i:
                raise LineProtocolError(line, "missing field value")
            value = _field_value(line, line[i:end], allow_unsigned)
            i = end
        pairs.append((key, value))
        if i < n and line[i] == ",":
            i += 1
            continue
        break

    while i < n and line[i] == " ":
        i += 1
    if i == n:
        timestamp = now_ns
    else:
        end = i
        while end < n and line[end] != " ":
            end += 1
        raw = line[i:end]
        rest = line[end:].strip(" ")
        if rest:
            raise LineProtocolError(line, "point is invalid")
        if not _TIMESTAMP.fullmatch(raw):
            raise LineProtocolError(line, "bad timestamp")
        units = int(raw)
        if not _INT64_MIN <= units <= _INT64_MAX:
            raise LineProtocolError(
                line, f'strconv.ParseInt: parsing "{raw}": value out of range'
            )
        timestamp = units * multiplier
        if not MIN_NANO_TIME <= timestamp <= MAX_NANO_TIME:
            raise LineProtocolError(
                line, f"time outside range {MIN_NANO_TIME} - {MAX_NANO_TIME}"
            )
    return Point(measurement, tags, dict(pairs), timestamp), pairs


def parse_line(
    line: str, multiplier: int = 1, now_ns: int = 0, allow_unsigned: bool = False
) -> Point:
    """Parse one line of line protocol into a Point.

    ``multiplier`` converts the timestamp to ns (see V1_PRECISION); ``now_ns``
    is used when the line has none.  Raises LineProtocolError.
    """
    return _parse_line(line, multiplier, now_ns, allow_unsigned)[0]


def _type_name(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string"


def _go_json(obj: object) -> bytes:
    """Encode like Go's encoding/json: compact, with <, > and & escaped."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.encode("utf-8")


# -- the resource ------------------------------------------------------------


class _Reply(Exception):
    """Raised inside a handler to answer at once."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers


class FakeInfluxDB(resource.Resource):
    """InfluxDB 1.x and 2.x write endpoints, in memory.

    ``databases`` are the 1.x databases; ``buckets`` the 2.x buckets of each
    org in ``orgs`` (default: the same names as ``databases``).  Setting
    ``username`` turns on 1.x authentication (Basic auth or u/p
    parameters), an admin's unless ``admin=False`` (a user who may write
    but not create databases); setting ``token`` requires ``Authorization: Token ...``
    (or ``Bearer``) on 2.x writes, which otherwise take any or no token.
    Bodies larger than ``max_body_size`` bytes (after gzip) get a 413.
    ``clock`` gives the time in ns for points that carry none.

    After requests, ``points`` holds every accepted Point in order,
    ``points_in(name)`` those of one database or bucket, and ``requests``
    every RecordedRequest.
    """

    isLeaf = True

    def __init__(
        self,
        databases: Iterable[str] = ("weather",),
        *,
        username: str | None = None,
        password: str | None = None,
        retention_policies: Iterable[str] = ("autogen",),
        orgs: Iterable[str] = ("weather",),
        buckets: Iterable[str] | None = None,
        token: str | None = None,
        max_body_size: int = 25_000_000,
        clock: Callable[[], int] = time.time_ns,
        v1_version: str = "1.6.7~rc0",
        v2_version: str = "v2.7.11",
        admin: bool = True,
        v3_creates: bool = True,
    ):
        super().__init__()
        self.databases: set[str] = set(databases)
        self.username = username
        self.password = password
        self.retention_policies: set[str] = set(retention_policies)
        self.orgs: set[str] = set(orgs)
        self.buckets: set[str] = set(self.databases if buckets is None else buckets)
        self.token = token
        self.max_body_size = max_body_size
        self.clock = clock
        self.v1_version = v1_version
        self.v2_version = v2_version
        self.admin = admin
        self.v3_creates = v3_creates
        self.points: list[Point] = []
        self.points_by_target: dict[str, list[Point]] = {}
        self.requests: list[RecordedRequest] = []
        #: (database or bucket, measurement) -> field name -> type name.
        self.field_types: dict[tuple[str, str], dict[str, str]] = {}
        self._faults: list[_Fault] = []

    # -- test controls -------------------------------------------------

    def fail_next(
        self,
        status: int,
        body: bytes | str | Mapping[str, object] = b"",
        headers: Mapping[str, str] | None = None,
        count: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests with this response instead.

        ``body`` may be bytes, text, or a mapping sent as JSON.  With
        ``path`` (e.g. "/write") only requests to that path use the fault,
        else any request does, /ping included.  Faults queue up in order.
        E.g. ``fail_next(503, headers={"Retry-After": "7"})``.
        """
        if isinstance(body, Mapping):
            payload = _go_json(dict(body))
            all_headers = {"Content-Type": "application/json"}
        else:
            payload = body.encode("utf-8") if isinstance(body, str) else body
            all_headers = {}
        all_headers.update(headers or {})
        for _ in range(count):
            self._faults.append(_Fault(status, payload, all_headers, path))

    @property
    def pending_faults(self) -> int:
        """How many queued faults have not been used yet."""
        return len(self._faults)

    def points_in(self, name: str) -> list[Point]:
        """Points accepted into database or bucket ``name``."""
        return list(self.points_by_target.get(name, []))

    # -- dispatch ------------------------------------------------------

    def render(self, request: Request) -> bytes:
        """Record the request, then answer with a fault or the API."""
        method = request.method.decode("ascii")
        path = request.path.decode("utf-8", "replace")
        body = request.content.read() if request.content is not None else b""
        args = {
            k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
            for k, vs in request.args.items()
        }
        headers = {
            name.decode("latin-1").lower(): b", ".join(values).decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        self.requests.append(RecordedRequest(method, path, args, headers, body))

        for index, fault in enumerate(self._faults):
            if fault.path is None or fault.path == path:
                del self._faults[index]
                request.defaultContentType = None
                return self._send(request, fault.status, fault.body, fault.headers)

        try:
            if path == "/ping":
                if method not in ("GET", "HEAD"):
                    self._plain_405("GET, HEAD, OPTIONS")
                raise _Reply(204, b"", self._v1_headers())
            if path == "/write":
                if method != "POST":
                    self._plain_405("POST, OPTIONS")
                self._write_v1(args, headers, body)
            elif path == "/query":
                self._query_v1(args, headers)
            elif path == "/api/v2/write":
                if method != "POST":
                    raise self._v2_error(405, "method not allowed", "method not allowed")
                self._write_v2(args, headers, body)
            elif path == "/api/v3/write_lp":
                if method != "POST":
                    raise _Reply(405, b"Method Not Allowed", {})
                self._write_v3(args, headers, body)
            else:
                raise _Reply(
                    404,
                    b"404 page not found\n",
                    {
                        "Content-Type": "text/plain; charset=utf-8",
                        "X-Content-Type-Options": "nosniff",
                    },
                )
        except _Reply as reply:
            return self._send(request, reply.status, reply.body, reply.headers)
        raise AssertionError("handlers always reply")  # pragma: no cover

    @staticmethod
    def _send(
        request: Request, status: int, body: bytes, headers: Mapping[str, str]
    ) -> bytes:
        request.setResponseCode(status)
        for name, value in headers.items():
            # Go replaces CR/LF in header values with spaces; Twisted refuses them.
            request.setHeader(name, value.replace("\r", " ").replace("\n", " "))
        if status in (204, 304) or request.method == b"HEAD":
            return b""
        return body

    def _plain_405(self, allow: str) -> None:
        raise _Reply(
            405,
            b"Method Not Allowed\n",
            {
                "Allow": allow,
                "Content-Type": "text/plain; charset=utf-8",
                "X-Content-Type-Options": "nosniff",
                "X-Influxdb-Build": "OSS",
                "X-Influxdb-Version": self.v1_version,
            },
        )

    # -- shared steps --------------------------------------------------

    def _decode_body(self, headers: Mapping[str, str], body: bytes) -> bytes:
        """Gunzip if asked to; raises ValueError with Go's gzip wording."""
        if headers.get("content-encoding", "").strip().lower() != "gzip":
            return body
        if len(body) < 10:
            raise ValueError("unexpected EOF")
        if body[:2] != b"\x1f\x8b":
            raise ValueError("gzip: invalid header")
        try:
            return gzip.decompress(body)
        except EOFError:
            raise ValueError("unexpected EOF") from None
        except (OSError, zlib.error):
            raise ValueError("gzip: invalid checksum") from None

    def _parse(
        self, text: str, multiplier: int, allow_unsigned: bool
    ) -> tuple[list[tuple[Point, list[tuple[str, FieldValue]]]], list[str]]:
        """Parse every line; return the good ones and the error messages."""
        now = self.clock()
        parsed: list[tuple[Point, list[tuple[str, FieldValue]]]] = []
        errors: list[str] = []
        for line in split_lines(text):
            try:
                parsed.append(_parse_line(line, multiplier, now, allow_unsigned))
            except LineProtocolError as e:
                errors.append(str(e))
        return parsed, errors

    def _store(
        self, target: str, parsed: list[tuple[Point, list[tuple[str, FieldValue]]]]
    ) -> tuple[str | None, int]:
        """Store points, dropping those InfluxDB's storage would refuse.

        Returns (reason of the first refusal or None, number dropped).
        """
        first: str | None = None
        dropped = 0
        for point, pairs in parsed:
            reason = self._refusal(target, point, pairs)
            if reason is not None:
                first = first or reason
                dropped += 1
                continue
            known = self.field_types.setdefault((target, point.measurement), {})
            for key, value in pairs:
                known.setdefault(key, _type_name(value))
            self.points.append(point)
            self.points_by_target.setdefault(target, []).append(point)
        return first, dropped

    def _refusal(
        self, target: str, point: Point, pairs: list[tuple[str, FieldValue]]
    ) -> str | None:
        """Why storage would drop this point (reserved names, type conflicts)."""
        m = point.measurement
        if "time" in point.tags:
            return f'invalid tag key: input tag "time" on measurement "{m}" is invalid'
        if "time" in point.fields:
            return f'invalid field name: input field "time" on measurement "{m}" is invalid'
        conflict = self._conflict(target, m, pairs)
        if conflict is None:
            return None
        key, kind, existing = conflict
        return (
            f'field type conflict: input field "{key}" on measurement '
            f'"{m}" is type {kind}, already exists as type {existing}'
        )

    def _conflict(
        self, target: str, measurement: str, pairs: list[tuple[str, FieldValue]]
    ) -> tuple[str, str, str] | None:
        """The first field whose type is not the stored one: key, type, stored type."""
        known = dict(self.field_types.get((target, measurement), {}))
        for key, value in pairs:
            kind = _type_name(value)
            existing = known.setdefault(key, kind)
            if existing != kind:
                return key, kind, existing
        return None

    # -- InfluxDB 1.x --------------------------------------------------

    def _v1_headers(self) -> dict[str, str]:
        request_id = str(uuid.uuid1())
        return {
            "Content-Type": "application/json",
            "Request-Id": request_id,
            "X-Influxdb-Build": "OSS",
            "X-Influxdb-Version": self.v1_version,
            "X-Request-Id": request_id,
        }

    def _v1_error(self, status: int, message: str) -> _Reply:
        headers = self._v1_headers()
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="InfluxDB"'
        else:
            headers["X-Influxdb-Error"] = message
        return _Reply(status, _go_json({"error": message}) + b"\n", headers)

    def _check_v1_auth(
        self, args: Mapping[str, list[str]], headers: Mapping[str, str]
    ) -> None:
        """1.x credentials: u/p query parameters first, then Basic auth."""
        if self.username is None:
            return
        user = (args.get("u") or [""])[0]
        password = (args.get("p") or [""])[0]
        if not (user and password):
            scheme, _, credentials = headers.get("authorization", "").partition(" ")
            if scheme != "Basic":
                raise self._v1_error(401, "unable to parse authentication credentials")
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise self._v1_error(
                    401, "unable to parse authentication credentials"
                ) from None
            user, sep, password = decoded.partition(":")
            if not sep:
                raise self._v1_error(401, "unable to parse authentication credentials")
        if (user, password) != (self.username, self.password):
            raise self._v1_error(401, "authorization failed")

    def _write_v1(
        self, args: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> None:
        """Follow influxd 1.x's serveWrite, checks in its order."""
        self._check_v1_auth(args, headers)
        db = (args.get("db") or [""])[0]
        if not db:
            raise self._v1_error(400, "database is required")
        if db not in self.databases:
            raise self._v1_error(404, f'database not found: "{db}"')
        try:
            data = self._decode_body(headers, body)
        except ValueError as e:
            raise self._v1_error(400, str(e)) from None
        if len(data) > self.max_body_size:
            raise self._v1_error(413, "Request Entity Too Large")
        precision = (args.get("precision") or [""])[0]
        text = data.decode("utf-8", "replace")
        parsed, errors = self._parse(text, V1_PRECISION.get(precision, 1), False)
        parse_error = "\n".join(errors)
        if errors and not parsed:
            raise self._v1_error(400, parse_error)
        rp = (args.get("rp") or [""])[0]
        if rp and rp not in self.retention_policies:
            raise self._v1_error(500, f"retention policy not found: {rp}")
        reason, dropped = self._store(db, parsed)
        if reason is not None:
            raise self._v1_error(400, f"partial write: {reason} dropped={dropped}")
        if errors:
            raise self._v1_error(400, f"partial write: {parse_error} dropped=0")
        raise _Reply(204, b"", self._v1_headers())

    def _query_v1(self, args: Mapping[str, list[str]], headers: Mapping[str, str]) -> None:
        """1.x's /query: CREATE DATABASE, SHOW DATABASES (q in the URL or form)."""
        self._check_v1_auth(args, headers)
        query = (args.get("q") or [""])[0]
        if query.strip().upper() == "SHOW DATABASES":  # the user has rights on all
            series: dict[str, object] = {"name": "databases", "columns": ["name"]}
            if self.databases:
                series["values"] = [[name] for name in sorted(self.databases)]
            document = {"results": [{"statement_id": 0, "series": [series]}]}
            raise _Reply(200, _go_json(document) + b"\n", self._v1_headers())
        match = _CREATE_DATABASE.match(query)
        if match is None:
            raise self._v1_error(400, f"the fake serves no such query: {query!r}")
        name = match["name"]
        if name.startswith('"'):
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        if self.username is not None and not self.admin:
            raise self._v1_error(
                403,
                f"error authorizing query: {self.username} not authorized to execute "
                f"statement 'CREATE DATABASE {name}', requires admin privilege",
            )
        self.databases.add(name)
        raise _Reply(200, b'{"results":[{"statement_id":0}]}\n', self._v1_headers())

    # -- InfluxDB 2.x --------------------------------------------------

    def _v2_headers(self) -> dict[str, str]:
        return {"X-Influxdb-Build": "OSS", "X-Influxdb-Version": self.v2_version}

    def _v2_error(self, status: int, code: str, message: str) -> _Reply:
        headers = self._v2_headers()
        headers["Content-Type"] = "application/json; charset=utf-8"
        headers["X-Platform-Error-Code"] = code
        return _Reply(status, _go_json({"code": code, "message": message}), headers)

    def _write_v2(
        self, args: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> None:
        """Follow InfluxDB 2.x's write handler, checks in its order."""
        if self.token is not None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme not in ("Token", "Bearer") or token.strip() != self.token:
                raise self._v2_error(401, "unauthorized", "unauthorized access")
        precision = (args.get("precision") or ["ns"])[0] or "ns"
        if precision not in V2_PRECISION:
            raise self._v2_error(
                400,
                "invalid",
                "invalid precision; valid precision units are ns, us, ms, and s",
            )
        bucket = (args.get("bucket") or [""])[0]
        if not bucket:
            raise self._v2_error(404, "not found", "bucket not found")
        try:
            data = self._decode_body(headers, body)
        except ValueError as e:
            if "header" in str(e):
                raise self._v2_error(
                    400, "invalid", "gzipped HTTP body contains an invalid header"
                ) from None
            raise self._v2_error(
                500, "internal error", f"unable to read data: {e}"
            ) from None
        org = (args.get("org") or args.get("orgID") or [""])[0]
        if not org:
            raise self._v2_error(400, "invalid", "Please provide either orgID or org")
        if org not in self.orgs:
            raise self._v2_error(404, "not found", f'organization name "{org}" not found')
        if bucket not in self.buckets:
            raise self._v2_error(404, "not found", f'bucket "{bucket}" not found')
        if len(data) > self.max_body_size:
            raise self._v2_error(
                413,
                "request too large",
                "unable to read data: points batch is too large",
            )
        if not data:
            raise self._v2_error(400, "invalid", "writing requires points")
        text = data.decode("utf-8", "replace")
        parsed, errors = self._parse(text, V2_PRECISION[precision], True)
        if errors:
            # 2.x refuses the whole batch when any line is malformed.
            raise self._v2_error(400, "invalid", "\n".join(errors))
        reason, dropped = self._store(bucket, parsed)
        if reason is not None:
            raise self._v2_error(
                422,
                "unprocessable entity",
                "failure writing points to database: partial write: "
                f"{reason} dropped={dropped}",
            )
        raise _Reply(204, b"", self._v2_headers())

    # -- InfluxDB 3 ----------------------------------------------------

    @staticmethod
    def _v3_error(status: int, error: str, data: object = None) -> _Reply:
        """InfluxDB 3's ErrorMessage: C{{"error": ..., "data": ...}}, compact."""
        document: dict[str, object] = {"error": error}
        if data is not None:
            document["data"] = data
        return _Reply(status, json.dumps(document, separators=(",", ":")).encode(), {})

    def _write_v3(
        self, args: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> None:
        """Follow InfluxDB 3's write_lp handler, checks in its order."""
        if self.token is not None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme not in ("Token", "Bearer") or token.strip() != self.token:
                raise _Reply(401, b'{"error": "the request was not authenticated"}', {})
        db = (args.get("db") or [None])[0]
        if db is None:
            raise _Reply(400, b"missing query parameter 'db'", {})
        if not db:
            raise self._v3_error(400, "db name cannot be empty")
        precision = (args.get("precision") or ["auto"])[0]
        if precision != "auto" and precision not in V3_PRECISION:
            raise _Reply(
                400,
                f"serde error: unknown variant `{precision}`, expected one of `auto`, "
                "`second`, `millisecond`, `microsecond`, `nanosecond`".encode(),
                {},
            )
        accept_partial = (args.get("accept_partial") or ["true"])[0] != "false"
        if len(body) > self.max_body_size:
            message = f"max request size ({self.max_body_size} bytes) exceeded"
            raise _Reply(500, message.encode(), {})
        try:
            data = self._decode_body(headers, body)
        except ValueError as e:
            raise _Reply(400, f"error decoding gzip stream: {e}".encode(), {}) from None
        if db not in self.databases and not self.v3_creates:
            raise self._v3_error(404, f'database not found: "{db}"')
        self.databases.add(db)  # InfluxDB 3 Core creates a database on first write
        now = self.clock()
        stored, types = len(self.points), {k: dict(v) for k, v in self.field_types.items()}
        errors: list[dict[str, object]] = []
        for number, line in enumerate(split_lines(data.decode("utf-8", "replace")), 1):
            try:
                point, pairs = _parse_line(line, _v3_multiplier(precision, line), now, True)
                message = None
            except LineProtocolError as e:
                message = str(e)
            else:
                conflict = self._conflict(db, point.measurement, pairs)
                if conflict is not None:
                    key, kind, existing = conflict
                    message = (
                        f"invalid column type for column '{key}', expected "
                        f"iox::column_type::field::{existing}, "
                        f"got iox::column_type::field::{kind}"
                    )
            if message is None:
                self._store(db, [(point, pairs)])
                continue
            error = {"original_line": line, "line_number": number, "error_message": message}
            if not accept_partial:  # all or nothing: forget what this request stored
                for point in self.points[stored:]:
                    self.points_by_target[db].remove(point)
                del self.points[stored:]
                self.field_types = types
                raise self._v3_error(400, "parsing failed for write_lp endpoint", error)
            errors.append(error)
        if errors:
            raise self._v3_error(400, "partial write of line protocol occurred", errors)
        raise _Reply(204, b"", {})


def _v3_multiplier(precision: str, line: str) -> int:
    """Nanoseconds per unit of a line's timestamp; "auto" guesses from its size."""
    if precision != "auto":
        return V3_PRECISION[precision]
    stamp = line.rstrip().rpartition(" ")[2].lstrip("-")
    size = int(stamp) if stamp.isdigit() else 0
    for limit, multiplier in ((5e9, 1_000_000_000), (5e12, 1_000_000), (5e15, 1_000)):
        if size < limit:
            return multiplier
    return 1
