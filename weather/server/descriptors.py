"""
File descriptors: how many the process has left, and listening ports that
stop accepting when there are none rather than accepting and closing.

Out of descriptors, Twisted's TCP port frees the one it keeps in reserve and
accepts, then closes, every connection waiting in the listen queue, logging
a line for each.  A station whose firmware writes without waiting for the
acknowledgement takes that for a successful upload: its packet is lost.  So
the station listener stops calling accept() while fewer than
L{DESCRIPTOR_RESERVE} descriptors are left (L{DescriptorBudget}), leaving
the rest to the journal, the log and InfluxDB; and should a port meet
EMFILE all the same, L{GuardedSocket} makes accept() say "nothing waiting"
instead, so that the connections stay in the kernel's queue, unharmed.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from weather.server.logs import RateLimitedLog

_log = Logger()

#: Descriptors the station listener leaves to everything else (the journal's
#: files, the log and its rotation, InfluxDB's connections, the HTTP
#: endpoint): it stops accepting with fewer left.
DESCRIPTOR_RESERVE = 32
#: Seconds a count of the open descriptors is used for; also how often the
#: count is taken again while accepting is stopped for want of them.
RECOUNT_EVERY = 0.25
#: What accept() fails with when the process or the system is out of
#: descriptors or socket memory (Twisted's TCP port closes connections on
#: the first, and logs a line per attempt on the others).
EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def open_descriptors() -> int | None:
    """
    How many descriptors this process has open, or None where the system
    does not say (Linux: C{/proc/self/fd}; macOS: C{/dev/fd}).  Costs about
    0.4 microseconds per open descriptor.
    """
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1  # the one listdir opened
        except OSError:
            continue
    return None


def descriptor_limit() -> int | None:
    """The soft open-files limit, or None: no limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


class DescriptorBudget:
    """
    How many more descriptors may be used for station connections: those
    left under the open-files limit, less C{reserve}.

    Counting costs time in proportion to the descriptors open, so a count is
    used for L{RECOUNT_EVERY} seconds on C{clock}, less what was said to be
    used meanwhile (L{use}); descriptors closed meanwhile are seen at the
    next count.
    """

    def __init__(
        self,
        clock: IReactorTime,
        reserve: int = DESCRIPTOR_RESERVE,
        count: Callable[[], int | None] = open_descriptors,
        limit: Callable[[], int | None] = descriptor_limit,
    ) -> None:
        self.clock = clock
        self.reserve = reserve
        self._count = count
        self._limit = limit
        self._left: int | None = None
        self._counted_at = float("-inf")

    def spare(self, recount: bool = False) -> int | None:
        """
        Descriptors that may still be used above the reserve (0 or less:
        none), or None where they cannot be counted.
        """
        now = self.clock.seconds()
        if recount or now - self._counted_at >= RECOUNT_EVERY:
            limit, count = self._limit(), self._count()
            self._left = None if limit is None or count is None else limit - count
            self._counted_at = now
        return None if self._left is None else self._left - self.reserve

    def use(self, count: int) -> None:
        """C{count} descriptors were (or may have been) taken since the last count."""
        if self._left is not None:
            self._left -= count


class GuardedSocket:
    """
    A listening socket whose accept(), out of descriptors, tells the caller
    C{exhausted(errno)} and then raises EAGAIN ("nothing waiting"), so that
    Twisted's port neither closes the connections in the listen queue nor
    logs a line for each: they wait in the kernel's queue until the port
    reads again.  Everything else is the socket's own.
    """

    def __init__(self, listening: Any, exhausted: Callable[[int], object]) -> None:
        self._socket = listening
        self._exhausted = exhausted

    def accept(self) -> tuple[Any, Any]:
        try:
            return self._socket.accept()
        except OSError as e:
            if e.errno not in EXHAUSTED:
                raise
            self._exhausted(e.errno)
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN)) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


def guard_accept(port: Any, exhausted: Callable[[int], object]) -> bool:
    """
    Give a Twisted TCP or UNIX listening port a L{GuardedSocket}; say whether
    it could be (other ports have no socket to guard).
    """
    listening = getattr(port, "socket", None)
    if listening is None or not hasattr(listening, "accept"):
        return False
    if not isinstance(listening, GuardedSocket):
        port.socket = GuardedSocket(listening, exhausted)
    return True


def pause_when_exhausted(port: Any, clock: IReactorTime, description: str) -> bool:
    """
    Guard C{port} (L{guard_accept}): out of descriptors, it stops accepting
    for L{RECOUNT_EVERY} seconds, and says so in one line a minute at most.
    For ports nothing else stops and starts (the station listener does its
    own).  Say whether it could be guarded.
    """
    limited = RateLimitedLog(_log, clock)

    def resume() -> None:
        if getattr(port, "connected", False) and not getattr(port, "disconnecting", False):
            port.startReading()

    def exhausted(code: int) -> None:
        limited.warn(
            "exhausted",
            "Out of file descriptors ({error}): not accepting connections on {where} "
            "for now; they wait in the listen queue",
            error=errno.errorcode.get(code, code),
            where=description,
        )
        port.stopReading()
        clock.callLater(RECOUNT_EVERY, resume)

    return guard_accept(port, exhausted)
