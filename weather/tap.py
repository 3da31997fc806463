"""
The twistd plugin's service maker: C{twistd weather [options]}.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from weather.http import make_client, tls_policy
from weather.pipeline import PacketPipeline
from weather.protocol import StationFactory
from weather.service import StationListener, WeatherService
from weather.settings import ConfigurationError, Options, Settings, settings_from_options
from weather.writer import PointWriter

__all__ = ["Options", "makeService", "build_service"]

log = Logger()


def build_service(settings: Settings, reactor: Any, client: Any = None) -> WeatherService:
    """
    Assemble the server from checked settings; C{reactor} times and listens,
    C{client} (treq-like) talks to InfluxDB.
    """
    try:
        endpoint = serverFromString(reactor, settings.port)
    except Exception as e:  # each endpoint parser raises its own kinds
        raise ConfigurationError(
            f"--port {settings.port}: {e or type(e).__name__}"
        ) from None
    close = None
    if client is None:
        client, pool = make_client(
            reactor, tls_policy(settings.verify_tls, settings.ca_pem)
        )
        close = pool.closeCachedConnections
    writer = PointWriter(
        settings.target,
        client,
        reactor,
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval,
        request_timeout=settings.request_timeout,
        max_backoff=settings.max_backoff,
        shutdown_timeout=settings.shutdown_timeout,
        max_pending=settings.max_pending,
    )
    pipeline = PacketPipeline(settings.profiles, writer, reactor)
    factory = StationFactory(
        pipeline,
        reactor,
        idle_timeout=settings.idle_timeout,
        max_packet_size=settings.max_packet_size,
    )
    listener = StationListener(endpoint, factory, reactor, settings.port, settings.grace)
    return WeatherService(writer, listener, pipeline, close)


def makeService(options: Options) -> IService:
    """twistd's entry point: check the options, build the server."""
    from twisted.internet import reactor

    try:
        settings = settings_from_options(options, os.environ)
        service = build_service(settings, reactor)
    except ConfigurationError as e:
        raise SystemExit(f"weather: {e}") from None
    for warning in settings.warnings:
        log.warn("Configuration: {problem}", problem=warning)
    log.info(
        "Writing readings to {target}; {count} station profiles{source}",
        target=settings.target.describe(),
        count=len(settings.profiles),
        source=f" from {settings.devices_file}"
        if settings.devices_file
        else " (built-in reference station)",
    )
    return service
