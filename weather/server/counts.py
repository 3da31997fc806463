"""
Counts kept by reason, for a fixed set of reasons.

Each service's counters are the fields of a dataclass of its own, so a
misspelt counter is an L{AttributeError} at once, never a 0 forever.  Counts
by reason (why a packet was rejected, why a connection was refused) are a
L{ReasonCounts} for the same reason: a reason outside the set raises
L{KeyError}, whether counted or read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class ReasonCounts(Mapping[str, int]):
    """How many times each of C{reasons} happened, each from 0."""

    def __init__(self, reasons: Iterable[str]) -> None:
        self._counts = dict.fromkeys(reasons, 0)

    def add(self, reason: str, count: int = 1) -> None:
        """Count C{reason}.  @raise KeyError: it is not one of the reasons."""
        self._counts[reason] = self._counts[reason] + count

    def total(self) -> int:
        """All reasons together."""
        return sum(self._counts.values())

    def __getitem__(self, reason: str) -> int:
        return self._counts[reason]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __repr__(self) -> str:
        return f"ReasonCounts({self._counts!r})"
