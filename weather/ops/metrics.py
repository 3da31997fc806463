"""
The server's figures in Prometheus' terms.

The services keep plain counters (their C{stats}, a dataclass each);
L{ServerCollector} reads them when Prometheus scrapes, so nothing is counted
twice and nothing is global: every server has its own L{CollectorRegistry}.
Write latency and batch sizes are histograms, fed as writes succeed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime

from weather import __version__

if TYPE_CHECKING:
    from weather.server.service import WeatherService

WRITE_SECONDS_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_POINTS_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000)


class ServerCollector(Collector):
    """Everything a L{WeatherService} counts, read at scrape time."""

    def __init__(
        self,
        server: WeatherService,
        clock: IReactorTime,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.server = server
        self.clock = clock
        #: The wall clock, for the age of journaled packets (stamped on it).
        self.wall = wall if wall is not None else clock.seconds

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        yield from self._packets()
        yield from self._writes()
        yield from self._journal()
        yield from self._stations()

    def _connections(self) -> Iterator[Metric]:
        listener = self.server.listener
        stats = listener.factory.stats
        yield _counter("weather_connections_accepted", "Station connections taken.", stats)
        yield _by_reason(
            "weather_connections_refused",
            "Connections closed at once: outside --allow, or at --max-connections "
            "with none to cut on a port that cannot stop accepting.",
            stats.connections_refused,
        )
        yield _by_reason(
            "weather_connections_held",
            "Connections held unread for a while: their address was over "
            "--max-connections-per-peer or --rate-limit.",
            stats.connections_held,
        )
        yield _counter(
            "weather_connections_held_too_long",
            "Held connections read after --idle-timeout, over their address's limit.",
            stats,
        )
        yield _counter(
            "weather_connections_timed_out", "Connections closed for idleness.", stats
        )
        yield _counter(
            "weather_connections_past_deadline",
            "Connections cut because a packet was not complete by --packet-deadline.",
            stats,
        )
        yield _counter(
            "weather_connections_cut_for_room",
            "Connections cut at --max-connections to take a new one: the longest "
            "without a complete packet.",
            stats,
        )
        yield _counter(
            "weather_descriptors_short",
            "Times accept() stopped because file descriptors ran short.",
            stats,
        )
        yield _counter(
            "weather_clock_steps",
            "Steps of the server's wall clock (over 1 s against the boot clock) "
            "seen between two packets.",
            stats,
        )
        yield GaugeMetricFamily(
            "weather_connections_active",
            "Station connections open now.",
            value=len(listener.factory.connections),
        )
        yield GaugeMetricFamily(
            "weather_connections_held_now",
            "Station connections held unread now (their address is over a limit).",
            value=listener.factory.held,
        )
        yield GaugeMetricFamily(
            "weather_connections_peers",
            "Addresses (IPv6: /64 networks) with an open connection.",
            value=listener.factory.admission.peers,
        )
        yield GaugeMetricFamily(
            "weather_accepting",
            "1 while new station connections are accepted.",
            value=int(listener.accepting),
        )

    def _packets(self) -> Iterator[Metric]:
        pipeline = self.server.pipeline
        stats = pipeline.stats
        factory_stats = self.server.listener.factory.stats
        yield _counter("weather_packets_accepted", "Packets decoded.", stats)
        yield _by_reason(
            "weather_packets_rejected",
            "Packets put in quarantine on arrival or decoding, by reason.",
            stats.packets_rejected,
        )
        refused = CounterMetricFamily(
            "weather_packets_refused",
            "Packets not kept nor acknowledged, connection closed: not from a "
            "station in the devices file, while the quarantine was over "
            "--quarantine-max-size; by source address (the first 64, then 'other') "
            "and reason.",
            labels=["source", "reason"],
        )
        for (source, reason), count in stats.packets_refused.items():
            refused.add_metric([source, reason], count)
        yield refused
        yield _counter(
            "weather_packets_acknowledged",
            "Acknowledgement bytes written to stations.",
            factory_stats,
        )
        yield _counter(
            "weather_packets_too_close",
            "Packets much closer to their device's previous one than its upload interval.",
            stats,
        )
        yield _counter(
            "weather_packets_irregular",
            "Packets with more records than the time since the previous one "
            "explains, not a repeat of it: stamped with the learned interval.",
            stats,
        )
        yield _counter(
            "weather_packets_replayed",
            "Packets taken from quarantine at weather replay's request and "
            "decoded: their points went to InfluxDB.",
            stats,
        )
        yield _counter("weather_records_decoded", "Records decoded.", stats)
        yield _counter(
            "weather_records_from_truncated",
            "Complete records of truncated packets stored (kept in quarantine).",
            stats,
        )
        yield _counter("weather_readings_decoded", "Readings decoded and stored.", stats)
        yield _counter(
            "weather_readings_not_finite",
            "Readings not stored: sensor failure codes, NaN or infinite.",
            stats,
        )
        yield _counter(
            "weather_packets_clock_rebased",
            "Packets that waited for the wall clock, stamped on it once synchronized.",
            stats,
        )
        yield _counter(
            "weather_packets_clock_unchecked",
            "Packets from before the machine's last boot, stamped with the wall "
            "time recorded at arrival (--clock-sync wait cannot check it).",
            stats,
        )
        yield GaugeMetricFamily(
            "weather_packets_waiting_for_clock",
            "Packets in the journal waiting for the wall clock to be synchronized.",
            value=pipeline.clock_waiting,
        )
        synchronized = (
            None if pipeline.clock_gate is None else pipeline.clock_gate.synchronized()
        )
        if synchronized is not None:
            yield GaugeMetricFamily(
                "weather_clock_synchronized",
                "1 while the kernel says the wall clock is synchronized.",
                value=int(synchronized),
            )
        yield CounterMetricFamily(
            "weather_internal_errors",
            "Bugs caught; the packets concerned stay in the journal.",
            value=stats.internal_errors + factory_stats.internal_errors,
        )

    def _writes(self) -> Iterator[Metric]:
        writer = self.server.writer
        stats = writer.stats
        yield _counter("weather_points_written", "Points InfluxDB acknowledged.", stats)
        yield _counter(
            "weather_points_retried", "Points sent again after a failed write.", stats
        )
        yield CounterMetricFamily(
            "weather_points_quarantined",
            "Points InfluxDB refused for good; their packets are in quarantine.",
            value=self.server.pipeline.stats.points_refused,
        )
        yield CounterMetricFamily(
            "weather_write_requests", "Write requests sent.", value=stats.requests
        )
        yield CounterMetricFamily(
            "weather_write_requests_failed",
            "Write requests that failed and will be retried.",
            value=stats.requests_failed,
        )
        yield GaugeMetricFamily(
            "weather_points_pending",
            "Points held in memory for InfluxDB.",
            value=writer.pending,
        )
        failing = writer.failing_since
        yield GaugeMetricFamily(
            "weather_influxdb_failing_seconds",
            "How long writes to InfluxDB have been failing (0 when they work).",
            value=0.0 if failing is None else self.clock.seconds() - failing,
        )

    def _journal(self) -> Iterator[Metric]:
        journal = self.server.journal
        status = journal.last_status
        if status is not None:
            yield GaugeMetricFamily(
                "weather_journal_pending_packets",
                "Packets in the journal not yet delivered to InfluxDB "
                "(counted every few seconds).",
                value=status.pending,
            )
            oldest = status.oldest_pending_ns
            yield GaugeMetricFamily(
                "weather_journal_oldest_pending_age_seconds",
                "Age of the oldest undelivered packet (0 when none).",
                value=0.0 if oldest is None else max(0.0, self.wall() - oldest / 1e9),
            )
            yield GaugeMetricFamily(
                "weather_journal_quarantined_packets",
                "Packets in quarantine (see: weather quarantine list).",
                value=status.quarantined,
            )
        yield GaugeMetricFamily(
            "weather_journal_bytes",
            "Live bytes in the journal but the quarantine's: what its high-water mark "
            "bounds.",
            value=journal.waiting_bytes,
        )
        yield GaugeMetricFamily(
            "weather_journal_max_bytes",
            "The journal's high-water mark.",
            value=journal.max_bytes,
        )
        yield GaugeMetricFamily(
            "weather_journal_full",
            "1 while the journal takes no more packets.",
            value=int(journal.full),
        )
        yield GaugeMetricFamily(
            "weather_quarantine_bytes",
            "Bytes of the packets in quarantine (not in weather_journal_bytes).",
            value=journal.quarantined_bytes,
        )
        yield GaugeMetricFamily(
            "weather_quarantine_max_bytes",
            "The quarantine's budget (--quarantine-max-size).",
            value=journal.quarantine_max_bytes,
        )
        yield GaugeMetricFamily(
            "weather_quarantine_full",
            "1 while the quarantine has spent its budget: what is not a described "
            "station's packet is refused.",
            value=int(journal.quarantine_full),
        )
        yield CounterMetricFamily(
            "weather_journal_commits",
            "Journal transactions.",
            value=journal.stats.commits,
        )
        yield CounterMetricFamily(
            "weather_journal_commits_failed",
            "Journal transactions that failed (disk full, I/O error).",
            value=journal.stats.commits_failed,
        )

    def _stations(self) -> Iterator[Metric]:
        labels = ["device", "place"]
        families = {
            name: kind(f"weather_station_{name}", text, labels=labels)
            for name, kind, text in (
                (
                    "last_seen_timestamp_seconds",
                    GaugeMetricFamily,
                    "When the station's last packet arrived (Unix time).",
                ),
                ("packets", CounterMetricFamily, "Packets decoded."),
                (
                    "records",
                    CounterMetricFamily,
                    "New records decoded (repeats of the previous packet not counted).",
                ),
                ("rejected_packets", CounterMetricFamily, "Packets rejected."),
                (
                    "missed_uploads",
                    CounterMetricFamily,
                    "Uploads that never came: k - 1 for a packet measured over k uploads.",
                ),
                (
                    "records_repeated",
                    CounterMetricFamily,
                    "Records sent again after a lost clear command; not stored twice.",
                ),
                (
                    "records_lost",
                    CounterMetricFamily,
                    "Records the station's full ring dropped before it could upload them.",
                ),
                (
                    "irregular_packets",
                    CounterMetricFamily,
                    "Packets with more records than their spacing explains, not a repeat "
                    "of the previous one: stamped with the learned interval.",
                ),
                (
                    "nominal_interval_seconds",
                    GaugeMetricFamily,
                    "The record interval the station announces (measurementEvery).",
                ),
                (
                    "clock_ratio",
                    GaugeMetricFamily,
                    "Real / nominal record interval: the median of the station's last "
                    "measured packets, as the timestamp rule learns it (>1: slow).",
                ),
                (
                    "measured_interval_seconds",
                    GaugeMetricFamily,
                    "The record interval measured from upload spacing (nominal × ratio).",
                ),
                (
                    "clock_drift_ppm",
                    GaugeMetricFamily,
                    "Measured against nominal interval, in parts per million (+: slow).",
                ),
            )
        }
        failures = CounterMetricFamily(
            "weather_station_sensor_failures",
            "Values not stored: a code the profile lists as not a reading "
            "(a failed sensor read), or NaN.",
            labels=[*labels, "measurement"],
        )
        for station in self.server.stations:
            key = [str(station.device_id), station.place or ""]
            values = {
                "packets": station.packets,
                "records": station.records,
                "rejected_packets": station.rejected,
                "missed_uploads": station.missed_uploads,
                "records_repeated": station.records_repeated,
                "records_lost": station.records_lost,
                "irregular_packets": station.irregular_packets,
            }
            if station.last_seen_ns is not None:
                values["last_seen_timestamp_seconds"] = station.last_seen_ns / 1e9
            if station.measurement_every:
                values["nominal_interval_seconds"] = station.measurement_every
            if station.clock_ratio is not None:
                values["clock_ratio"] = station.clock_ratio
                values["clock_drift_ppm"] = station.drift_ppm
            if station.measured_interval is not None:
                values["measured_interval_seconds"] = station.measured_interval
            for name, value in values.items():
                families[name].add_metric(key, value)
            for measurement, count in sorted(station.sensor_failures.items()):
                failures.add_metric([*key, measurement], count)
        yield from families.values()
        yield failures


def _counter(name: str, documentation: str, stats: object) -> CounterMetricFamily:
    """
    A counter read from the C{stats} field of the same name (without
    weather_); a name with no such field raises L{AttributeError}.
    """
    return CounterMetricFamily(
        name, documentation, value=getattr(stats, name.removeprefix("weather_"))
    )


def _by_reason(
    name: str, documentation: str, counts: Mapping[str, int]
) -> CounterMetricFamily:
    """A counter labelled by reason, one sample per reason C{counts} knows."""
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason, count in counts.items():
        family.add_metric([reason], count)
    return family


class ServerMetrics:
    """A server's own registry: its collector, write histograms and process figures."""

    def __init__(
        self,
        server: WeatherService,
        clock: IReactorTime,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ServerCollector(server, clock, wall))
        ProcessCollector(registry=self.registry)
        self.write_seconds = Histogram(
            "weather_write_duration_seconds",
            "Time InfluxDB took to acknowledge a write.",
            buckets=WRITE_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.batch_points = Histogram(
            "weather_write_batch_points",
            "Points per successful write.",
            buckets=BATCH_POINTS_BUCKETS,
            registry=self.registry,
        )
        Info("weather_build", "The server's version.", registry=self.registry).info(
            {"version": __version__}
        )
        server.writer.write_observers.append(self.written)

    def written(self, points: int, seconds: float) -> None:
        self.write_seconds.observe(seconds)
        self.batch_points.observe(points)
