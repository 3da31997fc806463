"""
The C{weather} command: look into the journal and the quarantine, replay
quarantined packets.

    weather journal status     packets to deliver, the oldest one's age, disk use
    weather journal check      whether the journal is damaged, what can be read of it
    weather journal salvage    copy what can be read of a damaged journal into a new one
    weather journal backup     a consistent copy of the journal, while the server runs
    weather quarantine list    what is in quarantine, and why
    weather replay             decode quarantined packets again and send them
    weather decode PACKET      show a packet's header and readings (hex, file, log line)
    weather config             a config file of every option, commented out (--config)
    weather simulate           stations sending to a server, as the firmware does

The journal commands take C{--data-dir} (the server's default when not given).
"""

from __future__ import annotations

import getopt
import os
import random
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import react
from twisted.python import usage
from twisted.python.failure import Failure

from weather.app.configfile import example
from weather.app.options import (
    ConfigurationError,
    DataDirOptions,
    DevicesOptions,
    InfluxOptions,
    Option,
    WeatherOptions,
    declared,
    number,
    parameters,
)
from weather.app.options import Options as ServerOptions
from weather.app.settings import Settings, load_devices, settings_from_options
from weather.core.decode import truncated_detail
from weather.core.devices import REFERENCE_DEVICES, DevicesError
from weather.core.dump import NotAPacket, counted, describe_packet, packet_from_text
from weather.core.lineprotocol import (
    LineEncoder,
    PacketPoints,
    packet_points,
    truncated_points,
)
from weather.core.packet import HEADER_SIZE, PacketRejected, Reason
from weather.core.timing import PLAUSIBLE_RATIO, TimingInputs
from weather.journal.backup import backup_journal
from weather.journal.salvage import Reading, check, salvage
from weather.journal.service import server_running
from weather.journal.store import (
    FILENAME,
    JournalError,
    JournalFile,
    Quarantine,
    QuarantinedPacket,
    journal_error,
)
from weather.server.pipeline import refusal
from weather.server.writer import PointsRejected, PointWriter
from weather.tools.simulate import Simulation, StationModel, devices_toml, tcp_connector


class CommandOptions(WeatherOptions):
    """
    A command with subcommands.  Once one is chosen, the synopsis is only the
    way to it: the subcommand's synopsis follows (usage.Options joins them).
    """

    def getSynopsis(self) -> str:
        if getattr(self, "subCommand", None) is None:
            return super().getSynopsis()
        if self.parent is None:
            return "Usage: weather"
        return f"{self.parent.getSynopsis()} {self.parent.subCommand}"


class JournalStatusOptions(DataDirOptions):
    synopsis = "[--data-dir DIR]"


class JournalCheckOptions(DataDirOptions):
    synopsis = "[--data-dir DIR]"
    longdesc = (
        "Read the whole journal (a copy of it) with the server stopped: SQLite's "
        "integrity check, then every packet and station state that can be read. "
        "Exits 1 if it is damaged."
    )


class JournalSalvageOptions(DataDirOptions):
    synopsis = "[--data-dir DIR]"
    longdesc = (
        "With the server stopped, copy every packet (to deliver and in quarantine, "
        "with what it is timed with) and every station's timing state that can be "
        "read from a damaged journal into a new journal, and keep the damaged files "
        "in a directory journal-damaged-TIME beside it. A journal that is not "
        "damaged is left as it is."
    )


class JournalBackupOptions(DataDirOptions):
    synopsis = "[--data-dir DIR] [--force] [DESTINATION]"
    longdesc = (
        "Copy the journal with SQLite's online backup, while the server runs: "
        "one consistent snapshot, in one file, private (mode 0600). DESTINATION "
        "is a file, or a directory to hold journal-<UTC time>.sqlite3 (default: "
        "the current directory)."
    )
    optFlags = [["force", "f", "Replace DESTINATION if it exists."]]

    def parseArgs(self, destination: str = ".") -> None:
        self["destination"] = destination


class JournalOptions(CommandOptions):
    synopsis = "status|check|salvage [--data-dir DIR]"
    subCommands = [
        ["status", None, JournalStatusOptions, "Packets to deliver, their age, disk use."],
        ["check", None, JournalCheckOptions, "Whether the journal is damaged."],
        [
            "salvage",
            None,
            JournalSalvageOptions,
            "Copy what can be read of a damaged journal into a new one.",
        ],
        ["backup", None, JournalBackupOptions, "A consistent copy, while the server runs."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a subcommand: status, check, salvage or backup")


class QuarantineListOptions(DataDirOptions):
    synopsis = "[--data-dir DIR] [--reason R] [--hex]"
    optParameters = [["reason", "r", None, "Only packets quarantined for this reason."]]
    optFlags = [["hex", None, "Show each packet's bytes as hex."]]


class QuarantineOptions(CommandOptions):
    synopsis = "list [--data-dir DIR] [--reason R] [--hex]"
    subCommands = [["list", None, QuarantineListOptions, "What is in quarantine, and why."]]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a subcommand: list")


#: weather replay's own --timeout, declared as the server's options are.
TIMEOUT = Option(
    "timeout",
    "Give up on InfluxDB after this many seconds.",
    "300",
    number(float, 0.1, 86400),
)

# weather replay's writer, not the server's options: the server runs for
# months, a replay is a one-shot command that waits for InfluxDB at most --timeout.

#: Everything is queued before the replay flushes: no batch waits to fill.
REPLAY_FLUSH_INTERVAL = 0.05
#: Retry soon: the server's longest wait between retries would use up --timeout.
REPLAY_MAX_BACKOFF = 10
#: What is not delivered on stop stays in quarantine: stopping need not wait.
REPLAY_SHUTDOWN_TIMEOUT = 1


class ReplayOptions(DataDirOptions, DevicesOptions, InfluxOptions):
    """The server's --data-dir, --devices and InfluxDB options, and the replay's own."""

    synopsis = "[--data-dir DIR] [--devices FILE] [InfluxDB options]"
    longdesc = (
        "Decode quarantined packets again (after describing a device in the "
        "devices file, say) and write their readings to InfluxDB with the "
        "server's InfluxDB options. Delivered packets leave the quarantine; "
        "the others stay, with the new reason."
    )
    optParameters = [
        ["reason", "r", None, "Only packets quarantined for this reason."],
        *parameters((TIMEOUT,)),
    ]
    optFlags = [["dry-run", "n", "Show what would be written; change nothing."]]

    def postOptions(self) -> None:
        try:
            self["timeout"] = TIMEOUT.value(self["timeout"])
        except ConfigurationError as e:
            raise usage.UsageError(str(e)) from None

    def opt_id(self, value: str) -> None:
        """Only this packet (repeatable)."""
        try:
            self.setdefault("ids", set()).add(int(value))
        except ValueError:
            raise usage.UsageError(f"--id {value!r}: give a packet number") from None

    def settings(self) -> Settings:
        """
        The settings the server would have with these options (the options the
        replay does not take have the server's defaults), checked as it checks them.
        """
        server = ServerOptions()
        server.update(self)
        server.typed = self.typed  # what a --config file does not replace
        return settings_from_options(server, os.environ)


def parse_time(value: str, name: str) -> int:
    """
    A time given on the command line, in nanoseconds: seconds since the epoch,
    or ISO 8601 (UTC unless it carries an offset).  L{datetime.fromisoformat}
    reads the second; the first is read here, as C{float} would lose the
    nanoseconds.
    """
    wrong = usage.UsageError(
        f"--{name} {value!r}: give seconds since 1970 or a time such as "
        "2026-11-21T12:00:00Z, between 1970 and 2262"
    )
    if re.fullmatch(r"[0-9]+(\.[0-9]{0,9})?", value):
        whole, _, fraction = value.partition(".")
        ns = int(whole) * 1_000_000_000 + int(fraction.ljust(9, "0"))
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise wrong from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        seconds = (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()
        ns = int(seconds) * 1_000_000_000 + moment.microsecond * 1000
    if not 0 <= ns < 2**63:
        raise wrong
    return ns


#: weather decode's --ratio: the learned clock ratio a packet is timed with.
RATIO = Option(
    "ratio",
    "The station's learned clock ratio (real / nominal record interval; "
    "default: none learned yet).",
    None,
    number(float, *PLAUSIBLE_RATIO),
)


class DecodeOptions(DevicesOptions):
    synopsis = "[options] [PACKET ...]"
    longdesc = (
        "Show a packet's header and its readings with the timestamps the server "
        "would give them. PACKET is hex (b4001000...), decimal bytes (180 0 16 "
        "...), or a whole line pasted from the original server's log (Received "
        "raw data = 180 0 16 ...); without PACKET or --file, the text is read "
        "from standard input."
    )
    optParameters = [
        ["file", "f", None, "Read the packet's raw bytes from this file (- for stdin)."],
        ["arrival", "a", None, "When its last byte arrived (default: now)."],
        [
            "previous",
            "p",
            None,
            "When the device's previous packet arrived (gives a measured interval).",
        ],
        [
            "previous-packet",
            None,
            None,
            "The previous packet (text as PACKET, or a file of its bytes): records "
            "it repeats are recognised. Needs --previous.",
        ],
        *parameters((RATIO,)),
        ["base", None, "auto", "Read PACKET as hex, decimal or auto."],
    ]
    optFlags = [["lines", "l", "Also print the line protocol the server would write."]]

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Options may also follow the packet (a pasted log line is long)."""
        if options is None:
            options = sys.argv[1:]
        try:
            found, rest = getopt.gnu_getopt(list(options), self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        takes = {f"--{o[:-1]}" for o in self.longOpt if o.endswith("=")}
        takes |= {
            f"-{c}"
            for c, n in zip(self.shortOpt, self.shortOpt[1:] + " ", strict=True)
            if n == ":"
        }
        ordered = [
            part
            for option, value in found
            for part in ((option, value) if option in takes else (option,))
        ]
        super().parseOptions([*ordered, "--", *rest])

    def parseArgs(self, *packet: str) -> None:
        self["packet"] = " ".join(packet)

    def postOptions(self) -> None:
        if self["base"] not in ("auto", "hex", "decimal"):
            raise usage.UsageError("--base: give hex, decimal or auto")
        if self["packet"] and self["file"]:
            raise usage.UsageError("give PACKET or --file, not both")
        for name in ("arrival", "previous"):
            if self[name] is not None:
                self[name] = parse_time(self[name], name)
        if self["previous-packet"] is not None and self["previous"] is None:
            raise usage.UsageError("--previous-packet: give --previous too (its arrival)")
        try:
            self["ratio"] = RATIO.value(self["ratio"])
        except ConfigurationError as e:
            raise usage.UsageError(str(e)) from None


class SimulateOptions(WeatherOptions):
    synopsis = "[--host H] [--port P] [--stations N] [--packets K]"
    longdesc = (
        "Simulated reference stations sending to a server as the firmware does: "
        "connect, write one packet, close (never reading unless --wait-ack). "
        "Each station wakes --packets times, the first at once with the "
        "--wake-every seconds before it, then every --wake-every seconds by its "
        "own drifting clock. Prints each upload and each reading with its true "
        "time (UTC), to compare with what the server stored. Stations are "
        "devices --first-id, --first-id + 1, ...: give the server a devices "
        "file that describes them (--devices-toml prints one)."
    )
    optParameters = [
        ["host", "H", "127.0.0.1", "The server's address or name."],
        # The server's default port; the stations' and the simulation's
        # defaults are those of the simulator's own classes.
        [
            "port",
            "P",
            int(declared("port").default),
            "The server's port.",
            usage.portCoerce,
        ],
        ["stations", "n", 1, "How many stations.", int],
        ["packets", "k", 1, "Uploads per station.", int],
        ["first-id", None, 1, "The first station's device id.", int],
        [
            "wake-every",
            "w",
            StationModel.wake_every,
            "Seconds between uploads (wakeEvery).",
            int,
        ],
        [
            "measure-every",
            "m",
            StationModel.measure_every,
            "Seconds between records (measurementEvery).",
            int,
        ],
        ["drift", None, 2.0, "Each clock runs up to this many percent off.", float],
        [
            "clock-ratio",
            None,
            None,
            "Every clock's ratio, real / nominal interval (1.07: 7 % slow), "
            "instead of a random --drift.",
            float,
        ],
        [
            "miss",
            None,
            Simulation.miss,
            "Probability that a station misses an upload.",
            float,
        ],
        [
            "lose-clear",
            None,
            Simulation.lose_clear,
            "Probability that an upload's clear command is lost (the next repeats it).",
            float,
        ],
        [
            "sensor-failures",
            None,
            StationModel.sensor_failures,
            "Probability that a record is a failed sensor read or cut short.",
            float,
        ],
        [
            "segments",
            None,
            Simulation.segments,
            "Write each packet in this many TCP segments.",
            int,
        ],
        [
            "segment-delay",
            None,
            Simulation.segment_delay,
            "Seconds between segments.",
            float,
        ],
        ["ack-timeout", None, 5.0, "With --wait-ack: seconds to wait.", float],
        [
            "spread",
            None,
            Simulation.spread,
            "Spread the first uploads over this many seconds.",
            float,
        ],
        ["seed", None, Simulation.seed, "Seed for drift, weather and failures.", int],
    ]
    optFlags = [
        ["wait-ack", None, "Wait for the server's acknowledgement before closing."],
        ["quiet", "q", "Print uploads only, not every reading."],
        ["devices-toml", None, "Print a devices file for these stations and exit."],
    ]

    def postOptions(self) -> None:
        if not 1 <= self["first-id"] <= 255:
            raise usage.UsageError("--first-id: device ids are 1 to 255")
        if self["stations"] < 1 or self["first-id"] + self["stations"] - 1 > 255:
            raise usage.UsageError(
                f"--stations: 1 to {256 - self['first-id']} (device ids end at 255)"
            )
        if self["packets"] < 1:
            raise usage.UsageError("--packets: at least 1")
        for name in ("miss", "lose-clear", "sensor-failures"):
            if not 0 <= self[name] < 1:
                raise usage.UsageError(f"--{name}: a probability, 0 to below 1")
        if not 0 <= self["drift"] < 50:
            raise usage.UsageError("--drift: a percentage, 0 to below 50")
        ratio = self["clock-ratio"]
        if ratio is not None and not 0.5 < ratio < 1.5:
            raise usage.UsageError("--clock-ratio: above 0.5 and below 1.5")
        if self["segments"] < 1:
            raise usage.UsageError("--segments: at least 1")
        if not 0 < self["wake-every"] <= 0xFFFF or not 0 < self["measure-every"] <= 0xFFFF:
            raise usage.UsageError("--wake-every and --measure-every: 1 to 65535 s")
        try:
            self.stations()
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def device_ids(self) -> list[int]:
        return list(range(self["first-id"], self["first-id"] + self["stations"]))

    def stations(self) -> list[StationModel]:
        chance = random.Random(self["seed"])
        drift = self["drift"] / 100
        ratio = self["clock-ratio"]
        return [
            StationModel(
                device,
                wake_every=self["wake-every"],
                measure_every=self["measure-every"],
                drift=chance.uniform(-drift, drift) if ratio is None else ratio - 1,
                seed=self["seed"],
                sensor_failures=self["sensor-failures"],
            )
            for device in self.device_ids()
        ]


class ConfigOptions(WeatherOptions):
    synopsis = ""
    longdesc = "Print a config file of every option, by topic, commented out."


class Options(CommandOptions):
    synopsis = "Usage: weather <command> [options]"
    longdesc = (
        "Look into the server's journal and quarantine, replay quarantined "
        "packets, decode a packet by hand, or simulate stations. The journal "
        "and quarantine are the server's, or those in --data-dir."
    )
    subCommands = [
        ["journal", None, JournalOptions, "The journal: status, check, salvage, backup."],
        ["quarantine", None, QuarantineOptions, "The quarantine: weather quarantine list."],
        ["replay", None, ReplayOptions, "Decode quarantined packets again and send them."],
        ["config", None, ConfigOptions, "A config file of every option (--config)."],
        ["decode", None, DecodeOptions, "Show a packet's header and readings."],
        ["simulate", None, SimulateOptions, "Stations sending to a server."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError(
                "give a command: journal, quarantine, replay, decode or simulate"
            )


# -- presentation -------------------------------------------------------------


def utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float) -> str:
    """
    A duration the way a person says it: 45 s, 12 min, 3 h 5 min, 2 d 4 h
    (a C{timedelta} prints C{2 days, 4:05:00}).
    """
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
    """A size in bytes, KiB, MiB or GiB: the standard library has no such format."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Progress:
    """
    A one-line progress bar on a terminal; a line per tenth otherwise.
    Neither Twisted nor the standard library has one.
    """

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
    except sqlite3.Error as e:
        raise journal_error(directory, e) from None
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


def journal_check(directory: str, out: TextIO) -> int:
    """C{weather journal check}: 0 if the journal is whole, 1 if it is damaged."""
    reading = check(directory)
    path = os.path.join(directory, FILENAME)
    out.write(f"Journal:      {path}\n")
    if reading.damaged:
        out.write(f"State:        damaged: {damage(reading)}\n")
    else:
        out.write("State:        whole (SQLite's integrity check finds nothing)\n")
    describe_reading(reading, "Readable", out)
    if reading.damaged:
        out.write(
            f"Next:         weather journal salvage --data-dir {directory} copies "
            "what is readable into a new journal and keeps the damaged files\n"
        )
    return 1 if reading.damaged else 0


def journal_salvage(directory: str, out: TextIO, now: float) -> int:
    """C{weather journal salvage}: 0 once the journal can be used."""
    done = salvage(directory, now)
    path = os.path.join(directory, FILENAME)
    if done.kept is None:
        out.write(f"The journal {path} is not damaged: nothing to salvage.\n")
        return 0
    out.write(f"Kept:         the damaged journal's files in {done.kept}\n")
    if done.reading is None:
        out.write(f"Salvaged:     into {path} by an earlier run\n")
    else:
        for note in done.reading.notes:
            out.write(f"Note:         {note}\n")
        describe_reading(done.reading, "Salvaged", out)
    out.write("The server can start again: it sends the salvaged packets to InfluxDB.\n")
    return 0


def damage(reading: Reading) -> str:
    """The damage, in a line."""
    if reading.found:
        return reading.found
    if reading.problems:
        more = len(reading.problems) - 1
        return reading.problems[0] + (f" (and {more} more)" if more else "")
    return "; ".join(reading.notes) or "some packets cannot be read"


def describe_reading(reading: Reading, heading: str, out: TextIO) -> None:
    """What was read of a journal, and at most how much was lost."""
    out.write(
        f"{heading + ':':<14}{counted(reading.packets, 'packet')} "
        f"({reading.pending} to deliver, {reading.quarantined} in quarantine) and "
        f"the timing state of {counted(reading.stations, 'station')}\n"
    )
    if reading.found and not reading.packets:
        out.write("Lost:         whatever it held: nothing of it can be read\n")
        return
    lost, more = reading.lost()
    if reading.gap is not None:
        low, high = reading.gap
        ids = f"packet ids above {low}" if high is None else f"ids {low + 1} to {high - 1}"
        if low == 0 and high is None:
            ids = "any packet"
        out.write(
            f"Unreadable:   SQLite could not read {ids}; "
            f"{reading.from_pages} were read from the pages themselves\n"
        )
    if reading.garbled:
        shown = ", ".join(map(str, reading.garbled[:10]))
        etc = ", ..." if len(reading.garbled) > 10 else ""
        out.write(f"Garbled:      packets {shown}{etc} hold what no journal writes\n")
    if more:
        top = reading.gap_top if reading.gap_top is not None else reading.gap[0]
        before = f"at most {counted(lost, 'packet')} up to id {top}, and " if lost else ""
        out.write(
            f"Lost:         {before}any journaled after id {top} (the end of the "
            "journal is damaged)\n"
        )
    elif lost:
        out.write(f"Lost:         at most {counted(lost, 'packet')}\n")


def journal_backup(options: JournalBackupOptions, out: TextIO, now: float) -> int:
    copy = backup_journal(
        options.data_dir(), options["destination"], now, replace=options["force"]
    )
    out.write(
        f"Journal backed up to {copy.path} ({size(copy.size)}): "
        f"{counted(copy.pending, 'packet')} to deliver, {copy.quarantined} in quarantine.\n"
    )
    return 0


def quarantine_list(directory: str, reason: str | None, show_hex: bool, out: TextIO) -> int:
    file = JournalFile(directory, create=False)
    try:
        kept = [
            q for q in file.quarantined() if reason is None or q.quarantine.reason == reason
        ]
    except sqlite3.Error as e:
        raise journal_error(directory, e) from None
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


def points_for(
    item: QuarantinedPacket, settings: Settings, encoder: LineEncoder
) -> PacketPoints:
    """
    A quarantined packet's points, made as the server's pipeline makes them,
    with its recorded timing state; a truncated packet's are those of its
    complete records, the same points the server wrote for them, if any.

    @raise PacketRejected: it still cannot be decoded (a truncated packet
        whose records cannot be stored: as truncated).
    """
    packet = item.entry.packet
    given = (packet.data, packet.arrival_ns, item.entry.timing, settings.profiles, encoder)
    try:
        return packet_points(*given)
    except PacketRejected as e:
        if e.reason != Reason.TRUNCATED:
            raise
        whole = e
    try:
        return truncated_points(*given)
    except PacketRejected:
        raise whole from None


@inlineCallbacks
def replay(
    reactor: Any,
    options: ReplayOptions,
    out: TextIO,
    err: TextIO,
    client: Any = None,
) -> Any:
    """
    Decode quarantined packets again and write them; 0 when all are delivered.

    A truncated packet's complete records are written again each time (the
    same points: InfluxDB overwrites them) and it stays in quarantine.
    """
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
        ready: list[tuple[QuarantinedPacket, PacketPoints]] = []
        still: dict[int, Quarantine] = {}
        #: Truncated packets' ids, with their detail once their records are stored.
        partial: dict[int, str] = {}
        for item in kept:
            try:
                points = points_for(item, settings, encoder)
            except PacketRejected as e:
                still[item.entry.id] = Quarantine(e.reason, e.detail, time.time_ns())
                continue
            ready.append((item, points))
            data = item.entry.packet.data
            if len(data) < points.decoded.header.packet_size:
                partial[item.entry.id] = truncated_detail(data, points.decoded)
        if options["dry-run"]:
            for item, points in ready:
                count = f"{len(points.lines)} points"
                if item.entry.id in partial:
                    count += (
                        " (a truncated packet's complete records; it stays in quarantine)"
                    )
                if points.not_finite:
                    count += f" ({points.not_finite} NaN or infinite values left out)"
                out.write(f"# packet {item.entry.id}: {count}\n")
                for line in points.lines:
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
        stored = [i for i in delivered if i in partial]
        delivered = [i for i in delivered if i not in partial]
        for entry_id in stored:
            still[entry_id] = Quarantine(
                Reason.TRUNCATED, partial[entry_id], time.time_ns()
            )
        still.update(refused)
        if delivered:
            file.forget(delivered)
        if still:
            file.requarantine(still)
    except sqlite3.Error as e:
        err.write(f"weather: {journal_error(directory, e)}\n")
        return 1
    finally:
        file.close()
    undelivered = len(ready) - len(delivered) - len(stored) - len(refused)
    err.write(
        f"Replayed {len(delivered)} packets into InfluxDB; {len(still)} stay in "
        f"quarantine; {undelivered} not sent (InfluxDB did not answer in time).\n"
    )
    for entry_id, q in sorted(still.items()):
        err.write(f"  packet {entry_id}: {q.reason}: {q.detail}\n")
    return 0 if not still and not undelivered else 1


@inlineCallbacks
def _send(reactor, settings, ready, options, err, client) -> Any:
    from weather.server.http import make_client, tls_policy

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
        flush_interval=REPLAY_FLUSH_INTERVAL,
        request_timeout=settings.request_timeout,
        max_backoff=REPLAY_MAX_BACKOFF,
        shutdown_timeout=REPLAY_SHUTDOWN_TIMEOUT,
        max_pending=settings.max_pending,
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
        reason, detail, lines = refusal(failure.value)
        refused[entry_id] = Quarantine(reason, detail, time.time_ns(), lines)
        progress.update(len(delivered) + len(refused))

    writes = []
    for item, points in ready:
        d = writer.write(points.lines)
        d.addCallbacks(
            written,
            refused_for_good,
            callbackArgs=(item.entry.id,),
            errbackArgs=(item.entry.id,),
        )
        writes.append(d)
    writer.flush()
    everything: Deferred = DeferredList(writes, consumeErrors=True)
    everything.addTimeout(options["timeout"], reactor, lambda *_: None)
    try:
        yield everything
    except Exception:
        pass
    yield writer.stopService()
    if pool is not None:
        yield pool.closeCachedConnections()
    return delivered, refused


def decode(options: DecodeOptions, out: TextIO, stdin: TextIO, now_ns: int) -> int:
    """C{weather decode}: 0 if the packet decodes, 1 if the server would reject it."""
    profiles = load_devices(options["devices"]) if options["devices"] else REFERENCE_DEVICES
    try:
        if options["file"] == "-":
            data = stdin.buffer.read()
        elif options["file"]:
            with open(options["file"], "rb") as f:
                data = f.read()
        else:
            data = packet_from_text(options["packet"] or stdin.read(), options["base"])
    except OSError as e:
        raise usage.UsageError(f"--file: {e.strerror}: {e.filename}") from None
    except NotAPacket as e:
        raise usage.UsageError(f"not a packet: {e}") from None
    arrival = options["arrival"] if options["arrival"] is not None else now_ns
    return describe_packet(
        data, arrival, timing_inputs(options, arrival), profiles, out, options["lines"]
    )


def timing_inputs(options: DecodeOptions, arrival_ns: int) -> TimingInputs:
    """What C{weather decode} times a packet with: the previous packet, the ratio."""
    previous = options["previous"]
    ratio = options["ratio"]
    learned = {"ratio": ratio, "learned": True} if ratio is not None else {}
    if previous is None:
        return TimingInputs(**learned)
    records = b""
    if options["previous-packet"] is not None:
        records = read_packet(options["previous-packet"], options["base"])[HEADER_SIZE:]
    return TimingInputs(
        previous, arrival_ns - previous, previous_records=records, **learned
    )


def read_packet(given: str, base: str) -> bytes:
    """A packet given as a file of its bytes, if there is one so named, else as text."""
    if os.path.isfile(given):
        with open(given, "rb") as f:
            return f.read()
    try:
        return packet_from_text(given, base)
    except NotAPacket as e:
        raise usage.UsageError(f"--previous-packet: not a packet: {e}") from None


@inlineCallbacks
def simulate(reactor: Any, options: SimulateOptions, out: TextIO) -> Any:
    """C{weather simulate}: 0 once every record of every station was sent."""
    stations = options.stations()
    simulation = Simulation(
        reactor,
        tcp_connector(reactor, options["host"], options["port"]),
        stations,
        options["packets"],
        out,
        miss=options["miss"],
        lose_clear=options["lose-clear"],
        segments=options["segments"],
        segment_delay=options["segment-delay"],
        ack_timeout=options["ack-timeout"] if options["wait-ack"] else None,
        spread=options["spread"],
        quiet=options["quiet"],
        seed=options["seed"],
    )
    totals = yield simulation.run()
    held = sum(len(s.held) - s.sent for s in stations)
    dropped = sum(s.dropped for s in stations)
    acknowledged = f" ({totals.acknowledged} acknowledged)" if options["wait-ack"] else ""
    repeated = f" (and {totals.repeated} repeated)" if totals.repeated else ""
    clears = f", {totals.clears_lost} clear commands lost" if totals.clears_lost else ""
    out.write(
        f"{counted(len(stations), 'station')} sent {counted(totals.packets, 'packet')}"
        f"{acknowledged} with {counted(totals.records, 'record')}{repeated}; "
        f"{totals.failed} uploads failed, {totals.missed} missed{clears}; {held} "
        f"records still on the stations, {dropped} dropped by full rings.\n"
    )
    not_acknowledged = options["wait-ack"] and totals.acknowledged < totals.packets
    return 1 if held or dropped or not_acknowledged else 0


def main(
    argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """
    The console script: 0 when the command did all it was asked, 1 when not,
    2 for a command line it cannot follow.  The commands that talk over the
    network run under L{react}, which stops the reactor and exits with their
    code.
    """
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        lost = str(e).startswith(("give a command", "give a subcommand"))
        err.write(f"weather: {e}\n{_innermost(options)}\n" if lost else f"weather: {e}\n")
        return 2
    if options.subCommand == "config":
        out.write(example())
        return 0
    chosen = _innermost(options)
    if isinstance(chosen, DataDirOptions) and (server := chosen.last_server()):
        err.write(f"weather: reading {server.describe()}\n")
    command = options.subCommand
    sub = options.subOptions
    try:
        if command == "decode":
            return decode(sub, out, sys.stdin, time.time_ns())
        if command == "journal" and sub.subCommand == "backup":
            return journal_backup(sub.subOptions, out, time.time())
        if command == "journal":
            directory = sub.subOptions.data_dir()
            if sub.subCommand == "check":
                return journal_check(directory, out)
            if sub.subCommand == "salvage":
                return journal_salvage(directory, out, time.time())
            return journal_status(directory, out, time.time())
        if command == "quarantine":
            q = sub.subOptions
            return quarantine_list(q.data_dir(), q["reason"], q["hex"], out)
        if command == "simulate":
            if sub["devices-toml"]:
                out.write(devices_toml(sub.device_ids()))
                return 0
            run: tuple = (simulate, sub, out)
        else:
            sub.settings()  # the InfluxDB options and devices file, checked first
            JournalFile(sub.data_dir(), create=False).close()
            run = (replay, sub, out, err)
    except (JournalError, ConfigurationError, DevicesError, usage.UsageError) as e:
        err.write(f"weather: {e}\n")
        return 1
    react(_exiting, run)


def _innermost(options: usage.Options) -> usage.Options:
    """The options of the (sub)command the command line got to."""
    while getattr(options, "subOptions", None) is not None:
        options = options.subOptions
    return options


def _exiting(reactor: Any, command: Callable[..., Deferred], *args: Any) -> Deferred:
    """C{command}, whose result is the exit code; L{react} exits 0 unless told."""

    def exit_with(code: int) -> None:
        if code:
            raise SystemExit(code)

    return command(reactor, *args).addCallback(exit_with)


if __name__ == "__main__":
    sys.exit(main())
