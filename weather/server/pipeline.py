"""
The packet pipeline: journal, then decode, then write; the journal forgets a
packet only once InfluxDB has all its points.

A received packet is journaled first, with what it is timed with
(L{weather.core.timing}); once it is on disk the station may be told so (the
protocol's acknowledgement byte) and the packet is decoded with those timing
inputs, and its points go to the writer.
A packet that cannot be decoded, or whose points InfluxDB refuses for good,
goes to quarantine with the reason.

While the writer is overloaded, and at start-up, packets are not decoded as
they arrive: they wait in the journal, and the pipeline reads them back in
order, a chunk at a time, as the writer has room.  Memory holds at most a few
chunks; the backlog is on disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from weather.core.decode import NANOSECONDS, DecodedPacket
from weather.core.devices import DeviceProfile
from weather.core.lineprotocol import LineEncoder, packet_points
from weather.core.packet import Header, Packet, PacketRejected, Reason
from weather.journal.service import Journal
from weather.journal.store import JournalEntry
from weather.server.counts import ReasonCounts
from weather.server.interfaces import IPacketSink, IPipelineObserver
from weather.server.logs import RateLimitedLog
from weather.server.writer import PointsRejected, PointWriter

#: The reason recorded for packets whose points InfluxDB refused.
REFUSED = "refused_by_influxdb"
#: Why packets are rejected on arrival or decoding: every L{Reason}.
REJECTION_REASONS = tuple(
    value
    for name, value in vars(Reason).items()
    if name.isupper() and isinstance(value, str)
)


@dataclass(slots=True)
class PipelineCounts:
    """What a L{PacketPipeline} counts, since it was made."""

    packets_accepted: int = 0
    #: By reason: one of L{REJECTION_REASONS}.
    packets_rejected: ReasonCounts = field(
        default_factory=lambda: ReasonCounts(REJECTION_REASONS)
    )
    packets_from_journal: int = 0
    packets_too_close: int = 0
    #: More records than the time since the previous packet explains, not a
    #: repeat of it: stamped with the station's learned interval.
    packets_irregular: int = 0
    packets_quarantined_refused: int = 0
    records_decoded: int = 0
    readings_decoded: int = 0
    readings_not_finite: int = 0
    points_refused: int = 0
    internal_errors: int = 0


def refusal(refused: PointsRejected) -> tuple[str, str, tuple[bytes, ...]]:
    """
    The quarantine reason, detail and refused lines of a packet whose points
    InfluxDB refused for good: the same for the server and C{weather replay}.
    """
    return REFUSED, f"HTTP {refused.status}: {refused.message}", tuple(refused.lines)


@implementer(IPacketSink)
class PacketPipeline(Service):
    """Journal packets, decode them and pass their points to C{writer}."""

    log = Logger()

    def __init__(
        self,
        profiles: Mapping[int, DeviceProfile],
        journal: Journal,
        writer: PointWriter,
        clock: IReactorTime,
        *,
        chunk: int = 500,
        retry_interval: float = 5.0,
    ) -> None:
        self.profiles = profiles
        self.journal = journal
        self.writer = writer
        self.clock = clock
        self.chunk = chunk
        self.retry_interval = retry_interval
        self.encoder = LineEncoder()
        self.stats = PipelineCounts()
        #: Told what becomes of each packet (see L{subscribe}).
        self.observers: list[IPipelineObserver] = []
        #: Packets handed to the writer and not yet settled.
        self.in_flight = 0
        self._limited = RateLimitedLog(self.log, clock)
        self._unknown_devices: set[int | None] = set()
        #: The last journal id decoded; later ones are read back from the journal.
        self._cursor = 0
        #: True while new packets wait in the journal rather than being decoded.
        self._backlog = True
        self._reading = False

    def subscribe(self, observer: IPipelineObserver) -> None:
        """Tell C{observer} what becomes of each packet from now on."""
        self.observers.append(observer)

    def set_profiles(self, profiles: Mapping[int, DeviceProfile]) -> None:
        """
        Decode with these profiles from now on (the devices file was
        re-read).  Packets already in quarantine stay there: replay them.
        """
        self.profiles = profiles
        self._unknown_devices.clear()
        for observer in self.observers:
            observer.profiles_changed(profiles)

    # -- life cycle ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        # The stations heard from before this start are known by their last
        # arrival: one silent since then shows as silent.
        for device, arrival_ns in self.journal.last_arrivals().items():
            profile = self.profiles.get(device)
            if profile is not None:
                for observer in self.observers:
                    observer.packet_arrived(profile, None, arrival_ns)
        self._read_backlog()

    def stopService(self) -> None:
        """Stop decoding: what is left stays in the journal for the next start."""
        super().stopService()
        self._backlog = True

    def writer_overloaded(self, overloaded: bool) -> None:
        """The writer holds too many points (True) or has room again (False)."""
        if overloaded:
            self._backlog = True
        else:
            self._read_backlog()

    # -- IPacketSink -----------------------------------------------------------

    def packet_received(self, packet: Packet) -> Deferred[None]:
        """Journal C{packet}; the result fires once it is durable."""
        profile = (
            self.profiles.get(packet.device_id) if packet.device_id is not None else None
        )
        if profile is not None:
            for observer in self.observers:
                observer.packet_arrived(profile, packet.peer, packet.arrival_ns)
        durable = self.journal.append(packet)
        durable.addCallback(self._journaled)
        return durable

    def packet_rejected(self, packet: Packet, error: PacketRejected) -> None:
        """Bytes that are not a whole packet: into quarantine, with why."""
        self._count_rejection(packet, error)
        self.journal.append_rejected(packet, error)
        self._log_rejection(packet, error)

    # -- decoding --------------------------------------------------------------

    def _journaled(self, entry: JournalEntry) -> None:
        if self._backlog:
            return  # read back from the journal in order, when there is room
        self._cursor = entry.id
        self._process(entry)

    def _process(self, entry: JournalEntry) -> None:
        """Decode and send; a bug here leaves the packet in the journal."""
        try:
            self._decode_and_send(entry)
        except Exception:
            self.stats.internal_errors += 1
            self.log.failure(
                "Internal error decoding packet {id}; it stays in the journal",
                id=entry.id,
            )

    def _read_backlog(self) -> None:
        if self._reading or not self.running or self.writer.overloaded:
            return
        self._reading = True
        self._backlog = True
        reading = self.journal.pending(self._cursor, self.chunk)
        reading.addCallbacks(self._backlog_read, self._backlog_failed)

    def _backlog_read(self, entries: list[JournalEntry]) -> None:
        if entries and self._cursor == 0:
            self.log.info(
                "Sending packets kept in the journal, oldest from {peer}",
                peer=entries[0].packet.peer,
            )
        for entry in entries:
            self._cursor = entry.id
            self.stats.packets_from_journal += 1
            self._process(entry)
        # Only now: a writer that has room again while this chunk is sent
        # must not start a second read from the middle of it.
        self._reading = False
        if not self.running or self.writer.overloaded:
            return  # writer_overloaded(False) or the next start reads on
        if len(entries) < self.chunk:
            # Caught up: every packet journaled after this read was made
            # becomes durable after it, and is decoded as it comes.
            self._backlog = False
        else:
            self._read_backlog()

    def _backlog_failed(self, failure: Failure) -> None:
        self._reading = False
        self.log.error(
            "Cannot read the journal ({why}); trying again in {delay} s",
            why=failure.getErrorMessage(),
            delay=self.retry_interval,
        )
        self.clock.callLater(self.retry_interval, self._read_backlog)

    def _decode_and_send(self, entry: JournalEntry) -> None:
        """Decode one journaled packet and send its points."""
        packet = entry.packet
        try:
            decoded, lines, skipped = packet_points(
                packet.data,
                packet.arrival_ns,
                entry.timing,
                self.profiles,
                self.encoder,
            )
        except PacketRejected as error:
            self._count_rejection(packet, error)
            self.journal.quarantine(entry.id, error.reason, error.detail)
            self._log_rejection(packet, error)
            return
        header = decoded.header
        spacing_ns = entry.timing.spacing_ns
        if spacing_ns is not None:
            self._check_spacing(header, spacing_ns)
        if decoded.timing.irregular:
            self._irregular(decoded, spacing_ns)
        self.stats.packets_accepted += 1
        self.stats.records_decoded += len(decoded.times)
        for observer in self.observers:
            observer.packet_decoded(
                decoded, packet.peer, packet.arrival_ns, entry.previous_arrival_ns
            )
        self.stats.readings_decoded += len(lines)
        if skipped:
            self.stats.readings_not_finite += skipped
            self._limited.warn(
                ("not-finite", header.device_id),
                "Device {device} sent {count} values that are not readings "
                "(sensor failure codes, NaN or infinite): not stored",
                device=header.device_id,
                count=skipped,
            )
        self.in_flight += 1
        written = self.writer.write(lines)
        written.addCallbacks(
            self._delivered,
            self._refused,
            callbackArgs=(entry.id,),
            errbackArgs=(entry.id,),
        )

    def _delivered(self, _: None, entry_id: int) -> None:
        self.in_flight -= 1
        self.journal.delivered(entry_id)

    def _refused(self, failure: Failure, entry_id: int) -> None:
        self.in_flight -= 1
        failure.trap(PointsRejected)
        refused: PointsRejected = failure.value
        self.stats.points_refused += len(refused.lines)
        self.stats.packets_quarantined_refused += 1
        self.journal.quarantine(entry_id, *refusal(refused))

    def _check_spacing(self, header: Header, spacing_ns: int) -> None:
        """
        Two packets of one device much closer than its upload interval:
        two stations share an id, or one retried.  The second's records
        cannot be timed from the spacing (they are stamped with the learned
        interval) and may land on the first's timestamps, so say so.
        """
        if 3 * spacing_ns < header.wake_every * NANOSECONDS:
            self.stats.packets_too_close += 1
            self._limited.warn(
                ("too-close", header.device_id),
                "Device {device} sent a packet {seconds:.1f} s after its previous "
                "one, though it uploads every {wake} s: do two stations share "
                "this id? Their readings may overwrite each other",
                device=header.device_id,
                seconds=spacing_ns / NANOSECONDS,
                wake=header.wake_every,
            )

    def _irregular(self, decoded: DecodedPacket, spacing_ns: int | None) -> None:
        """More records than the spacing explains, and not a repeat: say so."""
        self.stats.packets_irregular += 1
        device = decoded.header.device_id
        self._limited.warn(
            ("irregular", device),
            "Device {device} sent {count} records, more than the {seconds:.1f} s "
            "since its previous packet explain, and they do not repeat that "
            "packet: stamped {interval:.3f} s apart (its learned interval)",
            device=device,
            count=decoded.header.record_count,
            seconds=(spacing_ns or 0) / NANOSECONDS,
            interval=decoded.interval_ns / NANOSECONDS,
        )

    # -- rejections ------------------------------------------------------------

    def _count_rejection(self, packet: Packet, error: PacketRejected) -> None:
        self.stats.packets_rejected.add(error.reason)
        if packet.device_id is not None:
            for observer in self.observers:
                observer.packet_rejected(self.profiles.get(packet.device_id))

    def _log_rejection(self, packet: Packet, error: PacketRejected) -> None:
        if error.reason == Reason.UNKNOWN_DEVICE:
            if packet.device_id in self._unknown_devices:
                return
            # Once per device: at most 256 lines, however many packets.
            self._unknown_devices.add(packet.device_id)
            self.log.warn(
                "Device {device} (from {peer}) is not in the devices file: its "
                "packets are kept in quarantine in {data_dir}. Describe it as "
                "[devices.{device}] in the --devices file, reload it (SIGHUP), then run "
                "'weather replay --data-dir {data_dir}' to store them",
                peer=packet.peer,
                device=packet.device_id,
                data_dir=self.journal.directory,
                reason=error.reason,
            )
            return
        self._limited.warn(
            error.reason,
            "Quarantined a {size}-byte packet from {peer}: {reason} ({detail})",
            size=len(packet.data),
            peer=packet.peer,
            reason=error.reason,
            detail=error.detail,
        )
