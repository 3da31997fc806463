"""
Several worker processes behind one listening socket (C{--workers N}).

The parent only accepts: each station connection goes, as a file descriptor,
to the worker chosen by its source address (L{weather.handoff.worker_for}),
so that a station's packets keep meeting the same timing state and journal.
Each worker is a whole server (C{twistd weather --worker I/N/FD}): it reads,
journals, decodes, writes to InfluxDB and answers its own C{/metrics}.  The
parent restarts a worker that dies, relays the workers' logs into its own,
passes SIGHUP on, and on stop hands over what it accepted before telling the
workers to stop.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IListeningPort, IReadDescriptor
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import (
    InvalidLogLevelError,
    Logger,
    LogLevel,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from weather.handoff import WorkerChannel, worker_for
from weather.service import CannotListen, check_family

#: Connections accepted per readable event of the listening socket.
ACCEPTS_PER_ROUND = 100
#: Connections waiting in the parent for one worker before accepting stops.
MAX_WAITING = 1024
#: Seconds before a dead worker is started again, doubling up to the maximum.
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
#: A worker that ran this long before dying is restarted after RESTART_DELAY.
STABLE_AFTER = 60.0
#: The channel's descriptor number in a worker.
CHANNEL_FD = 3


def worker_event(line: str, index: int) -> dict[str, Any] | None:
    """
    A worker's JSON log line (L{weather.logfile.event_as_json}) as a log
    event of this process: same level, namespace, message and fields, the
    system C{worker-I}, and field C{worker}: I.
    """
    try:
        fields = json.loads(line)
    except ValueError:
        return None
    if not isinstance(fields, dict) or not isinstance(fields.get("message"), str):
        return None
    level = fields.pop("level", "info")
    try:
        log_level = LogLevel.levelWithName(level)
    except InvalidLogLevelError:
        log_level = LogLevel.info
    event = {
        key: value
        for key, value in fields.items()
        if key not in ("time", "namespace", "system", "message") and "{" not in key
    }
    event.update(
        log_format="{worker_message}",
        log_level=log_level,
        log_namespace=str(fields.get("namespace") or "weather.workers"),
        log_system=f"worker-{index}",
        log_time=time.time(),
        worker=index,
        worker_message=fields["message"],
    )
    if isinstance(fields.get("failure"), str):  # the traceback, as the worker logged it
        event["worker_message"] += "\n" + fields["failure"]
    return event


class _NoProtocols(Factory):
    """The listening port's factory: its own accept loop never runs."""

    noisy = False

    def buildProtocol(self, addr: Any) -> None:
        return None


class _WorkerLog(ProcessProtocol):
    """A worker's output: its JSON log events, re-emitted with its number."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: Deferred[None] = Deferred()
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        self._partial[fd] = lines.pop()
        if len(self._partial[fd]) > 1 << 20:  # a runaway line: cut it
            lines.append(self._partial[fd])
            self._partial[fd] = b""
        for line in lines:
            if line.strip():
                self.pool.relay(self.index, fd, line)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest.strip():
                self.pool.relay(self.index, fd, rest)
        self.pool.worker_ended(self, reason)
        self.ended.callback(None)


@implementer(IReadDescriptor)
class _Acceptor:
    """Accepts station connections and hands each to its worker."""

    def __init__(self, pool: WorkerPool, listening: socket.socket) -> None:
        self.pool = pool
        self.listening = listening

    def fileno(self) -> int:
        return self.listening.fileno()

    def logPrefix(self) -> str:
        return "weather-accept"

    def doRead(self) -> None:
        pool = self.pool
        touched = set()
        for _ in range(ACCEPTS_PER_ROUND):
            try:
                connection, address = self.listening.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                pool.cannot_accept(e)
                break
            family = connection.family
            try:
                index = worker_for(family, address[0], len(pool.channels))
            except (OSError, ValueError):
                index = 0
            pool.channels[index].hand(connection, family)
            pool.accepted += 1
            touched.add(index)
        for index in touched:
            pool.channels[index].flush()
        pool.check_waiting()

    def connectionLost(self, reason: Failure) -> None:
        pass


class WorkerPool(Service):
    """
    Listen on C{endpoint}, start C{count} workers with C{command(index)} (an
    argv; the channel is descriptor L{CHANNEL_FD} in the worker) and hand
    them the connections.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        endpoint: Any,
        description: str,
        count: int,
        command: Callable[[int], Sequence[str]],
        *,
        stop_timeout: float = 60.0,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.description = description
        self.count = count
        self.command = command
        self.stop_timeout = stop_timeout
        self.environ = dict(os.environ if environ is None else environ)
        self.channels: list[WorkerChannel] = []
        self.processes: list[Any] = [None] * count
        self.logs: list[_WorkerLog | None] = [None] * count
        self.started_at: list[float] = [0.0] * count
        self.restart_delay: list[float] = [RESTART_DELAY] * count
        self.restarts = 0
        self.accepted = 0
        self.port: IListeningPort | None = None
        self._acceptor: _Acceptor | None = None
        self._accepting = False
        self._stopping = False
        self._pause_until = None

    # -- listening -----------------------------------------------------------

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.port is not None:
            return
        failures: list[Failure] = []
        ports: list[IListeningPort] = []
        self.endpoint.listen(_NoProtocols()).addCallbacks(ports.append, failures.append)
        if failures:
            error = failures[0].value
            why = getattr(getattr(error, "socketError", None), "strerror", None)
            raise CannotListen(f"{self.description}: {why or error}")
        port = ports[0]
        check_family(port, self.description)
        listening = getattr(port, "socket", None)
        if (
            listening is None
            or listening.family not in (socket.AF_INET, socket.AF_INET6)
            or not isinstance(getattr(port, "factory", None), _NoProtocols)
        ):
            # Not a plain TCP port, or one whose connections the endpoint
            # wraps (ssl: puts TLS around them): a worker could not read them.
            port.stopListening()
            raise CannotListen(
                f"{self.description}: --workers needs a plain TCP port (tcp:, tcp6:, "
                "or systemd: with domain=INET or INET6; not ssl: or unix:)"
            )
        port.stopReading()
        self.port = port
        self._acceptor = _Acceptor(self, listening)
        self.log.info(
            "Listening for stations on {where}; {count} worker processes",
            where=self.description,
            count=self.count,
        )

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        for index in range(self.count):
            self.channels.append(self._spawn(index, None))
        self._start_accepting()

    def _start_accepting(self) -> None:
        if not self._accepting and self._acceptor is not None and not self._stopping:
            self._accepting = True
            self.reactor.addReader(self._acceptor)

    def _stop_accepting(self) -> None:
        if self._accepting and self._acceptor is not None:
            self._accepting = False
            self.reactor.removeReader(self._acceptor)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def check_waiting(self) -> None:
        """Stop accepting while a worker has too many connections waiting."""
        if any(channel.held >= MAX_WAITING for channel in self.channels):
            if self._accepting:
                self.log.warn(
                    "A worker is not taking connections ({count} wait for it): "
                    "not accepting until it does",
                    count=max(channel.held for channel in self.channels),
                )
            self._stop_accepting()

    def _channel_drained(self, channel: WorkerChannel) -> None:
        if self._pause_until is None and all(
            c.held < MAX_WAITING // 2 for c in self.channels
        ):
            self._start_accepting()

    def cannot_accept(self, error: OSError) -> None:
        """Out of descriptors or memory: pause accepting for a second."""
        self.log.error(
            "Cannot accept station connections: {why}; trying again in 1 s",
            why=os.strerror(error.errno) if error.errno else str(error),
        )
        self._stop_accepting()

        def resume() -> None:
            self._pause_until = None
            self._start_accepting()

        self._pause_until = self.reactor.callLater(1.0, resume)

    # -- workers -------------------------------------------------------------

    def _spawn(self, index: int, previous: WorkerChannel | None) -> WorkerChannel:
        """
        Start worker C{index}; the connections that waited for (or were
        sent to and not adopted by) the previous one go to it.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        protocol = _WorkerLog(self, index)
        try:
            self.processes[index] = self.reactor.spawnProcess(
                protocol,
                sys.executable,
                list(self.command(index)),
                env=self.environ,
                childFDs={0: "w", 1: "r", 2: "r", CHANNEL_FD: theirs.fileno()},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        channel = WorkerChannel(self.reactor, ours, index)
        channel.drained = self._channel_drained
        channel.lost = self._channel_lost
        if previous is not None:
            channel.waiting = previous.take_waiting()
        self.logs[index] = protocol
        self.started_at[index] = self.reactor.seconds()
        channel.start()
        channel.flush()
        return channel

    def _channel_lost(self, channel: WorkerChannel) -> None:
        """A worker's end closed: it is ending (L{worker_ended} follows)."""
        if channel.waiting:
            self.log.warn(
                "Worker {index} is gone; {count} connections wait for its successor",
                index=channel.index,
                count=len(channel.waiting),
            )

    def relay(self, index: int, fd: int, line: bytes) -> None:
        """Re-emit one line of a worker's output as this process's log event."""
        text = line.decode("utf-8", "replace")
        event = worker_event(text, index) if fd == 1 else None
        if event is not None:
            globalLogPublisher(event)
        else:
            self.log.warn("worker {worker}: {line}", worker=index, line=text)

    def worker_ended(self, protocol: _WorkerLog, reason: Failure) -> None:
        index = protocol.index
        if self.logs[index] is not protocol:
            return
        self.processes[index] = None
        if self._stopping:
            return
        code = getattr(reason.value, "exitCode", None)
        signal_number = getattr(reason.value, "signal", None)
        ran = self.reactor.seconds() - self.started_at[index]
        if ran >= STABLE_AFTER:
            self.restart_delay[index] = RESTART_DELAY
        delay = self._next_delay(index)
        self.channels[index].close()  # what it had not adopted waits again
        self.log.critical(
            "Worker {index} ended ({how}) after {ran:.0f} s; starting it again in "
            "{delay:.0f} s ({waiting} connections wait for it)",
            index=index,
            how=f"signal {signal_number}" if signal_number else f"exit code {code}",
            ran=ran,
            delay=delay,
            waiting=len(self.channels[index].waiting),
        )
        self.reactor.callLater(delay, self._restart, index)

    def _restart(self, index: int) -> None:
        if self._stopping or self.processes[index] is not None:
            return
        self.restarts += 1
        try:
            self.channels[index] = self._spawn(index, self.channels[index])
        except OSError as e:
            delay = self._next_delay(index)
            self.log.critical(
                "Cannot start worker {index}: {why}; trying again in {delay:.0f} s",
                index=index,
                why=e.strerror or str(e),
                delay=delay,
            )
            self.reactor.callLater(delay, self._restart, index)

    def _next_delay(self, index: int) -> float:
        """The wait before starting worker C{index} again; doubles each time."""
        delay = self.restart_delay[index]
        self.restart_delay[index] = min(delay * 2, MAX_RESTART_DELAY)
        return delay

    def signal_workers(self, signal_number: int) -> None:
        """Pass a signal (SIGHUP: reload the devices file) on to every worker."""
        for process in self.processes:
            if process is not None:
                try:
                    process.signalProcess(signal_number)
                except Exception:  # already gone: ProcessExitedAlready
                    pass

    # -- stopping ------------------------------------------------------------

    @inlineCallbacks
    def stopService(self):
        super().stopService()
        self._stopping = True
        self._stop_accepting()
        if self._pause_until is not None and self._pause_until.active():
            self._pause_until.cancel()
        if self.port is not None:
            port, self.port = self.port, None
            yield port.stopListening()
        # What was accepted goes to the workers before they are told to stop.
        self._send_to_the_living()
        waiting = [c for c in self.channels if c.waiting and not c.broken]
        if waiting:
            handed: Deferred[None] = Deferred()
            deadline = self.reactor.callLater(5.0, handed.callback, None)

            def drained(channel: WorkerChannel) -> None:
                if not any(c.waiting for c in self.channels if not c.broken):
                    if deadline.active():
                        deadline.cancel()
                        handed.callback(None)

            for channel in waiting:
                channel.drained = drained
            yield handed
        ended = [
            log.ended
            for index, log in enumerate(self.logs)
            if log is not None and self.processes[index] is not None
        ]
        self.signal_workers(signal.SIGTERM)
        kill = self.reactor.callLater(self.stop_timeout, self._kill_workers)
        yield DeferredList(ended)
        if kill.active():
            kill.cancel()
        for channel in self.channels:
            channel.close()
        lost = sum(channel.held for channel in self.channels)
        if lost:
            self.log.error(
                "{count} accepted connections were not taken by a worker before "
                "it stopped: closed unread",
                count=lost,
            )
        for channel in self.channels:
            channel.release()
        self.log.info(
            "Workers stopped; {count} connections handed over in this run",
            count=self.accepted,
        )

    def _send_to_the_living(self) -> None:
        """
        At the stop, connections waiting for a dead worker go to a running
        one: its timing state for those stations is older, but their packets
        are read rather than lost.
        """
        living = [c for c in self.channels if not c.broken]
        if not living:
            return
        for channel in self.channels:
            if channel.broken and channel.waiting:
                heir = living[channel.index % len(living)]
                self.log.warn(
                    "Stopping: {count} connections for worker {index}, which is not "
                    "running, go to worker {heir}",
                    count=len(channel.waiting),
                    index=channel.index,
                    heir=heir.index,
                )
                heir.waiting.extend(channel.take_waiting())
                heir.flush()

    def _kill_workers(self) -> None:
        self.log.error(
            "Workers still running {timeout} s after SIGTERM: killing them",
            timeout=self.stop_timeout,
        )
        self.signal_workers(signal.SIGKILL)
