"""
The journal service: group commit off the event loop, timing state, disk
trouble, high and low water, stopping.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import sqlite3

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    ManualDiskWorker,
    journal_options,
    journaled_arrivals,
    numbered_packet,
    reference_packet,
    started_journal,
)
from weather.core.decode import decode_packet
from weather.core.devices import REFERENCE_DEVICES
from weather.core.packet import HEADER_SIZE, Packet, PacketRejected, Reason
from weather.core.timing import StationState, TimingInputs
from weather.journal.service import (
    LOCKNAME,
    ImmediateDiskWorker,
    Journal,
    JournalLocked,
    check_lock,
    server_pid,
    server_running,
    take_lock,
)
from weather.journal.store import (
    Changes,
    JournalEntry,
    JournalFile,
    Quarantine,
    Sizes,
    row_bytes,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S


def packet(arrival_ns: int = T0, device_id: int = 1, records: int = 30) -> Packet:
    return Packet(reference_packet(records, device_id=device_id), "192.0.2.7:5", arrival_ns)


def numbered(arrival_ns: int, numbers: range, boot_ns: int | None = None) -> Packet:
    """Device 1's packet of its records C{numbers}."""
    return Packet(numbered_packet(numbers), "192.0.2.7:5", arrival_ns, boot_ns)


def records(numbers: range) -> bytes:
    """The bytes of records C{numbers}, as the previous packet held them."""
    return numbered_packet(numbers)[HEADER_SIZE:]


def critical(events) -> list:
    return [e for e in events if e["log_level"] == LogLevel.critical]


class GroupCommitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.worker = ManualDiskWorker()
        self.journal = started_journal(self, self.clock, self.worker)

    def test_durableOnlyAfterCommit(self) -> None:
        durable = self.journal.append(packet())
        self.assertNoResult(durable)
        self.assertEqual(self.journal.file.pending(), [])
        self.worker.step()
        entry = self.successResultOf(durable)
        self.assertEqual(self.journal.file.pending(), [entry])

    def test_burstIsOneCommit(self) -> None:
        """While one commit runs, what arrives gathers into the next one."""
        first = self.journal.append(packet(T0, 1))
        burst = [self.journal.append(packet(T0 + i, 2 + i)) for i in range(50)]
        self.assertEqual(len(self.worker.waiting), 1)  # only the first so far
        self.worker.step()
        self.successResultOf(first)
        self.assertEqual(len(self.worker.waiting), 1)  # the whole burst, one group
        for d in burst:
            self.assertNoResult(d)
        self.worker.step()
        entries = [self.successResultOf(d) for d in burst]
        self.assertEqual([e.id for e in entries], list(range(2, 52)))
        self.assertEqual(self.journal.stats.commits, 2)
        self.assertEqual(self.worker.waiting, [])

    def test_idsAndTimingStateInArrivalOrder(self) -> None:
        """
        Each packet gets the previous arrival of its own device when it
        arrives, before anything is on disk; the state survives a restart.
        """
        a = self.journal.append(packet(T0, device_id=1))
        b = self.journal.append(packet(T0 + 5, device_id=2))
        c = self.journal.append(packet(T0 + 3600 * S, device_id=1))
        self.worker.run_all()
        entries = [self.successResultOf(d) for d in (a, b, c)]
        self.assertEqual([e.id for e in entries], [1, 2, 3])
        self.assertEqual([e.previous_arrival_ns for e in entries], [None, None, T0])
        self.assertEqual(
            journaled_arrivals(self.journal.file), {1: T0 + 3600 * S, 2: T0 + 5}
        )

    def test_timingStateSurvivesRestart(self) -> None:
        self.journal.append(packet(T0, device_id=1))
        self.worker.run_all()
        self.journal.stopService()
        self.worker.run_all()
        again = Journal(
            self.journal.directory, self.clock, ImmediateDiskWorker(), **journal_options()
        )
        again.startService()
        self.addCleanup(again.stopService)
        entry = self.successResultOf(again.append(packet(T0 + 3600 * S, device_id=1)))
        self.assertEqual(entry.id, 2)
        self.assertEqual(entry.previous_arrival_ns, T0)

    def test_badHeaderDoesNotMoveTimingState(self) -> None:
        """Only whole packets with a sane header count as a device's upload."""
        self.journal.append(packet(T0, device_id=1))
        cut = Packet(reference_packet(30, device_id=1)[:50], "p", T0 + S)
        self.journal.append(cut)
        later = self.journal.append(packet(T0 + 2 * S, device_id=1))
        self.worker.run_all()
        self.assertEqual(self.successResultOf(later).previous_arrival_ns, T0)

    def test_unknownDeviceMovesTimingState(self) -> None:
        """
        A device the devices file does not know yet still has its uploads
        timed, so a replay after it is described gives the same timestamps.
        """
        self.journal.append(packet(T0, device_id=77))
        later = self.journal.append(packet(T0 + 3600 * S, device_id=77))
        self.worker.run_all()
        self.assertEqual(self.successResultOf(later).previous_arrival_ns, T0)

    def test_rejectedGoesToQuarantine(self) -> None:
        self.clock.advance(1234)
        data = reference_packet(30)[:40]
        self.journal.append_rejected(
            Packet(data, "192.0.2.9:1", T0),
            PacketRejected(Reason.TRUNCATED, "connection ended after 40 bytes"),
        )
        self.worker.run_all()
        [kept] = self.journal.file.quarantined()
        self.assertEqual(kept.entry.packet, Packet(data, "192.0.2.9:1", T0))
        self.assertEqual(kept.quarantine.reason, Reason.TRUNCATED)
        self.assertEqual(kept.quarantine.quarantined_ns, 1234 * S)

    def test_deliveredAndQuarantinedGrouped(self) -> None:
        entries = [self.journal.append(packet(T0 + i, 1 + i)) for i in range(3)]
        self.worker.run_all()
        ids = [self.successResultOf(d).id for d in entries]
        self.journal.delivered(ids[0])
        self.journal.quarantine(ids[1], "unknown_device", "no profile")
        self.journal.delivered(ids[2])
        self.assertEqual(len(self.worker.waiting), 1)
        self.worker.step()  # the delivery of ids[0]
        self.worker.step()  # the other two, in one group
        self.assertEqual(self.journal.file.pending(), [])
        self.assertEqual([q.entry.id for q in self.journal.file.quarantined()], [ids[1]])
        self.assertEqual(self.journal.stats.commits, 4)  # 2 appends, 2 settles

    def test_stopCommitsWhatIsLeft(self) -> None:
        durable = self.journal.append(packet())
        stopped = self.journal.stopService()
        self.assertNoResult(stopped)
        self.worker.run_all()
        self.successResultOf(durable)
        self.successResultOf(stopped)
        self.assertIsNone(self.journal.file)
        self.assertEqual(len(JournalFile(self.journal.directory).pending()), 1)


class ReplayReadTests(SynchronousTestCase):
    """Reading replay requests under steady traffic: the disk never idle."""

    def test_readAfterTheChangesSoFar(self) -> None:
        """
        The read waits for the changes made before it, not for a moment
        with nothing to commit, which packets arriving all the time never
        leave.
        """
        worker = ManualDiskWorker()
        journal = started_journal(self, Clock(), worker)
        journal.append(packet())  # committing
        journal.append(packet(arrival_ns=T0 + S))  # waits for that commit
        reading = journal.replay_requested(0, 10)
        worker.step()  # the first commit; the second, with the read's waiter, starts
        journal.append(packet(arrival_ns=T0 + 2 * S))  # traffic goes on
        worker.step()  # the second commit: the read is handed to the worker
        self.assertNoResult(reading)
        worker.step()
        self.assertEqual(self.successResultOf(reading), [])
        self.assertTrue(worker.waiting)  # the third commit, still to run


class StatusCountTests(SynchronousTestCase):
    """The counts for /metrics: bounded in the disk worker's time."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.worker = ManualDiskWorker()
        self.journal = started_journal(self, self.clock, self.worker)
        #: How long each count takes by the journal's count timer, which is
        #: read twice per count: 0 as it starts, this as it ends.
        self.count_takes = 0.0
        readings = itertools.count()
        self.journal.count_timer = lambda: self.count_takes * (next(readings) % 2)

    def count(self) -> Deferred:
        """Ask for a count and let the disk worker run it."""
        counting = self.journal.refresh_status()
        if self.worker.waiting:
            self.worker.step()
        return counting

    def test_countsAndKeeps(self) -> None:
        self.journal.append(packet())
        self.worker.step()
        status = self.successResultOf(self.count())
        self.assertEqual((status.pending, status.oldest_pending_ns), (1, T0))
        self.assertIs(self.journal.last_status, status)

    def test_slowCountSpacedOut(self) -> None:
        """
        A count that took 2 s: none again for 40 s (1/20 of the worker's
        time), nor while one is running; the last figures are given meanwhile.
        """
        self.count_takes = 2.0
        first = self.journal.refresh_status()
        self.assertIsNone(self.successResultOf(self.journal.refresh_status()))
        self.assertEqual(len(self.worker.waiting), 1)  # only the first runs
        self.worker.step()
        status = self.successResultOf(first)
        self.journal.append(packet())
        self.worker.step()
        self.clock.advance(39)
        self.assertIs(self.successResultOf(self.count()), status)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(self.count()).pending, 1)

    def test_waitCapped(self) -> None:
        """However slow a count, the next comes within ten minutes."""
        self.count_takes = 3600.0
        self.successResultOf(self.count())
        self.journal.append(packet())
        self.worker.step()
        self.clock.advance(599)
        self.assertEqual(self.successResultOf(self.count()).pending, 0)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(self.count()).pending, 1)

    def test_clockSetBack(self) -> None:
        """The clock set back (NTP) does not hold the next count off."""
        self.count_takes = 2.0
        self.successResultOf(self.count())
        self.journal.append(packet())
        self.worker.step()
        self.clock.rightNow -= 3600
        self.assertEqual(self.successResultOf(self.count()).pending, 1)

    def test_waitBehindCommitsNotCounted(self) -> None:
        """Time spent queued behind commits is not the count's: quick counts go on."""
        self.journal.append(packet())
        counting = self.journal.refresh_status()
        self.clock.advance(30)  # the commit ahead of it is slow
        self.worker.run_all()
        self.successResultOf(counting)
        self.assertEqual(self.successResultOf(self.count()).pending, 1)

    def test_fastCountEveryTime(self) -> None:
        """A quick count holds nothing back."""
        for pending in range(3):
            self.assertEqual(self.successResultOf(self.count()).pending, pending)
            self.journal.append(packet(T0 + pending))
            self.worker.step()

    def test_failedCountSpacedOutToo(self) -> None:
        """A count that failed after 1 s: the error comes back; the next after 20 s."""
        self.count_takes = 1.0
        self.journal.file.connection.execute("ALTER TABLE packet RENAME TO gone")
        self.failureResultOf(self.count(), sqlite3.OperationalError)
        self.journal.file.connection.execute("ALTER TABLE gone RENAME TO packet")
        self.clock.advance(19.5)
        self.journal.refresh_status()
        self.assertEqual(self.worker.waiting, [])
        self.clock.advance(0.5)
        self.journal.refresh_status()
        self.assertEqual(len(self.worker.waiting), 1)
        self.worker.step()


class DiskTroubleTests(SynchronousTestCase):
    """A full disk: keep the packets in memory, stop taking more, retry."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.journal = started_journal(self, self.clock, retry_interval=5.0)
        self.full: list[bool] = []
        self.journal.full_observers.append(self.full.append)
        self.db = self.journal.file.connection

    def fill_disk(self) -> None:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        self.db.execute(f"PRAGMA max_page_count = {pages}")

    def test_fullDiskKeepsPacketsAndRecovers(self) -> None:
        self.fill_disk()
        with capturedLogs() as events:
            waiting = [
                self.journal.append(packet(T0 + i, 1 + i % 5, records=1000))
                for i in range(40)
            ]
            self.clock.advance(5)
            self.clock.advance(5)  # still full: no second line
        for d in waiting:
            self.assertNoResult(d)
        [line] = critical(events)
        self.assertIn("Cannot write the journal", line["log_format"])
        self.assertIn("full", line["why"])
        self.assertEqual(self.full, [True])
        self.assertTrue(self.journal.full)
        self.assertGreaterEqual(self.journal.stats.commits_failed, 2)

        self.db.execute("PRAGMA max_page_count = 1000000")  # space returns
        with capturedLogs() as events:
            self.clock.advance(5)
        entries = [self.successResultOf(d) for d in waiting]
        self.assertEqual([e.id for e in entries], list(range(1, 41)))
        self.assertEqual(self.full, [True, False])
        self.assertEqual(len(self.journal.file.pending()), 40)
        self.assertTrue(any("written again" in e["log_format"] for e in events))
        # The timing state of the held packets was written too.
        self.assertEqual(len(journaled_arrivals(self.journal.file)), 5)

    def test_stopWhileFullPutsPacketsInTheLog(self) -> None:
        """The last resort: what the disk never took is in the log, as hex."""
        self.journal.shutdown_timeout = 3
        self.fill_disk()
        self.journal.append(packet(T0, 9, records=1000))
        with capturedLogs() as events:
            stopped = self.journal.stopService()
            self.assertNoResult(stopped)
            self.clock.advance(1)  # retries at once, then every second
            self.clock.advance(1)
            self.clock.advance(1)
        self.successResultOf(stopped)
        hexes = [e for e in critical(events) if "hex" in e]
        self.assertEqual(len(hexes), 1)
        self.assertEqual(hexes[0]["hex"], reference_packet(1000, device_id=9).hex())

    def test_stopWhileFullRecoversInTime(self) -> None:
        self.journal.shutdown_timeout = 10
        self.fill_disk()
        self.journal.append(packet(T0, 9, records=1000))
        stopped = self.journal.stopService()
        self.db.execute("PRAGMA max_page_count = 1000000")
        self.clock.advance(1)
        self.successResultOf(stopped)
        self.assertEqual(len(JournalFile(self.journal.directory).pending()), 1)


class WaterMarkTests(SynchronousTestCase):
    def test_highAndLowWater(self) -> None:
        """Past max_bytes: full, loudly, once; back under 90%: taking packets again."""
        clock = Clock()
        journal = started_journal(self, clock, max_bytes=400_000, min_free_bytes=0)
        changes: list[bool] = []
        journal.full_observers.append(changes.append)
        big = [Packet(os.urandom(20_000), "p", T0 + i) for i in range(40)]
        with capturedLogs() as events:
            entries = [self.successResultOf(journal.append(p)) for p in big]
        self.assertTrue(journal.full)
        self.assertEqual(changes, [True])
        self.assertEqual(len(critical(events)), 1)
        self.assertIn("taking no more packets", critical(events)[0]["log_format"])
        # Delivering a few is not enough: still above the low-water mark.
        journal.delivered(entries[-1].id)
        self.assertTrue(journal.full)
        for e in entries[:-1]:
            journal.delivered(e.id)
        journal.file.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        journal.append(packet(T0 + S))  # the next commit measures again
        self.assertFalse(journal.full)
        self.assertEqual(changes, [True, False])

    def test_lowFreeDiskSpace(self) -> None:
        """Too little free space on the file system is full too."""
        journal = started_journal(self, Clock(), min_free_bytes=1 << 62)
        self.assertTrue(journal.full)


#: 999 bytes of device 200, which no devices file describes.
JUNK = reference_packet(165, device_id=200)
UNKNOWN = PacketRejected(Reason.UNKNOWN_DEVICE, "no profile for device 200")
CUT = PacketRejected(Reason.TRUNCATED, "connection ended after 999 bytes")


def junk(arrival_ns: int = T0) -> Packet:
    return Packet(JUNK, "192.0.2.66:5", arrival_ns)


class QuarantineBudgetTests(SynchronousTestCase):
    """
    The quarantine's budget: counted apart from what waits for InfluxDB,
    from the moment a packet is appended, across restarts and replays.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.worker = ManualDiskWorker()
        self.journal = started_journal(
            self,
            self.clock,
            self.worker,
            max_bytes=200_000,
            min_free_bytes=0,
            quarantine_max_bytes=10_000,
        )

    def test_spentFromTheAppend(self) -> None:
        """Bytes count as soon as they are appended: a burst cannot overshoot."""
        with capturedLogs() as events:
            for i in range(10):
                self.journal.append_rejected(junk(T0 + i), CUT)
            self.assertEqual(self.journal.quarantined_bytes, 9990)
            self.assertFalse(self.journal.quarantine_full)
            self.journal.append_rejected(junk(T0 + 10), CUT)
            self.assertTrue(self.journal.quarantine_full)
            self.worker.run_all()
        self.assertEqual(self.journal.quarantined_bytes, 10_989)
        self.assertTrue(self.journal.quarantine_full)
        self.assertEqual(len(self.journal.file.quarantined()), 11)
        [line] = [e for e in events if e["log_level"] == LogLevel.warn]
        text = formatEvent(line)
        self.assertIn("The quarantine holds 10989 bytes", text)
        self.assertIn("--quarantine-max-size", text)
        self.assertIn("stations in the devices file are served as usual", text)
        self.assertNotIn("InfluxDB", text)

    def test_notWhatStopsStations(self) -> None:
        """
        Far more junk in quarantine than --journal-max-size: stations are
        still taken; as many bytes waiting for InfluxDB stop them.
        """
        for i in range(400):
            self.journal.append(junk(T0 + i), UNKNOWN)
        self.worker.run_all()
        self.assertGreater(self.journal.quarantined_bytes, 2 * self.journal.max_bytes)
        self.assertEqual(self.journal.waiting_bytes, 0)
        self.assertFalse(self.journal.full)
        with capturedLogs() as events:
            for i in range(400):
                self.journal.append(packet(T0 + i, device_id=1, records=165))
            self.worker.run_all()
        self.assertTrue(self.journal.full)
        [line] = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertIn("packets not yet in InfluxDB", formatEvent(line))
        self.assertIn("--journal-max-size", formatEvent(line))

    def test_quarantiningAPendingPacketMovesItsBytes(self) -> None:
        durable = self.journal.append(packet(T0, device_id=1, records=100))
        self.worker.run_all()
        entry = self.successResultOf(durable)
        self.assertEqual(self.journal.sizes, Sizes(row_bytes(entry, None), 0))
        self.journal.quarantine(entry.id, Reason.PROFILE_MISMATCH, "4 values")
        self.worker.run_all()
        self.assertEqual(self.journal.sizes, Sizes(0, row_bytes(entry, None)))

    def test_keptAcrossARestart(self) -> None:
        for i in range(11):
            self.journal.append(junk(T0 + i), UNKNOWN)
        self.worker.run_all()
        before = self.journal.quarantined_bytes
        self.journal.stopService()
        self.worker.run_all()
        again = Journal(
            self.journal.directory,
            self.clock,
            ImmediateDiskWorker(),
            **journal_options(quarantine_max_bytes=10_000),
        )
        with capturedLogs() as events:
            again.startService()
        self.addCleanup(again.stopService)
        self.assertEqual(again.quarantined_bytes, before)
        self.assertTrue(again.quarantine_full)
        self.assertFalse(again.full)
        said = [e for e in events if "--quarantine-max-size" in e["log_format"]]
        self.assertEqual(len(said), 1)

    def test_replayMakesRoom(self) -> None:
        """What weather replay takes out of quarantine shows at the next count."""
        entries = [self.journal.append_rejected(junk(T0 + i), CUT) for i in range(11)]
        self.worker.run_all()
        self.assertTrue(self.journal.quarantine_full)
        replay = JournalFile(self.journal.directory, create=False)
        replay.forget([self.successResultOf(d).id for d in entries[:5]])
        replay.close()
        with capturedLogs() as events:
            counted = self.journal.refresh_status()
            self.worker.run_all()
        self.assertEqual(self.successResultOf(counted).sizes, Sizes(0, 6 * 999))
        self.assertFalse(self.journal.quarantine_full)
        [line] = [e for e in events if e["log_level"] == LogLevel.info]
        self.assertIn("under its budget", line["log_format"])


class FreeSpaceTests(SynchronousTestCase):
    """
    A disk short of space: the journal gives back what it can each time it
    measures, and takes packets again by itself once there is room.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.free = 10 << 20
        self.journal = started_journal(
            self, self.clock, min_free_bytes=4 << 20, retry_interval=5.0
        )
        self.journal.free_bytes = lambda directory: self.free
        self.reclaimed: list[int] = []
        reclaim = self.journal.file.reclaim

        def recording() -> None:
            self.reclaimed.append(self.free)
            reclaim()

        self.journal.file.reclaim = recording
        self.changes: list[bool] = []
        self.journal.full_observers.append(self.changes.append)

    def test_resumesByItself(self) -> None:
        self.free = 3 << 20
        with capturedLogs() as events:
            self.successResultOf(self.journal.append(packet(T0)))
        self.assertTrue(self.journal.full)
        [line] = [e for e in events if e["log_level"] == LogLevel.critical]
        text = formatEvent(line)
        self.assertIn("its disk has 3145728 bytes free, less than --journal-min-free", text)
        self.assertNotIn("InfluxDB", text)
        self.assertIn("--journal-min-free", self.journal.full_reason)
        # Each measure first gives back what it can.
        self.clock.advance(5)
        self.assertEqual(self.reclaimed, [3 << 20])
        self.assertTrue(self.journal.full)
        self.free = 7 << 20  # over the mark, under twice the mark: not yet
        self.clock.advance(5)
        self.assertTrue(self.journal.full)
        self.free = 9 << 20  # room again: no commit needed to notice
        self.clock.advance(5)
        self.assertFalse(self.journal.full)
        self.assertEqual(self.changes, [True, False])
        self.assertEqual(len(self.reclaimed), 3)
        self.clock.advance(60)
        self.assertEqual(len(self.reclaimed), 3)  # no more measuring


class LockTests(SynchronousTestCase):
    def test_oneServerPerDirectory(self) -> None:
        first = started_journal(self, Clock())
        second = Journal(
            first.directory, Clock(), ImmediateDiskWorker(), **journal_options()
        )
        with self.assertRaises(JournalLocked) as caught:
            second.startService()
        self.assertIn("another weather server", str(caught.exception))
        first.stopService()
        second.startService()  # free again once the first has stopped
        second.stopService()

    def test_unusableDirectory(self) -> None:
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file")
        journal = Journal(
            os.path.join(blocker, "d"), Clock(), ImmediateDiskWorker(), **journal_options()
        )
        with self.assertRaises(Exception) as caught:
            journal.startService()
        self.assertIn("cannot use --data-dir", str(caught.exception))


class TimingInputsTests(SynchronousTestCase):
    """
    Each whole packet is journaled with what it is timed with, worked out
    from its station's state in arrival order; the state is journaled too.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.journal = started_journal(self, self.clock, boot_id="boot-a")

    def append(self, packet: Packet) -> JournalEntry:
        return self.successResultOf(self.journal.append(packet))

    def test_stationPaths(self) -> None:
        """A slow clock learned, a missed upload, a lost clear command."""
        upload = 3690 * S  # the station's clock is 2.5 % slow
        first = self.append(numbered(T0, range(30)))
        self.assertEqual(first.timing, TimingInputs())
        self.assertEqual(first.boot_id, "boot-a")
        second = self.append(numbered(T0 + upload, range(30, 60)))
        self.assertEqual(second.timing, TimingInputs(T0, upload, 1.0, records(range(30))))
        # A missed upload: 60 records taken, the ring kept the newest 58.
        third = self.append(numbered(T0 + 3 * upload, range(62, 120)))
        self.assertEqual(
            third.timing,
            TimingInputs(T0 + upload, 2 * upload, 1.025, records(range(30, 60)), True),
        )
        # The clear command was lost: 28 records are sent again.
        fourth = self.append(numbered(T0 + 4 * upload, range(92, 150)))
        self.assertEqual(fourth.timing.ratio, 1.025)
        self.assertEqual(fourth.timing.previous_records, records(range(62, 120)))
        decoded = decode_packet(
            fourth.packet.data, fourth.packet.arrival_ns, fourth.timing, REFERENCE_DEVICES
        )
        self.assertEqual((decoded.timing.first, decoded.timing.repeated), (28, 28))
        self.assertEqual(decoded.columns[0], [float(n) for n in range(120, 150)])
        self.assertEqual(decoded.times[-1], T0 + 4 * upload)
        self.assertEqual(decoded.interval_ns, upload // 30)
        self.assertEqual(self.journal.file.stations(), self.journal._stations)
        self.assertEqual(
            self.journal.file.stations()[1],
            StationState(
                T0 + 4 * upload,
                None,
                "boot-a",
                (1.025, 1.025, 1.025),
                records(range(92, 150)),
            ),
        )

    def test_stateSurvivesRestart(self) -> None:
        """The learned ratio and the last records are read back at start."""
        self.append(numbered(T0, range(30)))
        self.append(numbered(T0 + 3690 * S, range(30, 60)))
        self.journal.stopService()
        again = Journal(
            self.journal.directory,
            self.clock,
            ImmediateDiskWorker(),
            boot_id="boot-b",
            **journal_options(),
        )
        again.startService()
        self.addCleanup(again.stopService)
        entry = self.successResultOf(
            again.append(numbered(T0 + 2 * 3690 * S, range(60, 90)))
        )
        self.assertEqual(
            entry.timing,
            TimingInputs(T0 + 3690 * S, 3690 * S, 1.025, records(range(30, 60)), True),
        )
        self.assertEqual(entry.boot_id, "boot-b")

    def test_spacingOnTheBootClock(self) -> None:
        """Within one boot a wall-clock step between two packets does not count."""
        self.append(numbered(T0, range(30), boot_ns=100 * S))
        stepped = self.append(numbered(T0 + 7 * 3600 * S, range(30, 60), boot_ns=3700 * S))
        self.assertEqual(stepped.timing.spacing_ns, 3600 * S)
        self.assertEqual(stepped.timing.previous_arrival_ns, T0)

    def test_spacingOnTheWallClockAcrossBoots(self) -> None:
        """Boot-clock readings of two boots do not compare: the wall clock does."""
        self.append(numbered(T0, range(30), boot_ns=100 * S))
        self.journal.boot_id = "boot-b"
        later = self.append(numbered(T0 + 3600 * S, range(30, 60), boot_ns=5 * S))
        self.assertEqual(later.timing.spacing_ns, 3600 * S)
        unknown = Journal(
            self.journal.directory, self.clock, ImmediateDiskWorker(), **journal_options()
        )
        self.assertIsNone(unknown.boot_id)


class ServerPidTests(SynchronousTestCase):
    """The server's process id in its lock file, for weather replay's SIGHUP."""

    def test_pidWhileRunning(self) -> None:
        journal = Journal(
            self.mktemp(), Clock(), ImmediateDiskWorker(), **journal_options()
        )
        self.assertIsNone(server_pid(journal.directory))
        journal.startService()
        # Not before SIGHUP is handled: its default action ends the process.
        self.assertIsNone(server_pid(journal.directory))
        self.assertTrue(server_running(journal.directory))
        journal.publish_pid()
        self.assertEqual(server_pid(journal.directory), os.getpid())
        journal.stopService()
        # Gone with its lock, whatever the file still says.
        self.assertIsNone(server_pid(journal.directory))

    def test_noPidWritten(self) -> None:
        """A server that wrote none (an older version): None, though it runs."""
        directory = self.mktemp()
        check_lock(directory)  # makes the empty lock file
        with open(os.path.join(directory, LOCKNAME)) as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            self.assertTrue(server_running(directory))
            self.assertIsNone(server_pid(directory))

    def test_anotherNamespacesId(self) -> None:
        """
        A server in a container writes its own namespace's id (often 1):
        the process signalled is the lock's holder as this machine numbers
        it, which has the file open, not whatever process here has that id.
        """
        journal = Journal(
            self.mktemp(), Clock(), ImmediateDiskWorker(), **journal_options()
        )
        journal.pid = lambda: 1
        journal.startService()
        self.addCleanup(journal.stopService)
        journal.publish_pid()
        with open(os.path.join(journal.directory, LOCKNAME)) as f:
            self.assertEqual(f.read(), "1\n")
        self.assertEqual(server_pid(journal.directory), os.getpid())

    def test_holderNotHere(self) -> None:
        """
        No process here holds the lock (a server on another machine, through
        a network file system; no /proc/locks): None, nothing to signal.
        """
        journal = Journal(
            self.mktemp(), Clock(), ImmediateDiskWorker(), **journal_options()
        )
        journal.startService()
        self.addCleanup(journal.stopService)
        journal.publish_pid()
        proc = self.mktemp()
        os.makedirs(proc)
        self.assertIsNone(server_pid(journal.directory, proc))
        with open(os.path.join(proc, "locks"), "w") as f:
            f.write(f"1: FLOCK  ADVISORY  WRITE {os.getpid()} fe:00:1 0 EOF\n")
        self.assertIsNone(server_pid(journal.directory, proc))  # another inode
        inode = os.stat(os.path.join(journal.directory, LOCKNAME)).st_ino
        with open(os.path.join(proc, "locks"), "w") as f:
            f.write(f"1: FLOCK  ADVISORY  WRITE 99999999 fe:00:{inode} 0 EOF\n")
        self.assertIsNone(server_pid(journal.directory, proc))  # not its file open

    def test_stalePidNotRead(self) -> None:
        """
        The id a killed server left is not read while another process holds
        the lock (a salvage, the next server's start-up check).
        """
        directory = self.mktemp()
        check_lock(directory)
        with open(os.path.join(directory, LOCKNAME), "w") as f:
            f.write("4242\n")
        held = take_lock(directory)
        self.addCleanup(os.close, held)
        self.assertTrue(server_running(directory))
        self.assertIsNone(server_pid(directory))

    def test_requestsCountedAtStart(self) -> None:
        directory = self.mktemp()
        file = JournalFile(directory)
        why = Quarantine("unknown-device", "no profile", T0)
        file.commit(Changes(added=[(JournalEntry(1, packet()), why)]))
        file.request_replay([1], "asked", T0)
        file.close()
        journal = Journal(directory, Clock(), ImmediateDiskWorker(), **journal_options())
        journal.startService()
        self.addCleanup(journal.stopService)
        self.assertEqual(journal.replay_requested_at_start, 1)
