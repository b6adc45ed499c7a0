"""The Raft host: what runs around a `RaftCore` on every server, sans-IO.

One host runs in the agent (the asyncio driver, appliance/raft/driver/, is a thin loop around
it), in the simulator (tests/sim/node.py) and behind the transcripts (tests/transcripts/), so every
seed and every script runs the code that ships.

How it works
------------
The caller feeds inputs (`tick`, `step`, `propose`, `propose_conf_change`, `read`,
`wait_applied`) and then runs the Ready cycle in the durability order of core.py:

  rd = host.take_ready()      # flushes the read batch, takes a Ready, sends `messages`
  ... persist rd (snapshot, entries, hard state, one fsync) if rd.must_sync ...
  c = host.persisted(rd)      # sends `messages_after_persist`, installs a snapshot, applies,
                              # answers proposals and reads, advance(); maybe takes a snapshot
  ... if c: persist the compaction, then host.compaction_saved(c) ...

The host asks its caller for two effects only: *send* this message (`send`, called at once, never
blocks) and *persist* this Ready or Compaction (handed back, so the caller decides how long the
fsync takes: a worker thread, a simulated disk, a list). Time is `clock()` (seconds) and the
randomness is the core's `random.Random`: both passed in.

Proposals and reads are bookkept by id. `propose(data, waiter)` keeps the waiter under the entry's
index: it gets the state machine's result once an entry of the same term is applied there,
`NotLeader` if another term's entry took the index (never committed), `OutcomeUnknown` if an
installed snapshot covered the index (it may or may not have committed). `read(waiter)` joins the
batch of reads asked since the last `take_ready`; each batch is one read-index round (thesis §6.4:
one heartbeat round answers every read asked before it started). The waiter gets the read index
once this server has applied it (serve the read then), or -1 when no leader could answer (retry).
A waiter is anything with `done`, `set_result` and `set_exception` (an asyncio future is one).

The state machine is a `StateMachine` (`StoreMachine` for the agent's FSM and store). `observers`
see every applied entry and every restore (the replica feed streams them to client agents);
`hooks` (`HostHooks`) see each step for metrics (driver/timing.py) and checks (the simulator).
An entry the state machine cannot apply is logged once and skipped (fsm.py): the log goes on.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from appliance.state.fsm import FSM, Applied
from appliance.state.snapshot import restore, snapshot
from appliance.state.store import Store

from .core import Compaction, RaftCore, Ready
from .messages import ConfChange, Entry, EntryType, Message, NotLeader, OutcomeUnknown, RaftError, Snapshot, SoftState

log = logging.getLogger("agent.server.raft")

MAX_READ_BATCHES = 1024  # read-index rounds awaiting their answer (older ones are forgotten)

# (kind, index, command bytes or None) after each applied entry ("entry") and after a snapshot
# replaced the state ("restore")
Observer = Callable[[str, int, bytes | None], None]
# the watch keys an applied entry touched (every key after a restore)
Listener = Callable[[set[str]], None]


class Waiter(Protocol):
    """Who waits for a proposal's result or a read index (an asyncio future is one)."""

    def done(self) -> bool: ...

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class StateMachine(Protocol):
    """What the host applies the log to."""

    def apply(self, entry: Entry, checked: bool) -> Applied | None:
        """Apply one committed entry (None for entries that carry no command). `checked`: this
        server validated the command when it proposed it."""
        ...

    def restore(self, snap: Snapshot) -> None: ...

    def snapshot(self) -> bytes: ...


class StoreMachine:
    """The agent's state machine: the FSM over a `Store`, restored in place (HTTP, DNS and the FSM
    keep their reference), with `listeners` told which watch keys each entry touched."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fsm = FSM(store)
        self.listeners: list[Listener] = []

    def apply(self, entry: Entry, checked: bool) -> Applied | None:
        if entry.type != EntryType.COMMAND:
            return None
        applied = self.fsm.apply_entry(entry.index, entry.data, checked=checked)
        for listener in self.listeners:
            listener(applied.touched)
        return applied

    def restore(self, snap: Snapshot) -> None:
        restored = restore(snap.data)
        vars(self.store).clear()
        vars(self.store).update(vars(restored))
        keys = set(self.store.watch_index)
        for listener in self.listeners:
            listener(keys)

    def snapshot(self) -> bytes:
        return snapshot(self.store)


class HostHooks:
    """Hooks into each step of the host, for metrics and checks; each does nothing here. `now`
    is the host's clock when the step happened."""

    def stepping(self, core: RaftCore, m: Message, arrived: float) -> None:
        """`m` is about to enter the core (which still has its state from before)."""

    def ticked(self, core: RaftCore, now: float) -> None:
        """A tick went into the core."""

    def proposed(self, index: int) -> None:
        """The core accepted a proposal at `index`."""

    def ready(self, core: RaftCore, rd: Ready, now: float) -> None:
        """A Ready was taken; nothing of it is sent yet."""

    def persisted(self, core: RaftCore, rd: Ready, synced_s: float | None, now: float) -> None:
        """The caller made `rd` durable (`synced_s`: how long it took, None if there was nothing
        to sync) and its `messages_after_persist` are sent."""

    def role_changed(self, core: RaftCore, soft: SoftState, now: float) -> None:
        """The role or the known leader changed (the Ready's soft state)."""

    def restored(self, snap: Snapshot) -> None:
        """A snapshot from the leader replaced the state machine."""

    def applied(self, entry: Entry, applied: Applied | None, apply_s: float) -> None:
        """`entry` is applied (`applied` is the state machine's outcome of a command)."""

    def committed(self, latency_s: float, batch: int) -> None:
        """A proposal of this leader was applied `latency_s` after it was accepted."""

    def advanced(self, core: RaftCore) -> None:
        """`advance()` acknowledged the Ready."""

    def snapshot_taken(self, compaction: Compaction, took_s: float) -> None:
        """The host took a snapshot; the caller persists it next."""

    def snapshot_saved(self, compaction: Compaction, took_s: float) -> None:
        """The caller persisted that snapshot."""


# index -> (term, waiter, when this leader accepted it: None for configuration changes)
Pending = tuple[int, Waiter, float | None]


class RaftHost:
    """The host of one Raft core (see the module docstring)."""

    def __init__(self, core: RaftCore, machine: StateMachine, *, send: Callable[[Message], None],
                 clock: Callable[[], float], hooks: Iterable[HostHooks] = ()) -> None:
        self.core = core
        self.machine = machine
        self.send = send
        self.clock = clock
        self.hooks = list(hooks)
        self.observers: list[Observer] = []
        self.applied_index = 0
        self._proposals: dict[int, Pending] = {}
        self._batch: list[Waiter] = []
        self._read_batches: dict[str, list[Waiter]] = {}
        self._applied_waiters: list[tuple[int, Waiter]] = []
        self._batch_ids = itertools.count(1)
        self._taken_at = 0.0
        self._compacting_at = 0.0
        snap = core.log.snapshot
        if snap is not None:  # a restart: the state machine starts from the stored snapshot
            machine.restore(snap)
            self.applied_index = snap.index

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        self.core.tick()
        now = self.clock()
        for hook in self.hooks:
            hook.ticked(self.core, now)

    def step(self, m: Message, arrived: float) -> None:
        """A message from a peer, and when it arrived (for the metrics)."""
        for hook in self.hooks:
            hook.stepping(self.core, m, arrived)
        self.core.step(m)

    def propose(self, data: bytes, waiter: Waiter) -> None:
        """Append a command; `waiter` gets its result (see the module docstring) or the core's
        refusal (NotLeader, ProposalDropped) at once."""
        if waiter.done():
            return
        try:
            index, term = self.core.propose(data)
        except RaftError as err:
            waiter.set_exception(err)
            return
        self._proposals[index] = (term, waiter, self.clock())
        for hook in self.hooks:
            hook.proposed(index)

    def propose_conf_change(self, change: ConfChange, waiter: Waiter) -> None:
        """A membership change; `waiter` gets None once its entry is applied here."""
        try:
            index, term = self.core.propose_conf_change(change)
        except RaftError as err:
            waiter.set_exception(err)
            return
        self._proposals[index] = (term, waiter, None)

    def read(self, waiter: Waiter) -> None:
        """A linearizable read: `waiter` gets the read index once it is applied here (or -1)."""
        self._batch.append(waiter)

    def wait_applied(self, index: int, waiter: Waiter) -> None:
        """`waiter` gets `index` once this server has applied it."""
        self._answer_read(waiter, index)

    def fail_proposals(self, err: RaftError) -> None:
        """The host stops: every proposal still waiting fails with `err`."""
        for _, waiter, _ in self._proposals.values():
            if not waiter.done():
                waiter.set_exception(err)
        self._proposals.clear()

    # ------------------------------------------------------------------ the Ready cycle

    def take_ready(self) -> Ready | None:
        """Start the read batch's round, take the core's Ready (None if it has nothing) and send
        what may go before it is durable. The caller persists it, then calls `persisted`."""
        if self._batch:
            self._start_read_round()
        core = self.core
        if not core.has_ready():
            return None
        rd = core.ready()
        now = self.clock()
        for hook in self.hooks:
            hook.ready(core, rd, now)
        for m in rd.messages:
            self.send(m)
        self._taken_at = self.clock()
        return rd

    def persisted(self, rd: Ready) -> Compaction | None:
        """`rd` is durable: send the rest, install, apply, answer, advance. Returns the snapshot
        to persist when `snapshot_threshold` entries were applied since the last one (the caller
        persists it, then calls `compaction_saved`)."""
        core = self.core
        now = self.clock()
        synced_s = now - self._taken_at if rd.must_sync else None
        for m in rd.messages_after_persist:
            self.send(m)
        for hook in self.hooks:
            hook.persisted(core, rd, synced_s, now)
        if rd.soft_state is not None:
            for hook in self.hooks:
                hook.role_changed(core, rd.soft_state, now)
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        self._apply(rd.committed_entries)
        for rs in rd.read_states:
            for waiter in self._read_batches.pop(rs.request_id, ()):
                self._answer_read(waiter, rs.index)
        core.advance(rd)
        for hook in self.hooks:
            hook.advanced(core)
        self._release_readers()
        if not core.should_snapshot():
            return None
        started = self.clock()
        compaction = core.compact(self.applied_index, self.machine.snapshot())
        self._compacting_at = self.clock()
        for hook in self.hooks:
            hook.snapshot_taken(compaction, self._compacting_at - started)
        return compaction

    def compaction_saved(self, compaction: Compaction) -> None:
        took_s = self.clock() - self._compacting_at
        for hook in self.hooks:
            hook.snapshot_saved(compaction, took_s)

    # ------------------------------------------------------------------ applying

    def _install(self, snap: Snapshot) -> None:
        """A snapshot from the leader replaced the log: the state machine becomes its contents,
        and the proposals it covers have an unknown outcome."""
        self.machine.restore(snap)
        self.applied_index = snap.index
        for observer in self.observers:
            observer("restore", snap.index, None)
        for hook in self.hooks:
            hook.restored(snap)
        for index in [i for i in self._proposals if i <= snap.index]:
            _, waiter, _ = self._proposals.pop(index)
            if not waiter.done():
                waiter.set_exception(OutcomeUnknown(self.core.leader))

    def _apply(self, entries: tuple[Entry, ...]) -> None:
        """Apply the committed entries in order and answer their proposers."""
        for e in entries:
            pending = self._proposals.pop(e.index, None)
            ours = pending is not None and pending[0] == e.term
            started = self.clock()
            applied = self.machine.apply(e, ours)
            apply_s = self.clock() - started
            if applied is not None and applied.failed:
                log.error("skipped a log entry the FSM cannot apply: index=%d type=%s error=%s",
                          e.index, applied.failed, applied.result)
            self.applied_index = e.index
            for observer in self.observers:
                observer("entry", e.index, e.data if e.type == EntryType.COMMAND else None)
            for hook in self.hooks:
                hook.applied(e, applied, apply_s)
            if pending is None:
                continue
            _, waiter, proposed_at = pending
            if ours and proposed_at is not None:
                for hook in self.hooks:
                    hook.committed(self.clock() - proposed_at, len(entries))
            if waiter.done():
                continue
            if ours:
                waiter.set_result(applied.result if applied is not None else None)
            else:
                waiter.set_exception(NotLeader(self.core.leader))  # overwritten by another term

    # ------------------------------------------------------------------ reads

    def _start_read_round(self) -> None:
        """One read-index round for every read asked since the last Ready. Each was asked before
        the round starts, so the index it returns is a valid read point for all of them (thesis
        §6.4; etcd batches its linearizable reads the same way)."""
        batch_id = f"{self.core.id}/b{next(self._batch_ids)}"
        self._read_batches[batch_id] = self._batch
        self._batch = []
        while len(self._read_batches) > MAX_READ_BATCHES:  # answers lost with a leader: forget
            del self._read_batches[next(iter(self._read_batches))]
        self.core.read_index(batch_id)

    def _answer_read(self, waiter: Waiter, index: int) -> None:
        """A read may be served once this server has applied its read index (-1: no read index
        here, the reader retries)."""
        if index < 0 or index <= self.applied_index:
            if not waiter.done():
                waiter.set_result(index)
        else:
            self._applied_waiters.append((index, waiter))

    def _release_readers(self) -> None:
        """Answer whoever waits for an index this server has now applied."""
        if not self._applied_waiters:
            return
        still = []
        for index, waiter in self._applied_waiters:
            if index <= self.applied_index:
                if not waiter.done():
                    waiter.set_result(index)
            else:
                still.append((index, waiter))
        self._applied_waiters = still

    @property
    def pending_read_rounds(self) -> int:
        """Read-index rounds started and not answered yet."""
        return len(self._read_batches)
