"""Clients of the simulated cluster: a KV workload of reads, writes and compare-and-sets.

Each client runs one operation at a time against the server it believes leads (a random one at
first, then the leader hint it gets back), on a small key set so operations contend. Written
values are unique (`c2.17`), so every read names the write it saw. Outcomes follow raft-notes
§10.2: `ok` with the output; `fail` when the operation definitely did not happen (NotLeader before
appending, another entry committed at its index); `unknown` when it may have (timeout, crash,
leadership lost with the entry still in flight): an unknown write stays in the history with an
infinite return time, and the client continues as a new process. Invocation and return times are
the simulator's clock at the client.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .linearizability import CAS, GET, SET, Op

if TYPE_CHECKING:
    from .world import Sim


@dataclass
class Client:
    name: str
    process: int = 0
    seq: int = 0
    leader_guess: str = ""
    seen: dict[str, tuple[str | None, int]] = field(default_factory=dict)


class Workload:
    def __init__(self, sim: Sim, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.history: list[Op] = []
        self.owner: dict[int, Client] = {}
        self.stop_at = 0.0

    def start(self, stop_at: float) -> None:
        self.stop_at = stop_at
        for i in range(self.sim.opts.clients):
            client = Client(f"c{i}")
            self.sim.schedule(self.rng.uniform(0, self.sim.opts.op_gap_max_ms), self._next, client)

    def _next(self, c: Client) -> None:
        sim, rng = self.sim, self.rng
        if sim.now >= self.stop_at:
            return
        key = f"k{rng.randrange(sim.opts.keys)}"
        c.seq += 1
        value = f"{c.name}.{c.seq}"
        r = rng.random()
        meta: dict = {}
        if r < 0.4:
            kind, inp = GET, None
        elif r < 0.75:
            kind, inp = SET, value
        else:
            expected, index = c.seen.get(key, (None, 0))
            kind, inp = CAS, (expected, value)
            meta["cas_index"] = index
        op = Op(f"{c.name}/{c.process}", key, kind, inp, sim.now, id=len(self.history) + 1, meta=meta)
        self.history.append(op)
        self.owner[op.id] = c
        target = c.leader_guess if c.leader_guess in sim.nodes else rng.choice(sim.ids)
        op.meta["node"] = target
        sim.schedule(rng.uniform(0.2, 2.0), sim.nodes[target].client_request, op)
        sim.schedule(sim.opts.client_timeout_ms, self._timeout, op)

    def submit(self, client: str, node: str, kind: str, key: str, inp=None, cas_index: int = 0) -> Op:
        """A scripted operation (for hand-written scenarios)."""
        op = Op(client, key, kind, inp, self.sim.now, id=len(self.history) + 1,
                meta={"node": node, "cas_index": cas_index})
        self.history.append(op)
        self.sim.schedule(0.5, self.sim.nodes[node].client_request, op)
        self.sim.schedule(self.sim.opts.client_timeout_ms, self._timeout, op)
        return op

    def respond(self, op: Op, status: str, output, hint: str, index: int) -> None:
        self.sim.schedule(self.rng.uniform(0.2, 2.0), self._answer, op, status, output, hint, index)

    def _answer(self, op: Op, status: str, output, hint: str, index: int) -> None:
        if op.status != "pending":
            return
        c = self.owner.get(op.id)
        op.ret = self.sim.now
        if status == "ok":
            op.status, op.output = "ok", output
            if c is not None:
                c.leader_guess = op.meta["node"]
                if op.kind == GET:
                    c.seen[op.key] = (output, index)
                elif op.kind == SET or output is True:
                    c.seen[op.key] = (op.input if op.kind == SET else op.input[1], index)
        elif status == "fail":
            op.status = "fail"
            if c is not None:
                c.leader_guess = hint
        else:
            self._indeterminate(op)
            return
        if c is not None:
            self.sim.schedule(self.rng.uniform(0, self.sim.opts.op_gap_max_ms), self._next, c)

    def _timeout(self, op: Op) -> None:
        if op.status == "pending":
            self._indeterminate(op)

    def _indeterminate(self, op: Op) -> None:
        op.status = "fail" if op.kind == GET else "unknown"  # a read without answer changed nothing
        op.ret = math.inf
        c = self.owner.get(op.id)
        if c is not None:
            c.process += 1
            c.leader_guess = ""
            self.sim.schedule(self.rng.uniform(0, self.sim.opts.op_gap_max_ms), self._next, c)
