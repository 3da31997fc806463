"""
InfluxDB line protocol: readings to points.

Pure code.  Escaping follows InfluxDB's line protocol reference: in a
measurement, commas and spaces are escaped; in tag keys, tag values and field
keys, commas, equals signs and spaces.  Backslashes themselves are literal, and
names ending in a backslash or holding a newline cannot be written (the
devices file loader refuses them).  Values are floats, timestamps nanoseconds.
"""

from __future__ import annotations

from collections.abc import Iterable

from weather.decode import Reading

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT)


def escape_key(name: str) -> str:
    """Escape a tag key, tag value or field key."""
    return name.translate(_KEY)


def series_prefix(measurement: str, tags: Iterable[tuple[str, str]], field: str) -> str:
    """C{measurement,tag=value field=}: everything in a line before the value."""
    parts = [escape_measurement(measurement)]
    parts.extend(f"{escape_key(key)}={escape_key(value)}" for key, value in sorted(tags))
    return ",".join(parts) + f" {escape_key(field)}="


def format_float(value: float) -> str:
    """A float as line protocol writes it (finite values only)."""
    return repr(float(value))


class LineEncoder:
    """
    Encode readings as line protocol, remembering each series' escaped prefix
    (a station has a handful of series and sends thousands of readings).
    """

    def __init__(self) -> None:
        self._prefixes: dict[tuple, str] = {}

    def line(self, reading: Reading) -> bytes:
        """One reading as a line of line protocol, without its newline."""
        key = (reading.measurement, reading.tags, reading.field)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._prefixes[key] = series_prefix(*key)
        return f"{prefix}{format_float(reading.value)} {reading.time_ns}".encode()

    def encode(self, readings: Iterable[Reading]) -> list[bytes]:
        """One line (without its newline) per reading."""
        return [self.line(r) for r in readings]
