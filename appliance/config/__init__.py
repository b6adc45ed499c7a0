"""The agent's configuration: flags + JSON/HCL files -> one frozen RuntimeConfig.

    build_agent_config(argv)   parse `cairn agent` flags, load and merge every source, validate
    rebuild(previous)          the same again from previous.flag_args (SIGHUP, `cairn reload`)
    validate_paths(paths)      what `cairn validate` checks; returns warnings
    ConfigError                one line naming the file and key, or Consul's text for the mistake
    HelpRequested              `-h` was given; str() is the usage text

Pieces: agent_config.py (the three entry points above), flags.py (command line), hcl.py (HCL1
reader), model.py (file format), loader.py (sources
and merge rules), builder.py (merged mapping -> RuntimeConfig), validation.py (Consul's checks),
durations.py (Go durations), runtime.py (the frozen result).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "HelpRequested",
    "RuntimeConfig",
    "build_agent_config",
    "rebuild",
    "usage",
    "validate_paths",
]

# The names above load on first use (PEP 562), so that importing one piece of this package
# (appliance.config.durations, by the request decoder among others) does not load the builder,
# the loader and the service definitions behind them, which import those pieces in turn.
_WHERE = {
    "ConfigError": "appliance.config.errors",
    "HelpRequested": "appliance.config.flags",
    "usage": "appliance.config.flags",
    "RuntimeConfig": "appliance.config.runtime",
    "build_agent_config": "appliance.config.agent_config",
    "rebuild": "appliance.config.agent_config",
    "validate_paths": "appliance.config.agent_config",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'appliance.config' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
