"""
The real daemon with its wall clock stepped under it (libfaketime, for its
process only): its own timers run on the monotonic clock, so an hour's step
back does not hold an idle connection open for an hour, and an hour's step
forward does not cut a station in mid-upload; arrivals still say the wall
clock's time, and the step is logged.
"""

from __future__ import annotations

import glob
import os
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.daemon import LOOPBACK, Daemon, environment, free_listening_port
from tests.support import reference_packet, unavailable
from weather.journal.store import JournalFile
from weather.server.protocol import ACK

IDLE_TIMEOUT = 3.0


def libfaketime() -> str:
    found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not found:
        unavailable("libfaketime is not installed (apt-get install libfaketime)")
    return found[0]


class WallClockStepTests(SynchronousTestCase):
    def setUp(self) -> None:
        library = libfaketime()
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        #: The daemon's wall clock: this offset from the real one (libfaketime
        #: reads it at every call; the monotonic and boot clocks stay real).
        self.offset_file = os.path.join(workdir, "faketime")
        self.step("+0")
        self.data_dir = os.path.join(workdir, "data")
        self.port = free_listening_port()
        environ = environment(workdir)
        environ.update(
            LD_PRELOAD=library,
            FAKETIME_TIMESTAMP_FILE=self.offset_file,
            FAKETIME_NO_CACHE="1",
            DONT_FAKE_MONOTONIC="1",
        )
        self.server = Daemon(
            [
                "--port",
                f"tcp:{self.port}:interface={LOOPBACK}",
                "--data-dir",
                self.data_dir,
                # Nothing listens there: packets stay in the journal.
                "--influx-url",
                f"http://{LOOPBACK}:{free_listening_port()}",
                "--idle-timeout",
                str(IDLE_TIMEOUT),
                "--shutdown-timeout",
                "1",
            ],
            workdir,
            environ=environ,
        )
        self.addCleanup(self.server.kill)
        self.server.wait_ready(timeout=30)

    def step(self, offset: str) -> None:
        """Set the daemon's wall clock to the real one plus C{offset} seconds."""
        with open(self.offset_file, "w") as f:
            f.write(offset + "\n")

    def connect(self) -> socket.socket:
        connection = socket.create_connection((LOOPBACK, self.port), timeout=30)
        self.addCleanup(connection.close)
        return connection

    def upload(self, packet: bytes) -> bytes:
        """A station's upload: the packet, then what the server answers."""
        connection = self.connect()
        connection.sendall(packet)
        return connection.recv(1)

    def test_stepBackHoldsNoIdleConnection(self) -> None:
        self.assertEqual(self.upload(reference_packet()), ACK)
        idle = self.connect()
        idle.sendall(reference_packet()[:10])
        time.sleep(0.5)
        self.step("-3600")
        started = time.monotonic()
        try:
            self.assertEqual(idle.recv(1), b"")  # closed by the server
        except ConnectionResetError:
            pass  # cut (aborted) by the server
        waited = time.monotonic() - started
        # Cut at its idle timeout, not an hour later (the socket's own
        # timeout, 30 s, would have failed the recv).
        self.assertLess(waited, IDLE_TIMEOUT + 10)
        # The next packet is stamped with the stepped wall clock; the step
        # is logged once.
        self.assertEqual(self.upload(reference_packet()), ACK)
        self.server.stop()
        self.assertIn("The wall clock stepped by -3", self.server.log())
        file = JournalFile(self.data_dir, create=False)
        self.addCleanup(file.close)
        arrival_ns = file.stations()[1].arrival_ns
        self.assertLess(abs(arrival_ns / 1e9 - (time.time() - 3600)), 60)

    def test_stepForwardCutsNoUpload(self) -> None:
        packet = reference_packet()
        station = self.connect()
        station.sendall(packet[:40])
        time.sleep(0.5)
        self.step("+3600")
        time.sleep(0.5)
        # Another station's upload wakes the server: on the wall clock the
        # first one's idle timeout would now be an hour overdue.
        self.assertEqual(self.upload(reference_packet()), ACK)
        time.sleep(0.5)
        station.sendall(packet[40:])
        self.assertEqual(station.recv(1), ACK)
        self.server.stop()
        self.assertNotIn("truncated", self.server.log())
