"""
Makes C{twistd weather} available.  This directory must have no __init__.py.
"""

from twisted.application.service import ServiceMaker

weather = ServiceMaker(
    "weather",
    "weather.app.tap",
    "Receive weather station packets and store their readings in InfluxDB.",
    "weather",
)
