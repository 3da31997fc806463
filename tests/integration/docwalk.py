"""
A page's shell blocks run as written: what the tests that walk a page
(docs/raspberry-pi.md, README.md) share.

Every C{```sh} block of such a page has a marker on the line before it:

    <!-- test: run -->                              run here, as written
    <!-- test: skip (REASON) -->                    not here
    <!-- test: skip (REASON), instead: NAME -->     not here; the test does NAME
    <!-- test: KIND -->                             the page's test says what KIND is
    <!-- test: KIND, needs TOOL -->                  only where TOOL is installed

Each block runs with C{bash -euo pipefail} in a scratch directory, after
L{substitute} made it name free ports and the scratch directory's system
roots instead of the machine's; it must exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from tests.support import ROOT

#: The system's directories a page writes to, each made a scratch directory.
SYSTEM = ("etc", "opt", "var", "run", "usr/local", "root", "srv", "mnt", "media")
#: The absolute paths outside the scratch directory a block may name.
ALLOWED = ("/dev/null", "/dev/urandom", "/bin/sh")
MARKER = re.compile(
    r"<!-- test: (?:([a-z ]+?)(?:, needs ([a-z-]+))?"
    r"|skip \(([^)]+)\)(?:, instead: ([a-z-]+))?) -->"
)
#: An absolute path in a shell block (not a URL's //, not a sed expression's /.../).
ABSOLUTE = r"(?<![\w.~$}:/\\-])/"
TIMEOUT = 900


@dataclass(frozen=True)
class Block:
    line: int
    #: C{run}, another kind the page's test knows, or None: skipped.
    kind: str | None
    #: The command the block needs (a test without it is skipped, or fails under CI).
    needs: str | None
    reason: str | None
    instead: str | None
    text: str

    @property
    def run(self) -> bool:
        return self.kind == "run"


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def blocks(page: str, name: str) -> list[Block]:
    """
    The page's shell blocks with their markers (C{name}: the page's, for messages).

    @raise AssertionError: a block has no marker, or a marker no block.
    """
    lines = page.splitlines()
    found: list[Block] = []
    for number, line in enumerate(lines):
        marker = MARKER.fullmatch(line.strip())
        if line.strip() == "```sh":
            above = MARKER.fullmatch(lines[number - 1].strip()) if number else None
            if above is None:
                raise AssertionError(f"{name}:{number + 1}: no test marker")
            end = lines.index("```", number + 1)
            kind, needs, reason, instead = above.groups()
            text = "\n".join(lines[number + 1 : end]) + "\n"
            found.append(Block(number + 1, kind, needs, reason, instead, text))
        elif marker and (number + 1 >= len(lines) or lines[number + 1] != "```sh"):
            raise AssertionError(f"{name}:{number + 1}: a marker without a block")
    return found


def copy_source(destination: str) -> None:
    """This source tree, as C{git clone} would give it, at C{destination}."""
    ignored = [
        line.strip().rstrip("/")
        for line in read(os.path.join(ROOT, ".gitignore")).splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    shutil.copytree(
        ROOT,
        destination,
        symlinks=True,
        ignore=shutil.ignore_patterns(".git", *ignored),
    )


def shim(bin_dir: str, name: str, *lines: str) -> None:
    """A command C{name} in C{bin_dir}: a shell script of C{lines}."""
    path = os.path.join(bin_dir, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + "\n".join(lines) + "\n")
    os.chmod(path, 0o755)


def substitute(text: str, scratch: str, ports: dict[int, int]) -> str:
    """
    C{text} with each of C{ports}' numbers replaced by its free port and the
    system roots (L{SYSTEM}) moved into C{scratch}; C{install}'s C{-o USER -g
    GROUP} dropped (no such user here, no root needed).

    @raise AssertionError: it still names an absolute path outside C{scratch}
        but L{ALLOWED}: a later edit of the page must not touch the machine
        running the test.
    """
    for port, here in ports.items():
        text = re.sub(rf"(?<!\d){port}(?!\d)", str(here), text)
    roots = "|".join(re.escape(root) for root in SYSTEM)
    text = re.sub(rf"{ABSOLUTE}(?=(?:{roots})(?:/|\b))", lambda _: scratch + "/", text)
    text = re.sub(r"(\binstall\b.*?) -o \S+ -g \S+", r"\1", text)
    for path in re.findall(rf"{ABSOLUTE}[\w.*-]+(?:/[\w.*-]*)*", text):
        if not path.startswith(scratch + "/") and path not in ALLOWED:
            raise AssertionError(f"the test would touch {path}:\n{text}")
    return text


def run_script(
    testcase: Any, where: str, script: str, cwd: str, environ: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """C{script} run by C{bash -euo pipefail}; the test fails unless it exits 0."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    testcase.assertEqual(
        done.returncode,
        0,
        f"{where} exited {done.returncode}:\n{script}\n"
        f"--- output:\n{done.stdout[-3000:]}\n--- errors:\n{done.stderr[-3000:]}",
    )
    return done
