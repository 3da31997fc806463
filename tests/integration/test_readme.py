"""
README.md, followed as written from a fresh clone, so that its commands keep
working as printed.

Every C{```sh} block of the README has a marker (L{tests.integration.docwalk});
the blocks run in order in a copy of this source tree (what C{git clone}
gives: C{make run} makes its virtualenv, pip takes the dependencies from
PyPI), in a home of its own, with the virtualenv activated as the README
says (not for the pipx blocks: pipx's C{weather} is on PATH, in
C{~/.local/bin}).  The kinds of block:

  - C{run}: run, it must exit 0;
  - C{background}: the walk's server (C{make run}), started in a process
    group of its own once the previous one is stopped as Ctrl-C stops it
    (SIGINT to its group); ready once its status page answers;
  - C{aside}: a server in the foreground beside the walk's, on ports and with
    a state home (C{$XDG_STATE_HOME}) of its own, as another user's would
    be: ready once it listens, then stopped as Ctrl-C stops it;
  - C{run aside}: run with those ports and state home; the daemons it starts
    it stops itself, and their pid files must go;
  - C{run stopped}: run once the walk's server is stopped as Ctrl-C stops it;
  - C{, needs TOOL}: only where TOOL is installed.  The walk runs the rest
    without it and is then skipped, naming it; under CI=true it fails.

Every server stops cleanly, with no traceback in its output.  The README's
ports are free loopback ports: 8266 and 9266 by number, C{make run}'s by
its C{PORT}, C{STATUS_PORT} and C{INFLUX_PORT}; a server's C{--port} binds
127.0.0.1 only.  System paths are in the scratch directory
(L{tests.integration.docwalk.substitute}), where, as an administrator would
have, C{/var/lib}, C{/var/log/weather}, C{/run/weather} exist and
C{/etc/weather/devices.toml} is the demo's C{devices.toml}.

What matters is checked beyond exit codes: the readings C{weather simulate}
printed are those InfluxDB answers; the status page shows the station;
C{weather journal status} finds C{make run}'s journal without a flag.
Needs Debian's C{influxdb} (C{make run} starts its private influxd) and
C{curl}; pipx for its blocks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.daemon import (
    LISTENING,
    environment,
    free_listening_port,
    listening,
    wait_until,
)
from tests.integration.docwalk import (
    Block,
    blocks,
    copy_source,
    read,
    run_script,
    substitute,
)
from tests.integration.influxd import free_port, require_influxd
from tests.support import ROOT, unavailable
from weather.tools.localinflux import die_with_parent

PAGE = os.path.join(ROOT, "README.md")
KINDS = {"run", "background", "aside", "run aside", "run stopped", None}
#: What the walk's directories hold before it starts, as an administrator made them.
PREPARED = ("var/lib", "var/log/weather", "run/weather", "etc/weather")
#: A line that starts a server: its --port is made a loopback endpoint.
SERVER = re.compile(r"\btwistd\b|\bweather serve\b")
STOP_TIMEOUT = 60
#: The last line of a server's start: its journal is open (it listens before).
JOURNAL_OPEN = re.compile(r"Journal .*: \d+ packets? to deliver")


def page_blocks() -> list[Block]:
    return blocks(read(PAGE), "README.md")


class MarkerTests(SynchronousTestCase):
    """The README as the walk reads it: no process runs here."""

    def test_everyBlockMarked(self) -> None:
        found = page_blocks()
        self.assertLessEqual({b.kind for b in found}, KINDS)
        self.assertEqual({b.needs for b in found}, {None, "pipx"})
        self.assertEqual(
            [b.text.split()[:2] for b in found if b.kind == "background"][0],
            ["make", "run"],
        )
        self.assertEqual({b.instead for b in found}, {None})

    def test_serverPortsOnLoopback(self) -> None:
        walk = ReadmeWalkTests("test_followTheReadme")
        walk.scratch, walk.ports = "/s", {8266: 1, 9266: 2, 8086: 3}
        self.assertEqual(
            walk.here("twistd -n weather --port 8266 --data-dir /var/lib/weather\n"),
            "twistd -n weather --port tcp:1:interface=127.0.0.1"
            " --data-dir /s/var/lib/weather\n",
        )
        self.assertEqual(walk.here("weather simulate -p 8266\n"), "weather simulate -p 1\n")
        self.assertEqual(
            walk.here('make run ARGS="--devices d.toml"\n'),
            "make run PORT=tcp:1:interface=127.0.0.1 STATUS_PORT=2 INFLUX_PORT=3"
            ' ARGS="--devices d.toml"\n',
        )


class Process:
    """A block run in a process group of its own, as a terminal runs a command."""

    def __init__(self, script: str, cwd: str, environ: dict[str, str], log: str) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def ready(self, port: int, status_page: int | None = None) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"exited with {self.process.returncode}:\n{self.output()[-3000:]}"
            )
        output = self.output()
        if LISTENING not in output or not JOURNAL_OPEN.search(output):
            return False
        if not listening(port):
            return False
        return status_page is None or answers(f"http://127.0.0.1:{status_page}/")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the whole group; its exit code (SIGKILL after a minute)."""
        try:
            os.killpg(self.process.pid, signal.SIGINT)
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            self.process.wait()
        finally:
            self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """What is left of the group, after a failed test."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        self._log.close()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


class ReadmeWalkTests(SynchronousTestCase):
    def setUp(self) -> None:
        require_influxd(self)
        if shutil.which("curl") is None:
            unavailable("curl is not installed (apt-get install curl)")
        self.scratch = os.path.realpath(tempfile.mkdtemp(prefix="weather-readme-"))
        self.addCleanup(shutil.rmtree, self.scratch, True)
        for directory in PREPARED:
            os.makedirs(os.path.join(self.scratch, directory))
        self.home = os.path.join(self.scratch, "home")
        self.clone = os.path.join(self.home, "weather")
        copy_source(self.clone)
        influx = free_port()
        self.ports = {8266: free_listening_port(), 9266: free_port(), 8086: influx}
        self.aside_ports = {8266: free_listening_port(), 9266: free_port(), 8086: influx}
        self.environ = environment(self.home)
        self.environ["PATH"] += os.pathsep + os.path.join(self.home, ".local", "bin")
        # trial -j sets PYTHONPATH to its own path: pip in the README's new
        # virtualenv would take Twisted there for installed, and install no
        # twistd.
        self.environ.pop("PYTHONPATH", None)
        self.aside_environ = dict(self.environ, XDG_STATE_HOME=self.path("aside-state"))
        self.server: Process | None = None
        self.outputs: list[tuple[Block, str]] = []
        self.logs = 0

    def path(self, name: str) -> str:
        return os.path.join(self.scratch, name)

    def here(self, text: str, aside: bool = False) -> str:
        """C{text} with the substitutions of the module's docstring."""
        ports = self.aside_ports if aside else self.ports
        text = "".join(
            re.sub(r"--port 8266\b", "--port tcp:8266:interface=127.0.0.1", line)
            if SERVER.search(line)
            else line
            for line in text.splitlines(keepends=True)
        )
        text = re.sub(
            r"\bmake run\b",
            "make run PORT=tcp:8266:interface=127.0.0.1 STATUS_PORT=9266 INFLUX_PORT=8086",
            text,
        )
        return substitute(text, self.scratch, ports)

    def script(self, block: Block, aside: bool = False) -> str:
        """The block as a reader's terminal runs it: the virtualenv activated."""
        text = self.here(block.text, aside)
        activate = os.path.join(self.clone, ".venv", "bin", "activate")
        if block.needs == "pipx" or not os.path.exists(activate):
            return text
        return f". {activate}\n{text}"

    def start(self, block: Block, aside: bool) -> Process:
        self.logs += 1
        log = self.path(f"block-{self.logs}.log")
        environ = self.aside_environ if aside else self.environ
        process = Process(self.script(block, aside), self.clone, environ, log)
        self.addCleanup(process.kill)
        return process

    def stop(self, process: Process, where: str) -> str:
        """Ctrl-C, then its output, which must say it stopped cleanly."""
        code = process.interrupt()
        output = process.output()
        self.assertIn(code, (0, -signal.SIGINT), f"{where}:\n{output[-3000:]}")
        self.assertNotIn("Traceback", output, f"{where}:\n{output}")
        return output

    def pid_files(self) -> list[str]:
        return [
            os.path.join(directory, name)
            for directory in (self.clone, self.path("run/weather"))
            for name in os.listdir(directory)
            if name.endswith(".pid")
        ]

    # -- the kinds of block ----------------------------------------------------

    def walk_background(self, block: Block, where: str) -> None:
        if self.server is not None:
            self.stop(self.server, where)
        # The demo's profiles, where "Running it for months" reads them.
        devices = os.path.join(self.clone, "devices.toml")
        if os.path.exists(devices):
            shutil.copy(devices, self.path("etc/weather/devices.toml"))
        self.server = self.start(block, aside=False)
        server = self.server
        port, page = self.ports[8266], self.ports[9266]
        # make run's first start makes the virtualenv: pip, from PyPI.
        wait_until(lambda: server.ready(port, page), 600, f"{where}: ready")

    def walk_aside(self, block: Block, where: str) -> None:
        process = self.start(block, aside=True)
        port = self.aside_ports[8266]
        wait_until(lambda: process.ready(port), 120, f"{where}: ready")
        self.stop(process, where)

    def walk_run_aside(self, block: Block, where: str) -> None:
        run_script(
            self, where, self.script(block, aside=True), self.clone, self.aside_environ
        )
        wait_until(lambda: not self.pid_files(), STOP_TIMEOUT, f"{where}: daemons stopped")

    def delivered(self) -> bool:
        """Whether the walk's server wrote points and holds none for InfluxDB."""
        metrics = fetch(f"http://127.0.0.1:{self.ports[9266]}/metrics")
        written = re.search(r"^weather_points_written_total (\S+)$", metrics, re.M)
        pending = re.search(r"^weather_points_pending (\S+)$", metrics, re.M)
        assert written and pending, metrics
        return float(written.group(1)) > 0 and float(pending.group(1)) == 0

    def walk_run(self, block: Block, where: str) -> None:
        if "/query" in block.text:
            # A reader asks InfluxDB seconds later; the server writes within
            # --flush-interval of the packet's acknowledgement.
            wait_until(self.delivered, 30, f"{where}: the readings delivered")
        done = run_script(self, where, self.script(block), self.clone, self.environ)
        self.outputs.append((block, done.stdout + done.stderr))

    def walk_run_stopped(self, block: Block, where: str) -> None:
        assert self.server is not None
        self.stop(self.server, where)
        self.server = None
        self.walk_run(block, where)

    # -- the walk -------------------------------------------------------------

    def test_followTheReadme(self) -> None:
        missing: set[str] = set()
        for block in page_blocks():
            where = f"README.md:{block.line}"
            if block.kind is None:
                continue
            if block.needs is not None and shutil.which(block.needs) is None:
                missing.add(block.needs)
                continue
            getattr(self, "walk_" + block.kind.replace(" ", "_"))(block, where)
            if block.kind == "run" and "weather simulate --port" in block.text:
                self.assertIn("balcony", fetch(f"http://127.0.0.1:{self.ports[9266]}/"))
        if self.server is not None:
            self.stop(self.server, "make run, at the end")

        simulated = self.output("weather simulate --port")
        answer = json.loads(self.output("curl -sG"))
        (series,) = answer["results"][0]["series"]
        values = [row[series["columns"].index("value")] for row in series["values"]]
        self.assertEqual(len(values), 3, answer)
        for value in values:
            # As printed: the reference station's stored values carry the
            # conversion's float noise (18.186992187500003 for 18.19).
            self.assertIn(f"temperature {value:.2f} °C", simulated)
        journal = os.path.join(self.clone, "weather-data", "journal")
        self.assertIn(f"in {journal}", self.output("weather journal status"))

        if missing:
            unavailable(
                f"{', '.join(sorted(missing))} not installed: the README's blocks "
                "that need it were not run (the rest passed)"
            )

    def output(self, command: str) -> str:
        """What the first block holding C{command} printed."""
        return next(out for block, out in self.outputs if command in block.text)
