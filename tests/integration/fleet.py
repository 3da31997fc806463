"""
A simulated fleet of stations for the reliability tests, and the oracle that
says which points InfluxDB must hold afterwards.

A station here does what ACK-aware firmware does, with
L{weather.tools.simulate}'s packets and connections: connect, write one whole
packet, wait (a while) for the server's acknowledgement byte, close.  Every
packet a station builds is identifiable: the light value of record C{i} of the
device's packet number C{seq} is C{seq * records + i + 1} (the light field's
raw value is its lux value), and the humidity and temperature codes are derived
from it, so every point in InfluxDB can be traced back to one packet and one
record.  Everything runs on the reactor: no threads.

The oracle (L{expected_points}, L{audit}) follows docs/protocol.md, not the server's
code: timestamps from the arrival times and the measured-or-nominal interval
rule, values from the SI7021 datasheet formulas.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.python.failure import Failure

from weather.core.packet import HEADER
from weather.tools.simulate import RECORD, Upload, build_packet, tcp_connector

LOOPBACK = "127.0.0.1"
S = 1_000_000_000
#: The reference station's measurements, in record order.
REFERENCE_NAMES = ("light", "humidity", "temperature")

# -- packets ---------------------------------------------------------------------


def lux_of(seq: int, index: int, records: int) -> int:
    """The light value of record C{index} of a device's packet number C{seq}."""
    lux = seq * records + index + 1
    if lux > 0xFFFF:
        raise ValueError(f"packet {seq} of {records} records: light {lux} overflows u16")
    return lux


def codes_of(lux: int) -> tuple[int, int]:
    """The SI7021 humidity and temperature codes sent along with C{lux}."""
    return (lux % 16384) * 4, (12000 + 7 * lux) % 16384 * 4


def record_of(lux: int, records: int) -> tuple[int, int]:
    """The packet number and record index a light value came from."""
    return divmod(lux - 1, records)


def fleet_packet(
    device_id: int,
    seq: int,
    records: int = 30,
    wake_every: int = 3600,
    measurement_every: int = 120,
) -> bytes:
    """A reference-layout packet whose every record is identifiable."""
    return build_packet(
        device_id,
        (
            (lux, *codes_of(lux))
            for lux in (lux_of(seq, i, records) for i in range(records))
        ),
        wake_every,
        measurement_every,
    )


def values_of(lux: int) -> tuple[float, float, float]:
    """What the server must store for a record: docs/protocol.md's conversions."""
    humidity, temperature = codes_of(lux)
    return (
        float(lux),
        125.0 * humidity / 65536.0 - 6.0,
        175.72 * temperature / 65536.0 - 46.85,
    )


def read_packet(data: bytes) -> tuple[int, int, int, list[int]]:
    """(device id, wakeEvery, measurementEvery, light values) of a fleet packet."""
    _, wake, every, _, device, _ = HEADER.unpack_from(data)
    lights = [lux for lux, _, _ in RECORD.iter_unpack(data[HEADER.size :])]
    return device, wake, every, lights


# -- the timing rule (docs/protocol.md), as an oracle ---------------------------------


#: How far a measured interval may be from the one computed here: the server
#: measures the spacing on the boot clock, this oracle on the stored wall-clock
#: arrivals, which two clock reads a moment apart separate by microseconds.
MEASURED_SLACK_NS = 10_000


class Rule:
    """
    docs/protocol.md's record interval, device by device in arrival order,
    for the fleet's packets (whose records never repeat: every record is
    identifiable).  Independent of weather.core.timing on purpose.
    """

    def __init__(self) -> None:
        self.previous: dict[int, int] = {}
        self.ratios: dict[int, list[float]] = defaultdict(list)

    def interval(
        self, device: int, count: int, wake_every: int, every: int, arrival: int
    ) -> tuple[int, bool]:
        """The interval of this packet's records, and whether it was measured."""
        per_upload = -(-wake_every // every)
        ratios = self.ratios[device][-5:]
        ratio = statistics.median(ratios) if ratios else 1.0
        previous, self.previous[device] = self.previous.get(device), arrival
        learned = round(every * S * ratio)
        if previous is None:
            return learned, False
        spacing = arrival - previous
        upload = per_upload * every * S * ratio
        k = round(spacing / upload) if spacing > 0 else 0
        countable = k == 1 or (k > 1 and bool(ratios))
        if not countable or 3 * abs(spacing - k * upload) >= upload:
            return learned, False
        if count > k * per_upload:  # more records than the time explains
            return learned, False
        interval = round(spacing / (k * per_upload))
        if 0.5 <= interval / (every * S) <= 1.5:
            self.ratios[device].append(interval / (every * S))
        return interval, True


Series = tuple[str, str]  # (measurement, place)
Point = tuple[int, float]  # (time_ns, value)


def expected_points(
    packets: Iterable[tuple[bytes, int]],
    places: Mapping[int, str],
    names: Mapping[int, Sequence[str]] | None = None,
) -> dict[Series, list[Point]]:
    """
    The points that C{packets} (bytes, arrival time) must become, each device
    timed from its previous packet's arrival, in arrival order.
    """
    rule = Rule()
    points: dict[Series, list[Point]] = defaultdict(list)
    for data, arrival in sorted(packets, key=lambda p: p[1]):
        device, wake, every, lights = read_packet(data)
        n = len(lights)
        step, _ = rule.interval(device, n, wake, every, arrival)
        series_names = (names or {}).get(device, REFERENCE_NAMES)
        for i, lux in enumerate(lights):
            when = arrival - (n - 1 - i) * step
            for name, value in zip(series_names, values_of(lux), strict=True):
                points[(name, places[device])].append((when, value))
    for series, found in points.items():
        times = [when for when, _ in found]
        if len(set(times)) != len(times):
            raise ValueError(f"these packets give {series} two points at one time")
    return {series: sorted(found) for series, found in points.items()}


# -- one attempt to deliver a packet ----------------------------------------------------


@dataclass(eq=False)
class Attempt:
    """One attempt of one station to deliver one packet, and how it went."""

    device_id: int
    seq: int
    data: bytes
    #: Wall-clock nanoseconds: before connecting, and once the connection ended.
    started_ns: int
    ended_ns: int = 0
    #: The TCP connection was established (the packet may have reached the server).
    connected: bool = False
    #: When the acknowledgement byte arrived, or None.
    ack_ns: int | None = None
    error: str = ""

    @property
    def acked(self) -> bool:
        return self.ack_ns is not None


def send_attempt(
    reactor,
    port: int,
    attempt: Attempt,
    ack_timeout: float = 2.0,
    connect_timeout: float = 2.0,
    split: float | None = None,
) -> Deferred[Attempt]:
    """
    Deliver C{attempt} to 127.0.0.1:C{port} as a station does (in two pieces
    C{split} seconds apart, if given: a slow link); fires (never fails) once
    it is over.
    """
    upload = Upload(
        attempt.data, reactor, 1 if split is None else 2, split or 0, ack_timeout
    )

    def connected(_: object) -> Deferred[str]:
        attempt.connected = True
        return upload.done

    def over(outcome: str | Failure) -> Attempt:
        attempt.ended_ns = time.time_ns()
        if isinstance(outcome, Failure):
            attempt.error = (
                "connection lost: " if attempt.connected else "cannot connect: "
            ) + outcome.getErrorMessage()
        elif upload.acknowledged_at is not None:
            attempt.ack_ns = round(upload.acknowledged_at * S)
        else:
            attempt.error = f"not acknowledged (waited up to {ack_timeout} s)"
        return attempt

    connecting = tcp_connector(reactor, LOOPBACK, port, connect_timeout)(upload)
    return connecting.addCallback(connected).addBoth(over)


def deliver(
    reactor, port: int, data: bytes, seq: int = 0, ack_timeout: float = 2.0
) -> Deferred[Attempt]:
    """Send one packet as a station would; fires with its L{Attempt}."""
    return send_attempt(
        reactor, port, Attempt(data[7], seq, data, time.time_ns()), ack_timeout
    )


# -- the fleet ---------------------------------------------------------------------------


class Fleet:
    """
    Stations C{device_ids}, each sending packets one after another to
    127.0.0.1:C{port} until L{stop}: a packet, then a pause drawn from
    C{pause} seconds.  A refused connection is tried again soon with the same
    packet (nothing of it was sent); a packet that was sent but not
    acknowledged counts as maybe-received and the next attempt sends a new
    packet, so every packet in InfluxDB comes from exactly one connection.
    With C{split}, each packet is written in two pieces, a time drawn from
    C{split} apart: connections stay open longer, as over a slow link.
    """

    def __init__(
        self,
        reactor,
        port: int,
        device_ids: Iterable[int],
        rng: random.Random,
        *,
        records: int = 30,
        wake_every: int = 3600,
        measurement_every: int = 120,
        pause: tuple[float, float] = (0.3, 1.2),
        retry_delay: tuple[float, float] = (0.05, 0.2),
        ack_timeout: float = 2.0,
        split: tuple[float, float] | None = None,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.device_ids = list(device_ids)
        self.random = rng
        self.records = records
        self.wake_every = wake_every
        self.measurement_every = measurement_every
        self.pause = pause
        self.retry_delay = retry_delay
        self.ack_timeout = ack_timeout
        self.split = split
        self.uploads: list[Attempt] = []
        self.stopping = False
        self._loops: list[Deferred] = []
        self._sleeps: dict[Deferred, object] = {}

    def start(self) -> None:
        for device in self.device_ids:
            self._loops.append(self._station(device))

    def stop(self) -> Deferred:
        """Stop every station after its current upload; fires once all are idle."""
        self.stopping = True
        for sleeping, call in list(self._sleeps.items()):
            call.cancel()
            del self._sleeps[sleeping]
            sleeping.callback(None)
        return gatherResults(self._loops, consumeErrors=True)

    def _sleep(self, seconds: float) -> Deferred:
        sleeping: Deferred = Deferred()

        def wake() -> None:
            del self._sleeps[sleeping]
            sleeping.callback(None)

        self._sleeps[sleeping] = self.reactor.callLater(seconds, wake)
        return sleeping

    @inlineCallbacks
    def _station(self, device: int):
        seq = 0
        while not self.stopping:
            data = fleet_packet(
                device, seq, self.records, self.wake_every, self.measurement_every
            )
            upload = Attempt(device, seq, data, time.time_ns())
            split = self.random.uniform(*self.split) if self.split else None
            yield send_attempt(
                self.reactor, self.port, upload, self.ack_timeout, split=split
            )
            self.uploads.append(upload)
            if upload.connected:
                seq += 1
                pause = self.random.uniform(*self.pause)
            else:
                pause = self.random.uniform(*self.retry_delay)
            if not self.stopping:
                yield self._sleep(pause)

    def summary(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for upload in self.uploads:
            if upload.acked:
                counts["acked"] += 1
            elif upload.connected:
                counts["sent, no ACK"] += 1
            else:
                counts["not connected"] += 1
        return counts


# -- what InfluxDB holds, against what was sent -------------------------------------------


def audit(
    stored: Mapping[str, Iterable[tuple[int, object, Mapping[str, str]]]],
    uploads: Iterable[Attempt],
    places: Mapping[int, str],
    records: int,
    slack_ns: int = 2_000,
) -> tuple[list[str], Counter[str]]:
    """
    Check the points InfluxDB holds (C{stored}: measurement -> (time, value,
    tags) as L{weather.tools.localinflux.InfluxServer.points} gives them) against
    the fleet's uploads.  Returns the problems found (empty: all is well) and
    counts.

      - every light value maps to one upload's packet and record, and appears
        once: a packet replayed with other timestamps would show twice;
      - a packet present is present whole (every record, every measurement),
        with docs/protocol.md's values;
      - its records are equally spaced and the last is stamped with its
        arrival, which lies within the upload's connection (for an
        acknowledged packet: before its ACK came back);
      - its interval is the one docs/protocol.md prescribes given the device's
        previous packet present (journaled timing state, replayed or not);
      - every acknowledged packet is present;
      - humidity and temperature hold exactly the points of the packets
        present, no other.
    """
    problems: list[str] = []
    counts: Counter[str] = Counter()
    device_of = {place: device for device, place in places.items()}
    by_packet: dict[tuple[int, int], list[Attempt]] = defaultdict(list)
    for upload in uploads:
        if upload.connected:
            by_packet[(upload.device_id, upload.seq)].append(upload)
    for key, sent in by_packet.items():
        if len(sent) > 1:
            problems.append(f"fleet bug: packet {key} sent on {len(sent)} connections")

    # Light: which packet and record each point is.
    times: dict[tuple[int, int], dict[int, list[int]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for when, value, tags in stored.get("light", ()):
        device = device_of.get(tags.get("place", ""))
        if device is None or value != int(value):
            problems.append(f"light point from nowhere: {when} {value} {tags}")
            continue
        seq, index = record_of(int(value), records)
        times[(device, seq)][index].append(when)

    present: dict[tuple[int, int], list[int]] = {}
    for key, by_index in sorted(times.items()):
        if key not in by_packet:
            problems.append(f"device {key[0]} packet {key[1]}: in InfluxDB, never sent")
            continue
        doubled = {i: t for i, t in by_index.items() if len(t) > 1}
        if doubled:
            problems.append(
                f"device {key[0]} packet {key[1]}: records stored at two different "
                f"times (replayed with other timestamps?): {sorted(doubled.items())[:3]}"
            )
            continue
        missing = sorted(set(range(records)) - set(by_index))
        if missing:
            problems.append(
                f"device {key[0]} packet {key[1]}: records {missing} missing "
                f"(only {len(by_index)} of {records} stored)"
            )
            continue
        stamps = [by_index[i][0] for i in range(records)]
        step = stamps[-1] - stamps[-2] if records > 1 else 0
        if any(stamps[i] != stamps[-1] - (records - 1 - i) * step for i in range(records)):
            problems.append(f"device {key[0]} packet {key[1]}: unevenly spaced {stamps}")
            continue
        present[key] = stamps

    # Every packet present: its arrival within its connection; every ACK honoured.
    for key, sent in by_packet.items():
        upload = sent[0]
        stamps = present.get(key)
        if stamps is None:
            if upload.acked:
                problems.append(
                    f"device {key[0]} packet {key[1]} was acknowledged but is not in "
                    "InfluxDB"
                )
                counts["acknowledged, lost"] += 1
            else:
                counts["not acknowledged, not stored"] += 1
            continue
        arrival = stamps[-1]
        latest = upload.ack_ns if upload.acked else upload.ended_ns
        if not upload.started_ns - slack_ns <= arrival <= latest + slack_ns:
            problems.append(
                f"device {key[0]} packet {key[1]}: stamped {arrival}, outside its "
                f"connection {upload.started_ns}..{latest}"
            )
        counts["acknowledged, stored" if upload.acked else "not acknowledged, stored"] += 1

    # The interval rule, device by device, from the packets present.
    rule = Rule()
    for key, stamps in sorted(present.items(), key=lambda item: item[1][-1]):
        device = key[0]
        _, wake, every, _ = read_packet(by_packet[key][0].data)
        arrival = stamps[-1]
        step = stamps[-1] - stamps[-2]
        want, measured = rule.interval(device, records, wake, every, arrival)
        if abs(step - want) > (MEASURED_SLACK_NS if measured else 0):
            problems.append(
                f"device {device} packet {key[1]}: interval {step} ns, the rule says "
                f"{want} ns"
            )
        counts["measured interval" if measured else "nominal interval"] += 1

    # Humidity and temperature: exactly the points of the packets present.
    for role, name in enumerate(REFERENCE_NAMES[1:], start=1):
        want = {
            (places[device], when, values_of(lux_of(seq, i, records))[role])
            for (device, seq), stamps in present.items()
            for i, when in enumerate(stamps)
        }
        have = [
            (tags.get("place", ""), when, value)
            for when, value, tags in stored.get(name, ())
        ]
        if len(have) != len(set(have)) or set(have) != want:
            extra = sorted(set(have) - want)[:3]
            lacking = sorted(want - set(have))[:3]
            problems.append(
                f"{name}: {len(have)} points stored, {len(want)} expected; "
                f"unexpected {extra}, missing {lacking}"
            )
    counts["packets stored"] = len(present)
    return problems, counts
