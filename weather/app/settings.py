"""
What the services receive: L{Settings}, made from the options once, at
start-up.

Each option is declared, with its default and coercion, in
L{weather.app.options}; L{settings_from_options} coerces them one by one and
then checks them against each other (which InfluxDB, which credentials),
raising L{ConfigurationError} with a single line that says what to change.
Options not typed on the command line may come from a C{--config} file
(L{weather.app.configfile}).  Credentials come from files or environment
variables, never from the command line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from weather.app.configfile import read_config, read_text
from weather.app.options import (
    DATA_DIR_VARIABLE,
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    ConfigurationError,
    Options,
    coerce,
    data_dir,
)
from weather.core.devices import (
    REFERENCE_DEVICES,
    DeviceProfile,
    DevicesError,
    parse_devices,
)
from weather.server.admission import Network, RateLimit
from weather.server.influx import InfluxV1, InfluxV2, InfluxV3, IWriteTarget

__all__ = [
    "DATA_DIR_VARIABLE",
    "PASSWORD_VARIABLE",
    "TOKEN_VARIABLE",
    "ConfigurationError",
    "Options",
    "Settings",
    "data_dir",
    "load_devices",
    "settings_from_options",
]


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, checked; the defaults are the options'."""

    port: str
    target: IWriteTarget
    profiles: Mapping[int, DeviceProfile]
    #: Where the profiles come from: the --devices file, or the --config file
    #: when it holds them (None: the reference station).
    devices_file: str | None
    verify_tls: bool
    ca_pem: bytes | None
    batch_size: int
    #: Create a missing InfluxDB 1.x database (not --no-create-database).
    create_database: bool
    flush_interval: float
    request_timeout: float
    max_backoff: float
    idle_timeout: float
    packet_deadline: float
    max_packet_size: int
    grace: float
    #: auto, wait or trust (L{weather.server.clock}).
    clock_sync: str
    shutdown_timeout: float
    max_pending: int
    data_dir: str
    journal_max_bytes: int
    journal_min_free_bytes: int
    quarantine_max_bytes: int
    max_connections: int
    max_connections_per_peer: int
    ipv6_peer_prefix: int
    allow: tuple[Network, ...]
    rate_limit: RateLimit | None
    #: Where /metrics and /health are served (None: nowhere).
    metrics_port: str | None
    unhealthy_after: float
    self_stats_interval: float
    #: The host tag of the server's own figures (None: the machine's name).
    self_stats_host: str | None
    log_max_bytes: int
    log_keep: int
    log_json: bool
    #: Things worth saying at start-up that do not stop it.
    warnings: tuple[str, ...]
    #: The --config file the options were read from, if any.
    config_file: str | None


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


def _target(
    given: dict[str, Any], environ: Mapping[str, str], warnings: list[str]
) -> IWriteTarget:
    """InfluxDB 1.x, 2.x or 3, from the options that describe it (taken from C{given})."""
    url = given.pop("influx_url")
    database, policy = given.pop("database"), given.pop("retention_policy")
    username, password_file = given.pop("username"), given.pop("password_file")
    bucket, org, token_file = given.pop("bucket"), given.pop("org"), given.pop("token_file")
    api = given.pop("influx_api") or ("v2" if bucket is not None else "v1")
    if api == "v3":
        if bucket is not None or org is not None or username or password_file or policy:
            raise ConfigurationError(
                "--influx-api v3 writes into --database with a token: --bucket, --org, "
                "--username, --password-file and --retention-policy are not for it"
            )
        if not database:
            raise ConfigurationError("--database must not be empty")
        token = _secret(token_file, TOKEN_VARIABLE, environ, "token", warnings)
        return InfluxV3(url, database, token)
    if api == "v2" and bucket is None:
        raise ConfigurationError("--influx-api v2 writes into a bucket: give --bucket")
    if api == "v1" and bucket is not None:
        raise ConfigurationError("--bucket is for InfluxDB 2.x: not with --influx-api v1")
    if bucket is not None:
        if username or password_file:
            raise ConfigurationError(
                "--bucket writes to InfluxDB 2.x/3.x with a token: use --token-file "
                f"or ${TOKEN_VARIABLE}, not --username/--password-file"
            )
        token = _secret(token_file, TOKEN_VARIABLE, environ, "token", warnings)
        return InfluxV2(url, bucket, org or None, token)
    if token_file is not None or org is not None:
        raise ConfigurationError(
            "--token-file and --org are for InfluxDB 2.x/3.x: give --bucket too"
        )
    if not database:
        raise ConfigurationError("--database must not be empty")
    username = username or None
    password = _secret(password_file, PASSWORD_VARIABLE, environ, "password", warnings)
    if password is not None and username is None:
        raise ConfigurationError("a password was given without --username")
    if username is not None and password is None:
        raise ConfigurationError(
            f"--username {username} needs a password: --password-file FILE or "
            f"${PASSWORD_VARIABLE}"
        )
    return InfluxV1(url, database, policy, username, password)


def load_devices(path: str) -> Mapping[int, DeviceProfile]:
    """
    Read the devices file (--devices; the core parses it, this reads it).

    @raise DevicesError: the file is unreadable or invalid; the message names
        the file and says what to fix.
    """
    try:
        text = read_text(path)
    except ValueError as e:
        raise DevicesError(f"--devices {path}: {e}") from None
    try:
        return parse_devices(text)
    except DevicesError as e:
        raise DevicesError(f"--devices {path}: {e}") from None


def _profiles(path: str | None) -> Mapping[int, DeviceProfile]:
    try:
        return load_devices(path) if path else REFERENCE_DEVICES
    except DevicesError as e:
        raise ConfigurationError(str(e)) from None


def settings_from_options(options: Mapping, environ: Mapping[str, str]) -> Settings:
    """
    Check every option, then the options against each other.

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
    config = read_config(options["config"]) if options.get("config") else None
    if config is None:
        given = coerce(options)
    else:  # the command line wins over the file
        given = config.coerce(options, getattr(options, "typed", ()))
    warnings: list[str] = []
    target = _target(given, environ, warnings)
    insecure = given.pop("insecure")
    if insecure and not target.url.startswith("https:"):
        warnings.append("--insecure has no effect: --influx-url is not https://")
    devices_file = given.pop("devices_file")
    if config is not None and config.profiles is not None:
        if devices_file is not None:
            raise ConfigurationError(
                f"--devices {devices_file} and the [devices.N] tables of --config "
                f"{config.path}: give the station profiles in one place"
            )
        profiles, devices_file = config.profiles, config.path
    else:
        profiles = _profiles(devices_file)
    return Settings(
        target=target,
        profiles=profiles,
        devices_file=devices_file,
        verify_tls=not insecure,
        create_database=not given.pop("no_create_database"),
        data_dir=data_dir(given.pop("data_dir"), environ),
        warnings=tuple(warnings),
        config_file=config.path if config is not None else None,
        **given,
    )
