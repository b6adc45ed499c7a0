"""Semantic checks of the merged configuration, with Consul's error texts (reference §8.4).

How it works: each function takes already-typed values and raises ConfigError with the text an
operator would get from Consul for the same mistake, or returns warnings. No file names here: by
now the problem is in the combination of sources, not in one of them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import uuid

from appliance.config.errors import ConfigError

DATACENTER = re.compile(r"^[a-z0-9_-]+$")
META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
DNS_LABEL = re.compile(r"^[a-zA-Z0-9-]+$")
UNSPECIFIED = ("0.0.0.0", "::", "[::]")
LOG_LEVELS = {"trace": "trace", "debug": "debug", "info": "info", "warn": "warn", "err": "error", "error": "error"}


def datacenter(value: str, key: str = "datacenter") -> None:
    if not value:
        raise ConfigError(f"{key} cannot be empty")
    if not DATACENTER.match(value):
        raise ConfigError(f"{key} can only contain lowercase alphanumeric, - or _ characters.")


def node_name(value: str) -> list[str]:
    if not value:
        raise ConfigError("node_name cannot be empty")
    if not DNS_LABEL.match(value) or len(value) > 63:
        return [
            f'Node name "{value}" will not be discoverable via DNS: only letters, digits and dashes, '
            "at most 63 characters, make a valid DNS label."
        ]
    return []


def node_id(value: str, where: str = "node_id") -> str:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise ConfigError(f'{where}: "{value}" is not a valid UUID') from None
    if str(parsed) != value.lower():
        raise ConfigError(f'{where}: "{value}" is not a valid UUID')
    return str(parsed)


def node_meta(meta: dict[str, str]) -> None:
    """Node metadata limits (64 pairs, key 128, value 512, no consul- keys)."""
    if len(meta) > 64:
        raise ConfigError("Node metadata cannot contain more than 64 key/value pairs")
    for key, value in meta.items():
        if not key:
            raise ConfigError("Key cannot be blank")
        if not META_KEY.match(key):
            raise ConfigError(f"Key contains invalid characters: {key}")
        if len(key) > 128:
            raise ConfigError("Key is too long (limit: 128 characters)")
        if key.startswith("consul-"):
            raise ConfigError(f"Key prefix 'consul-' is reserved for internal use: {key}")
        if len(value) > 512:
            raise ConfigError("Value is too long (limit: 512 characters)")


def _host(addr: str) -> str:
    return addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr


def ip_address(value: str, key: str) -> str:
    """One literal IP (go-sockaddr templates are not supported)."""
    if value.startswith("unix://"):
        raise ConfigError(f"{key} cannot be a unix socket")
    try:
        return str(ipaddress.ip_address(_host(value)))
    except ValueError:
        raise ConfigError(f'{key}: "{value}" is not an IP address') from None


def bind_addr(value: str) -> str:
    value = value.strip()
    if not value:
        raise ConfigError("bind_addr cannot be empty")
    if value.startswith("unix://"):
        raise ConfigError("bind_addr cannot be a unix socket")
    if len(value.split()) > 1:
        raise ConfigError("bind_addr cannot contain multiple addresses")
    return ip_address(value, "bind_addr")


def listen_list(value: str, key: str, label: str) -> tuple[str, ...]:
    """A space-separated list of listen addresses (client_addr, addresses.<x>)."""
    out = []
    for part in value.split():
        if part.startswith("unix://"):
            raise ConfigError(f"{label} cannot be a unix socket")
        out.append(ip_address(part, key))
    if not out:
        raise ConfigError(f"{key} cannot be empty")
    return tuple(out)


def advertise(value: str, wan: bool = False) -> str:
    if _host(value) in ("0.0.0.0", "::"):
        raise ConfigError(f"Advertise {'WAN ' if wan else ''}address cannot be 0.0.0.0, :: or [::]")
    return ip_address(value, "advertise_addr_wan" if wan else "advertise_addr")


def recursor(value: str) -> str:
    value = value.strip()
    host = value
    if value.startswith("["):
        host = value[1 : value.find("]")] if "]" in value else value
    elif value.count(":") == 1:
        host = value.split(":", 1)[0]
    if host in ("0.0.0.0", "::"):
        raise ConfigError("DNS recursor address cannot be 0.0.0.0, :: or [::]")
    return value


def encrypt_key(value: str) -> None:
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("encrypt has invalid key: illegal base64 data") from None
    if len(key) not in (16, 24, 32):
        raise ConfigError(f"encrypt has invalid key: key size must be 16, 24 or 32 bytes, not {len(key)}")


def log_level(value: str) -> str:
    level = LOG_LEVELS.get(value.strip().lower())
    if level is None:
        raise ConfigError(f'Invalid log level: "{value}". Valid log levels are: [TRACE DEBUG INFO WARN ERR]')
    return level


def at_least_zero(value: int, key: str) -> None:
    if value < 0:
        raise ConfigError(f"{key} cannot be {value}. Must be greater than or equal to zero")


def not_negative(seconds: float, key: str) -> None:
    """A duration where "0s" means "no limit" and a negative one is a mistake (http_config timeouts)."""
    if seconds < 0:
        raise ConfigError(f"{key} must not be negative")


def port(value: int, key: str) -> None:
    if value < -1 or value > 65535:
        raise ConfigError(f"{key} cannot be {value}. Must be -1 (disabled) or between 0 and 65535")


def bootstrap(server: bool, bootstrap: bool, expect: int, dev: bool) -> tuple[bool, int, list[str]]:
    """Server bootstrap rules; returns (bootstrap, bootstrap_expect, warnings)."""
    at_least_zero(expect, "bootstrap_expect")
    if dev and expect > 0:
        raise ConfigError("'bootstrap_expect > 0' not allowed in dev mode")
    if bootstrap and not server:
        raise ConfigError("'bootstrap = true' requires 'server = true'")
    if expect > 0 and not server:
        raise ConfigError("'bootstrap_expect > 0' requires 'server = true'")
    if expect > 0 and bootstrap:
        raise ConfigError("'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive")
    warnings: list[str] = []
    if expect == 1:
        warnings.append("bootstrap_expect = 1 is the same as bootstrap = true: this server elects itself.")
        return True, 0, warnings
    if bootstrap and not dev:
        warnings.append("bootstrap = true: this server elects itself leader; enable only for the first server.")
    if expect == 2:
        warnings.append("bootstrap_expect = 2: a cluster of 2 servers cannot survive the loss of either one.")
    elif expect > 2 and expect % 2 == 0:
        warnings.append(
            f"bootstrap_expect = {expect}: an even number of servers tolerates no more failures than {expect - 1}."
        )
    return bootstrap, expect, warnings


def alt_domain(alt: str, domain: str, dc: str) -> None:
    if not alt:
        return
    first = alt.split(".", 1)[0]
    if first in ("service", "connect", "node", "query", "addr", dc):
        raise ConfigError(f"alt_domain cannot start with {{service,connect,node,query,addr,{dc}}}")
    if alt.rstrip(".") == domain.rstrip("."):
        raise ConfigError("alt_domain cannot be the same as domain")


def port_collisions(client: dict[str, tuple[tuple[str, ...], int]], cluster: dict[str, tuple[str, int]]) -> None:
    """No two listeners on one address:port (`HTTP address 127.0.0.1:8500 already configured for DNS`)."""
    seen: dict[str, str] = {}

    def claim(label: str, host: str, number: int) -> None:
        if number <= 0:
            return
        addr = f"[{host}]:{number}" if ":" in host else f"{host}:{number}"
        if addr in seen:
            raise ConfigError(f"{label} address {addr} already configured for {seen[addr]}")
        seen[addr] = label

    for label, (hosts, number) in client.items():
        for host in hosts:
            claim(label, host, number)
    for label, (host, number) in cluster.items():
        claim(label, host, number)


def raft(multiplier: int, protocol: int) -> None:
    if not 1 <= multiplier <= 10:
        raise ConfigError(f"performance.raft_multiplier cannot be {multiplier}. Must be between 1 and 10")
    if protocol != 3:
        raise ConfigError(f"raft_protocol version {protocol} is not supported by this version of Consul")


def raft_log(snapshot_threshold: int, trailing_logs: int) -> None:
    if snapshot_threshold < 1:
        raise ConfigError(f"raft_snapshot_threshold cannot be {snapshot_threshold}. Must be at least 1")
    if trailing_logs < 0:
        raise ConfigError(f"raft_trailing_logs cannot be {trailing_logs}. Must be at least 0")


def join_entries(entries: list[str] | tuple[str, ...], key: str) -> tuple[str, ...]:
    """retry_join / retry_join_wan / start_join: a cloud auto-join entry (`provider=...`) must parse
    and name a provider and keys cairn knows (appliance/cloud/discover.py); hosts pass as they are.
    The error shows the entry with its secrets hidden."""
    from appliance.cloud.discover import DiscoverError, check, is_cloud, redact

    for entry in entries:
        if is_cloud(entry):
            try:
                check(entry)
            except DiscoverError as err:
                raise ConfigError(f'{key}: invalid cloud auto-join entry "{redact(entry)}": {err}') from None
    return tuple(entries)
