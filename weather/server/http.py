"""
The HTTP client the writer talks to InfluxDB with: treq over a persistent
connection pool, verifying C{https://} servers' certificates (service-identity)
against the platform's trust store or a given CA file, unless told not to.
"""

from __future__ import annotations

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from treq.client import HTTPClient
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    trustRootFromCertificates,
)
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS without certificate verification, for when the user asks for it."""

    def __init__(self, hostname: bytes) -> None:
        self.hostname = hostname
        self.context = CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        name = self.hostname.decode("ascii", "replace")
        if not (isIPAddress(name) or isIPv6Address(name)):
            connection.set_tlsext_host_name(self.hostname)  # SNI: names only
        return connection


@implementer(IPolicyForHTTPS)
class UnverifiedPolicy:
    """Accept any certificate (C{--insecure})."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> _Unverified:
        return _Unverified(hostname)


def tls_policy(verify: bool = True, ca_pem: bytes | None = None) -> IPolicyForHTTPS:
    """How to check InfluxDB's certificate."""
    if not verify:
        return UnverifiedPolicy()
    if ca_pem is not None:
        # Every certificate of the file: a bundle may hold several CAs.
        certificates = [
            Certificate(X509.from_cryptography(c))
            for c in x509.load_pem_x509_certificates(ca_pem)
        ]
        return BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(certificates))
    return BrowserLikePolicyForHTTPS()


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """Twisted's own, without two log lines for every new connection."""

    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """
    A connection pool that does not log each connection it opens: one
    InfluxDB retry a minute during an outage would otherwise add two lines.
    """

    _factory = _QuietHTTP11ClientFactory


def make_client(reactor, policy: IPolicyForHTTPS) -> tuple[HTTPClient, HTTPConnectionPool]:
    """
    A treq client keeping its connections to InfluxDB open between writes,
    and its pool (close its cached connections on stop).
    """
    pool = QuietConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 2
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool)), pool
