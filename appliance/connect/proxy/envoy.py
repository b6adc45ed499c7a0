"""Envoy's bootstrap configuration for a Connect proxy or gateway (`cairn connect envoy -bootstrap`).

The shape is Consul's v3 template (reference/connect.md §7): an admin listener, the node (`id` =
the proxy's service ID, which is how an xDS server knows which registration to serve; `cluster` =
the service it stands for, or the gateway's own name), a `local_agent` cluster pointing at the
agent's gRPC address (a `pipe` for a unix socket; TLS with the CA's PEM inline when the address is
https), and dynamic resources fetched over ADS (delta xDS, API v3) with the ACL token as
`x-consul-token` metadata. cairn serves no xDS (docs/connect.md says what it would take), so this
is for operators who run Envoy against another control plane or keep the file. Pure functions.
"""

from __future__ import annotations

from typing import Any

DEFAULT_ADMIN_BIND = "localhost:19000"
DEFAULT_GRPC_ADDR = "127.0.0.1:8502"


def _socket_address(addr: str) -> dict[str, Any]:
    if addr.startswith("unix://"):
        return {"pipe": {"path": addr[len("unix://"):]}}
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    return {"socket_address": {"address": host, "port_value": int(port)}}


def grpc_target(addr: str) -> tuple[str, bool]:
    """(address without scheme, TLS?) of a `-grpc-addr` (`host:port`, `http://`, `https://`,
    `unix://`)."""
    if addr.startswith("https://"):
        return addr[len("https://"):], True
    if addr.startswith("http://"):
        return addr[len("http://"):], False
    return addr, False


def bootstrap(*, proxy_id: str, cluster: str, token: str = "", node_name: str = "",
              admin_bind: str = DEFAULT_ADMIN_BIND, access_log_path: str = "/dev/null",
              grpc_addr: str = DEFAULT_GRPC_ADDR, ca_pem: str = "") -> dict[str, Any]:
    """Envoy's v3 Bootstrap for proxy `proxy_id` (Consul's template, without its stats tag regexes)."""
    target, use_tls = grpc_target(grpc_addr)
    metadata = {"namespace": "default", "partition": "default"}
    if node_name:
        metadata["node_name"] = node_name
    local_agent: dict[str, Any] = {
        "name": "local_agent",
        "ignore_health_on_host_removal": False,
        "connect_timeout": "1s",
        "type": "STATIC",
        "http2_protocol_options": {},
        "loadAssignment": {
            "clusterName": "local_agent",
            "endpoints": [{"lbEndpoints": [{"endpoint": {"address": _socket_address(target)}}]}],
        },
    }
    if use_tls:
        tls: dict[str, Any] = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                                        "UpstreamTlsContext", "common_tls_context": {}}
        if ca_pem:
            tls["common_tls_context"]["validation_context"] = {"trusted_ca": {"inline_string": ca_pem}}
        local_agent["transport_socket"] = {"name": "tls", "typed_config": tls}
    source = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
    return {
        "admin": {"access_log_path": access_log_path, "address": _socket_address(admin_bind)},
        "node": {"cluster": cluster, "id": proxy_id, "metadata": metadata},
        "layered_runtime": {"layers": [{"name": "base", "static_layer": {
            "re2.max_program_size.error_level": 1048576}}]},
        "static_resources": {"clusters": [local_agent]},
        "stats_config": {"stats_tags": [], "use_all_default_tags": True},
        "dynamic_resources": {
            "lds_config": dict(source),
            "cds_config": dict(source),
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{
                    "initial_metadata": [{"key": "x-consul-token", "value": token}],
                    "envoy_grpc": {"cluster_name": "local_agent"},
                }],
            },
        },
    }


def cluster_of(svc: dict[str, Any]) -> str:
    """`node.cluster`: the destination of a sidecar, a gateway's own service name."""
    if svc.get("Kind") == "connect-proxy":
        return str((svc.get("Proxy") or {}).get("DestinationServiceName") or svc.get("Service", ""))
    return str(svc.get("Service", ""))
