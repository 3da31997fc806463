"""
Per-station figures (L{weather.ops.stations}): last seen, counts, missed uploads,
the measured record interval and clock drift, the latest readings.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support import reference_packet
from weather.core.decode import NANOSECONDS, decode_packet
from weather.core.devices import REFERENCE_DEVICES, REFERENCE_STATION
from weather.ops.stations import StationBook

T0 = 1_700_000_000 * NANOSECONDS


class StationBookTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.book = StationBook()
        self.previous: int | None = None

    def arrive(self, seconds_later: float, records: int = 30, peer: str = "192.0.2.7:1"):
        arrival = (self.previous or T0) + round(seconds_later * NANOSECONDS)
        data = reference_packet(records)
        decoded = decode_packet(data, arrival, self.previous, REFERENCE_DEVICES)
        station = self.book.packet_decoded(decoded, peer, arrival, self.previous)
        self.previous = arrival
        return station

    def test_firstPacket(self) -> None:
        station = self.arrive(0)
        self.assertEqual(
            (station.device_id, station.place, station.peer, station.last_seen_ns),
            (1, "balcony", "192.0.2.7:1", T0),
        )
        self.assertEqual((station.packets, station.records, station.readings), (1, 30, 90))
        self.assertEqual((station.wake_every, station.measurement_every), (3600, 120))
        self.assertIsNone(station.measured_interval)
        self.assertIsNone(station.drift_ppm)
        self.assertEqual(station.missed_uploads, 0)
        self.assertEqual(list(self.book), [station])

    def test_driftAveragedOverUploads(self) -> None:
        """Spacing jitter averages out: 3630 s and 3642 s make 1 % slow."""
        self.arrive(0)
        self.arrive(3630)
        station = self.arrive(3642)
        self.assertAlmostEqual(station.measured_interval, 121.2)
        self.assertAlmostEqual(station.drift_ppm, 10_000)

    def test_fastClock(self) -> None:
        self.arrive(0)
        station = self.arrive(3600 * 0.98)
        self.assertAlmostEqual(station.drift_ppm, -20_000)

    def test_missedUploads(self) -> None:
        """Two hours of silence is one missed upload, five hours four."""
        self.arrive(0)
        station = self.arrive(7200, records=58)
        self.assertEqual(station.missed_uploads, 1)
        self.assertIsNone(station.measured_interval)  # not measurable from that gap
        station = self.arrive(5 * 3600, records=58)
        self.assertEqual(station.missed_uploads, 5)

    def test_onTimeIsNotMissed(self) -> None:
        self.arrive(0)
        station = self.arrive(3600 * 1.4)
        self.assertEqual(station.missed_uploads, 0)

    def test_latestReadings(self) -> None:
        """The newest value of each measurement, with its time and unit."""
        station = self.arrive(0)
        self.assertEqual(set(station.latest), {"light", "humidity", "temperature"})
        light = station.latest["light"]
        self.assertEqual((light.value, light.time_ns, light.unit), (129.0, T0, "lx"))
        self.assertEqual(station.latest["temperature"].unit, "°C")

    def test_overdue(self) -> None:
        station = self.arrive(0)
        self.assertFalse(station.overdue(T0 + 5400 * NANOSECONDS))
        self.assertTrue(station.overdue(T0 + 5401 * NANOSECONDS))

    def test_overdueAcrossARestart(self) -> None:
        """Known only from the journal: the reference station's hour is assumed."""
        self.book.packet_arrived(REFERENCE_STATION, None, T0)
        (station,) = self.book
        self.assertIsNone(station.wake_every)
        self.assertFalse(station.overdue(T0 + 5400 * NANOSECONDS))
        self.assertTrue(station.overdue(T0 + 5401 * NANOSECONDS))

    def test_rejectedCountsDescribedStationsOnly(self) -> None:
        self.book.packet_rejected(REFERENCE_STATION)
        self.book.packet_rejected(None)
        self.assertEqual([(s.device_id, s.rejected) for s in self.book], [(1, 1)])

    def test_forgetUndescribed(self) -> None:
        self.arrive(0)
        self.book.profiles_changed({})
        self.assertEqual(len(self.book), 0)
