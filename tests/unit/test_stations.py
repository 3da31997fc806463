"""
Per-station figures (L{weather.ops.stations}): last seen, counts, the timestamp
rule's own figures (missed uploads, repeated and lost records, irregular
packets, the clock ratio), sensor failures, the latest readings.
"""

from __future__ import annotations

import math

from twisted.trial.unittest import SynchronousTestCase

from tests.support import build_packet
from weather.core.decode import NANOSECONDS, decode_packet
from weather.core.devices import REFERENCE_DEVICES, REFERENCE_STATION
from weather.core.packet import HEADER_SIZE
from weather.core.timing import StationState, TimingInputs, first_state
from weather.ops.stations import StationBook, StationRecord

T0 = 1_700_000_000 * NANOSECONDS


class StationBookTests(SynchronousTestCase):
    """A reference station's packets, timed as the pipeline times them."""

    def setUp(self) -> None:
        self.book = StationBook()
        self.state: StationState | None = None
        self.taken = 0  # records the station has taken so far

    def take(self, count: int) -> list[tuple[int, int, int]]:
        """The station's next C{count} records, each unlike the others."""
        start, self.taken = self.taken, self.taken + count
        return [
            (100 + i, 30000 + 4 * i, 25000 + 4 * i) for i in range(start, start + count)
        ]

    def arrive(
        self,
        seconds_later: float,
        records: list[tuple[int, int, int]] | int = 30,
        peer: str = "192.0.2.7:1",
    ) -> StationRecord:
        """A packet of C{records} (a count: the next ones taken) arrives."""
        if isinstance(records, int):
            records = self.take(records)
        previous = T0 if self.state is None else self.state.arrival_ns
        arrival = previous + round(seconds_later * NANOSECONDS)
        data = build_packet(1, records)
        body = data[HEADER_SIZE:]
        if self.state is None:
            inputs = TimingInputs()
        else:
            inputs = self.state.inputs(arrival, None, None)
        decoded = decode_packet(data, arrival, inputs, REFERENCE_DEVICES)
        if self.state is None:
            self.state = first_state(body, arrival, None, None)
        else:
            self.state = self.state.after(decoded.timing, body, arrival, None, None)
        return self.book.packet_decoded(decoded, peer, arrival, inputs.previous_arrival_ns)

    def test_firstPacket(self) -> None:
        station = self.arrive(0)
        self.assertEqual(
            (station.device_id, station.place, station.peer, station.last_seen_ns),
            (1, "balcony", "192.0.2.7:1", T0),
        )
        self.assertEqual((station.packets, station.records, station.readings), (1, 30, 90))
        self.assertEqual((station.wake_every, station.measurement_every), (3600, 120))
        self.assertIsNone(station.clock_ratio)
        self.assertIsNone(station.measured_interval)
        self.assertIsNone(station.drift_ppm)
        self.assertEqual(
            (
                station.missed_uploads,
                station.records_repeated,
                station.records_lost,
                station.irregular_packets,
                station.sensor_failures,
            ),
            (0, 0, 0, 0, {"light": 0, "humidity": 0, "temperature": 0}),
        )
        self.assertEqual(list(self.book), [station])

    def test_clockRatioIsTheMedian(self) -> None:
        """The ratio the timestamp rule learns: the median of the last measured."""
        self.arrive(0)
        self.arrive(3630)
        station = self.arrive(3642)
        self.assertAlmostEqual(station.clock_ratio, 1.01)
        self.assertAlmostEqual(station.measured_interval, 121.2)
        self.assertAlmostEqual(station.drift_ppm, 10_000)
        # A spike among five is ignored.
        for spacing in (3636, 3636, 3960):
            station = self.arrive(spacing)
        self.assertEqual(len(station.ratios), 5)
        self.assertAlmostEqual(station.clock_ratio, 1.01)

    def test_fastClock(self) -> None:
        self.arrive(0)
        station = self.arrive(3600 * 0.98)
        self.assertAlmostEqual(station.drift_ppm, -20_000)

    def test_missedUploads(self) -> None:
        """
        Once the clock ratio is known, two hours' spacing is one missed upload;
        five hours are four more, and the full ring (58 records) dropped the
        oldest 92 of 150.
        """
        self.arrive(0)
        self.arrive(3600)
        station = self.arrive(7200, records=60)
        self.assertEqual((station.missed_uploads, station.records_lost), (1, 0))
        self.assertEqual(station.ratios, (1.0, 1.0))  # measured over 2 uploads too
        self.taken += 92
        station = self.arrive(5 * 3600, records=58)
        self.assertEqual((station.missed_uploads, station.records_lost), (5, 92))
        self.assertEqual(station.records, 30 + 30 + 60 + 58)

    def test_irregularGapIsNotMissed(self) -> None:
        """1.4 upload periods: nothing measured, nothing counted as missed."""
        self.arrive(0)
        station = self.arrive(3600 * 1.4)
        self.assertEqual(station.missed_uploads, 0)
        self.assertIsNone(station.clock_ratio)

    def test_repeatedRecords(self) -> None:
        """A lost clear command: the last 10 records come again, stored once."""
        first = self.take(30)
        self.arrive(0, first)
        station = self.arrive(3600, first[-10:] + self.take(30))
        self.assertEqual((station.records_repeated, station.records), (10, 60))
        self.assertEqual(station.irregular_packets, 0)

    def test_irregularPacket(self) -> None:
        """More records than the spacing explains, and not a repeat: irregular."""
        self.arrive(0)
        station = self.arrive(3600, records=40)
        self.assertEqual((station.irregular_packets, station.records_repeated), (1, 0))
        self.assertEqual(station.records, 70)

    def test_sensorFailures(self) -> None:
        """
        Codes that are not readings are counted per value; the latest reading
        of each value is its newest real one.
        """
        records = self.take(4)
        records[1] = (records[1][0], 0xFFFC, 0xFFFC)  # a failed SI7021 read
        records[3] = (0xFFFF, 0xFFFF, 0xFFFF)  # a record cut short
        station = self.arrive(0, records)
        self.assertEqual(
            station.sensor_failures, {"light": 1, "humidity": 2, "temperature": 2}
        )
        latest = station.latest["light"]
        self.assertEqual((latest.value, latest.time_ns), (102.0, T0 - 120 * NANOSECONDS))
        humidity = station.latest["humidity"]
        self.assertEqual(humidity.time_ns, T0 - 120 * NANOSECONDS)
        self.assertFalse(math.isnan(humidity.value))
        # A packet of failures only keeps the latest readings known.
        station = self.arrive(3600, [(0xFFFF, 0xFFFF, 0xFFFF)] * 30)
        self.assertEqual(station.sensor_failures["temperature"], 32)
        self.assertEqual(station.latest["light"].value, 102.0)

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


class ReplayedPacketTests(SynchronousTestCase):
    """
    A packet stored by weather replay through the server comes after newer
    ones: it counts, but says nothing about the station now.
    """

    def setUp(self) -> None:
        self.book = StationBook()
        for hour in range(3):
            arrival = T0 + hour * 3600 * NANOSECONDS
            previous = None if hour == 0 else arrival - 3600 * NANOSECONDS
            self.decoded(arrival, previous, "192.0.2.7:1")

    def decoded(
        self, arrival: int, previous: int | None, peer: str, wake: int = 3600
    ) -> StationRecord:
        records = [(100, 30000, 25000)] * 30
        data = build_packet(1, records, wake_every=wake)
        inputs = TimingInputs.since(previous, arrival)
        decoded = decode_packet(data, arrival, inputs, REFERENCE_DEVICES)
        return self.book.packet_decoded(decoded, peer, arrival, previous)

    def test_olderPacket(self) -> None:
        """
        Last seen, the peer and the intervals stay the newest packet's;
        the older one's readings are charted at their times; the missed
        uploads are only those its own recorded timing measured (none here:
        no jump from the time between it and the newest).
        """
        newest = T0 + 2 * 3600 * NANOSECONDS
        older = T0 - 5 * 3600 * NANOSECONDS
        missed = self.book.get(1).missed_uploads
        station = self.decoded(
            older, older - 3 * 3600 * NANOSECONDS, "192.0.2.9:2", wake=1800
        )
        self.assertEqual((station.last_seen_ns, station.peer), (newest, "192.0.2.7:1"))
        self.assertEqual(station.wake_every, 3600)
        self.assertEqual((station.packets, station.missed_uploads), (4, missed))
        self.assertFalse(station.overdue(newest + 3600 * NANOSECONDS))
        self.assertEqual(station.latest["light"].time_ns, newest)
        series = station.history.series["light"]
        buckets = series.buckets()
        first = older - 3480 * NANOSECONDS  # its first record
        self.assertEqual(buckets[0].start_ns, first - first % series.width_ns)
        self.assertEqual(sum(b.count for b in buckets), 120)

    def test_olderThanTheChartsSkipped(self) -> None:
        """More than 24 hours before the newest reading: not charted, not widened."""
        series = self.book.get(1).history.series["light"]
        width, before = series.width, series.buckets()
        station = self.decoded(T0 - 30 * 3600 * NANOSECONDS, None, "192.0.2.9:2")
        self.assertEqual(station.packets, 4)
        self.assertEqual((series.width, series.buckets()), (width, before))
