"""The Raft driver on a real event loop and a real disk: a single voter, then a restarted one.

Each test runs the driver exactly as the agent does (one asyncio task owning the core, the WAL
in a temporary data dir, fsync on), proposes real FSM commands and reads the store back.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.messages import Configuration, Server
from appliance.raft.storage import FileStorage
from appliance.state.fsm import CommandError
from appliance.state.store import Store
from tests.harness import FAST_RAFT, Agent, http, wait_until

pytestmark = pytest.mark.timeout(60)

ADDRESS = "127.0.0.1:8300"
ONE_VOTER = Configuration((Server("n1", ADDRESS),))


def _driver(storage, store: Store | None = None, **config) -> RaftDriver:
    drv = RaftDriver(store or Store(), node_id="n1", address=ADDRESS, storage=storage,
                     config=RaftConfig(raft_multiplier=1, **config))
    drv.open(ONE_VOTER)
    return drv


def _kv(key: str, value: bytes = b"v", **extra) -> dict:
    return {"Type": "kv_set", "Key": key, "Verb": "set", "Value": value, **extra}


def test_single_voter_proposes_applies_and_notifies():
    async def main():
        drv = _driver(MemoryStorage())
        touched: list[set[str]] = []
        drv.subscribe(touched.append)
        await drv.start()
        try:
            # the only voter leads at once (no election timeout to wait for)
            assert drv.is_leader and drv.known_leader and drv.leader_address() == ADDRESS
            assert drv.peers() == [ADDRESS] and drv.last_contact_ms == 0
            assert await drv.propose(_kv("a", b"1")) is True
            assert drv.store.kv["a"]["Value"] == b"1"
            assert touched and any("a" in str(k) for k in touched[-1])
            # the FSM's result comes back: a failed CAS is False, an unknown command an error
            assert await drv.propose(_kv("a", b"2", Verb="cas", Index=1)) is False
            with pytest.raises(CommandError):
                await drv.propose({"Type": "no_such_command"})
            # concurrent proposals are group-committed and each gets its own answer
            results = await asyncio.gather(*(drv.propose(_kv(f"k{i}")) for i in range(200)))
            assert results == [True] * 200
            # the ModifyIndex of a write is its Raft index, and a read barrier covers it
            modify = drv.store.kv["k199"]["ModifyIndex"]
            assert await drv.read_barrier() >= modify  # thesis §6.4 read index
            stats = drv.stats()
            assert stats["state"] == "Leader" and stats["num_peers"] == "0"
            assert int(stats["applied_index"]) == int(stats["commit_index"]) >= modify
        finally:
            await drv.stop()

    asyncio.run(main())


def test_restart_from_the_data_dir_recovers_the_state(tmp_path: Path):
    async def main():
        drv = _driver(FileStorage(tmp_path))
        await drv.start()
        for i in range(50):
            await drv.propose(_kv(f"key{i}", str(i).encode()))
        before = {k: (v["Value"], v["ModifyIndex"]) for k, v in drv.store.kv.items()}
        term = int(drv.stats()["term"])
        await drv.stop()

        again = _driver(FileStorage(tmp_path))
        await again.start()  # replays the WAL into a fresh store before it returns
        try:
            assert {k: (v["Value"], v["ModifyIndex"]) for k, v in again.store.kv.items()} == before
            assert again.is_leader and int(again.stats()["term"]) > term  # Raft §5.2: a new term
            assert await again.propose(_kv("after")) is True
            assert again.store.kv["after"]["ModifyIndex"] > max(i for _, i in before.values())
        finally:
            await again.stop()

    asyncio.run(main())


def test_restart_after_compaction_restores_the_snapshot(tmp_path: Path):
    async def main():
        drv = _driver(FileStorage(tmp_path), snapshot_threshold=20, trailing_logs=5)
        await drv.start()
        for i in range(65):
            await drv.propose(_kv(f"key{i}", str(i).encode()))
        assert int(drv.stats()["last_snapshot_index"]) > 0  # Raft §7: the log was compacted
        await drv.stop()
        assert list((tmp_path / "snapshots").glob("*.snap"))

        again = _driver(FileStorage(tmp_path), snapshot_threshold=20, trailing_logs=5)
        store = again.store
        await again.start()
        try:
            assert again.store is store  # restored in place: HTTP and DNS keep their reference
            assert sorted(store.kv) == sorted(f"key{i}" for i in range(65))
            assert store.kv["key64"]["Value"] == b"64"
        finally:
            await again.stop()

    asyncio.run(main())


def test_a_torn_wal_tail_loses_only_what_was_never_acknowledged(tmp_path: Path):
    async def main():
        drv = _driver(FileStorage(tmp_path))
        await drv.start()
        for i in range(10):
            await drv.propose(_kv(f"key{i}"))
        await drv.stop()
        segment = sorted((tmp_path / "wal").glob("*.wal"))[-1]
        with open(segment, "ab") as fh:
            fh.write(b"\x40\x00\x00\x00garbage")  # a crash in the middle of the next write
        again = _driver(FileStorage(tmp_path))
        await again.start()
        try:
            assert sorted(again.store.kv) == sorted(f"key{i}" for i in range(10))
        finally:
            await again.stop()

    asyncio.run(main())


def test_bootstrap_server_keeps_kv_and_catalog_across_a_kill(tmp_path: Path):
    server = Agent(tmp_path, "solo", "-server", "-bootstrap", "-hcl", FAST_RAFT)
    url = server.url
    server.start()
    try:
        wait_until(server.leader, timeout=20, what="the server elects itself")
        assert http("PUT", url + "/v1/kv/config/db", b"postgres://x")[0] == 200
        body = {"Node": "ext", "Address": "10.0.0.9", "Service": {"Service": "db", "Port": 5432}}
        assert http("PUT", url + "/v1/catalog/register", json.dumps(body).encode())[0] == 200
    finally:
        server.stop(kill=True)  # kill -9: nothing graceful; only what was fsynced survives
    server.start()
    try:
        wait_until(server.leader, timeout=20, what="the restarted server elects itself")
        status, _, raw = http("GET", url + "/v1/kv/config/db?raw")
        assert status == 200 and raw == b"postgres://x"
        status, _, raw = http("GET", url + "/v1/catalog/service/db")
        assert status == 200 and json.loads(raw)[0]["Node"] == "ext"
    finally:
        server.stop()
