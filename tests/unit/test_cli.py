"""
The weather command: journal status, quarantine list, replay.
"""

from __future__ import annotations

import io
import os
import re
import signal
import struct
import sys
from types import SimpleNamespace

from treq.testing import StubTreq
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tests.fakeinflux import FakeInfluxDB
from tests.oracle import oracle_lines
from tests.support import (
    HEADER,
    RecordingWriter,
    journal_options,
    journal_quarantined,
    journal_status,
    option_defaults,
    reference_devices_toml,
    reference_packet,
    started_journal,
)
from weather import __version__
from weather.app.options import (
    DATA_DIR,
    DEVICES,
    INFLUX,
    TOOLS_DATA_DIR,
    DataDirOptions,
    InfluxOptions,
    declared,
)
from weather.app.options import Options as ServerOptions
from weather.core.devices import parse_devices
from weather.core.lineprotocol import LineEncoder
from weather.core.packet import Packet, PacketRejected, Reason
from weather.core.timing import TimingInputs
from weather.journal.service import (
    ImmediateDiskWorker,
    Journal,
    server_running,
    take_lock,
)
from weather.journal.store import Changes, JournalEntry, JournalFile, Quarantine
from weather.ops.stations import StationBook
from weather.server.pipeline import REFUSED, PacketPipeline
from weather.tools import cli
from weather.tools.cli import (
    Options,
    Progress,
    ReplayOptions,
    SimulateOptions,
    age,
    main,
    replay,
    size,
)
from weather.tools.simulate import Simulation, StationModel

S = 1_000_000_000
T0 = 1_700_000_000 * S


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


class JournalFixture:
    """A data directory holding pending and quarantined packets."""

    def make_journal(self) -> str:
        directory = self.mktemp()
        file = JournalFile(directory)
        unknown = Quarantine("unknown_device", "no profile for device 7", T0)
        file.commit(
            Changes(
                added=[
                    (self.entry(1, 7, T0, None), unknown),
                    (self.entry(2, 7, T0 + 3600 * S, T0), unknown),
                    (self.entry(3, 1, T0 + 10 * S, None), None),
                    (
                        JournalEntry(4, Packet(b"\xb4\x00\x10", "10.0.0.9:1", T0)),
                        Quarantine("truncated", "3 bytes, shorter than the header", T0),
                    ),
                ]
            )
        )
        file.close()
        return directory

    @staticmethod
    def entry(entry_id: int, device: int, arrival: int, previous: int | None):
        data = reference_packet(30, device_id=device)
        packet = Packet(data, f"10.0.0.{device}:4000", arrival)
        return JournalEntry(entry_id, packet, TimingInputs.since(previous, arrival))

    def devices_file(self, **places: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(reference_devices_toml(**places))
        return path


class StatusAndListTests(SynchronousTestCase, JournalFixture):
    def test_status(self) -> None:
        directory = self.make_journal()
        code, out, _ = run("journal", "status", "--data-dir", directory)
        self.assertEqual(code, 0)
        self.assertIn("Pending:      1 packet not yet acknowledged", out)
        self.assertIn("Quarantined:  3 packets", out)
        self.assertIn("2023-11-14 22:13:30 UTC", out)  # the oldest pending
        self.assertIn("no server is using it", out)
        self.assertIn("KiB on disk", out)

    def test_statusWithoutJournal(self) -> None:
        code, _, err = run("journal", "status", "-d", self.mktemp())
        self.assertEqual(code, 1)
        self.assertIn("no journal in", err)
        self.assertEqual(err.count("\n"), 1)

    def test_list(self) -> None:
        directory = self.make_journal()
        code, out, _ = run("quarantine", "list", "--data-dir", directory)
        self.assertEqual(code, 0)
        self.assertIn("unknown_device: no profile for device 7", out)
        self.assertIn("truncated: 3 bytes", out)
        self.assertIn("10.0.0.7:4000", out)
        self.assertIn("3 packets in quarantine: 1 truncated, 2 unknown_device", out)
        self.assertNotIn(reference_packet(30, device_id=7).hex(), out)

    def test_listByReasonWithHex(self) -> None:
        directory = self.make_journal()
        _, out, _ = run(
            "quarantine", "list", "-d", directory, "--reason", "truncated", "--hex"
        )
        self.assertIn("b40010", out)
        self.assertNotIn("unknown_device", out)

    def test_listShowsRefusedLines(self) -> None:
        directory = self.make_journal()
        file = JournalFile(directory)
        refused = tuple(b"temperature,place=x value=%d 1" % i for i in range(5))
        file.commit(
            Changes(
                quarantined={3: Quarantine("refused", "HTTP 400: conflict", 1, refused)}
            )
        )
        file.close()
        _, out, _ = run("quarantine", "list", "-d", directory, "--reason", "refused")
        self.assertIn("refused: temperature,place=x value=0 1", out)
        self.assertIn("... 2 more refused", out)

    def test_emptyQuarantine(self) -> None:
        directory = self.mktemp()
        JournalFile(directory).close()
        self.assertEqual(
            run("quarantine", "list", "-d", directory)[1], "Nothing in quarantine.\n"
        )

    def test_usage(self) -> None:
        code, _, err = run()
        self.assertEqual(code, 2)
        self.assertIn("give a command", err)
        code, _, err = run("quarantine")
        self.assertEqual(code, 2)
        code, _, err = run("replay", "--id", "x")
        self.assertEqual((code, err), (2, "weather: --id 'x': give a packet number\n"))

    def test_defaultDataDirFromEnvironment(self) -> None:
        directory = self.make_journal()
        self.patch(os, "environ", {**os.environ, "WEATHER_DATA_DIR": directory})
        self.assertIn("Pending:      1", run("journal", "status")[1])


class ReplayTests(SynchronousTestCase, JournalFixture):
    def setUp(self) -> None:
        self.directory = self.make_journal()
        self.clock = Clock()
        self.influx = FakeInfluxDB()
        self.stub = StubTreq(self.influx)

    def options(self, *argv: str) -> ReplayOptions:
        options = ReplayOptions()
        options.parseOptions(["--data-dir", self.directory, *argv])
        return options

    def replay(self, *argv: str):
        out, err = io.StringIO(), io.StringIO()
        result = replay(self.clock, self.options(*argv), out, err, client=self.stub)
        for _ in range(50):
            self.stub.flush()
            self.clock.advance(0.1)
        return self.successResultOf(result), out.getvalue(), err.getvalue()

    def test_dryRunShowsReadingsChangesNothing(self) -> None:
        """A table a packet, as weather decode shows it."""
        devices = self.devices_file(**{"1": "balcony", "7": "shed"})
        code, out, err = self.replay("--devices", devices, "--dry-run")
        self.assertEqual(code, 0)
        self.assertIn(
            "Packet 1: device 7 (place=shed) from 10.0.0.7:4000, arrived "
            "2023-11-14 22:13:20 UTC: 30 records, 90 points\n"
            "  #  time (UTC)               light (lx)  humidity (%)  temperature (°C)\n"
            "  0  2023-11-14 21:15:20.000         100         51.22             20.18\n",
            out,
        )
        self.assertIn(" 29  2023-11-14 23:13:20.000         129", out)
        self.assertIn("Packet 4: still not decodable: truncated", out)
        self.assertNotIn("value=", out)
        self.assertEqual(
            err, "Dry run: 2 packets would be written, 1 stays in quarantine.\n"
        )
        self.assertEqual(self.influx.requests, [])
        self.assertEqual(len(JournalFile(self.directory).quarantined()), 3)

    def test_dryRunLines(self) -> None:
        """--lines: the line protocol, each packet after a comment."""
        devices = self.devices_file(**{"1": "balcony", "7": "shed"})
        code, out, err = self.replay("--devices", devices, "--dry-run", "--lines")
        self.assertEqual(code, 0)
        self.assertIn("# packet 1: 90 points", out)
        self.assertIn("# packet 2: 90 points", out)
        self.assertIn("# packet 4: still not decodable: truncated", out)
        self.assertIn("light,place=shed value=", out)
        self.assertIn("2 packets would be written, 1 stays", err)
        self.assertEqual(self.influx.requests, [])
        self.assertEqual(len(JournalFile(self.directory).quarantined()), 3)

    def test_replayAfterDescribingTheDevice(self) -> None:
        """
        The packets are written with the timestamps they would have had:
        the second one's interval is measured from the first's arrival.
        """
        devices = self.devices_file(**{"1": "balcony", "7": "shed"})
        code, _, err = self.replay("--devices", devices)
        self.assertEqual(code, 1)  # the truncated one stays
        self.assertIn("Replayed 2 packets", err)
        self.assertIn("1 stays in quarantine", err)
        points = self.influx.points_in("weather")
        self.assertEqual(len(points), 180)
        light = sorted(p.timestamp for p in points if p.measurement == "light")
        self.assertEqual(light[-1], T0 + 3600 * S)
        self.assertEqual(light[-2], T0 + 3600 * S - 120 * S)  # 3600 s / 30 records
        self.assertEqual(light[29], T0)
        [left] = JournalFile(self.directory).quarantined()
        self.assertEqual(left.entry.id, 4)
        # The pending packet is the server's business, not the replay's.
        self.assertEqual(len(JournalFile(self.directory).pending()), 1)

    def test_nothingToReplay(self) -> None:
        """An empty choice says so, sends nothing and succeeds."""
        code, _, err = self.replay("--reason", "refused")
        self.assertEqual((code, err), (0, "Nothing in quarantine to replay.\n"))
        self.assertEqual(self.influx.points_in("weather"), [])

    def test_stillUnknownStaysWithNewReason(self) -> None:
        devices = self.devices_file(**{"1": "balcony"})
        code, _, err = self.replay("--devices", devices, "--reason", "unknown_device")
        self.assertEqual(code, 1)
        self.assertIn("Replayed 0 packets", err)
        self.assertEqual(len(JournalFile(self.directory).quarantined()), 3)

    def test_onlyChosenIds(self) -> None:
        devices = self.devices_file(**{"7": "shed"})
        code, _, _ = self.replay("--devices", devices, "--id", "2")
        self.assertEqual(code, 0)
        self.assertEqual(
            [q.entry.id for q in JournalFile(self.directory).quarantined()], [1, 4]
        )

    def test_lockHeldWhileReplaying(self) -> None:
        """
        With no server, the replay holds the journal's lock: a server that
        starts meanwhile cannot take up the same packets and write them too.
        """
        seen: list[bool] = []
        real_send = cli._send

        def send(*args):
            seen.append(server_running(self.directory))
            return real_send(*args)

        self.patch(cli, "_send", send)
        devices = self.devices_file(**{"7": "shed"})
        self.replay("--devices", devices)
        self.assertEqual(seen, [True])
        self.assertFalse(server_running(self.directory))

    def test_heldByAnotherProcess(self) -> None:
        """
        The lock held by a process that wrote no id (a server starting, an
        older one, a salvage): nothing replayed, one line saying why.
        """
        held = take_lock(self.directory)
        self.addCleanup(os.close, held)
        devices = self.devices_file(**{"7": "shed"})
        code, _, err = self.replay("--devices", devices)
        self.assertEqual(code, 1)
        self.assertIn(f"{self.directory} is in use by a process", err)
        self.assertEqual(len(JournalFile(self.directory).quarantined()), 3)
        self.assertEqual(self.influx.points_in("weather"), [])

    def test_refusedPointsStayWithInfluxMessage(self) -> None:
        """A type conflict: the packet stays, with InfluxDB's words and the lines."""
        self.influx.field_types[("weather", "temperature")] = {"value": "string"}
        devices = self.devices_file(**{"7": "shed"})
        code, _, err = self.replay("--devices", devices, "--reason", "unknown_device")
        self.assertEqual(code, 1)
        kept = JournalFile(self.directory).quarantined()
        refused = [q for q in kept if q.quarantine.reason == "refused_by_influxdb"]
        self.assertEqual(len(refused), 2)
        self.assertIn("HTTP 400", refused[0].quarantine.detail)
        self.assertIn("conflict", refused[0].quarantine.detail)
        self.assertEqual(len(refused[0].quarantine.refused), 30)
        self.assertTrue(
            all(b"temperature" in line for line in refused[0].quarantine.refused)
        )
        # The other readings of those packets were written (InfluxDB 1.x keeps
        # the good lines of a partial write, so some arrive twice: same point).
        stored = {
            (p.measurement, tuple(sorted(p.tags.items())), p.timestamp)
            for p in self.influx.points_in("weather")
        }
        self.assertEqual(len(stored), 120)

    def test_influxDownLeavesQuarantineAlone(self) -> None:
        self.influx.fail_next(503, count=1000)
        devices = self.devices_file(**{"7": "shed"})
        out, err = io.StringIO(), io.StringIO()
        options = self.options("--devices", devices, "--timeout", "5")
        result = replay(self.clock, options, out, err, client=self.stub)
        for _ in range(100):
            self.stub.flush()
            self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(result), 1)
        self.assertIn("2 not sent", err.getvalue())
        self.assertEqual(len(JournalFile(self.directory).quarantined()), 3)

    def test_refusedConnectionsGiveUpSoon(self) -> None:
        """
        Nothing listens at --influx-url: the replay stops within seconds,
        not at --timeout, saying where and why; the packets stay.
        """

        class Refusing:
            def post(self, *args, **kwargs):
                return fail(ConnectionRefusedError("Connection refused"))

        devices = self.devices_file(**{"7": "shed"})
        out, err = io.StringIO(), io.StringIO()
        options = self.options(
            "--devices", devices, "--timeout", "300", "--influx-url", "http://127.0.0.1:9"
        )
        result = replay(self.clock, options, out, err, client=Refusing())
        for _ in range(80):
            self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(result), 1)
        self.assertIn("2 not sent (InfluxDB 1.x at http://127.0.0.1:9", err.getvalue())
        self.assertIn("failed every request for 5 s: Connection refused", err.getvalue())
        self.assertIn("they stay in quarantine", err.getvalue())
        self.assertEqual(len(JournalFile(self.directory).quarantined()), 3)

    def test_badInfluxOptions(self) -> None:
        code, _, err = run("replay", "-d", self.directory, "--influx-url", "ftp://x")
        self.assertEqual(code, 1)
        self.assertIn("--influx-url", err)

    def test_badTimeout(self) -> None:
        """--timeout is checked as the server's options are: one line, no traceback."""
        for text, message in [
            ("abc", "--timeout 'abc': give a number"),
            ("0", "--timeout 0: give a value from 0.1 to 86400"),
        ]:
            code, _, err = run("replay", "-d", self.directory, "--timeout", text)
            self.assertEqual((code, err), (2, f"weather: {message}\n"))
        self.assertEqual(self.options("--timeout", "2.5")["timeout"], 2.5)


class SameAsServerTests(SynchronousTestCase):
    """
    C{weather replay} sends a journaled packet the server's way: the lines
    the server's pipeline writes for it, and its quarantine when InfluxDB
    refuses them.
    """

    DEVICES = (
        '[devices.5]\ntags = { place = "roof top" }\nvalues = [\n'
        '{ name = "wind", type = "f32" }, { name = "gust", type = "i16", scale = 0.1 }]\n'
    )
    ROWS = [(1.5, -3), (float("nan"), 20), (0.1, 0), (float("-inf"), 7)]

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0 / S)
        self.profiles = parse_devices(self.DEVICES)
        self.writer = RecordingWriter()
        self.journal = started_journal(self, self.clock)
        pipeline = PacketPipeline(self.profiles, self.journal, self.writer, self.clock)
        pipeline.startService()
        self.addCleanup(pipeline.stopService)
        body = b"".join(struct.pack("<fh", *row) for row in self.ROWS)
        self.data = HEADER.pack(len(body), 3600, 120, 6, 5, 2) + body
        # The second packet's interval is measured from the first's arrival.
        for arrival in (T0, T0 + 3590 * S):
            pipeline.packet_received(Packet(self.data, "192.0.2.5:1", arrival))
        self.entries = self.journal.file.pending()
        self.assertEqual(len(self.writer.writes), 2)

    def replay(self, influx: FakeInfluxDB) -> list[Quarantine]:
        """Replay the server's journaled packets, quarantined for an unknown device."""
        directory = self.mktemp()
        file = JournalFile(directory)
        unknown = Quarantine("unknown_device", "no profile for device 5", T0)
        file.commit(Changes(added=[(entry, unknown) for entry in self.entries]))
        file.close()
        devices = self.mktemp()
        with open(devices, "w") as f:
            f.write(self.DEVICES)
        options = ReplayOptions()
        options.parseOptions(["--data-dir", directory, "--devices", devices])
        stub = StubTreq(influx)
        result = replay(self.clock, options, io.StringIO(), io.StringIO(), client=stub)
        for _ in range(50):
            stub.flush()
            self.clock.advance(0.1)
        self.successResultOf(result)
        return [q.quarantine for q in JournalFile(directory).quarantined()]

    def test_sameLines(self) -> None:
        """The same timestamps and values, NaN and infinity left out."""
        influx = FakeInfluxDB()
        self.assertEqual(self.replay(influx), [])
        written = [
            line
            for request in influx.requests
            if request.path == "/write"
            for line in request.body.splitlines()
        ]
        self.assertEqual(written, self.writer.lines)
        expected = [
            oracle_lines(e.packet.data, e.packet.arrival_ns, e.timing, self.profiles)
            for e in self.entries
        ]
        self.assertEqual([lines for lines, _ in self.writer.writes], expected)
        self.assertEqual(len(written), 2 * (8 - 2))
        self.assertNotIn(b"nan", b"".join(written).lower())
        self.assertNotIn(b"inf", b"".join(written).lower())
        # Measured: 3590 s over one upload of 30 records (26 lost).
        self.assertIn(
            b"wind,place=roof\\ top value=0.10000000149011612 %d"
            % (T0 + 3590 * S - 119_666_666_667),
            written,
        )

    def test_sameRefusal(self) -> None:
        """Points InfluxDB refuses: the same reason, detail and lines."""
        message = "partial write: field type conflict"
        for index in (0, 1):
            self.writer.refuse(index, status=400, message=message)
        server = [q.quarantine for q in self.journal.file.quarantined()]
        influx = FakeInfluxDB()
        influx.fail_next(400, {"error": message}, count=1000)
        replayed = self.replay(influx)
        self.assertEqual(
            [(q.reason, q.detail, q.refused) for q in replayed],
            [(q.reason, q.detail, q.refused) for q in server],
        )
        self.assertEqual(server[0].reason, REFUSED)
        self.assertEqual(server[0].detail, f"HTTP 400: {message}")
        self.assertEqual([len(q.refused) for q in server], [6, 6])


class PresentationTests(SynchronousTestCase):
    def test_age(self) -> None:
        self.assertEqual(
            [age(s) for s in (5, 75, 3 * 3600 + 300, 3 * 86400 + 7200)],
            ["5 s", "1 min", "3 h 5 min", "3 d 2 h"],
        )

    def test_size(self) -> None:
        self.assertEqual(
            [size(n) for n in (10, 2048, 5 << 20, 3 << 30)],
            ["10 bytes", "2.0 KiB", "5.0 MiB", "3.0 GiB"],
        )

    def test_progressOnAPipe(self) -> None:
        out = io.StringIO()
        progress = Progress(100, out)
        for done in range(101):
            progress.update(done)
        self.assertEqual(out.getvalue().count("\n"), 11)  # 0%, 10%, ... 100%
        self.assertTrue(out.getvalue().endswith("100/100 packets\n"))

    def test_progressOnATerminal(self) -> None:
        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        out = Terminal()
        progress = Progress(4, out, width=8)
        for done in range(5):
            progress.update(done)
        self.assertIn("\r[####....] 2/4 packets", out.getvalue())
        self.assertTrue(out.getvalue().endswith("\r[########] 4/4 packets\n"))

    def test_helpListsCommands(self) -> None:
        text = str(Options())
        for command in ("journal", "quarantine", "replay"):
            self.assertIn(command, text)


class SharedOptionsTests(SynchronousTestCase):
    """weather replay takes the server's own declarations, through mixins."""

    def test_sameDeclarations(self) -> None:
        self.assertTrue(issubclass(ReplayOptions, DataDirOptions))
        self.assertTrue(issubclass(ReplayOptions, InfluxOptions))
        replay_options, server = ReplayOptions(), ServerOptions()
        for option in (DATA_DIR, DEVICES, *INFLUX):
            self.assertEqual(
                replay_options.docs[option.name],
                # The tools' default data directory is the last server's.
                TOOLS_DATA_DIR.help if option is DATA_DIR else server.docs[option.name],
                option.name,
            )
            self.assertEqual(
                replay_options.defaults[option.name],
                server.defaults[option.name],
                option.name,
            )

    def test_onlyThose(self) -> None:
        """The server's other options mean nothing to a replay: it does not take them."""
        for name in ("port", "flush-interval", "metrics-port", "max-connections"):
            self.assertNotIn(name, ReplayOptions().docs)

    def test_helpStandsAlone(self) -> None:
        """No help text of the replay's names an option the replay does not take."""
        docs = ReplayOptions().docs
        for name, doc in docs.items():
            for named in re.findall(r"--([a-z0-9-]+)", doc):
                self.assertIn(named, docs, name)

    def test_settingsWithServerDefaults(self) -> None:
        options = ReplayOptions()
        options.parseOptions(["--batch-size", "7", "--database", "wx"])
        settings = options.settings()
        defaults = option_defaults()
        self.assertEqual(settings.batch_size, 7)
        self.assertEqual(settings.target.database, "wx")
        self.assertEqual(settings.flush_interval, defaults.flush_interval)
        self.assertEqual(settings.max_pending, defaults.max_pending)

    def test_simulateDefaults(self) -> None:
        """
        weather simulate's defaults are declared elsewhere once: the port is
        the server's, the rest the simulator's own.
        """
        options = SimulateOptions()
        options.parseOptions([])
        station = StationModel(1)
        simulation = Simulation(None, None, [], 1, io.StringIO())
        self.assertEqual(options["port"], int(declared("port").default))
        self.assertEqual(
            [options[name] for name in ("wake-every", "measure-every")],
            [station.wake_every, station.measure_every],
        )
        self.assertEqual(
            [options[name] for name in ("miss", "segments", "segment-delay", "spread")],
            [
                simulation.miss,
                simulation.segments,
                simulation.segment_delay,
                simulation.spread,
            ],
        )
        self.assertEqual(options["seed"], simulation.seed)


class HelpTests(SynchronousTestCase):
    def help(self, *argv: str) -> str:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, main, [*argv, "--help"])
        self.assertEqual(error.code, 0)
        return out.getvalue()

    def test_oneUsageLine(self) -> None:
        """Each command's usage line names it once, after one 'Usage:'."""
        cases = {
            (): "Usage: weather <command> [options]",
            ("journal",): "Usage: weather journal status|check|salvage [--data-dir DIR]",
            ("journal", "status"): "Usage: weather journal status [--data-dir DIR]",
            ("journal", "check"): "Usage: weather journal check [--data-dir DIR]",
            ("journal", "salvage"): "Usage: weather journal salvage [--data-dir DIR]",
            ("quarantine",): "Usage: weather quarantine list|drop [--data-dir DIR] "
            "[options]",
            ("quarantine", "list"): "Usage: weather quarantine list [--data-dir DIR] "
            "[--reason R] [--hex]",
            ("quarantine", "drop"): "Usage: weather quarantine drop [--data-dir DIR] "
            "[ID ...] [--reason R] [--older-than AGE] [--yes]",
            ("replay",): "Usage: weather replay [--data-dir DIR] [--devices FILE] "
            "[InfluxDB options]",
            ("decode",): "Usage: weather decode [options] [PACKET ...]",
            ("simulate",): "Usage: weather simulate [--host H] [--port P] "
            "[--devices FILE] [--stations N] [--packets K]",
            ("serve",): "Usage: weather serve [--logfile FILE] [server options]",
        }
        for argv, line in cases.items():
            text = self.help(*argv)
            self.assertEqual(text.splitlines()[0], line, argv)
            self.assertEqual(text.count("Usage:"), 1, argv)

    def test_lostShowsTheCommandsUsage(self) -> None:
        code, _, err = run("quarantine")
        self.assertEqual(code, 2)
        self.assertTrue(
            err.startswith(
                "weather: give a subcommand: list or drop\nUsage: weather quarantine"
            ),
            err,
        )

    def test_version(self) -> None:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        for argv in (["--version"], ["replay", "--version"]):
            error = self.assertRaises(SystemExit, main, argv)
            self.assertEqual(error.code, 0)
        self.assertEqual(out.getvalue(), f"weather {__version__}\n" * 2)


class ReactTests(SynchronousTestCase, JournalFixture):
    """The commands that use the network run under task.react."""

    def test_exitCode(self) -> None:
        """react exits 0 unless the command's Deferred fails with SystemExit."""
        self.assertIsNone(
            self.successResultOf(cli._exiting(Clock(), lambda r, n: succeed(n), 0))
        )
        failure = self.failureResultOf(
            cli._exiting(Clock(), lambda r, n: succeed(n), 1), SystemExit
        )
        self.assertEqual(failure.value.code, 1)

    def test_underReact(self) -> None:
        calls: list[tuple] = []
        self.patch(cli, "react", lambda run, argv: calls.append((run, argv)))
        main(["simulate"])
        main(["replay", "-d", self.make_journal()])
        self.assertEqual([run for run, _ in calls], [cli._exiting, cli._exiting])
        self.assertEqual([argv[0] for _, argv in calls], [cli.simulate, cli.replay])


class QuarantineDropTests(SynchronousTestCase, JournalFixture):
    """
    weather quarantine drop: packets 1 and 2 (unknown_device, T0 and an hour
    later) and 4 (truncated, T0) are in quarantine, 3 waits for InfluxDB.
    """

    def setUp(self) -> None:
        self.directory = self.make_journal()
        self.patch(cli.time, "time", lambda: T0 / S + 2 * 86400)

    def left(self) -> list[int]:
        file = JournalFile(self.directory)
        try:
            return sorted(
                [q.entry.id for q in file.quarantined()] + [e.id for e in file.pending()]
            )
        finally:
            file.close()

    def test_dryRunByReason(self) -> None:
        """Without --yes, what would go, and nothing goes."""
        code, out, _ = run(
            "quarantine", "drop", "-d", self.directory, "--reason", "unknown_device"
        )
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                "     id  arrived (UTC)               age  device  bytes  reason",
                "      1  2023-11-14 22:13:20     2 d 0 h       7    189  unknown_device",
                "      2  2023-11-14 23:13:20  47 h 0 min       7    189  unknown_device",
                "Would drop 2 packets (2 unknown_device) for good. Dry run: nothing was "
                "deleted; add --yes to drop them.",
            ],
        )
        self.assertEqual(self.left(), [1, 2, 3, 4])

    def test_yesDropsOnlyThose(self) -> None:
        code, out, _ = run(
            "quarantine", "drop", "-d", self.directory, "--reason", "truncated", "--yes"
        )
        self.assertEqual(code, 0)
        self.assertIn("Dropped 1 packet (1 truncated) from quarantine for good.", out)
        self.assertEqual(self.left(), [1, 2, 3])

    def test_byAge(self) -> None:
        """--older-than: by arrival; with --reason, both must hold."""
        argv = ("quarantine", "drop", "-d", self.directory, "--older-than", "47h30min")
        code, _, err = run(*argv)
        self.assertEqual(code, 2)
        self.assertIn("give an age such as 30d, 12h, 90min or 45s", err)
        code, out, _ = run(*argv[:-1], "2850min", "--yes")
        self.assertEqual(code, 0)
        self.assertIn("Dropped 2 packets (1 truncated, 1 unknown_device)", out)
        self.assertEqual(self.left(), [2, 3])
        code, out, _ = run(*argv[:-1], "1d", "--reason", "truncated", "--yes")
        self.assertEqual((code, out), (0, "Nothing in quarantine to drop.\n"))

    def test_byIdNeverAPendingPacket(self) -> None:
        """Packet 3 waits for InfluxDB: asked for, it is left alone, and said so."""
        code, out, _ = run(
            "quarantine", "drop", "-d", self.directory, "1", "--id", "3", "99", "--yes"
        )
        self.assertEqual(code, 1)
        self.assertIn("Dropped 1 packet (1 unknown_device)", out)
        self.assertIn("Not in quarantine, left alone: packets 3, 99\n", out)
        self.assertEqual(self.left(), [2, 3, 4])

    def test_saysWhich(self) -> None:
        code, _, err = run("quarantine", "drop", "-d", self.directory, "--yes")
        self.assertEqual(code, 2)
        self.assertIn("say which packets: their ids, --reason or --older-than", err)
        code, _, err = run("quarantine", "drop", "-d", self.directory, "x")
        self.assertEqual((code, err), (2, "weather: --id 'x': give a packet number\n"))
        self.assertEqual(self.left(), [1, 2, 3, 4])

    def test_unknownReason(self) -> None:
        """Answered with the reasons, the closest first; nothing dropped."""
        code, _, err = run(
            "quarantine", "drop", "-d", self.directory, "--reason", "truncate", "--yes"
        )
        self.assertEqual(code, 2)
        self.assertTrue(
            err.startswith(
                "weather: unknown reason 'truncate'; did you mean 'truncated'? "
                "reasons: truncated, oversized,"
            ),
            err,
        )
        # A reason the journal holds counts as known (older versions' names).
        self.assertIn("refused_by_influxdb, replay-requested, unknown_device\n", err)
        self.assertEqual(self.left(), [1, 2, 3, 4])

    def test_whileAServerRuns(self) -> None:
        """
        A running server keeps its journal: the quarantined packet goes, the
        pending one stays, and the server goes on committing, the dropped
        packet's id included.
        """
        clock = Clock()
        journal = started_journal(self, clock)
        rejected = Packet(b"\xb4\x00\x10", "192.0.2.9:1", T0)
        journal.append_rejected(rejected, PacketRejected(Reason.TRUNCATED, "3 bytes"))
        data = reference_packet(3)
        pending = self.successResultOf(journal.append(Packet(data, "192.0.2.1:1", T0)))
        code, out, _ = run(
            "quarantine", "drop", "-d", journal.directory, "--reason", "truncated", "-y"
        )
        self.assertEqual(code, 0, out)
        self.assertIn("Dropped 1 packet", out)
        journal.quarantine(1, Reason.TRUNCATED, "an update the drop went before")
        journal.delivered(pending.id)
        self.assertEqual(journal.file.quarantined(), [])
        self.assertEqual(journal.file.pending(), [])
        self.assertEqual(journal.stats.packets_delivered, 1)


class UnknownNamesTests(SynchronousTestCase, JournalFixture):
    """What is not known is answered with what is, and exit status 2."""

    def test_command(self) -> None:
        code, _, err = run("decod", "x")
        self.assertEqual(code, 2)
        self.assertEqual(
            err,
            "weather: unknown command 'decod'; did you mean 'decode'? commands: "
            "journal, quarantine, replay, config, decode, simulate, serve\n",
        )
        code, _, err = run("quarantine", "lst")
        self.assertEqual(code, 2)
        self.assertIn("did you mean 'list'? commands: list, drop", err)
        code, _, err = run("zzz")
        self.assertEqual(code, 2)
        self.assertEqual(
            err,
            "weather: unknown command 'zzz'; commands: journal, quarantine, replay, "
            "config, decode, simulate, serve\n",
        )

    def test_option(self) -> None:
        code, _, err = run("quarantine", "list", "--reasn", "truncated")
        self.assertEqual(code, 2)
        self.assertEqual(
            err,
            "weather: unknown option --reasn; did you mean --reason? --help lists them\n",
        )
        code, _, err = run("decode", "b400", "--arival", "0")
        self.assertEqual(code, 2)
        self.assertIn("did you mean --arrival?", err)

    def test_reason(self) -> None:
        """quarantine list and replay: an unknown --reason is not 'nothing found'."""
        directory = self.make_journal()
        for argv in (("quarantine", "list"), ("replay",)):
            code, out, err = run(*argv, "-d", directory, "--reason", "nosuch")
            self.assertEqual((code, out), (2, ""), argv)
            self.assertTrue(err.startswith("weather: unknown reason 'nosuch';"), err)
            self.assertIn("reasons: truncated,", err)
        # A known reason with nothing in quarantine for it is not an error.
        code, out, _ = run("quarantine", "list", "-d", directory, "--reason", "oversized")
        self.assertEqual((code, out), (0, "Nothing for oversized.\n"))

    def test_linesOnlyWithDryRun(self) -> None:
        code, _, err = run("replay", "-d", self.make_journal(), "--lines")
        self.assertEqual((code, err), (2, "weather: --lines: only with --dry-run\n"))


class Terminal(io.StringIO):
    """Standard input from a terminal: reading it would wait for a person."""

    def isatty(self) -> bool:
        return True

    def read(self, *args: object) -> str:
        raise AssertionError("read from the terminal")


class InterruptedInput(io.StringIO):
    def read(self, *args: object) -> str:
        raise KeyboardInterrupt


class TerminalAndInterruptTests(SynchronousTestCase):
    def test_decodeOnATerminalShowsUsage(self) -> None:
        """Nothing to decode, and a person at the keyboard: usage, exit 2."""
        out, err = io.StringIO(), io.StringIO()
        for argv in (["decode"], ["decode", "--file", "-"], ["decode", "--lines"]):
            self.assertEqual(main(argv, out, err, stdin=Terminal()), 2, argv)
        self.assertEqual(out.getvalue(), "")
        text = err.getvalue()
        self.assertTrue(
            text.startswith(
                "weather: give a PACKET, or --file, or its text on standard input\n"
                "Usage: weather decode [options] [PACKET ...]\n"
            ),
            text,
        )

    def test_decodeReadsAPipe(self) -> None:
        out = io.StringIO()
        stdin = io.StringIO(reference_packet(1).hex())
        self.assertEqual(main(["decode", "-a", "0"], out, io.StringIO(), stdin), 0)
        self.assertIn("1970-01-01 00:00:00.000", out.getvalue())

    def test_ctrlCIsQuiet(self) -> None:
        """KeyboardInterrupt anywhere: exit 130, nothing printed."""
        out, err = io.StringIO(), io.StringIO()
        code = main(["decode"], out, err, stdin=InterruptedInput())
        self.assertEqual((code, out.getvalue(), err.getvalue()), (130, "", ""))

    def test_readerLeftIsQuiet(self) -> None:
        """weather ... | head: the pipe breaks; no traceback."""

        class Closed(io.StringIO):
            def write(self, text: str) -> int:
                raise BrokenPipeError

        self.patch(sys, "stdout", io.StringIO())  # no file to send elsewhere
        code = main(["decode", "-a", "0", reference_packet(1).hex()], Closed())
        self.assertEqual(code, 1)

    def test_ctrlCUnderReact(self) -> None:
        """The reactor takes SIGINT and stops: 130 too, not react's 0."""
        from twisted.internet import reactor

        def stopped_by_sigint(run, argv):
            reactor._exitSignal = signal.SIGINT
            raise SystemExit(0)

        self.patch(reactor, "_exitSignal", None)
        self.patch(cli, "react", stopped_by_sigint)
        self.assertEqual(main(["simulate"], io.StringIO(), io.StringIO()), 130)

    def test_exitCodeUnderReact(self) -> None:
        from twisted.internet import reactor

        self.patch(reactor, "_exitSignal", None)
        self.patch(cli, "react", lambda run, argv: sys.exit(1))
        self.assertEqual(main(["simulate"], io.StringIO(), io.StringIO()), 1)


class PluralTests(SynchronousTestCase, JournalFixture):
    """One of a thing is one thing."""

    def test_oneOfEach(self) -> None:
        directory = self.mktemp()
        file = JournalFile(directory)
        file.commit(
            Changes(
                added=[
                    (self.entry(1, 1, T0, None), None),
                    (self.entry(2, 7, T0, None), Quarantine("truncated", "x", T0)),
                ]
            )
        )
        file.close()
        out = run("journal", "status", "-d", directory)[1]
        self.assertIn("Pending:      1 packet not yet", out)
        self.assertIn("Quarantined:  1 packet, ", out)
        out = run("quarantine", "list", "-d", directory)[1]
        self.assertIn("\n1 packet in quarantine: 1 truncated\n", out)


class ReplayThroughServerTests(SynchronousTestCase, JournalFixture):
    """
    weather replay while a server holds the data directory: a journal
    service and pipeline in this process stand for it, its process id
    injected, and the signal is a call.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.make_journal())
        self.clock = Clock()
        self.writer = RecordingWriter()
        self.acknowledge = True
        self.journal = Journal(
            self.directory, self.clock, ImmediateDiskWorker(), **journal_options()
        )
        self.journal.startService()
        self.journal.publish_pid()
        self.addCleanup(self.journal.stopService)
        self.pipeline = PacketPipeline(
            parse_devices(reference_devices_toml(**{"1": "balcony"})),
            self.journal,
            self.writer,
            self.clock,
        )
        self.book = StationBook()
        self.pipeline.subscribe(self.book)
        self.pipeline.startService()
        self.addCleanup(self.pipeline.stopService)
        self.signals: list[tuple[int, int]] = []

    def sighup(self, pid: int, signum: int) -> None:
        """The server's SIGHUP: the devices file re-read (7 described), replays taken."""
        self.signals.append((pid, signum))
        self.pipeline.set_profiles(
            parse_devices(reference_devices_toml(**{"1": "balcony", "7": "shed"}))
        )
        self.pipeline.take_replays()

    def replay(self, *argv: str, signal_server=None):
        options = ReplayOptions()
        options.parseOptions(["--data-dir", self.directory, *argv])
        out, err = io.StringIO(), io.StringIO()
        with capturedLogs():
            result = replay(
                self.clock, options, out, err, signal_server=signal_server or self.sighup
            )
            for _ in range(100):
                if self.acknowledge:
                    self.writer.acknowledge_all()
                self.clock.advance(0.1)
        return self.successResultOf(result), out.getvalue(), err.getvalue()

    def test_handedToTheServer(self) -> None:
        """
        The server decodes and writes them: the same points as a replay by
        the tool; its station book has the station; all delivered: 0.
        """
        settings = SimpleNamespace(
            profiles=parse_devices(reference_devices_toml(**{"1": "balcony", "7": "shed"}))
        )
        file = JournalFile(self.directory)
        expected = [
            cli.points_for(q, settings, LineEncoder()).lines for q in file.quarantined()[:2]
        ]
        file.close()
        code, _, err = self.replay("--reason", "unknown_device")
        self.assertEqual(self.signals, [(os.getpid(), signal.SIGHUP)])
        self.assertEqual(
            err,
            f"Replayed 2 packets into InfluxDB through the server running on "
            f"{self.directory} (pid {os.getpid()}); 0 stay in quarantine.\n",
        )
        self.assertEqual(code, 0)
        self.assertEqual([lines for lines, _ in self.writer.writes][1:], expected)
        self.assertEqual(self.book.get(7).packets, 2)
        self.assertEqual(self.pipeline.stats.packets_replayed, 2)
        self.assertEqual(journal_status(self.directory).quarantined, 1)

    def test_someStay(self) -> None:
        code, _, err = self.replay()
        self.assertEqual(code, 1)
        self.assertIn("Replayed 2 packets into InfluxDB through the server", err)
        self.assertIn("1 stays in quarantine", err)
        self.assertIn("  packet 4: truncated: ", err)

    def test_waitingForInfluxDB(self) -> None:
        """Handed over, InfluxDB not answering: safe in the journal, said so; 1."""
        self.acknowledge = False
        code, _, err = self.replay("--reason", "unknown_device", "--timeout", "3")
        self.assertEqual(code, 1)
        self.assertIn(
            "Replayed 0 packets into InfluxDB through the server running on "
            f"{self.directory} (pid {os.getpid()}); 0 stay in quarantine; 2 handed to it, "
            "waiting for InfluxDB in its journal (safe there).\n",
            err,
        )
        self.assertEqual(journal_status(self.directory).pending, 3)

    def test_serverDoesNotTakeThem(self) -> None:
        """An older server, say: one line within seconds; the requests stay."""
        code, _, err = self.replay("--timeout", "300", signal_server=lambda *_: None)
        self.assertEqual(code, 1)
        self.assertEqual(
            err,
            f"The server running on {self.directory} (pid {os.getpid()}) did not "
            "take up the replay within 5 s (an older version, or one whose "
            "packets wait for its clock, --clock-sync: see its log): the 3 "
            "packets stay in the journal, "
            "marked replay-requested, and it takes them up at its next start or "
            "SIGHUP.\n",
        )
        self.assertEqual(
            {q.quarantine.reason for q in journal_quarantined(self.directory)},
            {"replay-requested"},
        )

    def test_cannotSignal(self) -> None:
        def refuse(pid: int, signum: int) -> None:
            raise PermissionError(1, "Operation not permitted")

        code, _, err = self.replay("--id", "1", signal_server=refuse)
        self.assertEqual(code, 1)
        self.assertIn(
            f"cannot signal the server running on {self.directory} (pid {os.getpid()}): "
            "Operation not permitted; the 1 packet stays in the journal",
            err,
        )
        self.assertEqual(journal_status(self.directory).quarantined, 3)

    def test_ownOptionsNotUsed(self) -> None:
        devices = self.devices_file(**{"7": "elsewhere"})
        code, _, err = self.replay(
            "--reason",
            "unknown_device",
            "--devices",
            devices,
            "--influx-url",
            "http://127.0.0.1:1",
        )
        self.assertEqual(code, 0)
        self.assertTrue(
            err.startswith(
                f"The server running on {self.directory} (pid {os.getpid()}) uses its "
                "own devices file and InfluxDB options (SIGHUP makes it re-read "
                "its --devices or --config file): --devices, --influx-url not used.\n"
            ),
            err,
        )
        self.assertIn(b"place=shed", self.writer.writes[1][0][0])

    def test_dryRunStaysHere(self) -> None:
        devices = self.devices_file(**{"7": "shed"})
        code, out, _ = self.replay("--dry-run", "--devices", devices)
        self.assertEqual((code, self.signals), (0, []))
        self.assertIn("Packet 1: device 7 (place=shed)", out)
        self.assertEqual(self.pipeline.stats.packets_replayed, 0)
