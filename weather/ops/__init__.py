"""What operators look at: the station book, metrics, health, the status page."""
