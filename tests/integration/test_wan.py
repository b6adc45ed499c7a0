"""Two datacenters joined over the WAN gossip pool, as real processes on loopback.

dc1 has one server (`-server -bootstrap`) and one client agent; dc2 has one server, which finds
dc1 with `-retry-join-wan`. What is checked, with the rule each check stands for:

* `cairn members -wan` and `/v1/agent/members?wan=1` list both servers as `<node>.<dc>` on their
  WAN ports; a client agent is not in the WAN pool and cannot join it (Consul: WAN contains servers
  only, `Must be a server to join WAN cluster`);
* `/v1/catalog/datacenters` lists both, this agent's datacenter first (Consul: sorted by RTT,
  the own datacenter counting 0); a client agent asks a server;
* `?dc=dc2` on dc1's server and client reaches dc2 for catalog and health reads, catalog and KV
  writes, and blocking KV reads, whose `X-Consul-Index` and wake-up come from dc2 (Consul docs:
  the dc parameter; blocking queries);
* `x.service.dc2.consul` asked of dc1's DNS port answers dc2's instance address, SRV targets
  name dc2 and `<node>.node.dc2.consul` resolves (Consul docs: DNS, lookups in another datacenter);
* `/v1/status/leader|peers?dc=dc2` and `/v1/coordinate/nodes?dc=dc2` are dc2's answers;
* an unknown datacenter is `500 No path to datacenter` over HTTP and NXDOMAIN over DNS (Consul:
  structs.ErrNoDCPath);
* a blocking read parked in dc2 for a dc1 asker is released when the asker hangs up; garbage
  DC_REQUEST frames get a 400 answer, never a crash.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import msgpack
import pytest

from tests.harness import FAST_RAFT, Agent, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def dcs(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("wan")
    s1, s2, c1 = (Agent(tmp, name, "-hcl", FAST_RAFT, datacenter=dc) for name, dc in
                  (("s1", "dc1"), ("s2", "dc2"), ("c1", "dc1")))
    agents = [s1, s2, c1]
    try:
        s1.start("-server", "-bootstrap")
        s1.wait_http()
        s2.start("-server", "-bootstrap", "-retry-join-wan", s1.wan_addr, "-retry-interval-wan", "1s")
        c1.start("-retry-join", s1.lan_addr, "-retry-interval", "1s")
        s2.wait_http()
        c1.wait_http()

        def wan_alive() -> bool:
            members = s1.read_json("/v1/agent/members?wan=1")
            return {m["Name"]: m["Status"] for m in members} == {"s1.dc1": 1, "s2.dc2": 1}

        wait_until(wan_alive, timeout=30, what="s1 and s2 alive in the WAN pool")
        wait_until(lambda: c1.request("GET", "/v1/catalog/datacenters")[0] == 200, timeout=30,
                   what="the client agent reaching a server")
        yield s1, s2, c1
    finally:
        for a in agents:
            a.stop()


def test_wan_members_and_datacenters(dcs):
    s1, s2, c1 = dcs
    out = s1.cli("members", "-wan")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[2], r[3], r[6]) for r in rows] == [
        ("s1.dc1", s1.wan_addr, "alive", "server", "dc1"),
        ("s2.dc2", s2.wan_addr, "alive", "server", "dc2")]
    wan = s2.read_json("/v1/agent/members?wan=1")
    tags = {m["Name"]: m["Tags"] for m in wan}
    assert tags["s1.dc1"]["role"] == "consul" and tags["s1.dc1"]["port"] == str(s1.server_port)
    assert c1.read_json("/v1/agent/members?wan=1") == []  # a client agent is not in the WAN pool
    status, _, body = c1.request("PUT", f"/v1/agent/join/127.0.0.1:{s2.serf_wan_port}?wan=1")
    assert status == 500 and b"Must be a server to join WAN cluster" in body
    assert s1.read_json("/v1/agent/self")["Stats"]["serf_wan"]["members"] == "2"
    out = s1.cli("join", "-wan", s2.wan_addr)  # joining an existing member again is fine
    assert out.returncode == 0 and "Successfully joined cluster by contacting 1 nodes." in out.stdout, out.stderr
    status, _, body = s1.request("PUT", "/v1/agent/force-leave/nope.dc9?wan=1")
    assert (status, body) == (500, b"agent: No node found with name 'nope.dc9'")

    assert s1.read_json("/v1/catalog/datacenters") == ["dc1", "dc2"]  # own datacenter first
    assert s2.read_json("/v1/catalog/datacenters") == ["dc2", "dc1"]
    assert c1.read_json("/v1/catalog/datacenters") == ["dc1", "dc2"]  # the client asks a server
    out = c1.cli("catalog", "datacenters")
    assert out.returncode == 0 and out.stdout.split() == ["dc1", "dc2"], out.stderr

    maps = c1.read_json("/v1/coordinate/datacenters")  # the servers' WAN coordinates, <node>.<dc>
    assert [(m["Datacenter"], m["AreaID"]) for m in maps] == [("dc1", "WAN"), ("dc2", "WAN")]
    assert [c["Node"] for c in maps[0]["Coordinates"]] == ["s1.dc1"]
    out = s1.cli("rtt", "-wan", "s1.dc1")
    assert out.returncode == 0 and "s1.dc1 <-> s1.dc1" in out.stdout and "WAN" in out.stdout, out.stderr


def test_catalog_and_health_reach_the_other_datacenter(dcs):
    s1, s2, c1 = dcs
    reg = {"Node": "ext2", "Address": "10.2.0.5", "Service": {"Service": "x", "Port": 8080},
           "Check": {"CheckID": "x-up", "Name": "x up", "Status": "passing", "ServiceID": "x"}}
    status, _, body = s1.request("PUT", "/v1/catalog/register?dc=dc2", reg)  # a write, through dc1
    assert status == 200 and json.loads(body) is True, body
    assert s1.read_json("/v1/catalog/service/x") == []  # it landed in dc2 only
    assert [n["Node"] for n in s2.read_json("/v1/catalog/service/x")] == ["ext2"]

    for agent in (s1, c1):
        status, headers, body = agent.request("GET", "/v1/catalog/service/x?dc=dc2")
        assert status == 200 and [(n["Node"], n["Datacenter"], n["ServiceAddress"] or n["Address"])
                                  for n in json.loads(body)] == [("ext2", "dc2", "10.2.0.5")]
        _, local_headers, _ = s2.request("GET", "/v1/catalog/service/x")
        assert headers["X-Consul-Index"] == local_headers["X-Consul-Index"]  # the index is dc2's
        health = agent.read_json("/v1/health/service/x?dc=dc2&passing")
        assert [(h["Node"]["Node"], [c["CheckID"] for c in h["Checks"]]) for h in health] == [("ext2", ["x-up"])]
        assert "x" in agent.read_json("/v1/catalog/services?dc=dc2")
        assert "x" not in agent.read_json("/v1/catalog/services?dc=dc1")  # naming our own dc is local

    dig = s1.dig("x.service.dc2.consul")
    assert dig.returncode == 0 and "status: NOERROR" in dig.stdout, dig.stdout
    assert [line.split()[-1] for line in dig.stdout.splitlines() if "\tA\t" in line and not line.startswith(";")
            ] == ["10.2.0.5"]
    srv = c1.dig("x.service.dc2.consul", "SRV")
    assert "ext2.node.dc2.consul." in srv.stdout and "8080" in srv.stdout, srv.stdout
    assert "status: NXDOMAIN" in s1.dig("nope.service.dc2.consul").stdout  # dc2 has no such service
    node = c1.dig("ext2.node.dc2.consul")  # the SRV target resolves too
    assert "status: NOERROR" in node.stdout and "10.2.0.5" in node.stdout, node.stdout


def test_kv_reads_writes_and_blocking_in_the_other_datacenter(dcs):
    s1, s2, c1 = dcs
    status, _, body = c1.request("PUT", "/v1/kv/wan/key?dc=dc2", b"in-dc2")
    assert status == 200 and body.strip() == b"true"
    assert s2.request("GET", "/v1/kv/wan/key?raw")[2] == b"in-dc2"
    assert s1.request("GET", "/v1/kv/wan/key")[0] == 404  # dc1 never saw it
    status, headers, body = s1.request("GET", "/v1/kv/wan/key?dc=dc2&raw")
    assert status == 200 and body == b"in-dc2"
    index = int(headers["X-Consul-Index"])

    result: dict[str, object] = {}

    def block() -> None:  # a blocking read through dc1 parks in dc2
        started = time.monotonic()
        result["answer"] = s1.request("GET", f"/v1/kv/wan/key?dc=dc2&index={index}&wait=20s", timeout=30)
        result["took"] = time.monotonic() - started

    waiter = threading.Thread(target=block)
    waiter.start()
    time.sleep(1.0)
    assert waiter.is_alive()  # still parked: nothing changed in dc2
    assert s2.request("PUT", "/v1/kv/wan/key", b"changed")[0] == 200
    waiter.join(25)
    status, headers, body = result["answer"]
    assert status == 200 and json.loads(body)[0]["Key"] == "wan/key" and result["took"] < 15
    assert int(headers["X-Consul-Index"]) > index
    status, _, _ = s1.request("DELETE", "/v1/kv/wan/key?dc=dc2")
    assert status == 200 and s2.request("GET", "/v1/kv/wan/key")[0] == 404
    status, _, text = s1.request("GET", "/v1/agent/metrics?format=prometheus")
    cross = [line for line in text.decode().splitlines() if line.startswith("consul_rpc_cross_dc")]
    assert status == 200 and any('datacenter="dc2"' in line for line in cross), cross  # Consul's counter


def test_unknown_datacenter(dcs):
    s1, _, c1 = dcs
    for agent in (s1, c1):
        for method, path in (("GET", "/v1/catalog/services?dc=nowhere"), ("GET", "/v1/health/service/x?dc=nowhere"),
                             ("PUT", "/v1/kv/k?dc=nowhere")):
            status, _, body = agent.request(method, path, b"v" if method == "PUT" else None)
            assert (status, body.strip()) == (500, b"No path to datacenter"), (agent.name, path)
    assert "status: NXDOMAIN" in c1.dig("x.service.nowhere.consul").stdout


def test_status_of_the_other_datacenter(dcs):
    s1, s2, c1 = dcs
    for agent in (s1, c1):
        assert agent.read_json("/v1/status/leader?dc=dc2") == f"127.0.0.1:{s2.server_port}"
        assert agent.read_json("/v1/status/peers?dc=dc2") == [f"127.0.0.1:{s2.server_port}"]
    assert s1.read_json("/v1/status/leader") == f"127.0.0.1:{s1.server_port}"
    wait_until(lambda: s1.read_json("/v1/coordinate/nodes?dc=dc2") == s2.read_json("/v1/coordinate/nodes"),
               timeout=10, what="dc2's coordinates through dc1")


def test_garbage_datacenter_requests_are_answered_not_fatal(dcs):
    # Bad input: a DC_REQUEST frame that does not decode gets a 400 answer; the server keeps serving
    s1, _, _ = dcs
    for body in ([9, {"dc": 5}], [9, {"dc": "dc2", "method": "GET", "path": "/v1/kv/a", "hops": 7, "body": b""}],
                 [9, "junk"]):
        with socket.create_connection(("127.0.0.1", s1.server_port), timeout=5) as sock:
            data = msgpack.packb(body, use_bin_type=True)
            sock.sendall(struct.pack(">BI", 1, len(data)) + data)
            head = sock.recv(5, socket.MSG_WAITALL)
            _, length = struct.unpack(">BI", head)
            kind, answer = msgpack.unpackb(sock.recv(length, socket.MSG_WAITALL), raw=False)
            assert kind == 10 and answer["status"] == 400 and b"malformed datacenter request" in answer["body"]
    assert s1.read_json("/v1/catalog/datacenters") == ["dc1", "dc2"]


def test_a_hung_up_asker_releases_the_remote_blocking_query(dcs):
    # Consul docs, blocking queries: the wait belongs to the asker; once it goes away the other
    # datacenter's server stops parking for it (its consul_rpc_queries_blocking gauge drops back)
    s1, s2, _ = dcs

    def parked_in_dc2() -> float:
        _, _, text = s2.request("GET", "/v1/agent/metrics?format=prometheus")
        lines = [line for line in text.decode().splitlines()  # consul_<host>_rpc_queries_blocking: a gauge
                 if line.startswith("consul_") and line.split()[0].endswith("rpc_queries_blocking")]
        return float(lines[0].split()[-1]) if lines else -1.0

    _, headers, _ = s2.request("GET", "/v1/kv/?keys")
    index = int(headers["X-Consul-Index"])
    sock = socket.create_connection(("127.0.0.1", s1.http_port), timeout=5)
    try:
        sock.sendall(f"GET /v1/kv/parked?dc=dc2&index={index}&wait=60s HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_until(lambda: parked_in_dc2() == 1.0, timeout=10, what="the query parked in dc2")
    finally:
        sock.close()
    wait_until(lambda: parked_in_dc2() == 0.0, timeout=10, what="dc2 releasing the query")
