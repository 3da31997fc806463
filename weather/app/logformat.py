"""
The daemon's log lines: twistd's text format, or one JSON object per line,
to a log file or a text stream such as stdout.  Neither ever raises on what
an event holds: characters the output cannot take are escaped.
"""

from __future__ import annotations

import codecs
import json
import math
import time
from datetime import datetime, timezone
from typing import IO, Any, cast

from twisted.logger import (
    FileLogObserver,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

__all__ = ["MAX_FIELD_TEXT", "event_as_json", "json_observer", "text_observer"]

#: Non-scalar field values are logged as their text, cut to this length.
MAX_FIELD_TEXT = 500

#: Keys a JSON line sets itself, and the bookkeeping keys of twisted.python.log
#: events: an event's fields of these names are left out.
_NOT_FIELDS = frozenset(
    {"time", "level", "namespace", "system", "message", "failure"}
    | {"isError", "format", "why", "printed", "logLevel"}
)

_LEVEL_NAMES = frozenset(level.name for level in LogLevel.iterconstants())


def _encoding(out: object) -> str:
    """The encoding text written to C{out} ends up in (a file without one: UTF-8)."""
    try:
        return codecs.lookup(getattr(out, "encoding", None) or "utf-8").name
    except LookupError:
        return "ascii"


def _encodable(text: str, encoding: str = "utf-8") -> str:
    """C{text} with what C{encoding} cannot encode (lone surrogates) escaped."""
    if text.isascii():
        return text
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    return text


def text_observer(out: IO[Any] | LogFile) -> FileLogObserver:
    """
    twistd's text lines (time, [system], message, traceback) to C{out}, with
    characters its encoding cannot take escaped rather than raising.
    """
    encoding = _encoding(out)

    def format_event(event: dict[str, Any]) -> str | None:
        text = formatEventAsClassicLogText(
            event, formatTime=lambda when: formatTime(when, timeFormatRFC3339)
        )
        return _encodable(text, encoding) if text else text

    return FileLogObserver(cast(IO[Any], out), format_event)


def json_observer(out: IO[Any] | LogFile) -> FileLogObserver:
    """
    One JSON object per line (see L{event_as_json}) to C{out}: a log file or
    a text stream such as stdout; ASCII-only JSON if C{out} is not UTF-8.

    Why not L{twisted.logger.jsonFileLogObserver}: it writes the whole event
    for L{twisted.logger.eventsFromJSONLogFile} to read back (the format
    string unformatted, the level and failure as nested objects, each record
    after an ASCII record separator), not the flat lines with the message
    written out that log shippers take (docs/logs.md).
    """
    ascii_only = _encoding(out) != "utf-8"
    return FileLogObserver(
        cast(IO[Any], out), lambda event: event_as_json(event, ascii_only) + "\n"
    )


def _iso_time(when: object) -> str:
    """ISO 8601 UTC with milliseconds: C{2026-11-21T10:00:00.123Z}."""
    if not isinstance(when, (int, float)) or not math.isfinite(when):
        when = time.time()
    try:
        moment = datetime.fromtimestamp(when, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return _iso_time(time.time())
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _short_text(value: object) -> str:
    """C{value} as text of at most L{MAX_FIELD_TEXT} characters, whatever it is."""
    try:
        text = repr(value) if isinstance(value, (bytes, bytearray)) else str(value)
    except Exception:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {type(value).__name__}>"
    if len(text) > MAX_FIELD_TEXT:
        text = text[: MAX_FIELD_TEXT - 3] + "..."
    return _encodable(text)


def _json_value(value: object) -> str | int | float | bool | None:
    """A JSON scalar as is; anything else (bytes, NaN, objects) as short text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if -(2**63) <= value < 2**64 else _short_text(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _encodable(str(value))
    return _short_text(value)


def event_as_json(event: dict[str, Any], ascii_only: bool = False) -> str:
    """
    An event as one line of JSON (no newline): C{time} (UTC, ms), C{level},
    C{namespace}, C{system} if any, C{message} (formatted), the event's own
    fields that are not C{log_*} (scalars as they are, other values as short
    text) and C{failure} (a traceback) if it has one.  Never raises: an event
    that cannot be rendered gives a line that says so.
    """
    try:
        return _event_as_json(event, ascii_only)
    except Exception as e:
        return json.dumps(
            {
                "time": _iso_time(None),
                "level": "error",
                "namespace": __name__,
                "message": "Unable to write a log event as JSON: " + _short_text(e),
            },
            ensure_ascii=True,
        )


def _event_as_json(event: dict[str, Any], ascii_only: bool) -> str:
    level = event.get("log_level")
    failure = event.get("log_failure")
    message = formatEvent(event)
    if failure is None and isinstance(event.get("failure"), Failure):
        failure = event["failure"]  # twisted.python.log.err(): the message has it too
        message = str(event.get("why") or "Unhandled Error")
    line: dict[str, Any] = {
        "time": _iso_time(event.get("log_time")),
        "level": level.name if getattr(level, "name", None) in _LEVEL_NAMES else "info",
        "namespace": _json_value(event.get("log_namespace", "")),
    }
    system = event.get("log_system")
    if system is not None and system != "-":
        line["system"] = _json_value(system)
    line["message"] = _encodable(message)
    for key, value in event.items():
        if isinstance(key, str) and not key.startswith("log_") and key not in _NOT_FIELDS:
            line[_encodable(key)] = _json_value(value)
    if isinstance(failure, Failure):
        try:
            line["failure"] = _encodable(failure.getTraceback())
        except Exception as e:
            line["failure"] = "Unable to format the traceback: " + _short_text(e)
    return json.dumps(line, ensure_ascii=ascii_only, allow_nan=False, separators=(",", ":"))
