"""
The slow, obviously right way from a packet to its lines, for tests (and
C{bench/core.py --per-reading}) to hold the fast one against: one record, one
L{Reading} and one line at a time, as the server did before it decoded and
encoded by columns.  The server never runs this code.

Its timestamps follow docs/protocol.md's rule ("Timestamps") in exact
arithmetic, written again here rather than taken from
L{weather.core.timing}, so that a mistake there shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fractions import Fraction

from weather.core.decode import Reading, decode_header
from weather.core.devices import DeviceProfile
from weather.core.lineprotocol import format_float, series_prefix
from weather.core.packet import HEADER_SIZE, Header
from weather.core.timing import TimingInputs

S = 1_000_000_000


def whole_ns(value: Fraction) -> int:
    """A time in nanoseconds, halves rounded up."""
    return math.floor(value + Fraction(1, 2))


def _split(data: bytes, size: int) -> list[bytes]:
    """C{data} cut into records of C{size} bytes."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def oracle_times(
    header: Header, records: bytes, arrival_ns: int, inputs: TimingInputs, delay_ns: int
) -> tuple[int, list[int]]:
    """
    The rule of docs/protocol.md: which record is the first stamped (those
    before it repeat the previous packet) and the times of the stamped ones.
    """
    n = header.record_count
    per_upload = math.ceil(Fraction(header.wake_every, header.measurement_every))
    ratio = Fraction(inputs.ratio)
    upload = per_upload * header.measurement_every * S * ratio
    interval = whole_ns(header.measurement_every * S * ratio)
    first = 0
    spacing = inputs.spacing_ns
    if spacing is not None and spacing > 0:
        k = round(spacing / upload)
        # Several uploads are told apart from one only with a learned ratio.
        countable = k == 1 or (k > 1 and inputs.learned)
        if countable and abs(spacing - k * upload) < upload / 3:
            interval = whole_ns(Fraction(spacing, k * per_upload))
            surplus = n - k * per_upload
            if surplus > 0:
                size = header.bytes_per_measurement
                previous = inputs.previous_records
                if len(previous) >= surplus * size and all(
                    # A previous record of 0xFF bytes was cut short: any matches it.
                    old in (new, b"\xff" * size)
                    for old, new in zip(
                        _split(previous[len(previous) - surplus * size :], size),
                        _split(records[: surplus * size], size),
                        strict=True,
                    )
                ):
                    first = surplus
                else:
                    interval = whole_ns(header.measurement_every * S * ratio)
    newest = arrival_ns - delay_ns
    stamped = n - first
    return first, [newest - (stamped - 1 - i) * interval for i in range(stamped)]


def per_reading(
    data: bytes,
    arrival_ns: int,
    inputs: TimingInputs,
    profiles: Mapping[int, DeviceProfile],
) -> list[Reading]:
    """A packet's readings, one record, then one value, at a time."""
    header, profile = decode_header(data, profiles)
    delay_ns = whole_ns(Fraction(profile.upload_delay) * S)
    first, times = oracle_times(header, data[HEADER_SIZE:], arrival_ns, inputs, delay_ns)
    records = list(profile.record.iter_unpack(data[HEADER_SIZE:]))[first:]
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
    inputs: TimingInputs,
    profiles: Mapping[int, DeviceProfile],
) -> list[bytes]:
    """The lines the server writes for a journaled packet, the slow way."""
    return per_reading_lines(per_reading(data, arrival_ns, inputs, profiles))
