"""
Tests for L{weather.core.timing}: the timestamp rule (docs/protocol.md,
"Timestamps"), against a model of a station that behaves as the firmware does,
and on its edge cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, reject, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from weather.core.packet import Header
from weather.core.timing import (
    NANOSECONDS,
    PLAUSIBLE_RATIO,
    RATIOS_KEPT,
    StationState,
    Timing,
    TimingInputs,
    first_state,
    learned_ratio,
    time_records,
)

S = NANOSECONDS
T = 1_700_000_000 * S  # a wall-clock time
#: The firmware's RAM ring: 350 bytes.
RING_BYTES = 350
#: Rounding slack of a stamp: nanosecond rounding of intervals and true times.
SLACK = 1_000


def header(count: int, wake: int = 3600, every: int = 120, size: int = 6) -> Header:
    return Header(count * size, wake, every, size, 1, 1)


def body(first: int, count: int, size: int = 6) -> bytes:
    """C{count} records that all differ, numbered from C{first}."""
    return b"".join(i.to_bytes(size, "little") for i in range(first, first + count))


# The station model.


@dataclass(frozen=True)
class Config:
    """
    A station's settings and its network: C{jitter} seconds between its newest
    record and the packet's arrival.
    """

    every: int
    wake: int
    size: int
    jitter: tuple[float, float]

    @property
    def per_upload(self) -> int:
        return -(-self.wake // self.every)

    @property
    def spread_ns(self) -> int:
        return round((self.jitter[1] - self.jitter[0]) * S)


#: Wi-Fi stations (0.5 to 3 s from the newest record to the arrival): the
#: reference one, other periods, and a wakeEvery that is not a multiple of
#: measurementEvery (R = 515 records, more than the ring holds).  Fast ones
#: (1 s records, 10 s uploads: simulators, test stations) on a local network.
CONFIGS = [
    Config(120, 3600, 6, (0.5, 3.0)),
    Config(60, 600, 6, (0.5, 3.0)),
    Config(300, 3600, 8, (0.5, 3.0)),
    Config(7, 3600, 6, (0.5, 3.0)),
    Config(1, 10, 6, (0.05, 0.2)),
    Config(3, 10, 4, (0.05, 0.2)),
]

#: What becomes of one of the station's uploads.
OK = "ok"
MISSED = "missed"  # the connection failed: the station keeps its records
CLEAR_LOST = "clear lost"  # the packet arrived, the station keeps its records
DROPPED = "dropped"  # the station cleared its records, the server never got them
OUTCOMES = [OK] * 5 + [MISSED, MISSED, CLEAR_LOST, CLEAR_LOST, DROPPED]

#: What happens to the server before a packet.
NOTHING = "nothing"
RESTART = "restart"  # the server restarts: its state is in the journal
REBOOT = "reboot"  # the machine reboots: a new boot clock
NEW_JOURNAL = "new journal"  # the server's state is lost
CLOCK_STEP = "clock step"  # the wall clock steps (the boot clock does not)
#: The station restarts (a battery change): its ring is empty and its uploads
#: shift by 0.4 to 0.6 of a period, a gap the rule can tell from an upload's.
STATION_RESTART = "station restart"
EVENTS = [NOTHING] * 6 + [RESTART, REBOOT, NEW_JOURNAL, CLOCK_STEP, STATION_RESTART]


@dataclass(frozen=True)
class Upload:
    outcome: str
    jitter: float  # 0..1 of the config's jitter range
    event: str
    step_s: int


@dataclass
class Record:
    number: int
    true_ns: int
    data: bytes


@dataclass
class Station:
    """A station as PROTOCOL.md describes it: no clock, a ring, one packet per wake."""

    config: Config
    ratio: float
    alphabet: int
    start_ns: int = T
    taken: int = 0
    ring: list[Record] = field(default_factory=list)

    def record_ns(self, number: int) -> int:
        return self.start_ns + round(number * self.config.every * self.ratio * S)

    def measure(self) -> None:
        """Take the records of one upload period, the ring dropping the oldest."""
        capacity = RING_BYTES // self.config.size
        for _ in range(self.config.per_upload):
            value = (self.taken * 7919) % self.alphabet
            data = value.to_bytes(self.config.size, "little")
            self.ring.append(Record(self.taken, self.record_ns(self.taken), data))
            self.taken += 1
        del self.ring[:-capacity]


@dataclass
class Server:
    """
    The server's side, as the journal drives the rule: inputs from the
    station's state, the timing, then the state after it.
    """

    state: StationState | None = None
    boot_id: str = "boot-0"
    boot_start_ns: int = T - 1000 * S
    wall_offset_ns: int = 0

    def receive(self, head: Header, records: bytes, true_ns: int) -> tuple[Timing, int]:
        """Time a packet that arrives at C{true_ns}; return its timing and wall arrival."""
        arrival = true_ns + self.wall_offset_ns
        boot = true_ns - self.boot_start_ns
        if self.state is None:
            inputs = TimingInputs()
        else:
            inputs = self.state.inputs(arrival, boot, self.boot_id)
        timing = time_records(head, records, arrival, inputs)
        assert time_records(head, records, arrival, inputs) == timing, "not deterministic"
        if self.state is None:
            self.state = first_state(records, arrival, boot, self.boot_id)
        else:
            self.state = self.state.after(timing, records, arrival, boot, self.boot_id)
        return timing, arrival


class Ambiguous(Exception):
    """
    A gap the rule cannot count before a station's ratio is learned (see
    L{ambiguous}), or one after the station restarted: such examples are
    left out of the model.
    """


def ambiguous(config: Config, ratio: float, uploads: int) -> bool:
    """
    Whether C{uploads} uploads of a station could pass for another count when
    its ratio is taken as nominal: the rule accepts a count within a third of
    an upload, so C{k} uploads of a station off by C{|r - 1|} look like
    C{k - 1} or C{k + 1} once C{k |r - 1|} plus the jitter exceeds two thirds
    (three uploads of a station 25 % slow take as long as two of one 12.5 %
    fast).  Only a learned ratio can tell them apart.
    """
    upload = config.per_upload * config.every
    return uploads * abs(ratio - 1) + config.spread_ns / S / upload >= 2 / 3


def run_station(
    config: Config, ratio: float, alphabet: int, uploads: list[Upload]
) -> list[Timing]:
    """
    Drive a station and the server through C{uploads}, checking each packet's
    timing against what the model knows of it.

    The stamp error of record C{i} (counting back from the newest, which is
    stamped with the arrival) is C{jitter + i * (true interval - interval
    used)}.  The bounds, with C{J} the jitter range, C{s} its spread, C{R}
    records per upload, C{M} measurementEvery and C{r} the true ratio:

      - measured over C{k} uploads (which must be the true C{k}): the
        interval is off by C{(j_now - j_prev) / (k R)} and C{i < k R}, so the
        error lies between the two packets' jitters: within C{J};
      - not measured, a ratio learned: each learned ratio was measured, so
        its interval is off by at most C{s / R}: C{|error| <= J_max + i s / R};
      - not measured, nothing learned: the nominal interval, C{|error| <=
        J_max + i M |r - 1|}.  Nothing better is knowable.

    Each record is stamped once per journal, with one exception the rule
    cannot avoid: before a ratio is learned, a packet that spans two or more
    uploads of a station far from nominal (or more than two of any station)
    is not measured, so the records it repeats are not recognised.

    A station restart shifts its uploads by 0.4 to 0.6 of one, which the
    rule sees as an irregular gap; but after missed uploads, a ratio learned
    within the jitter can make the gap pass for a whole number of uploads.
    No rule can tell: it is measured, the ratio learned from it is off by
    more than the jitter, and the run ends there (the bounds no longer hold).

    A single upload's gap that no rule could count without a learned ratio
    (a station far off nominal on a fast network) raises L{Ambiguous}; gaps
    of several uploads are not counted until a ratio is learned
    (L{UnlearnedRatioTests}).
    """
    station = Station(config, ratio, alphabet)
    server = Server()
    packets: list[Timing] = []
    stamped: set[int] = set()  # records stamped since the journal began
    previous_newest: int | None = None  # the newest record of the last packet timed
    previous_arrival = 0  # when it arrived, on the model's own (true) clock
    jitter_lo, jitter_hi = (round(j * S) for j in config.jitter)
    per_upload = config.per_upload
    nominal = config.every * S
    true_interval = config.every * ratio * S
    boots = 0
    # Across a reboot only the wall clock spans two packets: it does not step
    # in between in this model (a clock that cannot be trusted is not this
    # rule's concern).
    rebooted = stepped = restarted = False
    for upload in uploads:
        if upload.event == STATION_RESTART and not restarted:
            restarted = True
            station.ring.clear()
            period = per_upload * config.every * ratio * S
            station.start_ns += round((0.4 + 0.2 * upload.jitter) * period)
        station.measure()
        if upload.event == RESTART:
            server = Server(
                server.state, server.boot_id, server.boot_start_ns, server.wall_offset_ns
            )
        elif upload.event == REBOOT and not stepped:
            rebooted = True
            boots += 1
            server.boot_id = f"boot-{boots}"
            server.boot_start_ns = station.record_ns(station.taken - 1) - 60 * S
        elif upload.event == NEW_JOURNAL:
            server = Server(
                None, server.boot_id, server.boot_start_ns, server.wall_offset_ns
            )
            stamped.clear()
            previous_newest = None
        elif upload.event == CLOCK_STEP and not rebooted:
            stepped = True
            server.wall_offset_ns += upload.step_s * S
        if upload.outcome == MISSED:
            continue
        sent = list(station.ring)
        if upload.outcome != CLEAR_LOST:
            station.ring.clear()
        if upload.outcome == DROPPED:
            continue
        jitter = jitter_lo + round(upload.jitter * (jitter_hi - jitter_lo))
        newest = sent[-1]
        ratios = server.state.ratios if server.state is not None else ()
        head = Header(len(sent) * config.size, config.wake, config.every, config.size, 1, 1)
        timing, arrival = server.receive(
            head, b"".join(r.data for r in sent), newest.true_ns + jitter
        )
        packets.append(timing)
        assert len(timing.times) == len(sent) - timing.first, timing
        unrecognised = False
        #: A restart that looks like a regular gap (see below): measured.
        coincidence = False
        if previous_newest is None:
            assert not timing.measured, timing
        else:
            uploads_true, rest = divmod(newest.number - previous_newest, per_upload)
            assert rest == 0
            repeated = sum(r.number <= previous_newest for r in sent)
            one_ambiguous = uploads_true == 1 and ambiguous(config, ratio, 1)
            if not ratios and (restarted or one_ambiguous):
                raise Ambiguous(uploads_true)
            if restarted:
                # The restart shifts the station's uploads by 0.4 to 0.6 of
                # one, which the rule sees as an irregular gap, unless the
                # spacing, counted in uploads of the learned ratio, falls
                # within a third of a whole number: after several missed
                # uploads a ratio learned within the jitter is enough.  No
                # rule can tell that from a regular gap; it is measured.
                upload = per_upload * config.every * learned_ratio(ratios) * S
                spacing = newest.true_ns + jitter - previous_arrival
                k = round(spacing / upload)
                coincidence = k >= 1 and abs(spacing - k * upload) < upload / 3
                assert timing.measured == coincidence, (spacing, upload, timing)
            elif ratios or uploads_true == 1:
                # The ratio is known well enough to count the uploads.
                assert timing.measured, (uploads_true, timing)
            else:
                # Several uploads and no learned ratio: the rule refuses to
                # count them (L{UnlearnedRatioTests}).
                assert not timing.measured, (uploads_true, timing)
            if timing.measured and not coincidence:
                assert timing.uploads == uploads_true, (uploads_true, timing)
                assert (timing.first, timing.repeated) == (repeated, repeated), timing
                taken = newest.number - previous_newest
                assert timing.lost == taken - (len(sent) - repeated), timing
            else:
                unrecognised = not ratios and uploads_true >= 2
        if not timing.measured:
            assert timing.interval_ns == round(nominal * learned_ratio(ratios)), timing
            assert (timing.first, timing.repeated, timing.lost) == (0, 0, 0), timing
        for back, (record, time) in enumerate(
            zip(reversed(sent), reversed(timing.times), strict=False)
        ):
            error = time - (record.true_ns + server.wall_offset_ns)
            if coincidence:
                pass  # timed over uploads the station did not make whole
            elif timing.measured:
                low, high = jitter_lo, jitter_hi
            elif ratios:
                high = jitter_hi + back * config.spread_ns // per_upload
                low = -high
            else:
                high = jitter_hi + round(back * abs(true_interval - nominal))
                low = -high
            assert coincidence or low - SLACK <= error <= high + SLACK, (
                back,
                error,
                low,
                high,
                timing,
            )
            assert unrecognised or record.number not in stamped, (record.number, timing)
            stamped.add(record.number)
        if coincidence:
            # Its interval, learned as a ratio, is off by more than the
            # jitter: the bounds above assume learned ratios within it, so
            # the run ends here.
            return packets
        previous_newest = newest.number
        previous_arrival = newest.true_ns + jitter
        rebooted = stepped = restarted = False
    return packets


configs = st.sampled_from(CONFIGS)
ratios = st.floats(0.75, 1.25)
alphabets = st.sampled_from([1, 2, 3, 256, 65536])
uploads = st.builds(
    Upload,
    st.sampled_from(OUTCOMES),
    st.floats(0, 1),
    st.sampled_from(EVENTS),
    st.integers(-7200, 7200),
)


class StationModelMixin:
    """The properties of the rule against the station model."""

    def checkStation(
        self, config: Config, ratio: float, alphabet: int, steps: list[Upload]
    ) -> None:
        try:
            run_station(config, ratio, alphabet, steps)
        except Ambiguous:
            reject()


class StationModelTests(SynchronousTestCase, StationModelMixin):
    """
    The rule stamps a modelled station's records close to when they were
    taken, each once, whatever happens to its uploads and to the server.
    """

    @settings(max_examples=300, deadline=None)
    @given(configs, ratios, alphabets, st.lists(uploads, max_size=16))
    def test_station(self, config, ratio, alphabet, steps) -> None:
        self.checkStation(config, ratio, alphabet, steps)

    def test_referenceStationMissesAndRepeats(self) -> None:
        """
        A reference station 7 % slow that misses an upload and then loses a
        clear command: every record within the jitter, none twice.
        """
        config = CONFIGS[0]
        steps = [Upload(OK, 0.5, NOTHING, 0)] * 3 + [
            Upload(MISSED, 0.5, NOTHING, 0),
            Upload(OK, 0.0, NOTHING, 0),
            Upload(CLEAR_LOST, 1.0, NOTHING, 0),
            Upload(OK, 0.2, RESTART, 0),
            Upload(OK, 0.9, REBOOT, 0),
        ]
        run = run_station(config, 1.07, 256, steps)
        self.assertEqual(
            [(t.uploads, t.repeated, t.lost) for t in run],
            [(0, 0, 0), (1, 0, 0), (1, 0, 0), (2, 0, 2), (1, 0, 0), (1, 28, 0), (1, 0, 0)],
        )


def inputs(
    spacing_s: float | None, ratio: float = 1.0, previous: bytes = b""
) -> TimingInputs:
    """Inputs for a packet arriving at C{T}, C{spacing_s} after the previous one."""
    if spacing_s is None:
        return TimingInputs(ratio=ratio, previous_records=previous, learned=True)
    spacing = round(spacing_s * S)
    return TimingInputs(T - spacing, spacing, ratio, previous, learned=True)


class EdgeTests(SynchronousTestCase):
    """The rule on the cases at its edges, on the reference station (R = 30)."""

    def time(self, count: int, spacing_s: float | None, **kwargs) -> Timing:
        previous = kwargs.pop("previous", b"")
        ratio = kwargs.pop("ratio", 1.0)
        first = kwargs.pop("first", 0)
        return time_records(
            header(count, **kwargs),
            body(first, count),
            T,
            inputs(spacing_s, ratio, previous),
        )

    def assertEvenlySpaced(self, timing: Timing, interval_ns: int) -> None:
        self.assertEqual(timing.interval_ns, interval_ns)
        self.assertEqual(timing.times[-1], T)
        self.assertEqual(
            [b - a for a, b in zip(timing.times, timing.times[1:], strict=False)],
            [interval_ns] * (len(timing.times) - 1),
        )

    def test_regular(self) -> None:
        """One upload later: the interval is the spacing over R, and learned from."""
        timing = self.time(30, 3600 * 1.07)
        self.assertEvenlySpaced(timing, round(120 * 1.07 * S))
        self.assertEqual((timing.measured, timing.uploads), (True, 1))
        self.assertAlmostEqual(timing.measured_ratio, 1.07)

    def test_missedUploads(self) -> None:
        """Two uploads later, the ring holding both: measured over k = 2."""
        timing = self.time(60, 2 * 3600 * 0.95, ratio=0.95)
        self.assertEqual((timing.measured, timing.uploads, timing.lost), (True, 2, 0))
        self.assertEvenlySpaced(timing, round(120 * 0.95 * S))

    def test_lost(self) -> None:
        """
        Three uploads later, the full ring (58 records) holding the newest: the
        other 32 records are counted as lost, and the interval still measured.
        """
        timing = self.time(58, 3 * 3600)
        self.assertEqual((timing.measured, timing.uploads, timing.lost), (True, 3, 32))
        self.assertEqual(timing.repeated, 0)
        self.assertEvenlySpaced(timing, 120 * S)

    def test_repeat(self) -> None:
        """
        More records than one upload explains, the surplus equal to the end of
        the previous packet: the clear command was lost, and the repeats are
        not stamped again.
        """
        previous = body(0, 30)
        timing = self.time(58, 3600, previous=previous, first=2)
        self.assertEqual((timing.first, timing.repeated, timing.lost), (28, 28, 0))
        self.assertEqual(len(timing.times), 30)
        self.assertTrue(timing.measured)
        self.assertEvenlySpaced(timing, 120 * S)

    def test_repeatOfCutShortRecord(self) -> None:
        """
        A record the previous packet carried as 0xFF bytes (an I2C transfer
        cut short; the station kept the real one) matches what the station
        sends in its place when it repeats its records.
        """
        previous = body(0, 30)
        cut = 25 * 6
        previous = previous[:cut] + b"\xff" * 6 + previous[cut + 6 :]
        timing = self.time(58, 3600, previous=previous, first=2)
        self.assertEqual((timing.first, timing.repeated), (28, 28))
        other = previous[:cut] + b"\x01" * 6 + previous[cut + 6 :]  # a real mismatch
        timing = self.time(58, 3600, previous=other, first=2)
        self.assertTrue(timing.irregular)

    def test_surplusNotRepeat(self) -> None:
        """
        A surplus unlike the previous packet's records is irregular: every
        record stamped with the learned interval, nothing learned.
        """
        timing = self.time(40, 3600 * 1.1, ratio=1.1, previous=body(100, 30))
        self.assertEqual(
            (timing.irregular, timing.measured, timing.first), (True, False, 0)
        )
        self.assertEqual((timing.uploads, timing.repeated, timing.lost), (0, 0, 0))
        self.assertIsNone(timing.measured_ratio)
        self.assertEvenlySpaced(timing, round(120 * 1.1 * S))

    def test_surplusLongerThanPrevious(self) -> None:
        """A surplus longer than the previous packet cannot repeat it."""
        timing = self.time(40, 3600, previous=body(0, 5))
        self.assertTrue(timing.irregular)

    def test_firstPacket(self) -> None:
        """No previous packet: the learned ratio, else the nominal interval."""
        self.assertEvenlySpaced(self.time(30, None), 120 * S)
        timing = self.time(30, None, ratio=0.93)
        self.assertEvenlySpaced(timing, round(120 * 0.93 * S))
        self.assertEqual((timing.measured, timing.measured_ratio), (False, None))

    def test_irregularGap(self) -> None:
        """A gap of one and a half uploads is not measured: the learned ratio."""
        timing = self.time(30, 1.5 * 3600 * 1.05, ratio=1.05)
        self.assertEqual((timing.measured, timing.uploads), (False, 0))
        self.assertEvenlySpaced(timing, round(120 * 1.05 * S))

    def test_clockProblem(self) -> None:
        """A spacing of zero or less (a clock problem) is not measured."""
        for spacing in (0, -1e-9, -3600):
            timing = self.time(30, spacing, ratio=1.02)
            self.assertEqual((timing.measured, timing.measured_ratio), (False, None))
            self.assertEvenlySpaced(timing, round(120 * 1.02 * S))

    def test_unevenUploads(self) -> None:
        """
        A wakeEvery that is not a multiple of measurementEvery: the station
        uploads every R records (10 s, 3 s: R = 4, every 12 s), and any
        number of uploads is counted right.
        """
        for uploads in range(1, 9):
            timing = self.time(4 * uploads, uploads * 12 * 1.2, ratio=1.2, wake=10, every=3)
            self.assertEqual((timing.measured, timing.uploads), (True, uploads))
            self.assertEvenlySpaced(timing, round(3 * 1.2 * S))

    def test_implausibleRatio(self) -> None:
        """
        A measured ratio outside L{PLAUSIBLE_RATIO} stamps the packet but is
        not learned.
        """
        timing = self.time(30, 3600 * 1.6, ratio=1.4)
        self.assertEqual((timing.measured, timing.uploads), (True, 1))
        self.assertGreater(1.6, PLAUSIBLE_RATIO[1])
        self.assertIsNone(timing.measured_ratio)
        state = StationState(T - 3600 * S, None, None, (1.4,))
        self.assertEqual(state.after(timing, b"", T, None, None).ratios, (1.4,))

    def test_zeroRecords(self) -> None:
        """
        A packet of no records (bytesReady 0) stamps nothing; its spacing is
        still measured, and the records of that upload are missing.
        """
        timing = self.time(0, 3600)
        self.assertEqual(timing.times, [])
        self.assertEqual((timing.measured, timing.lost), (True, 30))

    def test_uploadDelay(self) -> None:
        """A profile's upload delay moves the newest record before the arrival."""
        timing = time_records(header(30), body(0, 30), T, inputs(3600), 2 * S)
        self.assertEqual(timing.times[-1], T - 2 * S)
        self.assertEqual(timing.interval_ns, 120 * S)

    def test_deterministic(self) -> None:
        """The same packet with the same inputs: the same timing."""
        args = (header(58), body(2, 58), T, inputs(3600, 1.03, body(0, 30)))
        self.assertEqual(time_records(*args), time_records(*args))


class UnlearnedRatioTests(SynchronousTestCase):
    """
    The case no rule can decide (see L{ambiguous}): before a station's ratio
    is learned, three uploads of a station 25 % slow look like two of one
    12.5 % fast.  So until a ratio is learned, a gap of several uploads is
    not counted: the packet gets the nominal interval.
    """

    def test_threeUploadsOfASlowStation(self) -> None:
        """Not measured (nor learned from), rather than measured over two uploads."""
        state = first_state(body(0, 30), T, None, None)
        arrival = T + 3 * 2700 * S
        timing = time_records(
            header(58), body(32, 58), arrival, state.inputs(arrival, None, None)
        )
        self.assertEqual((timing.measured, timing.measured_ratio), (False, None))


class StationStateTests(SynchronousTestCase):
    """What the server keeps of a station between its packets."""

    def test_learnedRatio(self) -> None:
        """The median of the last L{RATIOS_KEPT} measured ratios, else 1."""
        self.assertEqual(learned_ratio(()), 1.0)
        self.assertEqual(learned_ratio((1.2, 0.9, 1.0)), 1.0)
        self.assertEqual(learned_ratio((5.0,) + (1.1,) * RATIOS_KEPT), 1.1)

    def test_ratiosKept(self) -> None:
        """A state keeps its last L{RATIOS_KEPT} measured ratios."""
        state = first_state(body(0, 30), T, 0, "a")
        for i in range(RATIOS_KEPT + 2):
            arrival = T + (i + 1) * 3600 * S
            timing = time_records(
                header(30), body(0, 30), arrival, state.inputs(arrival, None, None)
            )
            state = state.after(timing, body(0, 30), arrival, None, None)
        self.assertEqual(state.ratios, (1.0,) * RATIOS_KEPT)

    def test_bootClock(self) -> None:
        """
        Within one boot the spacing is on the boot clock: a wall-clock step in
        between does not change it.  Across boots, the wall clock.
        """
        state = first_state(body(0, 30), T, 1000 * S, "a")
        stepped = T + 3600 * S + 7200 * S
        self.assertEqual(state.inputs(stepped, 4600 * S, "a").spacing_ns, 3600 * S)
        self.assertEqual(state.inputs(stepped, 50 * S, "b").spacing_ns, 10800 * S)
        self.assertEqual(state.inputs(stepped, None, None).spacing_ns, 10800 * S)

    def test_inputs(self) -> None:
        """A packet is timed with the previous arrival, records and learned ratio."""
        state = StationState(T, None, None, (1.1, 1.2, 1.3), body(0, 30))
        self.assertEqual(
            state.inputs(T + 3600 * S, None, None),
            TimingInputs(T, 3600 * S, 1.2, body(0, 30), learned=True),
        )

    def test_recordsKeptAfterRepeat(self) -> None:
        """
        The state keeps the whole packet, repeats included: a second lost
        clear command repeats records of both.
        """
        state = first_state(body(0, 30), T, None, None)
        packets = [body(2, 58), body(32, 58)]
        for i, records in enumerate(packets, 1):
            arrival = T + i * 3600 * S
            timing = time_records(
                header(58), records, arrival, state.inputs(arrival, None, None)
            )
            self.assertEqual((timing.repeated, len(timing.times)), (28, 30))
            state = state.after(timing, records, arrival, None, None)
