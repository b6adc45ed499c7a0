"""Server RPC on the server port (8300): Raft messages, forwarded writes and the join hello.

How it works
------------
**Frames.** Every frame is `u8 version | u32 length (big endian) | msgpack body`, the body a list
`[kind, ...]`. Kinds are append-only: 1 RAFT (one `Message`), 2 HELLO (who I am and which servers
I know), 3 FORWARD (a command for the leader), 4 FORWARD_RESP (its result), 5 FOLLOW (a client
agent asks for the replica stream), 6 STREAM (the stream's snapshots, entries and status),
7 READ_INDEX (ask the leader for its read index), 8 READ_INDEX_RESP (the index), 9 DC_REQUEST (an HTTP
request for another datacenter, or from one) and 10 DC_RESPONSE (its answer). A frame of an unknown
version or longer than `MAX_FRAME_BYTES` cannot be skipped safely, so the connection is closed; a
frame whose body does not decode, or decodes to nonsense (unknown kind, a term or index outside
0..2^63), is dropped. Both are counted in `garbage_frames`, never a crash.

**Connections.** Each server dials one outbound connection per peer address and only *writes* on
it; everything it receives arrives on the connections peers dialled to it. Raft's messages are
one-way (an answer is just another message), so this needs no request matching. Each outbound
connection has a bounded queue: when it is full, Raft messages are dropped and counted (Raft
tolerates loss, and the core must never block on a slow peer); a forwarded write fails at once.
A broken connection is redialled with backoff, and the core is told (`report_unreachable`) so it
stops pipelining to that peer.

**Forwarding.** A server that is not the leader sends the command to the leader (FORWARD with a
request id); the leader proposes it and answers FORWARD_RESP with the FSM's result or the error.
So a write succeeds whichever server receives it.

**Read index.** A server that is not the leader and must serve a default or `?consistent` read
sends READ_INDEX (request id, reply address, consistent flag) to the leader, which answers
READ_INDEX_RESP with its commit index (after a heartbeat round when consistent); the server
serves the read once it has applied that index.

**Client agents.** A connection whose first frame is FOLLOW belongs to a client agent and is
handed to the replica feed (appliance/client/feed.py), which answers on that same connection:
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
is needed to form the cluster. Letting only the lowest id bootstrap would not work with this core:
a server with no configuration grants no votes (a removed server must not disrupt), so the lowest
could never win its first election. A server that started late still joins: the leader's first
AppendEntries gives it entry 1. More servers than expected, or views that never agree, leave the
server waiting with a log line instead of risking two different configurations.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from typing import Any

import msgpack

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

WIRE_VERSION = 1
HEADER = struct.Struct(">BI")
MAX_FRAME_BYTES = 64 << 20
MAX_INT = 1 << 63
QUEUE_FRAMES = 1024
FORWARD_TIMEOUT_S = 10.0
RAFT, HELLO, FORWARD, FORWARD_RESP = 1, 2, 3, 4
FOLLOW, STREAM, READ_INDEX, READ_INDEX_RESP = 5, 6, 7, 8
DC_REQUEST, DC_RESPONSE = 9, 10  # a request for another datacenter (appliance/federation/forward.py)

log = logging.getLogger("agent.server.rpc")


class FrameError(ValueError):
    """A peer's frame that cannot be used (counted and dropped)."""


# ------------------------------------------------------------------ codec


# Text in frames keeps its bytes: a forwarded command may carry a KV key that is not UTF-8, held
# with one lone surrogate per such byte (appliance/http/handlers/kv.py); packed and unpacked with
# "surrogateescape" it crosses as exactly those bytes.
TEXT_ERRORS = "surrogateescape"


def frame(body: list) -> bytes:
    try:  # strict first: msgpack's fast path (with an error handler it encodes each string apart)
        data = msgpack.packb(body, use_bin_type=True)
    except UnicodeEncodeError:  # a lone surrogate: a KV key's byte outside UTF-8
        data = msgpack.packb(body, use_bin_type=True, unicode_errors=TEXT_ERRORS)
    return HEADER.pack(WIRE_VERSION, len(data)) + data


def _int(v: Any) -> int:
    if type(v) is not int or not 0 <= v < MAX_INT:
        raise FrameError(f"bad integer {v!r}")
    return v


def _bytes(v: Any) -> bytes:
    if not isinstance(v, bytes):  # bytes(n) of an int would allocate n bytes
        raise FrameError(f"bad bytes {type(v).__name__}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise FrameError(f"bad string {v!r}")
    return v


def encode_message(m: Message) -> list:
    snap = None
    if m.snapshot is not None:
        s = m.snapshot
        snap = [s.index, s.term, encode_configuration(s.configuration), s.configuration_index, s.data]
    return [RAFT, int(m.type), m.frm, m.to, m.term, m.index, m.log_term,
            [[e.index, e.term, int(e.type), e.data] for e in m.entries],
            m.commit, m.reject, m.reject_hint, m.context, m.request_id, m.transfer, snap]


def decode_message(body: list) -> Message:
    try:
        (_, mtype, frm, to, term, index, log_term, entries, commit, reject, hint, context,
         request_id, transfer, snap) = body
        snapshot = None
        if snap is not None:
            si, st, conf, ci, data = snap
            snapshot = Snapshot(_int(si), _int(st), decode_configuration(_bytes(conf)), _int(ci), _bytes(data))
        return Message(
            MsgType(mtype), _str(frm), _str(to), _int(term), _int(index), _int(log_term),
            tuple(Entry(_int(i), _int(t), EntryType(k), _bytes(d)) for i, t, k, d in entries),
            _int(commit), bool(reject), _int(hint), _int(context), _str(request_id), bool(transfer), snapshot)
    except FrameError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        raise FrameError(f"bad raft message: {err}") from None


def split_address(address: str, default_port: int) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "]" in port:
        return address.strip("[]"), default_port
    return host.strip("[]"), int(port)


# ------------------------------------------------------------------ one outbound connection


class PeerLink:
    """The one connection this server writes to a peer address, with a bounded queue."""

    def __init__(self, transport: RaftTransport, address: str) -> None:
        self.transport = transport
        self.address = address
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_FRAMES)
        self.connected = False
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"raft-peer-{address}")

    def offer(self, data: bytes) -> bool:
        try:
            self.queue.put_nowait(data)
            return True
        except asyncio.QueueFull:
            return False

    async def _run(self) -> None:
        host, port = split_address(self.address, self.transport.default_port)
        backoff = 0.05
        while True:
            writer = None
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
                self.connected = True
                backoff = 0.05
                while True:
                    data = await self.queue.get()
                    writer.write(data)
                    while not self.queue.empty() and writer.transport.get_write_buffer_size() < (1 << 20):
                        writer.write(self.queue.get_nowait())
                    await writer.drain()
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                self.connected = False
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            self.transport.link_failed(self.address)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


# ------------------------------------------------------------------ the transport


class RaftTransport:
    def __init__(self, driver: Any, *, bind: str, port: int, join: tuple[str, ...] = (),
                 bootstrap_expect: int = 0) -> None:
        self.driver = driver
        self.bind = bind
        self.port = port
        self.default_port = port
        self.join = tuple(join)
        self.bootstrap_expect = bootstrap_expect
        self.known: dict[str, str] = {driver.node_id: driver.address}  # node id -> server address
        self.views: dict[str, frozenset[str]] = {}  # node id -> the ids it reported knowing
        self.configs: dict[str, Configuration | None] = {}  # node id -> its Raft configuration
        self.links: dict[str, PeerLink] = {}
        self.garbage_frames = 0
        self.dropped_frames = 0
        self._forwards: dict[int, tuple[str, asyncio.Future]] = {}  # request id -> (leader address, answer)
        self.feed: Any = None  # serves client agents' FOLLOW connections (appliance/client/feed.py)
        self.dc_requests: Any = None  # serves DC_REQUEST connections (appliance/federation/forward.py)
        self.on_server_seen: Any = None  # (node id, server address) of every server that says HELLO
        self._ids = itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task] = []
        self._warned = ""
        driver.transport = self

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.bind, self.port, limit=1 << 20)
        self._tasks.append(asyncio.get_running_loop().create_task(self._discover(), name="raft-discover"))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks + [link.task for link in self.links.values()]:
            task.cancel()
        for task in self._tasks + [link.task for link in self.links.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for _, fut in self._forwards.values():
            if not fut.done():
                fut.set_exception(NotLeader(""))
        if self.feed is not None:
            await self.feed.stop()

    # ------------------------------------------------------------------ sending

    def _link(self, address: str) -> PeerLink:
        link = self.links.get(address)
        if link is None:
            link = self.links[address] = PeerLink(self, address)
        return link

    def address_of(self, node_id: str) -> str:
        return self.driver.server_address(node_id) or self.known.get(node_id, "")

    def send(self, m: Message) -> None:
        """Called by the driver for every outgoing Raft message; never blocks."""
        address = self.address_of(m.to)
        if not address or not self._link(address).offer(frame(encode_message(m))):
            self.dropped_frames += 1

    def link_failed(self, address: str) -> None:
        for request_id, (addr, fut) in list(self._forwards.items()):
            if addr == address and not fut.done():  # it may or may not have been applied: no retry
                fut.set_exception(RaftError("lost the connection to the leader; the write may or may not "
                                            "have been applied"))
        for node_id, addr in self.known.items():
            if addr == address and self.driver.core is not None:
                self.driver.report_unreachable(node_id)

    async def forward(self, leader: str, command: dict[str, Any]) -> Any:
        """Have the leader propose `command` (FORWARD); its FSM result, or the error it raised."""
        return await self._ask_leader(leader, FORWARD, command)

    async def read_index(self, leader: str, consistent: bool) -> int:
        """Ask the leader for its read index (READ_INDEX); NotLeader if it no longer leads."""
        return await self._ask_leader(leader, READ_INDEX, consistent)

    async def _ask_leader(self, leader: str, kind: int, payload: Any) -> Any:
        address = self.address_of(leader)
        if not address:
            raise NotLeader(leader)
        request_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._forwards[request_id] = (address, fut)
        try:
            if not self._link(address).offer(frame([kind, request_id, self.driver.address, payload])):
                raise NotLeader(leader)
            return await asyncio.wait_for(fut, FORWARD_TIMEOUT_S)
        except TimeoutError:
            raise RaftError(f"no answer from the leader {leader} within {FORWARD_TIMEOUT_S:.0f}s") from None
        finally:
            self._forwards.pop(request_id, None)

    # ------------------------------------------------------------------ receiving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(HEADER.size)
                version, length = HEADER.unpack(head)
                if version != WIRE_VERSION or length > MAX_FRAME_BYTES:
                    self.garbage_frames += 1  # cannot find the next frame: drop the connection
                    log.warning("dropping connection: frame version %d, length %d", version, length)
                    return
                data = await reader.readexactly(length)
                try:
                    body = msgpack.unpackb(data, raw=False, unicode_errors=TEXT_ERRORS)
                    if isinstance(body, list) and body and body[0] == FOLLOW and self.feed is not None:
                        await self.feed.serve(reader, writer, body)  # a client agent's connection
                        return
                    if isinstance(body, list) and body and body[0] == DC_REQUEST and self.dc_requests is not None:
                        await self.dc_requests.serve(reader, writer, body)  # one request, one answer
                        return
                    self._handle(body)
                except (FrameError, ValueError, TypeError, KeyError, msgpack.UnpackException):
                    self.garbage_frames += 1
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()

    def _handle(self, body: Any) -> None:
        if not isinstance(body, list) or not body:
            raise FrameError("not a frame body")
        kind = body[0]
        if kind == RAFT:
            self.driver.step(decode_message(body))
        elif kind == HELLO:
            self._hello(body[1])
        elif kind == FORWARD:
            _, request_id, reply_to, command = body
            if not isinstance(command, dict):
                raise FrameError("forwarded command is not a map")
            asyncio.get_running_loop().create_task(self._serve_forward(_int(request_id), _str(reply_to), command))
        elif kind == FORWARD_RESP:
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
        elif kind == READ_INDEX:
            _, request_id, reply_to, consistent = body
            asyncio.get_running_loop().create_task(
                self._serve_read_index(_int(request_id), _str(reply_to), bool(consistent)))
        elif kind == READ_INDEX_RESP:
            _, request_id, status, value = body
            _, fut = self._forwards.get(request_id, ("", None))
            if fut is None or fut.done():
                return
            if status == "ok":
                fut.set_result(_int(value))
            elif status == "notleader":
                fut.set_exception(NotLeader(str(value)))
            else:
                fut.set_exception(RaftError(str(value)))
        else:
            raise FrameError(f"unknown frame kind {kind!r}")

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
            data = frame([FORWARD_RESP, request_id, status, value])
        except (TypeError, ValueError):
            data = frame([FORWARD_RESP, request_id, "ok", str(value)])
        self._link(reply_to).offer(data)

    async def _serve_read_index(self, request_id: int, reply_to: str, consistent: bool) -> None:
        try:
            status, value = "ok", await self.driver.leader_read_index(consistent)  # one hop only
        except NotLeader as err:
            status, value = "notleader", err.leader
        except (RaftError, TimeoutError) as err:
            status, value = "error", str(err) or "read index timed out"
        self._link(reply_to).offer(frame([READ_INDEX_RESP, request_id, status, value]))

    # ------------------------------------------------------------------ discovery and bootstrap

    def _hello_frame(self) -> bytes:
        conf = None
        if self.driver.has_state():
            conf = [[s.id, s.address] for s in self.driver.servers()]
        return frame([HELLO, {"id": self.driver.node_id, "addr": self.driver.address,
                              "expect": self.bootstrap_expect, "servers": sorted(self.known.items()),
                              "conf": conf}])

    def _hello(self, hello: Any) -> None:
        if not isinstance(hello, dict):
            raise FrameError("hello is not a map")
        node_id, address = _str(hello.get("id")), _str(hello.get("addr"))
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
            sid, saddr = _str(item[0]), _str(item[1])
            view.add(sid)
            self.known.setdefault(sid, saddr)
        self.views[node_id] = frozenset(view)
        conf = hello.get("conf")
        self.configs[node_id] = (Configuration(tuple(Server(_str(i), _str(a)) for i, a in conf))
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
                    self._link(address).offer(data)
            await asyncio.sleep(5.0 if self.driver.has_state() else 0.5)
