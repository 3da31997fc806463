"""
What the server knows about each station, kept in memory: when it was last
heard from, how much it sent, whether it missed uploads, and how its clock
compares with the server's.

An ATtiny's clock drifts by a few percent.  The station measures every
C{measurementEvery} seconds by its own clock, so the real time between two
uploads, divided by the records of the second, is its true record interval;
summed over every upload whose spacing was measured, the ratio to the
nominal interval is its drift, with the Wi-Fi connection's jitter averaged
out.  Pure bookkeeping: the caller passes every time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from zope.interface import implementer

from weather.core.decode import NANOSECONDS, DecodedPacket
from weather.core.devices import DeviceProfile
from weather.ops.history import StationHistory
from weather.server.interfaces import IPipelineObserver

#: An upload counts as missed when the spacing passes this many wake intervals.
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
    records: int = 0
    readings: int = 0
    rejected: int = 0
    missed_uploads: int = 0
    #: The intervals the station's last header announced, in seconds.
    wake_every: int | None = None
    measurement_every: int | None = None
    latest: dict[str, LatestReading] = field(default_factory=dict)
    #: The last 24 hours of readings, for the status page's charts.
    history: StationHistory = field(default_factory=StationHistory, repr=False)
    _measured_ns: int = 0
    _measured_records: int = 0

    @property
    def place(self) -> str | None:
        return dict(self.tags).get("place")

    @property
    def measured_interval(self) -> float | None:
        """The mean true time between records, in seconds, if ever measured."""
        if not self._measured_records:
            return None
        return self._measured_ns / self._measured_records / NANOSECONDS

    @property
    def drift_ppm(self) -> float | None:
        """How much slower (+) or faster (-) than nominal the station's clock runs."""
        measured = self.measured_interval
        if measured is None or not self.measurement_every:
            return None
        return (measured / self.measurement_every - 1.0) * 1e6

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
        """Count a decoded packet of its station."""
        header = decoded.header
        station = self._record(decoded.profile)
        station.packets += 1
        station.records += header.record_count
        station.readings += decoded.value_count
        station.wake_every = header.wake_every
        station.measurement_every = header.measurement_every
        if station.last_seen_ns is None or arrival_ns >= station.last_seen_ns:
            station.last_seen_ns = arrival_ns
            station.peer = peer
        if previous_arrival_ns is not None and header.wake_every > 0:
            spacing = arrival_ns - previous_arrival_ns
            wake_ns = header.wake_every * NANOSECONDS
            if spacing > OVERDUE_FACTOR * wake_ns:
                station.missed_uploads += max(1, round(spacing / wake_ns) - 1)
            if decoded.measured:
                station._measured_ns += spacing
                station._measured_records += header.record_count
        times = decoded.times
        if times:
            specs = decoded.profile.values
            station.history.add_packet([s.name for s in specs], times, decoded.columns)
            last = times[-1]
            for spec, column in zip(specs, decoded.columns, strict=True):
                latest = station.latest.get(spec.name)
                if latest is None or last >= latest.time_ns:
                    station.latest[spec.name] = LatestReading(column[-1], last, spec.unit)
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
