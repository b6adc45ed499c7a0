"""The Raft driver's loop: the inbox drained into the host, each `Ready` persisted in a thread.

Everything that changes the core goes through one inbox (a deque plus an event, base.py): ticks
from a timer task, messages from the transport, proposals, read-index requests. The driver task
drains the inbox into the host (appliance/raft/host.py), then, while the host has a `Ready`, runs
its cycle in the durability order of core.py:

  1. `take_ready()` sends `messages` (the leader's appends and heartbeats, pre-votes: nothing new
     to persist) and starts one read-index round for the reads asked since the last one;
  2. the driver persists the snapshot, entries and hard state with one fsync (`storage.save`, run
     in a worker thread so the event loop keeps serving; inputs that arrive meanwhile wait in the
     inbox and go into the next Ready together: group commit);
  3. `persisted(rd)` sends `messages_after_persist` (votes, append and heartbeat answers),
     restores the FSM from an installed snapshot, applies `committed_entries` in order, resolves
     proposals and reads, `advance()`s, and hands back a snapshot to take when
     `snapshot_threshold` entries were applied since the last one, which the driver persists
     (the snapshot file is durable before the log prefix it covers goes).

No input reaches the core between `ready()` and `advance()`: inputs only ever enter in the drain
step, and the task is the only caller.

An entry the FSM cannot apply never stops the driver (the host logs it and goes on). Any other
error in the loop is fatal: it is logged, `on_fatal` is called, and the loop ends (fail-stop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from ..core import RaftCore
from ..messages import RaftError, Role, bootstrap_state
from .base import Input
from .reads import ReadPathMixin

log = logging.getLogger("agent.server.raft")

T = TypeVar("T")


class LoopMixin(ReadPathMixin):
    """The task that owns the host: `_run` and `_ticker`, started by `RaftDriver.serve`."""

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
        host = self.opened_host
        while True:
            while self._inbox:
                self._input(self._inbox.popleft())
            rd = host.take_ready()
            if rd is None:
                return
            if rd.must_sync:
                await self._storage_call(self.storage.save, rd)
            compaction = host.persisted(rd)
            if rd.soft_state is not None:
                self._leader_changed.set()
                if rd.soft_state.role == Role.LEADER:
                    log.info("entering leader state: leader=%s term=%d", self.node_id, host.core.term)
            if compaction is not None:
                await self._storage_call(self.storage.save_snapshot, compaction)
                host.compaction_saved(compaction)

    def _input(self, item: Input) -> None:
        host = self.opened_host
        match item:
            case ("tick",):
                host.tick()
            case ("step", m, arrived):
                host.step(m, arrived)
            case ("propose", data, fut):
                host.propose(data, fut)
            case ("read", fut):
                host.read(fut)  # one round for the reads of a drain, started by take_ready
            case ("unreachable", peer):
                host.core.report_unreachable(peer)
            case ("conf_change", change, fut):
                host.propose_conf_change(change, fut)  # resolved when the configuration entry applies
            case ("transfer", target, fut):
                try:
                    fut.set_result(host.core.transfer_leadership(target))
                except RaftError as err:
                    fut.set_exception(err)
            case ("bootstrap", configuration) if host.core.log.last_index() == 0 and host.core.log.snapshot is None:
                state = bootstrap_state(configuration)
                self.storage.bootstrap(state)
                host.core = RaftCore(self.node_id, self.config.core(), self.rng, state)
                log.info("bootstrapped: servers=%s", configuration.describe())

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
