"""Design rules from DESIGN.md, checked on the source tree with `ast` (nothing is imported).

How it works: each rule picks a set of files by glob, parses them, and walks every node. Imports
are read from `import x`, `from x import y` (absolute only: a relative `from .time import x` names a
sibling module, not the stdlib) and from calls with a constant module name
(`importlib.import_module("x")`, `__import__("x")`). Imports inside functions and under
`if TYPE_CHECKING:` count too. A violation names file, line and what broke the rule.

Rules:
  (a) sans-IO cores never import I/O, clocks, randomness or concurrency (DESIGN: "Sans-IO cores,
      thin drivers"): time and randomness are passed in, drivers do the sockets and timers;
  (b) `exporters` and `sd` depend on `appliance`, never the reverse (DESIGN: Layout);
  (c) no `raise NotImplementedError` in shipped packages: a feature exists or it is not there.

The last tests run the same scanner on synthetic sources and trees, so a scanner that can no
longer see a violation fails here instead of passing silently.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (a) Modules the sans-IO rule covers, relative to the repository root. Packages that are all core
# are globbed whole; packages that mix a core with its drivers are globbed whole minus the driver
# modules listed in DRIVER_PREFIXES.
SANS_IO_WHOLE = (
    "appliance/state/**/*.py",
    "appliance/filter/**/*.py",
    "appliance/checks/rules*.py",
    "appliance/dns/answers*.py",
    "appliance/dns/names*.py",
    "appliance/rpc/frames.py",
)
SANS_IO_MIXED = (
    "appliance/raft/**/*.py",
    "appliance/gossip/**/*.py",
)
# Module-name prefixes inside SANS_IO_MIXED packages that do I/O on purpose.
DRIVER_PREFIXES = ("driver", "transport", "storage", "wal")

FORBIDDEN_IN_SANS_IO = frozenset(
    {
        "asyncio",
        "anyio",
        "aiohttp",
        "socket",
        "time",
        "random",
        "trio",
        "subprocess",
        "threading",
    }
)

# (b) Top-level packages that `appliance` must not import.
FORBIDDEN_IN_APPLIANCE = frozenset({"exporters", "sd"})

# (c) Packages where `raise NotImplementedError` is not allowed.
SHIPPED_PACKAGES = ("appliance", "exporters", "sd")

DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every absolute module name the tree imports, with its line number."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (
                name in DYNAMIC_IMPORTERS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and not node.args[0].value.startswith(".")
            ):
                found.append((node.lineno, node.args[0].value))
    return found


def forbidden_imports(source: str, forbidden: frozenset[str], path: str = "<string>") -> list[Violation]:
    """Imports in `source` whose top-level package is in `forbidden`."""
    tree = ast.parse(source, filename=path)
    return [
        Violation(path, line, f"imports {module!r}")
        for line, module in imported_modules(tree)
        if module.split(".")[0] in forbidden
    ]


def raised_not_implemented(source: str, path: str = "<string>") -> list[Violation]:
    """`raise NotImplementedError` and `raise NotImplementedError(...)` statements."""
    tree = ast.parse(source, filename=path)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        name = exc.attr if isinstance(exc, ast.Attribute) else getattr(exc, "id", None)
        if name == "NotImplementedError":
            found.append(Violation(path, node.lineno, "raises NotImplementedError"))
    return found


def _is_driver(path: Path) -> bool:
    return path.stem.startswith(DRIVER_PREFIXES)


def sans_io_files(root: Path) -> list[Path]:
    files: set[Path] = set()
    for pattern in SANS_IO_WHOLE:
        files.update(root.glob(pattern))
    for pattern in SANS_IO_MIXED:
        files.update(p for p in root.glob(pattern) if not _is_driver(p))
    return sorted(p for p in files if p.is_file())


def package_files(root: Path, packages: tuple[str, ...]) -> list[Path]:
    return sorted(p for pkg in packages for p in (root / pkg).glob("**/*.py") if p.is_file())


def _scan(root: Path, files: list[Path], check) -> list[Violation]:
    violations: list[Violation] = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        violations.extend(check(path.read_text(encoding="utf-8"), rel))
    return violations


def check_sans_io(root: Path) -> list[Violation]:
    return _scan(root, sans_io_files(root), lambda src, rel: forbidden_imports(src, FORBIDDEN_IN_SANS_IO, rel))


def check_dependency_direction(root: Path) -> list[Violation]:
    return _scan(
        root,
        package_files(root, ("appliance",)),
        lambda src, rel: forbidden_imports(src, FORBIDDEN_IN_APPLIANCE, rel),
    )


def check_no_not_implemented(root: Path) -> list[Violation]:
    return _scan(root, package_files(root, SHIPPED_PACKAGES), raised_not_implemented)


def _report(violations: list[Violation]) -> str:
    return "\n".join(str(v) for v in violations)


# --- the rules on the real tree ------------------------------------------------------------------


def test_sans_io_rule_covers_something():
    # If the layout is renamed and the globs match nothing, rule (a) would pass vacuously.
    assert sans_io_files(ROOT), "no sans-IO modules matched; update the globs in test_layout.py"


def test_sans_io_cores_import_no_io():
    # DESIGN: sans-IO cores never import anyio, aiohttp, asyncio, socket, time or random.
    violations = check_sans_io(ROOT)
    assert not violations, "sans-IO module imports I/O or a clock:\n" + _report(violations)


def test_appliance_does_not_import_exporters_or_sd():
    # DESIGN: `exporters` and `sd` depend on `appliance`, never the reverse.
    violations = check_dependency_direction(ROOT)
    assert not violations, "appliance imports exporters/sd:\n" + _report(violations)


def test_no_not_implemented_error():
    violations = check_no_not_implemented(ROOT)
    assert not violations, "NotImplementedError in shipped code:\n" + _report(violations)


# --- the scanner can fail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import time\n",
        "import asyncio.subprocess\n",
        "from random import Random\n",
        "import os, socket\n",
        "def f():\n    import anyio\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trio\n",
        "import importlib\nimportlib.import_module('threading')\n",
        "__import__('subprocess')\n",
    ],
)
def test_scanner_finds_forbidden_import(source):
    found = forbidden_imports(source, FORBIDDEN_IN_SANS_IO)
    assert len(found) == 1, found


@pytest.mark.parametrize(
    "source",
    [
        "import os\nimport dataclasses\n",
        "from . import time\n",  # a sibling module called `time`, not the stdlib
        "from .random_source import Seeded\n",
        "import timeit_like_name_is_not_time\n",
        "x = 'import time'\n",
    ],
)
def test_scanner_allows_clean_source(source):
    assert forbidden_imports(source, FORBIDDEN_IN_SANS_IO) == []


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    raise NotImplementedError\n",
        "def f():\n    raise NotImplementedError('later')\n",
        "import builtins\nraise builtins.NotImplementedError()\n",
    ],
)
def test_scanner_finds_not_implemented(source):
    assert len(raised_not_implemented(source)) == 1


def test_scanner_allows_not_implemented_constant():
    source = "class A:\n    def __eq__(self, other):\n        return NotImplemented\n"
    assert raised_not_implemented(source) == []


def test_rules_fail_on_a_synthetic_tree(tmp_path):
    def write(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    write("appliance/state/store.py", "import time\n")
    write("appliance/raft/core.py", "from asyncio import sleep\n")
    write("appliance/raft/driver.py", "import anyio\n")  # a driver may do I/O
    write("appliance/dns/answers.py", "import os\n")
    write("appliance/http/app.py", "import aiohttp\nfrom exporters.raft import collect\n")
    write("exporters/raft.py", "import appliance\n")  # the allowed direction
    write("sd/targets.py", "def build():\n    raise NotImplementedError\n")

    sans_io = {(v.path, v.what) for v in check_sans_io(tmp_path)}
    assert sans_io == {
        ("appliance/state/store.py", "imports 'time'"),
        ("appliance/raft/core.py", "imports 'asyncio'"),
    }
    direction = check_dependency_direction(tmp_path)
    assert [(v.path, v.line) for v in direction] == [("appliance/http/app.py", 2)]
    not_impl = check_no_not_implemented(tmp_path)
    assert [(v.path, v.line) for v in not_impl] == [("sd/targets.py", 2)]
