"""
The packet pipeline: a received packet is decoded with its device's timing
state, turned into points and handed to the writer.

Rejected packets are logged (one line per reason and device per minute) and
counted.  The per-device timing state (the previous accepted arrival) is read
and updated in the same synchronous step as the decode, so packets that arrive
at the same moment, from one device or many, each see a consistent state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from weather.decode import decode_packet, is_storable
from weather.devices import DeviceProfile
from weather.lineprotocol import LineEncoder
from weather.logs import RateLimitedLog
from weather.packet import Packet, PacketRejected, Reason
from weather.writer import PointsRejected


class IPacketSink(Interface):
    """Where the station protocol hands what it received."""

    def packet_received(packet: Packet) -> Deferred:
        """A whole packet arrived; the result fires when it is dealt with."""

    def packet_rejected(packet: Packet, error: PacketRejected) -> None:
        """Bytes that cannot be a packet (truncated, oversized) arrived."""


@implementer(IPacketSink)
class PacketPipeline:
    """Decode packets and pass their points to C{writer} (a L{PointWriter})."""

    log = Logger()

    def __init__(
        self, profiles: Mapping[int, DeviceProfile], writer, clock: IReactorTime
    ) -> None:
        self.profiles = profiles
        self.writer = writer
        self.encoder = LineEncoder()
        self.stats: Counter[str] = Counter()
        #: device id -> arrival time (ns) of its last accepted packet
        self.last_arrival: dict[int, int] = {}
        self._limited = RateLimitedLog(self.log, clock)

    def packet_received(self, packet: Packet) -> Deferred[None]:
        device_id = packet.device_id
        try:
            decoded = decode_packet(
                packet.data,
                packet.arrival_ns,
                self.last_arrival.get(device_id) if device_id is not None else None,
                self.profiles,
            )
        except PacketRejected as error:
            self.packet_rejected(packet, error)
            return succeed(None)
        self.last_arrival[decoded.header.device_id] = packet.arrival_ns
        self.stats["packets_accepted"] += 1
        self.stats["records_decoded"] += decoded.header.record_count
        readings = [r for r in decoded.readings if is_storable(r)]
        self.stats["readings_decoded"] += len(readings)
        if len(readings) < len(decoded.readings):
            skipped = len(decoded.readings) - len(readings)
            self.stats["readings_not_finite"] += skipped
            self._limited.warn(
                ("not-finite", decoded.header.device_id),
                "Device {device} sent {count} values that are NaN or infinite; "
                "InfluxDB cannot store them",
                device=decoded.header.device_id,
                count=skipped,
            )
        result = self.writer.write(self.encoder.encode(readings))
        result.addErrback(self._points_rejected, packet)
        return result

    def packet_rejected(self, packet: Packet, error: PacketRejected) -> None:
        self.stats["packets_rejected"] += 1
        self.stats[f"packets_rejected_{error.reason}"] += 1
        device = packet.device_id if error.reason != Reason.TRUNCATED else None
        self._limited.warn(
            (error.reason, device),
            "Rejected a {size}-byte packet from {peer}: {reason} ({detail})",
            size=len(packet.data),
            peer=packet.peer,
            reason=error.reason,
            detail=error.detail,
        )

    def _points_rejected(self, failure: Failure, packet: Packet) -> None:
        failure.trap(PointsRejected)
        self.stats["points_refused"] += len(failure.value.lines)
