"""
What C{weather decode} does: read a packet the way people have it at hand (a
hex dump, a file, or the decimal byte list the original server logged) and
show its header and readings as the server would store them.

Pure code: the arrival time is given (or read from the pasted log line), and
rejections carry the reasons the server gives.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import TextIO

from weather.core.decode import NANOSECONDS, DecodedPacket
from weather.core.devices import DeviceProfile
from weather.core.lineprotocol import LineEncoder, packet_points
from weather.core.packet import Header, PacketRejected, Reason, read_header
from weather.core.timing import Timing, TimingInputs, records_per_upload

_SEPARATORS = re.compile(r"[\s,;:\[\]()]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
_DIGITS = re.compile(r"[0-9]+")
#: A Python bytes literal, at the start or after "= ".
_BYTES_LITERAL = re.compile(r"""(?:^|(?<=[=\s]))b(?=['"])""")
#: The time a log line starts with: the original server's (2026-12-07
#: 10:00:00, a comma or a point before a fraction) or twistd's
#: (2026-12-07T10:00:00+0100), perhaps in brackets.
_LOG_TIME = re.compile(
    r"\s*\[?(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:[.,](?P<fraction>\d{1,9}))?\s?(?P<zone>Z|[+-]\d{2}:?\d{2})?\]?(?=\s|$)"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class NotAPacket(ValueError):
    """Text that holds no packet bytes; the message says what was wrong."""


def log_time(text: str) -> int | None:
    """
    When the log line C{text} says it was written, in nanoseconds since the
    epoch: the time it starts with, UTC unless it carries an offset (as
    C{weather decode --arrival} reads a time); None if it starts with none.

    @raise NotAPacket: it starts with a date that is not one.
    """
    found = _LOG_TIME.match(text)
    if found is None:
        return None
    date, clock, fraction, zone = found.group("date", "time", "fraction", "zone")
    offset = timezone.utc
    if zone not in (None, "Z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        minutes = sign * (int(digits[:2]) * 60 + int(digits[2:]))
        offset = timezone(timedelta(minutes=minutes)) if abs(minutes) < 24 * 60 else None
    try:
        if offset is None:
            raise ValueError
        moment = datetime.fromisoformat(f"{date}T{clock}").replace(tzinfo=offset)
    except ValueError:
        raise NotAPacket(f"{found.group().strip()!r} is not a time") from None
    elapsed = moment - _EPOCH
    seconds = elapsed.days * 86400 + elapsed.seconds
    ns = seconds * NANOSECONDS + int((fraction or "").ljust(9, "0"))
    if not 0 <= ns < 2**63:
        raise NotAPacket(f"{found.group().strip()!r} is not between 1970 and 2262")
    return ns


def packet_from_text(text: str, base: str = "auto") -> bytes:
    """
    The bytes of a packet written as text: hex (C{b4001000...}, spaced or
    not, C{0x} prefixes allowed), decimal bytes (C{180 0 16 14 ...}, commas
    or brackets allowed), a Python bytes literal (C{b'\\xb4\\x00...'}), or a
    whole log line such as C{2019-04-02 10:00:01 Received raw data = 180 0
    16 14 ...} (what follows the last C{=}, or the time it starts with,
    L{log_time}).  C{base} is C{"hex"}, C{"decimal"} or C{"auto"}.
    """
    found = _LOG_TIME.match(text)
    text = text[found.end() :] if found is not None else text
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
    inputs: TimingInputs,
    profiles: Mapping[int, DeviceProfile],
    out: TextIO,
    lines: bool = False,
    arrival_note: str = "",
) -> int:
    """
    Print the header, how the records are timed, and a table of readings
    (or the rejection, with the reason the server would quarantine the
    packet for).  C{inputs}: what the server would know of the station
    (L{TimingInputs}); C{arrival_note} follows the arrival time (where it
    comes from).  0 if it decodes.
    """
    out.write(f"Packet:            {counted(len(data), 'byte')}\n")
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
    records = (
        f" ({counted(header.bytes_ready // per, 'record')} of {counted(per, 'byte')})"
        if per
        else ""
    )
    out.write(
        f"bytesReady:        {header.bytes_ready}{records}\n"
        f"wakeEvery:         {header.wake_every} s\n"
        f"measurementEvery:  {header.measurement_every} s\n"
        f"bytesPerMeasurement: {per}\n"
        f"deviceID:          {header.device_id} ({described})\n"
        f"sensorCount:       {header.sensor_count}\n"
        f"Arrival:           {when(arrival_ns)} UTC{arrival_note}\n"
    )
    if inputs.previous_arrival_ns is not None:
        out.write(f"Previous packet:   {when(inputs.previous_arrival_ns)} UTC\n")
    try:
        points = packet_points(data, arrival_ns, inputs, profiles, LineEncoder())
    except PacketRejected as e:
        return _rejected(e, out)
    decoded = points.decoded
    explained = explain_timing(
        decoded.header, decoded.timing, inputs, decoded.profile.upload_delay
    )
    for line in explained:
        out.write(line + "\n")
    out.write("\n")
    readings_table(decoded, out)
    if lines:
        out.write("\nLine protocol (as written to InfluxDB):\n")
        for line in points.lines:
            out.write(line.decode("utf-8") + "\n")
        if points.not_finite:
            out.write(
                f"({counted(points.not_finite, 'value')} left out: codes that are not "
                "readings, or NaN or infinite, which InfluxDB cannot store)\n"
            )
    return 0


def readings_table(decoded: DecodedPacket, out: TextIO) -> None:
    """
    A decoded packet's readings, a record a row: its number in the packet,
    its time and each value, under the value's name and unit.  A code that
    is not a reading shows as C{nan}.
    """
    specs = decoded.profile.values
    titles = [f"{s.name} ({s.unit})" if s.unit else s.name for s in specs]
    widths = [max(len(t), 10) for t in titles]
    out.write(
        f"{'#':>3}  {'time (UTC)':23}  "
        + "  ".join(f"{t:>{w}}" for t, w in zip(titles, widths, strict=True))
        + "\n"
    )
    first = decoded.timing.first
    for i, time_ns in enumerate(decoded.times):
        values = [column[i] for column in decoded.columns]
        out.write(
            f"{first + i:>3}  {when(time_ns):23}  "
            + "  ".join(f"{_number(v):>{w}}" for v, w in zip(values, widths, strict=True))
            + "\n"
        )


def uploads_since(header: Header, inputs: TimingInputs) -> int:
    """Nominal uploads' worth of time since the previous packet."""
    upload_ns = records_per_upload(header) * header.measurement_every * NANOSECONDS
    return round((inputs.spacing_ns or 0) / upload_ns)


def explain_timing(
    header: Header, timing: Timing, inputs: TimingInputs, upload_delay: float
) -> list[str]:
    """
    How the server stamps a packet's records, in words: where the interval
    comes from, which records repeat the previous packet or were lost
    (docs/protocol.md, "Timestamps").
    """
    interval = f"{timing.interval_ns / NANOSECONDS:g} s"
    learned = (
        f"learned ratio {inputs.ratio:.3f}" if inputs.learned else "no ratio learned yet"
    )
    if timing.measured:
        missed = timing.uploads - 1
        how = f"measured over {counted(timing.uploads, 'upload')}" + (
            f" ({counted(missed, 'missed upload')})" if missed else ""
        )
        ratio = timing.measured_ratio
        measured = "implausible, not learned" if ratio is None else f"{ratio:.3f} measured"
        before = f"learned ratio {inputs.ratio:.3f}" if inputs.learned else "none learned"
        clock = f"{measured} ({before} before)"
    else:
        if timing.irregular:
            why = "irregular"
        elif inputs.previous_arrival_ns is None:
            why = "no previous packet"
        elif not inputs.learned and uploads_since(header, inputs) > 1:
            why = (
                f"about {uploads_since(header, inputs)} uploads since the previous "
                "packet, and no learned ratio to count them by"
            )
        else:
            why = "the previous packet was not a whole number of uploads earlier"
        source = "from the learned ratio" if inputs.learned else "nominal"
        how = f"{source} ({why})"
        clock = learned
    explained = [f"Record interval:   {interval}, {how}", f"Clock ratio:       {clock}"]
    if timing.repeated:
        explained.append(
            f"Repeated:          {counted(timing.repeated, 'record')} (0 to "
            f"{timing.repeated - 1}) repeat the previous packet (its clear command "
            "was lost): not stored again"
        )
    if timing.lost:
        explained.append(
            f"Lost:              {counted(timing.lost, 'record')} lost by the "
            "station's full ring"
        )
    if timing.irregular:
        explained.append(
            "Irregular:         more records than the time explains, and not a repeat "
            "of the previous packet: stamped with the learned interval"
        )
    if upload_delay:
        explained.append(
            f"Upload delay:      {upload_delay:g} s: the newest record is stamped "
            "that long before the arrival"
        )
    return explained


def timing_summary(timing: Timing, learned: bool) -> str:
    """
    How a packet was stamped, in a few words for the server's log line:
    "interval 124.3 s measured over 2 uploads (1 missed), 30 repeated".
    """
    interval = f"interval {timing.interval_ns / NANOSECONDS:g} s"
    if timing.measured:
        how = f"measured over {counted(timing.uploads, 'upload')}"
        if timing.uploads > 1:
            how += f" ({timing.uploads - 1} missed)"
    elif timing.irregular:
        how = "irregular, from the learned ratio" if learned else "irregular, nominal"
    else:
        how = "from the learned ratio" if learned else "nominal"
    parts = [f"{interval} {how}"]
    if timing.repeated:
        parts.append(f"{timing.repeated} repeated")
    if timing.lost:
        parts.append(f"{timing.lost} lost on the station")
    return ", ".join(parts)


def counted(count: int, noun: str) -> str:
    """1 record, 2 records."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _rejected(error: PacketRejected, out: TextIO) -> int:
    out.write(f"Rejected:          {error.reason}: {error.detail}\n")
    if error.reason == Reason.UNKNOWN_DEVICE:
        out.write(
            "                   (describe the device in a devices file and pass "
            "it with --devices)\n"
        )
    return 1
