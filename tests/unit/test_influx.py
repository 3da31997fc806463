"""
Tests for L{weather.server.influx}: write targets and InfluxDB's error messages.
"""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.fakeinflux import FakeInfluxDB
from weather.server.influx import (
    InfluxV1,
    InfluxV2,
    InfluxV3,
    IWriteTarget,
    Refusal,
    error_message,
    read_refusal,
    too_large,
)

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


class InfluxV3Tests(SynchronousTestCase):
    def test_providesInterface(self) -> None:
        self.assertTrue(verifyObject(IWriteTarget, InfluxV3("http://h:8181", "weather")))

    def test_request(self) -> None:
        target = InfluxV3("http://h:8181/", "weather", token="t0k3n")
        self.assertEqual(target.url, "http://h:8181/api/v3/write_lp")
        self.assertEqual(
            target.params,
            {"db": "weather", "precision": "nanosecond", "accept_partial": "true"},
        )
        self.assertEqual(
            target.headers,
            {
                "Content-Type": ["text/plain; charset=utf-8"],
                "Authorization": ["Bearer t0k3n"],
            },
        )
        self.assertEqual(InfluxV3("http://h:8181", "weather").headers, CONTENT_TYPE)

    def test_describeWithoutToken(self) -> None:
        target = InfluxV3("http://h:8181", "weather", token="t0k3n")
        self.assertEqual(target.describe(), "InfluxDB 3 at http://h:8181 database weather")
        self.assertNotIn("t0k3n", repr(target))

    def test_fakeAcceptsWrite(self) -> None:
        """The request the target describes is one InfluxDB 3 accepts."""
        fake = FakeInfluxDB(databases=[], token="t0k3n")
        target = InfluxV3("http://h:8181", "weather", token="t0k3n")
        request = write_one_point(self, fake, target)
        self.assertEqual(request.path, "/api/v3/write_lp")
        self.assertEqual(request.headers["authorization"], "Bearer t0k3n")


class ReadRefusalTests(SynchronousTestCase):
    """L{read_refusal}: which lines of a request an answer names as refused."""

    LINES = [b"m f=1 1", b"m f=oops 2", b"m,t=a f=3 3", b"n f=4 4"]

    def test_v3PartialWrite(self) -> None:
        body = (
            b'{"error":"partial write of line protocol occurred","data":['
            b'{"original_line":"m f=oops 2","line_number":2,"error_message":"bad"},'
            b'{"original_line":"n f=4 4","line_number":4,"error_message":"worse\\nstill"}]}'
        )
        self.assertEqual(
            read_refusal(body, self.LINES),
            Refusal({1: "bad", 3: "worse still"}, rest_stored=True),
        )

    def test_v3LineNumberOutOfRange(self) -> None:
        for number in (0, 5, "2", None):
            data = [{"line_number": number, "error_message": "bad"}]
            body = json.dumps({"error": "partial write", "data": data}).encode()
            self.assertIsNone(read_refusal(body, self.LINES), number)

    def test_v1PartialParseError(self) -> None:
        body = (
            b'{"error":"partial write: unable to parse \'m f=oops 2\': invalid boolean'
            b"\\nunable to parse 'n f=4 4': oddly dropped=0\"}\n"
        )
        self.assertEqual(
            read_refusal(body, self.LINES),
            Refusal(
                {
                    1: "unable to parse 'm f=oops 2': invalid boolean",
                    3: "unable to parse 'n f=4 4': oddly",
                },
                rest_stored=True,
            ),
        )

    def test_parseErrorWholeBatch(self) -> None:
        """2.x (and 1.x when no line parses): the others were not stored."""
        body = json.dumps(
            {"code": "invalid", "message": "unable to parse 'm f=oops 2': invalid boolean"}
        ).encode()
        self.assertEqual(
            read_refusal(body, self.LINES),
            Refusal(
                {1: "unable to parse 'm f=oops 2': invalid boolean"}, rest_stored=False
            ),
        )

    def test_parseErrorLineHoldingQuoteColon(self) -> None:
        lines = [b'm s="a\': b" 1', b"m f=1 2"]
        body = json.dumps({"error": "unable to parse 'm s=\"a': b\" 1': bad"}).encode()
        self.assertEqual(
            read_refusal(body, lines),
            Refusal({0: "unable to parse 'm s=\"a': b\" 1': bad"}, rest_stored=False),
        )

    def test_parseErrorOfLineNotSent(self) -> None:
        body = b'{"error":"unable to parse \'x f=oops 2\': invalid boolean"}'
        self.assertIsNone(read_refusal(body, self.LINES))

    def test_typeConflict(self) -> None:
        message = (
            'partial write: field type conflict: input field "f" on measurement "m" '
            "is type float, already exists as type integer dropped=2"
        )
        body = json.dumps({"error": message}).encode()
        self.assertEqual(
            read_refusal(body, self.LINES + [b"m g=1i,f=2i 5", b"mm f=1 6"]),
            Refusal({0: message, 2: message}, rest_stored=True),
        )

    def test_typeConflictEscapedNames(self) -> None:
        message = (
            "failure writing points to database: partial write: field type conflict: "
            'input field "a b,c=d" on measurement "x y,z" is type string, already '
            "exists as type float dropped=1"
        )
        body = json.dumps({"code": "unprocessable entity", "message": message}).encode()
        lines = [b'x\\ y\\,z,t=1 a\\ b\\,c\\=d="s" 1', b"x\\ y\\,z a\\ b\\,c\\=d=1 2"]
        self.assertEqual(read_refusal(body, lines), Refusal({0: message}, rest_stored=True))

    def test_typeConflictMiscounted(self) -> None:
        """What matches is not what was dropped (another shard?): trust none of it."""
        body = json.dumps(
            {
                "error": 'partial write: field type conflict: input field "f" on '
                'measurement "m" is type float, already exists as type integer dropped=3'
            }
        ).encode()
        self.assertIsNone(read_refusal(body, self.LINES))

    def test_namesNothing(self) -> None:
        for body in (
            b'{"error":"partial write: points beyond retention policy dropped=1"}',
            b'{"code":"invalid","message":"partial write of line protocol occurred"}',
            b'{"error":"db name cannot be empty","data":null}',
            b"<html>Bad Request</html>",
            b"",
        ):
            self.assertIsNone(read_refusal(body, self.LINES), body)


class TooLargeTests(SynchronousTestCase):
    def test_tooLarge(self) -> None:
        self.assertTrue(too_large(413, ""))
        self.assertTrue(too_large(500, "max request size (10485760 bytes) exceeded"))
        self.assertFalse(too_large(500, "internal error"))
        self.assertFalse(too_large(400, "max request size (10485760 bytes) exceeded"))


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
