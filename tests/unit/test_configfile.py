"""
--config FILE: the command line's options in a TOML file (the command line
wins), the station profiles too, no secrets; and weather config's example.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.fakeinflux import FakeInfluxDB
from tests.support import ROOT, build_test_service, reference_devices_toml
from weather.app import preflight, tap
from weather.app.configfile import REFERENCE_TABLES, example, read_config
from weather.app.options import (
    DECLARED,
    TOPICS,
    ConfigurationError,
    Options,
    declared,
)
from weather.app.reload import DevicesReloader
from weather.app.settings import Settings, settings_from_options
from weather.core.devices import REFERENCE_DEVICES, parse_devices
from weather.server.admission import parse_network
from weather.tools.cli import ReplayOptions, main

SECRET = "s3cr3t-XYZ"


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def settings(*args: str) -> Settings:
    return settings_from_options(parse(*args), {"HOME": "/home/station"})


class ConfigTestCase(SynchronousTestCase):
    def config(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def refused(self, text: str, *args: str) -> str:
        """The file is refused in one line naming it; the message, without the name."""
        path = self.config(text)
        error = self.assertRaises(ConfigurationError, settings, "--config", path, *args)
        message = str(error)
        self.assertNotIn("\n", message)
        prefix = f"--config {path}: "
        self.assertTrue(message.startswith(prefix), message)
        return message[len(prefix) :]


class ValuesTests(ConfigTestCase):
    def test_values(self) -> None:
        """Keys are the options' names; strings, numbers, true/false and arrays."""
        result = settings(
            "--config",
            self.config(
                'port = "tcp:9000"\n'
                "max-packet-size = 400\n"
                "request-timeout = 2.5\n"
                'influx-url = "https://influx.example:8086/"\n'
                "insecure = true\n"
                'allow = ["192.168.1.0/24", "10.0.0.1"]\n'
                'journal-max-size = "2G"\n'
            ),
        )
        self.assertEqual(result.port, "tcp:9000")
        self.assertEqual(result.max_packet_size, 400)
        self.assertEqual(result.request_timeout, 2.5)
        self.assertEqual(result.target.url, "https://influx.example:8086/write")
        self.assertFalse(result.verify_tls)
        self.assertEqual(
            result.allow, (parse_network("192.168.1.0/24"), parse_network("10.0.0.1"))
        )
        self.assertEqual(result.journal_max_bytes, 2 << 30)
        self.assertEqual(result.grace, 5.0)  # not in the file: the default

    def test_noCreateDatabase(self) -> None:
        """The flag --no-create-database, from the file: true, or false (the default)."""
        on = settings("--config", self.config("no-create-database = true\n"))
        self.assertFalse(on.create_database)
        off = settings("--config", self.config("no-create-database = false\n"))
        self.assertTrue(off.create_database)

    def test_oneValueOfARepeatableOption(self) -> None:
        result = settings("--config", self.config('allow = "10.0.0.0/8"\n'))
        self.assertEqual(result.allow, (parse_network("10.0.0.0/8"),))

    def test_commandLineWins(self) -> None:
        """Even a value typed that is the default; a repeated option is replaced."""
        path = self.config(
            'port = "9000"\ngrace = 1\nallow = ["10.0.0.0/8"]\ndatabase = "wx"\n'
        )
        result = settings(
            "--config", path, "--port", "8266", "-p", "8300", "--allow", "192.0.2.0/24"
        )
        self.assertEqual(result.port, "tcp:8300")
        self.assertEqual(result.allow, (parse_network("192.0.2.0/24"),))
        self.assertEqual(result.grace, 1.0)
        self.assertEqual(result.target.database, "wx")
        self.assertEqual(settings("--config", path, "--port=8266").port, "tcp:8266")

    def test_configNamed(self) -> None:
        path = self.config("")
        self.assertEqual(settings("--config", path).config_file, path)
        self.assertIsNone(settings().config_file)


class MessageTests(ConfigTestCase):
    def test_sameMessagesAsTheCommandLine(self) -> None:
        """A value the option's coercion refuses: the command line's message."""
        for key, toml, typed in [
            ("port", "99999", "99999"),
            ("max-packet-size", "3.5", "3.5"),
            ("max-packet-size", "5", "5"),
            ("batch-size", '"lots"', "lots"),
            ("journal-max-size", '"1X"', "1X"),
            ("clock-sync", '"sometimes"', "sometimes"),
            (
                "influx-url",
                '"http://user:pw@localhost:8086"',
                "http://user:pw@localhost:8086",
            ),
            ("data-dir", '" "', " "),
            ("allow", '["10.0.0.0/40"]', "10.0.0.0/40"),
            ("log-format", '"xml"', "xml"),
        ]:
            expected = str(
                self.assertRaises(ConfigurationError, settings, f"--{key}", typed)
            )
            self.assertEqual(self.refused(f"{key} = {toml}\n"), expected, key)

    def test_unknownKeyNamesTheNearest(self) -> None:
        self.assertEqual(
            self.refused("prot = 8266\n"),
            "unknown option 'prot': did you mean 'port'? (weather config lists them all)",
        )
        self.assertIn(
            "did you mean 'max-packet-size'?", self.refused("max_packet_size = 400\n")
        )
        self.assertIn("unknown option 'influxdb'", self.refused("[influxdb]\nurl = 1\n"))

    def test_secretsRefused(self) -> None:
        """The password and the token stay out, and the message does not repeat them."""
        for key, instead in (
            ("password", "password-file = ...) or in $WEATHER_INFLUX_PASSWORD"),
            ("token", "token-file = ...) or in $WEATHER_INFLUX_TOKEN"),
        ):
            message = self.refused(f'{key} = "{SECRET}"\n')
            self.assertTrue(message.startswith(f"{key} is refused"), message)
            self.assertTrue(message.endswith(instead), message)
            self.assertNotIn(SECRET, message)

    def test_wrongKinds(self) -> None:
        self.assertEqual(self.refused('insecure = "yes"\n'), "insecure: give true or false")
        self.assertEqual(
            self.refused("port = true\n"),
            "port: give a string or a number, not true or false",
        )
        self.assertEqual(
            self.refused("port = [8266]\n"), "port: give a string or a number, not an array"
        )
        self.assertEqual(
            self.refused("port = { number = 8266 }\n"),
            "port: give a string or a number, not a table",
        )
        self.assertEqual(
            self.refused("port = 2026-01-01\n"),
            "port: give a string or a number, not a date or time",
        )
        self.assertEqual(
            self.refused("allow = [[1]]\n"),
            "allow: give a string or a number, not an array",
        )

    def test_notToml(self) -> None:
        self.assertTrue(self.refused("port = \n").startswith("not valid TOML: "))

    def test_unreadable(self) -> None:
        path = self.mktemp()
        error = self.assertRaises(ConfigurationError, settings, "--config", path)
        self.assertEqual(
            str(error), f"--config {path}: cannot read it (No such file or directory)"
        )
        os.mkdir(path)
        error = self.assertRaises(ConfigurationError, settings, "--config", path)
        self.assertEqual(
            str(error),
            f"--config {path}: a directory, not a regular file: give the TOML file itself",
        )

    def test_makeServiceSaysItInOneLine(self) -> None:
        self.patch(os, "environ", {"HOME": os.path.abspath(self.mktemp())})
        path = self.config("port = 99999\n")
        error = self.assertRaises(SystemExit, tap.makeService, parse("--config", path))
        self.assertEqual(
            error.code, f"weather: --config {path}: --port 99999: a port number is 0-65535"
        )


class DevicesTests(ConfigTestCase):
    def test_tables(self) -> None:
        """[devices.N] tables after the options: the profiles, from the config file."""
        text = reference_devices_toml(**{"1": "balcony", "7": "shed"})
        path = self.config('port = "9000"\n\n' + text)
        result = settings("--config", path)
        self.assertEqual(result.profiles, parse_devices(text))
        self.assertEqual(result.devices_file, path)
        self.assertEqual(result.port, "tcp:9000")

    def test_devicesFileNamed(self) -> None:
        """devices = FILE: the --devices option, in the file."""
        devices = self.config(reference_devices_toml(**{"3": "garden"}))
        result = settings("--config", self.config(f'devices = "{devices}"\n'))
        self.assertEqual(set(result.profiles), {3})
        self.assertEqual(result.devices_file, devices)

    def test_tablesAndDevicesOptionRefused(self) -> None:
        devices = self.config(reference_devices_toml(**{"3": "garden"}))
        path = self.config(REFERENCE_TABLES)
        error = self.assertRaises(
            ConfigurationError, settings, "--config", path, "--devices", devices
        )
        self.assertEqual(
            str(error),
            f"--devices {devices} and the [devices.N] tables of --config {path}: "
            "give the station profiles in one place",
        )

    def test_badTables(self) -> None:
        message = self.refused('[devices.3]\nvalues = [{ name = "x", type = "u9" }]\n')
        self.assertTrue(message.startswith("devices.3.values[0].type"), message)

    def test_noTables(self) -> None:
        result = settings("--config", self.config("grace = 1\n"))
        self.assertIs(result.profiles, REFERENCE_DEVICES)
        self.assertIsNone(result.devices_file)


class ReloadTests(ConfigTestCase):
    """SIGHUP re-reads the [devices.N] tables of the config file that holds them."""

    def setUp(self) -> None:
        self.path = self.config(reference_devices_toml(**{"1": "balcony"}))
        options = parse("--config", self.path, "--data-dir", self.mktemp())
        service = build_test_service(
            self,
            settings_from_options(options, {}),
            MemoryReactorClock(),
            StubTreq(FakeInfluxDB()),
        )
        self.reloader: DevicesReloader = service.reloader

    def rewrite(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def test_reread(self) -> None:
        self.rewrite(
            "grace = 1\n" + reference_devices_toml(**{"1": "balcony", "7": "shed"})
        )
        self.assertTrue(self.reloader.reload())
        self.assertEqual(set(self.reloader.current), {1, 7})

    def test_badFileKeepsTheProfiles(self) -> None:
        for text, why in [
            ("grace = 1\n", "holds no [devices.N] tables any more"),
            ("prot = 1\n" + REFERENCE_TABLES, "unknown option 'prot'"),
        ]:
            self.rewrite(text)
            with capturedLogs() as events:
                self.assertFalse(self.reloader.reload())
            (line,) = [formatEvent(e) for e in events]
            self.assertIn(f"SIGHUP: --config {self.path}: {why}", line)
            self.assertEqual(set(self.reloader.current), {1})


class ExampleTests(ConfigTestCase):
    def uncommented(self) -> str:
        """The example with every "# " removed: its settings, in force."""
        return "".join(
            line[2:] if line.startswith("# ") else line
            for line in example().splitlines(keepends=True)
        )

    def test_uncommentedIsTheDefaults(self) -> None:
        """Every setting the example shows is the default; its profiles, the reference."""
        path = self.config(self.uncommented())
        config = read_config(path)
        self.assertEqual(config.profiles, REFERENCE_DEVICES)
        result = dataclasses.replace(
            settings("--config", path), devices_file=None, config_file=None
        )
        self.assertEqual(
            result, dataclasses.replace(settings(), profiles=REFERENCE_DEVICES)
        )
        self.assertEqual(
            set(config.values),
            {o.name for o in DECLARED if o.default is not None or o.flag},
        )

    def test_everyOptionByTopic(self) -> None:
        text = example()
        options = text.split("## -- Station profiles --")[0]
        keys = re.findall(r"^#+ ([a-z0-9-]+) = ", options, re.MULTILINE)
        self.assertEqual(keys, [o.name for o in DECLARED])
        headings = re.findall(r"^## -- (.+) --$", text, re.MULTILINE)
        self.assertEqual(headings, [t.heading for t in TOPICS] + ["Station profiles"])
        comments = " ".join(line[3:] for line in text.splitlines() if line[:3] == "## ")
        for option in DECLARED:
            self.assertIn(" ".join(option.help.split()), comments, option.name)

    def test_withoutDefaultNotInForce(self) -> None:
        """An option without a default is shown "## name = ...": it stays a comment."""
        text = example()
        self.assertIn('\n## bucket = "..."\n', text)
        self.assertIn('\n## allow = ["..."]\n', text)
        self.assertIn("\n# insecure = false\n", text)
        self.assertIn("\n# port = 8266\n", text)
        self.assertIn('\n# journal-max-size = "1G"\n', text)

    def test_weatherConfig(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["config"], out, err), 0)
        self.assertEqual((out.getvalue(), err.getvalue()), (example(), ""))


class ReadmeTests(ConfigTestCase):
    def test_readmeExample(self) -> None:
        """README's config file is read, and each of its values is taken."""
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        section = readme.split("### One config file (`--config`)")[1]
        (text,) = re.findall(r"```toml\n(.*?)```", section.split("\n## ")[0], re.DOTALL)
        config = read_config(self.config(text))
        self.assertEqual(set(config.profiles), {7})
        for option in DECLARED:
            config.value(option)
        self.assertEqual(
            config.value(declared("allow")),
            (parse_network("192.168.1.0/24"), parse_network("10.0.0.0/8")),
        )


class HelpTests(SynchronousTestCase):
    def test_listed(self) -> None:
        self.assertIn("--config=", str(Options()))
        self.assertIn("--config=", str(ReplayOptions()))


class ReplayTests(ConfigTestCase):
    """weather replay takes the options it shares with the server from --config."""

    def test_sharedOptions(self) -> None:
        data_dir = os.path.abspath(self.mktemp())
        path = self.config(
            f'data-dir = "{data_dir}"\ndatabase = "wx"\ninflux-url = "http://db:8086"\n'
            + reference_devices_toml(**{"7": "shed"})
        )
        options = ReplayOptions()
        options.parseOptions(["--config", path, "--database", "typed"])
        result = options.settings()
        self.assertEqual(result.target.database, "typed")
        self.assertEqual(result.target.url, "http://db:8086/write")
        self.assertEqual(set(result.profiles), {7})
        self.assertEqual(options.data_dir(), data_dir)


class StartupLineTests(ConfigTestCase):
    def test_logged(self) -> None:
        self.patch(os, "environ", {"HOME": os.path.abspath(self.mktemp())})
        self.patch(preflight, "bind_probe", lambda interface, port: None)
        path = self.config('port = "tcp:0:interface=127.0.0.1"\n')
        with capturedLogs() as events:
            tap.makeService(parse("--config", path, "--data-dir", self.mktemp()))
        lines = [formatEvent(e) for e in events]
        self.assertIn(f"Options from {path} (the command line wins)", lines)
