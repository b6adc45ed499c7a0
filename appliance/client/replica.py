"""A client agent's consensus: a read-only replica of the servers' store, writes forwarded.

How it works
------------
A client agent (`server = false`) runs no Raft. `Replica` gives the agent, the HTTP handlers, DNS,
anti-entropy and telemetry the same calls as `RaftDriver` (propose, read_point, read_barrier,
subscribe, known_leader, leader_address, last_contact_ms, configuration, peers, stats), backed by
one connection to one server:

* **Reads are local.** The connection starts with `FOLLOW [applied index, node name]`; the server
  streams a snapshot (when this replica is empty or too far behind) and then every applied log
  entry (appliance/rpc/feed.py). Entries go through the same FSM as on the servers, into the
  agent's own `Store`, so records, `X-Consul-Index`, watch keys and blocking queries behave
  exactly as on a server, and DNS answers at local speed. An entry the FSM cannot apply is
  skipped as on the servers (one ERROR line, the `fsm_apply_error` metric), and the stream goes
  on; a frame that does not decode is dropped and counted (`garbage_frames`).
* **Consistency.** `?stale` reads are served at once (after the first snapshot has arrived), with
  `X-Consul-LastContact` = the server's last contact with the leader plus the time since this
  agent last heard from the server. Default reads ask for the leader's commit index (READ_INDEX,
  no heartbeat round) and wait until the replica has applied it, so they never see data older
  than a write acknowledged before the read began; `?consistent` asks the leader to confirm its
  leadership with a heartbeat round first.
* **Writes are forwarded.** `propose()` sends FORWARD with the secret the write acts with (the
  caller's token, or the agent's and the services' own for anti-entropy: appliance/acl/caller.py);
  the server authorizes it with ACLs on (appliance/acl/commands.py), proposes the command (through
  the leader) and answers with the result and an index at or after the write's. The answer is
  held until the replica has applied that index: a client reads its own writes.
* **Failover.** When the connection breaks, the server goes quiet for `SILENCE_S` (it sends a
  status frame every half second), or it has known no leader for `LEADERLESS_S` while other
  servers exist (it may be cut off from the rest), the replica dials the next server from `ServerList`
  (servers.py) with backoff and carries on from its own applied index. Reads waiting for an
  index keep waiting across the failover; a write whose connection broke fails with a message
  saying it may or may not have been applied (anti-entropy retries its own). While no server is
  reachable `known_leader` is false and reads that need the leader fail after `hold_s` with
  Consul's `No known Consul servers` / `No cluster leader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.acl.caller import caller_token
from appliance.acl.commands import PermissionDenied
from appliance.client.servers import ServerList
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.raft.messages import NotLeader, RaftError
from appliance.raft.metrics import RaftMetrics
from appliance.rpc.connection import dial, read_frame
from appliance.rpc.frames import MAX_REQUESTS_IN_FLIGHT, FrameError, Kind, decode_body, encode_frame
from appliance.state.fsm import FSM, CommandError
from appliance.state.snapshot import SnapshotError, restore
from appliance.state.store import Store

Listener = Callable[[set[str]], None]
log = logging.getLogger("agent.client")

HOLD_S = 7.0  # Consul's RPCHoldTimeout: how long a request waits for a server
REQUEST_TIMEOUT_S = 15.0
SILENCE_S = 5.0  # no frame for this long: the server is gone
DIAL_TIMEOUT_S = 2.0
NO_SERVER_POLL_S = 0.2
LEADERLESS_S = 5.0  # a server without a leader for this long is left for another one


class NoServers(RaftError):
    """No server could be reached (Consul's text)."""

    def __init__(self) -> None:
        super().__init__("No known Consul servers")


class LostConnection(RaftError):
    """The connection to the server broke while a request was in flight."""


class Leaderless(RaftError):
    """The server has known no leader for LEADERLESS_S while other servers exist."""


class Replica:
    """The propose/read interface of a client agent (see the module docstring)."""

    is_leader = False
    fatal: BaseException | None = None

    def __init__(self, store: Store, *, servers: ServerList, node_name: str, hold_s: float = HOLD_S,
                 on_leader: Callable[[], None] | None = None) -> None:
        self.store = store
        self._fsm = FSM(store)
        self.node_id = node_name
        self.address = ""
        self.server_list = servers
        self.hold_s = hold_s
        self.on_leader = on_leader  # called when a leader becomes known (anti-entropy syncs then)
        self.applied_index = 0
        self.loaded = False  # a snapshot or the first entries arrived
        self.server = ""  # the server streamed from ("" when not connected)
        self.status: dict[str, Any] = {}
        self.status_at = 0.0
        self.snapshots = 0
        self.failovers = 0
        self.garbage_frames = 0
        self._listeners: list[Listener] = []
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._pending: dict[int, asyncio.Future] = {}
        self._slots = asyncio.Semaphore(MAX_REQUESTS_IN_FLIGHT)  # what a server takes unanswered at once
        self._ids = itertools.count(1)
        self._apply_waiters: list[tuple[int, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self._had_leader = False
        self.metrics: RaftMetrics = RaftMetrics()  # the agent's telemetry replaces it (fsm_apply_error)

    # ------------------------------------------------------------------ life cycle

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """The agent's subsystem: report started, then follow a server until cancelled; requests
        still waiting fail when it stops."""
        try:
            task_status.started()
            await self._run()
        finally:
            self._disconnected()

    async def start(self) -> None:
        """`serve` in two halves, for tests that drive the replica by hand."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="replica")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._disconnected()  # requests still waiting fail now, not at their timeout

    # ------------------------------------------------------------------ the consensus interface

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(touched_watch_keys)` after every applied entry."""
        self._listeners.append(listener)

    async def propose(self, command: dict[str, Any]) -> Any:
        """Forward one write to a server, with the secret it acts with (appliance/acl/caller.py);
        return once this replica has applied it. A write the server's ACLs refuse raises
        PermissionDenied with Consul's text."""
        status, value, index = await self._request(Kind.FORWARD, command, retry=False, token=caller_token())
        if status == "command":
            raise CommandError(str(value))
        if status == "denied":
            raise PermissionDenied(f"rpc error making call: {value}")
        if status == "notleader":
            raise NotLeader("")
        if status != "ok":
            raise RaftError(str(value))
        await self.wait_applied(index)
        return value

    async def read_point(self, consistency: str) -> None:
        """Wait until a read of `consistency` may be served from this replica."""
        if consistency == "stale":
            if not self.loaded:
                await self._wait_connected()
                await self._wait_for(lambda: self.loaded)
            return
        status, value, _ = await self._request(Kind.READ_INDEX, consistency == "consistent", retry=True)
        if status == "notleader":
            raise NotLeader("")
        if status != "ok":
            raise RaftError(str(value))
        await self.wait_applied(int(value))

    async def read_barrier(self, timeout_s: float = 10.0) -> int:
        """Linearizable read point, as RaftDriver.read_barrier: the leader's confirmed index."""
        status, value, _ = await self._request(Kind.READ_INDEX, True, retry=True)
        if status != "ok":
            raise NotLeader("") if status == "notleader" else RaftError(str(value))
        await self.wait_applied(int(value), timeout_s)
        return int(value)

    async def wait_applied(self, index: int, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        if self.applied_index >= index:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._apply_waiters.append((index, waiter))
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            raise RaftError(f"the replica did not reach index {index} within {timeout_s:.0f}s") from None

    # ------------------------------------------------------------------ status

    @property
    def leader_id(self) -> str:
        return self.status.get("leader", "") if self.server else ""

    @property
    def connected(self) -> bool:
        """Whether this replica streams from a server now (ACL token resolution is "up")."""
        return bool(self.server)

    @property
    def known_leader(self) -> bool:
        return bool(self.leader_id)

    @property
    def last_contact_ms(self) -> int:
        if not self.status:
            return 0
        since = int((time.monotonic() - self.status_at) * 1000)
        return int(self.status.get("last_contact_ms", 0)) + since

    def leader_address(self) -> str:
        return self.status.get("leader_addr", "") if self.known_leader else ""

    def configuration(self) -> dict[str, Any]:
        return self.status.get("configuration") or {"Servers": [], "Index": 0}

    def peers(self) -> list[str]:
        return list(self.status.get("peers") or [])

    def known_servers(self) -> int:
        return len(self.server_list.known())

    def stats(self) -> dict[str, str]:
        """A client runs no Raft: /v1/agent/self has no `raft` section (see Agent.self_info)."""
        return {}

    # ------------------------------------------------------------------ requests

    async def _wait_for(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.hold_s
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoServers()
            await asyncio.sleep(min(0.02, remaining))

    async def _wait_connected(self) -> asyncio.StreamWriter:
        if self._writer is None:
            try:
                await asyncio.wait_for(self._connected.wait(), self.hold_s)
            except TimeoutError:
                raise NoServers() from None
        assert self._writer is not None
        return self._writer

    async def _request(self, kind: Kind, arg: Any, *, retry: bool, token: str = "") -> tuple[str, Any, int]:
        """Send one request on the current connection; reads are retried on the next one. A
        write's secret rides as a fifth field (a server without it takes the write as anonymous).
        At most MAX_REQUESTS_IN_FLIGHT are unanswered at once (the server refuses more): the rest
        wait their turn here."""
        async with self._slots:
            return await self._send(kind, arg, retry=retry, token=token)

    async def _send(self, kind: Kind, arg: Any, *, retry: bool, token: str) -> tuple[str, Any, int]:
        for attempt in range(3):
            writer = await self._wait_connected()
            request_id = next(self._ids)
            fut = asyncio.get_running_loop().create_future()
            self._pending[request_id] = fut
            try:
                writer.write(encode_frame([kind, request_id, "", arg, token] if token else [kind, request_id, "", arg]))
                return await asyncio.wait_for(fut, REQUEST_TIMEOUT_S)
            except LostConnection:
                if not retry or attempt == 2:
                    raise
            except TimeoutError:
                raise RaftError(f"no answer from server {self.server or '(none)'} within "
                                f"{REQUEST_TIMEOUT_S:.0f}s") from None
            finally:
                self._pending.pop(request_id, None)
        raise NoServers()

    # ------------------------------------------------------------------ the connection

    async def _run(self) -> None:
        servers = self.server_list
        while True:
            await asyncio.sleep(servers.backoff_s())
            address = servers.next()
            if not address:  # gossip has not found a server yet: look again soon
                await asyncio.sleep(NO_SERVER_POLL_S)
                continue
            reason = "connection closed"
            try:
                await self._follow(address)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, FrameError, SnapshotError,
                    Leaderless) as err:
                reason = str(err) or type(err).__name__
                log.debug("server %s: %s", address, reason)
            if self.server:
                log.warning("left server %s (%s); failing over", address, reason)
                self.failovers += 1
            servers.failed(address)
            self._disconnected()

    async def _follow(self, address: str) -> None:
        reader, writer = await dial(address, 8300, DIAL_TIMEOUT_S)
        try:
            writer.write(encode_frame([Kind.FOLLOW, self.applied_index, self.node_id]))
            await writer.drain()
            first = True
            leaderless_since = time.monotonic()
            while True:
                data = await read_frame(reader, SILENCE_S)
                try:
                    body = decode_body(data)  # a body that does not decode costs that frame only
                except FrameError as err:
                    self.garbage_frames += 1
                    log.debug("dropped a frame from %s: %s", address, err)
                    continue
                if first:  # the server answers: this is now the connection
                    first = False
                    self.server, self._writer = address, writer
                    self._connected.set()
                    self.server_list.succeeded()
                    log.info("streaming from server %s (from index %d)", address, self.applied_index)
                try:
                    self._handle(body)
                except (FrameError, ValueError, TypeError, KeyError) as err:
                    self.garbage_frames += 1
                    log.debug("dropped a frame from %s: %s", address, err)
                now = time.monotonic()
                if self.status.get("leader"):
                    leaderless_since = now
                elif now - leaderless_since > LEADERLESS_S and len(self.server_list.known()) > 1:
                    raise Leaderless(f"server {address} has known no leader for {LEADERLESS_S:.0f}s")
        finally:
            writer.close()

    def _disconnected(self) -> None:
        self.server = ""
        self._writer = None
        self._had_leader = False  # the next server's leader triggers a full anti-entropy sync
        self._connected.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LostConnection(
                    "lost the connection to the server; the write may or may not have been applied"))

    def _handle(self, body: Any) -> None:
        if not isinstance(body, list) or not body:
            raise FrameError("not a frame body")
        kind = body[0]
        if kind == Kind.STREAM:
            what = body[1]
            if what == "entries":
                self._apply_entries(body[2])
            elif what == "snapshot":
                self._restore(body[2], body[3])
            elif what == "status":
                self._status(body[2])
            else:
                raise FrameError(f"unknown stream item {what!r}")
        elif kind in (Kind.READ_INDEX_RESP, Kind.FORWARD_RESP):
            request_id, status, value = body[1], body[2], body[3]
            index = body[4] if kind == Kind.FORWARD_RESP and len(body) > 4 else 0
            fut = self._pending.get(request_id)
            if fut is not None and not fut.done():
                fut.set_result((str(status), value, int(index)))
        else:
            raise FrameError(f"unknown frame kind {kind!r}")

    def _apply_entries(self, entries: list) -> None:
        for index, data in entries:
            if type(index) is not int or index <= self.applied_index:
                continue  # already applied (a replay after failover)
            if data is not None:
                applied = self._fsm.apply_entry(index, data)  # never raises: a bad entry is skipped
                if applied.failed:
                    log.error("skipped a log entry the FSM cannot apply: index=%d type=%s error=%s",
                              index, applied.failed, applied.result)
                    self.metrics.fsm_apply_error(applied.failed)
                for listener in self._listeners:
                    listener(applied.touched)
            self.applied_index = index
        self.loaded = True
        self._wake_waiters()

    def _restore(self, index: int, data: bytes) -> None:
        restored = restore(data)
        vars(self.store).clear()
        vars(self.store).update(vars(restored))  # in place: HTTP, DNS and the FSM keep the reference
        self.applied_index = int(index)
        self.loaded = True
        self.snapshots += 1
        keys = set(self.store.watch_index)
        for listener in self._listeners:
            listener(keys)
        self._wake_waiters()

    def _status(self, status: Any) -> None:
        if not isinstance(status, dict):
            raise FrameError("status is not a map")
        self.status, self.status_at = status, time.monotonic()
        if status.get("leader") and not self._had_leader and self.on_leader is not None:
            self.on_leader()
        self._had_leader = bool(status.get("leader"))

    def _wake_waiters(self) -> None:
        if not self._apply_waiters:
            return
        still = []
        for index, waiter in self._apply_waiters:
            if index <= self.applied_index:
                if not waiter.done():
                    waiter.set_result(None)
            elif not waiter.done():
                still.append((index, waiter))
        self._apply_waiters = still
