"""Run or replay the gossip simulator: `python -m tests.sim.gossip --seed N [options]`.

Without options a seed picks its own scenario (`SimOptions.swarm`), exactly as the CI test does,
so a seed printed by a failing test replays with `--seed N` alone. Options override single
fields (`--members 1000 --duration 120 --scenario steady`). `--seeds A-B` sweeps a range and
`--budget S` stops a sweep after S seconds of wall time. The exit status is 1 if any run failed.

Scenarios: `swarm` (default; the seed decides), `steady` (preloaded cluster, 1 % loss, one
starved member, one kill: false positives and detection), `churn` (staggered joins, then kills,
graceful leaves and late joins: convergence), `partition` (two sides for 40 s, then heal),
`bench` (what bench/gossip measures: preloaded, 1 % loss, one starved member, kills, leaves, late
joins and user events spread over the run; 60 members for 4 minutes unless overridden).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from tests.sim.gossip_sim import SimOptions, run

SCENARIOS = ("swarm", "steady", "churn", "partition", "bench")


def scenario_options(name: str, seed: int, members: int | None = None, duration_s: float | None = None) -> SimOptions:
    """The options of a named scenario (shared with tests/sim/test_gossip_sim.py)."""
    if name == "swarm":
        opts = SimOptions.swarm(seed)
    elif name == "steady":
        opts = SimOptions(seed=seed, members=100, duration_s=80.0, bootstrap="preloaded", kills=1,
                          churn_at_s=2.0, loss=0.01, starved=1)
    elif name == "churn":
        opts = SimOptions(seed=seed, members=100, duration_s=90.0, bootstrap="join", kills=2, leaves=2,
                          late_joins=3, loss=0.01, starved=1)
    elif name == "partition":
        opts = SimOptions(seed=seed, members=60, duration_s=150.0, bootstrap="preloaded", kills=0,
                          partition_at_s=10.0, partition_for_s=40.0, loss=0.01, starved=0)
    elif name == "bench":
        # Churn from the first minute on, spread so every change still has its bound's time to run.
        duration = duration_s if duration_s is not None else 240.0
        opts = SimOptions(seed=seed, members=60, duration_s=duration, bootstrap="preloaded", loss=0.01,
                          starved=1, starve_lag_s=1.5, kills=3, leaves=2, late_joins=3, user_events=5,
                          churn_at_s=60.0, churn_spread_s=max(10.0, duration - 60.0 - 150.0))
    else:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")
    changes = {}
    if members is not None:
        changes["members"] = members
    if duration_s is not None:
        changes["duration_s"] = duration_s
    return dataclasses.replace(opts, **changes)


def _seed_range(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim.gossip", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, help="one seed to run or replay")
    p.add_argument("--seeds", type=_seed_range, help="a sweep: 'A-B' or 'A,B,C'")
    p.add_argument("--budget", type=float, default=None, help="stop a sweep after this many wall seconds")
    p.add_argument("--scenario", choices=SCENARIOS, default="swarm")
    p.add_argument("--members", type=int)
    p.add_argument("--duration", type=float, help="simulated seconds")
    p.add_argument("--loss", type=float)
    p.add_argument("--starved", type=int)
    p.add_argument("--starve-lag", type=float)
    p.add_argument("--kills", type=int)
    p.add_argument("--leaves", type=int)
    p.add_argument("--late-joins", type=int)
    p.add_argument("--bootstrap", choices=("join", "preloaded"))
    p.add_argument("--profile", choices=("lan", "wan", "local"))
    p.add_argument("--garbage", type=float, help="random datagrams per second from outside")
    p.add_argument("--liars", type=int)
    p.add_argument("--user-events", type=int, help="Serf user events fired during the churn window")
    args = p.parse_args(argv)
    seeds = args.seeds or ([args.seed] if args.seed is not None else None)
    if not seeds:
        p.error("give --seed N or --seeds A-B")
    overrides = {
        "loss": args.loss, "starved": args.starved, "starve_lag_s": args.starve_lag, "kills": args.kills,
        "leaves": args.leaves, "late_joins": args.late_joins, "bootstrap": args.bootstrap,
        "profile": args.profile, "garbage_per_s": args.garbage, "liars": args.liars,
        "user_events": args.user_events,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    started = time.perf_counter()
    failed = []
    for seed in seeds:
        if args.budget is not None and time.perf_counter() - started > args.budget:
            print(f"budget of {args.budget}s used; stopping before seed {seed}")
            break
        opts = dataclasses.replace(scenario_options(args.scenario, seed, args.members, args.duration), **overrides)
        report = run(opts)
        print(report.summary(), flush=True)
        if not report.ok:
            failed.append(seed)
    if failed:
        print(f"FAILED seeds: {failed} (replay: python -m tests.sim.gossip --scenario {args.scenario} --seed N)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
