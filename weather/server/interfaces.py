"""
The interfaces between the server's parts: the station protocol hands packets
to an L{IPacketSink}; the pipeline tells its L{IPipelineObserver}s what became
of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred
from zope.interface import Interface

from weather.core.decode import DecodedPacket
from weather.core.devices import DeviceProfile
from weather.core.packet import Packet, PacketRejected


class PacketRefused(Exception):
    """
    A sink did not keep a packet (L{IPacketSink.packet_received}): it must
    not be acknowledged, and its connection is closed.
    """


class IPacketSink(Interface):
    """Where the station protocol hands what it received."""

    def packet_received(packet: Packet) -> Deferred:
        """
        A whole packet arrived; the result fires once it is kept durably
        (the station may delete its copy then), or fails with
        L{PacketRefused}: it is not kept.
        """

    def packet_rejected(packet: Packet, error: PacketRejected) -> None:
        """Bytes that cannot be a packet (truncated, oversized) arrived: keep them."""


class IPipelineObserver(Interface):
    """
    What the pipeline tells those who watch it (the station book, for the
    metrics and the status page).  Called in the reactor thread; an observer
    must not raise and must not block.
    """

    def packet_arrived(profile: DeviceProfile, peer: str | None, arrival_ns: int) -> None:
        """
        A packet of a described device arrived (C{peer} None: known from the
        journal at start-up, the last arrival before this run).
        """

    def packet_decoded(
        decoded: DecodedPacket,
        peer: str | None,
        arrival_ns: int,
        previous_arrival_ns: int | None,
    ) -> None:
        """A packet was decoded; its points go to InfluxDB."""

    def packet_rejected(profile: DeviceProfile | None) -> None:
        """A packet of this device (None: not described) went to quarantine."""

    def profiles_changed(profiles: Mapping[int, DeviceProfile]) -> None:
        """The devices file was re-read: these are the profiles from now on."""
