"""The frozen configuration every subsystem receives.

Built once by appliance.config (defaults -> -dev defaults -> files/dirs in order -> -hcl
fragments -> flags, Consul's merge rules) and never mutated; a reload builds a new one.
Units are in the names (`_s` = seconds). Service and check definitions stay as the raw
mappings the files gave (snake_case or PascalCase keys); appliance.local.definitions turns
them into typed definitions, the same parser the HTTP API uses, so there is one way to read a
service definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Ports:
    dns: int = 8600
    http: int = 8500
    https: int = -1
    grpc: int = -1
    grpc_tls: int = -1
    serf_lan: int = 8301
    serf_wan: int = 8302
    server: int = 8300
    sidecar_min_port: int = 21000  # Connect sidecars take a port of this range (appliance/local/mesh.py)
    sidecar_max_port: int = 21255


@dataclass(frozen=True)
class Limits:
    http_max_conns_per_client: int = 200
    kv_max_value_size: int = 524288
    txn_max_req_len: int = 524288


@dataclass(frozen=True)
class Telemetry:
    prometheus_retention_time_s: float = 60.0  # Consul: 0 (off); on by default in cairn
    disable_hostname: bool = False
    metrics_prefix: str = "consul"


@dataclass(frozen=True)
class Autopilot:
    """The `autopilot {}` block (Consul's names and defaults); seeds the replicated autopilot
    configuration the first time a leader is elected (then /v1/operator/autopilot/configuration)."""

    cleanup_dead_servers: bool = True
    last_contact_threshold_s: float = 0.2
    max_trailing_logs: int = 250
    min_quorum: int = 0
    server_stabilization_time_s: float = 10.0


@dataclass(frozen=True)
class DNSConfig:
    allow_stale: bool = True
    max_stale_s: float = 87600 * 3600.0
    node_ttl_s: float = 0.0
    service_ttl_s: dict[str, float] = field(default_factory=dict)
    only_passing: bool = False
    udp_answer_limit: int = 3
    a_record_limit: int = 0
    enable_truncate: bool = False
    recursor_timeout_s: float = 2.0
    disable_compression: bool = False


@dataclass(frozen=True)
class ACLConfig:
    """The `acl` block (appliance/config/acl.py); enforcement reads these (docs/acl.md)."""

    enabled: bool = False
    default_policy: str = "allow"
    down_policy: str = "extend-cache"
    token_ttl_s: float = 30.0
    enable_token_persistence: bool = False
    enable_key_list_policy: bool = False
    enable_token_replication: bool = False  # a secondary copies global tokens (appliance/acl_replication.py)
    # initial_management, default, agent, agent_recovery, replication, dns,
    # config_file_service_registration (old names master/agent_master folded in)
    tokens: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UIMetrics:
    """The web UI's metrics settings (`ui_config`; appliance/config/ui.py). The proxy's headers
    stay on the agent: the page is told only whether the proxy is on."""

    provider: str = ""  # "prometheus" or ""
    provider_options: dict[str, Any] = field(default_factory=dict)  # metrics_provider_options_json
    proxy_base_url: str = ""  # "" = the metrics proxy is off
    proxy_add_headers: tuple[tuple[str, str], ...] = ()
    proxy_path_allowlist: tuple[str, ...] = ()
    dashboard_url_templates: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TLSSettings:
    """One listener's TLS settings (`tls.defaults` overlaid with its block; appliance/config/tls.py)."""

    ca_file: str = ""
    ca_path: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify_incoming: bool = False  # require client certificates signed by the CA
    verify_outgoing: bool = False  # outgoing connections use TLS and check the peer's chain
    verify_server_hostname: bool = False  # internal_rpc: the peer must be server.<dc>.<domain>
    tls_min_version: str = "TLSv1_2"
    tls_cipher_suites: tuple[str, ...] = ()  # Go's names; () = the library's defaults

    @property
    def enabled(self) -> bool:
        """A certificate is configured: the listener can speak TLS."""
        return bool(self.cert_file)


@dataclass(frozen=True)
class TLSConfig:
    internal_rpc: TLSSettings = field(default_factory=TLSSettings)  # the server RPC port
    https: TLSSettings = field(default_factory=TLSSettings)  # ports.https
    grpc: TLSSettings = field(default_factory=TLSSettings)  # accepted; cairn has no gRPC listener
    # auto_encrypt (appliance/rpc/autoencrypt.py): a client agent asks a server for its certificate,
    # a server with allow_tls signs it and trusts the Connect CA's roots on the RPC port
    auto_encrypt_tls: bool = False
    auto_encrypt_allow_tls: bool = False
    auto_encrypt_dns_san: tuple[str, ...] = ()
    auto_encrypt_ip_san: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfigSource:
    """Where a piece of configuration came from, kept so a reload can read the same places again."""

    kind: str  # "file", "dir", "hcl", "flags"
    value: str  # a path, an HCL fragment, or "" for flags
    format: str = ""  # "json", "hcl" or "" (by extension)


@dataclass(frozen=True)
class RuntimeConfig:
    # identity
    datacenter: str = "dc1"
    primary_datacenter: str = "dc1"
    node_name: str = ""
    node_id: str = ""
    node_meta: dict[str, str] = field(default_factory=dict)
    # mode
    dev: bool = False
    server: bool = False
    bootstrap: bool = False
    bootstrap_expect: int = 0
    data_dir: str = ""
    # addresses
    bind_addr: str = "0.0.0.0"
    client_addrs: tuple[str, ...] = ("127.0.0.1",)
    advertise_addr: str = ""
    advertise_addr_wan: str = ""
    ports: Ports = field(default_factory=Ports)
    # per-listener bind addresses ("dns", "http", "https", "grpc", "grpc_tls"); the builder fills
    # every key (addresses.<x> or client_addr); use listen_addrs() to read
    addresses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # cluster
    retry_join: tuple[str, ...] = ()
    start_join: tuple[str, ...] = ()
    retry_interval_s: float = 30.0
    retry_max: int = 0  # join attempts before giving up, 0 = forever
    retry_join_wan: tuple[str, ...] = ()  # servers: the WAN pool (appliance/federation/pool.py)
    start_join_wan: tuple[str, ...] = ()
    retry_interval_wan_s: float = 30.0
    retry_max_wan: int = 0
    encrypt: str = ""
    encrypt_verify_incoming: bool = True  # drop gossip that is not encrypted (when there is a key)
    encrypt_verify_outgoing: bool = True  # encrypt outgoing gossip (when there is a key)
    disable_keyring_file: bool = False  # true in -dev: no serf/local.keyring under data_dir
    # gossip_lan overrides as GossipConfig field names (probe_interval_s, ...); empty = LAN defaults
    gossip_lan: dict[str, float] = field(default_factory=dict)
    reconnect_timeout_s: float = 72 * 3600.0  # failed LAN members are reaped after this (at least 8 h)
    reconnect_timeout_wan_s: float = 72 * 3600.0  # failed WAN servers likewise
    # dns
    domain: str = "consul."
    alt_domain: str = ""
    recursors: tuple[str, ...] = ()
    dns_config: DNSConfig = field(default_factory=DNSConfig)
    # ui / http
    ui_enabled: bool = False
    ui_dir: str = ""  # serve UI files from here instead of the built-in UI
    ui_content_path: str = "/ui/"
    ui_metrics: UIMetrics = field(default_factory=UIMetrics)
    pretty_json: bool = False  # Consul pretty-prints every JSON response in -dev
    limits: Limits = field(default_factory=Limits)
    default_query_time_s: float = 300.0
    max_query_time_s: float = 600.0
    session_ttl_min_s: float = 10.0  # the shortest session TTL /v1/session/create accepts
    http_response_headers: dict[str, str] = field(default_factory=dict)
    # http_config: the HTTP server's limits on one request and one connection (0 = no timeout)
    http_max_header_bytes: int = 1 << 20  # Go's DefaultMaxHeaderBytes; max_header_bytes <= 0 means this
    http_read_header_timeout_s: float = 30.0
    http_read_timeout_s: float = 300.0
    http_idle_timeout_s: float = 300.0
    # checks
    enable_script_checks: bool = False
    enable_local_script_checks: bool = False
    disable_remote_exec: bool = True  # `cairn exec` jobs are ignored unless false (appliance/rexec.py)
    check_output_max_size: int = 4096
    # definitions from files, raw mappings in file order (see module docstring)
    services: tuple[dict[str, Any], ...] = ()
    checks: tuple[dict[str, Any], ...] = ()
    watches: tuple[dict[str, Any], ...] = ()
    # tls: per listener (appliance/config/tls.py; contexts built by appliance/tls/context.py)
    tls: TLSConfig = field(default_factory=TLSConfig)
    # acl / raft
    acl: ACLConfig = field(default_factory=ACLConfig)
    raft_multiplier: int = 5  # 1 in -dev; scales Raft timers
    raft_protocol: int = 3
    raft_snapshot_threshold: int = 16384
    raft_trailing_logs: int = 10240
    autopilot: Autopilot = field(default_factory=Autopilot)
    # Connect: the CA provider's configuration (the operator's map, as written; appliance/connect/ca.py)
    # and the config entries a server writes when none of that kind and name exists yet
    connect_ca_config: dict[str, Any] = field(default_factory=dict)
    config_entries_bootstrap: tuple[dict[str, Any], ...] = ()
    # telemetry
    telemetry: Telemetry = field(default_factory=Telemetry)
    # logging and process
    log_level: str = "info"
    log_json: bool = False
    log_file: str = ""
    pid_file: str = ""
    leave_on_terminate: bool = False
    skip_leave_on_interrupt: bool = False
    # provenance for reload
    sources: tuple[ConfigSource, ...] = ()
    flag_args: tuple[str, ...] = ()  # the agent's command-line flags, replayed on reload
    config_warnings: tuple[str, ...] = ()  # skipped files, bootstrap advice: log them at start

    def listen_addrs(self, listener: str) -> tuple[str, ...]:
        """Bind addresses of "dns", "http", "https", "grpc" or "grpc_tls" (client_addr by default)."""
        return self.addresses.get(listener) or self.client_addrs
