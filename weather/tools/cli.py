"""
The C{weather} command: look into the journal and the quarantine, replay
quarantined packets, run the server.

    weather journal status     packets to deliver, the oldest one's age, disk use
    weather journal check      whether the journal is damaged, what can be read of it
    weather journal salvage    copy what can be read of a damaged journal into a new one
    weather journal backup     a consistent copy of the journal, while the server runs
    weather quarantine list    what is in quarantine, and why
    weather quarantine drop    delete packets from quarantine, for good (with --yes)
    weather replay             decode quarantined packets again and send them
    weather decode PACKET      show a packet's header and readings (hex, file, log line)
    weather config             a config file of every option, commented out (--config)
    weather simulate           stations sending to a server, as the firmware does
    weather serve              the server in the foreground, as twistd -n weather runs it

The journal commands take C{--data-dir} (the server's default when not given).
A name that is not known (a command, an option, a quarantine reason) is
answered with those that are, and the closest; Ctrl-C ends any command
quietly, with exit status 130.
"""

from __future__ import annotations

import contextlib
import difflib
import getopt
import os
import random
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater, react
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
from weather.core.devices import (
    REFERENCE_DEVICES,
    REFERENCE_STATION,
    DeviceProfile,
    DevicesError,
)
from weather.core.dump import (
    NotAPacket,
    counted,
    describe_packet,
    log_time,
    packet_from_text,
    readings_table,
)
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
from weather.journal.service import JournalLocked, server_pid, server_running, take_lock
from weather.journal.store import (
    FILENAME,
    REPLAY_REQUESTED,
    JournalError,
    JournalFile,
    Quarantine,
    QuarantinedPacket,
    journal_error,
)
from weather.server.pipeline import REFUSED, REJECTION_REASONS, refusal
from weather.server.writer import PointsRejected, PointWriter
from weather.tools.serve import ServeOptions, command_line, serve
from weather.tools.simulate import (
    REFERENCE_PLACES,
    Simulation,
    StationModel,
    devices_toml,
    tcp_connector,
)

#: Why packets are in quarantine: rejected on arrival or decoding, or refused
#: by InfluxDB.
REASONS = (*REJECTION_REASONS, REFUSED, REPLAY_REQUESTED)


class Unknown(usage.UsageError):
    """A name that is none of those known: exit status 2, as for a usage error."""


def unknown(what: str, given: str, known: Iterable[str]) -> Unknown:
    """
    That C{given} is no known C{what}, with the known ones and the closest
    (L{difflib}: the standard library's way to "did you mean").
    """
    known = list(known)
    close = difflib.get_close_matches(given, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return Unknown(f"unknown {what} {given!r}{hint} {what}s: {', '.join(known)}")


class CommandOptions(WeatherOptions):
    """
    A command with subcommands.  Once one is chosen, the synopsis is only the
    way to it: the subcommand's synopsis follows (usage.Options joins them).
    """

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            given = str(e).removeprefix("Unknown command: ")
            if given == str(e):
                raise
            raise unknown("command", given, (c[0] for c in self.subCommands)) from None

    def getSynopsis(self) -> str:
        if getattr(self, "subCommand", None) is None:
            return super().getSynopsis()
        if self.parent is None:
            return "Usage: weather"
        return f"{self.parent.getSynopsis()} {self.parent.subCommand}"


class AnywhereOptions(WeatherOptions):
    """Options that may also follow the arguments (a pasted log line, ids)."""

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            found, rest = getopt.gnu_getopt(list(options), self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        super().parseOptions([*command_line(self, found), "--", *rest])


def _packet_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise usage.UsageError(f"--id {value!r}: give a packet number") from None


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


#: --reason, for the commands that choose packets in quarantine.
REASON = ["reason", "r", None, "Only packets quarantined for this reason."]


class QuarantineListOptions(DataDirOptions):
    synopsis = "[--data-dir DIR] [--reason R] [--hex]"
    optParameters = [REASON]
    optFlags = [["hex", None, "Show each packet's bytes as hex."]]


#: Units of --older-than, in seconds.
AGE_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """An age such as 30d, 12h, 90min or 45s, in seconds."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-z]+)\s*", text)
    if found is None or found.group(2) not in AGE_UNITS:
        raise usage.UsageError(
            f"--older-than {text!r}: give an age such as 30d, 12h, 90min or 45s"
        )
    return float(found.group(1)) * AGE_UNITS[found.group(2)]


class QuarantineDropOptions(AnywhereOptions, DataDirOptions):
    synopsis = "[--data-dir DIR] [ID ...] [--reason R] [--older-than AGE] [--yes]"
    longdesc = (
        "Delete packets from quarantine for good: those given by id (as "
        "'weather quarantine list' shows them), or quarantined for a reason, or "
        "that arrived longer ago than an age; given together, those that are all "
        "three. Without --yes, show what would be deleted and delete nothing. "
        "Only packets in quarantine are ever deleted, never one waiting for "
        "InfluxDB; a running server may hold the journal."
    )
    optParameters = [
        REASON,
        [
            "older-than",
            None,
            None,
            "Only packets that arrived longer ago: 30d, 12h, 90min.",
        ],
    ]
    optFlags = [["yes", "y", "Delete them (without it: show what would be deleted)."]]

    def __init__(self) -> None:
        super().__init__()
        self["ids"] = set()

    def opt_id(self, value: str) -> None:
        """This packet (repeatable; or give ids after the options)."""
        self["ids"].add(_packet_id(value))

    def parseArgs(self, *ids: str) -> None:
        self["ids"].update(_packet_id(i) for i in ids)

    def postOptions(self) -> None:
        if self["older-than"] is not None:
            self["older-than"] = parse_age(self["older-than"])
        if not self["ids"] and self["reason"] is None and self["older-than"] is None:
            raise usage.UsageError(
                "say which packets: their ids, --reason or --older-than "
                "(see weather quarantine list)"
            )


class QuarantineOptions(CommandOptions):
    synopsis = "list|drop [--data-dir DIR] [options]"
    subCommands = [
        ["list", None, QuarantineListOptions, "What is in quarantine, and why."],
        ["drop", None, QuarantineDropOptions, "Delete packets from quarantine, for good."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a subcommand: list or drop")


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
#: Seconds of failed requests, InfluxDB having taken nothing yet, before a
#: replay gives up (connection refused, a wrong URL): the packets stay in
#: quarantine, and the user learns why at once rather than after --timeout.
REPLAY_GIVE_UP = 5.0
#: Seconds between two looks at the journal while a running server takes up
#: a replay.
REPLAY_POLL_INTERVAL = 0.2
#: Seconds the running server has to take up the first packet before the
#: replay says it does not (an older version, a signal it does not hear).
REPLAY_TAKE_WAIT = 5.0


class ReplayOptions(DataDirOptions, DevicesOptions, InfluxOptions):
    """The server's --data-dir, --devices and InfluxDB options, and the replay's own."""

    synopsis = "[--data-dir DIR] [--devices FILE] [InfluxDB options]"
    longdesc = (
        "Decode quarantined packets again (after describing a device in the "
        "devices file, say) and write their readings to InfluxDB with the "
        "server's InfluxDB options. Delivered packets leave the quarantine; "
        "the others stay, with the new reason. While a server uses the data "
        "directory, the packets are handed to it (SIGHUP: it re-reads its "
        "devices file first) and it decodes and writes them with its own "
        "devices file and InfluxDB options, so its status page shows them."
    )
    optParameters = [REASON, *parameters((TIMEOUT,))]
    optFlags = [
        ["dry-run", "n", "Show the readings that would be written; change nothing."],
        ["lines", "l", "With --dry-run: the line protocol, not the readings."],
    ]

    def postOptions(self) -> None:
        try:
            self["timeout"] = TIMEOUT.value(self["timeout"])
        except ConfigurationError as e:
            raise usage.UsageError(str(e)) from None
        if self["lines"] and not self["dry-run"]:
            raise usage.UsageError("--lines: only with --dry-run")

    def opt_id(self, value: str) -> None:
        """Only this packet (repeatable)."""
        self.setdefault("ids", set()).add(_packet_id(value))

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


class DecodeOptions(AnywhereOptions, DevicesOptions):
    synopsis = "[options] [PACKET ...]"
    longdesc = (
        "Show a packet's header and its readings with the timestamps the server "
        "would give them. PACKET is hex (b4001000...), decimal bytes (180 0 16 "
        "...), or a whole line pasted from the original server's log (Received "
        "raw data = 180 0 16 ...), whose time is then the arrival; without "
        "PACKET or --file, the text is read from standard input."
    )
    optParameters = [
        ["file", "f", None, "Read the packet's raw bytes from this file (- for stdin)."],
        [
            "arrival",
            "a",
            None,
            "When its last byte arrived (default: the time a pasted log line "
            "starts with, else now).",
        ],
        [
            "previous",
            None,
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


class SimulateOptions(DevicesOptions):
    synopsis = "[--host H] [--port P] [--devices FILE] [--stations N] [--packets K]"
    longdesc = (
        "Simulated stations sending to a server as the firmware does: connect, "
        "write one packet, close (never reading unless --wait-ack). Each station "
        "wakes --packets times, the first at once with the --wake-every seconds "
        "before it, then every --wake-every seconds by its own drifting clock. "
        "Prints each upload and each reading with its true time (UTC), to "
        "compare with what the server stored. Stations are devices --first-id, "
        "--first-id + 1, ... of the reference layout: give the server a devices "
        "file that describes them (--devices-toml prints one). With --devices, "
        "the stations are those the file describes (all, or those --first-id and "
        "--stations choose), each value with a plausible "
        "reading of what its name or unit says (temperature, humidity, pressure, "
        "light, voltage), else a mid-range code."
    )
    optParameters = [
        ["host", "H", "127.0.0.1", "The server's address or name."],
        # The server's default port; the stations' and the simulation's
        # defaults are those of the simulator's own classes.
        [
            "port",
            "p",
            int(declared("port").default),
            "The server's port.",
            usage.portCoerce,
        ],
        ["stations", "n", None, "How many stations [default: 1].", int],
        ["packets", "k", 1, "Uploads per station.", int],
        ["first-id", None, None, "The first station's device id [default: 1].", int],
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

    def __init__(self) -> None:
        super().__init__()
        #: The --devices file's profiles, once read.
        self.profiles: Mapping[int, DeviceProfile] | None = None

    def postOptions(self) -> None:
        if self["devices"] is not None:
            if self["devices-toml"]:
                raise usage.UsageError(
                    "--devices-toml describes stations of the reference layout: "
                    "not with --devices, which describes them already"
                )
            try:
                self.profiles = load_devices(self["devices"])
            except DevicesError as e:
                raise usage.UsageError(str(e)) from None
        first = 1 if self["first-id"] is None else self["first-id"]
        if not 1 <= first <= 255:
            raise usage.UsageError("--first-id: device ids are 1 to 255")
        count = 1 if self["stations"] is None else self["stations"]
        if count < 1 or first + count - 1 > 255:
            raise usage.UsageError(
                f"--stations: 1 to {256 - first} (device ids end at 255)"
            )
        if self.profiles is not None:
            missing = [d for d in self.device_ids() if d not in self.profiles]
            if missing:
                described = ", ".join(map(str, sorted(self.profiles)))
                raise usage.UsageError(
                    f"--devices {self['devices']} does not describe device "
                    f"{missing[0]} (it describes {described})"
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
        """
        --first-id onwards, --stations of them; with --devices and neither
        of those, every device it describes.
        """
        chosen = self["first-id"] is not None or self["stations"] is not None
        if self.profiles is not None and not chosen:
            return sorted(self.profiles)
        first = 1 if self["first-id"] is None else self["first-id"]
        return list(range(first, first + (self["stations"] or 1)))

    def stations(self) -> list[StationModel]:
        chance = random.Random(self["seed"])
        drift = self["drift"] / 100
        ratio = self["clock-ratio"]
        profiles = self.profiles or REFERENCE_DEVICES
        return [
            StationModel(
                device,
                wake_every=self["wake-every"],
                measure_every=self["measure-every"],
                drift=chance.uniform(-drift, drift) if ratio is None else ratio - 1,
                seed=self["seed"],
                sensor_failures=self["sensor-failures"],
                profile=profiles.get(device, REFERENCE_STATION),
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
        "packets, decode a packet by hand, simulate stations, or run the "
        "server. The journal and quarantine are the server's, or those in "
        "--data-dir."
    )
    subCommands = [
        ["journal", None, JournalOptions, "The journal: status, check, salvage, backup."],
        ["quarantine", None, QuarantineOptions, "The quarantine: list, drop."],
        ["replay", None, ReplayOptions, "Decode quarantined packets again and send them."],
        ["config", None, ConfigOptions, "A config file of every option (--config)."],
        ["decode", None, DecodeOptions, "Show a packet's header and readings."],
        ["simulate", None, SimulateOptions, "Stations sending to a server."],
        ["serve", None, ServeOptions, "Run the server, as twistd -n weather does."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            names = [c[0] for c in self.subCommands]
            raise usage.UsageError(
                f"give a command: {', '.join(names[:-1])} or {names[-1]}"
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
            self.out.write(f"\r[{bar}] {done}/{counted(self.total, 'packet')}")
            if done >= self.total:
                self.out.write("\n")
        else:
            tenth = 10 * done // self.total
            if tenth == self._shown:
                return
            self._shown = tenth
            self.out.write(f"{done}/{counted(self.total, 'packet')}\n")
        self.out.flush()


# -- the commands ----------------------------------------------------------------


def journal_status(directory: str, out: TextIO, now: float) -> int:
    file = JournalFile(directory, create=False, read_only=True)
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
        f"Pending:      {counted(status.pending, 'packet')} not yet acknowledged "
        "by InfluxDB\n"
        f"Oldest:       {oldest}\n"
        f"Quarantined:  {counted(status.quarantined, 'packet')}, "
        f"{size(status.sizes.quarantined)} (weather quarantine list)\n"
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


def check_reason(reason: str | None, items: Iterable[QuarantinedPacket]) -> None:
    """
    @raise Unknown: C{reason} is neither one packets are quarantined for nor
        that of one of C{items} (a journal may hold reasons of older versions).
    """
    if reason is None:
        return
    known = list(REASONS)
    known += sorted({q.quarantine.reason for q in items} - set(known))
    if reason not in known:
        raise unknown("reason", reason, known)


def by_reason(items: Iterable[QuarantinedPacket]) -> str:
    """How many of C{items} are quarantined for each reason: 2 truncated, 1 ..."""
    reasons: dict[str, int] = {}
    for item in items:
        reasons[item.quarantine.reason] = reasons.get(item.quarantine.reason, 0) + 1
    return ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))


def quarantine_list(directory: str, reason: str | None, show_hex: bool, out: TextIO) -> int:
    file = JournalFile(directory, create=False, read_only=True)
    try:
        items = file.quarantined()
    except sqlite3.Error as e:
        raise journal_error(directory, e) from None
    finally:
        file.close()
    check_reason(reason, items)
    kept = [q for q in items if reason is None or q.quarantine.reason == reason]
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
    out.write(f"{counted(len(kept), 'packet')} in quarantine: {by_reason(kept)}\n")
    return 0


def quarantine_drop(options: QuarantineDropOptions, out: TextIO, now: float) -> int:
    """
    C{weather quarantine drop}: show the packets chosen and, with C{--yes},
    delete them, in one transaction (a server may be running: the journal
    deletes only packets still in quarantine).  0 unless a packet asked for
    by id is not in quarantine.
    """
    directory = options.data_dir()
    reason, older = options["reason"], options["older-than"]
    file = JournalFile(directory, create=False)
    try:
        items = file.quarantined()
        check_reason(reason, items)
        chosen = [
            q
            for q in items
            if (not options["ids"] or q.entry.id in options["ids"])
            and (reason is None or q.quarantine.reason == reason)
            and (older is None or now - q.entry.packet.arrival_ns / 1e9 > older)
        ]
        dropped = file.drop_quarantined(q.entry.id for q in chosen) if options["yes"] else 0
    except sqlite3.Error as e:
        raise journal_error(directory, e) from None
    finally:
        file.close()
    if chosen:
        out.write(
            f"{'id':>7}  {'arrived (UTC)':19}  {'age':>10}  {'device':>6}  "
            f"{'bytes':>5}  reason\n"
        )
    for item in chosen:
        packet = item.entry.packet
        device = packet.device_id if packet.device_id is not None else "-"
        out.write(
            f"{item.entry.id:>7}  {utc(packet.arrival_ns)}  "
            f"{age(now - packet.arrival_ns / 1e9):>10}  {device:>6}  "
            f"{len(packet.data):>5}  {item.quarantine.reason}\n"
        )
    what = f"{counted(len(chosen), 'packet')} ({by_reason(chosen)})"
    if not chosen:
        out.write("Nothing in quarantine to drop.\n")
    elif not options["yes"]:
        out.write(
            f"Would drop {what} for good. Dry run: nothing was deleted; add --yes "
            "to drop them.\n"
        )
    else:
        gone = f" ({len(chosen) - dropped} had left the quarantine meanwhile)"
        out.write(
            f"Dropped {what} from quarantine for good"
            f"{gone if dropped < len(chosen) else ''}.\n"
        )
    missing = sorted(options["ids"] - {q.entry.id for q in items})
    if missing:
        noun = "packet" if len(missing) == 1 else "packets"
        out.write(f"Not in quarantine, left alone: {noun} {', '.join(map(str, missing))}\n")
    return 1 if missing else 0


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


def chosen(file: JournalFile, options: ReplayOptions) -> list[QuarantinedPacket]:
    """The quarantined packets C{--reason} and C{--id} choose (all: neither given)."""
    return [
        q
        for q in file.quarantined()
        if (options["reason"] is None or q.quarantine.reason == options["reason"])
        and (not options.get("ids") or q.entry.id in options["ids"])
    ]


@inlineCallbacks
def replay(
    reactor: Any,
    options: ReplayOptions,
    out: TextIO,
    err: TextIO,
    client: Any = None,
    signal_server: Callable[[int, int], object] = os.kill,
) -> Any:
    """
    Decode quarantined packets again and write them; 0 when all are delivered.
    While a server holds the data directory, it does (L{through_server}).

    A truncated packet's complete records are written again each time (the
    same points: InfluxDB overwrites them) and it stays in quarantine.
    """
    directory = options.data_dir()
    if not options["dry-run"]:
        pid = server_pid(directory)
        if pid is not None:
            handed = yield through_server(
                reactor, options, directory, pid, err, signal_server
            )
            return handed
    settings = options.settings()
    #: Held while replaying with no server: one that starts meanwhile must
    #: not take up the same packets (replay requests) and write them too.
    lock: int | None = None
    if not options["dry-run"]:
        try:
            lock = take_lock(directory) if os.path.isdir(directory) else None
        except JournalLocked:
            err.write(
                f"weather: {directory} is in use by a process this command cannot "
                "hand packets to (a server still starting or of an older version, "
                "'weather journal salvage', or a server on another machine): run "
                "weather replay where that server runs, or once it has started\n"
            )
            return 1
        except JournalError as e:
            err.write(f"weather: {e}\n")
            return 1
    try:
        file = JournalFile(directory, create=False)
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    try:
        kept = chosen(file, options)
        if not kept:
            err.write("Nothing in quarantine to replay.\n")
            return 0
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
            lines = options["lines"]
            for item, points in ready:
                show_points(item, points, item.entry.id in partial, lines, out)
            for entry_id, q in still.items():
                why = f"{q.reason}: {q.detail}"
                heading = f"# packet {entry_id}" if lines else f"Packet {entry_id}"
                out.write(f"{heading}: still not decodable: {why}\n")
            err.write(
                f"Dry run: {counted(len(ready), 'packet')} would be written, "
                f"{len(still)} {stay(len(still))} in quarantine.\n"
            )
            return 0
        delivered, refused, failing = yield _send(
            reactor, settings, ready, options, err, client
        )
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
        if lock is not None:
            os.close(lock)
    undelivered = len(ready) - len(delivered) - len(stored) - len(refused)
    why = (
        f"{settings.target.describe()} failed every request for "
        f"{REPLAY_GIVE_UP:g} s: {failing}; they stay in quarantine"
        if failing
        else "InfluxDB did not answer in time"
    )
    err.write(
        f"Replayed {counted(len(delivered), 'packet')} into InfluxDB; {len(still)} "
        f"{stay(len(still))} in quarantine; {undelivered} not sent ({why}).\n"
    )
    for entry_id, q in sorted(still.items()):
        err.write(f"  packet {entry_id}: {q.reason}: {q.detail}\n")
    return 0 if not still and not undelivered else 1


def stay(count: int) -> str:
    return "stays" if count == 1 else "stay"


@inlineCallbacks
def through_server(
    reactor: Any,
    options: ReplayOptions,
    directory: str,
    pid: int,
    err: TextIO,
    signal_server: Callable[[int, int], object],
) -> Any:
    """
    Hand the chosen packets to the server running on C{directory} (process
    C{pid}): mark them in the journal (L{REPLAY_REQUESTED}), in one
    transaction, and send it SIGHUP; it re-reads its devices file, decodes
    them as a replay does and writes them with its own InfluxDB options.
    Then watch the journal every L{REPLAY_POLL_INTERVAL} seconds, up to
    C{--timeout}, until each is delivered (gone) or back in quarantine.

    The requests are in the journal: whatever becomes of this command or the
    server, they are kept, and a server that does not take them up now (an
    older version, a signal it does not hear) takes them up at its next
    start, or a replay with no server running decodes them.
    """
    server = f"server running on {directory} (pid {pid})"
    ignored = sorted(options.typed - {"data-dir", "config"})
    if ignored:
        err.write(
            f"The {server} uses its own devices file and InfluxDB options "
            "(SIGHUP makes it re-read its --devices or --config file): "
            f"{', '.join('--' + name for name in ignored)} not used.\n"
        )
    file = JournalFile(directory, create=False)
    try:
        ids = [q.entry.id for q in chosen(file, options)]
        if not ids:
            err.write("Nothing in quarantine to replay.\n")
            return 0
        now_ns = time.time_ns()
        file.request_replay(
            ids,
            f"weather replay asked the {server} to decode it again at {utc(now_ns)} UTC; "
            "it waits for the server to take it up (at its next SIGHUP or start)",
            now_ns,
        )
        try:
            signal_server(pid, signal.SIGHUP)
        except OSError as e:
            err.write(
                f"weather: cannot signal the {server}: {e.strerror}; the "
                f"{counted(len(ids), 'packet')} {stay(len(ids))} in the journal, marked "
                f"{REPLAY_REQUESTED}, for it to take up at its next start (or: kill -HUP "
                f"{pid} as its user)\n"
            )
            return 1
        where = yield _watch(reactor, file, ids, options["timeout"])
        back = [
            q
            for q in file.quarantined()
            if where.get(q.entry.id, REPLAY_REQUESTED) != REPLAY_REQUESTED
        ]
    except sqlite3.Error as e:
        err.write(f"weather: {journal_error(directory, e)}\n")
        return 1
    finally:
        file.close()
    waiting = sorted(i for i, reason in where.items() if reason == REPLAY_REQUESTED)
    if len(waiting) == len(ids):
        err.write(
            f"The {server} did not take up the replay within "
            f"{min(REPLAY_TAKE_WAIT, options['timeout']):g} s (an older version, or one "
            "whose packets wait for its clock, --clock-sync: see its log): the "
            f"{counted(len(ids), 'packet')} {stay(len(ids))} in the journal, marked "
            f"{REPLAY_REQUESTED}, and it takes them up at its next start or SIGHUP.\n"
        )
        return 1
    delivered = len(ids) - len(where)
    pending = sum(1 for reason in where.values() if reason is None)
    still = len(back)
    parts = [
        f"Replayed {counted(delivered, 'packet')} into InfluxDB through the {server}",
        f"{still} {stay(still)} in quarantine",
    ]
    if pending:
        parts.append(
            f"{pending} handed to it, waiting for InfluxDB in its journal (safe there)"
        )
    if waiting:
        parts.append(f"{len(waiting)} not yet taken up (it takes them up later)")
    err.write("; ".join(parts) + ".\n")
    for q in back:
        err.write(f"  packet {q.entry.id}: {q.quarantine.reason}: {q.quarantine.detail}\n")
    return 0 if not where else 1


@inlineCallbacks
def _watch(reactor: Any, file: JournalFile, ids: list[int], timeout: float) -> Any:
    """
    Where the packets C{ids} are (L{JournalFile.reasons}) once none is
    requested nor pending, or at C{timeout}, or after L{REPLAY_TAKE_WAIT}
    seconds with none taken up.
    """
    started = reactor.seconds()
    while True:
        where = file.reasons(ids)
        waiting = [r for r in where.values() if r == REPLAY_REQUESTED or r is None]
        elapsed = reactor.seconds() - started
        untaken = len(where) == len(ids) and all(
            r == REPLAY_REQUESTED for r in where.values()
        )
        if not waiting or elapsed >= timeout or (untaken and elapsed >= REPLAY_TAKE_WAIT):
            return where
        yield deferLater(reactor, REPLAY_POLL_INTERVAL, lambda: None)


def show_points(
    item: QuarantinedPacket, points: PacketPoints, partial: bool, lines: bool, out: TextIO
) -> None:
    """
    What a replay would write for a packet: its readings as C{weather decode}
    shows them, or (C{lines}) the line protocol, after a comment.
    """
    packet = item.entry.packet
    decoded = points.decoded
    count = counted(len(points.lines), "point")
    if partial:
        count += " (a truncated packet's complete records; it stays in quarantine)"
    if points.not_finite:
        count += f" ({counted(points.not_finite, 'NaN or infinite value')} left out)"
    if lines:
        out.write(f"# packet {item.entry.id}: {count}\n")
        for line in points.lines:
            out.write(line.decode("utf-8") + "\n")
        return
    tags = ", ".join(f"{k}={v}" for k, v in decoded.profile.tags) or "no tags"
    out.write(
        f"Packet {item.entry.id}: device {decoded.header.device_id} ({tags}) from "
        f"{packet.peer}, arrived {utc(packet.arrival_ns)} UTC: "
        f"{counted(len(decoded.times), 'record')}, {count}\n"
    )
    readings_table(decoded, out)
    out.write("\n")


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
        create_database=settings.create_database,
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
    failing: list[str] = []

    def give_up_if_failing() -> None:
        since = writer.failing_since
        if delivered or since is None or reactor.seconds() - since < REPLAY_GIVE_UP:
            return
        failing.append(writer.last_failure or "no answer")
        everything.cancel()

    watch = LoopingCall(give_up_if_failing)
    watch.clock = reactor
    watch.start(REPLAY_GIVE_UP / 10, now=False)
    try:
        yield everything
    except Exception:
        pass
    watch.stop()
    yield writer.stopService()
    if pool is not None:
        yield pool.closeCachedConnections()
    return delivered, refused, failing[0] if failing else None


def decode(options: DecodeOptions, out: TextIO, stdin: TextIO, now_ns: int) -> int:
    """C{weather decode}: 0 if the packet decodes, 1 if the server would reject it."""
    profiles = load_devices(options["devices"]) if options["devices"] else REFERENCE_DEVICES
    logged = None
    try:
        if options["file"] == "-":
            data = stdin.buffer.read()
        elif options["file"]:
            with open(options["file"], "rb") as f:
                data = f.read()
        else:
            text = options["packet"] or stdin.read()
            data = packet_from_text(text, options["base"])
            logged = log_time(text)
    except OSError as e:
        raise usage.UsageError(f"--file: {e.strerror}: {e.filename}") from None
    except NotAPacket as e:
        raise usage.UsageError(f"not a packet: {e}") from None
    arrival, note = options["arrival"], ""
    if arrival is None and logged is not None:
        arrival, note = logged, " (the log line's time)"
    if arrival is None:
        arrival = now_ns
    inputs = timing_inputs(options, arrival)
    return describe_packet(data, arrival, inputs, profiles, out, options["lines"], note)


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
    lost = totals.clears_lost
    clears = f", {counted(lost, 'clear command')} lost" if lost else ""
    out.write(
        f"{counted(len(stations), 'station')} sent {counted(totals.packets, 'packet')}"
        f"{acknowledged} with {counted(totals.records, 'record')}{repeated}; "
        f"{counted(totals.failed, 'upload')} failed, {totals.missed} missed{clears}; "
        f"{counted(held, 'record')} still on the stations, {dropped} dropped by full "
        "rings.\n"
    )
    not_acknowledged = options["wait-ack"] and totals.acknowledged < totals.packets
    return 1 if held or dropped or not_acknowledged else 0


def main(
    argv: Sequence[str] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    stdin: TextIO | None = None,
) -> int:
    """
    The console script: 0 when the command did all it was asked, 1 when not,
    2 for a command line it cannot follow, 130 when Ctrl-C ended it (quietly:
    no traceback, nor when the reader of its output leaves).  The commands
    that talk over the network run under L{react}, which stops the reactor.
    """
    try:
        given = list(sys.argv[1:] if argv is None else argv)
        return _command(given, out, err, sys.stdin if stdin is None else stdin)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # Its reader left (weather quarantine list | head): nothing more to
        # say, and Python's last flush of stdout must not fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _command(argv: list[str], out: TextIO, err: TextIO, stdin: TextIO) -> int:
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        lost = str(e).startswith(("give a command", "give a subcommand"))
        err.write(f"weather: {_explained(e, options)}\n")
        if lost:
            err.write(f"{_innermost(options)}\n")
        return 2
    if options.subCommand == "config":
        out.write(example())
        return 0
    chosen = _innermost(options)
    if isinstance(chosen, DataDirOptions) and (server := chosen.last_server()):
        err.write(f"weather: reading {server.describe()}\n")
    command = options.subCommand
    sub = options.subOptions
    if command == "decode" and _waits_on_terminal(sub, stdin):
        err.write(
            f"weather: give a PACKET, or --file, or its text on standard input\n{sub}\n"
        )
        return 2
    try:
        if command == "serve":
            return serve(sub)
        if command == "decode":
            return decode(sub, out, stdin, time.time_ns())
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
            if sub.subCommand == "drop":
                return quarantine_drop(q, out, time.time())
            return quarantine_list(q.data_dir(), q["reason"], q["hex"], out)
        if command == "simulate":
            if sub["devices-toml"]:
                out.write(devices_toml(sub.device_ids(), REFERENCE_PLACES))
                return 0
            run: tuple = (simulate, sub, out)
        else:
            sub.settings()  # the InfluxDB options and devices file, checked first
            file = JournalFile(sub.data_dir(), create=False)
            try:
                if sub["reason"] is not None:
                    check_reason(sub["reason"], file.quarantined())
            except sqlite3.Error as e:
                raise journal_error(sub.data_dir(), e) from None
            finally:
                file.close()
            run = (replay, sub, out, err)
    except Unknown as e:
        err.write(f"weather: {e}\n")
        return 2
    except (JournalError, ConfigurationError, DevicesError, usage.UsageError) as e:
        err.write(f"weather: {e}\n")
        return 1
    return _react(run)


def _waits_on_terminal(options: DecodeOptions, stdin: TextIO) -> bool:
    """Whether C{weather decode} would wait for text typed on a terminal."""
    reads = not options["packet"] and options["file"] in (None, "-")
    return reads and stdin.isatty()


def _explained(error: usage.UsageError, options: usage.Options) -> str:
    """A usage error, an option getopt does not know with the closest it does."""
    found = re.fullmatch(r"option (--\S+) not recognized", str(error))
    if found is None:
        return str(error)
    names = [f"--{name.rstrip('=')}" for name in _innermost(options).longOpt]
    close = difflib.get_close_matches(found.group(1), names, n=1)
    hint = f"; did you mean {close[0]}?" if close else ";"
    return f"unknown option {found.group(1)}{hint} --help lists them"


def _react(run: tuple) -> int:
    """
    C{run} under L{react}: its exit code, or 128 + the signal that stopped
    the reactor (the reactor's handler takes Ctrl-C: 130, as a shell says).
    """
    from twisted.internet import reactor

    code: Any = 0
    try:
        react(_exiting, run)
    except SystemExit as e:
        code = e.code
    stopped_by = getattr(reactor, "_exitSignal", None)
    return 128 + stopped_by if stopped_by else code


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
