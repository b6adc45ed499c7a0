"""Building the agent's RuntimeConfig from flags and files: see the package docstring."""

from __future__ import annotations

import os

from appliance.config.builder import Host, assemble, to_runtime
from appliance.config.errors import ConfigError
from appliance.config.flags import AgentFlags, parse_agent_flags
from appliance.config.runtime import ConfigSource, RuntimeConfig


def _build(argv: list[str], host: Host) -> RuntimeConfig:
    flags = parse_agent_flags(list(argv))
    if flags.args:
        raise ConfigError(f"Unexpected extra arguments: {' '.join(flags.args)}")
    merged = assemble(flags, host.warnings)
    sources = tuple(flags.sources) + ((ConfigSource("flags", ""),) if flags.values or flags.dev else ())
    return to_runtime(merged, dev=flags.dev, sources=sources, flag_args=tuple(argv), host=host)


def build_agent_config(argv: list[str], *, hostname: str | None = None) -> RuntimeConfig:
    """Build the agent's RuntimeConfig from its command-line flags (see module docstring).

    Raises ConfigError (or HelpRequested for -h). Outside -dev the node ID is read from, or
    created in, `<data_dir>/node-id`.
    """
    return _build(argv, Host(hostname=hostname))


def rebuild(previous: RuntimeConfig, *, hostname: str | None = None) -> RuntimeConfig:
    """Re-read the sources `previous` was built from; the node ID stays unless a source sets one.

    Which changes take effect is the agent's business (Consul reloads services, checks,
    node_meta, log_level, dns_config, recursors, telemetry and limits, not addresses or ports).
    """
    return _build(list(previous.flag_args), Host(hostname=hostname, node_id=previous.node_id))


def validate_paths(paths: list[str], config_format: str = "", dev: bool = False) -> list[str]:
    """Load and fully validate these files/directories as `cairn validate` does.

    Nothing on the host is written or probed. Returns the warnings; raises ConfigError.
    """
    if config_format and config_format not in ("json", "hcl"):
        raise ConfigError(f'-config-format must be "json" or "hcl", not "{config_format}"')
    flags = AgentFlags(config_format=config_format, dev=dev)  # dev: -dev's defaults under the files
    for path in paths:
        kind = "dir" if os.path.isdir(path) else "file"
        flags.sources.append(ConfigSource(kind, path, config_format))
    host = Host(persist_node_id=False, detect_advertise=False)
    merged = assemble(flags, host.warnings)
    to_runtime(merged, dev=dev, sources=tuple(flags.sources), flag_args=(), host=host)
    return list(host.warnings)
