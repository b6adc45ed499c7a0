"""The mesh-aware catalog (reference/connect.md §5): service kinds, proxy configuration, sidecar
expansion and the Connect reads, through the one dispatch of an in-process agent.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from http_inprocess import InProcessAgent, http_agent, json_body

from appliance.config.loader import _plain_definition, parse_text
from appliance.local.definitions import DefinitionError, parse_service_definition
from appliance.local.state import LocalState
from appliance.state.snapshot import restore, snapshot


def run(scenario: Callable[[InProcessAgent], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with http_agent() as api:
            return await scenario(api)

    return asyncio.run(main())


SOCAT = {"name": "socat", "port": 8181, "connect": {"sidecar_service": {}}}
WEB = {"name": "web", "port": 8080, "connect": {"sidecar_service": {"proxy": {
    "upstreams": [{"destination_name": "socat", "local_bind_port": 9191}]}}}}


def test_sidecar_registration_expands_with_consuls_defaults():
    async def scenario(api: InProcessAgent) -> None:
        assert (await api.call("PUT", "/v1/agent/service/register", SOCAT)).status == 200
        assert (await api.call("PUT", "/v1/agent/service/register", WEB)).status == 200
        services = json_body(await api.call("GET", "/v1/agent/services"))
        assert sorted(services) == ["socat", "socat-sidecar-proxy", "web", "web-sidecar-proxy"]
        side = json_body(await api.call("GET", "/v1/agent/service/socat-sidecar-proxy"))
        assert side["Kind"] == "connect-proxy" and side["Service"] == "socat-sidecar-proxy"
        assert side["Port"] == 21000
        assert side["Proxy"] == {"DestinationServiceName": "socat", "DestinationServiceID": "socat",
                                 "LocalServiceAddress": "127.0.0.1", "LocalServicePort": 8181,
                                 "MeshGateway": {}, "Expose": {}}
        web_side = services["web-sidecar-proxy"]
        assert web_side["Port"] == 21001
        assert web_side["Proxy"]["Upstreams"] == [{"DestinationType": "service", "DestinationName": "socat",
                                                   "Datacenter": "", "LocalBindPort": 9191, "MeshGateway": {}}]
        assert "Proxy" not in services["socat"] and "Connect" not in services["socat"]
        checks = json_body(await api.call("GET", "/v1/agent/checks"))
        tcp, alias = checks["service:socat-sidecar-proxy:1"], checks["service:socat-sidecar-proxy:2"]
        assert (tcp["Name"], tcp["Type"], tcp["Interval"]) == ("Connect Sidecar Listening", "tcp", "10s")
        assert (alias["Name"], alias["Type"]) == ("Connect Sidecar Aliasing socat", "alias")

        [inst] = json_body(await api.call("GET", "/v1/catalog/service/socat-sidecar-proxy"))
        assert inst["ServiceKind"] == "connect-proxy"
        assert inst["ServiceProxy"]["DestinationServiceName"] == "socat" and inst["ServiceProxy"]["Mode"] == ""
        [conn] = json_body(await api.call("GET", "/v1/catalog/connect/socat"))
        assert (conn["ServiceName"], conn["ServicePort"]) == ("socat-sidecar-proxy", 21000)
        assert json_body(await api.call("GET", "/v1/catalog/connect/nothing")) == []
        [csn] = json_body(await api.call("GET", "/v1/health/connect/socat"))
        assert csn["Service"]["ID"] == "socat-sidecar-proxy"
        assert {c["CheckID"] for c in csn["Checks"]} >= {"service:socat-sidecar-proxy:1",
                                                         "service:socat-sidecar-proxy:2"}
        found = json_body(await api.call(
            "GET", "/v1/agent/services?filter=" + urllib.parse.quote('Proxy.DestinationServiceName == "socat"')))
        assert list(found) == ["socat-sidecar-proxy"]
        found = json_body(await api.call(
            "GET", "/v1/catalog/connect/socat?filter=" + urllib.parse.quote('ServiceProxy.LocalServicePort == 8181')))
        assert [f["ServiceID"] for f in found] == ["socat-sidecar-proxy"]
        # the listener is not up yet: the TCP check is critical, so ?passing has nothing
        assert json_body(await api.call("GET", "/v1/health/connect/socat?passing")) == []

        # deregistering the parent takes its sidecar with it; the port is free again
        assert (await api.call("PUT", "/v1/agent/service/deregister/socat")).status == 200
        services = json_body(await api.call("GET", "/v1/agent/services"))
        assert sorted(services) == ["web", "web-sidecar-proxy"]
        assert json_body(await api.call("GET", "/v1/catalog/connect/socat")) == []
        db = {"name": "db", "port": 5432, "connect": {"sidecar_service": {}}}
        assert (await api.call("PUT", "/v1/agent/service/register", db)).status == 200
        assert json_body(await api.call("GET", "/v1/agent/service/db-sidecar-proxy"))["Port"] == 21000

    run(scenario)


def test_a_blocking_connect_read_wakes_when_a_proxy_registers():
    async def scenario(api: InProcessAgent) -> None:
        first = await api.call("GET", "/v1/health/connect/socat")
        index = first.headers["X-Consul-Index"]
        parked = asyncio.ensure_future(api.call("GET", f"/v1/health/connect/socat?index={index}&wait=5s"))
        await asyncio.sleep(0.1)
        assert not parked.done()
        assert (await api.call("PUT", "/v1/agent/service/register", SOCAT)).status == 200
        answer = await asyncio.wait_for(parked, 5)
        assert [csn["Service"]["ID"] for csn in json_body(answer)] == ["socat-sidecar-proxy"]
        assert int(answer.headers["X-Consul-Index"]) > int(index)

    run(scenario)


def test_proxy_validation_refuses_with_consuls_texts():
    async def scenario(api: InProcessAgent) -> None:
        a = await api.call("PUT", "/v1/agent/service/register", {"Name": "p", "Kind": "connect-proxy"})
        assert a.status == 400
        assert a.body.decode() == (
            "Validation failed: 2 errors occurred:\n"
            "\t* Proxy.DestinationServiceName must be non-empty for Connect proxy services\n"
            "\t* Port or SocketPath must be set for a Connect proxy\n\n")
        a = await api.call("PUT", "/v1/agent/service/register", {
            "Name": "p", "Kind": "connect-proxy", "Port": 2000,
            "Proxy": {"DestinationServiceName": "web", "Upstreams": [{"DestinationName": "db"}]}})
        assert a.status == 400 and "upstream local bind port or local socket path" in a.body.decode()
        a = await api.call("PUT", "/v1/agent/service/register", {"Name": "p", "Proxy": {"Upstreams": 3}})
        assert a.status == 400 and a.body.decode().startswith("Request decode failed: json: cannot unmarshal number")
        assert json_body(await api.call("GET", "/v1/agent/services")) == {}

    run(scenario)


def test_catalog_register_keeps_kind_proxy_and_native():
    async def scenario(api: InProcessAgent) -> None:
        a = await api.call("PUT", "/v1/catalog/register", {
            "Node": "n2", "Address": "127.0.0.2",
            "Service": {"Kind": "connect-proxy", "Service": "api-proxy", "Port": 20000,
                        "Proxy": {"DestinationServiceName": "api", "LocalServicePort": 9000,
                                  "Upstreams": [{"DestinationName": "db", "LocalBindPort": 7000}]}}})
        assert a.status == 200, a.body
        a = await api.call("PUT", "/v1/catalog/register", {
            "Node": "n3", "Address": "127.0.0.3", "Service": {"Service": "api", "Port": 9443,
                                                              "Connect": {"Native": True}}})
        assert a.status == 200, a.body
        conn = json_body(await api.call("GET", "/v1/catalog/connect/api"))
        assert [(c["Node"], c["ServiceName"], c["ServiceKind"]) for c in conn] == [
            ("n2", "api-proxy", "connect-proxy"), ("n3", "api", "")]
        assert conn[1]["ServiceConnect"] == {"Native": True}
        assert conn[0]["ServiceProxy"]["Upstreams"][0]["DestinationName"] == "db"
        [csn] = json_body(await api.call("GET", "/v1/health/service/api-proxy"))
        assert csn["Service"]["Kind"] == "connect-proxy"
        assert csn["Service"]["Proxy"]["LocalServicePort"] == 9000

    run(scenario)


def test_gateway_kinds_are_kept():
    async def scenario(api: InProcessAgent) -> None:
        a = await api.call("PUT", "/v1/agent/service/register", {"Name": "mgw", "Kind": "mesh-gateway", "Port": 8443})
        assert a.status == 200, a.body
        svc = json_body(await api.call("GET", "/v1/agent/service/mgw"))
        assert svc["Kind"] == "mesh-gateway" and svc["Proxy"] == {"MeshGateway": {}, "Expose": {}}
        a = await api.call("PUT", "/v1/agent/service/register", {"Name": "x", "Kind": "mesh-gateway"})
        assert a.status == 400 and "Port must be non-zero for a mesh-gateway" in a.body.decode()
        a = await api.call("PUT", "/v1/agent/service/register", {"Name": "x", "Kind": "sidecar"})
        assert a.status == 400 and a.body.decode() == 'Invalid service kind: "sidecar"'

    run(scenario)


def test_sidecar_port_range_and_reload():
    state = LocalState("n1", "dc1", sidecar_min_port=21000, sidecar_max_port=21001)
    for name in ("a", "b"):
        state.add_service(parse_service_definition({"name": name, "port": 1, "connect": {"sidecar_service": {}}}))
    with pytest.raises(DefinitionError, match=r"none left in the configured range \[21000, 21001\]"):
        state.add_service(parse_service_definition({"name": "c", "port": 1, "connect": {"sidecar_service": {}}}))
    assert "c" not in state.services
    # a reload keeps each sidecar's port even when a lower one is free
    defs = [parse_service_definition({"name": "b", "port": 1, "connect": {"sidecar_service": {}}})]
    state.replace_config_definitions(defs, [], 0.0)  # api services stay; nothing was from config
    state.remove_service("a")
    state.replace_config_definitions(defs, [], 0.0)
    assert state.services["b-sidecar-proxy"].definition.port == 21001
    state.sidecar_min_port = state.sidecar_max_port = 0
    with pytest.raises(DefinitionError, match="auto-assignment disabled in config"):
        state.add_service(parse_service_definition({"name": "d", "port": 1, "connect": {"sidecar_service": {}}}))


def test_hcl_service_definition_with_sidecar_upstream_blocks():
    text = '''service {
      name = "web"
      port = 8080
      connect {
        sidecar_service {
          port = 21500
          proxy {
            upstreams { destination_name = "socat"  local_bind_port = 9191 }
            upstreams { destination_name = "db"  local_bind_port = 9192 }
            config { protocol = "tcp" }
          }
        }
      }
    }'''
    [raw] = _plain_definition(parse_text(text, "hcl", "web.hcl")["service"])
    state = LocalState("n1", "dc1")
    state.add_service(parse_service_definition(raw, from_config=True), source="config")
    side = state.services["web-sidecar-proxy"].definition
    assert side.port == 21500 and side.sidecar_of == "web"
    assert side.proxy is not None
    assert [u["DestinationName"] for u in side.proxy["Upstreams"]] == ["socat", "db"]
    assert side.proxy["Config"] == {"protocol": "tcp"}
    assert state.checks["service:web-sidecar-proxy:1"].definition.tcp == "127.0.0.1:21500"


def test_snapshot_keeps_the_connect_index():
    async def scenario(api: InProcessAgent) -> None:
        assert (await api.call("PUT", "/v1/agent/service/register", SOCAT)).status == 200
        store = restore(snapshot(api.ctx.store))
        [(node, svc)] = store.connect_instances("SOCAT")
        assert svc["ID"] == "socat-sidecar-proxy" and svc["Proxy"]["LocalServicePort"] == 8181

    run(scenario)


def test_dns_connect_names_answer_the_proxies():
    import random

    from dnslib import DNSRecord

    from appliance.dns.answers import Answerer, Settings
    from appliance.state.fsm import FSM
    from appliance.state.store import Store

    store = Store()
    fsm = FSM(store)
    state = LocalState("n1", "dc1")
    state.add_service(parse_service_definition({"name": "socat", "port": 8181,
                                                "connect": {"sidecar_service": {}}}))
    services, checks = state.catalog_view()
    for n, sid in enumerate(services, start=1):
        cmd = {"Type": "register", "Node": "n1", "Address": "127.0.0.7", "Datacenter": "dc1",
               "Service": services[sid], "Checks": []}
        assert fsm.apply(n, cmd).result is True

    def ask(name: str, qtype: str) -> DNSRecord:
        q = DNSRecord.question(name, qtype)
        reply = Answerer(Settings()).respond(bytes(q.pack()), store, random.Random(1), 0.0)
        assert reply.wire is not None
        return DNSRecord.parse(reply.wire)

    srv = ask("socat.connect.consul", "SRV")
    assert [r.rdata.port for r in srv.rr] == [21000]
    assert [str(r.rdata) for r in ask("socat.connect.consul", "A").rr] == ["127.0.0.7"]
    assert ask("nothing.connect.consul", "A").header.rcode == 3  # NXDOMAIN
    # the plain name still answers the app's own port
    assert [r.rdata.port for r in ask("socat.service.consul", "SRV").rr] == [8181]

    # <service>.ingress: the ingress gateways whose config entry exposes it
    assert ask("socat.ingress.consul", "A").header.rcode == 3
    gw = {"ID": "edge", "Service": "edge", "Kind": "ingress-gateway", "Tags": [], "Address": "127.0.0.9",
          "Meta": {}, "Port": 8443, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
          "Proxy": {}, "Connect": {}, "PeerName": ""}
    assert fsm.apply(10, {"Type": "register", "Node": "n1", "Address": "127.0.0.7", "Datacenter": "dc1",
                          "Service": gw, "Checks": []}).result is True
    entry = {"Kind": "ingress-gateway", "Name": "edge",
             "Listeners": [{"Port": 8080, "Protocol": "tcp", "Services": [{"Name": "socat"}]}]}
    assert fsm.apply(11, {"Type": "config_entry", "Op": "set", "Kind": "ingress-gateway", "Name": "edge",
                          "Entry": entry}).result is True
    assert [str(r.rdata) for r in ask("socat.ingress.consul", "A").rr] == ["127.0.0.9"]
    assert [r.rdata.port for r in ask("socat.ingress.consul", "SRV").rr] == [8443]


async def _entry(api: InProcessAgent, entry: dict) -> None:
    """A config entry written through the log (the `config_entry` command /v1/config proposes)."""
    cmd = {"Type": "config_entry", "Op": "set", "Kind": entry["Kind"], "Name": entry["Name"], "Entry": entry}
    assert await api.raft.propose(cmd) is True


def test_gateway_services_and_health_ingress():
    async def scenario(api: InProcessAgent) -> None:
        for body in ({"Name": "api", "Port": 9000}, {"Name": "web", "Port": 8080},
                     {"Name": "edge", "Kind": "ingress-gateway", "Port": 8443},
                     {"Name": "egress", "Kind": "terminating-gateway", "Port": 8444}):
            assert (await api.call("PUT", "/v1/agent/service/register", body)).status == 200, body
        first = await api.call("GET", "/v1/health/ingress/api")
        assert json_body(first) == []
        parked = asyncio.ensure_future(api.call(
            "GET", f"/v1/health/ingress/api?index={first.headers['X-Consul-Index']}&wait=5s"))
        await asyncio.sleep(0.1)
        await _entry(api, {"Kind": "ingress-gateway", "Name": "edge", "Listeners": [
            {"Port": 8080, "Protocol": "http", "Services": [{"Name": "api", "Hosts": ["api.example.com"]}]}]})
        woke = await asyncio.wait_for(parked, 5)
        assert [csn["Service"]["ID"] for csn in json_body(woke)] == ["edge"]
        assert json_body(await api.call("GET", "/v1/health/ingress/web")) == []

        [linked] = json_body(await api.call("GET", "/v1/catalog/gateway-services/edge"))
        assert linked["Gateway"] == {"Name": "edge"} and linked["Service"] == {"Name": "api"}
        assert (linked["GatewayKind"], linked["Port"], linked["Protocol"], linked["Hosts"]) == (
            "ingress-gateway", 8080, "http", ["api.example.com"])
        assert "FromWildcard" not in linked and linked["ModifyIndex"] >= linked["CreateIndex"] > 0

        await _entry(api, {"Kind": "terminating-gateway", "Name": "egress",
                           "Services": [{"Name": "*", "SNI": "db.example.com"}]})
        linked = json_body(await api.call("GET", "/v1/catalog/gateway-services/egress"))
        assert [(g["Service"]["Name"], g["SNI"], g["FromWildcard"]) for g in linked] == [
            ("api", "db.example.com", True), ("web", "db.example.com", True)]
        assert "Port" not in linked[0]
        assert json_body(await api.call("GET", "/v1/catalog/gateway-services/nothing")) == []

    run(scenario)


def test_prepared_query_with_connect_answers_the_proxies():
    async def scenario(api: InProcessAgent) -> None:
        for service in ({"Service": "socat", "Port": 8181},
                        {"Kind": "connect-proxy", "Service": "socat-proxy", "Port": 21000,
                         "Proxy": {"DestinationServiceName": "socat"}}):
            a = await api.call("PUT", "/v1/catalog/register",
                               {"Node": "n2", "Address": "127.0.0.2", "Service": service})
            assert a.status == 200, a.body
        a = await api.call("POST", "/v1/query", {"Name": "echo", "Service": {"Service": "socat"}})
        assert a.status == 200, a.body
        plain = json_body(await api.call("GET", "/v1/query/echo/execute"))
        assert [n["Service"]["ID"] for n in plain["Nodes"]] == ["socat"]
        mesh = json_body(await api.call("GET", "/v1/query/echo/execute?connect=true"))
        assert [(n["Service"]["ID"], n["Service"]["Port"]) for n in mesh["Nodes"]] == [("socat-proxy", 21000)]

    run(scenario)


def test_acl_registering_a_sidecar_needs_write_on_it():
    from tests.unit.test_acl_http import HCL, ROOT, make_token

    async def main() -> None:
        async with http_agent("-hcl", HCL) as api:
            narrow = await make_token(api, 'service "socat" { policy = "write" }', name="narrow")
            wide = await make_token(api, 'service_prefix "socat" { policy = "write" }', name="wide")
            a = await api.call("PUT", "/v1/agent/service/register", SOCAT,
                               headers={"X-Consul-Token": narrow["SecretID"]})
            assert a.status == 403 and "service:write" in a.body.decode() and "socat-sidecar-proxy" in a.body.decode()
            a = await api.call("PUT", "/v1/agent/service/register", SOCAT,
                               headers={"X-Consul-Token": wide["SecretID"]})
            assert a.status == 200, a.body
            a = await api.call("GET", "/v1/agent/services", headers={"X-Consul-Token": ROOT})
            assert sorted(json_body(a)) == ["socat", "socat-sidecar-proxy"]

    asyncio.run(main())
