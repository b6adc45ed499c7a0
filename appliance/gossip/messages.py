"""Gossip wire messages and their msgpack codec.

How it works: a UDP packet is one version byte (`WIRE_VERSION`) followed by a msgpack array of
messages; each message is itself a msgpack array `[type, field, ...]` with the fields in the order
of its dataclass. Because the array elements are self-delimiting, a packet is built by
concatenating pre-encoded messages after an array header, which is how queued broadcasts are
piggybacked without re-encoding (`encode_packet`). A push-pull stream carries a single message
after the version byte (`encode_stream`).

Decoding is strict and bounded: oversized input, a wrong version byte, msgpack errors, wrong
arity or field types all raise `DecodeError` (a remote error the core counts and drops), never
anything else. Unknown message types inside a valid packet are skipped and counted, so newer
peers can add types. `MessageType` and `NodeStateKind` are append-only: the numbers are part of
the wire protocol.

An ack's payload is optional and versioned by its first byte: empty (nothing), or version 1 with
the acking member's network coordinate (`encode_coordinate_payload`), as Serf's ping delegate
sends it. A receiver ignores versions it does not know, so acks stay compatible both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum
from operator import attrgetter
from typing import Any, NamedTuple

import msgpack

WIRE_VERSION = 1
MAX_PACKET_BYTES = 65_536  # receive limit for one datagram (memberlist reads into 64 KiB buffers)
MAX_STREAM_BYTES = 20 * 1024 * 1024  # push-pull state limit (memberlist maxPushStateBytes)
MAX_PUSH_NODES = 1_048_576
MAX_PARTS = 65_535  # messages in one packet (msgpack array16)
PACKET_OVERHEAD = 4  # version byte + the largest array header we write
META_MAX_BYTES = 512
NAME_MAX_CHARS = 255
ADDR_MAX_CHARS = 255
PAYLOAD_MAX_BYTES = 8192
USER_EVENT_MAX_BYTES = 9 * 1024  # Serf's hard cap on name + payload of one user event
ACK_PAYLOAD_COORDINATE = 1  # version byte of the ack payload that carries a Vivaldi coordinate
COORDINATE_MAX_DIMENSIONS = 64
QUERY_MAX_BYTES = 9 * 1024  # a query or response is refused at submit above its limit (1024); this bounds the decoder
MAX_QUERY_FILTERS = 64
MAX_RELAY_FACTOR = 5
U16 = 0xFFFF
U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF


class MessageType(IntEnum):
    # WARNING: append only. The numeric values are part of the wire protocol.
    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    NACK = 7
    JOIN_INTENT = 8
    LEAVE_INTENT = 9
    STREAM_ERROR = 10
    USER_EVENT = 11
    QUERY = 12
    QUERY_RESPONSE = 13
    RELAY = 14


class NodeStateKind(IntEnum):
    # WARNING: append only. Sent in push-pull state.
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class DecodeError(ValueError):
    """A peer sent bytes we cannot use. Count it, drop it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    node: str  # the target's name; empty = whoever listens there
    source_node: str
    source_addr: str
    source_port: int


@dataclass(frozen=True, slots=True)
class IndirectPing:
    seq: int
    node: str
    target_addr: str
    target_port: int
    nack: bool
    source_node: str
    source_addr: str
    source_port: int


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int


@dataclass(frozen=True, slots=True)
class Suspect:
    incarnation: int
    node: str
    from_node: str


@dataclass(frozen=True, slots=True)
class Alive:
    incarnation: int
    node: str
    addr: str
    port: int
    meta: bytes


@dataclass(frozen=True, slots=True)
class Dead:
    incarnation: int
    node: str
    from_node: str


class PushNode(NamedTuple):
    """One member in push-pull state. A tuple, so a table of a thousand packs and unpacks fast."""

    name: str
    addr: str
    port: int
    meta: bytes
    incarnation: int
    state: int  # NodeStateKind


@dataclass(frozen=True, slots=True)
class PushPull:
    join: bool
    reply: bool
    nodes: tuple[PushNode, ...]
    user_state: bytes


@dataclass(frozen=True, slots=True)
class JoinIntent:
    ltime: int
    node: str


@dataclass(frozen=True, slots=True)
class LeaveIntent:
    ltime: int
    node: str
    prune: bool


@dataclass(frozen=True, slots=True)
class StreamError:
    error: str


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A Serf user event: Lamport time of the event clock, name, opaque payload, may coalesce."""

    ltime: int
    name: str
    payload: bytes
    cc: bool


@dataclass(frozen=True, slots=True)
class QueryMessage:
    """A Serf query: Lamport time of the query clock, a random ID, where responses go, filters
    (each a type byte and msgpack), flags (1 ack, 2 no re-broadcast), relay factor, timeout (ns)."""

    ltime: int
    id: int
    addr: str
    port: int
    source_node: str
    filters: list[bytes]
    flags: int
    relay_factor: int
    timeout_ns: int
    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryResponseMessage:
    """An ack (flags & 1) or a response to the query (ltime, id), sent straight to its source."""

    ltime: int
    id: int
    from_node: str
    flags: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class RelayMessage:
    """Forward `inner` (one encoded message) to `dest`: a query response relayed by a third member."""

    dest_addr: str
    dest_port: int
    dest_name: str
    inner: bytes


Message = (
    Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | PushPull | JoinIntent | LeaveIntent | StreamError
    | UserEvent | QueryMessage | QueryResponseMessage | RelayMessage
)

# ---------------------------------------------------------------------------------- field checks


def _u(bound: int) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return type(v) is int and 0 <= v <= bound

    return check


def _s(max_chars: int) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return type(v) is str and len(v) <= max_chars

    return check


def _b(max_bytes: int) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return type(v) is bytes and len(v) <= max_bytes

    return check


def _bool(v: Any) -> bool:
    return type(v) is bool


def _filters(v: Any) -> bool:
    return (type(v) is list and len(v) <= MAX_QUERY_FILTERS
            and all(type(f) is bytes and len(f) <= QUERY_MAX_BYTES for f in v))


_NAME, _ADDR = _s(NAME_MAX_CHARS), _s(ADDR_MAX_CHARS)
_SEQ, _PORT, _INC, _LTIME = _u(U32), _u(U16), _u(U32), _u(U64)

_MAX_STATE = len(NodeStateKind) - 1

_SCHEMAS: dict[int, tuple[type[Message], tuple[Callable[[Any], bool], ...]]] = {
    MessageType.PING: (Ping, (_SEQ, _NAME, _NAME, _ADDR, _PORT)),
    MessageType.INDIRECT_PING: (IndirectPing, (_SEQ, _NAME, _ADDR, _PORT, _bool, _NAME, _ADDR, _PORT)),
    MessageType.ACK: (Ack, (_SEQ, _b(PAYLOAD_MAX_BYTES))),
    MessageType.NACK: (Nack, (_SEQ,)),
    MessageType.SUSPECT: (Suspect, (_INC, _NAME, _NAME)),
    MessageType.ALIVE: (Alive, (_INC, _NAME, _ADDR, _PORT, _b(META_MAX_BYTES))),
    MessageType.DEAD: (Dead, (_INC, _NAME, _NAME)),
    MessageType.JOIN_INTENT: (JoinIntent, (_LTIME, _NAME)),
    MessageType.LEAVE_INTENT: (LeaveIntent, (_LTIME, _NAME, _bool)),
    MessageType.STREAM_ERROR: (StreamError, (_s(1024),)),
    MessageType.USER_EVENT: (UserEvent, (_LTIME, _s(USER_EVENT_MAX_BYTES), _b(USER_EVENT_MAX_BYTES), _bool)),
    MessageType.QUERY: (QueryMessage, (_LTIME, _SEQ, _ADDR, _PORT, _NAME, _filters, _SEQ, _u(MAX_RELAY_FACTOR),
                                       _LTIME, _s(QUERY_MAX_BYTES), _b(QUERY_MAX_BYTES))),
    MessageType.QUERY_RESPONSE: (QueryResponseMessage, (_LTIME, _SEQ, _NAME, _SEQ, _b(QUERY_MAX_BYTES))),
    MessageType.RELAY: (RelayMessage, (_ADDR, _PORT, _NAME, _b(QUERY_MAX_BYTES + 64))),
}
_TYPE_OF: dict[type, int] = {cls: t for t, (cls, _) in _SCHEMAS.items()}
_TYPE_OF[PushPull] = MessageType.PUSH_PULL
_GETTERS: dict[type, attrgetter[Any]] = {
    cls: attrgetter(*(f.name for f in fields(cls))) for cls in _TYPE_OF if cls is not PushPull
}

# ---------------------------------------------------------------------------------- encoding

_packb: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def encode_message(msg: Message) -> bytes:
    """One message as a msgpack array `[type, fields...]` (a packet part, not a packet)."""
    cls = type(msg)
    if type(msg) is PushPull:  # PushNode is a tuple: msgpack writes it as the array of its fields
        return _packb([MessageType.PUSH_PULL.value, msg.join, msg.reply, list(msg.nodes), msg.user_state])
    values = _GETTERS[cls](msg)
    if type(values) is not tuple:  # attrgetter of one field returns the bare value
        values = (values,)
    return _packb([_TYPE_OF[cls], *values])


def _array_header(n: int) -> bytes:
    if n <= 15:
        return bytes((0x90 | n,))
    if n <= MAX_PARTS:
        return b"\xdc" + n.to_bytes(2, "big")
    raise ValueError(f"too many messages in one packet: {n}")


def encode_packet(parts: list[bytes]) -> bytes:
    """A datagram from encoded messages (see `encode_message`)."""
    return bytes((WIRE_VERSION,)) + _array_header(len(parts)) + b"".join(parts)


def encode_stream(msg: Message) -> bytes:
    """A push-pull stream body (one message)."""
    return bytes((WIRE_VERSION,)) + encode_message(msg)


# ---------------------------------------------------------------------------------- decoding


def _unpack(body: bytes, limit: int) -> Any:
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=max(MAX_PUSH_NODES, MAX_PARTS),
            max_map_len=MAX_PUSH_NODES,
            max_ext_len=0,
        )
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types (ValueError, ExtraData, ...)
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}") from None


def _build(item: Any) -> Message | None:
    """A message from its decoded array, None if its type is unknown; DecodeError if malformed."""
    if type(item) is not list or not item or type(item[0]) is not int:
        raise DecodeError("message is not [type, ...]")
    mtype, fields = item[0], item[1:]
    if mtype == MessageType.PUSH_PULL:
        return _build_push_pull(fields)
    schema = _SCHEMAS.get(mtype)
    if schema is None:
        return None
    cls, checks = schema
    if len(fields) != len(checks):
        raise DecodeError(f"{cls.__name__}: {len(fields)} fields, want {len(checks)}")
    for value, check in zip(fields, checks):
        if not check(value):
            raise DecodeError(f"{cls.__name__}: bad field")
    return cls(*fields)


def _build_push_pull(fields: list[Any]) -> PushPull:
    if len(fields) != 4:
        raise DecodeError("PushPull: wrong arity")
    join, reply, nodes, user_state = fields
    if not (_bool(join) and _bool(reply) and type(nodes) is list and type(user_state) is bytes):
        raise DecodeError("PushPull: bad field")
    if len(nodes) > MAX_PUSH_NODES:
        raise DecodeError("PushPull: too many nodes")
    out = []
    make = PushNode._make
    for node in nodes:  # the field checks, inlined: this loop runs once per member per exchange
        if type(node) is not list or len(node) != 6:
            raise DecodeError("PushPull: bad node")
        name, addr, port, meta, inc, state = node
        if not (type(name) is str and len(name) <= NAME_MAX_CHARS and type(addr) is str
                and len(addr) <= ADDR_MAX_CHARS and type(port) is int and 0 <= port <= U16
                and type(meta) is bytes and len(meta) <= META_MAX_BYTES and type(inc) is int
                and 0 <= inc <= U32 and type(state) is int and 0 <= state <= _MAX_STATE):
            raise DecodeError("PushPull: bad node field")
        out.append(make(node))
    return PushPull(join, reply, tuple(out), user_state)


def decode_packet(data: bytes) -> tuple[list[Message], int]:
    """(messages, unknown_type_count) from a datagram; DecodeError if it is unusable."""
    if len(data) > MAX_PACKET_BYTES:
        raise DecodeError("oversized packet")
    if len(data) < 2:
        raise DecodeError("truncated packet")
    if data[0] != WIRE_VERSION:
        raise DecodeError(f"unknown wire version {data[0]}")
    items = _unpack(bytes(data[1:]), MAX_PACKET_BYTES)
    if type(items) is not list or not items or len(items) > MAX_PARTS:
        raise DecodeError("packet is not a list of messages")
    out: list[Message] = []
    unknown = 0
    for item in items:
        msg = _build(item)
        if msg is None:
            unknown += 1
        elif type(msg) is PushPull:
            raise DecodeError("push-pull is stream only")
        else:
            out.append(msg)
    return out, unknown


# ---------------------------------------------------------------------------------- ack payload
#
# An ack may carry a payload from the acking member (empty by default, so acks of members that
# send none still decode). The first byte versions it; version 1 is the sender's Vivaldi coordinate
# as a msgpack array `[vec, error, adjustment, height]` (seconds), as Serf's ping delegate does.
# A payload of another version is ignored by the receiver, not an error.


def encode_coordinate_payload(vec: list[float], error: float, adjustment: float, height: float) -> bytes:
    return bytes((ACK_PAYLOAD_COORDINATE,)) + _packb([list(vec), error, adjustment, height])


def decode_coordinate_payload(payload: bytes) -> tuple[list[float], float, float, float] | None:
    """(vec, error, adjustment, height) from an ack payload; None if it carries no coordinate.

    DecodeError if it claims to be a coordinate but is malformed (the caller counts and drops it).
    """
    if not payload or payload[0] != ACK_PAYLOAD_COORDINATE:
        return None
    item = _unpack(bytes(payload[1:]), PAYLOAD_MAX_BYTES)
    if type(item) is not list or len(item) != 4 or type(item[0]) is not list:
        raise DecodeError("coordinate payload is not [vec, error, adjustment, height]")
    vec, error, adjustment, height = item
    if not 0 < len(vec) <= COORDINATE_MAX_DIMENSIONS:
        raise DecodeError("coordinate payload: bad dimensionality")
    numbers = [*vec, error, adjustment, height]
    if not all(type(x) is float or type(x) is int for x in numbers):
        raise DecodeError("coordinate payload: not numbers")
    return [float(x) for x in vec], float(error), float(adjustment), float(height)


def decode_stream(data: bytes) -> Message:
    """The single message of a push-pull stream; DecodeError if unusable or of an unknown type."""
    if len(data) > MAX_STREAM_BYTES:
        raise DecodeError("oversized stream")
    if len(data) < 2:
        raise DecodeError("truncated stream")
    if data[0] != WIRE_VERSION:
        raise DecodeError(f"unknown wire version {data[0]}")
    msg = _build(_unpack(bytes(data[1:]), MAX_STREAM_BYTES))
    if msg is None:
        raise DecodeError("unknown stream message type")
    return msg
