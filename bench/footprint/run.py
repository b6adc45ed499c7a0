"""bench/footprint: the memory of an idle client agent, and what its imports cost.

Run:  uv run python bench/footprint/run.py [--idle 30] [--runs 3] [--before REV] [--write BENCHMARKS.md]

One server (`-server -bootstrap-expect 1`) and one client agent joined to it, both on loopback
(127.0.0.1, free ports, fresh data directories). Once the client knows the leader, both idle for
`--idle` seconds; then the client's (and the server's) /proc/<pid>/smaps_rollup gives RSS, PSS
and private memory: the median of `--runs` pairs of agents, with the lowest and highest. Then the import profile of the client's start: every module a client agent
has loaded once built the way `cairn agent` builds it (appliance.config.build_agent_config, then
appliance.agent.Agent), grouped by package, with
  - the RSS each package costs imported alone into a bare interpreter (a fresh one per package;
    packages share what they import, so these do not add up to the total), and
  - the import time `python -X importtime` gives each package during that start.

`--before REV` measures the agents of another commit in the same run (its `appliance`, `exporters`
and `sd` exported with `git archive`, run with this environment's interpreter and libraries), the
runs interleaved (before, now, before, now, ...), so the two rows are side by side. `--write FILE` replaces the "Client agent footprint" section of
FILE (BENCHMARKS.md) with this run's figures, the machine, date and load average.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import command_line, machine  # noqa: E402 - the project's root is on the path only now

SECTION = "## Client agent footprint"
CAIRN = ("appliance", "exporters", "sd")  # cairn's packages (the last two are its extensions)
ROLLUP = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Clean", "Private_Dirty")

# Builds a client agent as `cairn agent` does and prints its modules and the RSS after each step.
PROFILE = """
import json, sys
def rss():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
steps = [("interpreter", rss())]
from appliance.config import build_agent_config
cfg = build_agent_config(sys.argv[1:])
steps.append(("configuration built", rss()))
from appliance.agent import Agent
steps.append(("appliance.agent imported", rss()))
Agent(cfg)
steps.append(("client agent built", rss()))
print(json.dumps({"modules": sorted(sys.modules), "steps": steps}))
"""
# The RSS the modules given (one package's, as the client loaded them) add to a bare interpreter.
ALONE = """
import importlib, sys
def rss():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
before = rss()
for name in sys.argv[1:]:
    importlib.import_module(name)
print(rss() - before)
"""
# Imports every module of the client that is not cairn's (the standard library's and the libraries')
# into one bare interpreter: the floor an agent built on these libraries starts from.
FLOOR = """
import importlib, json, sys
for name in json.loads(sys.stdin.read()):
    try:
        importlib.import_module(name)
    except Exception:
        pass
with open("/proc/self/status") as fh:
    print(next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")))
"""


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def agent_args(data: Path, name: str, ports: list[int]) -> list[str]:
    http, dns, server, lan, wan = ports
    return ["-node", name, "-data-dir", str(data / name), "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-http-port", str(http), "-dns-port", str(dns), "-server-port", str(server),
            "-serf-lan-port", str(lan), "-serf-wan-port", str(wan)]


def env_for(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def http_get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


def rollup(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ROLLUP:
            out[key] = int(rest.split()[0])
    out["Private"] = out.pop("Private_Clean", 0) + out.pop("Private_Dirty", 0)
    return out


def idle_agents(tree: Path, idle: float) -> dict[str, dict[str, int]]:
    """A server and a client joined to it, from `tree`; memory after `idle` seconds joined."""
    with tempfile.TemporaryDirectory(prefix="footprint-") as tmp, ExitStack() as stack:
        data = Path(tmp)
        server_ports, client_ports = free_ports(5), free_ports(5)
        procs = {}
        for name, args in (("server", ["-server", "-bootstrap-expect", "1"]),
                           ("client", ["-retry-join", f"127.0.0.1:{server_ports[3]}", "-retry-interval", "1s"])):
            ports = server_ports if name == "server" else client_ports
            log = stack.enter_context(open(data / f"{name}.log", "w"))
            cmd = [sys.executable, "-m", "appliance", "agent", *agent_args(data, name, ports), *args]
            proc = subprocess.Popen(cmd, cwd=tree, env=env_for(tree), stdout=log, stderr=subprocess.STDOUT)
            stack.callback(proc.wait, 30)
            stack.callback(proc.terminate)
            procs[name] = proc
        deadline = time.monotonic() + 60
        while not http_get(client_ports[0], "/v1/status/leader").strip('"'):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                raise SystemExit(f"the client did not find the leader; logs in {data}:\n"
                                 + (data / "client.log").read_text()[-2000:])
            time.sleep(0.2)
        time.sleep(idle)
        return {name: rollup(proc.pid) for name, proc in procs.items()}


def profile(tree: Path) -> dict[str, object]:
    """The client's modules and RSS steps, its import time by package, each package's RSS alone."""
    with tempfile.TemporaryDirectory(prefix="footprint-") as tmp:
        args = agent_args(Path(tmp), "c1", free_ports(5))
        built = subprocess.run([sys.executable, "-c", PROFILE, *args], cwd=tree, env=env_for(tree),
                               capture_output=True, text=True, check=True)
        timed = subprocess.run([sys.executable, "-X", "importtime", "-c", PROFILE, *args], cwd=tree,
                               env=env_for(tree), capture_output=True, text=True, check=True)
    found = json.loads(built.stdout)
    micros: collections.Counter[str] = collections.Counter()
    for line in timed.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            micros[package(match[2])] += int(match[1])
    counts = collections.Counter(package(m) for m in found["modules"])
    alone = {}
    for name in counts:
        if name in sys.stdlib_module_names or name.startswith(("_", "appliance")) or name in CAIRN:
            continue
        mine = [m for m in found["modules"] if package(m) == name]
        done = subprocess.run([sys.executable, "-c", ALONE, *mine], cwd=tree, env=env_for(tree),
                              capture_output=True, text=True)
        if done.returncode == 0:
            alone[name] = int(done.stdout)
    theirs = [m for m in found["modules"] if package(m).split(".")[0] not in (*CAIRN, "__main__")]
    floor = subprocess.run([sys.executable, "-c", FLOOR], input=json.dumps(theirs), cwd=tree, env=env_for(tree),
                           capture_output=True, text=True, check=True)
    return {"steps": [*found["steps"], ["its libraries alone (no cairn code)", int(floor.stdout)]],
            "modules": len(found["modules"]), "counts": counts, "micros": micros, "alone": alone}


def package(module: str) -> str:
    """A module's package for the tables: its top level, or the second level under appliance."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "appliance" and len(parts) > 1 else parts[0]


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def spread(kbs: list[int]) -> str:
    """The median, and the lowest and highest when there were several runs."""
    middle = mb(statistics.median(kbs))
    return middle if len(kbs) == 1 else f"{middle} ({mb(min(kbs))}-{mb(max(kbs))})"


def report(rows: dict[str, dict[str, object]], args: argparse.Namespace, measured: str) -> str:
    lines = [SECTION, "",
             f"Measured with `{args.command}` {measured}. One server (`-server -bootstrap-expect 1`) and one",
             f"client agent joined to it on loopback, idle for {args.idle:g} s once the client knew the leader;",
             "memory from `/proc/<pid>/smaps_rollup` (MiB; Private is Private_Clean + Private_Dirty), the median",
             f"of {args.runs} pairs of agents with the lowest and highest.", "",
             "| code | agent | RSS | PSS | PSS anon | PSS file | Private | modules loaded by a client |",
             "|---|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        runs, prof = row["idle"], row["profile"]
        assert isinstance(runs, list) and isinstance(prof, dict)
        for agent in ("client", "server"):
            cells = [spread([run[agent][key] for run in runs]) for key in ("Rss", "Pss", "Pss_Anon", "Pss_File",
                                                                          "Private")]
            lines.append(f"| {label} | {agent} | " + " | ".join(cells)
                         + f" | {prof['modules'] if agent == 'client' else ''} |")
    lines += ["", "RSS (MiB) of a client agent's process while it is built the way `cairn agent` builds it, and of",
              "a bare interpreter that imports every module of that client that is not cairn's:", "",
              "| step | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    steps = [dict(row["profile"]["steps"]) for row in rows.values()]  # type: ignore[index]
    for name in steps[0]:
        lines.append(f"| {name} | " + " | ".join(mb(s.get(name, 0)) for s in steps) + " |")
    last = list(rows.values())[-1]["profile"]
    assert isinstance(last, dict)
    alone, micros, counts = last["alone"], last["micros"], last["counts"]
    lines += ["", f"The client's packages ({list(rows)[-1]}): the RSS its modules the client loads add imported "
              "alone into a bare interpreter (packages share what they import, so these overlap and do not add up), its modules, and its "
              "own import time during the start (`python -X importtime`):", "",
              "| package | RSS alone (MiB) | modules | import time (ms) |", "|---|---|---|---|"]
    for name, kb in sorted(alone.items(), key=lambda kv: -kv[1])[:args.top]:
        lines.append(f"| {name} | {mb(kb)} | {counts[name]} | {micros[name] / 1000:.0f} |")
    first = list(rows.values())[0]["profile"]
    assert isinstance(first, dict)
    gone = sorted((n for n in set(first["counts"]) - set(counts) if n not in sys.stdlib_module_names
                   and not n.startswith("_")), key=lambda n: -first["alone"].get(n, 0))
    if gone:
        lines += ["", f"Loaded by the client of {list(rows)[0]} and not any more (RSS alone, modules): "
                  + ", ".join(f"{n} {mb(first['alone'][n])} MiB ({first['counts'][n]})" if n in first["alone"]
                              else f"{n} ({first['counts'][n]})" for n in gone) + "."]
    ours = sorted(((n, c) for n, c in counts.items() if n.split(".")[0] in CAIRN), key=lambda kv: -micros[kv[0]])
    lines += ["", "cairn's own packages in the client, by import time: "
              + ", ".join(f"{n} {micros[n] / 1000:.0f} ms ({c})" for n, c in ours[:12]) + "."]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    start = old.find(SECTION + "\n")
    if start < 0:
        path.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    end = old.find("\n## ", start + len(SECTION))
    path.write_text(old[:start] + text + (old[end:] if end >= 0 else ""))


def exported(rev: str, base: Path) -> Path:
    tree = base / "before"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *CAIRN],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds the joined agents idle (30)")
    parser.add_argument("--runs", type=int, default=3, help="pairs of agents per commit, interleaved (3)")
    parser.add_argument("--before", help="another commit measured in the same run")
    parser.add_argument("--top", type=int, default=12, help="packages listed (12)")
    parser.add_argument("--write", type=Path, help="replace the section in this file (BENCHMARKS.md)")
    args = parser.parse_args()
    args.command = command_line("bench/footprint/run.py")
    base = Path(tempfile.mkdtemp(prefix="footprint-trees-"))
    try:
        trees = {}
        if args.before:
            trees[f"before ({args.before})"] = exported(args.before, base)
        trees["now"] = ROOT
        rows: dict[str, dict[str, object]] = {label: {"idle": []} for label in trees}
        for run in range(args.runs):
            for label, tree in trees.items():
                memory = idle_agents(tree, args.idle)
                rows[label]["idle"].append(memory)  # type: ignore[attr-defined]
                print(f"run {run + 1} {label}: client {json.dumps(memory['client'])}", flush=True)
        for label, tree in trees.items():
            rows[label]["profile"] = profile(tree)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = report(rows, args, f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}")
    print(text)
    if args.write:
        write_section(args.write, text)


if __name__ == "__main__":
    main()
