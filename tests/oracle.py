"""
The slow, obviously right way from a packet to its lines, for tests (and
C{bench/core.py --per-reading}) to hold the fast one against: one record, one
L{Reading} and one line at a time, as the server did before it decoded and
encoded by columns.  The server never runs this code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from weather.core.decode import Reading, decode_header, record_interval
from weather.core.devices import DeviceProfile
from weather.core.lineprotocol import format_float, series_prefix
from weather.core.packet import HEADER_SIZE


def per_reading(
    data: bytes,
    arrival_ns: int,
    previous_arrival_ns: int | None,
    profiles: Mapping[int, DeviceProfile],
) -> list[Reading]:
    """A packet's readings, one record, then one value, at a time."""
    header, profile = decode_header(data, profiles)
    interval, _ = record_interval(header, arrival_ns, previous_arrival_ns)
    count = header.record_count
    times = [arrival_ns - (count - 1 - i) * interval for i in range(count)]
    records = profile.record.iter_unpack(data[HEADER_SIZE:])
    return [
        Reading(spec.name, profile.tags, spec.field, spec.convert(raw), time_ns)
        for time_ns, record in zip(times, records, strict=True)
        for spec, raw in zip(profile.values, record, strict=True)
    ]


class PerReadingEncoder:
    """Readings to lines one at a time, remembering each series' prefix."""

    def __init__(self) -> None:
        self._prefixes: dict[tuple, str] = {}

    def line(self, reading: Reading) -> bytes:
        """One reading as a line, without its newline."""
        key = (reading.measurement, reading.tags, reading.field)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._prefixes[key] = series_prefix(*key)
        return f"{prefix}{format_float(reading.value)} {reading.time_ns}".encode()

    def encode(self, readings: Iterable[Reading]) -> list[bytes]:
        """The lines of the finite readings: InfluxDB cannot store NaN or infinity."""
        return [self.line(r) for r in readings if math.isfinite(r.value)]


def per_reading_lines(readings: Iterable[Reading]) -> list[bytes]:
    """The lines a packet's C{readings} are written as."""
    return PerReadingEncoder().encode(readings)


def oracle_lines(
    data: bytes,
    arrival_ns: int,
    previous_arrival_ns: int | None,
    profiles: Mapping[int, DeviceProfile],
) -> list[bytes]:
    """The lines the server writes for a journaled packet, the slow way."""
    return per_reading_lines(per_reading(data, arrival_ns, previous_arrival_ns, profiles))
