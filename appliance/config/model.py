"""pydantic models of the agent's configuration FILE format (Consul's snake_case keys).

How it works
------------
One model per block. Every field defaults to None, so `model_dump(exclude_unset=True)` gives back
exactly the keys a file set; the loader merges those dumps across files (scalars last wins, lists
appended, maps key by key) and the builder applies defaults once, at the end. Unknown keys are
errors (`extra="forbid"`). Durations stay Go strings ("10s") here and are checked on the way in;
the builder turns them into seconds. Service, check and watch definitions are kept as the raw
mappings the file gave: `appliance.local.definitions` reads them, the same parser the HTTP API
uses. Keys Consul has and cairn does not act on yet are accepted (so a Consul file loads) and say
so in their description.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from appliance.config.durations import DurationError, parse_duration_ns

COMPAT = "Accepted for compatibility with Consul; cairn does not act on it yet."


def _check_duration(value: str) -> str:
    try:
        parse_duration_ns(value)
    except DurationError as err:
        raise ValueError(f'invalid value "{value}" (expected duration, e.g. "10s")') from err
    return value


def _one_or_many(value: Any) -> Any:
    """`service { }` once is a mapping; several blocks or a JSON array are a list."""
    if isinstance(value, dict):
        return [value]
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
RawDefinitions = Annotated[list[dict[str, Any]], BeforeValidator(_one_or_many)]


def F(description: str) -> Any:  # noqa: N802 - reads as a column of the field tables below
    """A field that is unset unless a source sets it."""
    return Field(default=None, description=description)


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PortsModel(Block):
    dns: int | None = F("DNS server port (UDP and TCP). Default 8600; -1 disables.")
    http: int | None = F("HTTP API port. Default 8500; -1 disables.")
    https: int | None = F("HTTPS API port. Default -1 (disabled).")
    grpc: int | None = F("gRPC port. Default -1 (8502 in -dev).")
    grpc_tls: int | None = F("gRPC TLS port. Default -1 (8503 in -dev).")
    serf_lan: int | None = F("LAN gossip port (UDP and TCP). Default 8301.")
    serf_wan: int | None = F("WAN gossip port (UDP and TCP). Default 8302.")
    server: int | None = F("Server RPC port (TCP). Default 8300.")
    sidecar_min_port: int | None = F("Lowest port for Connect sidecars. Default 21000. " + COMPAT)
    sidecar_max_port: int | None = F("Highest port for Connect sidecars. Default 21255. " + COMPAT)
    expose_min_port: int | None = F("Lowest port for exposed paths. Default 21500. " + COMPAT)
    expose_max_port: int | None = F("Highest port for exposed paths. Default 21755. " + COMPAT)


class AddressesModel(Block):
    dns: str | None = F("Bind address(es) of the DNS server, space-separated. Default: client_addr.")
    http: str | None = F("Bind address(es) of the HTTP API, space-separated. Default: client_addr.")
    https: str | None = F("Bind address(es) of the HTTPS API, space-separated. Default: client_addr.")
    grpc: str | None = F("Bind address(es) of the gRPC server, space-separated. Default: client_addr.")
    grpc_tls: str | None = F("Bind address(es) of the gRPC TLS server. Default: client_addr.")


class DNSConfigModel(Block):
    allow_stale: bool | None = F("Serve DNS from any server, not only the leader. Default true.")
    max_stale: Duration | None = F('Staleness limit when allow_stale. Default "87600h".')
    node_ttl: Duration | None = F('TTL of node lookups. Default "0s".')
    service_ttl: dict[str, Duration] | None = F(
        'TTL of service lookups by name; "prefix*" and "*" wildcards, the longest match wins. Default {}.'
    )
    only_passing: bool | None = F("Leave out instances whose checks are warning. Default false.")
    udp_answer_limit: int | None = F("Answers in a non-EDNS UDP reply. Default 3.")
    a_record_limit: int | None = F("Cap on A/AAAA answers, 0 = no cap. Default 0.")
    enable_truncate: bool | None = F("Set the TC bit when UDP answers are trimmed. Default false.")
    recursor_timeout: Duration | None = F('Timeout of one recursor query. Default "2s".')
    recursor_strategy: str | None = F('"sequential" or "random". Default "sequential". ' + COMPAT)
    disable_compression: bool | None = F("Do not compress DNS names in replies. Default false.")
    enable_additional_node_meta_txt: bool | None = F("Node meta as TXT in Additional. Default true. " + COMPAT)
    soa: dict[str, int] | None = F("SOA timers: refresh, retry, expire, min_ttl (seconds). " + COMPAT)
    use_cache: bool | None = F("Answer DNS from the agent cache. Default false. " + COMPAT)
    cache_max_age: Duration | None = F('Max age of cached DNS answers. Default "0s". ' + COMPAT)


class UIConfigModel(Block):
    enabled: bool | None = F("Serve the web UI on content_path. Default false (true in -dev).")
    dir: str | None = F('Serve UI files from this directory instead of the built-in UI. Default "".')
    content_path: str | None = F('URL path of the UI. Default "/ui/".')
    metrics_provider: str | None = F("UI metrics provider. " + COMPAT)
    metrics_provider_files: list[str] | None = F(COMPAT)
    metrics_provider_options_json: str | None = F(COMPAT)
    metrics_proxy: dict[str, Any] | None = F(COMPAT)
    dashboard_url_templates: dict[str, str] | None = F(COMPAT)


class LimitsModel(Block):
    http_max_conns_per_client: int | None = F("Concurrent HTTP connections per client IP. Default 200.")
    rpc_max_conns_per_client: int | None = F("Concurrent RPC connections per client IP. Default 100. " + COMPAT)
    kv_max_value_size: int | None = F("Largest KV value in bytes. Default 524288 (512 KiB).")
    txn_max_req_len: int | None = F("Largest transaction request in bytes. Default 524288.")
    rpc_rate: float | None = F("RPC requests per second from this agent. Default unlimited. " + COMPAT)
    rpc_max_burst: int | None = F("RPC burst size. Default 1000. " + COMPAT)
    rpc_handshake_timeout: Duration | None = F(COMPAT)


class HTTPConfigModel(Block):
    response_headers: dict[str, str] | None = F("Headers added to every HTTP API response. Default {}.")
    block_endpoints: list[str] | None = F("HTTP API path prefixes answered 403. Default []. " + COMPAT)
    allow_write_http_from: list[str] | None = F("CIDRs allowed to write over HTTP. " + COMPAT)
    use_cache: bool | None = F("Use the agent cache for HTTP reads. Default true. " + COMPAT)
    max_header_bytes: int | None = F(
        "Largest request head (request line and header fields) in bytes; a longer one is answered "
        "431 Request Header Fields Too Large. Default 0: 1 MiB, Go's DefaultMaxHeaderBytes.")
    read_header_timeout: Duration | None = F(
        "Time to receive a request head, counted from the connection's start or from the first byte of a "
        'later request on it; a slower client is disconnected. "0s" disables. Default "30s". cairn only.')
    read_timeout: Duration | None = F(
        "Time to receive a whole request, head and body, counted like read_header_timeout; a slower "
        'client is disconnected. "0s" disables. Default "5m". cairn only.')
    idle_timeout: Duration | None = F(
        'Time a keep-alive connection may wait for its next request before it is closed. "0s" disables. '
        'Default "5m". cairn only.')


class TelemetryModel(Block):
    prometheus_retention_time: Duration | None = F(
        'How long metrics stay in the Prometheus output; > 0 enables /v1/agent/metrics?format=prometheus. '
        'Default "60s" (Consul: "0s").'
    )
    disable_hostname: bool | None = F("Do not prefix gauge names with the host name. Default false.")
    metrics_prefix: str | None = F('Prefix of every metric name. Default "consul".')
    filter_default: bool | None = F("Allow metrics that no prefix_filter names. Default true. " + COMPAT)
    prefix_filter: list[str] | None = F('"+name"/"-name" allow/block list. ' + COMPAT)
    statsd_address: str | None = F(COMPAT)
    statsite_address: str | None = F(COMPAT)
    dogstatsd_addr: str | None = F(COMPAT)
    dogstatsd_tags: list[str] | None = F(COMPAT)
    disable_compat_1_9: bool | None = Field(default=None, alias="disable_compat_1.9", description=COMPAT)


class GossipModel(Block):
    """`gossip_lan` / `gossip_wan`: memberlist timing of a gossip pool (Consul's keys)."""

    gossip_nodes: int | None = F("Members sent queued gossip each round. Default 3.")
    gossip_interval: Duration | None = F('Time between gossip rounds. Default "200ms" (LAN), "500ms" (WAN).')
    probe_interval: Duration | None = F('Time between failure-detection probes. Default "1s" (LAN), "5s" (WAN).')
    probe_timeout: Duration | None = F(
        'Wait for a direct ack before indirect probes. Default "500ms" (LAN), "3s" (WAN); below probe_interval.')
    retransmit_mult: int | None = F("Each broadcast is sent retransmit_mult x ceil(log10(n + 1)) times. Default 4.")
    suspicion_mult: int | None = F(
        "Suspicion timeout = suspicion_mult x max(1, log10(n)) x probe_interval at least. Default 4 (LAN), 6 (WAN).")


class PerformanceModel(Block):
    raft_multiplier: int | None = F("Scales Raft timers, 1 (fast) to 10. Default 5 (1 in -dev).")
    leave_drain_time: Duration | None = F('Time to drain RPCs on leave. Default "5s". ' + COMPAT)
    rpc_hold_timeout: Duration | None = F('How long RPCs wait out a leader election. Default "7s". ' + COMPAT)


class ACLTokensModel(Block):
    initial_management: str | None = F("Bootstrap management token (servers).")
    master: str | None = F("Old name of initial_management.")
    default: str | None = F("Token used when a request has none.")
    agent: str | None = F("Token the agent uses for its own operations.")
    agent_recovery: str | None = F("Token for agent endpoints when servers are unreachable.")
    agent_master: str | None = F("Old name of agent_recovery.")
    replication: str | None = F("ACL replication token. " + COMPAT)
    config_file_service_registration: str | None = F("Token for services from config files.")
    dns: str | None = F("Token used for DNS queries.")


class ACLModel(Block):
    enabled: bool | None = F("Enforce ACLs. Default false.")
    default_policy: str | None = F('"allow" or "deny" for requests no rule matches. Default "allow".')
    down_policy: str | None = F('Policy when the ACL servers are unreachable. Default "extend-cache".')
    token_ttl: Duration | None = F('Token cache TTL. Default "30s".')
    policy_ttl: Duration | None = F('Policy cache TTL. Default "30s".')
    role_ttl: Duration | None = F('Role cache TTL. Default "30s".')
    enable_token_persistence: bool | None = F("Persist tokens set over the API. Default false.")
    enable_token_replication: bool | None = F(
        "A secondary datacenter copies the primary's global tokens too, not only policies and roles. Default false.")
    enable_key_list_policy: bool | None = F("Recursive KV reads need `list` on the prefix. Default false.")
    tokens: ACLTokensModel | None = F("Tokens the agent and servers use.")


class AutopilotModel(Block):
    cleanup_dead_servers: bool | None = F(
        "Remove servers that failed or left from the Raft configuration, never below min_quorum voters "
        "and never a majority at once. Default true.")
    last_contact_threshold: Duration | None = F(
        'A server the leader has not heard from for longer than this is unhealthy. Default "200ms".')
    max_trailing_logs: int | None = F(
        "A server whose last log index trails the leader's by more than this is unhealthy. Default 250.")
    min_quorum: int | None = F("Dead-server cleanup never leaves fewer voters than this. Default 0.")
    server_stabilization_time: Duration | None = F(
        'A new server is promoted from non-voter to voter once healthy for this long. Default "10s".')


class TLSSettingsModel(Block):
    ca_file: str | None = F("PEM bundle of the CAs that sign peers' certificates.")
    ca_path: str | None = F("Directory of PEM CA certificates (alternative to ca_file).")
    cert_file: str | None = F("PEM certificate this agent presents.")
    key_file: str | None = F("PEM private key of cert_file.")
    verify_incoming: bool | None = F("Require and verify client certificates on incoming connections. Default false.")
    verify_outgoing: bool | None = F("Outgoing connections use TLS and verify the server's chain. Default false.")
    verify_server_hostname: bool | None = F(
        "internal_rpc: outgoing RPC must see the name server.<dc>.<domain>, so a client certificate cannot "
        "pose as a server; implies verify_outgoing. Default false.")
    tls_min_version: str | None = F('TLSv1_0, TLSv1_1, TLSv1_2 or TLSv1_3 (old: tls10..tls13). Default "TLSv1_2".')
    tls_cipher_suites: str | None = F("Comma-separated Go cipher suite names for TLS 1.2 and lower. "
                                      "Default: the TLS library's.")
    use_auto_cert: bool | None = F(COMPAT)


class TLSModel(Block):
    defaults: TLSSettingsModel | None = F("Settings every listener inherits.")
    https: TLSSettingsModel | None = F("The HTTPS API listener (ports.https).")
    grpc: TLSSettingsModel | None = F(COMPAT)
    internal_rpc: TLSSettingsModel | None = F("The server RPC port (servers and client agents dialling them).")


class ConnectModel(Block):
    enabled: bool | None = F("Enable Connect (service mesh). " + COMPAT)
    ca_provider: str | None = F(COMPAT)
    ca_config: dict[str, Any] | None = F(COMPAT)


class ConfigEntriesModel(Block):
    bootstrap: list[dict[str, Any]] | dict[str, Any] | None = F(
        "Config entries a server writes at start when none of that kind and name exists (docs/connect.md).")


class AutoEncryptModel(Block):
    tls: bool | None = F("Client agents: get this agent's TLS certificate from a server at start "
                         "(AutoEncrypt.Sign) and renew it; no cert_file/key_file needed (docs/tls.md). Default false.")
    allow_tls: bool | None = F("Servers: sign client agents' auto_encrypt certificates and trust the Connect CA's "
                               "roots on the RPC port. Default false.")
    dns_san: list[str] | None = F("Client agents: more DNS names for the auto_encrypt certificate "
                                  '(besides "localhost").')
    ip_san: list[str] | None = F("Client agents: more IP addresses for the auto_encrypt certificate "
                                 "(besides 127.0.0.1 and ::1).")


class ConfigFile(Block):
    """One configuration file (or -hcl fragment, or the flags), before merging."""

    acl: ACLModel | None = F("Access control lists (docs/acl.md).")
    acl_datacenter: str | None = F("Deprecated: turns ACLs on (use acl.enabled and primary_datacenter).")
    acl_default_policy: str | None = F("Deprecated spelling of acl.default_policy.")
    acl_down_policy: str | None = F("Deprecated spelling of acl.down_policy.")
    acl_ttl: Duration | None = F("Deprecated spelling of acl.token_ttl.")
    acl_master_token: str | None = F("Deprecated spelling of acl.tokens.initial_management.")
    acl_token: str | None = F("Deprecated spelling of acl.tokens.default.")
    acl_agent_token: str | None = F("Deprecated spelling of acl.tokens.agent.")
    acl_agent_master_token: str | None = F("Deprecated spelling of acl.tokens.agent_recovery.")
    acl_replication_token: str | None = F("Deprecated spelling of acl.tokens.replication.")
    acl_enforce_version_8: bool | None = F("Deprecated; ignored.")
    addresses: AddressesModel | None = F("Per-listener bind addresses overriding client_addr.")
    advertise_addr: str | None = F("Address advertised to other agents. Default: bind_addr, or the first private IPv4.")
    advertise_addr_ipv4: str | None = F(COMPAT)
    advertise_addr_ipv6: str | None = F(COMPAT)
    advertise_addr_wan: str | None = F("Address advertised to other datacenters. Default: advertise_addr.")
    advertise_addr_wan_ipv4: str | None = F(COMPAT)
    advertise_addr_wan_ipv6: str | None = F(COMPAT)
    alt_domain: str | None = F('Second DNS domain answered besides domain. Default "".')
    auto_encrypt: AutoEncryptModel | None = F("Automatic agent TLS certificates from the servers (docs/tls.md).")
    autopilot: AutopilotModel | None = F("Autopilot: dead-server cleanup, stabilization, min_quorum.")
    bind_addr: str | None = F('Cluster (gossip and server RPC) bind address. Default "0.0.0.0".')
    bootstrap: bool | None = F("Let this server elect itself without others. Default false; requires server.")
    bootstrap_expect: int | None = F("Servers to wait for before the first election. Default 0; requires server.")
    ca_file: str | None = F("Old spelling of tls.defaults.ca_file.")
    ca_path: str | None = F("Old spelling of tls.defaults.ca_path.")
    cert_file: str | None = F("Old spelling of tls.defaults.cert_file.")
    check: RawDefinitions | None = F("One check definition (snake_case or PascalCase keys).")
    checks: RawDefinitions | None = F("Check definitions; concatenated with check.")
    check_output_max_size: int | None = F("Bytes of check output kept. Default 4096.")
    check_update_interval: Duration | None = F(
        'Output-only check updates are synced at most this often. Default "5m". ' + COMPAT)
    client_addr: str | None = F('Bind address(es) of HTTP, DNS and gRPC, space-separated. Default "127.0.0.1".')
    connect: ConnectModel | None = F(COMPAT)
    config_entries: ConfigEntriesModel | None = F("Config entries to bootstrap (docs/connect.md).")
    data_dir: str | None = F("Directory for persistent state. Required except in -dev.")
    datacenter: str | None = F('Datacenter name: lowercase letters, digits, "-" and "_". Default "dc1".')
    default_query_time: Duration | None = F('Blocking-query wait when the request gives none. Default "300s".')
    disable_anonymous_signature: bool | None = F(COMPAT)
    disable_host_node_id: bool | None = F("Do not derive node_id from the host. Default true. " + COMPAT)
    disable_keyring_file: bool | None = F(
        "Do not keep the gossip keyring in data_dir/serf/local.keyring. Default false (true in -dev).")
    disable_remote_exec: bool | None = F(
        "Ignore remote exec (`cairn exec`, `consul exec`) jobs. Default true; false runs any command "
        "anyone who can write KV and fire events asks for (docs/security.md).")
    disable_update_check: bool | None = F("cairn never phones home; accepted. Default false.")
    discard_check_output: bool | None = F("Do not keep check output. Default false. " + COMPAT)
    discovery_max_stale: Duration | None = F('Default "0s". ' + COMPAT)
    dns_config: DNSConfigModel | None = F("DNS server tuning.")
    domain: str | None = F('DNS domain answered. Default "consul."')
    enable_debug: bool | None = F(COMPAT)
    enable_local_script_checks: bool | None = F("Allow script checks from config files only. Default false.")
    enable_script_checks: bool | None = F("Allow script checks from config files and the API. Default false.")
    enable_syslog: bool | None = F(COMPAT)
    encrypt: str | None = F("Gossip encryption key, base64 of 16, 24 or 32 bytes.")
    encrypt_verify_incoming: bool | None = F(
        "Drop incoming gossip that is not encrypted when a key is set. Default true; false while rolling "
        "encryption onto a running cluster.")
    encrypt_verify_outgoing: bool | None = F(
        "Encrypt outgoing gossip when a key is set. Default true; false while rolling encryption onto a "
        "running cluster.")
    http_config: HTTPConfigModel | None = F("HTTP API settings.")
    key_file: str | None = F("Old spelling of tls.defaults.key_file.")
    leave_on_terminate: bool | None = F("Leave the cluster on SIGTERM. Default true for clients, false for servers.")
    limits: LimitsModel | None = F("Size and connection limits.")
    log_file: str | None = F(COMPAT)
    log_json: bool | None = F("Log JSON lines. Default false.")
    log_level: str | None = F('trace, debug, info, warn or error. Default "info" ("debug" in -dev).')
    log_rotate_bytes: int | None = F(COMPAT)
    log_rotate_duration: Duration | None = F(COMPAT)
    log_rotate_max_files: int | None = F(COMPAT)
    max_query_time: Duration | None = F('Longest blocking-query wait. Default "600s".')
    node_id: str | None = F("UUID of this node. Default: random, kept in <data_dir>/node-id.")
    node_meta: dict[str, str] | None = F("Node metadata: at most 64 pairs, keys 128 and values 512 characters.")
    node_name: str | None = F("Node name. Default: the host name.")
    performance: PerformanceModel | None = F("Timer scaling.")
    gossip_lan: GossipModel | None = F("LAN gossip timing (failure detection and dissemination).")
    gossip_wan: GossipModel | None = F("WAN gossip timing. " + COMPAT)
    pid_file: str | None = F('Write the agent PID here. Default "".')
    ports: PortsModel | None = F("Listener ports; -1 disables one.")
    primary_datacenter: str | None = F("Authoritative datacenter for ACLs. Default: datacenter.")
    raft_protocol: int | None = F("Raft protocol version; only 3. Default 3.")
    raft_snapshot_threshold: int | None = F(
        "Committed log entries between two snapshots of the servers' state. Default 16384.")
    raft_trailing_logs: int | None = F(
        "Log entries kept behind a snapshot, so a lagging follower catches up from the log. Default 10240.")
    reconnect_timeout: Duration | None = F('Reap failed LAN members after this. Default "72h", at least "8h".')
    reconnect_timeout_wan: Duration | None = F('Reap failed WAN servers after this. Default "72h", at least "8h".')
    recursors: list[str] | None = F("Upstream DNS servers for names outside domain. Default [].")
    rejoin_after_leave: bool | None = F(COMPAT)
    retry_interval: Duration | None = F('Wait between retry_join attempts. Default "30s".')
    retry_interval_wan: Duration | None = F('Wait between retry_join_wan attempts. Default "30s".')
    retry_join: list[str] | None = F("Agents to join, retried until one answers. Default [].")
    retry_join_wan: list[str] | None = F("Servers: WAN pool members (other datacenters' servers, host or host:port, "
                                         "default port 8302) to join, retried until one answers. Default [].")
    retry_max: int | None = F("Join attempts before giving up, 0 = forever. Default 0.")
    retry_max_wan: int | None = F("WAN join attempts before giving up, 0 = forever. Default 0.")
    server: bool | None = F("Run as a server (Raft voter). Default false: a client agent, which keeps a "
                            "replica of the catalog and KV streamed from a server and forwards its writes.")
    service: RawDefinitions | None = F("One service definition (snake_case or PascalCase keys).")
    services: RawDefinitions | None = F("Service definitions; concatenated with service.")
    session_ttl_min: Duration | None = F('Shortest session TTL. Default "10s".')
    skip_leave_on_interrupt: bool | None = F("Do not leave on SIGINT. Default true for servers, false for clients.")
    start_join: list[str] | None = F("Agents to join at start (deprecated; use retry_join). Default [].")
    start_join_wan: list[str] | None = F("Servers: WAN pool members to join at start (deprecated; use retry_join_wan). "
                                         "Default [].")
    telemetry: TelemetryModel | None = F("Metrics settings.")
    tls: TLSModel | None = F("TLS settings per listener: defaults, internal_rpc, https, grpc (docs/tls.md).")
    translate_wan_addrs: bool | None = F(COMPAT)
    ui: bool | None = F("Old spelling of ui_config.enabled.")
    ui_config: UIConfigModel | None = F("Web UI.")
    ui_content_path: str | None = F("Old spelling of ui_config.content_path.")
    ui_dir: str | None = F("Old spelling of ui_config.dir.")
    verify_incoming: bool | None = F("Old spelling of a tls block key (appliance/config/tls.py).")
    verify_outgoing: bool | None = F("Old spelling of a tls block key (appliance/config/tls.py).")
    verify_server_hostname: bool | None = F("Old spelling of a tls block key (appliance/config/tls.py).")
    verify_incoming_rpc: bool | None = F("Old spelling of tls.internal_rpc.verify_incoming.")
    verify_incoming_https: bool | None = F("Old spelling of tls.https.verify_incoming.")
    tls_min_version: str | None = F("Old spelling of tls.defaults.tls_min_version.")
    tls_cipher_suites: str | None = F("Old spelling of tls.defaults.tls_cipher_suites.")
    tls_prefer_server_cipher_suites: bool | None = F("Removed in Consul 1.12; accepted and ignored.")
    watches: RawDefinitions | None = F("Watch definitions (type, handler_type, args), run by the agent.")


# Keys whose value is a list of definition blocks: a repeated HCL block is several entries.
LIST_OF_BLOCKS = frozenset({"check", "checks", "service", "services", "watches"})
