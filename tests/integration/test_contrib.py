"""
The files in contrib/: the systemd units and the logrotate configuration.

  - The units pass C{systemd-analyze verify}, and agree with the server: every
    option of ExecStart= is one the server knows, the socket's address family
    is the one --port names, the stop timeout covers the server's stop.
  - Socket activation for real: C{systemd-socket-activate} holds the port as
    weather.socket would and starts the unit's own ExecStart= command line (its
    paths replaced by the test's) on the first connection; the packet is
    acknowledged, lands in a real influxd, and SIGTERM stops the server
    cleanly.  SIGHUP (ExecReload=) re-reads the devices file.
  - The logrotate configuration, run by logrotate itself against a
    daemonized twistd: the old log is moved away and the server writes on in
    a new one.

systemd-analyze and systemd-socket-activate come with Debian's systemd
package, logrotate with Debian's logrotate: without them their tests are
skipped outside CI, and fail under CI (CI=true).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import urllib.request

from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import TestCase

from tests.integration.daemon import Daemon, alive, run_twistd, twistd, wait_until
from tests.integration.influxd import free_port, start_influxd
from tests.support import (
    ROOT,
    journal_status,
    reference_devices_toml,
    reference_packet,
    unavailable,
)
from weather.app.settings import Options
from weather.server.protocol import ACK
from weather.tools.simulate import send_packet

SYSTEMD = os.path.join(ROOT, "contrib", "systemd")
SERVICE = os.path.join(SYSTEMD, "weather.service")
SOCKET = os.path.join(SYSTEMD, "weather.socket")
LOGROTATE = os.path.join(ROOT, "contrib", "logrotate", "weather")
#: Where the service file expects the installed server.
INSTALLED_TWISTD = "/opt/weather/bin/twistd"
DATABASE = "weather_test"
PASSWORD = "pa55-Wd-not-in-the-log"


def require_tool(name: str, path: str) -> str:
    """C{path}, or skip (fail under CI=true) when the tool is not installed."""
    found = path if os.access(path, os.X_OK) else shutil.which(name)
    if found:
        return found
    unavailable(f"{name} is not installed (Debian: apt-get install systemd)")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def unit_entries(path: str) -> list[tuple[str, str, str]]:
    """
    A unit file as (section, key, value) in order, read as systemd reads it:
    comments dropped, a backslash at the end of a line joining the next.
    """
    entries: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not pending and (not line or line[0] in "#;"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            entries.append((section, key.strip(), value.strip()))
    return entries


def unit_value(path: str, key: str) -> str:
    """The last value of C{key} (the one systemd uses for single settings)."""
    values = [value for _, name, value in unit_entries(path) if name == key]
    if not values:
        raise AssertionError(f"{os.path.basename(path)} has no {key}=")
    return values[-1]


def exec_start(environ: dict[str, str]) -> list[str]:
    """
    The service's ExecStart= as the argument list systemd runs: words split,
    ${NAME} replaced from C{environ} (systemd's own variables, such as
    $CREDENTIALS_DIRECTORY, included).
    """
    line = unit_value(SERVICE, "ExecStart")

    def expand(match: re.Match) -> str:
        return environ[match.group(1)]

    return [re.sub(r"\$\{(\w+)\}", expand, word) for word in shlex.split(line)]


def option_value(argv: list[str], name: str) -> str:
    """The value given to option C{name} in C{argv} (C{--name value} form)."""
    return argv[argv.index(name) + 1]


def replace_option(argv: list[str], name: str, value: str) -> None:
    argv[argv.index(name) + 1] = value


class UnitFileTests(TestCase):
    """The unit files as systemd reads them, and as the server understands them."""

    def verify(self, service_text: str | None = None) -> tuple[int, list[str], str]:
        """
        Run C{systemd-analyze verify} on copies of both units (the service's
        text replaced by C{service_text} if given); return its exit status,
        the lines of output naming our units, and the whole output.

        verify checks that ExecStart='s program exists and is executable, and
        /opt/weather is not installed here: the copies run the twistd of the
        Python running the tests instead.  Nothing else is changed.
        """
        analyze = require_tool("systemd-analyze", "/usr/bin/systemd-analyze")
        directory = tempfile.mkdtemp(prefix="weather-units-")
        self.addCleanup(shutil.rmtree, directory, True)
        if service_text is None:
            service_text = read(SERVICE)
            self.assertIn(INSTALLED_TWISTD, service_text)
        copies = []
        for name, text in (
            ("weather.socket", read(SOCKET)),
            ("weather.service", service_text.replace(INSTALLED_TWISTD, twistd())),
        ):
            copies.append(os.path.join(directory, name))
            with open(copies[-1], "w", encoding="utf-8") as f:
                f.write(text)
        result = subprocess.run(
            [analyze, "verify", "--man=no", *copies],
            capture_output=True,
            text=True,
            timeout=120,
            # No systemd as PID 1 needed (nor wanted): verify on its own.
            env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
        )
        output = result.stdout + result.stderr
        # verify may also talk about the machine's own units; ours are named
        # by their file's path or by their name.
        ours = [
            line
            for line in output.splitlines()
            if directory in line or "weather.service" in line or "weather.socket" in line
        ]
        return result.returncode, ours, output

    def test_verify(self) -> None:
        """systemd-analyze verify has nothing to say about our units."""
        status, ours, output = self.verify()
        self.assertEqual(ours, [], output)
        self.assertEqual(status, 0, output)

    def test_verifyCatchesMistakes(self) -> None:
        """
        The check above can fail: a misspelt setting (which systemd ignores,
        with a warning but exit status 0) and a missing program are reported.
        """
        text = read(SERVICE)
        status, ours, output = self.verify(text.replace("ProtectSystem=", "ProtectSystm="))
        self.assertTrue(
            any("ProtectSystm" in line for line in ours), f"not reported: {output}"
        )
        status, ours, output = self.verify(
            text.replace(INSTALLED_TWISTD, "/nonexistent/twistd")
        )
        self.assertNotEqual(ours, [], output)
        self.assertNotEqual(status, 0, output)

    def test_execStartOptionsExist(self) -> None:
        """
        twistd and the weather plugin accept every option of ExecStart= (an
        option the server does not know would stop it at every start).
        """
        argv = exec_start({"CREDENTIALS_DIRECTORY": "/run/credentials/weather.service"})
        self.assertEqual(argv[0], INSTALLED_TWISTD)
        options = ServerOptions()
        options.parseOptions(argv[1:])
        self.assertEqual(options.subCommand, "weather")
        self.assertTrue(options["nodaemon"])
        self.assertEqual(options["logfile"], "-")
        self.assertEqual(options["pidfile"], "")

    def test_portMatchesSocket(self) -> None:
        """
        --port adopts the socket weather.socket makes, in its address family:
        ListenStream=0.0.0.0:8266 is IPv4 (domain=INET); a bare port or [::]
        is IPv6 (domain=INET6).  Twisted believes the domain it is given.
        """
        listen = unit_value(SOCKET, "ListenStream")
        port = option_value(exec_start({"CREDENTIALS_DIRECTORY": "/c"}), "--port")
        fields = dict(part.partition("=")[::2] for part in port.split(":")[1:])
        self.assertEqual(port.split(":")[0], "systemd")
        self.assertEqual(fields.get("index"), "0")
        ipv4 = re.fullmatch(r"(\d+\.){3}\d+:\d+", listen) is not None
        self.assertEqual(fields["domain"], "INET" if ipv4 else "INET6", listen)
        self.assertEqual(listen.rpartition(":")[2], Options()["port"])

    def test_stopTimeoutCoversServerStop(self) -> None:
        """
        TimeoutStopSec= leaves the server its whole stop: --grace for open
        connections, --shutdown-timeout for the writer, and again for the
        journal's last commit.
        """
        argv = exec_start({"CREDENTIALS_DIRECTORY": "/c"})
        defaults = Options()

        def seconds(name: str) -> float:
            return float(option_value(argv, name) if name in argv else defaults[name[2:]])

        needed = seconds("--grace") + 2 * seconds("--shutdown-timeout")
        timeout = unit_value(SERVICE, "TimeoutStopSec")
        self.assertRegex(timeout, r"^\d+$")
        self.assertGreaterEqual(int(timeout), needed + 10)
        self.assertEqual(unit_value(SERVICE, "KillSignal"), "SIGTERM")

    def test_credentialsAndStateDirectory(self) -> None:
        """
        The password file is the credential LoadCredential= provides, and the
        data directory the one StateDirectory= makes.
        """
        argv = exec_start({"CREDENTIALS_DIRECTORY": "/run/credentials/weather.service"})
        name, _, source = unit_value(SERVICE, "LoadCredential").partition(":")
        self.assertEqual(
            option_value(argv, "--password-file"),
            f"/run/credentials/weather.service/{name}",
        )
        self.assertTrue(source.startswith("/etc/weather/"), source)
        self.assertNotIn("--password", argv)
        state = unit_value(SERVICE, "StateDirectory")
        self.assertEqual(option_value(argv, "--data-dir"), f"/var/lib/{state}")
        self.assertEqual(unit_value(SERVICE, "ExecReload"), "/bin/kill -HUP $MAINPID")


class SocketActivationTests(TestCase):
    """
    The unit's ExecStart=, started by systemd-socket-activate, into a real
    influxd.
    """

    def setUp(self) -> None:
        self.activate = require_tool(
            "systemd-socket-activate", "/usr/bin/systemd-socket-activate"
        )
        self.influx = start_influxd(self)
        self.influx.create_database(DATABASE)
        self.workdir = tempfile.mkdtemp(prefix="weather-activation-")
        self.addCleanup(shutil.rmtree, self.workdir, True)
        self.data_dir = os.path.join(self.workdir, "state")
        self.devices = os.path.join(self.workdir, "devices.toml")
        with open(self.devices, "w") as f:
            f.write(reference_devices_toml(**{"1": "balcony"}))
        # What LoadCredential= would make: the password in a directory of its own.
        self.credentials = os.path.join(self.workdir, "credentials")
        os.mkdir(self.credentials, 0o700)
        password = os.path.join(self.credentials, "influx-password")
        with open(password, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(password, 0o400)

    def start(self, port_option: str | None = None) -> tuple[Daemon, int, str]:
        """
        Listen as weather.socket does, on a free loopback port, and run the
        unit's command line on the first connection; return the process, the
        port and the log's path.
        """
        argv = exec_start({"CREDENTIALS_DIRECTORY": self.credentials})
        argv[0] = twistd()
        replace_option(argv, "--data-dir", self.data_dir)
        replace_option(argv, "--devices", self.devices)
        replace_option(argv, "--influx-url", self.influx.url)
        replace_option(argv, "--database", DATABASE)
        if port_option is not None:
            replace_option(argv, "--port", port_option)
        self.metrics_port = None
        if "--metrics-port" in argv:
            self.metrics_port = free_port()
            replace_option(argv, "--metrics-port", str(self.metrics_port))
        # weather.socket's address, on loopback and a free port: the family
        # stays the one the unit's --port names.
        host = unit_value(SOCKET, "ListenStream").rpartition(":")[0]
        host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "[::1]"}.get(host, host)
        self.host = host.strip("[]")
        port = free_port()
        self.log_path = os.path.join(self.workdir, "output.log")
        process = Daemon(
            argv,
            self.workdir,
            self.log_path,
            command=[
                self.activate,
                f"--listen={host}:{port}",
                # systemd names each passed socket (LISTEN_FDNAMES): after its
                # socket unit, unless FileDescriptorName= says otherwise.
                # Twisted's systemd: endpoint ignores sockets without a name.
                "--fdname=weather.socket",
                f"--setenv=CREDENTIALS_DIRECTORY={self.credentials}",
                "--",
            ],
            # systemd-socket-activate passes on PATH and HOME only (and --setenv).
            environ={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.workdir},
        )
        self.addCleanup(process.kill)
        process.wait_ready(lambda: f":{port} as 3." in self.log(), timeout=20)
        return process, port, self.log_path

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def send(self, port: int, packet: bytes) -> bytes:
        """
        Send like a station; return the server's answer.  The first
        connection waits for the server to start (in the socket's backlog).
        """
        return send_packet(self.host, port, packet, timeout=60)

    def stored(self, measurement: str, place: str) -> list[tuple[int, float]]:
        return [
            (when, value)
            for when, value, tags in self.influx.points(measurement, DATABASE, "value")
            if tags.get("place") == place
        ]

    def stop(self, process: Daemon) -> str:
        """
        SIGTERM, as systemctl stop sends (SIGKILL after 60 s); return the log
        once it has exited.
        """
        # twistd ends by re-raising the signal that stopped it, which systemd
        # counts as a clean exit for SIGTERM.
        self.assertEqual(process.stop(60), -signal.SIGTERM, self.log())
        return self.log()

    def test_wrongFamilyRefusedInOneLine(self) -> None:
        """
        A --port domain that is not the passed socket's family stops the
        server at once, saying what to change, rather than reading garbage
        peer addresses.
        """
        process, port, _ = self.start("systemd:domain=INET6:index=0")
        try:
            self.assertEqual(self.send(port, reference_packet(30)), b"")
        except ConnectionResetError:
            pass
        self.assertEqual(process.process.wait(60), 1, self.log())
        self.assertIn(
            "systemd:domain=INET6:index=0: the socket is INET, not INET6",
            self.log(),
        )

    def test_packetThroughActivatedSocket(self) -> None:
        process, port, _ = self.start()
        self.assertEqual(self.send(port, reference_packet(30)), ACK, self.log())
        wait_until(
            lambda: len(self.stored("temperature", "balcony")) == 30,
            timeout=30,
            what="30 temperatures in InfluxDB",
        )
        if self.metrics_port is not None:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                self.assertEqual(response.status, 200)
        log = self.stop(process)
        self.assertIn("Listening for stations on systemd:domain=INET", log)
        self.assertIn("Main loop terminated.", log)
        self.assertIn("Journal closed: 0 packets to deliver", log)
        self.assertNotIn(PASSWORD, log)
        self.assertNotIn("Traceback", log)
        status = journal_status(self.data_dir)
        self.assertEqual((status.pending, status.quarantined), (0, 0))

    def test_reloadRereadsDevices(self) -> None:
        """
        ExecReload= sends SIGHUP: the server stays up and knows the stations
        the devices file describes now.
        """
        process, port, _ = self.start()
        self.assertEqual(self.send(port, reference_packet(30)), ACK, self.log())
        with open(self.devices, "w") as f:
            f.write(reference_devices_toml(**{"1": "balcony", "2": "garden"}))
        process.signal(signal.SIGHUP)
        self.assertEqual(
            self.send(port, reference_packet(30, device_id=2)),
            ACK,
            "SIGHUP should re-read the devices file, not stop the server:\n" + self.log(),
        )
        wait_until(
            lambda: len(self.stored("temperature", "garden")) == 30,
            timeout=30,
            what="30 temperatures of device 2 (added by the reload) in InfluxDB",
        )
        self.stop(process)


class LogrotateTests(TestCase):
    """
    contrib/logrotate/weather, run by logrotate on a daemonized twistd: the
    log is moved away, SIGUSR1 has the server open a new one, and what it
    logs next goes there.
    """

    def setUp(self) -> None:
        self.logrotate = shutil.which("logrotate") or next(
            (p for p in ("/usr/sbin/logrotate",) if os.access(p, os.X_OK)), None
        )
        if self.logrotate is None:
            unavailable("logrotate is not installed (apt-get install logrotate)")
        self.workdir = tempfile.mkdtemp(prefix="weather-logrotate-")
        self.addCleanup(shutil.rmtree, self.workdir, True)
        self.logfile = os.path.join(self.workdir, "log", "weather.log")
        self.pidfile = os.path.join(self.workdir, "run", "weather.pid")
        os.mkdir(os.path.dirname(self.logfile), 0o750)
        os.mkdir(os.path.dirname(self.pidfile), 0o755)

    def config(self) -> str:
        """
        The configuration with the test's paths, and "su" naming the user
        running the tests (who owns the log, as the weather user would).
        """
        with open(LOGROTATE, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("/var/log/weather/weather.log", text)
        self.assertIn("/run/weather/weather.pid", text)
        text = text.replace("/var/log/weather/weather.log", self.logfile)
        text = text.replace("/run/weather/weather.pid", self.pidfile)
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        text, count = re.subn(
            r"(?m)^(\s*)su\s+\S+\s+\S+\s*$", rf"\1su {user} {group}", text
        )
        self.assertEqual(count, 1, "the configuration should say which user owns the log")
        path = os.path.join(self.workdir, "logrotate.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def run_logrotate(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                self.logrotate,
                "--state",
                os.path.join(self.workdir, "logrotate.state"),
                *args,
                self.config(),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_syntax(self) -> None:
        """logrotate -d (debug: reads, changes nothing) accepts the file."""
        with open(self.logfile, "w") as f:
            f.write("a line\n")
        result = self.run_logrotate("-d")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertNotIn("error", (result.stdout + result.stderr).lower())
        self.assertEqual(os.listdir(os.path.dirname(self.logfile)), ["weather.log"])

    def test_rotateRunningDaemon(self) -> None:
        port = free_port()
        result = run_twistd(
            self.workdir,
            "--logfile",
            self.logfile,
            "--pidfile",
            self.pidfile,
            "weather",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            # No InfluxDB needed: no packet is sent.
            "--influx-url",
            f"http://127.0.0.1:{free_port()}",
            "--data-dir",
            os.path.join(self.workdir, "state"),
            "--log-max-bytes",
            "0",
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        wait_until(lambda: os.path.exists(self.pidfile), what="pid file")
        with open(self.pidfile) as f:
            pid = int(f.read())
        self.addCleanup(lambda: alive(pid) and os.kill(pid, signal.SIGKILL))

        def logged(text: str, path: str = self.logfile) -> bool:
            try:
                with open(path, encoding="utf-8") as f:
                    return text in f.read()
            except FileNotFoundError:
                return False

        wait_until(lambda: logged("Listening for stations on"), what="daemon listening")
        result = self.run_logrotate("--force")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        rotated = self.logfile + ".1"
        self.assertTrue(logged("Listening for stations on", rotated))
        wait_until(
            lambda: os.path.exists(self.logfile),
            what="the server opening a new log file after SIGUSR1",
        )
        self.assertTrue(alive(pid), "SIGUSR1 stopped the server")
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), what="daemon exit")
        self.assertTrue(logged("Main loop terminated.", self.logfile))
        self.assertFalse(logged("Main loop terminated.", rotated))
        self.assertEqual(
            sorted(os.listdir(os.path.dirname(self.logfile))),
            ["weather.log", "weather.log.1"],
        )
