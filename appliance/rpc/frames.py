"""The server port's frame format (sans-IO): header, kinds, limits, and the body codec.

How it works
------------
Every frame is `u8 version | u32 length (big endian) | msgpack body`, the body a list
`[kind, ...]`. The version byte is `WIRE_VERSION` (1). Kinds are append-only (a new one gets the
next number; a number is never reused or given another meaning):

    1 RAFT            one Raft `Message` (appliance/raft/transport.py)
    2 HELLO           a server's id, address, bootstrap_expect and the servers it knows
    3 FORWARD         a command for the leader: [3, request id, reply address, command(, token)]
    4 FORWARD_RESP    its result: [4, request id, status, value(, index)]
    5 FOLLOW          a client agent asks for the replica stream: [5, from index, node name]
    6 STREAM          the stream's snapshots, entries and status (feed.py)
    7 READ_INDEX      ask the leader for its read index: [7, request id, reply address, consistent]
    8 READ_INDEX_RESP the index: [8, request id, status, index]
    9 DC_REQUEST      an HTTP request for another datacenter, or from one (federation/forward.py)
   10 DC_RESPONSE     its answer
   11 AUTO_ENCRYPT    a client agent's CSR for its auto_encrypt certificate, and the server's answer
                      (appliance/rpc/autoencrypt.py)

A body over `MAX_FRAME_BYTES` (64 MiB) travels in parts: frames of at most that size whose
version byte is `PART_VERSION` (`WIRE_VERSION` with the high bit set: more parts follow), then
one frame with `WIRE_VERSION` ending it; the receiver joins the parts' bytes and decodes them as
one body (`connection.read_frame`). A body of at most 64 MiB is one frame, the same bytes as
before parts existed, so only messages that could not be sent before need a peer that knows
parts (a snapshot of a large catalog: InstallSnapshot, a client agent's replica, a restore).

Limits: a frame's body is at most `MAX_FRAME_BYTES`, a whole body (all its parts) at most
`MAX_MESSAGE_BYTES` (512 MiB: a catalog many times the 100,000 instances cairn is measured
with); integers the receiver uses as terms, indexes or ids are 0..2^63. A header of another
version or a longer length, or parts past the whole-body limit, cannot be skipped safely (the
next frame's start is unknown): `parse_header` or `add_part` raises `BadHeader` and the
connection is closed. A body that does not decode, or decodes to something
that is not `[kind, ...]` with a known kind, raises `FrameError`: the frame is dropped and the
connection goes on. Receivers count both (their `garbage_frames`); neither is ever a crash.

Text keeps its bytes: a forwarded command may carry a KV key that is not UTF-8, held with one
lone surrogate per such byte (appliance/http/handlers/kv.py). `encode_frame` packs strictly
first (msgpack's fast path; with an error handler it encodes each string apart) and only on a
lone surrogate packs again with "surrogateescape"; `decode_body` unpacks with
"surrogateescape", so such a key crosses as exactly its bytes. Valid UTF-8 decodes the same
either way.
"""

from __future__ import annotations

import enum
import struct
from typing import Any

import msgpack

WIRE_VERSION = 1
PART_VERSION = WIRE_VERSION | 0x80  # a part of a longer body; more parts follow
HEADER = struct.Struct(">BI")  # version, body length
MAX_FRAME_BYTES = 64 << 20
MAX_MESSAGE_BYTES = 512 << 20
# A client agent's requests (READ_INDEX, FORWARD) unanswered on one connection to a server: the
# server refuses more, so the client keeps to it and queues the rest (client/replica.py).
MAX_REQUESTS_IN_FLIGHT = 256
MAX_INT = 1 << 63
TEXT_ERRORS = "surrogateescape"


class Kind(enum.IntEnum):
    """Frame kinds; append-only."""

    RAFT = 1
    HELLO = 2
    FORWARD = 3
    FORWARD_RESP = 4
    FOLLOW = 5
    STREAM = 6
    READ_INDEX = 7
    READ_INDEX_RESP = 8
    DC_REQUEST = 9
    DC_RESPONSE = 10
    AUTO_ENCRYPT = 11


KINDS = frozenset(int(k) for k in Kind)


class FrameError(ValueError):
    """A peer's frame that cannot be used (counted and dropped)."""


class BadHeader(FrameError):
    """A frame header of an unknown version or over the size limit: the connection cannot go on."""


def encode_frame(body: list[Any]) -> bytes:
    """Header and msgpack body; TypeError or ValueError when msgpack cannot carry a value."""
    data: bytes
    try:  # strict first: msgpack's fast path
        data = msgpack.packb(body, use_bin_type=True)
    except UnicodeEncodeError:  # a lone surrogate: a KV key's byte outside UTF-8
        data = msgpack.packb(body, use_bin_type=True, unicode_errors=TEXT_ERRORS)
    if len(data) <= MAX_FRAME_BYTES:
        return HEADER.pack(WIRE_VERSION, len(data)) + data
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}")
    view = memoryview(data)
    last = (len(data) - 1) // MAX_FRAME_BYTES * MAX_FRAME_BYTES
    return b"".join(HEADER.pack(WIRE_VERSION if start == last else PART_VERSION, len(chunk)) + chunk
                    for start in range(0, len(data), MAX_FRAME_BYTES)
                    for chunk in (view[start : start + MAX_FRAME_BYTES],))


def parse_header(head: bytes) -> int:
    """The body length from a `HEADER.size`-byte header (of a whole frame or of a part: see
    `is_part`); BadHeader when it cannot be followed."""
    fields: tuple[int, int] = HEADER.unpack(head)
    version, length = fields
    if (version != WIRE_VERSION and version != PART_VERSION) or length > MAX_FRAME_BYTES:
        raise BadHeader(f"frame version {version}, length {length}")
    return length


def is_part(head: bytes) -> bool:
    """A parsed header's frame is a part of a longer body: more frames follow."""
    return head[0] == PART_VERSION


def add_part(parts: list[bytes], total: int, data: bytes) -> int:
    """`data` appended to a body's parts read so far (`total` bytes); the new total. BadHeader
    when the whole body would be over MAX_MESSAGE_BYTES (the connection cannot go on)."""
    total += len(data)
    if total > MAX_MESSAGE_BYTES:
        raise BadHeader(f"message over {MAX_MESSAGE_BYTES} bytes")
    parts.append(data)
    return total


def decode_body(data: bytes) -> list[Any]:
    """A frame body `[kind, ...]` with a known kind; FrameError for anything else."""
    try:
        body = msgpack.unpackb(data, raw=False, unicode_errors=TEXT_ERRORS)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise FrameError(f"body does not decode: {err}") from None
    if not isinstance(body, list) or not body:
        raise FrameError("not a frame body")
    kind = body[0]
    if type(kind) is not int or kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind!r}")
    return body


def decode_frame(data: bytes) -> tuple[list[Any], int]:
    """The first whole body in `data` (one frame, or its parts) and the bytes it took;
    FrameError when there is none."""
    parts: list[bytes] = []
    total = end = 0
    while True:
        if len(data) < end + HEADER.size:
            raise FrameError("short header")
        head = data[end : end + HEADER.size]
        start = end + HEADER.size
        end = start + parse_header(head)
        if len(data) < end:
            raise FrameError("short body")
        total = add_part(parts, total, data[start:end])
        if not is_part(head):
            return decode_body(parts[0] if len(parts) == 1 else b"".join(parts)), end


# ------------------------------------------------------------------ field checks for decoders


def as_int(v: Any) -> int:
    """A term, index or id: an int in 0..2^63 (bool is not one)."""
    if type(v) is not int or not 0 <= v < MAX_INT:
        raise FrameError(f"bad integer {v!r}")
    return v


def as_bytes(v: Any) -> bytes:
    if not isinstance(v, bytes):  # bytes(n) of an int would allocate n bytes
        raise FrameError(f"bad bytes {type(v).__name__}")
    return v


def as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise FrameError(f"bad string {v!r}")
    return v
