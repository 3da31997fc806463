"""
Command-line options and their validation: the one place defaults live.

Options are parsed as text by L{Options} and checked once, at start-up, by
L{settings_from_options}, which raises L{ConfigurationError} with a single
line that says what to change.  Credentials come from files or environment
variables, never from the command line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from twisted.python import usage

from weather.core.devices import (
    REFERENCE_DEVICES,
    DeviceProfile,
    DevicesError,
    load_devices,
)
from weather.core.packet import HEADER_SIZE, MAX_PACKET_SIZE
from weather.server.admission import Network, RateLimit, parse_network
from weather.server.influx import InfluxV1, InfluxV2, IWriteTarget

DATA_DIR_VARIABLE = "WEATHER_DATA_DIR"
PASSWORD_VARIABLE = "WEATHER_INFLUX_PASSWORD"
TOKEN_VARIABLE = "WEATHER_INFLUX_TOKEN"


class ConfigurationError(ValueError):
    """An option that cannot be used; the message says what to change."""


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Receive packets from battery-powered weather stations over TCP, decode "
        "them, timestamp every reading and write the readings to InfluxDB "
        "(1.x with --database, 2.x/3.x with --bucket). Secrets come from files "
        f"or the environment: ${PASSWORD_VARIABLE}, ${TOKEN_VARIABLE}."
    )
    optParameters = [
        [
            "port",
            "p",
            "8266",
            "Where stations connect: a port number or a Twisted endpoint string "
            "(tcp:8266:interface=127.0.0.1, ssl:..., unix:..., systemd:...).",
        ],
        ["influx-url", None, "http://localhost:8086", "InfluxDB's base URL."],
        ["database", None, "weather", "InfluxDB 1.x database."],
        [
            "retention-policy",
            None,
            None,
            "InfluxDB 1.x retention policy (default: the database's).",
        ],
        ["username", None, None, "InfluxDB 1.x user name."],
        [
            "password-file",
            None,
            None,
            f"File holding the InfluxDB 1.x password (or set ${PASSWORD_VARIABLE}).",
        ],
        ["bucket", None, None, "InfluxDB 2.x/3.x bucket: writes to /api/v2/write."],
        ["org", None, None, "InfluxDB 2.x organization."],
        [
            "token-file",
            None,
            None,
            f"File holding the InfluxDB 2.x/3.x token (or set ${TOKEN_VARIABLE}).",
        ],
        ["ca-file", None, None, "PEM file of the CA that signed InfluxDB's certificate."],
        [
            "devices",
            None,
            None,
            "TOML file of station profiles (default: the reference station, device 1).",
        ],
        ["batch-size", None, "5000", "Write to InfluxDB once this many points wait..."],
        [
            "flush-interval",
            None,
            "1",
            "...or once the oldest has waited this many seconds.",
        ],
        ["request-timeout", None, "30", "Seconds to wait for InfluxDB to answer a write."],
        [
            "max-backoff",
            None,
            "60",
            "Longest wait, in seconds, between retries of a write.",
        ],
        ["idle-timeout", None, "30", "Close a station connection idle this many seconds."],
        [
            "max-packet-size",
            None,
            str(MAX_PACKET_SIZE),
            "Largest packet accepted, in bytes; a connection announcing more is cut.",
        ],
        [
            "max-pending",
            None,
            "1000000",
            "Points held in memory for InfluxDB; past this, packets wait in the journal.",
        ],
        [
            "data-dir",
            "d",
            None,
            "Directory of the journal and the quarantine (default: "
            f"${DATA_DIR_VARIABLE}, else $XDG_STATE_HOME/weather, else "
            "~/.local/state/weather).",
        ],
        [
            "journal-max-size",
            None,
            "1G",
            "High-water mark of the journal (K, M, G suffixes): past it, stop "
            "accepting stations until the backlog is delivered.",
        ],
        [
            "journal-min-free",
            None,
            "32M",
            "Stop accepting stations when the data directory's disk has less free.",
        ],
        [
            "max-connections",
            None,
            "512",
            "Station connections open at once; at the limit, stop accepting until "
            "one closes (new ones wait in the kernel's queue).",
        ],
        [
            "max-connections-per-peer",
            None,
            "32",
            "Connections open at once from one address (IPv6: one network, see "
            "--ipv6-peer-prefix); more are closed at once.",
        ],
        [
            "rate-limit",
            None,
            None,
            "New connections per address (IPv6: per network), such as 30/min "
            "(default: no limit).",
        ],
        [
            "ipv6-peer-prefix",
            None,
            "64",
            "IPv6 peers share the per-address limits with their network of this "
            "prefix length (a host takes any address of its /64); 128: each address.",
        ],
        [
            "metrics-port",
            None,
            None,
            "Serve /metrics (Prometheus) and /health here: a port number (bound to "
            "127.0.0.1) or an endpoint string such as tcp:9266:interface=0.0.0.0.",
        ],
        [
            "unhealthy-after",
            None,
            "300",
            "Seconds of failing InfluxDB writes, or at --max-connections without a "
            "break, after which /health answers 503.",
        ],
        [
            "self-stats-interval",
            None,
            "0",
            "Write the server's own figures to InfluxDB (measurement "
            "weather_internal) every this many seconds; 0: never.",
        ],
        [
            "self-stats-host",
            None,
            None,
            "The host tag of those figures (default: this machine's name), so "
            "that several servers can share a database.",
        ],
        [
            "log-max-bytes",
            None,
            "10M",
            "With --logfile: rotate the log at this size (K, M, G suffixes); 0: never "
            "(for an external logrotate).",
        ],
        ["log-keep", None, "10", "With --logfile: rotated logs to keep."],
        ["log-format", None, "text", "Log lines as text or json (one object per line)."],
        ["grace", None, "5", "On stop, seconds open connections get to finish."],
        [
            "shutdown-timeout",
            None,
            "10",
            "On stop, seconds the writer gets to deliver what it holds.",
        ],
    ]
    optFlags = [
        ["insecure", None, "Do not verify InfluxDB's TLS certificate (https:// URLs)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allow"] = []

    def opt_allow(self, network: str) -> None:
        """
        Only take connections from this network (192.168.1.0/24, 2001:db8::/32
        or an address); repeat for more.  Default: from anywhere.
        """
        self["allow"].append(network)

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


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, checked."""

    port: str
    target: IWriteTarget
    profiles: Mapping[int, DeviceProfile]
    devices_file: str | None = None
    verify_tls: bool = True
    ca_pem: bytes | None = None
    batch_size: int = 5000
    flush_interval: float = 1.0
    request_timeout: float = 30.0
    max_backoff: float = 60.0
    idle_timeout: float = 30.0
    max_packet_size: int = MAX_PACKET_SIZE
    grace: float = 5.0
    shutdown_timeout: float = 10.0
    max_pending: int = 1_000_000
    data_dir: str = "weather-data"
    journal_max_bytes: int = 1 << 30
    journal_min_free_bytes: int = 32 << 20
    max_connections: int = 512
    max_connections_per_peer: int = 32
    ipv6_peer_prefix: int = 64
    allow: tuple[Network, ...] = ()
    rate_limit: RateLimit | None = None
    #: Where /metrics and /health are served (None: nowhere).
    metrics_port: str | None = None
    unhealthy_after: float = 300.0
    self_stats_interval: float = 0.0
    #: The host tag of the server's own figures (None: the machine's name).
    self_stats_host: str | None = None
    log_max_bytes: int = 10 << 20
    log_keep: int = 10
    log_json: bool = False
    #: Things worth saying at start-up that do not stop it.
    warnings: tuple[str, ...] = ()


def _number(options: Mapping, name: str, kind: type, low: float, high: float):
    text = options[name]
    try:
        value = kind(text)
    except (TypeError, ValueError):
        noun = "a whole number" if kind is int else "a number"
        raise ConfigurationError(f"--{name} {text!r}: give {noun}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"--{name} {text}: give a value from {low} to {high}")
    return value


SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(options: Mapping, name: str, low: int) -> int:
    """A size in bytes, with an optional K, M, G or T suffix (powers of 1024)."""
    text = str(options[name]).strip()
    number = text.upper().removesuffix("B").removesuffix("I")
    suffix = number[-1:] if number[-1:] in SIZE_SUFFIXES else ""
    digits = number.removesuffix(suffix) if suffix else number
    if not (digits.isascii() and digits.isdigit()):
        raise ConfigurationError(
            f"--{name} {text!r}: give a size in bytes such as 500M or 2G"
        )
    value = int(digits) * SIZE_SUFFIXES[suffix]
    if value < low:
        raise ConfigurationError(f"--{name} {text}: give at least {low} bytes")
    return value


def default_data_dir(environ: Mapping[str, str]) -> str:
    """Where the journal lives when --data-dir is not given."""
    if environ.get(DATA_DIR_VARIABLE):
        return environ[DATA_DIR_VARIABLE]
    state = environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(state, "weather")


def data_dir(value: str | None, environ: Mapping[str, str]) -> str:
    """The data directory, absolute (twistd may change directory later)."""
    if value is not None and not value.strip():
        raise ConfigurationError("--data-dir must not be empty")
    return os.path.abspath(os.path.expanduser(value or default_data_dir(environ)))


def port_description(port: str) -> str:
    """A bare port number means TCP on every interface."""
    port = port.strip()
    if port.isdigit():
        if not 0 <= int(port) <= 65535:
            raise ConfigurationError(f"--port {port}: a port number is 0-65535")
        return f"tcp:{port}"
    return port


def metrics_port(value: str | None) -> str | None:
    """A bare port number means TCP on the loopback interface only."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ConfigurationError("--metrics-port must not be empty")
    if value.isdigit():
        if not 0 <= int(value) <= 65535:
            raise ConfigurationError(f"--metrics-port {value}: a port number is 0-65535")
        return f"tcp:{value}:interface=127.0.0.1"
    return value


def _allow(networks: list[str]) -> tuple[Network, ...]:
    try:
        return tuple(parse_network(text) for text in networks)
    except ValueError as e:
        raise ConfigurationError(f"--allow {e}") from None


def _rate_limit(text: str | None) -> RateLimit | None:
    if text is None:
        return None
    try:
        return RateLimit.parse(text)
    except ValueError as e:
        raise ConfigurationError(f"--rate-limit {e}") from None


def _log_format(text: str) -> bool:
    """True for JSON lines."""
    if text not in ("text", "json"):
        raise ConfigurationError(f"--log-format {text!r}: give text or json")
    return text == "json"


def _self_stats_interval(options: Mapping) -> float:
    value = _number(options, "self-stats-interval", float, 0, 86400)
    if 0 < value < 1:
        raise ConfigurationError(
            f"--self-stats-interval {options['self-stats-interval']}: give 0 (never) "
            "or at least 1 second"
        )
    return value


def _tag_value(options: Mapping, name: str) -> str | None:
    """
    An InfluxDB tag value (None: not given): not empty, printable, and no
    backslash (line protocol cannot tell a literal one before an escaped
    character from an escape; the devices file refuses them too).
    """
    value = options.get(name)
    if value is None:
        return None
    value = str(value).strip()
    if not value or not value.isprintable() or "\\" in value:
        raise ConfigurationError(
            f"--{name} {options[name]!r}: give a name of printable characters "
            "without a backslash"
        )
    return value


def _log_max_bytes(options: Mapping) -> int:
    if str(options["log-max-bytes"]).strip() == "0":
        return 0
    return _size(options, "log-max-bytes", 1024)


def _secret(
    path: str | None,
    variable: str,
    environ: Mapping[str, str],
    what: str,
    warnings: list[str],
) -> str | None:
    """A secret from a file (first line) or an environment variable."""
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.readline().strip()
            mode = os.stat(path).st_mode
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigurationError(f"cannot read the {what} file {path}: {e}") from None
        if not text:
            raise ConfigurationError(f"the {what} file {path} is empty")
        if mode & stat.S_IROTH:
            warnings.append(f"the {what} file {path} is readable by every user")
        return text
    return environ.get(variable) or None


def _url(text: str) -> str:
    parts = urlsplit(text)
    if "@" in parts.netloc:
        # Checked first, so that no message below repeats a password.
        raise ConfigurationError(
            "--influx-url must not hold credentials: use --username with "
            f"--password-file or ${PASSWORD_VARIABLE}"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"--influx-url {text!r}: give an http:// or https:// URL such as "
            "http://localhost:8086"
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise ConfigurationError(f"--influx-url {text!r}: the port must be 1-65535")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"--influx-url {text!r}: remove the query or fragment")
    return text.rstrip("/")


def _target(
    options: Mapping, environ: Mapping[str, str], warnings: list[str]
) -> IWriteTarget:
    url = _url(options["influx-url"])
    if options["bucket"] is not None:
        if options["username"] or options["password-file"]:
            raise ConfigurationError(
                "--bucket writes to InfluxDB 2.x/3.x with a token: use --token-file "
                f"or ${TOKEN_VARIABLE}, not --username/--password-file"
            )
        if not options["bucket"]:
            raise ConfigurationError("--bucket must not be empty")
        token = _secret(options["token-file"], TOKEN_VARIABLE, environ, "token", warnings)
        return InfluxV2(url, options["bucket"], options["org"] or None, token)
    if options["token-file"] is not None or options["org"] is not None:
        raise ConfigurationError(
            "--token-file and --org are for InfluxDB 2.x/3.x: give --bucket too"
        )
    if not options["database"]:
        raise ConfigurationError("--database must not be empty")
    username = options["username"] or None
    password = _secret(
        options["password-file"], PASSWORD_VARIABLE, environ, "password", warnings
    )
    if password is not None and username is None:
        raise ConfigurationError("a password was given without --username")
    if username is not None and password is None:
        raise ConfigurationError(
            f"--username {username} needs a password: --password-file FILE or "
            f"${PASSWORD_VARIABLE}"
        )
    return InfluxV1(
        url, options["database"], options["retention-policy"], username, password
    )


def _ca_pem(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigurationError(f"cannot read --ca-file {path}: {e}") from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigurationError(
            f"--ca-file {path} holds no valid PEM certificate"
        ) from None
    return data


def settings_from_options(options: Mapping, environ: Mapping[str, str]) -> Settings:
    """
    Check every option.

    @raise ConfigurationError: the first problem found, in one line.
    """
    if options.get("removed"):
        raise ConfigurationError(options["removed"])
    refused = options.get("secret-on-command-line")
    if refused:
        raise ConfigurationError(
            f"{refused} is refused: a secret on the command line can be read by "
            "every user of the machine; put it in a file (--password-file, "
            f"--token-file) or in ${PASSWORD_VARIABLE} / ${TOKEN_VARIABLE}"
        )
    port = port_description(options["port"] or "")
    if not port:
        raise ConfigurationError("--port must not be empty")
    devices_file = options["devices"]
    try:
        profiles = load_devices(devices_file) if devices_file else REFERENCE_DEVICES
    except DevicesError as e:
        raise ConfigurationError(str(e)) from None
    warnings: list[str] = []
    target = _target(options, environ, warnings)
    if options["insecure"] and not target.url.startswith("https:"):
        warnings.append("--insecure has no effect: --influx-url is not https://")
    return Settings(
        port=port,
        target=target,
        profiles=profiles,
        devices_file=devices_file,
        verify_tls=not options["insecure"],
        ca_pem=_ca_pem(options["ca-file"]),
        batch_size=_number(options, "batch-size", int, 1, 1_000_000),
        flush_interval=_number(options, "flush-interval", float, 0.001, 3600),
        request_timeout=_number(options, "request-timeout", float, 0.1, 3600),
        max_backoff=_number(options, "max-backoff", float, 1, 86400),
        idle_timeout=_number(options, "idle-timeout", float, 0.1, 86400),
        max_packet_size=_number(
            options, "max-packet-size", int, HEADER_SIZE + 1, MAX_PACKET_SIZE
        ),
        grace=_number(options, "grace", float, 0, 3600),
        shutdown_timeout=_number(options, "shutdown-timeout", float, 0, 86400),
        max_pending=_number(options, "max-pending", int, 1000, 100_000_000),
        data_dir=data_dir(options["data-dir"], environ),
        journal_max_bytes=_size(options, "journal-max-size", 1 << 20),
        journal_min_free_bytes=_size(options, "journal-min-free", 0),
        max_connections=_number(options, "max-connections", int, 1, 1_000_000),
        max_connections_per_peer=_number(
            options, "max-connections-per-peer", int, 1, 1_000_000
        ),
        ipv6_peer_prefix=_number(options, "ipv6-peer-prefix", int, 1, 128),
        allow=_allow(options.get("allow") or []),
        rate_limit=_rate_limit(options["rate-limit"]),
        metrics_port=metrics_port(options["metrics-port"]),
        unhealthy_after=_number(options, "unhealthy-after", float, 0, 86400 * 7),
        self_stats_interval=_self_stats_interval(options),
        self_stats_host=_tag_value(options, "self-stats-host"),
        log_max_bytes=_log_max_bytes(options),
        log_keep=_number(options, "log-keep", int, 0, 100_000),
        log_json=_log_format(options["log-format"]),
        warnings=tuple(warnings),
    )
