"""ACL objects on the write path (the `acl` command through the FSM), snapshots, and token
resolution with its cache."""

from __future__ import annotations

import pytest

from appliance.acl.builtin import ANONYMOUS_ID, GLOBAL_MANAGEMENT_ID
from appliance.acl.resolve import ACLNotFound, Resolver
from appliance.state import watchkeys
from appliance.state.commands import CommandError, InvalidCommand, validate
from appliance.state.fsm import FSM
from appliance.state.snapshot import restore, snapshot
from appliance.state.store import Store

ACC = "6a1253d2-1785-24fd-91c2-f8e78c745511"
SECRET = "45a3bd52-07c7-47a4-52fd-0745e0cfe967"


def setup() -> tuple[FSM, Store]:
    store = Store()
    fsm = FSM(store)
    assert fsm.apply(1, {"Type": "acl", "Op": "init"}).result is True
    return fsm, store


def token(**fields: object) -> dict[str, object]:
    return {"AccessorID": ACC, "SecretID": SECRET, "Description": "", "Local": False,
            "CreateTime": "2024-05-01T11:00:00Z", **fields}


def test_builtins_and_anonymous_token() -> None:
    _, store = setup()
    assert store.acl.policies[GLOBAL_MANAGEMENT_ID]["Name"] == "global-management"
    assert store.acl.tokens[ANONYMOUS_ID]["SecretID"] == "anonymous"
    assert store.watch_index[watchkeys.ACL] == 1


def test_tokens_policies_roles_and_their_texts() -> None:
    fsm, store = setup()
    pol = {"ID": "e359bd81-0000-4000-8000-000000000001", "Name": "kv-read", "Description": "",
           "Rules": 'key_prefix "" { policy = "read" }'}
    assert fsm.apply(2, {"Type": "acl", "Op": "policy_set", "Object": pol}).result["CreateIndex"] == 2
    dup = {**pol, "ID": "e359bd81-0000-4000-8000-000000000002"}
    err = fsm.apply(3, {"Type": "acl", "Op": "policy_set", "Object": dup}).result
    assert isinstance(err, CommandError) and str(err) == 'Invalid Policy: A Policy with Name "kv-read" already exists'
    tok = token(Policies=[{"ID": pol["ID"]}])
    assert fsm.apply(4, {"Type": "acl", "Op": "token_set", "Object": tok, "Create": True}).result["ModifyIndex"] == 4
    again = fsm.apply(5, {"Type": "acl", "Op": "token_set", "Object": tok, "Create": True}).result
    assert str(again) == "Invalid Token: AccessorID is already in use"
    other = token(AccessorID="6a1253d2-1785-24fd-91c2-f8e78c745512")
    assert str(fsm.apply(6, {"Type": "acl", "Op": "token_set", "Object": other, "Create": True}).result) == \
        "Invalid Token: SecretID is already in use"
    changed = token(SecretID="45a3bd52-07c7-47a4-52fd-0745e0cfe968")
    assert str(fsm.apply(7, {"Type": "acl", "Op": "token_set", "Object": changed}).result) == \
        "Changing a token's SecretID is not permitted"
    assert str(fsm.apply(8, {"Type": "acl", "Op": "token_delete", "ID": ANONYMOUS_ID}).result) == \
        "Delete operation not permitted on the anonymous token"
    assert str(fsm.apply(9, {"Type": "acl", "Op": "policy_delete", "ID": GLOBAL_MANAGEMENT_ID}).result) == \
        "Delete operation not permitted on the builtin global-management policy"
    gm = dict(store.acl.policies[GLOBAL_MANAGEMENT_ID])
    assert str(fsm.apply(10, {"Type": "acl", "Op": "policy_set", "Object": {**gm, "Rules": ""}}).result) == \
        "Changing the Rules for the builtin global-management policy is not permitted"
    assert fsm.apply(11, {"Type": "acl", "Op": "policy_set", "Object": {**gm, "Name": "foobar"}}).result["Name"] == \
        "foobar"
    # deleting a policy unlinks it from tokens
    assert fsm.apply(12, {"Type": "acl", "Op": "policy_delete", "ID": pol["ID"]}).result is True
    assert store.acl.tokens[ACC]["Policies"] == []


def test_bootstrap_once_then_the_reset_index() -> None:
    fsm, store = setup()
    boot = token(Policies=[{"ID": GLOBAL_MANAGEMENT_ID}], Description="Bootstrap Token (Global Management)")
    assert fsm.apply(2, {"Type": "acl", "Op": "bootstrap", "Object": boot}).result["AccessorID"] == ACC
    second = token(AccessorID="6a1253d2-1785-24fd-91c2-f8e78c745519", SecretID="45a3bd52-07c7-47a4-52fd-0745e0cfe969")
    assert str(fsm.apply(3, {"Type": "acl", "Op": "bootstrap", "Object": second}).result) == \
        "ACL bootstrap no longer allowed (reset index: 2)"
    assert fsm.apply(4, {"Type": "acl", "Op": "bootstrap", "Object": second, "ResetIndex": 2}).result
    assert store.acl.bootstrap == 4


def test_the_command_definition() -> None:
    with pytest.raises(InvalidCommand):
        validate({"Type": "acl", "Op": "nope"})
    assert validate({"Type": "acl", "Op": "token_delete", "ID": ACC}) == "acl"


def test_snapshot_keeps_acl_tables() -> None:
    fsm, store = setup()
    fsm.apply(2, {"Type": "acl", "Op": "token_set", "Object": token(), "Create": True})
    back = restore(snapshot(store))
    assert back.acl.token_by_secret(SECRET)["AccessorID"] == ACC
    assert back.acl.policy_by_name("global-management") is not None


def test_resolution_cache_and_expiry() -> None:
    fsm, store = setup()
    fsm.apply(2, {"Type": "acl", "Op": "token_set", "Create": True,
                  "Object": token(ServiceIdentities=[{"ServiceName": "web"}],
                                  ExpirationTime="2024-05-01T12:00:00.123456789Z")})
    r = Resolver("dc1", default_allow=False)
    ident = r.resolve(store.acl, 2, SECRET, now=0)
    assert ident.accessor == ACC
    assert ident.authz.allowed("service", "web", "write") and ident.authz.allowed("node", "x", "read")
    assert not ident.authz.allowed("service", "db", "write")
    assert r.resolve(store.acl, 2, SECRET, now=1) is ident
    with pytest.raises(ACLNotFound):
        r.resolve(store.acl, 2, SECRET, now=2e9)
    with pytest.raises(ACLNotFound, match="Cannot resolve root ACL"):
        r.resolve(store.acl, 2, "manage", now=0)
    assert r.resolve(store.acl, 2, "anonymous", now=0).anonymous
