"""
Tests for L{weather.server.writer}: batching, retries, refusals and shutdown of the
L{PointWriter}, against the in-memory InfluxDB of L{tests.fakeinflux}.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from email.utils import formatdate
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from tests.fakeinflux import FakeInfluxDB
from tests.support import Gate, writer_options
from weather.server import writer as writer_module
from weather.server.influx import InfluxV1, InfluxV2, InfluxV3
from weather.server.writer import PointsRejected, PointWriter, retry_after_seconds

SEED = 20240601
V1 = InfluxV1("http://influx.test:8086", "weather")
V2 = InfluxV2("http://influx.test:8086", "weather", org="weather", token="t0k3n")
V3 = InfluxV3("http://influx.test:8181", "weather", token="t0k3n")
NAMESPACE = "weather.server.writer.PointWriter"
#: Stands for "this post never gets an answer" in a L{ScriptedClient} script.
HANG = object()


class Raise:
    """A L{ScriptedClient} script step: C{post} raises C{error} at once."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def line(i: int) -> bytes:
    """A valid point whose timestamp is C{i}."""
    return b"m f=%d %d" % (i, i)


def fixed(i: int) -> bytes:
    """A valid point of exactly 14 bytes whose timestamp is C{i}."""
    return b"m f=1 %08d" % i


class Stall(Resource):
    """Answers the first request with headers and half a body, then nothing."""

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner
        self.stalled: list[Request] = []

    def render(self, request: Request) -> Any:
        if self.stalled:
            return self.inner.render(request)
        self.stalled.append(request)
        request.setResponseCode(200)
        request.write(b"{")
        return NOT_DONE_YET


class ScriptedClient:
    """
    A treq-like client: answers the first posts as its script says (an
    exception fails the post, L{HANG} never answers, L{Raise} raises from
    C{post} itself, as treq does for a URL it cannot parse), then passes
    posts on to a StubTreq.  Records every post.
    """

    def __init__(self, stub: StubTreq, script: Sequence[object]) -> None:
        self.stub = stub
        self.script = list(script)
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.hanging: list[Deferred] = []

    def post(self, url: str, **kwargs: Any) -> Deferred:
        self.posts.append((url, kwargs))
        if self.script:
            step = self.script.pop(0)
            if step is HANG:
                d: Deferred = Deferred()
                self.hanging.append(d)
                return d
            if isinstance(step, Raise):
                raise step.error
            assert isinstance(step, BaseException)
            return fail(step)
        return self.stub.post(url, **kwargs)


class WriterTestCase(SynchronousTestCase):
    """Builds a PointWriter on a Clock, talking to a FakeInfluxDB."""

    def build(
        self,
        target: Any = V1,
        fake: FakeInfluxDB | None = None,
        script: Sequence[object] = (),
        stall: bool = False,
        **options: Any,
    ) -> PointWriter:
        self.clock = Clock()
        self.fake = fake if fake is not None else FakeInfluxDB(token="t0k3n")
        self.gate = Gate(Stall(self.fake) if stall else self.fake)
        self.stub = StubTreq(self.gate)
        self.client = ScriptedClient(self.stub, list(script))
        settings: dict[str, Any] = {
            "batch_size": 10,
            "flush_interval": 1.0,
            "request_timeout": 30.0,
            "initial_backoff": 1.0,
            "max_backoff": 60.0,
            "shutdown_timeout": 10.0,
        }
        settings.update(options)
        self.settings = settings
        self.events: list[dict] = []

        def observe(event: dict) -> None:
            # Keep a copy as emitted (later observers may edit the event),
            # then pass it on so that trial still sees logged failures.
            self.events.append(
                dict(
                    event,
                    clock_time=self.clock.seconds(),
                    failed_so_far=self.writer.stats.requests_failed,
                )
            )
            globalLogPublisher(event)

        self.patch(PointWriter, "log", Logger(observer=observe))
        self.writer = PointWriter(
            target,
            self.client,
            self.clock,
            rng=random.Random(SEED),
            **writer_options(**settings),
        )
        #: Draws the same jitter as the writer's random.Random(SEED).
        self.jitter = random.Random(SEED)
        return self.writer

    # -- observing ---------------------------------------------------------

    @property
    def sent(self) -> int:
        """How many requests the writer has made."""
        return len(self.client.posts)

    def batches(self) -> list[list[bytes]]:
        """The lines of every request made, in order."""
        return [kwargs["data"].split(b"\n") for _, kwargs in self.client.posts]

    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches()]

    def stamps(self) -> list[int]:
        """Timestamps of the points InfluxDB accepted, in order of arrival."""
        return [point.timestamp for point in self.fake.points]

    def release(self) -> None:
        """Let the oldest held request through and deliver its answer."""
        self.gate.release()
        self.stub.flush()

    def next_try(self, others: int = 0) -> float:
        """
        Seconds until the earliest pending timed call (the retry), with
        C{others} more pending (e.g. the shutdown deadline).
        """
        calls = self.clock.getDelayedCalls()
        self.assertEqual(len(calls), 1 + others, calls)
        return min(call.getTime() for call in calls) - self.clock.seconds()

    def expected_delay(self, ceiling: float) -> float:
        """The backoff the writer draws for this ceiling (and its jitter)."""
        return ceiling / 2 + self.jitter.uniform(0, ceiling / 2)

    def assertRetriedAfter(self, delay: float) -> None:
        """No request before C{delay} seconds from now, one right at it."""
        before = self.sent
        self.clock.advance(delay - 0.001)
        self.assertEqual(self.sent, before)
        self.clock.advance(0.002)
        self.assertEqual(self.sent, before + 1)

    def assertBackoff(self, ceiling: float, others: int = 0) -> None:
        """The retry comes after the jittered backoff for C{ceiling}."""
        delay = self.next_try(others)
        self.assertGreaterEqual(delay, ceiling / 2)
        self.assertLessEqual(delay, ceiling)
        self.assertAlmostEqual(delay, self.expected_delay(ceiling), places=9)
        self.assertRetriedAfter(delay)

    def capture(self) -> list[dict]:
        """
        Events the writer logged since L{build}, with C{clock_time} and
        C{failed_so_far} (C{requests_failed} then) added.
        """
        for event in self.events:
            self.assertEqual(event["log_namespace"], NAMESPACE)
            self.assertIs(event["log_source"], self.writer)
        return self.events

    @staticmethod
    def at(events: list[dict], level: LogLevel) -> list[dict]:
        return [event for event in events if event["log_level"] == level]


class BatchingTests(WriterTestCase):
    def test_emptyWrite(self) -> None:
        self.build()
        self.assertIsNone(self.successResultOf(self.writer.write([])))
        self.assertEqual(self.sent, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nothingBeforeFlushInterval(self) -> None:
        self.build(flush_interval=5.0)
        d = self.writer.write([line(1), line(2), line(3)])
        self.assertEqual(self.sent, 0)
        self.clock.advance(4.999)
        self.assertEqual(self.sent, 0)
        self.assertNoResult(d)
        self.clock.advance(0.002)
        self.assertEqual(self.batches(), [[line(1), line(2), line(3)]])
        self.assertEqual(self.stamps(), [1, 2, 3])
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.writer.pending, 0)

    def test_intervalCountsFromOldestPoint(self) -> None:
        self.build(flush_interval=5.0)
        self.writer.write([line(1)])
        self.clock.advance(3)
        self.writer.write([line(2)])
        self.clock.advance(1.999)
        self.assertEqual(self.sent, 0)
        self.clock.advance(0.002)
        self.assertEqual(self.batches(), [[line(1), line(2)]])

    def test_fullBatchSentAtOnce(self) -> None:
        self.build(batch_size=4, flush_interval=60.0)
        first = self.writer.write([line(1), line(2), line(3)])
        self.assertEqual(self.sent, 0)
        second = self.writer.write([line(4)])
        self.assertEqual(self.batches(), [[line(1), line(2), line(3), line(4)]])
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        # Nothing left, so no flush timer either.
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flushSendsAtOnce(self) -> None:
        self.build(flush_interval=60.0)
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.assertEqual(self.batches(), [[line(1)]])
        self.assertIsNone(self.successResultOf(d))

    def test_batchSizeRespected(self) -> None:
        self.build(batch_size=10)
        d = self.writer.write([line(i) for i in range(25)])
        self.assertEqual(self.sizes(), [10, 10])
        self.assertNoResult(d)
        self.clock.advance(1.0)
        self.assertEqual(self.sizes(), [10, 10, 5])
        self.assertEqual(self.stamps(), list(range(25)))
        self.assertIsNone(self.successResultOf(d))

    def test_atMostOneRequestInFlight(self) -> None:
        self.build(batch_size=3)
        self.gate.closed = True
        self.writer.write([line(i) for i in range(3)])
        self.assertEqual(self.sent, 1)
        self.writer.write([line(i) for i in range(3, 10)])
        self.clock.advance(20)  # less than request_timeout
        self.assertEqual(self.sent, 1)
        self.assertEqual(self.writer.pending, 10)
        # Each answer lets exactly the next batch go.
        for expected in (2, 3):
            self.release()
            self.assertEqual(self.sent, expected)
            self.assertEqual(len(self.gate.held), 1)
        self.release()
        self.clock.advance(1.0)
        self.assertEqual(self.sent, 4)
        self.release()
        self.assertEqual(self.sizes(), [3, 3, 3, 1])
        self.assertEqual(self.stamps(), list(range(10)))
        self.assertEqual(self.writer.pending, 0)

    def test_pointsWrittenDuringRequestGoNext(self) -> None:
        self.build()
        self.gate.closed = True
        first = self.writer.write([line(1), line(2)])
        self.clock.advance(1.0)
        self.assertEqual(self.sent, 1)
        second = self.writer.write([line(3)])
        self.assertEqual(self.sent, 1)
        self.release()
        self.assertIsNone(self.successResultOf(first))
        self.assertNoResult(second)
        self.clock.advance(1.0)
        self.assertEqual(self.batches(), [[line(1), line(2)], [line(3)]])
        self.assertNoResult(second)
        self.release()
        self.assertIsNone(self.successResultOf(second))
        self.assertEqual(self.stamps(), [1, 2, 3])

    def test_flushIntervalRunsWhileRequestInFlight(self) -> None:
        """
        A point that arrives during a request and has waited C{flush_interval}
        by the time the answer comes goes at once, not C{flush_interval}
        later (the docstring: a batch is sent when the oldest point has
        waited C{flush_interval} seconds).
        """
        self.build(batch_size=100, flush_interval=1.0)
        self.gate.closed = True
        self.writer.write([line(1)])
        self.clock.advance(1.0)
        self.assertEqual(self.sent, 1)
        self.clock.advance(0.5)
        self.writer.write([line(2)])
        self.clock.advance(3.0)  # line(2) has now waited 3 s
        self.gate.closed = False
        self.release()
        self.assertEqual(self.batches(), [[line(1)], [line(2)]])

    def test_deferredFiresOnlyAfter2xx(self) -> None:
        self.build()
        self.gate.closed = True
        d = self.writer.write([line(1), line(2)])
        self.clock.advance(1.0)
        self.assertEqual(self.sent, 1)
        self.clock.advance(10)
        self.assertNoResult(d)
        self.release()
        self.assertIsNone(self.successResultOf(d))

    def test_deferredWaitsForAllBatches(self) -> None:
        """A write split across two batches fires after the second's 2xx."""
        self.build(batch_size=3)
        first = self.writer.write([line(0), line(1)])
        second = self.writer.write([line(2), line(3)])
        self.assertEqual(self.batches(), [[line(0), line(1), line(2)]])
        self.assertIsNone(self.successResultOf(first))
        self.assertNoResult(second)
        self.clock.advance(1.0)
        self.assertEqual(self.sizes(), [3, 1])
        self.assertIsNone(self.successResultOf(second))

    def test_deferredWaitsForFailedBatchToLand(self) -> None:
        self.build(batch_size=2)
        self.fake.fail_next(500, count=1)
        first = self.writer.write([line(0)])
        second = self.writer.write([line(1), line(2)])
        # [0, 1] failed; [2] must not settle `second` on its own.
        self.assertEqual(self.sent, 1)
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.clock.advance(self.next_try(others=1))  # and the flush timer
        self.assertIsNone(self.successResultOf(first))
        self.assertNoResult(second)
        self.clock.advance(1.0)
        self.assertIsNone(self.successResultOf(second))
        self.assertEqual(self.stamps(), [0, 1, 2])

    def test_requestShape(self) -> None:
        self.build(target=V2)
        self.writer.write([line(1), line(2)])
        self.writer.flush()
        [(url, kwargs)] = self.client.posts
        self.assertEqual(url, "http://influx.test:8086/api/v2/write")
        self.assertEqual(kwargs["data"], b"m f=1 1\nm f=2 2")
        self.assertEqual(kwargs["params"], V2.params)
        self.assertEqual(kwargs["headers"], V2.headers)
        [request] = self.fake.requests
        self.assertEqual(request.headers["authorization"], "Token t0k3n")
        self.assertEqual(self.stamps(), [1, 2])


class RetryTests(WriterTestCase):
    def assertRetriedUntilLanded(self, failures: int) -> None:
        """
        Two points; the first C{failures} requests fail: the points are kept,
        retried after backoffs, and land exactly once.
        """
        d = self.writer.write([line(1), line(2)])
        self.writer.flush()
        started = self.clock.seconds()
        self.assertEqual(self.sent, 1)
        self.assertEqual(self.writer.failing_since, started)
        ceiling = self.settings["initial_backoff"]
        for attempt in range(failures):
            self.assertEqual(self.fake.points, [])
            self.assertEqual(self.writer.pending, 2)
            self.assertNoResult(d)
            self.assertEqual(self.writer.failing_since, started)
            self.assertBackoff(min(ceiling * 2**attempt, self.settings["max_backoff"]))
        self.assertEqual(self.sent, failures + 1)
        self.assertEqual(self.stamps(), [1, 2])
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.writer.failing_since)
        self.assertEqual(self.writer.pending, 0)
        self.assertEqual(self.writer.stats.requests_failed, failures)
        self.assertEqual(self.writer.stats.points_retried, 2 * failures)
        self.assertEqual(self.writer.stats.points_refused, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def assertStatusRetried(self, status: int, body: Any = b"") -> None:
        self.build()
        self.fake.fail_next(status, body=body, count=2)
        self.assertRetriedUntilLanded(2)

    def test_500(self) -> None:
        self.assertStatusRetried(500, {"error": "timeout"})

    def test_502Html(self) -> None:
        self.assertStatusRetried(502, b"<html><body>Bad Gateway</body></html>")

    def test_503(self) -> None:
        self.assertStatusRetried(503, {"code": "unavailable", "message": "try later"})

    def test_429(self) -> None:
        self.assertStatusRetried(429, {"code": "too many requests", "message": "slow"})

    def test_408(self) -> None:
        self.assertStatusRetried(408)

    def test_401(self) -> None:
        self.assertStatusRetried(401, {"error": "authorization failed"})

    def test_403(self) -> None:
        self.assertStatusRetried(403, {"code": "forbidden", "message": "no"})

    def test_404(self) -> None:
        self.assertStatusRetried(404, b"404 page not found\n")

    def test_unsupportedPath400(self) -> None:
        """
        VictoriaMetrics answers a path it does not serve with 400, where
        InfluxDB answers 404: a wrong --influx-url, retried, not refused points.
        """
        self.assertStatusRetried(
            400,
            b'remoteAddr: "127.0.0.1:5"; requestURI: /prefix/write; '
            b'unsupported path requested: "/prefix/write"\n',
        )

    def test_wrongPasswordV1(self) -> None:
        """A real 401 from 1.x: kept until the server takes the credentials."""
        fake = FakeInfluxDB(username="writer", password="new")
        target = InfluxV1("http://influx.test:8086", "weather", None, "writer", "old")
        self.build(target=target, fake=fake)
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.assertBackoff(1.0)
        self.assertBackoff(2.0)
        self.assertEqual([r.args["db"] for r in fake.requests], [["weather"]] * 3)
        self.assertEqual(fake.points, [])
        self.assertEqual(self.writer.pending, 1)
        fake.password = "old"
        self.assertBackoff(4.0)
        self.assertEqual(self.stamps(), [1])
        self.assertIsNone(self.successResultOf(d))

    def test_wrongTokenV2(self) -> None:
        fake = FakeInfluxDB(token="new")
        self.build(target=V2, fake=fake)
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.assertEqual(self.writer.pending, 1)
        self.assertBackoff(1.0)
        fake.token = "t0k3n"
        self.assertBackoff(2.0)
        self.assertEqual(self.stamps(), [1])
        self.assertIsNone(self.successResultOf(d))

    def test_databaseMissing(self) -> None:
        fake = FakeInfluxDB(databases=["other"])
        self.build(fake=fake)
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.assertBackoff(1.0)
        fake.databases.add("weather")
        self.assertBackoff(2.0)
        self.assertEqual(self.stamps(), [1])
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.writer.stats.points_refused, 0)

    def test_networkError(self) -> None:
        self.build(script=[ConnectionRefusedError(), ConnectionRefusedError()])
        self.assertRetriedUntilLanded(2)
        self.assertEqual(len(self.fake.requests), 1)

    def test_postRaises(self) -> None:
        """
        treq raises from C{post} itself for some URLs (e.g. a port that is
        not a number): the points are kept and tried again like after a
        network error, and the writer is not left waiting for a request that
        was never made.
        """
        self.build(script=[Raise(ValueError("expected integer for port"))])
        events = self.capture()
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.assertEqual(self.sent, 1)
        self.assertEqual(self.writer.stats.requests_failed, 1)
        self.assertEqual(self.writer.pending, 1)
        [warning] = self.at(events, LogLevel.warn)
        self.assertEqual(warning["why"], "expected integer for port")
        self.assertBackoff(1.0)
        self.assertEqual(self.stamps(), [1])
        self.assertIsNone(self.successResultOf(d))

    def test_requestTimeout(self) -> None:
        self.build(script=[HANG])
        events = self.capture()
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.assertEqual(self.sent, 1)
        self.clock.advance(29.999)
        self.assertEqual(self.writer.stats.requests_failed, 0)
        self.assertIsNone(self.writer.failing_since)
        self.clock.advance(0.002)
        self.assertEqual(self.writer.stats.requests_failed, 1)
        self.assertEqual(self.writer.failing_since, self.clock.seconds())
        self.assertTrue(self.client.hanging[0].called)
        [warning] = self.at(events, LogLevel.warn)
        self.assertEqual(warning["why"], "no answer within 30.0 s")
        self.assertBackoff(1.0)
        self.assertEqual(self.stamps(), [1])
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_responseBodyTimeout(self) -> None:
        """
        A server that sends the headers and then stalls halfway through the
        body must not hold the writer forever: C{request_timeout} covers the
        whole exchange.
        """
        self.build(stall=True)
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.stub.flush()
        self.assertEqual(self.sent, 1)
        self.clock.advance(30.001)
        self.stub.flush()
        self.assertEqual(self.writer.stats.requests_failed, 1)
        self.clock.advance(1.0)
        self.stub.flush()
        self.assertEqual(self.sent, 2)
        self.assertEqual(self.stamps(), [1])
        self.assertIsNone(self.successResultOf(d))

    def test_backoffDoublesAndCaps(self) -> None:
        self.build(initial_backoff=1.0, max_backoff=8.0)
        self.fake.fail_next(500, count=6)
        # Ceilings 1, 2, 4, 8, 8, 8.
        self.assertRetriedUntilLanded(6)

    def test_backoffStartsOverAfterSuccess(self) -> None:
        self.build(initial_backoff=1.0, max_backoff=60.0)
        self.fake.fail_next(500, count=3)
        self.writer.write([line(1)])
        self.writer.flush()
        for ceiling in (1.0, 2.0, 4.0):
            self.assertBackoff(ceiling)
        self.assertEqual(self.stamps(), [1])
        self.fake.fail_next(500)
        self.writer.write([line(2)])
        self.writer.flush()
        self.assertEqual(self.writer.failing_since, self.clock.seconds())
        self.assertBackoff(1.0)
        self.assertEqual(self.stamps(), [1, 2])

    def test_retryAfterSeconds(self) -> None:
        self.build()
        self.fake.fail_next(503, headers={"Retry-After": "7"})
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.expected_delay(1.0)  # drawn, but Retry-After is longer
        self.assertEqual(self.next_try(), 7.0)
        self.assertRetriedAfter(7.0)
        self.assertEqual(self.stamps(), [1])
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.writer.failing_since)

    def test_retryAfterDate(self) -> None:
        self.build()
        self.clock.advance(1_700_000_000)
        self.fake.fail_next(
            429, headers={"Retry-After": formatdate(1_700_000_120, usegmt=True)}
        )
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.assertEqual(self.next_try(), 120.0)
        self.assertRetriedAfter(120.0)
        self.assertEqual(self.stamps(), [1])
        self.assertIsNone(self.successResultOf(d))

    def test_retryAfterShorterThanBackoff(self) -> None:
        """Retry-After never shortens the backoff."""
        self.build(initial_backoff=1.0)
        self.fake.fail_next(500)
        self.fake.fail_next(503, headers={"Retry-After": "0"})
        self.writer.write([line(1)])
        self.writer.flush()
        self.assertBackoff(1.0)
        self.assertBackoff(2.0)
        self.assertEqual(self.stamps(), [1])

    def test_retryAfterCapped(self) -> None:
        self.build()
        self.fake.fail_next(503, headers={"Retry-After": "86400"})
        self.writer.write([line(1)])
        self.writer.flush()
        self.assertEqual(self.next_try(), 3600.0)

    def test_retryAfterGarbageIgnored(self) -> None:
        self.build()
        self.fake.fail_next(503, headers={"Retry-After": "soon"})
        self.writer.write([line(1)])
        self.writer.flush()
        self.assertBackoff(1.0)
        self.assertEqual(self.stamps(), [1])

    def test_newPointsQueueBehindRetry(self) -> None:
        self.build(batch_size=2)
        self.fake.fail_next(500)
        self.writer.write([line(0), line(1)])
        self.writer.write([line(2)])
        self.assertEqual(self.sent, 1)
        self.clock.advance(1.0)  # the first backoff is at most 1 s
        self.clock.advance(1.0)
        self.assertEqual(self.batches(), [[line(0), line(1)]] * 2 + [[line(2)]])
        self.assertEqual(self.stamps(), [0, 1, 2])


class OversizeTests(WriterTestCase):
    def test_halvesAndShrinksBatches(self) -> None:
        # Two 14-byte lines and a newline fit; three do not.
        self.build(fake=FakeInfluxDB(max_body_size=29), batch_size=8)
        events = self.capture()
        first = self.writer.write([fixed(i) for i in range(8)])
        self.assertEqual(self.sizes(), [8, 4, 2, 2, 4, 2, 2])
        self.assertEqual(self.stamps(), list(range(8)))
        self.assertIsNone(self.successResultOf(first))
        # The limit stays at two points for new batches.
        second = self.writer.write([fixed(i) for i in range(8, 13)])
        self.assertEqual(self.sizes()[7:], [2, 2])
        self.clock.advance(1.0)
        self.assertEqual(self.sizes()[7:], [2, 2, 1])
        self.assertEqual(self.stamps(), list(range(13)))
        self.assertIsNone(self.successResultOf(second))
        self.assertEqual(
            [(e["count"], e["limit"]) for e in self.at(events, LogLevel.warn)],
            [(8, 4), (4, 2)],
        )
        stats = self.writer.stats
        self.assertEqual(stats.points_written, 13)
        self.assertEqual(stats.points_refused, 0)
        self.assertEqual(stats.requests_failed, 0)
        self.assertIsNone(self.writer.failing_since)

    def test_singlePointTooLargeRefused(self) -> None:
        self.build(fake=FakeInfluxDB(max_body_size=10))
        d = self.writer.write([fixed(1)])
        self.writer.flush()
        failure = self.failureResultOf(d, PointsRejected)
        self.assertEqual(failure.value.status, 413)
        self.assertEqual(failure.value.message, "Request Entity Too Large")
        self.assertEqual(failure.value.lines, [fixed(1)])
        self.assertEqual(self.writer.stats.points_refused, 1)
        self.assertEqual(self.writer.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # A point that fits still goes.
        ok = self.writer.write([line(2)])
        self.writer.flush()
        self.assertIsNone(self.successResultOf(ok))
        self.assertEqual(self.stamps(), [2])

    def test_onlyTheOversizePointRefused(self) -> None:
        self.build(fake=FakeInfluxDB(max_body_size=20))
        big = b"m f=1,g=2,h=3,i=4,j=5 99"
        small = [self.writer.write([line(i)]) for i in range(3)]
        oversize = self.writer.write([big])
        small.append(self.writer.write([line(3)]))
        self.writer.flush()
        self.assertEqual(self.stamps(), [0, 1, 2, 3])
        for d in small:
            self.assertIsNone(self.successResultOf(d))
        failure = self.failureResultOf(oversize, PointsRejected)
        self.assertEqual((failure.value.status, failure.value.lines), (413, [big]))


class RefusedTests(WriterTestCase):
    BAD = b"m f=oops 5"

    def writeEach(self) -> list[Deferred]:
        """Lines 0-8 as separate writes, line 5 invalid."""
        return [self.writer.write([self.BAD if i == 5 else line(i)]) for i in range(9)]

    def assertOnlyBadRefused(self, writes: list[Deferred], message: str) -> None:
        for i, d in enumerate(writes):
            if i != 5:
                self.assertIsNone(self.successResultOf(d))
        failure = self.failureResultOf(writes[5], PointsRejected)
        self.assertEqual(failure.value.status, 400)
        self.assertEqual(failure.value.message, message)
        self.assertEqual(failure.value.lines, [self.BAD])
        self.assertEqual(self.writer.stats.points_refused, 1)
        self.assertEqual(self.writer.stats.points_written, 8)
        self.assertEqual(self.writer.stats.requests_failed, 0)
        self.assertEqual(self.writer.pending, 0)
        self.assertIsNone(self.writer.failing_since)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badLineIsolatedV2(self) -> None:
        """
        2.x refuses the whole batch and names the line it cannot parse: that
        line is refused, the others go again as one batch.
        """
        self.build(target=V2, batch_size=9)
        writes = self.writeEach()
        self.assertEqual(self.sizes(), [9, 8])
        self.assertEqual(self.stamps(), [0, 1, 2, 3, 4, 6, 7, 8])
        self.assertOnlyBadRefused(writes, "unable to parse 'm f=oops 5': invalid boolean")

    def test_badLineIsolatedV1(self) -> None:
        """
        1.x stores the good lines of a partial write and names the line it
        could not parse ("partial write: unable to parse ... dropped=0"):
        one request settles every point.
        """
        self.build(target=V1, batch_size=9)
        writes = self.writeEach()
        self.assertEqual(self.sizes(), [9])
        self.assertEqual(self.stamps(), [0, 1, 2, 3, 4, 6, 7, 8])
        self.assertOnlyBadRefused(writes, "unable to parse 'm f=oops 5': invalid boolean")

    def test_unnamedRefusalHalved(self) -> None:
        """
        A 400 that names no line ("points beyond retention policy") halves
        the batch, the fallback: here the halves name the bad line.
        """
        self.build(target=V1, batch_size=9)
        self.fake.fail_next(
            400, {"error": "partial write: points beyond retention policy dropped=1"}
        )
        writes = self.writeEach()
        self.assertEqual(self.sizes(), [9, 4, 5])
        self.assertEqual(self.stamps(), [0, 1, 2, 3, 4, 6, 7, 8])
        self.assertOnlyBadRefused(writes, "unable to parse 'm f=oops 5': invalid boolean")

    def test_typeConflictNamedV1(self) -> None:
        """
        1.x names the measurement and field of a type conflict: the points
        of that type are refused, all in one request, the others stored.
        """
        self.build(target=V1, batch_size=100)
        self.writer.write([b"m f=1i 0"])
        self.writer.flush()
        good = self.writer.write([b"m f=2i 1", b"n f=3 2", b"m,t=a f=4i 3"])
        bad = self.writer.write([b"m,t=a f=5 4", b"m g=1i,f=6 5"])
        self.writer.flush()
        self.assertEqual(self.sizes(), [1, 5])
        self.assertIsNone(self.successResultOf(good))
        failure = self.failureResultOf(bad, PointsRejected)
        self.assertEqual(failure.value.lines, [b"m,t=a f=5 4", b"m g=1i,f=6 5"])
        self.assertEqual(
            failure.value.message,
            'partial write: field type conflict: input field "f" on measurement "m" '
            "is type float, already exists as type integer dropped=2",
        )
        self.assertEqual(self.stamps(), [0, 1, 2, 3])
        self.assertEqual(self.writer.stats.points_written, 4)
        self.assertEqual(self.writer.stats.points_refused, 2)

    def test_typeConflictMiscountedHalved(self) -> None:
        """
        When the points that match the named conflict are not all that
        InfluxDB dropped, which were stored is unknown: halve.
        """
        self.build(target=V1, batch_size=4)
        self.fake.fail_next(
            400,
            {
                "error": 'partial write: field type conflict: input field "f" on '
                'measurement "m" is type float, already exists as type integer '
                "dropped=2"
            },
        )
        d = self.writer.write([line(i) for i in range(4)])
        self.assertEqual(self.sizes(), [4, 2, 2])
        self.assertEqual(self.stamps(), [0, 1, 2, 3])
        self.assertIsNone(self.successResultOf(d))

    def requestsForOneBadPoint(self, target: Any, bad: int) -> int:
        """Requests a 5000-point batch with the point at C{bad} invalid takes."""
        self.build(target=target, batch_size=5000)
        d = self.writer.write(
            [self.BAD if i == bad else b"m f=1 %d" % i for i in range(5000)]
        )
        failure = self.failureResultOf(d, PointsRejected)
        self.assertEqual(failure.value.lines, [self.BAD])
        self.assertEqual(self.writer.stats.points_written, 4999)
        self.assertEqual(self.writer.pending, 0)
        return self.sent

    def test_oneBadPointIn5000(self) -> None:
        """
        The figures in docs/reliability.md: a 5000-point batch with one bad
        point takes 1 request (1.x, 3.x) or 2 (2.x); by halving, 25 to 27.
        """
        for bad in (0, 1234, 4999):
            self.assertEqual(self.requestsForOneBadPoint(V1, bad), 1)
            self.assertEqual(self.requestsForOneBadPoint(V2, bad), 2)
            self.assertEqual(self.requestsForOneBadPoint(V3, bad), 1)
        self.patch(writer_module, "read_refusal", lambda body, lines: None)
        self.assertEqual(
            [self.requestsForOneBadPoint(V1, bad) for bad in (0, 1234, 4999)],
            [25, 27, 27],
        )

    def test_goodPointsOfTheSameWriteLand(self) -> None:
        self.build(target=V2)
        d = self.writer.write([line(1), self.BAD, line(3)])
        self.writer.flush()
        self.assertEqual(self.stamps(), [1, 3])
        failure = self.failureResultOf(d, PointsRejected)
        self.assertEqual(failure.value.lines, [self.BAD])
        self.assertEqual(
            str(failure.value),
            "InfluxDB refused 1 point (400): unable to parse 'm f=oops 5': invalid boolean",
        )

    def test_typeConflict422(self) -> None:
        self.build(target=V2)
        self.writer.write([b"m f=1 1"])
        self.writer.flush()
        good = self.writer.write([b"m f=2 2"])
        bad = self.writer.write([b"m f=3i 3"])
        good2 = self.writer.write([b"m f=4 4"])
        self.writer.flush()
        self.assertIsNone(self.successResultOf(good))
        self.assertIsNone(self.successResultOf(good2))
        failure = self.failureResultOf(bad, PointsRejected)
        self.assertEqual(failure.value.status, 422)
        self.assertEqual(
            failure.value.message,
            "failure writing points to database: partial write: field type conflict: "
            'input field "f" on measurement "m" is type integer, already exists as '
            "type float dropped=1",
        )
        self.assertEqual(sorted(set(self.stamps())), [1, 2, 4])

    def test_refusalLogged(self) -> None:
        self.build(target=V2)
        events = self.capture()
        d = self.writer.write([self.BAD])
        self.writer.flush()
        self.failureResultOf(d, PointsRejected)
        [error] = self.at(events, LogLevel.error)
        self.assertEqual(
            formatEvent(error),
            "InfluxDB refused 1 point for good (HTTP 400): unable to parse "
            "'m f=oops 5': invalid boolean; first point: m f=oops 5",
        )


class InfluxV3Tests(WriterTestCase):
    """InfluxDB 3's own API, C{/api/v3/write_lp}, against the fake."""

    def test_partialWrite(self) -> None:
        """
        The refused lines, each with InfluxDB's message, and only those; the
        batch's other points are stored by that same request, nothing halved.
        """
        self.build(target=V3, fake=FakeInfluxDB(databases=[], token="t0k3n"))
        self.writer.write([b"m f=1 0"])
        self.writer.flush()
        good = self.writer.write([line(1), line(2)])
        bad = self.writer.write([line(3), b'm f="x" 4', b"m f=oops 5", line(6)])
        self.writer.flush()
        self.assertEqual(self.sizes(), [1, 6])
        self.assertEqual(self.stamps(), [0, 1, 2, 3, 6])
        self.assertIsNone(self.successResultOf(good))
        failure = self.failureResultOf(bad, PointsRejected)
        conflict = (
            "invalid column type for column 'f', expected iox::column_type::field::float,"
            " got iox::column_type::field::string"
        )
        parse = "unable to parse 'm f=oops 5': invalid boolean"
        self.assertEqual(failure.value.status, 400)
        self.assertEqual(failure.value.lines, [b'm f="x" 4', b"m f=oops 5"])
        self.assertEqual(failure.value.reasons, [conflict, parse])
        self.assertEqual(failure.value.message, f"{conflict}; {parse}")
        stats = self.writer.stats
        self.assertEqual((stats.points_written, stats.points_refused), (5, 2))
        self.assertEqual((stats.requests, stats.requests_failed), (2, 0))
        self.assertEqual(self.writer.pending, 0)

    def test_limitHit422(self) -> None:
        """A partial write that hit a schema limit is a 422 with the same body."""
        self.build(target=V3)
        message = "Update to schema would exceed number of columns per table"
        self.fake.fail_next(
            422,
            {
                "error": "partial write of line protocol occurred",
                "data": [
                    {"original_line": "m f=2 2", "line_number": 2, "error_message": message}
                ],
            },
        )
        d = self.writer.write([line(1), line(2)])
        self.writer.flush()
        failure = self.failureResultOf(d, PointsRejected)
        self.assertEqual((failure.value.status, failure.value.lines), (422, [line(2)]))
        self.assertEqual(failure.value.message, message)
        self.assertEqual(self.sent, 1)

    def test_wrongToken(self) -> None:
        """401 is kept and retried until the token is right."""
        fake = FakeInfluxDB(token="new")
        self.build(target=V3, fake=fake)
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.assertEqual(fake.requests[0].headers["authorization"], "Bearer t0k3n")
        self.assertBackoff(1.0)
        fake.token = "t0k3n"
        self.assertBackoff(2.0)
        self.assertEqual(self.stamps(), [1])
        self.assertIsNone(self.successResultOf(d))

    def test_maxRequestSize(self) -> None:
        """write_lp's 500 "max request size ... exceeded" halves like a 413."""
        self.build(target=V3, fake=FakeInfluxDB(max_body_size=29), batch_size=8)
        d = self.writer.write([fixed(i) for i in range(8)])
        self.assertEqual(self.sizes(), [8, 4, 2, 2, 4, 2, 2])
        self.assertEqual(self.stamps(), list(range(8)))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.writer.stats.requests_failed, 0)

    def test_onePointTooLarge(self) -> None:
        self.build(target=V3, fake=FakeInfluxDB(max_body_size=10))
        d = self.writer.write([fixed(1)])
        self.writer.flush()
        failure = self.failureResultOf(d, PointsRejected)
        self.assertEqual(
            (failure.value.status, failure.value.message),
            (500, "max request size (10 bytes) exceeded"),
        )

    def test_compatibleV2EndpointHalves(self) -> None:
        """
        InfluxDB 3's /api/v2/write names no line of a partial write (and
        stores the good ones): the writer halves, as for any unnamed refusal.
        """
        self.build(target=V2, batch_size=4)
        self.fake.fail_next(
            400, {"code": "invalid", "message": "partial write of line protocol occurred"}
        )
        d = self.writer.write([line(i) for i in range(4)])
        self.assertEqual(self.sizes(), [4, 2, 2])
        self.assertEqual(self.stamps(), [0, 1, 2, 3])
        self.assertIsNone(self.successResultOf(d))


class ShutdownTests(WriterTestCase):
    def test_nothingPending(self) -> None:
        self.build()
        self.writer.startService()
        self.assertIsNone(self.successResultOf(self.writer.stopService()))
        self.assertEqual(self.sent, 0)
        self.assertFalse(self.writer.running)

    def test_flushesAtOnce(self) -> None:
        self.build(flush_interval=60.0)
        self.writer.startService()
        d = self.writer.write([line(1), line(2)])
        self.assertEqual(self.sent, 0)
        stopped = self.writer.stopService()
        self.assertEqual(self.batches(), [[line(1), line(2)]])
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flushesEveryBatch(self) -> None:
        self.build(batch_size=2, flush_interval=60.0)
        self.writer.startService()
        self.writer.write([line(i) for i in range(5)])
        stopped = self.writer.stopService()
        self.assertEqual(self.sizes(), [2, 2, 1])
        self.assertIsNone(self.successResultOf(stopped))

    def test_waitsForRequestInFlight(self) -> None:
        self.build()
        self.writer.startService()
        self.gate.closed = True
        self.writer.write([line(1)])
        self.writer.flush()
        self.writer.write([line(2)])
        stopped = self.writer.stopService()
        self.assertEqual(self.sent, 1)
        self.assertNoResult(stopped)
        self.release()
        self.assertEqual(self.sent, 2)
        self.assertNoResult(stopped)
        self.release()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.stamps(), [1, 2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_triesAtOnceDuringBackoff(self) -> None:
        self.build(initial_backoff=30.0, max_backoff=300.0)
        self.writer.startService()
        self.fake.fail_next(500)
        d = self.writer.write([line(1)])
        self.writer.flush()
        self.assertEqual(self.sent, 1)
        self.assertGreaterEqual(self.next_try(), 15.0)
        stopped = self.writer.stopService()
        self.assertEqual(self.sent, 2)
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_retriesUntilDeadline(self) -> None:
        self.build(initial_backoff=1.0, shutdown_timeout=10.0)
        self.writer.startService()
        events = self.capture()
        self.fake.fail_next(503, count=2)
        self.writer.write([line(1)])
        stopped = self.writer.stopService()
        self.assertEqual(self.sent, 1)
        self.assertBackoff(1.0, others=1)
        self.assertNoResult(stopped)
        # While stopping, no wait is longer than STOPPING_BACKOFF: the
        # deadline is near, and a long backoff would waste it.
        delay = self.next_try(1)
        self.assertAlmostEqual(delay, min(self.expected_delay(2.0), 1.0), places=9)
        self.assertRetriedAfter(delay)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.stamps(), [1])
        self.assertEqual(self.at(events, LogLevel.error), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_givesUpAtDeadline(self) -> None:
        self.build(shutdown_timeout=10.0)
        self.writer.startService()
        events = self.capture()
        self.fake.fail_next(503, {"error": "down"}, count=10_000)
        writes = [self.writer.write([line(i)]) for i in range(5)]
        stopped = self.writer.stopService()
        self.assertEqual(self.sent, 1)
        [info] = self.at(events, LogLevel.info)
        self.assertEqual(
            formatEvent(info), "Writing 5 points before stopping (at most 10.0 s)"
        )
        self.clock.advance(9.999)
        self.assertNoResult(stopped)
        tries = self.sent
        self.assertGreater(tries, 1)
        self.clock.advance(0.002)
        self.assertIsNone(self.successResultOf(stopped))
        [error] = self.at(events, LogLevel.error)
        self.assertEqual(error["count"], 5)
        self.assertEqual(
            formatEvent(error),
            "5 points were not written to InfluxDB before the shutdown deadline",
        )
        # Not lost from the accounting, and nothing more is tried.
        self.assertEqual(self.writer.pending, 5)
        self.assertEqual(self.fake.points, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertEqual(self.sent, tries)
        for d in writes:
            self.assertNoResult(d)

    def test_givesUpOnHangingRequest(self) -> None:
        self.build(shutdown_timeout=10.0, request_timeout=30.0, script=[HANG])
        self.writer.startService()
        events = self.capture()
        self.writer.write([line(i) for i in range(3)])
        stopped = self.writer.stopService()
        self.assertEqual(self.sent, 1)
        self.clock.advance(9.999)
        self.assertNoResult(stopped)
        self.clock.advance(0.002)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertTrue(self.client.hanging[0].called)
        [error] = self.at(events, LogLevel.error)
        self.assertEqual(error["count"], 3)
        self.assertEqual(self.writer.pending, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.sent, 1)

    def test_lateAnswerAfterGivingUp(self) -> None:
        """An answer that comes after the deadline changes nothing."""
        self.build(shutdown_timeout=10.0)
        self.writer.startService()
        self.gate.closed = True
        self.writer.write([line(1)])
        stopped = self.writer.stopService()
        self.assertEqual(self.sent, 1)
        self.clock.advance(10.0)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.writer.pending, 1)
        self.release()
        self.clock.advance(100)
        self.assertEqual(self.sent, 1)
        self.assertEqual(self.writer.pending, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StatsTests(WriterTestCase):
    def test_counters(self) -> None:
        self.build(target=V2, batch_size=3)
        self.fake.fail_next(500, count=2)
        self.writer.write([line(1), line(2), line(3)])
        self.clock.advance(self.next_try())
        self.clock.advance(self.next_try())
        refused = self.writer.write([line(4), b"m f=bad 5"])
        self.writer.flush()
        self.failureResultOf(refused, PointsRejected)
        self.assertEqual(
            dataclasses.asdict(self.writer.stats),
            {
                "points_queued": 5,
                # 3 failed twice, then [1,2,3]; [4,bad] names bad, then [4].
                "requests": 5,
                "requests_failed": 2,
                "points_retried": 6,
                "points_written": 4,
                "batches_written": 2,
                "points_refused": 1,
            },
        )
        self.assertEqual(self.stamps(), [1, 2, 3, 4])
        self.assertEqual(self.writer.last_write_seconds, 0.0)


class LoggingTests(WriterTestCase):
    def test_failuresRateLimited(self) -> None:
        """100 failures in under a minute: one warning, then one info."""
        self.build(initial_backoff=0.1, max_backoff=0.4)
        events = self.capture()
        self.fake.fail_next(500, {"error": "boom"}, count=100)
        self.writer.write([line(1)])
        self.writer.flush()
        while len(self.fake.requests) < 101 and self.clock.seconds() < 60:
            self.clock.advance(0.05)
        self.assertEqual(len(self.fake.requests), 101)
        self.assertEqual(self.writer.stats.requests_failed, 100)
        self.assertEqual(self.stamps(), [1])
        [warning] = self.at(events, LogLevel.warn)
        self.assertEqual(warning["why"], "HTTP 500: boom")
        self.assertEqual(warning["count"], 1)
        self.assertEqual(warning["clock_time"], 0)
        [info] = self.at(events, LogLevel.info)
        self.assertEqual(info["failures"], 100)
        self.assertEqual(
            formatEvent(info), "InfluxDB writes work again after 100 failed attempts"
        )

    def test_longOutageOneWarningAMinute(self) -> None:
        self.build(initial_backoff=0.1, max_backoff=0.4)
        events = self.capture()
        self.fake.fail_next(503, count=10_000)
        self.writer.write([line(1)])
        self.writer.flush()
        while self.clock.seconds() < 150:
            self.clock.advance(0.05)
        warnings = self.at(events, LogLevel.warn)
        self.assertEqual(len(warnings), 3)
        times = [w["clock_time"] for w in warnings]
        failed_at = [w["failed_so_far"] for w in warnings]
        self.assertEqual(times[0], 0)
        for earlier, later in pairwise(times):
            self.assertGreaterEqual(later - earlier, 60)
            self.assertLess(later - earlier, 60.5)
        self.assertEqual(
            [w["suppressed"] for w in warnings],
            [0, failed_at[1] - failed_at[0] - 1, failed_at[2] - failed_at[1] - 1],
        )
        self.assertGreater(warnings[1]["suppressed"], 100)
        self.assertIn("more like this were not logged", formatEvent(warnings[1]))

    def test_refusalsRateLimited(self) -> None:
        self.build(target=V2)
        events = self.capture()
        writes = []
        for i in range(5):
            writes.append(self.writer.write([b"m f=bad %d" % i]))
            self.writer.flush()
            self.clock.advance(1)
        for d in writes:
            self.failureResultOf(d, PointsRejected)
        self.assertEqual(len(self.at(events, LogLevel.error)), 1)
        self.assertEqual(self.writer.stats.points_refused, 5)


class RetryAfterTests(SynchronousTestCase):
    def test_seconds(self) -> None:
        self.assertEqual(retry_after_seconds(b"7", 1000.0), 7.0)
        self.assertEqual(retry_after_seconds(b" 120 ", 1000.0), 120.0)

    def test_negativeSeconds(self) -> None:
        self.assertEqual(retry_after_seconds(b"-3", 1000.0), 0.0)

    def test_date(self) -> None:
        self.assertEqual(
            retry_after_seconds(b"Tue, 14 Nov 2023 22:15:20 GMT", 1_700_000_000.0), 120.0
        )

    def test_dateInThePast(self) -> None:
        self.assertEqual(
            retry_after_seconds(b"Tue, 14 Nov 2023 22:15:20 GMT", 1_800_000_000.0), 0.0
        )

    def test_absentOrGarbage(self) -> None:
        for value in (None, b"", b"soon", b"1.5", b"Someday, 99 Foo 2023"):
            self.assertIsNone(retry_after_seconds(value, 0.0), value)


#: Writes of any size, a few refused points and writers of any shape: a few
#: dozen examples here, many more in tests/integration/test_exhaustive.py.
WRITES = dict(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=12),
    bad=st.sets(st.integers(0, 80), max_size=3),
    batch_size=st.integers(1, 9),
    target=st.sampled_from([V1, V2, V3]),
    max_body=st.sampled_from([None, 40, 100]),
)


class WritesAcrossBatchesTests(WriterTestCase):
    """
    Writes of any size are cut into batches of points: a write may straddle
    two batches, and halving (413, 400) may cut it again; every point still
    goes exactly once, in order, and each write settles as a whole.
    """

    BAD = b"m f=oops %d"

    @settings(max_examples=40, deadline=None)
    @given(**WRITES)
    def test_everyPointOnceEachWriteSettled(self, **writes: Any) -> None:
        self.checkEveryPointOnceEachWriteSettled(**writes)

    def checkEveryPointOnceEachWriteSettled(
        self,
        sizes: list[int],
        bad: set[int],
        batch_size: int,
        target: Any,
        max_body: int | None,
    ) -> None:
        fake = FakeInfluxDB(token="t0k3n", max_body_size=max_body or 1 << 20)
        self.build(target=target, fake=fake, batch_size=batch_size)
        writes, given_lines, start = [], [], 0
        for size in sizes:
            lines = [
                self.BAD % i if i in bad else fixed(i) for i in range(start, start + size)
            ]
            given_lines.append(lines)
            writes.append(self.writer.write(list(lines)))
            start += size
        self.clock.advance(1.0)
        for _ in range(200):
            if not self.writer.pending:
                break
            self.writer.flush()
        self.assertEqual(self.writer.pending, 0)
        good = [i for i in range(start) if i not in bad]
        if target is not V1:
            self.assertEqual(self.stamps(), good)
        else:
            # 1.x stores a refused batch's valid points (a partial write); where
            # its answer names no line, they are sent again in the halves (harmless).
            self.assertEqual(sorted(set(self.stamps())), good)
        for lines, d in zip(given_lines, writes, strict=True):
            refused = [x for x in lines if x.startswith(b"m f=oops")]
            if refused:
                failure = self.failureResultOf(d, PointsRejected)
                self.assertEqual(failure.value.lines, refused)
            else:
                self.assertIsNone(self.successResultOf(d))
        stats = self.writer.stats
        self.assertEqual(stats.points_written, len(good))
        self.assertEqual(stats.points_refused, len(bad & set(range(start))))
        self.assertEqual(stats.requests_failed, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
