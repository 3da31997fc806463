"""
The unit tier's station model of the timestamp rule (L{tests.unit.test_timing})
with many more examples and longer runs of uploads (about 20 s).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.unit import test_timing as timing


class StationModelExhaustiveTests(SynchronousTestCase, timing.StationModelMixin):
    """L{timing.StationModelTests}' stations, many more of them, uploading longer."""

    @settings(max_examples=6000, deadline=None)
    @given(
        timing.configs,
        timing.ratios,
        timing.alphabets,
        st.lists(timing.uploads, max_size=40),
    )
    def test_station(self, config, ratio, alphabet, steps) -> None:
        self.checkStation(config, ratio, alphabet, steps)
