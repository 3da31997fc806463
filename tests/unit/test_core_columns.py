"""
Tests for the columnar core: L{decode_packet}'s C{times} and C{columns},
L{LineEncoder.encode_packet} and L{packet_points} give exactly what the
per-reading oracle (tests/oracle.py) gives, one L{Reading} and one line at a
time, for every value type, NaN and infinity, signed zeros, odd names, and
caches that fill up and start again.
"""

from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.oracle import per_reading, per_reading_lines
from tests.support import header_bytes
from weather.core import devices, lineprotocol
from weather.core.decode import (
    NANOSECONDS,
    DecodedPacket,
    decode_packet,
    is_storable,
)
from weather.core.devices import (
    CONVERSIONS,
    REFERENCE_DEVICES,
    TYPES,
    DeviceProfile,
    ValueSpec,
    parse_devices,
)
from weather.core.lineprotocol import LineEncoder, packet_points
from weather.core.timing import TimingInputs, stamp

S = NANOSECONDS
T = 1_700_000_000 * S


def exact(readings) -> list[tuple]:
    """Readings to compare, values by their bits (NaN is not equal to itself)."""
    return [
        (r.measurement, r.tags, r.field, struct.pack("<d", r.value), r.time_ns)
        for r in readings
    ]


def packet(profile: DeviceProfile, rows: list[tuple], **header: int) -> bytes:
    """A packet of C{profile}'s device holding C{rows}, one tuple per record."""
    body = b"".join(profile.record.pack(*row) for row in rows)
    return (
        header_bytes(
            len(body),
            bytes_per_measurement=profile.record_size,
            device_id=profile.device_id,
            sensor_count=len(profile.values),
            **header,
        )
        + body
    )


class SameAsPerReadingMixin:
    """Assertions shared by the tests below."""

    def assertSameAsPerReading(
        self: SynchronousTestCase,
        encoder: LineEncoder,
        data: bytes,
        arrival: int,
        previous: int | None,
        profiles,
    ) -> DecodedPacket:
        inputs = TimingInputs.since(previous, arrival)
        decoded, lines, not_finite = packet_points(data, arrival, inputs, profiles, encoder)
        expected = per_reading(data, arrival, inputs, profiles)
        self.assertEqual(exact(decoded.readings), exact(expected))
        self.assertEqual(lines, per_reading_lines(expected))
        self.assertEqual(not_finite, sum(1 for r in expected if not is_storable(r)))
        self.assertEqual(decoded.value_count, len(expected))
        return decoded


# -- profiles and packets for hypothesis ---------------------------------------

#: Names with everything line protocol escapes, and more.
names = st.text(
    alphabet=st.sampled_from(list("ab Z9,= %\"'°üé#_.")), min_size=1, max_size=8
)
#: Numbers a devices file may give, and signed zeros it could not.
numbers = st.one_of(
    st.sampled_from([1.0, 0.0, -0.0, -1.0, 0.5, 1e300, -1e-300]),
    st.floats(allow_nan=False, allow_infinity=False),
)


@st.composite
def value_specs(draw: st.DrawFn) -> ValueSpec:
    clamp = None
    if draw(st.booleans()):
        low, high = sorted([draw(numbers), draw(numbers)])
        clamp = (low, high)
    return ValueSpec(
        name=draw(names),
        type=draw(st.sampled_from(list(TYPES))),
        conversion=draw(st.sampled_from(list(CONVERSIONS))),
        scale=draw(st.sampled_from([1.0, 1.0, 1.0]) | numbers),
        offset=draw(st.sampled_from([0.0, 0.0, 0.0]) | numbers),
        clamp=clamp,
        field=draw(st.sampled_from(["value"]) | names),
    )


@st.composite
def profiles(draw: st.DrawFn) -> DeviceProfile:
    tags = draw(st.dictionaries(names, names, max_size=3))
    return DeviceProfile(
        device_id=draw(st.integers(0, 255)),
        tags=tuple(sorted(tags.items())),
        values=tuple(draw(st.lists(value_specs(), min_size=1, max_size=7))),
    )


def raw_values(kind: str) -> st.SearchStrategy:
    """Values of one wire type, with their extremes and, for f32, NaN and inf."""
    if kind == "f32":
        return st.one_of(
            st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 3.0e38]),
            st.floats(width=32),
        )
    size = struct.calcsize(TYPES[kind])
    if kind.startswith("u"):
        low, high = 0, 2 ** (8 * size) - 1
    else:
        low, high = -(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1
    return st.one_of(st.sampled_from([low, high, 0, 1]), st.integers(low, high))


@st.composite
def packets(draw: st.DrawFn, profile: DeviceProfile) -> bytes:
    """A packet of C{profile} with 0 to 12 records; codes repeat, as they do."""
    count = draw(st.integers(0, 12))
    pools = [
        draw(st.lists(raw_values(spec.type), min_size=1, max_size=4))
        for spec in profile.values
    ]
    rows = [tuple(draw(st.sampled_from(pool)) for pool in pools) for _ in range(count)]
    return packet(
        profile,
        rows,
        wake_every=draw(st.sampled_from([3600, 1, 65535])),
        measurement_every=draw(st.sampled_from([120, 1, 65535])),
    )


arrivals = st.integers(-(2**63), 2**63)
previous_arrivals = st.none() | st.integers(-(2**63), 2**63)


class RandomEncodingMixin(SameAsPerReadingMixin):
    """
    The property checks on random profiles and packets: a few dozen examples
    here, many more in tests/integration/test_exhaustive.py.
    """

    def checkRandomPackets(
        self, profile: DeviceProfile, data: st.DataObject, arrival, previous
    ) -> None:
        """Random profiles and packets, several per encoder (its caches fill)."""
        encoder = LineEncoder()
        profiles = {profile.device_id: profile}
        for _ in range(data.draw(st.integers(1, 3))):
            self.assertSameAsPerReading(
                encoder, data.draw(packets(profile)), arrival, previous, profiles
            )

    def checkRandomStations(self, stations: list[DeviceProfile], data) -> None:
        """Several stations through one encoder, in any order."""
        self.patch(lineprotocol, "STEMS_LIMIT", data.draw(st.sampled_from([1, 3, 4096])))
        encoder = LineEncoder()
        for _ in range(6):
            profile = data.draw(st.sampled_from(stations))
            self.assertSameAsPerReading(
                encoder,
                data.draw(packets(profile)),
                T,
                None,
                {profile.device_id: profile},
            )


class ColumnsTests(SynchronousTestCase, SameAsPerReadingMixin):
    """The columns themselves."""

    def test_reference(self) -> None:
        rows = [(100 + i, 26000 + 4 * i, 25000 + 4 * i) for i in range(30)]
        profile = REFERENCE_DEVICES[1]
        decoded = decode_packet(packet(profile, rows), T, TimingInputs(), REFERENCE_DEVICES)
        self.assertEqual(decoded.times, [T - (29 - i) * 120 * S for i in range(30)])
        self.assertIsInstance(decoded.columns, tuple)
        self.assertEqual(len(decoded.columns), 3)
        light, humidity, temperature = decoded.columns
        self.assertEqual(light, [float(100 + i) for i in range(30)])
        self.assertEqual(humidity, [125.0 * r[1] / 65536.0 - 6.0 for r in rows])
        self.assertEqual(temperature, [175.72 * r[2] / 65536.0 - 46.85 for r in rows])
        for column in decoded.columns:
            self.assertIsInstance(column, list)
            self.assertTrue(all(type(v) is float for v in column))
        self.assertTrue(all(type(t) is int for t in decoded.times))
        self.assertEqual(decoded.value_count, 90)

    def test_readingsBuiltOnce(self) -> None:
        data = packet(REFERENCE_DEVICES[1], [(1, 2, 3), (4, 5, 6)])
        decoded = decode_packet(data, T, TimingInputs(), REFERENCE_DEVICES)
        self.assertIs(decoded.readings, decoded.readings)
        self.assertEqual(len(decoded.readings), 6)
        self.assertEqual(
            [(r.measurement, r.value, r.time_ns) for r in decoded.readings[:3]],
            [
                ("light", 1.0, T - 120 * S),
                ("humidity", 125.0 * 2 / 65536.0 - 6.0, T - 120 * S),
                ("temperature", 175.72 * 3 / 65536.0 - 46.85, T - 120 * S),
            ],
        )

    def test_empty(self) -> None:
        decoded = decode_packet(
            packet(REFERENCE_DEVICES[1], []), T, TimingInputs(), REFERENCE_DEVICES
        )
        self.assertEqual(decoded.times, [])
        self.assertEqual(decoded.columns, ([], [], []))
        self.assertEqual(decoded.readings, ())
        self.assertEqual(decoded.value_count, 0)
        self.assertEqual(LineEncoder().encode_packet(decoded), [])

    def test_equalPacketsEqual(self) -> None:
        data = packet(REFERENCE_DEVICES[1], [(1, 2, 3), (4, 5, 6)])
        inputs = TimingInputs.since(T - 3600 * S, T)
        first = decode_packet(data, T, inputs, REFERENCE_DEVICES)
        second = decode_packet(bytes(data), T, inputs, REFERENCE_DEVICES)
        self.assertEqual(len(first.readings), 6)  # built in one, not the other
        self.assertEqual(first, second)
        self.assertNotEqual(
            first, decode_packet(data, T + 1, TimingInputs(), REFERENCE_DEVICES)
        )

    def test_recordTimes(self) -> None:
        self.assertEqual(stamp(3, 1000, 10), [980, 990, 1000])
        self.assertEqual(stamp(3, 1000, 0), [1000, 1000, 1000])
        self.assertEqual(stamp(3, 1000, -10), [1020, 1010, 1000])
        self.assertEqual(stamp(0, 1000, 0), [])
        self.assertEqual(stamp(0, 1000, 10), [])
        self.assertEqual(stamp(1, 1000, 10), [1000])


class ConvertAllTests(SynchronousTestCase):
    """L{ValueSpec.convert_all} is L{ValueSpec.convert}, value by value."""

    def assertSameConversions(self, spec: ValueSpec, raws: list) -> None:
        expected = [struct.pack("<d", spec.convert(raw)) for raw in raws]
        self.assertEqual([struct.pack("<d", v) for v in spec.convert_all(raws)], expected)
        # Again, from what it remembered.
        self.assertEqual([struct.pack("<d", v) for v in spec.convert_all(raws)], expected)

    @settings(max_examples=300, deadline=None)
    @given(value_specs(), st.data())
    def test_everyType(self, spec: ValueSpec, data: st.DataObject) -> None:
        raws = data.draw(st.lists(raw_values(spec.type), max_size=20))
        self.assertSameConversions(spec, raws)

    def test_memoStartsAgainWhenFull(self) -> None:
        self.patch(devices, "MEMO_LIMIT", 3)
        spec = ValueSpec("t", "u32", "si7021_temperature", scale=0.5)
        for start in range(0, 40, 7):
            self.assertSameConversions(spec, list(range(start, start + 10)))
        self.assertLessEqual(len(spec._remembered.__self__), 3)  # the memo itself

    def test_memoNotPartOfTheSpec(self) -> None:
        """What a spec remembers changes neither its equality, hash nor repr."""
        used, fresh = ValueSpec("x", "u16", scale=2.0), ValueSpec("x", "u16", scale=2.0)
        used.convert_all([1, 2, 3])
        self.assertEqual(used, fresh)
        self.assertEqual(hash(used), hash(fresh))
        self.assertEqual(repr(used), repr(fresh))
        self.assertNotIn("remember", repr(used))

    def test_specsShared(self) -> None:
        """Stations described alike share their specs, and what those remember."""
        profiles = parse_devices(
            '[devices.1]\ntags = { place = "a" }\nvalues = [{ name = "x" }]\n'
            '[devices.2]\ntags = { place = "b" }\nvalues = [{ name = "x" }]\n'
            '[devices.3]\ntags = { place = "c" }\nvalues = [{ name = "x", scale = 2 }]\n'
        )
        self.assertIs(profiles[1].values[0], profiles[2].values[0])
        self.assertIsNot(profiles[1].values[0], profiles[3].values[0])

    def test_noNegativeZeroOffsetOrBound(self) -> None:
        """-0.0 offsets and clamp bounds are 0.0: specs that compare equal convert alike."""
        for spec in (
            ValueSpec("x", "f32", offset=-0.0, clamp=(-0.0, -0.0)),
            ValueSpec("x", "f32", offset=0.0, clamp=(0.0, 0.0)),
        ):
            self.assertEqual(math.copysign(1.0, spec.offset), 1.0)
            self.assertEqual([math.copysign(1.0, x) for x in spec.clamp], [1.0, 1.0])
        self.assertEqual(ValueSpec("x", clamp=(-1.0, 2.5)).clamp, (-1.0, 2.5))
        self.assertEqual(ValueSpec("x", offset=-3.5).offset, -3.5)

    @settings(max_examples=500, deadline=None)
    @given(value_specs(), st.data())
    def test_neverNegativeZero(self, spec: ValueSpec, data: st.DataObject) -> None:
        """What L{lineprotocol._Stems} relies on: no value is -0.0 (== 0.0)."""
        raw = data.draw(raw_values(spec.type))
        value = spec.convert(raw)
        self.assertFalse(value == 0.0 and math.copysign(1.0, value) < 0, (spec, raw))


class EncodePacketTests(SynchronousTestCase, RandomEncodingMixin):
    """L{LineEncoder.encode_packet} is the per-reading way, faster."""

    def test_reference(self) -> None:
        rows = [(100 + i, 26000 + 4 * i, 25000 + 4 * i) for i in range(30)]
        rows[3] = (0, 0, 0)
        data = packet(REFERENCE_DEVICES[1], rows)
        encoder = LineEncoder()
        for previous in (None, T - 3600 * S, T - 3601 * S - 7):
            self.assertSameAsPerReading(encoder, data, T, previous, REFERENCE_DEVICES)
        lines = encoder.encode_packet(
            decode_packet(data, T, TimingInputs(), REFERENCE_DEVICES)
        )
        self.assertEqual(
            lines[-3:],
            [
                b"light,place=balcony value=129.0 %d" % T,
                b"humidity,place=balcony value=%r %d" % (125.0 * 26116 / 65536 - 6, T),
                b"temperature,place=balcony value=%r %d"
                % (175.72 * 25116 / 65536 - 46.85, T),
            ],
        )

    def test_allTypes(self) -> None:
        profile = DeviceProfile(
            9,
            (("place", "lab"), ("room", "b 2")),
            tuple(
                ValueSpec(name, kind, field="n" if kind == "i32" else "value")
                for name, kind in zip("abcdefg", TYPES, strict=True)
            ),
        )
        rows = [
            (255, -128, 65535, -32768, 4294967295, -2147483648, 2.5),
            (0, 127, 0, 32767, 0, 2147483647, -1e9),
            (1, -1, 1, -1, 1, -1, math.nan),
            (2, -2, 2, -2, 2, -2, math.inf),
            (3, -3, 3, -3, 3, -3, -math.inf),
            (0, 0, 0, 0, 0, 0, -0.0),
        ]
        profiles = {9: profile}
        encoder = LineEncoder()
        decoded = self.assertSameAsPerReading(
            encoder, packet(profile, rows), T, None, profiles
        )
        self.assertEqual(decoded.value_count, 42)
        lines = encoder.encode_packet(decoded)
        self.assertEqual(len(lines), 39)
        self.assertIn(b"g,place=lab,room=b\\ 2 value=2.5 %d" % (T - 5 * 120 * S), lines)
        self.assertIn(
            b"f,place=lab,room=b\\ 2 n=-2147483648.0 %d" % (T - 5 * 120 * S), lines
        )
        self.assertIn(b"g,place=lab,room=b\\ 2 value=0.0 %d" % T, lines)

    def test_nonFiniteSkipped(self) -> None:
        """NaN and infinity are left out, and only they; the order is kept."""
        profile = DeviceProfile(
            5, (), (ValueSpec("x", "f32"), ValueSpec("y", "u8"), ValueSpec("z", "f32"))
        )
        rows = [
            (1.5, 1, math.nan),
            (math.inf, 2, 2.5),
            (-math.inf, 3, math.nan),
            (4.5, 4, 5.5),
        ]
        decoded = decode_packet(packet(profile, rows), T, TimingInputs(), {5: profile})
        lines = LineEncoder().encode_packet(decoded)
        times = [T - (3 - i) * 120 * S for i in range(4)]
        self.assertEqual(
            lines,
            [
                b"x value=1.5 %d" % times[0],
                b"y value=1.0 %d" % times[0],
                b"y value=2.0 %d" % times[1],
                b"z value=2.5 %d" % times[1],
                b"y value=3.0 %d" % times[2],
                b"x value=4.5 %d" % times[3],
                b"y value=4.0 %d" % times[3],
                b"z value=5.5 %d" % times[3],
            ],
        )
        self.assertEqual(decoded.value_count - len(lines), 4)

    def test_sumOverflows(self) -> None:
        """Finite values whose sum is not finite: all written."""
        profile = DeviceProfile(5, (), (ValueSpec("x", "f32", scale=5e269),))
        decoded = decode_packet(
            packet(profile, [(3e38,), (3e38,)]), T, TimingInputs(), {5: profile}
        )
        self.assertFalse(math.isfinite(sum(decoded.columns[0])))
        lines = LineEncoder().encode_packet(decoded)
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines, per_reading_lines(list(decoded.readings)))

    def test_signedZeros(self) -> None:
        """A -0.0 sent, or made by the conversion, is written 0.0, as before."""
        for spec in (
            ValueSpec("x", "f32"),
            ValueSpec("x", "f32", offset=-0.0, scale=-1.0),
            ValueSpec("x", "f32", clamp=(-0.0, 1.0)),
            ValueSpec("x", "i8", scale=-0.0, offset=-0.0),
        ):
            profile = DeviceProfile(5, (), (spec,))
            profiles = {5: profile}
            encoder = LineEncoder()
            if spec.type == "f32":
                rows = [(0.0,), (-0.0,), (-5.0,), (0.0,), (-0.0,)]
            else:
                rows = [(0,), (1,), (0,), (-1,)]
            for order in (rows, rows[::-1]):
                data = packet(profile, order)
                self.assertSameAsPerReading(encoder, data, T, None, profiles)
                lines = encoder.encode_packet(
                    decode_packet(data, T, TimingInputs(), profiles)
                )
                self.assertNotIn(b"-0.0", b"".join(lines))

    def test_zerosRemembered(self) -> None:
        """A value that cannot be -0.0 has its zero remembered like any value."""
        encoder = LineEncoder()
        data = packet(REFERENCE_DEVICES[1], [(0, 0, 0)])
        encoder.encode_packet(decode_packet(data, T, TimingInputs(), REFERENCE_DEVICES))
        light = encoder._series(REFERENCE_DEVICES[1])[0]
        self.assertEqual(light[0.0], b"light,place=balcony value=0.0")
        self.assertIn(0.0, light)

    def test_oddNames(self) -> None:
        profiles = parse_devices(
            """
            [devices.7]
            tags = { "the place" = "a=b,c", "%s" = "°C %d" }
            values = [
                { name = "my temp,x", field = "f 1" },
                { name = "100%", type = "i16", conversion = "si7021_humidity" },
                { name = "a=b", field = "k=v,w" },
            ]
            """
        )
        rows = [(1, -2, 3), (65535, 32767, 0)]
        encoder = LineEncoder()
        data = packet(profiles[7], rows)
        self.assertSameAsPerReading(encoder, data, T, None, profiles)
        lines = encoder.encode_packet(decode_packet(data, T, TimingInputs(), profiles))
        self.assertEqual(
            lines[0],
            (
                f"my\\ temp\\,x,%s=°C\\ %d,the\\ place=a\\=b\\,c f\\ 1=1.0 {T - 120 * S}"
            ).encode(),
        )

    def test_profilesTellApart(self) -> None:
        """
        One encoder, many profiles: equal ones, ones differing only in a tag
        or a conversion, and new ones after the old are gone.
        """
        encoder = LineEncoder()
        rows = [(10, 20000, 30000)]
        for _ in range(3):
            for place in ("balcony", "roof"):
                for conversion in ("raw", "si7021_humidity"):
                    profile = DeviceProfile(
                        1,
                        (("place", place),),
                        (
                            ValueSpec("light"),
                            ValueSpec("humidity", conversion=conversion),
                            ValueSpec("temperature", conversion="si7021_temperature"),
                        ),
                    )
                    self.assertSameAsPerReading(
                        encoder, packet(profile, rows), T, None, {1: profile}
                    )

    def test_stemsStartAgainWhenFull(self) -> None:
        self.patch(lineprotocol, "STEMS_LIMIT", 2)
        encoder = LineEncoder()
        profile = REFERENCE_DEVICES[1]
        for start in range(0, 50, 9):
            rows = [(start + i, 4 * (start + i), 8 * i) for i in range(12)]
            self.assertSameAsPerReading(
                encoder, packet(profile, rows), T + start, None, REFERENCE_DEVICES
            )
        for stems in encoder._series(profile):
            self.assertLessEqual(len(stems), 2)

    @settings(max_examples=60, deadline=None)
    @given(profiles(), st.data(), arrivals, previous_arrivals)
    def test_randomPackets(
        self, profile: DeviceProfile, data: st.DataObject, arrival, previous
    ) -> None:
        self.checkRandomPackets(profile, data, arrival, previous)

    @settings(max_examples=30, deadline=None)
    @given(st.lists(profiles(), min_size=1, max_size=4), st.data())
    def test_randomStations(self, stations: list[DeviceProfile], data) -> None:
        self.checkRandomStations(stations, data)
