"""Sessions and KV locks under the Raft simulator's faults (tests/sim/locks.py): fixed seeds, a few
fresh ones (`CAIRN_SIM_LOCK_FRESH`, default 15), and the planted race the lock checker must catch.
A failing seed replays with `LockSim(<seed>).run()`.
"""

from __future__ import annotations

import os
import random

from .checkers import SimFailure
from .locks import run_lock_seed

FIXED_SEEDS = list(range(30))
FRESH_SEEDS = int(os.environ.get("CAIRN_SIM_LOCK_FRESH", "15"))


def _failures(seeds: list[int], **kw) -> list[str]:
    failures = []
    for seed in seeds:
        try:
            run_lock_seed(seed, **kw)
        except SimFailure as err:
            failures.append(str(err))
    return failures


def test_fixed_seeds():
    # coordination.md §1.4-1.5, §2.1: one holder at a time, LockIndex a growing fencing token,
    # lock-delay after an invalidation, TTL expiry on the leader's clock across leader changes
    failures = _failures(FIXED_SEEDS)
    assert not failures, "\n\n".join(failures)


def test_fresh_seeds():
    seeds = [random.SystemRandom().randrange(10**6, 2**32) for _ in range(FRESH_SEEDS)]
    failures = _failures(seeds)
    assert not failures, f"fresh seeds tried: {seeds}\n" + "\n\n".join(failures)


def test_the_checker_catches_a_lock_that_races_its_invalidation():
    # the mutant checks lock-delay only against what the leader has applied, as Consul does: a
    # lock proposed while the holder's invalidation is still in the log gets through at once
    failures = _failures(list(range(10)), unchecked_locks=True)
    assert failures and all("lock-delay" in f for f in failures)
