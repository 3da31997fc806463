"""
The integration tests' access to a real influxd: L{weather.tools.localinflux}, plus
the rule that decides whether a test may run without one.
"""

from __future__ import annotations

import unittest
from typing import Any

from tests.support import unavailable
from weather.tools.localinflux import InfluxServer, adapt_config, find_influxd, free_port

__all__ = [
    "InfluxServer",
    "adapt_config",
    "find_influxd",
    "free_port",
    "require_influxd",
    "start_influxd",
]


def require_influxd(testcase: object = None) -> str:
    """Return influxd's path, or skip the test when it is not installed.

    Under CI (``CI=true``) a missing influxd is an error instead: integration
    tests must never silently turn into skips there.  ``testcase`` is only
    used to name the caller in the message.
    """
    path = find_influxd()
    if path is not None:
        return path
    who = getattr(testcase, "__name__", None) or type(testcase).__name__
    message = (
        f"{who}: influxd (InfluxDB 1.x server) is not installed; "
        "install it with 'apt-get install influxdb' or set $INFLUXD"
    )
    unavailable(message)


def start_influxd(testcase: unittest.TestCase, **kwargs: Any) -> InfluxServer:
    """Start a private influxd for one test; it is stopped and removed after.

    Skips (or fails, under CI=true) when influxd is missing.  ``kwargs`` go
    to InfluxServer, e.g. ``config={"http": {"auth-enabled": "true"}}``.
    """
    path = require_influxd(testcase)
    server = InfluxServer(path, **kwargs)
    testcase.addCleanup(server.stop)
    server.start()
    return server
