"""`cairn validate [-quiet] [-config-format=json|hcl] FILE|DIR...`: check configuration offline.

How it works: the paths go through the same loader and builder as `cairn agent`
(appliance.config.validate_paths), with nothing written or probed on the host. Output as Consul's:
warnings on stderr, then `Configuration is valid!` (exit 0; nothing at all with -quiet), or
`Config validation failed: <error>` on stderr (exit 1).
"""

from __future__ import annotations

import argparse
import sys

from appliance.cli.flags import CliExit, CliParser
from appliance.config import ConfigError, validate_paths

USAGE = """cairn validate [options] FILE_OR_DIRECTORY...

  Performs a thorough sanity test on cairn configuration files. For each file
  or directory given, the configuration is loaded and merged as the agent
  would, then validated. Nothing is started and no network is used.

  Returns 0 if the configuration is valid, 1 if there are problems.

      $ cairn validate /etc/cairn.d/server.json /etc/cairn.d/services/"""


def _parser() -> CliParser:
    parser = CliParser("cairn validate", USAGE)
    parser.flag("quiet", action="store_true", help="When given, a successful run will produce no output.")
    parser.flag(
        "config-format",
        default="",
        metavar="json|hcl",
        help="Read every file as this format, whatever its extension.",
    )
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    return parser


def run(argv: list[str]) -> int:
    """Entry point for `cairn validate`; returns the exit code."""
    try:
        args = _parser().parse(list(argv))
    except CliExit as exc:
        return exc.code
    if not args.paths:
        print("Must specify at least one config file or directory", file=sys.stderr)
        return 1
    if args.config_format not in ("", "json", "hcl"):
        print(f'Config validation failed: -config-format must be "json" or "hcl", not "{args.config_format}"', file=sys.stderr)
        return 1
    try:
        warnings = validate_paths(list(args.paths), args.config_format)
    except ConfigError as err:
        print(f"Config validation failed: {err}", file=sys.stderr)
        return 1
    if not args.quiet:
        for warning in warnings:
            print(warning, file=sys.stderr)
        print("Configuration is valid!")
    return 0
