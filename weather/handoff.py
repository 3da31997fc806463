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

import contextlib
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
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

#: Sockets per message (the kernel's limit per SCM_RIGHTS message is 253).
MAX_FDS = 250
#: A worker tells the parent what it adopted at most this late (seconds)...
REPLY_DELAY = 0.02
#: ...or once it has adopted this many.
REPLY_EVERY = 64
#: Out of descriptors, a worker takes nothing for this long (seconds).
STARVED_PAUSE = 1.0
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
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
    The parent's end of one worker's socket pair.  Sockets wait here until
    the worker's receive queue has room for them, and stay open here (in
    L{in_flight}) until the worker says it adopted them: should it die
    first, they go to the worker that takes its place, unread.
    """

    log = Logger()

    def __init__(self, reactor: Any, sock: socket.socket, index: int) -> None:
        self.reactor = reactor
        self.sock = sock
        self.index = index
        sock.setblocking(False)
        self.waiting: deque[tuple[socket.socket, bytes]] = deque()
        #: Sent to the worker, not yet adopted by it, oldest first.
        self.in_flight: deque[tuple[socket.socket, bytes]] = deque()
        self.handed = 0
        self.broken = False
        self._writing = False
        self._retry: Any = None
        #: Called with this channel when its last waiting socket was sent.
        self.drained: Callable[[WorkerChannel], object] | None = None
        #: Called with this channel when the worker closed its end.
        self.lost: Callable[[WorkerChannel], object] | None = None

    @property
    def held(self) -> int:
        """Connections for this worker that the parent still holds."""
        return len(self.waiting) + len(self.in_flight)

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
        while waiting and not self.broken and self._retry is None:
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
                if e.errno == errno.ETOOMANYREFS:
                    # Too many descriptors in flight for this user: the
                    # worker is slow, not gone.  Try again shortly.
                    self._retry = self.reactor.callLater(0.1, self._retry_flush)
                    return
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
                self.in_flight.append(waiting.popleft())
            self.handed += len(batch)
        self._stop_writing()
        if not waiting and self.drained is not None:
            self.drained(self)

    def _retry_flush(self) -> None:
        self._retry = None
        self.flush()

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
        """The worker's answers (L{HandedPort}: C{A<count>}, C{R<count>}), or EOF."""
        if self._read_answers(64):
            self.close()
        return None

    def _read_answers(self, most: int | None) -> bool:
        """Act on up to C{most} answers (None: all there are); True at EOF."""
        while most is None or most > 0:
            if most is not None:
                most -= 1
            try:
                message = self.sock.recv(32)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            except OSError:
                return True
            if not message:
                return True
            try:
                count = int(message[1:])
            except ValueError:
                continue
            if message[:1] == b"A":
                self._adopted(count)
            elif message[:1] == b"R":
                self._resend(count)
        return False

    def _adopted(self, count: int) -> None:
        """The worker has its own descriptors for the oldest C{count} sockets."""
        for _ in range(min(count, len(self.in_flight))):
            connection, _family = self.in_flight.popleft()
            connection.close()
        if self.drained is not None and not self.waiting:
            self.drained(self)  # fewer held: the parent may accept again

    def _resend(self, count: int) -> None:
        """The worker did not get the oldest C{count}: send them again, first."""
        again = [self.in_flight.popleft() for _ in range(min(count, len(self.in_flight)))]
        self.waiting.extendleft(reversed(again))
        self.flush()

    def start(self) -> None:
        self.reactor.addReader(self)

    def close(self) -> None:
        """
        Stop using the channel: what was sent and not adopted waits again,
        first, for L{take_waiting}.
        """
        if self.broken:
            return
        self.broken = True
        # Answers the worker sent before it ended still count (its end of
        # the process may be noticed before its last answers are read).
        self._read_answers(None)
        self._stop_writing()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self.reactor.removeReader(self)
        self.sock.close()
        self.in_flight.extend(self.waiting)
        self.waiting, self.in_flight = self.in_flight, deque()
        if self.lost is not None:
            self.lost(self)

    def take_waiting(self) -> deque[tuple[socket.socket, bytes]]:
        """The sockets no worker has (after L{close}: those sent but not adopted too)."""
        waiting, self.waiting = self.waiting, deque()
        return waiting

    def release(self) -> None:
        """Close the parent's copies of everything still held (at the very end)."""
        for connection, _family in (*self.waiting, *self.in_flight):
            connection.close()
        self.waiting.clear()
        self.in_flight.clear()

    def connectionLost(self, reason: Failure) -> None:
        self.close()


@implementer(IListeningPort, IReadDescriptor)
class HandedPort:
    """
    The worker's end: connections the parent hands over, adopted into the
    reactor as if accepted here.  While the worker cannot take more (journal
    full, connection limit) it stops reading; what it already received
    waits here, unread, and the rest waits in the socket pair and in the
    parent.  It tells the parent, in order, which sockets it took
    (C{A<count>}: the parent may close its copies) and which the kernel
    could not give it (C{R<count>}: send them again).
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
        #: Received, not yet adopted: (descriptor, family); (None, count): the
        #: last count of a message, which the kernel did not deliver.
        self.held: deque[tuple[int | None, int | None]] = deque()
        self._leaving = False
        self._replies: list[bytes] = []
        self._reply_call: Any = None
        self._parent = os.getppid()
        self._watch: Any = None
        #: Out of descriptors: take nothing until STARVED_PAUSE has passed.
        self._starved: Any = None
        self._registered = False

    def fileno(self) -> int:
        return self.channel.fileno() if self.listening else -1

    def logPrefix(self) -> str:
        return "weather-handed"

    @property
    def taking(self) -> bool:
        """True while connections are received and adopted."""
        return self.listening and self.reading and self._starved is None

    def _update_reader(self) -> None:
        if self.taking and not self._registered:
            self._registered = True
            self.reactor.addReader(self)
        elif not self.taking and self._registered:
            self._registered = False
            self.reactor.removeReader(self)

    def startReading(self) -> None:
        if self.listening and not self.reading:
            self.reading = True
            self._update_reader()
            self._adopt_held()

    def stopReading(self) -> None:
        if self.reading:
            self.reading = False
            self._update_reader()

    def doRead(self) -> Any:
        for _ in range(8):
            if not self.taking or self.held or not self._receive():
                break
            self._adopt_held()
        return None

    def _starve(self, why: str) -> None:
        """Out of descriptors: stop taking for a while; the parent keeps them."""
        if self._starved is not None:
            return
        self.log.error(
            "Cannot take handed connections: {why}; they wait in the parent, "
            "trying again in {delay} s",
            why=why,
            delay=STARVED_PAUSE,
        )
        self._starved = self.reactor.callLater(STARVED_PAUSE, self._fed)
        self._update_reader()

    def _fed(self) -> None:
        self._starved = None
        self._update_reader()
        self._adopt_held()

    def _receive(self) -> bool:
        """Take one message from the parent into L{held}; False if there was none."""
        reset = False
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(self.channel, MAX_FDS, MAX_FDS)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            except ConnectionResetError:
                # The parent closed its end with our answers unread: said once,
                # ahead of the messages it had already sent.  Read those.
                if not reset:
                    reset = True
                    continue
                self._parent_gone("the parent closed the channel")
                return False
            except OSError as e:
                self._parent_gone(os.strerror(e.errno) if e.errno else str(e))
                return False
            break
        if not data and not fds:
            self._parent_gone("the parent closed the channel")
            return False
        families = [FAMILIES.get(byte) for byte in data]
        for fd, family in zip(fds, families, strict=False):
            self.held.append((fd, family))
        for fd in fds[len(families) :]:
            os.close(fd)
        if len(fds) < len(families):
            # Out of descriptors (MSG_CTRUNC): the kernel installed only the
            # first ones.  The parent must send the rest again, in order.
            self.held.append((None, len(families) - len(fds)))
        return True

    def _adopt_held(self, force: bool = False) -> None:
        """
        Adopt what was received while there is room (C{force}: at the stop,
        whatever the room).  Told to the parent in order: adopted (or closed
        here for good), or to be sent again.
        """
        adopted = 0
        while self.held and (self.taking or force):
            fd, family = self.held.popleft()
            if fd is None:
                # The kernel could not give us these: out of descriptors.
                self._reply(b"A%d" % adopted)
                adopted = 0
                self._reply(b"R%d" % (family or 0))
                if not force:
                    self._starve("out of file descriptors")
                continue
            try:
                if family is None:
                    self.log.error("A handed connection came without its family: closed")
                else:
                    os.set_blocking(fd, False)
                    self.reactor.adoptStreamConnection(fd, family, self.factory)
                    self.adopted += 1
            except OSError as e:
                if e.errno in OUT_OF_RESOURCES and not force:
                    self.held.appendleft((fd, family))  # the parent keeps its copy
                    self._starve(os.strerror(e.errno))
                    break
                # The station went away between accept and here (ENOTCONN).
                if e.errno not in (errno.ENOTCONN, errno.EBADF):
                    self.log.error(
                        "A handed connection could not be taken: {why}; closed unread",
                        why=os.strerror(e.errno) if e.errno else str(e),
                    )
            except Exception:
                self.log.failure("Taking a handed connection")
            adopted += 1
            os.close(fd)
        self._reply(b"A%d" % adopted)

    def _reply(self, message: bytes) -> None:
        """
        Queue an answer for the parent.  Adoptions are told in bulk, at most
        L{REPLY_DELAY} late or every L{REPLY_EVERY} sockets (the parent only
        closes its copies then); a request to send again goes at once.
        """
        if message in (b"A0", b"R0"):
            return
        replies = self._replies
        if replies and replies[-1][:1] == message[:1]:  # one count for a run
            replies[-1] = message[:1] + b"%d" % (int(replies[-1][1:]) + int(message[1:]))
        else:
            replies.append(message)
        if message[:1] == b"R" or int(replies[-1][1:]) >= REPLY_EVERY or len(replies) > 1:
            self._send_replies()
        elif self._reply_call is None:
            self._reply_call = self.reactor.callLater(REPLY_DELAY, self._send_replies)

    def _send_replies(self) -> None:
        if self._reply_call is not None and self._reply_call.active():
            self._reply_call.cancel()
        self._reply_call = None
        while self._replies and self.listening:
            try:
                self.channel.send(self._replies[0])
            except BlockingIOError:
                self._reply_call = self.reactor.callLater(0.05, self._send_replies)
                return
            except OSError:
                return  # the parent is gone; it holds nothing any more
            self._replies.pop(0)

    def _parent_gone(self, why: str) -> None:
        if not self.listening or self._leaving:
            return
        self._leaving = True
        self.log.warn("No more connections from the parent process: {why}", why=why)
        # Nobody else holds these now: take them, whatever the room.
        while self._receive():
            pass
        self._adopt_held(force=True)
        self._close()
        if self.closed is not None:
            self.closed()

    def _check_parent(self) -> None:
        """While not reading, the channel's end is not noticed: watch the parent."""
        if os.getppid() != self._parent:
            self._parent_gone("the parent process ended")

    def startListening(self) -> None:
        self.factory.doStart()
        self.startReading()
        self._watch = LoopingCall(self._check_parent)
        self._watch.clock = self.reactor
        self._watch.start(5.0, now=False)

    def stopListening(self) -> Deferred[None]:
        """
        Take what the parent already handed over (the stations sent their
        packets: closing their sockets unread would lose them), then close.
        Past the connection limit they are refused as at any time.
        """
        if self.listening:
            self.stopReading()
            while self.listening and self._receive():
                pass
            self._adopt_held(force=True)
            self._send_replies()
        self._close()
        return succeed(None)

    def _close(self) -> None:
        if not self.listening:
            return
        if self._replies:
            # What was adopted: the parent must not send it again.  Waiting a
            # little for room is better than a duplicate hand-over.
            with contextlib.suppress(OSError):
                self.channel.settimeout(1.0)
            self._send_replies()
        self.stopReading()
        self.listening = False
        self._update_reader()
        if self._starved is not None and self._starved.active():
            self._starved.cancel()
        self._starved = None
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        if self._reply_call is not None and self._reply_call.active():
            self._reply_call.cancel()
        for fd, _family in self.held:
            if fd is not None:
                os.close(fd)
        self.held.clear()
        self.channel.close()
        self.factory.doStop()

    def getHost(self) -> Any:
        return None

    def connectionLost(self, reason: Failure) -> None:
        self._close()


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
