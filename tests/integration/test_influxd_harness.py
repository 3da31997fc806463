"""Integration tests of tests/integration/influxd.py against a real influxd.

They prove the harness starts a private server, that data written to it can
be read back exactly, and that it survives a stop and start on the same
directory.  A second class checks that the in-memory fake (tests/fakeinflux.py)
answers writes exactly as the real server does.  Skipped when influxd is not
installed, except under CI=true, where that is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from typing import Any

from treq.testing import StubTreq
from twisted.trial import unittest

from tests.fakeinflux import FakeInfluxDB
from tests.integration.influxd import find_influxd, require_influxd, start_influxd


class InfluxServerTests(unittest.TestCase):
    """Start, write, query, restart, stop."""

    def setUp(self) -> None:
        self.server = start_influxd(self)

    def test_listens_on_loopback_only(self) -> None:
        self.assertTrue(self.server.url.startswith("http://127.0.0.1:"))
        with open(self.server.config_path or "", encoding="utf-8") as f:
            config = f.read()
        self.assertIn(f'bind-address = "127.0.0.1:{self.server.http_port}"', config)
        self.assertIn(f'bind-address = "127.0.0.1:{self.server.rpc_port}"', config)
        self.assertNotIn('bind-address = ":', config)

    def test_write_query_restart(self) -> None:
        server = self.server
        server.create_database("harness")
        timestamp = 1_700_000_000_123_456_789
        request = urllib.request.Request(
            f"{server.url}/write?db=harness&precision=ns",
            data=f"reading,station=garden temp=21.5,hum=40i {timestamp}\n".encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            self.assertEqual(response.status, 204)

        expected = [(timestamp, {"temp": 21.5, "hum": 40}, {"station": "garden"})]
        self.assertEqual(server.points("reading", "harness"), expected)
        result = server.query("SELECT temp FROM reading", "harness")
        self.assertEqual(result["results"][0]["series"][0]["values"], [[timestamp, 21.5]])

        http_port = server.http_port
        server.terminate()
        self.assertFalse(server.ping())
        with self.assertRaises(urllib.error.URLError):
            urllib.request.urlopen(f"{server.url}/ping", timeout=2)
        server.start()
        self.assertEqual(server.http_port, http_port)
        self.assertEqual(server.points("reading", "harness"), expected)

    def test_kill_keeps_written_data(self) -> None:
        """A crash (SIGKILL) loses nothing that was acknowledged (WAL)."""
        server = self.server
        server.create_database("crash")
        self.assertEqual(server.write("crash", "m v=1 1\nm v=2 2"), (204, b""))
        server.kill()
        server.start()
        self.assertEqual(
            server.points("m", "crash", field="v"), [(1, 1.0, {}), (2, 2.0, {})]
        )

    def test_stop_removes_everything(self) -> None:
        base_dir = self.server.base_dir
        assert base_dir is not None
        self.assertTrue(os.path.isdir(os.path.join(base_dir, "meta")))
        self.server.stop()
        self.assertFalse(os.path.exists(base_dir))
        self.assertFalse(self.server.running)
        self.server.stop()  # again: harmless

    def test_rpc_port_is_private(self) -> None:
        """The RPC (backup) port is bound, and only on 127.0.0.1."""
        assert self.server.rpc_port is not None
        with socket.create_connection(("127.0.0.1", self.server.rpc_port), 5):
            pass


class RequireInfluxdTests(unittest.TestCase):
    """Missing influxd: a skip on a developer's machine, a failure in CI."""

    def setUp(self) -> None:
        environ = dict(os.environ)
        environ["INFLUXD"] = "/nonexistent/influxd"
        environ.pop("CI", None)
        self.patch(os, "environ", environ)

    def test_missing_skips(self) -> None:
        self.assertIsNone(find_influxd())
        with self.assertRaises(unittest.SkipTest) as caught:
            require_influxd(self)
        self.assertIn("influxd", str(caught.exception))

    def test_missing_fails_in_ci(self) -> None:
        os.environ["CI"] = "true"
        with self.assertRaises(AssertionError) as caught:
            require_influxd(self)
        self.assertIn("CI=true", str(caught.exception))

    def test_found(self) -> None:
        real = shutil.which("influxd")
        if real is None:
            raise unittest.SkipTest("influxd is not installed")
        os.environ["INFLUXD"] = real
        self.assertEqual(require_influxd(self), real)


#: Writes sent both to influxd and to the fake: (query string, body).
#: Each case uses its own measurement so that field types do not interact.
_CASES: list[tuple[str, bytes]] = [
    ("db=cmp", b"a v=1 1"),
    ("db=cmp", b""),
    ("db=cmp", b"\n# comment\n"),
    ("db=missing", b"a v=1"),
    ("", b"a v=1"),
    ("db=cmp", b"b"),
    ("db=cmp", b"c v="),
    ("db=cmp", b"d v=1 abc"),
    ("db=cmp", b"e v=1i2"),
    ("db=cmp", b"f v=abc"),
    ("db=cmp", b"g,t v=1"),
    ("db=cmp", b"h,=a v=1"),
    ("db=cmp", b"i,a= v=1"),
    ("db=cmp", b"j =1"),
    ("db=cmp", b"k v=1,"),
    ("db=cmp", b",t=1 v=1"),
    ("db=cmp", b"l,a=1,a=2 v=1"),
    ("db=cmp", b'm v="open'),
    ("db=cmp", b"n v=1 1 2"),
    ("db=cmp", b"o v=1 1.5"),
    ("db=cmp", b"p v=1e"),
    ("db=cmp", b"q v=1e999"),
    ("db=cmp", b"r v=1u"),
    ("db=cmp", b"s v=NaN"),
    ("db=cmp", b"t v=inf"),
    ("db=cmp", b"u v=99999999999999999999i"),
    ("db=cmp", b"v v=1 99999999999999999999"),
    ("db=cmp", b"w v=1 -9223372036854775807"),
    ("db=cmp", b"x v=1 1\r\nx v=2 2\r\n"),
    ("db=cmp", b"y v=1 1\nbad line\ny v=2 2"),
    ("db=cmp", b"z1\nz2 c"),
    ("db=cmp", b"aa time=1"),
    ("db=cmp", b"ab,time=1 v=1"),
    ("db=cmp", b"ac v=1 1\nac v=2i 2"),
    ("db=cmp", b"ad v=1,v=2i 1"),
    ("db=cmp&rp=nope", b"ae v=1"),
    ("db=cmp&precision=s", b"af v=1 10000000000000"),
    ("db=cmp&precision=ms", b"af2 v=1 1700000000123"),
    ("db=cmp&precision=u", b"ag v=1 5"),
    ("db=cmp&precision=us", b"ah v=1 5"),
    ("db=cmp&precision=h", b"ai v=1 5"),
    ("db=cmp", b'aj\\ x\\,y,t\\ k\\=1=a\\,b\\=c f\\ g="q\\"\\\\z\\n",h=t 7'),
    ("db=cmp", b"ak v=.5,w=5.,x=01,y=-0i,z=F 0012"),
    ("db=cmp", b"  al  v=1  3 "),
    ("db=cmp", b'# c\n\tam s="two\nlines",n=-2i 4\n\n  am s="x" 5\n'),
]


class FakeMatchesRealTests(unittest.TestCase):
    """The fake answers writes with influxd's status, body and stored points."""

    def setUp(self) -> None:
        self.server = start_influxd(self)
        self.server.create_database("cmp")

    def fake_write(self, stub: StubTreq, query: str, body: bytes) -> tuple[int, Any]:
        d = stub.post(f"http://influx.invalid/write?{query}", data=body)
        stub.flush()
        response = self.successResultOf(d)
        content = response.content()
        stub.flush()
        raw = self.successResultOf(content)
        return response.code, json.loads(raw) if raw else None

    def test_same_answers(self) -> None:
        fake = FakeInfluxDB(["cmp"], clock=lambda: 0)
        stub = StubTreq(fake)
        for query, body in _CASES:
            status, _, raw = self.server.request(
                "POST", "/write?" + query if query else "/write", body=body
            )
            real = (status, json.loads(raw) if raw else None)
            self.assertEqual(self.fake_write(stub, query, body), real, body)

        # Same points stored, exact timestamps included.  Lines without a
        # timestamp get "now", which differs, so only early times compare.
        def early(rows: list[tuple[int, Any, Any]]) -> list[tuple[int, Any, Any]]:
            return sorted(r for r in rows if 0 < r[0] < 10**15)

        for name in sorted({p.measurement for p in fake.points}):
            mine = early(
                [
                    (p.timestamp, p.fields, p.tags)
                    for p in fake.points
                    if p.measurement == name
                ]
            )
            self.assertEqual(early(self.server.points(name, "cmp")), mine, name)
