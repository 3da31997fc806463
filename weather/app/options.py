"""
Every option of C{twistd weather}, declared once: name, short flag, default,
coercion with its error message, and help text.

L{TOPICS} is the one table.  From it come the command line (L{Options}, and
the mixins the C{weather} command shares: L{DataDirOptions},
L{DevicesOptions}, L{InfluxOptions}), the C{--config} file
(L{weather.app.configfile}) and L{coerce}, which turns what was typed into
checked values; L{weather.app.settings} then checks the options against each
other and hands the services their L{Settings <weather.app.settings.Settings>}.

Coercion happens at start-up rather than while parsing, so that a bad value
stops twistd with one line that says what to change, not with the whole
usage text.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from twisted.python import usage

from weather import __version__
from weather.app.lastserver import ServerRecord, read_record, state_home
from weather.core.packet import HEADER_SIZE, MAX_PACKET_SIZE
from weather.server.admission import RateLimit, parse_network
from weather.server.clock import MODES as CLOCK_SYNC_MODES

#: The default --max-packet-size: the largest packet of the stations described
#: (the 9-byte header and a full 350-byte ring: 359 bytes), with room to spare.
DEFAULT_PACKET_SIZE = 1024

DATA_DIR_VARIABLE = "WEATHER_DATA_DIR"
PASSWORD_VARIABLE = "WEATHER_INFLUX_PASSWORD"
TOKEN_VARIABLE = "WEATHER_INFLUX_TOKEN"


class ConfigurationError(ValueError):
    """An option that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Option:
    """
    One command-line option.  C{coerce} turns the text typed into the value
    the server uses; it raises C{ValueError} with what follows C{--name } in
    the error message, or L{ConfigurationError} with a message of its own.
    """

    name: str
    help: str
    default: str | None = None
    coerce: Callable[[str], Any] = str
    short: str | None = None
    #: The value's name in L{coerce}'s result, and so in the settings.
    field: str = ""
    #: A flag (on or off) rather than a value.
    flag: bool = False
    #: May be given more than once; the values are kept in order.
    repeat: bool = False

    def __post_init__(self) -> None:
        if not self.field:
            object.__setattr__(self, "field", self.name.replace("-", "_"))

    def value(self, given: Any) -> Any:
        """
        What C{given} (the text typed, the default, or None: not given) means.

        @raise ConfigurationError: it cannot be used.
        """
        if self.flag:
            return bool(given)
        if self.repeat:
            return tuple(self._coerce(text) for text in given or ())
        return None if given is None else self._coerce(given)

    def _coerce(self, text: Any) -> Any:
        try:
            return self.coerce(text)
        except ConfigurationError:
            raise
        except ValueError as e:
            raise ConfigurationError(f"--{self.name} {e}") from None


@dataclass(frozen=True)
class Topic:
    """Options about one thing, shown together under C{heading} in --help."""

    heading: str
    options: tuple[Option, ...]


# -- coercions: text -> value, or ValueError("<what follows --name>") --------------


def number(kind: type, low: float, high: float) -> Callable[[str], Any]:
    """A number of C{kind} (int or float) from C{low} to C{high}."""

    def coerce(text: str) -> Any:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            noun = "a whole number" if kind is int else "a number"
            raise ValueError(f"{text!r}: give {noun}") from None
        if not low <= value <= high:
            raise ValueError(f"{text}: give a value from {low} to {high}")
        return value

    return coerce


SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(low: int) -> Callable[[str], int]:
    """
    A size in bytes, at least C{low}, with an optional K, M, G or T suffix
    (the standard library reads no such sizes).
    """

    def coerce(text: str) -> int:
        text = str(text).strip()
        number = text.upper().removesuffix("B").removesuffix("I")
        suffix = number[-1:] if number[-1:] in SIZE_SUFFIXES else ""
        digits = number.removesuffix(suffix) if suffix else number
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(f"{text!r}: give a size in bytes such as 500M or 2G")
        value = int(digits) * SIZE_SUFFIXES[suffix]
        if value < low:
            raise ValueError(f"{text}: give at least {low} bytes")
        return value

    return coerce


def not_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def clock_sync(text: str) -> str:
    """How far to trust the wall clock: one of L{CLOCK_SYNC_MODES}."""
    if text not in CLOCK_SYNC_MODES:
        raise ValueError(f"{text!r}: give auto, wait or trust")
    return text


def influx_api(text: str) -> str:
    """Which InfluxDB write API: v1, v2 or v3."""
    if text not in ("v1", "v2", "v3"):
        raise ValueError(f"{text!r}: give v1, v2 or v3")
    return text


def _port(text: str, interface: str = "") -> str:
    """A bare port number means TCP (on C{interface}, if given)."""
    port = not_empty(text).strip()
    if port.isdigit():
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"{port}: a port number is 0-65535")
        return f"tcp:{port}{interface}"
    return port


def station_port(text: str) -> str:
    """A bare port number means TCP on every interface."""
    return _port(text)


def metrics_port(text: str) -> str:
    """A bare port number means TCP on the loopback interface only."""
    return _port(text, ":interface=127.0.0.1")


def influx_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        netloc = parts.netloc
    except ValueError as e:  # an unclosed [ of an IPv6 address, say
        parts, netloc, bad = None, text, e
    if "@" in netloc:
        # Checked first, so that no message below repeats a password.
        raise ValueError(
            "must not hold credentials: use --username with "
            f"--password-file or ${PASSWORD_VARIABLE}"
        )
    if parts is None:
        raise ValueError(
            f"{text!r}: not a URL ({bad}): give one such as http://localhost:8086 "
            "or http://[::1]:8086"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{text!r}: give an http:// or https:// URL such as http://localhost:8086"
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise ValueError(f"{text!r}: the port must be 1-65535")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: remove the query or fragment")
    return text.rstrip("/")


def ca_pem(path: str) -> bytes:
    """The certificates in a PEM file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigurationError(f"cannot read --ca-file {path}: {e}") from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{path} holds no valid PEM certificate") from None
    return data


def log_size(text: str) -> int:
    """0 (never rotate), or a size of at least a kibibyte."""
    return 0 if str(text).strip() == "0" else size(1024)(text)


def log_json(text: str) -> bool:
    """True for JSON lines."""
    if text not in ("text", "json"):
        raise ValueError(f"{text!r}: give text or json")
    return text == "json"


def self_stats_interval(text: str) -> float:
    value = number(float, 0, 86400)(text)
    if 0 < value < 1:
        raise ValueError(f"{text}: give 0 (never) or at least 1 second")
    return value


def tag_value(text: str) -> str:
    """
    An InfluxDB tag value: not empty, printable, and no backslash (line
    protocol cannot tell a literal one before an escaped character from an
    escape; the devices file refuses them too).
    """
    value = str(text).strip()
    if not value or not value.isprintable() or "\\" in value:
        raise ValueError(
            f"{text!r}: give a name of printable characters without a backslash"
        )
    return value


def default_data_dir(environ: Mapping[str, str]) -> str:
    """Where the journal lives when --data-dir is not given."""
    if environ.get(DATA_DIR_VARIABLE):
        return environ[DATA_DIR_VARIABLE]
    return os.path.join(state_home(environ), "weather")


def data_dir(value: str | None, environ: Mapping[str, str]) -> str:
    """The data directory, absolute (twistd may change directory later)."""
    if value is not None:
        value = DATA_DIR.value(value)
    return os.path.abspath(os.path.expanduser(value or default_data_dir(environ)))


# -- the table ----------------------------------------------------------------------

DEVICES = Option(
    "devices",
    "TOML file of station profiles (default: the reference station, device 1).",
    field="devices_file",
)

#: Where and how to write to InfluxDB: the server's, and weather replay's.
INFLUX = (
    Option(
        "influx-url",
        "InfluxDB's base URL (https:// verifies its certificate).",
        "http://localhost:8086",
        influx_url,
    ),
    Option("database", "InfluxDB 1.x database.", "weather"),
    Option("retention-policy", "InfluxDB 1.x retention policy (default: the database's)."),
    Option(
        "username",
        "InfluxDB 1.x user name; the password comes from --password-file or "
        f"${PASSWORD_VARIABLE}.",
    ),
    Option(
        "password-file",
        "File whose first line is the InfluxDB 1.x password (or set "
        f"${PASSWORD_VARIABLE}).",
    ),
    Option(
        "bucket",
        "Write to InfluxDB 2.x/3.x (/api/v2/write) into this bucket, not to --database.",
        coerce=not_empty,
    ),
    Option("org", "InfluxDB 2.x organization."),
    Option(
        "token-file",
        f"File whose first line is the InfluxDB 2.x/3.x token (or set ${TOKEN_VARIABLE}).",
    ),
    Option(
        "influx-api",
        "InfluxDB's write API: v1 (/write into --database), v2 (/api/v2/write into "
        "--bucket) or v3 (InfluxDB 3's /api/v3/write_lp into --database, with a token); "
        "default: v2 with --bucket, else v1.",
        coerce=influx_api,
    ),
    Option(
        "ca-file",
        "PEM file of the CA that signed InfluxDB's certificate (default: the "
        "system's trusted CAs).",
        coerce=ca_pem,
        field="ca_pem",
    ),
    Option(
        "insecure", "Do not verify InfluxDB's TLS certificate (https:// URLs).", flag=True
    ),
    Option(
        "request-timeout",
        "Seconds to wait for InfluxDB to answer a write.",
        "30",
        number(float, 0.1, 3600),
    ),
    Option(
        "batch-size",
        "Most points in one write to InfluxDB; a write goes as soon as this many wait.",
        "5000",
        number(int, 1, 1_000_000),
    ),
)

DATA_DIR = Option(
    "data-dir",
    "Directory of the journal and the quarantine (default: "
    f"${DATA_DIR_VARIABLE}, else $XDG_STATE_HOME/weather, else ~/.local/state/weather).",
    coerce=not_empty,
    short="d",
)

TOPICS = (
    Topic(
        "Stations and listener",
        (
            Option(
                "port",
                "Where stations connect: a port number (every interface) or a Twisted "
                "endpoint string (tcp:8266:interface=127.0.0.1, ssl:..., unix:..., "
                "systemd:...).",
                "8266",
                station_port,
                short="p",
            ),
            DEVICES,
            Option(
                "grace",
                "On stop, seconds open station connections get to finish.",
                "5",
                number(float, 0, 3600),
            ),
            Option(
                "clock-sync",
                "Until the kernel says the wall clock is synchronized: wait (packets "
                "wait in the journal, then are stamped on the synchronized clock), "
                "trust (stamp with the clock as it is), or auto (wait where an NTP "
                "client runs, else trust).",
                "auto",
                clock_sync,
            ),
        ),
    ),
    Topic(
        "InfluxDB",
        INFLUX
        + (
            Option(
                "no-create-database",
                "Do not create a missing InfluxDB 1.x --database at start (creating "
                "needs an admin user; without one, the log says what to run).",
                flag=True,
            ),
            Option(
                "flush-interval",
                "Write to InfluxDB once the oldest point has waited this many "
                "seconds, even if fewer than --batch-size wait.",
                "1",
                number(float, 0.001, 3600),
            ),
            Option(
                "max-backoff",
                "Longest wait, in seconds, between retries of a failed write.",
                "60",
                number(float, 1, 86400),
            ),
            Option(
                "max-pending",
                "Points held in memory for InfluxDB; past this, packets wait in the "
                "journal.",
                "1000000",
                number(int, 1000, 100_000_000),
            ),
            Option(
                "shutdown-timeout",
                "On stop, seconds the writer gets to deliver what it holds (the rest "
                "stays in the journal).",
                "10",
                number(float, 0, 86400),
            ),
        ),
    ),
    Topic(
        "Journal",
        (
            DATA_DIR,
            Option(
                "journal-max-size",
                "High-water mark of the journal (K, M, G suffixes): past it, stop "
                "accepting stations until the backlog is delivered.",
                "1G",
                size(1 << 20),
                field="journal_max_bytes",
            ),
            Option(
                "journal-min-free",
                "Stop accepting stations while the data directory's disk has less "
                "free space than this.",
                "32M",
                size(0),
                field="journal_min_free_bytes",
            ),
            Option(
                "quarantine-max-size",
                "Budget of the quarantine (K, M, G suffixes), apart from --journal-max-"
                "size: past it, packets that are not from a station in the devices "
                "file are refused, not kept; those of described stations are always "
                "kept.",
                "64M",
                size(0),
                field="quarantine_max_bytes",
            ),
        ),
    ),
    Topic(
        "Limits",
        (
            Option(
                "max-connections",
                "Station connections open at once; at the limit a new one takes the "
                "place of one 5 s without a complete packet, or waits in the kernel's "
                "queue.",
                "512",
                number(int, 1, 1_000_000),
            ),
            Option(
                "max-connections-per-peer",
                "Connections read at once from one address (IPv6: one network, see "
                "--ipv6-peer-prefix); more are held unread until one closes.",
                "32",
                number(int, 1, 1_000_000),
            ),
            Option(
                "allow",
                "Only take connections from this network (192.168.1.0/24, "
                "2001:db8::/32 or one address); repeat for more (default: from "
                "anywhere).",
                coerce=parse_network,
                repeat=True,
            ),
            Option(
                "rate-limit",
                "New connections read per address (IPv6: per network), such as "
                "30/min; more are held unread until the rate allows (default: no "
                "limit).",
                coerce=RateLimit.parse,
            ),
            Option(
                "ipv6-peer-prefix",
                "IPv6 peers share the per-address limits with their network of this "
                "prefix length (a host takes any address of its /64); 128: each address.",
                "64",
                number(int, 1, 128),
            ),
            Option(
                "idle-timeout",
                "Close a station connection idle this many seconds.",
                "30",
                number(float, 0.1, 86400),
            ),
            Option(
                "packet-deadline",
                "Cut a station connection whose packet is not complete this many "
                "seconds after its first byte (its bytes are quarantined).",
                "20",
                number(float, 0.1, 86400),
            ),
            Option(
                "max-packet-size",
                "Largest packet accepted, in bytes; a connection announcing more is "
                "cut.  Stations send at most 359 (a full 350-byte ring).",
                str(DEFAULT_PACKET_SIZE),
                number(int, HEADER_SIZE + 1, MAX_PACKET_SIZE),
            ),
        ),
    ),
    Topic(
        "Monitoring",
        (
            Option(
                "metrics-port",
                "Serve /metrics (Prometheus) and /health here: a port number (bound to "
                "127.0.0.1) or an endpoint string such as tcp:9266:interface=0.0.0.0.",
                coerce=metrics_port,
            ),
            Option(
                "unhealthy-after",
                "Seconds of failing InfluxDB writes, or at --max-connections without a "
                "break, after which /health answers 503.",
                "300",
                number(float, 0, 86400 * 7),
            ),
            Option(
                "self-stats-interval",
                "Write the server's own figures to InfluxDB (measurement "
                "weather_internal) every this many seconds; 0: never.",
                "0",
                self_stats_interval,
            ),
            Option(
                "self-stats-host",
                "The host tag of the server's own figures (default: this machine's "
                "name), so that several servers can share a database.",
                coerce=tag_value,
            ),
        ),
    ),
    Topic(
        "Logs",
        (
            Option(
                "log-max-bytes",
                "With twistd's --logfile: rotate the log at this size (K, M, G "
                "suffixes); 0: never (for an external logrotate).",
                "10M",
                log_size,
            ),
            Option(
                "log-keep",
                "With twistd's --logfile: rotated logs to keep.",
                "10",
                number(int, 0, 100_000),
            ),
            Option(
                "log-format",
                "Log lines as text or json (one object per line).",
                "text",
                log_json,
                field="log_json",
            ),
        ),
    ),
)

DECLARED = tuple(option for topic in TOPICS for option in topic.options)

#: Not in the table: the file that holds its options.
CONFIG = Option(
    "config",
    "TOML file of the server's options (weather config prints one); the command "
    "line wins over it.",
)


def declared(name: str) -> Option:
    """The declared option C{--name}: for tools that start the server or share a default."""
    for option in DECLARED:
        if option.name == name:
            return option
    raise KeyError(name)


def coerce(options: Mapping[str, Any]) -> dict[str, Any]:
    """
    Every declared option's value, checked, by field name (None: not given).

    @raise ConfigurationError: the first value that cannot be used.
    """
    return {option.field: option.value(options[option.name]) for option in DECLARED}


# -- the command line -----------------------------------------------------------------


def parameters(options: tuple[Option, ...]) -> list[list[Any]]:
    """usage.Options' optParameters for the options that take a value."""
    return [[o.name, o.short, o.default, o.help] for o in options if not o.flag]


def flags(options: tuple[Option, ...]) -> list[list[Any]]:
    """usage.Options' optFlags for the flags."""
    return [[o.name, o.short, o.help] for o in options if o.flag]


class _Typed(usage.CoerceParameter):
    """An option's handler that also notes that the option was typed."""

    def __init__(self, options: WeatherOptions, handler: Any) -> None:
        self.options, self.handler = options, handler
        self.doc = getattr(handler, "doc", "")

    def dispatch(self, name: str, value: Any) -> None:
        self.options.typed.add(name)
        if isinstance(self.handler, usage.CoerceParameter):
            self.handler.dispatch(name, value)
        else:
            self.handler(name, value)


class WeatherOptions(usage.Options):
    """
    usage.Options whose --version is weather's, whose repeatable options add
    up, and which knows the options typed (a --config file gives the others).
    """

    def __init__(self) -> None:
        super().__init__()
        # usage.Options keeps an option's last value; a repeatable one keeps all.
        for option in DECLARED:
            if option.repeat and option.name in self:
                self[option.name] = []
                self._dispatch[option.name] = self._append
        #: The declared options typed on the command line.
        self.typed: set[str] = set()
        for option in DECLARED:
            if option.name in self._dispatch:
                self._dispatch[option.name] = _Typed(self, self._dispatch[option.name])

    def _append(self, name: str, value: str) -> None:
        self[name].append(value)

    def opt_version(self) -> None:
        """Display weather's version and exit."""
        print(f"weather {__version__}")
        sys.exit(0)


#: --data-dir as the weather command takes it: the last server's by default.
TOOLS_DATA_DIR = replace(
    DATA_DIR,
    help="Directory of the journal and the quarantine (default: the --config file's "
    f"data-dir, else ${DATA_DIR_VARIABLE}, else the running or last server's, else "
    "$XDG_STATE_HOME/weather, else ~/.local/state/weather).",
)


class DataDirOptions(WeatherOptions):
    """--data-dir (and --config): the weather command's journal tools'."""

    optParameters = parameters((TOOLS_DATA_DIR, CONFIG))

    def data_dir(self) -> str:
        """The directory, absolute: as L{TOOLS_DATA_DIR} says."""
        return data_dir(self._source()[0], os.environ)

    def last_server(self) -> ServerRecord | None:
        """The server whose record L{data_dir} follows, if it follows one."""
        try:
            return self._source()[1]
        except ConfigurationError:
            return None  # data_dir() says why

    def _source(self) -> tuple[str | None, ServerRecord | None]:
        """The directory given (None: the environment's), and the record it is from."""
        if self["data-dir"] is not None:
            return self["data-dir"], None
        if self["config"]:
            from weather.app.configfile import read_config  # which imports this module

            given = read_config(self["config"]).value(DATA_DIR)
            if given is not None:
                return given, None
        record = None if os.environ.get(DATA_DIR_VARIABLE) else read_record(os.environ)
        return (record.data_dir if record else None), record


class DevicesOptions(WeatherOptions):
    """--devices: the server's, and weather replay's."""

    optParameters = parameters((DEVICES,))


class InfluxOptions(WeatherOptions):
    """Where and how to write to InfluxDB: the server's, and weather replay's."""

    optParameters = parameters(INFLUX)
    optFlags = flags(INFLUX)


class Options(WeatherOptions):
    """C{twistd weather}'s options: the whole table, shown by topic."""

    synopsis = "[options]"
    longdesc = (
        "Receive packets from battery-powered weather stations over TCP, decode "
        "them, timestamp every reading and write the readings to InfluxDB "
        "(1.x with --database, 2.x/3.x with --bucket). Secrets come from files "
        f"or the environment: ${PASSWORD_VARIABLE}, ${TOKEN_VARIABLE}."
    )
    optParameters = parameters((*DECLARED, CONFIG))
    optFlags = flags(DECLARED)

    # Left out of --help: a removed option, and two that would take a secret.

    def opt_workers(self, value: str) -> None:
        """Removed: one process serves a whole fleet."""
        self["removed"] = (
            "--workers was removed: one process serves a fleet of 255 stations "
            "many times over (see docs/performance.md); for more, run one server per site"
        )

    def opt_password(self, value: str) -> None:
        """Refused: use --password-file or $WEATHER_INFLUX_PASSWORD."""
        self["secret-on-command-line"] = "--password"

    def opt_token(self, value: str) -> None:
        """Refused: use --token-file or $WEATHER_INFLUX_TOKEN."""
        self["secret-on-command-line"] = "--token"

    def getUsage(self, width: int | None = None) -> str:
        """The options under their topics, in the table's order."""
        width = width or int(os.environ.get("COLUMNS", "80"))
        rows = [
            {
                "long": option.name,
                "short": option.short,
                "doc": option.help,
                "optType": "flag" if option.flag else "parameter",
                "default": option.default,
            }
            for option in DECLARED
        ]
        rows += [
            {"long": "config", "doc": CONFIG.help, "optType": "parameter"},
            *(
                {"long": name, "doc": self.docs[name], "optType": "flag"}
                for name in ("help", "version")
            ),
        ]
        # One call, so that the columns line up; it sorts the rows in place,
        # in the order of the chunks it returns.
        text = usage.docMakeChunks(rows, width)
        chunks = dict(zip([row["long"] for row in rows], text, strict=True))
        sections = [
            f"{topic.heading}:\n" + "".join(chunks[o.name] for o in topic.options)
            for topic in TOPICS
        ]
        sections.append(chunks["config"] + chunks["help"] + chunks["version"])
        longdesc = "\n".join(textwrap.wrap(self.longdesc, width))
        return "\n" + "\n".join(sections) + "\n" + longdesc + "\n"
