"""``cairn connect ca get-config|set-config``: the Connect CA's configuration, as Consul's verbs.

* ``get-config``: GET /v1/connect/ca/configuration, printed as indented JSON.
* ``set-config -config-file ca.json [-force-without-cross-signing]``: PUT the file's
  ``{"Provider", "Config"}``; ``Configuration updated!``. A new key or key type rotates the CA
  (docs/connect.md).
"""

from __future__ import annotations

import json

from appliance.cli.flags import ApiError, CliError, CliParser, command, expect_args, out, run_subcommand
from appliance.cli.http_client import add_http_flags, client_from_args

HELP = """\
Usage: cairn connect ca <subcommand> [options]

  Interacts with the Connect certificate authority.

    Read the configuration:    cairn connect ca get-config
    Change the configuration:  cairn connect ca set-config -config-file ca.json

Subcommands:
    get-config    Displays the current Connect CA configuration
    set-config    Modifies the current Connect CA configuration
"""


def get_config(argv: list[str]) -> int:
    p = CliParser("cairn connect ca get-config", "cairn connect ca get-config [options]",
                  "Displays the current Connect certificate authority (CA) configuration.")
    add_http_flags(p)
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    try:
        conf = client_from_args(args).get_json("/v1/connect/ca/configuration", server=True)
    except ApiError as exc:
        raise CliError(f"Error querying CA configuration: {exc}") from None
    out(json.dumps(conf, indent="\t"))
    return 0


def set_config(argv: list[str]) -> int:
    p = CliParser("cairn connect ca set-config", "cairn connect ca set-config [options]",
                  "Modifies the current Connect CA configuration from a JSON file "
                  '({"Provider": "consul", "Config": {...}}).')
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-config-file", "--config-file", dest="config_file", default="", metavar="<path>",
                   help="The path to the config file to use.")
    g.add_argument("-force-without-cross-signing", "--force-without-cross-signing", dest="force",
                   action="store_true", help="Rotate the root without cross-signing it with the old key.")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    if not args.config_file:
        raise CliError("-config-file is required")
    try:
        with open(args.config_file, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CliError(f"Error reading config file: {exc}") from None
    try:
        conf = json.loads(raw)
        if not isinstance(conf, dict):
            raise ValueError("the file must hold a JSON object")
    except ValueError as exc:
        raise CliError(f"Error parsing config file: {exc}") from None
    if args.force:
        conf["ForceWithoutCrossSigning"] = True
    try:
        client_from_args(args).put("/v1/connect/ca/configuration", None, json.dumps(conf).encode(),
                                   content_type="application/json")
    except ApiError as exc:
        raise CliError(f"Error setting CA configuration: {exc}") from None
    out("Configuration updated!")
    return 0


@command
def run(argv: list[str]) -> int:
    return run_subcommand("connect ca", argv, HELP, {"get-config": command(get_config),
                                                    "set-config": command(set_config)})
