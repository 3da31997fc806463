"""Tests with real processes: influxd, twistd daemons, systemd tools, chromium."""
