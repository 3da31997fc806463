"""
The journal's real disk worker, a thread of its own with the real reactor:
commits run off the event loop, results and errors come back on it.  The
journal service itself is tested on a fake worker in
tests/unit/test_journalservice.py.
"""

from __future__ import annotations

import sqlite3

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase

from tests.support import journal_options
from tests.unit.test_journalservice import T0, packet
from weather.journal.service import (
    Journal,
    ThreadDiskWorker,
)
from weather.journal.store import JournalFile


class ThreadDiskWorkerTests(TestCase):
    """The real worker: commits in its own thread, results in the reactor's."""

    def test_commitsInAThread(self):
        journal = Journal(
            self.mktemp(), reactor, ThreadDiskWorker(reactor), **journal_options()
        )
        journal.startService()
        appended = [journal.append(packet(T0 + i, 1)) for i in range(100)]

        def check(_):
            self.assertEqual(len(JournalFile(journal.directory).pending()), 100)
            self.assertLess(journal.stats.commits, 100)
            self.assertFalse(journal.worker.pool.started)

        done = gatherResults(appended).addCallback(lambda _: journal.stopService())
        return done.addCallback(check)

    def test_errorsComeBack(self):
        worker = ThreadDiskWorker(reactor)
        worker.start()
        self.addCleanup(worker.stop)

        def fail():
            raise sqlite3.OperationalError("database or disk is full")

        return self.assertFailure(worker.run(fail), sqlite3.OperationalError)
