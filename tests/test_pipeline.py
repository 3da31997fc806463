"""
The packet pipeline: decoding with per-device timing state, rejections,
points to the writer.
"""

from __future__ import annotations

import struct

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tests.support import HEADER, RecordingWriter, reference_devices_toml, reference_packet
from weather.devices import REFERENCE_DEVICES, parse_devices
from weather.packet import Packet, PacketRejected, Reason
from weather.pipeline import PacketPipeline

S = 1_000_000_000
T0 = 1_700_000_000 * S

TWO_STATIONS = parse_devices(reference_devices_toml(**{"1": "balcony", "2": "garden"}))


def times(lines: list[bytes]) -> list[int]:
    return sorted({int(line.rsplit(b" ", 1)[1]) for line in lines})


class PipelineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.writer = RecordingWriter()
        self.pipeline = PacketPipeline(TWO_STATIONS, self.writer, self.clock)

    def receive(self, data: bytes, arrival_ns: int, peer: str = "192.0.2.7:1"):
        return self.pipeline.packet_received(Packet(data, peer, arrival_ns))

    def test_referencePacketBecomesLines(self) -> None:
        pipeline = PacketPipeline(REFERENCE_DEVICES, self.writer, self.clock)
        result = pipeline.packet_received(Packet(reference_packet(2), "p", T0))
        self.assertEqual(
            self.writer.lines,
            [
                b"light,place=balcony value=100.0 1699999880000000000",
                b"humidity,place=balcony value=51.220458984375 1699999880000000000",
                b"temperature,place=balcony value=20.1818603515625 1699999880000000000",
                b"light,place=balcony value=101.0 1700000000000000000",
                b"humidity,place=balcony value=51.22808837890625 1700000000000000000",
                b"temperature,place=balcony value=20.192585449218747 1700000000000000000",
            ],
        )
        self.assertNoResult(result)
        self.writer.acknowledge_all()
        self.successResultOf(result)
        self.assertEqual(pipeline.stats["packets_accepted"], 1)
        self.assertEqual(pipeline.stats["readings_decoded"], 6)

    def test_intervalMeasuredPerDevice(self) -> None:
        """Each device's spacing is its own, even when packets interleave."""
        self.receive(reference_packet(30, device_id=1), T0)
        self.receive(reference_packet(30, device_id=2), T0 + 10 * S)
        # Device 1's clock runs 3 % slow, device 2's 2 % fast.
        self.receive(reference_packet(30, device_id=1), T0 + 3708 * S)
        self.receive(reference_packet(30, device_id=2), T0 + 10 * S + 3528 * S)
        d1_second = times(self.writer.writes[2][0])
        d2_second = times(self.writer.writes[3][0])
        self.assertEqual(d1_second[1] - d1_second[0], 3708 * S // 30)
        self.assertEqual(d1_second[-1], T0 + 3708 * S)
        self.assertEqual(d2_second[1] - d2_second[0], 3528 * S // 30)

    def test_sameMomentSameDevice(self) -> None:
        """
        Two packets of one device at the same instant: the second sees the
        first as its predecessor (spacing 0, so the nominal interval), and
        neither's readings are mixed with the other's.
        """
        first = reference_packet(30, start=0)
        second = reference_packet(30, start=500)
        self.receive(first, T0)
        self.receive(second, T0)
        self.assertEqual(len(self.writer.writes), 2)
        for lines, start in zip((w[0] for w in self.writer.writes), (0, 500), strict=True):
            self.assertEqual(len(lines), 90)
            lights = [line for line in lines if line.startswith(b"light,")]
            self.assertEqual(
                [float(line.split(b"=")[2].split()[0]) for line in lights],
                [100.0 + start + i for i in range(30)],
            )
            self.assertEqual(times(lines)[1] - times(lines)[0], 120 * S)
        self.assertEqual(self.pipeline.last_arrival, {1: T0})

    def test_rejectedPacketDoesNotMoveTiming(self) -> None:
        self.receive(reference_packet(30), T0)
        bad = HEADER.pack(180, 3600, 0, 6, 1, 3) + bytes(180)
        self.receive(bad, T0 + 1800 * S)
        self.assertEqual(self.pipeline.last_arrival, {1: T0})
        self.receive(reference_packet(30), T0 + 3600 * S)
        self.assertEqual(
            times(self.writer.writes[-1][0])[1] - times(self.writer.writes[-1][0])[0],
            120 * S,
        )

    def test_everyHeaderCheckIsARejection(self) -> None:
        cases = {
            Reason.ZERO_MEASUREMENT_EVERY: HEADER.pack(6, 3600, 0, 6, 1, 3) + bytes(6),
            Reason.ZERO_WAKE_EVERY: HEADER.pack(6, 0, 120, 6, 1, 3) + bytes(6),
            Reason.ZERO_BYTES_PER_MEASUREMENT: HEADER.pack(6, 3600, 120, 0, 1, 3)
            + bytes(6),
            Reason.ZERO_SENSOR_COUNT: HEADER.pack(6, 3600, 120, 6, 1, 0) + bytes(6),
            Reason.RAGGED_RECORDS: HEADER.pack(7, 3600, 120, 6, 1, 3) + bytes(7),
            Reason.UNKNOWN_DEVICE: HEADER.pack(6, 3600, 120, 6, 9, 3) + bytes(6),
            Reason.PROFILE_MISMATCH: HEADER.pack(8, 3600, 120, 8, 1, 4) + bytes(8),
        }
        with capturedLogs() as events:
            for data in cases.values():
                self.successResultOf(self.receive(data, T0))
        self.assertEqual(self.writer.writes, [])
        self.assertEqual(self.pipeline.stats["packets_rejected"], len(cases))
        for reason in cases:
            self.assertEqual(self.pipeline.stats[f"packets_rejected_{reason}"], 1, reason)
        self.assertEqual(
            sorted(e["reason"] for e in events if e["log_level"] == LogLevel.warn),
            sorted(cases),
        )

    def test_rejectionsRateLimited(self) -> None:
        """A flood of one kind of garbage makes one log line a minute, all counted."""
        bad = HEADER.pack(6, 3600, 0, 6, 1, 3) + bytes(6)
        with capturedLogs() as events:
            for i in range(1000):
                self.receive(bad, T0 + i)
                self.clock.advance(0.01)
            self.clock.advance(60)
            self.receive(bad, T0)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[1]["suppressed"], 999)
        self.assertEqual(self.pipeline.stats["packets_rejected"], 1001)

    def test_truncatedFromProtocol(self) -> None:
        with capturedLogs() as events:
            self.pipeline.packet_rejected(
                Packet(b"\x01\x02", "192.0.2.7:9", T0),
                PacketRejected(Reason.TRUNCATED, "connection ended after 2 bytes"),
            )
        self.assertEqual(self.pipeline.stats["packets_rejected_truncated"], 1)
        [event] = events
        self.assertIn("192.0.2.7:9", event["log_format"].format(**event))

    def test_refusedPointsCounted(self) -> None:
        result = self.receive(reference_packet(30), T0)
        self.writer.refuse(0)
        self.successResultOf(result)
        self.assertEqual(self.pipeline.stats["points_refused"], 90)

    def test_nonFiniteValuesSkippedAndCounted(self) -> None:
        profiles = parse_devices(
            '[devices.5]\nvalues = [{ name = "wind", type = "f32" }]\n'
        )
        pipeline = PacketPipeline(profiles, self.writer, self.clock)
        body = struct.pack("<fff", 1.5, float("nan"), float("inf"))
        data = HEADER.pack(12, 3600, 120, 4, 5, 1) + body
        with capturedLogs() as events:
            pipeline.packet_received(Packet(data, "p", T0))
        self.assertEqual(len(self.writer.lines), 1)
        self.assertTrue(self.writer.lines[0].startswith(b"wind value=1.5 "))
        self.assertEqual(pipeline.stats["readings_not_finite"], 2)
        self.assertEqual(len(events), 1)
