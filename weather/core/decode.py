"""
Decode a station packet into timestamped readings.

Pure code: the arrival time and the previous arrival of the same device are
given, never read from a clock, so decoding the same packet with the same times
always gives the same readings (a replay writes the same points).  Times are
integer nanoseconds since the epoch, so timestamps are exact and repeatable.

A packet decodes into columns: one timestamp per record and one list of
converted values per profile value.  That costs a few list operations per
packet instead of an object per value; L{DecodedPacket.readings} gives the
values one by one for whoever wants them so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from weather.core.devices import DeviceProfile
from weather.core.packet import (
    HEADER_SIZE,
    Header,
    PacketRejected,
    Reason,
    check_header,
    read_header,
)
from weather.core.timing import NANOSECONDS, Timing, TimingInputs, time_records


@dataclass(frozen=True, slots=True)
class Reading:
    """One converted value of one record, with its timestamp."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    field: str
    value: float
    time_ns: int


@dataclass(slots=True)
class DecodedPacket:
    """
    What a packet said: its header, the interval used, and its values by
    column: C{times[i]} is record C{i}'s timestamp (oldest first) and
    C{columns[j][i]} its value C{j}, in the order of C{profile.values}.

    Not frozen, unlike the rest, because freezing costs a tenth of the time of
    decoding the reference packet; nothing changes it once decoded.
    """

    header: Header
    profile: DeviceProfile
    #: How the records were stamped: which repeat the previous packet (not
    #: in C{times} nor C{columns}), the interval, whether it was measured.
    timing: Timing
    times: list[int]
    columns: tuple[list[float], ...]
    _readings: tuple[Reading, ...] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def interval_ns(self) -> int:
        return self.timing.interval_ns

    @property
    def measured(self) -> bool:
        return self.timing.measured

    @property
    def value_count(self) -> int:
        """How many values the packet holds: records times values per record."""
        return len(self.times) * len(self.columns)

    @property
    def readings(self) -> tuple[Reading, ...]:
        """One L{Reading} per value, record by record (built on first use)."""
        if self._readings is None:
            tags = self.profile.tags
            specs = self.profile.values
            readings = tuple(
                Reading(spec.name, tags, spec.field, value, time_ns)
                for time_ns, values in zip(
                    self.times, zip(*self.columns, strict=True), strict=True
                )
                for spec, value in zip(specs, values, strict=True)
            )
            self._readings = readings
        return self._readings


def check_profile(header: Header, profile: DeviceProfile) -> None:
    """@raise PacketRejected: the profile does not describe this header."""
    if header.sensor_count != len(profile.values):
        raise PacketRejected(
            Reason.PROFILE_MISMATCH,
            f"device {header.device_id} sends {header.sensor_count} values per "
            f"record, its profile has {len(profile.values)}",
        )
    if header.bytes_per_measurement != profile.record_size:
        raise PacketRejected(
            Reason.PROFILE_MISMATCH,
            f"device {header.device_id} sends {header.bytes_per_measurement}-byte "
            f"records, its profile describes {profile.record_size} bytes",
        )


def decode_header(
    data: bytes, profiles: Mapping[int, DeviceProfile]
) -> tuple[Header, DeviceProfile]:
    """
    Read and check a packet's header and find its device's profile.

    @raise PacketRejected: with the reason the packet cannot be decoded.
    """
    header = read_header(data)
    if len(data) != header.packet_size:
        raise PacketRejected(
            Reason.TRUNCATED if len(data) < header.packet_size else Reason.OVERSIZED,
            f"{len(data)} bytes, the header announces {header.packet_size}",
        )
    check_header(header)
    return header, device_profile(header, profiles)


def device_profile(header: Header, profiles: Mapping[int, DeviceProfile]) -> DeviceProfile:
    """
    The profile of a sane header's device.

    @raise PacketRejected: the device is unknown or its profile does not fit.
    """
    profile = profiles.get(header.device_id)
    if profile is None:
        raise PacketRejected(
            Reason.UNKNOWN_DEVICE, f"no profile for device {header.device_id}"
        )
    check_profile(header, profile)
    return profile


def timed_device(data: bytes) -> int | None:
    """
    The device whose timing state this packet advances, or C{None}.

    A packet counts as its device's upload when its header is whole and sane,
    whether or not the devices file knows the device yet: the timing state
    then does not depend on the devices file, and a packet quarantined for an
    unknown device decodes later, once described, with the times it would
    have had.
    """
    try:
        header = read_header(data)
        check_header(header)
    except PacketRejected:
        return None
    return header.device_id if len(data) == header.packet_size else None


def decode_packet(
    data: bytes,
    arrival_ns: int,
    inputs: TimingInputs,
    profiles: Mapping[int, DeviceProfile],
) -> DecodedPacket:
    """
    Decode one whole packet: its records' timestamps and converted values, by
    column (L{DecodedPacket}).  Records that repeat the previous packet are
    left out (L{weather.core.timing}).

    @param arrival_ns: when the packet's last byte arrived.
    @param inputs: what the server knew of the station then (journaled with
        the packet).
    @raise PacketRejected: with the reason the packet cannot be decoded.
    """
    header, profile = decode_header(data, profiles)
    return decode_records(data, header, profile, header.record_count, arrival_ns, inputs)


def decode_truncated(
    data: bytes,
    arrival_ns: int,
    inputs: TimingInputs,
    profiles: Mapping[int, DeviceProfile],
) -> DecodedPacket:
    """
    Decode the complete records of a truncated packet (fewer bytes than its
    header announces: the connection ended mid-packet), timed as if the
    packet had been whole.  The missing records are the newest, so each
    complete record gets the time it would have had; C{timing} is the whole
    packet's, C{times} and C{columns} hold the complete records stamped.

    @param arrival_ns: when the packet's last byte arrived.
    @param inputs: what a whole packet arriving then would be timed with
        (journaled with the truncated one).
    @raise PacketRejected: (with the reason a whole packet would have) the
        header is not sane, or the device unknown or its profile does not
        fit; (truncated) no record is complete, or the packet is irregular:
        the cut may hide whether its records repeat the previous packet's,
        so they are not stored.
    """
    header = read_header(data)
    check_header(header)
    profile = device_profile(header, profiles)
    complete = min(
        header.record_count, (len(data) - HEADER_SIZE) // header.bytes_per_measurement
    )
    what = f"{header.packet_size} bytes announced, {len(data)} received"
    if complete == 0:
        raise PacketRejected(Reason.TRUNCATED, f"{what}: no record complete")
    decoded = decode_records(data, header, profile, complete, arrival_ns, inputs)
    if decoded.timing.irregular:
        raise PacketRejected(
            Reason.TRUNCATED,
            f"{what}: more records than the time since the previous packet "
            "explains, and the cut hides whether they repeat it: none stored",
        )
    return decoded


def truncated_detail(data: bytes, decoded: DecodedPacket) -> str:
    """What a truncated packet's quarantine says once its complete records are stored."""
    return (
        f"{decoded.header.packet_size} bytes announced, {len(data)} received: "
        f"{len(decoded.times)} complete records stored"
    )


def decode_records(
    data: bytes,
    header: Header,
    profile: DeviceProfile,
    complete: int,
    arrival_ns: int,
    inputs: TimingInputs,
) -> DecodedPacket:
    """Decode the first C{complete} records of a packet, timed as the whole packet."""
    size = header.bytes_per_measurement
    records = data[HEADER_SIZE : HEADER_SIZE + complete * size]
    delay_ns = round(profile.upload_delay * NANOSECONDS)
    timing = time_records(header, records, arrival_ns, inputs, delay_ns)
    count = max(0, complete - timing.first)
    # All records in one struct call, record by record; value j of each
    # record is then every width-th value from j.
    raw = profile.records(count).unpack_from(data, HEADER_SIZE + timing.first * size)
    width = len(profile.values)
    columns = tuple(
        [spec.convert_all(raw[j::width]) for j, spec in enumerate(profile.values)]
    )
    times = timing.times if count == len(timing.times) else timing.times[:count]
    return DecodedPacket(header, profile, timing, times, columns)


def is_storable(reading: Reading) -> bool:
    """InfluxDB cannot store NaN or infinity (an f32 value may be either)."""
    return math.isfinite(reading.value)
