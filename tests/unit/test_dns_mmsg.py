"""Batched UDP reads and writes (appliance/dns/mmsg.py) over real loopback sockets."""

from __future__ import annotations

import socket

import pytest

from appliance.dns import mmsg

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg/sendmmsg need Linux")


def pair(family: int = socket.AF_INET) -> tuple[socket.socket, socket.socket, tuple]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.bind((host, 0))
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.bind((host, 0))
    client.settimeout(5)
    return server, client, server.getsockname()


def replies(client: socket.socket, count: int) -> list[bytes]:
    return [client.recvfrom(65535)[0] for _ in range(count)]


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_queued_datagrams_are_read_at_once_and_answered_in_one_batch(family: int) -> None:
    server, client, addr = pair(family)
    with server, client:
        batch = mmsg.Batch(server, 8)
        for n in range(5):
            client.sendto(b"query-%d" % n, addr)
        assert batch.receive() == 5
        assert [batch.datagram(i) for i in range(5)] == [b"query-%d" % n for n in range(5)]
        assert batch.address(3)[:2] == client.getsockname()[:2]
        for i in (4, 0, 2):  # not every datagram is answered, nor in order
            batch.reply(i, b"reply-" + batch.datagram(i))  # type: ignore[operator]
        batch.flush()
        assert replies(client, 3) == [b"reply-query-4", b"reply-query-0", b"reply-query-2"]
        assert batch.receive() == 0  # nothing queued: no wait


def test_more_than_a_batch_is_read_in_several_and_addresses_are_reset() -> None:
    server, client, addr = pair()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.settimeout(5)
    with server, client, other:
        batch = mmsg.Batch(server, 4)
        for n in range(6):
            (client if n % 2 else other).sendto(b"q%d" % n, addr)
        seen = []
        while len(seen) < 6:
            count = batch.receive()
            assert 0 < count <= 4
            for i in range(count):
                data = batch.datagram(i)
                seen.append(data)
                batch.reply(i, data.upper())  # type: ignore[union-attr]
            batch.flush()
        assert sorted(replies(client, 3)) == [b"Q1", b"Q3", b"Q5"]
        assert sorted(replies(other, 3)) == [b"Q0", b"Q2", b"Q4"]


def test_an_oversized_datagram_is_dropped_and_a_long_reply_goes_alone() -> None:
    server, client, addr = pair()
    with server, client:
        batch = mmsg.Batch(server, 4)
        client.sendto(b"x" * (mmsg.RECV_BYTES + 1), addr)
        client.sendto(b"small", addr)
        assert batch.receive() == 2
        assert batch.datagram(0) is None
        assert batch.datagram(1) == b"small"
        batch.reply(1, b"y" * (mmsg.SEND_BYTES + 100))
        batch.reply(1, b"short")
        batch.flush()
        assert replies(client, 2) == [b"y" * (mmsg.SEND_BYTES + 100), b"short"]


def test_the_reader_answers_through_the_server_and_hands_on_the_rest() -> None:
    server, client, addr = pair()

    class Server:
        """Answers `hit` from a cache keyed by the bytes after a 2-byte ID, else through `answer`."""

        def __init__(self) -> None:
            self.batches: list[float] = []
            self.hits = 0

        def hit(self, key: bytes) -> bytes | None:
            if key == b"cached":
                self.hits += 1
                return b"+C"
            return None

        def hits_done(self, elapsed_s: float) -> None:
            self.batches.append(elapsed_s)

        def answer(self, data: bytes, tcp: bool) -> object:
            if data == b"boom":
                raise ValueError("a bug")
            return {b"fwd": "forward", b"drop": None}.get(data, b"A:" + data)

    forwarded = []
    fake = Server()
    with server, client:
        ready = mmsg.reader(server, 8, fake, lambda out, data, asker: forwarded.append((out, data, asker)))
        assert ready is not None
        for q in (b"one", b"fwd", b"drop", b"boom", b"IDcached", b"two", b"XYcached"):
            client.sendto(q, addr)
        ready()
        # a hit goes back with the query's own ID in front of the cached rest
        assert replies(client, 4) == [b"A:one", b"ID+C", b"A:two", b"XY+C"]
        assert forwarded == [("forward", b"fwd", client.getsockname())]
        assert fake.hits == 2 and len(fake.batches) == 1 and fake.batches[0] >= 0
