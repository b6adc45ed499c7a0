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

import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, free_ports, http, wait_until

pytestmark = pytest.mark.timeout(150)

HCL = 'performance { raft_multiplier = 1 } autopilot { cleanup_dead_servers = false server_stabilization_time = "1s" }'


class Server:
    def __init__(self, tmp_path: Path, name: str) -> None:
        self.name = name
        self.ports = free_ports(5)
        self.data_dir = tmp_path / name
        self.log_path = tmp_path / f"{name}.log"
        self.url = f"http://127.0.0.1:{self.ports[0]}"
        self.http_addr = f"127.0.0.1:{self.ports[0]}"
        self.server_addr = f"127.0.0.1:{self.ports[2]}"
        self.lan_addr = f"127.0.0.1:{self.ports[3]}"  # -retry-join takes LAN gossip addresses
        self.proc: subprocess.Popen | None = None
        self.node_id = ""

    def start(self, join: list[str], *mode: str) -> None:
        http_port, dns_port, server_port, lan, wan = self.ports
        args = [sys.executable, "-m", "appliance", "agent", "-server", *mode, "-node", self.name,
                "-data-dir", str(self.data_dir), "-bind", "127.0.0.1", "-client", "127.0.0.1",
                "-http-port", str(http_port), "-dns-port", str(dns_port), "-server-port", str(server_port),
                "-serf-lan-port", str(lan), "-serf-wan-port", str(wan), "-hcl", HCL]
        for address in join:
            if address != self.lan_addr:
                args += ["-retry-join", address]
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept for the process's lifetime
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                     start_new_session=True)
        log.close()
        self.node_id = wait_until(self._node_id, timeout=20, what=f"{self.name} answering HTTP")

    def _node_id(self) -> str:
        try:
            status, _, body = http("GET", self.url + "/v1/agent/self", timeout=1)
            return json.loads(body)["Config"]["NodeID"] if status == 200 else ""
        except (OSError, ValueError):
            return ""

    def leader(self) -> str:
        try:
            status, _, body = http("GET", self.url + "/v1/status/leader", timeout=1)
            return json.loads(body) if status == 200 else ""
        except (OSError, ValueError):
            return ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CAIRN_HTTP_ADDR": self.http_addr}
        return subprocess.run([sys.executable, "-m", "appliance", *args], env=env,
                              capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT, check=False)

    def json(self, method: str, path: str, body=None):
        status, headers, data = http(method, self.url + path, body, timeout=15)
        return status, headers, (json.loads(data) if data.strip() and status in (200, 429) else data)

    def kv(self) -> list[tuple[str, str]]:
        status, _, data = http("GET", self.url + "/v1/kv/?recurse&consistent", timeout=15)
        if status == 404:
            return []
        assert status == 200, data
        import base64

        return sorted((e["Key"], base64.b64decode(e["Value"] or "").decode()) for e in json.loads(data))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        if self.alive():
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def servers(tmp_path: Path):
    started = [Server(tmp_path, f"s{i}") for i in range(1, 5)]
    try:
        yield started
    finally:
        for s in started:
            s.stop()


def agreed_leader(servers: list[Server]) -> Server:
    def check():
        live = [s for s in servers if s.alive()]
        seen = {s.leader() for s in live}
        if len(seen) == 1 and "" not in seen:
            return next((s for s in live if s.server_addr in seen), None)
        return None

    return wait_until(check, timeout=20, what="one leader known to every live server")


def configuration(server: Server) -> dict[str, dict]:
    status, _, conf = server.json("GET", "/v1/operator/raft/configuration")
    assert status == 200, conf
    return {s["ID"]: s for s in conf["Servers"]}


def test_operator_surface_on_a_live_cluster(servers, tmp_path):
    s1, s2, s3, s4 = servers
    join = [s.lan_addr for s in servers[:3]]
    for s in (s1, s2, s3):
        s.start(join, "-bootstrap-expect", "3")
    leader = agreed_leader([s1, s2, s3])
    assert http("PUT", leader.url + "/v1/kv/keep/1", "one")[0] == 200

    # 1. a plain -server joins the running cluster: non-voter first, voter once stable
    s4.start(join)

    def s4_voter():
        conf = configuration(agreed_leader(servers))
        return conf.get(s4.node_id, {}).get("Voter")

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
    assert rows["s4"][1:5] == [s4.node_id, s4.server_addr, "follower", "true"]
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
    result = s1.cli("operator", "raft", "transfer-leader", "-id", target.node_id)
    assert result.returncode == 0, result.stderr
    assert agreed_leader(servers) is target
    status, _, body = s1.json("POST", "/v1/operator/raft/transfer-leader?id=nope")
    assert status == 500 and b'id "nope" was not found in the Raft configuration' in body

    # 3. snapshot save on one server, more writes, restore through another
    for i in range(5):
        assert http("PUT", f"{s2.url}/v1/kv/snap/{i}", f"v{i}")[0] == 200
    saved = s2.kv()
    path = tmp_path / "backup.snap"
    result = s2.cli("snapshot", "save", str(path))
    assert result.returncode == 0 and result.stdout.startswith("Saved and verified snapshot to index "), result.stderr
    inspect = s2.cli("snapshot", "inspect", str(path))
    assert [line.split()[0] for line in inspect.stdout.splitlines()] == ["ID", "Size", "Index", "Term", "Version"]
    assert http("PUT", s3.url + "/v1/kv/snap/0", "changed")[0] == 200
    assert http("PUT", s3.url + "/v1/kv/later/1", "after")[0] == 200
    assert http("DELETE", s3.url + "/v1/kv/keep/1")[0] == 200
    assert s3.kv() != saved
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
        wait_until(lambda s=s: s.kv() == saved, timeout=10, what=f"{s.name} holding the restored state")
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
    before = s1.kv()
    status, _, body = http("PUT", s1.url + "/v1/snapshot", out.getvalue())
    assert status == 400 and b"SHA256 of state.bin does not match SHA256SUMS" in body, body
    status, _, body = http("PUT", s1.url + "/v1/snapshot", path.read_bytes()[:200])
    assert status == 400 and b"corrupt snapshot archive" in body, body
    # more state than one server RPC frame holds: refused from the Content-Length alone
    with socket.create_connection(("127.0.0.1", s1.ports[0]), timeout=10) as sock:
        sock.sendall(b"PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 70000000\r\n\r\n")
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
    assert all(s.kv() == before for s in servers)

    # 5. a killed server is unhealthy in autopilot's report
    leader = agreed_leader(servers)
    if leader is s4:
        assert s4.cli("operator", "raft", "transfer-leader", "-id", s1.node_id).returncode == 0
        leader = agreed_leader(servers)
    s4.stop(kill=True)

    def s4_unhealthy():
        status, _, health = leader.json("GET", "/v1/operator/autopilot/health")
        rows = {r["ID"]: r for r in health["Servers"]}
        return status == 429 and not health["Healthy"] and not rows[s4.node_id]["Healthy"] and health

    health = wait_until(s4_unhealthy, timeout=10, what="s4 unhealthy in /v1/operator/autopilot/health")
    assert health["FailureTolerance"] == 0  # 3 healthy of 4 voters: a quorum of 3 leaves no margin
    assert {r["Name"] for r in health["Servers"]} == {"s1", "s2", "s3", "s4"}
    assert s4.node_id in configuration(leader)  # cleanup is off: it stays until removed

    # 6. remove-peer removes it; a missing id or address is named in Consul's text
    result = s2.cli("operator", "raft", "remove-peer", "-address", "127.0.0.1:1")
    assert result.returncode == 1 and 'address "127.0.0.1:1" was not found in the Raft configuration' in result.stderr
    status, _, body = s2.json("DELETE", "/v1/operator/raft/peer")
    assert status == 400 and body.startswith(b"Must specify either ?id")
    result = s2.cli("operator", "raft", "remove-peer", "-id", s4.node_id)
    assert result.returncode == 0 and result.stdout.strip() == f'Removed peer with id "{s4.node_id}"', result.stderr
    assert sorted(configuration(leader)) == sorted(s.node_id for s in (s1, s2, s3))
    assert http("PUT", s2.url + "/v1/kv/after-remove", "ok")[0] == 200

    # 7. dead-server cleanup removes the next killed server once it is turned on
    victim = next(s for s in (s1, s2, s3) if s is not agreed_leader(servers))
    victim.stop(kill=True)
    leader = agreed_leader(servers)
    wait_until(lambda: leader.json("GET", "/v1/operator/autopilot/health")[0] == 429, timeout=10,
               what="the killed server unhealthy")
    time.sleep(1.5)
    assert victim.node_id in configuration(leader)  # still there while cleanup is off
    status, _, conf = leader.json("GET", "/v1/operator/autopilot/configuration")
    assert status == 200 and conf["CleanupDeadServers"] is False and conf["ServerStabilizationTime"] == "1s"
    status, _, body = leader.json("PUT", "/v1/operator/autopilot/configuration", {"MinQuorum": "two"})
    assert (status, body) == (400, b"Error parsing autopilot config: json: cannot unmarshal string into Go struct "
                                   b"field AutopilotConfiguration.MinQuorum of type uint")
    status, _, body = leader.json("PUT", "/v1/operator/autopilot/configuration?cas=1", {"MinQuorum": 0})
    assert status == 200 and body is False  # cas does not match ModifyIndex: nothing changed
    result = leader.cli("operator", "autopilot", "set-config", "-cleanup-dead-servers=true")
    assert result.returncode == 0 and result.stdout.strip() == "Configuration updated!", result.stderr
    assert "CleanupDeadServers = true" in leader.cli("operator", "autopilot", "get-config").stdout
    wait_until(lambda: victim.node_id not in configuration(leader), timeout=20,
               what="autopilot removing the dead server")
    assert len(configuration(leader)) == 2
    status, _, health = leader.json("GET", "/v1/operator/autopilot/health")
    assert status == 200 and health["Healthy"], health

    # 8. graceful leave of the leader: leadership moves, the leaver leaves the configuration
    other = next(s for s in (s1, s2, s3) if s.alive() and s is not leader)
    result = leader.cli("leave")
    assert result.returncode == 0, result.stderr
    leader.proc.wait(20)
    wait_until(lambda: other.leader() == other.server_addr, timeout=10, what="the remaining server leading")
    assert list(configuration(other)) == [other.node_id]
    assert http("PUT", other.url + "/v1/kv/alone", "yes")[0] == 200
    assert b"Graceful leave complete" in leader.log_path.read_bytes()
