"""The Raft driver's state, shared by the modules of the driver: what it holds, its inbox, and who
leads.

`DriverBase` builds every field the driver's parts use: the host (appliance/raft/host.py, built
by `open`) that owns the core, the proposals and reads and applies the log to the FSM; the timing
hook (timing.py) that reports Consul's metrics; the inbox. Each part (reads.py, loop.py,
status.py, api.py) is a mixin over this one typed state. Here too: `_post` (the only way into the
inbox) and the leader as this server knows it, with `_wait_for_leader` for the calls that need
one.
"""
from __future__ import annotations

import asyncio
import collections
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
from ..durable import MemoryStorage, RaftStorage
from ..host import Listener, Observer, RaftHost, StoreMachine
from ..messages import NONE, ConfChange, Configuration, Message, NotLeader, Role
from ..metrics import RaftMetrics
from .seams import RaftLink
from .timing import RaftTiming

__all__ = ["DriverBase", "Input", "LeaderOp", "Listener", "Observer"]

# an operator request run on the leader instead of being appended (driver_autopilot.py)
LeaderOp = Callable[[Command], Awaitable[Any]]
# What enters the host, through the inbox (loop.py `_input` takes each kind)
Input = (
    tuple[Literal["tick"]]
    | tuple[Literal["step"], Message, float]  # the message, when it arrived
    | tuple[Literal["propose"], bytes, asyncio.Future[Any]]  # an encoded command
    | tuple[Literal["read"], asyncio.Future[int]]  # a read-index request
    | tuple[Literal["unreachable"], str]  # a peer the transport lost
    | tuple[Literal["conf_change"], ConfChange, asyncio.Future[None]]
    | tuple[Literal["transfer"], str | None, asyncio.Future[str]]
    | tuple[Literal["bootstrap"], Configuration]
)


class DriverBase:
    """The state of a Raft driver (see the package docstring for how it runs)."""

    def __init__(self, store: Store, *, node_id: str, address: str, storage: RaftStorage,
                 config: RaftConfig | None = None, rng: random.Random | None = None,
                 sync_in_thread: bool | None = None, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.store = store
        self.machine = StoreMachine(store)
        self.fsm: FSM = self.machine.fsm  # restored in place: always this one
        self.node_id = node_id
        self.address = address
        self.storage = storage
        self.config = config or RaftConfig()
        self.rng = rng or random.Random()
        # fsync in a worker thread (the loop keeps serving); memory storage has nothing to wait for
        self.sync_in_thread = not isinstance(storage, MemoryStorage) if sync_in_thread is None else sync_in_thread
        self.on_fatal = on_fatal
        self.transport: RaftLink | None = None
        self.host: RaftHost | None = None
        self._inbox: collections.deque[Input] = collections.deque()
        self._wake = asyncio.Event()
        self._leader_changed = asyncio.Event()
        self._serving: Lifecycle | None = None  # start()/stop() only
        self.dropped_messages = 0
        self.fatal: BaseException | None = None
        self._bootstrapping = False
        self._storage_busy: asyncio.Future[None] | None = None
        # the replica feed (appliance/rpc/feed.py) streams what observers see to client agents
        self.observers: list[Observer] = []
        # Metrics (metrics.py): the host's timing hook takes the times, `metrics` records them.
        self.timing = RaftTiming(node_id, self.config.core().leader_lease_ticks, time.monotonic())
        # command Type -> async handler run on the leader instead of proposing (driver_autopilot.py)
        self.leader_ops: dict[str, LeaderOp] = {}

    def _host_for(self, core: RaftCore) -> RaftHost:
        host = RaftHost(core, self.machine, send=self._send, clock=time.monotonic, hooks=[self.timing])
        host.observers = self.observers  # the same list: observers added later see entries too
        return host

    def _send(self, m: Message) -> None:
        if self.transport is not None:
            self.transport.send(m)

    @property
    def core(self) -> RaftCore | None:
        return self.host.core if self.host is not None else None

    @property
    def metrics(self) -> RaftMetrics:
        return self.timing.metrics

    @metrics.setter
    def metrics(self, metrics: RaftMetrics) -> None:
        self.timing.metrics = metrics

    @property
    def applied_index(self) -> int:
        return self.host.applied_index if self.host is not None else 0

    @property
    def opened_host(self) -> RaftHost:
        """The host, for the calls that run only once open() has built it (RuntimeError before)."""
        host = self.host
        if host is None:
            raise RuntimeError("the Raft driver is not open")
        return host

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
