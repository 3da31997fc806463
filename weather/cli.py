"""
The C{weather} command: look into the journal and the quarantine, replay
quarantined packets.

    weather journal status     packets to deliver, the oldest one's age, disk use
    weather quarantine list    what is in quarantine, and why
    weather replay             decode quarantined packets again and send them

Every subcommand takes C{--data-dir} (the server's default when not given).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.python import usage
from twisted.python.failure import Failure

from weather.decode import decode_packet, is_storable
from weather.journal import (
    JournalError,
    JournalFile,
    Quarantine,
    QuarantinedPacket,
)
from weather.journalservice import server_running
from weather.lineprotocol import LineEncoder
from weather.packet import PacketRejected
from weather.pipeline import REFUSED
from weather.settings import (
    ConfigurationError,
    Settings,
    data_dir,
    settings_from_options,
)
from weather.settings import (
    Options as ServerOptions,
)
from weather.writer import PointsRejected, PointWriter

#: The server's options that say where and how to write to InfluxDB.
INFLUX_OPTIONS = (
    "influx-url",
    "database",
    "retention-policy",
    "username",
    "password-file",
    "bucket",
    "org",
    "token-file",
    "ca-file",
    "devices",
    "batch-size",
    "request-timeout",
)


class DataDirOptions(usage.Options):
    optParameters = [
        [
            "data-dir",
            "d",
            None,
            "The server's --data-dir (default: the server's default).",
        ]
    ]

    def data_dir(self) -> str:
        try:
            return data_dir(self["data-dir"], os.environ)
        except ConfigurationError as e:
            raise usage.UsageError(str(e)) from None


class JournalStatusOptions(DataDirOptions):
    synopsis = "Usage: weather journal status [--data-dir DIR]"


class JournalOptions(usage.Options):
    synopsis = "Usage: weather journal status [--data-dir DIR]"
    subCommands = [
        ["status", None, JournalStatusOptions, "Packets to deliver, their age, disk use."]
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a subcommand: status")


class QuarantineListOptions(DataDirOptions):
    synopsis = "Usage: weather quarantine list [--data-dir DIR] [--reason R] [--hex]"
    optParameters = [["reason", "r", None, "Only packets quarantined for this reason."]]
    optFlags = [["hex", None, "Show each packet's bytes as hex."]]


class QuarantineOptions(usage.Options):
    synopsis = "Usage: weather quarantine list [--data-dir DIR]"
    subCommands = [["list", None, QuarantineListOptions, "What is in quarantine, and why."]]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a subcommand: list")


class ReplayOptions(DataDirOptions):
    synopsis = "Usage: weather replay [--data-dir DIR] [--devices FILE] [InfluxDB options]"
    longdesc = (
        "Decode quarantined packets again (after describing a device in the "
        "devices file, say) and write their readings to InfluxDB with the "
        "server's InfluxDB options. Delivered packets leave the quarantine; "
        "the others stay, with the new reason."
    )
    optParameters = DataDirOptions.optParameters + [
        p for p in ServerOptions.optParameters if p[0] in INFLUX_OPTIONS
    ]
    optParameters += [
        ["reason", "r", None, "Only packets quarantined for this reason."],
        ["timeout", None, "300", "Give up on InfluxDB after this many seconds."],
    ]
    optFlags = [
        ["dry-run", "n", "Show what would be written; change nothing."],
        *ServerOptions.optFlags,
    ]

    def opt_id(self, value: str) -> None:
        """Only this packet (repeatable)."""
        try:
            self.setdefault("ids", set()).add(int(value))
        except ValueError:
            raise usage.UsageError(f"--id {value!r}: give a packet number") from None

    def settings(self) -> Settings:
        """The InfluxDB target and devices, checked as the server checks them."""
        server = ServerOptions()
        for name in INFLUX_OPTIONS + ("insecure",):
            server[name] = self[name]
        return settings_from_options(server, os.environ)


class Options(usage.Options):
    synopsis = "Usage: weather <command> [options]"
    longdesc = (
        "Look into the server's journal and quarantine, and replay quarantined "
        "packets. Every command takes --data-dir (default: the server's)."
    )
    subCommands = [
        ["journal", None, JournalOptions, "The journal: weather journal status."],
        ["quarantine", None, QuarantineOptions, "The quarantine: weather quarantine list."],
        ["replay", None, ReplayOptions, "Decode quarantined packets again and send them."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: journal, quarantine or replay")


# -- presentation -------------------------------------------------------------


def utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float) -> str:
    """A duration the way a person says it: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Progress:
    """A one-line progress bar on a terminal; a line per tenth otherwise."""

    def __init__(self, total: int, out: TextIO, width: int = 30) -> None:
        self.total = max(total, 1)
        self.out = out
        self.width = width
        self.tty = out.isatty()
        self._shown = -1

    def update(self, done: int) -> None:
        if self.tty:
            filled = self.width * done // self.total
            bar = "#" * filled + "." * (self.width - filled)
            self.out.write(f"\r[{bar}] {done}/{self.total} packets")
            if done >= self.total:
                self.out.write("\n")
        else:
            tenth = 10 * done // self.total
            if tenth == self._shown:
                return
            self._shown = tenth
            self.out.write(f"{done}/{self.total} packets\n")
        self.out.flush()


# -- the commands ----------------------------------------------------------------


def journal_status(directory: str, out: TextIO, now: float) -> int:
    file = JournalFile(directory, create=False)
    try:
        status = file.status()
    finally:
        file.close()
    server = (
        "a server is using it" if server_running(directory) else "no server is using it"
    )
    oldest = (
        f"{age(now - status.oldest_pending_ns / 1e9)} old "
        f"(arrived {utc(status.oldest_pending_ns)} UTC)"
        if status.oldest_pending_ns is not None
        else "none"
    )
    out.write(
        f"Journal:      {file.path} ({server})\n"
        f"Pending:      {status.pending} packets not yet acknowledged by InfluxDB\n"
        f"Oldest:       {oldest}\n"
        f"Quarantined:  {status.quarantined} packets (weather quarantine list)\n"
        f"Disk use:     {size(status.file_bytes)} on disk, {size(status.used_bytes)} "
        "of it live data\n"
    )
    return 0


def quarantine_list(directory: str, reason: str | None, show_hex: bool, out: TextIO) -> int:
    file = JournalFile(directory, create=False)
    try:
        kept = [
            q for q in file.quarantined() if reason is None or q.quarantine.reason == reason
        ]
    finally:
        file.close()
    if not kept:
        out.write(
            "Nothing in quarantine.\n" if reason is None else f"Nothing for {reason}.\n"
        )
        return 0
    out.write(
        f"{'id':>7}  {'arrived (UTC)':19}  {'device':>6}  {'bytes':>5}  peer / reason\n"
    )
    for item in kept:
        packet = item.entry.packet
        device = packet.device_id if packet.device_id is not None else "-"
        out.write(
            f"{item.entry.id:>7}  {utc(packet.arrival_ns)}  {device:>6}  "
            f"{len(packet.data):>5}  {packet.peer}\n"
            f"{'':>7}  {item.quarantine.reason}: {item.quarantine.detail}\n"
        )
        for line in item.quarantine.refused[:3]:
            out.write(f"{'':>9}refused: {line.decode('utf-8', 'replace')}\n")
        if len(item.quarantine.refused) > 3:
            out.write(f"{'':>9}... {len(item.quarantine.refused) - 3} more refused\n")
        if show_hex:
            out.write(f"{'':>9}{packet.data.hex()}\n")
    reasons: dict[str, int] = {}
    for item in kept:
        reasons[item.quarantine.reason] = reasons.get(item.quarantine.reason, 0) + 1
    summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    out.write(f"{len(kept)} packets in quarantine: {summary}\n")
    return 0


def lines_for(
    item: QuarantinedPacket, settings: Settings, encoder: LineEncoder
) -> list[bytes]:
    """
    Decode a quarantined packet as the server would have, with its recorded
    timing state.  @raise PacketRejected: it still cannot be decoded.
    """
    entry = item.entry
    decoded = decode_packet(
        entry.packet.data,
        entry.packet.arrival_ns,
        entry.previous_arrival_ns,
        settings.profiles,
    )
    return encoder.encode([r for r in decoded.readings if is_storable(r)])


@inlineCallbacks
def replay(
    reactor: Any,
    options: ReplayOptions,
    out: TextIO,
    err: TextIO,
    client: Any = None,
) -> Any:
    """Decode quarantined packets again and write them; 0 when all are delivered."""
    settings = options.settings()
    directory = options.data_dir()
    file = JournalFile(directory, create=False)
    try:
        kept = [
            q
            for q in file.quarantined()
            if (options["reason"] is None or q.quarantine.reason == options["reason"])
            and (not options.get("ids") or q.entry.id in options["ids"])
        ]
        encoder = LineEncoder()
        ready: list[tuple[QuarantinedPacket, list[bytes]]] = []
        still: dict[int, Quarantine] = {}
        for item in kept:
            try:
                ready.append((item, lines_for(item, settings, encoder)))
            except PacketRejected as e:
                still[item.entry.id] = Quarantine(e.reason, e.detail, time.time_ns())
        if options["dry-run"]:
            for item, lines in ready:
                out.write(f"# packet {item.entry.id}: {len(lines)} points\n")
                for line in lines:
                    out.write(line.decode("utf-8") + "\n")
            for entry_id, q in still.items():
                why = f"{q.reason}: {q.detail}"
                out.write(f"# packet {entry_id}: still not decodable: {why}\n")
            err.write(
                f"Dry run: {len(ready)} packets would be written, "
                f"{len(still)} stay in quarantine.\n"
            )
            return 0
        delivered, refused = yield _send(reactor, settings, ready, options, err, client)
        still.update(refused)
        if delivered:
            file.forget(delivered)
        if still:
            file.requarantine(still)
    finally:
        file.close()
    undelivered = len(ready) - len(delivered) - len(refused)
    err.write(
        f"Replayed {len(delivered)} packets into InfluxDB; {len(still)} stay in "
        f"quarantine; {undelivered} not sent (InfluxDB did not answer in time).\n"
    )
    for entry_id, q in sorted(still.items()):
        err.write(f"  packet {entry_id}: {q.reason}: {q.detail}\n")
    return 0 if not still and not undelivered else 1


@inlineCallbacks
def _send(reactor, settings, ready, options, err, client) -> Any:
    from weather.http import make_client, tls_policy

    pool = None
    if client is None:
        client, pool = make_client(
            reactor, tls_policy(settings.verify_tls, settings.ca_pem)
        )
    writer = PointWriter(
        settings.target,
        client,
        reactor,
        batch_size=settings.batch_size,
        flush_interval=0.05,
        request_timeout=settings.request_timeout,
        max_backoff=10,
        shutdown_timeout=1,
    )
    writer.startService()
    delivered: list[int] = []
    refused: dict[int, Quarantine] = {}
    progress = Progress(len(ready), err)
    progress.update(0)

    def written(_: None, entry_id: int) -> None:
        delivered.append(entry_id)
        progress.update(len(delivered) + len(refused))

    def refused_for_good(failure: Failure, entry_id: int) -> None:
        failure.trap(PointsRejected)
        e: PointsRejected = failure.value
        refused[entry_id] = Quarantine(
            REFUSED, f"HTTP {e.status}: {e.message}", time.time_ns(), tuple(e.lines)
        )
        progress.update(len(delivered) + len(refused))

    writes = []
    for item, lines in ready:
        d = writer.write(lines)
        d.addCallbacks(
            written,
            refused_for_good,
            callbackArgs=(item.entry.id,),
            errbackArgs=(item.entry.id,),
        )
        writes.append(d)
    writer.flush()
    everything: Deferred = DeferredList(writes, consumeErrors=True)
    everything.addTimeout(float(options["timeout"]), reactor, lambda *_: None)
    try:
        yield everything
    except Exception:
        pass
    yield writer.stopService()
    if pool is not None:
        yield pool.closeCachedConnections()
    return delivered, refused


def main(
    argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """The console script."""
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        lost = str(e).startswith(("give a command", "give a subcommand"))
        err.write(f"weather: {e}\n{options}\n" if lost else f"weather: {e}\n")
        return 2
    command = options.subCommand
    sub = options.subOptions
    try:
        if command == "journal":
            return journal_status(sub.subOptions.data_dir(), out, time.time())
        if command == "quarantine":
            q = sub.subOptions
            return quarantine_list(q.data_dir(), q["reason"], q["hex"], out)
        sub.settings()  # the InfluxDB options and devices file, checked before starting
        JournalFile(sub.data_dir(), create=False).close()
        return _react(lambda reactor: replay(reactor, sub, out, err))
    except (JournalError, ConfigurationError, usage.UsageError) as e:
        err.write(f"weather: {e}\n")
        return 1


def _react(run: Callable[[Any], Deferred]) -> int:
    from twisted.internet import reactor

    result: list[int] = []
    failure: list[Any] = []

    def go() -> None:
        d = run(reactor)
        d.addCallbacks(result.append, failure.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if failure:
        failure[0].raiseException()
    return result[0]


if __name__ == "__main__":
    sys.exit(main())
