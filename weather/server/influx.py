"""
Where points are written: InfluxDB's HTTP write APIs.

A target knows the URL, query parameters and headers of a write request, and
how to describe itself in a log line without its credentials.  InfluxDB 1.x
takes C{/write?db=...} with optional Basic authentication; InfluxDB 2.x and 3.x
take C{/api/v2/write?org=...&bucket=...} with a token.
"""

from __future__ import annotations

import base64
import json
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
    def headers(self) -> dict[str, list[str]]:
        if self.username is None:
            return _headers(None)
        token = f"{self.username}:{self.password or ''}".encode()
        return _headers("Basic " + base64.b64encode(token).decode())

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
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
