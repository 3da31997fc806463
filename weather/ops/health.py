"""
Whether the server does its job, for a load balancer, a monitoring check or
systemd: listening for stations, with room in the journal, and able to write
to InfluxDB.  Pure: the caller says what time it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weather.server.service import WeatherService


@dataclass(frozen=True)
class HealthReport:
    """Healthy, or not with the reasons why, and the figures behind them."""

    reasons: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "reasons": list(self.reasons),
            **self.details,
        }


def check_health(
    server: WeatherService, now: float, unreachable_after: float
) -> HealthReport:
    """
    Unhealthy when not listening for stations, when the journal takes no
    more packets, when writes to InfluxDB have failed for at least
    C{unreachable_after} seconds (shorter outages are what the journal is
    for, and are not worth waking anyone), or when the connection limit has
    held that long without seconds of room and with no connection to cut for
    a new one, or accept() has been stopped that long for want of file
    descriptors (a moment of either only makes stations wait a little in the
    listen queue; minutes of it keep stations out).  Slow or idle peers
    holding every slot do not keep stations out: each new connection takes
    the place of the one longest without a complete packet.
    """
    reasons = []
    listener, journal, writer = server.listener, server.journal, server.writer
    if listener.port is None:
        reasons.append("not listening for stations")
    if journal.full:
        reasons.append(journal.full_reason or "the journal is full")
    failing = 0.0 if writer.failing_since is None else now - writer.failing_since
    if writer.failing_since is not None and failing >= unreachable_after:
        reasons.append(
            f"InfluxDB writes have failed for {failing:.0f} s: {writer.last_failure}"
        )
    pipeline = server.pipeline
    since = pipeline.clock_waiting_since
    waiting = 0.0 if since is None else now - since
    if pipeline.clock_waiting and waiting >= unreachable_after:
        reasons.append(
            f"{pipeline.clock_waiting} packets have waited {waiting:.0f} s for the "
            "wall clock to be synchronized (--clock-sync)"
        )
    full = listener.at_limit_for(now)
    if full and full >= unreachable_after:
        reasons.append(
            f"at the --max-connections limit ({listener.factory.admission.open} "
            f"open, none to cut for a new one) for {full:.0f} s: new stations wait "
            "or give up"
        )
    short = listener.short_of_descriptors_for(now)
    if short and short >= unreachable_after:
        reasons.append(
            f"out of file descriptors for {short:.0f} s: new stations wait or give up"
        )
    status = journal.last_status
    return HealthReport(
        tuple(reasons),
        {
            "listening": listener.port is not None,
            "accepting": listener.accepting,
            "connections": len(listener.factory.connections),
            "connections_held": listener.factory.held,
            "at_connection_limit_seconds": round(full, 3),
            "out_of_descriptors_seconds": round(short, 3),
            "journal_full": journal.full,
            "journal_pending_packets": None if status is None else status.pending,
            "quarantine_bytes": journal.quarantined_bytes,
            "quarantine_max_bytes": journal.quarantine_max_bytes,
            "quarantine_full": journal.quarantine_full,
            "influxdb_failing_seconds": round(failing, 3),
            "points_pending": writer.pending,
            "clock_steps": listener.factory.stats.clock_steps,
            "clock_synchronized": (
                None if pipeline.clock_gate is None else pipeline.clock_gate.synchronized()
            ),
            "packets_waiting_for_clock": pipeline.clock_waiting,
        },
    )
