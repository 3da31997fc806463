"""
Tests for L{weather.core.devices}: SI7021 conversions, value specs and the devices
file.
"""

from __future__ import annotations

import math
import os
import struct
from decimal import Decimal
from fractions import Fraction

from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from weather.app.settings import load_devices
from weather.core.devices import (
    MAX_DEVICES_FILE_SIZE,
    REFERENCE_DEVICES,
    REFERENCE_STATION,
    DeviceProfile,
    DevicesError,
    ValueSpec,
    parse_devices,
    si7021_humidity,
    si7021_temperature,
    stored_places,
)
from weather.core.lineprotocol import format_float


def exact_humidity(code: int) -> Fraction:
    return Fraction(125) * code / 65536 - 6


def exact_temperature(code: int) -> Fraction:
    return Fraction("175.72") * code / 65536 - Fraction("46.85")


class SI7021Tests(SynchronousTestCase):
    """The SI7021 datasheet formulas."""

    def test_humidityKnownPoints(self) -> None:
        self.assertEqual(si7021_humidity(0), -6.0)
        self.assertEqual(si7021_humidity(32768), 56.5)
        self.assertEqual(si7021_humidity(65536), 119.0)
        # 125 * 26000 / 65536 = 49.591064453125 (exact in binary)
        self.assertEqual(si7021_humidity(26000), 43.591064453125)
        # 100 % is reached at code 106 * 65536 / 125 = 55574.528
        self.assertLess(si7021_humidity(55572), 100.0)
        self.assertGreater(si7021_humidity(55576), 100.0)

    def test_temperatureKnownPoints(self) -> None:
        self.assertAlmostEqual(si7021_temperature(0), -46.85, places=12)
        self.assertAlmostEqual(si7021_temperature(32768), 41.01, places=12)
        # 175.72 * 25000 / 65536 = 67.0318603515625
        self.assertAlmostEqual(si7021_temperature(25000), 20.1818603515625, places=12)
        # 175.72 * 17476 / 65536 = 46.85795166015625: just above 0 degrees
        self.assertAlmostEqual(si7021_temperature(17476), 0.00795166015625, places=12)
        # 175.72 * 65532 / 65536 = 175.70927490234375
        self.assertAlmostEqual(si7021_temperature(65532), 128.85927490234375, places=10)

    def test_matchesExactFormula(self) -> None:
        for code in range(0, 65536, 4 * 97):
            self.assertAlmostEqual(
                si7021_humidity(code), float(exact_humidity(code)), places=10
            )
            self.assertAlmostEqual(
                si7021_temperature(code), float(exact_temperature(code)), places=10
            )


class ValueSpecTests(SynchronousTestCase):
    """L{ValueSpec.convert}."""

    def test_raw(self) -> None:
        spec = ValueSpec("light")
        self.assertEqual(spec.convert(129), 129.0)
        self.assertIsInstance(spec.convert(129), float)

    def test_scaleOffset(self) -> None:
        spec = ValueSpec("pressure", scale=0.5, offset=-10.0)
        self.assertEqual(spec.convert(100), 40.0)
        spec = ValueSpec("t", conversion="si7021_humidity", scale=2.0, offset=1.0)
        self.assertEqual(spec.convert(32768), 114.0)

    def test_clamp(self) -> None:
        spec = ValueSpec("humidity", conversion="si7021_humidity", clamp=(0.0, 100.0))
        self.assertEqual(spec.convert(0), 0.0)
        self.assertEqual(spec.convert(65532), 100.0)
        self.assertEqual(spec.convert(32768), 56.5)

    def test_clampAfterScale(self) -> None:
        spec = ValueSpec("x", scale=10.0, clamp=(0.0, 50.0))
        self.assertEqual(spec.convert(4), 40.0)
        self.assertEqual(spec.convert(6), 50.0)

    def test_clampKeepsNaN(self) -> None:
        spec = ValueSpec("x", type="f32", clamp=(0.0, 1.0))
        self.assertTrue(math.isnan(spec.convert(math.nan)))
        self.assertEqual(spec.convert(math.inf), 1.0)

    def test_invalidCodesAreNaN(self) -> None:
        """A code that is not a reading converts to NaN (not stored), clamp or not."""
        spec = ValueSpec(
            "humidity",
            conversion="si7021_humidity",
            clamp=(0.0, 100.0),
            invalid=frozenset({0xFFFC, 0xFFFF}),
        )
        for _ in range(2):  # converted, then remembered
            converted = spec.convert_all([0xFFFC, 32768, 0xFFFF, 0xFFF8])
            self.assertTrue(math.isnan(converted[0]))
            self.assertEqual(converted[1], 56.5)
            self.assertTrue(math.isnan(converted[2]))
            self.assertEqual(converted[3], 100.0)


#: Integer wire types and their ranges.
INTEGER_TYPES = {"u8": (0, 255), "i8": (-128, 127), "u16": (0, 65535)}
INTEGER_TYPES |= {
    "i16": (-32768, 32767),
    "u32": (0, 2**32 - 1),
    "i32": (-(2**31), 2**31 - 1),
}


@st.composite
def decimals(draw, most: int = 10**6) -> Decimal:
    """A number as a devices file writes it: up to 6 decimals."""
    places = draw(st.integers(0, 6))
    return Decimal(draw(st.integers(-most, most))).scaleb(-places)


class FloatNoiseTests(SynchronousTestCase):
    """
    A code times C{scale} plus C{offset} is stored as the decimal it is
    (1012.9), not with the float arithmetic's noise (1012.9000000000001).
    """

    def test_scaleOfATenth(self) -> None:
        spec = ValueSpec("pressure", scale=0.1)
        self.assertEqual(10129 * 0.1, 1012.9000000000001)  # the noise
        self.assertEqual(format_float(spec.convert(10129)), "1012.9")
        self.assertEqual(spec.convert_all([10129, 10129]), [1012.9, 1012.9])
        gust = ValueSpec("gust", "i16", scale=0.1)
        self.assertEqual([format_float(gust.convert(c)) for c in (-3, 7)], ["-0.3", "0.7"])

    def test_placesAsWritten(self) -> None:
        """Scale, offset and clamp bounds each count, as written."""
        for kwargs, places in [
            ({"scale": 0.1}, 1),
            ({"scale": 0.25}, 2),
            ({"scale": 0.5, "offset": -40.05}, 2),
            ({"scale": 0.1, "clamp": (0.0, 99.95)}, 2),
            ({"scale": 1e-05}, 5),
            ({"scale": 2.0, "offset": -3.0}, None),
            ({"scale": 1e20}, None),
            ({"conversion": "si7021_humidity", "scale": 0.1}, None),
            ({"type": "f32", "scale": 0.1}, None),
        ]:
            self.assertEqual(stored_places(ValueSpec("x", **kwargs)), places, kwargs)
        clamped = ValueSpec("x", scale=0.1, clamp=(0.0, 99.95))
        self.assertEqual(clamped.convert(1000), 99.95)

    def test_neverNegativeZero(self) -> None:
        """A sum that rounds to zero is 0.0, whose text is that of 0.0 (see ValueSpec)."""
        spec = ValueSpec("x", scale=0.1, offset=-0.3)
        self.assertEqual(repr(spec.convert(3)), "0.0")
        spec = ValueSpec("x", "i16", scale=0.01, offset=0.03)
        self.assertEqual(repr(spec.convert(-3)), "0.0")

    def test_otherConversionsAsBefore(self) -> None:
        """Named conversions and f32 values carry their own digits: unchanged."""
        humidity = ValueSpec("humidity", conversion="si7021_humidity")
        self.assertEqual(humidity.convert(30000), si7021_humidity(30000))
        wind = ValueSpec("wind", "f32", scale=0.1)
        tenth = struct.unpack("<f", struct.pack("<f", 0.1))[0]
        self.assertEqual(wind.convert(tenth), tenth * 0.1)

    @given(
        st.sampled_from(sorted(INTEGER_TYPES)),
        st.integers(-(2**31), 2**32 - 1),
        decimals().filter(bool),
        decimals(),
    )
    def test_theDecimalItIs(
        self, kind: str, code: int, scale: Decimal, offset: Decimal
    ) -> None:
        """
        Any code of an integer type, any scale and offset of up to six
        decimals: the stored text is that of the float nearest the exact
        decimal, as long as that decimal has digits enough in a float.
        """
        low, high = INTEGER_TYPES[kind]
        assume(low <= code <= high)
        exact = code * scale + offset
        places = max(-scale.as_tuple().exponent, -offset.as_tuple().exponent, 0)
        biggest = max(abs(code * scale), abs(offset), abs(exact))
        assume(biggest * 10**places < 2**50)
        spec = ValueSpec("x", kind, scale=float(scale), offset=float(offset))
        value = spec.convert(code)
        self.assertEqual(format_float(value), repr(float(exact)))
        self.assertEqual(format_float(spec.convert_all([code])[0]), repr(float(exact)))


class ReferenceTests(SynchronousTestCase):
    def test_referenceDevices(self) -> None:
        self.assertEqual(list(REFERENCE_DEVICES), [1])
        profile = REFERENCE_DEVICES[1]
        self.assertIs(profile, REFERENCE_STATION)
        self.assertEqual(profile.device_id, 1)
        self.assertEqual(profile.tags, (("place", "balcony"),))
        self.assertEqual(
            [(v.name, v.type, v.conversion, v.field) for v in profile.values],
            [
                ("light", "u16", "raw", "value"),
                ("humidity", "u16", "si7021_humidity", "value"),
                ("temperature", "u16", "si7021_temperature", "value"),
            ],
        )
        self.assertEqual(profile.record_size, 6)
        self.assertEqual(profile.record.format, "<HHH")

    def test_referenceSensorFailures(self) -> None:
        """A failed SI7021 read (0xFFFC) and a cut record (0xFFFF) are not readings."""
        light, humidity, temperature = REFERENCE_STATION.values
        self.assertEqual(light.invalid, {0xFFFF})
        self.assertEqual(humidity.invalid, {0xFFFC, 0xFFFF})
        self.assertEqual(temperature.invalid, {0xFFFC, 0xFFFF})
        self.assertEqual(light.convert(0xFFFC), 65532.0)
        self.assertTrue(math.isnan(temperature.convert(0xFFFC)))

    def test_referenceIsNotClamped(self) -> None:
        # The original server stored the formula's value unclamped.
        for spec in REFERENCE_STATION.values:
            self.assertIsNone(spec.clamp)


GOOD = """
[devices.1]
tags = { place = "balcony" }

[[devices.1.values]]
name = "light"
type = "u16"
unit = "lx"

[[devices.1.values]]
name = "humidity"
type = "u16"
conversion = "si7021_humidity"
clamp = [0, 100]
unit = "%"

[[devices.1.values]]
name = "temperature"
conversion = "si7021_temperature"

[devices.7]
tags = { room = "cellar", place = "house" }

[[devices.7.values]]
name = "a"
type = "u8"

[[devices.7.values]]
name = "b"
type = "i8"

[[devices.7.values]]
name = "c"
type = "i16"
scale = 0.1
offset = -3

[[devices.7.values]]
name = "d"
type = "u32"

[[devices.7.values]]
name = "e"
type = "i32"
field = "count"

[[devices.7.values]]
name = "e"
type = "f32"
"""


class ParseDevicesTests(SynchronousTestCase):
    """L{parse_devices}."""

    def test_good(self) -> None:
        profiles = parse_devices(GOOD)
        self.assertEqual(sorted(profiles), [1, 7])
        one = profiles[1]
        self.assertIsInstance(one, DeviceProfile)
        self.assertEqual(one.tags, (("place", "balcony"),))
        self.assertEqual(one.record_size, 6)
        self.assertEqual(
            one.values,
            (
                ValueSpec("light", "u16", unit="lx"),
                ValueSpec(
                    "humidity",
                    "u16",
                    "si7021_humidity",
                    clamp=(0.0, 100.0),
                    unit="%",
                ),
                ValueSpec("temperature", "u16", "si7021_temperature"),
            ),
        )
        seven = profiles[7]
        self.assertEqual(seven.tags, (("place", "house"), ("room", "cellar")))
        self.assertEqual(
            [v.type for v in seven.values], ["u8", "i8", "i16", "u32", "i32", "f32"]
        )
        self.assertEqual(seven.record.format, "<BbhIif")
        self.assertEqual(seven.record_size, 1 + 1 + 2 + 4 + 4 + 4)
        c = seven.values[2]
        self.assertEqual((c.scale, c.offset), (0.1, -3.0))
        self.assertIsInstance(c.offset, float)
        self.assertEqual(
            [(v.name, v.field) for v in seven.values[4:]],
            [("e", "count"), ("e", "value")],
        )

    def test_referenceEquivalent(self) -> None:
        profiles = parse_devices(
            """
            [devices.1]
            tags = { place = "balcony" }

            [[devices.1.values]]
            name = "light"
            unit = "lx"
            invalid = [0xFFFF]

            [[devices.1.values]]
            name = "humidity"
            conversion = "si7021_humidity"
            unit = "%"
            invalid = [0xFFFC, 0xFFFF]

            [[devices.1.values]]
            name = "temperature"
            conversion = "si7021_temperature"
            unit = "°C"
            invalid = [65532, 65535]
            """
        )
        self.assertEqual(dict(profiles), dict(REFERENCE_DEVICES))

    def test_noTags(self) -> None:
        profiles = parse_devices('[devices.0]\nvalues = [{ name = "x" }]\n')
        self.assertEqual(profiles[0].tags, ())

    def test_deviceId255(self) -> None:
        profiles = parse_devices('[devices.255]\nvalues = [{ name = "x" }]\n')
        self.assertEqual(list(profiles), [255])

    def test_sameSeriesWithDistinctTags(self) -> None:
        profiles = parse_devices(
            """
            [devices.1]
            tags = { place = "balcony" }
            values = [{ name = "temperature" }]
            [devices.2]
            tags = { place = "garden" }
            values = [{ name = "temperature" }]
            """
        )
        self.assertEqual(sorted(profiles), [1, 2])

    def assertError(self, text: str, *fragments: str) -> DevicesError:
        with self.assertRaises(DevicesError) as caught:
            parse_devices(text)
        message = str(caught.exception)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return caught.exception

    def test_deeplyNested(self) -> None:
        """Arrays or tables 5,000 deep: one error, not a RecursionError."""
        self.assertError("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply")
        self.assertError("a = " + "{ b = " * 5000 + "1" + " }" * 5000, "nested too deeply")

    def test_tooLarge(self) -> None:
        """Past the limit the text is not parsed; up to it, it is."""
        padding = "#" * (MAX_DEVICES_FILE_SIZE - len(GOOD) - 1) + "\n"
        self.assertEqual(len(parse_devices(padding + GOOD)), len(parse_devices(GOOD)))
        self.assertError(padding + GOOD + "#", "larger than 1 MiB")

    def test_badToml(self) -> None:
        self.assertError("[devices.1\nvalues = ", "not valid TOML")
        self.assertError('[devices.1]\nvalues = [{ name = "x" }]\nvalues = 1\n', "TOML")

    def test_noDevices(self) -> None:
        self.assertError("", "no devices")
        self.assertError("[devices]\n", "no devices")
        self.assertError("devices = 3\n", "no devices")

    def test_unknownTopLevelKey(self) -> None:
        self.assertError('port = 8000\n[devices.1]\nvalues = [{ name = "x" }]\n', "'port'")

    def test_unknownDeviceKey(self) -> None:
        self.assertError(
            '[devices.1]\nplce = "x"\nvalues = [{ name = "x" }]\n',
            "devices.1",
            "'plce'",
        )

    def test_unknownValueKey(self) -> None:
        self.assertError(
            '[devices.1]\nvalues = [{ name = "x", scael = 2 }]\n',
            "devices.1.values[0]",
            "'scael'",
        )

    def test_badType(self) -> None:
        self.assertError(
            '[devices.1]\nvalues = [{ name = "x" }, { name = "y", type = "u64" }]\n',
            "devices.1.values[1].type",
            "'u64'",
        )
        self.assertError('[devices.1]\nvalues = [{ name = "x", type = 16 }]\n', "type")

    def test_badConversion(self) -> None:
        self.assertError(
            '[devices.1]\nvalues = [{ name = "x", conversion = "celsius" }]\n',
            "devices.1.values[0].conversion",
            "'celsius'",
        )

    def test_unhashableTypeOrConversion(self) -> None:
        """
        A type or conversion given as an array or table is refused with
        L{DevicesError} like any other bad value, not a C{TypeError}.
        """
        self.assertError('[devices.1]\nvalues = [{ name = "x", type = ["u8"] }]\n', "type")
        self.assertError(
            '[devices.1]\nvalues = [{ name = "x", conversion = { a = 1 } }]\n',
            "conversion",
        )

    def test_badNumbers(self) -> None:
        self.assertError('[devices.1]\nvalues = [{ name = "x", scale = "2" }]\n', "scale")
        self.assertError(
            '[devices.1]\nvalues = [{ name = "x", offset = true }]\n', "offset"
        )
        self.assertError('[devices.1]\nvalues = [{ name = "x", scale = inf }]\n', "finite")
        self.assertError('[devices.1]\nvalues = [{ name = "x", offset = nan }]\n', "finite")

    def test_deviceIdOutOfRange(self) -> None:
        for key in ("256", "-1", "1000", "abc", '"1.5"'):
            self.assertError(f'[devices.{key}]\nvalues = [{{ name = "x" }}]\n', "0-255")

    def test_sameDeviceIdTwice(self) -> None:
        """
        Two keys naming the same device id (C{1} and C{01}) are refused, not
        one silently dropped.
        """
        self.assertError(
            """
            [devices.1]
            values = [{ name = "light" }]
            [devices.01]
            values = [{ name = "rain" }]
            """,
            "1",
        )

    def test_emptyValues(self) -> None:
        self.assertError("[devices.1]\nvalues = []\n", "devices.1")
        self.assertError('[devices.1]\ntags = { place = "x" }\n', "devices.1")
        self.assertError("[devices.1]\nvalues = 3\n", "devices.1")

    def test_valueNotATable(self) -> None:
        self.assertError('[devices.1]\nvalues = ["light"]\n', "values[0]")

    def test_deviceNotATable(self) -> None:
        self.assertError("[devices]\n1 = 5\n", "devices.1")

    def test_tagsNotATable(self) -> None:
        self.assertError(
            '[devices.1]\ntags = "balcony"\nvalues = [{ name = "x" }]\n', "tags"
        )

    def test_nonStringTagValue(self) -> None:
        self.assertError(
            '[devices.1]\ntags = { floor = 2 }\nvalues = [{ name = "x" }]\n',
            "tags.floor",
        )

    def test_emptyNames(self) -> None:
        self.assertError('[devices.1]\nvalues = [{ name = "" }]\n', "name")
        self.assertError('[devices.1]\nvalues = [{ type = "u8" }]\n', "name")
        self.assertError('[devices.1]\nvalues = [{ name = "x", field = "" }]\n', "field")
        self.assertError(
            '[devices.1]\ntags = { place = "" }\nvalues = [{ name = "x" }]\n',
            "tags.place",
        )

    def test_duplicateValueInDevice(self) -> None:
        self.assertError(
            '[devices.1]\nvalues = [{ name = "x" }, { name = "x", type = "u8" }]\n',
            "same name",
        )

    def test_duplicateSeriesAcrossDevices(self) -> None:
        self.assertError(
            """
            [devices.1]
            tags = { place = "balcony" }
            values = [{ name = "light" }, { name = "temperature" }]
            [devices.2]
            tags = { place = "balcony" }
            values = [{ name = "temperature", type = "i16" }]
            """,
            "devices 1 and 2",
            "'temperature'",
        )

    def test_duplicateSeriesWithoutTags(self) -> None:
        self.assertError(
            """
            [devices.3]
            values = [{ name = "t" }]
            [devices.4]
            values = [{ name = "t" }]
            """,
            "devices 3 and 4",
        )

    def test_controlCharacters(self) -> None:
        for text in ("a\\nb", "a\\tb", "a\\u0000", "a\\u007f", "\\r"):
            self.assertError(
                f'[devices.1]\nvalues = [{{ name = "{text}" }}]\n',
                "control characters",
            )
            self.assertError(
                f'[devices.1]\ntags = {{ place = "{text}" }}\n'
                'values = [{ name = "x" }]\n',
                "control characters",
            )
            self.assertError(
                f'[devices.1]\ntags = {{ "{text}" = "x" }}\nvalues = [{{ name = "x" }}]\n',
                "control characters",
            )
            self.assertError(
                f'[devices.1]\nvalues = [{{ name = "x", field = "{text}" }}]\n',
                "control characters",
            )

    def test_trailingBackslash(self) -> None:
        self.assertError("[devices.1]\nvalues = [{ name = 'light\\' }]\n", "backslash")
        self.assertError(
            "[devices.1]\ntags = { place = 'c:\\' }\nvalues = [{ name = 'x' }]\n",
            "backslash",
        )
        self.assertError(
            "[devices.1]\nvalues = [{ name = 'x', field = 'v\\' }]\n", "backslash"
        )

    def test_innerBackslashRefused(self) -> None:
        """
        Line protocol cannot tell a literal backslash before an escaped
        character from an escape, so no name may hold one.
        """
        self.assertError("[devices.1]\nvalues = [{ name = 'a\\b' }]\n", "backslash")

    def test_clamp(self) -> None:
        profiles = parse_devices(
            '[devices.1]\nvalues = [{ name = "x", clamp = [-1.5, 2] }]\n'
        )
        self.assertEqual(profiles[1].values[0].clamp, (-1.5, 2.0))
        profiles = parse_devices('[devices.1]\nvalues = [{ name = "x", clamp = [3, 3] }]\n')
        self.assertEqual(profiles[1].values[0].clamp, (3.0, 3.0))

    def test_clampLowAboveHigh(self) -> None:
        self.assertError(
            '[devices.1]\nvalues = [{ name = "x", clamp = [100, 0] }]\n',
            "clamp",
            "above",
        )

    def test_badClamp(self) -> None:
        for clamp in ("[0]", "[0, 1, 2]", "5", '["a", 1]', "[0, inf]"):
            self.assertError(
                f'[devices.1]\nvalues = [{{ name = "x", clamp = {clamp} }}]\n',
                "clamp",
            )

    def test_badUnit(self) -> None:
        self.assertError('[devices.1]\nvalues = [{ name = "x", unit = 1 }]\n', "unit")

    def test_invalid(self) -> None:
        """Codes in hex or decimal, each one the wire type can hold."""
        profiles = parse_devices(
            "[devices.1]\nvalues = [{ name = 'x', invalid = [0xFFFC, 65535] },"
            " { name = 'y', type = 'i8', invalid = [-128, 127] }]\n"
        )
        self.assertEqual(
            [v.invalid for v in profiles[1].values], [{65532, 65535}, {-128, 127}]
        )
        self.assertEqual(
            parse_devices("[devices.1]\nvalues = [{ name = 'x' }]\n")[1].values[0].invalid,
            frozenset(),
        )

    def test_badInvalid(self) -> None:
        for kind, codes, words in (
            ("u16", "[65536]", "65536, which a u16 cannot hold"),
            ("u8", "[-1]", "-1, which a u8 cannot hold"),
            ("i16", "[32768]", "which a i16 cannot hold"),
            ("u16", "[1.0]", "codes are integers"),
            ("u16", "[true]", "codes are integers"),
            ("u16", "65535", "must be a list"),
            ("f32", "[0]", "an f32 value has no codes"),
        ):
            self.assertError(
                f"[devices.1]\nvalues = [{{ name = 'x', type = '{kind}', "
                f"invalid = {codes} }}]\n",
                "devices.1.values[0].invalid",
                words,
            )

    def test_uploadDelay(self) -> None:
        text = "[devices.1]\n{delay}values = [{{ name = 'x' }}]\n"
        self.assertEqual(parse_devices(text.format(delay=""))[1].upload_delay, 0.0)
        for delay, seconds in (("2.5", 2.5), ("3", 3.0), ("60", 60.0)):
            profile = parse_devices(text.format(delay=f"upload_delay = {delay}\n"))[1]
            self.assertEqual(profile.upload_delay, seconds)
        for delay in ("-1", "61", "inf", "'2'", "true"):
            self.assertError(
                text.format(delay=f"upload_delay = {delay}\n"), "devices.1.upload_delay"
            )


class LoadDevicesTests(SynchronousTestCase):
    """L{load_devices}."""

    def test_load(self) -> None:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(GOOD)
        self.assertEqual(dict(load_devices(path)), dict(parse_devices(GOOD)))

    def test_missingFile(self) -> None:
        path = os.path.join(self.mktemp(), "devices.toml")
        with self.assertRaises(DevicesError) as caught:
            load_devices(path)
        self.assertIn(path, str(caught.exception))

    def test_notUtf8(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b'[devices.1]\nvalues = [{ name = "\xff" }]\n')
        with self.assertRaises(DevicesError) as caught:
            load_devices(path)
        self.assertIn(path, str(caught.exception))

    def assertRefused(self, path: str, *fragments: str) -> None:
        with self.assertRaises(DevicesError) as caught:
            load_devices(path)
        for fragment in (path, *fragments):
            self.assertIn(fragment, str(caught.exception))

    def test_fifoRefused(self) -> None:
        """A FIFO without a writer is refused at once: opening it does not wait."""
        path = self.mktemp()
        os.mkfifo(path)
        self.assertRefused(path, "a FIFO, not a regular file")

    def test_notAFileRefused(self) -> None:
        self.assertRefused(os.path.dirname(os.path.abspath(self.mktemp())), "directory")
        self.assertRefused(os.devnull, "character device")

    def test_tooLargeNotRead(self) -> None:
        """A file past the limit: refused, though it is valid TOML."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(GOOD + "#" * MAX_DEVICES_FILE_SIZE)
        self.assertRefused(path, "larger than 1 MiB")

    def test_invalidContentNamesFile(self) -> None:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("[devices.1]\nvalues = []\n")
        with self.assertRaises(DevicesError) as caught:
            load_devices(path)
        self.assertIn(path, str(caught.exception))
        self.assertIn("devices.1", str(caught.exception))


class ReservedNameTests(SynchronousTestCase):
    """Names InfluxDB drops, refuses or keeps for itself are refused at load."""

    def assertRefused(self, values: str, words: str) -> None:
        error = self.assertRaises(
            DevicesError, parse_devices, f"[devices.1]\nvalues = [{values}]\n"
        )
        self.assertIn(words, str(error))

    def test_measurementStartingWithHash(self) -> None:
        """InfluxDB takes such a line for a comment: 204, and nothing stored."""
        self.assertRefused('{ name = "#temp" }', "must not start with '#'")

    def test_measurementStartingWithUnderscore(self) -> None:
        self.assertRefused('{ name = "_temp" }', "underscore")

    def test_fieldNamedTime(self) -> None:
        self.assertRefused('{ name = "t", field = "time" }', "reserved by InfluxDB")

    def test_fieldStartingWithUnderscore(self) -> None:
        self.assertRefused('{ name = "t", field = "_field" }', "reserved by InfluxDB")

    def test_tagKeyNamedTime(self) -> None:
        error = self.assertRaises(
            DevicesError,
            parse_devices,
            '[devices.1]\ntags = { time = "x" }\nvalues = [{ name = "t" }]\n',
        )
        self.assertIn("reserved by InfluxDB", str(error))

    def test_tagValuesAreFree(self) -> None:
        """Tag values may be anything printable, even 'time' or '#1'."""
        profiles = parse_devices(
            '[devices.1]\ntags = { place = "#1 time" }\nvalues = [{ name = "t" }]\n'
        )
        self.assertEqual(profiles[1].tags, (("place", "#1 time"),))
