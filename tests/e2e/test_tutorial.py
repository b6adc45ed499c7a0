"""The Consul getting-started tutorial, walked against a real `cairn agent -dev` process.

Each step is what a user types (CLI through `python -m appliance`, HTTP through urllib) and
what Consul answers (shapes and texts from the reference: Consul docs + 1.17 output).
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import AgentProcess, wait_until

pytestmark = pytest.mark.timeout(60)

NODE_KEYS = ["ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta", "CreateIndex", "ModifyIndex"]
SERVICE_NODE_KEYS = [
    "ID", "Node", "Address", "Datacenter", "TaggedAddresses", "NodeMeta",
    "ServiceKind", "ServiceID", "ServiceName", "ServiceTags", "ServiceAddress",
    "ServiceWeights", "ServiceMeta", "ServicePort", "ServiceSocketPath",
    "ServiceEnableTagOverride", "ServiceProxy", "ServiceConnect", "ServiceLocality",
    "CreateIndex", "ModifyIndex",
]  # fmt: skip
# Consul docs: health service element; Service without Address -> no TaggedAddresses (omitempty)
HEALTH_SERVICE_KEYS = [
    "ID", "Service", "Tags", "Address", "Meta", "Port", "Weights", "EnableTagOverride",
    "Proxy", "Connect", "PeerName", "CreateIndex", "ModifyIndex",
]  # fmt: skip
HEALTH_CHECK_KEYS = [
    "Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName",
    "ServiceTags", "Type", "Interval", "Timeout", "ExposedPort", "Definition",
    "CreateIndex", "ModifyIndex",
]  # fmt: skip
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DEV_TAGGED_ADDRESSES = {"lan": "127.0.0.1", "lan_ipv4": "127.0.0.1", "wan": "127.0.0.1", "wan_ipv4": "127.0.0.1"}


def consul_index(headers) -> int:
    """Consul docs (blocking queries): every blocking-capable read carries X-Consul-Index >= 1."""
    raw = headers.get("X-Consul-Index")
    assert raw is not None, "X-Consul-Index header missing"
    assert raw.isdigit(), raw
    index = int(raw)
    assert index >= 1
    return index


def columns(line: str) -> list[str]:
    """Split a columnize line (cells separated by >= 2 spaces)."""
    return re.split(r"\s{2,}", line.strip())


def check_node_shape(node: dict, name: str) -> None:
    assert list(node) == NODE_KEYS
    assert node["Node"] == name
    assert UUID_RE.match(node["ID"]), node["ID"]
    assert node["Address"] == "127.0.0.1"
    assert node["Datacenter"] == "dc1"
    assert node["TaggedAddresses"] == DEV_TAGGED_ADDRESSES
    # agent-registered nodes always carry these Meta keys
    assert node["Meta"]["consul-network-segment"] == ""
    assert isinstance(node["Meta"]["consul-version"], str) and node["Meta"]["consul-version"]
    assert isinstance(node["CreateIndex"], int) and node["CreateIndex"] >= 1
    assert isinstance(node["ModifyIndex"], int) and node["ModifyIndex"] >= node["CreateIndex"]


@pytest.fixture
def web_agent(tmp_path: Path, agent_factory) -> AgentProcess:
    """An agent started with a -config-dir holding the tutorial's `web` service definition."""
    config_dir = tmp_path / "cairn.d"
    config_dir.mkdir()
    (config_dir / "web.json").write_text(json.dumps({"service": {"name": "web", "tags": ["rails"], "port": 80}}))
    return agent_factory("-config-dir", str(config_dir), node="tutorial-node")


def health_web(agent: AgentProcess, query: str = "") -> list:
    status, headers, body = agent.get_json("/v1/health/service/web" + query)
    assert status == 200, body
    consul_index(headers)
    return body


# ---------------------------------------------------------------------------------------------


def test_members_lists_the_dev_server(agent: AgentProcess) -> None:
    """`consul members` on a dev agent: one row, alive server (Consul docs: commands/members)."""
    result = agent.cli("members")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, result.stdout
    assert columns(lines[0]) == ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
    row = columns(lines[1])
    assert len(row) == 9, row
    node, address, status, type_, build, protocol, dc, partition, segment = row
    assert node == "test-node"
    assert address == f"127.0.0.1:{agent.serf_lan_port}"
    assert status == "alive"
    assert type_ == "server"
    assert build and ":" not in build
    assert protocol == "2"
    assert dc == "dc1"
    assert partition == "default"
    assert segment == "<all>"
    # columnize: the cells of a column start at the same offset
    assert lines[0].index("Address") == lines[1].index(address)
    assert not lines[1].endswith(" ")


def test_catalog_nodes(agent: AgentProcess) -> None:
    """`curl localhost:8500/v1/catalog/nodes`: the agent's own node, Node shape (ref §3.1)."""
    status, headers, nodes = agent.get_json("/v1/catalog/nodes")
    assert status == 200
    assert headers.get("Content-Type", "").startswith("application/json")
    consul_index(headers)
    assert headers.get("X-Consul-KnownLeader") == "true"
    assert headers.get("X-Consul-LastContact") == "0"
    assert isinstance(nodes, list) and len(nodes) == 1
    check_node_shape(nodes[0], "test-node")


def test_service_from_config_dir_in_catalog(web_agent: AgentProcess) -> None:
    """Tutorial: define `web` in a config dir; `curl /v1/catalog/service/web` (ref §3.2)."""

    def web_instances():
        status, headers, body = web_agent.get_json("/v1/catalog/service/web")
        assert status == 200, body
        consul_index(headers)
        return body

    instances = wait_until(web_instances, timeout=10, what="web in /v1/catalog/service/web")
    assert len(instances) == 1
    sn = instances[0]
    assert list(sn) == SERVICE_NODE_KEYS
    assert sn["Node"] == "tutorial-node"
    assert UUID_RE.match(sn["ID"])
    assert sn["Address"] == "127.0.0.1"
    assert sn["Datacenter"] == "dc1"
    assert sn["TaggedAddresses"] == DEV_TAGGED_ADDRESSES
    assert sn["NodeMeta"]["consul-network-segment"] == ""
    assert sn["ServiceKind"] == ""
    assert sn["ServiceID"] == "web"  # ID defaults to Name
    assert sn["ServiceName"] == "web"
    assert sn["ServiceTags"] == ["rails"]
    assert sn["ServiceAddress"] == ""
    assert sn["ServiceWeights"] == {"Passing": 1, "Warning": 1}
    assert sn["ServiceMeta"] == {}
    assert sn["ServicePort"] == 80
    assert sn["ServiceSocketPath"] == ""
    assert sn["ServiceEnableTagOverride"] is False
    assert sn["ServiceProxy"] == {"Mode": "", "MeshGateway": {}, "Expose": {}}
    assert sn["ServiceConnect"] == {}
    assert sn["ServiceLocality"] is None
    assert 1 <= sn["CreateIndex"] <= sn["ModifyIndex"]

    # the catalog's service list has it too, beside the server's own `consul` service
    status, headers, services = web_agent.get_json("/v1/catalog/services")
    assert status == 200
    consul_index(headers)
    assert services == {"consul": [], "web": ["rails"]}

    # same node as /v1/catalog/nodes
    _, _, nodes = web_agent.get_json("/v1/catalog/nodes")
    assert [n["ID"] for n in nodes] == [sn["ID"]]


def test_health_service_passing(web_agent: AgentProcess) -> None:
    """`curl '/v1/health/service/web?passing'`: a service without checks is passing (ref §3.3)."""
    entries = wait_until(lambda: health_web(web_agent, "?passing"), timeout=10, what="web passing")
    assert len(entries) == 1
    entry = entries[0]
    assert list(entry) == ["Node", "Service", "Checks"]
    check_node_shape(entry["Node"], "tutorial-node")
    svc = entry["Service"]
    assert list(svc) == HEALTH_SERVICE_KEYS
    assert svc["ID"] == "web"
    assert svc["Service"] == "web"
    assert svc["Tags"] == ["rails"]
    assert svc["Address"] == ""
    assert svc["Meta"] == {}
    assert svc["Port"] == 80
    assert svc["Weights"] == {"Passing": 1, "Warning": 1}
    assert svc["EnableTagOverride"] is False
    assert svc["PeerName"] == ""
    # only the node's serfHealth check: the service has none of its own
    checks = entry["Checks"]
    assert [c["CheckID"] for c in checks] == ["serfHealth"]
    serf = checks[0]
    assert list(serf) == HEALTH_CHECK_KEYS
    assert serf["Node"] == "tutorial-node"
    assert serf["Name"] == "Serf Health Status"
    assert serf["Status"] == "passing"
    assert serf["Notes"] == ""
    assert serf["Output"] == "Agent alive and reachable"
    assert serf["ServiceID"] == "" and serf["ServiceName"] == "" and serf["ServiceTags"] == []
    assert serf["Type"] == "" and serf["Interval"] == "" and serf["Timeout"] == ""
    assert serf["ExposedPort"] == 0
    assert serf["Definition"] == {}

    # `?passing=true` is the same thing; `?passing=false` does not filter
    assert len(health_web(web_agent, "?passing=true")) == 1
    assert len(health_web(web_agent, "?passing=false")) == 1
    # tag filter (case-insensitive, Consul docs: health/service `tag`)
    assert len(health_web(web_agent, "?tag=rails")) == 1
    assert len(health_web(web_agent, "?tag=RAILS")) == 1
    assert health_web(web_agent, "?tag=php") == []


def test_kv_over_http(agent: AgentProcess) -> None:
    """Tutorial KV: PUT /v1/kv/redis/config/minconns body 1 -> true; GET -> base64 value (ref §3.6, §4.4)."""
    status, headers, body = agent.put("/v1/kv/redis/config/minconns", b"1")
    assert status == 200, body
    assert body.strip() == b"true"

    status, headers, entries = agent.get_json("/v1/kv/redis/config/minconns")
    assert status == 200
    index = consul_index(headers)
    assert isinstance(entries, list) and len(entries) == 1
    entry = entries[0]
    assert list(entry) == ["LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"]
    assert entry["LockIndex"] == 0
    assert entry["Key"] == "redis/config/minconns"
    assert entry["Flags"] == 0
    assert entry["Value"] == "MQ=="
    assert base64.b64decode(entry["Value"]) == b"1"
    assert entry["CreateIndex"] == entry["ModifyIndex"] >= 1
    assert index == entry["ModifyIndex"]  # single key: the entry's ModifyIndex

    # ?raw gives the bytes
    status, headers, raw = agent.get("/v1/kv/redis/config/minconns?raw")
    assert status == 200 and raw == b"1"

    # a missing key is a 404 that still carries the index headers
    status, headers, body = agent.get("/v1/kv/redis/config/nothing-here")
    assert status == 404
    assert body == b""
    consul_index(headers)
    assert headers.get("X-Consul-KnownLeader") == "true"


def test_kv_over_cli(agent: AgentProcess) -> None:
    """Tutorial KV with the CLI: `consul kv put` / `consul kv get` texts (ref §5.3)."""
    put = agent.cli("kv", "put", "redis/config/maxconns", "25")
    assert put.returncode == 0, put.stderr
    assert put.stdout == "Success! Data written to: redis/config/maxconns\n"

    get = agent.cli("kv", "get", "redis/config/maxconns")
    assert get.returncode == 0, get.stderr
    assert get.stdout == "25\n"

    # what the CLI wrote is what HTTP reads
    status, _, entries = agent.get_json("/v1/kv/redis/config/maxconns")
    assert status == 200 and base64.b64decode(entries[0]["Value"]) == b"25"

    missing = agent.cli("kv", "get", "redis/config/absent")
    assert missing.returncode == 1
    assert "Error! No key exists at: redis/config/absent" in missing.stderr


def test_maintenance_mode(web_agent: AgentProcess) -> None:
    """`consul maint -enable` takes the node's instances out of ?passing; `-disable` restores (ref §4.1)."""
    wait_until(lambda: health_web(web_agent, "?passing"), timeout=10, what="web passing before maint")

    enable = web_agent.cli("maint", "-enable")
    assert enable.returncode == 0, enable.stderr
    assert enable.stdout.strip() == "Node maintenance is now enabled"

    # the maintenance check is a critical node check of type "maintenance"
    status, _, checks = web_agent.get_json("/v1/agent/checks")
    assert status == 200
    maint = checks["_node_maintenance"]
    assert maint["Name"] == "Node Maintenance Mode"
    assert maint["Status"] == "critical"
    assert maint["Type"] == "maintenance"
    assert maint["Notes"] == (
        "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
    )
    assert maint["ServiceID"] == ""

    wait_until(lambda: health_web(web_agent, "?passing") == [], timeout=10, what="web gone from ?passing")
    # without ?passing it is still listed, now with the maintenance check among its node checks
    entries = health_web(web_agent)
    assert len(entries) == 1
    ids = {c["CheckID"]: c["Status"] for c in entries[0]["Checks"]}
    assert ids.get("_node_maintenance") == "critical"

    listing = web_agent.cli("maint")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith(
        "Node:\n"
        "  Name:   tutorial-node\n"
        "  Reason: Maintenance mode is enabled for this node, but no reason was provided. This is a default message.\n"
    ), listing.stdout

    disable = web_agent.cli("maint", "-disable")
    assert disable.returncode == 0, disable.stderr
    assert disable.stdout.strip() == "Node maintenance is now disabled"
    wait_until(lambda: len(health_web(web_agent, "?passing")) == 1, timeout=10, what="web back in ?passing")
    status, _, checks = web_agent.get_json("/v1/agent/checks")
    assert "_node_maintenance" not in checks


def test_index_header_on_reads(web_agent: AgentProcess) -> None:
    """X-Consul-Index is on every blocking-capable read and is >= 1 (Consul docs: blocking queries)."""
    wait_until(lambda: health_web(web_agent), timeout=10, what="web in health")
    for path in (
        "/v1/catalog/nodes",
        "/v1/catalog/services",
        "/v1/catalog/service/web",
        "/v1/catalog/node/tutorial-node",
        "/v1/health/service/web",
        "/v1/health/checks/web",
        "/v1/health/node/tutorial-node",
        "/v1/health/state/any",
        "/v1/catalog/service/does-not-exist",
    ):
        status, headers, _ = web_agent.get(path)
        assert status == 200, path
        consul_index(headers)

    # writes move the index forward
    _, headers, _ = web_agent.get("/v1/catalog/nodes")
    before = consul_index(headers)
    status, _, _ = web_agent.put("/v1/kv/tutorial/bump", b"x")
    assert status == 200
    _, headers, _ = web_agent.get("/v1/kv/tutorial/bump")
    assert consul_index(headers) > before


def test_cli_honours_consul_http_addr(agent: AgentProcess) -> None:
    """CONSUL_HTTP_ADDR alone points the CLI at the agent (DESIGN: Consul's env vars are honoured)."""
    env = dict(agent.env)
    del env["CAIRN_HTTP_ADDR"]
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "kv", "put", "env/check", "yes"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Success! Data written to: env/check\n"
    status, _, raw = agent.get("/v1/kv/env/check?raw")
    assert status == 200 and raw == b"yes"


def test_ctrl_c_stops_the_agent(agent: AgentProcess) -> None:
    """The tutorial ends with Ctrl-C: the agent logs the signal and exits promptly (ref §5.4)."""
    agent.signal(signal.SIGINT)
    agent.proc.wait(10)
    log = agent.log_path.read_text(errors="replace")
    assert "agent: Caught: signal=interrupt" in log
    assert "agent: Gracefully shutting down agent..." in log or "agent: shutdown complete" in log
