"""
Tests for L{weather.core.packet}: the header, its checks and the stream framer.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.support import header_bytes
from weather.core.packet import (
    HEADER_SIZE,
    MAX_PACKET_SIZE,
    Header,
    PacketFramer,
    PacketRejected,
    Reason,
    check_header,
    read_header,
)


def make_packet(records: int = 30, device_id: int = 1, fill: int = 0) -> bytes:
    """A reference-layout packet with C{records} 6-byte records."""
    body = b"".join(
        struct.pack("<HHH", (fill + i) & 0xFFFF, 25000 + i * 4, 26000 + i * 4)
        for i in range(records)
    )
    return header_bytes(len(body), device_id=device_id) + body


class HeaderTests(SynchronousTestCase):
    """L{read_header} and L{check_header}."""

    def test_readReference(self) -> None:
        header = read_header(header_bytes(180))
        self.assertEqual(header, Header(180, 3600, 120, 6, 1, 3))
        self.assertEqual(header.record_count, 30)
        self.assertEqual(header.packet_size, 189)
        check_header(header)

    def test_immutable(self) -> None:
        header = read_header(header_bytes(180))
        with self.assertRaises(AttributeError):
            header.bytes_ready = 6  # type: ignore[misc]
        self.assertEqual(header.bytes_ready, 180)
        self.assertEqual(hash(header), hash(Header(180, 3600, 120, 6, 1, 3)))

    def test_readIsLittleEndian(self) -> None:
        data = bytes([0x34, 0x12, 0x10, 0x0E, 0x78, 0x00, 0x06, 0x07, 0x03])
        self.assertEqual(read_header(data), Header(0x1234, 3600, 120, 6, 7, 3))

    def test_readIgnoresTrailingBytes(self) -> None:
        packet = make_packet(2)
        self.assertEqual(read_header(packet), Header(12, 3600, 120, 6, 1, 3))

    def test_readTruncated(self) -> None:
        data = header_bytes(180)
        for size in range(HEADER_SIZE):
            with self.assertRaises(PacketRejected) as caught:
                read_header(data[:size])
            self.assertEqual(caught.exception.reason, Reason.TRUNCATED)
            self.assertIn(str(size), caught.exception.detail)

    def assertRejected(self, header: Header, reason: str) -> PacketRejected:
        with self.assertRaises(PacketRejected) as caught:
            check_header(header)
        self.assertEqual(caught.exception.reason, reason)
        self.assertEqual(str(caught.exception), f"{reason}: {caught.exception.detail}")
        return caught.exception

    def test_zeroMeasurementEvery(self) -> None:
        self.assertRejected(
            read_header(header_bytes(180, measurement_every=0)),
            Reason.ZERO_MEASUREMENT_EVERY,
        )

    def test_zeroWakeEvery(self) -> None:
        self.assertRejected(
            read_header(header_bytes(180, wake_every=0)), Reason.ZERO_WAKE_EVERY
        )

    def test_zeroBytesPerMeasurement(self) -> None:
        self.assertRejected(
            read_header(header_bytes(180, bytes_per_measurement=0)),
            Reason.ZERO_BYTES_PER_MEASUREMENT,
        )

    def test_zeroSensorCount(self) -> None:
        self.assertRejected(
            read_header(header_bytes(180, sensor_count=0)), Reason.ZERO_SENSOR_COUNT
        )

    def test_raggedRecords(self) -> None:
        for bytes_ready in (1, 5, 7, 179, 181):
            error = self.assertRejected(
                read_header(header_bytes(bytes_ready)), Reason.RAGGED_RECORDS
            )
            self.assertIn(str(bytes_ready), error.detail)

    def test_emptyPacketAccepted(self) -> None:
        header = read_header(header_bytes(0))
        check_header(header)
        self.assertEqual(header.record_count, 0)

    def test_otherLayoutsAccepted(self) -> None:
        check_header(Header(65535, 1, 1, 255, 255, 255))  # 257 records of 255
        check_header(Header(12, 60, 10, 4, 2, 1))

    def test_firstProblemReported(self) -> None:
        self.assertRejected(Header(7, 0, 0, 0, 1, 0), Reason.ZERO_MEASUREMENT_EVERY)
        self.assertRejected(Header(7, 0, 1, 0, 1, 0), Reason.ZERO_WAKE_EVERY)


class FramerTests(SynchronousTestCase):
    """L{PacketFramer}."""

    def test_wholePacket(self) -> None:
        framer = PacketFramer()
        packet = make_packet()
        self.assertEqual(framer.feed(packet), [packet])
        self.assertEqual(len(framer), 0)
        self.assertEqual(framer.take_pending(), b"")
        self.assertIsNone(framer.error)

    def test_splitAtEveryOffset(self) -> None:
        packet = make_packet()
        for cut in range(len(packet) + 1):
            framer = PacketFramer()
            first = framer.feed(packet[:cut])
            self.assertEqual(first, [packet] if cut == len(packet) else [], cut)
            self.assertEqual(len(framer), cut % len(packet))
            second = framer.feed(packet[cut:])
            self.assertEqual(first + second, [packet], cut)
            self.assertEqual(len(framer), 0)

    def test_splitTwiceAtEveryOffset(self) -> None:
        packet = make_packet(3)
        for a in range(len(packet) + 1):
            for b in range(a, len(packet) + 1):
                framer = PacketFramer()
                got = framer.feed(packet[:a])
                got += framer.feed(packet[a:b])
                got += framer.feed(packet[b:])
                self.assertEqual(got, [packet], (a, b))

    def test_byteByByte(self) -> None:
        packets = [make_packet(30), make_packet(0), make_packet(2, device_id=7)]
        stream = b"".join(packets)
        framer = PacketFramer()
        got = []
        completed_at = []
        for i in range(len(stream)):
            out = framer.feed(stream[i : i + 1])
            self.assertLessEqual(len(out), 1)
            if out:
                completed_at.append(i + 1)
            got += out
        self.assertEqual(got, packets)
        self.assertEqual(completed_at, [189, 198, 198 + 21])
        self.assertEqual(framer.take_pending(), b"")

    def test_emptyFeed(self) -> None:
        framer = PacketFramer()
        self.assertEqual(framer.feed(b""), [])
        self.assertEqual(len(framer), 0)

    def test_severalPacketsInOneFeed(self) -> None:
        packets = [make_packet(30, fill=1), make_packet(1, fill=2), make_packet(0)]
        framer = PacketFramer()
        self.assertEqual(framer.feed(b"".join(packets)), packets)
        self.assertEqual(len(framer), 0)

    def test_packetsAcrossFeeds(self) -> None:
        a, b, c = make_packet(30, fill=1), make_packet(5, fill=2), make_packet(58)
        stream = a + b + c
        framer = PacketFramer()
        # The first feed ends inside b's header, the second inside c's body.
        self.assertEqual(framer.feed(stream[: len(a) + 4]), [a])
        self.assertEqual(len(framer), 4)
        self.assertEqual(framer.feed(stream[len(a) + 4 : len(a) + len(b) + 20]), [b])
        self.assertEqual(len(framer), 20)
        self.assertEqual(framer.feed(stream[len(a) + len(b) + 20 :]), [c])

    def test_takePendingLeftover(self) -> None:
        packet = make_packet(4)
        framer = PacketFramer()
        self.assertEqual(framer.feed(packet + packet[:13]), [packet])
        self.assertEqual(len(framer), 13)
        self.assertEqual(framer.take_pending(), packet[:13])
        self.assertEqual(len(framer), 0)
        self.assertEqual(framer.take_pending(), b"")
        # The framer starts afresh after take_pending.
        self.assertEqual(framer.feed(packet), [packet])

    def test_takePendingPartialHeader(self) -> None:
        framer = PacketFramer()
        self.assertEqual(framer.feed(b"\x01\x02\x03"), [])
        self.assertEqual(framer.take_pending(), b"\x01\x02\x03")

    def test_oversizedHeader(self) -> None:
        framer = PacketFramer(max_packet_size=100)
        big = header_bytes(92)  # 9 + 92 = 101 > 100
        self.assertEqual(framer.feed(big[:8]), [])
        self.assertIsNone(framer.error)
        self.assertEqual(framer.feed(big[8:]), [])
        self.assertIsNotNone(framer.error)
        self.assertEqual(framer.error.reason, Reason.OVERSIZED)
        self.assertIn("101", framer.error.detail)
        self.assertIn("100", framer.error.detail)

    def test_atMaximumAccepted(self) -> None:
        framer = PacketFramer(max_packet_size=99)
        packet = make_packet(15)  # 9 + 90
        self.assertEqual(framer.feed(packet), [packet])
        self.assertIsNone(framer.error)

    def test_oversizedStopsFramingAndBoundsBuffer(self) -> None:
        framer = PacketFramer(max_packet_size=100)
        good = make_packet(2)
        bad = header_bytes(200)
        stream = good + bad + bytes(range(256)) * 2 + make_packet(1)
        self.assertEqual(framer.feed(stream), [good])
        self.assertEqual(framer.error.reason, Reason.OVERSIZED)
        self.assertEqual(len(framer), 100)
        # Valid packets after the bad header are not framed any more.
        self.assertEqual(framer.feed(make_packet(1) * 10), [])
        self.assertEqual(len(framer), 100)
        self.assertEqual(framer.error.reason, Reason.OVERSIZED)
        pending = framer.take_pending()
        self.assertEqual(pending, (bad + bytes(range(256)))[:100])

    def test_defaultMaximumFitsAnyHeader(self) -> None:
        self.assertEqual(MAX_PACKET_SIZE, HEADER_SIZE + 0xFFFF)
        framer = PacketFramer()
        self.assertEqual(framer.feed(header_bytes(0xFFFF, bytes_per_measurement=1)), [])
        self.assertIsNone(framer.error)
        self.assertEqual(framer.feed(bytes(0xFFFF - 1)), [])
        out = framer.feed(b"\x00\x01")
        self.assertEqual(len(out), 1)
        self.assertEqual(len(out[0]), MAX_PACKET_SIZE)
        self.assertEqual(framer.take_pending(), b"\x01")


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    record_size = draw(st.integers(1, 12))
    records = draw(st.integers(0, 20))
    body = draw(st.binary(min_size=records * record_size, max_size=records * record_size))
    return (
        header_bytes(
            len(body),
            wake_every=draw(st.integers(0, 0xFFFF)),
            measurement_every=draw(st.integers(0, 0xFFFF)),
            bytes_per_measurement=record_size,
            device_id=draw(st.integers(0, 255)),
            sensor_count=draw(st.integers(0, 255)),
        )
        + body
    )


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


class FramerPropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(packets(), max_size=8),
        st.lists(st.integers(0, 2000), max_size=30),
    )
    def test_anySplitFramesTheSamePackets(self, sent: list[bytes], cuts: list[int]) -> None:
        stream = b"".join(sent)
        framer = PacketFramer()
        got = []
        for chunk in split(stream, cuts):
            got += framer.feed(chunk)
        self.assertEqual(got, sent)
        self.assertIsNone(framer.error)
        self.assertEqual(framer.take_pending(), b"")

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.binary(max_size=300), max_size=10),
        st.integers(0, 400),
    )
    def test_randomBytesNeverRaise(self, chunks: list[bytes], maximum: int) -> None:
        framer = PacketFramer(max_packet_size=maximum)
        got = []
        for chunk in chunks:
            got += framer.feed(chunk)
            self.assertLessEqual(len(framer), max(maximum, HEADER_SIZE - 1))
        stream = b"".join(chunks)
        framed = b"".join(got)
        pending = framer.take_pending()
        self.assertTrue(stream.startswith(framed + pending))
        if framer.error is None:
            self.assertEqual(framed + pending, stream)
        else:
            self.assertEqual(framer.error.reason, Reason.OVERSIZED)
        for packet in got:
            self.assertEqual(len(packet), read_header(packet).packet_size)
            self.assertLessEqual(len(packet), maximum)
