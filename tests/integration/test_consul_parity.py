"""The API surface a Consul client meets in its first hour, against a real `-dev` agent: host info,
usage, the xDS key of /v1/agent/self, catalog writes naming another datacenter, `?dc=` on events,
operator and snapshot, the raft configuration index, peering and enterprise-only endpoints as
Consul CE answers them, and the banner listing only what listens."""

from __future__ import annotations

from typing import Any

from tests.conftest import AgentProcess, http, wait_until

NO_PATH = (500, b"No path to datacenter")


def _status_body(agent: AgentProcess, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    status, _, data = http(method, agent.url + path, body)
    return status, data.strip()


def test_host_usage_and_xds(agent: AgentProcess) -> None:
    status, _, host = agent.get_json("/v1/agent/host")
    assert status == 200
    assert set(host) == {"Memory", "CPU", "Host", "Disk", "CollectionTime", "Errors"}
    assert host["Memory"]["total"] > 0 and 0 <= host["Memory"]["usedPercent"] <= 100
    assert host["CPU"] and {"cpu", "modelName", "mhz", "flags"} <= set(host["CPU"][0])
    assert host["Host"]["os"] == "linux" and host["Host"]["hostname"]
    assert host["Disk"]["total"] > 0 and host["Errors"] is None

    agent.put("/v1/agent/service/register", {"Name": "web", "ID": "web1", "Port": 80})
    agent.put("/v1/agent/service/register", {"Name": "web", "ID": "web2", "Port": 81})
    status, headers, usage = agent.get_json("/v1/operator/usage")
    assert status == 200 and int(headers["X-Consul-Index"]) >= 1
    dc1 = usage["Usage"]["dc1"]
    assert dc1["Services"] == 2 and dc1["ServiceInstances"] == 3  # consul, web x2
    assert dc1["BillableServiceInstances"] == 2 and dc1["Nodes"] == 1
    assert dc1["ConnectServiceInstances"] == {k: 0 for k in (
        "api-gateway", "connect-native", "connect-proxy", "ingress-gateway", "mesh-gateway", "terminating-gateway")}
    status, _, usage = agent.get_json("/v1/operator/usage?global")
    assert status == 200 and list(usage["Usage"]) == ["dc1"]

    _, _, info = agent.get_json("/v1/agent/self")
    assert info["xDS"] == {"SupportedProxies": {"envoy": []}, "Port": -1, "Ports": {"Plaintext": -1, "TLS": -1}}


def test_other_datacenters(agent: AgentProcess) -> None:
    reg = {"Datacenter": "dc9", "Node": "far", "Address": "10.0.0.9"}
    assert _status_body(agent, "PUT", "/v1/catalog/register", reg) == NO_PATH
    assert _status_body(agent, "PUT", "/v1/catalog/deregister", {"Datacenter": "dc9", "Node": "far"}) == NO_PATH
    _, _, nodes = agent.get_json("/v1/catalog/nodes")
    assert [n["Node"] for n in nodes] == ["test-node"]  # nothing landed here
    assert _status_body(agent, "PUT", "/v1/catalog/register", {**reg, "Datacenter": "DC1"}) == (200, b"true")
    assert _status_body(agent, "PUT", "/v1/catalog/deregister", {"Datacenter": "dc1", "Node": "far"}) == (200, b"true")

    for method, path in (("PUT", "/v1/event/fire/deploy?dc=dc9"), ("GET", "/v1/operator/raft/configuration?dc=dc9"),
                         ("GET", "/v1/operator/autopilot/configuration?dc=dc9"), ("GET", "/v1/snapshot?dc=dc9"),
                         ("GET", "/v1/operator/usage?dc=dc9")):
        assert _status_body(agent, method, path) == NO_PATH, path
    status, _ = _status_body(agent, "GET", "/v1/event/list?dc=dc9")  # the agent's own list, as Consul
    assert status == 200
    status, _, conf = agent.get_json("/v1/operator/raft/configuration?dc=dc1")
    assert status == 200 and conf["Index"] == 0  # a -dev server's bootstrap configuration


def test_peering_and_enterprise_endpoints(agent: AgentProcess) -> None:
    assert _status_body(agent, "GET", "/v1/peerings") == (200, b"[]")
    assert _status_body(agent, "GET", "/v1/peering/other") == (404, b'Peering not found for "other"')
    assert _status_body(agent, "DELETE", "/v1/peering/other") == (200, b"")
    assert agent.get_json("/v1/catalog/services?peer=other")[2] == {}
    assert agent.get_json("/v1/catalog/service/consul?peer=other")[2] == []
    assert agent.get_json("/v1/catalog/nodes?peer=other")[2] == []
    assert agent.get_json("/v1/health/service/consul?peer=other")[2] == []
    assert agent.get_json("/v1/health/checks/consul?peer=other")[2] == []
    assert agent.get_json("/v1/catalog/services")[2] == {"consul": []}  # without the peer, as before
    for path in ("/v1/namespaces", "/v1/partitions", "/v1/namespace/default", "/v1/partition/default"):
        assert _status_body(agent, "GET", path) == (404, b"Invalid URL path: not a recognized HTTP API endpoint")


def test_dev_banner_lists_only_what_listens(agent: AgentProcess) -> None:
    banner = agent.log_path.read_text()
    assert f"(HTTP: {agent.http_port}, HTTPS: -1, gRPC: -1, gRPC-TLS: -1, DNS: {agent.dns_port})" in banner


def test_dev_server_coordinates_soon_after_start(agent: AgentProcess) -> None:
    _, _, dcs = agent.get_json("/v1/coordinate/datacenters")
    assert [c["Node"] for c in dcs[0]["Coordinates"]] == ["test-node"]  # from the start
    assert dcs[0]["Coordinates"][0]["Coord"]["Error"] == 1.5
    wait_until(lambda: [c["Node"] for c in agent.get_json("/v1/coordinate/nodes")[2]] == ["test-node"],
               timeout=12, what="the node's LAN coordinate in the catalog")
