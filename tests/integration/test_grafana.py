"""
The Grafana dashboard, C{contrib/grafana/weather.json}: an importable
dashboard whose every InfluxQL query works.

The structure tests read the JSON (and the systemd unit, which must write the
self-statistics the dashboard reads).  The query tests start a real influxd
and the real server (C{twistd weather}, with C{--self-stats-interval 1}),
let C{weather simulate} send packets from three stations (two described in
the devices file, one unknown so that packets get rejected), add readings of
a measurement without a panel of its own (C{pressure}), then run every query
of the dashboard the way Grafana would send it: template variables (their
options made as Grafana makes them, a repeated panel's query once per
option), C{$timeFilter} and C{$__interval} replaced as Grafana's InfluxDB
data source does.  Each query must answer without error and with at least
one series holding a value.  L{EXPECTED_QUERIES} counts the queries, so a
new panel cannot go untested.

Nothing here is skipped in CI: without influxd the query tests fail there
(see L{tests.integration.influxd.require_influxd}).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from tests.integration.daemon import Daemon, wait_until
from tests.integration.influxd import InfluxServer, free_port
from tests.integration.test_contrib import exec_start
from tests.integration.test_integration import TwistdTestCase
from tests.support import ROOT
from weather.app.options import declared
from weather.core.lineprotocol import series_prefix
from weather.ops.selfstats import MEASUREMENT as SELF_STATS

DASHBOARD_PATH = os.path.join(
    ROOT,
    "contrib",
    "grafana",
    "weather.json",
)

#: Every InfluxQL query of the dashboard: panels' targets and template
#: variables.  A new panel or target changes this number: then add what it
#: needs to the simulated data if the query tests do not find it.
EXPECTED_QUERIES = 23

#: The data source input every panel and variable must use.
DATASOURCE = {"type": "influxdb", "uid": "${DS_INFLUXDB}"}

#: Grafana's own variables that the InfluxDB data source replaces.
BUILTIN_VARIABLES = frozenset(
    {"timeFilter", "__timeFilter", "__interval", "__interval_ms", "__from", "__to"}
)

#: A variable as Grafana finds it in a query: $name, ${name}, ${name:format}, [[name]].
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]")

#: What Grafana's escapeRegex escapes (packages/grafana-data, text.ts).
REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|\[\]{}/])")

#: The devices' places (the second one as an operator might name it) and the
#: simulated stations: the last one is in no devices file.
PLACES = ("balcony", "garden (north)")
STATIONS = 3
PACKETS = 2

#: A measurement of another layout (README's devices.7), with its own field.
OTHER_MEASUREMENT = "pressure"
OTHER_FIELD = "hpa"


def load_dashboard(path: str = DASHBOARD_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def all_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included, and the panels of collapsed rows."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


@dataclass(frozen=True)
class Query:
    """
    One InfluxQL query of the dashboard, where it is, and the variable its
    panel repeats for (Grafana runs it once per value, with that value only).
    """

    where: str
    text: str
    repeat: str | None = None


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    """Every query: template variables' and every panel target's."""
    queries = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query") if isinstance(query, dict) else query
            queries.append(Query(f"variable {variable['name']}", text))
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}"
            queries.append(Query(where, target.get("query"), panel.get("repeat")))
    return queries


def variables_used(text: str) -> set[str]:
    return {
        next(name for name in match.groups() if name) for match in VARIABLE.finditer(text)
    }


def variable_options(values: Sequence[str], regex: str = "") -> list[str]:
    """
    A query variable's options as Grafana makes them of its query's
    C{values} (metricNamesToVariableValues): its regex (C{/.../}) keeps the
    values it matches, and a value becomes its first capture group when the
    regex has one; sorted (sort 1) without repeats.
    """
    if not regex:
        return sorted(set(values))
    pattern, flags = re.fullmatch(r"/(.*)/([gimsuy]*)", regex).groups()
    compiled = re.compile(pattern, re.IGNORECASE if "i" in flags else 0)
    options = set()
    for value in values:
        match = compiled.search(value)
        if match is not None:
            options.add(match.group(1) if compiled.groups else value)
    return sorted(options)


def escape_regex(value: str) -> str:
    """A value made literal in a regex, as Grafana's escapeRegex does."""
    return REGEX_SPECIAL.sub(r"\\\1", value)


def regex_value(values: Sequence[str] | None, all_value: str | None) -> str:
    """
    A multi-value variable with "include All" as the InfluxDB data source
    writes it into a regex: each value escaped, several joined as (a|b);
    All (C{values} None) is the custom all value as it stands.
    """
    if values is None:
        if all_value is None:
            raise ValueError("All without a custom all value: give the values")
        return all_value
    escaped = [escape_regex(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def relative_time_filter(ago: str) -> str:
    """C{$timeFilter} for "now-{ago}" to "now"."""
    return f"time >= now() - {ago} and time <= now()"


def absolute_time_filter(start_ms: int, end_ms: int) -> str:
    """C{$timeFilter} for an absolute range."""
    return f"time >= {start_ms}ms and time <= {end_ms}ms"


def interval_ms(interval: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)", interval).groups()
    return (
        int(number)
        * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    )


def interpolate(
    text: str, time_filter: str, interval: str, variables: Mapping[str, str]
) -> str:
    """
    C{text} as Grafana sends it: C{variables} maps a template variable to its
    text already formatted (see L{regex_value}).  A variable nobody gives is
    an error, not left in the query.
    """
    start, end = re.search(r"time >= (\S+).*time <= (\S+)", time_filter).groups()
    builtin = {
        "timeFilter": time_filter,
        "__timeFilter": time_filter,
        "__interval": interval,
        "__interval_ms": str(interval_ms(interval)),
        "__from": start.removesuffix("ms"),
        "__to": end.removesuffix("ms"),
    }

    def replace(match: re.Match) -> str:
        name = next(name for name in match.groups() if name)
        if name in builtin:
            return builtin[name]
        if name in variables:
            return variables[name]
        raise KeyError(f"no value for ${name}")

    return VARIABLE.sub(replace, text)


def query_problem(
    influx: InfluxServer, database: str, text: str, places: Sequence[str] = ()
) -> str | None:
    """
    Why C{text} would leave its panel empty or broken in Grafana: an error,
    no series, or series without a single value; or, when its series are
    per place, not a series with values for every one of C{places} (None
    when it is fine).
    """
    status, _, body = influx.request(
        "GET", "/query", params={"q": text, "db": database, "epoch": "ms"}
    )
    try:
        answer = json.loads(body)
    except ValueError:
        return f"HTTP {status}: {body[:200]!r}"
    if status != 200 or "error" in answer:
        return f"HTTP {status}: {answer.get('error', body[:200])}"
    results = answer.get("results", [])
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return f"error: {'; '.join(errors)}"
    series = [s for r in results for s in r.get("series", [])]
    if not series:
        return "no series"
    with_values = [s for s in series if _has_value(s)]
    if not with_values:
        return f"{len(series)} series, not one value"
    found = {s["tags"]["place"] for s in with_values if "place" in s.get("tags", {})}
    if places and found and found != set(places):
        return f"values for places {sorted(found)}, not {sorted(places)}"
    return None


def _has_value(series: Mapping[str, Any]) -> bool:
    columns = series.get("columns", [])
    values = [i for i, column in enumerate(columns) if column != "time"]
    return any(row[i] is not None for row in series.get("values", []) for i in values)


class DashboardStructureTests(SynchronousTestCase):
    """What Grafana needs to import the dashboard and draw each panel."""

    def setUp(self) -> None:
        self.dashboard = load_dashboard()
        self.panels = all_panels(self.dashboard)

    def test_importable(self) -> None:
        """An exported dashboard: the data source is chosen at import."""
        dashboard = self.dashboard
        self.assertEqual(dashboard["schemaVersion"], 39)
        self.assertIsNone(dashboard["id"])
        self.assertTrue(dashboard["uid"])
        self.assertTrue(dashboard["title"])
        self.assertEqual(
            [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]],
            [("DS_INFLUXDB", "datasource", "influxdb")],
        )
        required = {(r["type"], r["id"]) for r in dashboard["__requires"]}
        used = {("panel", p["type"]) for p in self.panels if p["type"] != "row"}
        self.assertLessEqual(used | {("datasource", "influxdb")}, required)

    def test_uniquePanelIds(self) -> None:
        ids = [panel["id"] for panel in self.panels]
        self.assertTrue(all(isinstance(i, int) for i in ids), ids)
        self.assertEqual(len(ids), len(set(ids)), ids)

    def test_gridPositions(self) -> None:
        """Every panel placed on the 24-column grid, none over another."""
        taken: dict[tuple[int, int], str] = {}
        for panel in self.panels:
            pos = panel["gridPos"]
            self.assertEqual(set(pos), {"h", "w", "x", "y"}, panel["title"])
            self.assertTrue(pos["w"] > 0 and pos["h"] > 0, panel["title"])
            self.assertLessEqual(pos["x"] + pos["w"], 24, panel["title"])
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    other = taken.setdefault((x, y), panel["title"])
                    self.assertEqual(other, panel["title"], f"overlap at {(x, y)}")

    def test_datasources(self) -> None:
        """Every panel, target and query variable uses the data source input."""
        for panel in self.panels:
            if panel["type"] == "row":
                self.assertEqual(panel.get("panels"), [], "rows are not collapsed")
                self.assertNotIn("targets", panel)
                continue
            self.assertEqual(panel["datasource"], DATASOURCE, panel["title"])
            self.assertTrue(panel["targets"], panel["title"])
            for target in panel["targets"]:
                self.assertEqual(target["datasource"], DATASOURCE, panel["title"])
        for variable in self.dashboard["templating"]["list"]:
            self.assertEqual(variable["datasource"], DATASOURCE, variable["name"])

    def test_rawInfluxQL(self) -> None:
        """Every target is explicit InfluxQL text, each with its own refId."""
        for panel in self.panels:
            refs = [t["refId"] for t in panel.get("targets", [])]
            self.assertEqual(len(refs), len(set(refs)), panel["title"])
            for target in panel.get("targets", []):
                self.assertIs(target["rawQuery"], True, panel["title"])
                self.assertIn(target["resultFormat"], ("time_series", "table"))
                self.assertTrue(target["query"].startswith(("SELECT", "SHOW")))

    def test_variablesDefined(self) -> None:
        """
        Every variable a query uses is defined or Grafana's own; a multi-value
        variable appears only inside an anchored regex, of a tag match or of
        FROM, where (a|b) is valid.
        """
        defined = {v["name"]: v for v in self.dashboard["templating"]["list"]}
        for query in dashboard_queries(self.dashboard):
            for name in variables_used(query.text):
                self.assertIn(name, BUILTIN_VARIABLES | set(defined), query.where)
                if name in defined and defined[name].get("multi"):
                    for match in re.finditer(r"\$" + name + r"\b", query.text):
                        before = query.text[: match.start()]
                        self.assertTrue(before.endswith(("=~ /^", "FROM /^")), query.where)
                        self.assertTrue(
                            query.text[match.end() :].startswith("$/"), query.where
                        )

    def test_readingsPanels(self) -> None:
        """Temperature, humidity and light per place, in their units."""
        units = {}
        for panel in self.panels:
            if panel["type"] != "timeseries":
                continue
            for target in panel["targets"]:
                query = target["query"]
                found = re.search(r'FROM "(temperature|humidity|light)"', query)
                if found:
                    units[found.group(1)] = panel["fieldConfig"]["defaults"]["unit"]
                    self.assertIn('GROUP BY time($__interval), "place" fill(none)', query)
                    self.assertEqual(target["alias"], "$tag_place")
        self.assertEqual(
            units, {"temperature": "celsius", "humidity": "humidity", "light": "lux"}
        )

    def test_variables(self) -> None:
        """
        Place: the places of every measurement, so that a station without
        temperature is listed.  Server: the host tags of the server's own
        figures.  Both multi-valued, All matching everything.
        """
        place, measurement, host = self.dashboard["templating"]["list"]
        self.assertEqual(
            (place["name"], place["query"]), ("place", 'SHOW TAG VALUES WITH KEY = "place"')
        )
        self.assertEqual(
            (host["name"], host["query"]),
            ("host", f'SHOW TAG VALUES FROM "{SELF_STATS}" WITH KEY = "host"'),
        )
        self.assertEqual(
            (measurement["name"], measurement["query"]),
            ("measurement", "SHOW MEASUREMENTS"),
        )
        for variable in (place, measurement, host):
            self.assertTrue(variable["multi"], variable["name"])
            self.assertTrue(variable["includeAll"], variable["name"])
        self.assertEqual((place["allValue"], host["allValue"]), (".*", ".*"))

    def test_measurementVariable(self) -> None:
        """
        The Measurement variable leaves out exactly the measurements that
        have panels of their own and the server's own figures: any other
        measurement gets a panel.
        """
        (measurement,) = [
            v for v in self.dashboard["templating"]["list"] if v["name"] == "measurement"
        ]
        named = {
            name
            for query in dashboard_queries(self.dashboard)
            for name in re.findall(r'FROM "([^"]+)"', query.text)
        }
        self.assertEqual(named, {"temperature", "humidity", "light", SELF_STATS})
        others = ["pressure", "soil_moisture", "light_2", "temperature_outside", "wind"]
        self.assertEqual(
            variable_options([*named, *others], measurement["regex"]), sorted(others)
        )

    def test_repeatedPanel(self) -> None:
        """
        One panel repeated per measurement: the mean of every field, per
        place, as the readings panels draw theirs.
        """
        repeated = [panel for panel in self.panels if panel.get("repeat")]
        self.assertEqual([p["repeat"] for p in repeated], ["measurement"])
        (panel,) = repeated
        self.assertEqual(panel["title"], "$measurement")
        self.assertEqual((panel["repeatDirection"], panel["maxPerRow"]), ("h", 2))
        self.assertEqual(panel["gridPos"]["w"] * panel["maxPerRow"], 24)
        (target,) = panel["targets"]
        self.assertEqual(
            target["query"],
            'SELECT mean(*) FROM /^$measurement$/ WHERE $timeFilter AND "place" =~ '
            '/^$place$/ GROUP BY time($__interval), "place" fill(none)',
        )
        self.assertEqual(target["alias"], "$tag_place")

    def test_selfStatsOfOneServer(self) -> None:
        """Every query of the server's own figures is filtered by the Server variable."""
        for query in dashboard_queries(self.dashboard):
            if query.text.startswith("SELECT") and SELF_STATS in query.text:
                self.assertIn(
                    f'FROM "{SELF_STATS}" WHERE $timeFilter AND "host" =~ /^$host$/',
                    query.text,
                    query.where,
                )

    def test_everyQueryFound(self) -> None:
        """
        The extraction finds every query: as many as the JSON holds "query"
        keys with InfluxQL in them, and as L{EXPECTED_QUERIES} says.
        """
        queries = dashboard_queries(self.dashboard)
        with open(DASHBOARD_PATH, encoding="utf-8") as f:
            text = f.read()
        in_text = re.findall(r'"query": "((?:SELECT|SHOW) [^"\\]*(?:\\.[^"\\]*)*)"', text)
        self.assertEqual(
            sorted(q.text for q in queries), sorted(json.loads(f'"{q}"') for q in in_text)
        )
        self.assertEqual(len(queries), EXPECTED_QUERIES)
        self.assertTrue(all(q.text for q in queries))


class StationHealthOutOfTheBoxTests(SynchronousTestCase):
    """The systemd unit writes the figures the Station health panels read."""

    def test_unitWritesSelfStatistics(self) -> None:
        argv = exec_start({"CREDENTIALS_DIRECTORY": "/run/credentials/weather.service"})
        options = ServerOptions()
        options.parseOptions(argv[1:])
        option = declared("self-stats-interval")
        interval = option.value(options.subOptions[option.name])
        # Often enough for the per-hour panels and Last seen to mean something.
        self.assertTrue(0 < interval <= 300, interval)


class InterpolationTests(SynchronousTestCase):
    """Macros and variables replaced as Grafana's InfluxDB data source does."""

    def test_variableOptions(self) -> None:
        """A regex keeps what it matches, or its first group; a lookahead, the value."""
        values = ["b", "weather_internal", "a", "b"]
        self.assertEqual(variable_options(values), ["a", "b", "weather_internal"])
        self.assertEqual(variable_options(values, "/^(?!weather_internal$)/"), ["a", "b"])
        self.assertEqual(variable_options(values, "/^weather_(.*)/"), ["internal"])
        self.assertEqual(variable_options(["A"], "/^a$/i"), ["A"])
        # A capture group inside the lookahead: Grafana takes its (empty) text.
        self.assertEqual(variable_options(["a"], "/^(?!(x)$)/"), [None])

    def test_regexValue(self) -> None:
        self.assertEqual(regex_value(["balcony"], ".*"), "balcony")
        self.assertEqual(
            regex_value(["garden (north)", "a/b.c"], ".*"), r"(garden \(north\)|a\/b\.c)"
        )
        self.assertEqual(regex_value(None, ".*"), ".*")
        # A variable without values: Grafana writes an empty group.
        self.assertEqual(regex_value([], None), "()")

    def test_interpolate(self) -> None:
        text = (
            'SELECT mean("value") FROM "t" WHERE $timeFilter AND "place" =~ /^$place$/ '
            "GROUP BY time($__interval) -- $__interval_ms ${place} [[place]]"
        )
        self.assertEqual(
            interpolate(text, relative_time_filter("15m"), "1s", {"place": "x"}),
            'SELECT mean("value") FROM "t" WHERE time >= now() - 15m and time <= now() '
            'AND "place" =~ /^x$/ GROUP BY time(1s) -- 1000 x x',
        )
        self.assertEqual(
            interpolate("$__from $__to", absolute_time_filter(5, 7), "1m", {}), "5 7"
        )

    def test_unknownVariable(self) -> None:
        """A variable without a value fails the test rather than reaching InfluxDB."""
        with self.assertRaises(KeyError):
            interpolate("WHERE x =~ /$nowhere/", relative_time_filter("1h"), "1s", {})


class DashboardQueriesTests(TwistdTestCase):
    """Every query of the dashboard, run against what simulated stations sent."""

    def test_everyQueryAnswers(self) -> None:
        started = time.time()
        self.feed()
        self.feed_other_measurement()
        dashboard = load_dashboard()
        queries = dashboard_queries(dashboard)
        self.assertEqual(len(queries), EXPECTED_QUERIES)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}

        # The variable's own query gives its values, and its regex its
        # options, as in Grafana.
        options: dict[str, list[str]] = {}
        for name, variable in variables.items():
            answer = self.influx.query(variable["query"], self.database)
            values = [
                row[-1]
                for s in answer["results"][0].get("series", [])
                for row in s["values"]
            ]
            options[name] = variable_options(values, variable.get("regex", ""))
        self.assertEqual(options["place"], sorted(PLACES))
        self.assertEqual(options["measurement"], [OTHER_MEASUREMENT])
        self.assertEqual(options["host"], [socket.gethostname()])

        now_ms = int(time.time() * 1000) + 1000
        start_ms = int(started * 1000) - 7_200_000
        # "Last 15 minutes" at the interval Grafana picks for it (15 min over
        # about 900 points), one place chosen; then an absolute range with
        # several places; then All.
        views = [
            (
                relative_time_filter("15m"),
                "1s",
                {"place": [PLACES[1]], "host": options["host"]},
            ),
            (
                absolute_time_filter(start_ms, now_ms),
                "1s",
                {"place": list(PLACES), "host": options["host"]},
            ),
            (relative_time_filter("24h"), "1s", {"place": None, "host": None}),
        ]
        problems = []
        for time_filter, interval, chosen in views:
            values = {
                name: regex_value(chosen[name], variables[name].get("allValue"))
                for name in chosen
            }
            places = chosen["place"] or PLACES
            for query in queries:
                # A repeated panel runs once per option, with that value alone.
                for option in options[query.repeat] if query.repeat else [None]:
                    scoped = dict(values)
                    if query.repeat:
                        scoped[query.repeat] = regex_value([option], None)
                    text = interpolate(query.text, time_filter, interval, scoped)
                    problem = query_problem(self.influx, self.database, text, places)
                    if problem:
                        problems.append(
                            f"{query.where} {option or ''}: {problem}\n    {text}"
                        )
        if problems:
            self.fail(f"{len(problems)} queries fail:\n" + "\n".join(problems))

        # With no measurement to repeat for, the panel stands alone, for All
        # of no values: its query finds nothing rather than failing.
        for query in queries:
            if query.repeat:
                text = interpolate(
                    query.text,
                    relative_time_filter("24h"),
                    "1s",
                    {"place": ".*", query.repeat: regex_value([], None)},
                )
                self.assertEqual(
                    query_problem(self.influx, self.database, text), "no series", text
                )

    def test_checkerFlagsEmptyAndBrokenQueries(self) -> None:
        """The check can fail: no series, only nulls, errors."""
        self.influx.write(self.database, "temperature,place=x value=1\nother value=2\n")
        check = lambda q, places=(): query_problem(self.influx, self.database, q, places)  # noqa: E731
        self.assertIsNone(check('SELECT last("value") FROM "temperature"'))
        self.assertEqual(
            check('SELECT last("value") FROM "no_such_measurement"'), "no series"
        )
        self.assertEqual(
            check('SELECT last("no_such_field") FROM "temperature"'), "no series"
        )
        self.assertEqual(
            check('SELECT last("value") FROM "temperature" WHERE "place" =~ /^y$/'),
            "no series",
        )
        self.assertEqual(
            check('SELECT last("value") * 0 + last("no_such_field") FROM "temperature"'),
            "1 series, not one value",
        )
        # A syntax error, a function used wrongly, a macro left in the query.
        self.assertIn(
            "HTTP 400", check('SELECT last("value") FROM "temperature" GROUP BY time(')
        )
        self.assertIn(
            "requires a GROUP BY interval",
            check('SELECT non_negative_difference(last("value")) FROM "temperature"'),
        )
        self.assertIn(
            "missing parameter",
            check('SELECT mean("value") FROM "temperature" GROUP BY time($__interval)'),
        )

    # -- the data ----------------------------------------------------------------

    def feed(self) -> None:
        """
        The real server with self-statistics every second, and C{weather
        simulate} sending C{PACKETS} uploads from each of C{STATIONS}
        stations; returns once InfluxDB holds the readings and self-statistics
        that count every packet.
        """
        devices = self.weather("simulate", "--stations", str(len(PLACES)), "--devices-toml")
        self.assertIn('place = "station-2"', devices)
        devices = devices.replace('place = "station-2"', f'place = "{PLACES[1]}"')
        port = self.start_server(devices)
        simulated = subprocess.run(
            [
                sys.executable,
                "-m",
                "weather.tools.cli",
                "simulate",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--stations",
                str(STATIONS),
                "--packets",
                str(PACKETS),
                "--wake-every",
                "4",
                "--measure-every",
                "2",
                "--wait-ack",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(simulated.returncode, 0, simulated.stdout + simulated.stderr)
        wait_until(self.fed, timeout=30, what="readings and self-statistics in InfluxDB")

    def feed_other_measurement(self) -> None:
        """
        Readings of L{OTHER_MEASUREMENT} for every place, as a station of
        another layout would have them stored: a measurement the dashboard
        names nowhere, with a field of its own.
        """
        lines = "".join(
            f"{series_prefix(OTHER_MEASUREMENT, [('place', place)], OTHER_FIELD)}{value}\n"
            for place, value in zip(PLACES, (1013.2, 1009.8), strict=True)
        )
        status, body = self.influx.write(self.database, lines)
        self.assertEqual(status, 204, body)

    def weather(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "weather.tools.cli", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def start_server(self, devices: str) -> int:
        """C{twistd -n weather} in the work directory; returns its station port."""
        path = os.path.join(self.workdir, "devices.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(devices)
        port = free_port()
        server = Daemon(
            [
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
                "--influx-url",
                self.influx.url,
                "--database",
                self.database,
                "--devices",
                path,
                "--flush-interval",
                "0.1",
                "--data-dir",
                os.path.join(self.workdir, "data"),
                "--self-stats-interval",
                "1",
            ],
            self.workdir,
        )
        self.addCleanup(server.stop, 10)
        server.wait_ready(lambda: self.internal("packets_accepted_total"), timeout=20)
        return port

    def internal(self, field: str, group: str = "") -> list[list]:
        """The last value of a self-statistic, per C{group} tag."""
        by = f' GROUP BY "{group}"' if group else ""
        answer = self.influx.query(
            f'SELECT last("{field}") FROM "weather_internal"{by}', self.database
        )
        return [
            [s.get("tags", {}).get(group), *s["values"][-1][1:]]
            for s in answer["results"][0].get("series", [])
        ]

    def fed(self) -> bool:
        """Every packet stored and counted in the self-statistics."""
        packets = dict(self.internal("station_packets_total", "place"))
        rejected = self.internal("packets_rejected_total", "reason")
        return (
            packets == {place: PACKETS for place in PLACES}
            and [PACKETS] in [row[1:] for row in rejected]
            and bool(self.internal("journal_pending_packets"))
            and all(self.stored("temperature", place) for place in PLACES)
        )
