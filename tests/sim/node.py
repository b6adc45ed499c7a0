"""One simulated server: the shipped Raft host (appliance/raft/host.py) on a simulated disk.

Each server runs `appliance.raft.host.RaftHost`, the host the agent's driver runs, with a real
`appliance.state.fsm.FSM` behind it: proposals and read batches bookkept by id, the snapshot
trigger, apply-and-resolve, all as shipped. This module is only the caller's side of it, as the
asyncio driver is in the agent: inputs go in, each Ready's records go to the simulated disk, and
only when the (simulated) fsync completes does `persisted()` run (messages after persist, install,
apply, answers, `advance()`). While the fsync is under way the server is busy: messages, ticks
and client requests wait in its inbox, exactly as they queue in the driver's inbox, and go into
the next Ready together. A crash loses the inbox, the in-memory state and whatever the disk had
not synced. The checkers watch the host through its hooks (`CheckHooks`).
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack

from appliance.raft.core import Compaction, RaftCore, Ready
from appliance.raft.host import HostHooks, RaftHost, StoreMachine
from appliance.raft.messages import Entry, Message, NotLeader, OutcomeUnknown, RaftError, Role, Snapshot
from appliance.state.fsm import Applied
from appliance.state.store import Store

from .disk import SimDisk
from .linearizability import GET, SET, Op

if TYPE_CHECKING:
    from .world import Sim


def kv_state(store: Store) -> tuple:
    """A canonical view of the KV table (what state-machine safety compares)."""
    return tuple(sorted((k, r["Value"], r["ModifyIndex"], r["CreateIndex"]) for k, r in store.kv.items()))


class OpWaiter:
    """A client operation as the host's waiter: its answer goes back to the client."""

    def __init__(self, node: SimNode, op: Op) -> None:
        self.node, self.op, self._done = node, op, False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any, /) -> None:
        self._done = True
        node, op = self.node, self.op
        if op.kind != GET:  # a write or CAS applied at the index the host has just applied
            node.sim.respond(op, "ok", output=result, index=node.applied)
        elif result < 0:
            node.sim.respond(op, "fail")  # no leader could give a read index
        else:
            node.serve_read(op)  # the read index is applied here

    def set_exception(self, exception: BaseException, /) -> None:
        self._done = True
        if isinstance(exception, OutcomeUnknown):
            self.node.sim.respond(self.op, "unknown")  # a snapshot covered its index
        elif isinstance(exception, NotLeader):
            self.node.sim.respond(self.op, "fail", hint=exception.leader)
        else:
            self.node.sim.respond(self.op, "fail")


class CheckHooks(HostHooks):
    """The simulator's checkers, fed from the host's steps."""

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.last_applied = node.applied

    def ready(self, core: RaftCore, rd: Ready, now: float) -> None:
        self.node.sim.checker.on_ready(self.node, rd)

    def restored(self, snap: Snapshot) -> None:
        self.last_applied = snap.index
        self.node.sim.checker.on_restore(self.node, snap)

    def applied(self, entry: Entry, applied: Applied | None, apply_s: float) -> None:
        checker = self.node.sim.checker
        if entry.index != self.last_applied + 1:
            checker.fail(f"node {self.node.id} applied {entry.index} after {self.last_applied}")
        self.last_applied = entry.index
        checker.on_apply(self.node, entry)

    def advanced(self, core: RaftCore) -> None:
        self.node.sim.checker.after_advance(self.node)

    def snapshot_taken(self, compaction: Compaction, took_s: float) -> None:
        self.node.sim.checker.on_snapshot(self.node, compaction.snapshot)


class SimNode:
    def __init__(self, sim: Sim, node_id: str) -> None:
        self.sim = sim
        self.id = node_id
        self.disk = SimDisk()
        self.alive = False
        self.incarnation = 0
        self.host: RaftHost | None = None
        self.store = Store()
        self.last_role = Role.FOLLOWER

    @property
    def core(self) -> RaftCore:
        return self.host.core

    @property
    def applied(self) -> int:
        return self.host.applied_index if self.host is not None else 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        sim = self.sim
        self.incarnation += 1
        rng = random.Random(sim.derive_seed("node", self.id, self.incarnation))
        core = RaftCore(self.id, sim.core_config, rng, self.disk.initial())
        self.store = Store()
        self.host = RaftHost(core, StoreMachine(self.store), send=sim.net.send, clock=lambda: sim.now / 1000)
        self.host.hooks.append(CheckHooks(self))
        self.busy = False
        self.inbox: deque[tuple] = deque()
        self.last_role = Role.FOLLOWER
        self.alive = True
        sim.checker.on_start(self)
        sim.schedule(sim.rng_node_phase.uniform(0, sim.opts.tick_ms), self._tick, self.incarnation)

    def crash(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.disk.crash(self.sim.rng_disk, self.sim.opts.torn_probability)
        self.host.fail_proposals(OutcomeUnknown())
        self.inbox.clear()

    # ------------------------------------------------------------------ inputs

    def _tick(self, incarnation: int) -> None:
        if not self.alive or incarnation != self.incarnation:
            return
        self.sim.schedule(self.sim.opts.tick_ms, self._tick, incarnation)
        self.submit(("tick",))

    def receive(self, m: Message) -> None:
        if self.alive:
            self.submit(("msg", m))

    def client_request(self, op: Op) -> None:
        if self.alive:
            self.submit(("client", op))

    def call(self, fn) -> None:
        """Run fn(core) as an input (used by the nemesis: transfers, membership changes)."""
        if self.alive:
            self.submit(("call", fn))

    def propose(self, data: bytes, waiter: Any) -> None:
        """Propose an encoded command as an input (the agent world's leader reconcile)."""
        if self.alive:
            self.submit(("propose", data, waiter))
        else:
            waiter.set_exception(NotLeader())

    def read_barrier(self, waiter: Any) -> None:
        """A read index as an input: `waiter` gets it once applied here (the reconcile's barrier)."""
        if self.alive:
            self.submit(("read", waiter))
        else:
            waiter.set_exception(NotLeader())

    def submit(self, item: tuple) -> None:
        if self.busy:
            self.inbox.append(item)
            return
        self._handle(item)
        self._process()

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        host = self.host
        if kind == "tick":
            host.tick()
        elif kind == "msg":
            host.step(item[1], self.sim.now / 1000)
        elif kind == "client":
            self._client(item[1])
        elif kind == "propose":
            host.propose(item[1], item[2])
        elif kind == "read":
            host.read(item[1])
        else:
            try:
                item[1](host.core)
            except RaftError:
                pass
        self.sim.checker.after_step(self)

    def _client(self, op: Op) -> None:
        host = self.host
        if op.kind == GET:
            if self.sim.opts.unsafe_local_reads and host.core.is_leader:  # a planted bug (mutant)
                self.serve_read(op)
                return
            host.read(OpWaiter(self, op))
            return
        cmd = {"Type": "kv_set", "Key": op.key, "Verb": "set"}
        if op.kind == SET:
            cmd["Value"] = op.input
        else:
            cmd.update(Verb="cas", Value=op.input[1], Index=op.meta["cas_index"])
        host.propose(msgpack.packb(cmd, use_bin_type=True), OpWaiter(self, op))

    # ------------------------------------------------------------------ the caller's side of the host

    def _process(self) -> None:
        while self.alive and not self.busy:
            if self.inbox:
                while self.inbox:
                    self._handle(self.inbox.popleft())
                continue
            rd = self.host.take_ready()
            if rd is None:
                return
            self.disk.write(rd)
            if rd.must_sync:
                self.busy = True
                delay = self.sim.rng_disk.uniform(self.sim.opts.fsync_min_ms, self.sim.opts.fsync_max_ms)
                self.sim.schedule(delay, self._synced, self.incarnation, rd)
                return
            self._finish(rd)

    def _synced(self, incarnation: int, rd: Ready) -> None:
        if not self.alive or incarnation != self.incarnation:
            return
        self._finish(rd)
        self.busy = False
        self._process()

    def _finish(self, rd: Ready) -> None:
        self.disk.sync()
        self.sim.checker.on_synced(self, rd)
        compaction = self.host.persisted(rd)
        if compaction is not None:
            self.disk.write_compaction(compaction)
            self.host.compaction_saved(compaction)

    def serve_read(self, op: Op) -> None:
        rec = self.store.kv.get(op.key)
        value = rec["Value"] if rec is not None else None
        self.sim.respond(op, "ok", output=value, index=rec["ModifyIndex"] if rec is not None else 0)
