"""
Station connections handed from one process to another.

With C{--workers N}, the parent process accepts every station connection and
passes its socket, over a UNIX C{SOCK_SEQPACKET} socket pair and C{SCM_RIGHTS},
to the worker that owns the station's source address.  A station's
consecutive packets then reach the same worker, which holds its timing state
(the previous arrival that measures its record interval), its journal and its
per-address limits.

One message carries up to L{MAX_FDS} sockets and, as data, one byte per socket:
its address family (C{4} or C{6}).
"""

from __future__ import annotations

import errno
import os
import socket
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IReadDescriptor,
    IReadWriteDescriptor,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

#: Sockets per message (the kernel's limit per SCM_RIGHTS message is 253).
MAX_FDS = 250
FAMILY_BYTES = {socket.AF_INET: b"4", socket.AF_INET6: b"6"}
FAMILIES = {ord("4"): socket.AF_INET, ord("6"): socket.AF_INET6}


def route_key(family: int, host: str) -> bytes:
    """
    The part of a peer's address that decides its worker: a whole IPv4
    address (also when it arrives IPv4-mapped on an IPv6 socket), an IPv6
    address's /64 (a host's privacy addresses change within its /64).
    """
    if family == socket.AF_INET6:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        if packed[:12] == b"\0" * 10 + b"\xff\xff":
            return packed[12:]
        return packed[:8]
    return socket.inet_pton(socket.AF_INET, host)


def worker_for(family: int, host: str, workers: int) -> int:
    """The worker that owns a peer: the same one in every run with C{workers}."""
    return zlib.crc32(route_key(family, host)) % workers


@implementer(IReadWriteDescriptor)
class WorkerChannel:
    """
    The parent's end of one worker's socket pair: sockets wait here until
    the worker's receive queue has room for them.
    """

    log = Logger()

    def __init__(self, reactor: Any, sock: socket.socket, index: int) -> None:
        self.reactor = reactor
        self.sock = sock
        self.index = index
        sock.setblocking(False)
        self.waiting: deque[tuple[socket.socket, bytes]] = deque()
        self.handed = 0
        self.broken = False
        self._writing = False
        #: Called with this channel when its last waiting socket was handed over.
        self.drained: Callable[[WorkerChannel], object] | None = None

    def fileno(self) -> int:
        return self.sock.fileno() if not self.broken else -1

    def logPrefix(self) -> str:
        return f"weather-worker-{self.index}"

    def hand(self, connection: socket.socket, family: int) -> None:
        """Queue a connection for this worker; L{flush} sends it."""
        self.waiting.append((connection, FAMILY_BYTES[family]))

    def flush(self) -> None:
        """Send what waits, as far as the worker's queue has room."""
        waiting = self.waiting
        while waiting and not self.broken:
            batch = [waiting[i] for i in range(min(MAX_FDS, len(waiting)))]
            try:
                socket.send_fds(
                    self.sock,
                    [b"".join(family for _, family in batch)],
                    [connection.fileno() for connection, _ in batch],
                )
            except BlockingIOError:
                self._start_writing()
                return
            except OSError as e:
                # The worker is gone (EPIPE, ECONNRESET): keep the sockets
                # for the worker that takes its place.
                self.log.warn(
                    "Cannot hand connections to worker {index}: {why}",
                    index=self.index,
                    why=os.strerror(e.errno) if e.errno else str(e),
                )
                self.close()
                return
            for _ in batch:
                connection, _family = waiting.popleft()
                connection.close()  # the worker has its own descriptor now
            self.handed += len(batch)
        self._stop_writing()
        if not waiting and self.drained is not None:
            self.drained(self)

    def _start_writing(self) -> None:
        if not self._writing:
            self._writing = True
            self.reactor.addWriter(self)

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self.reactor.removeWriter(self)

    def doWrite(self) -> None:
        self.flush()

    def doRead(self) -> Any:
        """The worker never writes: readable means it closed its end."""
        try:
            if self.sock.recv(1):
                return None
        except BlockingIOError:
            return None
        except OSError:
            pass
        self.close()
        return None

    def start(self) -> None:
        self.reactor.addReader(self)

    def close(self) -> None:
        """Stop using the channel; waiting sockets stay for L{take_waiting}."""
        if self.broken:
            return
        self._stop_writing()
        self.reactor.removeReader(self)
        self.broken = True
        self.sock.close()

    def take_waiting(self) -> deque[tuple[socket.socket, bytes]]:
        waiting, self.waiting = self.waiting, deque()
        return waiting

    def connectionLost(self, reason: Failure) -> None:
        self.close()


@implementer(IListeningPort, IReadDescriptor)
class HandedPort:
    """
    The worker's end: connections the parent hands over, adopted into the
    reactor as if accepted here.  Reading stops while the worker cannot take
    more (journal full, connection limit), so they wait in the socket pair
    and then in the parent.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        sock: socket.socket,
        factory: Any,
        closed: Callable[[], object] | None = None,
    ) -> None:
        self.reactor = reactor
        self.channel = sock
        self.factory = factory
        self.closed = closed
        sock.setblocking(False)
        self.reading = False
        self.listening = True
        self.adopted = 0

    def fileno(self) -> int:
        return self.channel.fileno() if self.listening else -1

    def logPrefix(self) -> str:
        return "weather-handed"

    def startReading(self) -> None:
        if self.listening and not self.reading:
            self.reading = True
            self.reactor.addReader(self)

    def stopReading(self) -> None:
        if self.reading:
            self.reading = False
            self.reactor.removeReader(self)

    def doRead(self, rounds: int | None = 8) -> Any:
        while rounds is None or rounds > 0:
            if rounds is not None:
                rounds -= 1
            try:
                data, fds, flags, _ = socket.recv_fds(self.channel, MAX_FDS, MAX_FDS)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as e:
                self._parent_gone(os.strerror(e.errno) if e.errno else str(e))
                return None
            if not data and not fds:
                self._parent_gone("the parent closed the channel")
                return None
            self._adopt(data, fds)
            if rounds is not None and not self.reading:
                return None
        return None

    def _adopt(self, data: bytes, fds: list[int]) -> None:
        for i, fd in enumerate(fds):
            family = FAMILIES.get(data[i]) if i < len(data) else None
            try:
                if family is None:
                    self.log.error("A handed connection came without its family: closed")
                    continue
                os.set_blocking(fd, False)
                self.reactor.adoptStreamConnection(fd, family, self.factory)
                self.adopted += 1
            except OSError as e:
                # The station went away between accept and here (ENOTCONN).
                if e.errno not in (errno.ENOTCONN, errno.EBADF):
                    self.log.warn(
                        "A handed connection could not be taken: {why}",
                        why=os.strerror(e.errno) if e.errno else str(e),
                    )
            finally:
                os.close(fd)

    def _parent_gone(self, why: str) -> None:
        if not self.listening:
            return
        self.log.warn("No more connections from the parent process: {why}", why=why)
        self.listening = False
        self.stopReading()
        self.channel.close()
        self.factory.doStop()
        if self.closed is not None:
            self.closed()

    def startListening(self) -> None:
        self.factory.doStart()
        self.startReading()

    def stopListening(self) -> Deferred[None]:
        """
        Take what the parent already handed over (the stations sent their
        packets: closing their sockets unread would lose them), then close.
        """
        if self.listening:
            self.stopReading()
            self.doRead(rounds=None)
        if self.listening:
            self.listening = False
            self.channel.close()
            self.factory.doStop()
        return succeed(None)

    def getHost(self) -> Any:
        return None

    def connectionLost(self, reason: Failure) -> None:
        self.stopListening()


@implementer(IStreamServerEndpoint)
class HandedEndpoint:
    """An endpoint whose "listening" is taking connections from the parent."""

    def __init__(
        self, reactor: Any, fd: int, closed: Callable[[], object] | None = None
    ) -> None:
        self.reactor = reactor
        self.fd = fd
        self.closed = closed

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        sock = socket.socket(fileno=self.fd)
        port = HandedPort(self.reactor, sock, factory, self.closed)
        port.startListening()
        return succeed(port)
