"""
SIGTERM and SIGINT once stopping: the reactor hears the first, the log one
line for the rest (not a ReactorNotRunning traceback each).
"""

from __future__ import annotations

import signal

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from weather.app.signals import QuietRepeatedStop


class StoppingReactor(MemoryReactorClock):
    """A reactor whose stop handlers are Twisted's: bound methods that stop it."""

    def __init__(self) -> None:
        super().__init__()
        self.stops: list[int] = []
        self.from_thread: list = []

    def sigTerm(self, number: int, frame: object = None) -> None:
        self.stops.append(number)

    sigInt = sigTerm

    def shut_down(self) -> None:
        """What the reactor's stop does first: the before-shutdown triggers."""
        for f, args, kwargs in self.triggers.get("before", {}).get("shutdown", []):
            f(*args, **kwargs)

    def callFromThread(self, f, *args, **kwargs) -> None:
        self.from_thread.append((f, args, kwargs))

    def run_from_thread(self) -> None:
        calls, self.from_thread = self.from_thread, []
        for f, args, kwargs in calls:
            f(*args, **kwargs)


class QuietRepeatedStopTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = StoppingReactor()
        for signum, handler in (
            (signal.SIGTERM, self.reactor.sigTerm),
            (signal.SIGINT, self.reactor.sigInt),
        ):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
            signal.signal(signum, handler)
        self.service = QuietRepeatedStop(self.reactor)
        self.service.startService()
        self.addCleanup(self.service.restore)
        self.reactor.run()  # installs once the reactor runs

    def test_installed(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.assertEqual(signal.getsignal(signum), self.service.received)

    def test_repeatedSignalsQuiet(self) -> None:
        """The reactor stops on the first; the next is one line, the rest nothing."""
        with capturedLogs() as events:
            for _ in range(20):
                self.service.received(signal.SIGTERM, None)
            self.service.received(signal.SIGINT, None)
            self.reactor.run_from_thread()
        self.assertEqual(self.reactor.stops, [signal.SIGTERM])
        self.assertEqual(self.service.ignored, 20)
        [line] = [formatEvent(event) for event in events]
        self.assertEqual(
            line,
            "SIGTERM while stopping: the stop goes on (SIGKILL ends the process at "
            "once); further stop signals are not logged",
        )

    def test_stoppingOtherwise(self) -> None:
        """A stop begun by other means: the signal is not passed on to fail."""
        self.reactor.shut_down()
        self.service.received(signal.SIGTERM, None)
        self.assertEqual(self.reactor.stops, [])
        self.assertEqual(self.service.ignored, 1)

    def test_otherHandlersLeftAlone(self) -> None:
        """A handler that is not the reactor's (a debugger's) is not wrapped."""
        self.service.restore()

        def debugger(signum: int, frame: object) -> None:
            pass

        signal.signal(signal.SIGINT, debugger)
        QuietRepeatedStop(self.reactor).install()
        self.assertIs(signal.getsignal(signal.SIGINT), debugger)

    def test_restore(self) -> None:
        self.service.restore()
        self.assertEqual(signal.getsignal(signal.SIGTERM), self.reactor.sigTerm)
