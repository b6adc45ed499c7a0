"""Hostile gossip bytes: packets (plain, sealed, compound), push-pull streams, frames and payloads.

Declared outcomes (appliance/gossip/messages.py, keyring.py, transport.py): a decoded value, or
`DecodeError` from the message codec, `KeyringError` from decryption, `StreamFailed` from the
stream framing, `EventError` from a Consul user event's record; `decode_tags` answers None for
garbage and the core (`on_packet`, `on_stream`) never raises on input, it counts and drops; nor
does the Serf layer handling queries, responses and relays, or a query's filters (`should_process`
answers False for garbage).
Inputs: random bytes, mutations of valid encodings (compound packets of every message type,
push-pull states with members and Serf's user state, sealed packets and stream frames), and
value-tree mutations re-framed validly (inside the encryption, for sealed packets), so the field
checks are reached.
"""

from __future__ import annotations

import asyncio
import random

import msgpack

from appliance.events import EventError, UserEventRecord, uuid_to_index
from appliance.gossip.config import GossipConfig
from appliance.gossip.core import GossipCore
from appliance.gossip.keyring import Keyring, KeyringError
from appliance.gossip.messages import (
    Ack,
    Alive,
    Dead,
    DecodeError,
    IndirectPing,
    JoinIntent,
    LeaveIntent,
    Nack,
    Ping,
    PushNode,
    PushPull,
    QueryMessage,
    QueryResponseMessage,
    RelayMessage,
    StreamError,
    Suspect,
    UserEvent,
    decode_coordinate_payload,
    decode_packet,
    decode_stream,
    encode_coordinate_payload,
    encode_message,
    encode_packet,
    encode_stream,
)
from appliance.gossip.queries import encode_filters, should_process
from appliance.gossip.serf import Serf, decode_tags, encode_tags
from appliance.gossip.transport import CHANNEL_ERROR, CHANNEL_GOSSIP, GossipTransport, StreamFailed
from tests.fuzz.harness import Target, fuzz_tests, seed_tests

KEY = bytes(range(32))
KEYRING = Keyring([KEY, bytes(range(16))], nonce_source=lambda n: b"\x07" * n)
SRC = ("127.0.0.2", 8301)

MESSAGES = [
    Ping(7, "n1", "n2", "10.0.0.2", 8301),
    IndirectPing(8, "n3", "10.0.0.3", 8301, True, "n2", "10.0.0.2", 8301),
    Ack(7, encode_coordinate_payload([0.1, -0.2, 0.0, 1e-3, 0.5, 0.0, 0.0, 0.25], 1.5, 0.01, 1e-5)),
    Ack(9, b""),
    Nack(8),
    Suspect(3, "n3", "n2"),
    Alive(4, "n4", "10.0.0.4", 8301, encode_tags({"role": "consul", "dc": "dc1", "port": "8300"})),
    Dead(5, "n5", "n2"),
    JoinIntent(10, "n6"),
    LeaveIntent(11, "n6", True),
    StreamError("bad request"),
    UserEvent(12, "consul:event:deploy", b"payload", True),
    QueryMessage(13, 77, "10.0.0.2", 8301, "n2", encode_filters(["self", "n3"], {"rack": "^a[0-9]+$"}), 1, 2,
                 5_000_000_000, "deploy", b"v2"),
    QueryMessage(14, 78, "10.0.0.2", 8301, "n2", [], 0, 0, 5_000_000_000, "_serf_conflict", b"self"),
    QueryResponseMessage(13, 77, "n3", 1, b""),
    QueryResponseMessage(13, 77, "n3", 0, b"answer"),
    RelayMessage("10.0.0.9", 8301, "n9", encode_message(QueryResponseMessage(13, 77, "n3", 0, b"relayed"))),
]
PARTS = [encode_message(m) for m in MESSAGES]
PACKETS = [encode_packet(PARTS[:12]), encode_packet(PARTS[:1]), encode_packet(PARTS[2:5] * 3),
           encode_packet([PARTS[6]]), encode_packet(PARTS[12:])]
SERF_STATE = msgpack.packb([5, {"n1": 3, "n2": 1}, ["n9"], 7, [[6, [["consul:event:x", b"p"]]]]], use_bin_type=True)
STREAMS = [
    encode_stream(PushPull(True, False, tuple(
        PushNode(f"n{i}", f"10.0.0.{i}", 8301, encode_tags({"role": "node"}), i, i % 4) for i in range(5)),
        SERF_STATE)),
    encode_stream(PushPull(False, True, (), b"")),
    encode_stream(StreamError("unexpected message")),
]


def _unframe(data: bytes) -> object:
    return msgpack.unpackb(data[1:], raw=False)


def _frame(tree: object) -> bytes:
    return b"\x01" + msgpack.packb(tree, use_bin_type=True)


def _sealed_unframe(data: bytes) -> object:
    return _unframe(KEYRING.decrypt(data))


def _sealed_frame(tree: object) -> bytes:
    return KEYRING.encrypt(_frame(tree))


def _sealed_packet(data: bytes) -> object:
    return decode_packet(KEYRING.decrypt(data))


def _core() -> GossipCore:
    return GossipCore("self", "127.0.0.1", 8301, GossipConfig(), random.Random(0), 100.0)


def _core_packet(data: bytes) -> None:
    core = _core()
    core.on_packet(SRC, data, 100.5)
    core.on_stream(SRC, data, 100.6)
    core.tick(200.0)


def _serf_packet(data: bytes) -> None:
    serf = Serf("self", "127.0.0.1", 8301, GossipConfig(), random.Random(0), 100.0, tags={"rack": "a1"})
    serf.query("mine", b"", 100.1)  # a running query for responses to land in
    serf.on_packet(SRC, data, 100.5)
    serf.on_packet(SRC, data, 100.6, sealed=False)
    serf.tick(200.0)
    serf.take_events()
    serf.take_logs()


def _filters(data: bytes) -> None:
    """One filter as it travels: a type byte, then msgpack (node names, or {Tag, Expr})."""
    should_process([data], "self", {"rack": "a1"})


# ------------------------------------------------------------------------ stream frames

_LOOP = asyncio.new_event_loop()
_PLAIN = GossipTransport("127.0.0.1", 0, keyring=Keyring(), on_packet=lambda s, d: None, on_stream=None)  # type: ignore[arg-type]
_SEALED = GossipTransport("127.0.0.1", 0, keyring=KEYRING, on_packet=lambda s, d: None, on_stream=None)  # type: ignore[arg-type]
_LAX = GossipTransport("127.0.0.1", 0, keyring=KEYRING, on_packet=lambda s, d: None, on_stream=None,  # type: ignore[arg-type]
                       verify_incoming=False)


async def _read(transport: GossipTransport, data: bytes) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    channel, payload, _ = await transport._read_frame(reader)
    if channel == CHANNEL_GOSSIP:
        try:
            decode_stream(payload)
        except DecodeError as err:
            raise StreamFailed(str(err)) from None


def _stream_frame(data: bytes) -> None:
    for transport in (_PLAIN, _SEALED, _LAX):
        try:
            _LOOP.run_until_complete(_read(transport, data))
        except StreamFailed:
            continue


FRAMES = [
    _PLAIN._seal(CHANNEL_GOSSIP, STREAMS[0]),
    _PLAIN._seal(CHANNEL_ERROR, b"remote error"),
    _SEALED._seal(CHANNEL_GOSSIP, STREAMS[1]),
    _SEALED._seal(CHANNEL_ERROR, msgpack.packb({"Op": "list", "Key": b""})),
]


def _user_event(data: bytes) -> None:
    record = UserEventRecord.decode(data)
    uuid_to_index(record.id)  # /v1/event/list's index: every kept record must give one


EVENT_RECORDS = [
    UserEventRecord("0b5b3c8e-2f6c-4e1d-9a8b-7c6d5e4f3a21", "deploy", b"v2", "web.*", "api", "prod").encode(),
    UserEventRecord("00000000-0000-0000-0000-000000000000", "x").encode(),
]

TARGETS = [
    Target("gossip.packet", decode_packet, (DecodeError,), PACKETS, _unframe, _frame),
    Target("gossip.packet.sealed", _sealed_packet, (DecodeError, KeyringError),
           [KEYRING.encrypt(p) for p in PACKETS], _sealed_unframe, _sealed_frame),
    Target("gossip.stream", decode_stream, (DecodeError,), STREAMS, _unframe, _frame),
    Target("gossip.stream.frame", _stream_frame, (), FRAMES),
    Target("gossip.core", _core_packet, (), PACKETS + STREAMS, _unframe, _frame),
    Target("gossip.serf", _serf_packet, (), PACKETS, _unframe, _frame),
    Target("gossip.query_filters", _filters, (), list(MESSAGES[12].filters),
           lambda d: msgpack.unpackb(d[1:]), lambda t: b"\x01" + msgpack.packb(t, use_bin_type=True)),
    Target("gossip.ack_payload", decode_coordinate_payload, (DecodeError,), [MESSAGES[2].payload],
           lambda d: msgpack.unpackb(d[1:]), lambda t: b"\x01" + msgpack.packb(t, use_bin_type=True)),
    Target("gossip.tags", decode_tags, (), [encode_tags({"role": "consul", "dc": "dc1"}), b"node"],
           lambda d: msgpack.unpackb(d[1:]) if d[:1] == b"\xff" else d.decode(),
           lambda t: b"\xff" + msgpack.packb(t, use_bin_type=True)),
    Target("gossip.user_event_record", _user_event, (EventError,), EVENT_RECORDS,
           lambda d: msgpack.unpackb(d), lambda t: msgpack.packb(t, use_bin_type=True)),
]
test_gossip_decoders_have_only_declared_outcomes = fuzz_tests(TARGETS)
test_gossip_seeds_are_valid = seed_tests(TARGETS)
