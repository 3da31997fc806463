"""The C{weather} command: decode, simulate, journal, quarantine, replay; and the
private InfluxDB of C{make run}."""
