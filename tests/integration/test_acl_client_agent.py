"""Client agents under default-deny ACLs: the writes they forward carry a token and the servers
authorize them (appliance/acl/commands.py), and `acl.down_policy` decides while no server answers
(appliance/acl/down.py). Three servers and three client agents on loopback, one per down policy.

What is shown (Consul docs: ACL token usage by agents, acl.down_policy):
- a client agent without an agent token cannot write its own node record ("Node info update
  blocked by ACLs"); given a node-identity agent token over the API it syncs at once;
- a service registered with a service-identity token is synced with that token; once the token is
  deleted, the server refuses the check update anti-entropy forwards with it and the catalog keeps
  the old status ("Check registration blocked by ACLs");
- a FORWARD frame sent straight to a server's RPC port with no token, or a read-only token, is
  refused with Consul's text and nothing is written; with the management token it is written;
- with the servers stopped: `extend-cache` keeps answering a token it resolved before (after its
  token_ttl ran out) and denies one it never saw; `deny` denies both; `allow` allows both.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from appliance.rpc.frames import HEADER, Kind, decode_body, encode_frame
from tests.cluster import Server
from tests.conftest import http, wait_until

MANAGEMENT = str(uuid.uuid4())


def acl_hcl(server: bool, down: str = "extend-cache") -> str:
    tokens = f'tokens {{ initial_management = "{MANAGEMENT}" }}' if server else ""
    return (f'acl {{ enabled = true default_policy = "deny" down_policy = "{down}" token_ttl = "1s" {tokens} }}')


def call(agent: Server, method: str, path: str, body: object = None, token: str = "") -> tuple[int, bytes]:
    data = json.dumps(body) if body is not None and not isinstance(body, str) else body
    status, _, out = http(method, agent.url + path, data, {"X-Consul-Token": token} if token else None, timeout=15)
    return status, out


def make_token(agent: Server, body: dict) -> str:
    status, out = call(agent, "PUT", "/v1/acl/token", body, MANAGEMENT)
    assert status == 200, out
    return json.loads(out)["SecretID"]


def forward(address: str, command: dict, token: str | None) -> list:
    """Send one FORWARD to a server's RPC port as a client agent does; its FORWARD_RESP."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(encode_frame([Kind.FOLLOW, 0, "probe"]))
        frame = [Kind.FORWARD, 1, "", command] + ([token] if token is not None else [])
        sock.sendall(encode_frame(frame))
        sock.settimeout(10)
        buf = b""
        while True:
            while len(buf) < HEADER.size or len(buf) < HEADER.size + HEADER.unpack(buf[:HEADER.size])[1]:
                chunk = sock.recv(1 << 16)
                assert chunk, "the server closed the connection"
                buf += chunk
            end = HEADER.size + HEADER.unpack(buf[:HEADER.size])[1]
            body, buf = decode_body(buf[HEADER.size:end]), buf[end:]
            if body[0] == Kind.FORWARD_RESP and body[1] == 1:
                return body


def log_has(tmp_path, name: str, text: str) -> bool:
    return any(text in log.read_text(errors="replace") for log in tmp_path.glob(f"{name}-*.log"))


@pytest.mark.timeout(240)
def test_client_agent_writes_are_authorized_by_the_servers_and_down_policy(tmp_path):
    servers = [Server(tmp_path, n, hcl=acl_hcl(True)) for n in ("s1", "s2", "s3")]
    downs = {"c1": "extend-cache", "c2": "deny", "c3": "allow"}
    clients = {n: Server(tmp_path, n, hcl=acl_hcl(False, down), server=False) for n, down in downs.items()}
    c1 = clients["c1"]
    join = [s.serf_addr for s in servers]
    try:
        for agent in [*servers, *clients.values()]:
            agent.start(join)
        wait_until(lambda: all(s.leader() for s in servers), timeout=60, what="a leader")
        wait_until(lambda: call(c1, "PUT", "/v1/kv/app/config", "v1", MANAGEMENT) == (200, b"true"),
                   timeout=60, what="a KV write through the client with the management token")

        # no agent token: the servers refuse the client's own node registration
        wait_until(lambda: log_has(tmp_path, "c1", "Node info update blocked by ACLs"), timeout=30,
                   what="the node registration refused")

        def synced_node() -> bool:  # the leader lists every member; only anti-entropy writes its meta
            node = json.loads(call(servers[0], "GET", "/v1/catalog/node/c1", token=MANAGEMENT)[1])
            return bool(node) and "consul-version" in (node["Node"]["Meta"] or {})

        assert not synced_node()
        agent_token = make_token(servers[0], {"NodeIdentities": [{"NodeName": "c1", "Datacenter": "dc1"}]})
        assert call(c1, "PUT", "/v1/agent/token/agent", {"Token": agent_token}, MANAGEMENT)[0] == 200
        wait_until(synced_node, timeout=15, what="the client's node synced after its agent token was set")

        # a service synced with the token it was registered with
        db_token = make_token(servers[0], {"ServiceIdentities": [{"ServiceName": "db"}]})
        status, out = call(c1, "PUT", "/v1/agent/service/register",
                           {"Name": "db", "Port": 5432, "Check": {"TTL": "60s"}}, db_token)
        assert status == 200, out

        def db_check() -> list:
            status, out = call(servers[0], "GET", "/v1/health/checks/db", token=MANAGEMENT)
            return json.loads(out) if status == 200 else []

        wait_until(db_check, timeout=15, what="the db service and its check in the catalog")
        assert db_check()[0]["Status"] == "critical"
        # its token deleted: the servers refuse what anti-entropy forwards with it
        accessor = json.loads(call(servers[0], "GET", "/v1/acl/token/self", token=db_token)[1])["AccessorID"]
        assert call(servers[0], "DELETE", f"/v1/acl/token/{accessor}", token=MANAGEMENT)[0] == 200
        time.sleep(0.5)  # the client's replica sees the deletion
        assert call(c1, "PUT", "/v1/agent/check/pass/service:db", "", MANAGEMENT)[0] == 200
        wait_until(lambda: log_has(tmp_path, "c1", "Check registration blocked by ACLs"), timeout=15,
                   what="the check update refused by the servers")
        assert db_check()[0]["Status"] == "critical"

        # the server's own check of a forwarded write
        status, out = call(servers[0], "PUT", "/v1/acl/policy",
                           {"Name": "app-read", "Rules": 'key_prefix "app/" { policy = "read" }'}, MANAGEMENT)
        assert status == 200, out
        reader = make_token(servers[0], {"Policies": [{"Name": "app-read"}]})
        write = {"Type": "kv_set", "Verb": "set", "Key": "app/config", "Value": b"forged", "Flags": 0}
        resp = forward(servers[1].server_addr, write, None)
        assert resp[2:4] == ["denied", 'Permission denied: anonymous token lacks permission \'key:write\' on '
                             '"app/config". The anonymous token is used implicitly when a request does not '
                             "specify a token."], resp
        resp = forward(servers[1].server_addr, write, reader)
        assert resp[2] == "denied" and "lacks permission 'key:write' on \"app/config\"" in resp[3], resp
        assert forward(servers[1].server_addr, write, str(uuid.uuid4()))[2:4] == ["denied", "ACL not found"]
        assert forward(servers[1].server_addr, {"Type": "acl", "Op": "init"}, MANAGEMENT)[2:4] == [
            "denied", "Permission denied: acl init is not a client agent's write"]
        assert servers[0].get("app/config", f"&token={MANAGEMENT}") == b"v1"
        assert forward(servers[1].server_addr, write, MANAGEMENT)[2] == "ok"
        assert servers[0].get("app/config", f"&token={MANAGEMENT}") == b"forged"

        # down_policy: every client resolves `reader` once while the servers are up
        for client in clients.values():
            wait_until(lambda c=client: call(c, "GET", "/v1/kv/app/config?raw&stale", token=reader) == (200, b"forged"),
                       timeout=30, what=f"{client.name} reads with the reader token")
        for s in servers:
            s.stop()
        stranger = str(uuid.uuid4())  # a secret no client resolved
        time.sleep(1.5)  # past token_ttl

        def answers(client: Server, token: str) -> int:
            return call(client, "GET", "/v1/kv/app/config?raw&stale", token=token)[0]

        wait_until(lambda: answers(c1, stranger) == 403, timeout=30, what="c1 sees the servers gone")
        assert answers(c1, reader) == 200  # extend-cache: resolved before, kept
        assert answers(c1, MANAGEMENT) == 200  # resolved before (the writes above)
        wait_until(lambda: answers(clients["c2"], reader) == 403, timeout=30, what="deny: the cached token refused")
        assert answers(clients["c2"], stranger) == 403
        wait_until(lambda: answers(clients["c3"], stranger) == 200, timeout=30, what="allow: any token allowed")
        assert answers(clients["c3"], reader) == 200
        assert call(clients["c3"], "GET", "/v1/acl/tokens", token=stranger)[0] == 403  # not the ACL system
    finally:
        for agent in [*clients.values(), *servers]:
            agent.stop()
