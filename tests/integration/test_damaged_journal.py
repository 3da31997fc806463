"""
A damaged journal through the real daemon (C{twistd weather}): 200 packets
wait in the journal (InfluxDB unreachable), then the journal is emptied,
garbled or left with read-only files.  The server refuses to start in one
line, C{weather journal check} says what is damaged, C{weather journal
salvage} copies every readable packet into a new journal, and the server
then delivers them to a real influxd: nothing is lost beyond the rows on
the damaged pages.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from twisted.trial.unittest import TestCase

from tests.integration.daemon import (
    LOOPBACK,
    Daemon,
    environment,
    free_listening_port,
    twistd,
    wait_until,
)
from tests.integration.influxd import start_influxd
from tests.support import reference_devices_toml, reference_packet
from weather.core.dump import counted
from weather.journal.pages import Pages
from weather.journal.store import FILENAME, JournalFile
from weather.server.protocol import ACK

DATABASE = "weather"
PACKETS = 200
PAGE = 4096
#: Linux's capabilities that let root read and write whatever the file modes say.
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
PR_CAPBSET_DROP = 24


def without_file_privilege() -> None:
    """
    In a child: root without the capabilities that pass over file modes
    (the test runs as root, and an unprivileged user could not reach this
    Python), so a read-only journal is read-only to it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def weather(*argv: str, privileged: bool = True) -> subprocess.CompletedProcess[str]:
    """The C{weather} command, as an operator runs it."""
    command = [os.path.join(os.path.dirname(sys.executable), "weather"), *argv]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=None if privileged else without_file_privilege,
    )


def send(port: int, packet: bytes) -> bytes:
    """One upload, as the firmware makes it, waiting for the ACK byte."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as connection:
        connection.sendall(packet)
        return connection.recv(1)


class DamagedJournalTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="weather-damaged-")
        self.addCleanup(shutil.rmtree, self.workdir, True)
        self.data_dir = os.path.join(self.workdir, "data")
        self.journal = os.path.join(self.data_dir, FILENAME)
        self.devices = os.path.join(self.workdir, "devices.toml")
        with open(self.devices, "w") as f:
            f.write(reference_devices_toml(**{str(d): f"s{d}" for d in self.device_ids}))
        self.port = free_listening_port()
        self.packets = {
            d: reference_packet(30, device_id=d, start=d) for d in self.device_ids
        }
        self.fill()

    #: One packet from each of 200 stations: each its own series in InfluxDB.
    device_ids = range(1, PACKETS + 1)

    def arguments(self, influx_url: str) -> list[str]:
        return [
            "--port",
            f"tcp:{self.port}:interface={LOOPBACK}",
            "--influx-url",
            influx_url,
            "--database",
            DATABASE,
            "--devices",
            self.devices,
            "--data-dir",
            self.data_dir,
            "--flush-interval",
            "0.2",
            "--max-backoff",
            "1",
            "--shutdown-timeout",
            "2",
        ]

    def fill(self) -> None:
        """200 packets acknowledged, then the server stopped: all still to deliver."""
        unreachable = f"http://{LOOPBACK}:{free_listening_port()}"
        server = Daemon(self.arguments(unreachable), self.workdir)
        self.addCleanup(server.kill)
        server.wait_ready()
        for device in self.device_ids:
            self.assertEqual(send(self.port, self.packets[device]), ACK)
        server.stop()
        self.assertIn(f"Journal closed: {PACKETS} packets to deliver", server.log())

    def refused(self, privileged: bool = True) -> str:
        """The server does not start: its one line."""
        result = subprocess.run(
            [twistd(), "-n", "--pidfile=", "weather", *self.arguments("http://[::1]:9")],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            env=environment(self.workdir),
            preexec_fn=None if privileged else without_file_privilege,
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        line = result.stderr
        self.assertTrue(line.startswith("weather: "), line)
        self.assertEqual(line.count("\n"), 1, line)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        return line.strip()

    def deliver(self, expected: Sequence[int]) -> None:
        """Start the server against a real influxd: the packets of C{expected} land."""
        influx = start_influxd(self)
        influx.create_database(DATABASE)
        server = Daemon(self.arguments(influx.url), self.workdir, self.workdir + "/2.log")
        self.addCleanup(server.kill)
        # Listening comes first (privileged start), the journal's start after.
        server.wait_ready(lambda: f"Journal {self.journal}: " in server.log())

        def stored() -> dict[str, list[int]]:
            series: dict[str, list[int]] = {}
            for _, value, tags in influx.points("light", DATABASE, "value"):
                series.setdefault(tags["place"], []).append(value)
            return series

        wait_until(lambda: len(stored()) >= len(expected), 60, "salvaged packets stored")
        server.stop()
        started = f"Journal {self.journal}: {len(expected)} packets to deliver"
        self.assertIn(started, server.log())
        self.assertIn("Journal closed: 0 packets to deliver", server.log())
        self.assertNotIn("Traceback", server.log())
        lux = {f"s{d}": sorted(100 + d + i for i in range(30)) for d in expected}
        self.assertEqual({place: sorted(v) for place, v in stored().items()}, lux)

    def test_emptied(self) -> None:
        """Truncated to 0 bytes: refused, said, and started anew only when asked."""
        os.truncate(self.journal, 0)
        line = self.refused()
        self.assertTrue(line.startswith(f"weather: the journal {self.journal} is empty"))
        self.assertIn("weather journal check --data-dir", line)
        self.assertIn("weather journal salvage --data-dir", line)
        self.assertEqual(os.path.getsize(self.journal), 0)

        checked = weather("journal", "check", "--data-dir", self.data_dir)
        self.assertEqual(checked.returncode, 1, checked.stdout + checked.stderr)
        self.assertIn("State:        damaged: is empty (0 bytes)", checked.stdout)

        salvaged = weather("journal", "salvage", "--data-dir", self.data_dir)
        self.assertEqual(salvaged.returncode, 0, salvaged.stdout + salvaged.stderr)
        self.assertIn("Salvaged:     0 packets", salvaged.stdout)
        [kept] = [n for n in os.listdir(self.data_dir) if n.startswith("journal-damaged-")]
        self.assertEqual(os.path.getsize(os.path.join(self.data_dir, kept, FILENAME)), 0)
        self.deliver([])

    def test_garbled(self) -> None:
        """
        Random bytes over the packet table's top page and two of its leaves:
        refused in one line; every packet on another page is salvaged and
        delivered, the check's count of those lost is exact.
        """
        with open(self.journal, "rb") as f:
            pages = {
                row.rowid: row.page
                for row in Pages(f, PAGE).rows()
                if len(row.values) == 15 and row.values[0] is None
            }
        file = JournalFile(self.data_dir, create=False)
        [root] = file.connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'packet'"
        ).fetchone()
        file.close()
        seed = int(os.environ.get("WEATHER_TEST_SEED") or random.randrange(2**32))
        chance = random.Random(seed)
        leaves = chance.sample(sorted(set(pages.values())), 2)
        with open(self.journal, "r+b") as f:
            for page in (root, *leaves):
                f.seek((page - 1) * PAGE)
                f.write(chance.randbytes(PAGE))
        lost = {i for i, page in pages.items() if page in leaves}
        print(
            f"\n  garbled pages {root} (root), {leaves} (seed {seed}, "
            f"WEATHER_TEST_SEED={seed} repeats it): {len(lost)} lost"
        )

        line = self.refused()
        self.assertTrue(line.startswith(f"weather: the journal {self.journal} "), line)
        self.assertIn("weather journal salvage", line)
        status = weather("journal", "status", "--data-dir", self.data_dir)
        self.assertEqual(status.returncode, 1, status.stdout)
        self.assertEqual(status.stderr.count("\n"), 1, status.stderr)
        self.assertIn("weather journal salvage", status.stderr)

        checked = weather("journal", "check", "--data-dir", self.data_dir)
        self.assertEqual(checked.returncode, 1, checked.stdout + checked.stderr)
        readable = PACKETS - len(lost)
        self.assertIn(
            f"Readable:     {readable} packets ({readable} to deliver", checked.stdout
        )
        # Past the last packet read, how many were lost cannot be told.
        last = max(i for i in pages if i not in lost)
        below = counted(len({i for i in lost if i < last}), "packet")
        self.assertIn(f"Lost:         at most {below}", checked.stdout)

        salvaged = weather("journal", "salvage", "--data-dir", self.data_dir)
        self.assertEqual(salvaged.returncode, 0, salvaged.stdout + salvaged.stderr)
        self.assertIn(f"Salvaged:     {readable} packets", salvaged.stdout)
        print("  " + salvaged.stdout.replace("\n", "\n  "))
        # The packet ids are the devices' order of sending.
        self.deliver([d for d in self.device_ids if d not in lost])

    def test_readOnlyFilesLeft(self) -> None:
        """
        chmod 444, a reader opens it (SQLite makes its -wal and -shm with the
        journal's mode), chmod 644: the files still read-only are named, with
        the command that fixes them; once run, everything is delivered.
        """
        os.chmod(self.journal, 0o444)
        line = self.refused(privileged=False)
        self.assertIn(f"{self.journal} (mode 0444): run chmod u+rw {self.journal}", line)
        reader = (
            "import sqlite3, sys; "
            "print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM packet')"
            ".fetchone()[0])"
        )
        result = subprocess.run(
            [sys.executable, "-c", reader, self.journal],
            capture_output=True,
            text=True,
            preexec_fn=without_file_privilege,
        )
        self.assertEqual(result.stdout.strip(), str(PACKETS), result.stderr)
        os.chmod(self.journal, 0o644)
        line = self.refused(privileged=False)
        wal, shm = self.journal + "-wal", self.journal + "-shm"
        self.assertEqual(
            line,
            f"weather: the journal's files cannot be read and written by root: {wal} "
            f"(mode 0444), {shm} (mode 0444): run chmod u+rw {wal} {shm}",
        )
        status = weather("journal", "status", "--data-dir", self.data_dir, privileged=False)
        self.assertEqual(status.returncode, 1)
        self.assertEqual(status.stderr.strip(), line)
        os.chmod(wal, 0o600)
        os.chmod(shm, 0o600)
        self.deliver(self.device_ids)
