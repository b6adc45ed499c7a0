"""The gossip driver and transport on real loopback sockets, in one event loop: bad input and encryption.

DESIGN: "a peer's garbage is a remote error, counted in a metric and dropped, never a crash"; the
issue's bad-input list: garbage, truncated, oversized and unknown gossip packets and push-pull
streams. Each test runs real `GossipDriver`s on 127.0.0.1 (port 0), throws raw bytes at their
UDP and TCP sockets, then checks the counters and that the pool still works (a join succeeds,
members stay alive). Encryption rules are memberlist's (reference/gossip-notes.md §7.4): with a
key and `encrypt_verify_incoming`, plaintext packets are dropped and plaintext streams answered
with "encryption is configured but remote state is not encrypted"; with verification off (the
middle step of rolling encryption onto a running pool) plaintext is still accepted.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from pathlib import Path

import msgpack
import pytest

from appliance.gossip.config import GossipConfig
from appliance.gossip.driver import GossipDriver, JoinError
from appliance.gossip.keyring import Keyring, encode_key
from appliance.gossip.messages import (
    Ping,
    QueryMessage,
    StreamError,
    decode_stream,
    encode_message,
    encode_packet,
)
from appliance.gossip.serf import MemberStatus
from appliance.gossip.transport import CHANNEL_ERROR, CHANNEL_GOSSIP, KIND_PLAIN, STREAM_HEADER
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)

FAST = GossipConfig.lan(tcp_timeout_s=1.0)


def driver(name: str, port: int = 0, **kw) -> GossipDriver:
    return GossipDriver(name, bind="127.0.0.1", port=port, config=FAST, rng=random.Random(name), **kw)


async def settle(*drivers: GossipDriver, timeout: float = 5.0) -> None:
    names = {d.name for d in drivers}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if all({m.name for m in d.members() if m.status == MemberStatus.ALIVE} == names for d in drivers):
            return
        await asyncio.sleep(0.05)
    raise AssertionError({d.name: [(m.name, m.status.name) for m in d.members()] for d in drivers})


def udp_send(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


async def tcp_exchange(port: int, data: bytes, close_write: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if close_write:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def plain_frame(channel: int, payload: bytes) -> bytes:
    body = bytes((channel,)) + payload
    return STREAM_HEADER.pack(KIND_PLAIN, len(body)) + body


def error_text(reply: bytes) -> str:
    kind, length = STREAM_HEADER.unpack(reply[:5])
    assert kind == KIND_PLAIN and reply[5] == CHANNEL_ERROR, reply[:16]
    return reply[6:5 + length].decode()


def test_garbage_packets_and_streams_are_counted_and_dropped():
    async def main():
        a, b = driver("a"), driver("b")
        await a.start()
        await b.start()
        try:
            rng = random.Random(7)
            real = encode_packet([encode_message(Ping(1, "a", "x", "127.0.0.1", 9))])
            packets = [b"", b"\x01", b"\x01\xff", real[:-3], b"\x02" + real[1:], os.urandom(60_000)]
            packets += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(50)]
            packets.append(encode_packet([b"\x93\x7f\x01\x02"]))  # an unknown message type: skipped
            for p in packets:
                udp_send(a.port, p)
            # streams: garbage header, absurd length, truncated body, unknown channel, bad push-pull
            assert await tcp_exchange(a.port, b"\xff" * 40)
            assert await tcp_exchange(a.port, struct.pack(">BI", KIND_PLAIN, 0xFFFF_FFFF)) != b"x"
            assert await tcp_exchange(a.port, struct.pack(">BI", KIND_PLAIN, 100) + b"\x01abc") != b"x"
            assert "unknown stream channel" in error_text(await tcp_exchange(a.port, plain_frame(9, b"zz")))
            assert "unknown stream channel 2" in error_text(await tcp_exchange(a.port, plain_frame(2, b"\xc1")))
            reply = await tcp_exchange(a.port, plain_frame(CHANNEL_GOSSIP, b"\x01\xc1garbage"))
            assert reply[5] == CHANNEL_GOSSIP and type(decode_stream(reply[6:])) is StreamError
            _, idle = await asyncio.open_connection("127.0.0.1", a.port)  # says nothing: timed out
            await asyncio.sleep(1.3)
            idle.close()
            await asyncio.sleep(0.2)
            stats = a.garbage_stats()
            assert stats["decode_errors"] >= 50 and stats["unknown_messages"] >= 1, stats
            assert stats["bad_streams"] >= 5, stats
            # still a working member: b joins it and both see each other alive
            assert await b.join([f"127.0.0.1:{a.port}"]) == 1
            await settle(a, b)
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())


def test_join_errors_name_each_address():
    async def main():
        a = driver("a")
        await a.start()
        try:
            with pytest.raises(JoinError) as err:
                await a.join(["127.0.0.1:1", "no-such-host.invalid", "127.0.0.1:notaport"])
            text = str(err.value)
            assert "Failed to join 127.0.0.1:1" in text and "Failed to resolve no-such-host.invalid" in text
            assert "invalid port" in text
        finally:
            await a.stop()

    asyncio.run(main())


def test_encrypted_member_drops_plaintext_and_wrong_keys():
    async def main():
        key, wrong = os.urandom(32), os.urandom(32)
        e1 = driver("e1", keyring=Keyring([key]))
        e2 = driver("e2", keyring=Keyring([key]))
        plain = driver("plain")
        other = driver("other", keyring=Keyring([wrong]))
        for d in (e1, e2, plain, other):
            await d.start()
        try:
            assert await e2.join([f"127.0.0.1:{e1.port}"]) == 1
            await settle(e1, e2)
            with pytest.raises(JoinError, match="encryption is configured but remote state is not encrypted"):
                await plain.join([f"127.0.0.1:{e1.port}"])
            with pytest.raises(JoinError, match="no installed keys could decrypt"):
                await other.join([f"127.0.0.1:{e1.port}"])
            before = e1.transport.stats["decrypt_failed"]
            udp_send(e1.port, encode_packet([encode_message(Ping(1, "e1", "x", "127.0.0.1", 9))]))
            udp_send(e1.port, Keyring([wrong]).encrypt(b"\x01\x90"))
            await asyncio.sleep(0.2)
            assert e1.transport.stats["decrypt_failed"] >= before + 2
            assert {m.name for m in e1.members()} == {"e1", "e2"}  # nobody else got in
            assert e1.stats()["encrypted"] == "true" and plain.stats()["encrypted"] == "false"
            # keyring operations are Serf's key queries, gossiped sealed to every member
            new = os.urandom(16)
            result = await e1.keyring_operation("install", encode_key(new))
            assert result.error == "" and result.keys == {encode_key(key): 2, encode_key(new): 2}
            result = await e1.keyring_operation("remove", encode_key(key))
            assert result.num_err == 2 and set(result.messages.values()) == {"Removing the primary key is not allowed"}
            assert result.error == "2/2 nodes reported failure"
        finally:
            for d in (e1, e2, plain, other):
                await d.stop()

    asyncio.run(main())


def test_verification_off_accepts_plaintext_while_rolling_out_a_key():
    async def main():
        key = os.urandom(32)
        plain = driver("plain")
        rolling = driver("rolling", keyring=Keyring([key]), encrypt_verify_incoming=False,
                         encrypt_verify_outgoing=False)
        await plain.start()
        await rolling.start()
        try:
            assert await plain.join([f"127.0.0.1:{rolling.port}"]) == 1
            await settle(plain, rolling)
            # but nobody without the key may change the ring, even while verification is off: a
            # key query in the clear is neither applied nor passed on
            request = b"\x07" + msgpack.packb({"Key": os.urandom(32)})
            query = QueryMessage(50, 7, "127.0.0.1", plain.port, "plain", [], 0, 0, 5_000_000_000,
                                 "_serf_install-key", request)
            udp_send(rolling.port, encode_packet([encode_message(query)]))
            await asyncio.sleep(0.3)
            assert rolling.keyring.keys == [key]
            assert rolling.serf is not None
            assert rolling.serf.stats["key_queries_unsealed"] == 1
        finally:
            await plain.stop()
            await rolling.stop()

    asyncio.run(main())


def test_snapshot_rejoins_after_a_restart_but_not_after_a_leave(tmp_path):
    """Serf's snapshot (gossip-notes §8.8): a restarted member rejoins the members it knew without
    being told where they are, with its Lamport clock restored; after a graceful leave it does not."""

    async def main():
        path = str(tmp_path / "serf" / "local.snapshot")
        port = free_port()
        b = driver("b")
        await b.start()
        a = driver("a", port, snapshot_path=path)
        await a.start()
        try:
            assert await a.join([f"127.0.0.1:{b.port}"]) == 1
            await settle(a, b)
            clock = a.serf.clock.time()
            await asyncio.sleep(0.6)  # one snapshot tick: the clock line is written
            await a.stop()  # a crash, as far as the snapshot is concerned (no leave line)
            text = Path(path).read_text()
            assert f"alive: b 127.0.0.1:{b.port}\n" in text and "leave" not in text

            a = driver("a", port, snapshot_path=path)  # restarted: no join address given
            await a.start()
            assert a.serf.clock.time() >= clock
            await settle(a, b, timeout=10)
            assert b.member("a").port == port
            await a.leave()
            await a.stop()
            assert Path(path).read_text().endswith("leave\n")

            a = driver("a", port, snapshot_path=path)  # after a leave it stays on its own
            await a.start()
            await asyncio.sleep(1.0)
            assert [m.name for m in a.members()] == ["a"]
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())
