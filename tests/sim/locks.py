"""Sessions and KV locks in the Raft simulator: lock clients, the leader's side, and a lock checker.

How it works
------------
`LockSim` is the simulated world of world.py with its servers turned into `LockNode`s and a
second workload beside the KV one: `LockClient`s that register a node, create a session with a
short TTL, renew it, and take and give back one lock key (`kv_lock` / `kv_unlock`, the commands
`?acquire` and `?release` propose). Some clients die while holding the lock (they stop renewing,
as a crashed holder does) and come back with a new session; an operation whose outcome is
unknown makes the client give its session up the same way.

A `LockNode` does on the simulated clock what appliance/sessions/leader.py does on the agent's:
the FSM records lock-delays on its clock (seconds = simulated ms / 1000); while it leads, it
arms a 2 x TTL timer per session (every session gets a fresh one when it becomes leader), resets
one on a renewal, and proposes `session_destroy` when one runs out; before proposing a lock it
catches up (it must have applied its commit index, and committed an entry of its term) and
refuses a key still in lock-delay.

The checker (`LockChecker`) reads the store's history, recorded after every applied entry on
every server (through the Raft host's hooks):
  * the lock keys' (Session, LockIndex) at each index are the same on every server;
  * a key never passes from one session to another in one step;
  * LockIndex never goes down, and grows with each new holder (a fencing token);
  * a key released by an invalidation is not locked again by another session before its
    lock-delay ran out, counted from the earliest time any server applied the invalidation;
and the clients' view: the LockIndex values clients were granted grow in the order of the log, and
no two clients believe they hold the lock at the same moment, where a client believes it from
the acquire's answer until it sends its release, dies, learns its session is gone, or has had no
successful renewal for one TTL (what a client of Consul's API does).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import msgpack

from appliance.raft.host import HostHooks
from appliance.raft.messages import Entry, Role, Snapshot
from appliance.state.fsm import Applied

from .checkers import SimFailure
from .linearizability import Op
from .node import OpWaiter, SimNode
from .world import Sim, SimOptions

TTL_MS = 150.0
TTL = "0.15s"
LOCK_DELAY_MS = 60.0
LOCK_KEY = "locks/leader"
NODE = "lock-node"


class _NoWaiter:
    """The waiter of a write nobody waits for (the leader's TTL invalidations)."""

    def done(self) -> bool:
        return False

    def set_result(self, result: Any, /) -> None:
        pass

    def set_exception(self, exception: BaseException, /) -> None:
        pass


class LockHooks(HostHooks):
    """Feeds the lock checker every applied entry with the lock key's state before and after."""

    def __init__(self, node: LockNode) -> None:
        self.node = node
        self.before = lock_state(node)

    def restored(self, snap: Snapshot) -> None:
        self.before = lock_state(self.node)

    def applied(self, entry: Entry, applied: Applied | None, apply_s: float) -> None:
        if applied is None:
            return
        lock_sim: LockSim = self.node.sim  # type: ignore[assignment]
        lock_sim.checker_locks.on_apply(self.node, entry.index, applied.command or {}, self.before)
        self.before = lock_state(self.node)


class LockNode(SimNode):
    """A simulated server with the sessions' leader side (appliance/sessions/leader.py)."""

    timers: dict[str, float]
    seen: set[str]
    leading: bool

    def start(self) -> None:
        self.timers, self.seen, self.leading = {}, set(), False
        super().start()
        sim = self.sim
        self.host.machine.fsm.clock = lambda: sim.now / 1000.0  # type: ignore[attr-defined]
        self.host.hooks.append(LockHooks(self))

    def _handle(self, item: tuple) -> None:
        super()._handle(item)
        if item[0] == "tick" and self.alive:
            self._session_timers()

    def _client(self, op: Op) -> None:
        if not op.meta.get("lock"):
            super()._client(op)
            return
        core, sim = self.core, self.sim
        if op.kind == "RENEW":
            if core.role != Role.LEADER:
                sim.respond(op, "fail", hint=core.leader)
                return
            rec = self.store.sessions.get(op.input)
            if rec is not None and self.leading:
                self.timers[op.input] = sim.now + 2 * TTL_MS
            sim.respond(op, "ok", output=rec is not None)
            return
        if op.kind == "LOCK":
            if core.role != Role.LEADER:
                sim.respond(op, "fail", hint=core.leader)
                return
            log = core.log
            if self.applied < log.committed or log.term(log.committed) != core.term:
                sim.respond(op, "fail", hint=self.id)  # not caught up yet: the client asks again
                return
            until = self.store.lock_delays.get(LOCK_KEY)
            if until is not None and until > sim.now / 1000.0:
                sim.respond(op, "ok", output=False)
                return
            op.meta["proposed_at"] = sim.now
            if not getattr(sim, "unchecked_locks", False):  # the mutant leaves the race open
                op.input = {**op.input, "Checked": self.applied}
        self.host.propose(msgpack.packb(op.input, use_bin_type=True), OpWaiter(self, op))

    def _session_timers(self) -> None:
        sim, sessions = self.sim, self.store.sessions
        leading = self.core.role == Role.LEADER
        if leading and not self.leading:  # a new leader: every session gets a fresh 2 x TTL
            self.timers = {sid: sim.now + 2 * TTL_MS for sid, rec in sessions.items() if rec["TTL"]}
            self.seen = set(sessions)
        self.leading = leading
        if not leading:
            self.timers, self.seen = {}, set()
            return
        for sid in [s for s in self.timers if s not in sessions]:
            del self.timers[sid]
        for sid in sessions.keys() - self.seen:
            if sessions[sid]["TTL"]:
                self.timers[sid] = sim.now + 2 * TTL_MS
        self.seen = set(sessions)
        for sid, deadline in list(self.timers.items()):
            if deadline <= sim.now:
                self.timers[sid] = sim.now + TTL_MS  # armed again in case the write does not commit
                data = msgpack.packb({"Type": "session_destroy", "ID": sid}, use_bin_type=True)
                self.host.propose(data, _NoWaiter())


def lock_state(node: SimNode) -> tuple[str, int] | None:
    rec = node.store.kv.get(LOCK_KEY)
    return (rec.get("Session", ""), rec["LockIndex"]) if rec is not None else None


@dataclass
class Hold:
    client: str
    session: str
    lock_index: int
    apply_index: int
    start: float
    end: float = float("inf")


@dataclass
class LockClient:
    name: str
    gen: int = 0
    session: str = ""
    holding: Hold | None = None
    last_renew_ok: float = 0.0
    registered: bool = False
    leader_guess: str = ""
    dead_until: float = 0.0
    ops: int = 0
    sessions: list[str] = field(default_factory=list)


class LockWorkload:
    def __init__(self, sim: LockSim, rng: random.Random, clients: int) -> None:
        self.sim, self.rng = sim, rng
        self.clients = [LockClient(f"L{i}") for i in range(clients)]
        self.holds: list[Hold] = []
        self.stop_at = 0.0
        self.seq = 0

    def start(self, stop_at: float) -> None:
        self.stop_at = stop_at
        for c in self.clients:
            self.sim.schedule(self.rng.uniform(0, 50), self._next, c, c.gen)

    # ------------------------------------------------------------------ the client's loop

    def _send(self, c: LockClient, kind: str, inp: Any) -> None:
        sim = self.sim
        self.seq += 1
        op = Op(c.name, LOCK_KEY, kind, inp, sim.now, id=-self.seq, meta={"lock": True, "gen": c.gen})
        target = c.leader_guess if c.leader_guess in sim.nodes else self.rng.choice(sim.ids)
        op.meta["node"] = target
        c.ops += 1
        sim.schedule(self.rng.uniform(0.2, 2.0), sim.nodes[target].client_request, op)
        sim.schedule(sim.opts.client_timeout_ms, self._timeout, c, op)

    def _next(self, c: LockClient, gen: int) -> None:
        sim = self.sim
        if gen != c.gen:
            return
        if sim.now >= self.stop_at:
            self._let_go(c, sim.now)
            return
        if not c.registered:
            self._send(c, "REG", {"Type": "register", "Node": NODE, "Address": "10.0.0.1", "Checks": []})
        elif not c.session:
            sid = f"{c.name}-{len(c.sessions)}"
            c.sessions.append(sid)
            self._send(c, "SESS", {"Type": "session_create", "Session": {
                "ID": sid, "Name": c.name, "Node": NODE, "LockDelay": int(LOCK_DELAY_MS * 1e6), "Behavior": "release",
                "TTL": TTL, "NodeChecks": [], "ServiceChecks": None}})
        elif c.holding is not None:
            c.holding.end = sim.now  # it stops believing when it sends the release
            c.holding = None
            self._send(c, "UNLOCK", {"Type": "kv_unlock", "Key": LOCK_KEY, "Value": None, "Flags": 0,
                                     "Session": c.session})
        else:
            self._send(c, "LOCK", {"Type": "kv_lock", "Key": LOCK_KEY, "Value": c.name.encode(), "Flags": 0,
                                   "Session": c.session})

    def _renew(self, c: LockClient, gen: int, session: str) -> None:
        sim = self.sim
        if gen != c.gen or c.session != session:
            return
        if c.holding is not None and sim.now - c.last_renew_ok >= TTL_MS:
            self._let_go(c, c.last_renew_ok + TTL_MS)  # no renewal for a TTL: the lock counts as lost
        self._send(c, "RENEW", session)
        sim.schedule(TTL_MS / 3, self._renew, c, gen, session)

    def _let_go(self, c: LockClient, when: float) -> None:
        if c.holding is not None:
            c.holding.end = min(c.holding.end, when)
            c.holding = None

    def _abandon(self, c: LockClient, pause: float) -> None:
        """Give the session up (stop renewing it) and start again later with a new one."""
        self._let_go(c, self.sim.now)
        c.gen += 1
        c.session = ""
        self.sim.schedule(pause, self._next, c, c.gen)

    def respond(self, op: Op, status: str, output: Any, hint: str, index: int) -> None:
        self.sim.schedule(self.rng.uniform(0.2, 2.0), self._answer, op, status, output, hint, index)

    def _timeout(self, c: LockClient, op: Op) -> None:
        if op.status == "pending":
            self._answer(op, "unknown", None, "", 0)

    def _answer(self, op: Op, status: str, output: Any, hint: str, index: int) -> None:
        if op.status != "pending":
            return
        op.status = status
        c = next(cl for cl in self.clients if cl.name == op.client)
        sim = self.sim
        if op.meta["gen"] != c.gen:
            return
        gap = self.rng.uniform(5, 40)
        if status == "fail":
            c.leader_guess = hint
            if op.kind != "RENEW":
                sim.schedule(gap, self._next, c, c.gen)
            return
        if status != "ok":
            if op.kind != "RENEW":
                self._abandon(c, self.rng.uniform(50, 200))
            return
        c.leader_guess = op.meta["node"]
        if op.kind == "REG":
            c.registered = True
        elif op.kind == "SESS":
            c.session = op.input["Session"]["ID"]
            c.last_renew_ok = sim.now
            sim.schedule(TTL_MS / 3, self._renew, c, c.gen, c.session)
        elif op.kind == "RENEW":
            if output:
                c.last_renew_ok = sim.now
            else:
                self._abandon(c, self.rng.uniform(20, 80))  # the session is gone
            return
        elif op.kind == "LOCK" and output is True:
            lock_index = op.meta["lock_index"]
            c.holding = Hold(c.name, c.session, lock_index, index, sim.now)
            self.holds.append(c.holding)
            if self.rng.random() < 0.25:  # the holder dies: it stops renewing, its session expires
                c.holding.end = sim.now
                c.holding = None
                c.gen += 1
                c.session = ""
                sim.schedule(self.rng.uniform(3 * TTL_MS, 6 * TTL_MS), self._next, c, c.gen)
                return
            sim.schedule(self.rng.uniform(20, 120), self._next, c, c.gen)
            return
        sim.schedule(gap, self._next, c, c.gen)


class LockChecker:
    """The store's lock history and the clients' holds (module docstring)."""

    def __init__(self, sim: LockSim) -> None:
        self.sim = sim
        self.states: dict[int, tuple[str, int] | None] = {}
        self.invalidated: dict[int, float] = {}  # a session_destroy that released the key -> earliest apply
        self.acquired: dict[int, float] = {}  # a kv_lock that was answered -> when its leader proposed it

    def on_apply(self, node: SimNode, index: int, command: dict[str, Any], before: tuple[str, int] | None) -> None:
        state = lock_state(node)
        seen = self.states.setdefault(index, state)
        if seen != state:
            raise SimFailure(f"node {node.id} holds {state} for {LOCK_KEY} at {index}, another server {seen}")
        if command.get("Type") == "session_destroy" and before is not None and before[0] and (
                state is not None and not state[0]):
            when = self.invalidated.get(index)
            self.invalidated[index] = self.sim.now if when is None else min(when, self.sim.now)

    def on_lock_answer(self, op: Op, index: int) -> None:
        if "proposed_at" in op.meta:
            self.acquired.setdefault(index, op.meta["proposed_at"])

    def check(self, holds: list[Hold]) -> None:
        prev: tuple[str, int] | None = None
        invalidated_at: float | None = None  # the last release, when an invalidation made it
        for index in sorted(self.states):
            state = self.states[index]
            holder, prev_holder = state[0] if state else "", prev[0] if prev else ""
            if state is not None and prev is not None and state[1] < prev[1] and holder:
                raise SimFailure(f"LockIndex went down at {index}: {prev} -> {state}")
            if holder and prev_holder and holder != prev_holder:
                raise SimFailure(f"{LOCK_KEY} passed from {prev_holder} to {holder} at {index}")
            if holder and holder != prev_holder:
                if prev is not None and state is not None and state[1] <= prev[1]:
                    raise SimFailure(f"a new holder at {index} without a new LockIndex: {prev} -> {state}")
                proposed = self.acquired.get(index)
                if invalidated_at is not None and proposed is not None and proposed < invalidated_at + LOCK_DELAY_MS:
                    raise SimFailure(f"{holder} locked at {index} (proposed t={proposed:.3f}) within the "
                                     f"lock-delay of the invalidation applied at t={invalidated_at:.3f}")
            if prev_holder and not holder:
                invalidated_at = self.invalidated.get(index)
            prev = state
        by_index = sorted(holds, key=lambda h: h.apply_index)
        for a, b in zip(by_index, by_index[1:], strict=False):
            if b.session != a.session and b.lock_index <= a.lock_index:
                raise SimFailure(f"fencing token did not grow: {a} then {b}")
        by_start = sorted(holds, key=lambda h: h.start)
        for a, b in zip(by_start, by_start[1:], strict=False):
            if b.start < a.end:
                raise SimFailure(f"two clients held {LOCK_KEY} at once: {a} and {b}")


class LockSim(Sim):
    """world.Sim with LockNodes and the lock workload beside the KV one."""

    def __init__(self, seed: int, options: SimOptions | None = None, lock_clients: int = 3,
                 unchecked_locks: bool = False) -> None:
        super().__init__(seed, options)
        self.unchecked_locks = unchecked_locks  # mutant: locks carry no `Checked` index
        self.opts.clients = min(self.opts.clients, 2)  # a lighter KV load beside the lock clients
        self.checker_locks = LockChecker(self)
        for node in self.nodes.values():
            node.__class__ = LockNode
            node.timers, node.seen, node.leading = {}, set(), False
            node.host.machine.fsm.clock = lambda: self.now / 1000.0  # type: ignore[attr-defined]
            node.host.hooks.append(LockHooks(node))  # type: ignore[arg-type]
        self.locks = LockWorkload(self, self.rng_for("locks"), lock_clients)

    def respond(self, op: Op, status: str, output: Any = None, hint: str = "", index: int = 0) -> None:
        if not op.meta.get("lock"):
            super().respond(op, status, output, hint, index)
            return
        if op.kind == "LOCK" and status == "ok" and output is True:
            rec = self.nodes[op.meta["node"]].store.kv[LOCK_KEY]
            op.meta["lock_index"] = rec["LockIndex"]  # the state right after this entry applied
            self.checker_locks.on_lock_answer(op, index)
        self.locks.respond(op, status, output, hint, index)

    def run(self):  # type: ignore[override]
        o = self.opts
        self.locks.start(stop_at=o.chaos_ms + o.heal_ms * 0.4)
        result = super().run()
        self.checker_locks.check(self.locks.holds)
        result.stats["lock_holds"] = len(self.locks.holds)
        result.stats["invalidations"] = len(self.checker_locks.invalidated)
        return result


def run_lock_seed(seed: int, options: SimOptions | None = None, unchecked_locks: bool = False) -> Any:
    sim = LockSim(seed, options, unchecked_locks=unchecked_locks)
    try:
        return sim.run()
    except SimFailure as err:
        raise SimFailure(f"seed {seed} failed at t={sim.now:.3f}ms: {err}\n"
                         f"replay: LockSim({seed}).run() in tests/sim/locks.py\noptions: {sim.opts}") from None
