"""
The packet pipeline: journaling before decoding, decoding with the timing
state the journal recorded, rejections into quarantine, points to the writer,
and the backlog the journal holds while the writer is overloaded.
"""

from __future__ import annotations

import io
import struct
from types import SimpleNamespace

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.fakeinflux import FakeInfluxDB
from tests.oracle import oracle_lines
from tests.support import (
    HEADER,
    ManualDiskWorker,
    RecordingWriter,
    journal_options,
    journaled_arrivals,
    numbered_packet,
    reference_devices_toml,
    reference_packet,
    started_journal,
)
from weather.core.devices import REFERENCE_DEVICES, parse_devices
from weather.core.lineprotocol import LineEncoder, packet_points
from weather.core.packet import Packet, PacketRejected, Reason
from weather.core.timing import TimingInputs
from weather.journal.service import ImmediateDiskWorker, Journal
from weather.journal.store import JournalFile
from weather.ops.stations import StationBook
from weather.server.clock import ClockGate, FakeClockStatus
from weather.server.interfaces import IPipelineObserver
from weather.server.pipeline import REFUSED, PacketPipeline
from weather.tools.cli import ReplayOptions, points_for, replay

S = 1_000_000_000
T0 = 1_700_000_000 * S

TWO_STATIONS = parse_devices(reference_devices_toml(**{"1": "balcony", "2": "garden"}))
SHED = parse_devices(reference_devices_toml(**{"1": "balcony", "7": "shed"}))


def times(lines: list[bytes]) -> list[int]:
    return sorted({int(line.rsplit(b" ", 1)[1]) for line in lines})


def lights(lines: list[bytes]) -> list[float]:
    """The light values of reference-packet lines, in order."""
    return [
        float(line.split(b"=")[2].split()[0])
        for line in lines
        if line.startswith(b"light,")
    ]


class PipelineTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0 / S)
        self.writer = RecordingWriter()
        self.journal = started_journal(self, self.clock)
        self.pipeline = self.start_pipeline(TWO_STATIONS)

    def start_pipeline(
        self, profiles=TWO_STATIONS, journal: Journal | None = None, **options
    ) -> PacketPipeline:
        pipeline = PacketPipeline(
            profiles,
            journal if journal is not None else self.journal,
            self.writer,
            self.clock,
            **options,
        )
        pipeline.startService()
        self.addCleanup(pipeline.stopService)
        return pipeline

    def receive(self, data: bytes, arrival_ns: int, peer: str = "192.0.2.7:1"):
        return self.pipeline.packet_received(Packet(data, peer, arrival_ns))


class PipelineTests(PipelineTestCase):
    def test_referencePacketBecomesLines(self) -> None:
        """
        The result fires once the packet is durable, before InfluxDB has
        its points; the packet stays in the journal until it has them.
        """
        pipeline = self.start_pipeline(REFERENCE_DEVICES)
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
        self.assertIsNone(self.successResultOf(result))
        self.assertEqual(self.journal.file.status().pending, 1)
        self.assertEqual(pipeline.in_flight, 1)
        self.writer.acknowledge_all()
        self.assertEqual(pipeline.stats.packets_accepted, 1)
        self.assertEqual(pipeline.stats.readings_decoded, 6)
        self.assertEqual(pipeline.in_flight, 0)

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

    def test_timingStateRecordedInTheJournal(self) -> None:
        """
        Each journaled packet holds the previous arrival of its own device,
        and the journal keeps each device's latest arrival on disk.
        """
        self.receive(reference_packet(30, device_id=1), T0)
        self.receive(reference_packet(30, device_id=2), T0 + 10 * S)
        self.receive(reference_packet(30, device_id=1), T0 + 3708 * S)
        self.receive(reference_packet(30, device_id=2), T0 + 3538 * S)
        self.assertEqual(
            [e.previous_arrival_ns for e in self.journal.file.pending()],
            [None, None, T0, T0 + 10 * S],
        )
        self.assertEqual(
            journaled_arrivals(self.journal.file), {1: T0 + 3708 * S, 2: T0 + 3538 * S}
        )
        self.assertEqual(self.journal.last_arrivals(), {1: T0 + 3708 * S, 2: T0 + 3538 * S})
        self.assertFalse(hasattr(self.pipeline, "last_arrival"))

    def test_timingStateSurvivesARestart(self) -> None:
        """
        The first packet after a restart is timed from the last one before:
        its interval is measured, not the nominal one.
        """
        self.receive(reference_packet(30, device_id=1), T0)
        self.writer.acknowledge_all()
        self.pipeline.stopService()
        self.successResultOf(self.journal.stopService())
        journal = Journal(
            self.journal.directory, self.clock, ImmediateDiskWorker(), **journal_options()
        )
        journal.startService()
        self.addCleanup(journal.stopService)
        pipeline = self.start_pipeline(journal=journal)
        pipeline.packet_received(Packet(reference_packet(30), "p", T0 + 3708 * S))
        [entry] = journal.file.pending()
        self.assertEqual(entry.previous_arrival_ns, T0)
        second = times(self.writer.writes[-1][0])
        self.assertEqual(second[1] - second[0], 3708 * S // 30)

    def test_sameMomentSameDevice(self) -> None:
        """
        Two packets of one device at the same instant: the second sees the
        first as its predecessor (spacing 0, so the nominal interval), and
        neither's readings are mixed with the other's.
        """
        first = reference_packet(30, start=0)
        second = reference_packet(30, start=500)
        with capturedLogs():  # too close: the same moment
            self.receive(first, T0)
            self.receive(second, T0)
        self.assertEqual(len(self.writer.writes), 2)
        for lines, start in zip((w[0] for w in self.writer.writes), (0, 500), strict=True):
            self.assertEqual(len(lines), 90)
            self.assertEqual(lights(lines), [100.0 + start + i for i in range(30)])
            self.assertEqual(times(lines)[1] - times(lines)[0], 120 * S)
        self.assertEqual(self.journal.last_arrivals(), {1: T0})
        self.assertEqual(
            [e.previous_arrival_ns for e in self.journal.file.pending()], [None, T0]
        )

    def test_rejectedPacketDoesNotMoveTiming(self) -> None:
        """A packet whose header is not sane is no upload of its device."""
        self.receive(reference_packet(30), T0)
        bad = HEADER.pack(180, 3600, 0, 6, 1, 3) + bytes(180)
        with capturedLogs():
            self.receive(bad, T0 + 1800 * S)
        self.assertEqual(self.journal.last_arrivals(), {1: T0})
        self.assertEqual(journaled_arrivals(self.journal.file), {1: T0})
        self.receive(reference_packet(30), T0 + 3600 * S)
        self.assertEqual(
            times(self.writer.writes[-1][0])[1] - times(self.writer.writes[-1][0])[0],
            120 * S,
        )

    def test_everyHeaderCheckIsAQuarantine(self) -> None:
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
        self.assertEqual(self.pipeline.stats.packets_rejected.total(), len(cases))
        for reason in cases:
            self.assertEqual(self.pipeline.stats.packets_rejected[reason], 1, reason)
        self.assertEqual(
            sorted(e["reason"] for e in events if e["log_level"] == LogLevel.warn),
            sorted(cases),
        )
        quarantined = self.journal.file.quarantined()
        self.assertEqual(
            [(q.entry.packet.data, q.quarantine.reason) for q in quarantined],
            [(data, reason) for reason, data in cases.items()],
        )
        self.assertEqual(self.journal.file.status().pending, 0)

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
        self.assertEqual(self.pipeline.stats.packets_rejected.total(), 1001)
        self.assertEqual(self.journal.file.status().quarantined, 1001)

    def test_truncatedFromProtocol(self) -> None:
        """Bytes that are not a whole packet go straight into quarantine."""
        with capturedLogs() as events:
            self.pipeline.packet_rejected(
                Packet(b"\x01\x02", "192.0.2.7:9", T0),
                PacketRejected(Reason.TRUNCATED, "connection ended after 2 bytes"),
            )
        self.assertEqual(self.pipeline.stats.packets_rejected["truncated"], 1)
        [event] = events
        self.assertIn("192.0.2.7:9", event["log_format"].format(**event))
        [kept] = self.journal.file.quarantined()
        self.assertEqual(kept.entry.packet, Packet(b"\x01\x02", "192.0.2.7:9", T0))
        self.assertEqual(
            (kept.quarantine.reason, kept.quarantine.detail),
            (Reason.TRUNCATED, "connection ended after 2 bytes"),
        )
        self.assertEqual(kept.quarantine.quarantined_ns, T0)
        self.assertEqual(self.writer.writes, [])

    def test_unknownDeviceQuarantined(self) -> None:
        """
        Packets of a device the devices file does not describe are kept in
        quarantine; the log says so once per device, and how to replay them.
        """
        unknown = HEADER.pack(6, 3600, 120, 6, 9, 3) + bytes(6)
        other = HEADER.pack(6, 3600, 120, 6, 10, 3) + bytes(6)
        with capturedLogs() as events:
            for i in range(3):
                self.receive(unknown, T0 + i * S)
            self.receive(other, T0 + 5 * S)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual([e["device"] for e in warnings], [9, 10])
        text = formatEvent(warnings[0])
        self.assertIn("weather replay", text)
        self.assertIn(f"--data-dir {self.journal.directory}", text)
        self.assertIn("[devices.9]", text)
        quarantined = self.journal.file.quarantined()
        self.assertEqual(
            [q.quarantine.reason for q in quarantined], [Reason.UNKNOWN_DEVICE] * 4
        )
        self.assertEqual(
            [q.entry.packet.data for q in quarantined], [unknown, unknown, unknown, other]
        )
        # Once described, they decode with the times they arrived with.
        self.assertEqual(
            [q.entry.previous_arrival_ns for q in quarantined],
            [None, T0, T0 + S, None],
        )
        self.assertEqual(self.writer.writes, [])
        self.assertEqual(self.journal.file.status().pending, 0)

    def test_refusedPointsQuarantineThePacket(self) -> None:
        """
        Points InfluxDB refuses for good: counted, and the packet goes to
        quarantine with the HTTP status, the message and the refused lines.
        """
        result = self.receive(reference_packet(30), T0)
        self.successResultOf(result)
        lines = self.writer.writes[0][0]
        self.writer.refuse(0, status=400, message="field type conflict")
        self.assertEqual(self.pipeline.stats.points_refused, 90)
        self.assertEqual(self.pipeline.stats.packets_quarantined_refused, 1)
        self.assertEqual(self.pipeline.in_flight, 0)
        [kept] = self.journal.file.quarantined()
        self.assertEqual(kept.entry.packet.data, reference_packet(30))
        self.assertEqual(kept.quarantine.reason, REFUSED)
        self.assertEqual(kept.quarantine.detail, "HTTP 400: field type conflict")
        self.assertEqual(kept.quarantine.refused, tuple(lines))
        self.assertEqual(self.journal.file.status().pending, 0)

    def test_acknowledgedPacketLeavesTheJournal(self) -> None:
        self.receive(reference_packet(30), T0)
        self.receive(reference_packet(30, device_id=2), T0)
        self.assertEqual(self.journal.file.status().pending, 2)
        self.writer.writes[1][1].callback(None)
        self.assertEqual(
            [e.packet.data for e in self.journal.file.pending()], [reference_packet(30)]
        )
        self.writer.acknowledge_all()
        status = self.journal.file.status()
        self.assertEqual((status.pending, status.quarantined), (0, 0))
        self.assertEqual(self.journal.stats.packets_delivered, 2)

    def test_nonFiniteValuesSkippedAndCounted(self) -> None:
        profiles = parse_devices(
            '[devices.5]\nvalues = [{ name = "wind", type = "f32" }]\n'
        )
        pipeline = self.start_pipeline(profiles)
        body = struct.pack("<fff", 1.5, float("nan"), float("inf"))
        data = HEADER.pack(12, 3600, 120, 4, 5, 1) + body
        with capturedLogs() as events:
            pipeline.packet_received(Packet(data, "p", T0))
        self.assertEqual(len(self.writer.lines), 1)
        self.assertTrue(self.writer.lines[0].startswith(b"wind value=1.5 "))
        self.assertEqual(pipeline.stats.readings_not_finite, 2)
        # One warning, beside the packet's own info line.
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("2 values that are not readings", formatEvent(warning))
        [info] = [e for e in events if e["log_level"] == LogLevel.info]
        self.assertEqual(
            formatEvent(info),
            "Station 5 (no tags) from p: 3 records, 1 point; interval 120 s nominal",
        )

    def test_linesAsPerReading(self) -> None:
        """
        The writer gets, in one write, the lines of the packet's finite
        values, record by record, as encoding its readings one by one gives.
        """
        profiles = parse_devices(
            '[devices.5]\ntags = { place = "roof top" }\nvalues = [\n'
            '{ name = "wind", type = "f32" }, { name = "gust", type = "i16", '
            'scale = 0.1 },\n{ name = "rain,mm", type = "u8" }]\n'
        )
        pipeline = self.start_pipeline(profiles)
        rows = [(1.5, -3, 7), (float("nan"), 20, 0), (2.25, 0, 255), (float("-inf"), 1, 1)]
        body = b"".join(struct.pack("<fhB", *row) for row in rows)
        data = HEADER.pack(len(body), 3600, 120, 7, 5, 3) + body
        pipeline.packet_received(Packet(data, "p", T0))
        expected = oracle_lines(data, T0, TimingInputs(), profiles)
        self.assertEqual(len(expected), 10)
        self.assertEqual([lines for lines, _ in self.writer.writes], [expected])
        self.assertEqual(pipeline.stats.readings_decoded, 10)
        self.assertEqual(pipeline.stats.readings_not_finite, 2)


class TimingTests(PipelineTestCase):
    """Packets are decoded with the timing inputs journaled with them."""

    def test_repeatsNotStoredAgain(self) -> None:
        upload = 3690 * S
        self.receive(numbered_packet(range(30)), T0)
        self.receive(numbered_packet(range(30, 60)), T0 + upload)
        # The clear command was lost: records 32 to 59 come again.
        self.receive(numbered_packet(range(32, 90)), T0 + 2 * upload)
        third = self.writer.writes[2][0]
        self.assertEqual(lights(third), [float(n) for n in range(60, 90)])
        self.assertEqual(times(third)[-1], T0 + 2 * upload)
        self.assertEqual(times(third)[1] - times(third)[0], upload // 30)
        self.assertEqual(self.pipeline.stats.records_decoded, 90)

    def test_replayWritesTheSameLines(self) -> None:
        """
        A journaled packet decodes to the same lines every time, also after
        the journal is reopened: repeats and the learned ratio included.
        """
        upload = 3690 * S
        self.receive(numbered_packet(range(30)), T0)
        self.receive(numbered_packet(range(30, 60)), T0 + upload)
        self.receive(numbered_packet(range(32, 90)), T0 + 2 * upload)
        # Not measurable (half an upload late): stamped with the learned ratio.
        self.receive(numbered_packet(range(90, 120)), T0 + 3 * upload + upload // 2)
        written = [lines for lines, _ in self.writer.writes]
        entries = self.journal.file.pending()
        self.assertEqual(entries[3].timing.ratio, 1.025)
        self.assertEqual(times(written[3])[1] - times(written[3])[0], 123 * S)

        def lines(entry) -> list[bytes]:
            packet = entry.packet
            return packet_points(
                packet.data, packet.arrival_ns, entry.timing, TWO_STATIONS, LineEncoder()
            ).lines

        self.assertEqual([lines(e) for e in entries], written)
        self.assertEqual([lines(e) for e in entries], written)
        self.assertEqual(
            [
                oracle_lines(e.packet.data, e.packet.arrival_ns, e.timing, TWO_STATIONS)
                for e in entries
            ],
            written,
        )
        self.journal.stopService()
        reopened = JournalFile(self.journal.directory, create=False)
        self.addCleanup(reopened.close)
        self.assertEqual(reopened.pending(), entries)
        self.assertEqual([lines(e) for e in reopened.pending()], written)

    def test_irregularLoggedOncePerStation(self) -> None:
        """More records than the spacing explains, not repeats: said once, counted."""
        self.receive(numbered_packet(range(30)), T0)
        with capturedLogs() as events:
            self.receive(numbered_packet(range(100, 140)), T0 + 3600 * S)
            self.receive(numbered_packet(range(200, 240)), T0 + 7200 * S)
            self.receive(numbered_packet(range(0, 40), device_id=2), T0 + 3600 * S)
            self.receive(numbered_packet(range(300, 340), device_id=2), T0 + 7200 * S)
        self.assertEqual(self.pipeline.stats.packets_irregular, 3)
        said = [formatEvent(e) for e in events if "learned interval" in e["log_format"]]
        self.assertEqual(len(said), 2)
        self.assertIn("Device 1 sent 40 records, more than the 3600.0 s", said[0])
        self.assertIn("stamped 120.000 s apart", said[0])
        for lines in (self.writer.writes[1][0], self.writer.writes[2][0]):
            self.assertEqual(len(lights(lines)), 40)
            self.assertEqual(times(lines)[1] - times(lines)[0], 120 * S)


class TruncatedTests(PipelineTestCase):
    """
    A truncated packet's complete records are stored, timed as if it had
    been whole; the packet stays in quarantine, and is stored once.
    """

    UPLOAD = 3690 * S

    def truncated(self, data: bytes, arrival_ns: int) -> None:
        self.pipeline.packet_rejected(
            Packet(data, "192.0.2.7:1", arrival_ns),
            PacketRejected(Reason.TRUNCATED, f"connection ended after {len(data)} bytes"),
        )

    def whole_then_cut(self) -> bytes:
        """A whole packet, then the next one cut after 15 complete records."""
        self.receive(numbered_packet(range(30)), T0)
        self.writer.acknowledge_all()
        cut = numbered_packet(range(30, 60))[: 9 + 6 * 15 + 4]
        with capturedLogs():
            self.truncated(cut, T0 + self.UPLOAD)
        return cut

    def test_completeRecordsStored(self) -> None:
        """
        Timed with what the journal would give a whole packet, and journaled
        with it: the complete records get the times they would have had.
        Once InfluxDB has them, the quarantine says so, and they are counted.
        """
        cut = self.whole_then_cut()
        [kept] = self.journal.file.quarantined()
        self.assertEqual(
            kept.entry.timing,
            TimingInputs(T0, self.UPLOAD, 1.0, numbered_packet(range(30))[9:]),
        )
        whole = packet_points(
            numbered_packet(range(30, 60)),
            T0 + self.UPLOAD,
            kept.entry.timing,
            TWO_STATIONS,
            LineEncoder(),
        ).lines
        [(lines, _)] = self.writer.writes[1:]
        self.assertEqual(lines, whole[: 15 * 3])
        self.assertEqual(lights(lines), [float(n) for n in range(30, 45)])
        self.assertEqual(times(lines)[-1], T0 + self.UPLOAD - 15 * 123 * S)
        self.assertEqual(kept.quarantine.detail, f"connection ended after {len(cut)} bytes")
        self.assertEqual(self.pipeline.in_flight, 1)
        self.writer.acknowledge_all()
        [kept] = self.journal.file.quarantined()
        self.assertEqual(
            (kept.quarantine.reason, kept.quarantine.detail),
            (
                Reason.TRUNCATED,
                "189 bytes announced, 103 received: 15 complete records stored",
            ),
        )
        self.assertEqual(self.pipeline.stats.records_from_truncated, 15)
        self.assertEqual(self.pipeline.stats.packets_rejected["truncated"], 1)
        self.assertEqual(self.pipeline.in_flight, 0)

    def test_nextWholeTimedAgainstPreviousWhole(self) -> None:
        """A truncated packet does not advance its station's timing state."""
        self.receive(numbered_packet(range(30)), T0)
        self.receive(numbered_packet(range(30, 60)), T0 + self.UPLOAD)
        with capturedLogs():
            self.truncated(numbered_packet(range(60, 90))[:100], T0 + 2 * self.UPLOAD)
        self.receive(numbered_packet(range(90, 120)), T0 + 3 * self.UPLOAD)
        entry = self.journal.file.pending()[-1]
        self.assertEqual(entry.timing.previous_arrival_ns, T0 + self.UPLOAD)
        self.assertEqual(entry.timing.spacing_ns, 2 * self.UPLOAD)
        last = self.writer.writes[-1][0]
        self.assertEqual(lights(last), [float(n) for n in range(90, 120)])
        self.assertEqual(times(last)[1] - times(last)[0], 123 * S)
        self.assertEqual(times(last)[-1], T0 + 3 * self.UPLOAD)

    def test_nothingStoredWhenNotDecodable(self) -> None:
        """Unknown device, profile mismatch, bad header: quarantined as before."""
        cases = [
            numbered_packet(range(30), device_id=9),
            reference_packet(30)[:8] + b"\x02" + reference_packet(30)[9:],
            struct.pack("<HHHBBB", 180, 3600, 0, 6, 1, 3) + bytes(100),
        ]
        with capturedLogs():
            for data in cases:
                self.truncated(data[:100], T0)
        self.assertEqual(self.writer.writes, [])
        kept = self.journal.file.quarantined()
        self.assertEqual(
            [q.quarantine.detail for q in kept], ["connection ended after 100 bytes"] * 3
        )
        self.assertEqual(self.pipeline.stats.records_from_truncated, 0)

    def test_refusedPointsQuarantined(self) -> None:
        """Points InfluxDB refuses for good: as for a whole packet."""
        self.whole_then_cut()
        self.writer.refuse(1)
        [kept] = self.journal.file.quarantined()
        self.assertEqual(kept.quarantine.reason, REFUSED)
        self.assertEqual(self.pipeline.stats.records_from_truncated, 0)
        self.assertEqual(self.pipeline.in_flight, 0)

    def test_replayWritesTheSamePoints(self) -> None:
        """
        C{weather replay} writes the same points again (InfluxDB overwrites
        them: never stored twice), and the packet stays in quarantine.
        """
        self.whole_then_cut()
        self.writer.acknowledge_all()
        written = self.writer.writes[1][0]
        self.journal.stopService()
        devices = self.mktemp()
        with open(devices, "w") as f:
            f.write(reference_devices_toml(**{"1": "balcony", "2": "garden"}))
        influx = FakeInfluxDB()
        stub = StubTreq(influx)
        options = ReplayOptions()
        options.parseOptions(["--data-dir", self.journal.directory, "--devices", devices])
        err = io.StringIO()
        result = replay(self.clock, options, io.StringIO(), err, client=stub)
        for _ in range(50):
            stub.flush()
            self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(result), 1)
        writes = [r.body for r in influx.requests if r.path.endswith("/write")]
        replayed = b"\n".join(writes).split(b"\n")
        self.assertEqual([line for line in replayed if line], written)
        self.assertEqual(len(influx.points), 45)
        self.assertIn("1 stays in quarantine", err.getvalue())
        reopened = JournalFile(self.journal.directory, create=False)
        self.addCleanup(reopened.close)
        [kept] = reopened.quarantined()
        self.assertEqual(
            (kept.quarantine.reason, kept.quarantine.detail),
            (
                Reason.TRUNCATED,
                "189 bytes announced, 103 received: 15 complete records stored",
            ),
        )


class DurabilityTests(SynchronousTestCase):
    """With a disk as slow as the test wants: nothing is decoded before it is durable."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.worker = ManualDiskWorker()
        self.writer = RecordingWriter()
        self.journal = started_journal(self, self.clock, worker=self.worker)
        self.pipeline = PacketPipeline(
            REFERENCE_DEVICES, self.journal, self.writer, self.clock, chunk=2
        )
        self.pipeline.startService()
        self.addCleanup(self.pipeline.stopService)
        self.worker.step()  # the start-up read of the (empty) backlog

    def test_durableBeforeDecoded(self) -> None:
        first = self.pipeline.packet_received(Packet(reference_packet(start=0), "p", T0))
        second = self.pipeline.packet_received(
            Packet(reference_packet(start=100), "p", T0 + 3600 * S)
        )
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertEqual(self.writer.writes, [])
        self.assertEqual(self.journal.file.status().pending, 0)
        self.worker.step()  # the first commit: the first packet alone
        self.assertIsNone(self.successResultOf(first))
        self.assertNoResult(second)
        self.assertEqual(len(self.writer.writes), 1)
        self.assertEqual(self.journal.file.status().pending, 1)
        self.worker.step()  # the second packet
        self.assertIsNone(self.successResultOf(second))
        self.assertEqual(
            [lights(lines)[0] for lines, _ in self.writer.writes], [100.0, 200.0]
        )

    def test_deliveredOnlyOnceDurable(self) -> None:
        """An acknowledged write is recorded in the journal by a later commit."""
        self.pipeline.packet_received(Packet(reference_packet(), "p", T0))
        self.worker.step()
        self.writer.acknowledge_all()
        self.assertEqual(self.journal.file.status().pending, 1)
        self.worker.step()
        self.assertEqual(self.journal.file.status().pending, 0)
        self.assertEqual(self.worker.waiting, [])


class BacklogTests(PipelineTestCase):
    """While the writer is overloaded, packets wait in the journal, in order."""

    def packet(self, i: int) -> bytes:
        return reference_packet(3, device_id=1 + i % 2, start=100 * i)

    def receive_numbered(self, *numbers: int) -> None:
        with capturedLogs():  # too close: the same device, the same moment
            for i in numbers:
                self.successResultOf(self.receive(self.packet(i), T0))

    def sent(self) -> list[float]:
        """The first light value of each write: which packet it was."""
        return [(lights(lines)[0] - 100) / 100 for lines, _ in self.writer.writes]

    def test_overloadedWriterLeavesPacketsInTheJournal(self) -> None:
        self.receive_numbered(0, 1)
        self.assertEqual(self.sent(), [0, 1])
        self.writer.overloaded = True
        self.pipeline.writer_overloaded(True)
        self.receive_numbered(2, 3, 4)
        self.assertEqual(self.sent(), [0, 1])
        self.assertEqual(self.journal.file.status().pending, 5)
        self.assertEqual(self.pipeline.stats.packets_accepted, 2)
        self.writer.overloaded = False
        with capturedLogs():
            self.pipeline.writer_overloaded(False)
        # Read back in order; what was sent before is not sent twice.
        self.assertEqual(self.sent(), [0, 1, 2, 3, 4])
        self.assertEqual(self.pipeline.stats.packets_from_journal, 3)
        # Caught up: the next packet is decoded as it comes.
        self.receive_numbered(5)
        self.assertEqual(self.sent(), [0, 1, 2, 3, 4, 5])
        self.assertEqual(self.pipeline.stats.packets_from_journal, 3)
        self.writer.acknowledge_all()
        self.assertEqual(self.journal.file.status().pending, 0)

    def test_overloadedAgainWhileReadingTheBacklog(self) -> None:
        """A writer overloaded again mid-backlog: the rest waits its turn."""
        self.pipeline.stopService()
        pipeline = self.start_pipeline(chunk=2)
        self.writer.overloaded = True
        pipeline.writer_overloaded(True)
        with capturedLogs():
            for i in range(5):
                pipeline.packet_received(Packet(self.packet(i), "p", T0))
        self.assertEqual(self.writer.writes, [])
        write = self.writer.write

        def overload_at_second(lines):
            if len(self.writer.writes) == 1:
                self.writer.overloaded = True
                pipeline.writer_overloaded(True)
            return write(lines)

        self.writer.write = overload_at_second
        self.writer.overloaded = False
        with capturedLogs():
            pipeline.writer_overloaded(False)
        # The chunk read is decoded whole; no more is read.
        self.assertEqual(self.sent(), [0, 1])
        self.writer.write = write
        self.writer.overloaded = False
        pipeline.writer_overloaded(False)
        self.assertEqual(self.sent(), [0, 1, 2, 3, 4])

    def test_stoppedPipelineLeavesPacketsInTheJournal(self) -> None:
        self.pipeline.stopService()
        self.receive_numbered(0)
        self.assertEqual(self.writer.writes, [])
        self.assertEqual(self.journal.file.status().pending, 1)


class StartTests(SynchronousTestCase):
    """A pipeline started on a journal that holds packets sends them first."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.writer = RecordingWriter()
        # A first run journals five packets and stops before decoding them.
        journal = started_journal(self, self.clock)
        for i in range(5):
            self.successResultOf(journal.append(Packet(self.packet(i), "first", T0 + i)))
        self.successResultOf(journal.stopService())
        self.directory = journal.directory
        self.worker = ManualDiskWorker()
        self.journal = Journal(self.directory, self.clock, self.worker, **journal_options())
        self.journal.startService()
        self.addCleanup(self.stop_journal)
        self.pipeline = PacketPipeline(
            REFERENCE_DEVICES, self.journal, self.writer, self.clock, chunk=2
        )

    def stop_journal(self) -> None:
        self.worker.run_all()
        self.journal.stopService()
        self.worker.run_all()

    @staticmethod
    def packet(i: int) -> bytes:
        return reference_packet(3, start=100 * i)

    def sent(self) -> list[float]:
        return [(lights(lines)[0] - 100) / 100 for lines, _ in self.writer.writes]

    def test_backlogReadInChunks(self) -> None:
        with capturedLogs() as events:
            self.pipeline.startService()
            self.assertEqual(len(self.worker.waiting), 1)
            self.assertEqual(self.writer.writes, [])
            self.worker.step()
            self.assertEqual(self.sent(), [0, 1])
            self.worker.step()
            self.assertEqual(self.sent(), [0, 1, 2, 3])
            self.worker.step()
            self.assertEqual(self.sent(), [0, 1, 2, 3, 4])
        self.assertEqual(self.worker.waiting, [])
        self.assertEqual(self.pipeline.stats.packets_from_journal, 5)
        [info] = [
            e
            for e in events
            if e["log_level"] == LogLevel.info and not formatEvent(e).startswith("Station ")
        ]
        self.assertEqual(
            formatEvent(info), "Sending packets kept in the journal, oldest from first"
        )
        # Caught up: a new packet is decoded once durable.
        self.pipeline.packet_received(Packet(self.packet(5), "p", T0 + 3600 * S))
        self.worker.step()
        self.assertEqual(self.sent(), [0, 1, 2, 3, 4, 5])
        self.pipeline.stopService()
        self.writer.acknowledge_all()
        self.worker.run_all()
        self.assertEqual(self.journal.file.status().pending, 0)

    def test_newPacketsWaitForTheBacklog(self) -> None:
        """Packets arriving while the backlog is read are sent after it, in order."""
        self.pipeline.startService()
        self.worker.step()
        self.assertEqual(self.sent(), [0, 1])
        # The second read waits; a packet arrives and is journaled first.
        durable = self.pipeline.packet_received(Packet(self.packet(5), "p", T0 + 9))
        self.worker.step()  # the read: packets 2 and 3
        self.worker.step()  # the commit of packet 5: it waits its turn
        self.successResultOf(durable)
        self.assertEqual(self.sent(), [0, 1, 2, 3])
        self.worker.run_all()
        self.assertEqual(self.sent(), [0, 1, 2, 3, 4, 5])
        self.assertEqual(self.pipeline.stats.packets_from_journal, 6)

    def test_unreadableJournalTriedAgain(self) -> None:
        self.pipeline.retry_interval = 7.0
        self.pipeline.startService()
        _, _, reading = self.worker.waiting.pop(0)
        with capturedLogs() as events:
            reading.errback(OSError("disk I/O error"))
        [error] = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertIn("disk I/O error", formatEvent(error))
        self.assertEqual(self.worker.waiting, [])
        self.clock.advance(7)
        self.worker.run_all()
        self.assertEqual(self.sent(), [0, 1, 2, 3, 4])


@implementer(IPipelineObserver)
class RecordingObserver:
    """What the pipeline told its observer, in order."""

    def __init__(self) -> None:
        self.told: list[tuple] = []

    def packet_arrived(self, profile, peer, arrival_ns) -> None:
        self.told.append(("arrived", profile.device_id, peer, arrival_ns))

    def packet_decoded(self, decoded, peer, arrival_ns, previous_arrival_ns) -> None:
        self.told.append(("decoded", decoded.header.device_id, peer, previous_arrival_ns))

    def packet_rejected(self, profile) -> None:
        self.told.append(("rejected", None if profile is None else profile.device_id))

    def profiles_changed(self, profiles) -> None:
        self.told.append(("profiles", sorted(profiles)))


class ObserverTests(PipelineTestCase):
    """Observers learn what becomes of packets; the pipeline names none of them."""

    def test_subscribed(self) -> None:
        observer = RecordingObserver()
        verifyObject(IPipelineObserver, observer)
        verifyObject(IPipelineObserver, StationBook())
        self.pipeline.subscribe(observer)
        self.receive(reference_packet(), T0, peer="192.0.2.7:1")
        self.receive(reference_packet(device_id=2), T0 + 5 * S, peer="192.0.2.8:1")
        self.receive(reference_packet(device_id=9), T0 + 6 * S)
        self.pipeline.set_profiles(REFERENCE_DEVICES)
        self.assertEqual(
            observer.told,
            [
                ("arrived", 1, "192.0.2.7:1", T0),
                ("decoded", 1, "192.0.2.7:1", None),
                ("arrived", 2, "192.0.2.8:1", T0 + 5 * S),
                ("decoded", 2, "192.0.2.8:1", None),
                ("rejected", None),
                ("profiles", [1]),
            ],
        )

    def test_lastArrivalsAtStart(self) -> None:
        """At start-up, the journal's last arrivals are told, with no peer."""
        self.receive(reference_packet(), T0)
        self.pipeline.stopService()
        observer = RecordingObserver()
        pipeline = PacketPipeline(TWO_STATIONS, self.journal, self.writer, self.clock)
        pipeline.subscribe(observer)
        pipeline.startService()
        self.addCleanup(pipeline.stopService)
        self.assertEqual(observer.told[0], ("arrived", 1, None, T0))


class ClockWaitTests(SynchronousTestCase):
    """
    --clock-sync wait: while the wall clock is not synchronized, packets are
    journaled and acknowledged but not decoded; once it is, each is stamped
    on the synchronized clock (its arrival rebased from the boot clock, and
    journaled so), or, from an earlier boot, as it was recorded.
    """

    #: NTP's first sync steps the wall clock this far forward.
    STEP = 3 * 3600 * S
    UPLOAD = 3690 * S

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0 / S)
        self.boot_ns = 1000 * S
        self.status = FakeClockStatus(False)
        self.writer = RecordingWriter()
        self.directory = self.mktemp()

    def start(
        self, boot_id: str = "boot-2", wait: bool = True, profiles=TWO_STATIONS
    ) -> PacketPipeline:
        journal = Journal(
            self.directory,
            self.clock,
            ImmediateDiskWorker(),
            **journal_options(boot_id=boot_id),
        )
        journal.startService()
        self.addCleanup(lambda: journal.running and journal.stopService())
        gate = ClockGate(self.status, self.clock, lambda: self.boot_ns, boot_id, wait=wait)
        pipeline = PacketPipeline(
            profiles, journal, self.writer, self.clock, clock_gate=gate
        )
        with capturedLogs():
            pipeline.startService()
        self.addCleanup(lambda: pipeline.running and pipeline.stopService())
        return pipeline

    def stop(self, pipeline: PacketPipeline) -> None:
        pipeline.stopService()
        pipeline.journal.stopService()

    def advance(self, ns: int) -> None:
        """Time passes, on the wall clock and the boot clock alike."""
        self.boot_ns += ns
        self.clock.advance(ns / S)

    def receive(self, pipeline: PacketPipeline, data: bytes):
        arrival_ns = round(self.clock.seconds() * 1_000_000) * 1000
        packet = Packet(data, "192.0.2.7:1", arrival_ns, self.boot_ns)
        return pipeline.packet_received(packet)

    def synchronize(self) -> list:
        """NTP steps the wall clock and the kernel says it is synchronized."""
        self.clock.advance(self.STEP / S)
        self.status.is_synchronized = True
        with capturedLogs() as events:
            self.advance(10 * S)
        return [formatEvent(e) for e in events]

    def test_waitHoldsThenRebases(self) -> None:
        pipeline = self.start()
        first = self.receive(pipeline, numbered_packet(range(30)))
        self.advance(self.UPLOAD)
        self.receive(pipeline, numbered_packet(range(30, 60)))
        self.assertIsNone(self.successResultOf(first))  # acknowledged
        self.advance(60 * S)
        self.assertEqual(self.writer.writes, [])
        self.assertEqual(pipeline.clock_waiting, 2)
        self.assertEqual(pipeline.clock_waiting_since, T0 / S)
        said = self.synchronize()
        self.assertIn("decoding the 2 packets that waited for it", said[0])
        self.assertEqual(pipeline.clock_waiting, 0)
        self.assertIsNone(pipeline.clock_waiting_since)
        # Stamped where they arrived on the synchronized clock.
        self.assertEqual(len(self.writer.writes), 2)
        first_lines, second_lines = (lines for lines, _ in self.writer.writes)
        self.assertEqual(times(first_lines)[-1], T0 + self.STEP)
        self.assertEqual(times(second_lines)[-1], T0 + self.STEP + self.UPLOAD)
        self.assertEqual(times(second_lines)[1] - times(second_lines)[0], 123 * S)
        # ... and journaled so: a replay stamps them the same.
        stored = [e.packet.arrival_ns for e in pipeline.journal.file.pending()]
        self.assertEqual(stored, [T0 + self.STEP, T0 + self.STEP + self.UPLOAD])
        self.assertEqual(pipeline.stats.packets_clock_rebased, 2)
        # Packets after the sync are decoded as they come.
        self.receive(pipeline, numbered_packet(range(60, 90)))
        self.assertEqual(len(self.writer.writes), 3)
        now = round(self.clock.seconds() * S)
        self.assertEqual(times(self.writer.writes[2][0])[-1], now)
        self.assertEqual(pipeline.stats.packets_clock_rebased, 2)

    def test_replayAfterCrashSameTimes(self) -> None:
        """
        The server stops after the sync, before InfluxDB has the points:
        the next start, synchronized, writes exactly the same lines.
        """
        pipeline = self.start()
        self.receive(pipeline, numbered_packet(range(30)))
        self.synchronize()
        written = [lines for lines, _ in self.writer.writes]
        self.stop(pipeline)
        self.writer = RecordingWriter()
        self.advance(600 * S)
        pipeline = self.start()
        self.assertEqual([lines for lines, _ in self.writer.writes], written)
        self.assertEqual(pipeline.stats.packets_clock_rebased, 0)

    def test_replayRequestRebased(self) -> None:
        """
        A packet quarantined (unknown device) while the clock waited, then
        replayed through the server once it is synchronized: stamped on the
        synchronized clock, as the backlog reader stamps packets, and journaled
        so: a restart before InfluxDB has them writes the same lines.
        """
        pipeline = self.start()
        with capturedLogs():
            self.receive(pipeline, numbered_packet(range(30), device_id=7))
        self.synchronize()
        self.assertEqual(self.writer.writes, [])
        pipeline.set_profiles(SHED)
        pipeline.journal.file.request_replay([1], "asked", T0)
        with capturedLogs():
            pipeline.take_replays()
        [(lines, _)] = self.writer.writes
        self.assertEqual(times(lines)[-1], T0 + self.STEP)
        [pending] = pipeline.journal.file.pending()
        self.assertEqual(pending.packet.arrival_ns, T0 + self.STEP)
        self.stop(pipeline)
        self.writer = RecordingWriter()
        self.advance(600 * S)
        with capturedLogs():
            self.start(profiles=SHED)
        self.assertEqual([written for written, _ in self.writer.writes], [lines])

    def test_heldAcrossReboot(self) -> None:
        """
        A packet held when the machine rebooted cannot be rebased: it is
        decoded with the wall time recorded at its arrival, counted, logged.
        """
        pipeline = self.start(boot_id="boot-1")
        self.receive(pipeline, numbered_packet(range(30)))
        recorded = T0
        self.stop(pipeline)
        self.boot_ns = 20 * S  # the machine booted again
        pipeline = self.start(boot_id="boot-2")
        self.assertEqual(pipeline.clock_waiting, 1)  # counted from the journal
        self.receive(pipeline, numbered_packet(range(30), device_id=2))
        self.assertEqual(pipeline.clock_waiting, 2)
        said = self.synchronize()
        self.assertTrue(any("arrived before this machine last booted" in s for s in said))
        self.assertEqual(pipeline.stats.packets_clock_unchecked, 1)
        self.assertEqual(pipeline.stats.packets_clock_rebased, 1)
        old, new = (lines for lines, _ in self.writer.writes)
        self.assertEqual(times(old)[-1], recorded)
        self.assertEqual(times(new)[-1], T0 + self.STEP)

    def test_trustNeverHolds(self) -> None:
        pipeline = self.start(wait=False)
        self.receive(pipeline, numbered_packet(range(30)))
        self.assertEqual(len(self.writer.writes), 1)
        self.assertEqual(times(self.writer.writes[0][0])[-1], T0)
        self.assertEqual(pipeline.clock_waiting, 0)
        self.synchronize()
        self.assertEqual(len(self.writer.writes), 1)
        self.assertEqual(pipeline.stats.packets_clock_rebased, 0)

    def test_synchronizedAtStart(self) -> None:
        """Nothing waits; the journal's backlog is decoded at once."""
        self.status.is_synchronized = True
        pipeline = self.start()
        self.receive(pipeline, numbered_packet(range(30)))
        self.assertEqual(len(self.writer.writes), 1)
        self.assertEqual(times(self.writer.writes[0][0])[-1], T0)
        self.assertEqual(pipeline.clock_waiting, 0)


class ReplayRequestTests(SynchronousTestCase):
    """
    Packets weather replay asks the running server to decode again: device 7
    was unknown, its packets went to quarantine; then it is described.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0 / S)
        self.writer = RecordingWriter()
        self.journal = started_journal(self, self.clock)
        self.book = StationBook()
        self.pipeline = self.start(self.journal, REFERENCE_DEVICES)
        with capturedLogs():
            for i in range(3):
                self.successResultOf(
                    self.pipeline.packet_received(
                        Packet(
                            reference_packet(30, device_id=7, start=100 * i),
                            "192.0.2.7:1",
                            T0 + i * 3690 * S,
                        )
                    )
                )
        self.assertEqual(self.journal.file.status().quarantined, 3)

    def start(self, journal: Journal, profiles, **options) -> PacketPipeline:
        pipeline = PacketPipeline(profiles, journal, self.writer, self.clock, **options)
        pipeline.subscribe(self.book)
        pipeline.startService()
        self.addCleanup(pipeline.stopService)
        return pipeline

    def request(self, *ids: int) -> None:
        self.journal.file.request_replay(ids or (1, 2, 3), "asked", T0)

    def tool_lines(self, profiles) -> list[list[bytes]]:
        """What weather replay itself writes for the packets in quarantine."""
        settings = SimpleNamespace(profiles=profiles)
        return [
            points_for(q, settings, LineEncoder()).lines
            for q in self.journal.file.quarantined()
        ]

    def test_decodedAsTheToolDecodes(self) -> None:
        """
        The same points as weather replay writes (recorded arrival and
        timing); delivered, they leave the journal; the station book has
        the station and its readings; one line says how many.
        """
        self.pipeline.set_profiles(SHED)
        expected = self.tool_lines(SHED)
        self.request()
        with capturedLogs() as events:
            self.pipeline.take_replays()
        self.assertEqual([lines for lines, _ in self.writer.writes], expected)
        self.assertEqual(times(expected[1])[1] - times(expected[1])[0], 123 * S)
        self.assertEqual(self.journal.file.status().quarantined, 0)
        self.assertEqual(len(self.journal.file.pending()), 3)  # until InfluxDB has them
        self.writer.acknowledge_all()
        self.assertEqual(self.journal.file.status().pending, 0)
        self.assertEqual(self.pipeline.stats.packets_replayed, 3)
        self.assertEqual(self.pipeline.stats.packets_from_journal, 0)
        station = self.book.get(7)
        self.assertEqual((station.packets, station.records), (3, 90))
        self.assertEqual(station.last_seen_ns, T0 + 2 * 3690 * S)
        self.assertEqual(station.latest["light"].time_ns, T0 + 2 * 3690 * S)
        self.assertEqual(
            [formatEvent(e) for e in events if formatEvent(e).startswith("Replaying")],
            ["Replaying 3 packets requested by weather replay"],
        )

    def test_rejectedAgain(self) -> None:
        """Still not described: back in quarantine with why, nothing written."""
        self.request(2)
        with capturedLogs():
            self.pipeline.take_replays()
        self.assertEqual(self.writer.writes, [])
        self.assertEqual(
            self.journal.file.reasons([1, 2, 3]),
            {1: "unknown-device", 2: "unknown-device", 3: "unknown-device"},
        )
        self.assertEqual(self.pipeline.stats.packets_replayed, 0)
        self.assertIsNone(self.book.get(7))

    def test_refusedByInfluxDB(self) -> None:
        self.pipeline.set_profiles(SHED)
        self.request(1)
        with capturedLogs():
            self.pipeline.take_replays()
        self.writer.refuse(0)
        self.assertEqual(self.journal.file.reasons([1]), {1: REFUSED})

    def test_truncatedStoresItsRecordsAndStays(self) -> None:
        """As weather replay does: its complete records written, still truncated."""
        data = reference_packet(30, device_id=7)[:103]
        with capturedLogs():
            self.pipeline.packet_rejected(
                Packet(data, "192.0.2.7:1", T0 + 3 * 3690 * S),
                PacketRejected(Reason.TRUNCATED, "cut"),
            )
        self.pipeline.set_profiles(SHED)
        [expected] = self.tool_lines(SHED)[3:]
        self.request(4)
        self.pipeline.take_replays()
        self.assertEqual(self.writer.writes[-1][0], expected)
        self.assertEqual(self.journal.file.reasons([4]), {4: "replay-requested"})
        self.writer.acknowledge_all()
        [kept] = [q for q in self.journal.file.quarantined() if q.entry.id == 4]
        self.assertEqual(
            (kept.quarantine.reason, kept.quarantine.detail),
            (
                Reason.TRUNCATED,
                "189 bytes announced, 103 received: 15 complete records stored",
            ),
        )
        self.assertEqual(self.pipeline.stats.packets_replayed, 0)

    def test_overloadedWriterWaits(self) -> None:
        """Read a chunk at a time, and none while the writer is overloaded."""
        self.pipeline.stopService()
        pipeline = self.start(self.journal, SHED, chunk=2)
        self.request()
        self.writer.overloaded = True
        pipeline.writer_overloaded(True)
        pipeline.take_replays()
        self.assertEqual(self.writer.writes, [])
        self.writer.overloaded = False
        pipeline.writer_overloaded(False)
        self.assertEqual(len(self.writer.writes), 3)
        self.assertEqual(pipeline.stats.packets_replayed, 3)

    def test_overloadedBetweenChunks(self) -> None:
        self.pipeline.stopService()
        pipeline = self.start(self.journal, SHED, chunk=2)
        self.request()

        def write(lines):
            self.writer.overloaded = True
            pipeline.writer_overloaded(True)
            return RecordingWriter.write(self.writer, lines)

        self.writer.write = write
        pipeline.take_replays()
        self.assertEqual(len(self.writer.writes), 2)  # the first chunk
        del self.writer.write
        self.writer.overloaded = False
        pipeline.writer_overloaded(False)
        self.assertEqual(len(self.writer.writes), 3)
        self.writer.acknowledge_all()
        self.assertEqual(self.journal.file.status().pending, 0)
        self.assertEqual(pipeline.stats.packets_from_journal, 0)  # none twice

    def test_crashInTheMiddle(self) -> None:
        """
        Stopped before InfluxDB has the points: pending, read back at the
        next start and written the same; a request not yet taken is taken
        up at the start.
        """
        self.pipeline.set_profiles(SHED)
        expected = self.tool_lines(SHED)
        self.request(1, 2)
        self.pipeline.take_replays()
        self.request(3)  # after the SIGHUP: waits for the next
        self.pipeline.stopService()
        self.successResultOf(self.journal.stopService())
        self.writer.writes.clear()
        journal = Journal(
            self.journal.directory, self.clock, ImmediateDiskWorker(), **journal_options()
        )
        journal.startService()
        self.addCleanup(journal.stopService)
        with capturedLogs():
            pipeline = self.start(journal, SHED)
        self.assertEqual([lines for lines, _ in self.writer.writes], expected)
        self.assertEqual(pipeline.stats.packets_from_journal, 2)
        self.assertEqual(pipeline.stats.packets_replayed, 1)
        self.writer.acknowledge_all()
        self.assertEqual(journal.file.status().pending, 0)
        self.assertEqual(journal.file.status().quarantined, 0)

    def test_newRequestsDuringABatch(self) -> None:
        """
        A second SIGHUP while a batch is under way: its requests are taken
        up too, those before the batch's place included.
        """
        self.pipeline.stopService()
        pipeline = self.start(self.journal, SHED, chunk=1)
        self.request(3)

        def write(lines):
            self.writer.overloaded = True
            pipeline.writer_overloaded(True)
            return RecordingWriter.write(self.writer, lines)

        self.writer.write = write
        pipeline.take_replays()  # packet 3, then a pause: overloaded
        self.assertEqual(len(self.writer.writes), 1)
        self.request(1)
        pipeline.take_replays()
        del self.writer.write
        self.writer.overloaded = False
        pipeline.writer_overloaded(False)
        self.assertEqual(pipeline.stats.packets_replayed, 2)
        self.assertEqual(
            self.journal.file.reasons([1, 2, 3]), {1: None, 2: "unknown-device", 3: None}
        )
        self.assertEqual(len(self.writer.writes), 2)
