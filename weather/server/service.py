"""
The services that make up the server, and the order they stop in.

On stop (SIGTERM under twistd): stop listening, give open connections a grace
period to finish their packets, stop decoding, let the writer flush with its
deadline, then commit and close the journal.  Whatever InfluxDB has not
acknowledged stays in the journal for the next start.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from weather.core.dump import counted
from weather.journal.service import Journal
from weather.server.descriptors import RECOUNT_EVERY, DescriptorBudget, guard_accept
from weather.server.logs import RateLimitedLog
from weather.server.pipeline import PacketPipeline
from weather.server.protocol import StationFactory
from weather.server.writer import PointWriter


class CannotListen(Exception):
    """The station listener could not be set up (port in use, no permission)."""


FAMILY_NAMES = {socket.AF_INET: "INET", socket.AF_INET6: "INET6", socket.AF_UNIX: "UNIX"}


def check_family(port: IListeningPort, description: str) -> None:
    """
    An adopted socket (C{systemd:domain=...}) is taken to be of the family
    the string names; read as another, every peer address is garbage.

    @raise CannotListen: the socket is of another family.
    """
    listening = getattr(port, "socket", None)
    so_domain = getattr(socket, "SO_DOMAIN", None)
    if listening is None or so_domain is None:
        return
    try:
        actual = listening.getsockopt(socket.SOL_SOCKET, so_domain)
    except OSError:
        return
    if actual != listening.family:
        port.stopListening()
        raise CannotListen(
            f"{description}: the socket is {FAMILY_NAMES.get(actual, actual)}, not "
            f"{FAMILY_NAMES.get(listening.family, listening.family)}: change domain= "
            "(in a socket unit, ListenStream=0.0.0.0:8266 is INET, a bare 8266 INET6)"
        )


#: Seconds of room under the connection limit that end a stretch at it.
FULL_BREAK = 5.0


class StationListener(Service):
    """
    Listen on an endpoint for station connections.

    Listening starts in C{privilegedStartService}, so twistd can bind a
    privileged port before it drops privileges.

    Why not L{twisted.application.internet.StreamServerEndpointService},
    which does that much: this also stops calling accept() while the journal
    is full, while file descriptors run short (L{DescriptorBudget}), or at
    the connection limit when no open connection may be cut to make room
    (capping each accept round to the room left); times how long the limit
    has held so (for C{/health}); gives open connections C{grace} seconds on
    stop before aborting them; checks an adopted socket's address family;
    and says why it cannot listen in a line short enough for twistd to show
    whole.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: StationFactory,
        clock: IReactorTime,
        description: str,
        grace: float,
        descriptors: DescriptorBudget | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.clock = clock
        self.description = description
        self.grace = grace
        #: How many descriptors station connections may still take.
        self.descriptors = descriptors or DescriptorBudget(clock)
        self.port: IListeningPort | None = None
        #: True while the journal is full: nothing is accepted or read.
        self.paused = False
        self._accept_stopped = False
        #: Since when (the clock's seconds) the connection limit has been
        #: reached, with no connection to cut for room, without a break of
        #: L{FULL_BREAK}; or None.
        self.full_since: float | None = None
        self._full = False
        self._room_since: float | None = None
        #: Since when accept() has been stopped for want of file descriptors, or None.
        self.short_since: float | None = None
        #: When to look again whether a connection may be cut, or descriptors freed.
        self._look_again: IDelayedCall | None = None
        self._limited = RateLimitedLog(self.log, clock)
        self._listening: Deferred[None] | None = None
        factory.capacity_observers.append(self.at_capacity)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._listening is not None:
            return
        failures: list[Failure] = []

        def failed(failure: Failure) -> None:
            if failures is not None and self._listening is listening:
                failures.append(failure)  # at once: raised below
            else:
                self._cannot_listen_later(failure)

        listening = self.endpoint.listen(self.factory).addCallback(self._listened)
        self._listening = listening
        listening.addErrback(failed)
        if failures:
            self._listening = None
            # Short: twistd shows the first 100 bytes when daemonizing.
            error = failures[0].value
            if isinstance(error, CannotListen):
                raise error
            why = getattr(getattr(error, "socketError", None), "strerror", None)
            raise CannotListen(f"{self.description}: {why or error}")
        failures = None  # from now on, failures are logged

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()

    def _listened(self, port: IListeningPort) -> None:
        check_family(port, self.description)
        self.port = port
        self._accept_stopped = False
        self.log.info("Listening for stations on {where}", where=self.description)
        guard_accept(port, self._out_of_descriptors)
        self._accept_only_room(port)
        self._update_accepting()

    def _accept_only_room(self, port: IListeningPort) -> None:
        """
        Twisted's TCP port accepts up to C{numberAccepts} connections each
        time its socket is readable, and does not look at its own reading
        state in between: past the connection limit, the rest of a burst
        would be accepted only to be closed.  So before each round, cap the
        round to the room left (at the limit, one: it takes the place of a
        connection cut for it) and to the descriptors to spare; with none to
        spare, stop accepting.
        """
        if not hasattr(port, "numberAccepts") or not hasattr(port, "doRead"):
            return
        admission, stats = self.factory.admission, self.factory.stats
        accept_round = port.doRead

        def doRead():
            spare = self.descriptors.spare()
            if spare is not None and spare < 1:
                self._out_of_descriptors(None)
                return None
            room = admission.max_connections - admission.open
            if spare is not None:
                room = min(room, spare)
            port.numberAccepts = max(1, min(port.numberAccepts, room))
            before = stats.connections_accepted + stats.connections_refused.total()
            try:
                return accept_round()
            finally:
                after = stats.connections_accepted + stats.connections_refused.total()
                self.descriptors.use(after - before)

        port.doRead = doRead

    def pause(self, paused: bool) -> None:
        """
        Stop accepting and reading station connections, or start again.
        Stations that cannot send keep their records for their next upload.
        Once stopping, what stations already sent is read whatever the load.
        """
        if paused and not self.running:
            return
        self.paused = paused
        self.factory.pause(paused)
        self._update_accepting()

    def at_capacity(self, full: bool) -> None:
        """The connection limit was reached (True), or there is room again."""
        self._update_accepting()

    def at_limit_for(self, now: float) -> float:
        """
        How long the connection limit has held with no connection to cut for
        room, in seconds (0: not so).  Room for less than L{FULL_BREAK} is
        no break: a station closing only to let the next queued one in does
        not end a stretch at the limit.
        """
        if self.full_since is None:
            return 0.0
        if self._room_since is not None and now - self._room_since >= FULL_BREAK:
            return 0.0
        return now - self.full_since

    def _note_full(self, full: bool, now: float) -> None:
        """Time the stretches at the limit (L{at_limit_for})."""
        if full == self._full:
            return
        self._full = full
        if full:
            if self.at_limit_for(now) == 0:
                self.full_since = now
            self._room_since = None
        else:
            self._room_since = now

    def short_of_descriptors_for(self, now: float) -> float:
        """How long accept() has been stopped for want of descriptors (0: not)."""
        return 0.0 if self.short_since is None else now - self.short_since

    def _out_of_descriptors(self, error: int | None) -> None:
        """
        Fewer than the reserve of file descriptors are left (C{error} None),
        or accept() failed for want of them (C{error}, an errno): stop
        accepting; connections wait in the listen queue until there are
        some again (looked at every L{RECOUNT_EVERY} seconds).
        """
        if self.short_since is None:
            self.short_since = self.clock.seconds()
            self.factory.stats.descriptors_short += 1
        spare = self.descriptors.spare()
        self._limited.warn(
            "descriptors",
            "Out of file descriptors ({why}): not accepting station connections "
            "until some are free; new ones wait in the listen queue",
            why=(
                errno.errorcode.get(error, str(error))
                if error is not None
                else f"{self.descriptors.reserve + (spare or 0)} left, "
                f"{self.descriptors.reserve} kept for the journal, the log and InfluxDB"
            ),
        )
        self._update_accepting()

    def _look(self) -> None:
        """Look again: descriptors freed, a connection now old enough to cut."""
        self._look_again = None
        if self.short_since is not None:
            spare = self.descriptors.spare(recount=True)
            if spare is None or spare >= 1:
                self._limited.emit(
                    LogLevel.info,
                    "descriptors-free",
                    "File descriptors are free again after {seconds:.1f} s: accepting "
                    "station connections",
                    seconds=self.clock.seconds() - self.short_since,
                )
                self.short_since = None
        self._update_accepting()

    @property
    def accepting(self) -> bool:
        """True while new connections are accepted."""
        return self.port is not None and not self._accept_stopped

    def _update_accepting(self) -> None:
        """
        Call accept() only while the journal has room, descriptors are to
        spare, and the connection limit is not reached or a connection may
        be cut for a new one: other connections wait in the listen queue.
        """
        now = self.clock.seconds()
        full = self.factory.admission.at_capacity and not self.factory.can_cut()
        self._note_full(full, now)
        stop = self.paused or full or self.short_since is not None
        if self._look_again is not None:
            self._look_again.cancel()
            self._look_again = None
        if self.port is None:
            return
        if self.short_since is not None:
            self._look_again = self.clock.callLater(RECOUNT_EVERY, self._look)
        elif full and not self.paused:
            at = self.factory.next_cut_at()
            self._look_again = self.clock.callLater(max(0.0, at - now), self._look)
        if hasattr(self.port, "stopReading"):  # not every port can (unix: can)
            if stop and not self._accept_stopped:
                self.port.stopReading()
            elif not stop and self._accept_stopped:
                self.port.startReading()
        self._accept_stopped = stop

    def _cannot_listen_later(self, failure: Failure) -> None:
        self.log.critical(
            "Cannot listen on {where}: {why}; no station can connect",
            where=self.description,
            why=failure.getErrorMessage(),
        )

    @inlineCallbacks
    def stopService(self):
        super().stopService()
        self._listening = None
        if self._look_again is not None:
            self._look_again.cancel()
            self._look_again = None
        if self.port is not None:
            port, self.port = self.port, None
            yield port.stopListening()
        # What stations already sent must be read, overloaded or not.
        self.paused = False
        self.factory.pause(False)
        self.factory.read_all_held()
        open_connections = len(self.factory.connections)
        if open_connections:
            self.log.info(
                "Waiting up to {grace} s for {connections} to finish",
                grace=self.grace,
                count=open_connections,
                connections=counted(open_connections, "open connection"),
            )
            drained = self.factory.drained()
            drained.addTimeout(self.grace, self.clock, lambda *_: None)
            yield drained
            for protocol in list(self.factory.connections):
                protocol.transport.abortConnection()


class WeatherService(MultiService):
    """
    The whole server: journal, writer, pipeline and station listener.  They
    start in that order and stop in the reverse, so everything received has
    somewhere to go.
    """

    log = Logger()

    def __init__(
        self,
        journal: Journal,
        writer: PointWriter,
        pipeline: PacketPipeline,
        listener: StationListener,
        close: Callable[[], object] | None = None,
    ) -> None:
        """
        @param close: called once everything has stopped, to release what
            the services used (the HTTP connection pool).
        """
        super().__init__()
        self.journal = journal
        self.writer = writer
        self.pipeline = pipeline
        self.listener = listener
        self.close = close
        #: What the operator's pages know of each station: an observer of
        #: the pipeline (L{weather.ops.stations.StationBook}), or None.
        self.stations: Any = None
        #: Side services for the operator (HTTP endpoint, timers): they start
        #: after the station path and stop before it.
        self.monitoring: list[Service] = []
        #: Called with the twistd application this service is added to, before
        #: twistd starts logging (see L{setServiceParent}).
        self.application_hooks: list[Callable[[object], object]] = []
        journal.full_observers.append(listener.pause)
        writer.overload_observers.append(pipeline.writer_overloaded)
        for service in (journal, writer, pipeline, listener):
            service.setServiceParent(self)

    def add_monitoring(self, service: Service) -> None:
        """Add a side service: started last, stopped first."""
        self.monitoring.append(service)
        service.setServiceParent(self)

    def setServiceParent(self, parent) -> None:
        """
        twistd adds the service to its application before it starts logging:
        the one moment to give the application our own log observer.
        """
        super().setServiceParent(parent)
        for hook in self.application_hooks:
            hook(parent)

    def startService(self) -> None:
        try:
            super().startService()
        except KeyboardInterrupt:
            # twistd starts the services before the reactor runs and takes
            # over SIGINT: Ctrl-C while the journal opens is Python's own.
            self.log.info("Interrupted while starting: stopped before taking any packet")
            raise SystemExit(1) from None
        if self.journal.full:  # full already: the listener was not running to hear it
            self.listener.pause(True)

    @inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        for service in reversed(self.monitoring):
            try:
                yield service.stopService()
            except Exception:
                self.log.failure("Stopping {service}", service=service)
        try:
            yield self.listener.stopService()
        finally:
            try:
                self.pipeline.stopService()
                yield self.writer.stopService()
                if self.close is not None:
                    yield self.close()
            finally:
                yield self.journal.stopService()
                self.log_totals()

    def log_totals(self) -> None:
        """One line with what this run did."""
        packets, points = self.pipeline.stats, self.writer.stats
        self.log.info(
            "Totals: {packets} accepted, {rejected} quarantined on arrival "
            "or decoding; {points} written, {refused} refused by InfluxDB",
            accepted=packets.packets_accepted,
            rejected=packets.packets_rejected.total(),
            written=points.points_written,
            packets=counted(packets.packets_accepted, "packet"),
            points=counted(points.points_written, "point"),
            refused=points.points_refused,
        )
