"""ACL enforcement at the route table, in-process: token resolution order, Consul's 403 texts,
filtered answers and their header, KV recursion rules, a token deleted while a query blocks."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from appliance.acl.builtin import GLOBAL_MANAGEMENT_ID
from appliance.acl.resolve import parse_time
from appliance.http.authz import FILTERED
from tests.unit.http_inprocess import InProcessAgent, http_agent, json_body

ROOT = "root-secret"
HCL = f'acl {{ enabled = true default_policy = "deny" tokens {{ initial_management = "{ROOT}" }} }}'
ANON_TAIL = ". The anonymous token is used implicitly when a request does not specify a token."


async def make_token(api: InProcessAgent, rules: str, name: str = "p") -> dict[str, Any]:
    """A policy with `rules` and a token holding it, written straight through the log."""
    await api.ctx.consensus.propose({"Type": "acl", "Op": "policy_set", "Object": {
        "ID": f"{name}-0000-4000-8000-000000000000", "Name": name, "Description": "", "Rules": rules}})
    secret = f"{name}-secret"
    tok = {"AccessorID": f"{name}-acc", "SecretID": secret, "Description": "", "Local": False,
           "CreateTime": "2024-05-01T11:00:00Z", "Policies": [{"ID": f"{name}-0000-4000-8000-000000000000"}]}
    await api.ctx.consensus.propose({"Type": "acl", "Op": "token_set", "Object": tok, "Create": True})
    return tok


async def register_web_and_db(api: InProcessAgent) -> None:
    for svc in ("web", "db"):
        a = await api.call("PUT", "/v1/agent/service/register", {"Name": svc, "Port": 80},
                           headers={"X-Consul-Token": ROOT})
        assert a.status == 200, a.body


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_denials_name_the_accessor_and_permission() -> None:
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            a = await api.call("GET", "/v1/kv/foo")
            assert a.status == 403
            assert a.body.decode() == ("Permission denied: anonymous token lacks permission 'key:read' on \"foo\""
                                       + ANON_TAIL)
            a = await api.call("GET", "/v1/operator/raft/configuration", headers={"X-Consul-Token": "nope"})
            assert (a.status, a.body) == (403, b"ACL not found")
            tok = await make_token(api, 'key_prefix "app/" { policy = "read" }')
            a = await api.call("PUT", "/v1/kv/app/x", b"1", headers={"X-Consul-Token": tok["SecretID"]})
            assert a.status == 403 and a.body.decode() == (
                "Permission denied: token with AccessorID 'p-acc' lacks permission 'key:write' on \"app/x\"")
            assert a.headers["X-Consul-Default-ACL-Policy"] == "deny"
            a = await api.call("GET", "/v1/snapshot", headers={"X-Consul-Token": tok["SecretID"]})
            assert a.body.decode() == "Permission denied: token with AccessorID 'p-acc' lacks permission 'acl:write'"
    run(go())


@pytest.mark.parametrize("how", ["header", "bearer", "query"])
def test_token_sources(how: str) -> None:
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            await api.call("PUT", "/v1/kv/a", b"1", headers={"X-Consul-Token": ROOT})
            headers = {"header": {"X-Consul-Token": ROOT}, "bearer": {"Authorization": f"Bearer {ROOT}"},
                       "query": {}}[how]
            a = await api.call("GET", "/v1/kv/a" + ("?token=" + ROOT if how == "query" else ""), headers=headers)
            assert a.status == 200
    run(go())


def test_the_default_token_stands_in_for_a_missing_one() -> None:
    hcl = HCL.replace("} }", f'default = "{ROOT}" }} }}')

    async def go() -> None:
        async with http_agent("-hcl", hcl) as api:
            assert (await api.call("PUT", "/v1/kv/a", b"1")).status == 200
    run(go())


def test_filtered_answers_and_the_header() -> None:
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            root = {"X-Consul-Token": ROOT}
            await register_web_and_db(api)
            tok = await make_token(api, 'service "web" { policy = "read" }\nkey_prefix "pub/" { policy = "read" }')
            mine = {"X-Consul-Token": tok["SecretID"]}
            a = await api.call("GET", "/v1/agent/services")
            assert json_body(a) == {} and "X-Consul-Results-Filtered-By-ACLs" not in a.headers
            a = await api.call("GET", "/v1/agent/services", headers=mine)
            assert list(json_body(a)) == ["web"] and a.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
            assert len(json_body(await api.call("GET", "/v1/agent/services", headers=root))) == 2
            a = await api.call("GET", "/v1/catalog/services", headers=mine)
            assert json_body(a) == {"web": []}  # a name is kept when it is readable
            for key in ("pub/a", "priv/b"):
                await api.call("PUT", f"/v1/kv/{key}", b"1", headers=root)
            a = await api.call("GET", "/v1/kv/?keys", headers=mine)
            assert json_body(a) == ["pub/a"]
            a = await api.call("GET", "/v1/kv/priv/?recurse", headers=mine)
            assert a.status == 404
    run(go())


def test_recursive_delete_needs_write_on_everything_under_the_prefix() -> None:
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            tok = await make_token(api, 'key_prefix "" { policy = "write" }\nkey "foo/bar" { policy = "read" }')
            mine = {"X-Consul-Token": tok["SecretID"]}
            assert (await api.call("PUT", "/v1/kv/foo/x", b"1", headers=mine)).status == 200
            a = await api.call("DELETE", "/v1/kv/foo/?recurse", headers=mine)
            assert a.status == 403 and "'key:write' on \"foo/\"" in a.body.decode()
            assert (await api.call("DELETE", "/v1/kv/foo/x", headers=mine)).status == 200
    run(go())


def test_a_token_deleted_while_a_query_blocks_is_refused_when_it_wakes() -> None:
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            tok = await make_token(api, 'node_prefix "" { policy = "read" }')
            first = await api.call("GET", "/v1/catalog/nodes", headers={"X-Consul-Token": tok["SecretID"]})
            index = first.headers["X-Consul-Index"]
            waiting = asyncio.ensure_future(api.call("GET", f"/v1/catalog/nodes?index={index}&wait=5s",
                                                     headers={"X-Consul-Token": tok["SecretID"]}))
            await asyncio.sleep(0.05)
            await api.ctx.consensus.propose({"Type": "acl", "Op": "token_delete", "ID": tok["AccessorID"]})
            await api.call("PUT", "/v1/catalog/register", {"Node": "n2", "Address": "10.0.0.2"},
                           headers={"X-Consul-Token": ROOT})
            a = await asyncio.wait_for(waiting, 5)
            assert (a.status, a.body) == (403, b"ACL not found")
    run(go())


def test_a_read_let_through_unfiltered_is_checked_again_when_the_tables_change_or_the_token_expires() -> None:
    """What `passes` remembers for a (token, route) pair holds only while the ACL tables and the
    token's expiry do: a narrowed policy filters the next answer, an expired token is refused."""
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            await register_web_and_db(api)
            tok = await make_token(api, 'service_prefix "" { policy = "read" }')
            mine = {"X-Consul-Token": tok["SecretID"]}
            for _ in range(2):  # the second is let through on what the first learned
                a = await api.call("GET", "/v1/catalog/services", headers=mine)
                assert set(json_body(a)) == {"web", "db"} and FILTERED not in a.headers
            await api.ctx.consensus.propose({"Type": "acl", "Op": "policy_set", "Object": {
                "ID": "p-0000-4000-8000-000000000000", "Name": "p", "Description": "",
                "Rules": 'service "web" { policy = "read" }'}})
            a = await api.call("GET", "/v1/catalog/services", headers=mine)
            assert json_body(a) == {"web": []} and a.headers[FILTERED] == "true"

            soon = datetime.fromtimestamp(time.time() + 1.0, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            brief = {**tok, "AccessorID": "brief-acc", "SecretID": "brief-secret", "ExpirationTime": soon,
                     "Policies": [{"ID": "p-0000-4000-8000-000000000000"}]}
            await api.ctx.consensus.propose({"Type": "acl", "Op": "token_set", "Object": brief, "Create": True})
            await api.ctx.consensus.propose({"Type": "acl", "Op": "policy_set", "Object": {
                "ID": "p-0000-4000-8000-000000000000", "Name": "p", "Description": "",
                "Rules": 'service_prefix "" { policy = "read" }'}})
            for _ in range(2):
                a = await api.call("GET", "/v1/catalog/services", headers={"X-Consul-Token": "brief-secret"})
                assert a.status == 200 and FILTERED not in a.headers
            await asyncio.sleep(max(0.0, parse_time(soon) - time.time()) + 0.05)
            a = await api.call("GET", "/v1/catalog/services", headers={"X-Consul-Token": "brief-secret"})
            assert (a.status, a.body) == (403, b"ACL not found")
    run(go())


def test_management_token_reads_everything() -> None:
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            a = await api.call("GET", "/v1/operator/raft/configuration", headers={"X-Consul-Token": ROOT})
            assert a.status == 200 and json.loads(a.body)["Servers"]
            assert api.ctx.store.acl.policies[GLOBAL_MANAGEMENT_ID]["Name"] == "global-management"
    run(go())


def test_prometheus_http_sd_honours_the_scrapers_token() -> None:
    from sd.http import ROUTES as SD_ROUTES

    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            api.router.add_all(SD_ROUTES)
            root = {"X-Consul-Token": ROOT}
            for svc in ("web", "db"):
                a = await api.call("PUT", "/v1/agent/service/register", {"Name": svc, "Port": 80}, headers=root)
                assert a.status == 200
            await api.ctx.control.changed()
            everything = json_body(await api.call("GET", "/v1/sd/prometheus", headers=root))
            assert sorted(g["labels"]["__meta_consul_service"] for g in everything) == ["db", "web"]
            tok = await make_token(api, 'service_prefix "web" { policy = "read" }\nnode_prefix "" { policy = "read" }')
            a = await api.call("GET", "/v1/sd/prometheus", headers={"Authorization": f"Bearer {tok['SecretID']}"})
            assert [g["labels"]["__meta_consul_service"] for g in json_body(a)] == ["web"]
            assert a.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
            assert json_body(await api.call("GET", "/v1/sd/prometheus")) == []
    run(go())


def test_a_transaction_reports_each_refused_operation_and_changes_nothing() -> None:
    # Consul checks every operation of a transaction and answers 409 with one error per refused one
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api:
            tok = await make_token(api, 'key_prefix "app/" { policy = "write" }')
            auth = {"X-Consul-Token": tok["SecretID"]}
            ops = [{"KV": {"Verb": "set", "Key": "app/a", "Value": "MQ=="}},
                   {"KV": {"Verb": "set", "Key": "other/b", "Value": "Mg=="}},
                   {"KV": {"Verb": "get", "Key": "secret/c"}}]
            a = await api.call("PUT", "/v1/txn", json.dumps(ops).encode(), headers=auth)
            assert a.status == 409
            assert json_body(a) == {"Results": None, "Errors": [{"OpIndex": 1, "What": "Permission denied"},
                                                                  {"OpIndex": 2, "What": "Permission denied"}]}
            assert (await api.call("GET", "/v1/kv/app/a", headers={"X-Consul-Token": ROOT})).status == 404
            a = await api.call("PUT", "/v1/txn", json.dumps(ops[:1]).encode(), headers=auth)
            assert a.status == 200
    run(go())
