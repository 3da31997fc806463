"""Fast tests: fakes only (StringTransport, Clock, StubTreq), in-process, no sleeps."""
