"""
The interface between the station protocol and whatever handles its packets.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from weather.packet import Packet, PacketRejected


class IPacketSink(Interface):
    """Where the station protocol hands what it received."""

    def packet_received(packet: Packet) -> Deferred:
        """
        A whole packet arrived; the result fires once it is kept durably
        (the station may delete its copy then).
        """

    def packet_rejected(packet: Packet, error: PacketRejected) -> None:
        """Bytes that cannot be a packet (truncated, oversized) arrived: keep them."""
