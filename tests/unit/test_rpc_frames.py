"""The server port's frame format (appliance/rpc/frames.py): round trips, every kind, limits, garbage.

The bytes are pinned: mixed versions of the agent must keep understanding each other, so an
encoded frame is compared with what the format gives by hand (`u8 version | u32 length |
msgpack body`) and kinds keep their numbers (append-only).
"""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from appliance.raft.messages import Entry, EntryType, Message, MsgType
from appliance.raft.transport import decode_message, encode_message
from appliance.rpc import frames
from appliance.rpc.connection import read_frame
from appliance.rpc.frames import (
    HEADER,
    KINDS,
    MAX_FRAME_BYTES,
    MAX_INT,
    PART_VERSION,
    WIRE_VERSION,
    BadHeader,
    FrameError,
    Kind,
    as_bytes,
    as_int,
    as_str,
    decode_body,
    decode_frame,
    encode_frame,
    parse_header,
)

# Wire enums are append-only (DESIGN: Conventions): a number keeps its meaning forever.
WIRE_NUMBERS = {
    "RAFT": 1, "HELLO": 2, "FORWARD": 3, "FORWARD_RESP": 4, "FOLLOW": 5, "STREAM": 6,
    "READ_INDEX": 7, "READ_INDEX_RESP": 8, "DC_REQUEST": 9, "DC_RESPONSE": 10, "AUTO_ENCRYPT": 11,
}

# One body of each kind, shaped as its sender builds it.
BODIES = {
    Kind.RAFT: encode_message(Message(MsgType.APPEND, "n1", "n2", 3, 9, 2,
                                      (Entry(10, 3, EntryType.COMMAND, b"\x00cmd"),), 9)),
    Kind.HELLO: [Kind.HELLO, {"id": "n1", "addr": "10.0.0.1:8300", "expect": 3,
                              "servers": [["n2", "10.0.0.2:8300"]], "conf": None}],
    Kind.FORWARD: [Kind.FORWARD, 7, "10.0.0.1:8300", {"Type": "kv_set", "Key": "a", "Value": b"v"}],
    Kind.FORWARD_RESP: [Kind.FORWARD_RESP, 7, "ok", True, 42],
    Kind.FOLLOW: [Kind.FOLLOW, 0, "client-1"],
    Kind.STREAM: [Kind.STREAM, "entries", [[5, b"\x81"], [6, None]]],
    Kind.READ_INDEX: [Kind.READ_INDEX, 8, "", True],
    Kind.READ_INDEX_RESP: [Kind.READ_INDEX_RESP, 8, "ok", 41],
    Kind.DC_REQUEST: [Kind.DC_REQUEST, {"dc": "dc2", "method": "GET", "path": "/v1/kv/a", "query": [],
                                        "headers": [], "body": b"", "hops": 1}],
    Kind.DC_RESPONSE: [Kind.DC_RESPONSE, {"status": 200, "headers": [["X-Consul-Index", "4"]], "body": b"[]"}],
    Kind.AUTO_ENCRYPT: [Kind.AUTO_ENCRYPT, {"CSR": "-----BEGIN CERTIFICATE REQUEST-----\n...", "Token": "t",
                                            "Datacenter": "dc1"}],
}


def by_hand(body: list) -> bytes:
    data = msgpack.packb(body, use_bin_type=True)
    return struct.pack(">BI", 1, len(data)) + data


def test_kinds_keep_their_numbers():
    assert {k.name: int(k) for k in Kind} == WIRE_NUMBERS
    assert frozenset(WIRE_NUMBERS.values()) == KINDS
    assert set(BODIES) == set(Kind)  # every kind has a round trip below


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_every_kind_round_trips_with_the_same_bytes(kind):
    body = BODIES[kind]
    data = encode_frame(body)
    plain = [int(x) if isinstance(x, Kind) else x for x in body]
    assert data == by_hand(plain)  # an enum member packs as its number: the same bytes as before
    assert data[0] == WIRE_VERSION and parse_header(data[: HEADER.size]) == len(data) - HEADER.size
    decoded, used = decode_frame(data + b"next")
    assert used == len(data) and decoded == plain and decoded[0] == kind


def test_a_raft_message_round_trips():
    m = Message(MsgType.APPEND, "n1", "n2", 3, 9, 2, (Entry(10, 3, EntryType.COMMAND, b"cmd"),), 9)
    assert decode_message(decode_body(encode_frame(encode_message(m))[HEADER.size:])) == m


def test_text_outside_utf8_crosses_as_its_bytes():
    # a KV key's byte 0xff is held as U+DCFF (appliance/http/handlers/kv.py); it crosses as 0xff
    body = [Kind.FORWARD, 1, "", {"Key": "k\udcff"}]
    data = encode_frame(body)
    assert b"k\xff" in data
    assert decode_body(data[HEADER.size:]) == body
    assert encode_frame([Kind.FOLLOW, 0, "ok"]) == by_hand([5, 0, "ok"])  # valid text: strict fast path


def test_header_limits():
    assert parse_header(HEADER.pack(WIRE_VERSION, MAX_FRAME_BYTES)) == MAX_FRAME_BYTES
    with pytest.raises(BadHeader):
        parse_header(HEADER.pack(WIRE_VERSION, MAX_FRAME_BYTES + 1))  # cannot be skipped safely
    with pytest.raises(BadHeader):
        parse_header(HEADER.pack(2, 10))  # a version this agent does not speak
    with pytest.raises(BadHeader):
        parse_header(HEADER.pack(2 | 0x80, 10))  # a part of a version it does not speak
    assert parse_header(HEADER.pack(PART_VERSION, MAX_FRAME_BYTES)) == MAX_FRAME_BYTES
    assert issubclass(BadHeader, FrameError) and issubclass(FrameError, ValueError)


def _headers(data: bytes) -> list[tuple[int, int]]:
    """(version, length) of each frame in `data`."""
    out, pos = [], 0
    while pos < len(data):
        version, length = HEADER.unpack_from(data, pos)
        out.append((version, length))
        pos += HEADER.size + length
    return out


def _read(data: bytes) -> bytes:
    async def go() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, 5.0)
    return asyncio.run(go())


def test_a_body_over_one_frame_travels_in_parts():
    # a snapshot of a large catalog: one body of just over 64 MiB is two frames, the first
    # marked "more parts follow", and reads back whole
    state = b"\x01" * (MAX_FRAME_BYTES + 1000)
    data = encode_frame([Kind.STREAM, "snapshot", 7, state])
    heads = _headers(data)
    assert [v for v, _ in heads] == [PART_VERSION, WIRE_VERSION] and heads[0][1] == MAX_FRAME_BYTES
    body = msgpack.packb([int(Kind.STREAM), "snapshot", 7, state], use_bin_type=True)
    assert sum(n for _, n in heads) == len(body)
    assert decode_frame(data + b"next") == ([Kind.STREAM, "snapshot", 7, state], len(data))
    assert _read(data) == body


def test_parts_and_their_limits(monkeypatch):
    monkeypatch.setattr(frames, "MAX_FRAME_BYTES", 100)
    monkeypatch.setattr(frames, "MAX_MESSAGE_BYTES", 1000)
    small = [Kind.FORWARD, 1, "", {"Value": b"x" * 50}]
    assert encode_frame(small) == by_hand([3, 1, "", {"Value": b"x" * 50}])  # one frame, the old bytes
    body = [Kind.FORWARD, 1, "", {"Value": b"y" * 700}]
    data = encode_frame(body)
    heads = _headers(data)
    assert len(heads) == 8 and all(n <= 100 for _, n in heads)
    assert [v for v, _ in heads] == [PART_VERSION] * 7 + [WIRE_VERSION]
    assert decode_frame(data)[0] == body and decode_body(_read(data)) == body
    for cut in range(0, len(data), 37):  # a body cut anywhere is not a frame
        with pytest.raises(FrameError):
            decode_frame(data[:cut])
        with pytest.raises(asyncio.IncompleteReadError):
            _read(data[:cut])
    with pytest.raises(ValueError, match="over the limit of 1000"):
        encode_frame([Kind.FORWARD, 1, "", {"Value": b"z" * 1000}])
    # a peer that keeps sending parts past the whole-body limit: the connection cannot go on
    endless = (HEADER.pack(PART_VERSION, 100) + b"p" * 100) * 11
    with pytest.raises(BadHeader, match="message over 1000 bytes"):
        _read(endless)
    with pytest.raises(BadHeader):
        decode_frame(endless)
    assert decode_body(_read(encode_frame(small))) == small


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never used in msgpack
        msgpack.packb([]),  # no kind
        msgpack.packb({"kind": 1}),  # not a list
        msgpack.packb([12, "from a newer version"]),  # an unknown kind is dropped, not guessed at
        msgpack.packb([0]),
        msgpack.packb([True, 1]),  # a bool is not a kind
        msgpack.packb(["1"]),
        msgpack.packb([1]) + b"\x00",  # trailing bytes
        b"\x91",  # a list cut short
    ],
)
def test_garbage_bodies_are_frame_errors(data):
    with pytest.raises(FrameError):
        decode_body(data)


def test_field_checks():
    assert as_int(0) == 0 and as_int(MAX_INT - 1) == MAX_INT - 1
    for bad in (-1, MAX_INT, True, 1.0, "1", None):
        with pytest.raises(FrameError):
            as_int(bad)
    assert as_bytes(b"x") == b"x" and as_str("x") == "x"
    for check, bad in ((as_bytes, 5), (as_bytes, "x"), (as_str, b"x"), (as_str, None)):
        with pytest.raises(FrameError):
            check(bad)


def test_short_input_is_a_frame_error():
    data = encode_frame(BODIES[Kind.HELLO])
    for cut in range(len(data)):
        with pytest.raises(FrameError):
            decode_frame(data[:cut])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_give_a_frame_or_frame_error(data):
    # Bad input never crashes (DESIGN: Conventions): only FrameError escapes, or a valid frame
    for attempt in (data, HEADER.pack(WIRE_VERSION, len(data)) + data):
        try:
            body, used = decode_frame(attempt)
        except FrameError:
            continue
        assert isinstance(body, list) and body[0] in KINDS and HEADER.size <= used <= len(attempt)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(Kind)), st.lists(msgpack_values, max_size=5))
def test_any_body_round_trips(kind, rest):
    body = [kind, *rest]
    data = encode_frame(body)
    decoded, used = decode_frame(data)
    assert used == len(data) and decoded == body


@settings(max_examples=300, deadline=None)
@given(st.lists(msgpack_values, min_size=1, max_size=5))
def test_any_decodable_body_is_a_frame_or_frame_error(body):
    # whatever a peer packs: a body with a known kind, or FrameError, never another exception
    try:
        decoded = decode_body(msgpack.packb(body, use_bin_type=True))
    except FrameError:
        return
    assert decoded == body and decoded[0] in KINDS
