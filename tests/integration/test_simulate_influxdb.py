"""
C{weather simulate}: stations that behave as the firmware does, with readings
that follow a day, checked against docs/protocol.md through the real decoder.
"""

from __future__ import annotations

import io

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from tests.integration.test_integration import InfluxTestCase
from tests.unit.test_simulate import S
from weather.tools.simulate import (
    Simulation,
    StationModel,
    tcp_connector,
)


class SimulatorIntoInfluxDBTests(InfluxTestCase):
    """
    Simulated stations, over real TCP (packets split over segments), into the
    assembled server and a real influxd: what InfluxDB holds is what the
    simulator says it sent, at the true times (within the stations' drift).
    """

    @inlineCallbacks
    def test_whatWasSentIsStored(self):
        service, port = self.start_simulated_fleet_server([1, 2, 3])
        stations = [
            StationModel(d, wake_every=2, measure_every=1, drift=0.01) for d in (1, 2, 3)
        ]
        out = io.StringIO()
        simulation = Simulation(
            reactor, tcp_connector(reactor, "127.0.0.1", port), stations, 2, out, segments=2
        )
        totals = yield simulation.run()
        self.assertEqual((totals.packets, totals.records, totals.failed), (6, 12, 0))
        # The firmware does not wait: the last packets may still be on their way.
        for _ in range(1000):
            if service.writer.stats.points_written == 36:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        else:
            self.fail(f"36 points not written within 10 s: {service.writer.stats}")
        yield service.stopService()

        sent: dict[int, list[tuple[float, float]]] = {}
        device = 0
        for line in out.getvalue().splitlines():
            if line.startswith("station "):
                device = int(line.split()[1].rstrip(":"))
            else:
                clock, _, lux = line.split()[:3]
                hours, minutes, seconds = clock.split(":")
                sent.setdefault(device, []).append(
                    (float(seconds) + 60 * int(minutes), float(lux))
                )
        for device, records in sent.items():
            stored = self.stored("light", f"station-{device}")
            self.assertEqual([v for _, v in stored], [v for _, v in records])
            for (when_ns, _), (true_seconds, _) in zip(stored, records, strict=True):
                stored_seconds = (when_ns / S) % 3600
                # Stamped within the drift (1 % of 1 s per record) and the
                # connection's delay of the true time.
                off = (stored_seconds - true_seconds + 1800) % 3600 - 1800
                self.assertLess(abs(off), 0.15, device)
