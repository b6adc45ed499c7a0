"""The `acl { }` block and Consul's deprecated top-level ACL keys, resolved to an ACLConfig.

    acl {
      enabled = true
      default_policy = "deny"              # allow | deny
      down_policy = "extend-cache"         # allow | deny | extend-cache | async-cache
      enable_token_persistence = true      # tokens set over /v1/agent/token go to data_dir/acl-tokens.json
      token_ttl = "30s"
      tokens { initial_management = "..." default = "..." agent = "..." agent_recovery = "..."
               replication = "..." dns = "..." config_file_service_registration = "..." }
    }

The old names are folded in with a warning: `acl.tokens.master` (initial_management),
`acl.tokens.agent_master` (agent_recovery), and the top-level `acl_datacenter` (turns ACLs on, as
it did before Consul 1.4), `acl_default_policy`, `acl_down_policy`, `acl_ttl`,
`acl_master_token`, `acl_token`, `acl_agent_token`, `acl_agent_master_token`,
`acl_replication_token`; `acl_enforce_version_8` is accepted and ignored. A value in the `acl`
block wins over its deprecated spelling. `enable_script_checks` while anonymous callers may
register checks is warned about at start, as Consul does (SCRIPT_CHECKS_WARNING).
"""

from __future__ import annotations

from typing import Any

from appliance.config.durations import DurationError, parse_duration_ns
from appliance.config.errors import ConfigError
from appliance.config.runtime import ACLConfig

DEPRECATED_TOKENS = {"acl_master_token": "initial_management", "acl_token": "default", "acl_agent_token": "agent",
                     "acl_agent_master_token": "agent_recovery", "acl_replication_token": "replication"}
DEPRECATED_SETTINGS = {"acl_default_policy": "default_policy", "acl_down_policy": "down_policy",
                       "acl_ttl": "token_ttl"}
DOWN_POLICIES = ("allow", "deny", "extend-cache", "async-cache")
# Consul's decision, kept: the agent starts, and says at start why this is dangerous (docs/security.md).
SCRIPT_CHECKS_WARNING = ("enable_script_checks is on while anonymous callers may register checks (ACLs off, or "
                         "default_policy allow): anyone who reaches the HTTP API can run commands on this host. "
                         "Turn ACLs on with default_policy deny, or use enable_local_script_checks instead "
                         "(docs/security.md).")


def _seconds(value: str, key: str) -> float:
    try:
        return parse_duration_ns(value) / 1e9
    except DurationError:
        raise ConfigError(f'{key}: invalid duration "{value}"') from None


def resolve_acl(m: dict[str, Any], warnings: list[str]) -> ACLConfig:
    block = dict(m.get("acl") or {})
    tokens = {k: v for k, v in (block.get("tokens") or {}).items() if v}
    for old, new in (("master", "initial_management"), ("agent_master", "agent_recovery")):
        if old in tokens:
            warnings.append(f"The 'acl.tokens.{old}' field is deprecated. Use the 'acl.tokens.{new}' field instead.")
            tokens.setdefault(new, tokens.pop(old))
    for old, new in DEPRECATED_TOKENS.items():
        if m.get(old):
            warnings.append(f"The '{old}' field is deprecated. Use the 'acl.tokens.{new}' field instead.")
            tokens.setdefault(new, m[old])
    for old, new in DEPRECATED_SETTINGS.items():
        if m.get(old) is not None:
            warnings.append(f"The '{old}' field is deprecated. Use the 'acl.{new}' field instead.")
            block.setdefault(new, m[old])
    enabled = block.get("enabled")
    if enabled is None and m.get("acl_datacenter"):
        warnings.append("The 'acl_datacenter' field is deprecated. Use the 'primary_datacenter' field instead.")
        enabled = True
    policy = block.get("default_policy", "allow")
    if policy not in ("allow", "deny"):
        raise ConfigError(f'acl.default_policy must be "allow" or "deny", not "{policy}"')
    down = block.get("down_policy", "extend-cache")
    if down not in DOWN_POLICIES:
        raise ConfigError(f'acl.down_policy must be one of {", ".join(DOWN_POLICIES)}, not "{down}"')
    if m.get("enable_script_checks") and (not enabled or policy == "allow"):
        warnings.append(SCRIPT_CHECKS_WARNING)
    return ACLConfig(
        enabled=bool(enabled),
        default_policy=policy,
        down_policy=down,
        token_ttl_s=_seconds(block["token_ttl"], "acl.token_ttl") if block.get("token_ttl") else 30.0,
        enable_token_persistence=bool(block.get("enable_token_persistence", False)),
        enable_key_list_policy=bool(block.get("enable_key_list_policy", False)),
        enable_token_replication=bool(block.get("enable_token_replication", False)),
        tokens=tokens,
    )
