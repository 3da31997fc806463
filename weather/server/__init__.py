"""The Twisted server: station protocol and admission, the packet pipeline, the
InfluxDB writer and its targets, the HTTP client, the service tree."""
