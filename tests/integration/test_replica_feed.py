"""The replica stream in one process: a real single-voter RaftDriver with its RaftTransport and
ReplicaFeed on a loopback port, and a real client `Replica` dialling it (appliance/client).

What is checked: the replica's store equals the server's after writes through either side,
with the same ModifyIndex values and watch keys (the same FSM applies the same log); a client
that falls further behind than its queue allows gets a fresh snapshot instead (memory stays
bounded); a client older than the server's backlog gets a snapshot, one still covered gets exactly
the entries after its index; a server restart makes the client reconnect and carry on from its
own index; a write through the replica answers only after the replica applied it
(read-your-writes); a client leaves a server that knows no leader; anti-entropy on a replica
retries a failed sync after 15 s plus a stagger and syncs within 3 s of a server coming up.
"""

from __future__ import annotations

import asyncio
import random
import time

import msgpack
import pytest

from appliance.client import replica as replica_module
from appliance.client.replica import NoServers, Replica
from appliance.client.servers import ServerList
from appliance.local.state import LocalState
from appliance.local.sync import StateSyncer
from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.messages import Configuration, Server
from appliance.raft.storage import FileStorage
from appliance.raft.transport import RaftTransport
from appliance.rpc import feed as feed_module
from appliance.rpc.feed import ReplicaFeed
from appliance.rpc.frames import HEADER, Kind, encode_frame as frame
from appliance.state.snapshot import snapshot
from appliance.state.store import Store
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)


def _kv(key: str, value: bytes = b"v") -> dict:
    return {"Type": "kv_set", "Key": key, "Verb": "set", "Value": value}


class OneServer:
    def __init__(self, port: int, storage: MemoryStorage | FileStorage | None = None) -> None:
        address = f"127.0.0.1:{port}"
        self.storage = storage or MemoryStorage()
        self.driver = RaftDriver(Store(), node_id="s1", address=address, storage=self.storage,
                                 config=RaftConfig(raft_multiplier=1))
        self.driver.open(Configuration((Server("s1", address),)))
        self.transport = RaftTransport(self.driver, bind="127.0.0.1", port=port)
        self.feed = ReplicaFeed(self.driver, self.driver.store)
        self.transport.feed = self.feed

    async def start(self) -> None:
        await self.transport.start()
        await self.driver.start()

    async def stop(self) -> None:
        await self.driver.stop()
        await self.transport.stop()


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _client(port: int, store: Store) -> Replica:
    servers = ServerList(datacenter="dc1", join=(f"127.0.0.1:{port}",), default_port=8300,
                         rng=random.Random(1))
    return Replica(store, servers=servers, node_name="c1", hold_s=3.0)


def test_the_replica_mirrors_the_server_and_reads_its_writes():
    async def main():
        port = free_port()
        server = OneServer(port)
        await server.start()
        await server.driver.propose(_kv("before", b"0"))
        store = Store()
        replica = _client(port, store)
        touched: list[set[str]] = []
        replica.subscribe(touched.append)
        await replica.start()
        try:
            await replica.read_point("stale")  # waits for the first load
            assert store.kv["before"]["Value"] == b"0"
            # a write through the replica is applied locally before it answers
            assert await replica.propose(_kv("mine", b"1")) is True
            assert store.kv["mine"]["Value"] == b"1"
            assert any("kv:mine" in keys for keys in touched)
            # a write on the server reaches the replica; a default read waits for it
            await server.driver.propose(_kv("theirs", b"2"))
            await replica.read_point("leader")
            assert store.kv["theirs"]["Value"] == b"2"
            await replica.read_point("consistent")
            # the same FSM on the same log: byte-identical stores, status from the server
            assert snapshot(store) == snapshot(server.driver.store)
            assert replica.applied_index == server.driver.applied_index
            await _until(lambda: replica.known_leader)
            assert replica.leader_address() == f"127.0.0.1:{port}"
            assert replica.peers() == [f"127.0.0.1:{port}"]
            assert replica.configuration()["Servers"][0]["ID"] == "s1"
            assert replica.stats() == {} and not replica.is_leader
        finally:
            await replica.stop()
            await server.stop()

    asyncio.run(main())


def test_a_client_too_far_behind_gets_a_snapshot(monkeypatch):
    monkeypatch.setattr(feed_module, "SESSION_MAX_ENTRIES", 5)

    async def main():
        port = free_port()
        server = OneServer(port)
        await server.start()
        store = Store()
        replica = _client(port, store)
        await replica.start()
        try:
            await replica.read_point("stale")
            snapshots = replica.snapshots
            # 200 writes in one burst: far more than the session queue holds
            await asyncio.gather(*(server.driver.propose(_kv(f"k{i}", str(i).encode())) for i in range(200)))
            await replica.read_point("leader")
            assert replica.snapshots > snapshots
            assert snapshot(store) == snapshot(server.driver.store)
            (session,) = server.feed.sessions
            assert len(session.entries) <= 5
        finally:
            await replica.stop()
            await server.stop()

    asyncio.run(main())


def test_the_client_reconnects_after_a_server_restart_and_carries_on(tmp_path):
    async def main():
        port = free_port()
        server = OneServer(port, FileStorage(tmp_path))
        await server.start()
        store = Store()
        replica = _client(port, store)
        await replica.start()
        try:
            await replica.propose(_kv("a", b"1"))
            index = replica.applied_index
            # the server goes away: no leader known, reads that need one fail with Consul's text
            await server.stop()
            await _until(lambda: not replica.known_leader)
            with pytest.raises(NoServers, match="No known Consul servers"):
                await replica.read_point("leader")
            await replica.read_point("stale")  # the replica still answers stale reads
            # it restarts from its data dir: the client follows again from its own index
            server = OneServer(port, FileStorage(tmp_path))
            await server.start()
            snapshots = replica.snapshots
            await server.driver.propose(_kv("b", b"2"))
            await _until(lambda: replica.known_leader)
            await replica.read_point("leader")
            assert store.kv["b"]["Value"] == b"2" and replica.applied_index > index
            assert replica.failovers >= 1
            assert replica.snapshots == snapshots  # replayed from the backlog, no snapshot
            assert snapshot(store) == snapshot(server.driver.store)
        finally:
            await replica.stop()
            await server.stop()

    asyncio.run(main())


def test_a_client_older_than_the_backlog_gets_a_snapshot(monkeypatch):
    monkeypatch.setattr(feed_module, "BACKLOG_MAX_ENTRIES", 10)

    async def first_stream_item(port: int, from_index: int) -> list:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(frame([Kind.FOLLOW, from_index, "probe"]))
            version, length = HEADER.unpack(await reader.readexactly(HEADER.size))
            body = msgpack.unpackb(await reader.readexactly(length), raw=False)
            assert version == 1 and body[0] == Kind.STREAM
            return body
        finally:
            writer.close()

    async def main():
        port = free_port()
        server = OneServer(port)
        await server.start()
        try:
            for i in range(30):
                await server.driver.propose(_kv(f"k{i}"))
            applied = server.driver.applied_index
            assert len(server.feed.backlog) == 10 and server.feed.base == applied - 10
            # older than the backlog: the whole state as of now
            item = await first_stream_item(port, applied - 15)
            assert item[1] == "snapshot" and item[2] == applied
            # still covered: exactly the entries after it, in order
            item = await first_stream_item(port, applied - 3)
            assert item[1] == "entries" and [i for i, _ in item[2]] == [applied - 2, applied - 1, applied]
            # ahead of the server (it lags the client): nothing until the server gets there
            item = await first_stream_item(port, applied + 5)
            assert item[1] == "status"
        finally:
            await server.stop()

    asyncio.run(main())


def test_anti_entropy_on_a_client_retries_and_staggers():
    # Consul agent/ae: a failed sync is retried after 15 s + stagger; a server coming up gives a
    # full sync within stagger(3 s); a successful sync clears the retry
    async def main():
        port = free_port()
        store = Store()
        replica = Replica(store, servers=ServerList(datacenter="dc1", join=(f"127.0.0.1:{port}",),
                                                    default_port=8300, rng=random.Random(1)),
                          node_name="c1", hold_s=0.2)
        local = LocalState("c1", "dc1", 4096)
        node = {"Node": "c1", "ID": "", "Address": "127.0.0.1", "Datacenter": "dc1",
                "TaggedAddresses": {}, "NodeMeta": {}}
        syncer = StateSyncer(store, replica, local, lambda: node, rng=random.Random(2))
        await replica.start()
        try:
            t0 = time.monotonic()
            assert await syncer.sync_now() is False  # no server: "No known Consul servers"
            assert 15 <= syncer._retry_at - t0 < 30 + 1
            syncer.server_up()
            assert syncer._retry_at - t0 < 3 + 1
            server = OneServer(port)
            await server.start()
            try:
                assert await syncer.sync_now() is True
                assert syncer._retry_at is None
                assert store.node("c1") is not None  # "Synced node info", read back locally
            finally:
                await server.stop()
        finally:
            await replica.stop()

    asyncio.run(main())


def test_a_client_leaves_a_server_that_knows_no_leader(monkeypatch):
    monkeypatch.setattr(replica_module, "LEADERLESS_S", 1.0)

    async def main():
        good_port, cut_port = free_port(), free_port()
        good = OneServer(good_port)
        # a server whose configuration needs a second voter that never answers: it never
        # learns a leader, like a server cut off from the rest of its cluster
        cut_address = f"127.0.0.1:{cut_port}"
        cut = RaftDriver(Store(), node_id="cut", address=cut_address, storage=MemoryStorage(),
                         config=RaftConfig(raft_multiplier=1))
        cut.open(Configuration((Server("cut", cut_address), Server("gone", "127.0.0.1:1"))))
        cut_transport = RaftTransport(cut, bind="127.0.0.1", port=cut_port)
        cut_transport.feed = ReplicaFeed(cut, cut.store)
        await good.start()
        await cut_transport.start()
        await cut.start()
        def server_list(seed: int) -> ServerList:
            return ServerList(datacenter="dc1", join=(cut_address, f"127.0.0.1:{good_port}"), default_port=8300,
                              rng=random.Random(seed))

        seed = next(s for s in range(100) if server_list(s).next() == cut_address)  # the cut one first
        servers = server_list(seed)
        replica = Replica(Store(), servers=servers, node_name="c1", hold_s=3.0)
        await replica.start()
        try:
            await _until(lambda: replica.server == cut_address)
            assert not replica.known_leader
            await _until(lambda: replica.known_leader, timeout=10)
            assert replica.server == f"127.0.0.1:{good_port}" and replica.failovers == 1
        finally:
            await replica.stop()
            await cut.stop()
            await cut_transport.stop()
            await good.stop()

    asyncio.run(main())
