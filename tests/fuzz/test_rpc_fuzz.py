"""Hostile bytes on the server port: RPC frames, Raft messages and configurations, whole connections.

Declared outcomes (appliance/rpc/frames.py, appliance/rpc/listener.py, appliance/raft/transport.py,
appliance/federation/forward.py): `decode_frame` returns a body or raises `FrameError`
(`BadHeader` is one); a Raft message decodes or raises `FrameError`; a configuration, and another
datacenter's request or answer (DC_REQUEST, DC_RESPONSE), decode or raise `ValueError`. A connection is driven
through the real listener with the Raft transport's `on_frame` behind it (HELLO, FORWARD,
FORWARD_RESP, READ_INDEX and READ_INDEX_RESP included): it must end quietly, whatever arrives, and
the tasks the frames start must not fail either. Inputs: random bytes, mutations of valid frames
and streams of frames, and value-tree mutations re-framed with a valid header and length.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from appliance.federation.forward import Exchange, decode_answer, decode_request
from appliance.raft.messages import (
    Configuration,
    Entry,
    EntryType,
    Message,
    MsgType,
    NotLeader,
    Server,
    Snapshot,
    decode_configuration,
    encode_configuration,
)
from appliance.raft.transport import RaftTransport, decode_message, encode_message
from appliance.rpc.frames import HEADER, FrameError, Kind, decode_frame, encode_frame
from tests.fuzz.harness import Target, fuzz_tests, seed_tests

CONF = Configuration((Server("s1", "127.0.0.1:8300"), Server("s2", "127.0.0.2:8300"), Server("s3", "", False)))
MESSAGES = [
    Message(MsgType.APPEND, "s1", "s2", 3, 10, 2, (Entry(11, 3, EntryType.COMMAND, b"\x81\xa4Type\xa6kv_set"),
                                                   Entry(12, 3, EntryType.CONFIGURATION, encode_configuration(CONF)),
                                                   Entry(13, 3, EntryType.NOOP)), commit=9),
    Message(MsgType.APPEND_RESP, "s2", "s1", 3, 12, 3, reject=True, reject_hint=7),
    Message(MsgType.PRE_VOTE, "s3", "s1", 4, 12, 3, transfer=True),
    Message(MsgType.HEARTBEAT_RESP, "s2", "s1", 3, context=42),
    Message(MsgType.READ_INDEX, "s2", "s1", 3, request_id="r-1"),
    Message(MsgType.SNAPSHOT, "s1", "s3", 5, snapshot=Snapshot(20, 4, CONF, 12, b"\x01\x80")),
]
RAFT_FRAMES = [encode_frame(encode_message(m)) for m in MESSAGES]
HELLO = encode_frame([Kind.HELLO, {"id": "s2", "addr": "127.0.0.2:8300", "expect": 3,
                                   "servers": [["s1", "127.0.0.1:8300"], ["s3", "127.0.0.3:8300"]],
                                   "conf": [["s1", "127.0.0.1:8300"], ["s2", "127.0.0.2:8300"]]}])
OTHER_FRAMES = [
    HELLO,
    encode_frame([Kind.FORWARD, 5, "127.0.0.2:8300", {"Type": "kv_set", "Key": "k", "Value": b"v"}]),
    encode_frame([Kind.FORWARD_RESP, 1, "ok", [True, 12]]),
    encode_frame([Kind.READ_INDEX, 6, "127.0.0.2:8300", True]),
    encode_frame([Kind.READ_INDEX_RESP, 2, "notleader", "s3"]),
    encode_frame([Kind.FOLLOW, 0, "client-1"]),
]
STREAMS = [b"".join(RAFT_FRAMES[:3]) + HELLO, b"".join(OTHER_FRAMES), RAFT_FRAMES[0] + OTHER_FRAMES[1] * 2]


def _body(data: bytes) -> Any:
    return msgpack.unpackb(data[HEADER.size:], raw=False)


def _framed(tree: Any) -> bytes:
    return encode_frame(tree) if type(tree) is list else HEADER.pack(1, 0)


def _frames(data: bytes) -> list[Any]:
    bodies = []
    while data:
        body, used = decode_frame(data)
        bodies.append(body)
        data = data[used:]
    return bodies


def _stream(bodies: list[Any]) -> bytes:
    return b"".join(encode_frame(b) if type(b) is list else b"\x01\x00\x00\x00\x01\xc1" for b in bodies)


def _raft(data: bytes) -> Message:
    return decode_message(decode_frame(data)[0])


# ------------------------------------------------------------------------ a whole connection

class _Driver:
    node_id, address, is_leader, leader_id = "s1", "127.0.0.1:8300", False, "s2"
    transport: Any = None

    def step(self, m: Message) -> None:
        assert isinstance(m, Message)

    def has_state(self) -> bool:
        return False

    def servers(self) -> list[Server]:
        return []

    def bootstrap_now(self, conf: Configuration) -> bool:
        return True

    async def propose_local(self, command: dict[str, Any]) -> Any:
        raise NotLeader("s2")

    async def leader_read_index(self, consistent: bool) -> int:
        raise NotLeader("s2")


class _Pool:
    def offer(self, address: str, data: bytes) -> bool:
        decode_frame(data)  # what the server answers must itself be a frame
        return True


class _Writer:
    """A plain TCP connection's writer: nothing is sent back, no TLS."""

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


_LOOP = asyncio.new_event_loop()


async def _connection(data: bytes) -> None:
    transport = RaftTransport(_Driver(), bind="127.0.0.1", port=0, bootstrap_expect=3)
    transport.pool = _Pool()  # type: ignore[assignment]
    for _ in range(3):  # answers to requests this server "sent"
        transport._forwards[_ + 1] = ("127.0.0.2:8300", asyncio.get_running_loop().create_future())
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    await transport.listener._serve(reader, _Writer())  # type: ignore[arg-type]
    me = asyncio.current_task()
    started = [t for t in asyncio.all_tasks() if t is not me]
    await asyncio.gather(*started)  # FORWARD and READ_INDEX answer through the pool stub
    for _, fut in transport._forwards.values():
        if fut.done():
            fut.exception()


def _serve(data: bytes) -> None:
    _LOOP.run_until_complete(_connection(data))


DC_REQUESTS = [Exchange("GET", "/v1/health/service/web", [("passing", ""), ("dc", "dc2")], [("X-Consul-Token", "t")])
               .encode("dc2", 0), Exchange("PUT", "/v1/kv/a%2Fb", [], [], b"value").encode("dc3", 1)]
DC_ANSWERS = [encode_frame([Kind.DC_RESPONSE, {"status": 200, "headers": [["X-Consul-Index", "7"]], "body": b"[]"}]),
              encode_frame([Kind.DC_RESPONSE, {"status": 500, "body": b"No path to datacenter"}])]

TARGETS = [
    Target("federation.request", lambda d: decode_request(decode_frame(d)[0]), (ValueError,), DC_REQUESTS, _body,
           _framed),
    Target("federation.answer", lambda d: decode_answer(decode_frame(d)[0]), (ValueError,), DC_ANSWERS, _body,
           _framed),
    Target("rpc.frame", decode_frame, (FrameError,), RAFT_FRAMES + OTHER_FRAMES, _body, _framed),
    Target("raft.message", _raft, (FrameError,), RAFT_FRAMES, _body, _framed),
    Target("raft.configuration", decode_configuration, (ValueError,), [encode_configuration(CONF)],
           lambda d: msgpack.unpackb(d[1:]), lambda t: b"\x01" + msgpack.packb(t, use_bin_type=True)),
    Target("rpc.connection", _serve, (), STREAMS + RAFT_FRAMES + OTHER_FRAMES, _frames, _stream),
]

test_rpc_decoders_have_only_declared_outcomes = fuzz_tests(TARGETS)
test_rpc_seeds_are_valid = seed_tests(TARGETS)
