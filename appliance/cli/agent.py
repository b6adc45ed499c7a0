"""`cairn agent`: build the configuration from flags and files, then run the agent.

A bad flag or config file stops here, before anything is bound, with one line naming the file
and key and exit code 1. Then: logging, the banner, the pid file, the agent (appliance/agent.py)
until it stops, and the exit code: 1 when it could not start (a port taken, a bad definition,
corrupt Raft storage, a bad keyring), when the Raft log failed (fail-stop) or retry-join gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.config.runtime import RuntimeConfig


def run(argv: list[str]) -> int:
    from appliance.config import ConfigError, HelpRequested, build_agent_config

    try:
        cfg = build_agent_config(argv)
    except HelpRequested as help_text:
        print(str(help_text))
        return 0
    except ConfigError as err:
        sys.stderr.write(f"==> {err}\n")
        return 1
    return run_agent(cfg)


def run_agent(cfg: RuntimeConfig) -> int:
    """Run the agent until it is stopped; return the process exit code."""
    from appliance import logs
    from appliance.agent import Agent
    from appliance.config.identity import banner
    from appliance.gossip.keyring import KeyringError
    from appliance.local.definitions import DefinitionError
    from appliance.raft.storage import StorageCorrupt

    logs.setup(cfg.log_level, cfg.log_json)
    if not cfg.log_json:
        print(banner(cfg), flush=True)
    if cfg.pid_file:
        with open(cfg.pid_file, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    try:
        agent = Agent(cfg)
        asyncio.run(agent.run())
        if agent.server is not None and agent.server.raft.fatal is not None:
            return 1  # fail-stop: the Raft log or its storage broke (logged)
        return agent.exit_code  # 1 when retry_join gave up
    except (OSError, DefinitionError, StorageCorrupt, KeyringError) as err:
        logging.getLogger("agent").error("Error starting agent: %s", err)
        return 1
    finally:
        if cfg.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(cfg.pid_file)
