"""`cairn connect envoy -bootstrap`'s JSON checked against the shape of Envoy's v3 Bootstrap
message (envoy.config.bootstrap.v3.Bootstrap and the messages it holds: field names, JSON kinds,
enum values, one of socket_address/pipe), for the sidecar, unix-socket and TLS variants.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from appliance.connect.proxy.envoy import bootstrap, cluster_of, grpc_target

DURATION = re.compile(r"^\d+(\.\d+)?s$")  # google.protobuf.Duration in JSON

# message name -> {field: kind}; a kind is a message name, "str", "int", "bool", "duration",
# "struct" (google.protobuf.Struct), "any" (google.protobuf.Any), ("list", kind), ("enum", values)
SCHEMA: dict[str, dict[str, Any]] = {
    "Bootstrap": {"node": "Node", "static_resources": "StaticResources", "dynamic_resources": "DynamicResources",
                  "admin": "Admin", "stats_config": "StatsConfig", "layered_runtime": "LayeredRuntime"},
    "Node": {"id": "str", "cluster": "str", "metadata": "struct"},
    "Admin": {"access_log_path": "str", "address": "Address"},
    "Address": {"socket_address": "SocketAddress", "pipe": "Pipe"},
    "SocketAddress": {"address": "str", "port_value": "int"},
    "Pipe": {"path": "str"},
    "LayeredRuntime": {"layers": ("list", "RuntimeLayer")},
    "RuntimeLayer": {"name": "str", "static_layer": "struct"},
    "StaticResources": {"clusters": ("list", "Cluster")},
    "Cluster": {"name": "str", "ignore_health_on_host_removal": "bool", "connect_timeout": "duration",
                "type": ("enum", {"STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"}),
                "http2_protocol_options": "struct", "loadAssignment": "ClusterLoadAssignment",
                "transport_socket": "TransportSocket"},
    "ClusterLoadAssignment": {"clusterName": "str", "endpoints": ("list", "LocalityLbEndpoints")},
    "LocalityLbEndpoints": {"lbEndpoints": ("list", "LbEndpoint")},
    "LbEndpoint": {"endpoint": "Endpoint"},
    "Endpoint": {"address": "Address"},
    "TransportSocket": {"name": "str", "typed_config": "any"},
    "StatsConfig": {"stats_tags": ("list", "struct"), "use_all_default_tags": "bool"},
    "DynamicResources": {"lds_config": "ConfigSource", "cds_config": "ConfigSource", "ads_config": "ApiConfigSource"},
    "ConfigSource": {"ads": "struct", "initial_fetch_timeout": "duration",
                     "resource_api_version": ("enum", {"AUTO", "V2", "V3"})},
    "ApiConfigSource": {"api_type": ("enum", {"REST", "GRPC", "DELTA_GRPC", "AGGREGATED_GRPC",
                                              "AGGREGATED_DELTA_GRPC"}),
                        "transport_api_version": ("enum", {"AUTO", "V2", "V3"}),
                        "grpc_services": ("list", "GrpcService")},
    "GrpcService": {"envoy_grpc": "EnvoyGrpc", "initial_metadata": ("list", "HeaderValue")},
    "EnvoyGrpc": {"cluster_name": "str"},
    "HeaderValue": {"key": "str", "value": "str"},
}
ONE_OF = {"Address": ("socket_address", "pipe")}


def check(value: Any, kind: Any, path: str = "") -> None:
    if isinstance(kind, tuple) and kind[0] == "list":
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            check(item, kind[1], f"{path}[{i}]")
    elif isinstance(kind, tuple) and kind[0] == "enum":
        assert value in kind[1], (path, value)
    elif kind == "str":
        assert isinstance(value, str), path
    elif kind == "int":
        assert isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 65536, path
    elif kind == "bool":
        assert isinstance(value, bool), path
    elif kind == "duration":
        assert isinstance(value, str) and DURATION.match(value), (path, value)
    elif kind == "struct":
        assert isinstance(value, dict), path
    elif kind == "any":
        assert isinstance(value, dict) and value.get("@type", "").startswith("type.googleapis.com/envoy."), path
    else:
        fields = SCHEMA[kind]
        assert isinstance(value, dict), path
        unknown = set(value) - set(fields)
        assert not unknown, f"{path}: fields not in {kind}: {unknown}"
        if kind in ONE_OF:
            assert sum(k in value for k in ONE_OF[kind]) == 1, path
        for name, item in value.items():
            check(item, fields[name], f"{path}.{name}")


def test_sidecar_bootstrap_has_envoys_shape_and_consuls_values():
    doc = bootstrap(proxy_id="web-sidecar-proxy", cluster="web", token="s3cret", node_name="n1")
    check(doc, "Bootstrap")
    assert doc["node"] == {"cluster": "web", "id": "web-sidecar-proxy",
                           "metadata": {"namespace": "default", "partition": "default", "node_name": "n1"}}
    assert doc["admin"]["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 19000}}
    [agent] = doc["static_resources"]["clusters"]
    assert agent["name"] == "local_agent" and "transport_socket" not in agent
    assert agent["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 8502}}
    [grpc] = doc["dynamic_resources"]["ads_config"]["grpc_services"]
    assert grpc["initial_metadata"] == [{"key": "x-consul-token", "value": "s3cret"}]
    assert grpc["envoy_grpc"] == {"cluster_name": "local_agent"}


@pytest.mark.parametrize(("addr", "want"), [
    ("unix:///run/cairn/grpc.sock", {"pipe": {"path": "/run/cairn/grpc.sock"}}),
    ("http://10.0.0.5:8502", {"socket_address": {"address": "10.0.0.5", "port_value": 8502}}),
    ("[::1]:8502", {"socket_address": {"address": "::1", "port_value": 8502}}),
])
def test_grpc_addresses(addr, want):
    doc = bootstrap(proxy_id="p", cluster="c", grpc_addr=addr)
    check(doc, "Bootstrap")
    assert doc["static_resources"]["clusters"][0]["loadAssignment"]["endpoints"][0]["lbEndpoints"][0][
        "endpoint"]["address"] == want


def test_tls_grpc_carries_the_ca_inline():
    doc = bootstrap(proxy_id="p", cluster="c", grpc_addr="https://127.0.0.1:8503", ca_pem="-----BEGIN X-----")
    check(doc, "Bootstrap")
    socket = doc["static_resources"]["clusters"][0]["transport_socket"]
    assert socket["typed_config"]["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "inline_string": "-----BEGIN X-----"}
    assert grpc_target("https://h:1") == ("h:1", True) and grpc_target("h:1") == ("h:1", False)


def test_cluster_names():
    assert cluster_of({"Kind": "connect-proxy", "Service": "web-sidecar-proxy",
                       "Proxy": {"DestinationServiceName": "web"}}) == "web"
    assert cluster_of({"Kind": "mesh-gateway", "Service": "mesh-gateway"}) == "mesh-gateway"
