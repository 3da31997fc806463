"""
Tests for L{weather.core.lineprotocol}: escaping, number formatting, lines,
and a packet's points.
"""

from __future__ import annotations

import math
import struct

from twisted.trial.unittest import SynchronousTestCase

from tests.oracle import PerReadingEncoder, oracle_lines, per_reading_lines
from weather.core.decode import Reading
from weather.core.devices import REFERENCE_DEVICES, DeviceProfile, ValueSpec
from weather.core.lineprotocol import (
    LineEncoder,
    escape_key,
    escape_measurement,
    format_float,
    line,
    packet_points,
    series_prefix,
)
from weather.core.packet import PacketRejected, Reason
from weather.core.timing import TimingInputs

T = 1_700_000_000_000_000_000
BALCONY = (("place", "balcony"),)


class EscapeTests(SynchronousTestCase):
    def test_measurementPlain(self) -> None:
        self.assertEqual(escape_measurement("temperature"), "temperature")

    def test_measurementCommaSpace(self) -> None:
        self.assertEqual(escape_measurement("a,b c"), "a\\,b\\ c")
        self.assertEqual(escape_measurement(",, "), "\\,\\,\\ ")

    def test_measurementEqualsUnescaped(self) -> None:
        self.assertEqual(escape_measurement("a=b"), "a=b")

    def test_keyCommaEqualsSpace(self) -> None:
        self.assertEqual(escape_key("a,b=c d"), "a\\,b\\=c\\ d")
        self.assertEqual(escape_key("=="), "\\=\\=")

    def test_backslashLiteral(self) -> None:
        self.assertEqual(escape_measurement("a\\b"), "a\\b")
        self.assertEqual(escape_key("a\\b"), "a\\b")
        self.assertEqual(escape_key("c:\\x\\y"), "c:\\x\\y")

    def test_quotesLiteral(self) -> None:
        self.assertEqual(escape_measurement('say "hi"'), 'say\\ "hi"')
        self.assertEqual(escape_key('it\'s "x"'), 'it\'s\\ "x"')

    def test_unicodePassesThrough(self) -> None:
        self.assertEqual(escape_key("Küche"), "Küche")
        self.assertEqual(escape_measurement("°C"), "°C")


class SeriesPrefixTests(SynchronousTestCase):
    def test_reference(self) -> None:
        self.assertEqual(
            series_prefix("temperature", BALCONY, "value"),
            "temperature,place=balcony value=",
        )

    def test_noTags(self) -> None:
        self.assertEqual(series_prefix("rain", (), "value"), "rain value=")

    def test_tagsSorted(self) -> None:
        tags = (("zone", "2"), ("place", "roof"), ("a", "1"))
        self.assertEqual(
            series_prefix("m", tags, "value"), "m,a=1,place=roof,zone=2 value="
        )

    def test_everythingEscaped(self) -> None:
        self.assertEqual(
            series_prefix("my temp,x", (("the place", "a=b,c"),), "f 1"),
            "my\\ temp\\,x,the\\ place=a\\=b\\,c f\\ 1=",
        )


class FormatFloatTests(SynchronousTestCase):
    def test_integers(self) -> None:
        self.assertEqual(format_float(129), "129.0")
        self.assertEqual(format_float(129.0), "129.0")
        self.assertEqual(format_float(0), "0.0")
        self.assertEqual(format_float(65535), "65535.0")

    def test_negative(self) -> None:
        self.assertEqual(format_float(-6.0), "-6.0")
        self.assertEqual(format_float(-46.85), "-46.85")
        self.assertEqual(format_float(-128), "-128.0")

    def test_fractions(self) -> None:
        self.assertEqual(format_float(56.5), "56.5")
        self.assertEqual(format_float(0.1), "0.1")
        self.assertEqual(format_float(20.1818603515625), "20.1818603515625")

    def test_exponent(self) -> None:
        self.assertEqual(format_float(1e16), "1e+16")
        self.assertEqual(format_float(1.5e-7), "1.5e-07")
        self.assertEqual(format_float(-4294967295.0 * 1e10), "-4.294967295e+19")

    def test_roundTrip(self) -> None:
        for value in (1 / 3, -2 / 7, 3.4028234663852886e38, 1e-45, 123456.789):
            self.assertEqual(float(format_float(value)), value)


class LineTests(SynchronousTestCase):
    """L{line}: one point that is not a packet's, such as the server's own figures."""

    def test_referenceLine(self) -> None:
        reading = Reading("temperature", BALCONY, "value", 20.1818603515625, T)
        self.assertEqual(
            line(reading),
            b"temperature,place=balcony value=20.1818603515625 1700000000000000000",
        )

    def test_timestampNanoseconds(self) -> None:
        for time_ns in (0, 1, 1_700_000_000_123_456_789):
            self.assertEqual(
                line(Reading("m", (), "value", 1.0, time_ns)), b"m value=1.0 %d" % time_ns
            )

    def test_noNewline(self) -> None:
        self.assertNotIn(b"\n", line(Reading("m", BALCONY, "value", 1.0, T)))

    def test_utf8(self) -> None:
        reading = Reading("°C", (("room", "Küche"),), "value", 1.0, 0)
        self.assertEqual(line(reading), "°C,room=Küche value=1.0 0".encode())

    def test_escapedLine(self) -> None:
        reading = Reading("air temp", (("place", "roof, north"),), "value", -3.0, T)
        self.assertEqual(
            line(reading),
            b"air\\ temp,place=roof\\,\\ north value=-3.0 1700000000000000000",
        )


class OracleTests(SynchronousTestCase):
    """The per-reading oracle (tests/oracle.py) the fast path is held against."""

    def test_seriesKeptApart(self) -> None:
        """Its prefix cache tells series apart by measurement, tags and field."""
        readings = [
            Reading("t", (("place", "a"),), "value", 1.0, 5),
            Reading("t", (("place", "b"),), "value", 2.0, 5),
            Reading("t", (("place", "a"),), "max", 3.0, 5),
            Reading("u", (("place", "a"),), "value", 4.0, 5),
            Reading("t", (("place", "a"),), "value", 5.0, 6),
        ]
        expected = [
            b"t,place=a value=1.0 5",
            b"t,place=b value=2.0 5",
            b"t,place=a max=3.0 5",
            b"u,place=a value=4.0 5",
            b"t,place=a value=5.0 6",
        ]
        self.assertEqual(PerReadingEncoder().encode(readings), expected)
        self.assertEqual([line(r) for r in readings], expected)

    def test_notFiniteLeftOut(self) -> None:
        readings = [
            Reading("m", (), "value", value, 1)
            for value in (1.0, math.nan, math.inf, -math.inf, 2.0)
        ]
        self.assertEqual(per_reading_lines(readings), [b"m value=1.0 1", b"m value=2.0 1"])
        self.assertEqual(per_reading_lines([]), [])


class PacketPointsTests(SynchronousTestCase):
    """L{packet_points}: a journaled packet to the lines the server writes for it."""

    def test_referencePacket(self) -> None:
        body = struct.pack("<HHH", 129, 32768, 25000) + struct.pack("<HHH", 130, 0, 0)
        packet = struct.pack("<HHHBBB", 12, 3600, 120, 6, 1, 3) + body
        decoded, lines, not_finite = packet_points(
            packet, T, TimingInputs(), REFERENCE_DEVICES, LineEncoder()
        )
        self.assertEqual(decoded.times, [T - 120_000_000_000, T])
        early = T - 120_000_000_000
        self.assertEqual(
            lines,
            [
                b"light,place=balcony value=129.0 %d" % early,
                b"humidity,place=balcony value=56.5 %d" % early,
                b"temperature,place=balcony value=20.1818603515625 %d" % early,
                b"light,place=balcony value=130.0 %d" % T,
                b"humidity,place=balcony value=-6.0 %d" % T,
                b"temperature,place=balcony value=-46.85 %d" % T,
            ],
        )
        self.assertEqual(not_finite, 0)
        self.assertEqual(lines, oracle_lines(packet, T, TimingInputs(), REFERENCE_DEVICES))

    def test_measuredInterval(self) -> None:
        """The previous arrival recorded with the packet times its records."""
        packet = struct.pack("<HHHBBB", 12, 3600, 120, 6, 1, 3) + bytes(12)
        previous = T - 3590_000_000_000
        inputs = TimingInputs.since(previous, T)
        points = packet_points(packet, T, inputs, REFERENCE_DEVICES, LineEncoder())
        # Measured over one upload: 3590 s / 30 records; 28 were lost.
        self.assertEqual(points.decoded.times, [T - 119_666_666_667, T])
        self.assertEqual(points.lines, oracle_lines(packet, T, inputs, REFERENCE_DEVICES))

    def test_notFiniteCounted(self) -> None:
        profiles = {5: DeviceProfile(5, (), (ValueSpec("x", "f32"),))}
        body = struct.pack("<fff", 1.5, math.nan, -math.inf)
        packet = struct.pack("<HHHBBB", 12, 3600, 120, 4, 5, 1) + body
        points = packet_points(packet, T, TimingInputs(), profiles, LineEncoder())
        self.assertEqual(points.lines, [b"x value=1.5 %d" % (T - 240_000_000_000)])
        self.assertEqual(points.not_finite, 2)

    def test_scaledWithoutFloatNoise(self) -> None:
        """A scale of 0.1 stores 1012.9, not 1012.9000000000001."""
        specs = (
            ValueSpec("pressure", scale=0.1, unit="hPa"),
            ValueSpec("t", "i16", scale=0.01),
        )
        profiles = {5: DeviceProfile(5, (), specs)}
        packet = struct.pack("<HHHBBB", 4, 3600, 120, 4, 5, 2) + struct.pack(
            "<Hh", 10129, -7
        )
        points = packet_points(packet, T, TimingInputs(), profiles, LineEncoder())
        self.assertEqual(
            points.lines, [b"pressure value=1012.9 %d" % T, b"t value=-0.07 %d" % T]
        )
        self.assertEqual(points.lines, oracle_lines(packet, T, TimingInputs(), profiles))

    def test_rejected(self) -> None:
        packet = struct.pack("<HHHBBB", 0, 3600, 120, 6, 9, 3)
        with self.assertRaises(PacketRejected) as caught:
            packet_points(packet, T, TimingInputs(), REFERENCE_DEVICES, LineEncoder())
        self.assertEqual(caught.exception.reason, Reason.UNKNOWN_DEVICE)
