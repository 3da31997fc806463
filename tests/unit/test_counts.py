"""
The services' counters are typed: a counter that does not exist fails at
once rather than reading 0 forever.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from weather.core.packet import Reason
from weather.journal.service import JournalCounts
from weather.ops.metrics import _counter
from weather.ops.selfstats import SelfStatsCounts
from weather.server.admission import HOLDS, NOT_ALLOWED, REFUSALS
from weather.server.counts import ReasonCounts
from weather.server.pipeline import REJECTION_REASONS, PipelineCounts
from weather.server.protocol import ConnectionCounts
from weather.server.writer import WriterCounts

COUNTS = (ConnectionCounts, PipelineCounts, WriterCounts, JournalCounts, SelfStatsCounts)


class TypedCountsTests(SynchronousTestCase):
    def test_misspeltCounterRaises(self) -> None:
        """Reading, counting or setting a counter that does not exist raises."""
        for kind in COUNTS:
            counts = kind()
            with self.assertRaises(AttributeError, msg=kind.__name__):
                counts.packets_acepted  # noqa: B018
            with self.assertRaises(AttributeError, msg=kind.__name__):
                counts.packets_acepted += 1
            with self.assertRaises(AttributeError, msg=kind.__name__):
                counts.packets_acepted = 1

    def test_metricOfMisspeltCounterRaises(self) -> None:
        """A /metrics counter named after no field fails the scrape, not reads 0."""
        counts = PipelineCounts()
        self.assertEqual(
            _counter("weather_packets_accepted", "", counts).samples[0].value, 0
        )
        self.assertRaises(AttributeError, _counter, "weather_packets_acepted", "", counts)

    def test_eachFromZero(self) -> None:
        counts = PipelineCounts()
        self.assertEqual(counts.packets_accepted, 0)
        counts.packets_accepted += 2
        self.assertEqual(counts.packets_accepted, 2)
        self.assertEqual(PipelineCounts().packets_accepted, 0)  # not shared

    def test_everyReasonFromZero(self) -> None:
        """Every reason is there from the start, so every label is exported."""
        self.assertEqual(
            dict(PipelineCounts().packets_rejected), dict.fromkeys(REJECTION_REASONS, 0)
        )
        self.assertEqual(
            dict(ConnectionCounts().connections_refused), dict.fromkeys(REFUSALS, 0)
        )
        self.assertEqual(dict(ConnectionCounts().connections_held), dict.fromkeys(HOLDS, 0))
        self.assertIn(Reason.UNKNOWN_DEVICE, REJECTION_REASONS)


class ReasonCountsTests(SynchronousTestCase):
    def test_counts(self) -> None:
        counts = ReasonCounts(REFUSALS)
        counts.add(NOT_ALLOWED)
        counts.add(NOT_ALLOWED, 2)
        self.assertEqual(counts[NOT_ALLOWED], 3)
        self.assertEqual(counts.total(), 3)
        self.assertEqual(list(counts), list(REFUSALS))

    def test_unknownReasonRaises(self) -> None:
        """A reason outside the set is neither counted nor read as 0."""
        counts = ReasonCounts(REFUSALS)
        self.assertRaises(KeyError, counts.add, "peer-limit")
        self.assertRaises(KeyError, lambda: counts["peer-limit"])
        self.assertEqual(counts.total(), 0)
        self.assertNotIn("peer-limit", counts)
