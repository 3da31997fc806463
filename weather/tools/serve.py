"""
C{weather serve}: the server in the foreground, for installs without
C{twistd} on PATH (C{pipx install} exposes only the C{weather} command).

It is C{twistd --nodaemon --pidfile= weather ...}, not a copy of it: twistd's
own options and runner (L{twisted.scripts.twistd}) load the same plugin with
the same options, log to standard output (or to C{--logfile}), and handle
the same signals: SIGTERM and SIGINT stop cleanly, SIGHUP re-reads the
devices file, SIGUSR1 rotates the log file; a process stopped by a signal
ends by that signal, as twistd's does.
"""

from __future__ import annotations

import getopt
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.python import usage

from weather.app.options import Options

#: C{weather serve}'s one option of twistd's own.
LOGFILE_HELP = (
    "Log to this file instead of standard output (twistd's --logfile; "
    "--log-max-bytes and --log-keep rotate it, SIGUSR1 too)."
)


class ServeOptions(Options):
    """The server's options (C{twistd weather}'s), and twistd's --logfile."""

    synopsis = "[--logfile FILE] [server options]"
    longdesc = (
        "Run the server in the foreground, exactly as 'twistd --nodaemon "
        "--pidfile= weather' does with these options: for installs without "
        "twistd on PATH, such as pipx's. SIGTERM or Ctrl-C stops it cleanly, "
        "SIGHUP re-reads the devices file. " + Options.longdesc
    )

    def __init__(self) -> None:
        super().__init__()
        self["logfile"] = None
        #: The server's options as given, for twistd (--logfile left out).
        self.server_arguments: list[str] = []

    def opt_logfile(self, path: str) -> None:
        self["logfile"] = path

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        given = list(sys.argv[1:] if options is None else options)
        super().parseOptions(given)
        # Parsed above: getopt finds the same options again, without error.
        found, _ = getopt.getopt(given, self.shortOpt, self.longOpt)
        server = [(option, value) for option, value in found if option != "--logfile"]
        self.server_arguments = command_line(self, server)

    def twistd_arguments(self) -> list[str]:
        """twistd's command line for these options."""
        logfile = ["--logfile", self["logfile"]] if self["logfile"] is not None else []
        return ["--nodaemon", "--pidfile=", *logfile, "weather", *self.server_arguments]

    def getUsage(self, width: int | None = None) -> str:
        row = {"long": "logfile", "doc": LOGFILE_HELP, "optType": "parameter"}
        return (
            "\nLog:\n"
            + "".join(usage.docMakeChunks([row], width or 80))
            + (super().getUsage(width))
        )


def command_line(options: usage.Options, found: Iterable[tuple[str, str]]) -> list[str]:
    """The options of C{options} that getopt found, as a command line again."""
    return [
        part
        for given, value in found
        for part in ((given, value) if _takes_value(options, given) else (given,))
    ]


def _takes_value(options: usage.Options, given: str) -> bool:
    """Whether the option C{given} (C{--name} or C{-x}, as getopt gives it) takes one."""
    if given.startswith("--"):
        return f"{given[2:]}=" in options.longOpt
    return f"{given[1]}:" in options.shortOpt


def serve(options: ServeOptions, run: Callable[[Any], None] | None = None) -> int:
    """
    Run twistd's runner (C{run}: L{twisted.scripts.twistd.runApp}) with
    twistd's options for C{options}; 0 once it stops.  A start-up failure
    ends the process as twistd's does (C{SystemExit} with one line), and a
    signal that stopped the server ends it by that signal.
    """
    from twisted.scripts import twistd

    config = twistd.ServerOptions()
    config.parseOptions(options.twistd_arguments())
    (twistd.runApp if run is None else run)(config)
    return 0
