"""Service and check definitions: one parser for the HTTP API and for config files.

How it works
------------
Consul decodes these bodies with Go's case-insensitive JSON matching plus a table of snake_case
aliases, and rejects unknown fields and values of the wrong type. Each definition is first decoded
against Consul's struct (appliance.api.structs, Go's rules in appliance.api.gojson: canonical
names, `args`/`script_args` -> ScriptArgs, `check_id` -> ID, checked types, durations in seconds),
then validated with Consul's texts (reference/consul-api.md §4.1, §7.2) and turned into frozen
dataclasses. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from appliance.api.gojson import DecodeError, Struct, decode
from appliance.api.structs import CHECK_DEFINITION, SERVICE_DEFINITION
from appliance.config.durations import format_duration
from appliance.local import mesh

STATUSES = ("passing", "warning", "critical")
META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")


class DefinitionError(ValueError):
    """A definition Consul would refuse; str() is Consul's text."""


class UnknownFieldError(DefinitionError):
    """A body Go's decoder would refuse: an unknown field or a value of the wrong JSON type (the
    API answers `Request decode failed: ...`)."""


def _decode(raw: Any, spec: Struct) -> dict[str, Any]:
    """The definition decoded as Go would (appliance.api.gojson): canonical names, checked types."""
    try:
        return decode(raw, spec)
    except DecodeError as err:
        raise UnknownFieldError(str(err)) from None


def validate_meta(meta: dict[str, str], what: str = "Service") -> None:
    """structs.ValidateServiceMetadata / ValidateNodeMetadata."""
    if len(meta) > 64:
        raise DefinitionError(f"{what} metadata cannot contain more than 64 key/value pairs")
    for key, value in meta.items():
        if key == "":
            raise DefinitionError("Key cannot be blank")
        if not META_KEY.match(key):
            raise DefinitionError(f"Key contains invalid characters: {key}")
        if len(key) > 128:
            raise DefinitionError(f"Key is too long (limit: 128 characters): {key}")
        if key.startswith("consul-"):
            raise DefinitionError(f"Key prefix 'consul-' is reserved for internal use: {key}")
        if len(value) > 512:
            raise DefinitionError(f"Value is too long (limit: 512 characters): {key}")


@dataclass(frozen=True, slots=True)  # one per check/service: 100,000s of them
class CheckDefinition:
    id: str
    name: str
    kind: str  # "ttl", "script", "http", "tcp", "udp", "grpc", "h2ping", "alias", "docker", "os_service"
    service_id: str = ""
    notes: str = ""
    status: str = "critical"
    interval_s: float = 0.0
    timeout_s: float = 0.0
    ttl_s: float = 0.0
    deregister_critical_service_after_s: float = 0.0
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    output_max_size: int = 0
    script_args: tuple[str, ...] = ()
    http: str = ""
    method: str = ""
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    disable_redirects: bool = False
    tls_server_name: str = ""
    tls_skip_verify: bool = False
    tcp: str = ""
    tcp_use_tls: bool = False
    udp: str = ""
    grpc: str = ""
    grpc_use_tls: bool = False
    h2ping: str = ""
    h2ping_use_tls: bool = True
    docker_container_id: str = ""
    shell: str = ""
    alias_node: str = ""
    alias_service: str = ""
    os_service: str = ""
    token: str = ""

    def type_name(self) -> str:
        """HealthCheck.Type as Consul reports it."""
        return self.kind

    def interval_text(self) -> str:
        return format_duration(self.interval_s) if self.interval_s else ""

    def timeout_text(self) -> str:
        return format_duration(self.timeout_s) if self.timeout_s else ""


def check_kind(d: dict[str, Any]) -> str:
    if d.get("GRPC"):
        return "grpc"
    if d.get("HTTP"):
        return "http"
    if d.get("TTL"):
        return "ttl"
    if d.get("TCP"):
        return "tcp"
    if d.get("UDP"):
        return "udp"
    if d.get("AliasService"):
        return "alias"
    if d.get("DockerContainerID"):
        return "docker"
    if d.get("ScriptArgs") or d.get("Script"):
        return "script"
    if d.get("H2PING"):
        return "h2ping"
    if d.get("OSService"):
        return "os_service"
    return ""


def parse_check_definition(
    raw: Any,
    *,
    from_config: bool = False,
    default_id: str = "",
    default_name: str = "",
    service_id: str = "",
) -> CheckDefinition:
    """Parse and validate one check definition (API body, config entry or a service's Check)."""
    return _check_from(_decode(raw, CHECK_DEFINITION), default_id=default_id, default_name=default_name,
                       service_id=service_id)


def _check_from(d: dict[str, Any], *, default_id: str, default_name: str, service_id: str) -> CheckDefinition:
    """A decoded structs.CheckDefinition, validated."""
    if d.get("Script") and not d.get("ScriptArgs"):
        d["ScriptArgs"] = ["/bin/sh", "-c", d["Script"]]
    name = d.get("Name", "") or default_name
    if not name:
        raise DefinitionError("Missing check name")
    status = d.get("Status", "")
    if status and status not in STATUSES:
        raise DefinitionError("Status for checks must 'passing', 'warning', 'critical'")
    interval = d.get("Interval", 0.0)
    ttl = d.get("TTL", 0.0)
    kind = check_kind(d)
    if interval and ttl:
        raise DefinitionError("Invalid check: Interval and TTL cannot both be specified")
    if kind == "alias":
        if interval:
            raise DefinitionError("Invalid check: Interval cannot be set for Alias checks")
        if ttl:
            raise DefinitionError("Invalid check: TTL must be not be set for Alias checks")
    elif kind in ("script", "http", "tcp", "udp", "grpc", "h2ping", "docker", "os_service"):
        if interval <= 0:
            raise DefinitionError(
                "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
            )
        interval = max(interval, 1.0)
    elif kind == "ttl":
        if ttl <= 0:
            raise DefinitionError("Invalid check: TTL must be > 0 for TTL checks")
    else:
        raise DefinitionError(
            "Invalid check: must be a TTL, Script, HTTP, TCP, UDP, gRPC, H2PING, Docker, Alias or OSService check"
        )
    output_max = d.get("OutputMaxSize", 0)
    if output_max < 0:
        raise DefinitionError("Invalid check: OutputMaxSize must be positive")
    fb_critical = d.get("FailuresBeforeCritical", 0)
    fb_warning = d.get("FailuresBeforeWarning", fb_critical)
    if fb_warning > fb_critical:
        raise DefinitionError("Invalid check: FailuresBeforeWarning can't be higher than FailuresBeforeCritical")
    header = {k: v or [] for k, v in (d.get("Header") or {}).items()}
    timeout = d.get("Timeout", 0.0)
    if not timeout and kind in ("http", "tcp", "udp", "grpc", "h2ping"):
        timeout = 10.0
    elif not timeout and kind in ("script", "docker"):
        timeout = 30.0
    sid = service_id or d.get("ServiceID", "")  # a service's own check belongs to it (Consul's CheckTypes)
    return CheckDefinition(
        id=d.get("ID", "") or default_id or name,
        name=name,
        kind=kind,
        service_id=sid,
        notes=d.get("Notes", ""),
        status=status or "critical",
        interval_s=interval,
        timeout_s=timeout,
        ttl_s=ttl,
        deregister_critical_service_after_s=d.get("DeregisterCriticalServiceAfter", 0.0),
        success_before_passing=d.get("SuccessBeforePassing", 0),
        failures_before_warning=fb_warning,
        failures_before_critical=fb_critical,
        output_max_size=output_max,
        script_args=tuple(d.get("ScriptArgs") or ()),
        http=d.get("HTTP", ""),
        method=d.get("Method", ""),
        header=header,
        body=d.get("Body", ""),
        disable_redirects=d.get("DisableRedirects", False),
        tls_server_name=d.get("TLSServerName", ""),
        tls_skip_verify=d.get("TLSSkipVerify", False),
        tcp=d.get("TCP", ""),
        tcp_use_tls=d.get("TCPUseTLS", False),
        udp=d.get("UDP", ""),
        grpc=d.get("GRPC", ""),
        grpc_use_tls=d.get("GRPCUseTLS", False),
        h2ping=d.get("H2PING", ""),
        h2ping_use_tls=d.get("H2PingUseTLS", True),
        docker_container_id=d.get("DockerContainerID", ""),
        shell=d.get("Shell", ""),
        alias_node=d.get("AliasNode", ""),
        alias_service=d.get("AliasService", ""),
        os_service=d.get("OSService", ""),
        token=d.get("Token", ""),
    )


@dataclass(frozen=True, slots=True)  # one per check/service: 100,000s of them
class ServiceDefinition:
    id: str
    name: str
    tags: tuple[str, ...] = ()
    address: str = ""
    port: int = 0
    socket_path: str = ""
    kind: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    tagged_addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    enable_tag_override: bool = False
    checks: tuple[CheckDefinition, ...] = ()
    token: str = ""
    # Connect (appliance.local.mesh): the stored Proxy of a proxy or gateway, Connect.Native, the
    # decoded `connect { sidecar_service {} }` block to expand, and (on a sidecar registered that
    # way) its parent's ID: Consul's LocallyRegisteredAsSidecar
    proxy: dict[str, Any] | None = None
    native: bool = False
    sidecar: dict[str, Any] | None = None
    sidecar_of: str = ""


def _weights(d: dict[str, Any]) -> dict[str, int]:
    w = d.get("Weights")
    if w is None:
        return {"Passing": 1, "Warning": 1}
    passing, warning = w.get("Passing", 0), w.get("Warning", 0)
    if passing < 1:
        raise DefinitionError("Invalid Weights: Passing must be greater than 0")
    if warning < 0:
        raise DefinitionError("Invalid Weights: Warning must be greater or equal than 0")
    if passing > 65535 or warning > 65535:
        raise DefinitionError("Invalid Weights: Passing and Warning must be less than or equal to 65535")
    return {"Passing": passing, "Warning": warning}


def tagged_service_addresses(raw: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Decoded `map[string]ServiceAddress` with every field present (a null entry is the zero one)."""
    return {tag: {"Address": a.get("Address", ""), "Port": a.get("Port", 0)} for tag, a in (raw or {}).items()}


def parse_service_definition(raw: Any, *, from_config: bool = False) -> ServiceDefinition:
    """Parse and validate a service registration (API body or config-file service block)."""
    return service_from(_decode(raw, SERVICE_DEFINITION))


def _connect_fields(d: dict[str, Any], port: int) -> tuple[dict[str, Any] | None, bool, dict[str, Any] | None]:
    """(stored Proxy, Native, decoded sidecar block) of a decoded definition, checked as Consul does."""
    kind = d.get("Kind", "")
    connect = d.get("Connect") or {}
    native = connect.get("Native", False)
    sidecar = connect.get("SidecarService")
    if sidecar is not None:
        try:
            sidecar = _decode(sidecar, SERVICE_DEFINITION)
        except UnknownFieldError as err:
            raise UnknownFieldError(str(err).replace("ServiceDefinition.", "ServiceDefinition.Connect.SidecarService.",
                                                     1)) from None
    try:
        mesh.validate(kind, port, d.get("SocketPath", ""), d.get("Proxy"), native, sidecar is not None)
    except mesh.MeshError as err:
        raise DefinitionError(str(err)) from None
    proxy = mesh.proxy_config(d.get("Proxy")) if kind else None
    return proxy, native, sidecar


def sidecar_definition(parent: ServiceDefinition, port: int) -> ServiceDefinition:
    """The `<parent>-sidecar-proxy` service of a parent with a sidecar block, on `port`."""
    fields = {"ID": parent.id, "Name": parent.name, "Address": parent.address, "Tags": list(parent.tags),
              "Meta": dict(parent.meta), "Port": parent.port, "SocketPath": parent.socket_path,
              "Token": parent.token}
    try:
        d = mesh.sidecar_raw(fields, dict(parent.sidecar or {}), port)
    except mesh.MeshError as err:
        raise DefinitionError(str(err)) from None
    svc = service_from(d)
    return replace(svc, sidecar_of=parent.id)


def service_from(d: dict[str, Any]) -> ServiceDefinition:
    """A decoded structs.ServiceDefinition, validated."""
    name = d.get("Name", "")
    if not name:
        raise DefinitionError("Missing service name")
    sid = d.get("ID", "") or name
    address = d.get("Address", "")
    if address in ("0.0.0.0", "::", "[::]"):
        raise DefinitionError("Invalid service address")
    meta = d.get("Meta") or {}
    try:
        validate_meta(meta)
    except DefinitionError as err:
        raise DefinitionError(f"Invalid Service Meta: {err}") from err
    port = d.get("Port", 0)
    proxy, native, sidecar = _connect_fields(d, port)
    tagged = tagged_service_addresses(d.get("TaggedAddresses"))
    raw_checks = ([d["Check"]] if d.get("Check") else []) + list(d.get("Checks") or [])
    checks = []
    for n, check in enumerate(raw_checks, start=1):
        default_id = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{n}"
        try:
            checks.append(_check_from(check, default_id=default_id, default_name=f"Service '{name}' check",
                                      service_id=sid))
        except DefinitionError as err:
            text = str(err)
            message = text if text.startswith(("Invalid check", "Status")) else f"Invalid check: {text}"
            raise DefinitionError(message) from err
    return ServiceDefinition(
        id=sid,
        name=name,
        tags=tuple(d.get("Tags") or ()),
        address=address,
        port=port,
        socket_path=d.get("SocketPath", ""),
        kind=d.get("Kind", ""),
        meta=meta,
        tagged_addresses=tagged,
        weights=_weights(d),
        enable_tag_override=d.get("EnableTagOverride", False),
        checks=tuple(checks),
        token=d.get("Token", ""),
        proxy=proxy,
        native=native,
        sidecar=sidecar,
    )
