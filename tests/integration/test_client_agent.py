"""Client agents (server = false) against real server processes on loopback.

Three servers (`-server -bootstrap-expect 3`, raft_multiplier 1) and two client agents joined to
them. A client keeps a replica of the store streamed from one server and forwards its writes
(appliance/client). What is checked, with the rule each check stands for:

* a service from a client's config file and one registered through a client's HTTP API reach the
  catalog through anti-entropy and show on every agent, in `?passing` health and in the client's
  DNS (Consul docs: anti-entropy; the agent's view wins);
* a blocking query on a client wakes on a write made through a server (Consul docs: blocking
  queries; the replica applies the same log, so indexes and watch keys are the servers');
* KV written through a client reads back at once on that client, even `?stale`, and on the
  servers (read-your-writes: a write through a client answers after its replica applied it);
* default and `?consistent` reads on a follower server and on a client never return data older
  than a write acknowledged before the read began (Consul docs: consistency modes; read index,
  Raft thesis §6.4);
* killing the server a client streams from: the client fails over and keeps answering; with no
  server reachable, `?stale` reads still answer from the replica with `X-Consul-KnownLeader:
  false`, and reads that need the leader fail with Consul's `No known Consul servers`.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time

import msgpack
import pytest
from dnslib import QTYPE, DNSRecord

from tests.harness import Agent, Cluster, wait_until

pytestmark = pytest.mark.timeout(150)


def streaming_from(agent: Agent) -> str:
    """The server a client streams from now (its last "streaming from server" log line)."""
    found = re.findall(r"streaming from server (\S+)", agent.log())
    return found[-1] if found else ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("client-agents")
    cluster = Cluster(tmp_path, servers=3, clients=2)  # clients find servers by their LAN gossip tags
    servers, clients = cluster.servers, cluster.clients
    config_dir = tmp_path / "c1.d"
    config_dir.mkdir()
    (config_dir / "web.json").write_text(json.dumps(
        {"service": {"name": "web", "port": 8080, "tags": ["v1"],
                     "check": {"id": "web-ttl", "ttl": "10m", "status": "passing"}}}))
    clients[0].args += ["-config-dir", str(config_dir)]
    with cluster.start():
        nodes = cluster.agents
        wait_until(lambda: all(n.leader() for n in nodes) and len({n.leader() for n in nodes}) == 1,
                   timeout=40, what="one leader known to every server and client")
        yield servers, clients


def dns_a(port: int, name: str) -> list[str]:
    reply = DNSRecord.parse(DNSRecord.question(name, "A").send("127.0.0.1", port, timeout=3))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def test_client_services_reach_every_agent_and_dns(cluster):
    servers, (c1, c2) = cluster
    status, _, body = c2.put("/v1/agent/service/register", {"Name": "api", "Port": 9090})
    assert status == 200, body
    for n in servers + [c1, c2]:
        web = wait_until(lambda n=n: n.read_json("/v1/catalog/service/web"), timeout=15, what=f"web on {n.name}")
        assert [(s["Node"], s["ServicePort"], s["ServiceTags"]) for s in web] == [("c1", 8080, ["v1"])]
        # the leader keeps the node's serfHealth from gossip; the agent syncs its own check
        def healthy(n=n):
            entries = n.read_json("/v1/health/service/web?passing")
            return [(e["Node"]["Node"], sorted(c["CheckID"] for c in e["Checks"])) for e in entries]

        wait_until(lambda: len(healthy()) == 1 and len(healthy()[0][1]) == 2, timeout=15,
                   what=f"web with serfHealth on {n.name}")
        assert healthy() == [("c1", ["serfHealth", "web-ttl"])]
        api = n.read_json("/v1/catalog/service/api")
        assert [(s["Node"], s["ServicePort"]) for s in api] == [("c2", 9090)]
    assert wait_until(lambda: dns_a(c1.dns_port, "web.service.consul"), timeout=5) == ["127.0.0.1"]
    assert dns_a(c2.dns_port, "api.service.consul") == ["127.0.0.1"]
    # Consul's log line for anti-entropy
    assert "Synced service: service=web" in c1.log_path.read_text()
    # the agent's view wins: a catalog deregistration of the client's service is undone
    status, _, body = servers[0].put("/v1/catalog/deregister", {"Node": "c2", "ServiceID": "api"})
    assert status == 200, body
    assert c2.read_json("/v1/catalog/service/api") == []  # the write is visible on c2 at once ...
    status, _, _ = c2.put("/v1/agent/service/register", {"Name": "api", "Port": 9090})  # ... and the agent restores it
    assert status == 200
    assert [s["Node"] for s in servers[1].read_json("/v1/catalog/service/api")] == ["c2"]
    # /v1/agent/self on a client: no raft section, the servers it knows
    stats = c1.read_json("/v1/agent/self")["Stats"]
    assert "raft" not in stats and stats["consul"]["server"] == "false"
    # status and operator reads on a client answer what the servers know
    rpc_addrs = sorted(s.server_addr for s in servers)
    assert sorted(c1.read_json("/v1/status/peers")) == rpc_addrs
    assert c1.read_json("/v1/status/leader") in rpc_addrs
    for query in ("", "?stale"):
        conf = c1.read_json("/v1/operator/raft/configuration" + query)
        assert sorted(s["Address"] for s in conf["Servers"]) == rpc_addrs
        assert sum(s["Leader"] for s in conf["Servers"]) == 1


def test_blocking_query_on_a_client_wakes_on_a_server_write(cluster):
    servers, (c1, _) = cluster
    status, headers, _ = c1.get("/v1/kv/blocking/key")
    assert status == 404
    index = int(headers["x-consul-index"])
    result = {}

    def block():
        t0 = time.monotonic()
        result["status"], result["headers"], result["body"] = c1.get(
            f"/v1/kv/blocking/key?index={index}&wait=20s", timeout=30)
        result["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=block)
    thread.start()
    time.sleep(1.0)
    assert "status" not in result  # parked
    assert servers[2].put("/v1/kv/blocking/key", "woken")[0] == 200
    thread.join(30)
    assert result["status"] == 200 and result["elapsed"] < 10
    assert json.loads(result["body"])[0]["Key"] == "blocking/key"
    assert int(result["headers"]["x-consul-index"]) > index


def test_kv_written_through_a_client_reads_back_at_once(cluster):
    servers, (c1, c2) = cluster
    for i in range(15):
        assert c2.put(f"/v1/kv/ryw/{i}", f"v{i}")[::2] == (200, b"true")
        # read-your-writes on the client, even ?stale (served from its replica without asking)
        for query in ("", "&stale", "&consistent"):
            status, headers, body = c2.get(f"/v1/kv/ryw/{i}?raw{query}")
            assert (status, body) == (200, f"v{i}".encode()), query
        assert headers["x-consul-knownleader"] == "true"
        # and on a server, with the default consistency
        assert servers[i % 3].get(f"/v1/kv/ryw/{i}?raw")[2] == f"v{i}".encode()
    # CAS through the client: the FSM's result comes back
    index = json.loads(c2.get("/v1/kv/ryw/0")[2])[0]["ModifyIndex"]
    assert c2.put(f"/v1/kv/ryw/0?cas={index - 1}", "no")[::2] == (200, b"false")
    assert c2.put(f"/v1/kv/ryw/0?cas={index}", "yes")[::2] == (200, b"true")
    assert c1.get("/v1/kv/ryw/0?raw")[2] == b"yes"  # the other client, default consistency


def test_reads_on_followers_and_clients_are_never_older_than_acknowledged_writes(cluster):
    servers, clients = cluster
    leader_addr = servers[0].leader()
    leader = next(s for s in servers if s.server_addr == leader_addr)
    followers = [s for s in servers if s is not leader]
    writers = [leader, followers[0], clients[0]]
    readers = [followers[1], followers[0], clients[1]]
    for i in range(60):
        writer, reader = writers[i % 3], readers[i % 3]
        assert writer.put("/v1/kv/linear", str(i))[0] == 200  # acknowledged ...
        for query in ("", "&consistent"):  # ... so any read that starts now sees it
            status, headers, body = reader.get(f"/v1/kv/linear?raw{query}")
            assert (status, body) == (200, str(i).encode()), (writer.name, reader.name, query)
            assert headers["x-consul-lastcontact"] == "0"  # confirmed against the leader
    status, headers, _ = followers[1].get("/v1/kv/linear?stale")
    assert status == 200 and headers["x-consul-knownleader"] == "true"
    assert int(headers["x-consul-lastcontact"]) < 2000
    # ?max_stale=<d> implies stale (a contact older than d reads like a default read)
    status, headers, _ = clients[1].get("/v1/catalog/nodes?max_stale=10m")
    assert status == 200 and headers["x-consul-effective-consistency"] == "stale"
    status, _, body = clients[0].get("/v1/kv/linear?max_stale=soon")
    assert (status, body) == (400, b'Invalid max_stale value "soon"')
    status, _, body = clients[0].get("/v1/kv/linear?max_stale=5s&consistent")
    assert (status, body) == (400, b"Cannot specify ?stale with ?consistent, conflicting semantics.")


def _frame(body) -> bytes:
    data = msgpack.packb(body, use_bin_type=True)
    return struct.pack(">BI", 1, len(data)) + data


def _read_frame(sock: socket.socket):
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    _, length = struct.unpack(">BI", exactly(5))
    return msgpack.unpackb(exactly(length), raw=False)


def test_the_follow_protocol_replays_answers_and_survives_garbage(cluster):
    servers, _ = cluster
    server = servers[0]
    assert server.put("/v1/kv/proto/a", "1")[0] == 200
    index = json.loads(server.get("/v1/kv/proto/a")[2])[0]["ModifyIndex"]
    host, port = server.server_addr.split(":")
    # a client that has applied index-1 gets the entries after it replayed, no snapshot
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(_frame([5, index - 1, "probe"]))  # FOLLOW
        kinds = []
        while not any(k[0] == "entries" for k in kinds):
            body = _read_frame(sock)
            assert body[0] == 6  # STREAM
            kinds.append((body[1], body[2][0][0] if body[1] == "entries" else None))
        assert ("snapshot", None) not in kinds and ("entries", index) in kinds
        # garbage on the connection is dropped; the connection keeps answering
        sock.sendall(_frame("not a list") + _frame([99, 1]) + _frame([7, "id", "", False]) + _frame([7, 1, "", False]))
        body = _read_frame(sock)
        while body[0] == 6:
            body = _read_frame(sock)
        assert body[:3] == [8, 1, "ok"] and body[3] >= index  # READ_INDEX_RESP
    # a new client (index 0) gets the whole state in one snapshot; a bad FOLLOW or frame version
    # closes the connection
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(_frame([5, 0, "probe"]))
        first = _read_frame(sock)
        assert first[:2] == [6, "snapshot"] and first[2] >= index
        sock.sendall(b"\x09\x00\x00\x00\x01\x00")
        with pytest.raises((ConnectionError, OSError)):
            while True:
                _read_frame(sock)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(_frame([5, -1, 7]))
        with pytest.raises((ConnectionError, OSError)):
            _read_frame(sock)
    assert server.get("/v1/kv/proto/a?raw")[2] == b"1"  # the server is fine


def test_a_client_fails_over_when_its_server_is_killed(cluster):
    servers, (c1, c2) = cluster
    current = wait_until(lambda: streaming_from(c1), timeout=5, what="c1's server")
    victim = next(s for s in servers if s.server_addr == current)
    victim.stop(kill=True)
    survivors = [s for s in servers if s is not victim]
    wait_until(lambda: streaming_from(c1) not in ("", current), timeout=15, what="c1 on another server")
    # a write through another server is read back on the client, which also still writes
    assert wait_until(lambda: survivors[0].put("/v1/kv/failover", "after")[0] == 200, timeout=15)
    assert c1.get("/v1/kv/failover?raw")[2] == b"after"
    assert c1.put("/v1/kv/failover/c1", "mine")[::2] == (200, b"true")
    assert survivors[1].get("/v1/kv/failover/c1?raw")[2] == b"mine"
    status, headers, _ = c1.get("/v1/catalog/service/web")
    assert status == 200 and headers["x-consul-knownleader"] == "true"
    # no server at all: the replica still answers stale reads, without a known leader
    for s in survivors:
        s.stop(kill=True)
    wait_until(lambda: c1.leader() == "", timeout=10, what="c1 without a leader")
    status, headers, body = c1.get("/v1/kv/failover?raw&stale")
    assert (status, body) == (200, b"after") and headers["x-consul-knownleader"] == "false"
    status, _, body = c2.get("/v1/kv/failover?raw", timeout=20)
    assert (status, body) == (500, b"No known Consul servers")
