"""
InfluxDB line protocol: packets to points.

Pure code.  Escaping follows InfluxDB's line protocol reference: in a
measurement, commas and spaces are escaped; in tag keys, tag values and field
keys, commas, equals signs and spaces.  Backslashes themselves are literal, and
names ending in a backslash or holding a newline cannot be written (the
devices file loader refuses them).  Values are floats, timestamps nanoseconds.

L{packet_points} is the one way from a journaled packet to the lines written
for it: the server's pipeline, C{weather replay} and C{weather decode --lines}
all take it.  A packet's lines are built column by column
(L{LineEncoder.encode_packet}): most of the time of writing a line goes into
C{repr} of its value (up to half a microsecond for a value such as
C{20.1818603515625}), and a station's values repeat, so each series remembers
the start of its lines by value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from operator import add
from typing import NamedTuple

from weather.core.decode import DecodedPacket, Reading, decode_packet, decode_truncated
from weather.core.devices import DeviceProfile
from weather.core.timing import TimingInputs

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


def line(reading: Reading) -> bytes:
    """
    One finite reading as a line, without its newline: for points that are
    not a packet's, such as the server's own figures (L{weather.ops.selfstats}).
    A packet's lines come from L{packet_points}.
    """
    prefix = series_prefix(reading.measurement, reading.tags, reading.field)
    return f"{prefix}{format_float(reading.value)} {reading.time_ns}".encode()


#: How many values a series remembers the text of; then it forgets them all
#: and starts again.  About 150 bytes each.
STEMS_LIMIT = 4096


class _Stems(dict[float, bytes]):
    """
    A series' line starts by value: C{b"temperature,place=balcony value=20.5"}
    for C{20.5}, made on first use.  Only finite values are looked up, and
    never C{-0.0} (see L{ValueSpec}), which would find C{0.0}'s text.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix.encode()

    def __missing__(self, value: float) -> bytes:
        if len(self) >= STEMS_LIMIT:
            self.clear()
        stem = self[value] = self.prefix + format_float(value).encode()
        return stem


class LineEncoder:
    """
    Encode decoded packets as line protocol, remembering the start of each
    series' lines by value (a station has a handful of series and sends
    thousands of readings, many of them alike).
    """

    def __init__(self) -> None:
        self._stems: dict[tuple, _Stems] = {}
        #: id(profile) -> (profile, one _Stems per value): a profile's own
        #: hash compares all its fields, ten times the cost of the lookup.
        self._profiles: dict[int, tuple[DeviceProfile, list[_Stems]]] = {}

    def encode_packet(self, decoded: DecodedPacket) -> list[bytes]:
        """
        The lines (without newlines) of a decoded packet's storable values,
        record by record, each record's values in profile order: the same
        lines as L{line} of each finite reading in C{decoded.readings}
        (tests/oracle.py checks so).  NaN and infinite values are left out;
        C{decoded.value_count - len(lines)} says how many.
        """
        suffixes = [b" %d" % time_ns for time_ns in decoded.times]
        series = self._series(decoded.profile)
        columns = decoded.columns
        width = len(columns)
        # Record by record, each record's values in profile order: value j of
        # record i is line i * width + j.
        lines: list[bytes | None] = [None] * (len(suffixes) * width)
        # One sum tells a packet of finite values (or, rarely, one whose sum
        # overflows, which then takes the careful way for nothing).
        if math.isfinite(sum(map(sum, columns))):
            for j, (stems, values) in enumerate(zip(series, columns, strict=True)):
                lines[j::width] = map(add, map(stems.__getitem__, values), suffixes)
            return lines  # type: ignore[return-value]
        for j, (stems, values) in enumerate(zip(series, columns, strict=True)):
            lines[j::width] = [
                stems[value] + suffix if math.isfinite(value) else None
                for value, suffix in zip(values, suffixes, strict=True)
            ]
        return [line for line in lines if line is not None]

    def _series(self, profile: DeviceProfile) -> list[_Stems]:
        """The L{_Stems} of each of C{profile}'s values, in order."""
        known = self._profiles.get(id(profile))
        if known is not None and known[0] is profile:  # the entry keeps its id taken
            return known[1]
        if len(self._profiles) >= 1024:
            self._profiles.clear()  # profiles of devices files since reloaded
        series = []
        for spec in profile.values:
            key = (profile.tags, spec)
            stems = self._stems.get(key)
            if stems is None:
                prefix = series_prefix(spec.name, profile.tags, spec.field)
                stems = self._stems[key] = _Stems(prefix)
            series.append(stems)
        self._profiles[id(profile)] = (profile, series)
        return series


class PacketPoints(NamedTuple):
    """A decoded packet and the lines written for it."""

    decoded: DecodedPacket
    lines: list[bytes]
    #: How many of its values are NaN or infinite, left out of C{lines}:
    #: InfluxDB cannot store them.
    not_finite: int


def packet_points(
    data: bytes,
    arrival_ns: int,
    inputs: TimingInputs,
    profiles: Mapping[int, DeviceProfile],
    encoder: LineEncoder,
) -> PacketPoints:
    """
    Decode a journaled packet with the timing state recorded for it and
    encode its storable values: what the server writes for it, whenever
    and by whichever command that happens.

    @raise PacketRejected: with the reason the packet cannot be decoded.
    """
    decoded = decode_packet(data, arrival_ns, inputs, profiles)
    lines = encoder.encode_packet(decoded)
    return PacketPoints(decoded, lines, decoded.value_count - len(lines))


def truncated_points(
    data: bytes,
    arrival_ns: int,
    inputs: TimingInputs,
    profiles: Mapping[int, DeviceProfile],
    encoder: LineEncoder,
) -> PacketPoints:
    """
    The points of a truncated packet's complete records (L{decode_truncated}):
    the same whenever and by whichever command they are made.

    @raise PacketRejected: none can be stored.
    """
    decoded = decode_truncated(data, arrival_ns, inputs, profiles)
    lines = encoder.encode_packet(decoded)
    return PacketPoints(decoded, lines, decoded.value_count - len(lines))
