"""The server-port listener and the outbound pool (appliance/rpc/) on loopback, in one event loop.

What is checked: the first frame decides whose a connection is (a registered kind hands the whole
connection over, anything else goes frame by frame to `on_frame`); garbage is counted and never
ends the listener (a bad header closes that connection, a bad body costs one frame); the pool
keeps one connection per peer address, refuses frames beyond its bounded queue, reports a lost
peer and redials it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from appliance.rpc import pool as pool_module
from appliance.rpc.connection import read_frame, split_address
from appliance.rpc.frames import Kind, decode_body, encode_frame
from appliance.rpc.listener import RpcListener
from appliance.rpc.pool import ConnectionPool
from tests.conftest import free_port


class Recorder:
    """A connection handler that answers its first frame and then echoes each frame's kind."""

    def __init__(self) -> None:
        self.firsts: list[list[Any]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: list[Any]) -> None:
        self.firsts.append(body)
        writer.write(encode_frame([Kind.STREAM, "first", body[0]]))
        while True:
            data = await read_frame(reader)
            writer.write(encode_frame([Kind.STREAM, "then", decode_body(data)[0]]))


async def wait_for(predicate, what: str, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_the_first_frame_decides_whose_the_connection_is():
    async def main() -> None:
        port = free_port()
        frames: list[list[Any]] = []
        listener = RpcListener(bind="127.0.0.1", port=port, on_frame=frames.append)
        follow = Recorder()
        listener.serve_connections(Kind.FOLLOW, follow)
        await listener.start()
        try:
            # FOLLOW first: the whole connection is the handler's, later frames of any kind too
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(encode_frame([Kind.FOLLOW, 0, "c1"]) + encode_frame([Kind.RAFT, "x"]))
            assert decode_body(await read_frame(r)) == [Kind.STREAM, "first", Kind.FOLLOW]
            assert decode_body(await read_frame(r)) == [Kind.STREAM, "then", Kind.RAFT]
            assert follow.firsts == [[Kind.FOLLOW, 0, "c1"]] and frames == []
            w.close()

            # any other first frame: a message connection, every frame to on_frame, a later
            # FOLLOW included (it is not this connection's first frame)
            _, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(encode_frame([Kind.HELLO, {"id": "n2"}]) + encode_frame([Kind.FOLLOW, 0, "late"]))
            await wait_for(lambda: len(frames) == 2, "two frames")
            assert frames == [[Kind.HELLO, {"id": "n2"}], [Kind.FOLLOW, 0, "late"]]
            assert len(follow.firsts) == 1

            # no handler for DC_REQUEST on this listener: the frame goes to on_frame
            _, w3 = await asyncio.open_connection("127.0.0.1", port)
            w3.write(encode_frame([Kind.DC_REQUEST, {}]))
            await wait_for(lambda: len(frames) == 3, "the DC_REQUEST frame")
            w2.close()
            w3.close()
        finally:
            listener.close()

    asyncio.run(main())


def test_garbage_is_counted_and_the_listener_keeps_serving():
    async def main() -> None:
        port = free_port()
        frames: list[list[Any]] = []

        def on_frame(body: list[Any]) -> None:
            if body[0] == Kind.READ_INDEX:
                raise ValueError("rejected by its handler")  # counted like any other garbage
            frames.append(body)

        listener = RpcListener(bind="127.0.0.1", port=port, on_frame=on_frame)
        await listener.start()
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(struct.pack(">BI", 1, 3) + b"\xc1\xc1\xc1")  # not msgpack: dropped
            w.write(encode_frame([42, "a kind from the future"]))  # dropped
            w.write(encode_frame([Kind.READ_INDEX, 1, "", True]))  # its handler raises: dropped
            w.write(encode_frame([Kind.RAFT, "still read"]))
            await wait_for(lambda: frames == [[Kind.RAFT, "still read"]], "the good frame")
            assert listener.garbage_frames == 3

            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(struct.pack(">BI", 1, (64 << 20) + 1))  # over the limit: closed at once
            assert await asyncio.wait_for(r2.read(), 5) == b""
            assert listener.garbage_frames == 4
            w.write(encode_frame([Kind.HELLO, {}]))  # the first connection still works
            await wait_for(lambda: len(frames) == 2, "a frame after the garbage")
            w.close()
            w2.close()
        finally:
            listener.close()

    asyncio.run(main())


def test_the_pool_keeps_one_bounded_connection_per_peer_and_redials(monkeypatch):
    monkeypatch.setattr(pool_module, "QUEUE_FRAMES", 4)

    async def main() -> None:
        port = free_port()
        address = f"127.0.0.1:{port}"
        lost: list[str] = []
        pool = ConnectionPool(default_port=1, on_lost=lost.append)
        try:
            # nobody listens yet: frames wait in the bounded queue, the failed dials are reported
            assert all(pool.offer(address, encode_frame([Kind.RAFT, i])) for i in range(4))
            assert not pool.offer(address, encode_frame([Kind.RAFT, 4]))  # full: refused, never blocks
            assert list(pool.links) == [address]
            await wait_for(lambda: address in lost, "the failed dial reported")

            frames: list[list[Any]] = []
            listener = RpcListener(bind="127.0.0.1", port=port, on_frame=frames.append)
            await listener.start()  # the link redials with backoff and delivers what waited
            await wait_for(lambda: len(frames) == 4, "the queued frames", timeout_s=10)
            assert [f[1] for f in frames] == [0, 1, 2, 3] and pool.links[address].connected
            assert pool.link(address) is pool.links[address]  # still one link for the address
            listener.close()
        finally:
            await pool.stop()

    asyncio.run(main())


def test_split_address():
    assert split_address("10.0.0.1:8301", 8300) == ("10.0.0.1", 8301)
    assert split_address("10.0.0.1", 8300) == ("10.0.0.1", 8300)
    assert split_address("[::1]:9000", 8300) == ("::1", 9000)
    assert split_address("[::1]", 8300) == ("::1", 8300)
    assert split_address("host:http", 8300) == ("host:http", 8300)
