"""`cairn agent`: build the configuration from flags and files, then run the agent.

A bad flag or config file stops here, before anything is bound, with one line naming the file
and key and exit code 1.
"""

from __future__ import annotations

import sys


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
    from appliance.agent import run as run_agent

    return run_agent(cfg)
