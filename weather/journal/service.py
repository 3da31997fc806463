"""
The journal service: the server's side of the journal file.

Packets are appended in the reactor thread (each gets its id and what it will
be timed with at once, in arrival order: L{weather.core.timing}) and
committed by one worker thread, so a slow disk never blocks the event loop.
While one commit runs, the next packets gather into the next group: a burst
costs one fsync.

When the journal cannot be written (disk full, I/O error) the group stays in
memory and is tried again every C{retry_interval} seconds; when it holds more
than C{max_bytes} of packets to deliver, or the file system has less than
C{min_free_bytes} left, the journal is I{full}: observers are told (the listener
stops accepting stations, which keep their data) until it is back under the
low-water mark.  Meanwhile it gives back what space it can (the write-ahead
log and free pages: L{JournalFile.reclaim}) each time it measures, so a small
disk recovers by itself once the backlog is delivered.

The quarantine has a budget of its own, C{quarantine_max_bytes}: packets in
quarantine do not count toward C{max_bytes}, and past the budget
L{quarantine_full} tells the pipeline to refuse what is not a described
station's packet (L{weather.server.pipeline}).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from weather.core.decode import timed_device
from weather.core.dump import counted
from weather.core.packet import HEADER_SIZE, Packet, PacketRejected, read_header
from weather.core.timing import StationState, TimingInputs, first_state, time_records
from weather.journal.store import (
    Changes,
    JournalEntry,
    JournalError,
    JournalFile,
    JournalStatus,
    Quarantine,
    Sizes,
    row_bytes,
)

T = TypeVar("T")

LOCKNAME = "server.lock"
#: The low-water mark, as a fraction of the high-water mark.
LOW_WATER = 0.9
#: Counting the journal waits this many times as long as the last count took,
#: up to L{MAX_COUNT_WAIT} seconds.
COUNT_DUTY_FACTOR = 20
MAX_COUNT_WAIT = 600.0


@dataclass(slots=True)
class JournalCounts:
    """What a L{Journal} counts, since it was made."""

    packets_journaled: int = 0
    packets_delivered: int = 0
    packets_quarantined: int = 0
    commits: int = 0
    commits_failed: int = 0


class IDiskWorker(Interface):
    """Runs blocking journal calls away from the event loop, one at a time, in order."""

    def start() -> None:
        """Get ready to run calls."""

    def run(f: Callable[..., T], *args: Any) -> Deferred[T]:
        """Call C{f(*args)}; the result fires in the reactor thread."""

    def stop() -> None:
        """Finish; called once nothing is running."""


@implementer(IDiskWorker)
class ThreadDiskWorker:
    """One thread of its own: calls run in the order given."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="weather-journal")

    def start(self) -> None:
        self.pool.start()
        # Its thread must not outlive the reactor, stopped cleanly or not.
        self._trigger = self.reactor.addSystemEventTrigger(
            "during", "shutdown", self.pool.stop
        )

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self.reactor, self.pool, f, *args)

    def stop(self) -> None:
        if self.pool.started:
            self.reactor.removeSystemEventTrigger(self._trigger)
            self.pool.stop()


@implementer(IDiskWorker)
class ImmediateDiskWorker:
    """Runs each call at once, in the caller's thread (tools and tests)."""

    def start(self) -> None:
        pass

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return maybeDeferred(f, *args)

    def stop(self) -> None:
        pass


class JournalLocked(JournalError):
    """Another server uses this data directory."""


class Journal(Service):
    """
    Keep every packet in the journal file in C{directory} until it is
    delivered (L{delivered}) or quarantined (L{quarantine}).
    """

    log = Logger()

    def __init__(
        self,
        directory: str,
        clock: IReactorTime,
        worker: IDiskWorker,
        *,
        max_bytes: int,
        min_free_bytes: int,
        quarantine_max_bytes: int,
        shutdown_timeout: float,
        retry_interval: float = 5.0,
        boot_id: str | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.clock = clock
        #: The wall clock, for when packets went to quarantine.
        self.wall = wall if wall is not None else clock.seconds
        self.worker = worker
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.quarantine_max_bytes = quarantine_max_bytes
        self.retry_interval = retry_interval
        self.shutdown_timeout = shutdown_timeout
        #: The machine's boot id (None: unknown), journaled with each packet:
        #: boot-clock readings compare only within one boot.
        self.boot_id = boot_id
        self.file: JournalFile | None = None
        self.stats = JournalCounts()
        #: True while the journal takes no more packets (over the high-water mark,
        #: short of disk space, or failing to write).
        self.full = False
        #: Called with the new value of L{full} when it changes.
        self.full_observers: list[Callable[[bool], object]] = []
        #: Live bytes after the last commit (the quarantine's included).
        self.used_bytes = 0
        #: What the packets on disk hold after the last commit or count.
        self.sizes = Sizes()
        #: Bytes of packets appended into quarantine, not yet committed.
        self._quarantined_unsaved = 0
        self._quarantine_was_full = False
        #: Bytes free on the journal's file system (a function of its directory).
        self.free_bytes: Callable[[str], int] = _free_bytes
        #: Why the last commit failed, while it does.
        self.failing: str | None = None
        #: What the last L{refresh_status} counted (None: never asked).
        self.last_status: JournalStatus | None = None
        self._lock: int | None = None
        self._next_id = 1
        self._stations: dict[int, StationState] = {}
        self._changes = Changes()
        self._waiters: list[tuple[Deferred, JournalEntry | None]] = []
        self._committing = False
        self._retry_call: IDelayedCall | None = None
        #: Why the journal is over its marks (None: it is not).
        self._over_water: str | None = None
        self._measure_call: IDelayedCall | None = None
        self._counting = False
        self._counted_at = 0.0
        self._count_wait = 0.0
        #: What the journal's counts are timed with (seconds, never stepped).
        self.count_timer: Callable[[], float] = time.monotonic
        #: The process id L{publish_pid} writes into the lock file, for
        #: C{weather replay} to signal (L{server_pid}).
        self.pid: Callable[[], int] = os.getpid
        #: Packets C{weather replay} left for the server to take up, at start.
        self.replay_requested_at_start = 0
        self._idle: list[Deferred[None]] = []

    # -- life cycle ------------------------------------------------------------

    def startService(self) -> None:
        """
        Open the journal (at start-up the event loop may wait: a small file
        is read).  @raise JournalError: it cannot be used.
        """
        self._lock = take_lock(self.directory)
        try:
            self.file = JournalFile(self.directory)
            self._next_id = self.file.next_id()
            self._stations = self.file.stations()
            status = self.file.status()
            self.replay_requested_at_start = self.file.count_replay_requested()
        except BaseException:
            os.close(self._lock)
            self._lock = None
            raise
        self.used_bytes = status.used_bytes
        self.sizes = status.sizes
        self.worker.start()
        super().startService()
        self.log.info(
            "Journal {path}: {packets} to deliver, {quarantined} in quarantine "
            "({quarantined_bytes} bytes, its budget {budget})",
            path=self.file.path,
            packets=counted(status.pending, "packet"),
            pending=status.pending,
            quarantined=status.quarantined,
            quarantined_bytes=status.sizes.quarantined,
            budget=self.quarantine_max_bytes,
        )
        self._check_quarantine()
        self._check_water(self.waiting_bytes)
        if self._over_water:
            self._schedule_measure()
        self._commit_next()  # anything appended before the start

    def publish_pid(self) -> None:
        """
        Write this process's id into the lock file, for C{weather replay} to
        send SIGHUP to: only once SIGHUP is handled (its default action ends
        the process), so not at L{startService}.
        """
        if self._lock is not None:
            _write_pid(self._lock, self.pid())

    def stopService(self) -> Deferred[None]:
        """Commit what is left (retrying until C{shutdown_timeout}), then close."""
        super().stopService()
        if self._measure_call is not None:
            self._measure_call.cancel()
            self._measure_call = None
        if self.file is None:
            return succeed(None)
        idle = self._when_idle()
        if self._retry_call is not None:  # try once more at once
            self._retry_call.cancel()
            self._retry_call = None
            self._commit_next()
        deadline = self.clock.callLater(self.shutdown_timeout, self._give_up)
        idle.addCallback(lambda _: deadline.cancel() if deadline.active() else None)
        idle.addCallback(lambda _: self._close())
        return idle

    def _when_idle(self) -> Deferred[None]:
        if not self._committing and not self._changes:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter

    def _give_up(self) -> None:
        """The disk will not take them: put the packets in the log, the last copy."""
        if self._retry_call is not None:
            self._retry_call.cancel()
            self._retry_call = None
        for entry, _ in self._changes.added:
            self.log.critical(
                "Not journaled (disk full?): packet from {peer} at {arrival_ns}: {hex}",
                peer=entry.packet.peer,
                arrival_ns=entry.packet.arrival_ns,
                hex=entry.packet.data.hex(),
            )
        self.log.critical(
            "Stopping with {packets} not in the journal: {they} in this log",
            count=len(self._changes.added),
            packets=counted(len(self._changes.added), "packet"),
            they="it is" if len(self._changes.added) == 1 else "they are",
        )
        self._quarantined_unsaved -= _quarantined_size(self._changes)
        self._changes = Changes()
        self._waiters = []
        # A commit still running finishes before the worker stops (it joins).
        self._notify_idle()

    def _close(self) -> None:
        self.worker.stop()
        if self.file is not None:
            try:
                status = self.file.status()
                self.log.info(
                    "Journal closed: {packets} to deliver at the next start, "
                    "{quarantined} in quarantine",
                    pending=status.pending,
                    packets=counted(status.pending, "packet"),
                    quarantined=status.quarantined,
                )
            except sqlite3.Error as e:
                self.log.error("Cannot read the journal's status: {why}", why=str(e))
            self.file.close()
            self.file = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # -- what the pipeline calls ---------------------------------------------------

    def append(
        self, packet: Packet, rejected: PacketRejected | None = None
    ) -> Deferred[JournalEntry]:
        """
        Journal a whole packet with what it is timed with; the result fires
        once it is on disk.  With C{rejected}, it goes straight into
        quarantine with that reason (it is not a described station's); it
        still advances its device's timing state, as any whole packet does.
        """
        device = timed_device(packet.data)
        inputs = TimingInputs()
        if device is not None:
            inputs = self._advance(device, packet)
        entry = JournalEntry(self._take_id(), packet, inputs, self.boot_id)
        if rejected is None:
            return self._add(entry, None)
        return self._add(entry, self._quarantine(rejected.reason, rejected.detail))

    def _advance(self, device: int, packet: Packet) -> TimingInputs:
        """
        What C{device}'s packet is timed with, given the state its previous
        packets left; the state after it is journaled in the same commit.
        """
        records = packet.data[HEADER_SIZE:]
        arrival, boot = packet.arrival_ns, packet.boot_ns
        state = self._stations.get(device)
        if state is None:
            inputs = TimingInputs()
            after = first_state(records, arrival, boot, self.boot_id)
        else:
            inputs = state.inputs(arrival, boot, self.boot_id)
            timing = time_records(read_header(packet.data), records, arrival, inputs)
            after = state.after(timing, records, arrival, boot, self.boot_id)
        self._stations[device] = self._changes.devices[device] = after
        return inputs

    def append_rejected(
        self, packet: Packet, error: PacketRejected
    ) -> Deferred[JournalEntry]:
        """
        Journal bytes that are not a whole packet, straight into quarantine,
        with what they would be timed with were they whole (a truncated
        packet's complete records are stored so).  They do not advance their
        station's state: its next whole packet is timed against its previous
        whole one.
        """
        inputs = TimingInputs()
        device = packet.device_id
        state = self._stations.get(device) if device is not None else None
        if state is not None:
            inputs = state.inputs(packet.arrival_ns, packet.boot_ns, self.boot_id)
        entry = JournalEntry(self._take_id(), packet, inputs, self.boot_id)
        return self._add(entry, self._quarantine(error.reason, error.detail))

    def rebase(self, arrivals: dict[int, int]) -> Deferred[None]:
        """
        Journal new arrival times of pending packets, by id (the wall clock
        was wrong when they arrived: L{weather.server.clock}); the result
        fires once they are on disk.
        """
        durable: Deferred[None] = Deferred()
        self._changes.rebased.update(arrivals)
        self._waiters.append((durable, None))
        self._commit_next()
        return durable

    def delivered(self, entry_id: int) -> None:
        """InfluxDB has every point of this packet: it may leave the journal."""
        self._changes.delivered.add(entry_id)
        self.stats.packets_delivered += 1
        self._commit_next()

    def quarantine(
        self, entry_id: int, reason: str, detail: str, refused: tuple[bytes, ...] = ()
    ) -> None:
        """Keep this packet aside, with why, for a person to look at and replay."""
        self._changes.delivered.discard(entry_id)
        self._changes.quarantined[entry_id] = self._quarantine(reason, detail, refused)
        self.stats.packets_quarantined += 1
        self._commit_next()

    def pending(self, after_id: int, limit: int) -> Deferred[list[JournalEntry]]:
        """Undelivered packets after C{after_id}, oldest first."""
        return self.worker.run(self._file().pending, after_id, limit)

    def replay_requested(self, after_id: int, limit: int) -> Deferred[list[JournalEntry]]:
        """
        Packets C{weather replay} asked to decode again, after C{after_id},
        read once what was asked of the journal before is on disk: a packet
        taken up since is not read as still requested.
        """
        return self._after_commits(self._file().replay_requested, after_id, limit)

    def count_replay_requested(self) -> Deferred[int]:
        return self._after_commits(self._file().count_replay_requested)

    def _after_commits(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Call C{f} on the worker once the changes made so far are committed.
        The worker runs calls in order, after any commit in progress, so only
        changes not yet handed to it are waited for: not a moment with nothing
        to commit, which steady traffic may never leave.
        """
        if not self._changes:
            return self.worker.run(f, *args)
        committed: Deferred[JournalEntry | None] = Deferred()
        self._waiters.append((committed, None))
        self._commit_next()
        return committed.addCallback(lambda _: self.worker.run(f, *args))

    def taken(self, entry_id: int) -> None:
        """
        A packet taken from a replay request decoded: pending again (its
        points go to InfluxDB; a restart before they are there reads it back).
        """
        self._changes.taken.add(entry_id)
        self._commit_next()

    def status(self) -> Deferred[JournalStatus]:
        return self.worker.run(self._file().status)

    def last_arrivals(self) -> dict[int, int]:
        """Each device's last whole packet's arrival, in nanoseconds."""
        return {device: state.arrival_ns for device, state in self._stations.items()}

    def refresh_status(self) -> Deferred[JournalStatus | None]:
        """
        Count what the journal holds, on the disk worker; kept as
        L{last_status}.  Counting reads the whole table (1.4 s for three
        million packets here, more on a Raspberry Pi's SD card), so after a
        count that took I{d} seconds the next is skipped until
        L{COUNT_DUTY_FACTOR} times I{d} has passed (at most L{MAX_COUNT_WAIT}),
        and while one runs: a large backlog keeps the disk worker committing
        packets, not counting them.  A skipped call gives the figures last
        counted.
        """
        since = self.clock.seconds() - self._counted_at
        if self._counting or 0 <= since < self._count_wait:  # < 0: clock set back
            return succeed(self.last_status)
        file = self._file()
        self._counting = True
        took = [0.0]

        def count() -> JournalStatus:
            # Only the count itself is timed (not its wait behind commits),
            # on a clock that NTP does not step.
            started = self.count_timer()
            try:
                return file.status()
            finally:
                took[0] = self.count_timer() - started

        def counted(result: object) -> object:
            self._counting = False
            self._counted_at = self.clock.seconds()
            self._count_wait = min(MAX_COUNT_WAIT, COUNT_DUTY_FACTOR * took[0])
            return result

        def keep(status: JournalStatus) -> JournalStatus:
            self.last_status = status
            # Counted in the worker between two commits: exact, and another
            # process's changes (weather replay) show.
            self.sizes = status.sizes
            self._check_quarantine()
            return status

        return self.worker.run(count).addBoth(counted).addCallback(keep)

    @property
    def waiting_bytes(self) -> int:
        """Bytes of the packets to deliver, on disk: what C{max_bytes} bounds."""
        return self.sizes.pending

    @property
    def quarantined_bytes(self) -> int:
        """Bytes of the packets in quarantine, those not yet committed included."""
        return self.sizes.quarantined + self._quarantined_unsaved

    @property
    def quarantine_full(self) -> bool:
        """True while the quarantine has spent its budget."""
        return self.quarantined_bytes >= self.quarantine_max_bytes

    @property
    def full_reason(self) -> str | None:
        """Why the journal takes no more packets, while it does not."""
        if not self.full:
            return None
        if self.failing is not None:
            return f"the journal cannot be written: {self.failing}"
        return f"the journal takes no more packets: {self._over_water}"

    def _file(self) -> JournalFile:
        if self.file is None:
            raise JournalError("the journal is not open")
        return self.file

    def _take_id(self) -> int:
        entry_id, self._next_id = self._next_id, self._next_id + 1
        return entry_id

    def _quarantine(self, reason: str, detail: str, refused=()) -> Quarantine:
        return Quarantine(reason, detail, round(self.wall() * 1e9), refused)

    def _add(self, entry: JournalEntry, quarantine: Quarantine | None) -> Deferred:
        durable: Deferred[JournalEntry] = Deferred()
        self._changes.added.append((entry, quarantine))
        self._waiters.append((durable, entry))
        self.stats.packets_journaled += 1
        if quarantine is not None:
            self._quarantined_unsaved += row_bytes(entry, quarantine)
            self._check_quarantine()
        self._commit_next()
        return durable

    # -- group commit ----------------------------------------------------------

    def _commit_next(self) -> None:
        if self._committing or self._retry_call is not None or not self._changes:
            return
        if self.file is None:
            return  # not started yet, or closed: kept until start / lost in _give_up
        changes, self._changes = self._changes, Changes()
        waiters, self._waiters = self._waiters, []
        self._committing = True
        self.stats.commits += 1
        done = self.worker.run(self._commit, self.file, changes)
        done.addCallbacks(
            self._committed,
            self._commit_failed,
            callbackArgs=(changes, waiters),
            errbackArgs=(changes, waiters),
        )

    def _commit(self, file: JournalFile, changes: Changes) -> tuple[int, Sizes, int]:
        """
        In the worker: commit, then measure the live size, what the packets
        hold and the free space.
        """
        used = file.commit(changes)
        return used, file.sizes(), self.free_bytes(self.directory)

    def _committed(
        self, measured: tuple[int, Sizes, int], changes: Changes, waiters: list
    ) -> None:
        self._committing = False
        if self.failing is not None:
            self.log.info(
                "The journal can be written again ({why} is over)", why=self.failing
            )
            self.failing = None
        self.used_bytes, self.sizes, free = measured
        self._quarantined_unsaved -= _quarantined_size(changes)
        self._check_quarantine()
        self._check_water(self.waiting_bytes, free)
        for durable, entry in waiters:
            durable.callback(entry)
        self._commit_next()
        if not self._committing:
            self._notify_idle()

    def _commit_failed(self, failure: Failure, changes: Changes, waiters: list) -> None:
        self._committing = False
        self._changes = changes.then(self._changes)
        self._waiters = waiters + self._waiters
        self.stats.commits_failed += 1
        why = failure.getErrorMessage() or failure.type.__name__
        if self.failing is None:
            self.failing = why
            if failure.check(sqlite3.Error, OSError):
                self.log.critical(
                    "Cannot write the journal {path}: {why}; keeping {packets} "
                    "in memory and taking no more from stations until it works again",
                    path=self.file.path if self.file else self.directory,
                    why=why,
                    count=len(self._changes.added),
                    packets=counted(len(self._changes.added), "packet"),
                )
            else:
                self.log.failure("Unexpected error writing the journal", failure)
        self._set_full(True)
        if self.running:
            self._retry_call = self.clock.callLater(self.retry_interval, self._retry)
        else:
            self._retry_call = self.clock.callLater(1.0, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self._commit_next()

    def _notify_idle(self) -> None:
        waiters, self._idle = self._idle, []
        for waiter in waiters:
            waiter.callback(None)

    # -- high and low water --------------------------------------------------------

    def _check_quarantine(self) -> None:
        """Say when the quarantine spends its budget, and when it has room again."""
        full = self.quarantine_full
        if full == self._quarantine_was_full:
            return
        self._quarantine_was_full = full
        if full:
            self.log.warn(
                "The quarantine holds {used} bytes, its budget (--quarantine-max-size) "
                "is {budget}: packets that are not from a station in the devices file "
                "(unknown devices, bad headers, cut-off or oversized bytes) are now "
                "refused, not kept; stations in the devices file are served as usual. "
                "See 'weather quarantine list --data-dir {data_dir}'",
                used=self.quarantined_bytes,
                budget=self.quarantine_max_bytes,
                data_dir=self.directory,
            )
        else:
            self.log.info(
                "The quarantine holds {used} bytes, under its budget of {budget}: "
                "keeping what cannot be decoded again",
                used=self.quarantined_bytes,
                budget=self.quarantine_max_bytes,
            )

    def _check_water(self, waiting: int, free: int | None = None) -> None:
        """C{waiting}: bytes of the packets to deliver (L{waiting_bytes})."""
        if free is None:
            free = self.free_bytes(self.directory)
        if self._over_water is None:
            reasons = []
            if waiting >= self.max_bytes:
                reasons.append(
                    f"it holds {waiting} bytes of packets not yet in InfluxDB, its "
                    f"high-water mark (--journal-max-size) is {self.max_bytes}"
                )
            if free < self.min_free_bytes:
                reasons.append(
                    f"its disk has {free} bytes free, less than --journal-min-free "
                    f"{self.min_free_bytes}"
                )
            if reasons:
                self._over_water = " and ".join(reasons)
                self._schedule_measure()
                self.log.critical(
                    "The journal is taking no more packets from stations (they keep their "
                    "readings for their next upload): {why}",
                    why=self._over_water,
                )
        elif waiting <= self.max_bytes * LOW_WATER and free >= self.min_free_bytes * 2:
            self._over_water = None
            self.log.info(
                "The journal holds {waiting} bytes of packets not yet in InfluxDB and "
                "its disk has {free} bytes free: taking packets again",
                waiting=waiting,
                free=free,
            )
        self._set_full(self._over_water is not None or self.failing is not None)

    def _schedule_measure(self) -> None:
        """
        While over the mark, measure again now and then: with no station
        accepted there may be no commit to measure after.
        """
        if self._measure_call is None and self.running:
            self._measure_call = self.clock.callLater(self.retry_interval, self._measure)

    def _measure(self) -> None:
        """Give back what space can be given (in the worker), then measure."""
        self._measure_call = None
        if not self._over_water or self.file is None:
            return
        file = self.file

        def reclaim_and_measure() -> tuple[int, Sizes, int]:
            file.reclaim()
            return file.used_bytes(), file.sizes(), self.free_bytes(self.directory)

        def check(measured: tuple[int, Sizes, int]) -> None:
            if self.file is not None:
                self.used_bytes, self.sizes, free = measured
                self._check_water(self.waiting_bytes, free)
                if self._over_water:
                    self._schedule_measure()

        measured = self.worker.run(reclaim_and_measure)
        measured.addCallbacks(check, self._measure_failed)

    def _measure_failed(self, failure: Failure) -> None:
        self.log.error("Cannot measure the journal: {why}", why=failure.getErrorMessage())
        self._schedule_measure()

    def _set_full(self, full: bool) -> None:
        if full == self.full:
            return
        self.full = full
        for observer in list(self.full_observers):
            observer(full)


def _quarantined_size(changes: Changes) -> int:
    """The bytes of the packets C{changes} add straight into quarantine."""
    return sum(row_bytes(entry, why) for entry, why in changes.added if why is not None)


def _free_bytes(directory: str) -> int:
    """Bytes an unprivileged writer may still use on C{directory}'s file system."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


def server_running(directory: str) -> bool:
    """Whether a server holds C{directory}'s lock; creates nothing."""
    try:
        fd = os.open(os.path.join(directory, LOCKNAME), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def server_pid(directory: str, proc: str = "/proc") -> int | None:
    """
    The process id, as this machine numbers it, of the server holding
    C{directory}'s lock; None when no server holds it, or one that wrote no
    id (an older version, one still starting), or none here has the lock
    file open (a server on another machine, through a network file system).
    Creates nothing.

    The id the server wrote says only that it takes replays: the id
    returned is the lock's holder in C{/proc/locks}, which numbers
    processes as this one sees them, checked to have the file open (a
    server in a container wrote its own namespace's id, often 1, which here
    is another process: signalling it would end it, or reload systemd).
    """
    try:
        fd = os.open(os.path.join(directory, LOCKNAME), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            if not text.isdigit():
                return None
            lock = os.fstat(fd)
            for pid in _lock_holders(lock, proc):
                if _has_open(pid, lock, proc):
                    return pid
        return None
    finally:
        os.close(fd)


def _lock_holders(lock: os.stat_result, proc: str) -> list[int]:
    """The processes /proc/locks names as holding an exclusive flock on C{lock}'s inode."""
    try:
        with open(os.path.join(proc, "locks"), encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    holders = []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 15217 fe:00:2146812 0 EOF"; "->": waiting.
        fields = line.split()
        if len(fields) < 6 or fields[1:4] != ["FLOCK", "ADVISORY", "WRITE"]:
            continue
        pid, inode = fields[4], fields[5].rpartition(":")[2]
        if pid.isdigit() and inode.isdigit() and int(inode) == lock.st_ino:
            holders.append(int(pid))
    return holders


def _has_open(pid: int, lock: os.stat_result, proc: str) -> bool:
    """Whether process C{pid} has C{lock}'s file open."""
    fds = os.path.join(proc, str(pid), "fd")
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    for name in names:
        try:
            st = os.stat(os.path.join(fds, name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (lock.st_dev, lock.st_ino):
            return True
    return False


def _write_pid(fd: int, pid: int) -> None:
    """Write C{pid} into the lock file C{fd} (held): what L{server_pid} reads."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode("ascii"), 0)


def check_lock(directory: str) -> None:
    """@raise JournalError: the directory is unusable or another server holds it."""
    os.close(take_lock(directory))


def take_lock(directory: str) -> int:
    """
    Hold C{directory}'s lock file: one server per journal.

    Why not L{twisted.python.lockfile.FilesystemLock}: it is a symlink naming
    a pid, which outlives a killed server; the next start must then judge
    whether that pid still runs, and a reused pid (in a container the
    server is often pid 1 every time) keeps it locked for good.  The kernel
    releases an C{flock} when the process dies, however it dies, and
    L{server_running} can test it without taking it.
    """
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(directory, LOCKNAME), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise JournalError(f"cannot use --data-dir {directory}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JournalLocked(
            f"another weather server is using --data-dir {directory}"
        ) from None
    # A process id left by a server that is gone is no one's to signal: the
    # server writes its own (L{Journal.startService}), other holders none.
    os.ftruncate(fd, 0)
    return fd
