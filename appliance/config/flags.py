"""The agent's command-line flags, parsed the way Go's flag package parses Consul's.

How it works
------------
`-flag value`, `-flag=value` and `--flag` all work; a boolean flag never takes the next argument
(`-server` or `-server=false`); parsing stops at `--` or at the first argument that is not a flag.
Each flag writes a config-shaped value (`-http-port 8501` -> {"ports": {"http": 8501}}); list flags
(`-retry-join`, `-recursor`, `-join`) and `-node-meta` repeat and add up, other flags repeated keep
the last value. `-config-file`/`-config-dir` are kept in command-line order as ConfigSources; `-hcl`
fragments apply after every file and directory, and the flags after everything. Errors use Go's
texts (`flag provided but not defined: -foo`, `invalid value "x" for flag -http-port: parse error`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.config.durations import DurationError, parse_duration_ns
from appliance.config.errors import ConfigError
from appliance.config.runtime import ConfigSource


class HelpRequested(Exception):
    """`-h`/`-help`/`--help` was given; str() is the usage text to print (exit 0)."""


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str  # bool, int, str, duration, list, meta, or a special: dev, file, dir, format, hcl
    key: tuple[str, ...]  # where the value goes in the config mapping
    help: str


FLAGS: tuple[Flag, ...] = (
    Flag("advertise", "str", ("advertise_addr",), "Address advertised to the other agents in the cluster."),
    Flag("advertise-wan", "str", ("advertise_addr_wan",), "Address advertised to other datacenters."),
    Flag("alt-domain", "str", ("alt_domain",), "A second DNS domain to answer, besides -domain."),
    Flag("bind", "str", ("bind_addr",), "Address the cluster listeners (gossip, server RPC) bind to."),
    Flag("bootstrap", "bool", ("bootstrap",), "Let this server elect itself leader without others."),
    Flag("bootstrap-expect", "int", ("bootstrap_expect",), "Number of servers to wait for before the first election."),
    Flag("client", "str", ("client_addr",), "Address(es) HTTP, DNS and gRPC bind to; space-separated."),
    Flag("config-dir", "dir", (), "Directory of .json/.hcl files to load in name order. Repeatable."),
    Flag("config-file", "file", (), "A configuration file to load. Repeatable."),
    Flag("config-format", "format", (), 'Read every config file as "json" or "hcl", whatever its extension.'),
    Flag("data-dir", "str", ("data_dir",), "Directory for the agent's persistent state."),
    Flag("datacenter", "str", ("datacenter",), "Datacenter this agent belongs to."),
    Flag("dev", "dev", (), "Development mode: an in-memory single-node server, UI on, debug logs."),
    Flag("disable-host-node-id", "bool", ("disable_host_node_id",), "Do not derive the node ID from the host."),
    Flag("dns-port", "int", ("ports", "dns"), "DNS server port (-1 disables)."),
    Flag("domain", "str", ("domain",), 'DNS domain to answer (default "consul.").'),
    Flag("enable-local-script-checks", "bool", ("enable_local_script_checks",),
         "Allow script checks from config files."),
    Flag("enable-script-checks", "bool", ("enable_script_checks",),
         "Allow script checks from config files and the API."),
    Flag("encrypt", "str", ("encrypt",), "Gossip encryption key (base64, see `cairn keygen`)."),
    Flag("grpc-port", "int", ("ports", "grpc"), "gRPC port (-1 disables)."),
    Flag("grpc-tls-port", "int", ("ports", "grpc_tls"), "gRPC TLS port (-1 disables)."),
    Flag("hcl", "hcl", (), "An HCL configuration fragment, applied after all files. Repeatable."),
    Flag("http-port", "int", ("ports", "http"), "HTTP API port (-1 disables)."),
    Flag("https-port", "int", ("ports", "https"), "HTTPS API port (-1 disables)."),
    Flag("join", "list", ("start_join",), "Address of an agent to join at start (gossip: host or host:port, default "
         "port 8301). Repeatable."),
    Flag("join-wan", "list", ("start_join_wan",), "Servers: address of another datacenter's server to join over WAN at "
         "start (host or host:port, default port 8302). Repeatable."),
    Flag("log-file", "str", ("log_file",), "Also write logs to this file."),
    Flag("log-json", "bool", ("log_json",), "Write logs as JSON lines."),
    Flag("log-level", "str", ("log_level",), "Log level: trace, debug, info, warn or error."),
    Flag("node", "str", ("node_name",), "Name of this node (default: the host name)."),
    Flag("node-id", "str", ("node_id",), "UUID of this node (default: random, kept in the data dir)."),
    Flag("node-meta", "meta", ("node_meta",), "Node metadata as key:value. Repeatable."),
    Flag("pid-file", "str", ("pid_file",), "Write the agent's PID to this file."),
    Flag("raft-protocol", "int", ("raft_protocol",), "Raft protocol version (only 3)."),
    Flag("recursor", "list", ("recursors",), "Upstream DNS server for other domains. Repeatable."),
    Flag("retry-interval", "duration", ("retry_interval",), 'Wait between -retry-join attempts (default "30s").'),
    Flag("retry-join", "list", ("retry_join",), "Address of an agent to join (gossip: host or host:port, default port "
         "8301), retried until one answers. Repeatable."),
    Flag("retry-interval-wan", "duration", ("retry_interval_wan",), 'Wait between -retry-join-wan attempts (default '
         '"30s").'),
    Flag("retry-join-wan", "list", ("retry_join_wan",), "Servers: address of another datacenter's server (WAN gossip: "
         "host or host:port, default port 8302), retried until one answers. Repeatable."),
    Flag("retry-max", "int", ("retry_max",), "Join attempts before giving up (0 = forever)."),
    Flag("retry-max-wan", "int", ("retry_max_wan",), "WAN join attempts before giving up (0 = forever)."),
    Flag("serf-lan-port", "int", ("ports", "serf_lan"), "LAN gossip port."),
    Flag("serf-wan-port", "int", ("ports", "serf_wan"), "WAN gossip port."),
    Flag("server", "bool", ("server",), "Run as a server. Without -bootstrap or -bootstrap-expect it joins a running "
         "cluster (via -retry-join): added as non-voter, promoted by autopilot. Without -server the agent is a "
         "client: it keeps a replica of the catalog and KV streamed from a server and forwards its writes."),
    Flag("server-port", "int", ("ports", "server"), "Server RPC port: Raft, forwarded writes and client agents' replica"
         " streams."),
    Flag("ui", "bool", ("ui_config", "enabled"), "Serve the web UI."),
    Flag("ui-content-path", "str", ("ui_config", "content_path"), 'URL path of the web UI (default "/ui/").'),
    Flag("ui-dir", "str", ("ui_config", "dir"), "Serve the web UI from this directory."),
)
_BY_NAME = {f.name: f for f in FLAGS}

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


@dataclass
class AgentFlags:
    """What the command line asked for."""

    dev: bool = False
    sources: list[ConfigSource] = field(default_factory=list)  # files/dirs in order, then -hcl
    config_format: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # config-shaped, applied last
    args: list[str] = field(default_factory=list)  # arguments after the flags


def usage() -> str:
    """Help text for `cairn agent -h`."""
    lines = [
        "Usage: cairn agent [options]",
        "",
        "  Starts the cairn agent and runs until an interrupt is received. The agent",
        "  is one node of the cluster: a server, or a client that forwards to servers.",
        "",
        "Options:",
        "",
    ]
    for flag in FLAGS:
        arg = "" if flag.kind in ("bool", "dev") else "=<value>"
        lines.append(f"  -{flag.name}{arg}")
        lines.append(f"     {flag.help}")
        lines.append("")
    return "\n".join(lines)


def _set(values: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    node = values
    for part in key[:-1]:
        node = node.setdefault(part, {})
    node[key[-1]] = value


def _bool(name: str, raw: str) -> bool:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f'invalid boolean value "{raw}" for -{name}: parse error')


def _convert(flag: Flag, raw: str) -> Any:
    if flag.kind == "int":
        try:
            return int(raw, 0) if raw.strip().lower().startswith(("0x", "-0x")) else int(raw)
        except ValueError:
            raise ConfigError(f'invalid value "{raw}" for flag -{flag.name}: parse error') from None
    if flag.kind == "duration":
        try:
            parse_duration_ns(raw)
        except DurationError:
            raise ConfigError(f'invalid value "{raw}" for flag -{flag.name}: parse error') from None
    return raw


def parse_agent_flags(argv: list[str]) -> AgentFlags:
    """Parse `cairn agent` flags (see module docstring). Raises ConfigError or HelpRequested."""
    out = AgentFlags()
    hcl: list[ConfigSource] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            out.args = list(argv[i + 1 :])
            break
        if not tok.startswith("-") or tok == "-":
            out.args = list(argv[i:])
            break
        body = tok[2:] if tok.startswith("--") else tok[1:]
        name, has_value, inline = body.partition("=")
        if name in ("h", "help"):
            raise HelpRequested(usage())
        flag = _BY_NAME.get(name)
        if flag is None:
            raise ConfigError(f"flag provided but not defined: -{name}")
        i += 1
        if flag.kind in ("bool", "dev"):
            value: Any = _bool(name, inline) if has_value else True
            if flag.kind == "dev":
                out.dev = value
            else:
                _set(out.values, flag.key, value)
            continue
        if not has_value:
            if i >= len(argv):
                raise ConfigError(f"flag needs an argument: -{name}")
            inline = argv[i]
            i += 1
        if flag.kind == "file":
            out.sources.append(ConfigSource("file", inline))
        elif flag.kind == "dir":
            out.sources.append(ConfigSource("dir", inline))
        elif flag.kind == "format":
            if inline not in ("json", "hcl"):
                raise ConfigError(f'invalid value "{inline}" for flag -config-format: must be "json" or "hcl"')
            out.config_format = inline
        elif flag.kind == "hcl":
            hcl.append(ConfigSource("hcl", inline, "hcl"))
        elif flag.kind == "list":
            _set(out.values, flag.key, [*_get(out.values, flag.key, []), inline])
        elif flag.kind == "meta":
            key, colon, val = inline.partition(":")
            if not colon or not key:
                raise ConfigError(f'invalid value "{inline}" for flag -node-meta: must be key:value')
            _set(out.values, flag.key, {**_get(out.values, flag.key, {}), key: val})
        else:
            _set(out.values, flag.key, _convert(flag, inline))
    if out.config_format:
        out.sources = [ConfigSource(s.kind, s.value, out.config_format) for s in out.sources]
    out.sources.extend(hcl)
    return out


def _get(values: dict[str, Any], key: tuple[str, ...], default: Any) -> Any:
    node: Any = values
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
