"""
Helpers shared by the tests: reference packets and recording fakes.
"""

from __future__ import annotations

import os
import unittest
from typing import Any, NamedTuple, NoReturn

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from weather.app.settings import Options, Settings, settings_from_options
from weather.app.tap import build_service
from weather.core.packet import HEADER
from weather.journal.service import IDiskWorker, ImmediateDiskWorker, Journal
from weather.journal.store import JournalFile, JournalStatus, QuarantinedPacket
from weather.server.admission import Admission
from weather.server.interfaces import IPacketSink
from weather.server.protocol import StationFactory
from weather.server.service import StationListener, WeatherService
from weather.server.writer import PointsRejected
from weather.tools.simulate import build_packet, devices_toml

#: The project's top directory (contrib/, docs/, bench/ are in it).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unavailable(message: str) -> NoReturn:
    """
    A test cannot do what it says here (a tool missing, a mount refused):
    a skip with the reason on a developer's machine, a failure under CI
    (C{CI=true}), where every test must run what it claims to.
    """
    if os.environ.get("CI") == "true":
        raise AssertionError(f"{message} (CI=true: refusing to skip)")
    raise unittest.SkipTest(message)


def header_bytes(
    bytes_ready: int,
    wake_every: int = 3600,
    measurement_every: int = 120,
    bytes_per_measurement: int = 6,
    device_id: int = 1,
    sensor_count: int = 3,
) -> bytes:
    """A packet header; the defaults are the reference station's."""
    return HEADER.pack(
        bytes_ready,
        wake_every,
        measurement_every,
        bytes_per_measurement,
        device_id,
        sensor_count,
    )


def reference_devices_toml(**places: str) -> str:
    """A devices file of reference-layout stations: device id -> place."""
    return devices_toml(map(int, places), {int(d): place for d, place in places.items()})


def reference_packet(
    records: int = 30,
    device_id: int = 1,
    wake_every: int = 3600,
    measurement_every: int = 120,
    start: int = 0,
) -> bytes:
    """A reference-station packet: records of (lux, humidity code, temp code)."""
    return build_packet(
        device_id,
        [(100 + start + i, 30000 + 4 * (start + i), 25000 + 4 * i) for i in range(records)],
        wake_every,
        measurement_every,
    )


@implementer(IPacketSink)
class RecordingSink:
    """
    Keeps what a station protocol hands over.  Each packet is durable at
    once, unless C{hold} is set: then the test fires C{self.durable[i]}.
    """

    def __init__(self, hold: bool = False) -> None:
        self.received = []
        self.rejected = []
        self.hold = hold
        self.durable: list[Deferred] = []

    def packet_received(self, packet) -> Deferred:
        self.received.append(packet)
        if not self.hold:
            return succeed(None)
        durable: Deferred = Deferred()
        self.durable.append(durable)
        return durable

    def packet_rejected(self, packet, error) -> None:
        self.rejected.append((packet, error))


class RecordingWriter:
    """
    Stands in for the PointWriter: keeps the lines and lets the test decide
    when (and whether) each write is acknowledged.
    """

    def __init__(self) -> None:
        self.writes: list[tuple[list[bytes], Deferred]] = []
        self.overloaded = False

    @property
    def lines(self) -> list[bytes]:
        return [line for lines, _ in self.writes for line in lines]

    def write(self, lines: list[bytes]) -> Deferred:
        d: Deferred = Deferred()
        self.writes.append((lines, d))
        return d

    def acknowledge_all(self) -> None:
        for _, d in self.writes:
            if not d.called:
                d.callback(None)

    def refuse(self, index: int, status: int = 400, message: str = "bad") -> None:
        lines, d = self.writes[index]
        d.errback(PointsRejected(status, message, lines))


class Gate(Resource):
    """
    Passes requests to C{inner}, or, while C{closed}, holds them until the
    test calls L{release}: a request that is in flight for as long as the
    test wants.
    """

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner
        self.closed = False
        self.held: list[Request] = []

    def render(self, request: Request) -> Any:
        if not self.closed:
            return self.inner.render(request)
        self.held.append(request)
        return NOT_DONE_YET

    def release(self) -> None:
        request = self.held.pop(0)
        body = self.inner.render(request)
        if body:
            request.write(body)
        request.finish()


@implementer(IDiskWorker)
class ManualDiskWorker:
    """
    A disk worker that runs nothing until the test says so: a disk as slow
    as the test wants.  L{step} runs the oldest waiting call.
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[Any, tuple, Deferred]] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, f, *args) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append((f, args, d))
        return d

    def step(self) -> None:
        f, args, d = self.waiting.pop(0)
        try:
            result = f(*args)
        except BaseException as e:
            d.errback(e)
        else:
            d.callback(result)

    def run_all(self) -> None:
        while self.waiting:
            self.step()


def option_defaults() -> Settings:
    """
    Every option at its default: what the components a test builds are
    given, unless the test says otherwise (they have no defaults of their own).
    """
    options = Options()
    options.parseOptions([])
    return settings_from_options(options, {})


def writer_options(**overrides: Any) -> dict[str, Any]:
    """L{PointWriter}'s keyword arguments from the options' defaults, and C{overrides}."""
    defaults = option_defaults()
    return {
        "batch_size": defaults.batch_size,
        "flush_interval": defaults.flush_interval,
        "request_timeout": defaults.request_timeout,
        "max_backoff": defaults.max_backoff,
        "shutdown_timeout": defaults.shutdown_timeout,
        "max_pending": defaults.max_pending,
        # Not the default: these tests count the writes alone (test_database
        # and test_writer's creation tests pass True).
        "create_database": False,
        **overrides,
    }


def journal_options(**overrides: Any) -> dict[str, Any]:
    """L{Journal}'s keyword arguments from the options' defaults, and C{overrides}."""
    defaults = option_defaults()
    return {
        "max_bytes": defaults.journal_max_bytes,
        "min_free_bytes": defaults.journal_min_free_bytes,
        "quarantine_max_bytes": defaults.quarantine_max_bytes,
        "shutdown_timeout": defaults.shutdown_timeout,
        **overrides,
    }


def admission_options(**overrides: Any) -> dict[str, Any]:
    """L{Admission}'s keyword arguments from the options' defaults, and C{overrides}."""
    defaults = option_defaults()
    return {
        "max_connections": defaults.max_connections,
        "max_per_peer": defaults.max_connections_per_peer,
        "ipv6_prefix": defaults.ipv6_peer_prefix,
        "allow": defaults.allow,
        "rate": defaults.rate_limit,
        **overrides,
    }


def factory_options(clock: Any, **overrides: Any) -> dict[str, Any]:
    """
    L{StationFactory}'s keyword arguments from the options' defaults (an
    L{Admission} on C{clock} with them too), and C{overrides}.
    """
    defaults = option_defaults()
    return {
        "idle_timeout": defaults.idle_timeout,
        "packet_deadline": defaults.packet_deadline,
        "max_packet_size": defaults.max_packet_size,
        "admission": Admission(clock, **admission_options()),
        **overrides,
    }


class PortEndpoint:
    """An endpoint whose listen gives C{port} at once; it notes the factories."""

    def __init__(self, port: object) -> None:
        self.port = port
        self.factories: list = []

    def listen(self, factory) -> Deferred:
        self.factories.append(factory)
        return succeed(self.port)


class Listening(NamedTuple):
    sink: RecordingSink
    factory: StationFactory
    port: RecordingPort
    listener: StationListener


def start_listening(clock: Any, **overrides: Any) -> Listening:
    """
    A station factory on C{clock} (C{overrides} of L{factory_options}), its
    packets in a L{RecordingSink}, listening through a started
    L{StationListener} on a L{RecordingPort} (its endpoint a L{PortEndpoint}).
    """
    sink = RecordingSink()
    factory = StationFactory(sink, clock, **factory_options(clock, **overrides))
    port = RecordingPort()
    listener = StationListener(
        PortEndpoint(port), factory, clock, "tcp:8266", option_defaults().grace
    )
    listener.startService()
    return Listening(sink, factory, port, listener)


def started_journal(
    testcase, clock, worker: IDiskWorker | None = None, **kwargs
) -> Journal:
    """
    A started L{Journal} in a fresh directory, stopped when the test ends;
    C{kwargs} override the options' defaults.
    """
    journal = Journal(
        testcase.mktemp(),
        clock,
        worker if worker is not None else ImmediateDiskWorker(),
        **journal_options(**kwargs),
    )
    journal.startService()
    testcase.addCleanup(_stop_journal, journal)
    return journal


def _stop_journal(journal: Journal) -> None:
    if journal.running:
        if isinstance(journal.worker, ManualDiskWorker):
            journal.worker.run_all()
        journal.stopService()
        if isinstance(journal.worker, ManualDiskWorker):
            journal.worker.run_all()
    if journal.file is not None:
        journal._close()


def make_settings(testcase, *args: str, environ: dict[str, str] | None = None) -> Settings:
    """
    Settings from command-line C{args}, with the journal in a fresh
    directory of the test's own (an explicit --data-dir in C{args} wins).
    """
    options = Options()
    options.parseOptions(["--data-dir", testcase.mktemp(), *args])
    return settings_from_options(options, environ if environ is not None else {})


def build_test_service(
    testcase,
    settings: Settings,
    reactor: Any,
    client: Any,
    worker: IDiskWorker | None = None,
    **options: Any,
) -> WeatherService:
    """
    L{build_service} for fake reactors: the journal's disk I/O runs in the
    caller's thread, and the journal is closed when the test ends.
    C{options} are L{build_service}'s other keyword arguments.
    """
    service = build_service(
        settings,
        reactor,
        client=client,
        worker=worker if worker is not None else ImmediateDiskWorker(),
        **options,
    )
    testcase.addCleanup(_close_journal, service.journal)
    return service


def _close_journal(journal: Journal) -> None:
    if journal.file is not None:
        journal._close()


def journal_status(directory: str) -> JournalStatus:
    """What the journal in C{directory} holds (the server must be stopped)."""
    journal = JournalFile(directory, create=False)
    try:
        return journal.status()
    finally:
        journal.close()


def journal_quarantined(directory: str) -> list[QuarantinedPacket]:
    """The packets in quarantine in C{directory} (the server must be stopped)."""
    journal = JournalFile(directory, create=False)
    try:
        return journal.quarantined()
    finally:
        journal.close()


class SetTime:
    """A wall clock that reads what the test says: a factory's C{wall}."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@implementer(IListeningPort)
class RecordingPort:
    """A listening port that notes stopReading, startReading and stopListening."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def startListening(self) -> None:
        pass

    def stopReading(self) -> None:
        self.calls.append("stopReading")

    def startReading(self) -> None:
        self.calls.append("startReading")

    def stopListening(self) -> Deferred:
        self.calls.append("stopListening")
        return succeed(None)

    def getHost(self):
        return IPv4Address("TCP", "0.0.0.0", 8266)


class Station(Protocol):
    """
    Writes C{packet} on connecting, closes once the server answers; C{done}
    fires with what the server wrote when the connection is gone.
    """

    def __init__(self, packet: bytes) -> None:
        self.packet = packet
        self.received = b""
        self.reason = None
        # Cancelled by the timeout: give up on the connection.
        self.done: Deferred = Deferred(
            lambda _: self.transport and self.transport.abortConnection()
        )

    def connectionMade(self) -> None:
        # Over TLS this is before the handshake; the bytes wait for it.
        self.transport.write(self.packet)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self.reason = reason
        if not self.done.called:  # not after a timeout
            self.done.callback(self.received)


def journaled_arrivals(file: JournalFile) -> dict[int, int]:
    """Each device's last arrival, as the journal file keeps it."""
    return {device: state.arrival_ns for device, state in file.stations().items()}


def numbered_packet(numbers: range, device_id: int = 1) -> bytes:
    """
    A reference packet of the station's records C{numbers}: record I{n} has
    the same bytes in every packet, as when a station sends it again.
    """
    return build_packet(device_id, [(n, 30000 + n, 25000 + n) for n in numbers])
