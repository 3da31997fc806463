"""
The layers of C{weather/}: each imports only from the layers below it.

    core ← journal ← server ← ops ← app ← tools

(../shared/DESIGN.md, "A layout that shows it"; README, "Layout").  The
check reads the source, so an import inside a function or under
C{TYPE_CHECKING} counts as much as one at the top.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

import weather

#: Lowest first: a layer may import from itself and from the ones before it.
LAYERS = ("core", "journal", "server", "ops", "app", "tools")


def layer_of(module: str) -> str | None:
    """C{weather.server.pipeline} -> C{server}; None outside the layers."""
    parts = module.split(".")
    if parts[0] != "weather" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return parts[1]


def imported_modules(source: str, module: str) -> Iterator[tuple[int, str]]:
    """Each module C{source} (the text of C{module}) imports, with its line."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from ..app import tap
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}".rstrip(".")
            if layer_of(base) is not None:
                yield node.lineno, base
            else:  # from weather import ops
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"


def violations(sources: dict[str, str]) -> list[str]:
    """
    Every import of a higher layer, as C{module:line imports other (a -> b)};
    C{sources} maps module names to their text.
    """
    found = []
    for module, source in sorted(sources.items()):
        mine = layer_of(module)
        if mine is None:
            continue
        for line, other in imported_modules(source, module):
            theirs = layer_of(other)
            if theirs is not None and LAYERS.index(theirs) > LAYERS.index(mine):
                found.append(f"{module}:{line} imports {other} ({mine} -> {theirs})")
    return sorted(set(found))


#: What the pure core may not use: I/O, clocks, threads, the reactor.
IMPURE = frozenset(
    ("os", "io", "time", "socket", "select", "sqlite3", "subprocess", "threading")
    + ("asyncio", "twisted", "treq", "zope", "pathlib", "shutil", "tempfile")
)


def impurities(source: str) -> list[str]:
    """What in a core module's C{source} reaches outside it: imports, open()."""
    found = [
        f"{line}: imports {name}"
        for line, name in imported_modules(source, "weather.core.x")
        if name.split(".")[0] in IMPURE
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
            found.append(f"{node.lineno}: calls open()")
    return found


def package_sources() -> dict[str, str]:
    """The text of every module of the installed C{weather} package, by name."""
    root = os.path.dirname(os.path.abspath(weather.__file__))
    sources = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, os.path.dirname(root))[:-3]
                module = relative.replace(os.sep, ".").removesuffix(".__init__")
                with open(path, encoding="utf-8") as f:
                    sources[module] = f.read()
    return sources


class LayerTests(SynchronousTestCase):
    def test_everyModuleInALayer(self) -> None:
        """Nothing lives beside the layers but the package's own __init__."""
        loose = [
            module
            for module in package_sources()
            if module != "weather" and layer_of(module) is None
        ]
        self.assertEqual(loose, [])

    def test_eachLayerImportsOnlyBelow(self) -> None:
        self.assertEqual(violations(package_sources()), [])

    def test_coreIsPure(self) -> None:
        """The core reads no file, clock or socket: callers pass all it needs."""
        found = {
            module: impurities(source)
            for module, source in package_sources().items()
            if layer_of(module) == "core" and impurities(source)
        }
        self.assertEqual(found, {})

    def test_impurityCaught(self) -> None:
        source = "import time\nfrom os import path\ndef f(p):\n    return open(p)\n"
        self.assertEqual(
            impurities(source),
            ["1: imports time", "2: imports os.path", "4: calls open()"],
        )

    def test_violationCaught(self) -> None:
        """The check sees an upward import, in every form it can take."""
        sources = {
            "weather.core.packet": "from weather.server.pipeline import X\n",
            "weather.journal.store": "def f():\n    import weather.ops.metrics\n",
            "weather.server.pipeline": "from weather.ops import stations\n",
            "weather.ops.web": "from ..app import tap\n",
            "weather.app.tap": "from weather.server.service import S\nimport os\n",
            "weather.tools.cli": "from weather.app.settings import Options\n",
            "weather.tools.simulate": "from weather import core, tools\n",
            "weather.core.devices": "from weather import __version__\n",
        }
        self.assertEqual(
            violations(sources),
            [
                "weather.core.packet:1 imports weather.server.pipeline (core -> server)",
                "weather.journal.store:2 imports weather.ops.metrics (journal -> ops)",
                "weather.ops.web:1 imports weather.app (ops -> app)",
                "weather.server.pipeline:1 imports weather.ops (server -> ops)",
            ],
        )
