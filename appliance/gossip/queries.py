"""Serf queries: ask every member (or those a filter selects) and gather acks and responses.

How it works
------------
`QueryEngine.start` stamps a query with the query Lamport clock and a random 31-bit ID, records a
`QueryHandle` under its LTime, handles the query locally first and queues it for gossip in its own
transmit-limited queue (Serf's query broadcasts). Every member passes a received query through
`handle_query`: it witnesses the LTime, drops it if older than `min_time` or than `clock - 512`
(the query buffer), or if its ID is already in the LTime's slot (dedup), and otherwise re-gossips
it (unless flag 2, no re-broadcast, is set). When the filters select this member (a list of node
names that must hold ours; a tag whose value a Go regular expression must match) it sends an ack
straight to the source when flag 1 asks for one, and hands the query to the host as a
`QueryRequest`. `respond` sends one response, at most `QUERY_RESPONSE_SIZE_LIMIT` bytes, before
the query's deadline, directly to the source and, with a relay factor, also through that many
random alive members wrapped in a relay message (`handle_relay` forwards it unread), so a response
survives one lossy path. Responses and acks land in the handle (one per member, duplicates are
counted and dropped) until the deadline closes it. Replies for an LTime with no running query, or
an ID that does not match, are logged as Serf logs them.

The default timeout is Serf's: gossip interval x 16 x ceil(log10(alive members + 1)) (LAN: 3.2 s up
to 9 members). A query is at most `QUERY_SIZE_LIMIT` bytes as sent. Names starting with `_serf_`
are Serf's own (ping, conflict, the key operations); serf.py answers them. Pure: time, randomness,
the member table and sending come from the host's core.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from appliance.filter.regex import MAX_PROGRAM, RegexError, compile_re2
from appliance.gossip.broadcast import TransmitLimitedQueue
from appliance.gossip.core import GossipCore
from appliance.gossip.lamport import LamportClock
from appliance.gossip.members import NodeState
from appliance.gossip.messages import (
    MAX_RELAY_FACTOR,
    PACKET_OVERHEAD,
    NodeStateKind,
    QueryMessage,
    QueryResponseMessage,
    RelayMessage,
    encode_message,
)

QUERY_BUFFER = 512  # Serf's QueryBuffer: LTimes of recent queries kept for dedup
QUERY_TIMEOUT_MULT = 16  # Serf's QueryTimeoutMult
QUERY_SIZE_LIMIT = 1024  # Serf's QuerySizeLimit (the query as sent)
QUERY_RESPONSE_SIZE_LIMIT = 1024  # Serf's QueryResponseSizeLimit
FLAG_ACK = 1
FLAG_NO_BROADCAST = 2
FILTER_NODE = 0
FILTER_TAG = 1
INTERNAL_PREFIX = "_serf_"


class QueryError(ValueError):
    """A query or response that cannot be sent (Serf's texts)."""


def default_timeout(gossip_interval_s: float, alive: int) -> float:
    """Serf's DefaultQueryTimeout for `alive` members (self included)."""
    return gossip_interval_s * QUERY_TIMEOUT_MULT * math.ceil(math.log10(max(1, alive) + 1))


def encode_filters(nodes: list[str] | None = None, tags: dict[str, str] | None = None) -> list[bytes]:
    """Serf's filter encoding: a type byte, then msgpack (node names; {Tag, Expr} per tag)."""
    out: list[bytes] = []
    if nodes:
        out.append(bytes((FILTER_NODE,)) + msgpack.packb(list(nodes), use_bin_type=True))
    for tag, expr in sorted((tags or {}).items()):
        out.append(bytes((FILTER_TAG,)) + msgpack.packb({"Tag": tag, "Expr": expr}, use_bin_type=True))
    return out


def should_process(filters: list[bytes], name: str, tags: dict[str, str]) -> bool:
    """Serf's shouldProcessQuery: every filter must select this member; unknown or garbled ones do not."""
    budget = [MAX_PROGRAM]
    for raw in filters:
        if not raw:
            return False
        try:
            body = msgpack.unpackb(raw[1:], raw=False, max_str_len=len(raw), max_array_len=len(raw),
                                   max_map_len=len(raw))
        except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
            return False
        if raw[0] == FILTER_NODE:
            if type(body) is not list or name not in body:
                return False
        elif raw[0] == FILTER_TAG:
            if type(body) is not dict or type(body.get("Tag")) is not str or type(body.get("Expr")) is not str:
                return False
            try:
                if not compile_re2(body["Expr"], budget).search(tags.get(body["Tag"], "")):
                    return False
            except RegexError:
                return False
        else:
            return False
    return True


@dataclass
class QueryRequest:
    """A query this member was selected for: what a responder sees and answers with `respond`."""

    ltime: int
    id: int
    name: str
    payload: bytes
    source_node: str
    addr: str
    port: int
    relay_factor: int
    deadline: float
    responded: bool = False


@dataclass
class QueryHandle:
    """A query we started: acks and responses by member until `deadline` closes it."""

    name: str
    ltime: int
    id: int
    deadline: float
    num_nodes: int  # alive members when it started (Serf's NumMembers), self included
    request_ack: bool
    acks: list[str] = field(default_factory=list)
    responses: dict[str, bytes] = field(default_factory=dict)
    closed: bool = False
    listener: Callable[[], None] | None = None  # called after every ack, response and the close

    def _changed(self) -> None:
        if self.listener is not None:
            self.listener()


class QueryHost(Protocol):
    """What the engine needs of the Serf instance that owns it."""

    name: str
    tags: dict[str, str]
    core: GossipCore
    stats: Counter[str]

    def deliver_query(self, req: QueryRequest) -> None: ...

    def log(self, source: str, level: str, text: str) -> None: ...


class QueryEngine:
    def __init__(self, host: QueryHost, retransmit_mult: int) -> None:
        self.host = host
        self.clock = LamportClock()
        self.clock.increment()
        self.min_time = 0
        self.queue = TransmitLimitedQueue(retransmit_mult)
        self.handles: dict[int, QueryHandle] = {}  # by LTime
        self._seen: list[tuple[int, list[int]] | None] = [None] * QUERY_BUFFER

    def num_alive(self) -> int:
        return sum(1 for n in self.host.core.members() if n.state in (NodeStateKind.ALIVE, NodeStateKind.SUSPECT))

    def default_timeout(self) -> float:
        return default_timeout(self.host.core.config.gossip_interval_s, self.num_alive())

    # ------------------------------------------------------------------ outgoing

    def start(self, name: str, payload: bytes, now: float, *, filter_nodes: list[str] | None = None,
              filter_tags: dict[str, str] | None = None, request_ack: bool = False, relay_factor: int = 0,
              timeout_s: float = 0.0) -> QueryHandle:
        """Serf's Query: QueryError when it is too large or a parameter is out of range."""
        core = self.host.core
        core.now = now
        if not 0 <= relay_factor <= MAX_RELAY_FACTOR:
            raise QueryError(f"Relay factor must be in range: [0, {MAX_RELAY_FACTOR}]")
        if timeout_s <= 0:
            timeout_s = self.default_timeout()
        msg = QueryMessage(self.clock.time(), core.rng.randrange(1 << 31), core.addr, core.port, self.host.name,
                           encode_filters(filter_nodes, filter_tags), FLAG_ACK if request_ack else 0,
                           relay_factor, int(timeout_s * 1e9), name, bytes(payload))
        raw = encode_message(msg)
        if len(raw) > QUERY_SIZE_LIMIT:
            raise QueryError(f"query exceeds limit of {QUERY_SIZE_LIMIT} bytes")
        handle = QueryHandle(name, msg.ltime, msg.id, now + timeout_s, self.num_alive(), request_ack)
        self.handles[msg.ltime] = handle
        core.call_at(handle.deadline, self._close, handle)
        self.host.stats["queries_sent"] += 1
        self.handle_query(msg)
        self.queue.queue(raw)
        return handle

    def _close(self, handle: QueryHandle) -> None:
        if self.handles.get(handle.ltime) is handle:
            del self.handles[handle.ltime]
        handle.closed = True
        handle._changed()

    # ------------------------------------------------------------------ incoming

    def handle_query(self, msg: QueryMessage) -> bool:
        """Serf's handleQuery: True if the query is new here and to be re-gossiped."""
        host = self.host
        self.clock.witness(msg.ltime)
        if msg.ltime < self.min_time:
            return False
        cur = self.clock.time()
        if cur > QUERY_BUFFER and msg.ltime < cur - QUERY_BUFFER:
            host.stats["queries_too_old"] += 1
            host.log("serf", "warning", f"serf: received old query {msg.name} from time {msg.ltime} (current: {cur})")
            return False
        idx = msg.ltime % QUERY_BUFFER
        slot = self._seen[idx]
        if slot is not None and slot[0] == msg.ltime:
            if msg.id in slot[1]:
                return False
            slot[1].append(msg.id)
        else:
            self._seen[idx] = (msg.ltime, [msg.id])
        host.stats["queries"] += 1
        rebroadcast = not msg.flags & FLAG_NO_BROADCAST
        if not should_process(msg.filters, host.name, host.tags):
            return rebroadcast
        if msg.flags & FLAG_ACK:
            ack = QueryResponseMessage(msg.ltime, msg.id, host.name, FLAG_ACK, b"")
            self._send(msg.addr, msg.port, msg.source_node, msg.relay_factor, ack)
        now = host.core.now
        host.deliver_query(QueryRequest(msg.ltime, msg.id, msg.name, msg.payload, msg.source_node, msg.addr,
                                        msg.port, msg.relay_factor, now + msg.timeout_ns / 1e9))
        return rebroadcast

    def respond(self, req: QueryRequest, payload: bytes) -> None:
        """Serf's Query.Respond: once, before the deadline, within the size limit (QueryError)."""
        if req.responded:
            raise QueryError("response already sent")
        if self.host.core.now > req.deadline:
            raise QueryError("response is past the deadline")
        msg = QueryResponseMessage(req.ltime, req.id, self.host.name, 0, bytes(payload))
        if len(encode_message(msg)) > QUERY_RESPONSE_SIZE_LIMIT:
            raise QueryError(f"response exceeds limit of {QUERY_RESPONSE_SIZE_LIMIT} bytes")
        self._send(req.addr, req.port, req.source_node, req.relay_factor, msg)
        req.responded = True

    def handle_response(self, msg: QueryResponseMessage) -> None:
        """Serf's handleQueryResponse: record an ack or a response for a running query."""
        host = self.host
        handle = self.handles.get(msg.ltime)
        if handle is None:
            host.stats["query_replies_unknown"] += 1
            host.log("serf", "warning",
                     f"serf: reply for non-running query (LTime: {msg.ltime}, ID: {msg.id}) From: {msg.from_node}")
            return
        if handle.id != msg.id:
            host.log("serf", "warning", f"serf: query reply ID mismatch (Local: {handle.id}, Response: {msg.id})")
            return
        if handle.closed:
            return
        if msg.flags & FLAG_ACK:
            if msg.from_node in handle.acks:
                host.stats["query_duplicate_acks"] += 1
                return
            host.stats["query_acks"] += 1
            handle.acks.append(msg.from_node)
        else:
            if msg.from_node in handle.responses:
                host.stats["query_duplicate_responses"] += 1
                return
            host.stats["query_responses"] += 1
            handle.responses[msg.from_node] = msg.payload
        handle._changed()

    def handle_relay(self, msg: RelayMessage) -> None:
        """Forward a relayed response to its destination, unread (Serf's messageRelayType); one
        that cannot be a response (too large for a packet) is dropped and counted."""
        if len(msg.inner) + PACKET_OVERHEAD > min(self.host.core.config.udp_buffer_size, QUERY_RESPONSE_SIZE_LIMIT):
            self.host.stats["query_relays_dropped"] += 1
            return
        self.host.stats["query_relays"] += 1
        self.host.core.ctx.send_packet((msg.dest_addr, msg.dest_port), [msg.inner])

    def _send(self, addr: str, port: int, dest_name: str, relay_factor: int, msg: QueryResponseMessage) -> None:
        core = self.host.core
        raw = encode_message(msg)
        if (addr, port) == (core.addr, core.port):
            self.handle_response(msg)  # our own query: no packet to ourselves
        else:
            core.ctx.send_packet((addr, port), [raw])
        if relay_factor <= 0:
            return
        me = self.host.name

        def eligible(n: NodeState) -> bool:
            return n.state == NodeStateKind.ALIVE and n.name != me and (n.addr, n.port) != (addr, port)

        relay = encode_message(RelayMessage(addr, port, dest_name, raw))
        for node in core.table.random_members(relay_factor, eligible):
            core.ctx.send_packet(node.address, [relay])

    # ------------------------------------------------------------------ push-pull

    def witness_remote(self, ltime: int) -> None:
        """A peer's query clock from push-pull (it has not used that value yet)."""
        if ltime > 0:
            self.clock.witness(ltime - 1)


def encode_payload(kind: int, body: Any) -> bytes:
    """A type byte and msgpack, the shape of Serf's internal query payloads."""
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return bytes((kind,)) + packed
