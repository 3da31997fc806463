"""
The writer service: batches points and writes them to InfluxDB.

Points are queued as lines of line protocol.  A batch is sent when
C{batch_size} points are waiting or the oldest has waited C{flush_interval}
seconds, whichever comes first, with at most one request in flight.  A network
error, a timeout, 5xx, 429, 401/403 or 404 keeps the batch and tries again after
a capped exponential backoff with jitter (or the server's C{Retry-After}, if
longer; hand-written rather than L{twisted.application.internet.backoffPolicy},
which knows neither C{Retry-After} nor the shorter waits of a stopping writer).
VictoriaMetrics' 400 for a path it does not serve counts as InfluxDB's 404.
With C{create_database}, an InfluxDB 1.x database is made at start and
again before the retry of a write that found it missing (a 404 C{database
not found}: L{weather.server.database}); where it is not made, that write's
log line says what to run.
413 halves the batch (and the batch size from then on).  A 400 or 422
that names the refused lines (InfluxDB 3's partial write; 1.x/2.x parse errors
and type conflicts: L{read_refusal}) refuses just those, and the other points
count as written if InfluxDB stored them, else go again as one batch; one that
names none halves the batch until the offending points are alone.

Each L{PointWriter.write} returns a L{Deferred} that fires once InfluxDB has
acknowledged every one of its points, or fails with L{PointsRejected} naming
the points InfluxDB refused for good.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from itertools import chain
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from weather.core.dump import counted
from weather.server.database import (
    DECLINED,
    READY,
    REFUSED,
    Creation,
    creatable,
    create_command,
    create_database,
    missing_database,
)
from weather.server.influx import (
    IWriteTarget,
    Refusal,
    error_message,
    read_refusal,
    refuses_points,
    too_large,
)
from weather.server.logs import RateLimitedLog

#: The longest C{Retry-After} honoured, in seconds.
MAX_RETRY_AFTER = 3600.0
#: The longest wait between retries once the service is stopping, in seconds.
STOPPING_BACKOFF = 1.0
#: Below this fraction of C{max_pending}, an overloaded writer takes points again.
RESUME_FRACTION = 0.8
#: Seconds between two log lines of one outcome of making the database.
CREATION_LOG_PERIOD = 3600.0


@dataclass(slots=True)
class WriterCounts:
    """What a L{PointWriter} counts, since it was made."""

    points_queued: int = 0
    points_written: int = 0
    points_retried: int = 0
    points_refused: int = 0
    batches_written: int = 0
    requests: int = 0
    requests_failed: int = 0


class PointsRejected(Exception):
    """
    InfluxDB refused these points for good (e.g. a type conflict): C{lines},
    with InfluxDB's message for each in C{reasons}; C{message} says them all.
    """

    def __init__(
        self,
        status: int,
        message: str,
        lines: list[bytes],
        reasons: list[str] | None = None,
    ) -> None:
        super().__init__(status, message, len(lines))
        self.status = status
        self.message = message
        self.lines = lines
        self.reasons = reasons if reasons is not None else [message] * len(lines)

    def __str__(self) -> str:
        points = counted(len(self.lines), "point")
        return f"InfluxDB refused {points} ({self.status}): {self.message}"


@dataclass(eq=False)
class _Delivery:
    """The points of one L{PointWriter.write} call that are not yet settled."""

    remaining: int
    deferred: Deferred = field(default_factory=Deferred)
    refused: list[bytes] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    status: int = 0

    def settle(self, count: int) -> None:
        self.remaining -= count
        if self.remaining == 0:
            if self.refused:
                message = "; ".join(dict.fromkeys(self.reasons))  # each once, in order
                self.deferred.errback(
                    PointsRejected(self.status, message, self.refused, self.reasons)
                )
            else:
                self.deferred.callback(None)


#: Some consecutive points of one L{PointWriter.write} call, and that call.
_Chunk = tuple[list[bytes], _Delivery]


@dataclass(eq=False)
class _Batch:
    """The points of one request: whole or partial writes, in order."""

    chunks: list[_Chunk]
    points: int

    def lines(self) -> Iterator[bytes]:
        return chain.from_iterable(lines for lines, _ in self.chunks)

    def halves(self) -> tuple[_Batch, _Batch]:
        """Two batches of half the points each (a write may straddle them)."""
        room = self.points // 2
        first: list[_Chunk] = []
        second: list[_Chunk] = []
        for lines, delivery in self.chunks:
            if room >= len(lines):
                first.append((lines, delivery))
                room -= len(lines)
            elif room > 0:
                first.append((lines[:room], delivery))
                second.append((lines[room:], delivery))
                room = 0
            else:
                second.append((lines, delivery))
        half = self.points // 2
        return _Batch(first, half), _Batch(second, self.points - half)

    def sift(self, refused: dict[int, str]) -> tuple[list[_Refused], _Batch]:
        """The points at the indices of C{refused}, and a batch of the others."""
        out: list[_Refused] = []
        kept: list[_Chunk] = []
        index = 0
        for lines, delivery in self.chunks:
            keep = []
            for line in lines:
                if index in refused:
                    out.append((line, refused[index], delivery))
                else:
                    keep.append(line)
                index += 1
            if keep:
                kept.append((keep, delivery))
        return out, _Batch(kept, self.points - len(out))


#: A refused point, InfluxDB's message for it, and its write.
_Refused = tuple[bytes, str, _Delivery]


def retry_after_seconds(value: bytes | None, now: float) -> float | None:
    """A C{Retry-After} header's delay: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    digits = text.removeprefix("-").removeprefix("+")
    if digits.isascii() and digits.isdigit():
        if text.startswith("-"):
            return 0.0
        try:
            return float(int(digits))
        except (ValueError, OverflowError):
            return float("inf")  # longer than any wait; the caller caps it
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class PointWriter(Service):
    """
    Batch points and write them to an L{IWriteTarget} with a treq-like
    C{client} (anything with treq's C{post}), timing everything on C{clock};
    C{wall} is the wall clock, for an HTTP date in C{Retry-After} (default:
    C{clock.seconds}).  With C{create_database}, an InfluxDB 1.x target's
    database is made when missing, before any write is sent.
    """

    log = Logger()

    def __init__(
        self,
        target: IWriteTarget,
        client: Any,
        clock: IReactorTime,
        *,
        batch_size: int,
        flush_interval: float,
        request_timeout: float,
        max_backoff: float,
        shutdown_timeout: float,
        max_pending: int,
        create_database: bool,
        initial_backoff: float = 1.0,
        rng: random.Random | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.target = target
        self.client = client
        self.clock = clock
        self.wall = wall if wall is not None else clock.seconds
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.request_timeout = request_timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.shutdown_timeout = shutdown_timeout
        self.max_pending = max_pending
        #: True while more than C{max_pending} points wait: stop taking more.
        self.overloaded = False
        #: Called with the new value of L{overloaded} when it changes.
        self.overload_observers: list[Callable[[bool], object]] = []
        self.random = rng if rng is not None else random.Random()
        self.stats = WriterCounts()
        #: When the current run of failed requests began (None: all is well).
        self.failing_since: float | None = None
        #: Why the last request failed, while they fail.
        self.last_failure: str | None = None
        #: Called with (points, seconds) for every successful request.
        self.write_observers: list[Callable[[int, float], object]] = []
        self._limited = RateLimitedLog(self.log, clock)
        self._batch_limit = batch_size
        #: Writes waiting to be batched, and how many points they hold.
        self._queue: deque[_Chunk] = deque()
        self._queued = 0
        self._resend: deque[_Batch] = deque()
        self._sending: _Batch | None = None
        self._request: Deferred | None = None
        self._flush_call: IDelayedCall | None = None
        self._backoff_call: IDelayedCall | None = None
        self._due = False
        self._failures = 0
        self._stopping = False
        self._gave_up = False
        self._drained: Deferred | None = None
        #: How long the last successful request took, in seconds.
        self.last_write_seconds: float | None = None
        #: Whether to make the database when missing (cleared once refused).
        self._may_create = create_database and creatable(target)
        #: Ask for the database before the next write.
        self._create_first = self._may_create
        self._creating = False
        self._creation_log = RateLimitedLog(self.log, clock, period=CREATION_LOG_PERIOD)

    # -- the interface -----------------------------------------------------

    def write(self, lines: list[bytes]) -> Deferred[None]:
        """Queue points; the result fires once InfluxDB has them all."""
        if not lines:
            return succeed(None)
        delivery = _Delivery(len(lines))
        self._queue.append((lines, delivery))
        self._queued += len(lines)
        self.stats.points_queued += len(lines)
        self._schedule()
        return delivery.deferred

    def _check_load(self) -> None:
        """Say when the backlog passes C{max_pending}, and when it is back under."""
        pending = self.pending
        if not self.overloaded and pending >= self.max_pending:
            self.overloaded = True
            self.log.warn(
                "{points} {wait} for InfluxDB (limit {limit}): new packets wait "
                "in the journal until it catches up",
                count=pending,
                points=counted(pending, "point"),
                wait=_wait(pending),
                limit=self.max_pending,
            )
        elif self.overloaded and pending <= self.max_pending * RESUME_FRACTION:
            self.overloaded = False
            self.log.info(
                "{points} {wait} for InfluxDB: decoding packets again",
                count=pending,
                points=counted(pending, "point"),
                wait=_wait(pending),
            )
        else:
            return
        for observer in list(self.overload_observers):
            observer(self.overloaded)

    @property
    def pending(self) -> int:
        """Points not yet acknowledged: queued, waiting to be resent, in flight."""
        return (
            self._queued
            + sum(batch.points for batch in self._resend)
            + (self._sending.points if self._sending is not None else 0)
        )

    def startService(self) -> None:
        """Make the database now, if it is for this writer to make."""
        super().startService()
        self._schedule()

    def flush(self) -> None:
        """Send what is queued now rather than at the end of the flush interval."""
        self._due = True
        self._schedule()

    def stopService(self) -> Deferred[None]:
        """Send everything still queued, giving up after C{shutdown_timeout}."""
        super().stopService()
        self._stopping = True
        self._cancel_flush_call()
        if self._backoff_call is not None and self._backoff_call.active():
            # Waiting for minutes is no use now: try once more at once.
            self._backoff_call.cancel()
            self._backoff_call = None
        if not self.pending:
            if self._creating and self._request is not None:
                self._request.cancel()  # no write waits for it
            return succeed(None)
        self.log.info(
            "Writing {points} before stopping (at most {timeout} s)",
            count=self.pending,
            points=counted(self.pending, "point"),
            timeout=self.shutdown_timeout,
        )
        self._drained = Deferred()
        deadline = self.clock.callLater(self.shutdown_timeout, self._give_up)
        self._drained.addBoth(lambda r: deadline.cancel() if deadline.active() else None)
        self._schedule()
        return self._drained

    # -- sending -------------------------------------------------------------

    def _schedule(self) -> None:
        """Send a batch if one is due and nothing stands in the way."""
        self._check_load()
        if self._gave_up:
            return
        if self._queue and not self._due and self._flush_call is None:
            # The oldest queued point's wait starts now, even if a request
            # or a backoff keeps it from being sent yet.
            self._flush_call = self.clock.callLater(self.flush_interval, self._flush_due)
        if self._sending is not None or self._backoff_call is not None or self._creating:
            return
        if self._create_first:
            self._create()
            return
        if self._drained is not None and not self._drained.called and not self.pending:
            self._drained.callback(None)
            return
        if (
            self._resend
            or self._queued >= self._batch_limit
            or (self._queue and (self._due or self._stopping))
        ):
            self._send(self._next_batch())

    def _flush_due(self) -> None:
        self._flush_call = None
        self.flush()

    def _cancel_flush_call(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None

    def _next_batch(self) -> _Batch:
        if self._resend:
            return self._resend.popleft()
        queue = self._queue
        if self._queued <= self._batch_limit:
            batch = _Batch(list(queue), self._queued)
            queue.clear()
        else:
            # Whole writes while they fit, then the front part of the next.
            chunks: list[_Chunk] = []
            room = self._batch_limit
            while room:
                lines, delivery = queue[0]
                if len(lines) <= room:
                    chunks.append(queue.popleft())
                    room -= len(lines)
                else:
                    chunks.append((lines[:room], delivery))
                    queue[0] = (lines[room:], delivery)
                    room = 0
            batch = _Batch(chunks, self._batch_limit)
        self._queued -= batch.points
        if not queue:
            self._due = False
            self._cancel_flush_call()
        return batch

    def _send(self, batch: _Batch) -> None:
        self._sending = batch
        self.stats.requests += 1
        started = self.clock.seconds()
        body = b"\n".join(batch.lines())
        request = maybeDeferred(
            self.client.post,
            self.target.url,
            data=body,
            params=self.target.params,
            headers=self.target.headers,
        )
        request.addCallback(self._read_response)
        # After the body is read, so that the timeout covers the whole answer.
        request.addTimeout(self.request_timeout, self.clock)
        request.addCallbacks(
            self._answered,
            self._unreachable,
            callbackArgs=(batch, started),
            errbackArgs=(batch,),
        )
        request.addErrback(self._bug, batch)
        if self._sending is batch:
            self._request = request

    @staticmethod
    def _read_response(response: Any) -> Deferred:
        body = response.content()
        return body.addCallback(lambda content: (response.code, content, response.headers))

    def _done(self) -> None:
        self._sending = None
        self._request = None

    def _answered(self, answer: tuple, batch: _Batch, started: float) -> None:
        status, body, headers = answer
        ok = 200 <= status < 300
        # Read everything from the answer before settling anything, so that a
        # surprise here leaves the batch in flight for _bug to keep.
        message = "" if ok else error_message(body)
        refused = refuses_points(status, message)
        refusal = read_refusal(body, list(batch.lines())) if refused else None
        delay = retry_after_seconds(
            (headers.getRawHeaders(b"retry-after") or [None])[0], self.wall()
        )
        self._done()
        if ok:
            self._succeeded(batch, started)
        elif refusal is not None:
            self._refuse_named(batch, status, refusal, started)
        elif too_large(status, message) and batch.points > 1:
            self._split(batch)
            if self._batch_limit > batch.points // 2:
                self._batch_limit = max(1, batch.points // 2)
                self.log.warn(
                    "InfluxDB says {count} points is too large a request; "
                    "sending at most {limit} from now on",
                    count=batch.points,
                    limit=self._batch_limit,
                )
        elif refused and batch.points > 1:
            self._split(batch)
        elif refused or too_large(status, message):
            self._refuse(batch, status, message)
        elif missing_database(status, message):
            if self._may_create:
                self._create_first = True
                hint = "it is created before the next try"
            else:
                hint = f"create it: {create_command(self.target)}"
            self._failed(batch, f"HTTP {status}: {message}; {hint}", delay)
        else:
            self._failed(batch, f"HTTP {status}: {message}", delay)
        self._schedule()

    def _unreachable(self, failure: Failure, batch: _Batch) -> None:
        self._done()
        if failure.check(TimeoutError):
            why = f"no answer within {self.request_timeout} s"
        elif failure.check(CancelledError):
            why = "cancelled"
        else:
            why = failure.getErrorMessage() or failure.type.__name__
        self._failed(batch, why, None)
        self._schedule()

    def _bug(self, failure: Failure, batch: _Batch) -> None:
        """A mistake in this module: log it, keep the points."""
        self.log.failure("Unexpected error handling an InfluxDB write", failure)
        if self._sending is batch:
            self._done()
            self._failed(batch, "internal error", None)

    # -- the database ----------------------------------------------------------

    def _create(self) -> None:
        """Ask for the database; writes wait for the answer."""
        self._create_first = False
        self._creating = True
        request = create_database(
            self.target, self.client, self.clock, self.request_timeout
        )
        self._request = request
        request.addCallback(self._created)
        request.addErrback(self._bug_creating)

    def _created(self, creation: Creation) -> None:
        self._creating = False
        self._request = None
        if not self._gave_up and not (self._stopping and not self.pending):
            self._say(creation)
        self._schedule()

    def _say(self, creation: Creation) -> None:
        """One line for what came of it (the same again at most hourly)."""
        database = self.target.database
        if creation.outcome == READY:
            self._creation_log.emit(
                LogLevel.info,
                READY,
                "InfluxDB database {database} is ready ({why})",
                database=database,
                why=creation.why,
            )
        elif creation.outcome == REFUSED:
            self._may_create = False  # a person must: the write lines say how
            self._creation_log.warn(
                REFUSED,
                "Cannot create InfluxDB database {database}{user} ({why}): if it does "
                "not exist yet, an admin creates it with: {command} (or pass "
                "--no-create-database if it exists and this user may only write); "
                "packets wait in the journal until it does",
                database=database,
                user=f" as user {self.target.username}" if self.target.username else "",
                why=creation.why,
                command=create_command(self.target),
            )
        elif creation.outcome == DECLINED:
            self._may_create = False  # it makes none: a missing one is a person's to make
            self._creation_log.emit(
                LogLevel.info,
                DECLINED,
                "InfluxDB at {url} did not create database {database} ({why}); "
                "writing into it as it is",
                url=self.target.base_url,
                database=database,
                why=creation.why,
            )
        else:
            self._creation_log.emit(
                LogLevel.info,
                creation.outcome,
                "Cannot create InfluxDB database {database} yet ({why}); it is "
                "created when a write finds it missing",
                database=database,
                why=creation.why,
            )

    def _bug_creating(self, failure: Failure) -> None:
        """A mistake in this module: log it, write as if the database were there."""
        self.log.failure("Unexpected error creating the InfluxDB database", failure)
        self._creating = False
        self._request = None
        self._schedule()

    # -- outcomes ------------------------------------------------------------

    def _succeeded(self, batch: _Batch, started: float) -> None:
        self.stats.points_written += batch.points
        self.stats.batches_written += 1
        self.last_write_seconds = self.clock.seconds() - started
        for observer in list(self.write_observers):
            observer(batch.points, self.last_write_seconds)
        if self._failures:
            self.log.info(
                "InfluxDB writes work again after {failures} failed attempts",
                failures=self._failures,
            )
        self._failures = 0
        self.failing_since = None
        self.last_failure = None
        for lines, delivery in batch.chunks:
            delivery.settle(len(lines))

    def _split(self, batch: _Batch) -> None:
        first, second = batch.halves()
        self._resend.appendleft(second)
        self._resend.appendleft(first)

    def _refuse_named(
        self, batch: _Batch, status: int, refusal: Refusal, started: float
    ) -> None:
        """
        InfluxDB named the points it refused: refuse those; the others are
        written if it stored them, else they go again, as one batch.
        """
        refused, rest = batch.sift(refusal.lines)
        if rest.points and refusal.rest_stored:
            self._succeeded(rest, started)
        elif rest.points:
            self._resend.appendleft(rest)
        self._refuse_points(refused, status)

    def _refuse(self, batch: _Batch, status: int, message: str) -> None:
        self._refuse_points(
            [
                (line, message, delivery)
                for lines, delivery in batch.chunks
                for line in lines
            ],
            status,
        )

    def _refuse_points(self, refused: list[_Refused], status: int) -> None:
        line, why, _ = refused[0]
        self.stats.points_refused += len(refused)
        self._limited.error(
            ("refused", status),
            "InfluxDB refused {points} for good (HTTP {status}): {why}; "
            "first point: {line}",
            count=len(refused),
            points=counted(len(refused), "point"),
            status=status,
            why=why,
            line=line[:200].decode("utf-8", "replace"),
        )
        for line, why, delivery in refused:
            delivery.refused.append(line)
            delivery.reasons.append(why)
            delivery.status = status
            delivery.settle(1)

    def _failed(self, batch: _Batch, why: str, retry_after: float | None) -> None:
        self._resend.appendleft(batch)
        self._failures += 1
        self.stats.requests_failed += 1
        self.stats.points_retried += batch.points
        self.last_failure = why
        if self.failing_since is None:
            self.failing_since = self.clock.seconds()
        if self._gave_up:
            return
        ceiling = min(
            self.max_backoff, self.initial_backoff * 2 ** min(self._failures - 1, 32)
        )
        delay = ceiling / 2 + self.random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        if self._stopping:
            delay = min(delay, STOPPING_BACKOFF)  # the shutdown deadline is near
        self._limited.warn(
            "write-failed",
            "InfluxDB write failed ({why}); {points} kept, next try in {delay:.1f} s",
            why=why,
            count=self.pending,
            points=counted(self.pending, "point"),
            delay=delay,
        )
        self._backoff_call = self.clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._backoff_call = None
        self._schedule()

    def _give_up(self) -> None:
        """The shutdown deadline passed: stop trying, say what is left."""
        self._gave_up = True
        self._cancel_flush_call()
        if self._backoff_call is not None and self._backoff_call.active():
            self._backoff_call.cancel()
        self._backoff_call = None
        if self._request is not None:
            self._request.cancel()
        self.log.error(
            "{points} {were} not written to InfluxDB before the shutdown deadline",
            count=self.pending,
            points=counted(self.pending, "point"),
            were="was" if self.pending == 1 else "were",
        )
        if self._drained is not None and not self._drained.called:
            self._drained.callback(None)


def _wait(count: int) -> str:
    """The verb after a count of points: 1 point waits, 2 points wait."""
    return "waits" if count == 1 else "wait"
