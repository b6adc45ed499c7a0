"""The Raft driver's loop: the inbox drained into the core, each `Ready` processed in order.

Everything that changes the core goes through one inbox (a deque plus an event, base.py): ticks
from a timer task, messages from the transport, proposals, read-index requests. The driver task
drains the inbox into the core (`_input`), then, while the core has a `Ready`, processes it in
the durability order of core.py (`_process`):

  1. send `messages` (the leader's appends and heartbeats, pre-votes: nothing new to persist);
  2. persist the snapshot, entries and hard state with one fsync (`storage.save`, run in a worker
     thread so the event loop keeps serving; inputs that arrive meanwhile wait in the inbox and
     go into the next Ready together: group commit);
  3. send `messages_after_persist` (votes, append and heartbeat answers);
  4. restore the FSM from an installed snapshot, apply `committed_entries` in order, resolve
     proposals and read states;
  5. `advance()`, then take a snapshot if `snapshot_threshold` entries were applied since the
     last one (the snapshot file is durable before the log prefix it covers goes).

No input reaches the core between `ready()` and `advance()`: inputs only ever enter in the drain
step, and the task is the only caller.

An entry the FSM cannot apply (garbage bytes, an unknown or malformed command, a handler that
fails) never stops the driver: the FSM gives an error result for it (fsm.py), the driver logs one
ERROR line with the index and command type, counts it (`fsm_apply_error`, metrics.py), answers the
proposer with the error, and applies the next entry. Any other error in the loop is fatal: it is
logged, `on_fatal` is called, and the loop ends (fail-stop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from appliance.state.fsm import Applied
from appliance.state.snapshot import restore, snapshot

from ..core import RaftCore, Ready
from ..messages import EntryType, MsgType, NotLeader, RaftError, Role, Snapshot, bootstrap_state
from .base import Input
from .reads import ReadPathMixin
from .timing import RPC_KINDS, TimingMixin

log = logging.getLogger("agent.server.raft")

T = TypeVar("T")


class LoopMixin(ReadPathMixin, TimingMixin):
    """The task that owns the core: `_run` and `_ticker`, started by `RaftDriver.serve`."""

    async def _ticker(self) -> None:
        interval = self.config.tick_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self._post(("tick",))

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._drain_and_process()
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            self.fatal = err
            log.critical("raft stopped: %s", err, exc_info=True)
            self._leader_changed.set()
            if self.on_fatal is not None:
                self.on_fatal(err)
            raise

    async def _drain_and_process(self) -> None:
        while True:
            while self._inbox:
                self._input(self._inbox.popleft())
            if self._read_batch:
                self._read_index_batch()
            core = self.opened_core
            if not core.has_ready():
                return
            rd = core.ready()
            await self._process(core, rd)

    def _input(self, item: Input) -> None:
        core = self.opened_core
        match item:
            case ("tick",):
                core.tick()
                self._ticked(core)
            case ("step", m, arrived):
                if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT) and m.term >= core.term:
                    self._last_contact = time.monotonic()
                    self._heard_leader = True
                elif m.type in (MsgType.APPEND_RESP, MsgType.HEARTBEAT_RESP) and core.role == Role.LEADER:
                    self._answered(m, arrived)
                core.step(m)
                if m.type in RPC_KINDS:
                    self._rpcs_answered.append((RPC_KINDS[m.type], arrived))
            case ("propose", data, fut):
                if fut.done():
                    return
                try:
                    index, term = core.propose(data)
                except RaftError as err:
                    fut.set_exception(err)
                    return
                self._proposals[index] = (term, fut)
                self._proposed_at[index] = time.monotonic()
                self.metrics.proposal_accepted()
            case ("read", request_id):
                self._read_batch.append(request_id)  # asked for together at the end of the drain
            case ("unreachable", peer):
                core.report_unreachable(peer)
            case ("conf_change", change, fut):
                try:
                    index, term = core.propose_conf_change(change)
                except RaftError as err:
                    fut.set_exception(err)
                    return
                self._proposals[index] = (term, fut)  # resolved when the configuration entry applies
            case ("transfer", target, fut):
                try:
                    fut.set_result(core.transfer_leadership(target))
                except RaftError as err:
                    fut.set_exception(err)
            case ("bootstrap", configuration) if core.log.last_index() == 0 and core.log.snapshot is None:
                state = bootstrap_state(configuration)
                self.storage.bootstrap(state)
                self.core = RaftCore(self.node_id, self.config.core(), self.rng, state)
                log.info("bootstrapped: servers=%s", configuration.describe())

    async def _process(self, core: RaftCore, rd: Ready) -> None:
        send = self.transport.send if self.transport is not None else None
        if send is not None:
            for m in rd.messages:
                if m.type == MsgType.APPEND and m.entries:
                    self._append_sent(m)
                send(m)
        if rd.must_sync:
            started = time.monotonic()
            await self._storage_call(self.storage.save, rd)
            if rd.entries and core.role == Role.LEADER:
                self.metrics.dispatched((time.monotonic() - started) * 1000.0, len(rd.entries))
        if send is not None:
            for m in rd.messages_after_persist:
                send(m)
        self._rpcs_done()
        if rd.soft_state is not None:
            self._leader_changed.set()
            self._role_changed(rd.soft_state.role)
            if rd.soft_state.role == Role.LEADER:
                log.info("entering leader state: leader=%s term=%d", self.node_id, core.term)
            elif rd.soft_state.leader:
                self._last_contact = time.monotonic()
                self._heard_leader = True
        if rd.snapshot is not None:
            self._install(core, rd.snapshot)
        self._apply(core, rd)
        self._answer_reads(rd.read_states)
        core.advance(rd)
        self._release_readers()
        if core.should_snapshot():
            started = time.monotonic()
            compaction = core.compact(self.applied_index, snapshot(self.store))
            persisting = time.monotonic()
            self.metrics.snapshot_created((persisting - started) * 1000.0)
            await self._storage_call(self.storage.save_snapshot, compaction)
            self.metrics.snapshot_persisted((time.monotonic() - persisting) * 1000.0)

    def _install(self, core: RaftCore, snap: Snapshot) -> None:
        """A snapshot from the leader replaced the log: the store becomes its contents, and the
        proposals it covers fail (their outcome is unknown here)."""
        self._restore(snap.data)
        self.applied_index = snap.index
        for observer in self.observers:
            observer("restore", snap.index, None)
        self._proposed_at = {i: t for i, t in self._proposed_at.items() if i > snap.index}
        for index in [i for i in self._proposals if i <= snap.index]:
            _, fut = self._proposals.pop(index)
            if not fut.done():
                fut.set_exception(NotLeader(core.leader))  # outcome unknown: treat as failed

    def _apply(self, core: RaftCore, rd: Ready) -> None:
        """Apply the committed entries in order and answer their proposers."""
        for e in rd.committed_entries:
            result: Any = None
            if e.type == EntryType.COMMAND:
                started = time.monotonic()
                # this leader's own proposal was validated in propose_local: not checked twice
                own = self._proposals.get(e.index)
                applied = self.fsm.apply_entry(e.index, e.data, checked=own is not None and own[0] == e.term)
                if applied.failed:
                    self._apply_failed(e.index, applied)
                elif applied.command is not None:  # set whenever the entry was applied
                    self.metrics.fsm_applied(applied.command, (time.monotonic() - started) * 1000.0)
                result = applied.result
                for listener in self._listeners:
                    listener(applied.touched)
            self.applied_index = e.index
            for observer in self.observers:
                observer("entry", e.index, e.data if e.type == EntryType.COMMAND else None)
            proposed_at = self._proposed_at.pop(e.index, None)
            pending = self._proposals.pop(e.index, None)
            if pending is not None:
                term, fut = pending
                if proposed_at is not None and term == e.term:
                    self.metrics.committed((time.monotonic() - proposed_at) * 1000.0, len(rd.committed_entries))
                if fut.done():
                    continue
                if term == e.term:
                    fut.set_result(result)
                else:
                    fut.set_exception(NotLeader(core.leader))  # overwritten by another term

    def _apply_failed(self, index: int, applied: Applied) -> None:
        """An entry the FSM could not apply: one line, one count; the log goes on."""
        log.error("skipped a log entry the FSM cannot apply: index=%d type=%s error=%s",
                  index, applied.failed, applied.result)
        self.metrics.fsm_apply_error(applied.failed)

    async def _storage_call(self, fn: Callable[[T], None], arg: T) -> None:
        if not self.sync_in_thread:
            fn(arg)
            return
        # Shielded: if the driver is stopped meanwhile, stop() waits for the write to end before
        # it closes the files, instead of closing them under the worker thread.
        busy = self._storage_busy = asyncio.ensure_future(asyncio.to_thread(fn, arg))
        try:
            await asyncio.shield(busy)
        finally:
            if busy.done():
                self._storage_busy = None

    def _restore(self, data: bytes) -> None:
        """Replace the store's contents in place (HTTP, DNS and the FSM keep their reference)."""
        restored = restore(data)
        vars(self.store).clear()
        vars(self.store).update(vars(restored))
        keys = set(self.store.watch_index)
        for listener in self._listeners:
            listener(keys)
