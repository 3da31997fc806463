"""
weather: receive packets from battery-powered weather stations and store their
readings in InfluxDB.
"""

__version__ = "0.1.0"
