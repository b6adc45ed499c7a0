"""Whole-agent scenario families on the agent world (agents.py), with their checkers.

Each family is a function of a seed; the seed picks the victim, the fault and its timing, the
network's delays and loss. A run first *settles* (every host started, one leader, every member
registered with `serfHealth` passing in the leader's catalog), then:

* `gossip-failure`: a client agent or a follower server fails in gossip (killed, or cut off from
  everyone). The leader's catalog must show its `serfHealth` critical within the gossip detection
  bound (gossip_sim.detection_bound_s) plus `RECONCILE_SLACK_S`; then it comes back (restarted
  and rejoining, or the cut healed so it refutes its death) and must be passing again within the
  gossip heal bound (gossip_sim.heal_bound_s) plus the slack.
* `leader-change`: a client agent fails, and when the leader proposes its critical check (right
  then, or a few milliseconds later) leadership changes: a transfer, the leader killed, or the
  leader cut off from everyone. A leader must show the member critical within an election plus the
  detection bound; the old leader and the member then come back.
* `partition`: every host, servers and client agents, is split in two for 2-8 s (the leader on
  either side), with a KV workload running throughout; then the cut heals.

Every family ends with the same convergence check (`AgentRun.problem`), given the Raft world's
heal allowance: one leader that has committed in its term, every server applied the same state
(Raft world's `convergence_problem`), every client operation resolved, and the catalog matches
gossip: every host is alive in the leader's gossip view and `serfHealth` passing in every server's
catalog. Then the client history must be linearizable (so no acknowledged write was lost), and the
Raft invariant checkers have run after every step all along.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from appliance.gossip.serf import MemberStatus

from .agents import AgentSim
from .checkers import SimFailure
from .gossip_sim import detection_bound_s, heal_bound_s
from .world import SimOptions

FAMILIES = ("gossip-failure", "leader-change", "partition")
RECONCILE_SLACK_S = 3.0  # a member event reaches the leader's reconcile, commits and applies
SETTLE_MS = 20_000.0
POLL_MS = 50.0


@dataclass
class AgentResult:
    family: str
    seed: int
    detail: str
    virtual_ms: float
    events: int
    state_hash: str

    def summary(self) -> str:
        return (f"{self.family} seed={self.seed} {self.detail} t={self.virtual_ms / 1000:.1f}s "
                f"events={self.events} hash={self.state_hash[:16]}")


def agent_options(rng: random.Random, clients: int) -> SimOptions:
    return SimOptions(pool=3, initial_voters=3, tick_ms=10.0, election_ticks=10,
                      delay_max_ms=rng.choice([2.0, 5.0, 15.0]), loss=rng.choice([0.0, 0.0, 0.01]),
                      fsync_max_ms=rng.choice([1.0, 4.0]), clients=clients, keys=2, heal_ms=10_000.0)


class AgentRun:
    def __init__(self, family: str, seed: int) -> None:
        self.family = family
        self.seed = seed
        rng = random.Random(f"agents-{family}-{seed}")
        self.rng = rng
        agents = rng.randint(2, 4)
        self.sim = AgentSim(seed, agent_options(rng, 3 if family == "partition" else 0), agents)
        self.detail = ""

    # ------------------------------------------------------------------ helpers

    def fail(self, what: str) -> None:
        raise SimFailure(what)

    def wait_for(self, what: str, cond, within_ms: float) -> float:
        """Run until cond() holds; return the time it took, or fail after within_ms."""
        sim = self.sim
        start = sim.now
        while not cond():
            if sim.now - start > within_ms:
                self.fail(f"{what}: not within {within_ms / 1000:.1f}s")
            sim.run_until(sim.now + POLL_MS)
        return sim.now - start

    def leader_status(self, name: str) -> str | None:
        lead = self.sim.catalog_leader()
        return None if lead is None else self.sim.serf_status(lead.store, name)

    def bounds_ms(self) -> tuple[float, float]:
        cfg, n = self.sim.gossip_cfg, len(self.sim.hosts)
        return ((detection_bound_s(cfg, n) + RECONCILE_SLACK_S) * 1000,
                (heal_bound_s(cfg, n) + RECONCILE_SLACK_S) * 1000)

    def problem(self) -> str | None:
        sim = self.sim
        raft = sim.convergence_problem()
        if raft is not None:
            return raft
        lead = sim.catalog_leader()
        if lead is None:
            return "the leader's gossip is not running"
        serf = sim.gossip[lead.id].serf
        for name in sim.hosts:
            if not sim.gossip[name].running:
                return f"host {name} is down at the end"
            member = serf.member(name)
            if member is None or member.status != MemberStatus.ALIVE:
                return f"leader {lead.id} sees {name} as {member.status.name if member else 'unknown'} in gossip"
            for nid in sim.ids:
                status = sim.serf_status(sim.nodes[nid].store, name)
                if status != "passing":
                    return f"server {nid}'s catalog has serfHealth {status} for alive member {name}"
        return None

    def converge(self) -> None:
        self.sim.converge(self.sim.now + self.sim.opts.heal_ms * 4, self.problem)

    def settle(self) -> None:
        """Every host knows every other alive in gossip, and the leader's catalog has each passing.
        (A member that died before some server ever heard of it is a reaped node to that server,
        deregistered at its next full pass, not a failed one: not what the families test.)"""
        sim = self.sim

        def everyone_knows_everyone() -> bool:
            for host in sim.gossip.values():
                serf = host.serf
                if serf is None:
                    return False
                for name in sim.hosts:
                    member = serf.member(name)
                    if member is None or member.status != MemberStatus.ALIVE:
                        return False
            return True

        self.wait_for("the cluster settles (every host alive in every gossip view, passing in the catalog)",
                      lambda: everyone_knows_everyone() and all(self.leader_status(h) == "passing" for h in sim.hosts),
                      SETTLE_MS)

    def state_hash(self) -> str:
        h = hashlib.sha256(self.sim.state_hash().encode())
        for nid in self.sim.ids:
            store = self.sim.nodes[nid].store
            h.update(repr([(n, self.sim.serf_status(store, n)) for n in self.sim.hosts]).encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ families

    def fault(self, victim: str, how: str) -> None:
        sim = self.sim
        if how == "kill":
            sim.stop_host(victim)
        else:
            sim.net.split([victim], sim.hosts)

    def recover(self, victim: str, how: str) -> None:
        if how == "kill":
            self.sim.start_host(victim)
        else:
            self.sim.net.heal()

    def gossip_failure(self) -> None:
        sim, rng = self.sim, self.rng
        lead = sim.leader()
        victim = rng.choice([h for h in sim.hosts if lead is None or h != lead.id])
        how = rng.choice(["kill", "isolate"])
        detect_ms, heal_ms = self.bounds_ms()
        self.fault(victim, how)
        took = self.wait_for(f"{victim} ({how}) critical in the leader's catalog",
                             lambda: self.leader_status(victim) == "critical", detect_ms)
        sim.run_until(sim.now + rng.uniform(0, 5000))
        self.recover(victim, how)
        back = self.wait_for(f"{victim} passing again after {'rejoin' if how == 'kill' else 'refute'}",
                             lambda: self.leader_status(victim) == "passing", heal_ms)
        self.detail = f"victim={victim} {how} critical_after={took / 1000:.1f}s passing_after={back / 1000:.1f}s"

    def leader_change(self) -> None:
        sim, rng = self.sim, self.rng
        victim = rng.choice([h for h in sim.hosts if h not in sim.nodes])
        how = rng.choice(["transfer", "kill", "isolate", "isolate"])
        lag_ms = rng.choice([0.0, 0.0, 0.5, 2.0, 10.0])
        changed: list[str] = []
        terms: list[int] = []

        def on_proposed(rec, cmd) -> None:
            if changed or cmd.get("Node") != victim or cmd.get("Checks", [{}])[0].get("Status") != "critical":
                return
            changed.append(rec.node.id)
            terms.append(rec.node.core.term)
            sim.schedule(lag_ms, change, rec.node.id)

        def transfer(old: str, term: int, target: str) -> None:
            # A transfer whose TimeoutNow was lost is abandoned after an election timeout and the
            # old leader stays; the operator asks again, as after Consul's "leadership transfer
            # timeout", while the old leader still leads in the same term.
            node = sim.nodes[old]
            if node.alive and node.core.is_leader and node.core.term == term:
                node.call(lambda core: core.transfer_leadership(target))
                sim.schedule(sim.opts.election_ticks * sim.opts.tick_ms * 2, transfer, old, term, target)

        def change(old: str) -> None:
            if how == "transfer":
                transfer(old, terms[0], rng.choice([nid for nid in sim.ids if nid != old]))
            elif how == "kill":
                sim.stop_host(old)
            else:
                sim.net.split([old], sim.hosts)

        sim.on_proposed = on_proposed  # type: ignore[method-assign]
        detect_ms, _ = self.bounds_ms()
        sim.stop_host(victim)
        self.wait_for(f"the leader proposes {victim} critical", lambda: bool(changed), detect_ms)
        term = terms[0]
        election_ms = sim.opts.election_ticks * sim.opts.tick_ms * 20
        self.wait_for(f"a new term after the leader change ({how})",
                      lambda: (lead := sim.leader()) is not None and lead.core.term > term, election_ms)
        took = self.wait_for(f"{victim} critical after the leader change ({how})",
                             lambda: self.leader_status(victim) == "critical", election_ms + detect_ms)
        new = sim.leader()
        proposers = sorted({nid for _, nid, cmd in sim.proposals() if cmd.get("Node") == victim})
        sim.run_until(sim.now + rng.uniform(0, 3000))
        if how == "kill":
            sim.start_host(changed[0])
        elif how == "isolate":
            sim.net.heal()
        sim.start_host(victim)
        self.detail = (f"victim={victim} {how}+{lag_ms}ms leader {changed[0]}@{term} -> "
                       f"{new.id if new else None}@{new.core.term if new else 0} proposed_by={proposers} "
                       f"critical_after={took / 1000:.1f}s")

    def partition(self) -> None:
        sim, rng = self.sim, self.rng
        lead = sim.leader()
        servers = list(sim.ids)
        rng.shuffle(servers)
        if lead is not None and rng.random() < 0.5:  # the leader on the minority side
            servers.remove(lead.id)
            servers.insert(0, lead.id)
        side = set(servers[:1]) | {h for h in sim.hosts if h not in sim.nodes and rng.random() < 0.5}
        hold_ms = rng.uniform(2000, 8000)
        sim.workload.start(stop_at=sim.now + hold_ms + 4000)
        sim.run_until(sim.now + rng.uniform(0, 500))
        sim.net.split(side, sim.hosts)
        sim.run_until(sim.now + hold_ms)
        critical = sorted({cmd["Node"] for _, _, cmd in sim.proposals()
                           if cmd.get("Checks") and cmd["Checks"][0]["Status"] == "critical"})
        sim.net.heal()
        self.detail = (f"minority={sorted(side)} for {hold_ms / 1000:.1f}s ops={len(sim.workload.history)} "
                       f"went_critical={critical}")

    def run(self) -> AgentResult:
        self.settle()
        getattr(self, self.family.replace("-", "_"))()
        self.converge()
        return AgentResult(self.family, self.seed, self.detail, self.sim.now, self.sim.events, self.state_hash())


def run_agents(family: str, seed: int) -> AgentResult:
    """Run one seed of a family; a SimFailure carries the seed and the replay command."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    run = AgentRun(family, seed)
    try:
        return run.run()
    except SimFailure as err:
        raise SimFailure(f"{family} seed {seed} failed at t={run.sim.now:.1f}ms: {err}\n"
                         f"replay: python -m tests.sim {family} --seed {seed}") from None
