"""
C{--config FILE}: the options of the command line in a TOML file, and the
station profiles too if wanted.

A key is an option's name (C{port = "tcp:8266"}, C{max-packet-size = 400},
C{insecure = true}, C{allow = ["192.168.1.0/24"]}) and its value goes
through the option's own coercion, so a bad value gets the command line's
message.  The command line wins over the file.  C{[devices.N]} tables, as in
a devices file, may follow instead of C{devices = "FILE"}.  Secrets stay out:
the file is the one people show, copy and paste.  L{example} is the file
C{weather config} prints.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import sys
import textwrap
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from weather.app.options import (
    DECLARED,
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    TOPICS,
    ConfigurationError,
    Option,
)
from weather.core.devices import (
    MAX_DEVICES_FILE_SIZE,
    TOO_LARGE,
    DeviceProfile,
    DevicesError,
    profiles_from_tables,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Keys refused with the way to give the secret instead.
SECRETS = {
    "password": ("password-file", PASSWORD_VARIABLE),
    "token": ("token-file", TOKEN_VARIABLE),
}

OPTIONS = {option.name: option for option in DECLARED}


@dataclass(frozen=True)
class ConfigFile:
    """A config file read and checked, its values not yet coerced."""

    path: str
    #: Option name -> text (a number as text), true/false (a flag) or a
    #: tuple of texts (an option that may be repeated).
    values: Mapping[str, Any]
    #: The profiles of its [devices.N] tables (None: it has none).
    profiles: Mapping[int, DeviceProfile] | None = None

    def value(self, option: Option) -> Any:
        """C{option}'s value in this file, coerced (None: not in it)."""
        if option.name not in self.values:
            return None
        try:
            return option.value(self.values[option.name])
        except ConfigurationError as e:
            raise ConfigurationError(f"--config {self.path}: {e}") from None

    def coerce(self, options: Mapping[str, Any], typed: Collection[str]) -> dict[str, Any]:
        """
        Every declared option's value, checked, by field name, as
        L{weather.app.options.coerce}: the command line's where C{typed}
        there, else this file's, else the default.
        """
        return {
            option.field: self.value(option)
            if option.name in self.values and option.name not in typed
            else option.value(options[option.name])
            for option in DECLARED
        }


def read_text(path: str) -> str:
    """
    A small text file an option names (--config, --devices).  Only a regular
    file is read, and no more of it than L{MAX_DEVICES_FILE_SIZE}: a FIFO or
    a device would block the reactor (SIGHUP re-reads in it) or never end.

    @raise ValueError: it cannot be read, saying why.
    """
    try:
        # O_NONBLOCK: opening a FIFO waits for a writer otherwise.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ValueError(f"cannot read it ({e.strerror})") from None
    try:
        kind = os.fstat(fd).st_mode
        regular = stat.S_ISREG(kind)
        data = _read(fd, MAX_DEVICES_FILE_SIZE + 1) if regular else b""
    except OSError as e:
        raise ValueError(f"cannot read it ({e.strerror})") from None
    finally:
        os.close(fd)
    if not regular:
        raise ValueError(
            f"{_file_kind(kind)}, not a regular file: give the TOML file itself"
        )
    if len(data) > MAX_DEVICES_FILE_SIZE:
        raise ValueError(TOO_LARGE)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e})") from None


def _read(fd: int, most: int) -> bytes:
    """Up to C{most} bytes of C{fd}: all of them unless the file ends first."""
    chunks = []
    while most > 0:
        chunk = os.read(fd, most)
        if not chunk:
            break
        chunks.append(chunk)
        most -= len(chunk)
    return b"".join(chunks)


def _file_kind(mode: int) -> str:
    """What C{mode} says a file is, in words."""
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a file"


def read_config(path: str) -> ConfigFile:
    """
    Read and check C{path}: TOML, known keys, values of the right kinds,
    valid station profiles.

    @raise ConfigurationError: the first problem, in one line naming the file.
    """
    where = f"--config {path}"
    try:
        document = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError(f"{where}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses into each nested array and table
        raise ConfigurationError(f"{where}: arrays or tables nested too deeply") from None
    except ValueError as e:
        raise ConfigurationError(f"{where}: {e}") from None
    profiles = None
    if isinstance(document.get("devices"), dict):
        try:
            profiles = profiles_from_tables(document.pop("devices"))
        except DevicesError as e:
            raise ConfigurationError(f"{where}: {e}") from None
    values = {}
    for key, value in document.items():
        if key in SECRETS:
            file, variable = SECRETS[key]
            raise ConfigurationError(
                f"{where}: {key} is refused: a config file is shown, copied and "
                f"pasted; put the {key} in a file of its own ({file} = ...) or in "
                f"${variable}"
            )
        if key not in OPTIONS:
            nearest = difflib.get_close_matches(key, OPTIONS, n=1, cutoff=0)
            raise ConfigurationError(
                f"{where}: unknown option {key!r}: did you mean {nearest[0]!r}? "
                "(weather config lists them all)"
            )
        values[key] = _given(OPTIONS[key], value, where)
    return ConfigFile(path, values, profiles)


def _given(option: Option, value: Any, where: str) -> Any:
    """A TOML value as the command line would have given it."""
    if option.flag:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where}: {option.name}: give true or false")
        return value
    if option.repeat:
        items = value if isinstance(value, list) else [value]
        return tuple(_text(option, item, where) for item in items)
    return _text(option, value, where)


def _text(option: Option, value: Any, where: str) -> str:
    """A string, or a number as the text that would be typed for it."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = {bool: "true or false", dict: "a table", list: "an array"}.get(
            type(value), "a date or time"
        )
        raise ConfigurationError(
            f"{where}: {option.name}: give a string or a number, not {kind}"
        )
    return str(value)


def config_devices(path: str) -> Mapping[int, DeviceProfile]:
    """
    The profiles of C{path}'s [devices.N] tables, for SIGHUP.

    @raise ConfigurationError: the file cannot be read, or holds none.
    """
    profiles = read_config(path).profiles
    if profiles is None:
        raise ConfigurationError(f"--config {path}: holds no [devices.N] tables any more")
    return profiles


# -- weather config ------------------------------------------------------------------

#: The reference station (the profiles without a devices file), as TOML.
_FAILED = "invalid = [0xFFFC, 0xFFFF]"
REFERENCE_TABLES = f"""\
[devices.1]
tags = {{ place = "balcony" }}
values = [
  {{ name = "light", unit = "lx", invalid = [0xFFFF] }},
  {{ name = "humidity", conversion = "si7021_humidity", unit = "%", {_FAILED} }},
  {{ name = "temperature", conversion = "si7021_temperature", unit = "°C", {_FAILED} }},
]
"""

HEADER = f"""\
## weather's configuration: twistd weather --config weather.toml
##
## Every option of the command line, by topic. A line "# name = value" shows
## the default: remove the "# " to change it. "## name = ..." is an option with
## no default. The command line wins over this file. Relative paths are from
## the current directory, as on the command line.
##
## Secrets are not read from here: the InfluxDB password or token goes in a
## file of its own (password-file, token-file) or in ${PASSWORD_VARIABLE} /
## ${TOKEN_VARIABLE}.
"""

DEVICES_NOTE = """\
## Station profiles: as in a devices file (README.md, "Station profiles"), here
## instead of devices = "FILE", and after every option (in TOML, the keys that
## follow a table belong to it). SIGHUP re-reads them. Without them, the
## reference station, as below.
"""


def example() -> str:
    """A config file of every option, by topic, commented out: C{weather config}."""
    parts = [HEADER]
    for topic in TOPICS:
        parts.append(f"\n## -- {topic.heading} --\n")
        for option in topic.options:
            parts.append("\n" + _comment(option.help) + _setting(option) + "\n")
    parts.append(f"\n## -- Station profiles --\n\n{DEVICES_NOTE}")
    parts.append(
        "".join(f"# {line}".rstrip() + "\n" for line in REFERENCE_TABLES.splitlines())
    )
    return "".join(parts)


def _comment(text: str) -> str:
    return "".join(
        f"## {line}\n"
        for line in textwrap.wrap(text, 76, break_long_words=False, break_on_hyphens=False)
    )


def _setting(option: Option) -> str:
    """The option's line: its default, commented out, or its key if it has none."""
    if option.flag:
        return f"# {option.name} = false"
    if option.default is None:
        return f"## {option.name} = " + ('["..."]' if option.repeat else '"..."')
    return f"# {option.name} = {_toml(option.default)}"


def _toml(text: str) -> str:
    """A default as TOML: a number as a number, else a string."""
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
