"""
The daemon's log lines: JSON (fields, odd values, broken events) and text,
on streams that cannot take every character.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from weather.app.logformat import (
    MAX_FIELD_TEXT,
    event_as_json,
    json_observer,
    text_observer,
)

T0 = 1_795_255_200.1239  # 2026-11-21T10:00:00.123Z


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class JSONTests(SynchronousTestCase):
    def lines(
        self, *events: dict[str, Any], stream: io.StringIO | None = None
    ) -> list[dict]:
        out = stream if stream is not None else io.StringIO()
        observer = json_observer(out)
        for event in events:
            observer(event)
        text = out.getvalue()
        self.assertNotIn("\x1e", text)
        self.assertTrue(text.endswith("\n"))
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def event(self, format: str | None = "m", **fields: Any) -> dict[str, Any]:
        return {
            "log_time": T0,
            "log_level": LogLevel.warn,
            "log_namespace": "weather.server.protocol",
            "log_format": format,
            **fields,
        }

    def test_fields(self) -> None:
        """time, level, namespace, message, then the event's own scalar fields."""
        [line] = self.lines(
            self.event(
                "{peer} sent {size} bytes",
                peer="192.0.2.7:5",
                size=77,
                ratio=0.5,
                ok=True,
                none=None,
                log_source=object(),
            )
        )
        self.assertEqual(
            list(line.items()),
            [
                ("time", "2026-11-21T10:00:00.123Z"),
                ("level", "warn"),
                ("namespace", "weather.server.protocol"),
                ("message", "192.0.2.7:5 sent 77 bytes"),
                ("peer", "192.0.2.7:5"),
                ("size", 77),
                ("ratio", 0.5),
                ("ok", True),
                ("none", None),
            ],
        )

    def test_logger(self) -> None:
        """A real Logger's events: its level names, its namespace, the system."""
        out = io.StringIO()
        log = Logger("weather.test", observer=json_observer(out))
        for level in LogLevel.iterconstants():
            log.emit(level, "at {level_name}", level_name=level.name, log_system="S,1")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual(
            [line["level"] for line in lines],
            ["debug", "info", "warn", "error", "critical"],
        )
        for line in lines:
            self.assertEqual(line["namespace"], "weather.test")
            self.assertEqual(line["system"], "S,1")
            self.assertEqual(line["message"], "at " + line["level"])
            self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_failure(self) -> None:
        """log.failure: the traceback text as "failure"."""
        out = io.StringIO()
        log = Logger("weather.test", observer=json_observer(out))
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.failure("Writing {n} points failed", n=3)
        [line] = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual(line["level"], "critical")
        self.assertEqual(line["message"], "Writing 3 points failed")
        self.assertEqual(line["n"], 3)
        self.assertIn("Traceback", line["failure"])
        self.assertIn("ZeroDivisionError: division by zero", line["failure"])
        self.assertEqual(list(line)[-1], "failure")

    def test_legacyErr(self) -> None:
        """twisted.python.log.err events: "why" as the message, bookkeeping left out."""
        failure = Failure(ValueError("bad"))
        [line] = self.lines(
            {
                "log_time": T0,
                "log_level": LogLevel.critical,
                "log_namespace": "log_legacy",
                "log_system": "-",
                "log_format": "{log_text}",
                "log_text": "Unhandled\nTraceback...",
                "message": (),
                "time": T0,
                "system": "-",
                "isError": 1,
                "failure": failure,
                "why": "Unhandled",
            }
        )
        self.assertEqual(sorted(line), ["failure", "level", "message", "namespace", "time"])
        self.assertEqual(line["message"], "Unhandled")
        self.assertIn("ValueError: bad", line["failure"])

    def test_oddValues(self) -> None:
        """Values that are not JSON scalars become short text; nothing raises."""
        [line] = self.lines(
            self.event(
                "{data} {nan}",
                data=b"\xff\x00",
                nan=float("nan"),
                inf=float("-inf"),
                big=10**5000,
                unprintable=Unprintable(),
                many=list(range(1000)),
                surrogate="\udcff",
                enum=LogLevel.info,
            )
        )
        self.assertEqual(line["message"], "b'\\xff\\x00' nan")
        self.assertEqual(line["data"], "b'\\xff\\x00'")
        self.assertEqual(line["nan"], "nan")
        self.assertEqual(line["inf"], "-inf")
        self.assertEqual(line["big"], "<unprintable int>")
        self.assertEqual(line["unprintable"], "<unprintable Unprintable>")
        self.assertEqual(len(line["many"]), MAX_FIELD_TEXT)
        self.assertTrue(
            line["many"].startswith("[0, 1, 2") and line["many"].endswith("...")
        )
        self.assertEqual(line["surrogate"], "\\udcff")
        self.assertEqual(line["enum"], str(LogLevel.info))

    def test_unformattable(self) -> None:
        """A broken format string still gives a line, saying so."""
        [line] = self.lines(self.event("{missing}"))
        self.assertIn("Unable to format event", line["message"])

    def test_noFormat(self) -> None:
        [line] = self.lines(self.event(None, x=1))
        self.assertEqual((line["message"], line["x"]), ("", 1))

    def test_brokenEvent(self) -> None:
        """An event that cannot be rendered at all gives an error line."""

        class Exploding(dict):
            def get(self, *args: Any) -> Any:
                raise RuntimeError("boom")

        line = json.loads(event_as_json(Exploding()))
        self.assertEqual(line["level"], "error")
        self.assertIn("boom", line["message"])

    def test_oneLinePerEvent(self) -> None:
        """Newlines in messages and values are escaped: one event, one line."""
        lines = self.lines(self.event("two\nlines {v}", v="a\nb"), self.event("next"))
        self.assertEqual([line["message"] for line in lines], ["two\nlines a\nb", "next"])

    def test_textStreams(self) -> None:
        """On a stream that cannot take all characters: ASCII JSON, no error."""
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
        observer = json_observer(stream)
        observer(self.event("caf\u00e9 \udcff \U0001f326"))
        [line] = raw.getvalue().decode("ascii").splitlines()
        self.assertEqual(json.loads(line)["message"], "caf\u00e9 \\udcff \U0001f326")
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
        json_observer(stream)(self.event("caf\u00e9 \udcff"))
        self.assertIn("caf\u00e9 \\\\udcff".encode(), raw.getvalue())

    def test_textObserverOddText(self) -> None:
        """The text observer escapes what the stream cannot encode."""
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
        text_observer(stream)(self.event("caf\u00e9 \udcff"))
        self.assertTrue(
            raw.getvalue().endswith(b" [weather.server.protocol#warn] caf\\xe9 \\udcff\n")
        )
