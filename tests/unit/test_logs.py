"""
L{RateLimitedLog}: one line per key per period, the count of what was left
out reported on the next line, and a bounded table of keys however many
peers there are.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from weather.server.logs import RateLimitedLog

T0 = 1_700_000_000
PERIOD = 60.0


class RateLimitedLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.events: list[dict] = []
        self.limited = self.build()

    def build(self, **kwargs) -> RateLimitedLog:
        return RateLimitedLog(
            Logger(observer=self.events.append), self.clock, period=PERIOD, **kwargs
        )

    def texts(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    def test_firstEmitted(self) -> None:
        """The first event of a key is logged at once, with its fields."""
        self.assertTrue(self.limited.warn("a", "Bad packet from {peer}", peer="p:1"))
        [event] = self.events
        self.assertEqual(formatEvent(event), "Bad packet from p:1")
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["suppressed"], 0)
        self.assertEqual(event["peer"], "p:1")

    def test_levels(self) -> None:
        """warn, error and emit log at their level."""
        self.limited.warn("w", "w")
        self.limited.error("e", "e")
        self.limited.emit(LogLevel.critical, "c", "c")
        self.assertEqual(
            [e["log_level"] for e in self.events],
            [LogLevel.warn, LogLevel.error, LogLevel.critical],
        )

    def test_repeatsSuppressed(self) -> None:
        """Within the period, the same key logs nothing more and says so."""
        self.limited.warn("a", "Bad packet from {peer}", peer="p:1")
        for i in range(5):
            self.clock.advance(10)
            self.assertFalse(self.limited.warn("a", "Bad packet from {peer}", peer=i))
        self.assertEqual(len(self.events), 1)

    def test_countReportedOnTheNextLine(self) -> None:
        """
        The next line logged for the key, once the period has passed, tells
        how many were left out: field C{suppressed} and in the text.
        """
        self.limited.warn("a", "Bad packet from {peer}", peer="p:1")
        for _ in range(7):
            self.limited.warn("a", "Bad packet from {peer}", peer="p:1")
        self.clock.advance(PERIOD)
        self.assertTrue(self.limited.warn("a", "Bad packet from {peer}", peer="p:2"))
        first, second = self.events
        self.assertEqual(second["suppressed"], 7)
        self.assertEqual(
            formatEvent(second), "Bad packet from p:2 (7 more like this were not logged)"
        )
        self.assertNotIn("more like this", formatEvent(first))

    def test_countStartsAgain(self) -> None:
        """Once reported, the count starts from zero."""
        self.limited.warn("a", "x")
        self.limited.warn("a", "x")
        self.clock.advance(PERIOD)
        self.limited.warn("a", "x")
        self.clock.advance(PERIOD)
        self.limited.warn("a", "x")
        self.assertEqual([e["suppressed"] for e in self.events], [0, 1, 0])
        self.assertEqual(self.texts(), ["x", "x (1 more like this were not logged)", "x"])

    def test_periodBoundary(self) -> None:
        """Just before the period the key is still quiet; at the period it logs."""
        self.limited.warn("a", "x")
        self.clock.advance(PERIOD - 0.001)
        self.assertFalse(self.limited.warn("a", "x"))
        self.clock.advance(0.001)
        self.assertTrue(self.limited.warn("a", "x"))
        self.assertEqual(len(self.events), 2)

    def test_periodFromTheLastLineLogged(self) -> None:
        """
        The period runs from the last line logged, not the last attempt: a
        key repeated every second still logs once a period.
        """
        for _ in range(int(3 * PERIOD)):
            self.limited.warn("a", "x")
            self.clock.advance(1)
        self.assertEqual([e["suppressed"] for e in self.events], [0, 59, 59])

    def test_keysIndependent(self) -> None:
        """Different keys are limited apart."""
        self.limited.warn(("peer_limit", "10.0.0.1"), "one")
        self.limited.warn(("peer_limit", "10.0.0.2"), "two")
        self.limited.warn(("peer_limit", "10.0.0.1"), "one")
        self.limited.warn(("rate_limited", "10.0.0.1"), "three")
        self.assertEqual(self.texts(), ["one", "two", "three"])
        self.clock.advance(PERIOD)
        self.limited.warn(("peer_limit", "10.0.0.2"), "two")
        self.limited.warn(("peer_limit", "10.0.0.1"), "one")
        self.assertEqual(
            self.texts()[3:], ["two", "one (1 more like this were not logged)"]
        )

    def test_noFieldSuppressedFromTheCaller(self) -> None:
        """The caller's own fields reach the event untouched."""
        self.limited.warn("a", "{a} {b}", a=1, b="two")
        [event] = self.events
        self.assertEqual((event["a"], event["b"]), (1, "two"))


class KeyCapTests(SynchronousTestCase):
    """Past C{max_keys} live keys, new keys share one overflow key."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.events: list[dict] = []

    def build(self, max_keys: int) -> RateLimitedLog:
        return RateLimitedLog(
            Logger(observer=self.events.append),
            self.clock,
            period=PERIOD,
            max_keys=max_keys,
        )

    def test_default(self) -> None:
        self.assertEqual(self.build(1024).max_keys, 1024)
        limited = RateLimitedLog(Logger(observer=self.events.append), self.clock)
        self.assertEqual((limited.period, limited.max_keys), (60.0, 1024))

    def test_extraKeysShareOne(self) -> None:
        """
        With the table full, the first new key logs (as the overflow key),
        the following ones are counted under it and reported together.
        """
        limited = self.build(3)
        for i in range(3):
            self.assertTrue(limited.warn(i, "key {i}", i=i))
        self.assertTrue(limited.warn(3, "key {i}", i=3))
        for i in range(4, 10):
            self.assertFalse(limited.warn(i, "key {i}", i=i))
        self.assertEqual(len(limited._keys), 4)
        self.assertEqual(
            [formatEvent(e) for e in self.events], ["key 0", "key 1", "key 2", "key 3"]
        )
        # The keys in the table are still limited on their own.
        self.assertFalse(limited.warn(0, "key {i}", i=0))
        self.clock.advance(PERIOD)
        self.assertTrue(limited.warn(10, "key {i}", i=10))
        self.assertTrue(limited.warn(0, "key {i}", i=0))
        # The expired keys made room: key 10 has its own entry now.
        self.assertIn(10, limited._keys)

    def test_overflowCountReported(self) -> None:
        """
        The count of the overflow key is reported on its next line, as for
        any key.

        Regression: C{_forget} used to drop the overflow key with the
        others whose period had passed, and the overflow key can only log
        again once its own period has passed, so its count of left-out
        lines was never reported.
        """
        limited = self.build(2)
        limited.warn("a", "x")
        limited.warn("b", "x")
        for i in range(50):
            limited.warn(f"10.0.0.{i}", "flood {i}", i=i)
        self.assertEqual(len(self.events), 3)
        self.clock.advance(PERIOD)
        # "a" and "b" log again: the table stays full of live keys.
        self.assertTrue(limited.warn("a", "x"))
        self.assertTrue(limited.warn("b", "x"))
        self.assertTrue(limited.warn("10.0.1.1", "flood {i}", i="new"))
        self.assertEqual(len(limited._keys), 3)
        self.assertEqual(
            self.events[-1]["suppressed"],
            49,
            "the 49 lines left out under the overflow key were never reported",
        )
        self.assertIn("49 more like this", formatEvent(self.events[-1]))

    def test_memoryBounded(self) -> None:
        """More distinct keys than max_keys in one period: max_keys + 1 entries."""
        limited = self.build(100)
        for i in range(10_000):
            limited.warn(("peer_limit", f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"), "x")
            self.assertLessEqual(len(limited._keys), 101)
        self.assertEqual(len(limited._keys), 101)
        self.assertEqual(len(self.events), 101)

    def test_floodFromTenThousandAddresses(self) -> None:
        """
        10,000 addresses, each refused every 30 s for a minute, with the
        default cap: max_keys + 1 lines per period, and the table never
        holds more than max_keys + 1 keys.
        """
        limited = RateLimitedLog(Logger(observer=self.events.append), self.clock)
        addresses = [f"2001:db8::{i:x}" for i in range(10_000)]
        lines = []
        for _ in range(3):
            before = len(self.events)
            for address in addresses:
                limited.warn(("rate_limited", address), "Refused {a}", a=address)
                self.assertLessEqual(len(limited._keys), 1025)
            lines.append(len(self.events) - before)
            self.clock.advance(30)
        self.assertEqual(lines, [1025, 0, 1025])
        # The keys that logged again say how many were left out.
        self.assertEqual(self.events[1025]["suppressed"], 1)

    def test_expiredKeysForgottenOnlyWhenFull(self) -> None:
        """Keys past their period stay until the table needs the room."""
        limited = self.build(3)
        limited.warn("a", "x")
        self.clock.advance(10 * PERIOD)
        limited.warn("b", "x")
        self.assertEqual(set(limited._keys), {"a", "b"})
        limited.warn("c", "x")
        limited.warn("d", "x")  # full: "a" has expired and makes room
        self.assertEqual(set(limited._keys), {"b", "c", "d"})
        self.assertEqual(len(self.events), 4)

    def test_forgottenCountsReported(self) -> None:
        """
        Keys forgotten to make room say, in one line, how many lines they
        held back: those counts would otherwise never be reported.
        """
        limited = self.build(2)
        limited.warn("a", "x")
        for _ in range(3):
            limited.warn("a", "x")
        limited.warn("b", "x")
        limited.warn("b", "x")
        self.clock.advance(PERIOD)
        self.assertTrue(limited.warn("c", "y"))
        texts = [formatEvent(e) for e in self.events]
        self.assertEqual(
            texts[2:],
            ["4 more rate-limited log lines, from 2 sources, were not logged", "y"],
        )
        self.assertEqual(self.events[2]["log_level"], LogLevel.warn)
        self.assertEqual((self.events[2]["count"], self.events[2]["sources"]), (4, 2))
        # Nothing held back, nothing said.
        self.clock.advance(PERIOD)
        limited.warn("d", "z")
        self.assertEqual([formatEvent(e) for e in self.events][4:], ["z"])

    def test_forgottenCountSingular(self) -> None:
        """One line held back by one key is said in the singular."""
        limited = self.build(1)
        limited.warn("a", "x")
        limited.warn("a", "x")
        self.clock.advance(PERIOD)
        limited.warn("b", "y")
        self.assertEqual(
            [formatEvent(e) for e in self.events][1:],
            ["1 more rate-limited log line, from 1 source, was not logged", "y"],
        )
