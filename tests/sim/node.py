"""One simulated server: a RaftCore, its disk, its FSM, and the host loop around them.

The host loop is the one a real driver runs (appliance/raft/core.py states the order): take a
Ready, send `messages`, write the records, and only when the (simulated) fsync completes, send
`messages_after_persist`, install the snapshot, apply committed entries to a real
`appliance.state.fsm.FSM`, serve read states and `advance()`. While the fsync is under way the
server is busy: messages, ticks and client requests wait in its inbox, exactly as they would
queue in a driver's mailbox. A crash loses the inbox, the in-memory state and whatever the disk
had not synced.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING

import msgpack

from appliance.raft.core import RaftCore, Ready
from appliance.raft.messages import (
    EntryType,
    Message,
    NotLeader,
    ProposalDropped,
    RaftError,
    Role,
)
from appliance.state.fsm import FSM
from appliance.state.snapshot import restore, snapshot
from appliance.state.store import Store

from .disk import SimDisk
from .linearizability import GET, SET, Op

if TYPE_CHECKING:
    from .world import Sim


def kv_state(store: Store) -> tuple:
    """A canonical view of the KV table (what state-machine safety compares)."""
    return tuple(sorted((k, r["Value"], r["ModifyIndex"], r["CreateIndex"]) for k, r in store.kv.items()))


class SimNode:
    def __init__(self, sim: Sim, node_id: str) -> None:
        self.sim = sim
        self.id = node_id
        self.disk = SimDisk()
        self.alive = False
        self.incarnation = 0
        self.core: RaftCore | None = None
        self.last_role = Role.FOLLOWER
        self.applied = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        sim = self.sim
        self.incarnation += 1
        initial = self.disk.initial()
        rng = random.Random(sim.derive_seed("node", self.id, self.incarnation))
        self.core = RaftCore(self.id, sim.core_config, rng, initial)
        snap = initial.snapshot
        self.store = restore(snap.data) if snap is not None else Store()
        self.fsm = FSM(self.store)
        self.applied = snap.index if snap is not None else 0
        self.busy = False
        self.inbox: deque[tuple] = deque()
        self.proposals: dict[int, tuple[int, Op]] = {}
        self.reads: dict[str, Op] = {}
        self.waiting_reads: list[tuple[int, Op]] = []
        self.last_role = Role.FOLLOWER
        self.alive = True
        sim.checker.on_start(self)
        sim.schedule(sim.rng_node_phase.uniform(0, sim.opts.tick_ms), self._tick, self.incarnation)

    def crash(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.disk.crash(self.sim.rng_disk, self.sim.opts.torn_probability)
        for _, op in self.proposals.values():
            self.sim.respond(op, "unknown")
        self.proposals.clear()
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

    def submit(self, item: tuple) -> None:
        if self.busy:
            self.inbox.append(item)
            return
        self._handle(item)
        self._process()

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        core = self.core
        if kind == "tick":
            core.tick()
        elif kind == "msg":
            core.step(item[1])
        elif kind == "client":
            self._client(item[1])
        else:
            try:
                item[1](core)
            except RaftError:
                pass
        self.sim.checker.after_step(self)

    def _client(self, op: Op) -> None:
        core = self.core
        if op.kind == GET:
            if self.sim.opts.unsafe_local_reads and core.is_leader:  # a planted bug (mutant)
                self._serve_read(op)
                return
            self.reads[str(op.id)] = op
            core.read_index(str(op.id))
            return
        cmd = {"Type": "kv_set", "Key": op.key, "Verb": "set"}
        if op.kind == SET:
            cmd["Value"] = op.input
        else:
            cmd.update(Verb="cas", Value=op.input[1], Index=op.meta["cas_index"])
        try:
            index, term = core.propose(msgpack.packb(cmd, use_bin_type=True))
        except NotLeader as err:
            self.sim.respond(op, "fail", hint=err.leader)
            return
        except ProposalDropped:
            self.sim.respond(op, "fail")
            return
        self.proposals[index] = (term, op)

    # ------------------------------------------------------------------ the host loop

    def _process(self) -> None:
        core = self.core
        while self.alive and not self.busy:
            if self.inbox:
                while self.inbox:
                    self._handle(self.inbox.popleft())
                continue
            if not core.has_ready():
                return
            rd = core.ready()
            self.sim.checker.on_ready(self, rd)
            for m in rd.messages:
                self.sim.net.send(m)
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
        sim, core = self.sim, self.core
        self.disk.sync()
        sim.checker.on_synced(self, rd)
        for m in rd.messages_after_persist:
            sim.net.send(m)
        if rd.snapshot is not None:
            self.store = restore(rd.snapshot.data)
            self.fsm = FSM(self.store)
            self.applied = rd.snapshot.index
            for index in [i for i in self.proposals if i <= rd.snapshot.index]:
                sim.respond(self.proposals.pop(index)[1], "unknown")
            sim.checker.on_restore(self, rd.snapshot)
        for e in rd.committed_entries:
            result = None
            if e.type == EntryType.COMMAND:
                result = self.fsm.apply(e.index, msgpack.unpackb(e.data, raw=False)).result
            if e.index != self.applied + 1:
                sim.checker.fail(f"node {self.id} applied {e.index} after {self.applied}")
            self.applied = e.index
            sim.checker.on_apply(self, e)
            pending = self.proposals.pop(e.index, None)
            if pending is not None:
                term, op = pending
                if term == e.term:
                    sim.respond(op, "ok", output=result, index=e.index)
                else:
                    sim.respond(op, "fail")  # another entry holds its index: it never commits
        for rs in rd.read_states:
            op = self.reads.pop(rs.request_id, None)
            if op is None:
                continue
            if rs.index < 0:
                sim.respond(op, "fail")
            else:
                self.waiting_reads.append((rs.index, op))
        core.advance(rd)
        sim.checker.after_advance(self)
        if self.waiting_reads:
            ready = [(i, op) for i, op in self.waiting_reads if i <= self.applied]
            self.waiting_reads = [(i, op) for i, op in self.waiting_reads if i > self.applied]
            for _, op in ready:
                self._serve_read(op)
        if core.should_snapshot():
            c = core.compact(self.applied, snapshot(self.store))
            self.disk.write_compaction(c)
            sim.checker.on_snapshot(self, c.snapshot)

    def _serve_read(self, op: Op) -> None:
        rec = self.store.kv.get(op.key)
        value = rec["Value"] if rec is not None else None
        self.sim.respond(op, "ok", output=value, index=rec["ModifyIndex"] if rec is not None else 0)
