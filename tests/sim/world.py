"""The simulated Raft world: the shared kernel's event heap (kernel.py, time in milliseconds)
driving Raft servers, a network, disks, clients and a nemesis.

How it works
------------
Everything that happens is an event on the kernel's one heap, run one at a time on one thread:
ticks, message arrivals, fsync completions, client requests and answers, faults. All randomness
comes from `random.Random` instances derived from the run's seed, one per concern (network, disk,
workload, nemesis, each server's election timer), so a seed replays the same run event for event,
and changing one concern's draws does not shift the others.

The seed also chooses the run's *options* (swarm testing): cluster size, pipelining and
batching, snapshot threshold, pre-vote/check-quorum, delays, loss, duplication, crash, partition,
transfer and membership rates. A run has a chaos phase (faults + client load), then a heal phase
(faults stop, crashed servers restart, partitions heal, clients finish) after which the cluster
must have one leader and all members must have applied the same state (liveness). Then the
client history must be linearizable.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass, field

from appliance.raft.config import CoreConfig
from appliance.raft.messages import Configuration, Message, Role, bootstrap_state

from .checkers import Checker, SimFailure
from .kernel import Kernel
from .linearizability import Op, check_history
from .nemesis import Nemesis
from .network import SimNetwork
from .node import SimNode, kv_state
from .workload import Workload


@dataclass
class SimOptions:
    pool: int = 3  # servers that exist; the first `initial_voters` form the cluster
    initial_voters: int = 3
    tick_ms: float = 10.0
    election_ticks: int = 10
    lease_ticks: int = 5
    max_append_entries: int = 64
    max_inflight: int = 2
    snapshot_threshold: int = 10**9
    trailing_logs: int = 10
    pre_vote: bool = True
    check_quorum: bool = True
    delay_min_ms: float = 0.5
    delay_max_ms: float = 5.0
    loss: float = 0.0
    duplicate: float = 0.0
    fifo: bool = True  # per-link ordered delivery (a TCP stream) or free reordering
    fsync_min_ms: float = 0.2
    fsync_max_ms: float = 2.0
    torn_probability: float = 0.3
    crash_per_s: float = 0.0
    partition_per_s: float = 0.0
    transfer_per_s: float = 0.0
    membership_per_s: float = 0.0
    clients: int = 3
    keys: int = 2
    op_gap_max_ms: float = 30.0
    client_timeout_ms: float = 600.0
    chaos_ms: float = 3000.0
    heal_ms: float = 2500.0
    unsafe_local_reads: bool = False  # mutant: leaders answer reads from local state

    @classmethod
    def swarm(cls, rng: random.Random) -> SimOptions:
        pool = rng.choice([3, 3, 4, 5, 5])
        return cls(
            pool=pool,
            initial_voters=3 if pool < 5 else rng.choice([3, 5]),
            max_append_entries=rng.choice([1, 4, 64]),
            max_inflight=rng.choice([1, 2, 8]),
            snapshot_threshold=rng.choice([15, 40, 120, 10**9]),
            trailing_logs=rng.choice([0, 5, 30]),
            pre_vote=rng.random() < 0.85,
            check_quorum=rng.random() < 0.85,
            delay_max_ms=rng.choice([2.0, 8.0, 25.0]),
            loss=rng.choice([0.0, 0.0, 0.01, 0.05, 0.15]),
            duplicate=rng.choice([0.0, 0.02, 0.1]),
            fifo=rng.random() < 0.6,
            fsync_max_ms=rng.choice([1.0, 4.0, 15.0]),
            torn_probability=rng.choice([0.0, 0.5]),
            crash_per_s=rng.choice([0.0, 0.5, 2.0]),
            partition_per_s=rng.choice([0.0, 0.5, 2.0]),
            transfer_per_s=rng.choice([0.0, 0.5, 1.5]),
            membership_per_s=rng.choice([0.0, 0.0, 1.0, 3.0]) if pool > 3 else rng.choice([0.0, 1.0]),
            clients=rng.randint(2, 5),
            keys=rng.randint(1, 3),
        )


@dataclass
class SimResult:
    seed: int
    options: SimOptions
    state_hash: str
    events: int
    ops: int
    ok_ops: int
    elections: int
    checks: int
    virtual_ms: float
    stats: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (f"seed={self.seed} hash={self.state_hash[:16]} events={self.events} ops={self.ops} "
                f"ok={self.ok_ops} elections={self.elections} checks={self.checks} {self.stats}")


class Sim(Kernel):
    def __init__(self, seed: int, options: SimOptions | None = None) -> None:
        super().__init__(seed)
        self.opts = options if options is not None else SimOptions.swarm(self.rng_for("options"))
        o = self.opts
        self.core_config = CoreConfig(
            election_ticks=o.election_ticks, heartbeat_ticks=1, leader_lease_ticks=o.lease_ticks,
            max_append_entries=o.max_append_entries, max_inflight=o.max_inflight,
            trailing_logs=o.trailing_logs, snapshot_threshold=o.snapshot_threshold,
            pre_vote=o.pre_vote, check_quorum=o.check_quorum,
        )
        self.rng_disk = self.rng_for("disk")
        self.rng_node_phase = self.rng_for("phase")
        self.checker = Checker()
        self.net = SimNetwork(self.rng_for("net"), self.schedule, self._deliver,
                              o.delay_min_ms, o.delay_max_ms, o.loss, o.duplicate,
                              lambda: self.now, o.fifo)
        self.ids = [f"s{i}" for i in range(1, o.pool + 1)]
        self.nodes = {nid: SimNode(self, nid) for nid in self.ids}
        boot = bootstrap_state(Configuration.of(*self.ids[: o.initial_voters]))
        for nid in self.ids[: o.initial_voters]:
            disk = self.nodes[nid].disk
            disk.hard_state, disk.entries = boot.hard_state, list(boot.entries)
        for nid in self.ids:
            self.nodes[nid].start()
        self.workload = Workload(self, self.rng_for("workload"))
        self.nemesis = Nemesis(self, self.rng_for("nemesis"))

    # ------------------------------------------------------------------ plumbing

    def _deliver(self, m: Message) -> None:
        node = self.nodes.get(m.to)
        if node is not None:
            node.receive(m)

    def respond(self, op: Op, status: str, output=None, hint: str = "", index: int = 0) -> None:
        self.workload.respond(op, status, output, hint, index)

    # ------------------------------------------------------------------ views

    def leader(self) -> SimNode | None:
        """The alive leader with the highest term, if any."""
        best = None
        for nid in self.ids:
            n = self.nodes[nid]
            if n.alive and n.core.role == Role.LEADER and (best is None or n.core.term > best.core.term):
                best = n
        return best

    def members(self) -> Configuration:
        lead = self.leader()
        if lead is not None:
            return lead.core.configuration
        alive = [self.nodes[n] for n in self.ids if self.nodes[n].alive]
        best = max(alive, key=lambda n: (n.core.log.latest_config()[0], n.id))
        return best.core.configuration

    # ------------------------------------------------------------------ the run

    def run(self) -> SimResult:
        o = self.opts
        self.workload.start(stop_at=o.chaos_ms + o.heal_ms * 0.4)
        self.nemesis.start(stop_at=o.chaos_ms)
        self.run_until(o.chaos_ms)
        self.nemesis.heal_all()
        self.run_until(o.chaos_ms + o.heal_ms)
        # Liveness: converge within the heal phase, or a few more heal phases at the latest (a
        # slow catch-up, e.g. one entry per RPC, is not a failure; never converging is).
        self.converge(o.chaos_ms + 4 * o.heal_ms, self.convergence_problem)
        return self.result()

    def converge(self, deadline: float, problem) -> None:
        """Run until problem() is None (or fail at the deadline), then check linearizability."""
        while problem() is not None and self.now < deadline:
            self.run_until(self.now + 250)
        what = problem()
        if what is not None:
            raise SimFailure(what)
        result = check_history(self.workload.history)
        if result.ok is not True:
            verdict = "not linearizable" if result.ok is False else "linearizability check gave up"
            raise SimFailure(f"{verdict} on key {result.key!r}:\n{result.detail}")

    def convergence_problem(self) -> str | None:
        """None once there is one leader with a commit of its term, every member applied it
        with the same KV state, and every client operation resolved; else what is missing."""
        lead = self.leader()
        if lead is None:
            return "no leader after the heal phase"
        conf = lead.core.configuration
        target = lead.core.log.committed
        if lead.core.log.term(target) != lead.core.term:
            return f"leader {lead.id} has not committed an entry of its term {lead.core.term}"
        for nid in conf.ids:
            n = self.nodes[nid]
            if not n.alive:
                return f"member {nid} is down after the heal phase"
            if n.applied != target:
                return f"member {nid} applied {n.applied}, leader {lead.id} committed {target}"
            if kv_state(n.store) != kv_state(lead.store):
                return f"member {nid} has a different KV state than leader {lead.id}"
        pending = [op for op in self.workload.history if op.status == "pending"]
        if pending:
            return f"{len(pending)} client operations never resolved, e.g. {pending[0]}"
        return None

    def state_hash(self) -> str:
        h = hashlib.sha256()
        for nid in self.ids:
            n = self.nodes[nid]
            c = n.core
            h.update(repr((nid, n.alive, c.term, c.vote, c.role, c.log.committed, n.applied,
                           c.log.last_index(), kv_state(n.store))).encode())
        for op in self.workload.history:
            h.update(repr((op.client, op.key, op.kind, op.input, op.output, op.status, op.call,
                           None if math.isinf(op.ret) else op.ret)).encode())
        h.update(repr(asdict(self.net.stats)).encode())
        return h.hexdigest()

    def result(self) -> SimResult:
        ops = self.workload.history
        lost = sum(n.disk.lost_records for n in self.nodes.values())
        torn = sum(n.disk.torn_records for n in self.nodes.values())
        stats = {"crashes": self.nemesis.crashes, "partitions": self.nemesis.partitions,
                 "transfers": self.nemesis.transfers, "conf_changes": self.nemesis.conf_changes,
                 "lost_records": lost, "torn_records": torn,
                 "net": asdict(self.net.stats)}
        return SimResult(self.seed, self.opts, self.state_hash(), self.events, len(ops),
                         sum(1 for op in ops if op.status == "ok"), self.checker.elections,
                         self.checker.checks, self.now, stats)


def run_seed(seed: int, options: SimOptions | None = None) -> SimResult:
    """Run one seed; a SimFailure carries the seed and the replay command."""
    sim = Sim(seed, options)
    try:
        return sim.run()
    except SimFailure as err:
        raise SimFailure(f"seed {seed} failed at t={sim.now:.3f}ms: {err}\n"
                         f"replay: python -m tests.sim raft --seed {seed}\noptions: {sim.opts}") from None
