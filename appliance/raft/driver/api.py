"""The Raft driver as the agent holds it: `RaftDriver`, its life cycle and its write path.

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
leadership transfer to the core. `subscribe` listeners and `observers` see every applied entry
(the host calls them, appliance/raft/host.py).

Life cycle. `open()` loads the stored state (or bootstraps an empty store) and builds the core;
`serve()` runs the loop and its ticker (loop.py) in one task group until cancelled. The core
counts ticks; a tick lasts `RaftConfig.tick_ms` (`heartbeat_timeout_ms` x `raft_multiplier` /
10). A server that is the only voter of its configuration campaigns at once on start instead of
waiting for an election timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from appliance.lifecycle import TASK_STATUS_IGNORED, Lifecycle, TaskStatus
from appliance.state.commands import Command, encode_command, validate
from appliance.state.fsm import CommandError

from ..core import RaftCore
from ..durable import is_empty
from ..messages import NONE, ConfChange, Configuration, Message, NotLeader, bootstrap_state
from .base import Listener
from .loop import LoopMixin
from .status import StatusMixin

log = logging.getLogger("agent.server.raft")

MAX_INBOX = 10_000  # messages from peers beyond this are dropped (Raft tolerates loss)


class RaftDriver(LoopMixin, StatusMixin):
    """The propose/apply interface of the agent, on a real Raft core."""

    # ------------------------------------------------------------------ life cycle

    def open(self, bootstrap: Configuration | None = None) -> None:
        """Load the stored state (bootstrapping `bootstrap` into an empty store) and build the core."""
        initial = self.storage.load()
        if is_empty(initial) and bootstrap is not None:
            initial = bootstrap_state(bootstrap)
            self.storage.bootstrap(initial)
            log.info("initial configuration: servers=%s", bootstrap.describe())
        self.host = self._host_for(RaftCore(self.node_id, self.config.core(), self.rng, initial))

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
        if self.host is None:
            self.open()
        host = self.opened_host
        core = host.core
        self.metrics.role_changed("follower")  # every server starts as a follower
        if core.configuration.voters == (self.node_id,):
            core.campaign()  # the only voter: no one to wait for
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._run(), name="raft")
                tasks.create_task(self._ticker(), name="raft-ticker")
                self._wake.set()
                target = host.core.log.committed
                deadline = time.monotonic() + 30
                while self.applied_index < target and time.monotonic() < deadline and self.fatal is None:
                    await asyncio.sleep(0.005)
                task_status.started()
        finally:
            if self._storage_busy is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await self._storage_busy
            host.fail_proposals(NotLeader(NONE))
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
        self.machine.listeners.append(listener)

    async def propose(self, command: Command) -> Any:
        """Commit and apply one command (on the leader, or forwarded to it); return the FSM's
        result, raise its CommandError, or NotLeader if it did not commit / no leader is known."""
        if type(command) is not dict:
            validate(command)  # raises InvalidCommand: a command is a map
        start = time.monotonic()
        try:
            return await self._propose(command)
        finally:
            self.metrics.command_done(command, (time.monotonic() - start) * 1000.0)

    async def _propose(self, command: Command) -> Any:
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

    async def propose_local(self, command: Command) -> Any:
        """Propose on this server (the leader): local proposals and forwarded ones land here."""
        kind = command.get("Type") if type(command) is dict else None
        op = self.leader_ops.get(kind) if type(kind) is str else None
        if op is not None:  # an operator request for the leader (driver_autopilot.py), maybe forwarded
            return await op(command)
        validate(command)  # InvalidCommand before anything enters the log
        data = encode_command(command)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._post(("propose", data, fut))
        result = await fut
        if isinstance(result, CommandError):
            raise result
        return result

    async def propose_conf_change(self, change: ConfChange) -> None:
        """On the leader: make one membership change; returns once its entry is committed and
        applied here (ConfChangeRefused, NotLeader otherwise)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(("conf_change", change, fut))
        await fut

    async def transfer_leadership(self, target: str | None = None) -> str:
        """On the leader: start handing leadership to `target` (or the most up-to-date voter);
        returns the target at once (TransferRefused, NotLeader otherwise)."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._post(("transfer", target, fut))
        return await fut

    def step(self, message: Message) -> None:
        """A message from a peer (called by the transport)."""
        if len(self._inbox) >= MAX_INBOX:
            self.dropped_messages += 1
            return
        self._post(("step", message, time.monotonic()))
