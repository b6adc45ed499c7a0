"""`cairn connect envoy` against a real agent: the sidecar it finds, a gateway it registers,
Consul's refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def test_envoy_bootstrap_for_a_sidecar_and_a_gateway(agent, tmp_path) -> None:
    status, _, _ = agent.put("/v1/agent/service/register", {"Name": "web", "Port": 8080,
                                                            "Connect": {"SidecarService": {}}})
    assert status == 200
    done = agent.cli("connect", "envoy", "-sidecar-for", "web", "-bootstrap", "-token", "t0k")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["node"]["id"] == "web-sidecar-proxy" and doc["node"]["cluster"] == "web"
    assert doc["node"]["metadata"]["node_name"] == agent.node
    grpc = doc["dynamic_resources"]["ads_config"]["grpc_services"][0]
    assert grpc["initial_metadata"] == [{"key": "x-consul-token", "value": "t0k"}]

    done = agent.cli("connect", "envoy", "-gateway", "mesh", "-register", "-address", "127.0.0.1:8443",
                     "-wan-address", "127.0.0.2:443", "-bootstrap")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["node"]["id"] == "mesh-gateway"
    status, _, svc = agent.get_json("/v1/agent/service/mesh-gateway")
    assert status == 200 and svc["Kind"] == "mesh-gateway" and svc["Port"] == 8443
    assert svc["TaggedAddresses"]["wan"] == {"Address": "127.0.0.2", "Port": 443}

    for args, text in [
        ((), "No proxy ID specified. One of -proxy-id, -sidecar-for, or -gateway is required"),
        (("-sidecar-for", "db"), "No sidecar proxy registered for db"),
        (("-proxy-id", "web", "-register"), "Auto-Registration can only be used for gateways"),
        (("-gateway", "edge"), 'Invalid gateway kind "edge": must be one of mesh, terminating or ingress'),
    ]:
        done = agent.cli("connect", "envoy", *args, "-bootstrap")
        assert done.returncode == 1 and done.stderr.strip() == text, (args, done.stderr)
    # without -bootstrap it runs Envoy, which this PATH does not have
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "appliance", "connect", "envoy", "-sidecar-for", "web"],
                          env={**agent.env, "PATH": str(empty)}, capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == 'Couldn\'t find envoy binary: exec: "envoy": executable file not found in $PATH'
