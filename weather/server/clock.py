"""
Whether the server's wall clock can be trusted (C{--clock-sync}).

A station has no clock: its readings are stamped with the server's wall
clock when a packet arrives.  A Raspberry Pi has no real-time clock either:
after a power cut it runs hours behind until NTP sets it.  With
C{--clock-sync wait} the pipeline journals and acknowledges packets as
usual but decodes none (L{ClockGate.holding}) until the kernel says the
clock is synchronized; each held packet's arrival is then put right from the
boot clock, which was never stepped (L{ClockGate.rebase}).  With C{trust} the
clock is used as it is; C{auto} waits where an NTP client manages the clock
(L{find_ntp_client}) and trusts it where none does (containers, development
machines: their kernel says "unsynchronized" for ever, while their clock is
fine).

See docs/protocol.md, "The server's clock".
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import Interface, implementer

from weather.core.packet import Packet
from weather.server.protocol import CLOCK_STEP_NS

#: What C{--clock-sync} may be.
MODES = ("auto", "wait", "trust")
#: adjtimex(2)'s return value while the clock is not synchronized.
TIME_ERROR = 5
#: The C{status} bit set while the clock is not synchronized.
STA_UNSYNC = 0x40
#: systemd's rule: synchronized only with a maximum error below 16 s.
MAX_ERROR_US = 16_000_000
#: Seconds between two looks at the kernel's clock status while waiting.
POLL_INTERVAL = 10.0
#: Processes that keep the clock synchronized, as /proc/PID/comm names them
#: (at most 15 characters: systemd-timesyncd is cut short).  ntpsec's,
#: OpenNTPD's and busybox's daemons are all called ntpd.
NTP_CLIENTS = (
    "systemd-timesyn",
    "chronyd",
    "ntpd",
    "openntpd",
    "ptp4l",
    "phc2sys",
)


class IClockStatus(Interface):
    """What the kernel says of the system's wall clock."""

    def synchronized() -> bool:
        """
        Whether the wall clock is synchronized (to NTP, PTP, ...).

        @raise OSError: the kernel cannot say.
        """


class Timex(ctypes.Structure):
    """Linux's C{struct timex} (C{<sys/timex.h>}): what adjtimex(2) fills in."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("reserved", ctypes.c_int * 11),
    ]


def timex_synchronized(state: int, timex: Timex) -> bool:
    """
    systemd's reading of adjtimex(2)'s answer: synchronized unless it
    returned C{TIME_ERROR}, set C{STA_UNSYNC}, or allows an error of 16 s
    or more.
    """
    return (
        state != TIME_ERROR
        and not timex.status & STA_UNSYNC
        and timex.maxerror < MAX_ERROR_US
    )


@implementer(IClockStatus)
class KernelClockStatus:
    """
    The kernel's own answer: adjtimex(2) with C{modes = 0}, which only
    reads (no privilege needed, a system call and no I/O).
    """

    def __init__(self) -> None:
        # The process's own symbols, the C library's among them (no search
        # for the library file: ctypes.util.find_library runs programs).
        libc = ctypes.CDLL(None, use_errno=True)
        self._adjtimex = getattr(libc, "adjtimex", None)
        if self._adjtimex is not None:
            self._adjtimex.argtypes = [ctypes.POINTER(Timex)]
            self._adjtimex.restype = ctypes.c_int

    def synchronized(self) -> bool:
        if self._adjtimex is None:
            raise OSError("this system has no adjtimex(2)")
        timex = Timex()  # all zero: modes = 0 changes nothing
        state = self._adjtimex(ctypes.byref(timex))
        if state == -1:
            errno = ctypes.get_errno()
            raise OSError(errno, f"adjtimex: {os.strerror(errno)}")
        return timex_synchronized(state, timex)


@implementer(IClockStatus)
class FakeClockStatus:
    """A clock status for tests: says what C{is_synchronized} says."""

    def __init__(self, is_synchronized: bool = False) -> None:
        self.is_synchronized = is_synchronized
        self.error: OSError | None = None

    def synchronized(self) -> bool:
        if self.error is not None:
            raise self.error
        return self.is_synchronized


def find_ntp_client(proc: str = "/proc") -> str | None:
    """
    The name of a running process that keeps the clock synchronized
    (L{NTP_CLIENTS}), or None.  Reads C{/proc}: call it at start-up only.
    """
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(os.path.join(proc, pid, "comm")) as f:
                name = f.read().strip()
        except OSError:
            continue  # gone since, or not ours to read
        if name in NTP_CLIENTS:
            return name
    return None


def choose_wait(mode: str, ntp_client: str | None) -> tuple[bool, str]:
    """
    Whether C{--clock-sync mode} waits for the clock, and why, in words
    for the start-up log; C{ntp_client} is what L{find_ntp_client} found.
    """
    if mode == "wait":
        return True, "--clock-sync wait"
    if mode == "trust":
        return False, "--clock-sync trust"
    if ntp_client is not None:
        return True, f"--clock-sync auto, and {ntp_client} manages the clock"
    return False, "--clock-sync auto, and no NTP client manages the clock here"


class ClockGate:
    """
    Holds decoding, when it is to C{wait}, until C{status} says the wall
    clock is synchronized (asked every C{interval} seconds of C{reactor});
    then says where each held packet really arrived (L{rebase}).

    Once the clock was seen synchronized the gate stays open: a clock that
    loses NTP later drifts slowly (a step would be logged by the protocol).

    @param boot_clock: the machine's boot clock in nanoseconds, never
        stepped; C{boot_id} is this boot's id (packets of another boot
        cannot be rebased).
    @param wall: the wall clock, in seconds (default: C{reactor.seconds}).
    """

    log = Logger()

    def __init__(
        self,
        status: IClockStatus,
        reactor: IReactorTime,
        boot_clock: Callable[[], int],
        boot_id: str | None,
        *,
        wait: bool,
        interval: float = POLL_INTERVAL,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.status = status
        self.reactor = reactor
        self.wall = wall if wall is not None else reactor.seconds
        self.boot_clock = boot_clock
        self.boot_id = boot_id
        self.wait = wait
        self.interval = interval
        #: True while packets are to wait for the clock.
        self.holding = False
        #: (wall clock - boot clock) in ns once the clock was seen synchronized.
        self.offset_ns: int | None = None
        #: The boot clock then: packets that arrived before it are rebased.
        self.synchronized_at_ns: int | None = None
        self._poll: LoopingCall | None = None
        self._released: Callable[[], object] = lambda: None

    def synchronized(self) -> bool | None:
        """What the kernel says now (None: it cannot say)."""
        try:
            return self.status.synchronized()
        except OSError:
            return None

    def start(self, released: Callable[[], object]) -> None:
        """
        With C{wait}, hold until the clock is synchronized, then call
        C{released}; if it is already, hold nothing.
        """
        if not self.wait or self.offset_ns is not None or self._check():
            return
        self.holding = True
        self._released = released
        self.log.warn(
            "The wall clock is not synchronized: packets are journaled and "
            "acknowledged, and wait to be decoded until it is",
        )
        self._poll = LoopingCall(self._look)
        self._poll.clock = self.reactor
        self._poll.start(self.interval, now=False)

    def stop(self) -> None:
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None

    def _check(self) -> bool:
        """Whether the clock is synchronized; if so, note the offset."""
        if not self.synchronized():
            return False
        # Read as the protocol stamps arrivals: the wall clock, in µs.
        wall_ns = round(self.wall() * 1_000_000) * 1000
        boot_ns = self.boot_clock()
        self.offset_ns, self.synchronized_at_ns = wall_ns - boot_ns, boot_ns
        return True

    def _look(self) -> None:
        if self._check():
            self.holding = False
            self.stop()
            self._released()

    def rebase(self, packet: Packet, boot_id: str | None) -> int | None:
        """
        When C{packet} (journaled during boot C{boot_id}) arrived on the
        synchronized clock: its boot-clock reading plus (wall - boot clock)
        at synchronization, if the wall clock stepped by more than
        L{CLOCK_STEP_NS} in between; else its recorded arrival, so that an
        arrival already right (or rebased and journaled before) stays
        exactly as it was.  None: it arrived during another boot, and only
        its recorded arrival is known.
        """
        if packet.boot_ns is None or boot_id is None or boot_id != self.boot_id:
            return None
        if self.offset_ns is None or self.synchronized_at_ns is None:
            return packet.arrival_ns
        if packet.boot_ns > self.synchronized_at_ns:
            return packet.arrival_ns
        rebased = packet.boot_ns + self.offset_ns
        if abs(rebased - packet.arrival_ns) > CLOCK_STEP_NS:
            return rebased
        return packet.arrival_ns
