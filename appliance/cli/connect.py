"""``cairn connect <subcommand>``: the service mesh's commands.

Each subcommand lives in its own module, imported when it runs: ``proxy``
(appliance/cli/connect_proxy.py), ``ca`` (appliance/cli/connect_ca.py), ``envoy``
(appliance/cli/connect_envoy.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from appliance.cli.flags import command, err, run_subcommand

HELP = """\
Usage: cairn connect <subcommand> [options] [args]

  Commands for the service mesh (Connect): its certificate authority and the
  built-in proxy.

    Run the sidecar registered for a service:  cairn connect proxy -sidecar-for web
    Run an ad-hoc proxy with an upstream:      cairn connect proxy -service web -upstream db:9191
    Read the CA configuration:                 cairn connect ca get-config

Subcommands:
    ca       Interacts with the Connect certificate authority
    envoy    Prints an Envoy bootstrap configuration for a proxy
    proxy    Runs the built-in Connect mTLS proxy

For help on a subcommand run: cairn connect <subcommand> -h
"""

MODULES = {"ca": "appliance.cli.connect_ca", "envoy": "appliance.cli.connect_envoy",
           "proxy": "appliance.cli.connect_proxy"}


def _lazy(name: str, module: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            err(f"Error: 'cairn connect {name}' is not available in this build")
            return 1
        return int(mod.run(argv) or 0)

    return run


SUBCOMMANDS = {name: _lazy(name, module) for name, module in MODULES.items()}


@command
def run(argv: list[str]) -> int:
    return run_subcommand("connect", argv, HELP, SUBCOMMANDS)
