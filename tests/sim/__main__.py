"""Replay or explore simulator seeds.

    python -m tests.sim raft --seed 42            replay one seed, print its summary and hash
    python -m tests.sim raft --seeds 100 --start 1000   run seeds 1000..1099
    python -m tests.sim raft --seed 42 --unsafe-local-reads   the planted stale-read mutant
"""

from __future__ import annotations

import argparse
import sys
import time

from .checkers import SimFailure
from .world import Sim, run_seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim")
    parser.add_argument("system", choices=["raft"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds")
    parser.add_argument("--start", type=int, default=0, help="first seed with --seeds")
    parser.add_argument("--unsafe-local-reads", action="store_true", help="plant the stale-read bug")
    parser.add_argument("--verbose", "-v", action="store_true", help="print the options chosen")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    failed = 0
    for seed in seeds:
        opts = Sim(seed).opts
        if args.unsafe_local_reads:
            opts.unsafe_local_reads = True
        t0 = time.perf_counter()
        try:
            result = run_seed(seed, opts)
        except SimFailure as err:
            failed += 1
            print(f"FAIL {err}", flush=True)
            continue
        print(f"ok {result.summary()} ({time.perf_counter() - t0:.2f}s)", flush=True)
        if args.verbose:
            print(f"   options: {opts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
