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
from zope.interface import implementer

from weather.decode import NANOSECONDS, decode_packet, is_storable
from weather.devices import DeviceProfile
from weather.interfaces import IPacketSink
from weather.lineprotocol import LineEncoder
from weather.logs import RateLimitedLog
from weather.packet import Header, Packet, PacketRejected, Reason
from weather.writer import PointsRejected, PointWriter


@implementer(IPacketSink)
class PacketPipeline:
    """Decode packets and pass their points to C{writer} (a L{PointWriter})."""

    log = Logger()

    def __init__(
        self,
        profiles: Mapping[int, DeviceProfile],
        writer: PointWriter,
        clock: IReactorTime,
    ) -> None:
        self.profiles = profiles
        self.writer = writer
        self.encoder = LineEncoder()
        self.stats: Counter[str] = Counter()
        #: device id -> arrival time (ns) of its last accepted packet
        self.last_arrival: dict[int, int] = {}
        self._unknown_devices: set[int | None] = set()
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
        previous = self.last_arrival.get(decoded.header.device_id)
        if previous is not None:
            self._check_spacing(decoded.header, packet.arrival_ns - previous)
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

    def _check_spacing(self, header: Header, spacing_ns: int) -> None:
        """
        Two packets of one device much closer than its upload interval:
        two stations share an id, or one retried.  Their readings can land
        on the same timestamps and overwrite each other, so say so.
        """
        if 3 * spacing_ns < header.wake_every * NANOSECONDS:
            self.stats["packets_too_close"] += 1
            self._limited.warn(
                ("too-close", header.device_id),
                "Device {device} sent a packet {seconds:.1f} s after its previous "
                "one, though it uploads every {wake} s: do two stations share "
                "this id? Their readings may overwrite each other",
                device=header.device_id,
                seconds=spacing_ns / NANOSECONDS,
                wake=header.wake_every,
            )

    def packet_rejected(self, packet: Packet, error: PacketRejected) -> None:
        self.stats["packets_rejected"] += 1
        self.stats[f"packets_rejected_{error.reason}"] += 1
        if error.reason == Reason.UNKNOWN_DEVICE:
            if packet.device_id in self._unknown_devices:
                return
            # Once per device: at most 256 lines, however many packets.
            self._unknown_devices.add(packet.device_id)
            self.log.warn(
                "Rejected a packet from {peer}: {detail}; describe device "
                "{device} in the --devices file to store its readings",
                peer=packet.peer,
                detail=error.detail,
                device=packet.device_id,
                reason=error.reason,
            )
            return
        self._limited.warn(
            error.reason,
            "Rejected a {size}-byte packet from {peer}: {reason} ({detail})",
            size=len(packet.data),
            peer=packet.peer,
            reason=error.reason,
            detail=error.detail,
        )

    def _points_rejected(self, failure: Failure, packet: Packet) -> None:
        failure.trap(PointsRejected)
        self.stats["points_refused"] += len(failure.value.lines)
