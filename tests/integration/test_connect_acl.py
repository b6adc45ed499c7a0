"""Connect leaves with ACLs on, end to end (a server and a client agent, real processes on loopback,
`acl { enabled = true default_policy = "deny" }`, TLS off).

What is shown (Consul: the agent's leaf endpoint needs service:write; ConnectCA.Sign authorizes
by the CSR's SPIFFE ID):
- a token with service:write on web gets a leaf for web through the client agent: it verifies
  with `openssl verify` against the roots and carries web's SPIFFE URI; the client made its key
  pair (the certificate is for the key the client serves) and sent the server only a CSR (the
  key is nowhere in the server's data directory or log, and the server's own leaf for web is
  another key pair), and the client's data directory and replica hold no CA private key;
- a token with only service:read on web gets Consul's 403 and nothing is signed;
- an agent certificate for the client's own node, asked through the client agent with the
  node's token (node:write), verifies against the roots with the agent SPIFFE URI; a CSR for
  another node with that token is refused (403) and counted on the server.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from appliance.connect import ca, csr, spiffe
from appliance.state.snapshot import restore
from tests.harness import FAST_RAFT, Agent, http, http_json, server_args, wait_until
from tests.integration.test_acl_client_agent import Follower
from tests.integration.test_connect_cluster import public_der

pytestmark = pytest.mark.timeout(180)
MANAGEMENT = str(uuid.uuid4())
ACL = 'acl {{ enabled = true default_policy = "deny" token_ttl = "1s" {tokens} }}'


def call(agent: Agent, method: str, path: str, body: Any = None, token: str = "") -> tuple[int, Any]:
    status, _, out = http_json(method, f"http://{agent.http_addr}{path}", body,
                               headers={"X-Consul-Token": token} if token else None, timeout=15)
    return status, (out.decode(errors="replace") if isinstance(out, bytes) else out)


def make_token(server: Agent, body: dict[str, Any]) -> dict[str, Any]:
    status, out = call(server, "PUT", "/v1/acl/token", body, MANAGEMENT)
    assert status == 200, out
    return dict(out)


def verify(tmp_path: Path, roots: dict[str, Any], chain: str, uri: str) -> None:
    (tmp_path / "roots.pem").write_text("".join(r["RootCert"] for r in roots["Roots"]))
    (tmp_path / "leaf.pem").write_text(chain)
    done = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "roots.pem"), str(tmp_path / "leaf.pem")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, timeout=30)
    assert f"URI:{uri}" in text.stdout, text.stdout + text.stderr


def leader(agent: Agent) -> bool:
    """The agent answers HTTP and names a leader (/v1/agent/self needs agent:read with ACLs on)."""
    try:
        return bool(agent.leader())
    except OSError:
        return False


def sign_counts(server: Agent) -> dict[str, float]:
    """The server's consul.connect.ca.sign counts by result, as Prometheus reads them (cumulative;
    the JSON form reports the last finished 10 s interval, which a quick test may not have yet)."""
    status, _, body = http("GET", f"http://{server.http_addr}/v1/agent/metrics?format=prometheus",
                           headers={"X-Consul-Token": MANAGEMENT})
    text = body.decode()
    assert status == 200, text
    return {result: float(value) for result, value in
            re.findall(r'^consul_connect_ca_sign\{result="(\w+)"\} (\S+)$', text, re.M)}


def test_leaves_and_agent_certificates_with_acls_on(tmp_path: Path) -> None:
    management = f'tokens {{ initial_management = "{MANAGEMENT}" }}'
    server = Agent(tmp_path, "s1", *server_args(1, ACL.format(tokens=management)))
    node_secret = str(uuid.uuid4())
    agent_token = f'tokens {{ agent = "{node_secret}" }}'
    client = Agent(tmp_path, "c1", "-hcl", FAST_RAFT, "-hcl", ACL.format(tokens=agent_token))
    client.join = [server.lan_addr]
    try:
        server.start()
        wait_until(lambda: leader(server), timeout=40, what="a leader")
        node = make_token(server, {"SecretID": node_secret,
                                   "NodeIdentities": [{"NodeName": client.node, "Datacenter": "dc1"}]})
        writer = make_token(server, {"ServiceIdentities": [{"ServiceName": "web"}]})
        status, policy = call(server, "PUT", "/v1/acl/policy",
                              {"Name": "web-read", "Rules": 'service "web" { policy = "read" }'}, MANAGEMENT)
        assert status == 200, policy
        reader = make_token(server, {"Policies": [{"ID": policy["ID"]}]})
        client.start()
        wait_until(lambda: leader(client), timeout=40, what="the client agent knowing the leader")
        wait_until(lambda: call(client, "GET", "/v1/connect/ca/roots")[0] == 200, timeout=40,
                   what="the client agent answering Connect calls")

        # service:write on web: a leaf for web through the client agent
        status, leaf = call(client, "GET", "/v1/agent/connect/ca/leaf/web", token=writer["SecretID"])
        assert status == 200, leaf
        status, roots = call(server, "GET", "/v1/connect/ca/roots")
        assert status == 200
        uri = spiffe.service_uri(roots["TrustDomain"], "dc1", "web")
        assert leaf["ServiceURI"] == uri
        verify(tmp_path, roots, leaf["CertPEM"], uri)
        assert public_der(leaf["CertPEM"]) == public_der(leaf["PrivateKeyPEM"])  # the key the client made
        key_body = "".join(leaf["PrivateKeyPEM"].splitlines()[1:-1]).encode()
        for path in server.data_dir.rglob("*"):  # the server was sent a CSR, never the key
            assert not path.is_file() or key_body not in path.read_bytes(), path
        assert key_body not in server.log().encode()
        for path in client.data_dir.rglob("*"):  # no CA key on the client, nor any leaf key at rest
            assert not path.is_file() or b"PRIVATE KEY" not in path.read_bytes(), path
        probe = Follower(server.server_addr)  # the client's replica: the roots without their keys
        _, _, _, data = probe.until("snapshot")
        probe.close()
        assert restore(data).connect.roots and not restore(data).connect.keys
        assert sign_counts(server) == {"signed": 1}
        # the server holds no leaf of the client's: its own leaf for web is another key pair
        status, own = call(server, "GET", "/v1/agent/connect/ca/leaf/web", token=MANAGEMENT)
        assert status == 200 and own["SerialNumber"] != leaf["SerialNumber"]
        assert public_der(own["PrivateKeyPEM"]) != public_der(leaf["PrivateKeyPEM"])

        # service:read only: Consul's 403, nothing signed
        status, body = call(client, "GET", "/v1/agent/connect/ca/leaf/web", token=reader["SecretID"])
        assert (status, body) == (403, f"Permission denied: token with AccessorID '{reader['AccessorID']}' "
                                       "lacks permission 'service:write' on \"web\"")
        status, body = call(client, "GET", "/v1/agent/connect/ca/leaf/web")
        assert status == 403 and "anonymous token lacks permission 'service:write'" in body

        # an agent certificate for the client's own node, with the node's token (node:write); the key
        # and the CSR made by the openssl CLI, as docs/connect.md shows
        agent_uri = spiffe.agent_uri(roots["TrustDomain"], "dc1", client.node)
        for args in (["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "agent-key.pem"],
                     ["req", "-new", "-key", "agent-key.pem", "-subj", "/", "-addext",
                      f"subjectAltName=URI:{agent_uri}", "-out", "agent.csr"]):
            done = subprocess.run(["openssl", *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
        status, issued = call(client, "PUT", "/v1/internal/connect/ca/sign",
                              {"CSR": (tmp_path / "agent.csr").read_text()}, node["SecretID"])
        assert status == 200, issued
        assert issued["Agent"] == client.node and issued["AgentURI"] == agent_uri and "PrivateKeyPEM" not in issued
        assert public_der(issued["CertPEM"]) == public_der((tmp_path / "agent-key.pem").read_text())
        verify(tmp_path, roots, issued["CertPEM"], agent_uri)
        key = ca.generate_key()
        # a CSR for another node without node:write on it: refused, nothing signed
        other = spiffe.agent_uri(roots["TrustDomain"], "dc1", "s1")
        status, body = call(client, "PUT", "/v1/internal/connect/ca/sign", {"CSR": csr.make(other, key)},
                            node["SecretID"])
        assert (status, body) == (403, f"Permission denied: token with AccessorID '{node['AccessorID']}' "
                                       "lacks permission 'node:write' on \"s1\"")
        # nor a service the node's token may not write
        status, body = call(client, "PUT", "/v1/internal/connect/ca/sign",
                            {"CSR": csr.make(uri, key)}, node["SecretID"])
        assert status == 403 and "lacks permission 'service:write' on \"web\"" in body
        assert sign_counts(server) == {"signed": 3, "denied": 2}
    finally:
        client.stop()
        server.stop()
