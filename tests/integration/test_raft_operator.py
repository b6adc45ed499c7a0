"""The Raft operator surface on real server processes: growing a running cluster, leadership
transfer, snapshots, peer removal, autopilot health and dead-server cleanup, graceful leave.

One cluster goes through every step in order (each starts from what the last one left), at
`raft_multiplier = 1` with `server_stabilization_time = "1s"` and cleanup off until step 7:

1. three servers bootstrap (`-bootstrap-expect 3`); a fourth, plain `-server` with `-retry-join`,
   is added by the leader as a non-voter and promoted once stable (thesis §4.2.1; autopilot's
   ServerStabilizationTime); `cairn operator raft list-peers` shows it as a voter;
2. `transfer-leader` through a follower moves leadership, and `-id` moves it to that server;
3. `snapshot save` on one server, more writes, `snapshot restore` through another: every server
   has exactly the saved KV state, and a blocking query waiting on a changed key wakes;
4. a corrupted archive (a byte of state.bin changed, checksums left as they were) is refused
   with a 400 and changes nothing;
5. a server killed with SIGKILL shows up unhealthy in /v1/operator/autopilot/health (429);
6. `remove-peer` removes it (and names a missing id with Consul's text);
7. with CleanupDeadServers turned on, autopilot removes the next killed server by itself;
8. `cairn leave` on the leader: it hands over leadership, leaves the configuration, and the last
   server leads alone.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.harness import Agent, http, one_leader, wait_until

pytestmark = pytest.mark.timeout(150)

HCL = 'performance { raft_multiplier = 1 } autopilot { cleanup_dead_servers = false server_stabilization_time = "1s" }'


def start(server: Agent, *flags: str) -> None:
    server.start(*flags)
    server.wait_http(20)


def node_id(server: Agent) -> str:
    """The server's node ID, as its data dir keeps it (Consul's node-id file)."""
    return (server.data_dir / "node-id").read_text().strip()


def call(server: Agent, method: str, path: str, body=None):
    status, headers, data = server.request(method, path, body, timeout=15)
    return status, headers, (json.loads(data) if data.strip() and status in (200, 429) else data)


def kv(server: Agent) -> list[tuple[str, str]]:
    status, _, data = server.get("/v1/kv/?recurse&consistent", timeout=15)
    if status == 404:
        return []
    assert status == 200, data
    return sorted((e["Key"], base64.b64decode(e["Value"] or "").decode()) for e in json.loads(data))


@pytest.fixture
def servers(tmp_path: Path):
    started = [Agent(tmp_path, f"s{i}", "-server", "-hcl", HCL) for i in range(1, 5)]
    for s in started:  # the first three bootstrap; the fourth joins them
        s.join = [first.lan_addr for first in started[:3]]
    try:
        yield started
    finally:
        for s in started:
            s.stop()


def agreed_leader(servers: list[Agent]) -> Agent:
    def check():
        address = one_leader([s for s in servers if s.alive()])
        return next((s for s in servers if s.server_addr == address), None) if address else None

    return wait_until(check, timeout=20, what="one leader known to every live server")


def configuration(server: Agent) -> dict[str, dict]:
    status, _, conf = call(server, "GET", "/v1/operator/raft/configuration")
    assert status == 200, conf
    return {s["ID"]: s for s in conf["Servers"]}


def test_operator_surface_on_a_live_cluster(servers, tmp_path):
    s1, s2, s3, s4 = servers
    for s in (s1, s2, s3):
        start(s, "-bootstrap-expect", "3")
    leader = agreed_leader([s1, s2, s3])
    assert http("PUT", leader.url + "/v1/kv/keep/1", "one")[0] == 200

    # 1. a plain -server joins the running cluster: non-voter first, voter once stable
    start(s4)

    def s4_voter():
        conf = configuration(agreed_leader(servers))
        return conf.get(node_id(s4), {}).get("Voter")

    wait_until(s4_voter, timeout=30, what="s4 promoted to voter")
    leader = agreed_leader(servers)
    asked = next(s for s in servers if s is not leader)  # a follower asks the leader (default consistency)
    peers = asked.cli("operator", "raft", "list-peers")
    assert peers.returncode == 0, peers.stderr
    lines = peers.stdout.splitlines()
    assert lines[0].split() == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol", "Commit", "Index",
                                "Trails", "Leader", "By"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["s1", "s2", "s3", "s4"]
    assert rows["s4"][1:5] == [node_id(s4), s4.server_addr, "follower", "true"]
    assert rows[leader.name][3] == "leader" and rows[leader.name][-1] == "-"
    assert all(int(row[6]) > 0 for row in rows.values())  # every server's last index, from the leader
    wait_until(lambda: http("GET", s4.url + "/v1/kv/keep/1?raw&stale")[2] == b"one", timeout=10,
               what="s4 holding the cluster's data")

    def autopilot_gauges():
        text = http("GET", agreed_leader(servers).url + "/v1/agent/metrics?format=prometheus")[2].decode()
        found = dict(re.findall(r"^consul_(?:\w+_)?autopilot_(healthy|failure_tolerance) (\S+)$", text, re.M))
        return found if found.get("healthy") == "1.0" else None

    gauges = wait_until(autopilot_gauges, timeout=10, what="consul_autopilot_* on the leader")
    assert gauges["failure_tolerance"] == "1.0"

    # 2. leadership transfer: to anyone (asked through a follower), then to a named server
    follower = next(s for s in servers if s is not leader)
    result = follower.cli("operator", "raft", "transfer-leader")
    assert result.returncode == 0 and result.stdout.strip() == "Success", result.stderr
    new_leader = agreed_leader(servers)
    assert new_leader is not leader
    target = next(s for s in servers if s is not new_leader)
    result = s1.cli("operator", "raft", "transfer-leader", "-id", node_id(target))
    assert result.returncode == 0, result.stderr
    assert agreed_leader(servers) is target
    status, _, body = call(s1, "POST", "/v1/operator/raft/transfer-leader?id=nope")
    assert status == 500 and b'id "nope" was not found in the Raft configuration' in body

    # 3. snapshot save on one server, more writes, restore through another
    for i in range(5):
        assert http("PUT", f"{s2.url}/v1/kv/snap/{i}", f"v{i}")[0] == 200
    saved = kv(s2)
    path = tmp_path / "backup.snap"
    result = s2.cli("snapshot", "save", str(path))
    assert result.returncode == 0 and result.stdout.startswith("Saved and verified snapshot to index "), result.stderr
    inspect = s2.cli("snapshot", "inspect", str(path))
    assert [line.split()[0] for line in inspect.stdout.splitlines()] == ["ID", "Size", "Index", "Term", "Version"]
    assert http("PUT", s3.url + "/v1/kv/snap/0", "changed")[0] == 200
    assert http("PUT", s3.url + "/v1/kv/later/1", "after")[0] == 200
    assert http("DELETE", s3.url + "/v1/kv/keep/1")[0] == 200
    assert kv(s3) != saved
    _, headers, _ = http("GET", s4.url + "/v1/kv/later/1?stale")
    waited_index = int(headers["X-Consul-Index"])
    woke: dict = {}

    def blocking_read():
        started = time.monotonic()
        status, headers, _ = http("GET", f"{s4.url}/v1/kv/later/1?stale&index={waited_index}&wait=60s", timeout=70)
        woke.update(status=status, index=int(headers["X-Consul-Index"]), after=time.monotonic() - started)

    reader = threading.Thread(target=blocking_read)
    reader.start()
    time.sleep(0.3)
    result = s3.cli("snapshot", "restore", str(path))
    assert result.returncode == 0 and result.stdout.strip() == "Restored snapshot", result.stderr
    for s in servers:
        wait_until(lambda s=s: kv(s) == saved, timeout=10, what=f"{s.name} holding the restored state")
    reader.join(15)
    assert woke["status"] == 404 and woke["index"] > waited_index and woke["after"] < 10, woke

    # 4. a corrupted archive: state.bin changed, SHA256SUMS not -> refused, nothing changes
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes()), mode="r:gz") as raw:
        members = {m.name: raw.extractfile(m).read() for m in raw}
    state = bytearray(members["state.bin"])
    state[len(state) // 2] ^= 0xFF
    members["state.bin"] = bytes(state)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert http("PUT", s1.url + "/v1/kv/snap/1", "kept")[0] == 200
    before = kv(s1)
    status, _, body = http("PUT", s1.url + "/v1/snapshot", out.getvalue())
    assert status == 400 and b"SHA256 of state.bin does not match SHA256SUMS" in body, body
    status, _, body = http("PUT", s1.url + "/v1/snapshot", path.read_bytes()[:200])
    assert status == 400 and b"corrupt snapshot archive" in body, body
    # more state than one server RPC message holds (511 MiB): refused from the Content-Length alone
    with socket.create_connection(("127.0.0.1", s1.http_port), timeout=10) as sock:
        sock.sendall(b"PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 600000000\r\n\r\n")
        answer = b""
        while b"too large" not in answer:  # the answer may come in more than one segment
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"snapshot archive too large" in answer, answer
    bad = tmp_path / "bad.snap"
    bad.write_bytes(out.getvalue())
    result = s1.cli("snapshot", "restore", str(bad))
    assert result.returncode == 1 and "does not match" in result.stderr
    assert all(kv(s) == before for s in servers)

    # 5. a killed server is unhealthy in autopilot's report
    leader = agreed_leader(servers)
    if leader is s4:
        assert s4.cli("operator", "raft", "transfer-leader", "-id", node_id(s1)).returncode == 0
        leader = agreed_leader(servers)
    s4.stop(kill=True)

    def s4_unhealthy():
        status, _, health = call(leader, "GET", "/v1/operator/autopilot/health")
        rows = {r["ID"]: r for r in health["Servers"]}
        return status == 429 and not health["Healthy"] and not rows[node_id(s4)]["Healthy"] and health

    health = wait_until(s4_unhealthy, timeout=10, what="s4 unhealthy in /v1/operator/autopilot/health")
    assert health["FailureTolerance"] == 0  # 3 healthy of 4 voters: a quorum of 3 leaves no margin
    assert {r["Name"] for r in health["Servers"]} == {"s1", "s2", "s3", "s4"}
    assert node_id(s4) in configuration(leader)  # cleanup is off: it stays until removed

    # 6. remove-peer removes it; a missing id or address is named in Consul's text
    result = s2.cli("operator", "raft", "remove-peer", "-address", "127.0.0.1:1")
    assert result.returncode == 1 and 'address "127.0.0.1:1" was not found in the Raft configuration' in result.stderr
    status, _, body = call(s2, "DELETE", "/v1/operator/raft/peer")
    assert status == 400 and body.startswith(b"Must specify either ?id")
    result = s2.cli("operator", "raft", "remove-peer", "-id", node_id(s4))
    assert result.returncode == 0 and result.stdout.strip() == f'Removed peer with id "{node_id(s4)}"', result.stderr
    assert sorted(configuration(leader)) == sorted(node_id(s) for s in (s1, s2, s3))
    assert http("PUT", s2.url + "/v1/kv/after-remove", "ok")[0] == 200

    # 7. dead-server cleanup removes the next killed server once it is turned on
    victim = next(s for s in (s1, s2, s3) if s is not agreed_leader(servers))
    victim.stop(kill=True)
    leader = agreed_leader(servers)
    wait_until(lambda: call(leader, "GET", "/v1/operator/autopilot/health")[0] == 429, timeout=10,
               what="the killed server unhealthy")
    time.sleep(1.5)
    assert node_id(victim) in configuration(leader)  # still there while cleanup is off
    status, _, conf = call(leader, "GET", "/v1/operator/autopilot/configuration")
    assert status == 200 and conf["CleanupDeadServers"] is False and conf["ServerStabilizationTime"] == "1s"
    status, _, body = call(leader, "PUT", "/v1/operator/autopilot/configuration", {"MinQuorum": "two"})
    assert (status, body) == (400, b"Error parsing autopilot config: json: cannot unmarshal string into Go struct "
                                   b"field AutopilotConfiguration.MinQuorum of type uint")
    status, _, body = call(leader, "PUT", "/v1/operator/autopilot/configuration?cas=1", {"MinQuorum": 0})
    assert status == 200 and body is False  # cas does not match ModifyIndex: nothing changed
    result = leader.cli("operator", "autopilot", "set-config", "-cleanup-dead-servers=true")
    assert result.returncode == 0 and result.stdout.strip() == "Configuration updated!", result.stderr
    assert "CleanupDeadServers = true" in leader.cli("operator", "autopilot", "get-config").stdout
    wait_until(lambda: node_id(victim) not in configuration(leader), timeout=20,
               what="autopilot removing the dead server")
    assert len(configuration(leader)) == 2
    status, _, health = call(leader, "GET", "/v1/operator/autopilot/health")
    assert status == 200 and health["Healthy"], health

    # 8. graceful leave of the leader: leadership moves, the leaver leaves the configuration
    other = next(s for s in (s1, s2, s3) if s.alive() and s is not leader)
    result = leader.cli("leave")
    assert result.returncode == 0, result.stderr
    leader.proc.wait(20)
    wait_until(lambda: other.leader() == other.server_addr, timeout=10, what="the remaining server leading")
    assert list(configuration(other)) == [node_id(other)]
    assert http("PUT", other.url + "/v1/kv/alone", "yes")[0] == 200
    assert b"Graceful leave complete" in leader.log_path.read_bytes()
