"""
SIGTERM and SIGINT once the server is stopping: noted in one line, else
ignored.

Twisted's handlers call C{reactor.stop()} on every signal.  Once the stop
has begun that raises C{ReactorNotRunning}, which the reactor logs with a
traceback, once for each further signal: a supervisor that repeats its
SIGTERM, an impatient Ctrl-C.  The stop itself (a flush with its deadline,
the journal's last commit) goes on the same; SIGKILL still ends the process
at once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

__all__ = ["QuietRepeatedStop"]

#: The signals the reactor stops on (SIGBREAK exists on Windows only).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class QuietRepeatedStop(Service):
    """
    Once started and the reactor running (it installs its handlers as it
    starts, after twistd starts the services), stands in front of the
    reactor's SIGTERM and SIGINT handlers: the first signal goes to the
    reactor, which stops; once stopping, however it began, the next is
    logged in one line and the rest are ignored.  Stays installed after its
    stop, when the signals it is for arrive; L{restore} puts the reactor's
    handlers back.
    """

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.stopping = False
        #: Signals received once stopping.
        self.ignored = 0
        self._handlers: dict[int, Callable[[int, FrameType | None], Any]] = {}

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self.install)
        self.reactor.addSystemEventTrigger("before", "shutdown", self._stopping)

    def install(self) -> None:
        """Stand in front of the reactor's handlers, where it has any."""
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if getattr(handler, "__self__", None) is self.reactor and signum not in (
                self._handlers
            ):
                self._handlers[signum] = handler  # type: ignore[assignment]
                signal.signal(signum, self.received)

    def _stopping(self) -> None:
        self.stopping = True

    def received(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: the reactor's the first time, then quiet."""
        if not self.stopping:
            self.stopping = True
            self._handlers[signum](signum, frame)
            return
        self.ignored += 1
        if self.ignored == 1:  # logged in the reactor: not in the middle of a write
            self.reactor.callFromThread(
                self.log.info,
                "{signal} while stopping: the stop goes on (SIGKILL ends the process "
                "at once); further stop signals are not logged",
                signal=signal.Signals(signum).name,
            )

    def restore(self) -> None:
        """Give the signals back to the reactor's handlers."""
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers.clear()
