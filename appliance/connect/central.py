"""`?merge-central-config`: a proxy's or gateway's registration with the central config merged in
(reference/connect.md §3.5), as the catalog and health reads return it when asked.

How it works
------------
Only services with a `Kind` (connect-proxy and the gateways) change; a typical service comes back
as stored. The proxy stands for its `DestinationServiceName` (a gateway for itself); that
service's `service-defaults` and the `proxy-defaults` named `global` fill in what the
registration does not set, and what it sets wins:

    Proxy.Config                proxy-defaults Config, then the service-defaults Protocol as
                                `protocol`, then the registration's own keys
    Proxy.Mode, TransparentProxy, Expose, MeshGateway.Mode
                                service-defaults, else proxy-defaults
    Proxy.Upstreams[].Config    the upstream's own service-defaults protocol, then the
                                service-defaults UpstreamConfig defaults and the override for that
                                upstream (snake_case keys: connect_timeout_ms, limits, ...), then
                                the registration's own keys; MeshGateway likewise

The stored registration is never changed. Pure functions over values.
"""

from __future__ import annotations

from typing import Any

from appliance.connect import entries
from appliance.state import watchkeys

# what a merged read also waits on
KEYS = (watchkeys.config_kind(entries.SERVICE_DEFAULTS), watchkeys.config_kind(entries.PROXY_DEFAULTS))
Entries = dict[tuple[str, str], dict[str, Any]]
_UPSTREAM_KEYS = {"Protocol": "protocol", "ConnectTimeoutMs": "connect_timeout_ms", "Limits": "limits",
                  "PassiveHealthCheck": "passive_health_check", "EnvoyListenerJSON": "envoy_listener_json",
                  "EnvoyClusterJSON": "envoy_cluster_json",
                  "BalanceOutboundConnections": "balance_outbound_connections"}
_LIMIT_KEYS = {"MaxConnections": "max_connections", "MaxPendingRequests": "max_pending_requests",
               "MaxConcurrentRequests": "max_concurrent_requests"}


def _upstream_config(conf: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in _UPSTREAM_KEYS.items():
        value = conf.get(key)
        if value in (None, "", 0, {}):
            continue
        if key == "Limits":
            value = {_LIMIT_KEYS.get(k, k): v for k, v in value.items()}
        out[name] = value
    return out


def _upstream(up: dict[str, Any], store: Entries, sd: dict[str, Any]) -> dict[str, Any]:
    name = up.get("DestinationName") or ""
    central: dict[str, Any] = {}
    upstream_sd = store.get((entries.SERVICE_DEFAULTS, name)) or {}
    if upstream_sd.get("Protocol"):
        central["protocol"] = upstream_sd["Protocol"]
    upstream_conf = sd.get("UpstreamConfig") or {}
    layers = [upstream_conf.get("Defaults") or {}]
    layers += [o for o in upstream_conf.get("Overrides") or () if o.get("Name") == name]
    mode = ""
    for layer in layers:
        central.update(_upstream_config(layer))
        mode = (layer.get("MeshGateway") or {}).get("Mode") or mode
    out = dict(up)
    merged = {**central, **(up.get("Config") or {})}
    if merged:
        out["Config"] = merged
    if mode and not (up.get("MeshGateway") or {}).get("Mode"):
        out["MeshGateway"] = {"Mode": mode}
    return out


def merge(svc: dict[str, Any], store: Entries) -> dict[str, Any]:
    """An agent-style or catalog-style service record (Kind/Proxy or ServiceKind/ServiceProxy)
    with the central config merged into its proxy block; the record itself if there is nothing to do."""
    catalog = "ServiceKind" in svc
    kind = svc.get("ServiceKind" if catalog else "Kind") or ""
    if not kind:
        return svc
    field = "ServiceProxy" if catalog else "Proxy"
    proxy = dict(svc.get(field) or {})
    own = svc.get("ServiceName" if catalog else "Service") or ""
    dest = (proxy.get("DestinationServiceName") or own) if kind == "connect-proxy" else own
    pd = store.get((entries.PROXY_DEFAULTS, "global")) or {}
    sd = store.get((entries.SERVICE_DEFAULTS, dest)) or {}
    config = dict(pd.get("Config") or {})
    if sd.get("Protocol"):
        config["protocol"] = sd["Protocol"]
    config.update(proxy.get("Config") or {})
    if config:
        proxy["Config"] = config
    for key in ("Mode", "TransparentProxy", "Expose"):
        if not proxy.get(key):
            value = sd.get(key) or pd.get(key)
            if value:
                proxy[key] = value
    if not (proxy.get("MeshGateway") or {}).get("Mode"):
        mode = (sd.get("MeshGateway") or {}).get("Mode") or (pd.get("MeshGateway") or {}).get("Mode")
        if mode:
            proxy["MeshGateway"] = {"Mode": mode}
    if proxy.get("Upstreams"):
        proxy["Upstreams"] = [_upstream(up, store, sd) for up in proxy["Upstreams"]]
    return {**svc, field: proxy}
