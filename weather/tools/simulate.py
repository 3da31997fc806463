"""
Simulated stations: what C{weather simulate} sends.

A simulated station behaves as the firmware does (docs/protocol.md): its ATtiny
measures every C{measurementEvery} seconds by a clock that drifts, keeps the
records in a ring of at most 58, and every C{wakeEvery} seconds the ESP
connects, writes one packet with every record held, and closes; it never reads
unless told to wait for the server's acknowledgement byte.  A failed or missed
upload keeps the records for the next one, and so does a station whose clear
command was lost: its next packet repeats them.  Readings follow a day:
temperature on a daily curve, humidity moving against it, light following the
sun, pressure with the weather, a battery charged by day; a failed sensor read
sends the codes the firmware sends then.

A station has the reference layout (light, humidity, temperature) or any
layout a devices file describes: each value gets a plausible reading of what
its name or unit says it measures (L{condition}), encoded as its profile
decodes it (L{raw_code}); a value of unknown meaning gets a mid-range code.

L{StationModel} is pure (every time is passed in); L{Simulation} drives
stations on a reactor and reports what they sent.  L{build_packet},
L{Upload} and L{send_packet} are the pieces tests and benchmarks send with.
"""

from __future__ import annotations

import math
import random
import socket
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, TextIO

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from weather.core.devices import (
    REFERENCE_STATION,
    TYPES,
    DeviceProfile,
    ValueSpec,
    stored_places,
)
from weather.core.dump import counted
from weather.core.packet import HEADER

#: The ATtiny's ring: 350 bytes hold at most 58 six-byte records.
RING_RECORDS = 58
RECORD = struct.Struct("<HHH")
#: The server's acknowledgement byte (written once a packet is durable).
ACK = b"\x06"
#: The reference firmware's C{wakeEvery} and C{measurementEvery}, in seconds.
WAKE_EVERY = 3600
MEASURE_EVERY = 120
#: Seconds between the TCP segments of a packet written in several.
SEGMENT_DELAY = 0.05
#: What a failed SI7021 read gives, in humidity and temperature.
SI7021_FAILED = 0xFFFC
#: Every value of a record cut short on the I2C bus (all 0xFF bytes).
CUT_SHORT = 0xFFFF


def build_packet(
    device_id: int,
    records: Iterable[tuple[int, int, int]],
    wake_every: int = WAKE_EVERY,
    measure_every: int = MEASURE_EVERY,
) -> bytes:
    """
    The packet a reference station writes: the header, then each record of
    (light, humidity code, temperature code).
    """
    body = b"".join(RECORD.pack(*record) for record in records)
    return (
        HEADER.pack(len(body), wake_every, measure_every, RECORD.size, device_id, 3) + body
    )


def humidity_code(percent: float) -> int:
    """The SI7021 code (two low bits clear) that reads back as C{percent}."""
    return _code((percent + 6.0) * 65536.0 / 125.0)


def temperature_code(celsius: float) -> int:
    """The SI7021 code (two low bits clear) that reads back as C{celsius}."""
    return _code((celsius + 46.85) * 65536.0 / 175.72)


def _code(value: float) -> int:
    return min(max(int(round(value)), 0), 0xFFFF) & 0xFFFC


#: What a value measures, by unit (lower case): the condition, and the
#: factor and shift from the condition's unit (°C, %, hPa, lx, V) to this one.
UNITS: Mapping[str, tuple[str, float, float]] = MappingProxyType(
    {
        "°c": ("temperature", 1.0, 0.0),
        "c": ("temperature", 1.0, 0.0),
        "degc": ("temperature", 1.0, 0.0),
        "°f": ("temperature", 1.8, 32.0),
        "f": ("temperature", 1.8, 32.0),
        "k": ("temperature", 1.0, 273.15),
        "%": ("humidity", 1.0, 0.0),
        "%rh": ("humidity", 1.0, 0.0),
        "hpa": ("pressure", 1.0, 0.0),
        "mbar": ("pressure", 1.0, 0.0),
        "pa": ("pressure", 100.0, 0.0),
        "kpa": ("pressure", 0.1, 0.0),
        "lx": ("light", 1.0, 0.0),
        "lux": ("light", 1.0, 0.0),
        "v": ("voltage", 1.0, 0.0),
        "mv": ("voltage", 1000.0, 0.0),
    }
)
#: What a value measures, by a word in its name (when its unit says nothing).
NAMES = (
    ("temp", "temperature"),
    ("humid", "humidity"),
    ("press", "pressure"),
    ("baro", "pressure"),
    ("light", "light"),
    ("lux", "light"),
    ("illum", "light"),
    ("volt", "voltage"),
    ("batt", "voltage"),
    ("vcc", "voltage"),
)


def condition(spec: ValueSpec) -> tuple[str, float, float] | None:
    """
    What C{spec} measures, by its unit, else by its name: the condition
    (one of L{StationModel.conditions}'s) and the factor and shift to its
    unit; None if neither says.
    """
    known = UNITS.get(spec.unit.strip().lower())
    if known is not None:
        return known
    name = spec.name.lower()
    for word, measured in NAMES:
        if word in name:
            return measured, 1.0, 0.0
    return None


def reading(spec: ValueSpec, weather: Mapping[str, float]) -> float | None:
    """What C{spec} reads in this C{weather}, in its unit; None: it is not known."""
    measured = condition(spec)
    if measured is None:
        return None
    name, factor, shift = measured
    return weather[name] * factor + shift


def failure_code(spec: ValueSpec) -> float | None:
    """
    What C{spec} sends for a failed sensor read: its lowest code that is not
    a reading, other than all 0xFF (a record cut short); None: it has none.
    """
    return min((c for c in spec.invalid if c != _all_ones(spec)), default=None)


def _limits(spec: ValueSpec) -> tuple[float, float]:
    """The lowest and highest raw value of C{spec}'s wire type."""
    if spec.type == "f32":
        return -3.4e38, 3.4e38
    size = struct.calcsize(TYPES[spec.type])
    if TYPES[spec.type].islower():  # signed
        return -(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1
    return 0, (1 << (8 * size)) - 1


def _all_ones(spec: ValueSpec) -> float:
    """The raw value of C{spec} whose bytes are all 0xFF (a record cut short)."""
    layout = struct.Struct("<" + TYPES[spec.type])
    return layout.unpack(b"\xff" * layout.size)[0]


def raw_code(spec: ValueSpec, value: float | None) -> float:
    """
    The raw value a station sends for C{value} (in C{spec}'s unit), so that
    C{spec} decodes it to about C{value}: the conversion undone, rounded to
    the wire type and kept within it (an SI7021 code with its two low bits
    clear) and clear of the codes that are not readings.  None: a mid-range
    raw value (0 for signed types).
    """
    low, high = _limits(spec)
    si7021 = spec.conversion.startswith("si7021")
    if value is None or spec.scale == 0:
        x = 0.0 if low < 0 else (high + 1) / 2
    else:
        if spec.clamp is not None:
            value = min(max(value, spec.clamp[0]), spec.clamp[1])
        x = (value - spec.offset) / spec.scale
        if spec.conversion == "si7021_humidity":
            x = (x + 6.0) * 65536.0 / 125.0
        elif spec.conversion == "si7021_temperature":
            x = (x + 46.85) * 65536.0 / 175.72
    x = min(max(x, low), high)
    if spec.type == "f32":
        return x
    code = int(round(x))
    if si7021:
        code &= ~3
    # Away from the codes that are not readings, towards the middle.
    step = (4 if si7021 else 1) * (-1 if code > (low + high) / 2 else 1)
    for _ in range(len(spec.invalid)):
        if code not in spec.invalid:
            break
        code += step
    return code


@dataclass(frozen=True)
class Record:
    """One measurement: when it was really taken, and what the station sends."""

    time: float
    #: The record's bytes, as the station sends them.
    data: bytes
    profile: DeviceProfile = field(default=REFERENCE_STATION, compare=False, repr=False)

    @property
    def fields(self) -> tuple[float, ...]:
        """The raw values, in the profile's order."""
        return self.profile.record.unpack(self.data)

    @property
    def values(self) -> list[float]:
        """The values as the server decodes them (NaN: a code that is no reading)."""
        specs = self.profile.values
        return [spec.convert(raw) for spec, raw in zip(specs, self.fields, strict=True)]

    def describe(self) -> str:
        """The readings as the simulator prints them; a code that is no reading says so."""
        if self.data == b"\xff" * len(self.data):
            return "cut short on the I2C bus (all 0xFF)"
        shown = []
        for spec, raw, value in zip(
            self.profile.values, self.fields, self.values, strict=True
        ):
            if raw in spec.invalid:
                shown.append(f"{spec.name} failed")
                continue
            places = stored_places(spec)
            if places is None:
                plain = spec.conversion == "raw" and spec.type != "f32"
                places = 0 if plain else 2
            unit = f" {spec.unit}" if spec.unit else ""
            shown.append(f"{spec.name} {value:.{places}f}{unit}")
        return "  ".join(shown)


@dataclass
class StationModel:
    """
    One simulated station, of the reference layout unless C{profile} says
    another.  C{drift} is how much slower (+) or faster (-) its clock runs
    than real time, as a fraction (0.02: 2 % slow: a clock ratio of 1.02).
    Each record is, with probability C{sensor_failures}, a failure: half of
    them a failed sensor read (each value with a code that is not a reading,
    other than all 0xFF, sends the lowest: the reference's SI7021 0xFFFC in
    humidity and temperature), half a record cut short on the I2C bus (every
    byte 0xFF: 0xFFFF in every value of the reference layout).
    """

    device_id: int
    wake_every: int = WAKE_EVERY
    measure_every: int = MEASURE_EVERY
    drift: float = 0.0
    #: Hours to add to UTC for the station's solar time (the sun's noon at 12).
    solar_offset: float = 0.0
    seed: int = 0
    sensor_failures: float = 0.0
    #: What its records hold (its device id is C{device_id}, not the profile's).
    profile: DeviceProfile = REFERENCE_STATION
    #: Records measured and not yet deleted, oldest first.
    held: list[Record] = field(default_factory=list)
    #: How many of the oldest held records were sent already (a clear command
    #: was lost): the next packet repeats them.
    sent: int = 0
    #: Records the ring dropped before they were ever sent.
    dropped: int = 0
    #: When the last record was measured (None before the first wake).
    last_measured: float | None = None
    _random: random.Random = field(init=False, repr=False)
    _clouds: float = field(init=False, repr=False)
    _weather: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.measure_every <= 0 or self.wake_every % self.measure_every:
            raise ValueError(
                f"wake every {self.wake_every} s is not a whole number of "
                f"measurements every {self.measure_every} s"
            )
        if self.wake_every // self.measure_every > RING_RECORDS:
            raise ValueError(
                f"{self.wake_every // self.measure_every} records per upload: the "
                f"station's ring holds {RING_RECORDS}"
            )
        self._random = random.Random(self.seed * 257 + self.device_id)
        self._clouds = self._random.uniform(0.3, 1.0)
        self._weather = self._random.uniform(-3.0, 3.0)

    @property
    def records_per_upload(self) -> int:
        return self.wake_every // self.measure_every

    @property
    def true_measure_every(self) -> float:
        """Real seconds between two records."""
        return self.measure_every * (1.0 + self.drift)

    @property
    def true_wake_every(self) -> float:
        return self.wake_every * (1.0 + self.drift)

    def conditions(self, t: float) -> dict[str, float]:
        """
        The weather at time C{t}: light (lx), relative humidity (%),
        temperature (°C), pressure (hPa) and the battery's voltage (V).
        """
        # Slow random walks: clouds and a warm or cold spell.
        self._clouds = min(max(self._clouds + self._random.gauss(0, 0.05), 0.15), 1.0)
        self._weather = min(max(self._weather + self._random.gauss(0, 0.05), -6), 6)
        hour = (t / 3600.0 + self.solar_offset) % 24.0
        # Coolest before dawn (about 4 h), warmest mid-afternoon (about 15 h).
        temperature = 11.0 + self._weather + 6.0 * math.cos(2 * math.pi * (hour - 15) / 24)
        humidity = 68.0 - 3.5 * (temperature - 11.0) + self._random.gauss(0, 0.8)
        sun = math.sin(math.pi * (hour - 6.0) / 12.0) if 6.0 < hour < 18.0 else 0.0
        light = 60000.0 * sun**1.5 * self._clouds
        return {
            "light": light * (1.0 + self._random.gauss(0, 0.02)),
            "humidity": min(max(humidity, 5.0), 99.0),
            "temperature": temperature + self._random.gauss(0, 0.05),
            # Low in a warm spell, high in a cold one, with the twice-daily tide.
            "pressure": 1013.0
            - 2.0 * self._weather
            + 0.6 * math.cos(2 * math.pi * (hour - 10) / 12),
            # A lithium cell, charged by the sun through the clouds.
            "voltage": 3.75 + 0.35 * sun * self._clouds,
        }

    def measure(self, t: float) -> Record:
        weather = self.conditions(t)
        specs = self.profile.values
        raws = [raw_code(spec, reading(spec, weather)) for spec in specs]
        if self.sensor_failures and self._random.random() < self.sensor_failures:
            failed = [failure_code(spec) for spec in specs]
            if self._random.random() < 0.5 and any(c is not None for c in failed):
                raws = [r if c is None else c for r, c in zip(raws, failed, strict=True)]
            else:
                return Record(t, b"\xff" * self.profile.record_size, self.profile)
        return Record(t, self.profile.record.pack(*raws), self.profile)

    def wake(self, now: float) -> list[Record]:
        """
        The ESP wakes at C{now}, right after a measurement: take the records
        measured since the last wake (the first wake covers one upload's
        worth before it) and return everything held, oldest first.
        """
        step = self.true_measure_every
        count = self.records_per_upload
        if self.last_measured is not None:
            # Every measurement since the last one, up to now.
            count = max(0, int(round((now - self.last_measured) / step)))
        for i in range(count - 1, -1, -1):
            self.held.append(self.measure(now - i * step))
        if count:
            self.last_measured = now
        if len(self.held) > RING_RECORDS:
            gone = len(self.held) - RING_RECORDS
            self.dropped += max(0, gone - self.sent)
            self.sent = max(0, self.sent - gone)
            del self.held[:-RING_RECORDS]
        return list(self.held)

    def packet(self, records: Sequence[Record]) -> bytes:
        """The packet the firmware writes for C{records}."""
        body = b"".join(r.data for r in records)
        profile = self.profile
        return (
            HEADER.pack(
                len(body),
                self.wake_every,
                self.measure_every,
                profile.record_size,
                self.device_id,
                len(profile.values),
            )
            + body
        )

    def delivered(self, records: Sequence[Record]) -> None:
        """The TCP write returned: the station forgets these records."""
        sent = {id(r) for r in records}
        self.held = [r for r in self.held if id(r) not in sent]
        self.sent = 0

    def clear_lost(self, records: Sequence[Record]) -> None:
        """
        The TCP write returned but the clear command was lost (the ATtiny
        gave up on the ESP): the station keeps these records and sends them
        again with the next packet.
        """
        self.sent = len(records)


class Upload(Protocol):
    """
    The ESP's connection: write the packet in C{segments} equal pieces (or cut
    at the given offsets), C{delay} seconds apart, then close, or first wait up
    to C{ack_timeout} seconds for the acknowledgement byte.  C{done} fires with
    C{"sent"}, C{"acknowledged"} or C{"not acknowledged"}, or fails if the
    connection broke mid-write.  C{acknowledged_at} is when the byte came.
    """

    def __init__(
        self,
        packet: bytes,
        clock: IReactorTime,
        segments: int | Sequence[int] = 1,
        delay: float = SEGMENT_DELAY,
        ack_timeout: float | None = None,
    ) -> None:
        if isinstance(segments, int):
            size = -(-len(packet) // max(1, min(segments, len(packet))))
            segments = range(size, len(packet), size)
        bounds = [0, *segments, len(packet)]
        self.pieces = [packet[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        self.clock = clock
        self.delay = delay
        self.ack_timeout = ack_timeout
        self.done: Deferred[str] = Deferred()
        self.written = False
        self.acknowledged_at: float | None = None
        self._timeout: Any = None
        self._next_piece: Any = None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    def connectionMade(self) -> None:
        if len(self.pieces) > 1:
            self.transport.setTcpNoDelay(True)
        self._write(self.pieces)

    def _write(self, pieces: list[bytes]) -> None:
        if not self.transport.connected:
            return
        self.transport.write(pieces[0])
        if len(pieces) > 1:
            self._next_piece = self.clock.callLater(self.delay, self._write, pieces[1:])
            return
        self.written = True
        if self.ack_timeout is None:
            self.transport.loseConnection()
        else:
            self._timeout = self.clock.callLater(
                self.ack_timeout, self.transport.loseConnection
            )

    def dataReceived(self, data: bytes) -> None:
        if ACK in data and not self.acknowledged:
            self.acknowledged_at = self.clock.seconds()
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for call in (self._timeout, self._next_piece):
            if call is not None and call.active():
                call.cancel()
        if not self.written:
            self.done.errback(reason)
        elif self.ack_timeout is None:
            self.done.callback("sent")
        else:
            self.done.callback("acknowledged" if self.acknowledged else "not acknowledged")


def send_packet(host: str, port: int, packet: bytes, timeout: float = 10.0) -> bytes:
    """
    Blocking, for scripts and process tests that run no reactor: connect,
    write C{packet} as a station does, and return what the server answers
    (the acknowledgement byte once the packet is durable; C{b""} if it closes).
    """
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(packet)
        return connection.recv(16)


def utc(t: float, with_date: bool = False) -> str:
    """A true time as the simulator prints it (UTC, to the millisecond)."""
    moment = datetime.fromtimestamp(t, timezone.utc)
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f" if with_date else "%H:%M:%S.%f")
    return text[:-3]


@dataclass
class Totals:
    """What a simulation did, for its summary line."""

    packets: int = 0
    #: Records sent, repeats not counted.
    records: int = 0
    #: Records sent again because a clear command was lost.
    repeated: int = 0
    acknowledged: int = 0
    failed: int = 0
    missed: int = 0
    clears_lost: int = 0


@dataclass(eq=False)
class Simulation:
    """
    Run stations on a reactor: each wakes C{packets} times (the first at
    once, or spread over C{spread} seconds), C{true_wake_every} apart, and
    prints every upload and, unless C{quiet}, every reading with its true time.
    A wake is skipped as a missed upload with probability C{miss}; such wakes
    come on top of the C{packets} uploads.  The clear command after an
    upload is lost with probability C{lose_clear}: the next packet repeats
    the records (printed once, when first sent).  Each upload is written in
    C{segments} pieces C{segment_delay} apart and, with an C{ack_timeout},
    waits that long for the acknowledgement.

    The defaults here are C{weather simulate}'s.
    """

    reactor: Any
    connect: Callable[[Upload], Deferred]
    stations: Sequence[StationModel]
    packets: int
    out: TextIO
    miss: float = 0.0
    lose_clear: float = 0.0
    segments: int = 1
    segment_delay: float = SEGMENT_DELAY
    ack_timeout: float | None = None
    spread: float = 0.0
    quiet: bool = False
    seed: int = 0
    totals: Totals = field(init=False, default_factory=Totals)
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def run(self) -> Deferred[Totals]:
        """Fires with the totals once every station made its uploads."""
        runs = []
        for station in self.stations:
            finished: Deferred[None] = Deferred()
            first = self._random.uniform(0, self.spread) if self.spread > 0 else 0
            self.reactor.callLater(first, self._wake, station, self.packets, finished)
            runs.append(finished)
        return gatherResults(runs).addCallback(lambda _: self.totals)

    def _wake(
        self,
        station: StationModel,
        left: int,
        finished: Deferred,
        scheduled: float | None = None,
    ) -> None:
        # The station's own schedule, not when the reactor got round to it:
        # lateness must not add up over many wakes.
        now = self.reactor.seconds() if scheduled is None else scheduled
        records = station.wake(now)
        if self.miss > 0 and self._random.random() < self.miss:
            self.totals.missed += 1
            self._print(
                f"station {station.device_id}: {utc(now, True)} missed upload "
                f"(holds {counted(len(records), 'record')})"
            )
            self._next(station, left, finished, now)
            return
        packet = station.packet(records)
        upload = Upload(
            packet, self.reactor, self.segments, self.segment_delay, self.ack_timeout
        )
        connecting = self.connect(upload)
        connecting.addCallback(lambda _: upload.done)
        connecting.addCallbacks(
            self._sent,
            self._failed,
            callbackArgs=(station, records, len(packet), now),
            errbackArgs=(station, records, now),
        )
        connecting.addBoth(lambda _: self._next(station, left - 1, finished, now))

    def _next(
        self, station: StationModel, left: int, finished: Deferred, woke: float
    ) -> None:
        if left <= 0:
            finished.callback(None)
            return
        # The next wake is one upload interval (by the station's clock) after
        # this one, however long the connection took.
        wake = woke + station.true_wake_every
        delay = max(0.0, wake - self.reactor.seconds())
        self.reactor.callLater(delay, self._wake, station, left, finished, wake)

    def _sent(
        self,
        outcome: str,
        station: StationModel,
        records: list[Record],
        size: int,
        woke: float,
    ) -> None:
        repeated = station.sent
        lost = self.lose_clear > 0 and self._random.random() < self.lose_clear
        if lost:
            station.clear_lost(records)
            self.totals.clears_lost += 1
        else:
            station.delivered(records)
        self.totals.packets += 1
        self.totals.records += len(records) - repeated
        self.totals.repeated += repeated
        if outcome == "acknowledged":
            self.totals.acknowledged += 1
        self._print(
            f"station {station.device_id}: {utc(woke, True)} "
            + counted(len(records), "record")
            + (f" ({repeated} repeated)" if repeated else "")
            + f", {size} bytes: {outcome}"
            + ("; clear command lost: keeps them" if lost else "")
        )
        if not self.quiet:
            for r in records[repeated:]:
                self._print(f"  {utc(r.time)}  {r.describe()}")

    def _failed(
        self, failure: Failure, station: StationModel, records: list[Record], woke: float
    ) -> None:
        self.totals.failed += 1
        self._print(
            f"station {station.device_id}: {utc(woke, True)} upload failed "
            f"({failure.getErrorMessage()}): keeps {counted(len(records), 'record')}"
        )

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def tcp_connector(reactor: Any, host: str, port: int, timeout: float = 10.0):
    """Connect an L{Upload} to C{host}:C{port} over TCP (IPv4, IPv6 or a name)."""

    def connect(upload: Upload) -> Deferred:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
        return connectProtocol(endpoint, upload)

    return connect


#: Device 1 is the reference station the server knows without a devices file:
#: described with its tags, it stays the same station, one series.
REFERENCE_PLACES: Mapping[int, str] = MappingProxyType(
    {REFERENCE_STATION.device_id: dict(REFERENCE_STATION.tags)["place"]}
)


def devices_toml(device_ids: Iterable[int], places: Mapping[int, str] | None = None) -> str:
    """
    A devices file describing stations of the reference layout (with its
    codes that are not readings), each with a place tag: its name in
    C{places}, else "station-N".  L{REFERENCE_PLACES} names device 1 as the
    server does without a devices file.
    """
    places = places or {}
    stations = [(device, places.get(device, f"station-{device}")) for device in device_ids]
    failed = "invalid = [0xFFFC, 0xFFFF]"
    return "".join(
        f"""[devices.{device}]
tags = {{ place = "{place}" }}
values = [
  {{ name = "light", unit = "lx", invalid = [0xFFFF] }},
  {{ name = "humidity", conversion = "si7021_humidity", unit = "%", {failed} }},
  {{ name = "temperature", conversion = "si7021_temperature", unit = "°C", {failed} }},
]

"""
        for device, place in stations
    )
