"""
Clock trust (--clock-sync): the kernel's clock status, the detection of an
NTP client, the choice auto makes, and the gate that holds decoding until the
clock is synchronized and then puts held arrivals right.
"""

from __future__ import annotations

import ctypes
import os
import struct

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.support import make_settings
from weather.app.options import ConfigurationError
from weather.app.tap import clock_gate
from weather.core.packet import Packet
from weather.server.clock import (
    MAX_ERROR_US,
    STA_UNSYNC,
    TIME_ERROR,
    ClockGate,
    FakeClockStatus,
    IClockStatus,
    KernelClockStatus,
    Timex,
    choose_wait,
    find_ntp_client,
    timex_synchronized,
)

S = 1_000_000_000
T0 = 1_700_000_000
#: The boot clock when the tests begin.
B0 = 500 * S


def timex_bytes(status: int, maxerror: int) -> bytes:
    """A C{struct timex} as the C library lays it out: modes to status, then zeros."""
    head = struct.pack("@Illlli", 0, 11, 22, maxerror, 33, status)
    return head + bytes(ctypes.sizeof(Timex) - len(head))


class KernelClockStatusTests(SynchronousTestCase):
    def test_interface(self) -> None:
        verifyObject(IClockStatus, KernelClockStatus())
        verifyObject(IClockStatus, FakeClockStatus())

    def test_readsThisMachine(self) -> None:
        """adjtimex(2) with modes = 0 only reads: it answers, here, without raising."""
        self.assertIsInstance(KernelClockStatus().synchronized(), bool)

    def test_parse(self) -> None:
        """The fields the rule reads sit where the C library puts them."""
        timex = Timex.from_buffer_copy(timex_bytes(STA_UNSYNC | 0x1, 1_234_567))
        self.assertEqual((timex.status, timex.maxerror), (STA_UNSYNC | 0x1, 1_234_567))
        self.assertEqual((timex.offset, timex.freq, timex.esterror), (11, 22, 33))

    def test_rule(self) -> None:
        """systemd's rule: no TIME_ERROR, no STA_UNSYNC, maxerror under 16 s."""

        def synchronized(state: int, status: int, maxerror: int) -> bool:
            return timex_synchronized(
                state, Timex.from_buffer_copy(timex_bytes(status, maxerror))
            )

        self.assertTrue(synchronized(0, 0x2001, 500_000))
        self.assertFalse(synchronized(TIME_ERROR, 0, 500_000))
        self.assertFalse(synchronized(0, STA_UNSYNC, 500_000))
        self.assertFalse(synchronized(0, 0, MAX_ERROR_US))
        self.assertTrue(synchronized(0, 0, MAX_ERROR_US - 1))


class NTPClientTests(SynchronousTestCase):
    def proc(self, **processes: str) -> str:
        """A fake /proc: C{pid=comm}."""
        root = self.mktemp()
        os.makedirs(os.path.join(root, "self"))
        for pid, comm in processes.items():
            os.makedirs(os.path.join(root, pid.lstrip("p")))
            with open(os.path.join(root, pid.lstrip("p"), "comm"), "w") as f:
                f.write(comm + "\n")
        os.makedirs(os.path.join(root, "99"))  # gone before its comm was read
        return root

    def test_none(self) -> None:
        self.assertIsNone(find_ntp_client(self.proc(p1="systemd", p42="twistd")))

    def test_found(self) -> None:
        for name in ("systemd-timesyn", "chronyd", "ntpd", "openntpd"):
            self.assertEqual(find_ntp_client(self.proc(p1="init", p7=name)), name)

    def test_noProc(self) -> None:
        self.assertIsNone(find_ntp_client(self.mktemp()))

    def test_choice(self) -> None:
        self.assertEqual(choose_wait("wait", None), (True, "--clock-sync wait"))
        self.assertEqual(choose_wait("trust", "chronyd"), (False, "--clock-sync trust"))
        self.assertEqual(
            choose_wait("auto", "chronyd"),
            (True, "--clock-sync auto, and chronyd manages the clock"),
        )
        wait, why = choose_wait("auto", None)
        self.assertFalse(wait)
        self.assertIn("no NTP client", why)


class StartupChoiceTests(SynchronousTestCase):
    """What the server makes of --clock-sync at start, said in one line."""

    def gate(self, *args: str, ntp_client=None, status=None) -> tuple[ClockGate, list]:
        settings = make_settings(self, *args)
        status = status if status is not None else FakeClockStatus(False)
        with capturedLogs() as events:
            gate = clock_gate(settings, Clock(), status, ntp_client, lambda: B0, "boot")
        return gate, [formatEvent(e) for e in events]

    def test_autoWithoutNTPClientTrusts(self) -> None:
        """A development machine or CI: unsynchronized, no NTP client, nothing held."""
        gate, said = self.gate()
        self.assertFalse(gate.wait)
        gate.start(lambda: None)
        self.assertFalse(gate.holding)
        self.assertEqual(
            said,
            [
                "Readings are stamped with the wall clock as it is (--clock-sync auto, "
                "and no NTP client manages the clock here); the kernel says the wall "
                "clock is not synchronized"
            ],
        )

    def test_autoWithNTPClientWaits(self) -> None:
        gate, said = self.gate(ntp_client="systemd-timesyn")
        self.assertTrue(gate.wait)
        self.assertEqual(len(said), 1)
        self.assertIn("stamped once the wall clock is synchronized", said[0])
        self.assertIn("systemd-timesyn manages the clock", said[0])

    def test_trustAndWait(self) -> None:
        self.assertFalse(self.gate("--clock-sync", "trust", ntp_client="chronyd")[0].wait)
        self.assertTrue(self.gate("--clock-sync", "wait")[0].wait)

    def test_badValue(self) -> None:
        error = self.assertRaises(
            ConfigurationError, make_settings, self, "--clock-sync", "maybe"
        )
        self.assertEqual(str(error), "--clock-sync 'maybe': give auto, wait or trust")

    def test_waitWithoutKernelStatus(self) -> None:
        """Waiting for a status the kernel cannot give would wait for ever: refused."""
        status = FakeClockStatus()
        status.error = OSError(38, "Function not implemented")
        error = self.assertRaises(
            ConfigurationError, self.gate, "--clock-sync", "wait", status=status
        )
        self.assertIn("use --clock-sync trust", str(error))
        gate, said = self.gate(status=status)
        self.assertFalse(gate.wait)
        self.assertIn("the wall clock is unknown", said[0])


class ClockGateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.boot_ns = B0
        self.status = FakeClockStatus(False)
        self.released: list[bool] = []
        self.gate = ClockGate(
            self.status, self.clock, lambda: self.boot_ns, "boot-1", wait=True
        )

    def advance(self, seconds: int) -> None:
        """Time passes: on both clocks."""
        self.boot_ns += seconds * S
        self.clock.advance(seconds)

    def test_synchronizedAtStart(self) -> None:
        self.status.is_synchronized = True
        self.gate.start(lambda: self.released.append(True))
        self.assertFalse(self.gate.holding)
        self.assertEqual(self.gate.offset_ns, T0 * S - B0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_holdsUntilSynchronized(self) -> None:
        """Asked every 10 s; released once; then asked no more."""
        with capturedLogs() as events:
            self.gate.start(lambda: self.released.append(True))
        self.assertEqual(len(events), 1)
        self.assertTrue(self.gate.holding)
        self.advance(3600)
        self.assertTrue(self.gate.holding)
        self.status.is_synchronized = True
        self.advance(9)
        self.assertEqual(self.released, [])
        self.advance(1)
        self.assertEqual(self.released, [True])
        self.assertFalse(self.gate.holding)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_kernelCannotSay(self) -> None:
        """A failing status is not synchronized: still held, nothing raised."""
        self.status.error = OSError("no")
        self.gate.start(lambda: None)
        self.advance(60)
        self.assertTrue(self.gate.holding)
        self.assertIsNone(self.gate.synchronized())

    def test_rebase(self) -> None:
        """
        Held packets of this boot are stamped on the synchronized clock;
        packets of another boot cannot be; later ones are left alone.
        """
        self.gate.start(lambda: None)
        early = Packet(b"", "p", T0 * S, self.boot_ns)
        self.advance(100)
        # NTP steps the wall clock 3 hours forward.
        self.clock.advance(3 * 3600)
        self.status.is_synchronized = True
        self.advance(10)
        self.assertEqual(self.gate.rebase(early, "boot-1"), (T0 + 3 * 3600) * S)
        self.assertIsNone(self.gate.rebase(early, "boot-0"))
        self.assertIsNone(self.gate.rebase(early, None))
        unknown_boot_clock = Packet(b"", "p", T0 * S, None)
        self.assertIsNone(self.gate.rebase(unknown_boot_clock, "boot-1"))
        now = round(self.clock.seconds() * S)
        later = Packet(b"", "p", now + 7, self.boot_ns + 1)
        self.assertEqual(self.gate.rebase(later, "boot-1"), now + 7)

    def test_rebaseKeepsWhatWasRight(self) -> None:
        """
        An arrival within a second of its rebased value is kept to the
        nanosecond: rebasing it again (a replay) changes nothing.
        """
        self.gate.start(lambda: None)
        packet = Packet(b"", "p", T0 * S + 123, self.boot_ns)
        self.advance(100)
        self.clock.advance(0.5)  # NTP slewed it by half a second
        self.status.is_synchronized = True
        self.advance(10)
        self.assertEqual(self.gate.rebase(packet, "boot-1"), T0 * S + 123)

    def test_trustHoldsNothing(self) -> None:
        gate = ClockGate(self.status, self.clock, lambda: self.boot_ns, "b", wait=False)
        gate.start(lambda: self.released.append(True))
        self.assertFalse(gate.holding)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(gate.synchronized())
