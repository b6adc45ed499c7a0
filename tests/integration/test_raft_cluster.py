"""Three real server processes on loopback: bootstrap_expect, writes through any server, and
`kill -9` of the leader under a write load.

Each server is `cairn agent -server -bootstrap-expect 3` with its own data dir and ports, joined to
the others by `-retry-join` on their gossip (serf_lan) ports, with `raft_multiplier = 1`. What is checked:
the three bootstrap one cluster (one leader, the same peers everywhere); a write through a
follower succeeds (forwarded to the leader); after the leader is killed with SIGKILL a new leader
is known within 3 s (Raft §5.2 with the default timeouts at multiplier 1); and every write that
was acknowledged before, during or after the kill is there on every server after the old leader
restarts from its data dir (Raft §5.4: committed entries survive leader changes; durability order:
nothing is acknowledged before it is fsynced on a majority), and again after all three restart.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from tests.harness import Cluster, free_ports, http, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path: Path):
    with Cluster(tmp_path, servers=3).start() as cluster:
        yield cluster.servers


def test_three_servers_survive_kill_9_of_the_leader_under_load(cluster):
    servers = cluster
    leaders = wait_until(lambda: {s.leader() for s in servers} if all(s.leader() for s in servers)
                         and len({s.leader() for s in servers}) == 1 else None,
                         timeout=30, what="one leader known to all three servers")
    (leader_addr,) = leaders
    for s in servers:  # the same three peers everywhere
        status, _, body = http("GET", s.url + "/v1/status/peers")
        assert sorted(json.loads(body)) == sorted(x.server_addr for x in servers)

    def configuration():
        status, _, body = http("GET", servers[0].url + "/v1/operator/raft/configuration")
        conf = json.loads(body)
        return conf if status == 200 and all(srv["Node"] for srv in conf["Servers"]) else None

    conf = wait_until(configuration, timeout=15, what="every server registered in the catalog")
    assert sorted(srv["Node"] for srv in conf["Servers"]) == ["s1", "s2", "s3"]
    assert [srv["Address"] for srv in conf["Servers"] if srv["Leader"]] == [leader_addr]
    assert all(srv["Voter"] for srv in conf["Servers"]) and conf["Index"] == 1  # the bootstrap entry
    metrics = http("GET", servers[0].url + "/v1/agent/metrics?format=prometheus")[2].decode()
    for name in ("raft_commit_index", "raft_term", "raft_peers"):  # gauges carry the host name
        assert re.search(rf"^consul_(\w+_)?{name} ", metrics, re.M), name

    # a write through every server, followers included (forwarded to the leader)
    for i, s in enumerate(servers):
        assert s.kv_put(f"direct/{i}", f"via-{s.name}")
    for s in servers:
        assert s.kv_get("direct/0", "&consistent") == b"via-s1"  # read index on any server

    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()
    dead: set[str] = set()

    def writer(n: int) -> None:
        seq = 0
        while not stop.is_set():
            targets = [s for s in servers if s.name not in dead]
            s = targets[(n + seq) % len(targets)]
            key, value = f"load/{n}/{seq}", f"{n}-{seq}"
            if s.kv_put(key, value, timeout=12):
                with lock:
                    acked[key] = value
            seq += 1

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    old = next(s for s in servers if s.server_addr == leader_addr)
    with lock:
        before_kill = len(acked)
    dead.add(old.name)
    old.stop(kill=True)  # kill -9: no graceful leave, no flush
    killed_at = time.monotonic()
    survivors = [s for s in servers if s is not old]
    new_leader = wait_until(lambda: next((s.leader() for s in survivors
                                          if s.leader() and s.leader() != leader_addr), None),
                            timeout=10, interval=0.02, what="a new leader")
    failover_s = time.monotonic() - killed_at
    print(f"failover {failover_s:.2f}s")
    assert failover_s < 3.0, f"new leader {new_leader} after {failover_s:.2f}s"
    time.sleep(1.5)  # keep writing through the new leader
    stop.set()
    for t in threads:
        t.join(20)
    print(f"acknowledged writes: {before_kill} before the kill, {len(acked)} in all")
    assert before_kill > 0 and len(acked) > before_kill, (before_kill, len(acked))

    old.start()  # the old leader comes back from its data dir
    wait_until(lambda: old.leader() == new_leader, timeout=20, what="the old leader rejoins as a follower")
    for s in servers:
        wait_until(lambda s=s: s.kv_get("direct/2", "&consistent") == b"via-s3", timeout=10, what=f"{s.name} caught up")
        missing = [k for k, v in acked.items() if s.kv_get(k, "&stale") != v.encode()]
        assert not missing, f"{s.name} lost {len(missing)} acknowledged writes, e.g. {missing[:5]}"

    # all three stop and start again: the whole state comes back from their data dirs
    for s in servers:
        s.stop()
    for s in servers:
        s.start()
    wait_until(lambda: len({s.leader() for s in servers} - {""}) == 1 and all(s.leader() for s in servers),
               timeout=20, what="a leader after restarting every server")
    assert servers[0].kv_put("after/restart", "yes")
    for s in servers:
        wait_until(lambda s=s: s.kv_get("after/restart", "&consistent") == b"yes", timeout=10, what=s.name)
        missing = [k for k, v in acked.items() if s.kv_get(k, "&stale") != v.encode()]
        assert not missing, f"{s.name} lost {len(missing)} writes across a full restart, e.g. {missing[:5]}"


def test_garbage_frames_are_counted_and_dropped():
    """Bad input on the server port: a frame of an unknown version closes that connection, a
    frame that does not decode is dropped; both are counted and the server keeps serving."""
    import asyncio
    import struct

    from appliance.raft.driver import MemoryStorage, RaftDriver
    from appliance.raft.transport import HELLO, RaftTransport
    from appliance.rpc.frames import encode_frame as frame
    from appliance.state.store import Store

    (port,) = free_ports(1, udp=False)

    async def main():
        drv = RaftDriver(Store(), node_id="n1", address=f"127.0.0.1:{port}", storage=MemoryStorage())
        drv.open()
        transport = RaftTransport(drv, bind="127.0.0.1", port=port, bootstrap_expect=3)
        await transport.start()
        await drv.start()
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(frame([99, "no such kind"]))  # decodes, but nonsense: dropped
            w.write(struct.pack(">BI", 1, 3) + b"\xc1\xc1\xc1")  # not msgpack: dropped
            huge = [1, 1, "n9", "n1", 1, 0, 0, [[1, 1, 0, 1 << 40]], 0, False, 0, 0, "", False, None]
            w.write(frame(huge))  # an entry whose data is a number, not bytes: dropped, nothing allocated
            w.write(frame([HELLO, {"id": "n2", "addr": "127.0.0.1:1", "servers": []}]))  # still read
            await w.drain()
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(struct.pack(">BI", 7, 10) + b"0123456789")  # unknown version: connection closed
            await w2.drain()
            assert await asyncio.wait_for(r2.read(), 5) == b""
            for _ in range(100):
                if transport.garbage_frames >= 4 and "n2" in transport.known:
                    break
                await asyncio.sleep(0.02)
            assert transport.garbage_frames == 4
            assert transport.known["n2"] == "127.0.0.1:1"
            w.close()
            w2.close()
        finally:
            await drv.stop()
            await transport.stop()

    asyncio.run(main())
