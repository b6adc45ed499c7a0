"""Service and check definitions: one parser for the HTTP API and for config files.

How it works
------------
Consul decodes these bodies with Go's case-insensitive JSON matching plus a table of snake_case
aliases, and rejects unknown fields. `_normalise` does the same: every key is matched by its
lower-case spelling with underscores removed against the canonical field list, aliases map to
their canonical field (`args`/`script_args` -> ScriptArgs, `check_id`/`id` -> ID), anything else
is `unknown field "<key>"`. Then each definition is validated with Consul's texts
(reference/consul-api.md §4.1, §7.2) and turned into frozen dataclasses. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from appliance.config.durations import DurationError, coerce_duration, format_duration

STATUSES = ("passing", "warning", "critical")
META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")


class DefinitionError(ValueError):
    """A definition Consul would refuse; str() is Consul's text."""


class UnknownFieldError(DefinitionError):
    """A field Go's decoder would refuse (the API answers `Request decode failed: ...`)."""


def _fold(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


_SERVICE_FIELDS = [
    "ID", "Name", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "SocketPath", "Kind",
    "EnableTagOverride", "Weights", "Check", "Checks", "Proxy", "Connect", "Token", "Namespace",
    "Partition", "Locality",
]
_CHECK_FIELDS = [
    "ID", "Name", "Notes", "ServiceID", "ScriptArgs", "Interval", "Timeout", "HTTP", "Method",
    "Header", "Body", "DisableRedirects", "TLSServerName", "TLSSkipVerify", "TCP", "TCPUseTLS",
    "UDP", "TTL", "GRPC", "GRPCUseTLS", "H2PING", "H2PingUseTLS", "DockerContainerID", "Shell",
    "AliasNode", "AliasService", "OSService", "Status", "DeregisterCriticalServiceAfter",
    "SuccessBeforePassing", "FailuresBeforeWarning", "FailuresBeforeCritical", "OutputMaxSize",
    "Token", "Script", "Namespace", "Partition", "Definition",
]
_ALIASES = {"args": "ScriptArgs", "checkid": "ID"}  # check fields with a second spelling


def _normalise(raw: Any, fields: list[str], what: str, aliases: dict[str, str] | None = None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise UnknownFieldError(f"json: cannot unmarshal {type(raw).__name__} into Go value of type {what}")
    table = {_fold(f): f for f in fields}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        folded = _fold(str(key))
        name = table.get(folded) or (aliases or {}).get(folded)
        if name is None:
            raise UnknownFieldError(f'json: unknown field "{key}"')
        out[name] = value
    return out


def _str(d: dict[str, Any], key: str, default: str = "") -> str:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise UnknownFieldError(f"json: cannot unmarshal {type(value).__name__} into Go struct field .{key} of type string")
    return value


def _int(d: dict[str, Any], key: str, default: int = 0) -> int:
    value = d.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnknownFieldError(f"json: cannot unmarshal {type(value).__name__} into Go struct field .{key} of type int")
    return value


def _bool(d: dict[str, Any], key: str, default: bool = False) -> bool:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UnknownFieldError(f"json: cannot unmarshal {type(value).__name__} into Go struct field .{key} of type bool")
    return value


def _str_list(d: dict[str, Any], key: str) -> list[str]:
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UnknownFieldError(f"json: cannot unmarshal into Go struct field .{key} of type []string")
    return list(value)


def _str_map(d: dict[str, Any], key: str) -> dict[str, str]:
    value = d.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise UnknownFieldError(f"json: cannot unmarshal into Go struct field .{key} of type map[string]string")
    return {str(k): v for k, v in value.items()}


def _duration(d: dict[str, Any], key: str) -> float:
    value = d.get(key)
    if value is None or value == "":
        return 0.0
    try:
        return coerce_duration(value)
    except DurationError as err:
        raise UnknownFieldError(str(err)) from err


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


@dataclass(frozen=True)
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


def _check_kind(d: dict[str, Any]) -> str:
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
    d = _normalise(raw, _CHECK_FIELDS, "structs.CheckDefinition", _ALIASES)
    if d.get("Script") and not d.get("ScriptArgs"):
        script = _str(d, "Script")
        d["ScriptArgs"] = ["/bin/sh", "-c", script]
    name = _str(d, "Name") or default_name
    if not name:
        raise DefinitionError("Missing check name")
    status = _str(d, "Status")
    if status and status not in STATUSES:
        raise DefinitionError("Status for checks must 'passing', 'warning', 'critical'")
    interval = _duration(d, "Interval")
    ttl = _duration(d, "TTL")
    kind = _check_kind(d)
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
    output_max = _int(d, "OutputMaxSize")
    if output_max < 0:
        raise DefinitionError("Invalid check: OutputMaxSize must be positive")
    fb_critical = _int(d, "FailuresBeforeCritical")
    fb_warning = _int(d, "FailuresBeforeWarning", fb_critical)
    if fb_warning > fb_critical:
        raise DefinitionError("Invalid check: FailuresBeforeWarning can't be higher than FailuresBeforeCritical")
    header_raw = d.get("Header") or {}
    if not isinstance(header_raw, dict):
        raise UnknownFieldError("json: cannot unmarshal into Go struct field .Header of type map[string][]string")
    header = {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in header_raw.items()}
    timeout = _duration(d, "Timeout")
    if not timeout and kind in ("http", "tcp", "udp", "grpc", "h2ping"):
        timeout = 10.0
    elif not timeout and kind in ("script", "docker"):
        timeout = 30.0
    sid = _str(d, "ServiceID") or service_id
    return CheckDefinition(
        id=_str(d, "ID") or default_id or name,
        name=name,
        kind=kind,
        service_id=sid,
        notes=_str(d, "Notes"),
        status=status or "critical",
        interval_s=interval,
        timeout_s=timeout,
        ttl_s=ttl,
        deregister_critical_service_after_s=_duration(d, "DeregisterCriticalServiceAfter"),
        success_before_passing=_int(d, "SuccessBeforePassing"),
        failures_before_warning=fb_warning,
        failures_before_critical=fb_critical,
        output_max_size=output_max,
        script_args=tuple(_str_list(d, "ScriptArgs")),
        http=_str(d, "HTTP"),
        method=_str(d, "Method"),
        header=header,
        body=_str(d, "Body"),
        disable_redirects=_bool(d, "DisableRedirects"),
        tls_server_name=_str(d, "TLSServerName"),
        tls_skip_verify=_bool(d, "TLSSkipVerify"),
        tcp=_str(d, "TCP"),
        tcp_use_tls=_bool(d, "TCPUseTLS"),
        udp=_str(d, "UDP"),
        grpc=_str(d, "GRPC"),
        grpc_use_tls=_bool(d, "GRPCUseTLS"),
        h2ping=_str(d, "H2PING"),
        h2ping_use_tls=_bool(d, "H2PingUseTLS", True),
        docker_container_id=_str(d, "DockerContainerID"),
        shell=_str(d, "Shell"),
        alias_node=_str(d, "AliasNode"),
        alias_service=_str(d, "AliasService"),
        os_service=_str(d, "OSService"),
        token=_str(d, "Token"),
    )


@dataclass(frozen=True)
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


def _tagged_addresses(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = d.get("TaggedAddresses") or {}
    if not isinstance(raw, dict):
        raise UnknownFieldError("json: cannot unmarshal into Go struct field .TaggedAddresses")
    out = {}
    for tag, value in raw.items():
        addr = _normalise(value, ["Address", "Port"], "structs.ServiceAddress")
        out[str(tag)] = {"Address": _str(addr, "Address"), "Port": _int(addr, "Port")}
    return out


def _weights(d: dict[str, Any]) -> dict[str, int]:
    raw = d.get("Weights")
    if raw is None:
        return {"Passing": 1, "Warning": 1}
    w = _normalise(raw, ["Passing", "Warning"], "structs.Weights")
    passing, warning = _int(w, "Passing"), _int(w, "Warning")
    if passing < 1:
        raise DefinitionError("Invalid Weights: Passing must be greater than 0")
    if warning < 0:
        raise DefinitionError("Invalid Weights: Warning must be greater or equal than 0")
    if passing > 65535 or warning > 65535:
        raise DefinitionError("Invalid Weights: Passing and Warning must be less than or equal to 65535")
    return {"Passing": passing, "Warning": warning}


def parse_service_definition(raw: Any, *, from_config: bool = False) -> ServiceDefinition:
    """Parse and validate a service registration (API body or config-file service block)."""
    d = _normalise(raw, _SERVICE_FIELDS, "structs.ServiceDefinition")
    name = _str(d, "Name")
    if not name:
        raise DefinitionError("Missing service name")
    sid = _str(d, "ID") or name
    address = _str(d, "Address")
    if address in ("0.0.0.0", "::", "[::]"):
        raise DefinitionError("Invalid service address")
    meta = _str_map(d, "Meta")
    try:
        validate_meta(meta)
    except DefinitionError as err:
        raise DefinitionError(f"Invalid Service Meta: {err}") from err
    port = _int(d, "Port")
    tagged = _tagged_addresses(d)
    raw_checks: list[Any] = []
    if d.get("Check"):
        raw_checks.append(d["Check"])
    more = d.get("Checks") or []
    if not isinstance(more, list):
        raise UnknownFieldError("json: cannot unmarshal into Go struct field .Checks of type structs.CheckTypes")
    raw_checks.extend(more)
    checks = []
    for n, raw_check in enumerate(raw_checks, start=1):
        default_id = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{n}"
        try:
            checks.append(
                parse_check_definition(
                    raw_check,
                    from_config=from_config,
                    default_id=default_id,
                    default_name=f"Service '{name}' check",
                    service_id=sid,
                )
            )
        except UnknownFieldError:
            raise
        except DefinitionError as err:
            text = str(err)
            raise DefinitionError(text if text.startswith(("Invalid check", "Status")) else f"Invalid check: {text}") from err
    return ServiceDefinition(
        id=sid,
        name=name,
        tags=tuple(_str_list(d, "Tags")),
        address=address,
        port=port,
        socket_path=_str(d, "SocketPath"),
        kind=_str(d, "Kind"),
        meta=meta,
        tagged_addresses=tagged,
        weights=_weights(d),
        enable_tag_override=_bool(d, "EnableTagOverride"),
        checks=tuple(checks),
        token=_str(d, "Token"),
    )
