"""The Raft driver: one asyncio task that owns a RaftCore, its storage and the FSM.

How it works
------------
Everything that changes the core goes through one inbox (a deque plus an event): ticks from a
timer task, messages from the transport, proposals, read-index requests. The driver task drains
the inbox into the core, then, while the core has a `Ready`, processes it in the durability order
of core.py:

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

Proposals. `propose(command)` msgpack-encodes the command and hands it to the core, which gives
back (index, term). The future resolves when an entry at that index is applied: with the FSM's
result if the entry has that term (the FSM's CommandError is raised to the caller), with
`NotLeader` if another term's entry took the index (the proposal was overwritten and never
committed). Losing leadership leaves a proposal pending: its entry may still commit. A server that
is not the leader hands the command to `forward` (the transport sends it to the leader, which
proposes it and answers with the result), so a write succeeds whichever server receives it.

Reads. `read_barrier()` is the read index of Raft thesis §6.4: the leader confirms with a
heartbeat round that it still leads, returns its commit index, and the caller proceeds once this
server has applied that index; `?consistent` reads call it. Default reads are served locally.

Timing. The core counts ticks; a tick lasts `RaftConfig.tick_ms` (`heartbeat_timeout_ms` x
`raft_multiplier` / 10). A server that is the only voter of its configuration campaigns at once
on start instead of waiting for an election timeout.

Storage. `FileStorage` (storage.py, the WAL under `data_dir/raft`) for servers, `MemoryStorage`
below for `-dev` (nothing survives the process). A storage error is fatal: the process stops
(fail-stop), because an fsync that failed cannot be retried and trusted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import msgpack

from appliance.state.fsm import FSM, CommandError
from appliance.state.snapshot import restore, snapshot
from appliance.state.store import Store

from .config import RaftConfig
from .core import Compaction, RaftCore, Ready
from .messages import (
    NONE,
    Configuration,
    EntryType,
    HardState,
    InitialState,
    Message,
    MsgType,
    NotLeader,
    RaftError,
    Role,
    Server,
    bootstrap_state,
)

Listener = Callable[[set[str]], None]
log = logging.getLogger("agent.server.raft")

_ROLE_NAMES = {Role.FOLLOWER: "Follower", Role.PRE_CANDIDATE: "Candidate", Role.CANDIDATE: "Candidate",
               Role.LEADER: "Leader"}
MAX_INBOX = 10_000  # messages from peers beyond this are dropped (Raft tolerates loss)


class MemoryStorage:
    """Storage for -dev: the same calls as FileStorage, kept in the process only."""

    def __init__(self) -> None:
        self.state = InitialState()

    def load(self) -> InitialState:
        return self.state

    def bootstrap(self, state: InitialState) -> None:
        self.state = state

    def save(self, rd: Ready) -> None:
        pass

    def save_snapshot(self, compaction: Compaction) -> None:
        pass

    def close(self) -> None:
        pass


def is_empty(state: InitialState) -> bool:
    return not state.entries and state.snapshot is None and state.hard_state == HardState()


def encode_command(command: dict[str, Any]) -> bytes:
    return msgpack.packb(command, use_bin_type=True)


def decode_command(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, raw=False)


class RaftDriver:
    """The propose/apply interface of the agent, on a real Raft core."""

    def __init__(self, store: Store, *, node_id: str, address: str, storage: Any,
                 config: RaftConfig | None = None, rng: random.Random | None = None,
                 sync_in_thread: bool | None = None, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.store = store
        self.fsm = FSM(store)
        self.node_id = node_id
        self.address = address
        self.storage = storage
        self.config = config or RaftConfig()
        self.rng = rng or random.Random()
        # fsync in a worker thread (the loop keeps serving); memory storage has nothing to wait for
        self.sync_in_thread = not isinstance(storage, MemoryStorage) if sync_in_thread is None else sync_in_thread
        self.on_fatal = on_fatal
        self.transport: Any = None  # .send(Message), .forward(leader_id, command) -> result
        self.core: RaftCore | None = None
        self._listeners: list[Listener] = []
        self._inbox: collections.deque = collections.deque()
        self._wake = asyncio.Event()
        self._leader_changed = asyncio.Event()
        self._proposals: dict[int, tuple[int, asyncio.Future]] = {}
        self._reads: dict[str, asyncio.Future] = {}
        self._read_waiters: list[tuple[int, asyncio.Future]] = []
        self._read_ids = itertools.count(1)
        self._tasks: list[asyncio.Task] = []
        self._last_contact = time.monotonic()
        self.applied_index = 0
        self.dropped_messages = 0
        self.fatal: BaseException | None = None
        self._bootstrapping = False
        self._storage_busy: asyncio.Future | None = None

    # ------------------------------------------------------------------ life cycle

    def open(self, bootstrap: Configuration | None = None) -> None:
        """Load the stored state (bootstrapping `bootstrap` into an empty store) and build the core."""
        initial = self.storage.load()
        if is_empty(initial) and bootstrap is not None:
            initial = bootstrap_state(bootstrap)
            self.storage.bootstrap(initial)
            log.info("initial configuration: servers=%s", bootstrap.describe())
        self.core = RaftCore(self.node_id, self.config.core(), self.rng, initial)
        if initial.snapshot is not None:
            self._restore(initial.snapshot.data)
            self.applied_index = initial.snapshot.index

    def has_state(self) -> bool:
        c = self.core
        return c is not None and (c.log.last_index() > 0 or c.log.snapshot is not None)

    def bootstrap_now(self, configuration: Configuration) -> bool:
        """Bootstrap a server that started empty (bootstrap_expect); False if it has state."""
        if self.has_state() or self._bootstrapping:
            return False
        self._bootstrapping = True
        self._post(("bootstrap", configuration))
        return True

    def report_unreachable(self, peer: str) -> None:
        """The transport lost its connection to `peer`: the core probes it instead of pipelining."""
        self._post(("unreachable", peer))

    async def start(self) -> None:
        if self.core is None:
            self.open()
        if self.core.configuration.voters == (self.node_id,):
            self.core.campaign()  # the only voter: no one to wait for
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name="raft"),
                       loop.create_task(self._ticker(), name="raft-ticker")]
        self._wake.set()
        # Apply what the log already holds (restart) before anyone reads or writes.
        target = self.core.log.committed
        deadline = time.monotonic() + 30
        while self.applied_index < target and time.monotonic() < deadline and self.fatal is None:
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - already reported
                pass
        self._tasks = []
        if self._storage_busy is not None:
            with contextlib.suppress(Exception):
                await self._storage_busy
        for _, fut in self._proposals.values():
            if not fut.done():
                fut.set_exception(NotLeader(NONE))
        self._proposals.clear()
        self.storage.close()

    # ------------------------------------------------------------------ the propose/apply interface

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(touched_watch_keys)` after every applied entry."""
        self._listeners.append(listener)

    async def propose(self, command: dict[str, Any]) -> Any:
        """Commit and apply one command (on the leader, or forwarded to it); return the FSM's
        result, raise its CommandError, or NotLeader if it did not commit / no leader is known."""
        for attempt in range(5):
            leader = await self._wait_for_leader()
            if leader == self.node_id:
                return await self.propose_local(command)
            if self.transport is None:
                raise NotLeader(leader)
            try:
                return await self.transport.forward(leader, command)
            except NotLeader:
                if attempt == 4:
                    raise
                await asyncio.sleep(self.config.tick_ms / 1000)  # leadership moved: ask again
        raise NotLeader(self.leader_id)

    async def propose_local(self, command: dict[str, Any]) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self._post(("propose", encode_command(command), fut))
        result = await fut
        if isinstance(result, CommandError):
            raise result
        return result

    async def read_barrier(self, timeout_s: float = 10.0) -> int:
        """Linearizable read point (read index): returns once this server has applied it."""
        for _ in range(3):
            await self._wait_for_leader()
            fut = asyncio.get_running_loop().create_future()
            request_id = f"{self.node_id}/{next(self._read_ids)}"
            self._reads[request_id] = fut
            self._post(("read", request_id))
            try:
                index = await asyncio.wait_for(fut, timeout_s)
            finally:
                self._reads.pop(request_id, None)
            if index < 0:
                await asyncio.sleep(self.config.tick_ms / 1000)
                continue
            if self.applied_index < index:
                waiter = asyncio.get_running_loop().create_future()
                self._read_waiters.append((index, waiter))
                await asyncio.wait_for(waiter, timeout_s)
            return index
        raise NotLeader(self.leader_id)

    def step(self, message: Message) -> None:
        """A message from a peer (called by the transport)."""
        if len(self._inbox) >= MAX_INBOX:
            self.dropped_messages += 1
            return
        self._post(("step", message))

    async def _wait_for_leader(self) -> str:
        deadline = time.monotonic() + max(2.0, 3 * 2 * self.config.election_timeout_ms
                                          * self.config.raft_multiplier / 1000)
        while True:
            leader = self.leader_id
            if leader:
                return leader
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.fatal is not None:
                raise NotLeader(NONE)
            self._leader_changed.clear()
            try:
                await asyncio.wait_for(self._leader_changed.wait(), remaining)
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ status

    @property
    def leader_id(self) -> str:
        return self.core.leader if self.core is not None else NONE

    @property
    def is_leader(self) -> bool:
        return self.core is not None and self.core.role == Role.LEADER

    @property
    def known_leader(self) -> bool:
        return bool(self.leader_id)

    @property
    def last_contact_ms(self) -> int:
        if self.is_leader:
            return 0
        return int((time.monotonic() - self._last_contact) * 1000)

    def server_address(self, node_id: str) -> str:
        server = self.core.configuration.server(node_id) if self.core else None
        return server.address if server is not None and server.address else ""

    def leader_address(self) -> str:
        return self.server_address(self.leader_id) if self.leader_id else ""

    def servers(self) -> tuple[Server, ...]:
        return self.core.configuration.servers if self.core else ()

    def configuration(self) -> dict[str, Any]:
        """The latest Raft configuration, as /v1/operator/raft/configuration shows it."""
        core = self.core
        index, conf = core.log.latest_config()
        servers = []
        for s in conf.servers:
            if s.id == self.node_id:
                last = core.log.last_index()
            else:
                pr = core.progress.get(s.id) if core.role == Role.LEADER else None
                last = pr.match if pr is not None else 0
            servers.append({"ID": s.id, "Address": s.address, "Leader": s.id == core.leader,
                            "Voter": s.voter, "ProtocolVersion": "3", "LastIndex": last})
        return {"Servers": servers, "Index": index}

    def peers(self) -> list[str]:
        return [s.address for s in self.servers() if s.voter and s.address]

    def stats(self) -> dict[str, str]:
        """hashicorp/raft-style Stats(), as /v1/agent/self and `cairn info` show them."""
        core = self.core
        raft_log = core.log
        snap = raft_log.snapshot
        conf_index, conf = raft_log.latest_config()
        servers = " ".join(f"{{Suffrage:{s.suffrage} ID:{s.id} Address:{s.address}}}" for s in conf.servers)
        return {
            "applied_index": str(self.applied_index),
            "commit_index": str(raft_log.committed),
            "fsm_pending": "0",
            "last_contact": "0" if self.is_leader else f"{self.last_contact_ms}ms",
            "last_log_index": str(raft_log.last_index()),
            "last_log_term": str(raft_log.last_term()),
            "last_snapshot_index": str(snap.index if snap else 0),
            "last_snapshot_term": str(snap.term if snap else 0),
            "latest_configuration": f"[{servers}]",
            "latest_configuration_index": str(conf_index),
            "num_peers": str(max(0, len(conf.voters) - (1 if conf.is_voter(self.node_id) else 0))),
            "protocol_version": "3",
            "protocol_version_max": "3",
            "protocol_version_min": "0",
            "snapshot_version_max": "1",
            "snapshot_version_min": "0",
            "state": _ROLE_NAMES[core.role],
            "term": str(core.term),
        }

    # ------------------------------------------------------------------ the loop

    def _post(self, item: tuple) -> None:
        self._inbox.append(item)
        self._wake.set()

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
            if not self.core.has_ready():
                return
            rd = self.core.ready()
            await self._process(rd)

    def _input(self, item: tuple) -> None:
        core = self.core
        kind = item[0]
        if kind == "tick":
            core.tick()
        elif kind == "step":
            m: Message = item[1]
            if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT) and m.term >= core.term:
                self._last_contact = time.monotonic()
            core.step(m)
        elif kind == "propose":
            _, data, fut = item
            if fut.done():
                return
            try:
                index, term = core.propose(data)
            except RaftError as err:
                fut.set_exception(err)
                return
            self._proposals[index] = (term, fut)
        elif kind == "read":
            core.read_index(item[1])
        elif kind == "unreachable":
            core.report_unreachable(item[1])
        elif kind == "bootstrap":
            if core.log.last_index() == 0 and core.log.snapshot is None:
                state = bootstrap_state(item[1])
                self.storage.bootstrap(state)
                self.core = RaftCore(self.node_id, self.config.core(), self.rng, state)
                log.info("bootstrapped: servers=%s", item[1].describe())

    async def _process(self, rd: Ready) -> None:
        core = self.core
        send = self.transport.send if self.transport is not None else None
        if send is not None:
            for m in rd.messages:
                send(m)
        if rd.must_sync:
            await self._storage_call(self.storage.save, rd)
        if send is not None:
            for m in rd.messages_after_persist:
                send(m)
        if rd.soft_state is not None:
            self._leader_changed.set()
            if rd.soft_state.role == Role.LEADER:
                log.info("entering leader state: leader=%s term=%d", self.node_id, core.term)
            elif rd.soft_state.leader:
                self._last_contact = time.monotonic()
        if rd.snapshot is not None:
            self._restore(rd.snapshot.data)
            self.applied_index = rd.snapshot.index
            for index in [i for i in self._proposals if i <= rd.snapshot.index]:
                _, fut = self._proposals.pop(index)
                if not fut.done():
                    fut.set_exception(NotLeader(core.leader))  # outcome unknown: treat as failed
        for e in rd.committed_entries:
            result: Any = None
            if e.type == EntryType.COMMAND:
                applied = self.fsm.apply(e.index, decode_command(e.data))
                result = applied.result
                for listener in self._listeners:
                    listener(applied.touched)
            self.applied_index = e.index
            pending = self._proposals.pop(e.index, None)
            if pending is not None:
                term, fut = pending
                if fut.done():
                    continue
                if term == e.term:
                    fut.set_result(result)
                else:
                    fut.set_exception(NotLeader(core.leader))  # overwritten by another term
        for rs in rd.read_states:
            fut = self._reads.get(rs.request_id)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        core.advance(rd)
        if self._read_waiters:
            still = []
            for index, waiter in self._read_waiters:
                if index <= self.applied_index:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    still.append((index, waiter))
            self._read_waiters = still
        if core.should_snapshot():
            compaction = core.compact(self.applied_index, snapshot(self.store))
            await self._storage_call(self.storage.save_snapshot, compaction)

    async def _storage_call(self, fn: Callable[[Any], None], arg: Any) -> None:
        if not self.sync_in_thread:
            fn(arg)
            return
        # Shielded: if the driver is stopped meanwhile, stop() waits for the write to end before
        # it closes the files, instead of closing them under the worker thread.
        self._storage_busy = asyncio.ensure_future(asyncio.to_thread(fn, arg))
        try:
            await asyncio.shield(self._storage_busy)
        finally:
            if self._storage_busy.done():
                self._storage_busy = None

    def _restore(self, data: bytes) -> None:
        """Replace the store's contents in place (HTTP, DNS and the FSM keep their reference)."""
        restored = restore(data)
        vars(self.store).clear()
        vars(self.store).update(vars(restored))
        keys = set(self.store.watch_index)
        for listener in self._listeners:
            listener(keys)
