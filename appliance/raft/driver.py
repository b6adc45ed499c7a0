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

An entry the FSM cannot apply (garbage bytes, an unknown or malformed command, a handler that
fails) never stops the driver: the FSM gives an error result for it (fsm.py), the driver logs one
ERROR line with the index and command type, counts it (`fsm_apply_error`, metrics.py), answers the
proposer with the error, and applies the next entry.

Proposals. `propose(command)` checks the command against its definition (state/commands.py; on
the leader, in `propose_local`, where forwarded proposals land too: a command that does not match
is refused with an InvalidCommand naming the field, and nothing is appended), msgpack-encodes it
and hands it to the core, which gives back (index, term). The future resolves when an entry at
that index is applied: with the FSM's result if the entry has that term (the FSM's CommandError
is raised to the caller), with `NotLeader` if another term's entry took the index (the proposal
was overwritten and never committed). Losing leadership leaves a proposal pending: its entry may
still commit. A server that is not the leader hands the command to `forward` (the transport sends
it to the leader, which proposes it and answers with the result), so a write succeeds whichever
server receives it. A command whose `Type` is in `leader_ops` (operator requests,
driver_autopilot.py) takes the same route but is run by that handler on the leader instead of
being appended. `propose_conf_change` and `transfer_leadership` hand membership changes and
leadership transfer to the core.

Reads. `read_barrier()` is the read index of Raft thesis §6.4: the leader confirms with a
heartbeat round that it still leads, returns its commit index, and the caller proceeds once this
server has applied that index; `?consistent` reads call it. Reads asked between two drains of
the inbox share one read-index round. `read_point(consistency)` is what
the HTTP reads call: stale reads are served at once, default reads at once on the leader, and on
another server once it has applied the leader's commit index (asked with a READ_INDEX frame, no
heartbeat round: Consul's default leader read). `observers` see every applied entry; the replica
feed (appliance/client/feed.py) streams them to client agents.

Timing. The core counts ticks; a tick lasts `RaftConfig.tick_ms` (`heartbeat_timeout_ms` x
`raft_multiplier` / 10). A server that is the only voter of its configuration campaigns at once
on start instead of waiting for an election timeout.

Metrics. The driver reads the clock around what Consul times (the fsync of the leader's entries,
each FSM apply, a proposal until it is applied, a follower's answer to an RPC, an AppendEntries
round trip, snapshots) and hands the milliseconds to its `metrics` hook (metrics.py), which the
agent replaces by one that records Consul's `consul.raft.*` names (appliance.telemetry).

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

from appliance.lifecycle import TASK_STATUS_IGNORED, Lifecycle, TaskStatus
from appliance.state.commands import encode_command, validate
from appliance.state.fsm import FSM, Applied, CommandError
from appliance.state.snapshot import restore, snapshot
from appliance.state.store import Store

from .config import RaftConfig
from .core import Compaction, RaftCore, Ready
from .messages import (
    NONE,
    ConfChange,
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
from .metrics import RaftMetrics

Listener = Callable[[set[str]], None]
log = logging.getLogger("agent.server.raft")

_ROLE_NAMES = {Role.FOLLOWER: "Follower", Role.PRE_CANDIDATE: "Candidate", Role.CANDIDATE: "Candidate",
               Role.LEADER: "Leader"}
# the RPCs a server answers, timed from arrival to answer (consul.raft.rpc.*)
_RPC_KINDS = {MsgType.APPEND: "appendEntries", MsgType.VOTE: "requestVote", MsgType.SNAPSHOT: "installSnapshot"}
MAX_APPENDS_TIMED = 256  # AppendEntries awaiting an answer, per peer, kept for their round-trip time
MAX_READ_BATCHES = 1024  # read-index rounds awaiting their answer
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


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it ("1.5s", "23.456ms", "2m3s"), the form of
    hashicorp/raft's `last_contact` stat."""
    ns = max(0, int(seconds * 1e9))
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.3f}".rstrip("0").rstrip(".") + "µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.6f}".rstrip("0").rstrip(".") + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = f"{rest / 1e9:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


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
        # Read-index requests drained together share one read-index round (one heartbeat round):
        # batch id -> the request ids it answers.
        self._read_batch: list[str] = []
        self._read_batches: dict[str, list[str]] = {}
        self._serving: Lifecycle | None = None  # start()/stop() only
        self._last_contact = time.monotonic()
        self.applied_index = 0
        self.dropped_messages = 0
        self.fatal: BaseException | None = None
        self._bootstrapping = False
        self._storage_busy: asyncio.Future | None = None
        # (kind, index, command bytes or None) after each applied entry ("entry") and after a
        # snapshot replaced the store ("restore"): the replica feed streams them to client agents
        self.observers: list[Callable[[str, int, bytes | None], None]] = []
        # Metrics (metrics.py): the driver takes the times, `metrics` records them.
        self.metrics: RaftMetrics = RaftMetrics()
        self._heard_leader = False
        self._proposed_at: dict[int, float] = {}  # index -> when this leader accepted it
        self._rpcs_answered: list[tuple[str, float]] = []  # RPCs stepped since the last Ready
        self._appends_sent: dict[str, collections.deque] = {}  # peer -> (last index, sent at, entries)
        self._peer_contact: dict[str, float] = {}  # peer -> when it last answered this leader
        # command Type -> async handler run on the leader instead of proposing (driver_autopilot.py)
        self.leader_ops: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self._ticks = 0
        self._counted_role = Role.FOLLOWER
        self._lease_ticks = self.config.core().leader_lease_ticks

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

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """Run the driver loop and its ticker until cancelled. Reports started once the entries
        the log already holds (a restart) are applied, before anyone reads or writes; on the way
        down, fails what is still waiting for a commit and closes the storage."""
        if self.core is None:
            self.open()
        self.metrics.role_changed("follower")  # every server starts as a follower
        if self.core.configuration.voters == (self.node_id,):
            self.core.campaign()  # the only voter: no one to wait for
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._run(), name="raft")
                tasks.create_task(self._ticker(), name="raft-ticker")
                self._wake.set()
                target = self.core.log.committed
                deadline = time.monotonic() + 30
                while self.applied_index < target and time.monotonic() < deadline and self.fatal is None:
                    await asyncio.sleep(0.005)
                task_status.started()
        finally:
            if self._storage_busy is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await self._storage_busy
            for _, fut in self._proposals.values():
                if not fut.done():
                    fut.set_exception(NotLeader(NONE))
            self._proposals.clear()
            self.storage.close()

    async def start(self) -> None:
        """serve() in the background, for tests that drive a driver by hand; stop() ends it."""
        self._serving = Lifecycle(stop_timeout_s=30.0)  # a snapshot being written finishes first
        await self._serving.start("raft", self.serve)

    async def stop(self) -> None:
        if self._serving is not None:
            await self._serving.stop()
            self._serving = None

    # ------------------------------------------------------------------ the propose/apply interface

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(touched_watch_keys)` after every applied entry."""
        self._listeners.append(listener)

    async def propose(self, command: dict[str, Any]) -> Any:
        """Commit and apply one command (on the leader, or forwarded to it); return the FSM's
        result, raise its CommandError, or NotLeader if it did not commit / no leader is known."""
        if type(command) is not dict:
            validate(command)  # raises InvalidCommand: a command is a map
        start = time.monotonic()
        try:
            return await self._propose(command)
        finally:
            self.metrics.command_done(command, (time.monotonic() - start) * 1000.0)

    async def _propose(self, command: dict[str, Any]) -> Any:
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
        """Propose on this server (the leader): local proposals and forwarded ones land here."""
        kind = command.get("Type") if type(command) is dict else None
        op = self.leader_ops.get(kind) if type(kind) is str else None
        if op is not None:  # an operator request for the leader (driver_autopilot.py), maybe forwarded
            return await op(command)
        validate(command)  # InvalidCommand before anything enters the log
        data = encode_command(command)
        fut = asyncio.get_running_loop().create_future()
        self._post(("propose", data, fut))
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

    async def wait_applied(self, index: int, timeout_s: float = 10.0) -> None:
        """Return once this server has applied `index` (TimeoutError after `timeout_s`)."""
        if self.applied_index >= index:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._read_waiters.append((index, waiter))
        await asyncio.wait_for(waiter, timeout_s)

    async def leader_read_index(self, consistent: bool) -> int:
        """On the leader: the index a read must wait for. `consistent` confirms leadership with a
        heartbeat round (read_barrier); default mode answers the commit index without it (Consul's
        default leader read), unless this leader has not committed an entry of its term yet (its
        commit index may then lag the cluster's: thesis §6.4 step 1)."""
        core = self.core
        if not self.is_leader:
            raise NotLeader(self.leader_id)
        if consistent or core.log.term(core.log.committed) != core.term:
            return await self.read_barrier()
        return core.log.committed

    async def cluster_read_index(self, consistent: bool) -> int:
        """The leader's read index, asked of the leader when this server is not it."""
        for attempt in range(3):
            leader = await self._wait_for_leader()
            try:
                if leader == self.node_id:
                    return await self.leader_read_index(consistent)
                if self.transport is None:
                    raise NotLeader(leader)
                return await self.transport.read_index(leader, consistent)
            except NotLeader:
                if attempt == 2:
                    raise
                await asyncio.sleep(self.config.tick_ms / 1000)  # leadership moved: ask again
        raise NotLeader(self.leader_id)

    async def read_point(self, consistency: str) -> None:
        """Wait until this server may serve a read of `consistency` ("stale", "leader" = Consul's
        default, "consistent"): stale at once, default on the leader at once, otherwise once this
        server has applied the leader's read index."""
        if consistency == "stale":
            return
        if consistency == "consistent":
            await self.read_barrier()
            return
        if self.is_leader:
            return
        await self.wait_applied(await self.cluster_read_index(False))

    async def propose_conf_change(self, change: ConfChange) -> None:
        """On the leader: make one membership change; returns once its entry is committed and
        applied here (ConfChangeRefused, NotLeader otherwise)."""
        fut = asyncio.get_running_loop().create_future()
        self._post(("conf_change", change, fut))
        await fut

    async def transfer_leadership(self, target: str | None = None) -> str:
        """On the leader: start handing leadership to `target` (or the most up-to-date voter);
        returns the target at once (TransferRefused, NotLeader otherwise)."""
        fut = asyncio.get_running_loop().create_future()
        self._post(("transfer", target, fut))
        return await fut

    def peer_last_contact_s(self, peer: str) -> float | None:
        """On the leader: seconds since `peer` last answered it (None if it never did)."""
        at = self._peer_contact.get(peer)
        return None if at is None else max(0.0, time.monotonic() - at)

    def step(self, message: Message) -> None:
        """A message from a peer (called by the transport)."""
        if len(self._inbox) >= MAX_INBOX:
            self.dropped_messages += 1
            return
        self._post(("step", message, time.monotonic()))

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

    def last_contact(self) -> str:
        """hashicorp/raft's `last_contact` stat: "0" on the leader, "never", or a Go duration."""
        if self.is_leader:
            return "0"
        if not self._heard_leader:
            return "never"
        return go_duration(time.monotonic() - self._last_contact)

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
            "fsm_pending": str(max(0, raft_log.committed - self.applied_index)),
            "last_contact": self.last_contact(),
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
            if self._read_batch:
                self._read_index_batch()
            if not self.core.has_ready():
                return
            rd = self.core.ready()
            await self._process(rd)

    def _input(self, item: tuple) -> None:
        core = self.core
        kind = item[0]
        if kind == "tick":
            core.tick()
            self._ticks += 1
            if core.role == Role.LEADER and self._ticks % self._lease_ticks == 0:
                self._sample_follower_contact()
        elif kind == "step":
            m: Message = item[1]
            if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT) and m.term >= core.term:
                self._last_contact = time.monotonic()
                self._heard_leader = True
            elif m.type in (MsgType.APPEND_RESP, MsgType.HEARTBEAT_RESP) and core.role == Role.LEADER:
                self._answered(m, item[2])
            core.step(m)
            if m.type in _RPC_KINDS:
                self._rpcs_answered.append((_RPC_KINDS[m.type], item[2]))
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
            self._proposed_at[index] = time.monotonic()
            self.metrics.proposal_accepted()
        elif kind == "read":
            self._read_batch.append(item[1])  # asked for together at the end of the drain
        elif kind == "unreachable":
            core.report_unreachable(item[1])
        elif kind == "conf_change":
            _, change, fut = item
            try:
                index, term = core.propose_conf_change(change)
            except RaftError as err:
                fut.set_exception(err)
                return
            self._proposals[index] = (term, fut)  # resolved when the configuration entry applies
        elif kind == "transfer":
            _, target, fut = item
            try:
                fut.set_result(core.transfer_leadership(target))
            except RaftError as err:
                fut.set_exception(err)
        elif kind == "bootstrap" and core.log.last_index() == 0 and core.log.snapshot is None:
            state = bootstrap_state(item[1])
            self.storage.bootstrap(state)
            self.core = RaftCore(self.node_id, self.config.core(), self.rng, state)
            log.info("bootstrapped: servers=%s", item[1].describe())

    async def _process(self, rd: Ready) -> None:
        core = self.core
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
        if self._rpcs_answered:
            now = time.monotonic()
            for rpc, arrived in self._rpcs_answered:
                self.metrics.rpc_handled(rpc, (now - arrived) * 1000.0)
            self._rpcs_answered = []
        if rd.soft_state is not None:
            self._leader_changed.set()
            self._role_changed(rd.soft_state.role)
            if rd.soft_state.role == Role.LEADER:
                log.info("entering leader state: leader=%s term=%d", self.node_id, core.term)
            elif rd.soft_state.leader:
                self._last_contact = time.monotonic()
                self._heard_leader = True
        if rd.snapshot is not None:
            self._restore(rd.snapshot.data)
            self.applied_index = rd.snapshot.index
            for observer in self.observers:
                observer("restore", rd.snapshot.index, None)
            self._proposed_at = {i: t for i, t in self._proposed_at.items() if i > rd.snapshot.index}
            for index in [i for i in self._proposals if i <= rd.snapshot.index]:
                _, fut = self._proposals.pop(index)
                if not fut.done():
                    fut.set_exception(NotLeader(core.leader))  # outcome unknown: treat as failed
        for e in rd.committed_entries:
            result: Any = None
            if e.type == EntryType.COMMAND:
                started = time.monotonic()
                # this leader's own proposal was validated in propose_local: not checked twice
                own = self._proposals.get(e.index)
                applied = self.fsm.apply_entry(e.index, e.data, checked=own is not None and own[0] == e.term)
                if applied.failed:
                    self._apply_failed(e.index, applied)
                else:
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
        for rs in rd.read_states:
            for request_id in self._read_batches.pop(rs.request_id, (rs.request_id,)):
                fut = self._reads.get(request_id)
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
            started = time.monotonic()
            compaction = core.compact(self.applied_index, snapshot(self.store))
            persisting = time.monotonic()
            self.metrics.snapshot_created((persisting - started) * 1000.0)
            await self._storage_call(self.storage.save_snapshot, compaction)
            self.metrics.snapshot_persisted((time.monotonic() - persisting) * 1000.0)

    def _apply_failed(self, index: int, applied: Applied) -> None:
        """An entry the FSM could not apply: one line, one count; the log goes on."""
        log.error("skipped a log entry the FSM cannot apply: index=%d type=%s error=%s",
                  index, applied.failed, applied.result)
        self.metrics.fsm_apply_error(applied.failed)

    # ------------------------------------------------------------------ metrics (metrics.py)

    def _role_changed(self, role: Role) -> None:
        if role == self._counted_role:
            return  # the same role with another leader: not a transition
        if role == Role.LEADER:
            now = time.monotonic()
            self._peer_contact = {v: now for v in self.core.voters() if v != self.node_id}
            self._appends_sent = {}
            if self._counted_role not in (Role.PRE_CANDIDATE, Role.CANDIDATE):
                self.metrics.role_changed("candidate")  # elected within one Ready (a single voter)
        elif role == Role.CANDIDATE and self._counted_role == Role.PRE_CANDIDATE:
            self._counted_role = role
            return  # pre-vote won: still the same candidacy
        self._counted_role = role
        self.metrics.role_changed("leader" if role == Role.LEADER else "follower" if role == Role.FOLLOWER
                                  else "candidate")

    def _append_sent(self, m: Message) -> None:
        sent = self._appends_sent.get(m.to)
        if sent is None:
            sent = self._appends_sent[m.to] = collections.deque(maxlen=MAX_APPENDS_TIMED)
        sent.append((m.index + len(m.entries), time.monotonic(), len(m.entries)))

    def _answered(self, m: Message, arrived: float) -> None:
        """A follower answered the leader: its last contact, and the AppendEntries it acknowledges."""
        self._peer_contact[m.frm] = arrived
        sent = self._appends_sent.get(m.frm)
        if not sent or m.type != MsgType.APPEND_RESP:
            return
        if m.reject:
            sent.clear()  # the follower's log diverges: what was in flight is resent anyway
            return
        while sent and sent[0][0] <= m.index:
            _, at, entries = sent.popleft()
            self.metrics.append_rpc(m.frm, (arrived - at) * 1000.0, entries)

    def _sample_follower_contact(self) -> None:
        """Each leader lease round, per follower: time since it last answered (hashicorp/raft
        samples it in checkLeaderLease)."""
        now = time.monotonic()
        for peer in self.core.voters():
            if peer != self.node_id:
                self.metrics.follower_contact(peer, (now - self._peer_contact.setdefault(peer, now)) * 1000.0)

    def _read_index_batch(self) -> None:
        """One read-index round for every read asked since the last drain. Each of them was
        asked before the round starts, so the index it returns is a valid read point for all of
        them (thesis §6.4; etcd batches its linearizable reads the same way)."""
        batch_id = f"{self.node_id}/b{next(self._read_ids)}"
        self._read_batches[batch_id] = self._read_batch
        self._read_batch = []
        while len(self._read_batches) > MAX_READ_BATCHES:  # answers lost with a leader: forget
            del self._read_batches[next(iter(self._read_batches))]
        self.core.read_index(batch_id)

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
