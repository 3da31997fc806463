"""
The packet pipeline: journal, then decode, then write; the journal forgets a
packet only once InfluxDB has all its points.

A received packet is journaled first, with what it is timed with
(L{weather.core.timing}); once it is on disk the station may be told so (the
protocol's acknowledgement byte) and the packet is decoded with those timing
inputs, and its points go to the writer.
A packet that cannot be decoded, or whose points InfluxDB refuses for good,
goes to quarantine with the reason.

What is not a described station's packet is told at arrival from its header
alone (L{stray}): unknown devices, headers that are not sane, cut-off or
oversized bytes.  It goes straight to quarantine, and only while the
quarantine is under its budget (C{--quarantine-max-size}); past it, it is
refused before it is acknowledged (L{PacketRefused}: the protocol closes the
connection), counted by source and reason and logged once per source and
reason an hour.  A described station's packet is never refused on the
quarantine's account: one that fails to decode later (a profile mismatch)
goes to quarantine over its budget all the same, as do its truncated bytes
and the packets whose points InfluxDB refuses.  A sender forging a
described station's id is not told apart: what it sends is decoded as that
station's.

While the writer is overloaded, and at start-up, packets are not decoded as
they arrive: they wait in the journal, and the pipeline reads them back in
order, a chunk at a time, as the writer has room.  Memory holds at most a few
chunks; the backlog is on disk.

With C{--clock-sync wait} (L{weather.server.clock}) packets also wait in the
journal while the wall clock is not synchronized.  Once it is, the backlog is
read as above and each packet that arrived before, during this boot, gets its
arrival put right (L{ClockGate.rebase}).  The new arrival is journaled, and
only once it is on disk is the packet decoded: a packet is always decoded
with the arrival the journal holds, so a replay after a crash (or after the
next reboot, when the boot clock can no longer tell), a quarantine and
C{weather replay} give the same points.  A packet that arrived during an
earlier boot cannot be put right: it is decoded with the wall time recorded
at arrival, counted and logged.

C{weather replay} run while the server holds the journal hands quarantined
packets to it: it marks them in the journal
(L{weather.journal.store.REPLAY_REQUESTED}) and sends
SIGHUP, which re-reads the devices file and then calls L{take_replays}; a
start takes up requests left in the journal too.  Once the backlog is read,
the requests are read a chunk at a time (not while the writer is
overloaded) and each is decoded as C{weather replay} decodes it, with its
recorded arrival and timing: rejected again, it goes back to quarantine
with why; truncated, its complete records are stored and it stays
C{truncated}; decodable, it becomes pending again (L{Journal.taken}) and its
points go to the writer, observers told, as for a packet that just arrived.
Each step is a journal commit, so a crash at any point loses nothing: a
request not yet taken is taken at the next start, a pending packet is read
back with the backlog.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from weather.core.decode import (
    NANOSECONDS,
    DecodedPacket,
    device_profile,
    truncated_detail,
)
from weather.core.devices import DeviceProfile
from weather.core.dump import counted, timing_summary
from weather.core.lineprotocol import LineEncoder, packet_points, truncated_points
from weather.core.packet import (
    Header,
    Packet,
    PacketRejected,
    Reason,
    check_header,
    read_header,
)
from weather.journal.service import Journal
from weather.journal.store import JournalEntry
from weather.server.clock import ClockGate
from weather.server.counts import ReasonCounts, SourceCounts
from weather.server.interfaces import IPacketSink, IPipelineObserver, PacketRefused
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
#: Seconds between two lines about refusals from one source for one reason.
REFUSAL_LOG_PERIOD = 3600.0


def stray(data: bytes, profiles: Mapping[int, DeviceProfile]) -> PacketRejected | None:
    """
    Why C{data} is not a described station's packet, judged from its header
    alone; None when it is (whole and sane, of a device the devices file
    describes), even if it is then not decodable (a profile mismatch).
    """
    try:
        header = read_header(data)
        check_header(header)
        device_profile(header, profiles)
    except PacketRejected as error:
        if error.reason != Reason.PROFILE_MISMATCH:
            return error
    return None


def peer_source(peer: str) -> str:
    """The address of a C{host:port} or C{[host]:port} peer: what refusals count by."""
    host, colon, port = peer.rpartition(":")
    if not colon or not port.isdigit():
        return peer
    return host.removeprefix("[").removesuffix("]")


@dataclass(slots=True)
class PipelineCounts:
    """What a L{PacketPipeline} counts, since it was made."""

    packets_accepted: int = 0
    #: By reason: one of L{REJECTION_REASONS}.
    packets_rejected: ReasonCounts = field(
        default_factory=lambda: ReasonCounts(REJECTION_REASONS)
    )
    #: Not kept (the quarantine had spent its budget), by source and reason.
    packets_refused: SourceCounts = field(
        default_factory=lambda: SourceCounts(REJECTION_REASONS)
    )
    packets_from_journal: int = 0
    packets_too_close: int = 0
    #: More records than the time since the previous packet explains, not a
    #: repeat of it: stamped with the station's learned interval.
    packets_irregular: int = 0
    packets_quarantined_refused: int = 0
    records_decoded: int = 0
    #: Complete records of truncated packets InfluxDB has (the packets stay in
    #: quarantine).
    records_from_truncated: int = 0
    readings_decoded: int = 0
    readings_not_finite: int = 0
    points_refused: int = 0
    internal_errors: int = 0
    #: Packets that waited for the wall clock and were stamped on it once it
    #: was synchronized (L{ClockGate.rebase}).
    packets_clock_rebased: int = 0
    #: Packets of an earlier boot read back while waiting for the clock is
    #: on: stamped with the wall time recorded at arrival, unchecked.
    packets_clock_unchecked: int = 0
    #: Packets taken from quarantine at C{weather replay}'s request that
    #: decoded: their points went to the writer (L{PacketPipeline.take_replays}).
    packets_replayed: int = 0


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
        clock_gate: ClockGate | None = None,
    ) -> None:
        """
        @param clock_gate: whether packets wait for the wall clock (None:
            never, as with C{--clock-sync trust}).
        """
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
        # Its own table: a flood of refusals must not crowd out other lines.
        self._refusals = RateLimitedLog(self.log, clock, period=REFUSAL_LOG_PERIOD)
        self._unknown_devices: set[int | None] = set()
        #: The last journal id decoded; later ones are read back from the journal.
        self._cursor = 0
        #: True while new packets wait in the journal rather than being decoded.
        self._backlog = True
        self._reading = False
        self.clock_gate = clock_gate
        #: The --devices file, named in the hint for an unknown device.
        self.devices_file: str | None = None
        #: Packets in the journal waiting for the wall clock.
        self.clock_waiting = 0
        #: Since when (C{clock.seconds()}) packets have waited for it.
        self.clock_waiting_since: float | None = None
        #: Replay requests are to be taken up (again, once this batch ends).
        self._replay_wanted = False
        self._replay_again = False
        self._replay_reading = False
        #: The last replay request read in this batch (0: none yet).
        self._replay_cursor = 0
        #: Packets taken from replay requests whose points are not settled:
        #: neither reader decodes them again.
        self._replaying: set[int] = set()
        #: Packets taken from replay requests past L{_cursor} when taken,
        #: which the backlog reader is to pass over (the journal may not yet
        #: hold what became of them when it reads).
        self._replayed: set[int] = set()

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
        gate = self.clock_gate
        if gate is not None:
            gate.start(self._clock_synchronized)
            if gate.holding:  # what the journal holds waits too
                counted = self.journal.status()
                counted.addCallback(lambda status: self._wait_for_clock(status.pending))
                counted.addErrback(
                    lambda failure: self.log.failure(
                        "Cannot count the packets waiting for the clock", failure
                    )
                )
        self._read_backlog()
        if self.journal.replay_requested_at_start:
            self.take_replays()  # left by a weather replay before this start

    def stopService(self) -> None:
        """Stop decoding: what is left stays in the journal for the next start."""
        super().stopService()
        self._backlog = True
        if self.clock_gate is not None:
            self.clock_gate.stop()

    def writer_overloaded(self, overloaded: bool) -> None:
        """The writer holds too many points (True) or has room again (False)."""
        if overloaded:
            self._backlog = True
        else:
            self._read_backlog()

    # -- IPacketSink -----------------------------------------------------------

    def packet_received(self, packet: Packet) -> Deferred[None]:
        """
        Journal C{packet}; the result fires once it is durable, or fails
        with L{PacketRefused} (it is not a described station's, and the
        quarantine has spent its budget).
        """
        error = stray(packet.data, self.profiles)
        if error is not None:
            if self.journal.quarantine_full:
                self._refuse(packet, error)
                return fail(PacketRefused(error.reason))
            self._count_rejection(packet, error)
            durable = self.journal.append(packet, error)
            self._log_rejection(packet, error)
            return durable.addCallback(lambda _: None)
        profile = self.profiles[read_header(packet.data).device_id]
        for observer in self.observers:
            observer.packet_arrived(profile, packet.peer, packet.arrival_ns)
        durable = self.journal.append(packet)
        durable.addCallback(self._journaled)
        return durable

    def packet_rejected(self, packet: Packet, error: PacketRejected) -> None:
        """
        Bytes that are not a whole packet: into quarantine, with why; a
        truncated packet's complete records are then stored (L{_salvage}).
        Past the quarantine's budget, only a described station's are kept.
        """
        if self.journal.quarantine_full and (
            error.reason == Reason.OVERSIZED or stray(packet.data, self.profiles)
        ):
            self._refuse(packet, error)
            return
        self._count_rejection(packet, error)
        durable = self.journal.append_rejected(packet, error)
        self._log_rejection(packet, error)
        if error.reason == Reason.TRUNCATED:
            durable.addCallback(self._salvage)

    # -- decoding --------------------------------------------------------------

    def _journaled(self, entry: JournalEntry) -> None:
        if self._backlog:
            if self._holding():
                self._wait_for_clock(1)
            return  # read back from the journal in order, when there is room
        self._cursor = entry.id
        self._process(entry)

    def _process(
        self, entry: JournalEntry, how: Callable[[JournalEntry], None] | None = None
    ) -> None:
        """Decode and send; a bug here leaves the packet in the journal."""
        try:
            (how or self._decode_and_send)(entry)
        except Exception:
            self.stats.internal_errors += 1
            self.log.failure(
                "Internal error decoding packet {id}; it stays in the journal",
                id=entry.id,
            )

    def _read_backlog(self) -> None:
        if self._reading or not self.running or self.writer.overloaded:
            return
        if self._holding():
            return  # read once the clock is synchronized
        self._reading = True
        self._backlog = True
        reading = self.journal.pending(self._cursor, self.chunk)
        reading.addCallbacks(self._backlog_read, self._backlog_failed)

    def _backlog_read(self, entries: list[JournalEntry]) -> None:
        arrivals: dict[int, int] = {}
        if self.clock_gate is not None and self.clock_gate.wait:
            entries, arrivals = self._rebased(entries)
        if not arrivals:
            self._backlog_send(entries, last=len(entries) < self.chunk)
            return
        # Packets may become durable while the new arrivals are written:
        # read on after this chunk rather than take it for the last.
        rebased = self.journal.rebase(arrivals)
        rebased.addCallback(lambda _: self._backlog_send(entries, last=False))

    def _backlog_send(self, entries: list[JournalEntry], last: bool) -> None:
        if entries and self._cursor == 0:
            self.log.info(
                "Sending packets kept in the journal, oldest from {peer}",
                peer=entries[0].packet.peer,
            )
        for entry in entries:
            self._cursor = entry.id
            if entry.id in self._replayed or entry.id in self._replaying:
                self._replayed.discard(entry.id)  # taken from a replay request
                continue
            self.stats.packets_from_journal += 1
            self._process(entry)
        # Only now: a writer that has room again while this chunk is sent
        # must not start a second read from the middle of it.
        self._reading = False
        if not self.running or self.writer.overloaded:
            return  # writer_overloaded(False) or the next start reads on
        if last:
            # Caught up: every packet journaled after this read was made
            # becomes durable after it, and is decoded as it comes.
            self._backlog = False
            self._read_replays()
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

    # -- waiting for the clock -------------------------------------------------

    def _holding(self) -> bool:
        return self.clock_gate is not None and self.clock_gate.holding

    def _wait_for_clock(self, count: int) -> None:
        if count and self._holding():
            if self.clock_waiting_since is None:
                self.clock_waiting_since = self.clock.seconds()
            self.clock_waiting += count

    def _clock_synchronized(self) -> None:
        """The gate opened: decode what waited, oldest first."""
        self.log.info(
            "The wall clock is synchronized: decoding the {packets} that waited for it",
            count=self.clock_waiting,
            packets=counted(self.clock_waiting, "packet"),
        )
        self.clock_waiting, self.clock_waiting_since = 0, None
        self._read_backlog()

    def _rebased(
        self, entries: list[JournalEntry]
    ) -> tuple[list[JournalEntry], dict[int, int]]:
        """C{entries} with their arrivals put right, and the new arrivals by id."""
        assert self.clock_gate is not None
        result, arrivals, unchecked = [], {}, 0
        for entry in entries:
            arrival_ns = self.clock_gate.rebase(entry.packet, entry.boot_id)
            if arrival_ns is None:
                unchecked += 1
            elif arrival_ns != entry.packet.arrival_ns:
                arrivals[entry.id] = arrival_ns
                entry = replace(entry, packet=replace(entry.packet, arrival_ns=arrival_ns))
            result.append(entry)
        self.stats.packets_clock_rebased += len(arrivals)
        if unchecked:
            self.stats.packets_clock_unchecked += unchecked
            self._limited.warn(
                "clock-unchecked",
                "{packets} kept in the journal arrived before this machine "
                "last booted: stamped with the wall time recorded at their arrival, "
                "which cannot be checked against the clock now",
                count=unchecked,
                packets=counted(unchecked, "packet"),
            )
        return result, arrivals

    def _decode(self, entry: JournalEntry) -> tuple[DecodedPacket, list[bytes], int]:
        """
        A journaled packet's points, with the arrival and timing the journal
        holds.  @raise PacketRejected: it cannot be decoded.
        """
        packet = entry.packet
        return packet_points(
            packet.data, packet.arrival_ns, entry.timing, self.profiles, self.encoder
        )

    def _decode_and_send(self, entry: JournalEntry) -> None:
        """Decode one journaled packet and send its points."""
        try:
            decoded, lines, skipped = self._decode(entry)
        except PacketRejected as error:
            self._count_rejection(entry.packet, error)
            self.journal.quarantine(entry.id, error.reason, error.detail)
            self._log_rejection(entry.packet, error)
            return
        self._send(entry, decoded, lines, skipped)

    def _send(
        self, entry: JournalEntry, decoded: DecodedPacket, lines: list[bytes], skipped: int
    ) -> None:
        """Tell the observers about a decoded packet and send its points."""
        packet = entry.packet
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
        self.log.info(
            "Station {device} ({station}) from {peer}: {records}, {points}; {timing}",
            device=header.device_id,
            station=", ".join(f"{k}={v}" for k, v in decoded.profile.tags) or "no tags",
            peer=packet.peer,
            records=counted(len(decoded.times), "record"),
            points=counted(len(lines), "point"),
            timing=timing_summary(decoded.timing, entry.timing.learned),
        )
        if skipped:
            self.stats.readings_not_finite += skipped
            self._limited.warn(
                ("not-finite", header.device_id),
                "Device {device} sent {values} that are not readings "
                "(sensor failure codes, NaN or infinite): not stored",
                device=header.device_id,
                count=skipped,
                values=counted(skipped, "value"),
            )
        self.in_flight += 1
        written = self.writer.write(lines)
        written.addCallbacks(
            self._delivered,
            self._refused,
            callbackArgs=(entry.id,),
            errbackArgs=(entry.id,),
        )

    def _salvage(self, entry: JournalEntry, whole: PacketRejected | None = None) -> None:
        """
        Write a quarantined truncated packet's complete records, timed with
        what was journaled with it as if it had been whole; once InfluxDB
        has them its quarantine detail says how many.  Its station's state
        is not advanced, nor are observers told: it is not an upload.

        The packet stays in quarantine whatever becomes of its points.  If
        the server stops before InfluxDB has them, its detail does not say
        they were stored, and C{weather replay} writes the same points (it
        always does for a truncated packet: InfluxDB overwrites a point of
        the same series and time, so they are never stored twice).  They go
        to the writer at once, even while it is overloaded: truncated packets
        are rare.

        @param whole: why the packet did not decode whole, when it is taken
            from a replay request: with no records to store, it goes back to
            quarantine so.
        """
        packet = entry.packet
        try:
            points = truncated_points(
                packet.data, packet.arrival_ns, entry.timing, self.profiles, self.encoder
            )
        except PacketRejected:
            if whole is not None:
                self._back_to_quarantine(entry, whole)
            return  # nothing to store: quarantined as it came
        except Exception:
            self.stats.internal_errors += 1
            self.log.failure(
                "Internal error decoding truncated packet {id}; it stays in quarantine",
                id=entry.id,
            )
            return
        detail = truncated_detail(packet.data, points.decoded)
        self.in_flight += 1
        written = self.writer.write(points.lines)
        written.addCallbacks(
            self._salvaged,
            self._refused,
            callbackArgs=(entry.id, len(points.decoded.times), detail),
            errbackArgs=(entry.id,),
        )

    def _salvaged(self, _: None, entry_id: int, records: int, detail: str) -> None:
        self.in_flight -= 1
        self._replaying.discard(entry_id)
        self.stats.records_from_truncated += records
        self.journal.quarantine(entry_id, Reason.TRUNCATED, detail)

    def _delivered(self, _: None, entry_id: int) -> None:
        self.in_flight -= 1
        self._replaying.discard(entry_id)
        self.journal.delivered(entry_id)

    def _refused(self, failure: Failure, entry_id: int) -> None:
        self.in_flight -= 1
        self._replaying.discard(entry_id)
        failure.trap(PointsRejected)
        refused: PointsRejected = failure.value
        self.stats.points_refused += len(refused.lines)
        self.stats.packets_quarantined_refused += 1
        self.journal.quarantine(entry_id, *refusal(refused))

    # -- replay requests -------------------------------------------------------

    def take_replays(self) -> None:
        """
        Take up the packets C{weather replay} asked this server to decode
        again (SIGHUP, after the devices file is re-read; and at start),
        once the backlog is read.
        """
        if self._replay_wanted:
            self._replay_again = True  # this batch may have passed them
        self._replay_wanted = True
        self._read_replays()

    def _read_replays(self) -> None:
        if not self._replay_wanted or self._replay_reading or not self.running:
            return
        if self._backlog:
            return  # once caught up (_backlog_send), or the writer has room
        self._replay_reading = True
        if self._replay_cursor == 0:
            reading = self.journal.count_replay_requested()
            reading.addCallback(self._replays_counted)
        else:
            reading = self.journal.replay_requested(self._replay_cursor, self.chunk)
        reading.addCallbacks(self._replays_read, self._replays_failed)

    def _replays_counted(self, count: int) -> Deferred[list[JournalEntry]]:
        if count:
            self.log.info(
                "Replaying {packets} requested by weather replay",
                count=count,
                packets=counted(count, "packet"),
            )
        return self.journal.replay_requested(0, self.chunk)

    def _replays_read(self, entries: list[JournalEntry]) -> None:
        for entry in entries:
            self._replay_cursor = entry.id
            if entry.id not in self._replaying:
                self._process(entry, self._replay)
        self._replay_reading = False
        if len(entries) == self.chunk:
            self._read_replays()  # unless overloaded: then once caught up
            return
        self._replay_cursor = 0
        self._replay_wanted, self._replay_again = self._replay_again, False
        self._read_replays()

    def _replays_failed(self, failure: Failure) -> None:
        self._replay_reading = False
        self.log.error(
            "Cannot read the replay requests ({why}); trying again in {delay} s",
            why=failure.getErrorMessage(),
            delay=self.retry_interval,
        )
        self.clock.callLater(self.retry_interval, self._read_replays)

    def _replay(self, entry: JournalEntry) -> None:
        """
        Decode a packet taken from a replay request as C{weather replay}
        decodes it: pending again, its points sent, or back in quarantine.
        One that arrived while the wall clock waited to be synchronized is
        stamped on the synchronized clock first, and journaled so, as the
        backlog reader would (a restart then decodes it at the same time).
        """
        if self.clock_gate is not None and self.clock_gate.wait:
            [entry], arrivals = self._rebased([entry])
            if arrivals:
                self.journal.rebase(arrivals)  # committed with or before C{taken}
        try:
            decoded, lines, skipped = self._decode(entry)
        except PacketRejected as error:
            if error.reason == Reason.TRUNCATED:
                self._take(entry)
                self._salvage(entry, whole=error)
            else:
                self._back_to_quarantine(entry, error)
            return
        self._take(entry)
        self.journal.taken(entry.id)
        self.stats.packets_replayed += 1
        self._send(entry, decoded, lines, skipped)

    def _take(self, entry: JournalEntry) -> None:
        self._replaying.add(entry.id)
        if entry.id > self._cursor:
            self._replayed.add(entry.id)

    def _back_to_quarantine(self, entry: JournalEntry, error: PacketRejected) -> None:
        """A replay request rejected again: in quarantine with why, as before."""
        self._replaying.discard(entry.id)
        self.journal.quarantine(entry.id, error.reason, error.detail)
        self._log_rejection(entry.packet, error)

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

    def _refuse(self, packet: Packet, error: PacketRejected) -> None:
        """Count and log a packet not kept: the quarantine has spent its budget."""
        source = peer_source(packet.peer)
        self.stats.packets_refused.add(source, error.reason)
        self._refusals.warn(
            (source, error.reason),
            "Refused a {size}-byte packet from {peer}, not acknowledged ({reason}: "
            "{detail}): the quarantine holds {used} bytes, its budget "
            "(--quarantine-max-size) is {budget}, and this is not a packet of a "
            "station in the devices file (logged once an hour per address and reason)",
            size=len(packet.data),
            peer=packet.peer,
            reason=error.reason,
            detail=error.detail,
            used=self.journal.quarantined_bytes,
            budget=self.journal.quarantine_max_bytes,
        )

    def _log_rejection(self, packet: Packet, error: PacketRejected) -> None:
        if error.reason == Reason.UNKNOWN_DEVICE:
            if packet.device_id in self._unknown_devices:
                return
            # Once per device: at most 256 lines, however many packets.
            self._unknown_devices.add(packet.device_id)
            devices = self.devices_file or "FILE"
            self.log.warn(
                "Device {device} (from {peer}) is not in the devices file: its "
                "packets are kept in quarantine in {data_dir}. Describe it as "
                "[devices.{device}] in {where}, {reload}then run "
                "'weather replay --data-dir {data_dir} --devices {devices}' to store "
                "them (while this server runs, the replay has it re-read its devices "
                "file and store them)",
                peer=packet.peer,
                device=packet.device_id,
                data_dir=self.journal.directory,
                where=self.devices_file or "a devices file",
                reload=""
                if self.devices_file
                else "restart the server with --devices FILE, ",
                devices=devices,
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
