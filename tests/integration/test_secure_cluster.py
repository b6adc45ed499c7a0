"""A cluster secured as docs/security.md says: three servers and a client agent, with mutual TLS
and server-name checks on the RPC port, HTTPS with client certificates, gossip encryption and
ACLs denying by default. KV through the client agent's HTTPS port works with a token holding the
permission and is refused without one, or with one holding read only; the client agent takes a
node-identity agent token at run time, and anti-entropy then writes its node record over the TLS
RPC port with it, and a service with the token it was registered with (the servers authorize
both, appliance/acl/commands.py). The client agent holds no token secret (its data dir neither):
it asks a server over the TLS RPC port which token a secret names, so a token deleted on a server
is refused by the client at once, and a token read through it shows the server's record."""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import uuid
from pathlib import Path

import pytest

from tests.harness import Cluster, free_port, wait_until
from tests.integration.test_tls import rpc_hcl, write_pki

MANAGEMENT = str(uuid.uuid4())


def secure_hcl(pki: dict[str, Path], kind: str, https: int, key: str, server: bool) -> str:
    tokens = f'initial_management = "{MANAGEMENT}"' if server else ""
    return (rpc_hcl(pki, kind)[:-1] + " https { verify_incoming = true } }"
            f' ports {{ https = {https} }} encrypt = "{key}"'
            f' acl {{ enabled = true default_policy = "deny" enable_token_persistence = true tokens {{ {tokens} }} }}')


class HTTPS:
    """Requests to an agent's HTTPS port with the CLI's client certificate."""

    def __init__(self, port: int, pki: dict[str, Path]) -> None:
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        self.ctx.check_hostname = False
        self.ctx.load_cert_chain(str(pki["client"]), str(pki["client_key"]))

    def __call__(self, method: str, path: str, body: bytes | str | None = None,
                 token: str = "") -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=15)
        try:
            conn.request(method, path, body=body, headers={"X-Consul-Token": token} if token else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.mark.timeout(180)
def test_kv_through_a_client_agent_with_tls_everywhere_and_default_deny(tmp_path):
    pki = write_pki(tmp_path / "pki")
    key = base64.b64encode(os.urandom(32)).decode()
    ports = {name: free_port(udp=False) for name in ("s1", "s2", "s3", "c1")}
    cluster = Cluster(tmp_path, servers=3, clients=1)
    servers, (client,) = cluster.servers, cluster.clients
    for agent in cluster.agents:
        agent.args += ["-hcl", secure_hcl(pki, "client" if agent is client else "server", ports[agent.name], key,
                                          agent is not client)]
    api = HTTPS(ports["c1"], pki)
    with cluster.start():
        wait_until(lambda: all(s.leader() for s in servers), timeout=60, what="a leader")

        def put_with_management() -> bool:
            status, body = api("PUT", "/v1/kv/secure/key", "through-the-client", MANAGEMENT)
            return status == 200 and body.strip() == b"true"

        wait_until(put_with_management, timeout=60, what="a write through the client with the management token")
        # the anonymous token: refused, nothing written
        status, body = api("PUT", "/v1/kv/secure/key", "anonymous")
        assert status == 403 and b"Permission denied" in body, body
        assert api("GET", "/v1/kv/secure/key?raw")[0] == 403
        assert api("GET", "/v1/kv/secure/key?raw", token=MANAGEMENT) == (200, b"through-the-client")
        # a token that may only read the prefix
        status, body = api("PUT", "/v1/acl/policy", json.dumps(
            {"Name": "secure-read", "Rules": 'key_prefix "secure/" { policy = "read" }'}), MANAGEMENT)
        assert status == 200, body
        status, body = api("PUT", "/v1/acl/token", json.dumps({"Policies": [{"Name": "secure-read"}]}), MANAGEMENT)
        assert status == 200, body
        reader = json.loads(body)["SecretID"]
        assert api("GET", "/v1/kv/secure/key?raw", token=reader) == (200, b"through-the-client")
        assert api("PUT", "/v1/kv/secure/key", "reader", reader)[0] == 403
        assert api("GET", "/v1/kv/other?raw", token=reader)[0] == 403
        status, body = api("GET", "/v1/acl/token/self", token=reader)
        assert status == 200 and json.loads(body)["SecretID"] == reader, body
        reader_accessor = json.loads(body)["AccessorID"]
        status, body = api("GET", f"/v1/acl/token/{reader_accessor}", token=MANAGEMENT)
        assert status == 200 and json.loads(body)["SecretID"] == reader, body
        # the client agent's own token: a node identity, set at run time
        status, body = api("PUT", "/v1/acl/token", json.dumps(
            {"NodeIdentities": [{"NodeName": "c1", "Datacenter": "dc1"}]}), MANAGEMENT)
        assert status == 200, body
        agent_token = json.loads(body)["SecretID"]
        assert api("PUT", "/v1/agent/token/agent", json.dumps({"Token": agent_token}), MANAGEMENT)[0] == 200
        assert api("PUT", "/v1/agent/token/agent", json.dumps({"Token": agent_token}))[0] == 403

        def node_synced() -> bool:  # the leader lists every member; only anti-entropy writes its meta
            status, body = api("GET", "/v1/catalog/node/c1", token=MANAGEMENT)
            node = json.loads(body) if status == 200 else None
            return bool(node) and "consul-version" in (node["Node"]["Meta"] or {})

        wait_until(node_synced, timeout=30, what="the client's node record written with its agent token")
        status, body = api("PUT", "/v1/acl/token", json.dumps({"ServiceIdentities": [{"ServiceName": "web"}]}),
                           MANAGEMENT)
        assert status == 200, body
        web_token = json.loads(body)["SecretID"]
        assert api("PUT", "/v1/agent/service/register", json.dumps({"Name": "web", "Port": 80}))[0] == 403
        assert api("PUT", "/v1/agent/service/register", json.dumps({"Name": "web", "Port": 80}), web_token)[0] == 200
        wait_until(lambda: json.loads(api("GET", "/v1/catalog/service/web", token=MANAGEMENT)[1]), timeout=30,
                   what="the web service written with its registration token")
        # a server sees the write, with a token; the value never changed after the refusals
        assert servers[0].kv_get("secure/key", f"&token={MANAGEMENT}") == b"through-the-client"
        assert servers[0].kv_get("secure/key") is None
        # the reader deleted through a server: the client refuses it
        assert HTTPS(ports["s1"], pki)("DELETE", f"/v1/acl/token/{reader_accessor}", token=MANAGEMENT)[0] == 200
        wait_until(lambda: api("GET", "/v1/kv/secure/key?raw", token=reader) == (403, b"ACL not found"), timeout=10,
                   what="the deleted token refused by the client")
        # on the client's disk, only the tokens it was handed as its own (its agent token, a
        # service's registration token), as Consul keeps them: none it merely checked
        for path in client.data_dir.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert MANAGEMENT.encode() not in data and reader.encode() not in data, path
        # the cluster is whole: every member alive, seen through the client
        status, body = api("GET", "/v1/agent/members", token=MANAGEMENT)
        assert status == 200 and {m["Name"] for m in json.loads(body) if m["Status"] == 1} == {"s1", "s2", "s3", "c1"}
