"""Server RPC on the server port (8300): Raft messages, forwarded writes and the join hello.

How it works
------------
**Frames and connections.** The server port speaks the frames of appliance/rpc/frames.py
(`u8 version | u32 length | msgpack [kind, ...]`, append-only kinds, limits). The listener
(appliance/rpc/listener.py) hands this transport every connection whose first frame is not
FOLLOW or DC_REQUEST; each frame on it comes to `on_frame`. This module owns the kinds that
are Raft's: RAFT (one `Message`), HELLO, FORWARD/FORWARD_RESP between servers, and
READ_INDEX/READ_INDEX_RESP between servers. A frame that decodes to nonsense (a term or index
outside 0..2^63, a field of the wrong type) is dropped and counted in `garbage_frames`, never a
crash. Everything this server sends goes out on its one outbound connection per peer
(appliance/rpc/pool.py): when that queue is full a Raft message is dropped and counted
(`dropped_frames`), and a lost connection tells the core (`report_unreachable`) so it stops
pipelining to that peer.

**Forwarding.** A server that is not the leader sends the command to the leader (FORWARD with a
request id); the leader proposes it and answers FORWARD_RESP with the FSM's result or the error.
So a write succeeds whichever server receives it.

**Read index.** A server that is not the leader and must serve a default or `?consistent` read
sends READ_INDEX (request id, reply address, consistent flag) to the leader, which answers
READ_INDEX_RESP with its commit index (after a heartbeat round when consistent); the server
serves the read once it has applied that index.

**Client agents.** A connection whose first frame is FOLLOW belongs to a client agent and is
handed to the replica feed (appliance/rpc/feed.py), which answers on that same connection:
the store stream, and the client's READ_INDEX and FORWARD requests. A connection whose first frame
is DC_REQUEST is handed to `dc_requests` (appliance/federation/forward.py), which answers it with
one DC_RESPONSE on that connection.

**Joining and bootstrap_expect.** Servers learn each other from the LAN gossip pool: the agent
hands every alive member tagged `role=consul` of its datacenter to `add_server` (the `-join`
addresses go to the gossip port, not here). Every round (0.5 s until bootstrapped, then 5 s) a
server sends each server it knows a HELLO on this port listing its id, address,
`bootstrap_expect`, the servers it knows and, once it has Raft state, its configuration. Servers
learnt from a HELLO are added too, so the view spreads transitively. Each HELLO also goes to
`on_server_seen(id, address)`: on the leader, autopilot adds a server it has not got yet
(driver_autopilot.py).

A server with an empty log bootstraps exactly once, when it knows exactly `bootstrap_expect`
servers and every other one of them either reported the very same set or already runs with the
configuration that set gives. All of them then write the *identical* configuration entry (the
servers sorted by id, with their addresses) as entry 1 of term 1. That is the safe choice here:
Log Matching holds because entry (1, 1) is byte-for-byte the same everywhere, and no single server
is needed to form the cluster (letting only the lowest id bootstrap would make its start a
condition of the first election). A server that started late still joins: the leader's first
AppendEntries gives it entry 1. More servers than expected, or views that never agree, leave the
server waiting with a log line instead of risking two different configurations.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.rpc.frames import (
    FrameError,
    Kind,
    as_bytes,
    as_int,
    as_str,
    encode_frame,
)
from appliance.rpc.listener import ConnectionHandler, RpcListener
from appliance.rpc.pool import ConnectionPool
from appliance.state.fsm import CommandError

from .messages import (
    Configuration,
    Entry,
    EntryType,
    Message,
    MsgType,
    NotLeader,
    RaftError,
    Server,
    Snapshot,
    decode_configuration,
    encode_configuration,
)

FORWARD_TIMEOUT_S = 10.0
RAFT, HELLO = Kind.RAFT, Kind.HELLO

log = logging.getLogger("agent.server.rpc")


# ------------------------------------------------------------------ Raft's frames


def encode_message(m: Message) -> list[Any]:
    snap = None
    if m.snapshot is not None:
        s = m.snapshot
        snap = [s.index, s.term, encode_configuration(s.configuration), s.configuration_index, s.data]
    return [RAFT, int(m.type), m.frm, m.to, m.term, m.index, m.log_term,
            [[e.index, e.term, int(e.type), e.data] for e in m.entries],
            m.commit, m.reject, m.reject_hint, m.context, m.request_id, m.transfer, snap]


def decode_message(body: list[Any]) -> Message:
    try:
        (_, mtype, frm, to, term, index, log_term, entries, commit, reject, hint, context,
         request_id, transfer, snap) = body
        snapshot = None
        if snap is not None:
            si, st, conf, ci, data = snap
            snapshot = Snapshot(as_int(si), as_int(st), decode_configuration(as_bytes(conf)), as_int(ci),
                                as_bytes(data))
        return Message(
            MsgType(mtype), as_str(frm), as_str(to), as_int(term), as_int(index), as_int(log_term),
            tuple(Entry(as_int(i), as_int(t), EntryType(k), as_bytes(d)) for i, t, k, d in entries),
            as_int(commit), bool(reject), as_int(hint), as_int(context), as_str(request_id), bool(transfer),
            snapshot)
    except FrameError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        raise FrameError(f"bad raft message: {err}") from None


# ------------------------------------------------------------------ the transport


class RaftTransport:
    def __init__(self, driver: Any, *, bind: str, port: int, join: tuple[str, ...] = (),
                 bootstrap_expect: int = 0) -> None:
        self.driver = driver
        self.bind = bind
        self.port = port
        self.join = tuple(join)
        self.bootstrap_expect = bootstrap_expect
        self.known: dict[str, str] = {driver.node_id: driver.address}  # node id -> server address
        self.views: dict[str, frozenset[str]] = {}  # node id -> the ids it reported knowing
        self.configs: dict[str, Configuration | None] = {}  # node id -> its Raft configuration
        self.listener = RpcListener(bind=bind, port=port, on_frame=self._handle)
        self.pool = ConnectionPool(default_port=port, on_lost=self.link_failed, name="raft-peer")
        self.dropped_frames = 0
        self._forwards: dict[int, tuple[str, asyncio.Future[Any]]] = {}  # request id -> (leader address, answer)
        self._feed: Any = None
        self._dc_requests: ConnectionHandler | None = None
        self.on_server_seen: Any = None  # (node id, server address) of every server that says HELLO
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._warned = ""
        self._receivers: dict[int, Callable[[list[Any]], None]] = {
            Kind.RAFT: self._on_raft, Kind.HELLO: self._on_hello,
            Kind.FORWARD: self._on_forward, Kind.FORWARD_RESP: self._on_forward_resp,
            Kind.READ_INDEX: self._on_read_index, Kind.READ_INDEX_RESP: self._on_read_index_resp,
        }
        driver.transport = self

    @property
    def feed(self) -> Any:
        """Serves client agents' FOLLOW connections (appliance/rpc/feed.py); stopped with the transport."""
        return self._feed

    @feed.setter
    def feed(self, feed: Any) -> None:
        self._feed = feed
        self.listener.serve_connections(Kind.FOLLOW, feed)

    @property
    def dc_requests(self) -> ConnectionHandler | None:
        """Serves DC_REQUEST connections (appliance/federation/forward.py)."""
        return self._dc_requests

    @dc_requests.setter
    def dc_requests(self, handler: ConnectionHandler | None) -> None:
        self._dc_requests = handler
        self.listener.serve_connections(Kind.DC_REQUEST, handler)

    @property
    def garbage_frames(self) -> int:
        """Frames on the server port that could not be used (headers, bodies, Raft's nonsense)."""
        return self.listener.garbage_frames

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """The agent's subsystem: listen on the server port, report started, then introduce this
        server to its peers until cancelled; on the way out close the listener, the outbound
        pool and the replica feed."""
        await self.listener.start()
        try:
            task_status.started()
            await self._discover()
        finally:
            await self.stop()

    async def start(self) -> None:
        """`serve` in two halves, for tests that drive the transport by hand."""
        await self.listener.start()
        self._tasks.append(asyncio.get_running_loop().create_task(self._discover(), name="raft-discover"))

    async def stop(self) -> None:
        self.listener.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.pool.stop()
        for _, fut in self._forwards.values():
            if not fut.done():
                fut.set_exception(NotLeader(""))
        if self._feed is not None:
            await self._feed.stop()

    # ------------------------------------------------------------------ sending

    def address_of(self, node_id: str) -> str:
        return self.driver.server_address(node_id) or self.known.get(node_id, "")

    def send(self, m: Message) -> None:
        """Called by the driver for every outgoing Raft message; never blocks."""
        address = self.address_of(m.to)
        if not address or not self.pool.offer(address, encode_frame(encode_message(m))):
            self.dropped_frames += 1

    def link_failed(self, address: str) -> None:
        for addr, fut in list(self._forwards.values()):
            if addr == address and not fut.done():  # it may or may not have been applied: no retry
                fut.set_exception(RaftError("lost the connection to the leader; the write may or may not "
                                            "have been applied"))
        for node_id, addr in self.known.items():
            if addr == address and self.driver.core is not None:
                self.driver.report_unreachable(node_id)

    async def forward(self, leader: str, command: dict[str, Any]) -> Any:
        """Have the leader propose `command` (FORWARD); its FSM result, or the error it raised."""
        return await self._ask_leader(leader, Kind.FORWARD, command)

    async def read_index(self, leader: str, consistent: bool) -> int:
        """Ask the leader for its read index (READ_INDEX); NotLeader if it no longer leads."""
        index: int = await self._ask_leader(leader, Kind.READ_INDEX, consistent)
        return index

    async def _ask_leader(self, leader: str, kind: Kind, payload: Any) -> Any:
        address = self.address_of(leader)
        if not address:
            raise NotLeader(leader)
        request_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._forwards[request_id] = (address, fut)
        try:
            if not self.pool.offer(address, encode_frame([kind, request_id, self.driver.address, payload])):
                raise NotLeader(leader)
            return await asyncio.wait_for(fut, FORWARD_TIMEOUT_S)
        except TimeoutError:
            raise RaftError(f"no answer from the leader {leader} within {FORWARD_TIMEOUT_S:.0f}s") from None
        finally:
            self._forwards.pop(request_id, None)

    # ------------------------------------------------------------------ receiving

    def _handle(self, body: list[Any]) -> None:
        """One frame from a peer's connection (the listener counts what this raises as garbage)."""
        handler = self._receivers.get(body[0])  # a table: an enum member's lookup costs more than the dict
        if handler is None:
            raise FrameError(f"unexpected frame kind {body[0]!r} on a server connection")
        handler(body)

    def _on_raft(self, body: list[Any]) -> None:
        self.driver.step(decode_message(body))

    def _on_hello(self, body: list[Any]) -> None:
        _, hello = body  # ValueError (counted as garbage) when the frame has no payload or more
        self._hello(hello)

    def _on_forward(self, body: list[Any]) -> None:
        _, request_id, reply_to, command = body
        if not isinstance(command, dict):
            raise FrameError("forwarded command is not a map")
        asyncio.get_running_loop().create_task(self._serve_forward(as_int(request_id), as_str(reply_to), command))

    def _on_forward_resp(self, body: list[Any]) -> None:
        _, request_id, status, value = body
        _, fut = self._forwards.get(request_id, ("", None))
        if fut is None or fut.done():
            return
        if status == "ok":
            fut.set_result(value)
        elif status == "command":
            fut.set_exception(CommandError(str(value)))
        elif status == "notleader":
            fut.set_exception(NotLeader(str(value)))
        else:
            fut.set_exception(RaftError(str(value)))

    def _on_read_index(self, body: list[Any]) -> None:
        _, request_id, reply_to, consistent = body
        asyncio.get_running_loop().create_task(
            self._serve_read_index(as_int(request_id), as_str(reply_to), bool(consistent)))

    def _on_read_index_resp(self, body: list[Any]) -> None:
        _, request_id, status, value = body
        _, fut = self._forwards.get(request_id, ("", None))
        if fut is None or fut.done():
            return
        if status == "ok":
            fut.set_result(as_int(value))
        elif status == "notleader":
            fut.set_exception(NotLeader(str(value)))
        else:
            fut.set_exception(RaftError(str(value)))

    async def _serve_forward(self, request_id: int, reply_to: str, command: dict[str, Any]) -> None:
        try:
            if not self.driver.is_leader:
                raise NotLeader(self.driver.leader_id)  # one hop only: the sender retries
            status, value = "ok", await self.driver.propose_local(command)
        except CommandError as err:
            status, value = "command", str(err)
        except NotLeader as err:
            status, value = "notleader", err.leader
        except RaftError as err:
            status, value = "error", str(err)
        try:
            data = encode_frame([Kind.FORWARD_RESP, request_id, status, value])
        except (TypeError, ValueError):
            data = encode_frame([Kind.FORWARD_RESP, request_id, "ok", str(value)])
        self.pool.offer(reply_to, data)

    async def _serve_read_index(self, request_id: int, reply_to: str, consistent: bool) -> None:
        try:
            status, value = "ok", await self.driver.leader_read_index(consistent)  # one hop only
        except NotLeader as err:
            status, value = "notleader", err.leader
        except (RaftError, TimeoutError) as err:
            status, value = "error", str(err) or "read index timed out"
        self.pool.offer(reply_to, encode_frame([Kind.READ_INDEX_RESP, request_id, status, value]))

    # ------------------------------------------------------------------ discovery and bootstrap

    def _hello_frame(self) -> bytes:
        conf = None
        if self.driver.has_state():
            conf = [[s.id, s.address] for s in self.driver.servers()]
        return encode_frame([HELLO, {"id": self.driver.node_id, "addr": self.driver.address,
                              "expect": self.bootstrap_expect, "servers": sorted(self.known.items()),
                              "conf": conf}])

    def _hello(self, hello: Any) -> None:
        if not isinstance(hello, dict):
            raise FrameError("hello is not a map")
        node_id, address = as_str(hello.get("id")), as_str(hello.get("addr"))
        servers = hello.get("servers") or []
        if not node_id or not address or not isinstance(servers, list):
            raise FrameError("hello without id or address")
        if node_id == self.driver.node_id:
            return  # a join address that is this server
        self.known[node_id] = address
        if self.on_server_seen is not None:
            self.on_server_seen(node_id, address)  # autopilot adds servers it has not got (driver_autopilot.py)
        view = set()
        for item in servers:
            if not isinstance(item, list) or len(item) != 2:
                raise FrameError("hello: a server is not [id, address]")
            sid, saddr = as_str(item[0]), as_str(item[1])
            view.add(sid)
            self.known.setdefault(sid, saddr)
        self.views[node_id] = frozenset(view)
        conf = hello.get("conf")
        self.configs[node_id] = (Configuration(tuple(Server(as_str(i), as_str(a)) for i, a in conf))
                                 if conf is not None else None)
        self._maybe_bootstrap()

    def add_server(self, node_id: str, address: str) -> None:
        """A server found through gossip (its node id and `host:port` server address)."""
        if node_id and address and node_id != self.driver.node_id and self.known.get(node_id) != address:
            self.known[node_id] = address
            self._maybe_bootstrap()

    def wanted_configuration(self) -> Configuration:
        return Configuration(tuple(Server(i, a) for i, a in sorted(self.known.items())))

    def _maybe_bootstrap(self) -> None:
        expect = self.bootstrap_expect
        if expect < 2 or self.driver.has_state():
            return
        ids = frozenset(self.known)
        if len(ids) > expect:
            self._warn(f"{len(ids)} servers found but bootstrap_expect is {expect}: not bootstrapping")
            return
        if len(ids) < expect:
            return
        wanted = self.wanted_configuration()
        for node_id in ids - {self.driver.node_id}:
            conf = self.configs.get(node_id)
            if conf is not None:
                if conf != wanted:
                    self._warn(f"server {node_id} already runs configuration {conf.describe()}: not bootstrapping")
                    return
            elif self.views.get(node_id) != ids:
                return  # not everyone agrees yet: wait for the next round
        if self.driver.bootstrap_now(wanted):
            log.info("found %d servers (bootstrap_expect), bootstrapping: %s", expect, wanted.describe())

    def _warn(self, text: str) -> None:
        if text != self._warned:
            self._warned = text
            log.warning(text)

    async def _discover(self) -> None:
        while True:
            data = self._hello_frame()
            targets = {a for a in self.join} | {a for i, a in self.known.items() if i != self.driver.node_id}
            targets |= {s.address for s in self.driver.servers() if s.id != self.driver.node_id and s.address}
            for address in targets:
                if address != self.driver.address:
                    self.pool.offer(address, data)
            await asyncio.sleep(5.0 if self.driver.has_state() else 0.5)
