"""
Tests for L{weather.server.influx}: write targets and InfluxDB's error messages.
"""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.fakeinflux import FakeInfluxDB
from weather.server.influx import InfluxV1, InfluxV2, IWriteTarget, error_message

CONTENT_TYPE = {"Content-Type": ["text/plain; charset=utf-8"]}


def write_one_point(case, fake, target):
    """POST one point as the target describes; it must be stored. The request."""
    response = case.successResultOf(
        StubTreq(fake).post(
            target.url, data=b"m f=1 5", params=target.params, headers=target.headers
        )
    )
    case.assertEqual(response.code, 204)
    case.assertEqual([p.timestamp for p in fake.points_in("weather")], [5])
    [request] = fake.requests
    return request


class InfluxV1Tests(SynchronousTestCase):
    def test_providesInterface(self) -> None:
        self.assertTrue(verifyObject(IWriteTarget, InfluxV1("http://h:8086", "weather")))

    def test_url(self) -> None:
        self.assertEqual(InfluxV1("http://h:8086", "db").url, "http://h:8086/write")
        self.assertEqual(InfluxV1("http://h:8086/", "db").url, "http://h:8086/write")
        self.assertEqual(InfluxV1("https://h/influx/", "db").url, "https://h/influx/write")

    def test_params(self) -> None:
        self.assertEqual(
            InfluxV1("http://h:8086", "weather").params,
            {"db": "weather", "precision": "ns"},
        )

    def test_paramsRetentionPolicy(self) -> None:
        target = InfluxV1("http://h:8086", "weather", retention_policy="year")
        self.assertEqual(target.params, {"db": "weather", "precision": "ns", "rp": "year"})

    def test_paramsEmptyRetentionPolicyLeftOut(self) -> None:
        target = InfluxV1("http://h:8086", "weather", retention_policy="")
        self.assertEqual(target.params, {"db": "weather", "precision": "ns"})

    def test_headersWithoutUser(self) -> None:
        self.assertEqual(InfluxV1("http://h:8086", "weather").headers, CONTENT_TYPE)

    def test_headersBasicAuth(self) -> None:
        target = InfluxV1("http://h:8086", "weather", username="writer", password="s3cret")
        self.assertEqual(
            target.headers,
            {
                "Content-Type": ["text/plain; charset=utf-8"],
                "Authorization": ["Basic d3JpdGVyOnMzY3JldA=="],
            },
        )

    def test_headersBasicAuthNoPassword(self) -> None:
        target = InfluxV1("http://h:8086", "weather", username="writer")
        self.assertEqual(target.headers["Authorization"], ["Basic d3JpdGVyOg=="])

    def test_headersBasicAuthUTF8AndColon(self) -> None:
        target = InfluxV1("http://h:8086", "weather", username="wr", password="päss:w0rd")
        self.assertEqual(target.headers["Authorization"], ["Basic d3I6cMOkc3M6dzByZA=="])

    def test_describe(self) -> None:
        target = InfluxV1(
            "http://h:8086",
            "weather",
            retention_policy="year",
            username="writer",
            password="s3cret",
        )
        self.assertEqual(
            target.describe(),
            "InfluxDB 1.x at http://h:8086 database weather retention policy year"
            " as user writer",
        )

    def test_describePlain(self) -> None:
        self.assertEqual(
            InfluxV1("http://h:8086", "weather").describe(),
            "InfluxDB 1.x at http://h:8086 database weather",
        )

    def test_noPasswordInDescribeOrRepr(self) -> None:
        target = InfluxV1("http://h:8086", "weather", username="writer", password="s3cret")
        self.assertNotIn("s3cret", target.describe())
        self.assertNotIn("s3cret", repr(target))
        self.assertNotIn("d3JpdGVyOnMzY3JldA", target.describe())

    def test_fakeAcceptsWrite(self) -> None:
        """The request the target describes is one InfluxDB 1.x accepts."""
        fake = FakeInfluxDB(username="writer", password="s3cret")
        target = InfluxV1("http://h:8086", "weather", "autogen", "writer", "s3cret")
        request = write_one_point(self, fake, target)
        self.assertEqual(request.path, "/write")
        self.assertEqual(
            request.args, {"db": ["weather"], "precision": ["ns"], "rp": ["autogen"]}
        )
        self.assertEqual(request.headers["authorization"], "Basic d3JpdGVyOnMzY3JldA==")

    def test_fakeRefusesWrongPassword(self) -> None:
        fake = FakeInfluxDB(username="writer", password="s3cret")
        target = InfluxV1("http://h:8086", "weather", None, "writer", "wrong")
        response = self.successResultOf(
            StubTreq(fake).post(
                target.url, data=b"m f=1 5", params=target.params, headers=target.headers
            )
        )
        self.assertEqual(response.code, 401)
        self.assertEqual(fake.points, [])


class InfluxV2Tests(SynchronousTestCase):
    def test_providesInterface(self) -> None:
        self.assertTrue(verifyObject(IWriteTarget, InfluxV2("http://h:8086", "b")))

    def test_url(self) -> None:
        self.assertEqual(InfluxV2("http://h:8086", "b").url, "http://h:8086/api/v2/write")
        self.assertEqual(InfluxV2("https://h/x/", "b").url, "https://h/x/api/v2/write")

    def test_params(self) -> None:
        target = InfluxV2("http://h:8086", "weather", org="home", token="t0k")
        self.assertEqual(
            target.params, {"bucket": "weather", "precision": "ns", "org": "home"}
        )

    def test_paramsOrgOptional(self) -> None:
        self.assertEqual(
            InfluxV2("http://h:8086", "weather").params,
            {"bucket": "weather", "precision": "ns"},
        )
        self.assertEqual(
            InfluxV2("http://h:8086", "weather", org="").params,
            {"bucket": "weather", "precision": "ns"},
        )

    def test_headersToken(self) -> None:
        target = InfluxV2("http://h:8086", "weather", token="t0k3n==")
        self.assertEqual(
            target.headers,
            {
                "Content-Type": ["text/plain; charset=utf-8"],
                "Authorization": ["Token t0k3n=="],
            },
        )

    def test_headersWithoutToken(self) -> None:
        self.assertEqual(InfluxV2("http://h:8086", "weather").headers, CONTENT_TYPE)
        self.assertEqual(
            InfluxV2("http://h:8086", "weather", token="").headers, CONTENT_TYPE
        )

    def test_describe(self) -> None:
        self.assertEqual(
            InfluxV2("http://h:8086", "weather", org="home", token="t0k3n").describe(),
            "InfluxDB 2.x/3.x at http://h:8086 bucket weather org home",
        )
        self.assertEqual(
            InfluxV2("http://h:8086", "weather").describe(),
            "InfluxDB 2.x/3.x at http://h:8086 bucket weather",
        )

    def test_noTokenInDescribeOrRepr(self) -> None:
        target = InfluxV2("http://h:8086", "weather", org="home", token="t0k3n")
        self.assertNotIn("t0k3n", target.describe())
        self.assertNotIn("t0k3n", repr(target))

    def test_fakeAcceptsWrite(self) -> None:
        """The request the target describes is one InfluxDB 2.x accepts."""
        fake = FakeInfluxDB(orgs=["home"], buckets=["weather"], token="t0k3n")
        target = InfluxV2("http://h:8086", "weather", org="home", token="t0k3n")
        request = write_one_point(self, fake, target)
        self.assertEqual(request.path, "/api/v2/write")
        self.assertEqual(
            request.args, {"bucket": ["weather"], "precision": ["ns"], "org": ["home"]}
        )
        self.assertEqual(request.headers["authorization"], "Token t0k3n")


class ErrorMessageTests(SynchronousTestCase):
    def test_v1Error(self) -> None:
        body = b'{"error":"partial write: field type conflict dropped=1"}\n'
        self.assertEqual(
            error_message(body), "partial write: field type conflict dropped=1"
        )

    def test_v2Message(self) -> None:
        body = b'{"code":"invalid","message":"unable to parse \'m f=x\': invalid boolean"}'
        self.assertEqual(error_message(body), "unable to parse 'm f=x': invalid boolean")

    def test_errorPreferredOverMessage(self) -> None:
        self.assertEqual(error_message(b'{"message":"second","error":"first"}'), "first")

    def test_nonStringErrorIgnored(self) -> None:
        self.assertEqual(error_message(b'{"error": 5, "message": "five"}'), "five")
        self.assertEqual(error_message(b'{"error": null}'), '{"error": null}')

    def test_jsonNotObject(self) -> None:
        self.assertEqual(error_message(b'["error"]'), '["error"]')

    def test_plainText(self) -> None:
        self.assertEqual(error_message(b"404 page not found\n"), "404 page not found")

    def test_whitespaceCollapsed(self) -> None:
        self.assertEqual(
            error_message(b"  <html>\r\n <body>Bad   Gateway</body>\n</html>\n"),
            "<html> <body>Bad Gateway</body> </html>",
        )
        self.assertEqual(error_message(b'{"error":"line 1\\nline 2"}'), "line 1 line 2")

    def test_empty(self) -> None:
        self.assertEqual(error_message(b""), "")

    def test_invalidUTF8(self) -> None:
        self.assertEqual(error_message(b"bad \xff byte"), "bad \ufffd byte")

    def test_longTextTruncated(self) -> None:
        message = error_message(b"x" * 2000)
        self.assertEqual(len(message), 500)
        self.assertEqual(message, "x" * 497 + "...")

    def test_exactlyAtLimitKept(self) -> None:
        self.assertEqual(error_message(b"y" * 500), "y" * 500)

    def test_longJSONMessageTruncated(self) -> None:
        body = b'{"message":"' + b"z" * 1000 + b'"}'
        self.assertEqual(error_message(body, limit=20), "z" * 17 + "...")
