"""Config entries and intentions over in-process HTTP (reference/connect.md §2, §3): CRUD, CAS,
Consul's validation texts, discovery-chain protocol checks, precedence, match, check, authorize,
and the agent's bootstrap entries."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from http_inprocess import http_agent, inprocess, json_body

from appliance.connect import intentions
from appliance.http.handlers.config import bootstrap
from appliance.state.snapshot import restore, snapshot


def text(answer: Any) -> tuple[int, str]:
    return answer.status, (answer.body or b"").decode()


@inprocess
async def test_config_entry_write_read_list_delete_with_cas():
    async with http_agent() as api:
        put = await api.call("PUT", "/v1/config", {"kind": "service-defaults", "name": "web", "protocol": "HTTP",
                                                   "mesh_gateway": {"mode": "local"}})
        assert (put.status, json_body(put)) == (200, True)
        got = await api.call("GET", "/v1/config/service-defaults/web")
        entry = json_body(got)
        assert entry == {"Kind": "service-defaults", "Name": "web", "Protocol": "http",
                         "MeshGateway": {"Mode": "local"}, "CreateIndex": entry["CreateIndex"],
                         "ModifyIndex": entry["ModifyIndex"]}
        assert json_body(await api.call("GET", "/v1/config/service-defaults")) == [entry]
        assert json_body(await api.call("GET", "/v1/config/proxy-defaults")) == []
        # cas=0 creates only; a stale index changes nothing
        stale = await api.call("PUT", "/v1/config?cas=0", {"Kind": "service-defaults", "Name": "web"})
        assert json_body(stale) is False
        ok = await api.call("PUT", f"/v1/config?cas={entry['ModifyIndex']}",
                            {"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"})
        assert json_body(ok) is True
        assert json_body(await api.call("GET", "/v1/config/service-defaults/web"))["Protocol"] == "grpc"
        assert json_body(await api.call("DELETE", "/v1/config/service-defaults/web?cas=1")) is False
        gone = await api.call("DELETE", "/v1/config/service-defaults/web")
        assert (gone.status, json_body(gone)) == (200, {})
        assert text(await api.call("GET", "/v1/config/service-defaults/web")) == (
            404, 'Config entry not found for "service-defaults" / "web"')
        assert text(await api.call("GET", "/v1/config/")) == (404, "Must provide either a kind or both kind and name")


@inprocess
async def test_blocking_read_of_a_kind_wakes_on_a_write():
    async with http_agent() as api:
        first = await api.call("GET", "/v1/config/service-resolver")
        idx = first.headers["X-Consul-Index"]
        waiter = asyncio.create_task(api.call("GET", f"/v1/config/service-resolver?index={idx}&wait=5s"))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await api.call("PUT", "/v1/config", {"Kind": "service-resolver", "Name": "web", "ConnectTimeout": "15s"})
        woke = await asyncio.wait_for(waiter, 5)
        assert [e["ConnectTimeout"] for e in json_body(woke)] == ["15s"]
        assert int(woke.headers["X-Consul-Index"]) > int(idx)


@pytest.mark.parametrize("body,status,message", [
    ({"Name": "web"}, 400, "Request decoding failed: Payload does not contain a kind/Kind key at the top level"),
    ({"Kind": 3, "Name": "web"}, 400, "Request decoding failed: Kind value in payload is not a string"),
    ({"Kind": "nope", "Name": "web"}, 400, "Request decoding failed: invalid config entry kind: nope"),
    ({"Kind": "service-defaults", "Name": "web", "Bogus": 1}, 400,
     'Request decoding failed: 1 error occurred:\n\t* invalid config key "Bogus"\n\n'),
    ({"Kind": "service-defaults", "Name": "web", "Protocol": 7}, 400,
     "Request decoding failed: json: cannot unmarshal number into Go struct field service-defaults.Protocol of "
     "type string"),
    ({"Kind": "service-defaults", "Name": "*"}, 500,
     "service-defaults name must be the name of a service, and not a wildcard"),
    ({"Kind": "service-defaults"}, 500, "Name is required"),
    ({"Kind": "proxy-defaults", "Name": "web"}, 500, 'invalid name ("web"), only "global" is supported'),
    ({"Kind": "service-defaults", "Name": "web", "MutualTLSMode": "loose"}, 500,
     'Invalid MutualTLSMode "loose". Must be one of "", "strict", or "permissive".'),
    ({"Kind": "service-resolver", "Name": "web", "DefaultSubset": "v3"}, 500,
     'DefaultSubset "v3" is not a valid subset'),
    ({"Kind": "service-resolver", "Name": "web", "Redirect": {"Service": "a"}, "Failover": {"*": {"Service": "b"}}},
     500, "Redirect and Failover cannot both be set"),
    ({"Kind": "service-router", "Name": "web", "Routes": [{"Match": {"HTTP": {"PathPrefix": "/a"}}}]}, 500,
     'discovery chain "web" uses a protocol "tcp" that does not permit advanced routing or splitting behavior'),
    ({"Kind": "ingress-gateway", "Name": "in", "Listeners": [{"Port": 8080, "Services": [{"Name": "a"}]},
                                                              {"Port": 8080, "Services": [{"Name": "b"}]}]}, 500,
     "port 8080 declared on two listeners"),
    ({"Kind": "ingress-gateway", "Name": "in", "Listeners": [{"Port": 8080, "Protocol": "udp",
                                                              "Services": [{"Name": "a"}]}]}, 500,
     "protocol must be 'tcp', 'http', 'http2', or 'grpc'. 'udp' is an unsupported protocol"),
    ({"Kind": "ingress-gateway", "Name": "in", "Listeners": [{"Port": 8080}]}, 500,
     "No service declared for listener with port 8080"),
    ({"Kind": "ingress-gateway", "Name": "in", "Listeners": [{"Port": 8080, "Services": [{"Name": "a"},
                                                                                         {"Name": "b"}]}]}, 500,
     "Multiple services per listener are only supported for L7 protocols, 'http', 'grpc' and 'http2' "
     "(listener on port 8080)"),
    ({"Kind": "ingress-gateway", "Name": "in", "Listeners": [{"Port": 8080, "Services": [{"Name": "*"}]}]}, 500,
     "Wildcard service name is only valid for protocol = 'http' (listener on port 8080)"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web"}]}, 500,
     "Sources[0].Action must be set to 'allow' or 'deny'"),
    ({"Kind": "service-intentions", "Name": "*", "Sources": [
        {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}]}, 500,
     "Sources[0].Permissions cannot be specified on intentions with wildcarded destinations"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "allow"},
                                                               {"Name": "web", "Action": "deny"}]}, 500,
     'Sources[1] defines "web" more than once'),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "we*", "Action": "allow"}]}, 500,
     "Sources[0].Name: wildcard character '*' cannot be used with partial values"),
])
@inprocess
async def test_bad_entries_get_consul_texts_and_change_nothing(body: dict[str, Any], status: int, message: str):
    async with http_agent() as api:
        before = dict(api.ctx.store.connect.entries)
        assert text(await api.call("PUT", "/v1/config", body)) == (status, message)
        assert api.ctx.store.connect.entries == before


@inprocess
async def test_splitter_needs_l7_protocol_and_its_defaults_cannot_go():
    async with http_agent() as api:
        await api.call("PUT", "/v1/config", {"Kind": "proxy-defaults", "Name": "global",
                                             "Config": {"protocol": "http"}})
        split = {"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 90, "ServiceSubset": "v1"},
                                                                        {"Weight": 10, "ServiceSubset": "v2"}]}
        assert text(await api.call("PUT", "/v1/config", {**split, "Splits": [{"Weight": 80}]})) == (
            500, "the sum of all split weights must be 100, not 80.000000")
        assert json_body(await api.call("PUT", "/v1/config", split)) is True
        # making web tcp, or removing the global http default, would break web's chain
        assert text(await api.call("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "web",
                                                         "Protocol": "tcp"}))[0] == 500
        refused = await api.call("DELETE", "/v1/config/proxy-defaults/global")
        assert text(refused) == (500, 'discovery chain "web" uses a protocol "tcp" that does not permit advanced '
                                      "routing or splitting behavior")
        assert api.ctx.store.connect.entry("proxy-defaults", "global") is not None


@inprocess
async def test_legacy_intentions_are_service_intentions_entries():
    async with http_agent() as api:
        made = await api.call("POST", "/v1/connect/intentions",
                              {"SourceName": "web", "DestinationName": "db", "Action": "allow",
                               "Meta": {"team": "a"}, "Description": "web may read"})
        ident = json_body(made)["ID"]
        dup = await api.call("POST", "/v1/connect/intentions",
                             {"SourceName": "web", "DestinationName": "db", "Action": "deny"})
        assert text(dup) == (500, f"duplicate intention found: ALLOW default/web => default/db (ID: {ident}, "
                                  "Precedence: 9)")
        assert json_body(await api.call("PUT", "/v1/connect/intentions/exact?source=*&destination=db",
                                        {"Action": "deny"})) is True
        assert json_body(await api.call("PUT", "/v1/connect/intentions/exact?source=web&destination=*",
                                        {"Action": "deny"})) is True
        assert json_body(await api.call("PUT", "/v1/connect/intentions/exact?source=*&destination=*",
                                        {"Action": "allow"})) is True
        listed = json_body(await api.call("GET", "/v1/connect/intentions"))
        assert [(x["SourceName"], x["DestinationName"], x["Precedence"]) for x in listed] == [
            ("web", "db", 9), ("*", "db", 8), ("web", "*", 6), ("*", "*", 5)]
        denies = json_body(await api.call("GET", '/v1/connect/intentions?filter=Action%20%3D%3D%20"deny"'))
        assert [(x["SourceName"], x["DestinationName"]) for x in denies] == [("*", "db"), ("web", "*")]
        bad = await api.call("GET", "/v1/connect/intentions?filter=Nope%20%3D%3D%201")
        assert bad.status == 400 and b"Selector" in bad.body
        by_id = json_body(await api.call("GET", f"/v1/connect/intentions/{ident}"))
        assert by_id["Meta"] == {"team": "a"} and by_id["Description"] == "web may read"
        assert by_id["SourceNS"] == by_id["DestinationNS"] == "default" and by_id["SourceType"] == "consul"
        entry = json_body(await api.call("GET", "/v1/config/service-intentions/db"))
        assert [s["Name"] for s in entry["Sources"]] == ["web", "*"] and entry["Sources"][0]["LegacyID"] == ident
        match = json_body(await api.call("GET", "/v1/connect/intentions/match?by=destination&name=db&name=api"))
        assert [x["SourceName"] for x in match["db"]] == ["web", "*", "web", "*"]
        assert [x["DestinationName"] for x in match["api"]] == ["*", "*"]
        by_source = json_body(await api.call("GET", "/v1/connect/intentions/match?by=source&name=web"))
        assert [(x["SourceName"], x["DestinationName"]) for x in by_source["web"]] == [
            ("web", "db"), ("*", "db"), ("web", "*"), ("*", "*")]
        check = "/v1/connect/intentions/check?source={}&destination={}"
        checks = {(s, d): json_body(await api.call("GET", check.format(s, d)))
                  for s, d in (("web", "db"), ("api", "db"), ("web", "cache"), ("api", "cache"))}
        assert {k: v["Allowed"] for k, v in checks.items()} == {
            ("web", "db"): True, ("api", "db"): False, ("web", "cache"): False, ("api", "cache"): True}
        # update by ID moves the intention; delete by ID and exactly
        moved = await api.call("PUT", f"/v1/connect/intentions/{ident}",
                               {"SourceName": "web", "DestinationName": "db", "Action": "deny"})
        assert json_body(moved) == {"ID": ident}
        assert json_body(await api.call("GET", f"/v1/connect/intentions/{ident}"))["Action"] == "deny"
        assert json_body(await api.call("DELETE", f"/v1/connect/intentions/{ident}")) is True
        assert text(await api.call("GET", f"/v1/connect/intentions/{ident}")) == (404, "Intention not found")
        assert json_body(await api.call("DELETE", "/v1/connect/intentions/exact?source=*&destination=db")) is True
        assert api.ctx.store.connect.entry("service-intentions", "db") is None  # its last source went
        assert text(await api.call("GET", "/v1/connect/intentions/exact?source=*&destination=db")) == (
            404, "Intention not found")
        assert text(await api.call("GET", "/v1/connect/intentions/not-a-uuid"))[0] == 400


@pytest.mark.parametrize("target,status,message", [
    ("/v1/connect/intentions/match?name=db", 500, "required query parameter 'by' not set"),
    ("/v1/connect/intentions/match?by=both&name=db", 500, "'by' parameter must be one of 'source' or 'destination'"),
    ("/v1/connect/intentions/match?by=source", 500, "required query parameter 'name' not set"),
    ("/v1/connect/intentions/check?destination=db", 500, "required query parameter 'source' not set"),
    ("/v1/connect/intentions/exact?source=web", 500, "required query parameter 'destination' not set"),
])
@inprocess
async def test_intention_query_errors(target: str, status: int, message: str):
    async with http_agent() as api:
        assert text(await api.call("GET", target)) == (status, message)


@inprocess
async def test_authorize_decides_by_intentions_and_refuses_bad_identities():
    async with http_agent() as api:
        roots = json_body(await api.call("GET", "/v1/connect/ca/roots"))
        uri = f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web"
        ask = {"Target": "db", "ClientCertURI": uri}
        allowed = json_body(await api.call("POST", "/v1/agent/connect/authorize", ask))
        assert allowed == {"Authorized": True, "Reason": "Default behavior configured by ACLs"}
        await api.call("PUT", "/v1/connect/intentions/exact?source=web&destination=db", {"Action": "deny"})
        denied = json_body(await api.call("PUT", "/v1/agent/connect/authorize", ask))
        assert denied == {"Authorized": False,
                          "Reason": "Matched L4 intention: DENY default/web => default/db (Precedence: 9)"}
        await api.call("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "db", "Protocol": "http"})
        await api.call("PUT", "/v1/config", {"Kind": "service-intentions", "Name": "db", "Sources": [
            {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}]})
        l7 = json_body(await api.call("POST", "/v1/agent/connect/authorize", ask))
        assert l7["Authorized"] is False and l7["Reason"].startswith("Matched L7 intention: ")
        for body, message in (
                ({"ClientCertURI": uri}, "Target service must be specified"),
                ({"Target": "db", "ClientCertURI": "http://x"}, "ClientCertURI not a valid Connect identifier"),
                ({"Target": "db", "ClientCertURI": f"spiffe://{roots['TrustDomain']}/agent/client/dc/dc1/id/n1"},
                 "ClientCertURI not a valid Service identifier")):
            assert text(await api.call("POST", "/v1/agent/connect/authorize", body)) == (400, message)


def test_precedence_table():
    # reference/connect.md §2.3, the CE rows
    assert [intentions.precedence(s, d) for s, d in (("web", "db"), ("*", "db"), ("web", "*"), ("*", "*"))] == [
        9, 8, 6, 5]


@inprocess
async def test_bootstrap_entries_never_overwrite_and_survive_a_snapshot():
    async with http_agent() as api:
        await api.call("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"})
        await bootstrap(api.ctx.consensus, api.ctx.store, (
            {"kind": "proxy-defaults", "name": "global", "config": {"protocol": "http"}},
            {"kind": "service-defaults", "name": "web", "protocol": "http"},
            {"kind": "service-defaults", "name": "*"}), logging.getLogger("test"))
        store = api.ctx.store
        assert store.connect.entry("proxy-defaults", "global")["Config"] == {"protocol": "http"}
        assert store.connect.entry("service-defaults", "web")["Protocol"] == "grpc"  # written later: kept
        copy = restore(snapshot(store))
        assert copy.connect.entries == store.connect.entries


def test_bootstrap_blocks_in_hcl_and_a_bad_one_stops_the_start(tmp_path):
    from appliance.config import build_agent_config
    from appliance.config.errors import ConfigError

    (tmp_path / "entries.hcl").write_text('''
config_entries {
  bootstrap {
    kind = "proxy-defaults"
    name = "global"
    config { protocol = "http" }
  }
  bootstrap {
    kind = "service-defaults"
    name = "web"
    protocol = "grpc"
  }
}
''')
    cfg = build_agent_config(["-dev", "-config-file", str(tmp_path / "entries.hcl")])
    assert [(e["kind"], e["name"]) for e in cfg.config_entries_bootstrap] == [
        ("proxy-defaults", "global"), ("service-defaults", "web")]
    (tmp_path / "bad.hcl").write_text('config_entries { bootstrap = [ { kind = "service-splitter" name = "web" '
                                      'splits = [ { weight = 50 } ] } ] }')
    with pytest.raises(ConfigError, match=r"config_entries.bootstrap\[0\]: the sum of all split weights must be 100"):
        build_agent_config(["-dev", "-config-file", str(tmp_path / "bad.hcl")])


@inprocess
async def test_merge_central_config_on_catalog_and_health_reads():
    # reference/connect.md §3.5: proxies get proxy-defaults and their destination's service-defaults
    async with http_agent() as api:
        proxy = {"Kind": "connect-proxy", "Service": "web-proxy", "ID": "web-proxy", "Port": 21000,
                 "Proxy": {"DestinationServiceName": "web", "Config": {"foo": "own"},
                           "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]}}
        assert (await api.call("PUT", "/v1/catalog/register", {"Node": "n9", "Address": "127.0.0.9",
                                                               "Service": proxy})).status == 200
        for entry in ({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http", "foo": "central"}},
                      {"Kind": "service-defaults", "Name": "web", "MeshGateway": {"Mode": "local"},
                       "UpstreamConfig": {"Defaults": {"ConnectTimeoutMs": 500}}},
                      {"Kind": "service-defaults", "Name": "db", "Protocol": "grpc"}):
            assert (await api.call("PUT", "/v1/config", entry)).status == 200
        plain = json_body(await api.call("GET", "/v1/catalog/service/web-proxy"))[0]["ServiceProxy"]
        assert plain["Config"] == {"foo": "own"}
        merged = json_body(await api.call("GET", "/v1/catalog/service/web-proxy?merge-central-config"))
        got = merged[0]["ServiceProxy"]
        assert got["Config"] == {"protocol": "http", "foo": "own"} and got["MeshGateway"] == {"Mode": "local"}
        assert got["Upstreams"][0]["Config"] == {"protocol": "grpc", "connect_timeout_ms": 500}
        health = json_body(await api.call("GET", "/v1/health/connect/web?merge-central-config"))
        assert health[0]["Service"]["Proxy"]["Config"]["protocol"] == "http"
        # a blocking merged read wakes when the central config changes
        first = await api.call("GET", "/v1/health/connect/web?merge-central-config")
        idx = first.headers["X-Consul-Index"]
        waiter = asyncio.create_task(api.call("GET", f"/v1/health/connect/web?merge-central-config&index={idx}"))
        await asyncio.sleep(0.05)
        await api.call("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "web", "Protocol": "http2"})
        woke = json_body(await asyncio.wait_for(waiter, 5))
        assert woke[0]["Service"]["Proxy"]["Config"]["protocol"] == "http2"
        # a typical service is returned as stored
        await api.call("PUT", "/v1/catalog/register", {"Node": "n9", "Address": "127.0.0.9",
                                                        "Service": {"Service": "web", "Port": 80}})
        typical = json_body(await api.call("GET", "/v1/catalog/service/web?merge-central-config"))[0]
        assert typical["ServiceProxy"] == json_body(await api.call("GET", "/v1/catalog/service/web"))[0]["ServiceProxy"]
