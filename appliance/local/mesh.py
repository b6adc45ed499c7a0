"""Connect's service fields: service kinds, a proxy's configuration, and sidecar expansion.

How it works
------------
A service definition may carry a `Kind` (`connect-proxy` or a gateway), a `Proxy` block (the
service a proxy stands for, where its local app listens, its upstreams) and a `Connect` block
(`Native`, or a `SidecarService` to register beside it). `proxy_config` turns a decoded `Proxy`
(appliance.api.structs.PROXY, canonical names) into the shape the catalog stores, Consul's
structs.ConnectProxyConfig with its defaults (upstreams of type `service`, empty `MeshGateway` and
`Expose`). `validate` applies Consul's registration rules for proxies (reference/connect.md §5.1).

`sidecar_definition` expands `connect { sidecar_service {} }` the way Consul's agent does
(reference/connect.md §5.2): ID and name `<parent>-sidecar-proxy`, kind `connect-proxy`, the
parent's address, tags and meta unless given, a port from the sidecar range (the lowest one no
other local service uses, or the port this sidecar had before), the proxy pointed at the parent
(`127.0.0.1:<parent port>`), and two checks unless the block names its own: a TCP check of the
proxy's public listener and an alias of the parent. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

KINDS = ("", "connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway", "api-gateway")
CONNECT_PROXY = "connect-proxy"
GATEWAYS = KINDS[2:]
SIDECAR_SUFFIX = "-sidecar-proxy"
DEFAULT_PROXY: dict[str, Any] = {"Mode": "", "MeshGateway": {}, "Expose": {}}


class MeshError(ValueError):
    """A registration Consul refuses for its Connect fields; str() is Consul's text."""


def _upstream(u: dict[str, Any]) -> dict[str, Any]:
    """structs.Upstream as stored: type `service` by default, omitempty fields left out."""
    out: dict[str, Any] = {"DestinationType": u.get("DestinationType") or "service"}
    for key in ("DestinationNamespace", "DestinationPartition", "DestinationPeer"):
        if u.get(key):
            out[key] = u[key]
    out["DestinationName"] = u.get("DestinationName", "")
    out["Datacenter"] = u.get("Datacenter", "")
    for key in ("LocalBindAddress", "LocalBindPort", "LocalBindSocketPath", "LocalBindSocketMode", "Config"):
        if u.get(key):
            out[key] = u[key]
    out["MeshGateway"] = dict(u.get("MeshGateway") or {})
    if u.get("CentrallyConfigured"):
        out["CentrallyConfigured"] = True
    return out


def proxy_config(p: dict[str, Any] | None) -> dict[str, Any]:
    """A decoded Proxy block as the catalog stores it (structs.ConnectProxyConfig)."""
    if not p:
        return dict(DEFAULT_PROXY, MeshGateway={}, Expose={})
    out: dict[str, Any] = {}
    for key in ("DestinationServiceName", "DestinationServiceID", "LocalServiceAddress", "LocalServicePort",
                "LocalServiceSocketPath"):
        if p.get(key):
            out[key] = p[key]
    out["Mode"] = p.get("Mode", "")
    if p.get("Config"):
        out["Config"] = p["Config"]
    if p.get("Upstreams"):
        out["Upstreams"] = [_upstream(u) for u in p["Upstreams"]]
    out["MeshGateway"] = dict(p.get("MeshGateway") or {})
    expose = p.get("Expose") or {}
    out["Expose"] = {k: v for k, v in expose.items() if v}
    tproxy = p.get("TransparentProxy") or {}
    if any(tproxy.values()):
        out["TransparentProxy"] = {k: v for k, v in tproxy.items() if v}
    return out


def agent_proxy(proxy: dict[str, Any]) -> dict[str, Any]:
    """api.AgentServiceConnectProxyConfig: the stored config with an empty Mode left out."""
    return {k: v for k, v in proxy.items() if k != "Mode" or v}


def _validate_upstreams(upstreams: list[dict[str, Any]], errors: list[str]) -> None:
    seen: set[str] = set()
    for u in upstreams:
        name = u.get("DestinationName", "")
        if not name:
            errors.append("upstream destination name cannot be empty")
            continue
        if name == "*" and not u.get("CentrallyConfigured"):
            errors.append("upstream destination name cannot be a wildcard")
            continue
        if not u.get("LocalBindPort") and not u.get("LocalBindSocketPath") and not u.get("CentrallyConfigured"):
            errors.append("upstream local bind port or local socket path must be defined and nonzero")
            continue
        addr = u.get("LocalBindSocketPath") or f"{u.get('LocalBindAddress') or '127.0.0.1'}:{u.get('LocalBindPort')}"
        if addr in seen:
            errors.append("upstreams cannot contain duplicates by local bind address and port or unix path; "
                          f'"{addr}" is specified twice')
        seen.add(addr)


def _multierror(errors: list[str]) -> str:
    """go-multierror's text, as Consul's `Validation failed: ` answers carry it."""
    n = len(errors)
    head = "1 error occurred:" if n == 1 else f"{n} errors occurred:"
    return head + "".join(f"\n\t* {e}" for e in errors) + "\n\n"


def validate(kind: str, port: int, socket_path: str, proxy: dict[str, Any] | None, native: bool,
             has_sidecar: bool) -> None:
    """structs.NodeService.Validate's Connect rules; MeshError("Validation failed: ...") on a refusal."""
    if kind not in KINDS:
        raise MeshError(f'Invalid service kind: "{kind}"')
    errors: list[str] = []
    p = proxy or {}
    if kind == CONNECT_PROXY:
        dest = p.get("DestinationServiceName", "").strip()
        if not dest:
            errors.append("Proxy.DestinationServiceName must be non-empty for Connect proxy services")
        elif dest == "*":
            errors.append("Proxy.DestinationServiceName must not be a wildcard for Connect proxy services")
        if not port and not socket_path:
            errors.append("Port or SocketPath must be set for a Connect proxy")
        if native:
            errors.append("A Proxy cannot also be Connect Native, only typical services")
        _validate_upstreams(list(p.get("Upstreams") or ()), errors)
    elif kind in GATEWAYS:
        if not port and kind in ("mesh-gateway", "terminating-gateway"):
            errors.append(f"Port must be non-zero for a {kind}")
        if native:
            errors.append(f"A {kind} cannot also be Connect Native")
    if has_sidecar and kind:
        errors.append("A SidecarService cannot be specified for a service that is not a typical service")
    if has_sidecar and native:
        errors.append("Services that are Connect native cannot have a SidecarService")
    if errors:
        raise MeshError("Validation failed: " + _multierror(errors))


def sidecar_port(parent_id: str, given: int, previous: int, used: Iterable[int], low: int, high: int) -> int:
    """The sidecar's port: the one given, the one it had, or the lowest free one of [low, high]."""
    if given:
        return given
    if previous:
        return previous
    if low <= 0 or high <= 0:
        raise MeshError("no port provided for sidecar_service and auto-assignment disabled in config")
    taken = set(used)
    for port in range(low, high + 1):
        if port not in taken:
            return port
    raise MeshError(f"no port provided for sidecar_service and none left in the configured range [{low}, {high}]")


def sidecar_raw(parent: dict[str, Any], sidecar: dict[str, Any], port: int) -> dict[str, Any]:
    """The sidecar as a decoded ServiceDefinition (canonical names) with Consul's defaults filled in."""
    if sidecar.get("Connect", {}).get("SidecarService") is not None:
        raise MeshError("sidecar_service can't have a nested sidecar_service")
    if sidecar.get("Kind") and sidecar["Kind"] != CONNECT_PROXY:
        raise MeshError("sidecar_service can't specify a Kind other than connect-proxy")
    pid, pname = parent.get("ID") or parent["Name"], parent["Name"]
    out = dict(sidecar)
    out.update(Kind=CONNECT_PROXY, ID=pid + SIDECAR_SUFFIX, Port=port)
    out["Name"] = sidecar.get("Name") or pname + SIDECAR_SUFFIX
    out.setdefault("Address", parent.get("Address", ""))
    if not out.get("Tags") and parent.get("Tags"):
        out["Tags"] = list(parent["Tags"])
    if not out.get("Meta") and parent.get("Meta"):
        out["Meta"] = dict(parent["Meta"])
    if not out.get("Token") and parent.get("Token"):
        out["Token"] = parent["Token"]
    proxy = dict(out.get("Proxy") or {})
    proxy["DestinationServiceName"] = pname
    proxy["DestinationServiceID"] = pid
    if parent.get("SocketPath") and not proxy.get("LocalServiceSocketPath"):
        proxy.setdefault("LocalServiceSocketPath", parent["SocketPath"])
    else:
        proxy["LocalServiceAddress"] = proxy.get("LocalServiceAddress") or "127.0.0.1"
        proxy["LocalServicePort"] = proxy.get("LocalServicePort") or parent.get("Port", 0)
    out["Proxy"] = proxy
    if not out.get("Check") and not out.get("Checks"):
        host = out.get("Address") or proxy.get("LocalServiceAddress") or "127.0.0.1"
        out["Checks"] = [
            {"Name": "Connect Sidecar Listening", "TCP": f"{host}:{port}", "Interval": 10.0},
            {"Name": f"Connect Sidecar Aliasing {pid}", "AliasService": pid},
        ]
    return out
