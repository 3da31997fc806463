"""The pure core: packet framing and header checks, station profiles, decoding and
timestamps, line protocol.  No I/O, no reactor, no clock reads."""
