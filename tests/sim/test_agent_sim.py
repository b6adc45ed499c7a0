"""Whole agents in the simulator (agent_scenarios.py): fixed seeds per family, then fresh seeds
within a time budget.

A failing seed is printed with its replay command (`python -m tests.sim <family> --seed N`).
`CAIRN_AGENT_SIM_BUDGET_S` sets the fresh-seed budget (default 3 s; 0 disables).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from appliance.reconcile import ReconcileSchedule

from . import agents
from .agent_scenarios import FAMILIES, AgentRun, run_agents
from .checkers import SimFailure

# 2611766678: a leader elected with the previous leader's critical check not yet applied planned
# its first full pass against the older catalog (fixed by the read barrier before a full pass);
# 5000913: the transfer's TimeoutNow was lost and the scenario did not ask again; 7001425: the
# victim died before one server had heard of it (the scenario now settles gossip first).
FIXED_SEEDS = {"gossip-failure": list(range(8)),
               "leader-change": list(range(12)) + [2611766678, 5000913, 7001425],
               "partition": list(range(6))}
BUDGET_S = float(os.environ.get("CAIRN_AGENT_SIM_BUDGET_S", "3"))


@pytest.mark.parametrize("family", FAMILIES)
def test_fixed_seeds(family):
    failures = []
    for seed in FIXED_SEEDS[family]:
        try:
            print(run_agents(family, seed).summary())
        except SimFailure as err:
            failures.append(str(err))
    assert not failures, "\n\n".join(failures)


def test_fresh_seeds_within_budget():
    rng = random.SystemRandom()
    tried: list[tuple[str, int]] = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < BUDGET_S:
        family, seed = rng.choice(FAMILIES), rng.randrange(10**6, 2**32)
        tried.append((family, seed))
        try:
            run_agents(family, seed)
        except SimFailure as err:
            pytest.fail(f"fresh seeds tried: {tried}\n{err}")
    print(f"{len(tried)} fresh agent seeds in {time.perf_counter() - t0:.1f}s: {tried}")


def test_a_seed_replays_exactly():
    for family in FAMILIES:
        assert run_agents(family, 1).state_hash == run_agents(family, 1).state_hash


def test_a_leader_that_never_marks_failed_members_critical_is_caught(monkeypatch):
    # Planted: the leader never marks a failed member critical. The gossip-failure family notices.
    real = agents.plan_name

    def no_critical(store, name, member, **kw):
        commands, reason = real(store, name, member, **kw)
        return [c for c in commands if c.get("Checks", [{}])[0].get("Status") != "critical"], reason

    monkeypatch.setattr(agents, "plan_name", no_critical)
    with pytest.raises(SimFailure, match="critical in the leader's catalog"):
        run_agents("gossip-failure", 0)


def test_a_new_leader_that_skips_its_full_pass_is_caught(monkeypatch):
    # Planted once the cluster has settled: no full passes any more, only the members named by
    # gossip events while leading. In seed 5 the leader is cut off with the critical check in
    # flight; the new leader heard of the failure as a follower, so only its full pass on winning
    # leadership can write the check (the same seed passes in test_fixed_seeds).
    run = AgentRun("leader-change", 5)
    run.settle()
    monkeypatch.setattr(ReconcileSchedule, "full_due", lambda self, now: False)
    with pytest.raises(SimFailure, match="critical after the leader change"):
        run.leader_change()


def test_a_full_pass_without_its_barrier_is_caught(monkeypatch):
    # Planted: the read barrier before a full pass answers at once, whatever this server has
    # applied. In seed 2611766678 the new leader has not applied the old leader's critical check
    # when it wins; its pass sees a passing catalog and the member, back since, stays critical.
    monkeypatch.setattr(agents.SimNode, "read_barrier", lambda self, waiter: waiter.set_result(self.applied))
    with pytest.raises(SimFailure, match="serfHealth critical for alive member"):
        run_agents("leader-change", 2611766678)
