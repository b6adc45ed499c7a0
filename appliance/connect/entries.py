"""Config entries: the kinds, their fields, and Consul's validation (reference/connect.md §3).

How it works
------------
`decode(body)` takes a parsed JSON (or HCL) object, finds its `Kind` (or `kind`), and checks the
rest against that kind's fields with Go's decoding rules (appliance/api/gojson.py: PascalCase or
snake_case keys, no unknown keys, the right JSON kinds). Durations come back as Go duration
strings ("15s"). Then `validate` applies the kind's rules with Consul's texts:

    invalid config entry kind: foo
    service-defaults name must be the name of a service, and not a wildcard
    invalid name ("foo"), only "global" is supported
    the sum of all split weights must be 100, not 80.000000
    Redirect and Failover cannot both be set

Rules that read other entries (a router or splitter needs an L7 protocol for its service: the
service's `service-defaults`, else `proxy-defaults` `Config.protocol`, else tcp) are checked by
`check_chains` against the entries as they would be after the write. Intentions
(`service-intentions`) are validated in intentions.py, which also computes each source's
Precedence. Pure functions over values.
"""

from __future__ import annotations

from typing import Any

from appliance.api.gojson import (
    ANY,
    BOOL,
    FLOAT,
    INT,
    STRING,
    STRING_MAP,
    STRINGS,
    DecodeError,
    List,
    Map,
    Spec,
    Struct,
    json_kind,
)
from appliance.api.structs import EXPOSE, MESH_GATEWAY, TRANSPARENT_PROXY
from appliance.config.durations import DurationError, coerce_duration, format_duration

SERVICE_DEFAULTS, PROXY_DEFAULTS = "service-defaults", "proxy-defaults"
ROUTER, SPLITTER, RESOLVER = "service-router", "service-splitter", "service-resolver"
INGRESS, TERMINATING = "ingress-gateway", "terminating-gateway"
INTENTIONS, MESH, EXPORTED = "service-intentions", "mesh", "exported-services"
L7_PROTOCOLS = frozenset({"http", "http2", "grpc"})


class EntryError(ValueError):
    """An entry Consul refuses; str() is its text."""


class _GoDuration(Spec):
    """A time.Duration field: a Go duration string or nanoseconds in, the Go string out."""

    go_type = "time.Duration"

    def decode(self, value: Any, struct: str, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise DecodeError(f"json: cannot unmarshal {json_kind(value)} into Go struct field {struct}.{path} "
                              f"of type time.Duration")
        try:
            return format_duration(coerce_duration(value)) if value != "" else "0s"
        except DurationError as err:
            raise DecodeError(str(err)) from None


DURATION = _GoDuration()
_META = {"Meta": STRING_MAP, "Namespace": STRING, "Partition": STRING}
_IGNORED = ("CreateIndex", "ModifyIndex", "Hash")
_HEADERS = Struct("structs.HTTPHeaderModifiers", {"Add": STRING_MAP, "Set": STRING_MAP, "Remove": STRINGS})
_LIMITS = Struct("structs.UpstreamLimits", {"MaxConnections": INT, "MaxPendingRequests": INT,
                                            "MaxConcurrentRequests": INT})
_UPSTREAM_CONFIG = Struct("structs.UpstreamConfig", {
    "Name": STRING, "Namespace": STRING, "Partition": STRING, "Peer": STRING, "EnvoyListenerJSON": STRING,
    "EnvoyClusterJSON": STRING, "Protocol": STRING, "ConnectTimeoutMs": INT, "Limits": _LIMITS,
    "PassiveHealthCheck": Map(ANY), "MeshGateway": MESH_GATEWAY, "BalanceOutboundConnections": STRING,
})
_HEADER_MATCH = Struct("structs.ServiceRouteHTTPMatchHeader", {
    "Name": STRING, "Present": BOOL, "Exact": STRING, "Prefix": STRING, "Suffix": STRING, "Regex": STRING,
    "Invert": BOOL})
_QUERY_MATCH = Struct("structs.ServiceRouteHTTPMatchQueryParam", {
    "Name": STRING, "Present": BOOL, "Exact": STRING, "Regex": STRING})
_ROUTE = Struct("structs.ServiceRoute", {
    "Match": Struct("structs.ServiceRouteMatch", {"HTTP": Struct("structs.ServiceRouteHTTPMatch", {
        "PathExact": STRING, "PathPrefix": STRING, "PathRegex": STRING, "Header": List(_HEADER_MATCH),
        "QueryParam": List(_QUERY_MATCH), "Methods": STRINGS})}),
    "Destination": Struct("structs.ServiceRouteDestination", {
        "Service": STRING, "ServiceSubset": STRING, "Namespace": STRING, "Partition": STRING,
        "PrefixRewrite": STRING, "RequestTimeout": DURATION, "IdleTimeout": DURATION, "NumRetries": INT,
        "RetryOnConnectFailure": BOOL, "RetryOnStatusCodes": List(INT), "RetryOn": STRINGS,
        "RequestHeaders": _HEADERS, "ResponseHeaders": _HEADERS}),
})
_SPLIT = Struct("structs.ServiceSplit", {
    "Weight": FLOAT, "Service": STRING, "ServiceSubset": STRING, "Namespace": STRING, "Partition": STRING,
    "RequestHeaders": _HEADERS, "ResponseHeaders": _HEADERS})
_FAILOVER = Struct("structs.ServiceResolverFailover", {
    "Service": STRING, "ServiceSubset": STRING, "Namespace": STRING, "Datacenters": STRINGS,
    "Targets": List(Map(ANY)), "Policy": Map(ANY), "SamenessGroup": STRING})
_GATEWAY_SERVICE = Struct("structs.IngressService", {
    "Name": STRING, "Hosts": STRINGS, "Namespace": STRING, "Partition": STRING, "TLS": Map(ANY),
    "RequestHeaders": _HEADERS, "ResponseHeaders": _HEADERS, "MaxConnections": INT, "MaxPendingRequests": INT,
    "MaxConcurrentRequests": INT, "PassiveHealthCheck": Map(ANY)})
_PERMISSION = Struct("structs.IntentionPermission", {"Action": STRING, "HTTP": Struct(
    "structs.IntentionHTTPPermission", {"PathExact": STRING, "PathPrefix": STRING, "PathRegex": STRING,
                                        "Header": List(_HEADER_MATCH), "Methods": STRINGS}), "JWT": Map(ANY)})
SOURCE = Struct("structs.SourceIntention", {
    "Name": STRING, "Peer": STRING, "Namespace": STRING, "Partition": STRING, "SamenessGroup": STRING,
    "Action": STRING, "Permissions": List(_PERMISSION), "Precedence": INT, "Type": STRING, "Description": STRING,
    "LegacyID": STRING, "LegacyMeta": STRING_MAP, "LegacyCreateTime": STRING, "LegacyUpdateTime": STRING})

_FIELDS: dict[str, dict[str, Spec]] = {
    SERVICE_DEFAULTS: {
        "Protocol": STRING, "Mode": STRING, "TransparentProxy": TRANSPARENT_PROXY, "MutualTLSMode": STRING,
        "MeshGateway": MESH_GATEWAY, "Expose": EXPOSE, "ExternalSNI": STRING,
        "UpstreamConfig": Struct("structs.UpstreamConfiguration", {"Defaults": _UPSTREAM_CONFIG,
                                                                   "Overrides": List(_UPSTREAM_CONFIG)}),
        "Destination": Struct("structs.DestinationConfig", {"Addresses": STRINGS, "Port": INT}),
        "MaxInboundConnections": INT, "LocalConnectTimeoutMs": INT, "LocalRequestTimeoutMs": INT,
        "BalanceInboundConnections": STRING, "RateLimits": Map(ANY), "EnvoyExtensions": List(Map(ANY)),
    },
    PROXY_DEFAULTS: {
        "Config": Map(ANY), "Mode": STRING, "TransparentProxy": TRANSPARENT_PROXY, "MutualTLSMode": STRING,
        "MeshGateway": MESH_GATEWAY, "Expose": EXPOSE, "AccessLogs": Map(ANY), "EnvoyExtensions": List(Map(ANY)),
        "FailoverPolicy": Map(ANY), "PrioritizeByLocality": Map(ANY),
    },
    ROUTER: {"Routes": List(_ROUTE)},
    SPLITTER: {"Splits": List(_SPLIT)},
    RESOLVER: {
        "DefaultSubset": STRING,
        "Subsets": Map(Struct("structs.ServiceResolverSubset", {"Filter": STRING, "OnlyPassing": BOOL})),
        "Redirect": Struct("structs.ServiceResolverRedirect", {
            "Service": STRING, "ServiceSubset": STRING, "Namespace": STRING, "Partition": STRING,
            "Datacenter": STRING, "Peer": STRING, "SamenessGroup": STRING}),
        "Failover": Map(_FAILOVER), "ConnectTimeout": DURATION, "RequestTimeout": DURATION,
        "LoadBalancer": Map(ANY), "PrioritizeByLocality": Map(ANY),
    },
    INGRESS: {
        "TLS": Map(ANY), "Listeners": List(Struct("structs.IngressListener", {
            "Port": INT, "Protocol": STRING, "Services": List(_GATEWAY_SERVICE), "TLS": Map(ANY)})),
        "Defaults": Map(ANY),
    },
    TERMINATING: {"Services": List(Struct("structs.LinkedService", {
        "Name": STRING, "Namespace": STRING, "Partition": STRING, "CAFile": STRING, "CertFile": STRING,
        "KeyFile": STRING, "SNI": STRING, "DisableAutoHostRewrite": BOOL}))},
    INTENTIONS: {"Sources": List(SOURCE), "JWT": Map(ANY)},
    MESH: {"TransparentProxy": Struct("structs.TransparentProxyMeshConfig", {"MeshDestinationsOnly": BOOL}),
           "AllowEnablingPermissiveMutualTLS": BOOL, "ValidateClusters": BOOL, "TLS": Map(ANY), "HTTP": Map(ANY),
           "Peering": Map(ANY)},
    EXPORTED: {"Services": List(Struct("structs.ExportedService", {
        "Name": STRING, "Namespace": STRING, "Consumers": List(Struct("structs.ServiceConsumer", {
            "Peer": STRING, "Partition": STRING, "SamenessGroup": STRING}))}))},
}
KINDS = tuple(_FIELDS)
SPECS: dict[str, Struct] = {kind: Struct(f"structs.{kind}", {"Kind": STRING, "Name": STRING, **fields, **_META},
                                         ignored=_IGNORED) for kind, fields in _FIELDS.items()}
_FIXED_NAMES = {PROXY_DEFAULTS: "global", MESH: "mesh", EXPORTED: "default"}


def kind_of(body: Any) -> str:
    """The entry's kind from its top-level `Kind`/`kind` key (Consul's texts when missing or wrong)."""
    if not isinstance(body, dict):
        raise EntryError("Request decoding failed: Payload does not contain a kind/Kind key at the top level")
    kind = body.get("Kind", body.get("kind"))
    if kind is None:
        raise EntryError("Request decoding failed: Payload does not contain a kind/Kind key at the top level")
    if not isinstance(kind, str):
        raise EntryError("Request decoding failed: Kind value in payload is not a string")
    if kind not in SPECS:
        raise EntryError(f"Request decoding failed: invalid config entry kind: {kind}")
    return kind


def decode(body: Any) -> dict[str, Any]:
    """A config entry from a request body or file; EntryError with Consul's `Request decoding failed: ` text."""
    kind = kind_of(body)
    try:
        entry: dict[str, Any] = SPECS[kind].decode(body, SPECS[kind].name, "")
    except DecodeError as err:
        text = str(err)
        if text.startswith('json: unknown field "'):
            text = f'1 error occurred:\n\t* invalid config key "{text[21:-1]}"\n\n'
        raise EntryError(f"Request decoding failed: {text}") from None
    entry["Kind"] = kind
    entry.setdefault("Name", "")
    return entry


def normalize(entry: dict[str, Any]) -> dict[str, Any]:
    """Consul's Normalize: protocols lower-cased, fixed names filled in."""
    out = dict(entry)
    kind = out["Kind"]
    if kind == SERVICE_DEFAULTS and out.get("Protocol"):
        out["Protocol"] = out["Protocol"].lower()
    if kind == PROXY_DEFAULTS and isinstance((out.get("Config") or {}).get("protocol"), str):
        out["Config"] = {**out["Config"], "protocol": out["Config"]["protocol"].lower()}
    if kind == MESH and not out.get("Name"):
        out["Name"] = "mesh"
    if kind == INGRESS:  # a listener's protocol: tcp unless given, lower-cased
        out["Listeners"] = [{**li, "Protocol": (li.get("Protocol") or "tcp").lower()}
                            for li in out.get("Listeners") or ()]
    if kind == SPLITTER:  # Go prints a float64 weight of 90 as 90
        out["Splits"] = [{**s, "Weight": int(s["Weight"])} if float(s.get("Weight", 0)).is_integer() and "Weight" in s
                         else s for s in out.get("Splits") or ()]
    return out


def validate(entry: dict[str, Any]) -> None:
    """The kind's own rules (EntryError with Consul's text); intentions are checked in intentions.py."""
    kind, name = entry["Kind"], entry.get("Name") or ""
    if not name:
        raise EntryError("Name is required")
    fixed = _FIXED_NAMES.get(kind)
    if fixed is not None and name != fixed:
        raise EntryError(f'invalid name ("{name}"), only "{fixed}" is supported')
    if kind == SERVICE_DEFAULTS:
        if name == "*":
            raise EntryError("service-defaults name must be the name of a service, and not a wildcard")
        if entry.get("UpstreamConfig") and entry.get("Destination"):
            raise EntryError("UpstreamConfig and Destination are mutually exclusive for service defaults")
    if kind in (SERVICE_DEFAULTS, PROXY_DEFAULTS):
        mode = entry.get("MutualTLSMode", "")
        if mode not in ("", "strict", "permissive"):
            raise EntryError(f'Invalid MutualTLSMode "{mode}". Must be one of "", "strict", or "permissive".')
    if kind == ROUTER:
        _check_routes(entry.get("Routes") or [])
    if kind == SPLITTER:
        _check_splits(entry.get("Splits") or [])
    if kind == RESOLVER:
        _check_resolver(entry)
    if kind == INGRESS:
        _check_listeners(entry.get("Listeners") or [])


def _check_listeners(listeners: list[dict[str, Any]]) -> None:
    """An ingress gateway's listeners (Consul's IngressGatewayConfigEntry.Validate)."""
    ports: set[int] = set()
    for listener in listeners:
        port, proto = listener.get("Port", 0), listener.get("Protocol") or "tcp"
        if port in ports:
            raise EntryError(f"port {port} declared on two listeners")
        ports.add(port)
        if proto not in ("tcp", *L7_PROTOCOLS):
            raise EntryError(f"protocol must be 'tcp', 'http', 'http2', or 'grpc'. '{proto}' is an unsupported "
                             "protocol")
        services = listener.get("Services") or []
        if not services:
            raise EntryError(f"No service declared for listener with port {port}")
        if proto not in L7_PROTOCOLS and len(services) > 1:
            raise EntryError("Multiple services per listener are only supported for L7 protocols, 'http', 'grpc' "
                             f"and 'http2' (listener on port {port})")
        for svc in services:
            name = svc.get("Name") or ""
            if not name:
                raise EntryError(f"Service name cannot be blank (listener on port {port})")
            if proto == "tcp" and name == "*":
                raise EntryError(f"Wildcard service name is only valid for protocol = 'http' (listener on port {port})")
            if proto == "tcp" and svc.get("Hosts"):
                raise EntryError(f"Associating hosts to a service is not supported for the {proto} protocol "
                                 f"(listener on port {port})")


def _check_routes(routes: list[dict[str, Any]]) -> None:
    for i, route in enumerate(routes):
        http = (route.get("Match") or {}).get("HTTP") or {}
        paths = [k for k in ("PathExact", "PathPrefix", "PathRegex") if http.get(k)]
        if len(paths) > 1:
            raise EntryError(f"Route[{i}] should only contain at most one of PathExact, PathPrefix, or PathRegex")
        for key in ("PathExact", "PathPrefix"):
            value = http.get(key)
            if value and not value.startswith("/"):
                raise EntryError(f"Route[{i}] {key} doesn't start with '/': \"{value}\"")


def _check_splits(splits: list[dict[str, Any]]) -> None:
    if not splits:
        raise EntryError("no splits configured")
    total, seen = 0.0, set()
    for split in splits:
        weight = round(float(split.get("Weight") or 0) * 100) / 100  # 0.01 resolution
        if weight < 0 or weight > 100:
            raise EntryError("split weights must be between 0 and 100")
        total += weight
        leg = (split.get("Service", ""), split.get("ServiceSubset", ""), split.get("Namespace", ""))
        if leg in seen:
            raise EntryError(f'split destination occurs more than once: service="{leg[0]}", subset="{leg[1]}", '
                             f'namespace="{leg[2] or "default"}"')
        seen.add(leg)
    if abs(total - 100) > 1e-9:
        raise EntryError(f"the sum of all split weights must be 100, not {total:f}")


def _check_resolver(entry: dict[str, Any]) -> None:
    subsets = entry.get("Subsets") or {}
    default = entry.get("DefaultSubset") or ""
    if default and default not in subsets:
        raise EntryError(f'DefaultSubset "{default}" is not a valid subset')
    if entry.get("Redirect") and entry.get("Failover"):
        raise EntryError("Redirect and Failover cannot both be set")
    for name in entry.get("Failover") or {}:
        if name != "*" and name not in subsets:
            raise EntryError(f'Bad Failover["{name}"]: not a valid subset')


def protocol(entries: dict[tuple[str, str], dict[str, Any]], service: str) -> str:
    """The protocol of a service's discovery chain: service-defaults, else proxy-defaults, else tcp."""
    sd = entries.get((SERVICE_DEFAULTS, service))
    if sd is not None and sd.get("Protocol"):
        return str(sd["Protocol"]).lower()
    pd = entries.get((PROXY_DEFAULTS, "global"))
    proto = ((pd or {}).get("Config") or {}).get("protocol")
    return proto.lower() if isinstance(proto, str) and proto else "tcp"


def check_chains(entries: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Every router and splitter needs an L7 protocol for its service (the entries after a write)."""
    for (kind, name) in sorted(entries):
        if kind in (ROUTER, SPLITTER):
            proto = protocol(entries, name)
            if proto not in L7_PROTOCOLS:
                raise EntryError(f'discovery chain "{name}" uses a protocol "{proto}" that does not permit '
                                 "advanced routing or splitting behavior")


def needs(kind: str, name: str, level: str) -> list[tuple[str, str, str | None]]:
    """The ACL permissions reading or writing an entry takes (Consul's CanRead/CanWrite per kind)."""
    if kind == INTENTIONS:
        return [("intention", level, name)]
    if kind in (PROXY_DEFAULTS, MESH):
        return [("mesh", "write", None)] if level == "write" else []
    if kind == EXPORTED:
        return [("mesh", level, None)]
    if kind in (INGRESS, TERMINATING) and level == "write":
        return [("mesh", "write", None)]
    return [("service", level, name)]
