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

And (Consul: client agents hold no ACL store, they resolve tokens by RPC to a server and cache
the answer for acl.token_ttl): what a server streams to a client agent (appliance/rpc/feed.py),
read off a server's RPC port as a client reads it, holds no token secret, in the snapshot or in
the entries after it; a token made on a server works through a client agent within token_ttl
(its HTTP routes, `token/self`, its DNS token) and stops working within token_ttl once deleted;
a token read through a client agent shows the secret the server holds.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid

import pytest

from appliance.acl.builtin import ANONYMOUS_ID
from appliance.rpc.frames import HEADER, Kind, decode_body, encode_frame
from appliance.state.snapshot import restore
from tests.conftest import http, wait_until
from tests.harness import FAST_RAFT, Agent, server_args

MANAGEMENT = str(uuid.uuid4())


def acl_hcl(server: bool, down: str = "extend-cache") -> str:
    tokens = f'tokens {{ initial_management = "{MANAGEMENT}" }}' if server else ""
    return (f'acl {{ enabled = true default_policy = "deny" down_policy = "{down}" token_ttl = "1s" {tokens} }}')


def call(agent: Agent, method: str, path: str, body: object = None, token: str = "") -> tuple[int, bytes]:
    data = json.dumps(body) if body is not None and not isinstance(body, str) else body
    status, _, out = http(method, agent.url + path, data, {"X-Consul-Token": token} if token else None, timeout=15)
    return status, out


def make_token(agent: Agent, body: dict) -> str:
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


class Follower:
    """A connection to a server's RPC port that follows the replica feed as a client agent does."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(encode_frame([Kind.FOLLOW, 0, "probe"]))
        self.buf = b""
        self.raw = b""  # every STREAM frame's bytes, as they came

    def frame(self) -> list:
        while len(self.buf) < HEADER.size or len(self.buf) < HEADER.size + HEADER.unpack(self.buf[:HEADER.size])[1]:
            chunk = self.sock.recv(1 << 16)
            assert chunk, "the server closed the connection"
            self.buf += chunk
        end = HEADER.size + HEADER.unpack(self.buf[:HEADER.size])[1]
        data, self.buf = self.buf[:end], self.buf[end:]
        self.raw += data
        return decode_body(data[HEADER.size:])

    def until(self, what: str, deadline_s: float = 15.0) -> list:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            body = self.frame()
            if body[0] == Kind.STREAM and body[1] == what:
                return body
        raise AssertionError(f"no {what} frame")

    def close(self) -> None:
        self.sock.close()


def client_agent(tmp_path, name: str, hcl: str) -> Agent:
    return Agent(tmp_path, name, "-hcl", FAST_RAFT, "-hcl", hcl)


def log_has(tmp_path, name: str, text: str) -> bool:
    return any(text in log.read_text(errors="replace") for log in tmp_path.glob(f"{name}-*.log"))


@pytest.mark.timeout(240)
def test_client_agent_writes_are_authorized_by_the_servers_and_down_policy(tmp_path):
    servers = [Agent(tmp_path, n, *server_args(3, acl_hcl(True))) for n in ("s1", "s2", "s3")]
    downs = {"c1": "extend-cache", "c2": "deny", "c3": "allow"}
    clients = {n: client_agent(tmp_path, n, acl_hcl(False, down)) for n, down in downs.items()}
    c1 = clients["c1"]
    join = [s.lan_addr for s in servers]
    try:
        for agent in [*servers, *clients.values()]:
            agent.join = join
            agent.start()
        wait_until(lambda: all(s.leader() for s in servers), timeout=60, what="a leader")
        wait_until(lambda: call(c1, "PUT", "/v1/kv/app/config", "v1", MANAGEMENT) == (200, b"true"),
                   timeout=60, what="a KV write through the client with the management token")

        # no agent token: the servers refuse the client's own node registration
        wait_until(lambda: log_has(tmp_path, "c1", "Node info update blocked by ACLs"), timeout=30,
                   what="the node registration refused")
        metrics = call(c1, "GET", "/v1/agent/metrics?format=prometheus", token=MANAGEMENT)[1].decode()
        assert re.search(r"^consul_acl_blocked_node_registration [1-9]", metrics, re.M), metrics[:2000]
        assert re.search(r"^consul_acl_blocked_service_deregistration 0", metrics, re.M)  # Consul's, from the start

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
        assert servers[0].kv_get("app/config", f"&token={MANAGEMENT}") == b"v1"
        assert forward(servers[1].server_addr, write, MANAGEMENT)[2] == "ok"
        assert servers[0].kv_get("app/config", f"&token={MANAGEMENT}") == b"forged"

        # down_policy: every client resolves `reader` once while the servers are up
        for client in clients.values():
            wait_until(lambda c=client: call(c, "GET", "/v1/kv/app/config?raw&stale", token=reader) == (200, b"forged"),
                       timeout=30, what=f"{client.name} reads with the reader token")
        for s in servers:
            s.stop()
        stranger = str(uuid.uuid4())  # a secret no client resolved
        time.sleep(1.5)  # past token_ttl

        def answers(client: Agent, token: str) -> int:
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


@pytest.mark.timeout(180)
def test_a_client_agent_holds_no_token_secret_and_asks_a_server(tmp_path):
    ttl = 2.0
    server = Agent(tmp_path, "s1", *server_args(1, acl_hcl(True)))
    client = client_agent(tmp_path, "c1", acl_hcl(False).replace('token_ttl = "1s"', f'token_ttl = "{ttl:g}s"'))
    probe: Follower | None = None
    try:
        server.start()
        client.join = [server.lan_addr]
        client.start()
        wait_until(lambda: server.leader() and client.leader(), timeout=60, what="a leader known to the client")
        wait_until(lambda: call(client, "PUT", "/v1/kv/app/config", "v1", MANAGEMENT) == (200, b"true"),
                   timeout=60, what="a KV write through the client with the management token")
        status, out = call(server, "PUT", "/v1/acl/policy",
                           {"Name": "app-read", "Rules": 'key_prefix "app/" { policy = "read" }\n'
                                                         'node_prefix "" { policy = "read" }\n'
                                                         'service_prefix "" { policy = "read" }'}, MANAGEMENT)
        assert status == 200, out
        chosen = str(uuid.uuid4())  # a caller-chosen secret, made before the probe follows
        status, out = call(server, "PUT", "/v1/acl/token", {"SecretID": chosen, "Policies": [{"Name": "app-read"}]},
                           MANAGEMENT)
        assert status == 200, out

        # what a client agent is sent: a snapshot without any secret ...
        probe = Follower(server.server_addr)
        _, _, _, data = probe.until("snapshot")
        tokens = restore(data).acl.tokens
        assert tokens and all(t["SecretID"] == (t["AccessorID"] if t["AccessorID"] != ANONYMOUS_ID else "anonymous")
                              for t in tokens.values()), tokens
        assert MANAGEMENT.encode() not in probe.raw and chosen.encode() not in probe.raw
        # ... and entries without one: a token made now
        made_at = time.monotonic()
        status, out = call(server, "PUT", "/v1/acl/token", {"Policies": [{"Name": "app-read"}]}, MANAGEMENT)
        assert status == 200, out
        reader, accessor = json.loads(out)["SecretID"], json.loads(out)["AccessorID"]
        while accessor.encode() not in probe.raw:
            probe.until("entries")
        assert reader.encode() not in probe.raw and MANAGEMENT.encode() not in probe.raw

        # the new token works through the client within token_ttl: its routes, token/self, a token read
        wait_until(lambda: call(client, "GET", "/v1/kv/app/config?raw", token=reader) == (200, b"v1"),
                   timeout=ttl, what="the new token accepted by the client")
        assert time.monotonic() - made_at < ttl + 1.0
        assert call(client, "GET", "/v1/kv/app/config?raw", token=str(uuid.uuid4()))[0] == 403
        assert call(client, "PUT", "/v1/kv/app/config", "no", reader)[0] == 403
        status, out = call(client, "GET", "/v1/acl/token/self", token=reader)
        assert status == 200 and json.loads(out)["SecretID"] == reader and json.loads(out)["AccessorID"] == accessor
        status, out = call(client, "GET", f"/v1/acl/token/{accessor}", token=MANAGEMENT)
        assert status == 200 and json.loads(out)["SecretID"] == reader, out
        status, out = call(client, "GET", "/v1/acl/tokens", token=MANAGEMENT)
        assert status == 200 and reader in {t["SecretID"] for t in json.loads(out)}, out
        assert call(client, "GET", "/v1/acl/token/self", token=accessor)[0] == 403  # an accessor is no secret
        # the client's DNS token: a server resolves it too
        assert call(client, "PUT", "/v1/agent/token/dns", {"Token": reader}, MANAGEMENT)[0] == 200
        wait_until(lambda: "c1.node.consul" in client.dig("c1.node.consul").stdout
                   and "ANSWER SECTION" in client.dig("c1.node.consul").stdout,
                   timeout=15, what="the client's DNS answering with its DNS token")

        # deleted on a server: refused by the client within token_ttl
        assert call(server, "DELETE", f"/v1/acl/token/{accessor}", token=MANAGEMENT)[0] == 200
        deleted_at = time.monotonic()
        wait_until(lambda: call(client, "GET", "/v1/kv/app/config?raw", token=reader)[0] == 403,
                   timeout=ttl + 1.0, what="the deleted token refused by the client")
        assert time.monotonic() - deleted_at < ttl + 1.0
        assert call(client, "GET", "/v1/kv/app/config?raw", token=reader)[1] == b"ACL not found"
        assert "ANSWER SECTION" not in client.dig("c1.node.consul").stdout  # the DNS token went with it
        assert reader.encode() not in probe.raw
    finally:
        if probe is not None:
            probe.close()
        client.stop()
        server.stop()
