"""
C{weather decode}: packets as people have them at hand, shown as the server
would store them, with the server's reasons when it would not.
"""

from __future__ import annotations

import dataclasses
import io
import math
import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.oracle import oracle_lines
from tests.support import header_bytes, reference_devices_toml, reference_packet
from tests.unit.test_cli import run
from weather.core.devices import (
    REFERENCE_DEVICES,
    DeviceProfile,
    ValueSpec,
    si7021_humidity,
)
from weather.core.dump import (
    NotAPacket,
    describe_packet,
    log_time,
    packet_from_text,
    timing_summary,
)
from weather.core.timing import Timing, TimingInputs
from weather.tools.cli import main
from weather.tools.simulate import build_packet

S = 1_000_000_000
NOON = "2026-11-21T12:00:00Z"
NOON_NS = 1_795_262_400 * S


class PacketFromTextTests(SynchronousTestCase):
    packet = reference_packet(3)

    def test_hex(self) -> None:
        self.assertEqual(packet_from_text(self.packet.hex()), self.packet)
        spaced = " ".join(f"{b:02X}" for b in self.packet)
        self.assertEqual(packet_from_text(spaced), self.packet)
        prefixed = ", ".join(f"0x{b:02x}" for b in self.packet)
        self.assertEqual(packet_from_text(prefixed), self.packet)

    def test_decimalLogLine(self) -> None:
        """The original server's log line, pasted whole."""
        decimal = " ".join(str(b) for b in self.packet)
        line = f"2019-04-02 10:00:01 Received raw data = {decimal}\n"
        self.assertEqual(packet_from_text(line), self.packet)
        self.assertEqual(packet_from_text(f"[{decimal.replace(' ', ', ')}]"), self.packet)

    def test_bytesLiteral(self) -> None:
        self.assertEqual(packet_from_text(f"data = {self.packet!r}"), self.packet)

    def test_bytesLiteralHoldingEquals(self) -> None:
        """Byte 0x3d prints as '=' in a literal: not a log line's separator."""
        packet = reference_packet(3, start=0x3D - 100)
        self.assertIn(b"=", packet)
        self.assertEqual(packet_from_text(repr(packet)), packet)
        self.assertEqual(packet_from_text(f"data = {packet!r}"), packet)

    def test_onlyAsciiDigits(self) -> None:
        for text in ("1 \u00b2", "1 \u0663"):
            with self.assertRaises(NotAPacket):
                packet_from_text(text)

    def test_forcedBase(self) -> None:
        """'10 20' is decimal unless told otherwise."""
        self.assertEqual(packet_from_text("10 20"), bytes([10, 20]))
        self.assertEqual(packet_from_text("10 20", "hex"), bytes([16, 32]))
        self.assertEqual(packet_from_text("10", "decimal"), bytes([10]))

    def test_notAPacket(self) -> None:
        for text, why in [
            ("", "no bytes"),
            ("180 0 256", "'256' is not a byte"),
            ("b4 zz", "'zz' is not hex"),
            ("b40", "odd number"),
            ("b'\\x", "bytes literal"),
        ]:
            with self.assertRaises(NotAPacket) as caught:
                packet_from_text(text)
            self.assertIn(why, str(caught.exception))

    @given(st.binary(min_size=1, max_size=400))
    def test_anyBytesRoundTrip(self, data: bytes) -> None:
        self.assertEqual(packet_from_text(data.hex()), data)
        self.assertEqual(packet_from_text(" ".join(f"{b:02x}" for b in data), "hex"), data)
        self.assertEqual(packet_from_text(", ".join(map(str, data)), "decimal"), data)

    @given(st.integers(0, 4095), st.binary(min_size=7, max_size=400))
    def test_packetsAreNeverAmbiguous(self, bytes_ready: int, rest: bytes) -> None:
        """Any packet up to 4 KiB reads right in every form without --base."""
        data = bytes_ready.to_bytes(2, "little") + rest
        self.assertEqual(packet_from_text(" ".join(f"{b:02x}" for b in data)), data)
        self.assertEqual(packet_from_text(" ".join(map(str, data))), data)


class LogTimeTests(SynchronousTestCase):
    """The time a pasted log line starts with: the packet's arrival."""

    def test_formats(self) -> None:
        """The original server's, Python logging's and twistd's; UTC unless offset."""
        ten = 1_796_637_600 * S  # 2026-12-07 10:00:00 UTC
        for text, ns in [
            ("2026-12-07 10:00:00 Received raw data = 1 2", ten),
            ("2026-12-07 10:00:00,250 INFO Received raw data = 1 2", ten + S // 4),
            ("2026-12-07T11:00:00+0100 [-] data = 1 2", ten),
            ("2026-12-07T05:30:00-04:30 [-] data = 1 2", ten),
            ("2026-12-07T10:00:00.000000001Z x", ten + 1),
            ("[2026-12-07 10:00:00] data = 1 2", ten),
            ("  2026-12-07 10:00:00\tb400", ten),
        ]:
            self.assertEqual(log_time(text), ns, text)

    def test_noTime(self) -> None:
        for text in ("Received raw data = 1 2", "b4001000", "2026-12-07", "1 2 3", ""):
            self.assertIsNone(log_time(text), text)

    def test_notATime(self) -> None:
        for text, why in [
            ("2026-13-07 10:00:00 data = 1", "'2026-13-07 10:00:00' is not a time"),
            ("2026-12-07 25:00:00 data = 1", "is not a time"),
            ("2026-12-07T10:00:00+2500 data = 1", "is not a time"),
            ("1969-12-31 23:59:59 data = 1", "is not between 1970 and 2262"),
        ]:
            with self.assertRaises(NotAPacket) as caught:
                log_time(text)
            self.assertIn(why, str(caught.exception))

    def test_packetAfterTheTime(self) -> None:
        """The time is not read as bytes, whatever follows it."""
        packet = reference_packet(1)
        for text in (
            f"2026-12-07 10:00:00 {packet.hex()}",
            f"2026-12-07T10:00:00+0100 {' '.join(map(str, packet))}",
        ):
            self.assertEqual(packet_from_text(text), packet)


class DescribeTests(SynchronousTestCase):
    def describe(
        self, data: bytes, previous: int | None = None, ratio: float | None = None, **kw
    ) -> tuple[int, str]:
        inputs = TimingInputs.since(previous, NOON_NS)
        if ratio is not None:
            inputs = dataclasses.replace(inputs, ratio=ratio, learned=True)
        out = io.StringIO()
        code = describe_packet(data, NOON_NS, inputs, REFERENCE_DEVICES, out, **kw)
        return code, out.getvalue()

    def test_table(self) -> None:
        code, text = self.describe(reference_packet(3))
        self.assertEqual(code, 0)
        self.assertIn("deviceID:          1 (place=balcony)", text)
        self.assertIn("120 s, nominal", text)
        rows = [line.split() for line in text.splitlines() if line[:3].strip().isdigit()]
        self.assertEqual([r[0] for r in rows], ["0", "1", "2"])
        # The last record is stamped with the arrival, the others 120 s apart.
        self.assertEqual(
            [r[2] for r in rows], ["11:56:00.000", "11:58:00.000", "12:00:00.000"]
        )
        self.assertEqual([r[3] for r in rows], ["100", "101", "102"])
        self.assertEqual(rows[0][4], f"{si7021_humidity(30000):.2f}")

    def test_measuredInterval(self) -> None:
        """One upload's 30 records span the spacing; the 27 not sent were lost."""
        code, text = self.describe(reference_packet(3), previous=NOON_NS - 3630 * S)
        self.assertIn("Record interval:   121 s, measured over 1 upload\n", text)
        self.assertIn("Clock ratio:       1.008 measured (none learned before)", text)
        self.assertIn("Lost:              27 records lost by the station's full ring", text)
        self.assertIn("11:55:58.000", text)

    def test_repeatedRecordsAreNotStampedAgain(self) -> None:
        """A lost clear command: the previous packet's last 10 records come again."""
        records = [(i, 30000 + 4 * i, 25000 + 4 * i) for i in range(60)]
        previous = build_packet(1, records[:30])
        inputs = TimingInputs(NOON_NS - 3600 * S, 3600 * S, 1.0, previous[9:])
        out = io.StringIO()
        data = build_packet(1, records[20:])
        self.assertEqual(describe_packet(data, NOON_NS, inputs, REFERENCE_DEVICES, out), 0)
        text = out.getvalue()
        self.assertIn("Previous packet:   2026-11-21 11:00:00.000 UTC\n", text)
        self.assertIn("Record interval:   120 s, measured over 1 upload\n", text)
        self.assertIn(
            "Repeated:          10 records (0 to 9) repeat the previous packet", text
        )
        rows = [line.split() for line in text.splitlines() if line[:3].strip().isdigit()]
        # Only the 30 new ones, numbered as in the packet.
        self.assertEqual([r[0] for r in rows], [str(i) for i in range(10, 40)])
        self.assertEqual(rows[0][2:4], ["11:02:00.000", "30"])

    def test_missedUploadMeasuredOverTwo(self) -> None:
        """
        Two uploads' spacing, a full ring, a learned ratio: the interval still
        measured.  Without a learned ratio the uploads are not counted.
        """
        code, text = self.describe(
            reference_packet(58), previous=NOON_NS - 7344 * S, ratio=1.0
        )
        self.assertIn("122.4 s, measured over 2 uploads (1 missed upload)", text)
        self.assertIn("Clock ratio:       1.020 measured", text)
        self.assertIn("Lost:              2 records lost by the station's full ring", text)
        _, text = self.describe(reference_packet(58), previous=NOON_NS - 7344 * S)
        self.assertIn(
            "120 s, nominal (about 2 uploads since the previous packet, and no "
            "learned ratio to count them by)",
            text,
        )

    def test_learnedRatio(self) -> None:
        out = io.StringIO()
        inputs = TimingInputs(ratio=1.07, learned=True)
        describe_packet(reference_packet(3), NOON_NS, inputs, REFERENCE_DEVICES, out)
        text = out.getvalue()
        self.assertIn("128.4 s, from the learned ratio (no previous packet)", text)
        self.assertIn("Clock ratio:       learned ratio 1.070\n", text)
        self.assertIn("11:55:43.200", text)

    def test_irregular(self) -> None:
        """More records than an hour explains, not the previous packet's."""
        code, text = self.describe(reference_packet(40), previous=NOON_NS - 3600 * S)
        self.assertIn("120 s, nominal (irregular)", text)
        self.assertIn("Irregular:         more records than the time explains", text)

    def test_lines(self) -> None:
        _, text = self.describe(reference_packet(2), lines=True)
        self.assertIn(f"light,place=balcony value=101.0 {NOON_NS}", text)

    def test_linesAsTheServerWritesThem(self) -> None:
        """Every line the server would write, in order, and only those."""
        previous = NOON_NS - 3590 * S
        _, text = self.describe(reference_packet(30), previous=previous, lines=True)
        shown = text.split("(as written to InfluxDB):\n")[1].encode().splitlines()
        self.assertEqual(
            shown,
            oracle_lines(
                reference_packet(30),
                NOON_NS,
                TimingInputs.since(previous, NOON_NS),
                REFERENCE_DEVICES,
            ),
        )

    def test_linesLeaveOutNaN(self) -> None:
        profiles = {5: DeviceProfile(5, (), (ValueSpec("x", "f32"),))}
        data = header_bytes(12, bytes_per_measurement=4, device_id=5, sensor_count=1)
        data += struct.pack("<fff", 1.5, math.nan, math.inf)
        out = io.StringIO()
        inputs = TimingInputs()
        self.assertEqual(
            describe_packet(data, NOON_NS, inputs, profiles, out, lines=True), 0
        )
        text = out.getvalue()
        self.assertIn(f"\nx value=1.5 {NOON_NS - 240 * S}\n", text)
        self.assertNotIn("x value=nan", text)
        self.assertIn("(2 values left out: codes that are not readings, or NaN", text)

    def test_rejectionsGiveTheServersReasons(self) -> None:
        good = reference_packet(3)
        for data, reason in [
            (good[:5], "truncated: 5 bytes, shorter than the 9-byte header"),
            (good[:-1], "truncated: 26 bytes, the header announces 27"),
            (good + b"\0", "oversized"),
            (header_bytes(0, measurement_every=0), "zero-measurement-every"),
            (reference_packet(3, device_id=9), "unknown-device: no profile for device 9"),
            (header_bytes(6, sensor_count=2) + bytes(6), "profile-mismatch"),
        ]:
            code, text = self.describe(data)
            self.assertEqual(code, 1, reason)
            self.assertIn(f"Rejected:          {reason}", text)
        # The header is shown whenever it can be read.
        _, text = self.describe(reference_packet(3, device_id=9))
        self.assertIn("deviceID:          9 (not in the devices file)", text)
        self.assertIn("--devices", text)


class DecodeCommandTests(SynchronousTestCase):
    def test_logLinesTime(self) -> None:
        """A pasted log line's time is the arrival, unless --arrival says another."""
        decimal = " ".join(str(b) for b in reference_packet(1))
        for line in (
            f"2026-11-21 12:00:00 Received raw data = {decimal}",
            f"2026-11-21T13:00:00+0100 [weather] Received raw data = {decimal}",
        ):
            code, out, err = run("decode", line)
            self.assertEqual((code, err), (0, ""))
            self.assertIn(
                "Arrival:           2026-11-21 12:00:00.000 UTC (the log line's time)\n",
                out,
            )
            self.assertIn("  0  2026-11-21 12:00:00.000", out)
            code, out, _ = run("decode", line, "--arrival", "2026-11-21T15:00:00Z")
            self.assertIn("Arrival:           2026-11-21 15:00:00.000 UTC\n", out)
        out = io.StringIO()
        stdin = io.StringIO(f"2026-11-21 12:00:00 Received raw data = {decimal}\n")
        self.assertEqual(main(["decode"], out, io.StringIO(), stdin), 0)
        self.assertIn("12:00:00.000 UTC (the log line's time)", out.getvalue())
        code, _, err = run("decode", f"2026-11-21 12:00:61 data = {decimal}")
        self.assertEqual(code, 1)
        self.assertIn("'2026-11-21 12:00:61' is not a time", err)

    def test_oneByte(self) -> None:
        self.assertIn("Packet:            1 byte\n", run("decode", "b4")[1])

    def test_oneRecord(self) -> None:
        self.assertIn(
            "bytesReady:        6 (1 record of 6 bytes)",
            run("decode", reference_packet(1).hex())[1],
        )

    def test_logLineWithOptionsAfter(self) -> None:
        decimal = " ".join(str(b) for b in reference_packet(2))
        code, out, err = run(
            "decode", "Received", "raw", "data", "=", *decimal.split(), "--arrival", NOON
        )
        self.assertEqual((code, err), (0, ""))
        self.assertIn("2026-11-21 12:00:00.000", out)

    def test_arrivalToTheNanosecond(self) -> None:
        packet = reference_packet(1).hex()
        for arrival in (
            "1795262400.123",
            "2026-11-21T12:00:00.123Z",
            "2026-11-21T13:00:00.123+01:00",
        ):
            code, out, _ = run("decode", "--lines", "--arrival", arrival, packet)
            self.assertEqual(code, 0)
            self.assertIn(" 1795262400123000000\n", out)

    def test_fileAndDevices(self) -> None:
        packet = self.mktemp()
        with open(packet, "wb") as f:
            f.write(reference_packet(2, device_id=4))
        devices = self.mktemp()
        with open(devices, "w") as f:
            f.write(reference_devices_toml(**{"4": "shed"}))
        code, out, _ = run("decode", "--file", packet, "--devices", devices, "-a", "0")
        self.assertEqual(code, 0)
        self.assertIn("deviceID:          4 (place=shed)", out)
        self.assertIn("1970-01-01 00:00:00.000", out)

    def test_previousPacketAndRatio(self) -> None:
        """--previous-packet as a file or as text; --ratio."""
        records = [(i, 30000 + 4 * i, 25000 + 4 * i) for i in range(60)]
        previous = self.mktemp()
        with open(previous, "wb") as f:
            f.write(build_packet(1, records[:30]))
        data = build_packet(1, records[20:]).hex()
        for text in (previous, build_packet(1, records[:30]).hex()):
            code, out, err = run(
                "decode", data, "-a", NOON, "--previous", "2026-11-21T11:00:00Z",
                "--previous-packet", text, "--ratio", "1.02",
            )  # fmt: skip
            self.assertEqual((code, err), (0, ""))
            self.assertIn("10 records (0 to 9) repeat the previous packet", out)
            self.assertIn("(learned ratio 1.020 before)", out)

    def test_errors(self) -> None:
        code, _, err = run("decode", "xyz")
        self.assertEqual((code, err), (1, "weather: not a packet: 'xyz' is not hex\n"))
        code, _, err = run("decode", "--file", "/nonexistent/p")
        self.assertEqual(code, 1)
        self.assertIn("No such file", err)
        code, _, err = run("decode", "--arrival", "yesterday", "b400")
        self.assertEqual(code, 2)
        self.assertIn("--arrival 'yesterday'", err)
        for bad in ("inf", "1e12", "99999999999", "-5"):
            code, _, err = run("decode", "--arrival", bad, "b400")
            self.assertEqual(code, 2, bad)
            self.assertIn("between 1970 and 2262", err)
        code, _, err = run("decode", "--devices", "/nonexistent/d", "b400")
        self.assertEqual(code, 1)
        code, out, _ = run("decode", "b400")
        self.assertEqual(code, 1)
        self.assertIn("truncated", out)
        code, _, err = run("decode", "--ratio", "2", "b400")
        self.assertEqual(
            (code, err), (2, "weather: --ratio 2: give a value from 0.5 to 1.5\n")
        )
        code, _, err = run("decode", "--previous-packet", "b400", "b400")
        self.assertEqual(code, 2)
        self.assertIn("give --previous too", err)
        code, _, err = run("decode", "--previous", "0", "--previous-packet", "zz", "b400")
        self.assertEqual(
            (code, err), (1, "weather: --previous-packet: not a packet: 'zz' is not hex\n")
        )


class TimingSummaryTests(SynchronousTestCase):
    """The few words of the server's per-packet log line on how it was timed."""

    def timing(self, **fields):
        base = dict(
            times=[],
            first=0,
            interval_ns=124_300_000_000,
            measured=False,
            uploads=1,
            repeated=0,
            lost=0,
            irregular=False,
            measured_ratio=None,
        )
        return Timing(**{**base, **fields})

    def test_words(self) -> None:
        self.assertEqual(
            timing_summary(self.timing(measured=True, uploads=2), learned=False),
            "interval 124.3 s measured over 2 uploads (1 missed)",
        )
        self.assertEqual(
            timing_summary(self.timing(repeated=30, lost=2), learned=True),
            "interval 124.3 s from the learned ratio, 30 repeated, 2 lost on the station",
        )
        self.assertEqual(
            timing_summary(self.timing(irregular=True), learned=False),
            "interval 124.3 s irregular, nominal",
        )
