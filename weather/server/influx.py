"""
Where points are written: InfluxDB's HTTP write APIs.

A target knows the URL, query parameters and headers of a write request, and
how to describe itself in a log line without its credentials.  InfluxDB 1.x
takes C{/write?db=...} with optional Basic authentication; InfluxDB 2.x (and
3.x's compatible endpoint) C{/api/v2/write?org=...&bucket=...} with a token;
InfluxDB 3's own API C{/api/v3/write_lp?db=...} with a token.

L{read_refusal} reads, from a 400 or 422 answer, which lines of a request
InfluxDB refused, where its message names them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from zope.interface import Attribute, Interface, implementer


class IWriteTarget(Interface):
    """An HTTP endpoint that accepts line protocol."""

    url = Attribute("The full URL of the write endpoint (str).")
    params = Attribute("Query parameters of a write request (dict of str).")
    headers = Attribute("Headers of a write request (dict of str to list of str).")

    def describe() -> str:
        """Where points go, for log lines: never any credential."""


def _headers(authorization: str | None) -> dict[str, list[str]]:
    """A write request's headers, with its C{Authorization} if any."""
    headers = {"Content-Type": ["text/plain; charset=utf-8"]}
    if authorization is not None:
        headers["Authorization"] = [authorization]
    return headers


@implementer(IWriteTarget)
@dataclass(frozen=True)
class InfluxV1:
    """InfluxDB 1.x: C{POST /write?db=DATABASE}."""

    base_url: str
    database: str
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/write"

    @property
    def params(self) -> dict[str, str]:
        params = {"db": self.database, "precision": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        return params

    @property
    def authorization(self) -> str | None:
        """The C{Authorization} of every request (writes, C{CREATE DATABASE})."""
        if self.username is None:
            return None
        token = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(token).decode()

    @property
    def headers(self) -> dict[str, list[str]]:
        return _headers(self.authorization)

    def describe(self) -> str:
        user = f" as user {self.username}" if self.username else ""
        rp = f" retention policy {self.retention_policy}" if self.retention_policy else ""
        return f"InfluxDB 1.x at {self.base_url} database {self.database}{rp}{user}"


@implementer(IWriteTarget)
@dataclass(frozen=True)
class InfluxV2:
    """InfluxDB 2.x / 3.x: C{POST /api/v2/write?org=ORG&bucket=BUCKET} with a token."""

    base_url: str
    bucket: str
    org: str | None = None
    token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/api/v2/write"

    @property
    def params(self) -> dict[str, str]:
        params = {"bucket": self.bucket, "precision": "ns"}
        if self.org:
            params["org"] = self.org
        return params

    @property
    def headers(self) -> dict[str, list[str]]:
        return _headers(f"Token {self.token}" if self.token else None)

    def describe(self) -> str:
        org = f" org {self.org}" if self.org else ""
        return f"InfluxDB 2.x/3.x at {self.base_url} bucket {self.bucket}{org}"


@implementer(IWriteTarget)
@dataclass(frozen=True)
class InfluxV3:
    """
    InfluxDB 3 Core/Enterprise: C{POST /api/v3/write_lp?db=DATABASE} with a token.
    With C{accept_partial=true} the good lines of a batch are stored and the
    answer names each refused line (see L{read_refusal}).
    """

    base_url: str
    database: str
    token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/api/v3/write_lp"

    @property
    def params(self) -> dict[str, str]:
        return {"db": self.database, "precision": "nanosecond", "accept_partial": "true"}

    @property
    def headers(self) -> dict[str, list[str]]:
        return _headers(f"Bearer {self.token}" if self.token else None)

    def describe(self) -> str:
        return f"InfluxDB 3 at {self.base_url} database {self.database}"


def too_large(status: int, message: str) -> bool:
    """
    Whether an answer says the request was too large: 413, or InfluxDB 3's
    C{/api/v3/write_lp}, which answers 500 C{max request size (N bytes) exceeded}.
    """
    return status == 413 or (status == 500 and message.startswith("max request size"))


def refuses_points(status: int, message: str) -> bool:
    """
    Whether an answer refuses the points themselves (400, 422), rather than
    the request: VictoriaMetrics answers a path it does not serve (a wrong
    prefix in C{--influx-url}) with 400 C{unsupported path requested}, where
    InfluxDB answers 404; that is a mistake to fix, not points to quarantine.
    """
    return status in (400, 422) and "unsupported path requested" not in message


def error_message(body: bytes, limit: int = 500) -> str:
    """
    InfluxDB's own words from an error response body: C{{"error": ...}} (1.x)
    or C{{"message": ...}} (2.x/3.x), else the body as text, shortened.
    """
    text = body[:65536].decode("utf-8", "replace").strip()
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or a proxy's oddity
        document = None
    if isinstance(document, dict):
        for key in ("error", "message"):
            if isinstance(document.get(key), str):
                text = document[key]
                break
    return _tidy(text, limit)


def _tidy(text: str, limit: int = 500) -> str:
    """C{text} on one line, white space collapsed, shortened to C{limit}."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Refusal:
    """The lines of a request InfluxDB's answer names as refused."""

    #: Index in the request of each refused line -> InfluxDB's message for it.
    lines: dict[int, str]
    #: Whether InfluxDB says it stored every other line of the request.
    rest_stored: bool


_PARSE_ERROR = "unable to parse '"
_PARTIAL = re.compile(r"partial write: (?P<reason>.*) dropped=(?P<dropped>\d+)", re.DOTALL)
_CONFLICT = re.compile(
    r'field type conflict: input field "(?P<field>.+)" on measurement '
    r'"(?P<measurement>.+)" is type (?P<type>\w+), already exists as type \w+'
)
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def read_refusal(body: bytes, lines: Sequence[bytes]) -> Refusal | None:
    """
    Which of C{lines} (one request's) a 400/422 answer's C{body} names as
    refused, or None where it names none of them.  Understood:

      - InfluxDB 3's partial write, C{{"error": ..., "data": [{"line_number":
        N, "error_message": ...}, ...]}} (N counts from 1): the other lines
        are stored;
      - InfluxDB 1.x/2.x parse errors, C{unable to parse 'LINE': REASON}, one
        a line; with 1.x's C{partial write: ... dropped=0} the other lines
        are stored, else (2.x refuses the whole request) they are not;
      - their C{partial write: field type conflict: input field "F" on
        measurement "M" is type T, ...dropped=N}: the lines of M whose field
        F is of type T; stored are the others if that makes N.
    """
    try:
        document = json.loads(body[: 1 << 24].decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("data"), list):
        return _v3_refusal(document["data"], len(lines))
    text = next(
        (document[k] for k in ("error", "message") if isinstance(document.get(k), str)), ""
    )
    return _named_refusal(text, lines)


def _v3_refusal(data: list, count: int) -> Refusal | None:
    refused: dict[int, str] = {}
    for item in data:
        if not isinstance(item, dict):
            return None
        number, message = item.get("line_number"), item.get("error_message")
        if not (isinstance(number, int) and 1 <= number <= count):
            return None  # not the lines we sent: trust none of it
        refused[number - 1] = _tidy(str(message))
    return Refusal(refused, rest_stored=True) if refused else None


def _named_refusal(text: str, lines: Sequence[bytes]) -> Refusal | None:
    partial = _PARTIAL.search(text)
    reason = partial["reason"] if partial else text
    dropped = int(partial["dropped"]) if partial else None
    refused: dict[int, str] = {}
    if reason.startswith(_PARSE_ERROR):
        where: dict[bytes, list[int]] = {}
        for index, line in enumerate(lines):
            where.setdefault(line, []).append(index)
        for error in reason.split("\n" + _PARSE_ERROR):
            error = error.removeprefix(_PARSE_ERROR)
            # The line itself may hold "': ": try each place it could end.
            ends = [m.start() for m in re.finditer("': ", error)]
            found = [
                where[error[:end].encode()] for end in ends if error[:end].encode() in where
            ]
            if not found:
                return None  # a line we did not send, or cut short
            for index in found[0]:
                refused[index] = _tidy(_PARSE_ERROR + error)
        return Refusal(refused, rest_stored=dropped == 0)
    conflict = _CONFLICT.match(reason)
    if conflict is None:
        return None
    measurement = conflict["measurement"].translate(_ESCAPE_MEASUREMENT).encode()
    key = conflict["field"].translate(_ESCAPE_KEY).encode()
    for index, line in enumerate(lines):
        if _field_type(line, measurement, key) == conflict["type"]:
            refused[index] = _tidy(text)
    if not refused or len(refused) != dropped:
        return None  # more was dropped, or fewer (another shard): halve instead
    return Refusal(refused, rest_stored=True)


def _field_type(line: bytes, measurement: bytes, key: bytes) -> str | None:
    """
    The type InfluxDB gives field C{key} of C{line} if the line is of
    C{measurement} (both escaped as in line protocol), else None.
    """
    parts = _split(line, b" ")  # a string field holding a space is cut: then no match
    if len(parts) < 2 or _split(parts[0], b",", 1)[0] != measurement:
        return None
    for pair in _split(parts[1], b","):
        name, value = (_split(pair, b"=", 1) + [b""])[:2]
        if name != key:
            continue
        if value.startswith(b'"'):
            return "string"
        if value.lower() in (b"t", b"true", b"f", b"false"):
            return "boolean"
        kind = {b"i": "integer", b"u": "unsigned"}.get(value[-1:], "float")
        try:
            float(value.removesuffix(b"i").removesuffix(b"u"))
        except ValueError:
            return None
        return kind
    return None


def _split(text: bytes, separator: bytes, most: int = 0) -> list[bytes]:
    """C{text} split at each C{separator} not escaped by a backslash (at C{most})."""
    return re.split(rb"(?<!\\)" + re.escape(separator), text, maxsplit=most)
