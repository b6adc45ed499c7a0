"""What upstream Prometheus's consul_sd needs from the agent, for the parts no installed binary
can exercise (Debian's Prometheus has no consul_sd; vmagent covers the common path).

Each test cites reference/prometheus.md: the exact request URLs of §1.1, the X-Consul-Index rules
of §0 and §1.5, and the Go types of §1.2-§1.4 (a wrong type fails the whole decode in Go, and a
null Node/Service/Check element panics Prometheus).
"""

from __future__ import annotations

import json
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(60)


def setup(agent) -> None:
    status, _, data = agent.put("/v1/catalog/register", {
        "Node": "rack-node", "Address": "10.3.0.1", "NodeMeta": {"rack_name": "2304"},
        "Service": {"Service": "test", "ID": "test-1", "Port": 9100, "Tags": ["tag1"], "Meta": {"k": "v"}},
        "Check": {"CheckID": "test-1-check", "Name": "alive", "Status": "passing", "ServiceID": "test-1"},
    })
    assert status == 200, data


def index_of(headers) -> int:
    raw = headers.get("X-Consul-Index")
    assert raw is not None and raw.isdigit() and int(raw) >= 1, raw  # §0.2: present, numeric, >= 1
    return int(raw)


# §1.1: the request URLs from Prometheus's own unit test, as sent (keys sorted, `stale=` empty)
@pytest.mark.parametrize("url", [
    "/v1/catalog/services?wait=120000ms",
    "/v1/catalog/services?index=1&wait=120000ms",
    "/v1/catalog/services?node-meta=rack_name%3A2304&stale=&wait=120000ms",
    "/v1/catalog/services?index=1&node-meta=rack_name%3A2304&stale=&wait=120000ms",
    "/v1/health/service/test?wait=120000ms",
    "/v1/health/service/test?node-meta=rack_name%3A2304&stale=&tag=tag1&wait=120000ms",
    "/v1/catalog/services?filter=NodeMeta.rack_name+%3D%3D+%222304%22&index=1&wait=120000ms",
])  # fmt: skip
def test_prometheus_request_urls(agent, url):
    setup(agent)
    status, headers, body = agent.get(url, timeout=10)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert "Content-Encoding" not in headers  # §1.1: DisableCompression, never gzip
    index_of(headers)
    data = json.loads(body)
    if url.startswith("/v1/catalog/services"):
        assert isinstance(data, dict) and data.get("test") == ["tag1"]  # map[string][]string
        if "rack_name" in url:
            assert set(data) == {"test"}
    else:
        assert [e["Service"]["ID"] for e in data] == ["test-1"]


# §1.2: decoded as map[string]map[string]interface{}; Config.Datacenter must be a string
def test_agent_self_types(agent):
    status, _, body = agent.get_json("/v1/agent/self")
    assert status == 200
    assert all(isinstance(v, dict) or v is None for v in body.values())
    assert isinstance(body["Config"]["Datacenter"], str)
    assert isinstance(body["Config"]["NodeName"], str)


# §1.4: the Go types of every field Prometheus decodes
def test_health_service_go_types(agent):
    setup(agent)
    status, _, entries = agent.get_json("/v1/health/service/test")
    assert status == 200 and entries
    for e in entries:
        node, svc, checks = e["Node"], e["Service"], e["Checks"]
        assert isinstance(node, dict) and isinstance(svc, dict)
        assert isinstance(checks, list) and None not in checks
        assert isinstance(node["Node"], str) and isinstance(node["Address"], str)
        for m in (node.get("Meta"), node.get("TaggedAddresses"), svc.get("Meta")):
            assert m is None or all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
        assert type(svc["Port"]) is int
        assert svc["Tags"] is None or all(isinstance(t, str) for t in svc["Tags"])
        for key in ("CreateIndex", "ModifyIndex"):
            assert type(node[key]) is int and type(svc[key]) is int
        for c in checks:
            assert isinstance(c["CheckID"], str) and c["Status"] in ("passing", "warning", "critical")
            definition = c.get("Definition", {})
            assert definition is not None  # a null Definition panics the Go decoder (§1.4)
            for key in ("Interval", "Timeout", "DeregisterCriticalServiceAfter"):
                if key in definition:
                    assert isinstance(definition[key], (str, int)) and definition[key] != ""


# §0.3 / §1.5: the per-service index moves when only a check changes, and a blocked query wakes
def test_health_index_moves_on_check_change(agent):
    setup(agent)
    _, headers, _ = agent.get("/v1/health/service/test?wait=120000ms")
    index = index_of(headers)
    result = {}

    def blocked() -> None:
        result["answer"] = agent.get(f"/v1/health/service/test?index={index}&stale=&wait=120000ms", timeout=30)

    thread = threading.Thread(target=blocked)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()
    status, _, _ = agent.put("/v1/catalog/register", {
        "Node": "rack-node", "Address": "10.3.0.1", "NodeMeta": {"rack_name": "2304"},
        "Check": {"CheckID": "test-1-check", "Name": "alive", "Status": "critical", "ServiceID": "test-1"},
    })
    assert status == 200
    thread.join(10)
    status, headers, body = result["answer"]
    assert status == 200 and index_of(headers) > index
    assert json.loads(body)[0]["Checks"][0]["Status"] == "critical"


# §1.4: an unknown service is [] with a valid index
def test_unknown_service_is_empty_with_index(agent):
    status, headers, body = agent.get("/v1/health/service/nosuch?wait=120000ms")
    assert (status, json.loads(body)) == (200, [])
    index_of(headers)


# §3: http_sd rejects any key but targets/labels and needs Content-Type application/json
def test_http_sd_contract(agent):
    setup(agent)
    status, headers, body = agent.get("/v1/sd/prometheus", headers={"Accept": "application/json",
                                                                   "X-Prometheus-Refresh-Interval-Seconds": "60"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert "Content-Encoding" not in headers
    groups = json.loads(body)
    assert groups and all(set(g) == {"targets", "labels"} and g is not None for g in groups)
    test = [g for g in groups if g["labels"]["__meta_consul_service"] == "test"]
    assert test[0]["targets"] == ["10.3.0.1:9100"]
    assert test[0]["labels"]["__meta_consul_metadata_rack_name"] == "2304"
