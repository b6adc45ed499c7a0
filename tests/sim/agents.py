"""The agent world: whole agents (gossip + Raft + FSM + the leader's reconcile) on one kernel.

How it works
------------
`AgentSim` is the Raft world (world.py: one heap and clock in milliseconds, one network, one
disk per server, the shipped `RaftHost` and FSM on every server) with gossip added on the same
heap and network:

* every host, server or client agent, runs the shipped sans-IO `Serf` (`GossipHost`): its
  datagrams and push-pull streams travel on the world's `SimNetwork` (`carry`), so one partition
  (`net.split`) cuts Raft and gossip alike, with the same delays and loss. Serf sees the world's
  clock in seconds;
* every server runs the leader's member reconcile (`SimReconciler`): the shipped
  `ReconcileSchedule` decides when to reconcile what, the shipped `plan_member` / `plan_name` /
  `plan_reaped` decide what to propose, against that server's own FSM store, exactly as
  `appliance.reconcile.MemberReconciler` does on the agent's event loop; a proposal goes through
  the server's `RaftHost` one at a time, as the agent awaits each one. Leadership is polled every
  `LEADER_POLL_S` and a gossip member event wakes the reconcile at once, as in the agent.

The scenario families and their checkers are in agent_scenarios.py.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from appliance.gossip import GossipConfig, Serf
from appliance.gossip.outputs import Send
from appliance.raft.messages import NotLeader
from appliance.reconcile import (
    LEADER_POLL_S,
    Command,
    ReconcileSchedule,
    plan_deregister,
    plan_name,
    plan_reaped,
)
from appliance.state.commands import CommandError, encode_command, validate

from .node import SimNode
from .world import Sim, SimOptions

GOSSIP_PORT = 8301
DATACENTER = "dc1"
VERSION = "1.17.0"
PROPOSE_TIMEOUT_MS = 5000.0  # the agent's proposals time out too; the pass is then retried


def gossip_config() -> GossipConfig:
    """memberlist's local profile, reconnecting every 5 s so a healed member returns promptly."""
    return GossipConfig.local(reconnect_interval_s=5.0)


class GossipHost:
    """One host's gossip: the shipped `Serf` on the world's network and clock."""

    def __init__(self, sim: AgentSim, name: str, index: int, tags: dict[str, str]) -> None:
        self.sim = sim
        self.name = name
        self.ip = f"10.0.{index // 250}.{index % 250 + 1}"
        self.addr = (self.ip, GOSSIP_PORT)
        self.tags = tags
        self.serf: Serf | None = None
        self.incarnation = 0
        self.wake_at: float | None = None
        self.listeners: list[Any] = []  # called with each SerfEvent

    @property
    def running(self) -> bool:
        return self.serf is not None

    def start(self, join: list[GossipHost]) -> None:
        sim = self.sim
        self.incarnation += 1
        rng = random.Random(sim.derive_seed("serf", self.name, self.incarnation))
        self.serf = Serf(self.name, self.ip, GOSSIP_PORT, sim.gossip_cfg, rng, sim.now / 1000, tags=self.tags)
        self.wake_at = None
        if join:
            self.serf.join([peer.addr for peer in join], sim.now / 1000)
        self.after()

    def stop(self) -> None:
        self.serf = None
        self.wake_at = None

    # -- inputs (each checks the host still runs the same Serf it was meant for)

    def _wake(self, serf: Serf, deadline: float) -> None:
        if serf is not self.serf or deadline != self.wake_at:
            return
        self.wake_at = None
        serf.tick(max(deadline, self.sim.now / 1000))
        self.after()

    def _packet(self, src: tuple[str, int], data: bytes) -> None:
        if self.serf is not None:
            self.serf.on_packet(src, data, self.sim.now / 1000)
            self.after()

    def _stream_request(self, src: GossipHost, serf: Serf, token: int, data: bytes, deadline_ms: float) -> None:
        if self.serf is None:  # refused: the connection fails at once
            self.sim.net.carry(self.name, src.name, src._stream_reply, serf, token, None, stream=True)
            return
        reply = self.serf.on_stream(src.addr, data, self.sim.now / 1000)
        self.after()
        if not self.sim.net.carry(self.name, src.name, src._stream_reply, serf, token, reply, stream=True):
            self.sim.at(deadline_ms, src._stream_reply, serf, token, None)

    def _stream_reply(self, serf: Serf, token: int, data: bytes | None) -> None:
        if serf is self.serf:
            serf.on_stream_reply(token, data, self.sim.now / 1000)
            self.after()

    # -- outputs

    def after(self) -> None:
        serf, sim = self.serf, self.sim
        if serf is None:
            return
        for out in serf.take_outputs():
            dst = sim.by_addr.get(out.dest)
            if type(out) is Send:
                if dst is not None:
                    sim.net.carry(self.name, dst.name, dst._packet, self.addr, out.data)
            elif dst is None or not sim.net.carry(self.name, dst.name, dst._stream_request, self, serf,
                                                  out.token, out.data, out.deadline * 1000, stream=True):
                sim.at(max(sim.now, out.deadline * 1000), self._stream_reply, serf, out.token, None)
        serf.core.take_events()  # memberlist's own events: Serf has turned them into its own
        for ev in serf.take_events():
            for listener in self.listeners:
                listener(ev)
        deadline = serf.next_deadline()
        if deadline is not None and (self.wake_at is None or deadline < self.wake_at):
            self.wake_at = deadline
            sim.at(max(deadline * 1000, sim.now), self._wake, serf, deadline)


class _Answer:
    """The waiter of one reconcile proposal or barrier: its outcome goes back to the reconciler."""

    def __init__(self, rec: SimReconciler, attempt: int, barrier: bool = False) -> None:
        self.rec, self.attempt, self.barrier, self._done = rec, attempt, barrier, False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any, /) -> None:
        self._done = True
        if self.barrier:  # a read index, -1 when no leader could give one
            self.rec._answered(self.attempt, None if result >= 0 else NotLeader())
        else:
            self.rec._answered(self.attempt, result if isinstance(result, CommandError) else None)

    def set_exception(self, exception: BaseException, /) -> None:
        self._done = True
        self.rec._answered(self.attempt, exception)


class SimReconciler:
    """`MemberReconciler.serve` on simulated time (see the module docstring)."""

    def __init__(self, sim: AgentSim, node: SimNode, gossip: GossipHost) -> None:
        self.sim, self.node, self.gossip = sim, node, gossip
        self.schedule = ReconcileSchedule()
        self.work: deque[tuple[str, str]] = deque()  # a full pass: ("member", name).., ("reaped", ""); or ("one", name)
        self.commands: deque[tuple[str, Command, str]] = deque()
        self.in_full = False
        self.busy = False
        self.attempt = 0  # the proposal or barrier in flight (a late or timed-out answer is ignored)
        self.barrier = False  # in flight: the read barrier before a full pass, not a proposal
        self.barrier_done = False  # the store has applied what was committed: the full pass may start
        self.generation = 0  # the poll chain of this run of the server
        self.proposed: list[tuple[float, str, Command]] = []  # (time, proposer, command): for the checkers
        gossip.listeners.append(self.on_event)

    def start(self) -> None:
        self.schedule = ReconcileSchedule()
        self.schedule.started(self.sim.now / 1000)
        self.work.clear()
        self.commands.clear()
        self.in_full = self.busy = self.barrier = self.barrier_done = False
        self.attempt += 1
        self.generation += 1
        self._poll(self.generation)

    def on_event(self, event: Any) -> None:
        if event.node:
            self.schedule.on_event(event.node)
            self.sim.schedule(0.0, self.step)

    def _poll(self, generation: int) -> None:
        if generation != self.generation or not self.node.alive:
            return
        self.step()
        self.sim.schedule(LEADER_POLL_S * 1000, self._poll, generation)

    def _plan_args(self) -> dict[str, str]:
        return {"datacenter": DATACENTER, "self_name": self.node.id, "version": VERSION}

    def step(self) -> None:
        """Run the loop until a proposal is in flight or nothing is left to do."""
        node, schedule, now_s = self.node, self.schedule, self.sim.now / 1000
        if self.busy or not node.alive or self.gossip.serf is None:
            return
        leader = node.core.is_leader
        schedule.observe(leader)
        if not leader:
            self.work.clear()
            self.commands.clear()
            self.in_full = self.barrier_done = False
            return
        serf, store = self.gossip.serf, node.store
        while not self.commands:
            if not self.work:
                if self.in_full:
                    self.in_full = False
                    schedule.end_full(True, now_s)
                if schedule.full_due(now_s):
                    if not self.barrier_done:  # as the agent: a read barrier first
                        self._propose(None)
                        return
                    self.barrier_done = False
                    schedule.begin_full()
                    self.in_full = True
                    self.work.extend(("member", m.name) for m in serf.member_list())
                    if schedule.reap_due(now_s):
                        self.work.append(("reaped", ""))
                elif schedule.pending:
                    self.work.append(("one", schedule.pending.pop()))
                else:
                    return
            kind, name = self.work.popleft()
            if kind == "reaped":
                names = (m.name for m in serf.member_list())
                for gone in plan_reaped(store, names, node.id):
                    self.commands.extend((gone, c, "reaped") for c in plan_deregister(store, gone, node.id))
                continue
            member = serf.member(name)
            if kind == "member" and member is None:
                continue  # reconcile_all plans only members it listed
            commands, reason = plan_name(store, name, member, **self._plan_args())
            self.commands.extend((name, c, reason) for c in commands)
        self._propose(self.commands[0][1])

    def _propose(self, cmd: Command | None) -> None:
        """Propose `cmd`, or ask for the read barrier (None); one at a time, with a timeout."""
        node = self.node
        self.busy = True
        self.barrier = cmd is None
        self.attempt += 1
        self.sim.schedule(PROPOSE_TIMEOUT_MS, self._answered, self.attempt, TimeoutError())
        if cmd is None:
            node.read_barrier(_Answer(self, self.attempt, barrier=True))
            return
        validate(cmd)
        self.proposed.append((self.sim.now, node.id, cmd))
        node.propose(encode_command(cmd), _Answer(self, self.attempt))
        self.sim.on_proposed(self, cmd)

    def _answered(self, attempt: int, err: BaseException | None) -> None:
        if attempt != self.attempt or not self.busy:
            return
        self.busy = False
        self.attempt += 1
        if self.barrier:  # a failed barrier is asked again on the next poll, as the agent's pass
            self.barrier = False
            self.barrier_done = err is None
            if err is None:  # answered inside the host's Ready cycle: go on as a new input
                self.sim.schedule(0.0, self.step)
            return
        if err is None:
            self.commands.popleft()
        else:  # as the agent: a failed full pass is retried whole, a failed member makes one due
            self.commands.clear()
            self.work.clear()
            if self.in_full:
                self.in_full = False
                self.schedule.end_full(False, self.sim.now / 1000)
            else:
                self.schedule.member_failed()
        self.step()


class AgentSim(Sim):
    """Servers s1..sN (Raft + gossip + reconcile) and client agents a1..aK (gossip only)."""

    def __init__(self, seed: int, options: SimOptions, agents: int) -> None:
        self.gossip_cfg = gossip_config()
        self.by_addr: dict[tuple[str, int], GossipHost] = {}
        self.gossip: dict[str, GossipHost] = {}
        self.reconcilers: dict[str, SimReconciler] = {}
        super().__init__(seed, options)
        hosts = list(self.ids) + [f"a{i}" for i in range(1, agents + 1)]
        for i, name in enumerate(hosts):
            tags = {"role": "consul", "port": "8300", "id": f"id-{name}", "dc": DATACENTER} if name in self.nodes \
                else {"role": "node", "id": f"id-{name}", "dc": DATACENTER}
            host = GossipHost(self, name, i, tags)
            self.gossip[name] = host
            self.by_addr[host.addr] = host
        for nid in self.ids:
            self.reconcilers[nid] = SimReconciler(self, self.nodes[nid], self.gossip[nid])
        first = self.gossip[hosts[0]]
        for i, name in enumerate(hosts):
            self.at(i * 20.0, self.start_host, name, [first] if name != first.name else [])

    @property
    def hosts(self) -> list[str]:
        return list(self.gossip)

    def start_host(self, name: str, join: list[GossipHost] | None = None) -> None:
        """Start (or restart) a host: its gossip joins via `join` (default: every other running host)."""
        if join is None:
            join = [h for h in self.gossip.values() if h.running and h.name != name]
        node = self.nodes.get(name)
        if node is not None and not node.alive:
            node.start()
        self.gossip[name].start(join)
        if name in self.reconcilers:
            self.reconcilers[name].start()

    def stop_host(self, name: str) -> None:
        """kill -9: gossip stops answering, a server's Raft crashes too."""
        self.gossip[name].stop()
        node = self.nodes.get(name)
        if node is not None:
            node.crash()

    def on_proposed(self, rec: SimReconciler, cmd: Command) -> None:
        """Scenarios hook here (a leader change in the middle of reconcile)."""

    def proposals(self) -> list[tuple[float, str, Command]]:
        """Every reconcile proposal so far, in time order: (time, proposer, command)."""
        return sorted((p for rec in self.reconcilers.values() for p in rec.proposed), key=lambda p: p[0])

    def catalog_leader(self) -> SimNode | None:
        lead = self.leader()
        return lead if lead is not None and self.gossip[lead.id].running else None

    def serf_status(self, store: Any, name: str) -> str | None:
        """The `serfHealth` status the catalog in `store` holds for a node (None: no check)."""
        for check in store.node_checks(name) if store.node(name) is not None else ():
            if check["CheckID"] == "serfHealth":
                return check["Status"]
        return None
