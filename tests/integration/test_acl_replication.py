"""ACL replication between two datacenters joined over the WAN pool (appliance/acl_replication.py).

dc1 is the primary (one server with an initial management token), dc2 a secondary (one server,
`primary_datacenter = "dc1"`, token replication on, the replication token set). Consul docs:
ACL replication for multiple datacenters; `/v1/acl/replication`.

- policies, roles and global tokens made in dc1 appear in dc2 with the same IDs and secrets, and
  a replicated token is honoured by dc2's server; a change and a deletion in dc1 follow;
- a policy or a global token written through dc2 is written in dc1 and comes back to dc2;
- a local token made in dc2 stays in dc2 (never in dc1) and replication leaves it alone; a login
  there cannot make a global token;
- `/v1/acl/replication` says so: dc2 enabled and running, type `tokens`, source dc1, the indexes
  copied and the last success; dc1 not enabled.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.harness import FAST_RAFT, Agent, wait_until

MANAGEMENT = str(uuid.uuid4())


def acl(*extra: str) -> str:
    return ('acl { enabled = true default_policy = "deny" enable_token_replication = true '
            f'tokens {{ initial_management = "{MANAGEMENT}" replication = "{MANAGEMENT}" }} {" ".join(extra)} }}')


def call(agent: Agent, method: str, path: str, body: object = None, token: str = MANAGEMENT) -> tuple[int, Any]:
    data = json.dumps(body) if body is not None else None
    status, _, out = agent.request(method, path, data, headers={"X-Consul-Token": token} if token else None)
    try:
        return status, json.loads(out)
    except ValueError:
        return status, out


@pytest.mark.timeout(180)
def test_policies_roles_and_global_tokens_replicate_to_the_secondary(tmp_path):
    s1 = Agent(tmp_path, "s1", "-hcl", FAST_RAFT, "-hcl", acl(), datacenter="dc1")
    s2 = Agent(tmp_path, "s2", "-hcl", FAST_RAFT, "-hcl", acl(), "-hcl", 'primary_datacenter = "dc1"',
               datacenter="dc2")
    try:
        s1.start("-server", "-bootstrap")
        s2.start("-server", "-bootstrap", "-retry-join-wan", s1.wan_addr, "-retry-interval-wan", "1s")
        wait_until(lambda: s1.leader() and s2.leader(), timeout=30, what="a leader in each datacenter")
        wait_until(lambda: call(s1, "GET", "/v1/acl/token/self")[0] == 200, timeout=30, what="dc1's ACLs")
        # the initial management token is the primary's: dc2 knows it only once it is replicated
        status, policy = call(s1, "PUT", "/v1/acl/policy",
                              {"Name": "kv-app", "Rules": 'key_prefix "app/" { policy = "write" }'})
        assert status == 200, policy
        status, role = call(s1, "PUT", "/v1/acl/role", {"Name": "app", "Policies": [{"Name": "kv-app"}]})
        assert status == 200, role
        status, token = call(s1, "PUT", "/v1/acl/token", {"Description": "app", "Roles": [{"Name": "app"}]})
        assert status == 200, token
        secret = token["SecretID"]

        def replicated() -> bool:
            status, body = call(s2, "GET", f"/v1/acl/token/{token['AccessorID']}")
            return status == 200 and body["SecretID"] == secret

        wait_until(replicated, timeout=60, what="the token in dc2")
        assert call(s2, "GET", f"/v1/acl/policy/{policy['ID']}")[1]["Rules"] == policy["Rules"]
        assert call(s2, "GET", "/v1/acl/role/name/app")[1]["ID"] == role["ID"]
        # dc2's server honours it
        assert call(s2, "PUT", "/v1/kv/app/x", "1", token=secret) == (200, True)
        assert call(s2, "PUT", "/v1/kv/other", "1", token=secret)[0] == 403

        status, info = call(s2, "GET", "/v1/acl/replication", token="")
        assert status == 200 and info["Enabled"] and info["Running"], info
        assert info["SourceDatacenter"] == "dc1" and info["ReplicationType"] == "tokens"
        assert info["ReplicatedIndex"] > 0 and info["ReplicatedTokenIndex"] > 0
        assert info["LastSuccess"] > info["LastError"], info  # an error before the WAN join stays
        assert call(s1, "GET", "/v1/acl/replication", token="")[1]["Enabled"] is False

        # written through dc2: made in dc1, back in dc2
        status, made = call(s2, "PUT", "/v1/acl/policy",
                            {"Name": "from-dc2", "Rules": 'node_prefix "" { policy = "read" }'})
        assert status == 200, made
        assert call(s1, "GET", "/v1/acl/policy/name/from-dc2")[0] == 200
        wait_until(lambda: call(s2, "GET", "/v1/acl/policy/name/from-dc2")[0] == 200, timeout=30,
                   what="the policy made through dc2 back in dc2")
        status, local = call(s2, "PUT", "/v1/acl/token", {"Description": "dc2 only", "Local": True,
                                                          "Policies": [{"Name": "kv-app"}]})
        assert status == 200 and local["Local"] is True, local
        assert call(s1, "GET", f"/v1/acl/token/{local['AccessorID']}")[0] == 404

        # a change and a deletion in dc1 follow
        status, _ = call(s1, "PUT", f"/v1/acl/policy/{policy['ID']}",
                         {"Name": "kv-app", "Rules": 'key_prefix "app/" { policy = "read" }'})
        assert status == 200
        wait_until(lambda: call(s2, "PUT", "/v1/kv/app/y", "1", token=secret)[0] == 403, timeout=30,
                   what="the narrowed policy in dc2")
        assert call(s1, "DELETE", f"/v1/acl/token/{token['AccessorID']}")[0] == 200
        wait_until(lambda: call(s2, "GET", "/v1/kv/app/x", token=secret) == (403, b"ACL not found"), timeout=30,
                   what="the deleted token gone from dc2")
        # a login in dc2 makes local tokens only
        pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        status, method = call(s2, "PUT", "/v1/acl/auth-method", {
            "Name": "jwt-global", "Type": "jwt", "TokenLocality": "global", "Config": {"JWTValidationPubKeys": [pem]}})
        assert status == 200, method
        assert call(s2, "POST", "/v1/acl/login", {"AuthMethod": "jwt-global", "BearerToken": "x.y.z"}, token="") == (
            500, b"creating global tokens via auth methods is only enabled in the primary datacenter")
        # the local token outlived every round
        assert call(s2, "GET", f"/v1/acl/token/{local['AccessorID']}")[0] == 200
        assert call(s2, "GET", "/v1/kv/app/x?raw", token=local["SecretID"])[0] == 200
    finally:
        for agent in (s2, s1):
            agent.stop()


@pytest.mark.timeout(180)
def test_without_token_replication_the_primary_resolves_global_tokens(tmp_path):
    """Consul's secondaries that do not replicate tokens ask the primary for each one they are
    shown (appliance/acl/remote.py); the policies are still replicated, so the rules are this
    datacenter's copy. A client agent's write in dc2 with a dc1 token passes its server's check."""
    s1 = Agent(tmp_path, "s1", "-hcl", FAST_RAFT, "-hcl", acl(), datacenter="dc1")
    no_tokens = acl().replace("enable_token_replication = true", "enable_token_replication = false")
    s2 = Agent(tmp_path, "s2", "-hcl", FAST_RAFT, "-hcl", no_tokens, "-hcl", 'primary_datacenter = "dc1"',
               datacenter="dc2")
    c2 = Agent(tmp_path, "c2", "-hcl", FAST_RAFT, "-hcl", no_tokens, "-hcl", 'primary_datacenter = "dc1"',
               datacenter="dc2")
    try:
        s1.start("-server", "-bootstrap")
        s2.start("-server", "-bootstrap", "-retry-join-wan", s1.wan_addr, "-retry-interval-wan", "1s")
        c2.start("-retry-join", s2.lan_addr, "-retry-interval", "1s")
        wait_until(lambda: s1.leader() and s2.leader(), timeout=30, what="a leader in each datacenter")
        wait_until(lambda: call(s1, "GET", "/v1/acl/token/self")[0] == 200, timeout=30, what="dc1's ACLs")
        status, policy = call(s1, "PUT", "/v1/acl/policy",
                              {"Name": "kv-app", "Rules": 'key_prefix "app/" { policy = "write" }'})
        assert status == 200, policy
        status, token = call(s1, "PUT", "/v1/acl/token", {"Policies": [{"Name": "kv-app"}]})
        assert status == 200, token
        secret = token["SecretID"]
        wait_until(lambda: call(s2, "GET", "/v1/acl/replication", token="")[1]["ReplicatedIndex"] >= policy[
            "ModifyIndex"], timeout=30, what="the policy replicated to dc2")
        assert call(s2, "GET", "/v1/acl/replication", token="")[1]["ReplicationType"] == "policies"
        assert call(s2, "GET", f"/v1/acl/token/{token['AccessorID']}")[0] == 404  # not copied here
        # resolved by dc1, checked with dc2's copy of the policy
        assert call(s2, "PUT", "/v1/kv/app/x", "1", token=secret) == (200, True)
        assert call(s2, "PUT", "/v1/kv/other", "1", token=secret)[0] == 403
        assert call(s2, "GET", "/v1/kv/app/x?raw", token=str(uuid.uuid4())) == (403, b"ACL not found")
        # a client agent of dc2: its HTTP check and its server's check of the forwarded write
        wait_until(lambda: call(c2, "PUT", "/v1/kv/app/y", "2", token=secret) == (200, True), timeout=30,
                   what="a write through dc2's client agent with a dc1 token")
        assert call(c2, "PUT", "/v1/kv/other", "2", token=secret)[0] == 403
        assert s2.request("GET", "/v1/kv/app/y?raw", headers={"X-Consul-Token": secret})[2] == b'"2"'
    finally:
        for agent in (c2, s2, s1):
            agent.stop()
