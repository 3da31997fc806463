"""
Command-line options: defaults, validation, credentials, and the twistd entry
points (makeService, the plugin).
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import fcntl
import io
import os
import re
import signal
import sys

from treq.testing import StubTreq
from twisted.application.service import Application, IServiceMaker
from twisted.internet.ssl import KeyPair
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.resource import Resource

from tests.support import ROOT
from weather import __version__
from weather.app import preflight, tap
from weather.app.lastserver import RecordService
from weather.app.options import DECLARED, TOPICS, Option
from weather.app.reload import HangupService
from weather.app.settings import (
    DATA_DIR_VARIABLE,
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    ConfigurationError,
    Options,
    Settings,
    settings_from_options,
)
from weather.app.signals import QuietRepeatedStop
from weather.core.devices import REFERENCE_DEVICES
from weather.core.packet import MAX_PACKET_SIZE
from weather.journal.service import (
    LOCKNAME,
    ImmediateDiskWorker,
    ThreadDiskWorker,
    check_lock,
)
from weather.journal.store import FILENAME, JournalFile
from weather.server.http import UnverifiedPolicy, tls_policy
from weather.server.influx import InfluxV1, InfluxV2, InfluxV3
from weather.server.service import WeatherService

SECRET = "s3cr3t-XYZ"

DEVICES_TOML = """\
[devices.3]
tags = { place = "garden" }
values = [
  { name = "light" },
  { name = "humidity", conversion = "si7021_humidity" },
  { name = "temperature", conversion = "si7021_temperature" },
]
"""


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def settings(*args: str, environ: dict[str, str] | None = None) -> Settings:
    return settings_from_options(parse(*args), environ if environ is not None else {})


class SettingsTestCase(SynchronousTestCase):
    def write_file(self, content: str | bytes, mode: int = 0o600) -> str:
        path = self.mktemp()
        data = content.encode("utf-8") if isinstance(content, str) else content
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def assertConfigurationError(
        self, *args: str, environ: dict[str, str] | None = None
    ) -> str:
        """The options are refused with a one-line message, which is returned."""
        error = self.assertRaises(ConfigurationError, settings, *args, environ=environ)
        message = str(error)
        self.assertNotEqual(message, "")
        self.assertNotIn("\n", message)
        return message


class DefaultTests(SettingsTestCase):
    def test_defaults(self) -> None:
        result = settings(environ={"HOME": "/home/station"})
        self.assertEqual(
            result,
            Settings(
                port="tcp:8266",
                target=InfluxV1("http://localhost:8086", "weather", None, None, None),
                profiles=REFERENCE_DEVICES,
                devices_file=None,
                verify_tls=True,
                ca_pem=None,
                batch_size=5000,
                create_database=True,
                flush_interval=1.0,
                request_timeout=30.0,
                max_backoff=60.0,
                idle_timeout=30.0,
                packet_deadline=20.0,
                max_packet_size=1024,
                grace=5.0,
                clock_sync="auto",
                shutdown_timeout=10.0,
                max_pending=1_000_000,
                data_dir="/home/station/.local/state/weather",
                journal_max_bytes=1 << 30,
                journal_min_free_bytes=32 << 20,
                quarantine_max_bytes=64 << 20,
                max_connections=512,
                max_connections_per_peer=32,
                ipv6_peer_prefix=64,
                allow=(),
                rate_limit=None,
                metrics_port=None,
                unhealthy_after=300.0,
                self_stats_interval=0.0,
                self_stats_host=None,
                log_max_bytes=10 << 20,
                log_keep=10,
                log_json=False,
                warnings=(),
                config_file=None,
            ),
        )
        self.assertIs(result.profiles, REFERENCE_DEVICES)
        # The largest packet of the stations described (359 bytes), with room.
        self.assertEqual(result.max_packet_size, 1024)
        self.assertEqual(result.target.url, "http://localhost:8086/write")
        self.assertEqual(result.target.params, {"db": "weather", "precision": "ns"})
        self.assertEqual(
            result.target.headers, {"Content-Type": ["text/plain; charset=utf-8"]}
        )

    def test_ipv6PeerPrefix(self) -> None:
        self.assertEqual(settings().ipv6_peer_prefix, 64)
        self.assertEqual(settings("--ipv6-peer-prefix", "128").ipv6_peer_prefix, 128)
        for bad in ("0", "129", "64.5", "x"):
            message = self.assertConfigurationError("--ipv6-peer-prefix", bad)
            self.assertIn("--ipv6-peer-prefix", message)

    def test_selfStatsHost(self) -> None:
        """A host tag given is kept; an empty or multi-line one is refused."""
        self.assertIsNone(settings().self_stats_host)
        self.assertEqual(
            settings("--self-stats-host", " pi-garden ").self_stats_host, "pi-garden"
        )
        for bad in ("", "  ", "two\nlines", "pi\\", "a\\ b"):
            message = self.assertConfigurationError("--self-stats-host", bad)
            self.assertIn("--self-stats-host", message)

    def test_numberTypes(self) -> None:
        result = settings()
        for name in (
            "batch_size",
            "max_packet_size",
            "max_pending",
            "journal_max_bytes",
            "journal_min_free_bytes",
        ):
            self.assertIs(type(getattr(result, name)), int, name)
        for name in (
            "flush_interval",
            "request_timeout",
            "max_backoff",
            "idle_timeout",
            "packet_deadline",
            "grace",
            "shutdown_timeout",
        ):
            self.assertIs(type(getattr(result, name)), float, name)

    def test_environmentIgnoredWithoutItsVariables(self) -> None:
        result = settings(environ={"HOME": "/root", "WEATHER_INFLUX_PASSWORDX": SECRET})
        self.assertEqual(result.target, InfluxV1("http://localhost:8086", "weather"))

    def test_unknownOption(self) -> None:
        self.assertRaises(usage.UsageError, parse, "--no-such-option")

    def test_workersRemoved(self) -> None:
        """--workers, once an option, is refused with one line saying why."""
        for args in (("--workers", "2"), ("--workers=1",)):
            message = self.assertConfigurationError(*args)
            self.assertIn("--workers was removed", message)
            self.assertIn("one server per site", message)

    def test_secretNotAcceptedOnCommandLine(self) -> None:
        """
        Secrets cannot be given on the command line: C{--password SECRET} or
        C{--token SECRET} (which getopt takes as abbreviations of
        C{--password-file} and C{--token-file}) is refused, and the refusal does
        not repeat the secret.
        """
        for args in (
            ("--username", "admin", "--password", SECRET),
            ("--bucket", "wx", "--token", SECRET),
        ):
            try:
                options = parse(*args)
            except usage.UsageError as e:
                self.assertNotIn(SECRET, str(e))
                continue
            error = self.assertRaises(
                ConfigurationError, settings_from_options, options, {}
            )
            self.assertNotIn(SECRET, str(error))


class PortTests(SettingsTestCase):
    def test_bareNumber(self) -> None:
        self.assertEqual(settings("--port", "9000").port, "tcp:9000")
        self.assertEqual(settings("-p", "8267").port, "tcp:8267")
        self.assertEqual(settings("--port", " 9001 ").port, "tcp:9001")

    def test_endpointPassedThrough(self) -> None:
        for description in (
            "tcp:8266:interface=127.0.0.1",
            "tcp6:8266:interface=\\:\\:1",
            "unix:/run/weather.sock",
            "systemd:domain=INET:index=0",
        ):
            self.assertEqual(settings("--port", description).port, description)

    def test_empty(self) -> None:
        message = self.assertConfigurationError("--port", "")
        self.assertEqual(message, "--port must not be empty")
        message = self.assertConfigurationError("--port", "   ")
        self.assertEqual(message, "--port must not be empty")


class BuildServicePortTests(SynchronousTestCase):
    """build_service turns bad endpoint strings into ConfigurationError."""

    def assertBadPort(self, port: str) -> str:
        reactor = MemoryReactorClock()
        error = self.assertRaises(
            ConfigurationError,
            tap.build_service,
            settings("--port", port, "--data-dir", self.mktemp()),
            reactor,
            client=StubTreq(Resource()),
            worker=ImmediateDiskWorker(),
        )
        message = str(error)
        self.assertTrue(message.startswith(f"--port {port}: "), message)
        self.assertNotIn("\n", message)
        self.assertEqual(reactor.tcpServers, [])
        return message

    def test_unknownEndpointType(self) -> None:
        message = self.assertBadPort("bogus:1")
        self.assertEqual(message, "--port bogus:1: Unknown endpoint type: 'bogus'")

    def test_portNotANumber(self) -> None:
        self.assertBadPort("tcp:http")

    def test_unknownParameter(self) -> None:
        message = self.assertBadPort("tcp:8266:bogus=1")
        self.assertIn("bogus", message)

    def test_negativeNumber(self) -> None:
        self.assertBadPort("-1")

    def test_sslWithoutCertificate(self) -> None:
        """
        An ssl: endpoint whose key file does not exist is a configuration
        mistake, not a crash (serverFromString raises FileNotFoundError).
        """
        missing = os.path.abspath(self.mktemp())
        message = self.assertBadPort(f"ssl:8443:privateKey={missing}")
        self.assertIn(missing, message)

    def test_systemdWithoutInheritedSockets(self) -> None:
        """
        systemd: outside a socket-activated unit is a configuration mistake,
        not a crash (serverFromString raises IndexError).
        """
        self.patch(os, "environ", {})
        self.assertBadPort("systemd:domain=INET:index=0")

    def test_goodPort(self) -> None:
        reactor = MemoryReactorClock()
        service = tap.build_service(
            settings("--port", "tcp:8300:interface=127.0.0.1", "--data-dir", self.mktemp()),
            reactor,
            client=StubTreq(Resource()),
            worker=ImmediateDiskWorker(),
        )
        self.assertIsInstance(service, WeatherService)
        self.assertEqual(service.listener.description, "tcp:8300:interface=127.0.0.1")


# option, a value that is not a number, a value below the range, above it
NUMBERS = [
    ("batch-size", "many", "0", "1000001"),
    ("flush-interval", "abc", "0", "3601"),
    ("request-timeout", "30s", "0.05", "3600.5"),
    ("max-backoff", "", "0.5", "86401"),
    ("idle-timeout", "x", "0", "86401"),
    ("max-packet-size", "big", "9", str(MAX_PACKET_SIZE + 1)),
    ("grace", "soon", "-1", "3601"),
    ("shutdown-timeout", "later", "-0.5", "86400.5"),
]


class NumberTests(SettingsTestCase):
    def test_notANumber(self) -> None:
        for name, text, _, _ in NUMBERS:
            message = self.assertConfigurationError(f"--{name}", text)
            self.assertTrue(message.startswith(f"--{name} {text!r}: give "), message)

    def test_wholeNumbers(self) -> None:
        self.assertEqual(
            self.assertConfigurationError("--batch-size", "1.5"),
            "--batch-size '1.5': give a whole number",
        )
        self.assertEqual(
            self.assertConfigurationError("--max-packet-size", "1e3"),
            "--max-packet-size '1e3': give a whole number",
        )
        self.assertEqual(
            self.assertConfigurationError("--flush-interval", "abc"),
            "--flush-interval 'abc': give a number",
        )

    def test_outOfRange(self) -> None:
        for name, _, low, high in NUMBERS:
            for text in (low, high):
                message = self.assertConfigurationError(f"--{name}", text)
                self.assertTrue(
                    message.startswith(f"--{name} {text}: give a value from "), message
                )

    def test_rangeMessage(self) -> None:
        self.assertEqual(
            self.assertConfigurationError("--batch-size", "0"),
            "--batch-size 0: give a value from 1 to 1000000",
        )
        self.assertEqual(
            self.assertConfigurationError("--max-packet-size", "9"),
            "--max-packet-size 9: give a value from 10 to 65544",
        )

    def test_notFinite(self) -> None:
        for name in ("flush-interval", "grace", "shutdown-timeout", "max-backoff"):
            for text in ("nan", "inf", "-inf"):
                message = self.assertConfigurationError(f"--{name}", text)
                self.assertIn(f"--{name}", message)

    def test_bounds(self) -> None:
        low = settings(
            "--batch-size",
            "1",
            "--flush-interval",
            "0.001",
            "--request-timeout",
            "0.1",
            "--max-backoff",
            "1",
            "--idle-timeout",
            "0.1",
            "--packet-deadline",
            "0.1",
            "--max-packet-size",
            "10",
            "--grace",
            "0",
            "--shutdown-timeout",
            "0",
        )
        self.assertEqual(
            (
                low.batch_size,
                low.flush_interval,
                low.request_timeout,
                low.max_backoff,
                low.idle_timeout,
                low.packet_deadline,
                low.max_packet_size,
                low.grace,
                low.shutdown_timeout,
            ),
            (1, 0.001, 0.1, 1.0, 0.1, 0.1, 10, 0.0, 0.0),
        )
        high = settings(
            "--batch-size",
            "1000000",
            "--flush-interval",
            "3600",
            "--request-timeout",
            "3600",
            "--max-backoff",
            "86400",
            "--idle-timeout",
            "86400",
            "--packet-deadline",
            "86400",
            "--max-packet-size",
            str(MAX_PACKET_SIZE),
            "--grace",
            "3600",
            "--shutdown-timeout",
            "86400",
        )
        self.assertEqual(
            (
                high.batch_size,
                high.flush_interval,
                high.request_timeout,
                high.max_backoff,
                high.idle_timeout,
                high.packet_deadline,
                high.max_packet_size,
                high.grace,
                high.shutdown_timeout,
            ),
            (1_000_000, 3600.0, 3600.0, 86400.0, 86400.0, 86400.0, 65544, 3600.0, 86400.0),
        )

    def test_values(self) -> None:
        result = settings(
            "--flush-interval", "0.25", "--batch-size", "250", "--grace", "2.5"
        )
        self.assertEqual(
            (result.flush_interval, result.batch_size, result.grace), (0.25, 250, 2.5)
        )


class DataDirTests(SettingsTestCase):
    """Where the journal lives: --data-dir, else the environment's choice."""

    def data_dir(self, *args: str, **environ: str) -> str:
        return settings(*args, environ=environ).data_dir

    def test_variable(self) -> None:
        self.assertEqual(
            self.data_dir(
                WEATHER_DATA_DIR="/srv/weather",
                XDG_STATE_HOME="/home/station/state",
                HOME="/home/station",
            ),
            "/srv/weather",
        )

    def test_xdgStateHome(self) -> None:
        self.assertEqual(
            self.data_dir(XDG_STATE_HOME="/home/station/state", HOME="/home/station"),
            "/home/station/state/weather",
        )

    def test_home(self) -> None:
        self.assertEqual(
            self.data_dir(HOME="/home/station"), "/home/station/.local/state/weather"
        )

    def test_emptyVariablesIgnored(self) -> None:
        self.assertEqual(
            self.data_dir(WEATHER_DATA_DIR="", XDG_STATE_HOME="", HOME="/home/station"),
            "/home/station/.local/state/weather",
        )

    def test_noHome(self) -> None:
        """Without $HOME in the environment given, the user's home directory."""
        self.patch(os, "environ", {"HOME": "/home/elsewhere"})
        self.assertEqual(self.data_dir(), "/home/elsewhere/.local/state/weather")

    def test_optionWins(self) -> None:
        self.assertEqual(
            self.data_dir(
                "--data-dir",
                "/var/lib/weather",
                WEATHER_DATA_DIR="/srv/weather",
                XDG_STATE_HOME="/state",
                HOME="/home/station",
            ),
            "/var/lib/weather",
        )
        self.assertEqual(self.data_dir("-d", "/var/lib/weather"), "/var/lib/weather")

    def test_madeAbsolute(self) -> None:
        """twistd changes directory when it daemonizes: the path must not depend on it."""
        self.assertEqual(self.data_dir("--data-dir", "wx"), os.path.abspath("wx"))
        self.assertEqual(
            self.data_dir(WEATHER_DATA_DIR="relative"), os.path.abspath("relative")
        )

    def test_tildeExpanded(self) -> None:
        self.patch(os, "environ", {"HOME": "/home/station"})
        self.assertEqual(self.data_dir("--data-dir", "~/wx"), "/home/station/wx")

    def test_empty(self) -> None:
        for value in ("", "   "):
            self.assertEqual(
                self.assertConfigurationError("--data-dir", value),
                "--data-dir must not be empty",
            )

    def test_variableName(self) -> None:
        self.assertEqual(DATA_DIR_VARIABLE, "WEATHER_DATA_DIR")
        self.assertIn("$WEATHER_DATA_DIR", Options().__str__())


class JournalSizeTests(SettingsTestCase):
    def test_defaults(self) -> None:
        result = settings()
        self.assertEqual(result.journal_max_bytes, 1 << 30)
        self.assertEqual(result.journal_min_free_bytes, 32 << 20)

    def test_maxSize(self) -> None:
        cases = {
            "500M": 500 << 20,
            "2G": 2 << 30,
            "1GiB": 1 << 30,
            "1GB": 1 << 30,
            "2g": 2 << 30,
            "1048576": 1 << 20,
            "4096K": 4 << 20,
            "1T": 1 << 40,
            " 64M ": 64 << 20,
        }
        for text, expected in cases.items():
            self.assertEqual(
                settings("--journal-max-size", text).journal_max_bytes, expected, text
            )

    def test_notASize(self) -> None:
        for text in ("lots", "", "1.5G", "-1G", "M", "1X", "1 G", "G1", "0x100000"):
            self.assertEqual(
                self.assertConfigurationError("--journal-max-size", text),
                f"--journal-max-size {text.strip()!r}: give a size in bytes such as "
                "500M or 2G",
            )

    def test_minimum(self) -> None:
        """At least a mebibyte."""
        self.assertEqual(settings("--journal-max-size", "1M").journal_max_bytes, 1 << 20)
        self.assertEqual(
            self.assertConfigurationError("--journal-max-size", "1048575"),
            "--journal-max-size 1048575: give at least 1048576 bytes",
        )
        self.assertEqual(
            self.assertConfigurationError("--journal-max-size", "1023K"),
            "--journal-max-size 1023K: give at least 1048576 bytes",
        )
        self.assertEqual(
            self.assertConfigurationError("--journal-max-size", "0"),
            "--journal-max-size 0: give at least 1048576 bytes",
        )

    def test_minFree(self) -> None:
        for text, expected in {"0": 0, "100M": 100 << 20, "1G": 1 << 30}.items():
            self.assertEqual(
                settings("--journal-min-free", text).journal_min_free_bytes, expected
            )
        self.assertEqual(
            self.assertConfigurationError("--journal-min-free", "plenty"),
            "--journal-min-free 'plenty': give a size in bytes such as 500M or 2G",
        )
        self.assertEqual(
            self.assertConfigurationError("--journal-min-free", "-1"),
            "--journal-min-free '-1': give a size in bytes such as 500M or 2G",
        )


class InfluxUrlTests(SettingsTestCase):
    def test_notHttp(self) -> None:
        for url in ("ftp://localhost:8086", "localhost:8086", "udp://localhost:8089"):
            message = self.assertConfigurationError("--influx-url", url)
            self.assertEqual(
                message,
                f"--influx-url {url!r}: give an http:// or https:// URL such as "
                "http://localhost:8086",
            )

    def test_noHost(self) -> None:
        for url in ("http://", "http://:8086", "https:///write", "8086"):
            message = self.assertConfigurationError("--influx-url", url)
            self.assertTrue(message.startswith(f"--influx-url {url!r}: "), message)

    def test_credentials(self) -> None:
        for url in ("http://admin:pw@localhost:8086", "https://admin@influx.example"):
            message = self.assertConfigurationError("--influx-url", url)
            self.assertEqual(
                message,
                "--influx-url must not hold credentials: use --username with "
                f"--password-file or ${PASSWORD_VARIABLE}",
            )

    def test_queryOrFragment(self) -> None:
        for url in ("http://localhost:8086/?db=weather", "http://localhost:8086/#x"):
            message = self.assertConfigurationError("--influx-url", url)
            self.assertEqual(message, f"--influx-url {url!r}: remove the query or fragment")

    def test_trailingSlashStripped(self) -> None:
        result = settings("--influx-url", "https://influx.example:8086/")
        self.assertEqual(result.target.base_url, "https://influx.example:8086")
        self.assertEqual(result.target.url, "https://influx.example:8086/write")
        result = settings("--influx-url", "https://influx.example/influx/")
        self.assertEqual(result.target.base_url, "https://influx.example/influx")
        self.assertEqual(result.target.url, "https://influx.example/influx/write")

    def test_portNotANumber(self) -> None:
        """
        A URL whose port is not a number is refused at start-up: the writer
        cannot build a request from it.
        """
        message = self.assertConfigurationError("--influx-url", "http://localhost:notaport")
        self.assertIn("--influx-url", message)

    def test_portOutOfRange(self) -> None:
        message = self.assertConfigurationError("--influx-url", "http://localhost:99999")
        self.assertIn("--influx-url", message)

    def test_databaseAndRetentionPolicy(self) -> None:
        result = settings("--database", "wx", "--retention-policy", "year")
        self.assertEqual(
            result.target, InfluxV1("http://localhost:8086", "wx", "year", None, None)
        )
        self.assertEqual(
            result.target.params, {"db": "wx", "precision": "ns", "rp": "year"}
        )

    def test_emptyDatabase(self) -> None:
        self.assertEqual(
            self.assertConfigurationError("--database", ""), "--database must not be empty"
        )


class V1CredentialTests(SettingsTestCase):
    def test_passwordFile(self) -> None:
        path = self.write_file(f"  {SECRET}  \nsecond line\n")
        result = settings("--username", "admin", "--password-file", path)
        self.assertEqual(
            result.target,
            InfluxV1("http://localhost:8086", "weather", None, "admin", SECRET),
        )
        self.assertEqual(result.warnings, ())
        expected = base64.b64encode(f"admin:{SECRET}".encode()).decode()
        self.assertEqual(result.target.headers["Authorization"], [f"Basic {expected}"])

    def test_passwordFileWithoutNewline(self) -> None:
        path = self.write_file(SECRET)
        result = settings("--username", "admin", "--password-file", path)
        self.assertEqual(result.target.password, SECRET)

    def test_passwordVariable(self) -> None:
        result = settings("--username", "admin", environ={PASSWORD_VARIABLE: SECRET})
        self.assertEqual(
            result.target,
            InfluxV1("http://localhost:8086", "weather", None, "admin", SECRET),
        )

    def test_fileBeatsVariable(self) -> None:
        path = self.write_file(SECRET + "\n")
        result = settings(
            "--username",
            "admin",
            "--password-file",
            path,
            environ={PASSWORD_VARIABLE: "other"},
        )
        self.assertEqual(result.target.password, SECRET)

    def test_usernameWithoutPassword(self) -> None:
        message = self.assertConfigurationError("--username", "admin")
        self.assertEqual(
            message,
            "--username admin needs a password: --password-file FILE or "
            f"${PASSWORD_VARIABLE}",
        )
        message = self.assertConfigurationError(
            "--username", "admin", environ={PASSWORD_VARIABLE: ""}
        )
        self.assertIn("--username admin needs a password", message)

    def test_passwordFileWithoutUsername(self) -> None:
        path = self.write_file(SECRET + "\n")
        message = self.assertConfigurationError("--password-file", path)
        self.assertEqual(message, "a password was given without --username")

    def test_passwordVariableWithoutUsername(self) -> None:
        message = self.assertConfigurationError(environ={PASSWORD_VARIABLE: SECRET})
        self.assertEqual(message, "a password was given without --username")

    def test_missingFile(self) -> None:
        path = os.path.abspath(self.mktemp())
        message = self.assertConfigurationError(
            "--username", "admin", "--password-file", path
        )
        self.assertTrue(
            message.startswith(f"cannot read the password file {path}: "), message
        )

    def test_unreadableFile(self) -> None:
        """A directory cannot be read as a file (even by root)."""
        path = os.path.abspath(self.mktemp())
        os.mkdir(path)
        message = self.assertConfigurationError(
            "--username", "admin", "--password-file", path
        )
        self.assertTrue(
            message.startswith(f"cannot read the password file {path}: "), message
        )

    def test_notUtf8(self) -> None:
        path = self.write_file(b"\xff\xfe" + SECRET.encode() + b"\n")
        message = self.assertConfigurationError(
            "--username", "admin", "--password-file", path
        )
        self.assertTrue(
            message.startswith(f"cannot read the password file {path}: "), message
        )
        self.assertNotIn(SECRET, message)

    def test_emptyFile(self) -> None:
        for content in ("", "\n", "   \n", f"\n{SECRET}\n"):
            path = self.write_file(content)
            message = self.assertConfigurationError(
                "--username", "admin", "--password-file", path
            )
            self.assertEqual(message, f"the password file {path} is empty")

    def test_worldReadable(self) -> None:
        path = self.write_file(SECRET + "\n", mode=0o644)
        result = settings("--username", "admin", "--password-file", path)
        self.assertEqual(result.target.password, SECRET)
        self.assertEqual(
            result.warnings, (f"the password file {path} is readable by every user",)
        )

    def test_groupReadableNoWarning(self) -> None:
        path = self.write_file(SECRET + "\n", mode=0o640)
        result = settings("--username", "admin", "--password-file", path)
        self.assertEqual(result.warnings, ())


class V2CredentialTests(SettingsTestCase):
    def test_tokenFile(self) -> None:
        path = self.write_file(SECRET + "\n")
        result = settings("--bucket", "wx", "--org", "home", "--token-file", path)
        self.assertEqual(
            result.target, InfluxV2("http://localhost:8086", "wx", "home", SECRET)
        )
        self.assertEqual(result.target.url, "http://localhost:8086/api/v2/write")
        self.assertEqual(
            result.target.params, {"bucket": "wx", "org": "home", "precision": "ns"}
        )
        self.assertEqual(result.target.headers["Authorization"], [f"Token {SECRET}"])
        self.assertEqual(result.warnings, ())

    def test_tokenVariable(self) -> None:
        result = settings("--bucket", "wx", environ={TOKEN_VARIABLE: SECRET})
        self.assertEqual(
            result.target, InfluxV2("http://localhost:8086", "wx", None, SECRET)
        )

    def test_tokenFileBeatsVariable(self) -> None:
        path = self.write_file(SECRET + "\n")
        result = settings(
            "--bucket", "wx", "--token-file", path, environ={TOKEN_VARIABLE: "other"}
        )
        self.assertEqual(result.target.token, SECRET)

    def test_passwordVariableIgnoredForBucket(self) -> None:
        result = settings(
            "--bucket", "wx", environ={TOKEN_VARIABLE: SECRET, PASSWORD_VARIABLE: "pw"}
        )
        self.assertEqual(
            result.target, InfluxV2("http://localhost:8086", "wx", None, SECRET)
        )

    def test_bucketWithUsername(self) -> None:
        message = self.assertConfigurationError(
            "--bucket", "wx", "--username", "admin", environ={TOKEN_VARIABLE: SECRET}
        )
        self.assertEqual(
            message,
            "--bucket writes to InfluxDB 2.x/3.x with a token: use --token-file "
            f"or ${TOKEN_VARIABLE}, not --username/--password-file",
        )

    def test_bucketWithPasswordFile(self) -> None:
        path = self.write_file(SECRET + "\n")
        message = self.assertConfigurationError("--bucket", "wx", "--password-file", path)
        self.assertIn("--bucket", message)
        self.assertIn("--password-file", message)

    def test_orgWithoutBucket(self) -> None:
        message = self.assertConfigurationError("--org", "home")
        self.assertEqual(
            message, "--token-file and --org are for InfluxDB 2.x/3.x: give --bucket too"
        )

    def test_tokenFileWithoutBucket(self) -> None:
        path = self.write_file(SECRET + "\n")
        message = self.assertConfigurationError("--token-file", path)
        self.assertEqual(
            message, "--token-file and --org are for InfluxDB 2.x/3.x: give --bucket too"
        )

    def test_emptyBucket(self) -> None:
        self.assertEqual(
            self.assertConfigurationError("--bucket", "", environ={TOKEN_VARIABLE: SECRET}),
            "--bucket must not be empty",
        )

    def test_emptyTokenFile(self) -> None:
        path = self.write_file("\n")
        self.assertEqual(
            self.assertConfigurationError("--bucket", "wx", "--token-file", path),
            f"the token file {path} is empty",
        )

    def test_missingTokenFile(self) -> None:
        path = os.path.abspath(self.mktemp())
        message = self.assertConfigurationError("--bucket", "wx", "--token-file", path)
        self.assertTrue(message.startswith(f"cannot read the token file {path}: "), message)

    def test_worldReadableTokenFile(self) -> None:
        path = self.write_file(SECRET + "\n", mode=0o604)
        result = settings("--bucket", "wx", "--token-file", path)
        self.assertEqual(
            result.warnings, (f"the token file {path} is readable by every user",)
        )


class SecretTests(SettingsTestCase):
    """The password and token never show in text meant for people."""

    def assertNoSecret(self, text: str) -> None:
        self.assertNotIn(SECRET, text)
        self.assertNotIn(base64.b64encode(f"admin:{SECRET}".encode()).decode(), text)

    def test_v1Settings(self) -> None:
        path = self.write_file(SECRET + "\n", mode=0o644)
        for result in (
            settings("--username", "admin", "--password-file", path),
            settings("--username", "admin", environ={PASSWORD_VARIABLE: SECRET}),
        ):
            self.assertEqual(result.target.password, SECRET)
            for text in (
                str(result),
                repr(result),
                str(result.target),
                repr(result.target),
                result.target.describe(),
                " ".join(result.warnings),
            ):
                self.assertNoSecret(text)
        self.assertEqual(
            settings("--username", "admin", "--password-file", path).target.describe(),
            "InfluxDB 1.x at http://localhost:8086 database weather as user admin",
        )

    def test_v2Settings(self) -> None:
        path = self.write_file(SECRET + "\n", mode=0o644)
        for result in (
            settings("--bucket", "wx", "--org", "home", "--token-file", path),
            settings("--bucket", "wx", "--org", "home", environ={TOKEN_VARIABLE: SECRET}),
        ):
            self.assertEqual(result.target.token, SECRET)
            for text in (
                str(result),
                repr(result),
                str(result.target),
                repr(result.target),
                result.target.describe(),
                " ".join(result.warnings),
            ):
                self.assertNoSecret(text)
        self.assertEqual(
            settings(
                "--bucket", "wx", "--org", "home", "--token-file", path
            ).target.describe(),
            "InfluxDB 2.x/3.x at http://localhost:8086 bucket wx org home",
        )

    def test_errors(self) -> None:
        secret_file = self.write_file(SECRET + "\n")
        second_line = self.write_file(f"\n{SECRET}\n")
        both = {PASSWORD_VARIABLE: SECRET, TOKEN_VARIABLE: SECRET}
        cases = [
            ((), both),
            (("--password-file", secret_file), {}),
            (("--bucket", "wx", "--password-file", secret_file), {}),
            (("--bucket", "wx", "--username", "admin"), both),
            (("--token-file", secret_file), {}),
            (("--org", "home"), both),
            (("--username", "admin", "--password-file", second_line), {}),
            (("--bucket", "wx", "--token-file", second_line), {}),
            (("--username", "admin", "--batch-size", "0"), both),
            (("--bucket", "wx", "--grace", "never"), both),
            (("--bucket", "wx", "--influx-url", "ftp://localhost"), both),
            (("--influx-url", f"http://admin:{SECRET}@localhost:8086"), {}),
            (("--influx-url", f"http://admin:{SECRET}@localhost:8086/?q=1"), {}),
        ]
        for args, environ in cases:
            message = self.assertConfigurationError(*args, environ=environ)
            self.assertNoSecret(message)

    def test_urlCredentialsNotEchoed(self) -> None:
        """
        A password put in --influx-url is not repeated in the error, whatever
        else is wrong with the URL.
        """
        for url in (
            f"ftp://admin:{SECRET}@localhost:8086",
            f"http://admin:{SECRET}@",
            f"localhost://admin:{SECRET}@8086",
        ):
            message = self.assertConfigurationError("--influx-url", url)
            self.assertNoSecret(message)


class DevicesTests(SettingsTestCase):
    def test_goodFile(self) -> None:
        path = self.write_file(DEVICES_TOML)
        result = settings("--devices", path)
        self.assertEqual(list(result.profiles), [3])
        self.assertEqual(result.profiles[3].tags, (("place", "garden"),))
        self.assertEqual(
            [spec.name for spec in result.profiles[3].values],
            ["light", "humidity", "temperature"],
        )
        self.assertEqual(result.devices_file, path)

    def test_missingFile(self) -> None:
        path = os.path.abspath(self.mktemp())
        message = self.assertConfigurationError("--devices", path)
        self.assertTrue(message.startswith(f"--devices {path}: cannot read it ("), message)

    def test_notToml(self) -> None:
        path = self.write_file("[devices.1\nvalues = \n")
        message = self.assertConfigurationError("--devices", path)
        self.assertTrue(message.startswith(f"--devices {path}: not valid TOML"), message)

    def test_badProfile(self) -> None:
        path = self.write_file('[devices.1]\nvalues = [{ name = "x", type = "u64" }]\n')
        message = self.assertConfigurationError("--devices", path)
        self.assertTrue(message.startswith(f"--devices {path}: "), message)
        self.assertIn("devices.1.values[0].type", message)

    def test_noDevices(self) -> None:
        path = self.write_file("")
        message = self.assertConfigurationError("--devices", path)
        self.assertTrue(message.startswith(f"--devices {path}: "), message)


class TlsTests(SettingsTestCase):
    def ca_pem(self) -> bytes:
        key = KeyPair.generate(size=2048)
        return key.selfSignedCert(1, CN="weather test CA").dumpPEM()

    def test_caFile(self) -> None:
        pem = self.ca_pem()
        path = self.write_file(pem)
        result = settings("--influx-url", "https://influx.example", "--ca-file", path)
        self.assertEqual(result.ca_pem, pem)
        self.assertTrue(result.verify_tls)
        self.assertEqual(result.warnings, ())
        self.assertIsInstance(
            tls_policy(result.verify_tls, result.ca_pem), BrowserLikePolicyForHTTPS
        )

    def test_caFileNotPem(self) -> None:
        path = self.write_file(b"\x30\x82\x01\x0a not a PEM file")
        message = self.assertConfigurationError("--ca-file", path)
        self.assertEqual(message, f"--ca-file {path} holds no valid PEM certificate")

    def test_caFileMissing(self) -> None:
        path = os.path.abspath(self.mktemp())
        message = self.assertConfigurationError("--ca-file", path)
        self.assertTrue(message.startswith(f"cannot read --ca-file {path}: "), message)

    def test_insecureWithHttp(self) -> None:
        result = settings("--insecure")
        self.assertFalse(result.verify_tls)
        self.assertEqual(
            result.warnings, ("--insecure has no effect: --influx-url is not https://",)
        )

    def test_noCreateDatabase(self) -> None:
        """The database is created unless --no-create-database says not to."""
        self.assertTrue(settings().create_database)
        self.assertFalse(settings("--no-create-database").create_database)

    def test_insecureWithHttps(self) -> None:
        result = settings("--insecure", "--influx-url", "https://influx.example:8086")
        self.assertFalse(result.verify_tls)
        self.assertEqual(result.warnings, ())
        self.assertIsInstance(
            tls_policy(result.verify_tls, result.ca_pem), UnverifiedPolicy
        )


class MakeServiceTests(SettingsTestCase):
    def setUp(self) -> None:
        # Should a test forget --data-dir, the default is not the real home's.
        self.patch(os, "environ", {"HOME": os.path.abspath(self.mktemp())})
        self.data_dir = os.path.abspath(self.mktemp())
        self.in_use: set[int] = set()
        self.patch(preflight, "bind_probe", self.bind)

    def bind(self, interface: str, port: int) -> None:
        """The ports are bound in the integration tests, not here."""
        if port in self.in_use:
            raise OSError(errno.EADDRINUSE, "Address already in use")

    def make(self, *args: str):
        return tap.makeService(parse("--data-dir", self.data_dir, *args))

    def assertExits(self, *args: str) -> str:
        error = self.assertRaises(SystemExit, self.make, *args)
        message = error.code
        self.assertIsInstance(message, str)
        self.assertTrue(message.startswith("weather: "), message)
        self.assertNotIn("\n", message)
        return message

    def test_startLinesGiveStatusPage(self) -> None:
        """The start-up lines say where the status page is, and count profiles."""
        with capturedLogs() as events:
            self.make("--metrics-port", "tcp:9266:interface=127.0.0.1")
        lines = [formatEvent(e) for e in events]
        self.assertIn(
            "Status page on http://127.0.0.1:9266/ (/metrics and /health beside it)",
            lines,
        )
        profiles = "; 1 station profile (built-in"
        self.assertTrue(any(profiles in line for line in lines), lines)

    def test_badNumber(self) -> None:
        self.assertEqual(
            self.assertExits("--batch-size", "0"),
            "weather: --batch-size 0: give a value from 1 to 1000000",
        )

    def test_badPort(self) -> None:
        self.assertEqual(
            self.assertExits("--port", "bogus:1"),
            "weather: --port bogus:1: Unknown endpoint type: 'bogus'",
        )

    def test_portInUse(self) -> None:
        """Checked before twistd daemonizes, so the message is one line."""
        self.in_use.add(8266)
        self.assertEqual(
            self.assertExits(),
            "weather: --port tcp:8266: port 8266 is in use: stop what listens there "
            "(ss -ltnp 'sport = :8266') or give another port",
        )

    def test_metricsPortInUse(self) -> None:
        self.in_use.add(9266)
        self.assertTrue(
            self.assertExits("--metrics-port", "9266").startswith(
                "weather: --metrics-port tcp:9266:interface=127.0.0.1: port 9266 is in use"
            )
        )

    def test_samePortTwice(self) -> None:
        self.assertEqual(
            self.assertExits("--metrics-port", "8266"),
            "weather: --metrics-port tcp:8266:interface=127.0.0.1: the same port as "
            "--port tcp:8266: give another",
        )

    def test_badInfluxUrl(self) -> None:
        self.assertEqual(
            self.assertExits("--influx-url", "http://[::1"),
            "weather: --influx-url 'http://[::1': not a URL (Invalid IPv6 URL): give "
            "one such as http://localhost:8086 or http://[::1]:8086",
        )

    def test_absurdMinFree(self) -> None:
        self.assertTrue(
            self.assertExits("--journal-min-free", "99999999G").startswith(
                "weather: --journal-min-free 99999999G: more than half of the file system"
            )
        )

    def test_dataDirCannotBeWritten(self) -> None:
        if not os.path.isdir("/proc/1"):
            self.skipTest("no /proc/1 here")
        self.data_dir = "/proc/1"
        self.assertTrue(
            self.assertExits().startswith(
                "weather: --data-dir /proc/1: cannot create files in /proc/1"
            )
        )

    def test_deeplyNestedDevicesFile(self) -> None:
        path = self.write_file("a = " + "[" * 5000 + "]" * 5000 + "\n")
        self.assertIn("nested too deeply", self.assertExits("--devices", path))

    def test_sigusr1WithoutLogFile(self) -> None:
        """Logging to stdout, a burst of SIGUSR1 is answered in one line."""
        self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        reactor = MemoryReactorClock()
        reactor.callFromThread = lambda f, *args, **kwargs: f(*args, **kwargs)
        twistd_options = {"nodaemon": True, "logfile": None}
        with capturedLogs() as events:
            tap._log_to(Application("weather"), twistd_options, settings(), reactor)
            for _ in range(5):
                signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["SIGUSR1: this server does not write a log file; nothing to rotate"],
        )

    def test_badDevicesFile(self) -> None:
        path = os.path.abspath(self.mktemp())
        message = self.assertExits("--devices", path)
        self.assertIn(path, message)

    def test_secretNotInMessage(self) -> None:
        os.environ[PASSWORD_VARIABLE] = SECRET
        message = self.assertExits("--grace", "-1")
        self.assertNotIn(SECRET, message)

    def test_corruptCaFile(self) -> None:
        """
        A CA file that looks like PEM but does not hold a certificate stops
        start-up with a one-line message, not a traceback.
        """
        path = self.write_file(
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
        )
        message = self.assertExits(
            "--influx-url", "https://influx.example", "--ca-file", path
        )
        self.assertIn(path, message)

    def test_service(self) -> None:
        service = self.make("--port", "tcp:0:interface=127.0.0.1")
        self.assertIsInstance(service, WeatherService)
        self.assertEqual(
            [type(side) for side in service.monitoring][-3:],
            [HangupService, QuietRepeatedStop, RecordService],
        )
        self.assertEqual(service.listener.description, "tcp:0:interface=127.0.0.1")
        self.assertFalse(service.running)
        self.assertEqual(service.journal.directory, self.data_dir)
        # The journal's thread starts with the service, under twistd, not here.
        self.assertIsInstance(service.journal.worker, ThreadDiskWorker)
        self.assertFalse(service.journal.worker.pool.started)
        self.assertIsNone(service.journal.file)

    def test_dataDirNotCreated(self) -> None:
        """
        Before twistd daemonizes (and perhaps switches user with --uid), the
        data directory is checked but nothing is created: the user the
        server runs as must own what the journal creates.
        """
        self.make()
        self.assertFalse(os.path.exists(self.data_dir))

    def test_existingJournalChecked(self) -> None:
        """An existing journal is opened once and its lock let go."""
        JournalFile(self.data_dir).close()
        check_lock(self.data_dir)
        self.make()
        fd = os.open(os.path.join(self.data_dir, LOCKNAME), os.O_RDWR)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def test_unreadableJournal(self) -> None:
        os.makedirs(self.data_dir)
        with open(os.path.join(self.data_dir, FILENAME), "wb") as f:
            f.write(b"not SQLite at all" * 200)
        self.assertTrue(self.assertExits().startswith("weather: the journal "))

    def test_dataDirInUse(self) -> None:
        os.makedirs(self.data_dir)
        fd = os.open(os.path.join(self.data_dir, LOCKNAME), os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.assertEqual(
            self.assertExits(),
            f"weather: another weather server is using --data-dir {self.data_dir}",
        )

    def test_dataDirUnusable(self) -> None:
        """A --data-dir that cannot be a directory: one line, saying why."""
        with open(self.data_dir, "w"):
            pass
        message = self.assertExits()
        self.assertTrue(
            message.startswith(f"weather: --data-dir {self.data_dir}: "),
            message,
        )

    def test_dataDirFromEnvironment(self) -> None:
        """makeService reads the real environment: $WEATHER_DATA_DIR is honoured."""
        os.environ[DATA_DIR_VARIABLE] = self.data_dir
        service = tap.makeService(parse())
        self.assertEqual(service.journal.directory, self.data_dir)

    def test_warningsLogged(self) -> None:
        """
        Configuration warnings are logged at warn level.  (The event must not
        use the key C{warning}: trial, like the legacy log system, takes events
        with that key for Python warnings and fails on them.)
        """
        with capturedLogs() as events:
            self.make("--insecure")
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn(
            "--insecure has no effect: --influx-url is not https://",
            formatEvent(warnings[0]),
        )


class PluginTests(SynchronousTestCase):
    def test_plugin(self) -> None:
        makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "weather"]
        self.assertEqual(len(makers), 1)
        self.assertIs(makers[0].options, Options)
        self.assertIs(makers[0].makeService, tap.makeService)


class OperationsOptionsTests(SettingsTestCase):
    """Limits, the monitoring endpoint, self-statistics and logs."""

    def test_defaults(self) -> None:
        result = settings()
        self.assertEqual(
            (
                result.max_connections,
                result.max_connections_per_peer,
                result.allow,
                result.rate_limit,
                result.metrics_port,
                result.unhealthy_after,
                result.self_stats_interval,
                result.log_max_bytes,
                result.log_keep,
                result.log_json,
            ),
            (512, 32, (), None, None, 300.0, 0.0, 10 << 20, 10, False),
        )

    def test_metricsPortNumberIsLoopback(self) -> None:
        self.assertEqual(
            settings("--metrics-port", "9266").metrics_port, "tcp:9266:interface=127.0.0.1"
        )
        endpoint = "tcp:9266:interface=0.0.0.0"
        self.assertEqual(settings("--metrics-port", endpoint).metrics_port, endpoint)
        self.assertIn("0-65535", self.assertConfigurationError("--metrics-port", "70000"))
        self.assertConfigurationError("--metrics-port", " ")

    def test_allowRepeatable(self) -> None:
        result = settings("--allow", "192.168.1.0/24", "--allow", "2001:db8::1")
        self.assertEqual(
            [str(n) for n in result.allow], ["192.168.1.0/24", "2001:db8::1/128"]
        )
        message = self.assertConfigurationError("--allow", "192.168.1.0/33")
        self.assertTrue(message.startswith("--allow '192.168.1.0/33'"), message)

    def test_rateLimit(self) -> None:
        limit = settings("--rate-limit", "30/min").rate_limit
        self.assertEqual((limit.connections, limit.period), (30, 60.0))
        for bad in ("30", "lots/min", "0/s", "30/fortnight"):
            self.assertIn(
                "--rate-limit", self.assertConfigurationError("--rate-limit", bad)
            )

    def test_logOptions(self) -> None:
        result = settings("--log-max-bytes", "0", "--log-keep", "3", "--log-format", "json")
        self.assertEqual(
            (result.log_max_bytes, result.log_keep, result.log_json), (0, 3, True)
        )
        self.assertEqual(settings("--log-max-bytes", "1M").log_max_bytes, 1 << 20)
        self.assertConfigurationError("--log-format", "xml")
        self.assertConfigurationError("--log-max-bytes", "12")

    def test_selfStatsInterval(self) -> None:
        self.assertEqual(settings("--self-stats-interval", "60").self_stats_interval, 60.0)
        self.assertIn(
            "at least 1 second",
            self.assertConfigurationError("--self-stats-interval", "0.5"),
        )

    def test_connectionLimits(self) -> None:
        result = settings("--max-connections", "10", "--max-connections-per-peer", "2")
        self.assertEqual((result.max_connections, result.max_connections_per_peer), (10, 2))
        self.assertConfigurationError("--max-connections", "0")


class DeclarationTests(SynchronousTestCase):
    """
    Each option is declared once, in weather.app.options.TOPICS: --help, the
    settings and the README's table come from that declaration.
    """

    def test_helpByTopic(self) -> None:
        """The topics in a reader's order, each option under its own, in order."""
        text = str(Options())
        headings = [topic.heading for topic in TOPICS]
        self.assertEqual(
            headings,
            [
                "Stations and listener",
                "InfluxDB",
                "Journal",
                "Limits",
                "Monitoring",
                "Logs",
            ],
        )
        places = [text.index(f"\n{heading}:\n") for heading in headings]
        self.assertEqual(places, sorted(places))
        listed = re.findall(r"^  (?:-\w,|   ) --([a-z0-9-]+)", text, re.MULTILINE)
        self.assertEqual(listed, [o.name for o in DECLARED] + ["config", "help", "version"])
        self.assertIn("[default: 8266]", text)
        self.assertEqual(text.count("Usage:"), 0)  # twistd puts its own line first

    def test_internalHidden(self) -> None:
        """--workers (removed), --password and --token (refused) are not offered."""
        text = str(Options())
        for hidden in ("--workers", "--password=", "--token="):
            self.assertNotIn(hidden, text)

    def test_helpStandsAlone(self) -> None:
        """Each help text is a sentence of its own, not the rest of another."""
        for option in DECLARED:
            self.assertRegex(option.help, r"^[A-Z].*[.]$", option.name)
            self.assertFalse(option.help.startswith("..."), option.name)
            self.assertNotIn("those figures", option.help, option.name)

    def test_version(self) -> None:
        """twistd weather --version is weather's."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, parse, "--version")
        self.assertEqual(error.code, 0)
        self.assertEqual(out.getvalue(), f"weather {__version__}\n")

    def test_settingsHaveNoDefaults(self) -> None:
        """Settings take every value from the options: none has a default of its own."""
        for field in dataclasses.fields(Settings):
            self.assertIs(field.default, dataclasses.MISSING, field.name)
            self.assertIs(field.default_factory, dataclasses.MISSING, field.name)

    def test_coercionMessage(self) -> None:
        """A coercion's ValueError follows the option's name; ConfigurationError is kept."""
        option = Option("x", "X.", coerce=int)
        self.assertEqual(option.value("12"), 12)
        self.assertIsNone(option.value(None))
        error = self.assertRaises(ConfigurationError, option.value, "a")
        self.assertTrue(str(error).startswith("--x invalid literal"), str(error))

        def own(text: str) -> str:
            raise ConfigurationError("a message of its own")

        error = self.assertRaises(
            ConfigurationError, Option("x", "X.", coerce=own).value, ""
        )
        self.assertEqual(str(error), "a message of its own")

    def test_readmeTable(self) -> None:
        """README's options table: the declared options, in order, with their defaults."""
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        rows = re.findall(
            r"^\| `--([a-z0-9-]+)`(?:, `-(\w)`)? \| ([^|]*) \|", readme, re.MULTILINE
        )
        self.assertEqual([name for name, _, _ in rows], [o.name for o in DECLARED])
        for (name, short, default), option in zip(rows, DECLARED, strict=True):
            self.assertEqual(short or None, option.short, name)
            if option.default is not None:
                self.assertTrue(default.startswith(f"`{option.default}`"), (name, default))


class InfluxApiTests(SettingsTestCase):
    """--influx-api: which write API; without it, today's choice (v2 with --bucket)."""

    def test_v3(self) -> None:
        result = settings(
            "--influx-api",
            "v3",
            "--influx-url",
            "http://localhost:8181",
            environ={TOKEN_VARIABLE: SECRET},
        )
        self.assertEqual(
            result.target, InfluxV3("http://localhost:8181", "weather", SECRET)
        )
        self.assertEqual(result.target.url, "http://localhost:8181/api/v3/write_lp")

    def test_v3WithoutToken(self) -> None:
        result = settings("--influx-api", "v3", "--database", "wx")
        self.assertEqual(result.target, InfluxV3("http://localhost:8086", "wx", None))

    def test_v3RefusesOtherStoresOptions(self) -> None:
        for args in (
            ("--bucket", "wx"),
            ("--org", "home"),
            ("--username", "u"),
            ("--retention-policy", "year"),
        ):
            message = self.assertConfigurationError("--influx-api", "v3", *args)
            self.assertIn(args[0], message)

    def test_default(self) -> None:
        self.assertIsInstance(settings().target, InfluxV1)
        self.assertIsInstance(
            settings("--bucket", "wx", environ={TOKEN_VARIABLE: SECRET}).target, InfluxV2
        )
        self.assertEqual(settings("--influx-api", "v1").target, settings().target)

    def test_bucketMismatch(self) -> None:
        self.assertEqual(
            self.assertConfigurationError("--influx-api", "v2"),
            "--influx-api v2 writes into a bucket: give --bucket",
        )
        self.assertEqual(
            self.assertConfigurationError("--influx-api", "v1", "--bucket", "wx"),
            "--bucket is for InfluxDB 2.x: not with --influx-api v1",
        )

    def test_wrongValue(self) -> None:
        self.assertEqual(
            self.assertConfigurationError("--influx-api", "v4"),
            "--influx-api 'v4': give v1, v2 or v3",
        )
