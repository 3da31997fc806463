"""
Station profiles: what each value of a device's records means, and how it is
stored.

A profile maps a device id to its tags (such as C{place}) and its record
layout: per value a name, a wire type and a conversion.  Profiles come from a
TOML devices file (L{parse_devices}; L{weather.app.settings.load_devices}
reads the file) or, without one, from L{REFERENCE_DEVICES}: the reference
station, stored exactly as the original server stored it.

Pure code: no I/O.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Wire types a record value may have, as struct format characters.
TYPES: Mapping[str, str] = MappingProxyType(
    {"u8": "B", "i8": "b", "u16": "H", "i16": "h", "u32": "I", "i32": "i", "f32": "f"}
)


def si7021_humidity(code: float) -> float:
    """Relative humidity in % from an SI7021 humidity code (datasheet 5.1.1)."""
    return 125.0 * code / 65536.0 - 6.0


def si7021_temperature(code: float) -> float:
    """Temperature in degrees Celsius from an SI7021 code (datasheet 5.1.2)."""
    return 175.72 * code / 65536.0 - 46.85


def _identity(value: float) -> float:
    return float(value)


#: Named conversions a profile may ask for.  C{scale}/C{offset} apply after.
CONVERSIONS: Mapping[str, Callable[[float], float]] = MappingProxyType(
    {
        "raw": _identity,
        "si7021_humidity": si7021_humidity,
        "si7021_temperature": si7021_temperature,
    }
)


#: How many converted codes a value remembers (L{ValueSpec.convert_all}); then
#: it forgets them all and starts again.  About 100 bytes each.
MEMO_LIMIT = 4096


class _ConversionMemo(dict[int, float]):
    """C{convert(code)} of the integer codes seen, filled as they come."""

    __slots__ = ("convert",)

    def __init__(self, convert: Callable[[int], float]) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, code: int) -> float:
        if len(self) >= MEMO_LIMIT:
            self.clear()
        value = self[code] = self.convert(code)
        return value


class DevicesError(ValueError):
    """A devices file or profile that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """
    One value of a record: its name (the InfluxDB measurement), wire type and
    conversion.  The stored value is C{conversion(raw) * scale + offset},
    clamped to C{clamp} if given, or NaN (not stored) for a raw code in
    C{invalid}: codes a sensor sends when it has no reading.  An integer code
    taken as it is (C{raw}) gives a value with the decimals of C{scale},
    C{offset} and C{clamp} as written, and is rounded to them
    (L{stored_places}): a code of 10129 with a scale of 0.1 is 1012.9, not
    the float product 1012.9000000000001.

    An offset or clamp bound of C{-0.0} is taken as C{0.0}: then L{convert}
    never returns C{-0.0} (a sum is C{-0.0} only if both terms are), so a
    value's text depends on its float value alone (C{-0.0 == 0.0}, as dict
    keys too), and specs that compare equal convert alike.
    """

    name: str
    type: str = "u16"
    conversion: str = "raw"
    scale: float = 1.0
    offset: float = 0.0
    clamp: tuple[float, float] | None = None
    field: str = "value"
    unit: str = ""
    invalid: frozenset[int] = frozenset()
    _remembered: Callable[[int], float] | None = dataclasses.field(
        init=False, default=None, repr=False, compare=False
    )
    #: The decimals values are rounded to (L{stored_places}); None: not rounded.
    _places: int | None = dataclasses.field(
        init=False, default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "offset", self.offset + 0.0)  # -0.0 + 0.0 is 0.0
        if self.clamp is not None:
            low, high = self.clamp
            object.__setattr__(self, "clamp", (low + 0.0, high + 0.0))
        object.__setattr__(self, "_places", stored_places(self))
        if self.type != "f32":
            # Integer codes repeat; f32 values seldom do, and a NaN is never
            # found again (NaN != NaN).
            memo = _ConversionMemo(self.convert)
            object.__setattr__(self, "_remembered", memo.__getitem__)

    def convert(self, raw: float) -> float:
        if raw in self.invalid:
            return math.nan
        value = CONVERSIONS[self.conversion](raw) * self.scale + self.offset
        if self._places is not None:
            value = round(value, self._places) + 0.0  # never -0.0, as above
        if self.clamp is not None and not math.isnan(value):
            low, high = self.clamp
            value = min(max(value, low), high)
        return value

    def convert_all(self, raws: Iterable[float]) -> list[float]:
        """
        C{[self.convert(raw) for raw in raws]}: the same floats, faster.  An
        integer code is converted once and then remembered (a station's codes
        repeat from one record to the next), so a column costs one dict lookup
        per value.
        """
        if self._remembered is None:
            return [self.convert(raw) for raw in raws]
        return list(map(self._remembered, raws))


def stored_places(spec: ValueSpec) -> int | None:
    """
    The decimals a value of C{spec} carries, if it is an integer code times
    C{scale} plus C{offset}: those of C{scale}, C{offset} and the C{clamp}
    bounds as written (the shortest text of each float: 0.1 has one, 0.25
    two).  The exact value has no more; the float arithmetic adds noise
    beyond them, which rounding to them removes.  None: nothing to round: a
    named conversion or an C{f32} value carries its own digits, and whole
    numbers give whole values.
    """
    if spec.type == "f32" or spec.conversion != "raw":
        return None
    numbers = (spec.scale, spec.offset, *(spec.clamp or ()))
    if not all(map(math.isfinite, numbers)):
        return None
    return max(map(_places, numbers)) or None


def _places(number: float) -> int:
    """The decimals of C{number}'s shortest text: 2 for 0.25, none for 2.0 or 1e+20."""
    number = float(number)
    if number.is_integer():
        return 0
    return -int(decimal.Decimal(repr(number)).as_tuple().exponent)


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """What a device's packets carry and the tags its points are stored with."""

    device_id: int
    tags: tuple[tuple[str, str], ...]  # sorted by key
    values: tuple[ValueSpec, ...]
    #: Seconds between the newest record and the packet's arrival (the
    #: station's Wi-Fi join and transfer), subtracted from every timestamp.
    upload_delay: float = 0.0
    record: struct.Struct = field(init=False, repr=False, compare=False)
    _records: dict[int, struct.Struct] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        layout = "<" + "".join(TYPES[spec.type] for spec in self.values)
        object.__setattr__(self, "record", struct.Struct(layout))

    def records(self, count: int) -> struct.Struct:
        """The layout of C{count} records in a row (remembered: packets repeat counts)."""
        layout = self._records.get(count)
        if layout is None:
            if len(self._records) >= 64:
                self._records.clear()
            layout = self._records[count] = struct.Struct(
                self.record.format[0] + self.record.format[1:] * count
            )
        return layout

    @property
    def record_size(self) -> int:
        return self.record.size


#: A failed SI7021 read (0xFFFC) and a record cut short on the I2C bus (0xFFFF
#: in every value) are not readings (docs/protocol.md).
SI7021_FAILURES = frozenset({0xFFFC, 0xFFFF})

REFERENCE_STATION = DeviceProfile(
    device_id=1,
    tags=(("place", "balcony"),),
    values=(
        ValueSpec("light", "u16", unit="lx", invalid=frozenset({0xFFFF})),
        ValueSpec("humidity", "u16", "si7021_humidity", unit="%", invalid=SI7021_FAILURES),
        ValueSpec(
            "temperature", "u16", "si7021_temperature", unit="°C", invalid=SI7021_FAILURES
        ),
    ),
)

#: The profiles used when no devices file is given.
REFERENCE_DEVICES: Mapping[int, DeviceProfile] = MappingProxyType(
    {REFERENCE_STATION.device_id: REFERENCE_STATION}
)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise DevicesError(f"{where} must be a non-empty string")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise DevicesError(f"{where} must not contain control characters")
    if "\\" in value:
        # Line protocol cannot tell a literal backslash before an escaped
        # character from an escape, so names may not hold one.
        raise DevicesError(f"{where} must not contain a backslash")
    return value


def _key(value: object, where: str) -> str:
    """
    A tag key or field key InfluxDB will store: not C{time} (refused) nor
    starting with an underscore (2.x keeps C{_field}, C{_measurement}...).
    """
    key = _text(value, where)
    if key == "time" or key.startswith("_"):
        raise DevicesError(
            f"{where} {key!r} is reserved by InfluxDB (time, or a leading underscore)"
        )
    return key


def _measurement(value: object, where: str) -> str:
    """A measurement name InfluxDB will store."""
    name = _text(value, where)
    if name.startswith("#"):
        # InfluxDB reads such a line as a comment: it answers 204 and
        # stores nothing.
        raise DevicesError(f"{where} {name!r} must not start with '#'")
    if name.startswith("_"):
        raise DevicesError(f"{where} {name!r} must not start with an underscore")
    return name


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DevicesError(f"{where} must be a number")
    if not math.isfinite(value):
        raise DevicesError(f"{where} must be finite")
    return float(value)


_VALUE_KEYS = frozenset(
    {"name", "type", "conversion", "scale", "offset", "clamp", "field", "unit", "invalid"}
)
#: The most seconds a station's newest record may be older than its packet.
MAX_UPLOAD_DELAY = 60.0


def _codes(value: object, kind: str, where: str) -> frozenset[int]:
    """Raw codes that are not readings: integers the wire type can hold."""
    if not isinstance(value, list):
        raise DevicesError(f"{where} must be a list of raw codes, e.g. [0xFFFC, 0xFFFF]")
    if kind == "f32" and value:
        raise DevicesError(f"{where}: an f32 value has no codes (NaN is never stored)")
    layout = struct.Struct("<" + TYPES[kind])
    for code in value:
        if isinstance(code, bool) or not isinstance(code, int):
            raise DevicesError(f"{where} holds {code!r}: codes are integers")
        try:
            layout.pack(code)
        except struct.error:
            raise DevicesError(
                f"{where} holds {code}, which a {kind} cannot hold"
            ) from None
    return frozenset(value)


def _value_spec(table: object, where: str) -> ValueSpec:
    if not isinstance(table, dict):
        raise DevicesError(f"{where} must be a table")
    unknown = sorted(set(table) - _VALUE_KEYS)
    if unknown:
        raise DevicesError(
            f"{where} has unknown key {unknown[0]!r} "
            f"(known: {', '.join(sorted(_VALUE_KEYS))})"
        )
    name = _measurement(table.get("name"), f"{where}.name")
    kind = table.get("type", "u16")
    if not isinstance(kind, str) or kind not in TYPES:
        raise DevicesError(f"{where}.type is {kind!r}; use one of {', '.join(TYPES)}")
    conversion = table.get("conversion", "raw")
    if not isinstance(conversion, str) or conversion not in CONVERSIONS:
        raise DevicesError(
            f"{where}.conversion is {conversion!r}; use one of {', '.join(CONVERSIONS)}"
        )
    clamp = table.get("clamp")
    if clamp is not None:
        if not isinstance(clamp, list) or len(clamp) != 2:
            raise DevicesError(f"{where}.clamp must be [low, high]")
        low = _number(clamp[0], f"{where}.clamp[0]")
        high = _number(clamp[1], f"{where}.clamp[1]")
        if low > high:
            raise DevicesError(f"{where}.clamp low {low} is above high {high}")
        clamp = (low, high)
    unit = table.get("unit", "")
    if not isinstance(unit, str):
        raise DevicesError(f"{where}.unit must be a string")
    invalid = _codes(table.get("invalid", []), kind, f"{where}.invalid")
    return ValueSpec(
        name=name,
        type=kind,
        conversion=conversion,
        scale=_number(table.get("scale", 1.0), f"{where}.scale"),
        offset=_number(table.get("offset", 0.0), f"{where}.offset"),
        clamp=clamp,
        field=_key(table.get("field", "value"), f"{where}.field"),
        unit=unit,
        invalid=invalid,
    )


def _profile(key: str, table: object) -> DeviceProfile:
    where = f"devices.{key}"
    device_id = int(key) if key.isascii() and key.isdigit() else -1
    if str(device_id) != key or not 0 <= device_id <= 255:
        raise DevicesError(f"{where}: a device id must be a number 0-255")
    if not isinstance(table, dict):
        raise DevicesError(f"{where} must be a table")
    unknown = sorted(set(table) - {"tags", "values", "upload_delay"})
    if unknown:
        raise DevicesError(
            f"{where} has unknown key {unknown[0]!r} (known: tags, upload_delay, values)"
        )
    tags = table.get("tags", {})
    if not isinstance(tags, dict):
        raise DevicesError(f"{where}.tags must be a table of strings")
    checked_tags = {
        _key(k, f"{where}.tags key"): _text(v, f"{where}.tags.{k}")
        for k, v in sorted(tags.items())
    }
    values = table.get("values")
    if not isinstance(values, list) or not values:
        raise DevicesError(f"{where} needs at least one [[{where}.values]] entry")
    specs = tuple(_value_spec(v, f"{where}.values[{i}]") for i, v in enumerate(values))
    names = [(spec.name, spec.field) for spec in specs]
    if len(set(names)) != len(names):
        raise DevicesError(f"{where}.values has two values with the same name and field")
    delay = _number(table.get("upload_delay", 0.0), f"{where}.upload_delay")
    if not 0 <= delay <= MAX_UPLOAD_DELAY:
        raise DevicesError(
            f"{where}.upload_delay must be 0 to {MAX_UPLOAD_DELAY:g} seconds"
        )
    return DeviceProfile(device_id, tuple(sorted(checked_tags.items())), specs, delay)


#: The largest devices file read, in bytes: 255 stations of 4 KiB each.
#: More is no fleet's description but a mistake (a log, a disk image).
MAX_DEVICES_FILE_SIZE = 1 << 20
TOO_LARGE = (
    f"larger than {MAX_DEVICES_FILE_SIZE >> 20} MiB: a devices file describes at "
    "most 255 stations; is it the right file?"
)


def parse_devices(text: str) -> Mapping[int, DeviceProfile]:
    """
    Build profiles from the text of a devices file.

    @raise DevicesError: saying what to fix.
    """
    if len(text) > MAX_DEVICES_FILE_SIZE:
        raise DevicesError(TOO_LARGE)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DevicesError(f"not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses into each nested array and table
        raise DevicesError(
            "arrays or tables nested too deeply to read: a devices file nests a "
            "few levels ([devices.N], values = [{ ... }])"
        ) from None
    unknown = sorted(set(document) - {"devices"})
    if unknown:
        raise DevicesError(f"unknown top-level key {unknown[0]!r} (expected [devices.N])")
    return profiles_from_tables(document.get("devices"))


def profiles_from_tables(devices: object) -> Mapping[int, DeviceProfile]:
    """
    Build profiles from the C{[devices.N]} tables of a TOML document already
    read: a devices file's, or a C{--config} file's.

    @raise DevicesError: saying what to fix.
    """
    if not isinstance(devices, dict) or not devices:
        raise DevicesError("no devices: add at least one [devices.N] table")
    profiles = {}
    shared: dict[ValueSpec, ValueSpec] = {}
    for key, table in devices.items():
        profile = _profile(key, table)
        # Stations described alike share their value specs, and so the codes
        # those remember (ValueSpec.convert_all).
        specs = tuple(shared.setdefault(spec, spec) for spec in profile.values)
        profiles[profile.device_id] = dataclasses.replace(profile, values=specs)
    seen: dict[tuple, int] = {}
    for profile in profiles.values():
        for spec in profile.values:
            series = (profile.tags, spec.name, spec.field)
            other = seen.setdefault(series, profile.device_id)
            if other != profile.device_id:
                raise DevicesError(
                    f"devices {other} and {profile.device_id} both write "
                    f"{spec.name!r} with the same tags: their points would "
                    "overwrite each other; give each a distinct tag such as place"
                )
    return MappingProxyType(profiles)
