"""
What C{makeService} checks before twistd daemonizes, so that a start-up
failure is one line on the terminal that says what to change.

Past that point a failure is no longer one line: daemonized, twistd prints
"An error has occurred" with the exception's first 100 bytes and leaves a
traceback in the log; with C{--nodaemon}, the traceback is the output.  So
what can be known first is checked here: whether the ports can be bound,
whether the user the server runs as can write in the data directory, and
whether C{--journal-min-free} fits its file system.  The ports are bound
and let go at once, never listened on: no station's connection is taken
by a check.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from twisted.internet import abstract
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
)

from weather.app.options import ConfigurationError

__all__ = [
    "Listener",
    "bind_probe",
    "check_data_dir_writable",
    "check_listeners",
    "check_min_free",
    "nearest_existing",
]

#: Addresses that listen on every interface (an IPv6 wildcard takes IPv4 too).
WILDCARDS = frozenset({"", "0.0.0.0", "::"})


#: Twisted's server endpoints that bind a TCP port.
TCP_ENDPOINTS = (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)


class Listener(NamedTuple):
    """A listening option as typed, and the endpoint made of it."""

    option: str
    description: str
    endpoint: Any


def tcp_address(endpoint: Any) -> tuple[str, int] | None:
    """
    The interface and port a Twisted TCP or TLS server endpoint binds, or
    None for other endpoints (UNIX sockets, systemd's: nothing to bind
    here).  Twisted keeps them in private attributes; where a future
    version does not, nothing is checked before the real listen.
    """
    if not isinstance(endpoint, TCP_ENDPOINTS):
        return None
    interface = getattr(endpoint, "_interface", None)
    port = getattr(endpoint, "_port", None)
    if not isinstance(interface, str) or not isinstance(port, int):
        return None
    return interface, port


def bind_probe(interface: str, port: int) -> None:
    """
    Bind a TCP socket as Twisted's port would (the family from the
    interface, C{SO_REUSEADDR}), and close it.  No listen(): nothing could
    connect to it.

    @raise OSError: it cannot be bound.
    @raise OverflowError: C{port} is out of range.
    """
    family = socket.AF_INET6 if abstract.isIPv6Address(interface) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((interface, port))


def _why_not(interface: str, port: int, error: Exception) -> str:
    """What to change, for an error binding C{interface}:C{port}."""
    if isinstance(error, OverflowError):
        return "the port must be 0-65535"
    if isinstance(error, socket.gaierror):
        return f"{interface!r} is not an IP address: give one in interface="
    code = getattr(error, "errno", None)
    if code == errno.EADDRINUSE:
        return (
            f"port {port} is in use: stop what listens there (ss -ltnp 'sport = "
            f":{port}') or give another port"
        )
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"no permission to listen on port {port}: ports below 1024 need root "
            "(twistd --uid then drops to a user) or CAP_NET_BIND_SERVICE; or give "
            "a port above 1023"
        )
    if code == errno.EADDRNOTAVAIL:
        return (
            f"{interface} is not an address of this machine: give one of its "
            "addresses, or no interface= to listen on all"
        )
    return f"cannot listen there ({getattr(error, 'strerror', None) or error})"


def _overlap(one: tuple[str, int], other: tuple[str, int]) -> bool:
    """Whether two listeners would take the same port (0: any free port, never)."""
    (host, port), (other_host, other_port) = one, other
    if port == 0 or port != other_port:
        return False
    return host == other_host or host in WILDCARDS or other_host in WILDCARDS


def check_listeners(
    listeners: Sequence[Listener],
    probe: Callable[[str, int], None] | None = None,
) -> None:
    """
    Every TCP listener can bind its port (tried with C{probe}, by default
    L{bind_probe}), and no two want the same one.

    @raise ConfigurationError: the first that cannot, saying what to change.
    """
    probe = probe or bind_probe
    bound: list[tuple[Listener, tuple[str, int]]] = []
    for listener in listeners:
        address = tcp_address(listener.endpoint)
        if address is None:
            continue
        where = f"{listener.option} {listener.description}"
        for earlier, earlier_address in bound:
            if _overlap(address, earlier_address):
                raise ConfigurationError(
                    f"{where}: the same port as {earlier.option} "
                    f"{earlier.description}: give another"
                )
        try:
            probe(*address)
        except (OSError, OverflowError) as e:
            raise ConfigurationError(f"{where}: {_why_not(*address, e)}") from None
        bound.append((listener, address))


def nearest_existing(directory: str) -> str:
    """C{directory}, or the nearest of its parents that exists."""
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def user_name(uid: int) -> str:
    """A user's name, else its number."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@contextlib.contextmanager
def acting_as(user: tuple[int, int] | None) -> Iterator[bool]:
    """
    Within, the effective user, group and groups are C{user}'s (uid, gid;
    -1: unchanged): the user twistd will switch to (C{--uid}, C{--gid}), as
    root.  Yields whether to check: False if the switch could not be made
    (a container without the right to), and nothing is changed.
    """
    if user is None or user[0] in (-1, 0) or os.geteuid() != 0:
        yield True
        return
    uid, gid = user
    saved = os.getegid(), os.getgroups()
    gid = saved[0] if gid == -1 else gid
    try:
        try:
            groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
        except KeyError:
            groups = [gid]
        os.setgroups(groups)
        os.setegid(gid)
        os.seteuid(uid)
    except OSError:
        _restore(saved)
        yield False
        return
    try:
        yield True
    finally:
        _restore(saved)


def _restore(saved: tuple[int, list[int]]) -> None:
    os.seteuid(0)
    os.setegid(saved[0])
    os.setgroups(saved[1])


#: Errors creating a file that say the disk is full, not that it is unusable:
#: the journal starts all the same, taking packets once there is room.
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def check_data_dir_writable(directory: str, user: tuple[int, int] | None = None) -> None:
    """
    The user the server will run as (C{user}: twistd's C{--uid}, C{--gid};
    None: this process's) can create files in C{directory}, or, if it does
    not exist yet, in the parent it will be made in.  A file is made and
    removed at once: nothing is left behind.

    @raise ConfigurationError: it cannot.
    """
    existing = nearest_existing(directory)
    if not os.path.isdir(existing):
        return  # said by tap.check_data_dir
    uid = os.geteuid() if user is None or user[0] == -1 else user[0]
    who = user_name(uid)
    with acting_as(user) as switched:
        if not switched:
            return
        try:
            fd, probe = tempfile.mkstemp(prefix=".weather-probe-", dir=existing)
        except OSError as e:
            if e.errno in FULL:
                return
            raise ConfigurationError(
                f"--data-dir {directory}: cannot create files in {existing} as user "
                f"{who} ({e.strerror}): give a directory on a writable file system "
                f"that {who} can write to"
            ) from None
        os.close(fd)
        os.remove(probe)


UNITS = (("T", 40), ("G", 30), ("M", 20), ("K", 10))


def size_text(size: int) -> str:
    """C{size} bytes exactly, as the size options take it: 32M, 5G, 1000."""
    for suffix, shift in UNITS:
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{suffix}"
    return str(size)


def size_floor(size: int) -> str:
    """At most C{size} bytes, in round figures the size options take: 50G, 1536K."""
    for suffix, shift in UNITS:
        if size >= 10 << shift:
            return f"{size >> shift}{suffix}"
    return str(size)


def check_min_free(directory: str, min_free_bytes: int) -> None:
    """
    C{--journal-min-free} can be met on the data directory's file system.
    Past it the journal refuses stations until twice as much is free again:
    more than half the file system and the server would refuse every
    station for good.

    @raise ConfigurationError: it cannot.
    """
    try:
        stats = os.statvfs(nearest_existing(directory))
    except OSError:
        return
    # What a user other than root can ever have: all but root's reserve.
    capacity = (stats.f_blocks - (stats.f_bfree - stats.f_bavail)) * stats.f_frsize
    if 2 * min_free_bytes > capacity:
        raise ConfigurationError(
            f"--journal-min-free {size_text(min_free_bytes)}: more than half of the "
            f"file system of --data-dir {directory} ({size_floor(capacity)} in all), "
            f"so stations would be refused for good: give at most "
            f"{size_floor(capacity // 2)}, or a --data-dir on a larger disk"
        )
