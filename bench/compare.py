"""bench/compare: one benchmark, two commits of cairn, interleaved in one run.

Run:  uv run python bench/compare.py --before <rev> [--after HEAD] --bench http|raft [--runs 3]

A change that must not make cairn slower is measured against the code before it on the same
machine in the same minutes: each commit is checked out into a temporary worktree with its own
environment (`uv sync --frozen`), and the benchmark's own script runs from each in turn,
before/after/after/before/..., so a busy moment on the machine hits both. Each run reports
cairn's ratio to the benchmark's peer in that very run (bench/http: a bare aiohttp handler,
bench/raft: etcd), which takes the machine's speed out of the comparison; the figure is the
median ratio per commit with every run listed.

  http  bench/http/run.py --rounds 1 --parked 100 --duration D: GET /v1/health/service/web?passing
        req/s, cairn / bare aiohttp
  raft  bench/raft/run.py --reps 1 --kills 0 --duration D: replicated writes/s, cairn / etcd
  raft-cpu  bench/raft/cpu.py --tree <worktree>: the leader's CPU microseconds per replicated
        write (not a ratio: lower is better)
  http-cpu  bench/http/cpu.py --tree <worktree>: the agent's CPU microseconds per
        GET /v1/health/service/web?passing (lower is better)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worktree(rev: str, base: Path) -> Path:
    path = base / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    subprocess.run(["uv", "sync", "--frozen", "-q"], cwd=path, check=True)
    return path


def run_http(tree: Path, duration: int) -> float:
    out = subprocess.run(["uv", "run", "--frozen", "python", "bench/http/run.py", "--rounds", "1", "--parked", "100",
                          "--duration", str(duration)], cwd=tree, capture_output=True, text=True, check=True).stdout
    first, _ = json.JSONDecoder().raw_decode(out.lstrip())
    return float(first["ratio"])


def run_raft(tree: Path, duration: int) -> float:
    out = subprocess.run(["uv", "run", "--frozen", "python", "bench/raft/run.py", "--reps", "1", "--kills", "0",
                          "--duration", str(duration)], cwd=tree, capture_output=True, text=True, check=True).stdout
    match = re.search(r"writes/s cairn/etcd = ([0-9.]+)x", out)
    if match is None:
        raise RuntimeError(f"no ratio in bench/raft's output:\n{out[-2000:]}")
    return float(match.group(1))


def run_raft_cpu(tree: Path, duration: int) -> float:
    out = subprocess.run(["uv", "run", "--frozen", "python", str(ROOT / "bench/raft/cpu.py"), "--tree", str(tree),
                          "--duration", str(duration)], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)["leader_us_per_write"])


def run_http_cpu(tree: Path, duration: int) -> float:
    out = subprocess.run(["uv", "run", "--frozen", "python", str(ROOT / "bench/http/cpu.py"), "--tree", str(tree),
                          "--duration", str(duration)], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)["cairn_us_per_request"])


RUNNERS = {"http": run_http, "raft": run_raft, "raft-cpu": run_raft_cpu, "http-cpu": run_http_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit before the change")
    parser.add_argument("--after", default="HEAD", help="the commit with the change (default HEAD)")
    parser.add_argument("--bench", choices=sorted(RUNNERS), required=True)
    parser.add_argument("--runs", type=int, default=3, help="runs per commit (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per load run (default 5)")
    args = parser.parse_args()
    runner = RUNNERS[args.bench]
    unit = " us" if args.bench.endswith("-cpu") else "x"
    ratios: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="cairn-compare-") as tmp:
        trees = {"before": worktree(args.before, Path(tmp)), "after": worktree(args.after, Path(tmp))}
        try:
            for i in range(args.runs):
                order = ("before", "after") if i % 2 == 0 else ("after", "before")
                for which in order:
                    ratio = runner(trees[which], args.duration)
                    ratios[which].append(ratio)
                    print(f"run {i + 1} {which}: {ratio:.3f}{unit}", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print(json.dumps(ratios))
    for which, rev in (("before", args.before), ("after", args.after)):
        values = ratios[which]
        print(f"{which} ({rev}): median {statistics.median(values):.3f}{unit}, runs "
              + ", ".join(f"{v:.3f}" for v in values) + f" (spread {min(values):.3f}-{max(values):.3f})")
    change = statistics.median(ratios["after"]) / statistics.median(ratios["before"]) - 1
    print(f"after / before: {change:+.1%} ({args.bench}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    sys.exit(main())
