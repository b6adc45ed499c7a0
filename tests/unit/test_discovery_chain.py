"""/v1/discovery-chain/<service> over in-process HTTP: the compiled chain's shape for the
reference's samples (reference/connect.md §4.3, §4.4), routers, failover, redirects, overrides."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from http_inprocess import http_agent, inprocess, json_body

from appliance.connect.chain import compile_chain
from appliance.connect.entries import EntryError


async def _write(api: Any, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        answer = await api.call("PUT", "/v1/config", body)
        assert answer.status == 200, answer.body


@inprocess
async def test_default_chain_has_consul_shape():
    async with http_agent() as api:
        answer = await api.call("GET", "/v1/discovery-chain/web")
        td = json_body(await api.call("GET", "/v1/connect/ca/roots"))["TrustDomain"]
        assert json_body(answer) == {"Chain": {
            "ServiceName": "web", "Namespace": "default", "Partition": "default", "Datacenter": "dc1",
            "Default": True, "Protocol": "tcp", "StartNode": "resolver:web.default.default.dc1",
            "Nodes": {"resolver:web.default.default.dc1": {
                "Type": "resolver", "Name": "web.default.default.dc1",
                "Resolver": {"Default": True, "ConnectTimeout": "5s", "Target": "web.default.default.dc1"}}},
            "Targets": {"web.default.default.dc1": {
                "ID": "web.default.default.dc1", "Service": "web", "Namespace": "default", "Partition": "default",
                "Datacenter": "dc1", "MeshGateway": {}, "Subset": {}, "TransparentProxy": {}, "ConnectTimeout": "5s",
                "SNI": f"web.default.dc1.internal.{td}", "Name": f"web.default.dc1.internal.{td}"}},
            "AutoVirtualIPs": None, "ManualVirtualIPs": None}}
        assert (await api.call("GET", "/v1/discovery-chain/")).status in (400, 404)


@inprocess
async def test_splitter_over_resolver_subsets_in_another_datacenter():
    async with http_agent() as api:
        await _write(api, {"Kind": "service-defaults", "Name": "web", "Protocol": "http"},
                     {"Kind": "service-resolver", "Name": "web", "DefaultSubset": "v1", "Subsets": {
                         "v1": {"Filter": "Service.Meta.version == v1"},
                         "v2": {"Filter": "Service.Meta.version == v2"}}},
                     {"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 90, "ServiceSubset": "v1"},
                                                                             {"Weight": 10, "ServiceSubset": "v2"}]})
        chain = json_body(await api.call("GET", "/v1/discovery-chain/web?compile-dc=dc2"))["Chain"]
        assert chain["Protocol"] == "http" and chain["StartNode"] == "splitter:web" and "Default" not in chain
        splits = chain["Nodes"]["splitter:web"]["Splits"]
        assert [(s["Weight"], s["NextNode"]) for s in splits] == [
            (90, "resolver:v1.web.default.default.dc2"), (10, "resolver:v2.web.default.default.dc2")]
        assert chain["Nodes"]["resolver:v1.web.default.default.dc2"]["Resolver"] == {
            "ConnectTimeout": "5s", "Target": "v1.web.default.default.dc2"}
        target = chain["Targets"]["v2.web.default.default.dc2"]
        assert target["ServiceSubset"] == "v2" and target["Subset"] == {"Filter": "Service.Meta.version == v2"}
        assert target["SNI"].startswith("v2.web.default.dc2.internal.")


@inprocess
async def test_router_routes_then_the_catch_all():
    async with http_agent() as api:
        await _write(api, {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}},
                     {"Kind": "service-router", "Name": "web", "Routes": [
                         {"Match": {"HTTP": {"PathPrefix": "/admin"}}, "Destination": {"Service": "admin"}}]})
        chain = json_body(await api.call("GET", "/v1/discovery-chain/web"))["Chain"]
        routes = chain["Nodes"]["router:web"]["Routes"]
        assert [(r["Definition"]["Match"]["HTTP"]["PathPrefix"], r["NextNode"]) for r in routes] == [
            ("/admin", "resolver:admin.default.default.dc1"), ("/", "resolver:web.default.default.dc1")]
        assert set(chain["Targets"]) == {"admin.default.default.dc1", "web.default.default.dc1"}


@inprocess
async def test_failover_redirect_and_overrides():
    async with http_agent() as api:
        await _write(api, {"Kind": "service-resolver", "Name": "web", "ConnectTimeout": "15s",
                           "Failover": {"*": {"Datacenters": ["dc3", "dc4"]}}},
                     {"Kind": "service-resolver", "Name": "api", "Redirect": {"Service": "web", "Datacenter": "dc2"}})
        chain = json_body(await api.call("GET", "/v1/discovery-chain/web"))["Chain"]
        assert chain["Nodes"]["resolver:web.default.default.dc1"]["Resolver"] == {
            "ConnectTimeout": "15s", "Target": "web.default.default.dc1",
            "Failover": {"Targets": ["web.default.default.dc3", "web.default.default.dc4"]}}
        assert set(chain["Targets"]) == {f"web.default.default.{dc}" for dc in ("dc1", "dc3", "dc4")}
        redirected = json_body(await api.call("GET", "/v1/discovery-chain/api"))["Chain"]
        assert redirected["StartNode"] == "resolver:web.default.default.dc2"
        custom = await api.call("POST", "/v1/discovery-chain/web", {"OverrideConnectTimeout": "3s",
                                                                    "OverrideProtocol": "HTTP",
                                                                    "OverrideMeshGateway": {"Mode": "local"}})
        chain = json_body(custom)["Chain"]
        assert chain["Protocol"] == "http" and len(chain["CustomizationHash"]) == 8
        assert {t["ConnectTimeout"] for t in chain["Targets"].values()} == {"3s"}
        assert {t["MeshGateway"]["Mode"] for t in chain["Targets"].values()} == {"local"}
        bad = await api.call("POST", "/v1/discovery-chain/web", {"OverrideMeshGateway": {"Mode": "sideways"}})
        assert (bad.status, bad.body) == (400, b"Invalid OverrideMeshGateway.Mode parameter")
        # the GET answer is not the customized one
        assert "CustomizationHash" not in json_body(await api.call("GET", "/v1/discovery-chain/web"))["Chain"]


@inprocess
async def test_blocking_chain_read_wakes_on_an_entry_write():
    async with http_agent() as api:
        first = await api.call("GET", "/v1/discovery-chain/web")
        idx = first.headers["X-Consul-Index"]
        waiter = asyncio.create_task(api.call("GET", f"/v1/discovery-chain/web?index={idx}&wait=5s"))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await _write(api, {"Kind": "service-resolver", "Name": "web", "ConnectTimeout": "9s"})
        chain = json_body(await asyncio.wait_for(waiter, 5))["Chain"]
        assert chain["Targets"]["web.default.default.dc1"]["ConnectTimeout"] == "9s"


@inprocess
async def test_a_write_that_makes_a_redirect_loop_is_refused():
    async with http_agent() as api:
        await _write(api, {"Kind": "service-resolver", "Name": "a", "Redirect": {"Service": "b"}})
        answer = await api.call("PUT", "/v1/config", {"Kind": "service-resolver", "Name": "b",
                                                      "Redirect": {"Service": "a"}})
        assert (answer.status, answer.body) == (500, b"detected circular resolver redirect")
        assert api.ctx.store.connect.entry("service-resolver", "b") is None


def test_a_redirect_loop_is_refused():
    loop = {("service-resolver", "a"): {"Kind": "service-resolver", "Name": "a", "Redirect": {"Service": "b"}},
            ("service-resolver", "b"): {"Kind": "service-resolver", "Name": "b", "Redirect": {"Service": "a"}}}
    with pytest.raises(EntryError, match="detected circular resolver redirect"):
        compile_chain(loop, "a", "dc1", "x.consul")
