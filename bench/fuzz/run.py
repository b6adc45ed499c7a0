"""bench/fuzz: a long run of every decoder fuzzer, with counts per decoder and outcome.

Run:  uv run python bench/fuzz/run.py --inputs 1000000 [--jobs 2] [--seed 1] [--only gossip.]
                                      [--failures fuzz-failures.txt]

The decoders and their declared outcomes are the targets of tests/fuzz (the hypothesis tests run
the same targets with a small budget in CI). Inputs are split evenly over the decoders and drawn
with tests/fuzz/harness.py's generators: random bytes, byte mutations of valid encodings,
structure-aware mutations re-framed validly, and the seeds. Each input runs under the harness's
deadline (CAIRN_FUZZ_DEADLINE, 5 s): a decoder that raises something it does not declare, or does
not return in time, is an undeclared outcome; the first inputs of each are written to
`--failures` (hex), and the run goes on. The table printed at the end (markdown) gives, per
decoder, the inputs, how many decoded to a value, each declared error and its count, the
undeclared outcomes and the wall time; the exit status is 1 if any outcome was undeclared.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import multiprocessing
import os
import random
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402 - the project's root is on the path only now

MODULES = ("gossip", "rpc", "http", "config", "filter", "storage")
KEEP_FAILURES = 5


def _targets() -> list:
    import importlib

    out = []
    for name in MODULES:
        out += importlib.import_module(f"tests.fuzz.test_{name}_fuzz").TARGETS
    return out


def _run(job: tuple[str, int, int]) -> tuple[str, Counter[str], Counter[str], list[str], float]:
    """(decoder, outcomes, modes, failures, seconds) for `count` inputs of one decoder."""
    name, count, seed = job
    logging.disable(logging.CRITICAL)  # the decoders log what they drop
    warnings.simplefilter("ignore")
    from tests.fuzz.harness import Undeclared, generate, outcome

    target = next(t for t in _targets() if t.name == name)
    rng = random.Random(f"{seed}:{name}")
    outcomes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    failures: list[str] = []
    start = time.perf_counter()
    for _ in range(count):
        mode, data = generate(rng, target)
        modes[mode] += 1
        try:
            outcomes[outcome(target, data)] += 1
        except Undeclared as err:
            outcomes["UNDECLARED"] += 1
            if len(failures) < KEEP_FAILURES:
                failures.append(f"{name}\t{str(err).split(' for b')[0]}\t{data.hex()}")
    return name, outcomes, modes, failures, time.perf_counter() - start


def _table(results: list[tuple[str, Counter[str], Counter[str], list[str], float]]) -> str:
    lines = ["| decoder | inputs | valid | declared errors | undeclared | wall s |",
             "|---|---:|---:|---|---:|---:|"]
    total: Counter[str] = Counter()
    for name, outcomes, _modes, _failures, seconds in results:
        n = sum(outcomes.values())
        errors = ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common() if k not in ("valid", "UNDECLARED"))
        lines.append(f"| {name} | {n:,} | {outcomes['valid']:,} | {errors or '-'} | {outcomes['UNDECLARED']} "
                     f"| {seconds:.0f} |")
        total["inputs"] += n
        total["valid"] += outcomes["valid"]
        total["undeclared"] += outcomes["UNDECLARED"]
    lines.append(f"| **all {len(results)}** | **{total['inputs']:,}** | {total['valid']:,} | | "
                 f"**{total['undeclared']}** | |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs in all, split evenly over the decoders")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="", help="run the decoders whose name starts with this")
    ap.add_argument("--failures", default="fuzz-failures.txt", help="where undeclared outcomes' inputs go (hex)")
    args = ap.parse_args()
    names = [t.name for t in _targets() if t.name.startswith(args.only)]
    per = -(-args.inputs // len(names))
    jobs = []
    for name in names:  # a decoder's share in chunks, so both workers stay busy to the end
        chunks = max(1, min(8, per // 20_000))
        jobs += [(name, per // chunks + (1 if i < per % chunks else 0), args.seed * 1000 + i) for i in range(chunks)]
    started = time.time()
    print(f"{len(names)} decoders, {per:,} inputs each, {len(jobs)} jobs on {args.jobs} workers", flush=True)
    merged: dict[str, list] = {}
    with multiprocessing.Pool(args.jobs) as pool:
        for name, outcomes, modes, failures, seconds in pool.imap_unordered(_run, jobs):
            entry = merged.setdefault(name, [name, Counter(), Counter(), [], 0.0])
            entry[1].update(outcomes)
            entry[2].update(modes)
            entry[3].extend(failures)
            entry[4] += seconds
            print(f"  {name}: {sum(outcomes.values()):,} inputs in {seconds:.0f}s "
                  f"({outcomes['UNDECLARED']} undeclared)", flush=True)
    results = [tuple(merged[n]) for n in names]
    failures = [f for r in results for f in r[3]]
    if failures:
        Path(args.failures).write_text("\n".join(failures) + "\n")
    wall = time.time() - started
    modes: Counter[str] = Counter()
    for r in results:
        modes.update(r[2])
    print()
    print(f"machine: {machine()}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"command: uv run python bench/fuzz/run.py --inputs {args.inputs} --jobs {args.jobs} --seed {args.seed}")
    print(f"wall time: {wall:.0f} s; inputs by kind: " + ", ".join(f"{k} {v:,}" for k, v in modes.most_common()))
    print("(per-decoder wall s is the sum over that decoder's jobs)")
    print()
    print(_table(results))  # type: ignore[arg-type]
    if failures:
        print(f"\n{len(failures)} undeclared outcomes kept in {args.failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
