"""
SIGHUP re-reads the devices file: a good file changes the profiles used from
the next packet on, a bad one keeps the old profiles and says why, and the
signal never ends the process.
"""

from __future__ import annotations

import os
import signal

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.fakeinflux import FakeInfluxDB
from tests.support import (
    build_test_service,
    make_settings,
    reference_devices_toml,
    reference_packet,
)
from weather.app.reload import DevicesReloader, HangupService

PEER = IPv4Address("TCP", "192.0.2.7", 40123)


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.devices = self.mktemp()
        self.write_devices(reference_devices_toml(**{"1": "balcony"}))
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_700_000_000)
        self.fake = FakeInfluxDB(clock=lambda: 0)
        settings = make_settings(self, "--devices", self.devices, "--flush-interval", "600")
        self.service = build_test_service(self, settings, self.reactor, StubTreq(self.fake))
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def write_devices(self, text: str) -> None:
        with open(self.devices, "w", encoding="utf-8") as f:
            f.write(text)

    def send(self, data: bytes) -> None:
        protocol = self.service.listener.factory.buildProtocol(PEER)
        protocol.makeConnection(StringTransport(peerAddress=PEER))
        protocol.dataReceived(data)
        protocol.connectionLost(None)
        self.service.writer.flush()

    def places(self) -> set[tuple[str, str]]:
        return {(p.measurement, p.tags["place"]) for p in self.fake.points}

    def messages(self, namespace: str) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e.get("log_namespace") == namespace]

    def test_goodFile(self) -> None:
        """New tags and a new device are used from the next packet on."""
        self.send(reference_packet(device_id=2))
        self.assertEqual(self.service.pipeline.stats.packets_rejected["unknown-device"], 1)
        self.write_devices(reference_devices_toml(**{"1": "garden", "2": "roof"}))
        self.assertTrue(self.service.reloader.reload())
        self.send(reference_packet(device_id=1))
        self.send(reference_packet(device_id=2))
        self.assertEqual(
            self.places(),
            {
                (m, p)
                for m in ("light", "humidity", "temperature")
                for p in ("garden", "roof")
            },
        )
        [line] = self.messages("weather.app.reload.DevicesReloader")
        self.assertIn("2 station profiles (added 2, removed none, changed 1)", line)

    def test_badFileKeepsOldProfiles(self) -> None:
        self.write_devices("[devices.1]\nvalues = 'not a list'\n")
        self.assertFalse(self.service.reloader.reload())
        self.send(reference_packet())
        self.assertEqual({p for _, p in self.places()}, {"balcony"})
        [line] = self.messages("weather.app.reload.DevicesReloader")
        self.assertIn(self.devices, line)
        self.assertIn("still using the 1 profile loaded before", line)
        self.assertEqual(self.service.reloader.failures, 1)

    def test_missingFileKeepsOldProfiles(self) -> None:
        os.remove(self.devices)
        self.assertFalse(self.service.reloader.reload())
        self.send(reference_packet())
        self.assertEqual({p for _, p in self.places()}, {"balcony"})

    def test_fifoRefusedWithoutBlocking(self) -> None:
        """
        A FIFO in place of the file (no writer): one line and the old
        profiles, at once (opening it to read would wait for a writer).
        """
        os.remove(self.devices)
        os.mkfifo(self.devices)
        self.assertFalse(self.service.reloader.reload())
        self.send(reference_packet())
        self.assertEqual({p for _, p in self.places()}, {"balcony"})
        [line] = self.messages("weather.app.reload.DevicesReloader")
        self.assertIn(f"--devices {self.devices}: a FIFO, not a regular file", line)

    def test_deeplyNestedOneLine(self) -> None:
        """A file nested 5,000 deep: one line (it was a RecursionError's 2,000)."""
        self.write_devices("[devices.1]\nvalues = " + "[" * 5000 + "]" * 5000 + "\n")
        self.assertFalse(self.service.reloader.reload())
        [line] = self.messages("weather.app.reload.DevicesReloader")
        self.assertIn("nested too deeply", line)
        self.assertNotIn("\n", line)
        self.assertEqual(self.service.reloader.failures, 1)

    def test_noDevicesFile(self) -> None:
        applied = []
        reloader = DevicesReloader(None, applied.append, {})
        self.assertFalse(reloader.reload())
        self.assertEqual(applied, [])


class FakeReactor:
    def __init__(self) -> None:
        self.calls: list = []

    def callFromThread(self, f, *args) -> None:
        self.calls.append(f)


class HangupServiceTests(SynchronousTestCase):
    def test_sighupCallsActionInReactor(self) -> None:
        """While running, SIGHUP queues the action; the process goes on."""
        reactor = FakeReactor()
        actions: list[str] = []
        service = HangupService(reactor, lambda: actions.append("reload"))
        before = signal.getsignal(signal.SIGHUP)
        service.startService()
        self.addCleanup(service.restore)
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(len(reactor.calls), 1)
        reactor.calls[0]()
        self.assertEqual(actions, ["reload"])
        # Stopped: SIGHUP must not end the process in the middle of its stop.
        service.stopService()
        os.kill(os.getpid(), signal.SIGHUP)
        reactor.calls[1]()
        self.assertEqual(actions, ["reload"])
        service.restore()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)

    def test_burstReloadsOnce(self) -> None:
        """SIGHUPs that arrive before the reload has run are one reload."""
        reactor = FakeReactor()
        actions: list[str] = []
        service = HangupService(reactor, lambda: actions.append("reload"))
        service.startService()
        self.addCleanup(service.restore)
        for _ in range(5):
            service.hangup(signal.SIGHUP, None)
        self.assertEqual(len(reactor.calls), 1)
        reactor.calls[0]()
        self.assertEqual(actions, ["reload"])
        service.hangup(signal.SIGHUP, None)  # after it ran: another
        self.assertEqual(len(reactor.calls), 2)

    def test_handledOnceInstalled(self) -> None:
        """
        C{handled} (the server's pid written for weather replay) is called
        at start, once SIGHUP has its handler, not before.
        """
        reactor = FakeReactor()
        seen: list[object] = []
        service = HangupService(
            reactor, handled=lambda: seen.append(signal.getsignal(signal.SIGHUP))
        )
        self.addCleanup(service.restore)
        self.assertEqual(seen, [])
        service.startService()
        self.assertEqual(seen, [service.hangup])

    def test_installedBeforeStart(self) -> None:
        """
        Installed before the services start (twistd opens the journal before
        its reactor runs): a SIGHUP then runs the actions once the reactor
        runs, when the service does.
        """
        reactor = FakeReactor()
        actions: list[str] = []
        service = HangupService(reactor, lambda: actions.append("reload"))
        service.install()
        self.addCleanup(service.restore)
        os.kill(os.getpid(), signal.SIGHUP)
        service.startService()
        [queued] = reactor.calls
        queued()
        self.assertEqual(actions, ["reload"])

    def test_reloadThenReplay(self) -> None:
        """The actions run in order: the devices file first, then the replays."""
        reactor = FakeReactor()
        actions: list[str] = []
        service = HangupService(
            reactor, lambda: actions.append("reload"), lambda: actions.append("replay")
        )
        service.startService()
        self.addCleanup(service.restore)
        service.hangup(signal.SIGHUP, None)
        reactor.calls[0]()
        self.assertEqual(actions, ["reload", "replay"])
