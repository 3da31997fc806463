"""
When each record of a packet was taken: the timestamp rule (docs/protocol.md,
"Timestamps").

A station has no clock.  It takes a record every C{measurementEvery} seconds
of its own watchdog, which runs a few percent fast or slow, and uploads once
every C{R = ceil(wakeEvery / measurementEvery)} records.  The server stamps
the newest record of a packet with the packet's arrival and the others one
record interval apart, the interval measured from the spacing of the
station's uploads: over C{k} uploads when some were missed.  The station's
clock ratio (real / nominal interval), learned from its measured packets,
stands in when nothing can be measured.  Records the station repeats because
it missed the server's clear command are recognised against the previous
packet and not stamped again.

Pure code.  Everything a packet is timed with (L{TimingInputs}) is journaled
with it, so a packet timed twice gets the same times.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from weather.core.packet import Header

NANOSECONDS = 1_000_000_000
#: How many measured ratios of a station its learned ratio is the median of.
RATIOS_KEPT = 5
#: Ratios outside this range are not a watchdog's drift but a mistake
#: (two stations on one id, a clock step): they are not learned.
PLAUSIBLE_RATIO = (0.5, 1.5)
#: The most record bytes of a packet kept to recognise repeats in the next
#: (a reference station's ring holds 348; other layouts may hold more).
RECORDS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class TimingInputs:
    """
    What the server knew of a station when one of its packets arrived: the
    previous whole packet's arrival and records, the spacing between the
    two (on the boot clock when both arrived during one boot), and the
    station's learned clock ratio.  Journaled with the packet.
    """

    previous_arrival_ns: int | None = None
    spacing_ns: int | None = None
    ratio: float = 1.0
    previous_records: bytes = b""
    #: C{ratio} was learned from measured packets (else it is 1, a guess):
    #: only then may a gap be counted as several uploads, since an unknown
    #: drift times several uploads can pass for one upload more or less.
    learned: bool = False

    @classmethod
    def since(cls, previous_arrival_ns: int | None, arrival_ns: int) -> TimingInputs:
        """Only the previous arrival known, the spacing on the wall clock."""
        if previous_arrival_ns is None:
            return cls()
        return cls(previous_arrival_ns, arrival_ns - previous_arrival_ns)


@dataclass(frozen=True, slots=True)
class Timing:
    """
    How a packet's records are stamped.  C{times[i]} is the time of record
    C{first + i}: records before C{first} repeat the previous packet and
    are not stamped again.
    """

    times: list[int]
    first: int
    interval_ns: int
    #: The interval was measured from the spacing of uploads (else learned or
    #: nominal).
    measured: bool
    #: Uploads' worth of time since the previous packet (0: not measured).
    uploads: int
    #: Records of the previous packet sent again (the clear command was lost).
    repeated: int
    #: Records the station's full ring dropped since the previous packet.
    lost: int
    #: More records than the time since the previous packet explains, and
    #: not a repeat of it: stamped with the learned interval.
    irregular: bool
    #: The clock ratio this packet measured, to learn from (None: none).
    measured_ratio: float | None


def records_per_upload(header: Header) -> int:
    """C{R}: how many records a station takes between two uploads."""
    return -(-header.wake_every // header.measurement_every)


def learned_ratio(ratios: tuple[float, ...]) -> float:
    """A station's clock ratio from its last measured ones: their median, else 1."""
    return statistics.median(ratios[-RATIOS_KEPT:]) if ratios else 1.0


def repeats(records: bytes, previous: bytes, count: int, size: int) -> bool:
    """
    Whether the first C{count} records of C{records} are the last C{count}
    of the previous packet's, byte for byte; a previous record of 0xFF bytes
    (an I2C transfer cut short: the station still had the real one) matches
    whatever the station sends again in its place.
    """
    if count * size > len(previous):
        return False
    tail = previous[len(previous) - count * size :]
    cut_short = b"\xff" * size
    for start in range(0, count * size, size):
        before = tail[start : start + size]
        if before != records[start : start + size] and before != cut_short:
            return False
    return True


def stamp(count: int, newest_ns: int, interval_ns: int) -> list[int]:
    """The times of C{count} records, oldest first, the last at C{newest_ns}."""
    start = newest_ns - (count - 1) * interval_ns
    return [start + i * interval_ns for i in range(count)]


def time_records(
    header: Header,
    records: bytes,
    arrival_ns: int,
    inputs: TimingInputs,
    upload_delay_ns: int = 0,
) -> Timing:
    """
    Stamp a whole packet's records (C{records}: its bytes after the header).

    @param upload_delay_ns: how long before the packet's arrival its newest
        record was taken (a station profile's upload delay).
    """
    n = header.record_count
    size = header.bytes_per_measurement
    per_upload = records_per_upload(header)
    nominal_ns = header.measurement_every * NANOSECONDS
    learned_ns = round(nominal_ns * inputs.ratio)
    # R records, not wakeEvery: the station wakes the ESP after the record
    # that reaches wakeEvery, so it uploads every R * measurementEvery.
    upload_ns = per_upload * nominal_ns * inputs.ratio
    spacing = inputs.spacing_ns
    uploads = round(spacing / upload_ns) if spacing is not None and spacing > 0 else 0
    countable = uploads == 1 or (uploads > 1 and inputs.learned)
    measured = countable and 3 * abs(spacing - uploads * upload_ns) < upload_ns
    interval_ns, first, repeated, lost, irregular = learned_ns, 0, 0, 0, False
    if measured:
        assert spacing is not None
        expected = uploads * per_upload
        interval_ns = (spacing + expected // 2) // expected
        surplus = n - expected
        if surplus > 0:
            if repeats(records, inputs.previous_records, surplus, size):
                first, repeated = surplus, surplus
            else:
                measured, irregular, interval_ns = False, True, learned_ns
        else:
            lost = -surplus
    ratio = interval_ns / nominal_ns if measured else None
    if ratio is not None and not PLAUSIBLE_RATIO[0] <= ratio <= PLAUSIBLE_RATIO[1]:
        ratio = None
    times = stamp(n - first, arrival_ns - upload_delay_ns, interval_ns)
    return Timing(
        times,
        first,
        interval_ns,
        measured,
        uploads if measured else 0,
        repeated,
        lost,
        irregular,
        ratio,
    )


@dataclass(frozen=True, slots=True)
class StationState:
    """
    What the server keeps of a station between packets, in the journal: the
    last whole packet's arrival on the wall and boot clocks, its records,
    and the clock ratios measured so far.
    """

    arrival_ns: int
    boot_ns: int | None
    boot_id: str | None
    ratios: tuple[float, ...] = ()
    records: bytes = b""

    def inputs(
        self, arrival_ns: int, boot_ns: int | None, boot_id: str | None
    ) -> TimingInputs:
        """
        What a packet arriving now is timed with: the spacing on the boot
        clock when both packets arrived during one boot (a wall-clock step in
        between does not change it), else on the wall clock.
        """
        same_boot = boot_id is not None and boot_id == self.boot_id
        if same_boot and boot_ns is not None and self.boot_ns is not None:
            spacing = boot_ns - self.boot_ns
        else:
            spacing = arrival_ns - self.arrival_ns
        return TimingInputs(
            self.arrival_ns,
            spacing,
            learned_ratio(self.ratios),
            self.records,
            learned=bool(self.ratios),
        )

    def after(
        self,
        timing: Timing,
        records: bytes,
        arrival_ns: int,
        boot_ns: int | None,
        boot_id: str | None,
    ) -> StationState:
        """The state once a packet timed as C{timing} arrived."""
        ratios = self.ratios
        if timing.measured_ratio is not None:
            ratios = (*ratios, timing.measured_ratio)[-RATIOS_KEPT:]
        return StationState(arrival_ns, boot_ns, boot_id, ratios, records[-RECORDS_KEPT:])


def first_state(
    records: bytes, arrival_ns: int, boot_ns: int | None, boot_id: str | None
) -> StationState:
    """A station's state after its first packet known to the server."""
    return StationState(arrival_ns, boot_ns, boot_id, (), records[-RECORDS_KEPT:])
