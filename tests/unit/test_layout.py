"""Design rules from DESIGN.md, checked on the source tree with `ast` (nothing is imported).

How it works: each rule picks a set of files, parses them, and walks every node. Imports are read
from `import x`, `from x import y` (relative ones resolved against the importing module's
package) and from calls with a constant module name (`importlib.import_module("x")`,
`__import__("x")`). Imports inside functions and under `if TYPE_CHECKING:` count too. A violation
names file, line and what broke the rule.

Rules:
  (a) sans-IO cores (listed one by one in SANS_IO_CORES) do no I/O: they import no sockets,
      event loops, clocks, randomness, threads, processes or file-system modules, call no
      builtin `open()`, and use `os` only for its pure helpers (DESIGN: "Sans-IO cores, thin
      drivers"; time and randomness are passed in, drivers do the sockets, files and timers);
  (b) `exporters` and `sd` depend on `appliance`, never the reverse (DESIGN: Layout);
  (c) no `raise NotImplementedError` in shipped packages: a feature exists or it is not there;
  (d) no import cycle between modules of `appliance`;
  (e) no upward import in `appliance`: a module imports only from its own layer or the layers
      below it (LAYERS);
  (f) no module over MAX_MODULE_LINES lines (DESIGN: modules of 100 to 600 lines).

A known violation of (d)-(f) may be listed in KNOWN_EXCEPTIONS while a file is being rebuilt (empty
today); the list only shrinks, and an entry that no longer fails is itself an error.

The last tests run the same scanners on synthetic sources and trees, so a scanner that can no
longer see a violation fails here instead of passing silently.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (a) The sans-IO cores, one by one (a new core module is added here when it is written). A driver
# module is simply not in this list, whatever its name.
SANS_IO_CORES = (
    # Raft: the state machine and its rules by concept, its log, quorum and progress, messages,
    # autopilot's rules, metrics names, the snapshot archive format (built and read in memory),
    # the host around the core (Ready handling, proposals, reads, apply) and the storage protocol.
    "appliance/raft/__init__.py",
    "appliance/raft/core.py",
    "appliance/raft/log.py",
    "appliance/raft/quorum.py",
    "appliance/raft/progress.py",
    "appliance/raft/messages.py",
    "appliance/raft/config.py",
    "appliance/raft/core_state.py",
    "appliance/raft/elections.py",
    "appliance/raft/replication.py",
    "appliance/raft/read_index.py",
    "appliance/raft/leadership.py",
    "appliance/raft/autopilot.py",
    "appliance/raft/metrics.py",
    "appliance/raft/archive.py",
    "appliance/raft/host.py",
    "appliance/raft/durable.py",
    # Gossip: SWIM/Lifeguard (the core dispatching to its parts: shared context, member table,
    # transitions, probe cycle, dissemination, push-pull), Serf, the wire format, the keyring
    # (its file is keyring_file.py).
    "appliance/gossip/__init__.py",
    "appliance/gossip/core.py",
    "appliance/gossip/context.py",
    "appliance/gossip/member_table.py",
    "appliance/gossip/transitions.py",
    "appliance/gossip/probe.py",
    "appliance/gossip/dissemination.py",
    "appliance/gossip/push_pull.py",
    "appliance/gossip/serf_members.py",
    "appliance/gossip/outputs.py",
    "appliance/gossip/messages.py",
    "appliance/gossip/broadcast.py",
    "appliance/gossip/suspicion.py",
    "appliance/gossip/awareness.py",
    "appliance/gossip/config.py",
    "appliance/gossip/coordinate.py",
    "appliance/gossip/serf.py",
    "appliance/gossip/members.py",
    "appliance/gossip/lamport.py",
    "appliance/gossip/keyring.py",
    "appliance/gossip/snapshot.py",
    "appliance/gossip/user_events.py",
    "appliance/gossip/queries.py",
    "appliance/gossip/coalesce.py",
    "appliance/gossip/serf_internal.py",
    "appliance/gossip/serf_queries.py",
    # The state store, FSM and commands, watch keys, snapshots.
    "appliance/state/*.py",
    # DNS names and answers (the server is dns/server.py).
    "appliance/dns/__init__.py",
    "appliance/dns/names.py",
    "appliance/dns/answers.py",
    "appliance/dns/answers_wire.py",
    "appliance/dns/plans.py",
    # The filter language, check status rules, Consul's API shapes, server RPC frames.
    "appliance/filter/*.py",
    "appliance/checks/rules.py",
    "appliance/api/*.py",
    "appliance/rpc/frames.py",
    # Prepared queries: definitions, templates, resolution and the execute filter.
    "appliance/queries/*.py",
    # Watch plans: definitions, endpoints and when a handler fires.
    "appliance/watches/plan.py",
    # The ACL rules language, decisions, built-in objects and token resolution.
    "appliance/acl/*.py",
    # Connect: the CA, SPIFFE identities, the leaf cache, config entries and intentions.
    "appliance/connect/__init__.py",
    "appliance/connect/ca.py",
    "appliance/connect/spiffe.py",
    "appliance/connect/authority.py",
    "appliance/connect/leaf.py",
    "appliance/connect/entries.py",
    "appliance/connect/intentions.py",
    "appliance/connect/chain.py",
    "appliance/connect/central.py",
    # Values the cores share.
    "appliance/config/durations.py",
    "appliance/config/hcl.py",
    "appliance/local/definitions.py",
    "appliance/local/mesh.py",
    # consul-template's language: lexer, parser, executor, Go's value formatting, time layouts.
    "appliance/template/lexer.py",
    "appliance/template/parse.py",
    "appliance/template/execute.py",
    "appliance/template/gofmt.py",
    "appliance/template/timefmt.py",
    "appliance/template/config.py",
)
# appliance/cloud/ is not here: its parsers live beside the calls that fetch what they parse.

FORBIDDEN_IN_SANS_IO = frozenset(
    {
        "asyncio",
        "anyio",
        "trio",
        "aiohttp",
        "socket",
        "ssl",
        "select",
        "selectors",
        "http",
        "urllib",
        "time",
        "random",
        "secrets",
        "threading",
        "multiprocessing",
        "concurrent",
        "subprocess",
        "signal",
        "shutil",
        "tempfile",
        "pathlib",
        "glob",
    }
)
# What a core may use of `os`: pure helpers only (no files, environment, processes or clocks).
OS_PURE = frozenset({"path", "sep", "fspath", "strerror", "PathLike"})
OS_PATH_PURE = frozenset({"join", "basename", "dirname", "split", "splitext", "normpath"})
FORBIDDEN_BUILTINS = frozenset({"open", "input"})
# Uses of `os` outside OS_PURE that a core needs, each with its reason.
SANS_IO_ALLOWED = {
    # AES-GCM nonces must never repeat, so they come from the OS, never from a seeded generator
    # (keyring.py's docstring); tests inject `nonce_source`.
    ("appliance/gossip/keyring.py", "os.urandom"),
}

# (b) Top-level packages that `appliance` must not import.
FORBIDDEN_IN_APPLIANCE = frozenset({"exporters", "sd"})

# (c) Packages where `raise NotImplementedError` is not allowed.
SHIPPED_PACKAGES = ("appliance", "exporters", "sd")

# (e) The layers of `appliance`, bottom first. A module belongs to the layer of the longest
# prefix below that names it (a package name covers its modules); it may import from its own
# layer and the layers under it, never from a layer above. `exporters` and `sd` sit above all of
# these (rule (b)).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Values: the version, Consul's JSON shapes and Go's decoding rules, the filter language,
    # durations, service and check definitions. They know nothing of any subsystem.
    (
        "values",
        (
            "appliance",
            "appliance.logs",
            "appliance.api",
            "appliance.filter",
            "appliance.config.durations",
            "appliance.config.errors",
            "appliance.config.hcl",
            "appliance.local.definitions",
            "appliance.local.mesh",
            "appliance.template",
        ),
    ),
    # Sans-IO cores: protocols and data as pure state machines.
    (
        "cores",
        (
            "appliance.state",
            "appliance.acl",
            "appliance.raft",
            "appliance.gossip",
            "appliance.dns",
            "appliance.queries",
            "appliance.checks.rules",
            "appliance.rpc.frames",
            "appliance.connect",
        ),
    ),
    # Configuration: files, flags, cloud metadata, the frozen RuntimeConfig the drivers receive.
    ("config", ("appliance.config", "appliance.cloud")),
    # Drivers and subsystems: sockets, files, timers and tasks around the cores.
    (
        "drivers",
        (
            "appliance.raft.driver",
            "appliance.raft.driver_autopilot",
            "appliance.raft.transport",
            "appliance.raft.storage",
            "appliance.gossip.driver",
            "appliance.gossip.pool_setup",
            "appliance.gossip.key_manager",
            "appliance.gossip.snapshot_file",
            "appliance.gossip.keyring_file",
            "appliance.gossip.transport",
            "appliance.rpc",
            "appliance.tls",
            "appliance.client",
            "appliance.federation",
            "appliance.local",
            "appliance.checks",
            "appliance.interfaces",
            "appliance.seams",
            "appliance.lifecycle",
            "appliance.coordinates",
            "appliance.events",
            "appliance.rexec",
            "appliance.reconcile",
            "appliance.watch",
            "appliance.watches",
            "appliance.locks",
            "appliance.telemetry",
            "appliance.sdnotify",
            "appliance.template.runner",
            "appliance.template.output",
            "appliance.sessions",
            "appliance.acl_leader",
            "appliance.acl_replication",
            "appliance.connect.proxy",
        ),
    ),
    # The edges users talk to: the HTTP API and the DNS server.
    ("edges", ("appliance.http", "appliance.dns.server")),
    # The composition root.
    ("root", ("appliance.agent", "appliance.server")),
    # The command line, which runs the agent or talks to one over HTTP.
    ("cli", ("appliance.cli", "appliance.__main__")),
)

# (f)
MAX_MODULE_LINES = 600

# Known violations of (d)-(f) in files other work is rebuilding now. Each is ("rule", "what"),
# "what" as the rule names it; the test fails on anything not listed here and on any entry that
# no longer happens, so the list can only shrink.
KNOWN_EXCEPTIONS: frozenset[tuple[str, str]] = frozenset()  # none: every rule holds everywhere

DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def module_name(rel: str) -> str:
    """`appliance/raft/core.py` -> `appliance.raft.core`; a package's `__init__` is the package."""
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_statements(tree: ast.AST, importer: str = "", is_package: bool = False) -> list[tuple[int, str, list[str]]]:
    """Every import in the tree as (line, module, names): `import x` is (line, "x", []),
    `from x import y, z` is (line, "x", ["y", "z"]). Relative imports are resolved against
    `importer` (a dotted module name) when it is given and skipped otherwise."""
    package = importer if is_package else importer.rpartition(".")[0]
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            elif importer:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                continue
            found.append((node.lineno, base, [a.name for a in node.names if a.name != "*"]))
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
                found.append((node.lineno, node.args[0].value, []))
    return found


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every absolute module name the tree imports, with its line number."""
    return [(line, module) for line, module, _ in import_statements(tree) if module]


def forbidden_imports(source: str, forbidden: frozenset[str], path: str = "<string>") -> list[Violation]:
    """Absolute imports in `source` whose top-level package is in `forbidden`."""
    tree = ast.parse(source, filename=path)
    seen: set[tuple[int, str]] = set()
    found = []
    for line, module in imported_modules(tree):
        top = module.split(".")[0]
        if top in forbidden and (line, top) not in seen:
            seen.add((line, top))
            found.append(Violation(path, line, f"imports {top!r}"))
    return found


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def sans_io_violations(source: str, path: str = "<string>") -> list[Violation]:
    """Rule (a) on one source: forbidden imports, builtin `open()`/`input()`, impure `os`."""
    tree = ast.parse(source, filename=path)
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child._parent = node  # so `os.path.join` is read whole
    found = forbidden_imports(source, FORBIDDEN_IN_SANS_IO, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_BUILTINS:
            found.append(Violation(path, node.lineno, f"calls {node.func.id}()"))
        elif isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent", None), ast.Attribute):
            dotted = _dotted(node)
            if not dotted or not dotted.startswith("os."):
                continue
            parts = dotted.split(".")
            name = ".".join(parts[:3] if parts[1] == "path" and len(parts) > 2 else parts[:2])
            pure = parts[1] in OS_PURE and (parts[1] != "path" or len(parts) == 2 or parts[2] in OS_PATH_PURE)
            if not pure and (path, name) not in SANS_IO_ALLOWED:
                found.append(Violation(path, node.lineno, f"uses {name}"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in ("os", "os.path"):
            allowed = OS_PURE if node.module == "os" else OS_PATH_PURE
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if alias.name not in allowed and (path, name) not in SANS_IO_ALLOWED:
                    found.append(Violation(path, node.lineno, f"imports {name}"))
    return found


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


def sans_io_files(root: Path) -> list[Path]:
    files: set[Path] = set()
    for pattern in SANS_IO_CORES:
        files.update(root.glob(pattern))
    return sorted(p for p in files if p.is_file())


def package_files(root: Path, packages: tuple[str, ...]) -> list[Path]:
    return sorted(p for pkg in packages for p in (root / pkg).glob("**/*.py") if p.is_file())


def _scan(root: Path, files: list[Path], check: Callable[[str, str], list[Violation]]) -> list[Violation]:
    violations: list[Violation] = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        violations.extend(check(path.read_text(encoding="utf-8"), rel))
    return violations


def check_sans_io(root: Path) -> list[Violation]:
    return _scan(root, sans_io_files(root), sans_io_violations)


def check_dependency_direction(root: Path) -> list[Violation]:
    return _scan(
        root,
        package_files(root, ("appliance",)),
        lambda src, rel: forbidden_imports(src, FORBIDDEN_IN_APPLIANCE, rel),
    )


def check_no_not_implemented(root: Path) -> list[Violation]:
    return _scan(root, package_files(root, SHIPPED_PACKAGES), raised_not_implemented)


# --- (d) and (e): the import graph of `appliance` ----------------------------------------------


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    path: str
    line: int


def import_graph(root: Path, package: str = "appliance") -> tuple[dict[str, str], list[Edge]]:
    """The modules of `package` (name -> path) and the imports between them. An import names the
    longest module that exists (`from appliance.raft import core` is appliance.raft.core;
    `from appliance.raft.core import RaftCore` is appliance.raft.core)."""
    modules = {module_name(p.relative_to(root).as_posix()): p.relative_to(root).as_posix()
               for p in package_files(root, (package,))}
    edges: dict[tuple[str, str], Edge] = {}
    for name, rel in modules.items():
        tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=rel)
        for line, base, names in import_statements(tree, name, rel.endswith("__init__.py")):
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            # `from pkg import mod` imports mod; `from pkg import Name` imports pkg.
            targets = submodules + ([base] if len(submodules) < len(names) or not names else [])
            for imported in targets:
                target = imported
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and (name, target) not in edges:
                    edges[(name, target)] = Edge(name, target, rel, line)
    return modules, list(edges.values())


def import_cycles(modules: Iterable[str], edges: list[Edge]) -> list[list[str]]:
    """Each strongly connected set of modules, as one cycle through it starting at its smallest
    name (Tarjan's algorithm, then a shortest way back within the set)."""
    graph: dict[str, list[str]] = {m: [] for m in modules}
    for e in edges:
        graph[e.importer].append(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in sorted(components):
        members = set(component)
        start = component[0]
        # breadth-first from start back to start inside the component
        paths = {w: [start, w] for w in graph[start] if w in members}
        frontier = list(paths)
        while start not in paths and frontier:
            nxt = []
            for v in frontier:
                for w in graph[v]:
                    if w in members and w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
            frontier = nxt
        cycles.append(paths.get(start, component))
    return cycles


ROOT_PACKAGE = "appliance"  # in LAYERS it names the package's __init__ only, not everything under it


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for level, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            covers = module == prefix or (module.startswith(prefix + ".") and prefix != ROOT_PACKAGE)
            if covers and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    return best


def check_cycles(root: Path) -> list[Violation]:
    modules, edges = import_graph(root)
    return [
        Violation(modules[cycle[0]], 0, "cycle " + " -> ".join(cycle))
        for cycle in import_cycles(modules, edges)
    ]


def check_layers(root: Path) -> list[Violation]:
    modules, edges = import_graph(root)
    found = []
    for m, rel in modules.items():
        if layer_of(m) < 0:
            found.append(Violation(rel, 0, f"{m} is in no layer: add it to LAYERS"))
    for e in edges:
        low, high = layer_of(e.importer), layer_of(e.imported)
        if high > low >= 0:
            found.append(Violation(
                e.path, e.line,
                f"upward import {e.importer} ({LAYERS[low][0]}) -> {e.imported} ({LAYERS[high][0]})",
            ))
    return found


def check_module_size(root: Path) -> list[Violation]:
    found = []
    for path in package_files(root, SHIPPED_PACKAGES):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            rel = path.relative_to(root).as_posix()
            found.append(Violation(rel, lines, f"size {lines} lines > {MAX_MODULE_LINES}"))
    return found


def _key(rule: str, v: Violation) -> tuple[str, str]:
    return (rule, v.what.removeprefix("cycle ") if rule == "cycle" else v.path if rule == "size" else v.what)


def _report(violations: list[Violation]) -> str:
    return "\n".join(str(v) for v in violations)


def _check_with_known(rule: str, violations: list[Violation]) -> None:
    new = [v for v in violations if _key(rule, v) not in KNOWN_EXCEPTIONS]
    assert not new, f"{rule} rule broken:\n" + _report(new)


def graph_and_size_violations(root: Path) -> set[tuple[str, str]]:
    return {
        *(_key("cycle", v) for v in check_cycles(root)),
        *(_key("layer", v) for v in check_layers(root)),
        *(_key("size", v) for v in check_module_size(root)),
    }


# --- the rules on the real tree ------------------------------------------------------------------


def test_sans_io_rule_covers_every_listed_core():
    # A listed core that was renamed or removed would otherwise drop out of rule (a) silently.
    missing = [pattern for pattern in SANS_IO_CORES if not list(ROOT.glob(pattern))]
    assert not missing, f"SANS_IO_CORES names files that do not exist: {missing}"


def test_sans_io_cores_do_no_io():
    # DESIGN: sans-IO cores never import anyio, aiohttp, asyncio, socket, time or random.
    violations = check_sans_io(ROOT)
    assert not violations, "sans-IO module does I/O or reads a clock:\n" + _report(violations)


def test_appliance_does_not_import_exporters_or_sd():
    # DESIGN: `exporters` and `sd` depend on `appliance`, never the reverse.
    violations = check_dependency_direction(ROOT)
    assert not violations, "appliance imports exporters/sd:\n" + _report(violations)


def test_no_not_implemented_error():
    violations = check_no_not_implemented(ROOT)
    assert not violations, "NotImplementedError in shipped code:\n" + _report(violations)


def test_no_import_cycle_in_appliance():
    _check_with_known("cycle", check_cycles(ROOT))


def test_no_upward_import_in_appliance():
    _check_with_known("layer", check_layers(ROOT))


def test_no_module_over_600_lines():
    # DESIGN: Layout, "modules of 100 to 600 lines".
    _check_with_known("size", check_module_size(ROOT))


def test_known_exceptions_still_happen():
    # The list only shrinks: a fixed entry is taken out of KNOWN_EXCEPTIONS.
    fixed = sorted(KNOWN_EXCEPTIONS - graph_and_size_violations(ROOT))
    assert not fixed, f"no longer broken, remove from KNOWN_EXCEPTIONS in tests/unit/test_layout.py: {fixed}"


# --- the scanners can fail -----------------------------------------------------------------------


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
        "from pathlib import Path\n",
        "import urllib.request\n",
        "with open('x') as f:\n    pass\n",
        "import os\nos.replace('a', 'b')\n",
        "import os\nos.path.exists('a')\n",
        "import os\nx = os.environ.get('HOME')\n",
        "from os import fsync\n",
        "import os\nos.urandom(12)\n",
    ],
)
def test_scanner_finds_io(source):
    found = sans_io_violations(source)
    assert len(found) == 1, found


@pytest.mark.parametrize(
    "source",
    [
        "import os\nimport dataclasses\n",
        "from . import time\n",  # a sibling module called `time`, not the stdlib
        "from .random_source import Seeded\n",
        "import timeit_like_name_is_not_time\n",
        "x = 'import time'\n",
        "import os\np = os.path.join('a', os.path.basename('b'))\nm = os.strerror(2)\n",
        "import io, tarfile\ntarfile.open(fileobj=io.BytesIO(b''))\n",
        "class F:\n    def open(self):\n        return self.open()\n",
    ],
)
def test_scanner_allows_clean_source(source):
    assert sans_io_violations(source) == []


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


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_rules_fail_on_a_synthetic_tree(tmp_path):
    _write_tree(tmp_path, {
        "appliance/state/store.py": "import time\n",
        "appliance/raft/core.py": "from asyncio import sleep\n",
        "appliance/raft/driver_x.py": "import anyio\n",  # not a listed core: may do I/O
        "appliance/raft/log.py": "def save(p):\n    open(p, 'w')\n",
        "appliance/dns/answers.py": "import os\n",
        "appliance/http/app.py": "import aiohttp\nfrom exporters.raft import collect\n",
        "exporters/raft.py": "import appliance\n",  # the allowed direction
        "sd/targets.py": "def build():\n    raise NotImplementedError\n",
    })
    sans_io = {(v.path, v.what) for v in check_sans_io(tmp_path)}
    assert sans_io == {
        ("appliance/state/store.py", "imports 'time'"),
        ("appliance/raft/core.py", "imports 'asyncio'"),
        ("appliance/raft/log.py", "calls open()"),
    }
    direction = check_dependency_direction(tmp_path)
    assert [(v.path, v.line) for v in direction] == [("appliance/http/app.py", 2)]
    not_impl = check_no_not_implemented(tmp_path)
    assert [(v.path, v.line) for v in not_impl] == [("sd/targets.py", 2)]


def test_graph_rules_fail_on_a_synthetic_tree(tmp_path):
    _write_tree(tmp_path, {
        "appliance/__init__.py": "",
        "appliance/cli/__init__.py": "",
        "appliance/cli/flags.py": "def command():\n    from appliance.cli.http_client import ApiError\n",
        "appliance/cli/http_client.py": "from appliance.cli.flags import command\n",
        "appliance/config/__init__.py": "",
        "appliance/config/loader.py": "from appliance.local import sync\n",  # config -> drivers
        "appliance/local/__init__.py": "",
        "appliance/local/sync.py": "from . import state\n",
        "appliance/local/state.py": "from ..state import store\n",  # drivers -> cores: fine
        "appliance/state/__init__.py": "",
        "appliance/state/store.py": "",
        "appliance/raft/__init__.py": "",
        "appliance/raft/core.py": "from appliance.raft import driver\n",  # a core -> its driver
        "appliance/raft/driver.py": "from .core import RaftCore\n",
        "appliance/mystery.py": "",
        "appliance/agent.py": "\n" * (MAX_MODULE_LINES + 1),
    })
    cycles = {v.what for v in check_cycles(tmp_path)}
    assert cycles == {
        "cycle appliance.cli.flags -> appliance.cli.http_client -> appliance.cli.flags",
        "cycle appliance.raft.core -> appliance.raft.driver -> appliance.raft.core",
    }
    layers = {(v.path, v.what) for v in check_layers(tmp_path)}
    assert layers == {
        ("appliance/config/loader.py",
         "upward import appliance.config.loader (config) -> appliance.local.sync (drivers)"),
        ("appliance/raft/core.py",
         "upward import appliance.raft.core (cores) -> appliance.raft.driver (drivers)"),
        ("appliance/mystery.py", "appliance.mystery is in no layer: add it to LAYERS"),
    }
    sizes = [(v.path, v.line) for v in check_module_size(tmp_path)]
    assert sizes == [("appliance/agent.py", MAX_MODULE_LINES + 1)]
