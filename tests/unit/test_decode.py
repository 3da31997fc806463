"""
Tests for L{weather.core.decode}: timestamps, rejections and values.
"""

from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.support import header_bytes, numbered_packet
from weather.core.decode import (
    NANOSECONDS,
    DecodedPacket,
    Reading,
    decode_packet,
    decode_truncated,
    is_storable,
    truncated_detail,
)
from weather.core.devices import (
    REFERENCE_DEVICES,
    parse_devices,
    si7021_humidity,
    si7021_temperature,
)
from weather.core.packet import Header, PacketRejected, Reason
from weather.core.timing import TimingInputs, stamp, time_records

S = NANOSECONDS
T = 1_700_000_000 * S  # an arrival time
BALCONY = (("place", "balcony"),)


def records(count: int) -> list[tuple[int, int, int]]:
    """Reference records: lux, humidity code, temperature code."""
    return [(100 + i, 26000 + 4 * i, 25000 + 4 * i) for i in range(count)]


def reference_packet(count: int = 30, **header: int) -> bytes:
    body = b"".join(struct.pack("<HHH", *r) for r in records(count))
    return header_bytes(len(body), **header) + body


def rounded(spacing: int, count: int) -> int:
    """C{spacing / count} to the nearest nanosecond, halves up."""
    return (2 * spacing + count) // (2 * count)


def times_of(decoded: DecodedPacket) -> list[int]:
    """One timestamp per record, checking all values of a record share it."""
    per_record = len(decoded.profile.values)
    stamps = [r.time_ns for r in decoded.readings]
    for i in range(0, len(stamps), per_record):
        assert len(set(stamps[i : i + per_record])) == 1, stamps[i : i + per_record]
    return stamps[::per_record]


class TimestampTests(SynchronousTestCase):
    """The timestamp rule of docs/protocol.md, in integer nanoseconds."""

    def decode(self, previous: int | None, count: int = 30, **header: int):
        inputs = TimingInputs.since(previous, T)
        return decode_packet(
            reference_packet(count, **header), T, inputs, REFERENCE_DEVICES
        )

    def test_firstPacketNominal(self) -> None:
        decoded = self.decode(None)
        self.assertEqual(decoded.interval_ns, 120 * S)
        self.assertFalse(decoded.measured)
        times = times_of(decoded)
        self.assertEqual(len(times), 30)
        # The last record is stamped at the arrival, not one interval early.
        self.assertEqual(times[-1], T)
        self.assertEqual(times[0], T - 29 * 120 * S)
        self.assertEqual(times, [T - (29 - i) * 120 * S for i in range(30)])
        self.assertTrue(all(isinstance(t, int) for t in times))

    def test_nominalUsesMeasurementEvery(self) -> None:
        decoded = self.decode(None, count=4, measurement_every=7)
        self.assertEqual(times_of(decoded), [T - 21 * S, T - 14 * S, T - 7 * S, T])

    def test_regularSpacing(self) -> None:
        decoded = self.decode(T - 3600 * S)
        self.assertTrue(decoded.measured)
        self.assertEqual(decoded.interval_ns, 120 * S)
        self.assertEqual(times_of(decoded)[-1], T)
        self.assertEqual(times_of(decoded)[0], T - 29 * 120 * S)

    def test_measuredIsSpacingOverCountRounded(self) -> None:
        spacing = 3600 * S + 14  # not a multiple of 30, rounded down
        decoded = self.decode(T - spacing)
        self.assertTrue(decoded.measured)
        self.assertEqual(decoded.interval_ns, 120 * S)
        self.assertEqual(self.decode(T - spacing - 1).interval_ns, 120 * S + 1)
        spacing = 3601 * S + 7
        decoded = self.decode(T - spacing)
        self.assertEqual(decoded.interval_ns, 120_033_333_334)  # 3601.000000007 s / 30
        self.assertEqual(
            times_of(decoded), [T - (29 - i) * 120_033_333_334 for i in range(30)]
        )

    def test_driftMeasured(self) -> None:
        # The station's clock runs 6 % fast, then 7 % slow.
        for spacing in (3384 * S, 3852 * S, 3600 * S - 123_456_789):
            decoded = self.decode(T - spacing)
            self.assertTrue(decoded.measured, spacing)
            self.assertEqual(decoded.interval_ns, rounded(spacing, 30))
            self.assertEqual(times_of(decoded)[-1], T)
            self.assertEqual(times_of(decoded)[0], T - 29 * rounded(spacing, 30))

    def test_missedUploadMeasured(self) -> None:
        # The previous hour's connection failed: two hours of records come in
        # one packet, the ring (58 records) dropped the oldest two.  The
        # station's ratio is learned: two uploads are told from one.
        spacing = 7200 * S + 3 * S
        inputs = TimingInputs(T - spacing, spacing, 1.0, b"", learned=True)
        decoded = decode_packet(reference_packet(58), T, inputs, REFERENCE_DEVICES)
        self.assertTrue(decoded.measured)
        self.assertEqual(decoded.timing.uploads, 2)
        self.assertEqual(decoded.timing.lost, 2)
        self.assertEqual(decoded.interval_ns, 120_050 * S // 1000)
        times = times_of(decoded)
        self.assertEqual(times[-1], T)
        self.assertEqual(times[0], T - 57 * 120_050 * S // 1000)

    def test_boundary(self) -> None:
        # |spacing - wakeEvery| < wakeEvery / 3, wakeEvery = 3600 s: 1200 s.
        cases = [
            (4800 * S - 1, True),
            (4800 * S, False),
            (4800 * S + 1, False),
            (2400 * S + 1, True),
            (2400 * S, False),
            (2400 * S - 1, False),
        ]
        for spacing, measured in cases:
            decoded = self.decode(T - spacing)
            self.assertEqual(decoded.measured, measured, spacing)
            expected = rounded(spacing, 30) if measured else 120 * S
            self.assertEqual(decoded.interval_ns, expected, spacing)

    def test_boundaryNotDivisibleByThree(self) -> None:
        # wakeEvery = 100 s: the bound is 33.333... s, exactly.
        header = dict(wake_every=100, measurement_every=10)
        bound = 100 * S // 3  # 33_333_333_333 ns, just below 100 s / 3
        self.assertTrue(self.decode(T - 100 * S - bound, count=10, **header).measured)
        self.assertFalse(self.decode(T - 100 * S - bound - 1, count=10, **header).measured)
        self.assertTrue(self.decode(T - 100 * S + bound, count=10, **header).measured)
        self.assertFalse(self.decode(T - 100 * S + bound + 1, count=10, **header).measured)

    def test_samePacketTimeNominal(self) -> None:
        decoded = self.decode(T)
        self.assertFalse(decoded.measured)
        self.assertEqual(decoded.interval_ns, 120 * S)
        self.assertEqual(times_of(decoded)[-1], T)

    def test_previousAfterArrivalNominal(self) -> None:
        decoded = self.decode(T + 3600 * S)
        self.assertFalse(decoded.measured)
        self.assertEqual(decoded.interval_ns, 120 * S)

    def test_singleRecord(self) -> None:
        decoded = self.decode(T - 3600 * S, count=1)
        self.assertTrue(decoded.measured)
        self.assertEqual(decoded.interval_ns, 120 * S)
        self.assertEqual(decoded.timing.lost, 29)
        self.assertEqual(times_of(decoded), [T])

    def test_emptyPacket(self) -> None:
        decoded = self.decode(T - 3600 * S, count=0)
        self.assertEqual(decoded.readings, ())
        self.assertTrue(decoded.measured)
        self.assertEqual(decoded.interval_ns, 120 * S)
        self.assertEqual(decoded.timing.lost, 30)

    def test_deterministic(self) -> None:
        packet = reference_packet(30)
        for previous in (None, T - 3601 * S - 17, T - 9000 * S):
            inputs = TimingInputs.since(previous, T)
            first = decode_packet(packet, T, inputs, REFERENCE_DEVICES)
            second = decode_packet(bytes(packet), T, inputs, REFERENCE_DEVICES)
            self.assertEqual(first, second)
            self.assertEqual(first.readings, second.readings)

    def test_recordInterval(self) -> None:
        header = Header(180, 3600, 120, 6, 1, 3)
        body = bytes(180)

        def interval(previous: int | None) -> tuple[int, bool]:
            timing = time_records(header, body, T, TimingInputs.since(previous, T))
            return timing.interval_ns, timing.measured

        self.assertEqual(interval(None), (120 * S, False))
        self.assertEqual(interval(T - 3600 * S), (120 * S, True))
        self.assertEqual(interval(T - 3690 * S), (123 * S, True))
        # Two uploads' worth: told from one only once the ratio is learned.
        self.assertEqual(interval(T - 7200 * S), (120 * S, False))
        self.assertEqual(interval(T - 6000 * S), (120 * S, False))
        learned = TimingInputs(T - 7200 * S, 7200 * S, 1.0, b"", learned=True)
        timing = time_records(header, body, T, learned)
        self.assertEqual((timing.interval_ns, timing.uploads), (120 * S, 2))

    def test_recordTimes(self) -> None:
        self.assertEqual(stamp(3, 1000, 10), [980, 990, 1000])
        self.assertEqual(stamp(1, 1000, 10), [1000])
        self.assertEqual(stamp(0, 1000, 10), [])


class RejectionTests(SynchronousTestCase):
    """Every way L{decode_packet} refuses a packet."""

    def assertRejected(
        self, data: bytes, reason: str, profiles=REFERENCE_DEVICES
    ) -> PacketRejected:
        with self.assertRaises(PacketRejected) as caught:
            decode_packet(data, T, TimingInputs(), profiles)
        self.assertEqual(caught.exception.reason, reason)
        return caught.exception

    def test_shorterThanHeader(self) -> None:
        packet = reference_packet(30)
        for size in range(9):
            self.assertRejected(packet[:size], Reason.TRUNCATED)

    def test_truncated(self) -> None:
        packet = reference_packet(30)
        for size in (9, 10, 100, 188):
            error = self.assertRejected(packet[:size], Reason.TRUNCATED)
            self.assertIn("189", error.detail)

    def test_longerThanAnnounced(self) -> None:
        error = self.assertRejected(reference_packet(30) + b"\x00", Reason.OVERSIZED)
        self.assertIn("190", error.detail)

    def test_badHeaders(self) -> None:
        cases = [
            (dict(measurement_every=0), Reason.ZERO_MEASUREMENT_EVERY),
            (dict(wake_every=0), Reason.ZERO_WAKE_EVERY),
            (dict(bytes_per_measurement=0), Reason.ZERO_BYTES_PER_MEASUREMENT),
            (dict(sensor_count=0), Reason.ZERO_SENSOR_COUNT),
            (dict(bytes_per_measurement=7), Reason.RAGGED_RECORDS),
        ]
        for header, reason in cases:
            self.assertRejected(reference_packet(30, **header), reason)

    def test_unknownDevice(self) -> None:
        error = self.assertRejected(
            reference_packet(30, device_id=2), Reason.UNKNOWN_DEVICE
        )
        self.assertIn("2", error.detail)
        self.assertRejected(reference_packet(0, device_id=0), Reason.UNKNOWN_DEVICE)

    def test_sensorCountMismatch(self) -> None:
        for count in (1, 2, 4, 255):
            error = self.assertRejected(
                reference_packet(30, sensor_count=count), Reason.PROFILE_MISMATCH
            )
            self.assertIn(str(count), error.detail)

    def test_recordSizeMismatch(self) -> None:
        # 36 bytes: 6 records of 6 bytes, or 9 of 4, or 3 of 12.
        body = bytes(36)
        for size in (4, 12, 3):
            error = self.assertRejected(
                header_bytes(36, bytes_per_measurement=size) + body,
                Reason.PROFILE_MISMATCH,
            )
            self.assertIn(f"{size}-byte", error.detail)

    def test_emptyPacketStillChecked(self) -> None:
        self.assertRejected(header_bytes(0, sensor_count=2), Reason.PROFILE_MISMATCH)
        self.assertRejected(header_bytes(0, device_id=9), Reason.UNKNOWN_DEVICE)


class TruncatedTests(SynchronousTestCase):
    """
    L{decode_truncated}: a truncated packet's complete records, timed as if
    the packet had been whole.
    """

    #: The previous packet arrived an upload ago, its clock 2.5 % slow.
    MEASURED = TimingInputs(T - 3690 * S, 3690 * S, previous_records=b"")

    def assertPrefix(self, part: DecodedPacket, whole: DecodedPacket, count: int) -> None:
        """C{part} holds the first C{count} records of C{whole}, as C{whole} has them."""
        self.assertEqual(part.header, whole.header)
        self.assertEqual(part.timing, whole.timing)
        self.assertEqual(part.times, whole.times[:count])
        self.assertEqual(part.columns, tuple(column[:count] for column in whole.columns))

    def test_completeRecordsTimedAsWhole(self) -> None:
        """
        The missing records are the newest: each complete record gets the
        time it would have had in the whole packet; a partial record is left.
        """
        packet = reference_packet(30)
        for inputs in (TimingInputs(), self.MEASURED):
            whole = decode_packet(packet, T, inputs, REFERENCE_DEVICES)
            for size, complete in ((15, 1), (9 + 6 * 10 + 3, 10), (len(packet) - 1, 29)):
                part = decode_truncated(packet[:size], T, inputs, REFERENCE_DEVICES)
                self.assertPrefix(part, whole, complete)
        self.assertEqual(whole.times[-1], T)
        self.assertEqual(whole.interval_ns, 123 * S)

    def test_repeatsLeftOut(self) -> None:
        """
        Records repeating the previous packet are recognised and left out
        when the cut is after them; cut inside them, nothing can be told
        apart, and nothing is stored.
        """
        previous = numbered_packet(range(30))[9:]
        inputs = TimingInputs(T - 3690 * S, 3690 * S, previous_records=previous)
        # The clear command was lost: records 20 to 29 come again.
        packet = numbered_packet(range(20, 60))
        whole = decode_packet(packet, T, inputs, REFERENCE_DEVICES)
        self.assertEqual(whole.timing.repeated, 10)
        part = decode_truncated(packet[: 9 + 6 * 25], T, inputs, REFERENCE_DEVICES)
        self.assertPrefix(part, whole, 15)
        self.assertEqual(part.columns[0], [float(n) for n in range(30, 45)])
        repeats = decode_truncated(packet[: 9 + 6 * 10], T, inputs, REFERENCE_DEVICES)
        self.assertEqual(repeats.times, [])
        with self.assertRaises(PacketRejected) as caught:
            decode_truncated(packet[: 9 + 6 * 5], T, inputs, REFERENCE_DEVICES)
        self.assertEqual(caught.exception.reason, Reason.TRUNCATED)
        self.assertIn("none stored", caught.exception.detail)

    def test_nothingStored(self) -> None:
        """What a whole packet would be rejected for, or no complete record."""
        packet = reference_packet(30)
        cases = [
            (packet[:5], Reason.TRUNCATED, REFERENCE_DEVICES),
            (packet[:14], Reason.TRUNCATED, REFERENCE_DEVICES),
            (packet[:100], Reason.UNKNOWN_DEVICE, {}),
            (
                reference_packet(30, measurement_every=0)[:100],
                Reason.ZERO_MEASUREMENT_EVERY,
                REFERENCE_DEVICES,
            ),
            (
                reference_packet(30, sensor_count=2)[:100],
                Reason.PROFILE_MISMATCH,
                REFERENCE_DEVICES,
            ),
        ]
        for data, reason, profiles in cases:
            with self.assertRaises(PacketRejected) as caught:
                decode_truncated(data, T, TimingInputs(), profiles)
            self.assertEqual(caught.exception.reason, reason)

    def test_detail(self) -> None:
        data = reference_packet(58)[:200]
        decoded = decode_truncated(data, T, TimingInputs(), REFERENCE_DEVICES)
        self.assertEqual(
            truncated_detail(data, decoded),
            "357 bytes announced, 200 received: 31 complete records stored",
        )


class ValueTests(SynchronousTestCase):
    """Decoded values are the conversions of the raw codes."""

    def test_referencePacket(self) -> None:
        raw = records(30)
        decoded = decode_packet(reference_packet(30), T, TimingInputs(), REFERENCE_DEVICES)
        self.assertEqual(decoded.header, Header(180, 3600, 120, 6, 1, 3))
        self.assertIs(decoded.profile, REFERENCE_DEVICES[1])
        self.assertEqual(len(decoded.readings), 90)
        expected = []
        for i, (lux, hum, temp) in enumerate(raw):
            t = T - (29 - i) * 120 * S
            expected += [
                Reading("light", BALCONY, "value", float(lux), t),
                Reading("humidity", BALCONY, "value", si7021_humidity(hum), t),
                Reading("temperature", BALCONY, "value", si7021_temperature(temp), t),
            ]
        self.assertEqual(list(decoded.readings), expected)

    def test_knownValues(self) -> None:
        body = struct.pack("<HHH", 129, 32768, 25000)
        decoded = decode_packet(
            header_bytes(6) + body, T, TimingInputs(), REFERENCE_DEVICES
        )
        values = [(r.measurement, r.value) for r in decoded.readings]
        self.assertEqual(values[0], ("light", 129.0))
        self.assertEqual(values[1], ("humidity", 56.5))
        self.assertEqual(values[2][0], "temperature")
        self.assertAlmostEqual(values[2][1], 20.1818603515625, places=12)
        self.assertEqual([r.time_ns for r in decoded.readings], [T, T, T])

    def test_allTypes(self) -> None:
        profiles = parse_devices(
            """
            [devices.9]
            tags = { place = "lab", room = "b 2" }
            values = [
                { name = "a", type = "u8" },
                { name = "b", type = "i8" },
                { name = "c", type = "u16" },
                { name = "d", type = "i16", scale = 0.5, offset = 1 },
                { name = "e", type = "u32" },
                { name = "f", type = "i32", field = "n" },
                { name = "g", type = "f32", clamp = [-10, 10] },
            ]
            """
        )
        fmt = "<BbHhIif"
        rows = [
            (255, -128, 65535, -32768, 4294967295, -2147483648, 2.5),
            (0, 127, 0, 32767, 0, 2147483647, -1e9),
        ]
        body = b"".join(struct.pack(fmt, *row) for row in rows)
        data = (
            header_bytes(
                len(body),
                bytes_per_measurement=struct.calcsize(fmt),
                device_id=9,
                sensor_count=7,
            )
            + body
        )
        decoded = decode_packet(data, T, TimingInputs(), profiles)
        self.assertEqual(
            [r.value for r in decoded.readings],
            [255.0, -128.0, 65535.0, -16383.0, 4294967295.0, -2147483648.0, 2.5]
            + [0.0, 127.0, 0.0, 16384.5, 0.0, 2147483647.0, -10.0],
        )
        self.assertEqual(
            {r.tags for r in decoded.readings}, {(("place", "lab"), ("room", "b 2"))}
        )
        self.assertEqual(decoded.readings[5].field, "n")
        self.assertEqual(decoded.readings[4].field, "value")
        self.assertEqual([r.time_ns for r in decoded.readings[:7]], [T - 120 * S] * 7)
        self.assertEqual([r.time_ns for r in decoded.readings[7:]], [T] * 7)

    def test_isStorable(self) -> None:
        reading = Reading("x", (), "value", 1.0, T)
        self.assertTrue(is_storable(reading))
        for bad in (math.nan, math.inf, -math.inf):
            self.assertFalse(is_storable(Reading("x", (), "value", bad, T)))

    def test_f32NaNDecodes(self) -> None:
        profiles = parse_devices('[devices.5]\nvalues = [{ name = "g", type = "f32" }]\n')
        body = struct.pack("<f", math.nan) + struct.pack("<f", math.inf)
        data = header_bytes(8, bytes_per_measurement=4, device_id=5, sensor_count=1)
        decoded = decode_packet(data + body, T, TimingInputs(), profiles)
        self.assertTrue(math.isnan(decoded.readings[0].value))
        self.assertEqual(decoded.readings[1].value, math.inf)
        self.assertEqual([is_storable(r) for r in decoded.readings], [False, False])


FUZZ_PROFILES = parse_devices(
    """
    [devices.1]
    tags = { place = "balcony" }
    values = [{ name = "light" }, { name = "humidity" }, { name = "temperature" }]
    [devices.2]
    tags = { place = "roof" }
    values = [{ name = "x", type = "f32", clamp = [0, 1] }, { name = "y", type = "i8" }]
    [devices.3]
    values = [{ name = "z", type = "u8" }]
    """
)


@st.composite
def plausible_packets(draw: st.DrawFn) -> bytes:
    """Headers near the profiles' layouts, bodies of about the right length."""
    size = draw(st.sampled_from([0, 1, 5, 6, 7]))
    count = draw(st.integers(0, 20))
    bytes_ready = draw(st.sampled_from([size * count, size * count + 1, count]))
    body_size = max(0, bytes_ready + draw(st.sampled_from([0, 0, 0, -1, 1])))
    return header_bytes(
        bytes_ready,
        wake_every=draw(st.sampled_from([0, 1, 3600, 65535])),
        measurement_every=draw(st.sampled_from([0, 1, 120, 65535])),
        bytes_per_measurement=size,
        device_id=draw(st.integers(0, 4)),
        sensor_count=draw(st.integers(0, 4)),
    ) + draw(st.binary(min_size=body_size, max_size=body_size))


class FuzzTests(SynchronousTestCase):
    def check(self, data: bytes, arrival: int, previous: int | None) -> None:
        try:
            inputs = TimingInputs.since(previous, arrival)
            decoded = decode_packet(data, arrival, inputs, FUZZ_PROFILES)
        except PacketRejected as e:
            self.assertIn(
                e.reason,
                {v for k, v in vars(Reason).items() if not k.startswith("_")},
            )
        else:
            self.assertEqual(len(data), 9 + decoded.header.bytes_ready)
            self.assertEqual(
                len(decoded.readings),
                decoded.header.record_count * len(decoded.profile.values),
            )
            if decoded.readings:
                self.assertEqual(decoded.readings[-1].time_ns, arrival)

    @settings(max_examples=500, deadline=None)
    @given(
        st.binary(max_size=200),
        st.integers(-(2**63), 2**63),
        st.none() | st.integers(-(2**63), 2**63),
    )
    def test_randomBytes(self, data: bytes, arrival: int, previous: int | None) -> None:
        self.check(data, arrival, previous)

    @settings(max_examples=500, deadline=None)
    @given(
        plausible_packets(),
        st.integers(0, 2**62),
        st.none() | st.integers(0, 2**62),
    )
    def test_plausiblePackets(
        self, data: bytes, arrival: int, previous: int | None
    ) -> None:
        self.check(data, arrival, previous)
