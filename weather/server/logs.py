"""
Rate-limited logging: bad input from the network produces a handful of lines
and counters, never a flood.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from weather.core.dump import counted

#: Seconds between two looks for expired keys while the table is full.
FORGET_EVERY = 1.0
#: The key shared by new keys while the table is full.
_OVERFLOW = object()


class RateLimitedLog:
    """
    Emit at most one event per key per C{period} seconds.

    The first event of a key is emitted at once; the ones that follow within
    C{period} are counted, and the count is reported with the next event
    emitted for that key (field C{suppressed}).  Keys whose period has passed
    are forgotten, and past C{max_keys} live keys (a flood from many peer
    addresses) new keys share one: memory stays bounded and the log quiet.
    """

    def __init__(
        self,
        log: Logger,
        clock: IReactorTime,
        period: float = 60.0,
        max_keys: int = 1024,
    ) -> None:
        self.log = log
        self.clock = clock
        self.period = period
        self.max_keys = max_keys
        self._keys: dict[object, list] = {}  # key -> [last emitted at, suppressed]
        self._last_forget = float("-inf")

    def emit(self, level: LogLevel, key: object, format: str, **kwargs: Any) -> bool:
        """Log C{format} unless C{key} was logged in the last period; say if it was."""
        now = self.clock.seconds()
        if key not in self._keys and len(self._keys) >= self.max_keys:
            if now - self._last_forget >= FORGET_EVERY:  # a flood scans once a second
                self._last_forget = now
                self._forget(now)
            if len(self._keys) >= self.max_keys:
                key = _OVERFLOW
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.period:
            entry[1] += 1
            return False
        suppressed = entry[1] if entry is not None else 0
        if suppressed:
            format += " ({suppressed} more like this were not logged)"
        self.log.emit(level, format, suppressed=suppressed, **kwargs)
        self._keys[key] = [now, 0]
        return True

    def warn(self, key: object, format: str, **kwargs: Any) -> bool:
        return self.emit(LogLevel.warn, key, format, **kwargs)

    def error(self, key: object, format: str, **kwargs: Any) -> bool:
        return self.emit(LogLevel.error, key, format, **kwargs)

    def _forget(self, now: float) -> None:
        """
        Drop the keys whose period has passed, and say how many lines they
        held back.  The overflow key stays: its count goes on its next line.
        """
        unreported = sources = 0
        for key, (when, suppressed) in list(self._keys.items()):
            if now - when >= self.period and key is not _OVERFLOW:
                del self._keys[key]
                if suppressed:
                    unreported += suppressed
                    sources += 1
        if unreported:
            self.log.warn(
                "{lines}, from {sources_counted}, {were} not logged",
                count=unreported,
                sources=sources,
                lines=counted(unreported, "more rate-limited log line"),
                were="was" if unreported == 1 else "were",
                sources_counted=counted(sources, "source"),
            )
