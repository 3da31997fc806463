"""
What the server knows about each station, kept in memory: when it was last
heard from, how much it sent, the uploads and records it missed or repeated,
its sensors' failures, and how its clock compares with the server's.

The figures are the timestamp rule's own (L{weather.core.timing}, and
docs/protocol.md, "Timestamps"): a packet measured over C{k} uploads missed
C{k - 1}; the clock ratio shown is the median of the last ratios measured,
as the rule learns it.  Pure bookkeeping: the caller passes every time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from zope.interface import implementer

from weather.core.decode import NANOSECONDS, DecodedPacket
from weather.core.devices import DeviceProfile
from weather.core.timing import RATIOS_KEPT, learned_ratio
from weather.ops.history import StationHistory
from weather.server.interfaces import IPipelineObserver

#: A station is overdue when silent for more than this many wake intervals.
OVERDUE_FACTOR = 1.5
#: The reference station's wakeEvery, for stations whose interval is not known yet.
ASSUMED_WAKE_EVERY = 3600


@dataclass
class LatestReading:
    """The newest value of one of a station's measurements."""

    value: float
    time_ns: int
    unit: str


@dataclass
class StationRecord:
    """One station's figures since the server started."""

    device_id: int
    tags: tuple[tuple[str, str], ...] = ()
    peer: str | None = None
    last_seen_ns: int | None = None
    packets: int = 0
    #: Records stamped and stored (repeats of the previous packet left out).
    records: int = 0
    readings: int = 0
    rejected: int = 0
    #: Uploads between two packets that never came (exact: measured spacing).
    missed_uploads: int = 0
    #: Records sent again after a lost clear command: not stored twice.
    records_repeated: int = 0
    #: Records the station's full ring dropped before it could upload them.
    records_lost: int = 0
    #: Packets with more records than their spacing explains, not a repeat.
    irregular_packets: int = 0
    #: Per value name: values that are not readings (a sensor's failure code),
    #: from the first packet decoded on (0 for each value).
    sensor_failures: dict[str, int] = field(default_factory=dict)
    #: The clock ratios (real / nominal interval) its last packets measured.
    ratios: tuple[float, ...] = ()
    #: The intervals the station's last header announced, in seconds.
    wake_every: int | None = None
    measurement_every: int | None = None
    latest: dict[str, LatestReading] = field(default_factory=dict)
    #: The last 24 hours of readings, for the status page's charts.
    history: StationHistory = field(default_factory=StationHistory, repr=False)

    @property
    def place(self) -> str | None:
        return dict(self.tags).get("place")

    @property
    def clock_ratio(self) -> float | None:
        """Real / nominal record interval, as the timestamp rule learns it, if measured."""
        return learned_ratio(self.ratios) if self.ratios else None

    @property
    def measured_interval(self) -> float | None:
        """The true time between records, in seconds, if ever measured."""
        ratio = self.clock_ratio
        if ratio is None or not self.measurement_every:
            return None
        return self.measurement_every * ratio

    @property
    def drift_ppm(self) -> float | None:
        """How much slower (+) or faster (-) than nominal the station's clock runs."""
        ratio = self.clock_ratio
        return None if ratio is None else (ratio - 1.0) * 1e6

    @property
    def expected_wake_every(self) -> int:
        """
        The interval its last header announced; until it uploads after a
        restart (seen only in the journal's timing state), the reference
        station's hour, so that a station silent across a restart still
        shows as overdue.
        """
        return self.wake_every or ASSUMED_WAKE_EVERY

    def overdue(self, now_ns: int) -> bool:
        """No packet for more than L{OVERDUE_FACTOR} wake intervals."""
        if self.last_seen_ns is None:
            return False
        limit = OVERDUE_FACTOR * self.expected_wake_every * NANOSECONDS
        return now_ns - self.last_seen_ns > limit


def _keep_latest(
    station: StationRecord, name: str, unit: str, times: list[int], column: list[float]
) -> None:
    """Remember a column's newest reading, if newer than the one known (NaN is none)."""
    for time_ns, value in zip(reversed(times), reversed(column), strict=True):
        if not math.isnan(value):
            latest = station.latest.get(name)
            if latest is None or time_ns >= latest.time_ns:
                station.latest[name] = LatestReading(value, time_ns, unit)
            return


@implementer(IPipelineObserver)
class StationBook:
    """
    The L{StationRecord}s of the stations the devices file describes (one
    byte of device id: at most 256 records, whatever arrives), kept up to
    date by the pipeline it subscribes to.
    """

    def __init__(self) -> None:
        self._stations: dict[int, StationRecord] = {}

    def __iter__(self) -> Iterator[StationRecord]:
        return iter(sorted(self._stations.values(), key=lambda s: s.device_id))

    def __len__(self) -> int:
        return len(self._stations)

    def get(self, device_id: int) -> StationRecord | None:
        return self._stations.get(device_id)

    def _record(self, profile: DeviceProfile) -> StationRecord:
        station = self._stations.get(profile.device_id)
        if station is None:
            station = self._stations[profile.device_id] = StationRecord(profile.device_id)
        station.tags = profile.tags
        return station

    def packet_arrived(
        self, profile: DeviceProfile, peer: str | None, arrival_ns: int
    ) -> None:
        """
        A packet of a described station arrived (decoded or not yet): it is
        alive, even while its packets wait in the journal for InfluxDB.
        """
        station = self._record(profile)
        if station.last_seen_ns is None or arrival_ns >= station.last_seen_ns:
            station.last_seen_ns = arrival_ns
            if peer is not None:
                station.peer = peer

    def packet_decoded(
        self,
        decoded: DecodedPacket,
        peer: str,
        arrival_ns: int,
        previous_arrival_ns: int | None,
    ) -> StationRecord:
        """
        Count a decoded packet of its station.  What its spacing told (missed
        uploads, the clock ratio) is in C{decoded.timing}: C{previous_arrival_ns}
        is not needed.
        """
        header = decoded.header
        timing = decoded.timing
        station = self._record(decoded.profile)
        station.packets += 1
        station.records += len(decoded.times)
        station.readings += decoded.value_count
        # A packet older than the last seen (stored by weather replay) does
        # not take last-seen back, nor say what the station does now.
        if station.last_seen_ns is None or arrival_ns >= station.last_seen_ns:
            station.last_seen_ns = arrival_ns
            station.peer = peer
            station.wake_every = header.wake_every
            station.measurement_every = header.measurement_every
        if timing.measured:
            station.missed_uploads += timing.uploads - 1
        station.records_repeated += timing.repeated
        station.records_lost += timing.lost
        station.irregular_packets += timing.irregular
        if timing.measured_ratio is not None:
            station.ratios = (*station.ratios, timing.measured_ratio)[-RATIOS_KEPT:]
        times = decoded.times
        if times:
            specs = decoded.profile.values
            station.history.add_packet([s.name for s in specs], times, decoded.columns)
            for spec, column in zip(specs, decoded.columns, strict=True):
                failures = station.sensor_failures
                failures[spec.name] = failures.get(spec.name, 0) + sum(
                    map(math.isnan, column)
                )
                _keep_latest(station, spec.name, spec.unit, times, column)
        return station

    def packet_rejected(self, profile: DeviceProfile | None) -> None:
        """Count a rejected packet of a described station (others are not kept)."""
        if profile is not None:
            self._record(profile).rejected += 1

    def profiles_changed(self, profiles: Mapping[int, DeviceProfile]) -> None:
        """After a devices reload: drop stations no longer described, retag the rest."""
        for device_id in list(self._stations):
            profile = profiles.get(device_id)
            if profile is None:
                del self._stations[device_id]
            else:
                self._stations[device_id].tags = profile.tags
