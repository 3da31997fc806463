"""
C{weather simulate}: stations that behave as the firmware does, with readings
that follow a day, checked against docs/protocol.md through the real decoder.
"""

from __future__ import annotations

import io
import math

from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_cli import run
from weather.core.decode import decode_packet
from weather.core.devices import REFERENCE_DEVICES, ValueSpec, parse_devices
from weather.core.lineprotocol import LineEncoder, packet_points
from weather.core.packet import HEADER
from weather.core.timing import TimingInputs, first_state
from weather.tools.simulate import (
    ACK,
    CUT_SHORT,
    RECORD,
    RING_RECORDS,
    SI7021_FAILED,
    Simulation,
    StationModel,
    Upload,
    build_packet,
    condition,
    devices_toml,
    humidity_code,
    raw_code,
)

S = 1_000_000_000
#: 2026-11-21 00:00 UTC
MIDNIGHT = 1_795_219_200.0


def not_reading(line: bytes) -> bool:
    """A line with what a failed read or a record cut short would convert to."""
    measurement, value, _ = line.split(b" ")
    number = float(value.removeprefix(b"value="))
    return number == 0xFFFF if measurement.startswith(b"light") else number > 110


class StationModelTests(SynchronousTestCase):
    def test_firstWakeCoversTheHourBefore(self) -> None:
        station = StationModel(1, drift=0.02)
        now = MIDNIGHT + 9 * 3600
        records = station.wake(now)
        self.assertEqual(len(records), 30)
        self.assertEqual(records[-1].time, now)
        steps = {
            round(b.time - a.time, 6) for a, b in zip(records, records[1:], strict=False)
        }
        self.assertEqual(steps, {122.4})  # 120 s by a clock 2 % slow

    def test_packetDecodesToTheRecordedReadings(self) -> None:
        station = StationModel(1)
        now = MIDNIGHT + 13 * 3600
        records = station.wake(now)
        packet = station.packet(records)
        self.assertEqual(len(packet), 189)
        decoded = decode_packet(packet, int(now * S), TimingInputs(), REFERENCE_DEVICES)
        values = [r.value for r in decoded.readings]
        want = [v for r in records for v in r.values]
        self.assertEqual(values, want)
        # The decoder's stamps are the true times when the clock is exact.
        self.assertEqual(
            [r.time_ns for r in decoded.readings[::3]], [int(r.time * S) for r in records]
        )
        for r in records:
            self.assertEqual([code & 3 for code in r.fields[1:]], [0, 0])

    def test_aDayOfWeather(self) -> None:
        station = StationModel(3, wake_every=600, measure_every=120)
        day = [station.measure(MIDNIGHT + h * 3600).values for h in range(24)]
        light, humidity, temperature = zip(*day, strict=True)
        self.assertGreater(temperature[15], temperature[4] + 6)
        self.assertGreater(humidity[4], humidity[15])
        self.assertEqual(light[:5] + light[19:], (0,) * 10)
        self.assertGreater(light[12], 1000)
        for t, h in zip(temperature, humidity, strict=True):
            self.assertTrue(-10 < t < 30 and 5 <= h <= 100)

    def test_missedUploadsFillTheRing(self) -> None:
        """Two hours of records are 60; the ring keeps the newest 58."""
        station = StationModel(1)
        first = station.wake(MIDNIGHT)
        second = station.wake(MIDNIGHT + 3600)
        self.assertEqual(len(second), RING_RECORDS)
        self.assertEqual(station.dropped, 2)
        self.assertEqual(second[0], first[2])
        station.delivered(second)
        self.assertEqual(station.held, [])
        self.assertEqual(len(station.wake(MIDNIGHT + 7200)), 30)

    def test_buildPacket(self) -> None:
        """The firmware's layout: the header, then the records as they are."""
        self.assertEqual(
            build_packet(7, [(1, 2, 3), (4, 5, 6)], wake_every=600, measure_every=60),
            HEADER.pack(12, 600, 60, 6, 7, 3) + RECORD.pack(1, 2, 3) + RECORD.pack(4, 5, 6),
        )
        station = StationModel(2)
        records = station.wake(MIDNIGHT)
        self.assertEqual(
            station.packet(records), build_packet(2, [r.fields for r in records])
        )

    def test_lostClearCommandRepeats(self) -> None:
        """
        The station keeps what it sent; its next packet repeats it, capped by
        the ring, and records dropped after being sent are not lost.
        """
        station = StationModel(1)
        first = station.wake(MIDNIGHT)
        station.clear_lost(first)
        second = station.wake(MIDNIGHT + 3600)
        self.assertEqual(second[:28], first[2:])
        self.assertEqual((len(second), station.sent, station.dropped), (58, 28, 0))
        station.delivered(second)
        self.assertEqual((station.held, station.sent), ([], 0))

    def test_sensorFailures(self) -> None:
        """Failed SI7021 reads and records cut short, none of them stored."""
        station = StationModel(1, sensor_failures=0.5, seed=3)
        records = station.wake(MIDNIGHT + 12 * 3600)
        failed = [r for r in records if r.fields[1] == SI7021_FAILED]
        cut = [r for r in records if r.fields == (CUT_SHORT,) * 3]
        self.assertTrue(failed and cut)
        self.assertTrue(all(r.fields[2] == SI7021_FAILED for r in failed))
        self.assertIn("humidity failed  temperature failed", failed[0].describe())
        self.assertEqual(cut[0].describe(), "cut short on the I2C bus (all 0xFF)")
        packet = station.packet(records)
        for profiles in (REFERENCE_DEVICES, parse_devices(devices_toml([1]))):
            points = packet_points(
                packet, int(MIDNIGHT * S), TimingInputs(), profiles, LineEncoder()
            )
            self.assertEqual(points.not_finite, 3 * len(cut) + 2 * len(failed))
            self.assertFalse([line for line in points.lines if not_reading(line)])

    def test_intervalsMustFit(self) -> None:
        self.assertRaises(ValueError, StationModel, 1, wake_every=100, measure_every=30)
        self.assertRaises(ValueError, StationModel, 1, wake_every=7200, measure_every=60)


class FirmwareConnection(StringTransport):
    """A transport that tells its protocol when it is closed."""

    def __init__(self, clock: Clock, reply: bytes = b"") -> None:
        super().__init__()
        self.clock = clock
        self.reply = reply
        self.writes: list[bytes] = []
        self.nodelay = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)
        if self.reply:
            self.clock.callLater(0.001, self.protocol.dataReceived, self.reply)

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            self.clock.callLater(0, self.protocol.connectionLost, Failure(ConnectionDone()))


class SimulationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(MIDNIGHT + 12 * 3600)
        self.connections: list[FirmwareConnection] = []
        self.arrivals: list[int] = []
        self.refuse = 0
        self.reply = b""
        self.out = io.StringIO()

    def connect(self, upload: Upload):
        if self.refuse:
            self.refuse -= 1
            return fail(ConnectionRefusedError("refused"))
        self.arrivals.append(round(self.clock.seconds() * S))
        transport = FirmwareConnection(self.clock, self.reply)
        transport.protocol = upload
        self.connections.append(transport)
        upload.makeConnection(transport)
        return succeed(upload)

    def simulate(self, stations, packets, **kw):
        simulation = Simulation(self.clock, self.connect, stations, packets, self.out, **kw)
        done = simulation.run()
        while not done.called and self.clock.getDelayedCalls():
            soonest = min(c.getTime() for c in self.clock.getDelayedCalls())
            self.clock.advance(max(0.0, soonest - self.clock.seconds()))
        return self.successResultOf(done)

    def packets(self) -> list[bytes]:
        return [b"".join(c.writes) for c in self.connections]

    def test_firmwareUploads(self) -> None:
        """Connect, write one packet, close; one wake interval apart."""
        stations = [StationModel(1, wake_every=6, measure_every=2), StationModel(2)]
        totals = self.simulate(stations, 3)
        self.assertEqual((totals.packets, totals.records, totals.failed), (6, 99, 0))
        packets = self.packets()
        self.assertEqual(sorted(p[7] for p in packets), [1, 1, 1, 2, 2, 2])
        self.assertTrue(all(c.disconnecting for c in self.connections))
        self.assertEqual(len(self.out.getvalue().splitlines()), 6 + 99)
        self.assertIn(
            "station 2: 2026-11-21 14:00:00.000 30 records, 189 bytes: sent",
            self.out.getvalue(),
        )

    def test_segments(self) -> None:
        self.simulate([StationModel(1)], 1, segments=3, segment_delay=0.05, quiet=True)
        (connection,) = self.connections
        self.assertEqual([len(w) for w in connection.writes], [63, 63, 63])
        self.assertTrue(connection.nodelay)
        self.assertEqual(len(self.out.getvalue().splitlines()), 1)

    def test_failedUploadKeepsRecordsForTheNext(self) -> None:
        self.refuse = 1
        totals = self.simulate([StationModel(1)], 2, quiet=True)
        self.assertEqual((totals.packets, totals.failed), (1, 1))
        (packet,) = self.packets()
        self.assertEqual(packet[0] + 256 * packet[1], RING_RECORDS * 6)
        self.assertIn(
            "upload failed (Connection was refused by other side: refused.): keeps 30",
            self.out.getvalue(),
        )

    def test_missedUploadsComeOnTop(self) -> None:
        stations = [StationModel(d, wake_every=20, measure_every=2) for d in (1, 2, 3)]
        totals = self.simulate(stations, 4, miss=0.3, seed=5, quiet=True)
        self.assertGreater(totals.missed, 0)
        self.assertEqual(totals.packets, 12)
        # Nothing lost: every record measured was sent exactly once.
        sizes = [len(p) - 9 for p in self.packets()]
        self.assertEqual(sum(sizes) // 6, totals.records)
        self.assertEqual(totals.records, 10 * (12 + totals.missed))
        self.assertIn(60, sizes)

    def test_slowUploadsLoseNoRecords(self) -> None:
        """Waiting 5 s for an ACK that never comes, with uploads every 2 s."""
        station = StationModel(1, wake_every=2, measure_every=1)
        sent = []
        forget = station.delivered
        station.delivered = lambda records: (sent.extend(records), forget(records))
        totals = self.simulate([station], 4, ack_timeout=5, quiet=True)
        self.assertEqual(totals.packets, 4)
        self.assertEqual(len(sent), totals.records)
        # One record per second of the station's clock, none missing.
        steps = {round(b.time - a.time, 6) for a, b in zip(sent, sent[1:], strict=False)}
        self.assertEqual(steps, {1.0})
        self.assertEqual((station.dropped, station.held), (0, []))

    def test_lostClearCommands(self) -> None:
        """Repeats are reported, and each record is printed once."""
        stations = [StationModel(1, wake_every=10, measure_every=1)]
        totals = self.simulate(stations, 8, lose_clear=0.5, seed=2)
        self.assertGreater(totals.clears_lost, 0)
        self.assertGreater(totals.repeated, 0)
        sizes = [len(p) - 9 for p in self.packets()]
        self.assertEqual(sum(sizes) // 6, totals.records + totals.repeated)
        text = self.out.getvalue()
        self.assertIn("20 records (10 repeated), 129 bytes: sent", text)
        self.assertIn("; clear command lost: keeps them", text)
        printed = [line for line in text.splitlines() if line.startswith("  ")]
        self.assertEqual(len(printed), totals.records)
        self.assertEqual(len(set(printed)), totals.records)

    def test_decodedAsTheServerDoes(self) -> None:
        """
        Missed uploads, lost clear commands, sensor failures and a clock 7 %
        slow, timed as the server times them: every record stamped once,
        at its true time (the first packet's within the ratio it cannot know
        yet), and no code that is not a reading written.
        """
        station = StationModel(1, wake_every=10, measure_every=1, drift=0.07)
        station.sensor_failures = 0.1
        measured: list[float] = []
        measure = station.measure
        station.measure = lambda t: measured.append(t) or measure(t)
        totals = self.simulate([station], 30, miss=0.2, lose_clear=0.3, seed=4, quiet=True)
        self.assertTrue(totals.missed and totals.clears_lost and totals.repeated)
        stamped: list[int] = []
        state = None
        for packet, arrival in zip(self.packets(), self.arrivals, strict=True):
            records = packet[HEADER.size :]
            inputs = TimingInputs() if state is None else state.inputs(arrival, None, None)
            points = packet_points(
                packet, arrival, inputs, REFERENCE_DEVICES, LineEncoder()
            )
            timing = points.decoded.timing
            state = (
                first_state(records, arrival, None, None)
                if state is None
                else state.after(timing, records, arrival, None, None)
            )
            stamped += timing.times
            self.assertFalse([line for line in points.lines if not_reading(line)])
        self.assertEqual(len(stamped), len(measured))
        errors = [abs(t / S - m) for t, m in zip(stamped, measured, strict=True)]
        self.assertLess(max(errors[:10]), 9 * 0.07 + 1e-6)
        self.assertLess(max(errors[10:]), 1e-6)

    def test_connectionLostBetweenSegments(self) -> None:
        """The station keeps its records, and leaves nothing scheduled."""
        upload = Upload(b"x" * 30, self.clock, segments=3, delay=0.05)
        transport = FirmwareConnection(self.clock)
        transport.protocol = upload
        upload.makeConnection(transport)
        upload.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(upload.done, ConnectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cutAtOffsets(self) -> None:
        """Pieces cut where the caller says: here inside the header."""
        packet = bytes(range(189))
        upload = Upload(packet, self.clock, [5, 100], delay=0.01)
        transport = FirmwareConnection(self.clock)
        transport.protocol = upload
        upload.makeConnection(transport)
        self.clock.advance(0.01)
        self.clock.advance(0.01)
        self.clock.advance(0)
        self.assertEqual(transport.writes, [packet[:5], packet[5:100], packet[100:]])
        self.assertTrue(transport.nodelay)
        self.assertEqual(self.successResultOf(upload.done), "sent")

    def test_acknowledgedAt(self) -> None:
        """When the ACK came, by the clock the upload was given."""
        upload = Upload(b"x" * 30, self.clock, ack_timeout=5)
        transport = FirmwareConnection(self.clock)
        transport.protocol = upload
        upload.makeConnection(transport)
        self.assertIsNone(upload.acknowledged_at)
        self.clock.advance(0.25)
        upload.dataReceived(ACK)
        self.assertEqual(upload.acknowledged_at, self.clock.seconds())
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(upload.done), "acknowledged")

    def test_waitForAcknowledgement(self) -> None:
        self.reply = ACK
        totals = self.simulate([StationModel(1)], 1, ack_timeout=5)
        self.assertEqual(totals.acknowledged, 1)
        self.reply = b""
        totals = self.simulate([StationModel(1)], 1, ack_timeout=5, quiet=True)
        self.assertEqual(totals.acknowledged, 0)
        self.assertIn("not acknowledged", self.out.getvalue())


class SimulateCommandTests(SynchronousTestCase):
    def test_devicesToml(self) -> None:
        code, out, _ = run(
            "simulate", "--stations", "3", "--first-id", "4", "--devices-toml"
        )
        self.assertEqual(code, 0)
        profiles = parse_devices(out)
        self.assertEqual(sorted(profiles), [4, 5, 6])
        self.assertEqual(profiles[5].tags, (("place", "station-5"),))
        self.assertEqual(profiles[5].values, REFERENCE_DEVICES[1].values)

    def test_demoKeepsTheReferenceStation(self) -> None:
        """
        Device 1 keeps the tags the server gives it without a devices file:
        one station, one series, before and after the file.
        """
        code, out, _ = run("simulate", "--stations", "3", "--devices-toml")
        self.assertEqual(code, 0)
        profiles = parse_devices(out)
        self.assertEqual(profiles[1], REFERENCE_DEVICES[1])
        self.assertEqual(profiles[2].tags, (("place", "station-2"),))

    def test_portIsDashP(self) -> None:
        """-p, as for the server (twistd weather -p)."""
        from weather.tools.cli import SimulateOptions

        options = SimulateOptions()
        options.parseOptions(["-p", "9266"])
        self.assertEqual(options["port"], 9266)
        self.assertEqual(run("simulate", "-P", "9266")[0], 2)

    def simulate(self, connect, *argv: str) -> tuple[int, str]:
        """weather simulate ARGV on a fake clock, connecting with C{connect(clock)}."""
        from weather.tools import cli

        clock = Clock()
        clock.advance(MIDNIGHT)
        self.patch(cli, "tcp_connector", lambda reactor, host, port: connect(clock))
        options = cli.SimulateOptions()
        options.parseOptions(["--quiet", *argv])
        out = io.StringIO()
        done = cli.simulate(clock, options, out)
        while not done.called:
            clock.advance(0.1)
        return self.successResultOf(done), out.getvalue()

    def test_summaryOfOne(self) -> None:
        """One of a thing is one thing."""

        def accepted(clock: Clock):
            def connect(upload: Upload):
                transport = FirmwareConnection(clock)
                transport.protocol = upload
                upload.makeConnection(transport)
                return succeed(upload)

            return connect

        code, out = self.simulate(accepted, "--wake-every", "2", "--measure-every", "2")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines()[-1],
            "1 station sent 1 packet with 1 record; 0 uploads failed, 0 missed; "
            "0 records still on the stations, 0 dropped by full rings.",
        )
        self.assertIn("station 1: 2026-11-21 00:00:00.100 1 record, 15 bytes: sent", out)
        code, out = self.simulate(
            lambda clock: lambda upload: fail(ConnectionRefusedError())
        )
        self.assertEqual(code, 1)
        self.assertIn("1 upload failed, 0 missed; 30 records still on the stations", out)

    def test_badOptions(self) -> None:
        for argv, why in [
            (["--stations", "0"], "--stations"),
            (["--first-id", "250", "--stations", "7"], "device ids end at 255"),
            (["--wake-every", "100", "--measure-every", "30"], "whole number"),
            (["--miss", "1"], "--miss"),
            (["--lose-clear", "1"], "--lose-clear: a probability"),
            (["--sensor-failures", "-0.1"], "--sensor-failures: a probability"),
            (["--clock-ratio", "1.5"], "--clock-ratio"),
            (["--packets", "0"], "--packets"),
        ]:
            code, _, err = run("simulate", *argv)
            self.assertEqual(code, 2, argv)
            self.assertIn(why, err)

    def test_driftIsPerStationAndSeeded(self) -> None:
        from weather.tools.cli import SimulateOptions

        options = SimulateOptions()
        options.parseOptions(["--stations", "5", "--drift", "3", "--seed", "7"])
        drifts = [s.drift for s in options.stations()]
        self.assertEqual(len(set(drifts)), 5)
        self.assertTrue(all(abs(d) <= 0.03 for d in drifts))
        again = SimulateOptions()
        again.parseOptions(["--stations", "5", "--drift", "3", "--seed", "7"])
        self.assertEqual([s.drift for s in again.stations()], drifts)
        self.assertFalse(any(math.isnan(d) for d in drifts))
        self.assertEqual(devices_toml([1]).count("[devices.1]"), 1)

    def test_clockRatioForEveryStation(self) -> None:
        from weather.tools.cli import SimulateOptions

        options = SimulateOptions()
        options.parseOptions(
            ["--stations", "3", "--clock-ratio", "1.07", "--sensor-failures", "0.05"]
        )
        stations = options.stations()
        self.assertEqual([round(s.drift, 9) for s in stations], [0.07] * 3)
        self.assertEqual({s.sensor_failures for s in stations}, {0.05})
        self.assertAlmostEqual(stations[0].true_measure_every, 128.4)


#: A station of another layout: the README's devices.7 and two more values.
GREENHOUSE = """
[devices.7]
tags = { place = "greenhouse" }
values = [
  { name = "soil_moisture", type = "u8", scale = 0.5 },
  { name = "temperature", type = "i16", scale = 0.01 },
  { name = "pressure", type = "f32", field = "hpa" },
  { name = "battery", type = "u16", unit = "mV", invalid = [0xFFFF] },
  { name = "air", conversion = "si7021_humidity", invalid = [0xFFFC, 0xFFFF] },
  { name = "lux", type = "u32", scale = 0.1, offset = -5.5 },
]
"""


class AnyLayoutTests(SynchronousTestCase):
    """A station described in a devices file: plausible readings for each value."""

    def setUp(self) -> None:
        self.profile = parse_devices(GREENHOUSE)[7]

    def test_whatEachValueMeasures(self) -> None:
        specs = {spec.name: spec for spec in self.profile.values}
        self.assertIsNone(condition(specs["soil_moisture"]))
        self.assertEqual(condition(specs["temperature"]), ("temperature", 1.0, 0.0))
        self.assertEqual(condition(specs["pressure"]), ("pressure", 1.0, 0.0))
        self.assertEqual(condition(specs["battery"]), ("voltage", 1000.0, 0.0))
        self.assertEqual(condition(specs["lux"]), ("light", 1.0, 0.0))
        self.assertEqual(condition(ValueSpec("t", unit="°F")), ("temperature", 1.8, 32.0))
        self.assertEqual(condition(ValueSpec("p", unit="Pa")), ("pressure", 100.0, 0.0))
        self.assertEqual(condition(ValueSpec("rh", unit="%")), ("humidity", 1.0, 0.0))

    def test_aDayOfReadings(self) -> None:
        """Decoded by the devices file: what each value measures, in its unit."""
        station = StationModel(7, profile=self.profile)
        for hour in range(24):
            records = station.wake(MIDNIGHT + hour * 3600)
            station.delivered(records)
            packet = station.packet(records)
            decoded = decode_packet(
                packet, int(records[-1].time * S), TimingInputs(), {7: self.profile}
            )
            self.assertEqual(decoded.header.device_id, 7)
            names = [s.name for s in self.profile.values]
            columns = dict(zip(names, decoded.columns, strict=True))
            self.assertEqual(
                [list(v) for v in zip(*decoded.columns, strict=True)],
                [r.values for r in records],
            )
            self.assertEqual(set(columns["soil_moisture"]), {64.0})  # mid-range: 128
            for name, low, high in [
                ("temperature", -10, 35),
                ("pressure", 980, 1040),
                ("battery", 3600, 4200),
                ("air", 5, 100),
                ("lux", -5.5, 60000),
            ]:
                self.assertTrue(all(low <= v <= high for v in columns[name]), name)
        noon = station.wake(MIDNIGHT + 36 * 3600)[-1]
        self.assertGreater(noon.values[-1], 1000)
        self.assertRegex(
            noon.describe(),
            r"^soil_moisture 64\.0  temperature \d+\.\d\d  pressure \d{3,4}\.\d\d  "
            r"battery \d{4} mV  air \d+\.\d\d  lux \d+\.\d$",
        )

    def test_failures(self) -> None:
        """
        A failed read sends the codes that are not readings (not all 0xFF);
        a record cut short is 0xFF bytes, whatever the layout: none stored.
        """
        station = StationModel(7, profile=self.profile, sensor_failures=0.5, seed=3)
        records = station.wake(MIDNIGHT + 12 * 3600)
        cut = [r for r in records if r.data == b"\xff" * self.profile.record_size]
        failed = [r for r in records if r.fields[4] == SI7021_FAILED]
        self.assertTrue(cut and failed)
        self.assertEqual(cut[0].describe(), "cut short on the I2C bus (all 0xFF)")
        self.assertIn("battery 3", failed[0].describe())  # no failure code but 0xFFFF
        self.assertIn("air failed", failed[0].describe())
        points = packet_points(
            station.packet(records),
            int(MIDNIGHT * S),
            TimingInputs(),
            {7: self.profile},
            LineEncoder(),
        )
        self.assertEqual(points.not_finite, 3 * len(cut) + len(failed))

    def test_rawCodes(self) -> None:
        """Undone as the profile does it, within the type, clear of codes not readings."""
        self.assertEqual(raw_code(ValueSpec("p", scale=0.1), 1012.9), 10129)
        self.assertEqual(raw_code(ValueSpec("t", "i8", offset=-40.0), -100.0), -60)
        self.assertEqual(raw_code(ValueSpec("t", "u8"), 1000.0), 255)
        self.assertEqual(raw_code(ValueSpec("t", "u8", invalid=frozenset({255})), 1e9), 254)
        self.assertEqual(raw_code(ValueSpec("t", "i16"), None), 0)
        self.assertEqual(raw_code(ValueSpec("t", "u16", scale=0.0), 5.0), 32768)
        si7021 = ValueSpec(
            "h", conversion="si7021_humidity", invalid=frozenset({0xFFFC, 0xFFFF})
        )
        self.assertEqual(raw_code(si7021, 50.0), humidity_code(50.0))
        self.assertEqual(raw_code(si7021, 200.0), 0xFFF8)
        clamped = ValueSpec("h", "u8", clamp=(0.0, 100.0))
        self.assertEqual(raw_code(clamped, 150.0), 100)

    def test_simulateTheDevicesFile(self) -> None:
        """weather simulate --devices: every station it describes, of its layout."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(GREENHOUSE + devices_toml([2], {2: "garden"}))
        from weather.tools.cli import SimulateOptions

        options = SimulateOptions()
        options.parseOptions(["--devices", path])
        stations = options.stations()
        self.assertEqual([s.device_id for s in stations], [2, 7])
        self.assertEqual(stations[1].profile, self.profile)
        self.assertEqual(stations[0].profile.values, REFERENCE_DEVICES[1].values)
        options = SimulateOptions()
        options.parseOptions(["--devices", path, "--first-id", "7"])
        self.assertEqual([s.device_id for s in options.stations()], [7])
        for argv, why in [
            (["--first-id", "3"], "does not describe device 3 (it describes 2, 7)"),
            (["--stations", "2"], "does not describe device 1"),
            (["--devices-toml"], "--devices-toml describes stations of the reference"),
        ]:
            code, _, err = run("simulate", "--devices", path, *argv)
            self.assertEqual(code, 2, argv)
            self.assertIn(why, err)
        code, _, err = run("simulate", "--devices", self.mktemp())
        self.assertEqual(code, 2)
        self.assertIn("--devices ", err)
        self.assertIn("cannot read it", err)
