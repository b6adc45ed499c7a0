"""HTTP behaviour in-process: request values through the one dispatch (routing.respond) of an
agent with a real Store and a one-voter in-memory Raft (tests/unit/http_inprocess.py), no socket.

Texts and statuses are Consul's (reference/consul-api.md); the process-level tests in
tests/integration/test_http_errors.py keep what needs a socket (body limits on the wire, the
connection's edge).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from http_inprocess import InProcessAgent, http_agent, json_body

from appliance.federation.forward import Answer as RemoteAnswer, Exchange
from appliance.http.values import Request

KV_MAX = 512 * 1024


def run(scenario: Callable[[InProcessAgent], Awaitable[Any]], *flags: str) -> Any:
    async def main() -> Any:
        async with http_agent(*flags) as api:
            return await scenario(api)

    return asyncio.run(main())


def text(answer) -> str:
    return (answer.body or b"").decode()


# -- catalog: register, read, blocking -----------------------------------------------------------


def test_catalog_register_then_read():
    async def scenario(api: InProcessAgent) -> None:
        a = await api.call("PUT", "/v1/catalog/register",
                           {"Node": "db1", "Address": "10.0.0.5", "Service": {"Service": "db", "Port": 5432}})
        assert a.status == 200 and json_body(a) is True
        a = await api.call("GET", "/v1/catalog/service/db")
        assert a.status == 200
        [inst] = json_body(a)
        assert (inst["Node"], inst["ServiceName"], inst["ServicePort"]) == ("db1", "db", 5432)
        assert int(a.headers["X-Consul-Index"]) >= 1 and a.headers["X-Consul-KnownLeader"] == "true"
        nodes = {n["Node"] for n in json_body(await api.call("GET", "/v1/catalog/nodes"))}
        assert nodes == {"n1", "db1"}
        a = await api.call("GET", "/v1/catalog/services")
        assert json_body(a) == {"db": []}

    run(scenario)


def test_a_blocking_query_wakes_on_its_service_only():
    # Consul docs: blocking queries; the index passes X when the answer changes
    async def scenario(api: InProcessAgent) -> None:
        await api.call("PUT", "/v1/catalog/register", {"Node": "n2", "Address": "10.0.0.2",
                                                      "Service": {"Service": "web"}})
        first = await api.call("GET", "/v1/health/service/web")
        index = int(first.headers["X-Consul-Index"])
        parked = asyncio.create_task(api.call("GET", f"/v1/health/service/web?index={index}&wait=10s"))
        await asyncio.sleep(0.05)
        await api.call("PUT", "/v1/kv/unrelated", b"x")  # another watch key: the query stays parked
        await asyncio.sleep(0.05)
        assert not parked.done()
        started = time.monotonic()
        await api.call("PUT", "/v1/catalog/register", {"Node": "n3", "Address": "10.0.0.3",
                                                      "Service": {"Service": "web"}})
        answer = await asyncio.wait_for(parked, 5)
        assert time.monotonic() - started < 2
        assert int(answer.headers["X-Consul-Index"]) > index
        assert sorted(c["Node"]["Node"] for c in json_body(answer)) == ["n2", "n3"]

    run(scenario)


def test_a_blocking_query_times_out_with_the_current_answer():
    async def scenario(api: InProcessAgent) -> None:
        index = int((await api.call("GET", "/v1/catalog/nodes")).headers["X-Consul-Index"])
        started = time.monotonic()
        a = await api.call("GET", f"/v1/catalog/nodes?index={index}&wait=100ms")
        assert 0.09 < time.monotonic() - started < 2  # wait plus up to wait/16 of jitter
        assert a.status == 200 and a.headers["X-Consul-Index"] == str(index)

    run(scenario)


def test_cancelling_a_parked_query_cancels_its_wait():
    async def scenario(api: InProcessAgent) -> None:
        index = int((await api.call("GET", "/v1/kv/k?index=0")).headers["X-Consul-Index"])
        task = asyncio.create_task(api.call("GET", f"/v1/kv/k?index={index}&wait=5m"))
        await asyncio.sleep(0.05)
        task.cancel()  # the adapter does this when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await task
        assert api.ctx.hub.parked == 0

    run(scenario)


# -- KV --------------------------------------------------------------------------------------------


def test_kv_put_get_list_delete():
    async def scenario(api: InProcessAgent) -> None:
        assert json_body(await api.call("PUT", "/v1/kv/app/a", b"1")) is True
        assert json_body(await api.call("PUT", "/v1/kv/app/b?flags=7", b"2")) is True
        [rec] = json_body(await api.call("GET", "/v1/kv/app/b"))
        assert rec["Key"] == "app/b" and rec["Flags"] == 7 and rec["Value"] == "Mg=="
        raw = await api.call("GET", "/v1/kv/app/a?raw")
        assert raw.body == b"1" and raw.content_type == "text/plain"
        assert json_body(await api.call("GET", "/v1/kv/app/?keys")) == ["app/a", "app/b"]
        # cas: 0 creates only when absent; a stale index is refused
        assert json_body(await api.call("PUT", "/v1/kv/app/a?cas=0", b"x")) is False
        assert json_body(await api.call("PUT", f"/v1/kv/app/a?cas={rec['ModifyIndex']}", b"x")) is False
        assert json_body(await api.call("DELETE", "/v1/kv/app?recurse")) is True
        assert (await api.call("GET", "/v1/kv/app/a")).status == 404

    run(scenario)


def test_kv_errors_keep_consuls_texts():
    async def scenario(api: InProcessAgent) -> None:
        a = await api.call("PUT", "/v1/kv/big", b"x" * (KV_MAX + 1))
        assert a.status == 413
        assert text(a) == (f"Request body({KV_MAX + 1} bytes) too large, max size: {KV_MAX} bytes. "
                           "See https://developer.hashicorp.com/consul/docs/agent/config/config-files"
                           "#kv_max_value_size.")
        assert (await api.call("PUT", "/v1/kv/exact", b"y" * KV_MAX)).status == 200
        a = await api.call("PUT", "/v1/kv/")
        assert (a.status, text(a)) == (400, "Missing key name")
        a = await api.call("PUT", "/v1/kv/k?flags=x")
        assert (a.status, text(a)) == (400, "Invalid flags")
        a = await api.call("DELETE", "/v1/kv/k?cas=1&recurse")
        assert (a.status, text(a)) == (400, "Conflicting flags: cas and recurse")
        a = await api.call("GET", "/v1/kv/a%zz")
        assert (a.status, text(a)) == (400, 'Invalid URL path: invalid URL escape "%zz"')

    run(scenario)


# -- health and the local agent ---------------------------------------------------------------------


def test_agent_registration_reaches_health_with_its_check():
    async def scenario(api: InProcessAgent) -> None:
        a = await api.call("PUT", "/v1/agent/service/register",
                           {"Name": "web", "ID": "web-1", "Port": 80, "Check": {"TTL": "30s"}})
        assert a.status == 200 and a.body is None
        [entry] = json_body(await api.call("GET", "/v1/health/service/web"))
        assert entry["Service"]["ID"] == "web-1"
        assert json_body(await api.call("GET", "/v1/health/service/web?passing")) == []
        assert (await api.call("PUT", "/v1/agent/check/pass/service:web-1")).status == 200
        [entry] = json_body(await api.call("GET", "/v1/health/service/web?passing"))
        assert {c["Status"] for c in entry["Checks"]} == {"passing"}
        a = await api.call("GET", "/v1/agent/health/service/id/web-1?format=text")
        assert (a.status, text(a)) == (200, "passing")
        a = await api.call("PUT", "/v1/agent/service/deregister/nope")
        assert (a.status, text(a)) == (404, 'Unknown service ID "nope". Ensure that the service ID is passed, '
                                            "not the service name.")
        a = await api.call("PUT", "/v1/agent/service/register", {"Port": 80})
        assert (a.status, text(a)) == (400, "Missing service name")
        a = await api.call("PUT", "/v1/agent/service/register", {"Name": "x", "Foo": 1})
        assert (a.status, text(a)) == (400, 'Request decode failed: json: unknown field "Foo"')

    run(scenario)


# -- routing and errors ------------------------------------------------------------------------------


def test_routing_404_405_options():
    async def scenario(api: InProcessAgent) -> None:
        for path in ("/v1/nope", "/v1/agent/nope", "/v1/catalog/servicez"):
            a = await api.call("GET", path)
            assert (a.status, text(a)) == (404, "Invalid URL path: not a recognized HTTP API endpoint"), path
        a = await api.call("GET", "/v1/agent/service/register")
        assert (a.status, text(a)) == (405, "method GET not allowed")
        assert "GET" not in a.headers["Allow"].split(",") and "PUT" in a.headers["Allow"].split(",")
        a = await api.call("OPTIONS", "/v1/kv/some/key")
        assert a.status == 200 and set(a.headers["Allow"].split(",")) == {"OPTIONS", "GET", "PUT", "DELETE"}
        a = await api.call("GET", "/v1/kv/a%01b")
        assert (a.status, text(a)) == (400, "Invalid URL path: contains non-printable characters")
        a = await api.call("GET", "/")  # -dev: the UI is enabled
        assert (a.status, a.headers["Location"]) == (301, "/ui/")
        assert a.headers["X-Consul-Default-ACL-Policy"] == "allow"  # on every answer

    run(scenario)


@pytest.mark.parametrize("path,message", [
    ("/v1/catalog/nodes?stale&consistent", "Cannot specify ?stale with ?consistent, conflicting semantics."),
    ("/v1/catalog/nodes?index=abc", "Invalid index"),
    ("/v1/health/service/web?index=1.5", "Invalid index"),
    ("/v1/kv/k?index=1&wait=abc", "Invalid wait time"),
    ("/v1/catalog/services?wait=5x", "Invalid wait time"),
])  # fmt: skip
def test_query_option_errors(path, message):
    async def scenario(api: InProcessAgent) -> None:
        a = await api.call("GET", path)
        assert (a.status, text(a)) == (400, message)

    run(scenario)


@pytest.mark.parametrize("path", ["/v1/catalog/nodes", "/v1/catalog/service/web", "/v1/health/service/web",
                                  "/v1/agent/services"])
def test_filter_errors(path):
    async def scenario(api: InProcessAgent) -> None:
        for expr in ("Node ==", "foo", 'ServiceMeta["unclosed" == "x"'):
            a = await api.call("GET", f"{path}?{urllib.parse.urlencode({'filter': expr})}")
            assert a.status == 400 and text(a).startswith("Failed to create boolean expression evaluator: ")
        a = await api.call("GET", f"/v1/catalog/nodes?{urllib.parse.urlencode({'filter': 'NoSuchField == 1'})}")
        assert text(a) == 'Failed to create boolean expression evaluator: Selector "NoSuchField" is not valid'

    run(scenario)


def test_json_is_pretty_in_dev_and_with_pretty():
    async def scenario(api: InProcessAgent) -> None:
        a = await api.call("GET", "/v1/catalog/nodes")  # -dev renders pretty, as Consul's -dev does
        assert a.body.startswith(b"[\n    {") and a.body.endswith(b"\n")
        b = await api.call("GET", "/v1/catalog/nodes?pretty")
        assert b.body == a.body  # the render cache gives the same bytes

    run(scenario)


# -- another datacenter --------------------------------------------------------------------------------


def test_a_request_from_another_datacenter_goes_through_the_same_dispatch():
    async def scenario(api: InProcessAgent) -> None:
        await api.call("PUT", "/v1/kv/shared", b"v")
        local = await api.call("GET", "/v1/kv/shared?raw")
        answer = await api.serve_exchange(Exchange("GET", "/v1/kv/shared", [("raw", "")]))
        assert [(r.raw_path, "raw" in r.query) for r in api.dispatched[-2:]] == [("/v1/kv/shared", True)] * 2
        assert isinstance(api.dispatched[-1], Request)
        assert (answer.status, answer.body) == (local.status, local.body) == (200, b"v")
        assert dict(answer.headers)["X-Consul-Index"] == local.headers["X-Consul-Index"]
        missing = await api.serve_exchange(Exchange("GET", "/v1/nope"))
        assert (missing.status, missing.body) == (404, b"Invalid URL path: not a recognized HTTP API endpoint")
        put = await api.serve_exchange(Exchange("PUT", "/v1/kv/from-dc2", [], [], b"hello"))
        assert put.status == 200 and json.loads(put.body) is True
        assert (await api.call("GET", "/v1/kv/from-dc2?raw")).body == b"hello"

    run(scenario)


def test_dc_names_another_datacenter_the_request_is_forwarded():
    async def scenario(api: InProcessAgent) -> None:
        async def dc2(exchange: Exchange) -> RemoteAnswer:
            return RemoteAnswer(200, [("X-Consul-Index", "77"), ("Content-Type", "application/json")], b'["dc2"]')

        api.ctx.federation.remote["dc2"] = dc2  # type: ignore[attr-defined]
        a = await api.call("GET", "/v1/catalog/nodes?dc=DC2&stale")
        assert (a.status, a.body, a.headers["X-Consul-Index"]) == (200, b'["dc2"]', "77")
        dc, exchange = api.ctx.federation.sent[-1]  # type: ignore[attr-defined]
        assert (dc, exchange.path, exchange.query) == ("dc2", "/v1/catalog/nodes", [("stale", "")])
        a = await api.call("GET", "/v1/kv/x?dc=dc3")
        assert (a.status, text(a)) == (500, "No path to datacenter")
        assert (await api.call("GET", "/v1/kv/x?dc=dc1")).status == 404  # this datacenter: served here
        a = await api.call("GET", "/v1/catalog/datacenters?dc=dc3")  # local only, as in Consul
        assert a.status == 200

    run(scenario)
