"""
The unit tier's slowest property tests with the example counts they had
before that tier was cut to seconds: the same checks on each example, four
to seven times as many examples (about 15 s in all).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.unit import test_core_columns as columns
from tests.unit import test_writer as writer
from weather.core.devices import DeviceProfile


class EncodePacketExhaustiveTests(SynchronousTestCase, columns.RandomEncodingMixin):
    """L{columns.EncodePacketTests}' random profiles and packets, many more of them."""

    @settings(max_examples=400, deadline=None)
    @given(columns.profiles(), st.data(), columns.arrivals, columns.previous_arrivals)
    def test_randomPackets(
        self, profile: DeviceProfile, data: st.DataObject, arrival, previous
    ) -> None:
        self.checkRandomPackets(profile, data, arrival, previous)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(columns.profiles(), min_size=1, max_size=4), st.data())
    def test_randomStations(self, stations: list[DeviceProfile], data) -> None:
        self.checkRandomStations(stations, data)


class WritesAcrossBatchesExhaustiveTests(writer.WritesAcrossBatchesTests):
    """L{writer.WritesAcrossBatchesTests}, with many more writes."""

    @settings(max_examples=150, deadline=None)
    @given(**writer.WRITES)
    def test_everyPointOnceEachWriteSettled(self, **writes: Any) -> None:
        self.checkEveryPointOnceEachWriteSettled(**writes)
