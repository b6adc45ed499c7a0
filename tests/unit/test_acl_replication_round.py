"""A secondary datacenter's ACL replication round against a primary that answers like cairn's ACL
lists (appliance/acl_replication.py; Consul docs: ACL replication)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from appliance.acl.builtin import ANONYMOUS_ID, GLOBAL_MANAGEMENT_ID
from appliance.acl_replication import AclReplicator
from appliance.federation.forward import Answer, Exchange
from appliance.state.fsm import FSM
from appliance.state.store import Store

P1 = "11111111-1111-4111-8111-111111111111"
P2 = "22222222-2222-4222-8222-222222222222"
R1 = "33333333-3333-4333-8333-333333333333"
T1 = "44444444-4444-4444-8444-444444444444"
T_LOCAL = "55555555-5555-4555-8555-555555555555"


def token(accessor: str, secret: str, **fields: Any) -> dict[str, Any]:
    return {"AccessorID": accessor, "SecretID": secret, "Description": "", "Local": False,
            "CreateTime": "2026-01-01T00:00:00Z", "Hash": "h-" + secret, **fields}


class Primary:
    """The primary datacenter's ACL endpoints as the replicator reads them."""

    def __init__(self) -> None:
        self.index = 10
        self.policies = {
            GLOBAL_MANAGEMENT_ID: {"ID": GLOBAL_MANAGEMENT_ID, "Name": "global-management", "Description": "",
                                   "Rules": "", "Hash": "gm"},
            P1: {"ID": P1, "Name": "kv", "Description": "", "Rules": 'key_prefix "" { policy = "read" }',
                 "Hash": "p1"}}
        self.roles = {R1: {"ID": R1, "Name": "r", "Description": "", "Policies": [{"ID": P1, "Name": "kv"}],
                           "Hash": "r1"}}
        self.tokens = {ANONYMOUS_ID: token(ANONYMOUS_ID, "anonymous"),
                       T1: token(T1, "secret-1", Roles=[{"ID": R1, "Name": "r"}]),
                       T_LOCAL: token(T_LOCAL, "secret-local", Local=True)}
        self.paths: list[str] = []
        self.hide_secrets = False

    async def request(self, dc: str, exchange: Exchange) -> Answer:
        assert dc == "dc1" and ("X-Consul-Token", "repl") in exchange.headers
        path = exchange.path
        self.paths.append(path)
        body: Any
        if path == "/v1/acl/policies":
            body = [{k: v for k, v in p.items() if k != "Rules"} for p in self.policies.values()]
        elif path == "/v1/acl/roles":
            body = list(self.roles.values())
        elif path == "/v1/acl/tokens":
            body = list(self.tokens.values())
        elif path.startswith("/v1/acl/policy/"):
            body = self.policies[path.rsplit("/", 1)[1]]
        else:
            body = dict(self.tokens[path.rsplit("/", 1)[1]])
            if self.hide_secrets:
                body["SecretID"] = "<hidden>"
        return Answer(200, [("X-Consul-Index", str(self.index))], json.dumps(body).encode())


class Raft:
    """The secondary's leader: proposals applied in order."""

    def __init__(self, store: Store) -> None:
        self.fsm = FSM(store)
        self.index = 0
        self.is_leader = True
        self.proposed: list[dict[str, Any]] = []

    async def propose(self, cmd: dict[str, Any]) -> Any:
        self.index += 1
        self.proposed.append(cmd)
        result = self.fsm.apply(self.index, cmd).result
        assert not isinstance(result, Exception), (cmd, result)
        return result


def secondary(primary: Primary, tokens: bool = True) -> tuple[AclReplicator, Store, Raft]:
    store = Store()
    raft = Raft(store)
    asyncio.run(raft.propose({"Type": "acl", "Op": "init"}))
    replicator = AclReplicator(datacenter="dc2", primary="dc1", tokens=tokens, raft=raft, store=store,
                               request=primary.request, replication_token=lambda: "repl", clock=lambda: 0.0)
    return replicator, store, raft


def test_a_round_copies_policies_roles_and_global_tokens_and_leaves_local_ones():
    primary = Primary()
    replicator, store, raft = secondary(primary)
    # the secondary's own: a local token (kept), a global one the primary lacks (deleted), and a
    # policy holding a name the primary's policy takes (deleted first, so the copy can take it)
    asyncio.run(raft.propose({"Type": "acl", "Op": "policy_set", "Object": {
        "ID": P2, "Name": "kv", "Description": "", "Rules": ""}}))
    for accessor, local in (("66666666-6666-4666-8666-666666666666", True),
                            ("77777777-7777-4777-8777-777777777777", False)):
        asyncio.run(raft.propose({"Type": "acl", "Op": "token_set", "Create": True,
                                  "Object": token(accessor, "s-" + accessor, Local=local)}))
    asyncio.run(replicator.tick())
    t = store.acl
    assert replicator.last_error_message == "", replicator.last_error_message
    assert t.policies[P1]["Rules"] == primary.policies[P1]["Rules"] and P2 not in t.policies
    assert t.policies[GLOBAL_MANAGEMENT_ID].get("Hash") != "gm"  # the built-in is this datacenter's own
    assert t.roles[R1]["Policies"] == [{"ID": P1}]
    assert t.tokens[T1]["SecretID"] == "secret-1" and t.tokens[T1]["Roles"] == [{"ID": R1}]
    assert T_LOCAL not in t.tokens  # the primary's local token stays there
    assert "66666666-6666-4666-8666-666666666666" in t.tokens
    assert "77777777-7777-4777-8777-777777777777" not in t.tokens
    ops = [cmd["Op"] for cmd in raft.proposed[4:]]
    assert ops == ["token_delete", "policy_delete", "policy_set", "role_set", "token_set"]
    status = replicator.status()
    assert status == {"Enabled": True, "Running": True, "SourceDatacenter": "dc1", "ReplicationType": "tokens",
                      "ReplicatedIndex": 10, "ReplicatedRoleIndex": 10, "ReplicatedTokenIndex": 10,
                      "LastSuccess": "1970-01-01T00:00:00.000000000Z", "LastError": "0001-01-01T00:00:00Z",
                      "LastErrorMessage": ""}

    # nothing moved in the primary: one list read, nothing written
    primary.paths.clear()
    before = len(raft.proposed)
    asyncio.run(replicator.tick())
    assert primary.paths == ["/v1/acl/policies"] and len(raft.proposed) == before
    # a change: only what differs is read whole
    primary.index = 11
    primary.policies[P1] = {**primary.policies[P1], "Rules": "", "Hash": "p1-2"}
    primary.paths.clear()
    asyncio.run(replicator.tick())
    assert f"/v1/acl/policy/{P1}" in primary.paths and f"/v1/acl/token/{T1}" not in primary.paths
    assert store.acl.policies[P1]["Rules"] == ""


def test_policies_only_and_the_errors_it_reports():
    primary = Primary()
    replicator, store, raft = secondary(primary, tokens=False)
    asyncio.run(replicator.tick())
    assert "/v1/acl/tokens" not in primary.paths and T1 not in store.acl.tokens
    assert replicator.status()["ReplicationType"] == "policies"
    # a replication token that cannot see secrets
    primary2 = Primary()
    primary2.hide_secrets = True
    replicator2, store2, _ = secondary(primary2)
    asyncio.run(replicator2.tick())
    assert replicator2.last_error_message == 'the replication token cannot read token secrets: it needs acl = "write"'
    assert T1 not in store2.acl.tokens

    async def refuse(dc: str, exchange: Exchange) -> Answer:
        return Answer.error("ACL not found", 403)

    replicator2.request = refuse
    asyncio.run(replicator2.tick())
    assert replicator2.last_error_message == "ACL not found"
    # a follower does not replicate
    raft.is_leader = False
    primary.paths.clear()
    asyncio.run(replicator.tick())
    assert primary.paths == [] and replicator.status()["Running"] is False
