"""
The quarantine's budget from arrival to the operator's pages: what is not a
described station's packet is told from its header, kept in quarantine while
the budget lasts and refused before it is acknowledged once it is spent;
described stations are served whatever the quarantine holds.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    HEADER,
    RecordingWriter,
    factory_options,
    reference_devices_toml,
    reference_packet,
    started_journal,
)
from tests.unit.test_monitoring import MonitoringTestCase
from weather.core.devices import parse_devices
from weather.core.packet import MAX_PACKET_SIZE, Packet, PacketRejected, Reason
from weather.server.counts import SourceCounts
from weather.server.interfaces import PacketRefused
from weather.server.pipeline import (
    REFUSAL_LOG_PERIOD,
    REJECTION_REASONS,
    PacketPipeline,
    peer_source,
    stray,
)
from weather.server.protocol import ACK, StationFactory

S = 1_000_000_000
T0 = 1_700_000_000 * S
TWO_STATIONS = parse_devices(reference_devices_toml(**{"1": "balcony", "2": "garden"}))
#: 999 bytes of device 200, which the devices file does not describe.
JUNK = reference_packet(165, device_id=200)
#: Device 1 with four values per record: its profile says three.
MISMATCHED = HEADER.pack(8, 3600, 120, 8, 1, 4) + bytes(8)
ZERO_WAKE = HEADER.pack(6, 0, 120, 6, 1, 3) + bytes(6)


def warnings(events) -> list[str]:
    return [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]


class StrayTests(SynchronousTestCase):
    """What is a described station's packet, told from the header alone."""

    def test_described(self) -> None:
        self.assertIsNone(stray(reference_packet(30), TWO_STATIONS))
        self.assertIsNone(stray(reference_packet(30, device_id=2), TWO_STATIONS))
        # Described, though not decodable: a described station's all the same.
        self.assertIsNone(stray(MISMATCHED, TWO_STATIONS))
        # A truncated packet of a described station: its header is whole.
        self.assertIsNone(stray(reference_packet(30)[:50], TWO_STATIONS))

    def test_notDescribed(self) -> None:
        cases = {
            JUNK: Reason.UNKNOWN_DEVICE,
            ZERO_WAKE: Reason.ZERO_WAKE_EVERY,
            HEADER.pack(7, 3600, 120, 6, 1, 3) + bytes(7): Reason.RAGGED_RECORDS,
            b"\x01\x02\x03": Reason.TRUNCATED,
        }
        for data, reason in cases.items():
            error = stray(data, TWO_STATIONS)
            self.assertIsInstance(error, PacketRejected)
            self.assertEqual(error.reason, reason, data)

    def test_peerSource(self) -> None:
        self.assertEqual(peer_source("192.0.2.7:40123"), "192.0.2.7")
        self.assertEqual(peer_source("[2001:db8::1]:8266"), "2001:db8::1")
        self.assertEqual(peer_source("/run/weather.sock"), "/run/weather.sock")


class SourceCountsTests(SynchronousTestCase):
    def test_boundedSources(self) -> None:
        """Past max_sources, new sources count together: the table stays small."""
        counts = SourceCounts(REJECTION_REASONS, max_sources=3)
        for i in range(10):
            counts.add(f"192.0.2.{i}", Reason.UNKNOWN_DEVICE)
        counts.add("192.0.2.0", Reason.TRUNCATED)
        self.assertEqual(counts[("192.0.2.0", Reason.UNKNOWN_DEVICE)], 1)
        self.assertEqual(counts[("192.0.2.0", Reason.TRUNCATED)], 1)
        self.assertEqual(counts[(SourceCounts.OTHER, Reason.UNKNOWN_DEVICE)], 7)
        self.assertEqual(len(counts), 5)
        self.assertEqual(counts.total(), 11)

    def test_unknownReason(self) -> None:
        counts = SourceCounts(REJECTION_REASONS)
        self.assertRaises(KeyError, counts.add, "192.0.2.1", "no-such-reason")


class PipelineBudgetTests(SynchronousTestCase):
    """
    A budget of 1000 bytes: the first 999-byte junk packet is kept, and the
    second (the quarantine then holds 999 bytes, less than the budget); the
    budget is then spent.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0 / S)
        self.writer = RecordingWriter()
        self.journal = started_journal(self, self.clock, quarantine_max_bytes=1000)
        self.pipeline = PacketPipeline(TWO_STATIONS, self.journal, self.writer, self.clock)
        self.pipeline.startService()
        self.addCleanup(self.pipeline.stopService)

    def receive(self, data: bytes, peer: str = "192.0.2.66:1"):
        return self.pipeline.packet_received(Packet(data, peer, T0))

    def refused(self, data: bytes, peer: str = "192.0.2.66:1") -> None:
        self.failureResultOf(self.receive(data, peer), PacketRefused)

    def spend(self) -> None:
        with capturedLogs():
            for _ in range(2):
                self.assertIsNone(self.successResultOf(self.receive(JUNK)))
        self.assertTrue(self.journal.quarantine_full)

    def test_junkRefusedOnceTheBudgetIsSpent(self) -> None:
        self.spend()
        with capturedLogs():
            for _ in range(5):
                self.refused(JUNK)
            self.refused(ZERO_WAKE)
        quarantined = self.journal.file.quarantined()
        self.assertEqual(len(quarantined), 2)
        self.assertEqual(self.pipeline.stats.packets_rejected[Reason.UNKNOWN_DEVICE], 2)
        refused = self.pipeline.stats.packets_refused
        self.assertEqual(
            dict(refused),
            {
                ("192.0.2.66", Reason.UNKNOWN_DEVICE): 5,
                ("192.0.2.66", Reason.ZERO_WAKE_EVERY): 1,
            },
        )
        self.assertEqual(self.writer.writes, [])

    def test_describedStationsServedWhateverTheQuarantineHolds(self) -> None:
        """
        Over the budget, a described station's packet is journaled and
        written; one that cannot be decoded, and one cut short, are kept in
        quarantine all the same (the budget is for what is not a station's).
        """
        self.spend()
        with capturedLogs():
            self.assertIsNone(self.successResultOf(self.receive(reference_packet(2))))
            self.assertIsNone(self.successResultOf(self.receive(MISMATCHED)))
            self.pipeline.packet_rejected(
                Packet(reference_packet(30)[:50], "192.0.2.7:1", T0),
                PacketRejected(Reason.TRUNCATED, "connection ended after 50 bytes"),
            )
        self.assertEqual(len(self.writer.writes), 2)  # the packet, the cut one's records
        reasons = [q.quarantine.reason for q in self.journal.file.quarantined()]
        self.assertEqual(
            reasons,
            [
                Reason.UNKNOWN_DEVICE,
                Reason.UNKNOWN_DEVICE,
                Reason.PROFILE_MISMATCH,
                Reason.TRUNCATED,
            ],
        )
        self.assertEqual(self.pipeline.stats.packets_refused.total(), 0)

    def test_rejectedBytesOverTheBudget(self) -> None:
        """Cut-off bytes of no described station, and oversized ones, are not kept."""
        self.spend()
        cases = [
            (JUNK[:50], Reason.TRUNCATED),
            (b"\x01\x02", Reason.TRUNCATED),
            (HEADER.pack(60000, 3600, 120, 6, 1, 3) + bytes(400), Reason.OVERSIZED),
        ]
        with capturedLogs():
            for data, reason in cases:
                self.pipeline.packet_rejected(
                    Packet(data, "192.0.2.66:2", T0), PacketRejected(reason, "cut")
                )
        self.assertEqual(len(self.journal.file.quarantined()), 2)
        self.assertEqual(
            dict(self.pipeline.stats.packets_refused),
            {("192.0.2.66", Reason.TRUNCATED): 2, ("192.0.2.66", Reason.OVERSIZED): 1},
        )

    def test_loggedOncePerSourceAndReason(self) -> None:
        self.spend()
        with capturedLogs() as events:
            for _ in range(100):
                self.refused(JUNK)
                self.refused(ZERO_WAKE)
                self.refused(JUNK, peer="198.51.100.9:7")
        lines = warnings(events)
        self.assertEqual(len(lines), 3)
        self.assertIn("192.0.2.66:1", lines[0])
        self.assertIn("not acknowledged (unknown-device", lines[0])
        self.assertIn("--quarantine-max-size", lines[0])
        self.assertNotIn("InfluxDB", lines[0])
        self.assertIn("198.51.100.9:7", lines[2])
        self.clock.advance(REFUSAL_LOG_PERIOD)
        with capturedLogs() as events:
            self.refused(JUNK)
        [line] = warnings(events)
        self.assertIn("99 more like this", line)


class ProtocolTests(SynchronousTestCase):
    """A refused packet gets no ACK byte, and its connection is cut."""

    def setUp(self) -> None:
        clock = Clock()
        clock.advance(T0 / S)
        journal = started_journal(self, clock, quarantine_max_bytes=0)
        pipeline = PacketPipeline(TWO_STATIONS, journal, RecordingWriter(), clock)
        pipeline.startService()
        self.addCleanup(pipeline.stopService)
        self.pipeline = pipeline
        self.factory = StationFactory(
            pipeline, clock, **factory_options(clock, max_packet_size=MAX_PACKET_SIZE)
        )

    def connect(self, host: str) -> tuple:
        peer = IPv4Address("TCP", host, 40000)
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, None)
        return protocol, transport

    def test_refusedThenStation(self) -> None:
        junk, junk_transport = self.connect("192.0.2.66")
        station, station_transport = self.connect("192.0.2.7")
        with capturedLogs():
            junk.dataReceived(JUNK + JUNK[:100])
            station.dataReceived(reference_packet(2))
        self.assertEqual(junk_transport.value(), b"")
        self.assertTrue(junk_transport.disconnecting)
        self.assertEqual(station_transport.value(), ACK)
        self.assertFalse(station_transport.disconnecting)
        self.assertEqual(self.factory.stats.packets_acknowledged, 1)
        self.assertEqual(
            self.pipeline.stats.packets_refused[("192.0.2.66", Reason.UNKNOWN_DEVICE)], 1
        )


class OperatorViewTests(MonitoringTestCase):
    """The quarantine's use against its budget on /metrics, /health and /."""

    ARGS = MonitoringTestCase.ARGS + (
        "--quarantine-max-size",
        "1000",
        "--max-packet-size",
        str(MAX_PACKET_SIZE),
    )
    JUNK_PEER = IPv4Address("TCP", "192.0.2.66", 40123)

    def spend(self) -> None:
        self.service.startService()
        with capturedLogs():
            for _ in range(3):
                self.send(JUNK, peer=self.JUNK_PEER)

    def test_metrics(self) -> None:
        self.spend()
        samples = self.metrics()
        self.assertEqual(samples["weather_quarantine_max_bytes"], {(): 1000})
        self.assertEqual(samples["weather_quarantine_full"], {(): 1})
        self.assertEqual(
            samples["weather_quarantine_bytes"],
            {(): self.service.journal.quarantined_bytes},
        )
        self.assertGreaterEqual(self.service.journal.quarantined_bytes, 1000)
        self.assertEqual(samples["weather_journal_bytes"], {(): 0})
        self.assertEqual(
            samples["weather_packets_refused_total"],
            {(("reason", Reason.UNKNOWN_DEVICE), ("source", "192.0.2.66")): 1},
        )

    def test_healthStaysOk(self) -> None:
        """A spent quarantine is shown, but stations are served: healthy."""
        self.spend()
        response, body = self.get("/health")
        report = json.loads(body)
        self.assertEqual(response.code, 200, report)
        self.assertEqual(report["quarantine_max_bytes"], 1000)
        self.assertTrue(report["quarantine_full"])
        self.assertEqual(report["quarantine_bytes"], self.service.journal.quarantined_bytes)

    def test_statusPage(self) -> None:
        self.spend()
        _, body = self.get("/")
        used = self.service.journal.quarantined_bytes
        self.assertIn(
            f'class="bad">quarantine {used / 1024:.1f} KiB of 1000 bytes</span>',
            body.decode(),
        )
