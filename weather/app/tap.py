"""
The twistd plugin's service maker: C{twistd weather [options]}.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import IService
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from weather.app.configfile import config_devices
from weather.app.lastserver import RecordService, record_path, status_page_url
from weather.app.logfile import attach, twistd_user
from weather.app.options import ConfigurationError, Options
from weather.app.preflight import (
    Listener,
    check_data_dir_writable,
    check_listeners,
    check_min_free,
)
from weather.app.reload import DevicesReloader, HangupService
from weather.app.settings import Settings, load_devices, settings_from_options
from weather.app.signals import QuietRepeatedStop
from weather.journal.service import (
    LOCKNAME,
    IDiskWorker,
    Journal,
    ThreadDiskWorker,
    check_lock,
)
from weather.journal.store import JournalError, check_journal
from weather.ops.metrics import ServerMetrics
from weather.ops.selfstats import SelfStatsReporter
from weather.ops.stations import StationBook
from weather.server.admission import Admission
from weather.server.clock import (
    ClockGate,
    IClockStatus,
    KernelClockStatus,
    choose_wait,
    find_ntp_client,
)
from weather.server.descriptors import pause_when_exhausted
from weather.server.http import make_client, tls_policy
from weather.server.logs import RateLimitedLog
from weather.server.pipeline import PacketPipeline
from weather.server.protocol import StationFactory
from weather.server.service import CannotListen, StationListener, WeatherService
from weather.server.writer import PointWriter

__all__ = ["Options", "makeService", "build_service"]

log = Logger()

#: Where Linux gives the id of the current boot (a new one at each boot).
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_clock_ns() -> int:
    """The machine's boot clock: monotonic, counting suspend (C{CLOCK_BOOTTIME})."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def monotonic_timers(reactor: Any) -> None:
    """
    Run C{reactor}'s timers on the monotonic clock rather than the wall
    clock, so that a step of the wall clock (NTP's first sync, a person
    setting it) neither holds nor hastens idle timeouts, packet deadlines,
    flushes, backoff and rate limits.  What needs the wall clock (arrival
    stamps, quarantine and status-page times) reads it itself.

    Twisted's reactors read their time from C{seconds} alone, for every
    delayed call (L{twisted.internet.base.ReactorBase.callLater}); calls
    already scheduled are moved to the new clock.
    """
    offset = time.monotonic() - reactor.seconds()
    reactor.seconds = time.monotonic
    for call in reactor.getDelayedCalls():
        call.time += offset
        call.seconds = time.monotonic


def read_boot_id(path: str = BOOT_ID_PATH) -> str | None:
    """This boot's id, or None where the system gives none."""
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def station_endpoint(settings: Settings, reactor: Any) -> Any:
    """The endpoint --port describes."""
    try:
        return serverFromString(reactor, settings.port)
    except Exception as e:  # each endpoint parser raises its own kinds
        why = str(e) or type(e).__name__
        if settings.port.startswith("systemd:") and isinstance(e, (IndexError, KeyError)):
            why = (
                "systemd passed no such socket to this process: start the server "
                "through its socket unit (weather.socket), or by hand with "
                "systemd-socket-activate --fdname=weather.socket"
            )
        raise ConfigurationError(f"--port {settings.port}: {why}") from None


def build_service(
    settings: Settings,
    reactor: Any,
    client: Any = None,
    worker: IDiskWorker | None = None,
    endpoint: Any = None,
    boot_clock: Callable[[], int] | None = None,
    boot_id: str | None = None,
    clock_status: IClockStatus | None = None,
    ntp_client: str | None = None,
    wall: Callable[[], float] | None = None,
) -> WeatherService:
    """
    Assemble the server from checked settings; C{reactor} times and listens,
    C{client} (treq-like) talks to InfluxDB, C{worker} does the journal's
    disk I/O (a thread of its own by default), C{endpoint} is where station
    connections come from (default: --port).  C{boot_clock} and C{boot_id}
    are the machine's boot clock and boot id (None: packets are spaced on
    the wall clock alone).  C{clock_status} says whether the wall clock is
    synchronized and C{ntp_client} which NTP client runs, for --clock-sync
    (no status or no boot clock: the wall clock is trusted).  C{wall} is
    the wall clock, where C{reactor}'s timers run on another
    (L{monotonic_timers}); by default, C{reactor.seconds}.
    """
    if endpoint is None:
        endpoint = station_endpoint(settings, reactor)
    close = None
    if client is None:
        client, pool = make_client(
            reactor, tls_policy(settings.verify_tls, settings.ca_pem)
        )
        close = pool.closeCachedConnections
    writer = PointWriter(
        settings.target,
        client,
        reactor,
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval,
        request_timeout=settings.request_timeout,
        max_backoff=settings.max_backoff,
        shutdown_timeout=settings.shutdown_timeout,
        max_pending=settings.max_pending,
        wall=wall,
        create_database=settings.create_database,
    )
    journal = Journal(
        settings.data_dir,
        reactor,
        worker if worker is not None else ThreadDiskWorker(reactor),
        max_bytes=settings.journal_max_bytes,
        min_free_bytes=settings.journal_min_free_bytes,
        quarantine_max_bytes=settings.quarantine_max_bytes,
        shutdown_timeout=settings.shutdown_timeout,
        boot_id=boot_id,
        wall=wall,
    )
    gate = None
    if clock_status is not None and boot_clock is not None:
        gate = clock_gate(
            settings, reactor, clock_status, ntp_client, boot_clock, boot_id, wall
        )
    pipeline = PacketPipeline(settings.profiles, journal, writer, reactor, clock_gate=gate)
    pipeline.devices_file = settings.devices_file
    admission = Admission(
        reactor,
        max_connections=settings.max_connections,
        max_per_peer=settings.max_connections_per_peer,
        ipv6_prefix=settings.ipv6_peer_prefix,
        allow=settings.allow,
        rate=settings.rate_limit,
    )
    factory = StationFactory(
        pipeline,
        reactor,
        idle_timeout=settings.idle_timeout,
        packet_deadline=settings.packet_deadline,
        max_packet_size=settings.max_packet_size,
        admission=admission,
        boot_clock=boot_clock,
        wall=wall,
    )
    listener = StationListener(endpoint, factory, reactor, settings.port, settings.grace)
    service = WeatherService(journal, writer, pipeline, listener, close)
    service.stations = StationBook()
    pipeline.subscribe(service.stations)
    service.reloader = DevicesReloader(
        settings.devices_file,
        pipeline.set_profiles,
        settings.profiles,
        config_devices if settings.devices_file == settings.config_file else load_devices,
    )
    if settings.metrics_port is not None or settings.self_stats_interval:
        add_monitoring(service, settings, reactor, wall)
    return service


def clock_gate(
    settings: Settings,
    reactor: Any,
    status: IClockStatus,
    ntp_client: str | None,
    boot_clock: Callable[[], int],
    boot_id: str | None,
    wall: Callable[[], float] | None = None,
) -> ClockGate:
    """
    What --clock-sync makes of this machine, said once in the log.

    @raise ConfigurationError: it is to wait and the kernel cannot say
        whether the clock is synchronized.
    """
    wait, why = choose_wait(settings.clock_sync, ntp_client)
    try:
        state = "synchronized" if status.synchronized() else "not synchronized"
    except OSError as e:
        if wait:
            raise ConfigurationError(
                f"{why}, but the kernel cannot say whether the clock is synchronized "
                f"({e}): use --clock-sync trust"
            ) from None
        state = f"unknown ({e})"
    log.info(
        "{how} ({why}); the kernel says the wall clock is {state}",
        how="Readings are stamped once the wall clock is synchronized"
        if wait
        else "Readings are stamped with the wall clock as it is",
        why=why,
        state=state,
    )
    return ClockGate(status, reactor, boot_clock, boot_id, wait=wait, wall=wall)


class MonitoringEndpoint(StreamServerEndpointService):
    """The --metrics-port listener: a port in use stops the start in one line."""

    def __init__(
        self, endpoint: Any, factory: Any, description: str, clock: Any = None
    ) -> None:
        super().__init__(endpoint, factory)
        self.description = description
        #: Times the pauses of a port out of descriptors (default: the reactor).
        self.clock = clock
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
            self._waitingForPort.addCallback(self._guard)
        except Exception as e:
            why = getattr(getattr(e, "socketError", None), "strerror", None) or e
            raise CannotListen(f"--metrics-port {self.description}: {why}") from None

    def _guard(self, port: Any) -> Any:
        """Out of descriptors, the port pauses rather than accept and close."""
        if self.clock is None:
            from twisted.internet import reactor as clock
        else:
            clock = self.clock
        pause_when_exhausted(port, clock, self.description)
        return port


def listeners(service: WeatherService) -> list[Listener]:
    """The service's listening options (--port, --metrics-port), for checking."""
    found = [Listener("--port", service.listener.description, service.listener.endpoint)]
    for side in service.monitoring:
        if isinstance(side, MonitoringEndpoint):
            found.append(Listener("--metrics-port", side.description, side.endpoint))
    return found


#: Seconds between counts of the journal's pending packets, for the metrics.
JOURNAL_STATUS_INTERVAL = 10.0


def add_monitoring(
    service: WeatherService,
    settings: Settings,
    reactor: Any,
    wall: Callable[[], float] | None = None,
) -> None:
    """The HTTP endpoint, the self-statistics and the journal counts they show."""
    metrics = ServerMetrics(service, reactor, wall)
    service.metrics = metrics
    if settings.metrics_port is not None:
        from weather.ops.web import monitoring_site

        site = monitoring_site(service, metrics, reactor, settings.unhealthy_after, wall)
        try:
            endpoint = serverFromString(reactor, settings.metrics_port)
        except Exception as e:
            raise ConfigurationError(
                f"--metrics-port {settings.metrics_port}: {e or type(e).__name__}"
            ) from None
        service.add_monitoring(
            MonitoringEndpoint(endpoint, site, settings.metrics_port, reactor)
        )
    limited = RateLimitedLog(log, reactor, period=3600)
    service.add_monitoring(
        _timer(JOURNAL_STATUS_INTERVAL, _refresh_journal_status, reactor, service, limited)
    )
    if settings.self_stats_interval:
        tags: tuple[tuple[str, str], ...] = (
            ("host", settings.self_stats_host or socket.gethostname()),
        )
        reporter = SelfStatsReporter(
            metrics.registry, service.writer, reactor, tags, wall=wall
        )
        service.add_monitoring(
            _timer(settings.self_stats_interval, reporter.report, reactor)
        )


def _timer(interval: float, call: Any, reactor: Any, *args: Any) -> TimerService:
    timer = TimerService(interval, call, *args)
    timer.clock = reactor
    return timer


def _refresh_journal_status(service: WeatherService, limited: RateLimitedLog) -> None:
    """Count the journal's packets; a failure is logged (rarely), the timer goes on."""
    journal = service.journal

    def failed(failure: Failure) -> None:
        journal.last_status = None  # no figures rather than stale ones
        limited.warn(
            "journal-count",
            "Cannot count the journal's packets: {why}",
            why=failure.getErrorMessage(),
        )

    if journal.running:
        maybeDeferred(journal.refresh_status).addErrback(failed)


#: Descriptors beyond station connections: journal, log, InfluxDB, and the
#: HTTP endpoint's (at most L{weather.ops.web.HTTP_CONNECTIONS}).
SPARE_DESCRIPTORS = 128


def open_files_plan(max_connections: int, soft: int, hard: int) -> tuple[int, int]:
    """
    The soft open-files limit to ask for and the connection limit it allows.
    Out of descriptors, Twisted accepts each connection and closes it at
    once: stations that do not wait for the acknowledgement would take it
    for a successful upload.  So the connection limit must fit.
    """
    infinite = resource.RLIM_INFINITY
    need = max_connections + SPARE_DESCRIPTORS
    if soft == infinite or soft >= need:
        return soft, max_connections
    new_soft = need if hard == infinite else min(hard, need)
    return new_soft, min(max_connections, new_soft - SPARE_DESCRIPTORS)


def fit_open_files(settings: Settings) -> Settings:
    """Raise the open-files limit for --max-connections, or lower that to fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_soft, allowed = open_files_plan(settings.max_connections, soft, hard)
    if new_soft != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    if allowed < settings.max_connections:
        if allowed < 1:
            raise ConfigurationError(
                f"the open-files limit ({hard}) leaves no room for station connections"
            )
        log.warn(
            "--max-connections {wanted} does not fit the open-files limit ({hard}): "
            "using {allowed}; raise it (ulimit -n, LimitNOFILE=) for more",
            wanted=settings.max_connections,
            hard=hard,
            allowed=allowed,
        )
        return dataclasses.replace(settings, max_connections=allowed)
    return settings


def check_data_dir(directory: str) -> None:
    """
    Fail now, in one line, if the journal cannot be used, rather than once
    daemonized.  Creates nothing: twistd may still switch to another user
    (--uid), who must own what the journal creates.

    @raise ConfigurationError: it cannot be used.
    """
    try:
        if os.path.exists(os.path.join(directory, LOCKNAME)):
            check_lock(directory)
        check_journal(directory)
    except JournalError as e:
        raise ConfigurationError(str(e)) from None
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigurationError(f"--data-dir {directory}: {existing} is not a directory")


def _log_to(
    application: Any, twistd_options: Any, settings: Settings, reactor: Any
) -> None:
    """
    Give twistd our log observer: size rotation, retention, SIGUSR1, JSON.
    Without a log file of ours, SIGUSR1 is answered with a line rather than
    ending the process.
    """
    log_file = attach(
        application,
        twistd_options,
        max_bytes=settings.log_max_bytes,
        keep=settings.log_keep,
        json=settings.log_json,
        reactor=reactor,
    )
    if log_file is None:
        limited = RateLimitedLog(log, reactor, period=60)

        def nothing_to_rotate() -> None:
            limited.emit(
                LogLevel.info,
                "SIGUSR1",
                "SIGUSR1: this server does not write a log file; nothing to rotate",
            )

        signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(nothing_to_rotate))


def makeService(options: Options) -> IService:
    """twistd's entry point: check the options, build the server."""
    from twisted.internet import reactor

    twistd_options = getattr(options, "parent", None)
    try:
        settings = settings_from_options(options, os.environ)
        settings = fit_open_files(settings)
        check_data_dir(settings.data_dir)
        check_data_dir_writable(settings.data_dir, twistd_user(twistd_options or {}))
        check_min_free(settings.data_dir, settings.journal_min_free_bytes)
        if twistd_options is not None:  # twistd's own reactor, ours to set up
            monotonic_timers(reactor)
        service = build_service(
            settings,
            reactor,
            boot_clock=boot_clock_ns,
            boot_id=read_boot_id(),
            clock_status=KernelClockStatus(),
            ntp_client=find_ntp_client() if settings.clock_sync == "auto" else None,
            wall=time.time,
        )
        check_listeners(listeners(service))
    except ConfigurationError as e:
        raise SystemExit(f"weather: {e}") from None
    hangup = HangupService(
        reactor,
        service.reloader.reload,
        service.pipeline.take_replays,
        handled=service.journal.publish_pid,
    )
    if twistd_options is not None:  # twistd's process, ours to set up
        hangup.install()
    service.add_monitoring(hangup)
    service.add_monitoring(QuietRepeatedStop(reactor))
    service.add_monitoring(
        RecordService(
            record_path(os.environ),
            settings.data_dir,
            status_page_url(settings.metrics_port),
        )
    )
    if twistd_options is not None:
        service.application_hooks.append(
            lambda application: _log_to(application, twistd_options, settings, reactor)
        )
    for warning in settings.warnings:
        log.warn("Configuration: {problem}", problem=warning)
    if settings.config_file:
        log.info("Options from {path} (the command line wins)", path=settings.config_file)
    log.info(
        "Writing readings to {target}; journal in {data_dir}; {profiles}{source}",
        data_dir=settings.data_dir,
        target=settings.target.describe(),
        profiles="1 station profile"
        if len(settings.profiles) == 1
        else f"{len(settings.profiles)} station profiles",
        source=f" from {settings.devices_file}"
        if settings.devices_file
        else " (built-in reference station)",
    )
    url = status_page_url(settings.metrics_port)
    if url is not None:
        log.info("Status page on {url} (/metrics and /health beside it)", url=url)
    return service
