"""What a built-in proxy serves: its identity, public listener, local app and upstreams.

Two sources, as in Consul's `connect proxy` (reference/connect.md §6.1-6.2): the flags of an
ad-hoc proxy (`-service web -upstream db:9191 -listen :21000 -service-addr 127.0.0.1:8080`), or
the agent's registration of a connect-proxy service (`-sidecar-for <id>` finds it, `-proxy-id`
names it). `from_registration` turns an AgentService into a `ProxyConfig`: the proxied service's
name is the identity (leaf certificate, authorize target), the public listener binds the
registration's address and port (0.0.0.0 when it has no address), inbound traffic goes to
`Proxy.LocalServiceAddress:LocalServicePort`, each upstream listens on
`LocalBindAddress:LocalBindPort` (127.0.0.1 by default). Pure functions over values, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ProxyConfigError(ValueError):
    """A proxy that cannot configure itself; str() is Consul's text."""


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    bind_address: str
    bind_port: int
    dest_type: str = "service"  # or "prepared_query"
    datacenter: str = ""
    connect_timeout_s: float = 10.0

    @property
    def key(self) -> str:
        return f"{self.dest_type}:{self.name}@{self.bind_address}:{self.bind_port}"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    service: str  # the proxied service: the identity of the proxy's certificate
    proxy_id: str = ""  # the registration it came from ("" for flags)
    public: tuple[str, int] | None = None  # the mTLS listener
    local_app: tuple[str, int] | None = None  # where inbound connections go
    upstreams: tuple[Upstream, ...] = ()
    local_connect_timeout_s: float = 1.0
    handshake_timeout_s: float = 10.0
    metrics_addr: str = ""  # where to serve /metrics: Config.envoy_prometheus_bind_addr ("" none)


def split_host_port(value: str, what: str) -> tuple[str, int]:
    """`host:port` or `:port` (host "" then) into its parts; ProxyConfigError on anything else."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProxyConfigError(f"{what}: invalid address {value!r}: expected host:port")
    return host.strip("[]"), int(port)


def parse_upstream_flag(value: str) -> Upstream:
    """`-upstream name:port`, `name:host:port` or `prepared_query:name:port`."""
    parts = value.split(":")
    dest_type = "service"
    if len(parts) >= 3 and parts[0] in ("service", "prepared_query"):
        dest_type, parts = parts[0], parts[1:]
    if len(parts) == 2:
        name, host, port = parts[0], "127.0.0.1", parts[1]
    elif len(parts) == 3:
        name, host, port = parts
    else:
        raise ProxyConfigError(f"Upstream value should be name:addr:port or name:port, got {value!r}")
    if not name or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProxyConfigError(f"Upstream value should be name:addr:port or name:port, got {value!r}")
    return Upstream(name, host or "127.0.0.1", int(port), dest_type)


def _ms(config: dict[str, Any], key: str, default_s: float) -> float:
    value = config.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value) / 1000.0
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value) / 1000.0
    return default_s


def find_sidecar(services: dict[str, dict[str, Any]], target_id: str) -> str:
    """The ID of the one connect-proxy registered as the sidecar of `target_id` (case-insensitive)."""
    want = target_id.lower()
    found = sorted(sid for sid, svc in services.items()
                   if svc.get("Kind") == "connect-proxy"
                   and str((svc.get("Proxy") or {}).get("DestinationServiceID", "")).lower() == want)
    if not found:
        raise ProxyConfigError(f"No sidecar proxy registered for {target_id}")
    if len(found) > 1:
        raise ProxyConfigError(f"More than one sidecar proxy registered for {target_id}.\n"
                               "    Start proxy with -proxy-id and one of the following IDs: " + ", ".join(found))
    return found[0]


def from_registration(svc: dict[str, Any]) -> ProxyConfig:
    """A proxy's configuration from its AgentService (`/v1/agent/service/<proxy id>`)."""
    if svc.get("Kind") != "connect-proxy":
        raise ProxyConfigError(f"service {svc.get('ID', '')} is not a Connect proxy")
    proxy = svc.get("Proxy") or {}
    config = proxy.get("Config") or {}
    name = proxy.get("DestinationServiceName") or ""
    if not name:
        raise ProxyConfigError(f"service {svc.get('ID', '')} has no Proxy.DestinationServiceName")
    public = (svc.get("Address") or "0.0.0.0", int(svc.get("Port") or 0)) if svc.get("Port") else None
    local = None
    if proxy.get("LocalServicePort"):
        local = (proxy.get("LocalServiceAddress") or "127.0.0.1", int(proxy["LocalServicePort"]))
    upstreams = []
    for u in proxy.get("Upstreams") or ():
        ucfg = u.get("Config") or {}
        if not u.get("LocalBindPort"):
            continue  # a unix socket or a centrally configured upstream: not served by this proxy
        upstreams.append(Upstream(
            u.get("DestinationName", ""), u.get("LocalBindAddress") or "127.0.0.1", int(u["LocalBindPort"]),
            u.get("DestinationType") or "service", u.get("Datacenter") or "",
            _ms(ucfg, "connect_timeout_ms", 10.0)))
    # Consul's key for a sidecar's Prometheus endpoint (set per proxy or in proxy-defaults)
    metrics_addr = str(config.get("envoy_prometheus_bind_addr") or "")
    if metrics_addr:
        split_host_port(metrics_addr, "envoy_prometheus_bind_addr")
    return ProxyConfig(
        service=name, proxy_id=svc.get("ID", ""), public=public, local_app=local, upstreams=tuple(upstreams),
        local_connect_timeout_s=_ms(config, "local_connect_timeout_ms", 1.0),
        handshake_timeout_s=_ms(config, "handshake_timeout_ms", 10.0), metrics_addr=metrics_addr,
    )


def service_uri_matches(uri: str, service: str, datacenter: str = "") -> bool:
    """Whether a peer's SPIFFE URI names `service` (any trust domain; the datacenter when given):
    `spiffe://<host>/ns/<ns>/dc/<dc>/svc/<service>`, compared case-insensitively."""
    parsed = service_of_uri(uri)
    if parsed is None:
        return False
    dc, svc = parsed
    return svc.lower() == service.lower() and (not datacenter or dc.lower() == datacenter.lower())


def service_of_uri(uri: str) -> tuple[str, str] | None:
    """(datacenter, service) of a SPIFFE service URI, or None."""
    if not uri.lower().startswith("spiffe://"):
        return None
    _, _, path = uri[len("spiffe://"):].partition("/")
    parts = path.split("/")
    if len(parts) >= 2 and parts[0] == "ap":
        parts = parts[2:]
    if len(parts) != 6 or parts[0] != "ns" or parts[2] != "dc" or parts[4] != "svc" or not parts[5]:
        return None
    return parts[3], parts[5]
