"""
Station packets on the wire: the header, its checks, and framing a byte stream
into packets.

Pure code: no I/O, no reactor, no clock.  A packet is C{9 + bytesReady} bytes:
a 9-byte little-endian header, then C{bytesReady} bytes of records, oldest
first (see docs/protocol.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

HEADER = struct.Struct("<HHHBBB")
HEADER_SIZE = HEADER.size  # 9
MAX_RECORD_BYTES = 0xFFFF
MAX_PACKET_SIZE = HEADER_SIZE + MAX_RECORD_BYTES


class Reason:
    """
    Why a packet was rejected: short, stable identifiers, used as log keys and
    counter labels.
    """

    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    ZERO_MEASUREMENT_EVERY = "zero-measurement-every"
    ZERO_WAKE_EVERY = "zero-wake-every"
    ZERO_BYTES_PER_MEASUREMENT = "zero-bytes-per-measurement"
    ZERO_SENSOR_COUNT = "zero-sensor-count"
    RAGGED_RECORDS = "ragged-records"
    UNKNOWN_DEVICE = "unknown-device"
    PROFILE_MISMATCH = "profile-mismatch"


class PacketRejected(Exception):
    """
    A packet that cannot be decoded, with a machine-readable C{reason} (one of
    L{Reason}) and a human-readable C{detail}.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class Header(NamedTuple):
    """
    The 9-byte packet header, as the station sent it.  A named tuple: as
    immutable as a frozen dataclass, and made in a third of the time (one is
    made per packet).
    """

    bytes_ready: int
    wake_every: int
    measurement_every: int
    bytes_per_measurement: int
    device_id: int
    sensor_count: int

    @property
    def record_count(self) -> int:
        """How many records follow the header (valid once L{check} passed)."""
        return self.bytes_ready // self.bytes_per_measurement

    @property
    def packet_size(self) -> int:
        return HEADER_SIZE + self.bytes_ready


def read_header(data: bytes) -> Header:
    """
    Unpack the header at the start of C{data} without judging it.

    @raise PacketRejected: (truncated) if fewer than 9 bytes are given.
    """
    if len(data) < HEADER_SIZE:
        raise PacketRejected(
            Reason.TRUNCATED, f"{len(data)} bytes, shorter than the 9-byte header"
        )
    return Header._make(HEADER.unpack_from(data))


def check_header(header: Header) -> None:
    """
    Reject a header that cannot describe a decodable packet.

    @raise PacketRejected: with the first problem found.
    """
    if header.measurement_every == 0:
        raise PacketRejected(Reason.ZERO_MEASUREMENT_EVERY, "measurementEvery is 0")
    if header.wake_every == 0:
        raise PacketRejected(Reason.ZERO_WAKE_EVERY, "wakeEvery is 0")
    if header.bytes_per_measurement == 0:
        raise PacketRejected(Reason.ZERO_BYTES_PER_MEASUREMENT, "bytesPerMeasurement is 0")
    if header.sensor_count == 0:
        raise PacketRejected(Reason.ZERO_SENSOR_COUNT, "sensorCount is 0")
    if header.bytes_ready % header.bytes_per_measurement:
        raise PacketRejected(
            Reason.RAGGED_RECORDS,
            f"bytesReady {header.bytes_ready} is not a multiple of "
            f"bytesPerMeasurement {header.bytes_per_measurement}",
        )


class PacketFramer:
    """
    Accumulate a connection's bytes and cut them into packets by their headers.

    A packet is complete once C{9 + bytesReady} bytes have arrived, however the
    bytes were split into segments.  A header announcing more than
    C{max_packet_size} bytes makes the rest of the stream unframeable: L{error}
    is set, nothing more is framed, and the caller should close the connection
    and keep L{take_pending} as the rejected bytes.
    """

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        self.max_packet_size = max_packet_size
        self.error: PacketRejected | None = None
        self._buffer = bytearray()

    def __len__(self) -> int:
        """How many received bytes do not (yet) make a whole packet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add C{data} and return every packet it completes, in order."""
        buffer = self._buffer
        buffer += data
        packets: list[bytes] = []
        while self.error is None and len(buffer) >= HEADER_SIZE:
            size = HEADER_SIZE + int.from_bytes(buffer[0:2], "little")
            if size > self.max_packet_size:
                self.error = PacketRejected(
                    Reason.OVERSIZED,
                    f"header announces {size} bytes, more than the maximum "
                    f"{self.max_packet_size}",
                )
            elif len(buffer) >= size:
                packets.append(bytes(buffer[:size]))
                del buffer[:size]
            else:
                break
        if self.error is not None and len(buffer) > self.max_packet_size:
            # Keep what is needed to show what was sent, no more.
            del buffer[self.max_packet_size :]
        return packets

    def take_pending(self) -> bytes:
        """Return and forget the bytes that do not make a whole packet."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


@dataclass(frozen=True, slots=True)
class Packet:
    """
    The bytes of one packet as received, with where and when they came from:
    everything needed to decode it again later.
    """

    data: bytes
    peer: str
    #: When its last byte arrived: wall clock, nanoseconds since the epoch.
    arrival_ns: int
    #: The same moment on the machine's boot clock (C{CLOCK_BOOTTIME}, never
    #: stepped), or None where unknown.
    boot_ns: int | None = None

    @property
    def device_id(self) -> int | None:
        """The header's device id, if the packet is long enough to have one."""
        return self.data[7] if len(self.data) >= HEADER_SIZE else None
