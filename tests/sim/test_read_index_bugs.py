"""Scripted schedules for the two read-index bugs that only random seeds used to catch.

Thesis §6.4 gives a read index three conditions: (1) the leader has committed an entry of its own
term, so its commit index is the cluster's (etcd #7331); (2) a fresh heartbeat round confirms it
still leads; (3) the serving server has applied the read index before it answers. Breaking (1)
or (3) loses linearizability only on rare schedules, so a scenario below forces each schedule and
runs the shipped code (the core, and `appliance.raft.host.RaftHost` on every simulated server).
Each bug is planted back by monkeypatching the fixed function with its buggy form: the scenario
must then produce a stale read that the linearizability checker rejects; without the plant the
same schedule answers the read with the latest write and the history is linearizable.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from appliance.raft.core import RaftCore
from appliance.raft.host import RaftHost, Waiter

from .linearizability import GET, SET, Op, Result, check_history
from .node import SimNode
from .world import Sim, SimOptions

QUIET = dict(clients=0, loss=0.0, duplicate=0.0, fifo=True, delay_min_ms=1.0, delay_max_ms=1.0,
             fsync_min_ms=0.5, fsync_max_ms=0.5)


def _run_until(sim: Sim, done: Callable[[], bool], limit_ms: float, step_ms: float = 0.1) -> None:
    deadline = sim.now + limit_ms
    while not done():
        assert sim.now < deadline, "the scripted schedule did not happen"
        sim.run_until(sim.now + step_ms)


def _write(sim: Sim, node: SimNode, value: str) -> Op:
    op = sim.workload.submit("w", node.id, SET, "x", value)
    _run_until(sim, lambda: op.status != "pending", 200)
    assert op.status == "ok", op
    return op


# ---------------------------------------------------------------------- (1) etcd #7331


def _read_before_current_term_commit(self: RaftCore, request_id: str, frm: str) -> None:
    """The bug: register a read at the commit index whatever its term (no wait for the new
    leader's no-op to commit)."""
    self.read_seq += 1
    self.pending_reads.append((self.read_seq, request_id, self.log.committed, frm))
    self._broadcast_heartbeat()
    self._advance_reads()


def _new_leader_with_a_stale_commit_index() -> tuple[Op, Op, Result]:
    """raft-notes §10 `readindex_before_noop`: the leader commits `x=v2` with a follower B that
    never hears of the commit; the leader dies; B wins with its stale commit index and serves a
    read at once. Five voters, so B's heartbeat quorum (B, C, D) can answer before its no-op
    commits (C and D lack `v2` and need an extra round trip to take the no-op)."""
    sim = Sim(5, SimOptions(pool=5, initial_voters=5, pre_vote=False, check_quorum=False, **QUIET))
    _run_until(sim, lambda: sim.leader() is not None, 1000)
    lead = sim.leader()
    assert lead is not None
    a, b, c, d = (sim.nodes[n] for n in sim.ids if n != lead.id)
    _write(sim, lead, "v1")
    sim.run_until(sim.now + 50)  # everyone applies v1
    for other in (c, d):
        sim.net.cut(lead.id, other.id)
    before = b.core.log.last_index()
    w2 = sim.workload.submit("w", lead.id, SET, "x", "v2")
    _run_until(sim, lambda: b.core.log.last_index() > before, 50)
    sim.net.cut(lead.id, b.id, both=False)  # B keeps v2 and acknowledges it, never hears the commit
    _run_until(sim, lambda: w2.status != "pending", 200)
    assert w2.status == "ok" and b.core.log.committed <= before
    lead.crash()
    sim.net.heal()
    b.call(lambda core: core.campaign())
    _run_until(sim, lambda: b.core.is_leader, 100)
    assert b.core.log.term(b.core.log.committed) != b.core.term  # its no-op is not committed yet
    read = sim.workload.submit("r", b.id, GET, "x")
    _run_until(sim, lambda: read.status != "pending", 500)
    return w2, read, check_history(sim.workload.history)


def test_a_new_leader_reads_after_its_first_commit():
    w2, read, result = _new_leader_with_a_stale_commit_index()
    assert read.status == "ok" and read.output == "v2"
    assert result.ok is True


def test_planted_read_before_current_term_commit_is_caught(monkeypatch):
    monkeypatch.setattr(RaftCore, "_leader_read", _read_before_current_term_commit)
    w2, read, result = _new_leader_with_a_stale_commit_index()
    assert read.status == "ok" and read.output == "v1"  # stale: v2 was acknowledged before the read
    assert read.call > w2.ret
    assert result.ok is False and result.key == "x"


# ---------------------------------------------------------------------- (3) apply before serving


def _answer_at_once(self: RaftHost, waiter: Waiter, index: int) -> None:
    """The bug: serve a read as soon as its read index is known, applied here or not."""
    if not waiter.done():
        waiter.set_result(index)


def _lagging_follower_read() -> tuple[Op, Op, Result]:
    """A follower cut off while the leader commits ten writes rejoins; a read asked through it gets
    the leader's read index in one round trip, while catching up takes one round trip per entry
    (`max_append_entries=1`, one in flight). It may answer only once it has applied that index."""
    sim = Sim(3, SimOptions(max_append_entries=1, max_inflight=1, **QUIET))
    _run_until(sim, lambda: sim.leader() is not None, 1000)
    lead = sim.leader()
    assert lead is not None
    follower = sim.nodes[next(n for n in sim.ids if n != lead.id)]
    _write(sim, lead, "v0")
    sim.run_until(sim.now + 50)
    sim.net.split([follower.id], sim.ids)
    last = [_write(sim, lead, f"v{i}") for i in range(1, 11)][-1]
    sim.net.heal()
    _run_until(sim, lambda: follower.core.leader == lead.id, 300)
    assert follower.applied < lead.applied
    read = sim.workload.submit("r", follower.id, GET, "x")
    _run_until(sim, lambda: read.status != "pending", 500)
    return last, read, check_history(sim.workload.history)


def test_a_follower_serves_a_read_once_it_applied_the_read_index():
    last, read, result = _lagging_follower_read()
    assert read.status == "ok" and read.output == "v10"
    assert result.ok is True


def test_planted_read_served_before_apply_is_caught(monkeypatch):
    monkeypatch.setattr(RaftHost, "_answer_read", _answer_at_once)
    last, read, result = _lagging_follower_read()
    assert read.status == "ok" and read.output != "v10" and read.call > last.ret
    assert result.ok is False and result.key == "x"


@pytest.mark.parametrize("scenario", [_new_leader_with_a_stale_commit_index, _lagging_follower_read])
def test_the_scenarios_run_the_shipped_host(scenario, monkeypatch):
    # The plants above patch the classes the simulated servers run: they must be the shipped ones.
    built: list[RaftHost] = []
    init = RaftHost.__init__

    def record(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(RaftHost, "__init__", record)
    scenario()
    assert built and all(type(h) is RaftHost and type(h.core) is RaftCore for h in built)
