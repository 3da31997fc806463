"""
The InfluxDB client's TLS policies (L{weather.server.http}), exercised with the real
reactor against a loopback C{https://} server whose self-signed certificate is
made at test time: refused by default, accepted with C{--ca-file} when the
name matches, refused with the right CA but the wrong name, and accepted with
C{--insecure}.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.exceptions import DNSMismatch, IPAddressMismatch
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import PrivateCertificate
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.filepath import FilePath
from twisted.trial import unittest
from twisted.web._newclient import RequestTransmissionFailed
from twisted.web.resource import Resource
from twisted.web.server import Site

from weather.app.settings import Options, settings_from_options
from weather.server.http import UnverifiedPolicy, make_client, tls_policy

BODY = b"m value=1 1"


def self_signed(
    common_name: str, dns_names: list[str], ip_addresses: list[str]
) -> tuple[bytes, bytes]:
    """
    A self-signed certificate, as C{openssl req -x509} makes one, for the
    given names; returns (certificate PEM, private key PEM).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class _Write(Resource):
    """POST /write answered as InfluxDB 1.x does when it takes the points."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request) -> bytes:
        self.bodies.append(request.content.read())
        request.setResponseCode(204)
        return b""


class _Tracked(ProtocolWrapper):
    def connectionLost(self, reason) -> None:
        ProtocolWrapper.connectionLost(self, reason)
        self.factory.lost(self)


class _TrackingFactory(WrappingFactory):
    """Knows the server's open connections, to wait for them to close."""

    protocol = _Tracked

    def __init__(self, wrapped: Factory) -> None:
        super().__init__(wrapped)
        self.connected = 0
        self._closed: dict[_Tracked, Deferred] = {}

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        self.connected += 1
        self._closed[protocol] = Deferred()
        return protocol

    def lost(self, protocol: _Tracked) -> None:
        self._closed.pop(protocol).callback(None)

    def all_closed(self) -> Deferred:
        return DeferredList(list(self._closed.values()))


class TLSPolicyTests(unittest.TestCase):
    """
    Real TLS over 127.0.0.1, with the client C{weather.app.tap} builds: the
    policy from L{tls_policy} in the agent of L{make_client}.

    A refused certificate fails the request with L{RequestTransmissionFailed}:
    until the handshake is done the TLS transport buffers what the client
    writes and pauses the request body's producer, so the body is never
    finished when the handshake fails and the connection is lost.
    """

    def setUp(self) -> None:
        #: One certificate for the loopback names, one for some other host.
        self.certificates = {
            "loopback": self_signed("localhost", ["localhost"], ["127.0.0.1"]),
            "elsewhere": self_signed("influx.example", ["influx.example"], []),
        }

    @inlineCallbacks
    def serve(self, which: str):
        """
        Listen on 127.0.0.1 with certificate C{which}; return the port number.
        Closing down (the listening port, then every connection) is arranged.
        """
        cert_pem, key_pem = self.certificates[which]
        options = PrivateCertificate.loadPEM(cert_pem + key_pem).options()
        self.resource = _Write()
        root = Resource()
        root.putChild(b"write", self.resource)
        self.factory = _TrackingFactory(Site(root))
        endpoint = SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1")
        port = yield endpoint.listen(self.factory)
        self.addCleanup(self.factory.all_closed)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def client(self, policy):
        """The writer's client, its cached connections closed after the test."""
        client, pool = make_client(reactor, policy)
        self.addCleanup(pool.closeCachedConnections)
        return client

    @inlineCallbacks
    def assert_accepted(self, policy, url: str):
        """A write to C{url} goes through: the server took it, with a 204."""
        response = yield self.client(policy).post(url, data=BODY)
        content = yield response.content()
        self.assertEqual((response.code, content), (204, b""))
        self.assertEqual(self.resource.bodies, [BODY])

    @inlineCallbacks
    def refusal(self, policy, url: str):
        """
        Post to C{url}, which must fail because the client refuses the
        server's certificate during the handshake: the server saw a connection
        but no request.  Return the reasons the failure carries (a list of
        L{Failure}s: returning a lone one would fail this Deferred).
        """
        d = self.client(policy).post(url, data=BODY)
        failure = yield self.assertFailure(d, RequestTransmissionFailed)
        self.assertEqual(self.factory.connected, 1)
        self.assertEqual(self.resource.bodies, [])
        return failure.reasons

    def assert_untrusted(self, reason) -> None:
        """OpenSSL could not build a chain to a trusted certificate."""
        reason.trap(SSL.Error)
        self.assertIn("certificate verify failed", reason.getErrorMessage())

    # 1. The default policy: the platform's trust store.

    @inlineCallbacks
    def test_default_refuses_self_signed(self):
        """
        Without a CA file the self-signed certificate is not trusted, though
        it names the host.
        """
        port = yield self.serve("loopback")
        [reason] = yield self.refusal(tls_policy(), f"https://localhost:{port}/write")
        self.assert_untrusted(reason)

    @inlineCallbacks
    def test_default_refuses_self_signed_ip(self):
        port = yield self.serve("loopback")
        [reason] = yield self.refusal(tls_policy(), f"https://127.0.0.1:{port}/write")
        self.assert_untrusted(reason)

    # 2. --ca-file: trust that certificate, still check the name.

    @inlineCallbacks
    def test_ca_accepts_matching_name(self):
        port = yield self.serve("loopback")
        cert_pem, _ = self.certificates["loopback"]
        yield self.assert_accepted(
            tls_policy(ca_pem=cert_pem), f"https://localhost:{port}/write"
        )

    @inlineCallbacks
    def test_ca_accepts_matching_ip(self):
        """An IP address in the URL is matched against the IP subjectAltName."""
        port = yield self.serve("loopback")
        cert_pem, _ = self.certificates["loopback"]
        yield self.assert_accepted(
            tls_policy(ca_pem=cert_pem), f"https://127.0.0.1:{port}/write"
        )

    @inlineCallbacks
    def test_ca_refuses_wrong_name(self):
        """
        The right CA does not make up for a certificate for another host:
        service-identity rejects it.
        """
        port = yield self.serve("elsewhere")
        cert_pem, _ = self.certificates["elsewhere"]
        [reason] = yield self.refusal(
            tls_policy(ca_pem=cert_pem), f"https://localhost:{port}/write"
        )
        reason.trap(VerificationError)
        [error] = reason.value.errors
        self.assertIsInstance(error, DNSMismatch)
        self.assertEqual(error.mismatched_id.hostname, b"localhost")

    @inlineCallbacks
    def test_ca_refuses_wrong_ip(self):
        """A certificate naming no IP address does not do for 127.0.0.1."""
        port = yield self.serve("elsewhere")
        cert_pem, _ = self.certificates["elsewhere"]
        [reason] = yield self.refusal(
            tls_policy(ca_pem=cert_pem), f"https://127.0.0.1:{port}/write"
        )
        reason.trap(VerificationError)
        [error] = reason.value.errors
        self.assertIsInstance(error, IPAddressMismatch)

    @inlineCallbacks
    def test_other_ca_refuses(self):
        """A CA file holding some other certificate does not help."""
        port = yield self.serve("loopback")
        other_pem, _ = self.certificates["elsewhere"]
        [reason] = yield self.refusal(
            tls_policy(ca_pem=other_pem), f"https://localhost:{port}/write"
        )
        self.assert_untrusted(reason)

    @inlineCallbacks
    def test_ca_bundle(self):
        """
        A CA file holding several certificates (a bundle) trusts each of them,
        not only the first.  (Fails while tls_policy reads the file with
        C{Certificate.loadPEM}, which takes the first certificate only.)
        """
        port = yield self.serve("loopback")
        bundle = self.certificates["elsewhere"][0] + self.certificates["loopback"][0]
        yield self.assert_accepted(
            tls_policy(ca_pem=bundle), f"https://localhost:{port}/write"
        )

    # 3. --insecure: any certificate at all.

    @inlineCallbacks
    def test_insecure_accepts_untrusted(self):
        port = yield self.serve("loopback")
        policy = tls_policy(verify=False)
        self.assertIsInstance(policy, UnverifiedPolicy)
        yield self.assert_accepted(policy, f"https://localhost:{port}/write")

    @inlineCallbacks
    def test_insecure_accepts_wrong_name(self):
        port = yield self.serve("elsewhere")
        yield self.assert_accepted(
            tls_policy(verify=False), f"https://localhost:{port}/write"
        )

    @inlineCallbacks
    def test_insecure_accepts_ip(self):
        port = yield self.serve("elsewhere")
        yield self.assert_accepted(
            tls_policy(verify=False), f"https://127.0.0.1:{port}/write"
        )

    @inlineCallbacks
    def test_insecure_ignores_ca(self):
        """--insecure wins over a --ca-file that would refuse the server."""
        port = yield self.serve("loopback")
        other_pem, _ = self.certificates["elsewhere"]
        yield self.assert_accepted(
            tls_policy(verify=False, ca_pem=other_pem), f"https://localhost:{port}/write"
        )

    # From the command line, as weather.app.tap builds the client.

    def policy_from(self, arguments: list[str]):
        options = Options()
        options.parseOptions(arguments)
        settings = settings_from_options(options, {})
        return tls_policy(settings.verify_tls, settings.ca_pem)

    @inlineCallbacks
    def test_ca_file_option(self):
        port = yield self.serve("loopback")
        url = f"https://localhost:{port}"
        path = FilePath(self.mktemp())
        path.setContent(self.certificates["loopback"][0])
        policy = self.policy_from(["--influx-url", url, "--ca-file", path.path])
        yield self.assert_accepted(policy, url + "/write")

    @inlineCallbacks
    def test_insecure_option(self):
        port = yield self.serve("elsewhere")
        url = f"https://localhost:{port}"
        yield self.assert_accepted(
            self.policy_from(["--influx-url", url, "--insecure"]), url + "/write"
        )

    @inlineCallbacks
    def test_no_option_verifies(self):
        port = yield self.serve("loopback")
        url = f"https://localhost:{port}"
        [reason] = yield self.refusal(
            self.policy_from(["--influx-url", url]), url + "/write"
        )
        self.assert_untrusted(reason)
