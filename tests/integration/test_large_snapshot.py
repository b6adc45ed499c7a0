"""A state larger than one server-port frame (64 MiB) on three real servers and a client agent.

The 100,000-instance catalog of bench/scale is 62.5 to 63.8 MB as a snapshot: at that size a
snapshot must still reach a follower that fell behind (InstallSnapshot), a client agent's replica
(the feed's first message) and come back through `PUT /v1/snapshot` (one `restore` log entry).
Bodies over 64 MiB travel in parts (appliance/rpc/frames.py); this test builds about 75 MB of KV
(150 values of 500,000 random bytes) on servers that snapshot every 32 entries and keep 4 behind,
so each of those three paths has to carry it:

1. a follower killed before the writes and restarted after them is past the trailing log: it
   catches up through InstallSnapshot (its `raft.rpc.installSnapshot` counts it) and serves every
   value;
2. a client agent started after the writes gets its replica as one snapshot and serves them too;
3. the state saved with `GET /v1/snapshot`, a value changed, and the archive restored: every
   server and the client read the old value again.

A second test restarts a follower with its Raft directory deleted: the leader, which remembers
the follower's old match, must probe back past it and catch it up without an election.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.harness import Agent, Cluster, http, wait_until

pytestmark = pytest.mark.timeout(300)

KEYS = 150
VALUE_BYTES = 500_000  # under Consul's 512 KiB kv_max_value_size
RAFT_LOG = "raft_snapshot_threshold = 32\nraft_trailing_logs = 4"


def _values() -> dict[str, bytes]:
    return {f"big/{i:03d}": os.urandom(VALUE_BYTES) for i in range(KEYS)}


def _holds(agent: Agent, values: dict[str, bytes], query: str = "") -> bool:
    return all(agent.kv_get(key, query) == value for key, value in values.items())


def test_a_state_over_one_frame_reaches_a_follower_a_client_and_a_restore(tmp_path: Path):
    values = _values()
    assert KEYS * VALUE_BYTES > 64 << 20
    with Cluster(tmp_path, servers=3, server_extra=["-hcl", RAFT_LOG]).start() as cluster:
        leader = cluster.wait_leader()
        follower = next(s for s in cluster.servers if s is not leader)
        follower.kill()
        for key, value in values.items():
            status, _, body = http("PUT", f"{leader.url}/v1/kv/{key}", value, timeout=30)
            assert status == 200 and body.strip() == b"true", (key, status, body)

        # 1. the follower: behind the trailing log, so only a snapshot can bring it back
        follower.start().wait_http()
        wait_until(lambda: _holds(follower, values, "&stale"), timeout=120, interval=1,
                   what="the restarted follower serving every value")
        metrics = follower.metrics()
        counted = re.search(r'^consul_raft_rpc_installSnapshot_count(?:\{[^}]*\})? (\S+)', metrics, re.M)
        assert counted and float(counted.group(1)) >= 1, metrics[:2000]

        # 2. a client agent whose replica starts from the whole state
        client = Agent(tmp_path, "c1", join=cluster.join)
        try:
            client.start().wait_http()
            wait_until(lambda: _holds(client, values), timeout=120, interval=1,
                       what="the client agent serving every value")

            # 3. a restore of the whole state, one log entry over 64 MiB
            status, _, archive = http("GET", leader.url + "/v1/snapshot", timeout=120)
            assert status == 200 and len(archive) > 64 << 20
            assert http("PUT", f"{leader.url}/v1/kv/big/000", b"changed")[0] == 200
            status, _, body = http("PUT", leader.url + "/v1/snapshot", archive, timeout=120)
            assert status == 200, body
            for agent in (*cluster.servers, client):
                wait_until(lambda agent=agent: agent.kv_get("big/000", "&stale") == values["big/000"],
                           timeout=60, what=f"{agent.name} reading the restored value")
                assert _holds(agent, values, "&stale"), agent.name
        finally:
            client.stop()


def test_a_follower_restarted_with_an_empty_raft_dir_catches_up(tmp_path: Path):
    # The leader remembers how far the follower's log matched; the follower, its Raft state gone,
    # rejects the probe there and the leader must probe back past that match (here to a snapshot:
    # the log was compacted), not wait at it for an election.
    with Cluster(tmp_path, servers=3, server_extra=["-hcl", RAFT_LOG]).start() as cluster:
        leader = cluster.wait_leader()
        values = {f"k/{i:03d}": str(i) for i in range(100)}
        for key, value in values.items():
            assert leader.kv_put(key, value), key
        follower = next(s for s in cluster.servers if s is not leader)
        wait_until(lambda: follower.kv_get("k/099", "&stale") == b"99", timeout=30, what="the follower up to date")
        follower.kill()
        shutil.rmtree(follower.data_dir / "raft")
        follower.start().wait_http()
        wait_until(lambda: all(follower.kv_get(k, "&stale") == v.encode() for k, v in values.items()),
                   timeout=60, interval=0.5, what="the wiped follower serving every value")
        assert cluster.leader() is leader  # caught up without an election
