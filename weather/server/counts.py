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


class SourceCounts(Mapping[tuple[str, str], int]):
    """
    How many times each of C{reasons} happened, by source (a peer's
    address), for the first C{max_sources} sources; later ones are counted
    together as L{OTHER}, so that a flood from many addresses cannot grow
    the table (nor the metrics' series) without bound.
    """

    OTHER = "other"

    def __init__(self, reasons: Iterable[str], max_sources: int = 64) -> None:
        self.reasons = frozenset(reasons)
        self.max_sources = max_sources
        self._counts: dict[tuple[str, str], int] = {}
        self._sources: set[str] = set()

    def add(self, source: str, reason: str) -> None:
        """Count C{reason} from C{source}.  @raise KeyError: not one of the reasons."""
        if reason not in self.reasons:
            raise KeyError(reason)
        if source not in self._sources:
            if len(self._sources) >= self.max_sources:
                source = self.OTHER
            else:
                self._sources.add(source)
        key = (source, reason)
        self._counts[key] = self._counts.get(key, 0) + 1

    def total(self) -> int:
        return sum(self._counts.values())

    def __getitem__(self, key: tuple[str, str]) -> int:
        return self._counts[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)
