"""From command-line flags to one frozen RuntimeConfig.

How it works
------------
`assemble` folds the sources in Consul's order: built-in defaults (RuntimeConfig's own field
defaults, applied last by `to_runtime`) -> -dev defaults -> config files and directories in
command-line order -> -hcl fragments -> flags; each later source wins for scalars, lists are
appended, maps merged key by key (appliance.config.loader.merge). `to_runtime` then reads the
merged mapping once: converts durations to seconds, resolves legacy spellings (`ui`, `ui_dir`,
`acl.tokens.master`), applies role-dependent defaults (leave_on_terminate, skip_leave_on_interrupt),
validates with Consul's texts (appliance.config.validation) and returns the frozen dataclass.

Two things touch the host and are done only when `Host` asks for them: the node ID kept in
`<data_dir>/node-id` (read, or created on first start) and the advertise address guessed from the
host's interfaces when bind_addr is a wildcard. `cairn validate` builds with neither.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from appliance.cloud.metadata import advertise_for_config as advertise_from_metadata
from appliance.config import validation as check
from appliance.config.acl import resolve_acl
from appliance.config.durations import parse_duration
from appliance.config.errors import ConfigError
from appliance.config.flags import AgentFlags
from appliance.config.loader import check_fragment, load_source, merge
from appliance.config.runtime import (
    Autopilot,
    ConfigSource,
    DNSConfig,
    Limits,
    Ports,
    RuntimeConfig,
    Telemetry,
)
from appliance.config.tls import resolve as resolve_tls
from appliance.config.ui import check_content_path, resolve_ui_metrics
from appliance.gossip.config import GossipConfig, GossipConfigError

DEV_DEFAULTS: dict[str, Any] = {
    "server": True,
    "bootstrap": True,
    "bind_addr": "127.0.0.1",
    "client_addr": "127.0.0.1",
    "log_level": "debug",
    "ui_config": {"enabled": True},
    "ports": {"grpc": 8502, "grpc_tls": 8503},
    "performance": {"raft_multiplier": 1},
}

LISTENERS = (("dns", "DNS"), ("http", "HTTP"), ("https", "HTTPS"), ("grpc", "gRPC"), ("grpc_tls", "gRPC TLS"))


@dataclass
class Host:
    """What the builder may learn from, or write to, this machine."""

    hostname: str | None = None  # None: socket.gethostname()
    persist_node_id: bool = True  # read/create <data_dir>/node-id
    detect_advertise: bool = True  # guess advertise_addr from the interfaces
    node_id: str = ""  # keep this node ID unless the sources set one (reload)
    warnings: list[str] = field(default_factory=list)


def assemble(flags: AgentFlags, warnings: list[str]) -> dict[str, Any]:
    """Merge every source of `flags` in order; returns the merged config mapping."""
    merged: dict[str, Any] = merge({}, DEV_DEFAULTS) if flags.dev else {}
    for source in flags.sources:
        for _name, fragment in load_source(source, flags.config_format, warnings):
            merged = merge(merged, fragment)
    if flags.values:
        merged = merge(merged, check_fragment(flags.values, "command-line flags"))
    return merged


def _get(m: dict[str, Any], path: str, default: Any = None) -> Any:
    node: Any = m
    for part in path.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return default
        node = node[part]
    return node


def _seconds(m: dict[str, Any], path: str, default: float) -> float:
    value = _get(m, path)
    return default if value is None else parse_duration(value)


def _fqdn(domain: str) -> str:
    domain = domain.strip()
    return domain if domain.endswith(".") else domain + "."


def _content_path(path: str) -> str:
    path = "/" + path.strip("/") + "/"
    return "/" if path == "//" else path


def to_runtime(m: dict[str, Any], *, dev: bool, sources: tuple[ConfigSource, ...], flag_args: tuple[str, ...],
               host: Host) -> RuntimeConfig:
    warnings = host.warnings
    datacenter = _get(m, "datacenter", "dc1")
    check.datacenter(datacenter)
    primary = _get(m, "primary_datacenter") or datacenter
    check.datacenter(primary, "primary_datacenter")
    name = _get(m, "node_name")
    if name is None:
        name = host.hostname if host.hostname is not None else socket.gethostname()
    warnings.extend(check.node_name(name))
    meta = dict(_get(m, "node_meta", {}))
    check.node_meta(meta)

    server = bool(_get(m, "server", False))
    bootstrap, expect, notes = check.bootstrap(server, bool(_get(m, "bootstrap", False)),
                                               int(_get(m, "bootstrap_expect", 0)), dev)
    warnings.extend(notes)
    data_dir = _get(m, "data_dir", "")
    if not data_dir and not dev:
        raise ConfigError("data_dir cannot be empty")
    if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ConfigError(f'data_dir "{data_dir}" is not a directory')

    bind = check.bind_addr(_get(m, "bind_addr", "0.0.0.0"))
    client = check.listen_list(_get(m, "client_addr", "127.0.0.1"), "client_addr", "client_addr")
    addresses: dict[str, tuple[str, ...]] = {}
    for key, label in LISTENERS:
        given = _get(m, f"addresses.{key}")
        addresses[key] = (check.listen_list(given, f"addresses.{key}", f"{label} address") if given is not None
                          else client)
    ports = Ports(**{k: int(v) for k, v in _get(m, "ports", {}).items() if k in Ports.__dataclass_fields__})
    for key in Ports.__dataclass_fields__:
        check.port(getattr(ports, key), f"ports.{key}")
    check.port_collisions(
        {label: (addresses[key], getattr(ports, key)) for key, label in LISTENERS},
        {"Serf LAN": (bind, ports.serf_lan), "Serf WAN": (bind, ports.serf_wan), "Server RPC": (bind, ports.server)},
    )
    advertise = _get(m, "advertise_addr", "")
    if advertise:
        advertise = check.advertise(advertise)
    elif not ipaddress.ip_address(bind).is_unspecified:
        advertise = bind
    elif host.detect_advertise:  # ECS task / EC2 instance metadata first (appliance/cloud/metadata.py)
        advertise = advertise_from_metadata(_get(m, "retry_join", []), warnings) or _private_ip(warnings)
    advertise_wan = _get(m, "advertise_addr_wan", "")
    advertise_wan = check.advertise(advertise_wan, wan=True) if advertise_wan else advertise

    encrypt = _get(m, "encrypt", "")
    if encrypt:
        check.encrypt_key(encrypt)
    domain = _fqdn(_get(m, "domain") or "consul.")
    alt = _get(m, "alt_domain", "")
    alt = _fqdn(alt) if alt else ""
    check.alt_domain(alt, domain, datacenter)
    recursors = tuple(check.recursor(r) for r in _get(m, "recursors", []))

    dns = _dns_config(m)
    ui_enabled = bool(_get(m, "ui_config.enabled", _get(m, "ui", False)))
    ui_dir = _get(m, "ui_config.dir") or _get(m, "ui_dir", "")
    if ui_enabled and ui_dir:
        raise ConfigError(
            "Both the ui_config.enabled and ui_config.dir (or -ui and -ui-dir) were specified, please provide only one."
        )
    content_path = _get(m, "ui_config.content_path") or _get(m, "ui_content_path") or "/ui/"
    check_content_path(content_path)
    raft_multiplier = int(_get(m, "performance.raft_multiplier", 5))
    raft_protocol = int(_get(m, "raft_protocol", 3))
    check.raft(raft_multiplier, raft_protocol)
    snapshot_threshold = int(_get(m, "raft_snapshot_threshold", 16384))
    trailing_logs = int(_get(m, "raft_trailing_logs", 10240))
    check.raft_log(snapshot_threshold, trailing_logs)
    output_max = int(_get(m, "check_output_max_size", 4096))
    if output_max < 1:
        raise ConfigError("check_output_max_size must be positive, to discard check output use the discard_check_output"
                          " flag")
    default_query = _seconds(m, "default_query_time", 300.0)
    max_query = _seconds(m, "max_query_time", 600.0)
    for key, value in (("default_query_time", default_query), ("max_query_time", max_query)):
        if value <= 0:
            raise ConfigError(f"{key} must be greater than zero")

    explicit_id = _get(m, "node_id", "")
    node_id = check.node_id(explicit_id) if explicit_id else _node_id(dev, data_dir, host)

    return RuntimeConfig(
        datacenter=datacenter,
        primary_datacenter=primary,
        node_name=name,
        node_id=node_id,
        node_meta=meta,
        dev=dev,
        server=server,
        bootstrap=bootstrap,
        bootstrap_expect=expect,
        data_dir=data_dir,
        bind_addr=bind,
        client_addrs=client,
        advertise_addr=advertise,
        advertise_addr_wan=advertise_wan,
        ports=ports,
        addresses=addresses,
        retry_join=check.join_entries(_get(m, "retry_join", []), "retry_join"),
        start_join=check.join_entries(_get(m, "start_join", []), "start_join"),
        retry_interval_s=_seconds(m, "retry_interval", 30.0),
        retry_max=int(_get(m, "retry_max", 0)),
        retry_join_wan=check.join_entries(_get(m, "retry_join_wan", []), "retry_join_wan"),
        start_join_wan=check.join_entries(_get(m, "start_join_wan", []), "start_join_wan"),
        retry_interval_wan_s=_seconds(m, "retry_interval_wan", 30.0),
        retry_max_wan=int(_get(m, "retry_max_wan", 0)),
        encrypt=encrypt,
        encrypt_verify_incoming=bool(_get(m, "encrypt_verify_incoming", True)),
        encrypt_verify_outgoing=bool(_get(m, "encrypt_verify_outgoing", True)),
        disable_keyring_file=bool(_get(m, "disable_keyring_file", dev)),
        gossip_lan=_gossip_lan(m),
        reconnect_timeout_s=_reconnect_timeout(m, "reconnect_timeout", "ReconnectTimeoutLan"),
        reconnect_timeout_wan_s=_reconnect_timeout(m, "reconnect_timeout_wan", "ReconnectTimeoutWan"),
        domain=domain,
        alt_domain=alt,
        recursors=recursors,
        dns_config=dns,
        ui_enabled=ui_enabled,
        ui_dir=ui_dir,
        ui_content_path=_content_path(content_path),
        ui_metrics=resolve_ui_metrics(_get(m, "ui_config", {})),
        pretty_json=dev,
        limits=Limits(**{k: int(v) for k, v in _get(m, "limits", {}).items() if k in Limits.__dataclass_fields__}),
        default_query_time_s=default_query,
        max_query_time_s=max_query,
        session_ttl_min_s=_seconds(m, "session_ttl_min", 10.0),
        http_response_headers=dict(_get(m, "http_config.response_headers", {})),
        **_http_limits(m),
        enable_script_checks=bool(_get(m, "enable_script_checks", False)),
        enable_local_script_checks=bool(_get(m, "enable_local_script_checks", False)),
        disable_remote_exec=bool(_get(m, "disable_remote_exec", True)),
        check_output_max_size=output_max,
        services=tuple(_get(m, "services", [])),
        checks=tuple(_get(m, "checks", [])),
        watches=tuple(_get(m, "watches", [])),
        acl=resolve_acl(m, warnings),
        tls=resolve_tls(m, ports.https, warnings, server=server),
        raft_multiplier=raft_multiplier,
        raft_protocol=raft_protocol,
        raft_snapshot_threshold=snapshot_threshold,
        raft_trailing_logs=trailing_logs,
        autopilot=_autopilot(m),
        connect_ca_config=_ca_config(m),
        config_entries_bootstrap=_bootstrap_entries(_get(m, "config_entries.bootstrap", [])),
        telemetry=Telemetry(
            prometheus_retention_time_s=_seconds(m, "telemetry.prometheus_retention_time", 60.0),
            disable_hostname=bool(_get(m, "telemetry.disable_hostname", False)),
            metrics_prefix=_get(m, "telemetry.metrics_prefix", "consul"),
        ),
        log_level=check.log_level(_get(m, "log_level", "info")),
        log_json=bool(_get(m, "log_json", False)),
        log_file=_get(m, "log_file", ""),
        pid_file=_get(m, "pid_file", ""),
        leave_on_terminate=bool(_get(m, "leave_on_terminate", not server)),
        skip_leave_on_interrupt=bool(_get(m, "skip_leave_on_interrupt", server)),
        sources=sources,
        flag_args=flag_args,
        config_warnings=tuple(warnings),
    )


def _http_limits(m: dict[str, Any]) -> dict[str, Any]:
    """`http_config`'s limits on one request and one connection (appliance/http/app.py)."""
    max_header_bytes = int(_get(m, "http_config.max_header_bytes", 0))
    out: dict[str, Any] = {"http_max_header_bytes": max_header_bytes if max_header_bytes > 0 else 1 << 20}
    for key, default in (("read_header_timeout", 30.0), ("read_timeout", 300.0), ("idle_timeout", 300.0)):
        value = _seconds(m, f"http_config.{key}", default)
        check.not_negative(value, f"http_config.{key}")
        out[f"http_{key}_s"] = value
    return out


def _ca_config(m: dict[str, Any]) -> dict[str, Any]:
    """`connect { ca_provider ca_config }`: the built-in provider only, its configuration checked now."""
    provider = _get(m, "connect.ca_provider", "") or "consul"
    if provider != "consul":
        raise ConfigError(f'connect.ca_provider: "{provider}" is not available; cairn has the built-in "consul" '
                          "provider only")
    raw = dict(_get(m, "connect.ca_config", {}) or {})
    if not raw:  # the defaults: nothing to check, and the CA's cryptography stays unloaded
        return raw
    from appliance.connect.ca import CAError, parse_config

    try:
        parse_config(raw)
    except CAError as err:
        raise ConfigError(f"connect.ca_config: {err}") from None
    return raw


def _bootstrap_entries(raw: Any) -> tuple[dict[str, Any], ...]:
    """`config_entries { bootstrap }`: each entry decoded and checked now, so a bad one stops the start."""
    from appliance.connect import entries, intentions

    found = raw if isinstance(raw, list) else [raw] if raw else []
    for i, item in enumerate(found):
        try:
            entry = entries.normalize(entries.decode(item))
            entries.validate(entry)
            if entry["Kind"] == entries.INTENTIONS:
                intentions.check_sources(entry)
        except entries.EntryError as err:
            raise ConfigError(f"config_entries.bootstrap[{i}]: {err}") from None
    return tuple(found)


def _autopilot(m: dict[str, Any]) -> Autopilot:
    out = Autopilot(
        cleanup_dead_servers=bool(_get(m, "autopilot.cleanup_dead_servers", True)),
        last_contact_threshold_s=_seconds(m, "autopilot.last_contact_threshold", 0.2),
        max_trailing_logs=int(_get(m, "autopilot.max_trailing_logs", 250)),
        min_quorum=int(_get(m, "autopilot.min_quorum", 0)),
        server_stabilization_time_s=_seconds(m, "autopilot.server_stabilization_time", 10.0),
    )
    for key in ("max_trailing_logs", "min_quorum"):
        check.at_least_zero(getattr(out, key), f"autopilot.{key}")
    for key in ("last_contact_threshold", "server_stabilization_time"):
        if getattr(out, key + "_s") < 0:
            raise ConfigError(f"autopilot.{key} must not be negative")
    return out


def _dns_config(m: dict[str, Any]) -> DNSConfig:
    udp_limit = int(_get(m, "dns_config.udp_answer_limit", 3))
    check.at_least_zero(udp_limit, "dns_config.udp_answer_limit")
    a_limit = int(_get(m, "dns_config.a_record_limit", 0))
    check.at_least_zero(a_limit, "dns_config.a_record_limit")
    return DNSConfig(
        allow_stale=bool(_get(m, "dns_config.allow_stale", True)),
        max_stale_s=_seconds(m, "dns_config.max_stale", 87600 * 3600.0),
        node_ttl_s=_seconds(m, "dns_config.node_ttl", 0.0),
        service_ttl_s={k: parse_duration(v) for k, v in _get(m, "dns_config.service_ttl", {}).items()},
        only_passing=bool(_get(m, "dns_config.only_passing", False)),
        udp_answer_limit=udp_limit,
        a_record_limit=a_limit,
        enable_truncate=bool(_get(m, "dns_config.enable_truncate", False)),
        recursor_timeout_s=_seconds(m, "dns_config.recursor_timeout", 2.0),
        disable_compression=bool(_get(m, "dns_config.disable_compression", False)),
    )


GOSSIP_KEYS = {"gossip_nodes": "gossip_nodes", "gossip_interval": "gossip_interval_s",
               "probe_interval": "probe_interval_s", "probe_timeout": "probe_timeout_s",
               "retransmit_mult": "retransmit_mult", "suspicion_mult": "suspicion_mult"}


RECONNECT_TIMEOUT_MIN_S = 8 * 3600.0  # Consul's minimum for reconnect_timeout and reconnect_timeout_wan


def _reconnect_timeout(m: dict[str, Any], key: str, name: str) -> float:
    """Failed members are reaped after this; below 8 h is refused with Consul's text."""
    value = _seconds(m, key, 72 * 3600.0)
    if value < RECONNECT_TIMEOUT_MIN_S:
        raise ConfigError(f"{name} must be >= 8h0m0s")
    return value


def _gossip_lan(m: dict[str, Any]) -> dict[str, float]:
    """`gossip_lan { ... }` as GossipConfig overrides, checked against memberlist's rules."""
    out: dict[str, float] = {}
    for key, name in GOSSIP_KEYS.items():
        value = _get(m, f"gossip_lan.{key}")
        if value is not None:
            out[name] = parse_duration(value) if name.endswith("_s") else int(value)
    try:
        GossipConfig.lan(**out).validate()
    except GossipConfigError as err:
        text = str(err)
        for key, name in GOSSIP_KEYS.items():  # the keys the user wrote, not the internal names
            text = text.replace(name, f"gossip_lan.{key}")
        raise ConfigError(text) from None
    return out


def _node_id(dev: bool, data_dir: str, host: Host) -> str:
    if host.node_id:
        return host.node_id
    if dev or not host.persist_node_id or not data_dir:
        return str(uuid.uuid4()) if (dev or host.persist_node_id) else ""
    path = os.path.join(data_dir, "node-id")
    try:
        with open(path, encoding="utf-8") as fh:
            return check.node_id(fh.read().strip(), f"node ID in {path}")
    except FileNotFoundError:
        pass
    except OSError as err:
        raise ConfigError(f"Error reading {path}: {err.strerror or err}") from None
    new_id = str(uuid.uuid4())
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new_id)
    except OSError as err:
        raise ConfigError(f"Error writing {path}: {err.strerror or err}") from None
    return new_id


def _private_ip(warnings: list[str]) -> str:
    """The first private IPv4 of this host, as Consul picks one when bind_addr is 0.0.0.0."""
    candidates: list[str] = []
    try:  # the address the default route would use; connect() on UDP sends nothing
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("10.255.255.255", 1))
            candidates.append(sock.getsockname()[0])
    except OSError:
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            candidates.append(str(info[4][0]))
    except OSError:
        pass
    for addr in candidates:
        ip = ipaddress.ip_address(addr)
        if ip.is_private and not ip.is_loopback and not ip.is_link_local:
            return addr
    warnings.append("No private IPv4 address found; advertising 127.0.0.1. Set advertise_addr (-advertise).")
    return "127.0.0.1"
