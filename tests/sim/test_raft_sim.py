"""The Raft simulator in CI: a fixed list of seeds, then fresh random seeds within a time budget.

A failing seed is printed with its replay command (`python -m tests.sim raft --seed N`); it is a
bug to fix, never a seed to skip. The budget for the fresh seeds is `CAIRN_SIM_BUDGET_S` seconds
(default 30; the fixed list takes about 10 s more). `CAIRN_SIM_SEEDS=a,b,c` adds seeds to the
fixed list (for a nightly run or to pin a regression).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .checkers import SimFailure
from .linearizability import GET, SET, check_history
from .world import Sim, SimOptions, run_seed

ROOT = Path(__file__).resolve().parents[2]
# Found by the 10,000-seed sweep, kept as regressions: 100153, 100955, 109778 (a follower sent
# READ_INDEX at a term it had not yet persisted); 109573 (a lagging server refused its vote to the
# most up-to-date voter of a configuration it had not received: no leader after the heal);
# 106029 (16 unknown writes on one key: the linearizability search gave up before deciding)
REGRESSION_SEEDS = [100153, 100955, 109778, 109573, 106029]
FIXED_SEEDS = list(range(40)) + REGRESSION_SEEDS + [
    int(s) for s in os.environ.get("CAIRN_SIM_SEEDS", "").split(",") if s]
BUDGET_S = float(os.environ.get("CAIRN_SIM_BUDGET_S", "30"))


def _run(seeds: list[int]) -> list[str]:
    failures = []
    for seed in seeds:
        try:
            run_seed(seed)
        except SimFailure as err:
            failures.append(str(err))
    return failures


def test_fixed_seeds():
    # Raft §5 (Figure 3 properties), thesis §3.8 (durability order), linearizability (§10 notes).
    t0 = time.perf_counter()
    failures = _run(FIXED_SEEDS)
    print(f"simulated {len(FIXED_SEEDS)} fixed seeds in {time.perf_counter() - t0:.1f}s: "
          f"{FIXED_SEEDS[0]}..{FIXED_SEEDS[-1]}")
    assert not failures, "\n\n".join(failures)


def test_fresh_seeds_within_budget():
    rng = random.SystemRandom()
    seeds: list[int] = []
    failures: list[str] = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < BUDGET_S and not failures:
        seed = rng.randrange(10**6, 2**32)
        seeds.append(seed)
        failures = _run([seed])
    print(f"simulated {len(seeds)} fresh seeds in {time.perf_counter() - t0:.1f}s: {seeds}")
    assert not failures, f"fresh seeds tried: {seeds}\n" + "\n\n".join(failures)


def test_same_seed_same_final_state():
    # Determinism: same seed, same run — also in another process with another hash seed, since
    # iterating a set of strings would otherwise differ between processes.
    first = run_seed(7)
    assert run_seed(7).state_hash == first.state_hash
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-m", "tests.sim", "raft", "--seed", "7"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"hash={first.state_hash[:16]}" in out.stdout, out.stdout


def test_replay_command_prints_seed_and_hash():
    out = subprocess.run([sys.executable, "-m", "tests.sim", "raft", "--seed", "3"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.startswith("ok seed=3 "), out.stdout + out.stderr


def _stale_read_schedule(unsafe_local_reads: bool):
    """raft-notes §10.3: 3 servers, leader L isolated with client A; B writes through the new
    leader; A then reads through L. Check-quorum is off so L keeps believing it leads."""
    opts = SimOptions(clients=0, check_quorum=False, unsafe_local_reads=unsafe_local_reads)
    sim = Sim(11, opts)
    sim.run_until(600)
    old = sim.leader()
    assert old is not None
    w1 = sim.workload.submit("a", old.id, SET, "x", "v1")
    sim.run_until(800)
    assert w1.status == "ok"
    sim.net.split([old.id], sim.ids)
    sim.run_until(1500)
    new = sim.leader()
    assert new is not None and new.id != old.id
    assert old.core.is_leader  # still believes it leads
    w2 = sim.workload.submit("b", new.id, SET, "x", "v2")
    sim.run_until(1700)
    assert w2.status == "ok"
    read = sim.workload.submit("a", old.id, GET, "x")
    sim.run_until(2500)
    return read, check_history(sim.workload.history)


def test_planted_stale_read_is_caught_end_to_end():
    # Thesis §6.4: reading local state on a deposed leader returns stale data; read index does not.
    read, result = _stale_read_schedule(unsafe_local_reads=True)
    assert read.status == "ok" and read.output == "v1"
    assert result.ok is False and result.key == "x"


def test_read_index_is_not_stale_on_the_same_schedule():
    read, result = _stale_read_schedule(unsafe_local_reads=False)
    assert read.status == "fail"  # the isolated leader cannot confirm leadership; no answer
    assert result.ok is True


@pytest.mark.parametrize("seed", [0, 1])
def test_options_are_chosen_by_the_seed(seed):
    assert Sim(seed).opts == Sim(seed).opts
    assert Sim(0).opts != Sim(1).opts


@pytest.mark.parametrize("dropped", ["APPEND_RESP", "VOTE_RESP"])
def test_durability_checks_catch_early_acknowledgements(monkeypatch, dropped):
    # Thesis §3.8: a core that acknowledges entries (or grants a vote) before they are durable
    # must fail the simulator; otherwise the durability checks prove nothing.
    from appliance.raft import core
    from appliance.raft.messages import MsgType

    monkeypatch.setattr(core, "_AFTER_PERSIST", core._AFTER_PERSIST - {MsgType[dropped]})
    with pytest.raises(SimFailure, match="acknowledges|grants|before term is durable"):
        run_seed(0)
