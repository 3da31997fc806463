"""
What C{weather decode} does: read a packet the way people have it at hand (a
hex dump, a file, or the decimal byte list the original server logged) and
show its header and readings as the server would store them.

Pure code: the arrival time is given, and rejections carry the reasons the
server gives.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TextIO

from weather.core.decode import NANOSECONDS
from weather.core.devices import DeviceProfile
from weather.core.lineprotocol import LineEncoder, packet_points
from weather.core.packet import PacketRejected, Reason, read_header

_SEPARATORS = re.compile(r"[\s,;:\[\]()]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
_DIGITS = re.compile(r"[0-9]+")
#: A Python bytes literal, at the start or after "= ".
_BYTES_LITERAL = re.compile(r"""(?:^|(?<=[=\s]))b(?=['"])""")


class NotAPacket(ValueError):
    """Text that holds no packet bytes; the message says what was wrong."""


def packet_from_text(text: str, base: str = "auto") -> bytes:
    """
    The bytes of a packet written as text: hex (C{b4001000...}, spaced or
    not, C{0x} prefixes allowed), decimal bytes (C{180 0 16 14 ...}, commas
    or brackets allowed), a Python bytes literal (C{b'\\xb4\\x00...'}), or a
    whole log line such as C{Received raw data = 180 0 16 14 ...} (what
    follows the last C{=}).  C{base} is C{"hex"}, C{"decimal"} or C{"auto"}.
    """
    text = text.strip()
    literal = _BYTES_LITERAL.search(text)
    if literal is not None:
        # Before cutting at "=": a literal may hold one (byte 0x3d).
        try:
            value = ast.literal_eval(text[literal.start() :])
        except (SyntaxError, ValueError):
            raise NotAPacket("not a valid bytes literal") from None
        if isinstance(value, bytes):
            return value
    if "=" in text:
        text = text.rsplit("=", 1)[1].strip()
    tokens = [t for t in _SEPARATORS.split(text) if t]
    tokens = [t[2:] if t[:2].lower() == "0x" else t for t in tokens]
    if not tokens:
        raise NotAPacket("no bytes given")
    if base == "auto":
        base = "decimal" if _decimal(tokens) else "hex"
    if base == "decimal":
        values = []
        for token in tokens:
            if not _DIGITS.fullmatch(token) or int(token) > 255:
                raise NotAPacket(f"{token!r} is not a byte (0 to 255)")
            values.append(int(token))
        return bytes(values)
    for token in tokens:
        if not _HEX.fullmatch(token):
            raise NotAPacket(f"{token!r} is not hex")
    digits = "".join(tokens)
    if len(digits) % 2:
        raise NotAPacket(f"an odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)


def _decimal(tokens: list[str]) -> bool:
    """
    Several numbers, all digits and none with a leading zero (a hex dump
    writes C{00}, a decimal list C{0}).  A packet's second byte, the high
    byte of C{bytesReady}, is below 0x10 for any packet under 4 KiB (the
    server's default limit), so those are never ambiguous.
    """
    return len(tokens) > 1 and all(
        _DIGITS.fullmatch(t) and (t == "0" or not t.startswith("0")) for t in tokens
    )


def when(ns: int) -> str:
    moment = datetime.fromtimestamp(ns / NANOSECONDS, timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _number(value: float) -> str:
    """Whole numbers as such, others to two decimals (all of them with --lines)."""
    if value != value or abs(value) >= 1e9:
        return repr(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.2f}"


def describe_packet(
    data: bytes,
    arrival_ns: int,
    previous_arrival_ns: int | None,
    profiles: Mapping[int, DeviceProfile],
    out: TextIO,
    lines: bool = False,
) -> int:
    """
    Print the header and a table of readings (or the rejection, with the
    reason the server would quarantine the packet for).  0 if it decodes.
    """
    out.write(f"Packet:            {len(data)} bytes\n")
    try:
        header = read_header(data)
    except PacketRejected as e:
        return _rejected(e, out)
    profile = profiles.get(header.device_id)
    described = (
        ", ".join(f"{k}={v}" for k, v in profile.tags) or "no tags"
        if profile is not None
        else "not in the devices file"
    )
    per = header.bytes_per_measurement
    records = f" ({header.bytes_ready // per} records of {per} bytes)" if per else ""
    out.write(
        f"bytesReady:        {header.bytes_ready}{records}\n"
        f"wakeEvery:         {header.wake_every} s\n"
        f"measurementEvery:  {header.measurement_every} s\n"
        f"bytesPerMeasurement: {per}\n"
        f"deviceID:          {header.device_id} ({described})\n"
        f"sensorCount:       {header.sensor_count}\n"
        f"Arrival:           {when(arrival_ns)} UTC\n"
    )
    try:
        points = packet_points(
            data, arrival_ns, previous_arrival_ns, profiles, LineEncoder()
        )
    except PacketRejected as e:
        return _rejected(e, out)
    decoded = points.decoded
    interval = decoded.interval_ns / NANOSECONDS
    how = (
        "measured from the previous packet"
        if decoded.measured
        else "nominal (no previous packet, or it was not about one wakeEvery earlier)"
    )
    out.write(f"Record interval:   {interval:g} s, {how}\n\n")
    specs = decoded.profile.values
    titles = [f"{s.name} ({s.unit})" if s.unit else s.name for s in specs]
    widths = [max(len(t), 10) for t in titles]
    out.write(
        f"{'#':>3}  {'time (UTC)':23}  "
        + "  ".join(f"{t:>{w}}" for t, w in zip(titles, widths, strict=True))
        + "\n"
    )
    width = len(specs)
    readings = decoded.readings
    for i in range(len(readings) // width if width else 0):
        row = readings[i * width : (i + 1) * width]
        out.write(
            f"{i:>3}  {when(row[0].time_ns):23}  "
            + "  ".join(
                f"{_number(r.value):>{w}}" for r, w in zip(row, widths, strict=True)
            )
            + "\n"
        )
    if lines:
        out.write("\nLine protocol (as written to InfluxDB):\n")
        for line in points.lines:
            out.write(line.decode("utf-8") + "\n")
        if points.not_finite:
            out.write(
                f"({points.not_finite} values NaN or infinite, left out: "
                "InfluxDB cannot store them)\n"
            )
    return 0


def _rejected(error: PacketRejected, out: TextIO) -> int:
    out.write(f"Rejected:          {error.reason}: {error.detail}\n")
    if error.reason == Reason.UNKNOWN_DEVICE:
        out.write(
            "                   (describe the device in a devices file and pass "
            "it with --devices)\n"
        )
    return 1
