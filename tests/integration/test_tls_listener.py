"""
The TLS listener of docs/deployment.md: stations connecting with TLS to
C{--port ssl:PORT:privateKey=KEY:certKey=CERT}, with a self-signed
certificate made at test time.

The server is built in this process with the real reactor, as twistd builds
it, and writes to a fake InfluxDB (L{FakeInfluxDB} behind treq's StubTreq, so
no HTTP sockets).  Stations are Twisted TLS clients that trust only that
certificate.
"""

from __future__ import annotations

import os

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    TCP4ClientEndpoint,
    connectProtocol,
)
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import TestCase

from tests.fakeinflux import FakeInfluxDB
from tests.integration import test_tls
from tests.support import Station, build_test_service, make_settings, reference_packet
from weather.server.protocol import ACK

#: Seconds a station gets for its whole exchange with the server.
TIMEOUT = 10


class TLSListenerTests(TestCase):
    def setUp(self) -> None:
        # The station checks the name: "localhost", which the certificate has.
        self.cert_pem, key_pem = test_tls.self_signed("localhost", ["localhost"], [])
        directory = self.mktemp()
        os.makedirs(directory)
        self.cert_path = os.path.join(directory, "cert.pem")
        self.key_path = os.path.join(directory, "key.pem")
        with open(self.cert_path, "wb") as f:
            f.write(self.cert_pem)
        with open(self.key_path, "wb") as f:
            f.write(key_pem)
        os.chmod(self.key_path, 0o600)
        self.fake = FakeInfluxDB()
        settings = make_settings(
            self,
            "--port",
            f"ssl:0:privateKey={self.key_path}:certKey={self.cert_path}"
            ":interface=127.0.0.1",
        )
        self.service = build_test_service(self, settings, reactor, StubTreq(self.fake))
        self.service.startService()
        self.addCleanup(self.stop)
        self.port = self.service.listener.port.getHost().port

    def stop(self) -> Deferred | None:
        if self.service.running:
            return self.service.stopService()
        return None

    @inlineCallbacks
    def send(self, packet: bytes, tls: bool = True, trust: bytes | None = None):
        """
        Connect as a station, with TLS trusting C{trust} (by default the
        server's certificate) or in plain TCP; send C{packet}; return the
        station once the connection is closed.
        """
        if tls:
            options = optionsForClientTLS(
                "localhost", trustRoot=Certificate.loadPEM(trust or self.cert_pem)
            )
            endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", self.port, options)
        else:
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        station = Station(packet)
        yield connectProtocol(endpoint, station)
        yield station.done.addTimeout(TIMEOUT, reactor)
        return station

    def temperatures(self) -> list[float]:
        return [
            point.fields["value"]
            for point in self.fake.points_in("weather")
            if point.measurement == "temperature" and point.tags == {"place": "balcony"}
        ]

    @inlineCallbacks
    def test_packetOverTLS(self):
        """A station that trusts the certificate is acknowledged; the points land."""
        station = yield self.send(reference_packet(30))
        self.assertEqual(station.received, ACK)
        # Stopping lets the writer deliver everything it holds.
        yield self.service.stopService()
        self.assertEqual(len(self.temperatures()), 30)
        self.assertEqual(len(self.fake.points_in("weather")), 90)
        self.assertEqual(self.service.listener.factory.stats.packets_acknowledged, 1)

    @inlineCallbacks
    def test_untrustedCertificate(self):
        """
        The server does present that certificate: a station trusting some
        other one gives up in the handshake, and nothing is stored.
        """
        other_pem, _ = test_tls.self_signed("localhost", ["localhost"], [])
        station = yield self.send(reference_packet(30), trust=other_pem)
        self.assertEqual(station.received, b"")
        self.assertIn("certificate verify failed", station.reason.getErrorMessage())
        yield self.service.stopService()
        self.assertEqual(self.fake.points, [])
        self.assertEqual(self.service.pipeline.stats.packets_accepted, 0)

    @inlineCallbacks
    def test_plainTCPRefused(self):
        """
        A station writing its packet without TLS is not acknowledged and
        nothing is stored (the bytes are a broken handshake, not a packet);
        the server goes on, and the next TLS station is served.
        """
        plain = yield self.send(reference_packet(30, device_id=1, start=500), tls=False)
        self.assertNotEqual(plain.received[:1], ACK)
        self.assertEqual(self.service.pipeline.stats.packets_accepted, 0)
        self.assertEqual(self.service.pipeline.stats.packets_rejected.total(), 0)
        self.assertTrue(self.service.listener.running)
        station = yield self.send(reference_packet(30))
        self.assertEqual(station.received, ACK)
        yield self.service.stopService()
        # Only the TLS station's readings: its lux values start at 100.
        light = [p.fields["value"] for p in self.fake.points if p.measurement == "light"]
        self.assertEqual(light, [float(100 + i) for i in range(30)])
        self.assertEqual(self.service.pipeline.stats.packets_accepted, 1)
