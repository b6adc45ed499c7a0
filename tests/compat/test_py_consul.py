"""The unmodified PyPI client py-consul against a real `cairn agent -dev`.

py-consul sends lower-case JSON keys (`name`, `id`, `checks`, `ttl`, `serviceid`), so these
tests also prove the agent decodes field names case-insensitively, as Go's encoding/json does.
"""

from __future__ import annotations

import threading
import time
import urllib.parse

import consul
import pytest
from conftest import AgentProcess, http_json, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def c(agent: AgentProcess) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port)


def register_api(c: consul.Consul, service_id: str = "api-1", **kw) -> None:
    args = {
        "service_id": service_id,
        "address": "10.0.0.7",
        "port": 8080,
        "tags": ["v1", "blue"],
        "meta": {"version": "1.2"},
        "check": consul.Check.ttl("30s"),
    }
    args.update(kw)
    assert c.agent.service.register("api", **args) is True


def health_statuses(c: consul.Consul, service: str) -> dict[str, str]:
    _, checks = c.health.checks(service)
    return {chk["CheckID"]: chk["Status"] for chk in checks}


def filtered(agent: AgentProcess, path: str, expr: str, **params: str):
    query = urllib.parse.urlencode({"filter": expr, **params})
    status, _, body = http_json("GET", f"{agent.url}{path}?{query}")
    assert status == 200, body
    return body


# --------------------------------------------------------------------------------------------
# services and checks


def test_service_register_shape_and_deregister(c: consul.Consul, agent: AgentProcess) -> None:
    register_api(c)

    services = c.agent.services()
    assert set(services) == {"api-1"}  # the dev server's `consul` service is not a local service
    svc = services["api-1"]
    # ref §3.5 AgentService
    assert svc["ID"] == "api-1"
    assert svc["Service"] == "api"
    assert svc["Tags"] == ["v1", "blue"]
    assert svc["Meta"] == {"version": "1.2"}
    assert svc["Port"] == 8080
    assert svc["Address"] == "10.0.0.7"
    assert svc["TaggedAddresses"] == {
        "lan_ipv4": {"Address": "10.0.0.7", "Port": 8080},
        "wan_ipv4": {"Address": "10.0.0.7", "Port": 8080},
    }
    assert svc["Weights"] == {"Passing": 1, "Warning": 1}
    assert svc["EnableTagOverride"] is False
    assert svc["Datacenter"] == "dc1"

    # the single service check: ID service:<id>, default name, TTL checks start critical
    checks = c.agent.checks()
    assert set(checks) == {"service:api-1"}
    chk = checks["service:api-1"]
    assert chk["Node"] == agent.node
    assert chk["Name"] == "Service 'api' check"
    assert chk["Status"] == "critical"
    assert chk["ServiceID"] == "api-1"
    assert chk["ServiceName"] == "api"
    assert chk["ServiceTags"] == ["v1", "blue"]
    assert chk["Type"] == "ttl"
    assert chk["Notes"] == ""

    # the catalog sees it (anti-entropy)
    def in_catalog():
        _, nodes = c.catalog.service("api")
        return nodes

    nodes = wait_until(in_catalog, timeout=10, what="api in the catalog")
    assert [(n["ServiceID"], n["ServiceAddress"], n["ServicePort"]) for n in nodes] == [("api-1", "10.0.0.7", 8080)]
    assert nodes[0]["ServiceMeta"] == {"version": "1.2"}
    assert nodes[0]["ServiceTaggedAddresses"] == svc["TaggedAddresses"]

    # deregister removes the service and its checks, locally and from the catalog
    assert c.agent.service.deregister("api-1") is True
    assert c.agent.services() == {}
    assert c.agent.checks() == {}
    wait_until(lambda: in_catalog() == [], timeout=10, what="api gone from the catalog")
    wait_until(lambda: c.health.checks("api")[1] == [], timeout=10, what="api checks gone")


def test_ttl_check_transitions(c: consul.Consul, agent: AgentProcess) -> None:
    register_api(c)
    wait_until(lambda: health_statuses(c, "api") == {"service:api-1": "critical"}, timeout=10)

    assert c.agent.check.ttl_pass("service:api-1", notes="all good") is True
    wait_until(lambda: health_statuses(c, "api") == {"service:api-1": "passing"}, timeout=10)
    _, checks = c.health.checks("api")
    assert checks[0]["Output"] == "all good"
    assert checks[0]["Type"] == "ttl"
    assert c.agent.checks()["service:api-1"]["Output"] == "all good"

    # health.service: Checks = node checks (serfHealth) then the service's checks
    _, entries = c.health.service("api")
    assert len(entries) == 1
    assert [(x["CheckID"], x["Status"]) for x in entries[0]["Checks"]] == [
        ("serfHealth", "passing"),
        ("service:api-1", "passing"),
    ]
    _, entries = c.health.service("api", passing=True)
    assert len(entries) == 1

    assert c.agent.check.ttl_warn("service:api-1", notes="slow") is True
    wait_until(lambda: health_statuses(c, "api") == {"service:api-1": "warning"}, timeout=10)
    assert c.agent.checks()["service:api-1"]["Output"] == "slow"
    _, entries = c.health.service("api")
    assert entries[0]["Checks"][1]["Status"] == "warning"
    # ?passing excludes an instance when any of its checks is not passing
    assert c.health.service("api", passing=True)[1] == []

    assert c.agent.check.ttl_fail("service:api-1", notes="down") is True
    wait_until(lambda: health_statuses(c, "api") == {"service:api-1": "critical"}, timeout=10)
    assert c.agent.checks()["service:api-1"]["Output"] == "down"
    assert c.health.service("api", passing=True)[1] == []
    assert len(c.health.service("api")[1]) == 1

    assert c.agent.check.ttl_pass("service:api-1") is True
    wait_until(lambda: len(c.health.service("api", passing=True)[1]) == 1, timeout=10)

    # health/state
    _, passing = c.health.state("passing")
    assert {x["CheckID"] for x in passing} == {"serfHealth", "service:api-1"}
    _, critical = c.health.state("critical")
    assert critical == []


def test_check_register_ttl(c: consul.Consul, agent: AgentProcess) -> None:
    assert c.agent.check.register("mem", check=consul.Check.ttl("10s"), check_id="mem-ttl", notes="memory") is True
    checks = c.agent.checks()
    assert set(checks) == {"mem-ttl"}
    chk = checks["mem-ttl"]
    assert chk["CheckID"] == "mem-ttl"
    assert chk["Name"] == "mem"
    assert chk["Notes"] == "memory"
    assert chk["Status"] == "critical"
    assert chk["Type"] == "ttl"
    assert chk["ServiceID"] == "" and chk["ServiceName"] == "" and chk["ServiceTags"] == []

    assert c.agent.check.ttl_pass("mem-ttl", notes="ok") is True
    assert c.agent.checks()["mem-ttl"]["Status"] == "passing"

    # a node check: appears in health/node, and a critical one hides the node's services from ?passing
    def node_checks():
        _, checks = c.health.node(agent.node)
        return {x["CheckID"]: x["Status"] for x in checks}

    wait_until(lambda: node_checks().get("mem-ttl") == "passing", timeout=10)
    register_api(c, check=None)
    wait_until(lambda: len(c.health.service("api", passing=True)[1]) == 1, timeout=10)
    assert c.agent.check.ttl_fail("mem-ttl") is True
    wait_until(lambda: c.health.service("api", passing=True)[1] == [], timeout=10)

    # a check bound to a service
    assert c.agent.check.register("api-extra", check=consul.Check.ttl("10s"), service_id="api-1") is True
    extra = c.agent.checks()["api-extra"]
    assert extra["ServiceID"] == "api-1" and extra["ServiceName"] == "api"

    assert c.agent.check.deregister("mem-ttl") is True
    assert c.agent.check.deregister("api-extra") is True
    assert set(c.agent.checks()) == set()


# --------------------------------------------------------------------------------------------
# catalog and health queries


def test_catalog_queries(c: consul.Consul, agent: AgentProcess) -> None:
    register_api(c, "api-1", tags=["v1", "blue"])
    register_api(c, "api-2", address="10.0.0.8", port=8081, tags=["v2", "green"], meta={"version": "2.0"})

    index, nodes = c.catalog.nodes()
    assert int(index) >= 1
    assert [n["Node"] for n in nodes] == [agent.node]
    assert nodes[0]["Address"] == "127.0.0.1"

    def services():
        _, s = c.catalog.services()
        return s if "api" in s and len(s["api"]) == 4 else None

    svcs = wait_until(services, timeout=10, what="api with 4 tags")
    assert set(svcs) == {"consul", "api"}
    assert svcs["consul"] == []
    assert sorted(svcs["api"]) == ["blue", "green", "v1", "v2"]

    _, nodes = c.catalog.service("api")
    assert [n["ServiceID"] for n in nodes] == ["api-1", "api-2"]  # sorted by node, then service ID
    _, nodes = c.catalog.service("api", tag="v2")
    assert [n["ServiceID"] for n in nodes] == ["api-2"]
    _, nodes = c.catalog.service("api", tag="V2")  # tags match case-insensitively
    assert [n["ServiceID"] for n in nodes] == ["api-2"]
    _, nodes = c.catalog.service("api", tag="nope")
    assert nodes == []
    _, nodes = c.catalog.service("no-such-service")
    assert nodes == []

    _, node = c.catalog.node(agent.node)
    assert node["Node"]["Node"] == agent.node
    assert set(node["Services"]) == {"consul", "api-1", "api-2"}

    _, consul_nodes = c.catalog.service("consul")
    assert [(n["ServiceID"], n["ServicePort"]) for n in consul_nodes] == [("consul", agent.server_port)]


def test_health_service_passing_and_tag(c: consul.Consul, agent: AgentProcess) -> None:
    register_api(c, "api-1", tags=["v1", "blue"])
    register_api(c, "api-2", address="10.0.0.8", tags=["v2", "green"])
    wait_until(lambda: len(c.health.service("api")[1]) == 2, timeout=10)

    assert c.health.service("api", passing=True)[1] == []  # both TTL checks start critical
    c.agent.check.ttl_pass("service:api-1")
    wait_until(lambda: len(c.health.service("api", passing=True)[1]) == 1, timeout=10)
    _, entries = c.health.service("api", passing=True)
    assert entries[0]["Service"]["ID"] == "api-1"

    _, entries = c.health.service("api", tag="green")
    assert [e["Service"]["ID"] for e in entries] == ["api-2"]
    _, entries = c.health.service("api", tag="green", passing=True)
    assert entries == []
    _, entries = c.health.service("api", tag="blue", passing=True)
    assert [e["Service"]["ID"] for e in entries] == ["api-1"]
    # repeated tags are ANDed
    _, entries = c.health.service("api", tag=["v1", "blue"])
    assert [e["Service"]["ID"] for e in entries] == ["api-1"]
    _, entries = c.health.service("api", tag=["v1", "green"])
    assert entries == []

    # filter through py-consul
    _, entries = c.health.service("api", filter_expr='Service.Tags contains "green"')
    assert [e["Service"]["ID"] for e in entries] == ["api-2"]


def test_filter_expressions(c: consul.Consul, agent: AgentProcess) -> None:
    register_api(c, "api-1", meta={"version": "1.2", "env": "prod"})
    register_api(c, "api-2", address="10.0.0.8", meta={"version": "2.0", "env": "qa"}, tags=["v2"])
    wait_until(lambda: len(c.catalog.service("api")[1]) == 2, timeout=10)

    body = filtered(agent, "/v1/catalog/service/api", 'ServiceMeta.env == "prod"')
    assert [x["ServiceID"] for x in body] == ["api-1"]
    body = filtered(agent, "/v1/catalog/service/api", 'ServiceMeta.env != "prod"')
    assert [x["ServiceID"] for x in body] == ["api-2"]
    body = filtered(agent, "/v1/catalog/service/api", "ServiceTags contains v2")
    assert [x["ServiceID"] for x in body] == ["api-2"]
    body = filtered(agent, "/v1/catalog/service/api", 'ServiceAddress == "10.0.0.7" and ServicePort == 8080')
    assert [x["ServiceID"] for x in body] == ["api-1"]

    body = filtered(agent, "/v1/health/service/api", 'Service.Meta.version == "2.0"')
    assert [x["Service"]["ID"] for x in body] == ["api-2"]
    body = filtered(agent, "/v1/health/service/api", 'Checks.Status == "passing"')  # any element matches
    assert [x["Service"]["ID"] for x in body] == ["api-1", "api-2"]  # serfHealth is passing for both

    body = filtered(agent, "/v1/agent/services", 'Meta.env == "qa"')
    assert set(body) == {"api-2"}
    body = filtered(agent, "/v1/agent/checks", 'ServiceID == "api-1"')
    assert set(body) == {"service:api-1"}

    body = filtered(agent, "/v1/catalog/nodes", f'Node == "{agent.node}"')
    assert [n["Node"] for n in body] == [agent.node]
    body = filtered(agent, "/v1/catalog/nodes", 'Node == "someone-else"')
    assert body == []

    # catalog/services filters on service instances, keeping the map shape
    body = filtered(agent, "/v1/catalog/services", 'ServiceName == "api" and "v2" in ServiceTags')
    assert body == {"api": ["v2"]}

    # py-consul passes filter_expr on agent.services too
    assert set(c.agent.services(filter_expr='Service == "api" and Port == 8080')) == {"api-1", "api-2"}


# --------------------------------------------------------------------------------------------
# KV


def test_kv_basics(c: consul.Consul) -> None:
    assert c.kv.put("foo/bar", "baz") is True
    index, entry = c.kv.get("foo/bar")
    assert int(index) == entry["ModifyIndex"]
    assert entry["Key"] == "foo/bar"
    assert entry["Value"] == b"baz"
    assert entry["Flags"] == 0
    assert entry["LockIndex"] == 0
    assert entry["CreateIndex"] == entry["ModifyIndex"]
    assert "Session" not in entry

    # an identical write changes nothing (current Consul's kvsSetTxn: ModifyIndex kept); a new value
    # bumps ModifyIndex and keeps CreateIndex
    assert c.kv.put("foo/bar", "baz") is True
    _, again = c.kv.get("foo/bar")
    assert (again["CreateIndex"], again["ModifyIndex"]) == (entry["CreateIndex"], entry["ModifyIndex"])
    assert c.kv.put("foo/bar", "qux") is True
    _, again = c.kv.get("foo/bar")
    assert again["CreateIndex"] == entry["CreateIndex"]
    assert again["ModifyIndex"] > entry["ModifyIndex"]

    index, missing = c.kv.get("foo/missing")
    assert missing is None
    assert int(index) >= 1

    assert c.kv.delete("foo/bar") is True
    assert c.kv.get("foo/bar")[1] is None
    assert c.kv.delete("foo/never-existed") is True


def test_kv_flags_bytes_and_empty(c: consul.Consul) -> None:
    assert c.kv.put("flagged", "x", flags=42) is True
    assert c.kv.get("flagged")[1]["Flags"] == 42
    big_flags = 2**64 - 1
    assert c.kv.put("flagged", "x", flags=big_flags) is True
    assert c.kv.get("flagged")[1]["Flags"] == big_flags

    blob = bytes(range(256)) * 4
    assert c.kv.put("bin/blob", blob) is True
    assert c.kv.get("bin/blob")[1]["Value"] == blob

    unicode_text = "naïve ☃"
    assert c.kv.put("text/unicode", unicode_text) is True
    assert c.kv.get("text/unicode")[1]["Value"] == unicode_text.encode()

    # an empty value is null in JSON (py-consul: value None)
    assert c.kv.put("dir/", None) is True
    _, entry = c.kv.get("dir/")
    assert entry is not None and entry["Key"] == "dir/"
    assert entry["Value"] is None


def test_kv_cas(c: consul.Consul) -> None:
    # cas=0: create only if absent
    assert c.kv.put("cas/k", "1", cas=0) is True
    assert c.kv.put("cas/k", "other", cas=0) is False
    _, entry = c.kv.get("cas/k")
    assert entry["Value"] == b"1"
    m = entry["ModifyIndex"]

    assert c.kv.put("cas/k", "2", cas=m) is True
    assert c.kv.put("cas/k", "3", cas=m) is False  # stale index
    _, entry = c.kv.get("cas/k")
    assert entry["Value"] == b"2"
    assert entry["ModifyIndex"] > m

    # compare-and-delete
    assert c.kv.delete("cas/k", cas=m) is False
    assert c.kv.get("cas/k")[1] is not None
    assert c.kv.delete("cas/k", cas=entry["ModifyIndex"]) is True
    assert c.kv.get("cas/k")[1] is None


def test_kv_recurse_keys_and_delete_tree(c: consul.Consul) -> None:
    for key, value in [("app/a", "1"), ("app/b/c", "2"), ("app/b/d", "3"), ("app/e", "4"), ("apple", "5")]:
        assert c.kv.put(key, value) is True

    index, entries = c.kv.get("app/", recurse=True)
    assert [(e["Key"], e["Value"]) for e in entries] == [
        ("app/a", b"1"),
        ("app/b/c", b"2"),
        ("app/b/d", b"3"),
        ("app/e", b"4"),
    ]
    assert int(index) == max(e["ModifyIndex"] for e in entries)

    _, entries = c.kv.get("app", recurse=True)  # a plain prefix, not a directory
    assert [e["Key"] for e in entries] == ["app/a", "app/b/c", "app/b/d", "app/e", "apple"]

    _, keys = c.kv.get("app/", keys=True)
    assert keys == ["app/a", "app/b/c", "app/b/d", "app/e"]
    _, keys = c.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/a", "app/b/", "app/e"]
    _, keys = c.kv.get("", keys=True, separator="/")
    assert keys == ["app/", "apple"]

    _, none = c.kv.get("nothing/", recurse=True)
    assert none is None  # 404
    _, none = c.kv.get("nothing/", keys=True)
    assert none is None  # 404 for a non-empty prefix

    before = int(c.kv.get("app/", recurse=True)[0])
    assert c.kv.delete("app/b/", recurse=True) is True
    index, entries = c.kv.get("app/", recurse=True)
    assert [e["Key"] for e in entries] == ["app/a", "app/e"]
    assert int(index) > before  # deletes (tombstones) move the prefix index

    assert c.kv.delete("app/", recurse=True) is True
    assert c.kv.get("app/", recurse=True)[1] is None
    assert c.kv.get("apple")[1]["Value"] == b"5"


# --------------------------------------------------------------------------------------------
# blocking queries (Consul docs: features/blocking)


def test_blocking_kv_get_wakes_on_change(c: consul.Consul, agent: AgentProcess) -> None:
    assert c.kv.put("watched", "v1") is True
    index, entry = c.kv.get("watched")
    assert entry["Value"] == b"v1"

    result: dict = {}

    def watcher() -> None:
        client = consul.Consul(host="127.0.0.1", port=agent.http_port)
        try:
            result["answer"] = client.kv.get("watched", index=index, wait="5s")
        except Exception as exc:  # noqa: BLE001 - reported in the main thread
            result["error"] = exc
        result["returned_at"] = time.monotonic()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    time.sleep(0.7)
    assert "returned_at" not in result, f"blocking query returned before any change: {result}"

    put_at = time.monotonic()
    assert c.kv.put("watched", "v2") is True
    thread.join(10)
    assert not thread.is_alive()
    assert "error" not in result, result["error"]
    new_index, new_entry = result["answer"]
    assert result["returned_at"] - put_at < 1.0, "blocking query did not wake within 1 s of the write"
    assert int(new_index) > int(index)
    assert new_entry["Value"] == b"v2"
    assert int(new_index) == new_entry["ModifyIndex"]


def test_blocking_health_service_wakes_on_check_change(c: consul.Consul, agent: AgentProcess) -> None:
    register_api(c)
    wait_until(lambda: len(c.health.service("api")[1]) == 1, timeout=10)
    index, _ = c.health.service("api", passing=True)

    result: dict = {}

    def watcher() -> None:
        client = consul.Consul(host="127.0.0.1", port=agent.http_port)
        deadline = time.monotonic() + 8
        idx = index
        # a blocking query may wake without a change to this answer; loop like a real client does
        while time.monotonic() < deadline:
            idx, nodes = client.health.service("api", passing=True, index=idx, wait="5s")
            if nodes:
                result["nodes"] = nodes
                result["index"] = idx
                break
        result["returned_at"] = time.monotonic()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    time.sleep(0.5)
    put_at = time.monotonic()
    c.agent.check.ttl_pass("service:api-1")
    thread.join(10)
    assert result.get("nodes"), "the watcher never saw the instance become passing"
    assert result["returned_at"] - put_at < 2.0
    assert int(result["index"]) > int(index)


def test_blocking_kv_get_times_out_at_wait(c: consul.Consul) -> None:
    assert c.kv.put("quiet", "v") is True
    index, _ = c.kv.get("quiet")

    started = time.monotonic()
    new_index, entry = c.kv.get("quiet", index=index, wait="2s")
    elapsed = time.monotonic() - started

    # timeout = wait + up to wait/16 of jitter; allow 1 s of scheduling slack
    assert elapsed >= 2.0, f"returned after {elapsed:.2f}s, before wait elapsed"
    assert elapsed < 2.0 + 2.0 / 16 + 1.0, f"returned after {elapsed:.2f}s"
    assert int(new_index) == int(index)
    assert entry["Value"] == b"v"
