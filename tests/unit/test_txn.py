"""PUT /v1/txn in-process: every KV verb's success and failure result, the node, service and check
verbs, all-or-nothing, the read-only path without a log entry, and Consul's texts and statuses
for bad input (reference/coordination.md §3)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from http_inprocess import InProcessAgent, json_body
from session_agent import FakeClock, session_agent


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def run(scenario: Any) -> Any:
    async def main() -> Any:
        async with session_agent(clock=FakeClock()) as (api, _leader):
            await api.call("PUT", "/v1/kv/cfg", b"one")
            await api.call("PUT", "/v1/kv/tree/a", b"A")
            await api.call("PUT", "/v1/kv/tree/b", b"B")
            answer = await api.call("PUT", "/v1/session/create", {"Checks": [], "LockDelay": "0s"})
            sid = json_body(answer)["ID"]
            await api.call("PUT", f"/v1/kv/held?acquire={sid}", b"h")
            return await scenario(api, sid)

    return asyncio.run(main())


async def txn(api: InProcessAgent, *ops: dict[str, Any], query: str = "") -> tuple[int, Any]:
    answer = await api.call("PUT", "/v1/txn" + query, list(ops))
    return answer.status, json_body(answer) if answer.body and answer.body[:1] in b"{[" else answer.body.decode()


def kv(verb: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"KV": {"Verb": verb, "Key": key, **fields}}


def index_of(api: InProcessAgent, key: str) -> int:
    rec = api.ctx.store.kv_get(key)
    return rec["ModifyIndex"] if rec else 0


# ------------------------------------------------------------------------------ KV verbs: success

SUCCESS: dict[str, Any] = {
    "set": (lambda api, sid: kv("set", "new", Value=b64(b"x"), Flags=3), [("new", None)]),
    "cas create": (lambda api, sid: kv("cas", "new", Value=b64(b"x"), Index=0), [("new", None)]),
    "cas update": (lambda api, sid: kv("cas", "cfg", Value=b64(b"x"), Index=index_of(api, "cfg")), [("cfg", None)]),
    "lock": (lambda api, sid: kv("lock", "free", Value=b64(b"x"), Session=sid), [("free", None)]),
    "unlock": (lambda api, sid: kv("unlock", "held", Session=sid), [("held", None)]),
    "get": (lambda api, sid: kv("get", "cfg"), [("cfg", b64(b"one"))]),
    "get-tree": (lambda api, sid: kv("get-tree", "tree/"), [("tree/a", b64(b"A")), ("tree/b", b64(b"B"))]),
    "get-tree empty": (lambda api, sid: kv("get-tree", "none/"), []),
    "check-index": (lambda api, sid: kv("check-index", "cfg", Index=index_of(api, "cfg")), [("cfg", None)]),
    "check-session": (lambda api, sid: kv("check-session", "held", Session=sid), [("held", None)]),
    "check-session unheld": (lambda api, sid: kv("check-session", "cfg"), [("cfg", None)]),
    "check-not-exists": (lambda api, sid: kv("check-not-exists", "nope"), []),
    "delete": (lambda api, sid: kv("delete", "cfg"), []),
    "delete missing": (lambda api, sid: kv("delete", "nope"), []),
    "delete-tree": (lambda api, sid: kv("delete-tree", "tree/"), []),
    "delete-cas": (lambda api, sid: kv("delete-cas", "cfg", Index=index_of(api, "cfg")), []),
    "delete-cas missing": (lambda api, sid: kv("delete-cas", "nope", Index=9), []),
}


@pytest.mark.parametrize("case", sorted(SUCCESS))
def test_kv_verb_success(case):
    build, expected = SUCCESS[case]

    async def scenario(api, sid):
        status, body = await txn(api, build(api, sid))
        assert status == 200, body
        assert body["Errors"] is None
        assert [(r["KV"]["Key"], r["KV"]["Value"]) for r in body["Results"]] == expected

    run(scenario)


def test_kv_writes_land_as_results_say():
    async def scenario(api, sid):
        status, body = await txn(api, kv("set", "new", Value=b64(b"x"), Flags=3), kv("lock", "free", Session=sid),
                                 kv("unlock", "held", Session=sid, Value=b64(b"r")), kv("delete-tree", "tree/"))
        assert status == 200
        store = api.ctx.store
        index = body["Results"][0]["KV"]["ModifyIndex"]
        assert all(r["KV"]["ModifyIndex"] == index for r in body["Results"])  # one index
        assert (store.kv_get("new")["Value"], store.kv_get("new")["Flags"]) == (b"x", 3)
        assert (store.kv_get("free")["Session"], store.kv_get("free")["LockIndex"]) == (sid, 1)
        assert "Session" not in store.kv_get("held") and store.kv_get("held")["Value"] == b"r"
        assert list(store.kv_prefix_keys("tree/")) == []

    run(scenario)


def test_later_operations_see_earlier_ones():
    async def scenario(api, sid):
        status, body = await txn(api, kv("set", "k", Value=b64(b"v")), kv("get", "k"), kv("lock", "k", Session=sid),
                                 kv("check-session", "k", Session=sid), kv("delete", "k"), kv("check-not-exists", "k"))
        assert status == 200, body
        assert body["Results"][1]["KV"]["Value"] == b64(b"v")

    run(scenario)


# ------------------------------------------------------------------------------ KV verbs: failure

FAILURE: dict[str, Any] = {
    "cas stale": (lambda api, sid: kv("cas", "cfg", Value=b64(b"x"), Index=1),
                  'failed to set key "cfg", index is stale'),
    "cas exists": (lambda api, sid: kv("cas", "cfg", Index=0), 'failed to set key "cfg", index is stale'),
    "lock unknown session": (lambda api, sid: kv("lock", "held", Session=sid + "x"), 'invalid session "{sid}x"'),
    "lock missing session": (lambda api, sid: kv("lock", "k"), "missing session"),
    "unlock not held": (lambda api, sid: kv("unlock", "cfg", Session=sid),
                        'failed to unlock key "cfg", lock isn\'t held, or is held by another session'),
    "unlock missing session": (lambda api, sid: kv("unlock", "held"), "missing session"),
    "get missing": (lambda api, sid: kv("get", "nope"), 'key "nope" doesn\'t exist'),
    "check-index missing": (lambda api, sid: kv("check-index", "nope", Index=3),
                            'failed to check index, key "nope" doesn\'t exist'),
    "check-index stale": (lambda api, sid: kv("check-index", "cfg", Index=1),
                          'failed index check for key "cfg", current modify index {cfg} != 1'),
    "check-session missing": (lambda api, sid: kv("check-session", "nope", Session=sid),
                              'failed to check session, key "nope" doesn\'t exist'),
    "check-session other": (lambda api, sid: kv("check-session", "held", Session="other"),
                            'failed session check for key "held", current session "{sid}" != "other"'),
    "check-not-exists": (lambda api, sid: kv("check-not-exists", "cfg"), 'key "cfg" exists'),
    "delete-cas stale": (lambda api, sid: kv("delete-cas", "cfg", Index=1),
                         'failed to delete key "cfg", index is stale'),
    "unknown verb": (lambda api, sid: kv("frobnicate", "cfg"), 'unknown KV verb "frobnicate"'),
    "missing key": (lambda api, sid: kv("set", ""), "Must provide key"),
    "no operation": (lambda api, sid: {}, "no operation specified"),
    "unknown node verb": (lambda api, sid: {"Node": {"Verb": "zap", "Node": {"Node": "n1"}}},
                          'unknown Node verb "zap"'),
}


@pytest.mark.parametrize("case", sorted(FAILURE))
def test_kv_verb_failure_rolls_everything_back(case):
    build, what = FAILURE[case]

    async def scenario(api, sid):
        store = api.ctx.store
        before = (dict(store.kv), dict(store.sessions))
        op = build(api, sid)
        expected = what.replace("{sid}", sid).replace("{cfg}", str(index_of(api, "cfg")))
        status, body = await txn(api, kv("set", "first", Value=b64(b"1")), op, kv("delete", "cfg"))
        assert status == 409, body
        assert body == {"Results": None, "Errors": [{"OpIndex": 1, "What": expected}]}
        assert (dict(store.kv), dict(store.sessions)) == before

    run(scenario)


def test_a_lock_held_by_another_session():
    async def scenario(api, sid):
        other = json_body(await api.call("PUT", "/v1/session/create", {"Checks": []}))["ID"]
        status, body = await txn(api, kv("lock", "held", Session=other))
        assert (status, body["Errors"]) == (409, [{"OpIndex": 0, "What":
                                                   'failed to lock key "held", lock is already held'}])
        assert api.ctx.store.kv_get("held")["Session"] == sid

    run(scenario)


def test_every_failing_operation_is_reported():
    async def scenario(api, sid):
        status, body = await txn(api, kv("get", "a"), kv("set", "ok", Value=None), kv("get", "b"))
        assert status == 409
        assert [e["OpIndex"] for e in body["Errors"]] == [0, 2]
        assert api.ctx.store.kv_get("ok") is None

    run(scenario)


def test_lock_delay_in_a_transaction():
    async def scenario(api, sid):
        answer = await api.call("PUT", "/v1/session/create", {"Checks": [], "LockDelay": "10s"})
        other = json_body(answer)["ID"]
        await api.call("PUT", f"/v1/kv/delayed?acquire={other}", b"x")
        await api.call("PUT", f"/v1/session/destroy/{other}")
        status, body = await txn(api, kv("set", "a", Value=None), kv("lock", "delayed", Session=sid))
        assert status == 409
        assert body["Errors"] == [{"OpIndex": 1, "What": 'failed to lock key "delayed" due to lock delay'}]
        assert api.ctx.store.kv_get("a") is None

    run(scenario)


# ------------------------------------------------------------------------------ catalog verbs


def test_node_service_check_verbs():
    async def scenario(api, sid):
        status, body = await txn(
            api,
            {"Node": {"Verb": "set", "Node": {"Node": "db1", "Address": "10.0.0.5", "Meta": {"rack": "r1"}}}},
            {"Service": {"Verb": "set", "Node": "db1", "Service": {"ID": "pg", "Service": "postgres", "Port": 5432}}},
            {"Check": {"Verb": "set", "Check": {"Node": "db1", "CheckID": "pg-alive", "Name": "alive",
                                                "Status": "passing", "ServiceID": "pg"}}},
            {"Node": {"Verb": "get", "Node": {"Node": "db1"}}})
        assert status == 200, body
        node, svc, check, got = body["Results"]
        assert (node["Node"]["Node"], node["Node"]["Datacenter"]) == ("db1", "dc1")
        assert node["Node"]["Meta"] == {"rack": "r1"}
        assert (svc["Service"]["Service"], svc["Service"]["Port"]) == ("postgres", 5432)
        assert (check["Check"]["CheckID"], check["Check"]["ServiceName"]) == ("pg-alive", "postgres")
        assert got["Node"]["Address"] == "10.0.0.5"
        health = json_body(await api.call("GET", "/v1/health/service/postgres"))
        assert [c["CheckID"] for c in health[0]["Checks"]] == ["pg-alive"]
        index = svc["Service"]["ModifyIndex"]
        status, body = await txn(api, {"Service": {"Verb": "cas", "Node": "db1", "Service": {
            "ID": "pg", "Service": "postgres", "Port": 5433, "ModifyIndex": index - 1}}})
        assert (status, body["Errors"]) == (409, [{"OpIndex": 0, "What":
                                                   'failed to set service "pg" on node "db1", index is stale'}])
        status, body = await txn(api, {"Service": {"Verb": "get", "Node": "db1", "Service": {"ID": "nope"}}},
                                 {"Check": {"Verb": "get", "Check": {"Node": "db1", "CheckID": "nope"}}},
                                 {"Node": {"Verb": "get", "Node": {"Node": "nope"}}})
        assert [e["What"] for e in body["Errors"]] == ['service "nope" on node "db1" doesn\'t exist',
                                                       'check "nope" on node "db1" doesn\'t exist',
                                                       'node "nope" doesn\'t exist']
        status, body = await txn(api, {"Check": {"Verb": "delete", "Check": {"Node": "db1", "CheckID": "pg-alive"}}},
                                 {"Service": {"Verb": "delete", "Node": "db1", "Service": {"ID": "pg"}}},
                                 {"Node": {"Verb": "delete-cas", "Node": {"Node": "db1", "ModifyIndex": 1}}})
        assert body["Errors"] == [{"OpIndex": 2, "What": 'failed to delete node "db1", index is stale'}]
        assert api.ctx.store.node_services("db1")  # rolled back
        status, body = await txn(api, {"Node": {"Verb": "delete", "Node": {"Node": "db1"}}})
        assert status == 200 and api.ctx.store.node("db1") is None

    run(scenario)


def test_a_txn_critical_check_invalidates_the_session():
    async def scenario(api, sid):
        await api.call("PUT", "/v1/catalog/register", {"Node": "n1", "Address": "127.0.0.1",
                                                       "Check": {"CheckID": "app", "Name": "app", "Status": "passing"}})
        answer = await api.call("PUT", "/v1/session/create", {"NodeChecks": ["app"]})
        bound = json_body(answer)["ID"]
        status, _ = await txn(api, {"Check": {"Verb": "set", "Check": {"Node": "n1", "CheckID": "app", "Name": "app",
                                                                      "Status": "critical"}}})
        assert status == 200 and bound not in api.ctx.store.sessions

    run(scenario)


# ------------------------------------------------------------------------------ read-only, limits


@pytest.mark.parametrize("query", ["", "?stale", "?consistent"])
def test_a_read_only_transaction_writes_nothing_to_the_log(query):
    async def scenario(api, sid):
        before = api.ctx.store.last_index
        status, body = await txn(api, kv("get", "cfg"), kv("check-not-exists", "nope"),
                                 {"Node": {"Verb": "get", "Node": {"Node": "n1"}}}, query=query)
        assert status == 200 and body["Results"][0]["KV"]["Value"] == b64(b"one")
        assert api.ctx.store.last_index == before

    run(scenario)


def test_bad_input():
    async def scenario(api, sid):
        before = (dict(api.ctx.store.kv), api.ctx.store.last_index)
        status, text = await txn(api, *[kv("set", f"k{i}") for i in range(129)])
        assert (status, text) == (413, "Transaction contains too many operations (129 > 128)")
        answer = await api.call("PUT", "/v1/txn", b"[{")
        assert answer.status == 400 and answer.body.decode().startswith("Failed to parse body: ")
        status, text = await txn(api, kv("set", "k", Value="not base64!"))
        assert status == 400 and text.startswith("Failed to parse body: failed to decode value")
        status, text = await txn(api, {"Service": {"Verb": "get", "Node": "n1", "Service": {"ID": 5}}})
        assert (status, text) == (400, "Failed to parse body: json: cannot unmarshal number into Go struct field "
                                       "NodeService.ID of type string")
        status, text = await txn(api, {"Check": {"Verb": "delete", "Check": {"Node": "n1", "ModifyIndex": -1}}})
        assert status == 400 and "HealthCheck.ModifyIndex of type uint64" in text
        status, body = await txn(api, kv("frob", "k"), kv("set", "k"))
        assert status == 409 and body["Errors"] == [{"OpIndex": 0, "What": 'unknown KV verb "frob"'}]
        assert (dict(api.ctx.store.kv), api.ctx.store.last_index) == before  # nothing written, no log entry
        status, body = await txn(api, *[kv("set", f"k{i}") for i in range(128)])
        assert status == 200 and len(body["Results"]) == 128

    run(scenario)
