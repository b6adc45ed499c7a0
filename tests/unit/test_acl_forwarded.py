"""The servers' check of the writes client agents forward (appliance/acl/commands.py), the token
each anti-entropy write acts with (appliance/local/sync.py `SyncTokens`), and a client agent's
tokens as a server resolves them, under `acl.down_policy` (appliance/acl/remote.py, down.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from appliance.acl.authorizer import Authorizer
from appliance.acl.caller import acting_as, caller_token
from appliance.acl.commands import ForwardedWrites, PermissionDenied, ServerOnly, command_needs
from appliance.acl.policy import Rules
from appliance.acl.resolve import ACLNotFound, Identity
from appliance.coordinates import CoordinateBatcher
from appliance.local.definitions import parse_check_definition, parse_service_definition
from appliance.local.state import LocalState
from appliance.local.sync import StateSyncer, SyncTokens, plan_sync
from appliance.state.fsm import FSM
from appliance.state.store import Store

NODE = {"Node": "n1", "ID": "", "Address": "10.0.0.1", "Datacenter": "dc1",
        "TaggedAddresses": {"lan": "10.0.0.1"}, "NodeMeta": {"rack": "a"}}


def store_with(*policies: tuple[str, str]) -> tuple[Store, dict[str, str]]:
    """A store with node n1 running service web (ID web-1, a check), session s1 on n1, query q
    named "q-name", and one token per (name, rules); returns the secrets by name."""
    store = Store()
    fsm = FSM(store)
    local = LocalState("n1", "dc1")
    local.add_service(parse_service_definition({"ID": "web-1", "Name": "web", "Port": 80,
                                                "Check": {"CheckID": "web-check", "TTL": "10s"}}))
    local.add_check(parse_check_definition({"CheckID": "node-check", "Name": "n", "TTL": "10s"}))
    steps = [{"Type": "acl", "Op": "init"}, *(cmd for _, cmd in plan_sync(store, NODE, local)),
             {"Type": "session_create", "Session": {"ID": "11111111-1111-4111-8111-111111111111", "Node": "n1",
                                                    "LockDelay": 0, "Behavior": "release", "TTL": ""}}]
    secrets = {}
    for i, (name, rules) in enumerate(policies):
        pid = str(uuid.UUID(int=i + 10))
        secrets[name] = str(uuid.uuid4())
        steps.append({"Type": "acl", "Op": "policy_set", "Object": {"ID": pid, "Name": name, "Description": "",
                                                                   "Rules": rules}})
        steps.append({"Type": "acl", "Op": "token_set", "Create": True, "Object": {
            "AccessorID": str(uuid.UUID(int=i + 100)), "SecretID": secrets[name], "Description": "",
            "Local": False, "CreateTime": "2026-01-01T00:00:00Z", "Policies": [{"ID": pid}]}})
    for index, cmd in enumerate(steps, start=1):
        applied = fsm.apply(index, cmd)
        assert not isinstance(applied.result, Exception), (cmd, applied.result)
    return store, secrets


@pytest.mark.parametrize(("cmd", "needs"), [
    ({"Type": "kv_set", "Key": "a/b", "Value": b"x"}, [("key", "write", "a/b")]),
    ({"Type": "kv_delete", "Key": "a/", "Recurse": True}, [("key_prefix", "write", "a/")]),
    ({"Type": "kv_lock", "Key": "lock", "Session": "s"}, [("key", "write", "lock")]),
    # the node record as it is: no node:write for a service registration
    ({"Type": "register", **NODE, "SkipNodeUpdate": True, "Service": {"ID": "web-1", "Service": "web"}},
     [("service", "write", "web")]),
    # the record changes (another address): node:write
    ({"Type": "register", **NODE, "Address": "10.0.0.2"}, [("node", "write", "n1")]),
    ({"Type": "register", **NODE}, []),  # the same record again needs nothing more
    ({"Type": "register", **NODE, "NodeMeta": {"rack": "b"}}, [("node", "write", "n1")]),  # Consul's ChangesNode
    ({"Type": "register", **NODE, "TaggedAddresses": None}, [("node", "write", "n1")]),
    ({"Type": "register", **NODE, "Node": "new"}, [("node", "write", "new")]),
    # an existing ID registered under another name: write on both names
    ({"Type": "register", **NODE, "SkipNodeUpdate": True, "Service": {"ID": "web-1", "Service": "api"}},
     [("service", "write", "api"), ("service", "write", "web")]),
    ({"Type": "register", **NODE, "SkipNodeUpdate": True,
      "Checks": [{"CheckID": "web-check", "ServiceID": "web-1"}, {"CheckID": "node-check"}]},
     [("service", "write", "web"), ("node", "write", "n1")]),
    ({"Type": "deregister", "Node": "n1", "ServiceID": "web-1"}, [("service", "write", "web")]),
    ({"Type": "deregister", "Node": "n1", "CheckID": "web-check"}, [("service", "write", "web")]),
    ({"Type": "deregister", "Node": "n1", "CheckID": "node-check"}, [("node", "write", "n1")]),
    ({"Type": "deregister", "Node": "n1"}, [("node", "write", "n1")]),
    ({"Type": "session_create", "Session": {"ID": "x", "Node": "n2"}}, [("session", "write", "n2")]),
    ({"Type": "session_destroy", "ID": "11111111-1111-4111-8111-111111111111"}, [("session", "write", "n1")]),
    ({"Type": "session_renew", "ID": "11111111-1111-4111-8111-111111111111"}, [("session", "write", "n1")]),
    ({"Type": "session_destroy", "ID": "unknown"}, []),  # the FSM answers for an unknown session
    ({"Type": "txn", "Ops": [{"KV": {"Verb": "get", "Key": "r"}}, {"KV": {"Verb": "delete-tree", "Key": "t/"}},
                             {"Service": {"Verb": "set", "Node": "n1", "Service": {"ID": "x", "Service": "db"}}},
                             {"Check": {"Verb": "delete", "Check": {"Node": "n1", "CheckID": "c"}}}]},
     [("key", "read", "r"), ("key_prefix", "write", "t/"), ("service", "write", "db"), ("node", "write", "n1")]),
    ({"Type": "lock_checked", "Command": {"Type": "kv_lock", "Key": "l", "Session": "s"}}, [("key", "write", "l")]),
    ({"Type": "prepared_query", "Op": "set", "Query": {"ID": "q", "Name": "new-name"}},
     [("query", "write", "new-name")]),
    ({"Type": "acl", "Op": "policy_set", "Object": {}}, [("acl", "write", None)]),
    ({"Type": "acl", "Op": "bootstrap", "Object": {}}, []),
    ({"Type": "coordinate_batch_update", "Updates": [{"Node": "b"}, {"Node": "a"}, {"Node": "a"}]},
     [("node", "write", "a"), ("node", "write", "b")]),
    ({"Type": "autopilot", "Config": {}}, [("operator", "write", None)]),
    ({"Type": "raft_remove_peer", "ID": "x"}, [("operator", "write", None)]),
    ({"Type": "raft_configuration"}, [("operator", "read", None)]),
    ({"Type": "restore", "State": b""}, [("acl", "write", None)]),
    ({"Type": "config_entry", "Op": "set", "Kind": "service-defaults", "Name": "web"}, [("service", "write", "web")]),
    ({"Type": "config_entry", "Op": "delete", "Kind": "service-intentions", "Name": "db"},
     [("intention", "write", "db")]),
    ({"Type": "config_entry", "Op": "set", "Kind": "proxy-defaults", "Name": "global"}, [("mesh", "write", None)]),
])
def test_each_command_needs_what_its_endpoint_needs(cmd, needs):
    store, _ = store_with()
    assert command_needs(cmd, store) == needs


def test_every_command_type_says_what_a_client_needs_to_forward_it():
    """A new command type must be given its permissions here (appliance/acl/commands.py NEEDS),
    or client agents could not forward it with ACLs on."""
    from appliance.acl.commands import NEEDS
    from appliance.state.commands import COMMANDS

    assert set(COMMANDS) - set(NEEDS) == set()


@pytest.mark.parametrize("cmd", [
    {"Type": "acl", "Op": "init"}, {"Type": "autopilot", "Init": True, "Config": {}}, {"Type": "nonsense"},
    {"Type": "lock_checked", "Command": {"Type": "acl", "Op": "init"}}, {"NoType": 1},
    {"Type": "connect_ca", "Op": "set", "Config": {}}, {"Type": "connect_ca", "Op": "serial"},
    {"Type": "connect_ca", "Op": "init", "Config": {}, "Roots": []}, {"Type": "connect_ca", "Op": "prune", "IDs": []},
])
def test_commands_only_servers_propose_are_refused_whatever_the_token(cmd):
    store, _ = store_with()
    with pytest.raises(ServerOnly, match="is not a client agent's write"):
        command_needs(cmd, store)
    with pytest.raises(ServerOnly):
        ForwardedWrites("dc1", default_allow=True).check(store, "", cmd, 0.0)


def test_forwarded_writes_are_decided_by_the_route_tables_authorizer():
    store, secrets = store_with(("app-write", 'key_prefix "app/" { policy = "write" }'),
                                ("app-read", 'key_prefix "app/" { policy = "read" }'),
                                ("all", 'key_prefix "" { policy = "write" } key "app/secret" { policy = "deny" }'))
    writes = ForwardedWrites("dc1", default_allow=False)
    put = {"Type": "kv_set", "Key": "app/x", "Value": b"1"}
    writes.check(store, secrets["app-write"], put, 0.0)
    with pytest.raises(PermissionDenied) as err:
        writes.check(store, secrets["app-read"], put, 0.0)
    assert str(err.value) == ("Permission denied: token with AccessorID '00000000-0000-0000-0000-000000000065' "
                              "lacks permission 'key:write' on \"app/x\"")
    with pytest.raises(PermissionDenied, match="^Permission denied: anonymous token lacks permission 'key:write'"):
        writes.check(store, "", put, 0.0)  # no token: the anonymous token
    with pytest.raises(ACLNotFound, match="^ACL not found$"):
        writes.check(store, str(uuid.uuid4()), put, 0.0)
    # a recursive delete needs write on everything under the prefix (Consul's KeyWritePrefix)
    writes.check(store, secrets["all"], {"Type": "kv_delete", "Key": "other/", "Recurse": True}, 0.0)
    with pytest.raises(PermissionDenied, match="lacks permission 'key:write' on \"app/\""):
        writes.check(store, secrets["all"], {"Type": "kv_delete", "Key": "app/", "Recurse": True}, 0.0)
    writes.check(store, "", {"Type": "acl", "Op": "bootstrap", "Object": {}}, 0.0)  # the FSM allows it once
    # default allow: everything but the ACL system
    allow = ForwardedWrites("dc1", default_allow=True)
    allow.check(store, "", put, 0.0)
    with pytest.raises(PermissionDenied, match="lacks permission 'acl:write'\\. The anonymous"):
        allow.check(store, "", {"Type": "acl", "Op": "policy_delete", "ID": "x"}, 0.0)


def test_the_caller_token_is_scoped_to_its_block_and_task():
    assert caller_token() == ""
    with acting_as("outer"):
        with acting_as("inner"):
            assert caller_token() == "inner"
        assert caller_token() == "outer"

        async def other_task() -> str:
            with acting_as("task"):
                await asyncio.sleep(0)
                return caller_token()

        async def main() -> tuple[str, str]:
            seen = await asyncio.create_task(other_task())
            return seen, caller_token()

        assert asyncio.run(main()) == ("task", "outer")
    assert caller_token() == ""


def local_state() -> LocalState:
    local = LocalState("n1", "dc1")
    local.add_service(parse_service_definition({"Name": "web", "Token": "web-token", "Check": {"TTL": "10s"}}))
    local.add_service(parse_service_definition({"Name": "cfg"}), source="config")
    local.add_service(parse_service_definition({"Name": "bare"}))
    local.add_check(parse_check_definition({"Name": "disk", "TTL": "10s"}))
    local.add_check(parse_check_definition({"Name": "own", "TTL": "10s", "Token": "check-token"}))
    return local


def test_anti_entropy_writes_with_the_tokens_consul_uses():
    agent = {"agent": "agent-token", "default": "default-token", "config_file_service_registration": "cfsr"}
    tokens = SyncTokens(local_state(), lambda kind: agent.get(kind, ""))
    assert tokens.of({"Type": "register", **NODE}) == ("node", "agent-token")
    svc = {"Type": "register", **NODE, "SkipNodeUpdate": True}
    assert tokens.of({**svc, "Service": {"ID": "web"}}) == ("service", "web-token")
    assert tokens.of({**svc, "Service": {"ID": "cfg"}}) == ("service", "cfsr")
    assert tokens.of({**svc, "Service": {"ID": "bare"}}) == ("service", "default-token")
    assert tokens.of({**svc, "Checks": [{"CheckID": "service:web"}]}) == ("check", "web-token")  # its service's
    assert tokens.of({**svc, "Checks": [{"CheckID": "disk"}]}) == ("check", "default-token")
    assert tokens.of({**svc, "Checks": [{"CheckID": "own"}]}) == ("check", "check-token")
    # gone from the agent: the token it was last synced with, else the default
    tokens.remember({**svc, "Service": {"ID": "old"}, "Checks": [{"CheckID": "old-check"}]}, "old-token")
    assert tokens.of({"Type": "deregister", "Node": "n1", "ServiceID": "old"}) == ("service", "old-token")
    assert tokens.of({"Type": "deregister", "Node": "n1", "CheckID": "old-check"}) == ("check", "old-token")
    tokens.remember({"Type": "deregister", "Node": "n1", "ServiceID": "old"}, "")
    assert tokens.of({"Type": "deregister", "Node": "n1", "ServiceID": "old"}) == ("service", "default-token")
    agent.pop("agent")
    assert tokens.of({"Type": "deregister", "Node": "n1"}) == ("node", "default-token")
    # maintenance checks: the request's token, else the service's or the default
    tokens.local.set_node_maintenance(True, "", "maint-token")
    tokens.local.set_service_maintenance("bare", True, "")
    assert tokens.of({**svc, "Checks": [{"CheckID": "_node_maintenance"}]}) == ("check", "maint-token")
    assert tokens.of({**svc, "Checks": [{"CheckID": "_service_maintenance:bare"}]}) == ("check", "default-token")
    tokens.local.set_service_maintenance("web", True, "")
    assert tokens.of({**svc, "Checks": [{"CheckID": "_service_maintenance:web"}]}) == ("check", "web-token")


class Forwarding:
    """A client agent's consensus as the syncer sees it: each write's token recorded, the ones
    `refuse` names refused as a server does."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.writes: list[tuple[str, str]] = []

    async def read_point(self, consistency: str) -> None:
        return None

    async def propose(self, cmd: dict) -> bool:
        token = caller_token()
        if token in self.refuse:
            raise PermissionDenied("rpc error making call: Permission denied")
        self.writes.append((cmd["Type"], token))
        return True


def test_a_write_acls_refuse_is_logged_and_the_others_go_on(caplog):
    consensus = Forwarding(refuse={"web-token"})
    syncer = StateSyncer(Store(), consensus, local_state(), lambda: dict(NODE))
    syncer.tokens.agent_tokens = lambda kind: {"agent": "agent-token", "default": "default-token"}.get(kind, "")
    blocked: list[str] = []
    syncer.on_blocked = blocked.append
    with caplog.at_level("WARNING", logger="agent"):
        assert asyncio.run(syncer.sync_now()) is True
    assert "Service registration blocked by ACLs: service=web" in caplog.text
    assert blocked == ["acl.blocked.service.registration"]  # Consul's counter, once per refused write
    assert consensus.writes[0] == ("register", "agent-token")  # the node first, with the agent token
    assert ("register", "default-token") in consensus.writes and len(consensus.writes) == 5


def test_a_refused_deregistration_counts_as_consul_counts_it():
    store, before = Store(), LocalState("n1", "dc1")  # the catalog holds a service the agent has dropped
    before.add_service(parse_service_definition({"Name": "gone"}))
    for index, (_, cmd) in enumerate(plan_sync(store, NODE, before), start=1):
        FSM(store).apply(index, cmd)
    consensus = Forwarding(refuse={"default-token"})
    syncer = StateSyncer(store, consensus, LocalState("n1", "dc1"), lambda: dict(NODE))
    syncer.tokens.agent_tokens = lambda kind: {"agent": "agent-token", "default": "default-token"}.get(kind, "")
    blocked: list[str] = []
    syncer.on_blocked = blocked.append
    assert asyncio.run(syncer.sync_now()) is True
    assert blocked == ["acl.blocked.service.deregistration"]


def test_coordinate_batches_go_with_their_tokens():
    sent: list[tuple[list[str], str]] = []

    async def propose(cmd: dict) -> None:
        if caller_token() == "bad":
            raise PermissionDenied("Permission denied")
        sent.append(([u["Node"] for u in cmd["Updates"]], caller_token()))

    batcher = CoordinateBatcher(propose)
    batcher.submit({"Node": "me", "Segment": ""}, "agent-token")
    with acting_as("caller"):
        batcher.submit({"Node": "other", "Segment": ""})  # the HTTP caller's token
    batcher.submit({"Node": "x", "Segment": ""}, "bad")
    assert asyncio.run(batcher.flush()) == 3
    assert sent == [(["me"], "agent-token"), (["other"], "caller")]
    assert batcher.applied == 2


def ident(accessor: str, expires: str | None = None) -> Identity:
    token = {"AccessorID": accessor, "SecretID": "s"}
    if expires:
        token["ExpirationTime"] = expires
    return Identity(accessor, token, Authorizer(Rules(exact={"key": {"k": "write"}}), False))


class Servers:
    """What a client agent's `ServerTokens` asks: the tokens a server holds, up or not."""

    def __init__(self, tokens: dict[str, dict]) -> None:
        self.tokens = tokens
        self.up = True
        self.asked: list[str] = []

    async def fetch(self, secret: str) -> dict | None:
        from appliance.acl.remote import Unreachable
        self.asked.append(secret)
        if not self.up:
            raise Unreachable("No known Consul servers")
        return self.tokens.get(secret)


def client_tokens(policy: str, tokens: dict[str, dict], ttl: float = 30.0) -> tuple:
    """A client agent's replica (tokens without secrets, as the feed sends them) and its ServerTokens."""
    from appliance.acl.remote import ServerTokens
    from appliance.acl.resolve import Resolver
    from appliance.rpc.feed import redacted_tables

    store, _ = store_with(("app-write", 'key_prefix "app/" { policy = "write" }'))
    pid = next(p["ID"] for p in store.acl.policies.values() if p["Name"] == "app-write")
    for i, (secret, tok) in enumerate(tokens.items()):
        store.acl.tokens[tok["AccessorID"]] = {"SecretID": secret, "Policies": [{"ID": pid}], **tok,
                                               "CreateIndex": 50 + i, "ModifyIndex": 50 + i}
    servers = Servers({s: {**t, "SecretID": s} for s, t in tokens.items()})
    store.acl = redacted_tables(store.acl)
    assert not set(tokens) & set(store.acl.secrets)  # no secret in the replica
    return store, servers, ServerTokens(Resolver("dc1", False), servers.fetch, ttl, policy, lambda: servers.up)


def resolve(tokens, store, secret: str, now: float) -> Identity:
    return asyncio.run(tokens.identity(secret, store.acl, store.watch_index.get("acl", 0), now))


@pytest.mark.parametrize(("policy", "cached_after_ttl", "never_seen"), [
    ("extend-cache", "cached", "deny"), ("async-cache", "cached", "deny"),
    ("deny", "deny", "deny"), ("allow", "allow", "allow"),
])
def test_down_policy_once_the_servers_are_gone(policy, cached_after_ttl, never_seen):
    store, servers, tokens = client_tokens(policy, {"s1": {"AccessorID": "acc-1"}})
    known = resolve(tokens, store, "s1", 100.0)  # up: resolved by a server, kept
    assert known.accessor == "acc-1" and known.token["SecretID"] == "s1"
    assert known.authz.allowed("key", "app/x", "write") and not known.authz.allowed("key", "x", "write")
    servers.up = False
    assert resolve(tokens, store, "s1", 129.0).accessor == "acc-1"  # within token_ttl: kept, whatever the policy
    assert servers.asked == ["s1"]
    after = resolve(tokens, store, "s1", 131.0)
    expected = {"cached": "acc-1", "deny": "", "allow": ""}[cached_after_ttl]
    assert after.accessor == expected
    assert after.authz.allowed("key", "app/x", "write") is (cached_after_ttl != "deny")
    never = resolve(tokens, store, "never", 131.0)
    assert never.authz.allowed("key", "app/x", "read") is (never_seen == "allow")
    assert not tokens.down.allow_all.authz.allowed("acl", "", "read")  # allow: not the ACL system
    assert not tokens.down.deny_all.authz.allowed("key", "k", "read")


def test_a_client_asks_again_after_token_ttl_and_sees_the_replica_at_once():
    store, servers, tokens = client_tokens("extend-cache", {"s1": {"AccessorID": "acc-1"}}, ttl=30.0)
    assert resolve(tokens, store, "s1", 0.0).accessor == "acc-1"
    assert resolve(tokens, store, "s1", 10.0).accessor == "acc-1" and servers.asked == ["s1"]
    assert resolve(tokens, store, "s1", 31.0).accessor == "acc-1" and servers.asked == ["s1", "s1"]
    with pytest.raises(ACLNotFound):  # an unknown secret is not remembered: asked each time
        resolve(tokens, store, "nobody", 31.0)
    with pytest.raises(ACLNotFound):
        resolve(tokens, store, "nobody", 32.0)
    assert servers.asked.count("nobody") == 2
    with pytest.raises(ACLNotFound):  # an accessor is not a secret, on a client either
        resolve(tokens, store, "acc-1", 32.0)
    del store.acl.tokens["acc-1"]  # the deletion streamed to the replica: refused within token_ttl
    store.acl.rebuild()
    store.watch_index["acl"] = store.watch_index.get("acl", 0) + 1
    with pytest.raises(ACLNotFound):
        resolve(tokens, store, "s1", 33.0)
    with pytest.raises(ACLNotFound):
        tokens.known("s1", store.acl, store.watch_index["acl"], 33.0)


def test_a_global_token_a_secondary_without_token_replication_holds_is_the_servers_answer():
    from appliance.acl.remote import ServerTokens
    from appliance.acl.resolve import NotInReplica, Resolver

    store, servers, _ = client_tokens("extend-cache", {})
    pid = next(p["ID"] for p in store.acl.policies.values() if p["Name"] == "app-write")
    servers.tokens["g"] = {"AccessorID": "acc-g", "SecretID": "g", "Policies": [{"ID": pid}]}
    here = ServerTokens(Resolver("dc1", False), servers.fetch, 30.0, "extend-cache", lambda: True)
    with pytest.raises(NotInReplica):  # a token of this datacenter: the replica has not applied it yet
        resolve(here, store, "g", 0.0)
    elsewhere = ServerTokens(Resolver("dc1", False), servers.fetch, 30.0, "extend-cache", lambda: True, True)
    ident = resolve(elsewhere, store, "g", 0.0)
    assert ident.accessor == "acc-g" and ident.token["SecretID"] == "g"
    assert ident.authz.allowed("key", "app/x", "write") and not ident.authz.allowed("key", "x", "read")
    del servers.tokens["g"]  # deleted in the primary: refused once token_ttl ran out
    assert resolve(elsewhere, store, "g", 29.0).accessor == "acc-g"
    with pytest.raises(ACLNotFound):
        resolve(elsewhere, store, "g", 31.0)


def test_a_token_that_expired_while_the_servers_were_away_is_not_extended():
    store, servers, tokens = client_tokens(
        "extend-cache", {"s": {"AccessorID": "acc", "ExpirationTime": "1970-01-01T00:01:00Z"}})
    assert resolve(tokens, store, "s", 0.0).accessor == "acc"
    servers.up = False
    assert resolve(tokens, store, "s", 40.0).accessor == "acc"  # past token_ttl, extended
    with pytest.raises(ACLNotFound):
        resolve(tokens, store, "s", 61.0)


def test_a_secondary_without_token_replication_asks_the_primary_once_per_token_ttl():
    from appliance.acl.remote import RemoteTokens, Unreachable
    from appliance.acl.resolve import Resolver

    store, _ = store_with(("app-write", 'key_prefix "app/" { policy = "write" }'))
    pid = next(p["ID"] for p in store.acl.policies.values() if p["Name"] == "app-write")
    known = {"good": {"AccessorID": "acc-good", "SecretID": "good", "Policies": [{"ID": pid, "Name": "app-write"}]},
             "expired": {"AccessorID": "acc-old", "SecretID": "expired", "ExpirationTime": "1970-01-01T00:01:00Z"}}
    asked: list[str] = []
    primary_up = True

    async def fetch(secret: str) -> dict | None:
        asked.append(secret)
        if not primary_up:
            raise Unreachable("No path to datacenter")
        return known.get(secret)

    for policy, stranger in (("extend-cache", "deny"), ("allow", "allow"), ("deny", "deny")):
        remote = RemoteTokens(Resolver("dc2", False), fetch, token_ttl_s=30.0, down_policy=policy)
        asked.clear()
        primary_up = True
        ident = asyncio.run(remote.identity("good", store.acl, 100.0))
        assert ident.accessor == "acc-good" and ident.authz.allowed("key", "app/x", "write")
        assert not ident.authz.allowed("key", "other", "write")  # this datacenter's copy of the policy
        assert remote.cached("good", store.acl, 120.0) is not None and remote.cached("good", store.acl, 131.0) is None
        for secret in ("nobody", "expired"):
            with pytest.raises(ACLNotFound):
                asyncio.run(remote.identity(secret, store.acl, 100.0))
        with pytest.raises(ACLNotFound):  # a wrong secret is remembered too: no new question
            asyncio.run(remote.identity("nobody", store.acl, 110.0))
        assert asked == ["good", "nobody", "expired"]
        primary_up = False  # the primary cannot be asked: the down policy
        after = asyncio.run(remote.identity("good", store.acl, 200.0))
        expected = {"extend-cache": "acc-good", "allow": "", "deny": ""}[policy]
        assert after.accessor == expected
        assert after.authz.allowed("key", "app/x", "write") is (policy != "deny")
        never = asyncio.run(remote.identity("never-seen", store.acl, 200.0))
        assert never.authz.allowed("key", "app/x", "read") is (stranger == "allow")
