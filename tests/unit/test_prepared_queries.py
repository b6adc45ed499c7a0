"""Prepared queries over in-process HTTP (tests/unit/http_inprocess.py): create, list, read, update,
delete, execute, explain, templates, Consul's validation texts, the query deleted with its
session, failover to another datacenter, and the store table in snapshots."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from http_inprocess import InProcessAgent, http_agent, json_body

from appliance.federation.forward import Answer as RemoteAnswer, Exchange
from appliance.queries import execute
from appliance.queries.template import TemplateError, compile_template, render
from appliance.state.snapshot import restore, snapshot

pytestmark = pytest.mark.timeout(30)


def sync(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))
    return run


async def register(api: InProcessAgent, node: str, service: str, *, address: str = "10.0.0.1", port: int = 80,
                   tags: list[str] | None = None, status: str = "passing", meta: dict[str, str] | None = None,
                   node_meta: dict[str, str] | None = None, sid: str = "", check: str = "") -> None:
    body: dict[str, Any] = {"Node": node, "Address": address, "NodeMeta": node_meta or {},
                            "Service": {"ID": sid or service, "Service": service, "Port": port, "Tags": tags or [],
                                        "Meta": meta or {}},
                            "Checks": [{"CheckID": check or f"{sid or service}-check", "Name": "c", "Status": status,
                                        "ServiceID": sid or service}]}
    answer = await api.call("PUT", "/v1/catalog/register", body)
    assert answer.status == 200, answer.body


async def create(api: InProcessAgent, body: dict[str, Any]) -> str:
    answer = await api.call("POST", "/v1/query", body)
    assert answer.status == 200, answer.body
    return str(json_body(answer)["ID"])


async def error(api: InProcessAgent, method: str, target: str, body: Any = b"") -> tuple[int, str]:
    answer = await api.call(method, target, body)
    return answer.status, (answer.body or b"").decode()


# ---------------------------------------------------------------------------------- CRUD


@sync
async def test_create_list_read_update_delete() -> None:
    async with http_agent() as api:
        qid = await create(api, {"Name": "web-q", "Service": {"Service": "web", "Tags": ["v1"]},
                                 "DNS": {"TTL": "10s"}})
        listed = json_body(await api.call("GET", "/v1/query"))
        assert [q["ID"] for q in listed] == [qid]
        q = listed[0]
        assert q["Name"] == "web-q" and q["Service"]["Service"] == "web" and q["Service"]["Tags"] == ["v1"]
        assert q["DNS"] == {"TTL": "10s"} and q["CreateIndex"] == q["ModifyIndex"] > 0
        assert q["Template"] == {"Type": "", "Regexp": "", "RemoveEmptyTags": False}
        assert q["Service"]["Failover"] == {"NearestN": 0, "Datacenters": None, "Targets": None}
        read = await api.call("GET", f"/v1/query/{qid}")
        assert read.status == 200 and json_body(read) == listed and int(read.headers["X-Consul-Index"]) > 0
        # update: lowercase keys decode as Go's decoder does
        answer = await api.call("PUT", f"/v1/query/{qid}", {"name": "web-q", "service": {"service": "api"}})
        assert answer.status == 200 and answer.body in (b"", None)
        q2 = json_body(await api.call("GET", f"/v1/query/{qid}"))[0]
        assert q2["Service"]["Service"] == "api" and q2["CreateIndex"] == q["CreateIndex"]
        assert q2["ModifyIndex"] > q["ModifyIndex"]
        assert (await api.call("DELETE", f"/v1/query/{qid}")).status == 200
        assert json_body(await api.call("GET", "/v1/query")) == []
        assert await error(api, "GET", f"/v1/query/{qid}") == (404, "Query not found")


@sync
async def test_list_blocks_until_a_query_is_written() -> None:
    async with http_agent() as api:
        first = await api.call("GET", "/v1/query")
        index = first.headers["X-Consul-Index"]
        waiter = asyncio.ensure_future(api.call("GET", f"/v1/query?index={index}&wait=5s"))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await create(api, {"Name": "q", "Service": {"Service": "web"}})
        answer = await asyncio.wait_for(waiter, 5)
        assert len(json_body(answer)) == 1 and int(answer.headers["X-Consul-Index"]) > int(index)


@pytest.mark.parametrize(("body", "text"), [
    ({"Service": {"Service": "web"}}, "Invalid prepared query: Must be bound to a session"),
    ({"Name": "q", "Service": {}}, "Invalid prepared query: Must provide a Service name to query"),
    ({"Name": "q", "Service": {"Service": "web", "Failover": {"NearestN": -1}}},
     "Invalid prepared query: Bad NearestN '-1', must be >= 0"),
    ({"Name": "q", "Service": {"Service": "web"}, "DNS": {"TTL": "ten"}},
     'Invalid prepared query: Bad DNS TTL \'ten\': time: invalid duration "ten"'),
    ({"Name": "q", "Service": {"Service": "web"}, "DNS": {"TTL": "-5s"}},
     "Invalid prepared query: DNS TTL '-5000000000', must be >=0"),
    ({"Name": "q", "Token": "<hidden>", "Service": {"Service": "web"}},
     "Invalid prepared query: Bad Token '<hidden>', it looks like a query definition with a redacted token "
     "was submitted"),
    ({"ID": "abc", "Name": "q", "Service": {"Service": "web"}}, "ID must be empty when creating a new prepared query"),
    ({"Name": "q", "Service": {"Service": "web"}, "Session": "1b4b2d3e-0000-4000-8000-000000000000"},
     'invalid session "1b4b2d3e-0000-4000-8000-000000000000"'),
    ({"Name": "t", "Template": {"Type": "prefix"}, "Service": {"Service": "web"}},
     "failed compiling template: Bad Template.Type 'prefix'"),
    ({"Name": "t", "Template": {"Type": "name_prefix_match", "Regexp": "(a"}, "Service": {"Service": "web"}},
     "failed compiling template: Bad Regexp: error parsing regexp: missing closing ): `(a`"),
    ({"Name": "t", "Template": {"Type": "name_prefix_match"}, "Service": {"Service": "${nope.x}"}},
     "failed compiling template: Bad evaluation for '${nope.x}' in Service.Service: unknown variable accessed: "
     "nope.x"),
])
@sync
async def test_validation_errors(body: dict[str, Any], text: str) -> None:
    async with http_agent() as api:
        assert await error(api, "POST", "/v1/query", body) == (500, text)
        assert json_body(await api.call("GET", "/v1/query")) == []


@sync
async def test_names_and_ids_cannot_alias() -> None:
    async with http_agent() as api:
        qid = await create(api, {"Name": "q", "Service": {"Service": "web"}})
        assert await error(api, "POST", "/v1/query", {"Name": "Q", "Service": {"Service": "x"}}) == (
            500, "name 'Q' aliases an existing query name")
        assert await error(api, "POST", "/v1/query", {"Name": qid, "Service": {"Service": "x"}}) == (
            500, f"name '{qid}' aliases an existing query ID")
        tpl = {"Template": {"Type": "name_prefix_match"}, "Service": {"Service": "${name.full}"}}
        await create(api, tpl)
        assert await error(api, "POST", "/v1/query", tpl) == (
            500, "a query template with an empty name already exists")
        missing = "11111111-2222-4333-8444-555555555555"
        assert await error(api, "PUT", f"/v1/query/{missing}", {"Name": "z", "Service": {"Service": "x"}}) == (
            500, f"Cannot modify non-existent prepared query: '{missing}'")
        assert await error(api, "DELETE", f"/v1/query/{missing}") == (
            500, f"Cannot modify non-existent prepared query: '{missing}'")
        status, text = await error(api, "POST", "/v1/query", {"Name": 5})
        assert status == 400 and "cannot unmarshal number" in text


@sync
async def test_query_bound_to_a_session_goes_with_it() -> None:
    async with http_agent() as api:
        sid = json_body(await api.call("PUT", "/v1/session/create", {"Name": "s", "Checks": []}))["ID"]
        qid = await create(api, {"Session": sid, "Service": {"Service": "web"}})
        other = await create(api, {"Name": "kept", "Service": {"Service": "web"}})
        assert (await api.call("PUT", f"/v1/session/destroy/{sid}")).status == 200
        assert [q["ID"] for q in json_body(await api.call("GET", "/v1/query"))] == [other]
        assert (await api.call("GET", f"/v1/query/{qid}")).status == 404
        queries = api.ctx.store.prepared_queries
        assert list(queries) == [other] and api.ctx.store.sessions == {}


# ---------------------------------------------------------------------------------- execute


@sync
async def test_execute_filters_health_tags_meta() -> None:
    async with http_agent() as api:
        await register(api, "a", "db", tags=["primary", "v1"], meta={"env": "prod"}, node_meta={"rack": "r1"})
        await register(api, "b", "db", address="10.0.0.2", tags=["v1"], status="warning")
        await register(api, "c", "db", address="10.0.0.3", tags=["primary", "experimental"])
        await register(api, "d", "db", address="10.0.0.4", tags=["v1"], status="critical", check="flaky")

        async def names(body: dict[str, Any]) -> list[str]:
            qid = await create(api, body)
            answer = await api.call("GET", f"/v1/query/{qid}/execute")
            assert answer.status == 200, answer.body
            out = json_body(answer)
            assert out["Service"] == "db" and out["Datacenter"] == "dc1" and out["Failovers"] == 0
            await api.call("DELETE", f"/v1/query/{qid}")
            return sorted(n["Node"]["Node"] for n in out["Nodes"])

        assert await names({"Name": "q1", "Service": {"Service": "db"}}) == ["a", "b", "c"]
        assert await names({"Name": "q2", "Service": {"Service": "db", "OnlyPassing": True}}) == ["a", "c"]
        assert await names({"Name": "q3", "Service": {"Service": "db", "IgnoreCheckIDs": ["flaky"]}}) == [
            "a", "b", "c", "d"]
        assert await names({"Name": "q4", "Service": {"Service": "db", "Tags": ["PRIMARY", "!experimental"]}}) == [
            "a"]
        assert await names({"Name": "q5", "Service": {"Service": "db", "ServiceMeta": {"env": "prod"}}}) == ["a"]
        assert await names({"Name": "q6", "Service": {"Service": "db", "NodeMeta": {"rack": "r1"}}}) == ["a"]


@sync
async def test_execute_by_name_limit_near_and_not_found() -> None:
    async with http_agent() as api:
        for i in range(5):
            await register(api, f"n{i}", "web", address=f"10.0.0.{i + 1}")
        await create(api, {"Name": "Web-Q", "Service": {"Service": "web"}, "DNS": {"TTL": "30s"}})
        out = json_body(await api.call("GET", "/v1/query/web-q/execute?limit=2"))
        assert len(out["Nodes"]) == 2 and out["DNS"] == {"TTL": "30s"}
        out = json_body(await api.call("GET", "/v1/query/web-q/execute?near=n3"))
        assert out["Nodes"][0]["Node"]["Node"] == "n3"
        assert await error(api, "GET", "/v1/query/nope/execute") == (404, "Query not found")
        assert await error(api, "GET", "/v1/query/nope/explain") == (404, "Query not found")


@sync
async def test_templates_render_by_name() -> None:
    async with http_agent() as api:
        await register(api, "a", "mysql-customer", tags=["primary"])
        await register(api, "b", "mysql-customer", address="10.0.0.2", tags=["replica"])
        await create(api, {"Name": "geo-db", "Template": {"Type": "name_prefix_match",
                                                          "Regexp": "^geo-db-(.*?)-([^\\-]+?)$"},
                           "Service": {"Service": "mysql-${match(1)}", "Tags": ["${match(2)}"]}})
        catch_all = await create(api, {"Template": {"Type": "name_prefix_match"},
                                       "Service": {"Service": "${name.full}"}})
        explained = json_body(await api.call("GET", "/v1/query/geo-db-customer-primary/explain"))["Query"]
        assert explained["Service"]["Service"] == "mysql-customer" and explained["Service"]["Tags"] == ["primary"]
        out = json_body(await api.call("GET", "/v1/query/geo-db-customer-primary/execute"))
        assert out["Service"] == "mysql-customer" and [n["Node"]["Node"] for n in out["Nodes"]] == ["a"]
        out = json_body(await api.call("GET", "/v1/query/mysql-customer/execute"))  # the catch-all
        assert sorted(n["Node"]["Node"] for n in out["Nodes"]) == ["a", "b"]
        explained = json_body(await api.call("GET", "/v1/query/mysql-customer/explain"))["Query"]
        assert explained["ID"] == catch_all and explained["Service"]["Service"] == "mysql-customer"


def test_template_variables_and_empty_tags() -> None:
    query = {"Name": "pre", "Template": {"Type": "name_prefix_match", "Regexp": "^pre-(x)?(y)$",
                                         "RemoveEmptyTags": True},
             "Service": {"Service": "${name.prefix}|${name.suffix}|${name.full}|${agent.segment}|$${lit}",
                         "Tags": ["${match(1)}", "${match(2)}", "${match(9)}"], "NodeMeta": {"k": "${match(0)}"}}}
    compile_template(query)
    out = render(query, "pre-y")
    assert out["Service"]["Service"] == "pre|-y|pre-y||${lit}"
    assert out["Service"]["Tags"] == ["y"] and out["Service"]["NodeMeta"] == {"k": "pre-y"}
    with pytest.raises(TemplateError, match=r"Bad format '\$\{oops' in Service.Tags\[0\]"):
        compile_template({**query, "Service": {"Service": "s", "Tags": ["${oops"]}})


@sync
async def test_failover_to_another_datacenter() -> None:
    async with http_agent() as api:
        await register(api, "a", "db", status="critical")
        remote_nodes = [{"Node": {"Node": "r1", "Address": "10.9.0.1", "Meta": {}},
                         "Service": {"ID": "db", "Service": "db", "Tags": [], "Port": 5432, "Meta": {},
                                     "Address": ""},
                         "Checks": [{"CheckID": "c", "Status": "passing"}]}]
        fed = api.ctx.federation

        async def dc2(exchange: Exchange) -> RemoteAnswer:
            assert exchange.path == "/v1/health/service/db"
            return RemoteAnswer(200, [], json.dumps(remote_nodes).encode())

        async def dc3(exchange: Exchange) -> RemoteAnswer:
            return RemoteAnswer(200, [], b"[]")

        fed.remote.update({"dc2": dc2, "dc3": dc3})  # type: ignore[attr-defined]
        await create(api, {"Name": "db", "Service": {"Service": "db",
                                                    "Failover": {"Datacenters": ["dc3", "nowhere", "dc2"]}}})
        out = json_body(await api.call("GET", "/v1/query/db/execute"))
        assert out["Datacenter"] == "dc2" and out["Failovers"] == 2
        assert [n["Node"]["Node"] for n in out["Nodes"]] == ["r1"]
        await create(api, {"Name": "near", "Service": {"Service": "db", "Failover": {"NearestN": 1}}})
        out = json_body(await api.call("GET", "/v1/query/near/execute"))
        assert out["Datacenter"] == "dc2" and out["Failovers"] == 1  # the nearest other datacenter


# ---------------------------------------------------------------------------------- store


@sync
async def test_queries_survive_a_snapshot() -> None:
    async with http_agent() as api:
        qid = await create(api, {"Name": "q", "Service": {"Service": "web"}})
        restored = restore(snapshot(api.ctx.store))
        assert restored.prepared_queries == api.ctx.store.prepared_queries
        assert execute.resolve(restored, "q")["ID"] == qid  # type: ignore[index]


# ---------------------------------------------------------------------------------- DNS answers


def _dns(name: str, qtype: str, found: dict[str, Any] | None) -> Any:
    import random

    from dnslib import DNSRecord

    from appliance.dns.answers import Answerer, Settings
    from appliance.state.store import Store

    answerer = Answerer(Settings(service_ttl={"db": 7}))
    reply = answerer.respond(bytes(DNSRecord.question(name, qtype).pack()), Store(), random.Random(1), 1e9)
    assert reply.wire is None and reply.remote is not None and reply.remote.kind == "query"  # the server runs it
    out = answerer.respond_remote(reply.request, reply.remote, found, random.Random(1), 1e9)
    assert out.wire is not None and out.deps is None and not out.error
    return DNSRecord.parse(out.wire)


def test_dns_answers_from_an_execute_response() -> None:
    from dnslib import QTYPE, RCODE

    node = {"Node": "r1", "Address": "10.9.0.1", "Meta": {}}
    svc = {"ID": "db", "Service": "db", "Tags": [], "Port": 5432, "Address": "", "Weights": {"Passing": 3,
                                                                                          "Warning": 1}}
    found = {"Service": "db", "Nodes": [{"Node": node, "Service": svc, "Checks": [{"Status": "warning"}]}],
             "DNS": {"TTL": "30s"}, "Datacenter": "dc2", "Failovers": 1}
    rec = _dns("db-q.query.consul", "A", found)
    assert [(str(r.rdata), r.ttl) for r in rec.rr] == [("10.9.0.1", 30)]
    rec = _dns("_db-q._tcp.query.consul", "SRV", found)
    srv = rec.rr[0]
    assert QTYPE[srv.rtype] == "SRV" and str(srv.rdata.target) == "r1.node.dc2.consul." and srv.rdata.weight == 1
    no_ttl = {**found, "DNS": {"TTL": ""}, "Datacenter": "dc1"}
    assert [r.ttl for r in _dns("db-q.query.consul", "A", no_ttl).rr] == [7]  # the service's TTL rule
    assert _dns("nope.query.consul", "A", None).header.rcode == RCODE.NXDOMAIN
    assert _dns("db-q.query.consul", "A", {**found, "Nodes": []}).header.rcode == RCODE.NXDOMAIN
    rec = _dns("db-q.query.dc2.consul", "A", found)
    assert rec.header.rcode == RCODE.NOERROR


@sync
async def test_query_goes_when_the_session_node_is_deregistered() -> None:
    async with http_agent() as api:
        await register(api, "other", "web", address="10.0.0.8")
        answer = await api.call("PUT", "/v1/session/create", {"Node": "other", "Checks": []})
        sid = json_body(answer)["ID"]
        await create(api, {"Name": "bound", "Session": sid, "Service": {"Service": "web"}})
        index = int((await api.call("GET", "/v1/query")).headers["X-Consul-Index"])
        assert (await api.call("PUT", "/v1/catalog/deregister", {"Node": "other"})).status == 200
        answer = await api.call("GET", f"/v1/query?index={index}&wait=2s")
        assert json_body(answer) == [] and int(answer.headers["X-Consul-Index"]) > index
        assert (await api.call("GET", "/v1/query/bound/execute")).status == 404


@sync
async def test_near_ip_sorts_from_the_asking_node() -> None:
    from appliance.http.values import Request

    async with http_agent() as api:
        for i in range(4):
            await register(api, f"n{i}", "web", address=f"10.0.0.{i + 1}")
        await create(api, {"Name": "near-ip", "Service": {"Service": "web", "Near": "_ip"}})
        for _ in range(5):
            answer = await api.dispatch(Request("GET", "/v1/query/near-ip/execute", remote="10.0.0.3"))
            assert json_body(answer)["Nodes"][0]["Node"]["Node"] == "n2"
        out = json_body(await api.call("GET", "/v1/query/near-ip/execute?near=n0"))
        assert out["Nodes"][0]["Node"]["Node"] == "n0"  # ?near wins over the query's Near
