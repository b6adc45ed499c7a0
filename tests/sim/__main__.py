"""Replay or explore simulator seeds.

    python -m tests.sim raft --seed 42            replay one seed, print its summary and hash
    python -m tests.sim raft --seeds 100 --start 1000   run seeds 1000..1099
    python -m tests.sim raft --seeds 10000 --jobs 4     a sweep on four processes
    python -m tests.sim raft --seed 42 --unsafe-local-reads   the planted stale-read mutant
    python -m tests.sim gossip-failure --seed 7   a whole-agent family (agent_scenarios.py):
                                                  gossip-failure, leader-change, partition

The gossip simulator on its own has its own options: `python -m tests.sim.gossip --help`.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from .agent_scenarios import FAMILIES, run_agents
from .checkers import SimFailure
from .world import Sim, run_seed


def _run_one(system: str, unsafe_local_reads: bool, verbose: bool, seed: int) -> tuple[bool, str]:
    t0 = time.perf_counter()
    try:
        if system == "raft":
            opts = Sim(seed).opts
            opts.unsafe_local_reads = unsafe_local_reads
            summary = run_seed(seed, opts).summary()
            if verbose:
                summary += f"\n   options: {opts}"
        else:
            summary = run_agents(system, seed).summary()
    except SimFailure as err:
        return False, f"FAIL {err}"
    return True, f"ok {summary} ({time.perf_counter() - t0:.2f}s)"


class _Inline:
    """map() in this process (one job: a failure's traceback and pdb stay simple)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, items, chunksize: int = 1):
        return map(fn, items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim")
    parser.add_argument("system", choices=["raft", *FAMILIES])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds")
    parser.add_argument("--start", type=int, default=0, help="first seed with --seeds")
    parser.add_argument("--unsafe-local-reads", action="store_true", help="plant the stale-read bug (raft)")
    parser.add_argument("--verbose", "-v", action="store_true", help="print the options chosen (raft)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="worker processes for a sweep")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    t0 = time.perf_counter()
    one = partial(_run_one, args.system, args.unsafe_local_reads, args.verbose)
    failed = 0
    with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else _Inline() as pool:
        for ok, line in pool.map(one, seeds, chunksize=8):
            failed += not ok
            print(line, flush=True)
    if len(seeds) > 1:
        print(f"{len(seeds) - failed}/{len(seeds)} seeds passed in {time.perf_counter() - t0:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
