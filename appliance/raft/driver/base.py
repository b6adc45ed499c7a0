"""The Raft driver's state, shared by the modules of the driver: what it holds, its inbox, and who
leads.

`DriverBase` builds every field the driver's parts use (the core, the FSM, the inbox, pending
proposals and reads, the timing the metrics need), so each part (reads.py, timing.py, loop.py,
status.py, api.py) is a mixin over one typed state, as the core is over its leader rules
(appliance/raft/leader.py). Here too: `_post` (the only way into the inbox) and the leader as
this server knows it, with `_wait_for_leader` for the calls that need one.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from appliance.lifecycle import Lifecycle
from appliance.state.commands import Command
from appliance.state.fsm import FSM
from appliance.state.store import Store

from ..config import RaftConfig
from ..core import RaftCore
from ..messages import NONE, ConfChange, Configuration, Message, NotLeader, Role
from ..metrics import RaftMetrics
from .seams import MemoryStorage, RaftLink, RaftStorage

Listener = Callable[[set[str]], None]
# (kind, index, command bytes or None) after each applied entry ("entry") and after a snapshot
# replaced the store ("restore")
Observer = Callable[[str, int, bytes | None], None]
# an operator request run on the leader instead of being appended (driver_autopilot.py)
LeaderOp = Callable[[Command], Awaitable[Any]]
# What enters the core, through the inbox (loop.py `_input` takes each kind)
Input = (
    tuple[Literal["tick"]]
    | tuple[Literal["step"], Message, float]  # the message, when it arrived
    | tuple[Literal["propose"], bytes, asyncio.Future[Any]]  # an encoded command
    | tuple[Literal["read"], str]  # a read-index request id
    | tuple[Literal["unreachable"], str]  # a peer the transport lost
    | tuple[Literal["conf_change"], ConfChange, asyncio.Future[None]]
    | tuple[Literal["transfer"], str | None, asyncio.Future[str]]
    | tuple[Literal["bootstrap"], Configuration]
)
# an AppendEntries awaiting its answer: (last index it carries, sent at, entries)
SentAppend = tuple[int, float, int]


class DriverBase:
    """The state of a Raft driver (see the package docstring for how it runs)."""

    def __init__(self, store: Store, *, node_id: str, address: str, storage: RaftStorage,
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
        self.transport: RaftLink | None = None
        self.core: RaftCore | None = None
        self._listeners: list[Listener] = []
        self._inbox: collections.deque[Input] = collections.deque()
        self._wake = asyncio.Event()
        self._leader_changed = asyncio.Event()
        # index -> (term, future) of a proposal or configuration change awaiting its entry
        self._proposals: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._reads: dict[str, asyncio.Future[int]] = {}
        self._read_waiters: list[tuple[int, asyncio.Future[None]]] = []
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
        self._storage_busy: asyncio.Future[None] | None = None
        # the replica feed (appliance/rpc/feed.py) streams what observers see to client agents
        self.observers: list[Observer] = []
        # Metrics (metrics.py): the driver takes the times, `metrics` records them.
        self.metrics: RaftMetrics = RaftMetrics()
        self._heard_leader = False
        self._proposed_at: dict[int, float] = {}  # index -> when this leader accepted it
        self._rpcs_answered: list[tuple[str, float]] = []  # RPCs stepped since the last Ready
        self._appends_sent: dict[str, collections.deque[SentAppend]] = {}  # peer -> AppendEntries in flight
        self._peer_contact: dict[str, float] = {}  # peer -> when it last answered this leader
        # command Type -> async handler run on the leader instead of proposing (driver_autopilot.py)
        self.leader_ops: dict[str, LeaderOp] = {}
        self._ticks = 0
        self._counted_role = Role.FOLLOWER
        self._lease_ticks = self.config.core().leader_lease_ticks

    @property
    def opened_core(self) -> RaftCore:
        """The core, for the calls that run only once open() has built it (RuntimeError before)."""
        core = self.core
        if core is None:
            raise RuntimeError("the Raft driver is not open")
        return core

    def _post(self, item: Input) -> None:
        self._inbox.append(item)
        self._wake.set()

    # ------------------------------------------------------------------ the leader

    @property
    def leader_id(self) -> str:
        return self.core.leader if self.core is not None else NONE

    @property
    def is_leader(self) -> bool:
        return self.core is not None and self.core.role == Role.LEADER

    @property
    def known_leader(self) -> bool:
        return bool(self.leader_id)

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
