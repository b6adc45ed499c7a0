"""`cairn agent`: build the configuration from flags and files, then run the agent.

A bad flag or config file stops here, before anything is bound, with one line naming the file
and key and exit code 1. Then: logging, the banner, the pid file, the agent (appliance/agent.py)
until it stops, and the exit code: 1 when it could not start (a port taken, a bad definition,
corrupt Raft storage, a bad keyring), when the Raft log failed (fail-stop) or retry-join gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.config.runtime import RuntimeConfig


def go_bind_error(err: Exception) -> str:
    """A listener that could not bind, in Go's words (`listen tcp 127.0.0.1:8500: bind: address
    already in use`) rather than Python's (`[Errno 98] error while attempting to bind on ...`)."""
    match = re.search(r"address \('([^']*)', (\d+)", str(err))
    if not isinstance(err, OSError) or match is None:
        return str(err)
    reason = {errno.EADDRINUSE: "address already in use", errno.EACCES: "permission denied",
              errno.EADDRNOTAVAIL: "cannot assign requested address"}.get(err.errno or 0, err.strerror or str(err))
    network = "udp" if "udp" in str(err).lower() else "tcp"
    return f"listen {network} {match[1]}:{match[2]}: bind: {reason}"


def run(argv: list[str]) -> int:
    from appliance.config import ConfigError, HelpRequested, build_agent_config

    try:
        cfg = build_agent_config(argv)
    except HelpRequested as help_text:
        print(str(help_text))
        return 0
    except ConfigError as err:
        sys.stderr.write(f"==> {err}\n")
        if str(err).startswith(("flag provided but not defined", "flag needs an argument", "invalid ")):
            sys.stderr.write("Run 'cairn agent -h' for usage.\n")  # as the other commands say
        return 1
    return run_agent(cfg)


def run_agent(cfg: RuntimeConfig) -> int:
    """Run the agent until it is stopped; return the process exit code."""
    from appliance import logs
    from appliance.agent import Agent
    from appliance.config.identity import banner
    from appliance.gossip.keyring import KeyringError
    from appliance.local.definitions import DefinitionError

    refused: tuple[type[Exception], ...] = (OSError, DefinitionError, KeyringError)
    if cfg.server:  # the Raft storage: a client agent never loads it
        from appliance.raft.storage import StorageCorrupt

        refused += (StorageCorrupt,)
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
    except refused as err:
        logging.getLogger("agent").error("Error starting agent: %s", go_bind_error(err))
        return 1
    finally:
        if cfg.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(cfg.pid_file)
