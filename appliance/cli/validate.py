"""`cairn validate [-quiet] [-dev] [-config-format=json|hcl] FILE|DIR...`: check configuration offline.

How it works: the paths go through the same loader and builder as `cairn agent`
(appliance.config.validate_paths), with nothing written or probed on the host. Output as Consul's:
warnings on stderr, then `Configuration is valid!` (exit 0; nothing at all with -quiet), or
`Config validation failed: <error>` on stderr (exit 1). `-dev` validates the files over `-dev`'s
defaults, as `cairn agent -dev -config-dir` would run them: a directory of service definitions
needs no data_dir then (without it, `data_dir cannot be empty`, as Consul says).
"""

from __future__ import annotations

import sys

from appliance.config import ConfigError, validate_paths

USAGE = """cairn validate [options] FILE_OR_DIRECTORY...

  Performs a thorough sanity test on cairn configuration files. For each file
  or directory given, the configuration is loaded and merged as the agent
  would, then validated. Nothing is started and no network is used.

  Returns 0 if the configuration is valid, 1 if there are problems.

      $ cairn validate /etc/cairn.d/server.json /etc/cairn.d/services/"""


# Go's strconv.ParseBool accepts exactly these.
GO_BOOLS = ("1", "0", "t", "f", "true", "false", "TRUE", "FALSE", "True", "False", "T", "F")

HELP = USAGE.replace("cairn validate", "Usage: cairn validate", 1) + """

Command Options

  -config-format=<string>
     Read every file as this format, "json" or "hcl", whatever its extension.

  -dev
     Validate the files as "cairn agent -dev" would load them: over -dev's
     defaults, so a directory of service definitions needs no data_dir.

  -quiet
     When given, a successful run will produce no output.
"""


class _Usage(Exception):
    pass


def _bool(name: str, has_value: bool, value: str) -> bool:
    if has_value and value not in GO_BOOLS:
        raise _Usage(f'invalid boolean value "{value}" for -{name}: parse error')
    return not has_value or value in ("1", "t", "true", "TRUE", "True", "T")


def _parse(argv: list[str]) -> tuple[bool, bool, str, list[str]]:
    """Go flag rules: -flag/--flag, -flag=value or -flag value; flags end at the first path."""
    quiet, dev, fmt = False, False, ""
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            return quiet, dev, fmt, argv[i + 1 :]
        if not tok.startswith("-") or tok == "-":
            break
        name, has_value, value = tok.lstrip("-").partition("=")
        i += 1
        if name in ("h", "help"):
            raise _Usage(HELP)
        if name == "quiet":
            quiet = _bool(name, bool(has_value), value)
        elif name == "dev":
            dev = _bool(name, bool(has_value), value)
        elif name == "config-format":
            if not has_value:
                if i >= len(argv):
                    raise _Usage("flag needs an argument: -config-format")
                value = argv[i]
                i += 1
            fmt = value
        else:
            raise _Usage(f"flag provided but not defined: -{name}")
    return quiet, dev, fmt, argv[i:]


def run(argv: list[str]) -> int:
    """Entry point for `cairn validate`; returns the exit code."""
    try:
        quiet, dev, config_format, paths = _parse(list(argv))
    except _Usage as exc:
        text = str(exc)
        if text == HELP:
            print(text)
            return 0
        print(text, file=sys.stderr)
        return 1
    if not paths:
        print("Must specify at least one config file or directory", file=sys.stderr)
        return 1
    if config_format not in ("", "json", "hcl"):
        print(f'Config validation failed: -config-format must be "json" or "hcl", not "{config_format}"',
              file=sys.stderr)
        return 1
    try:
        warnings = validate_paths(list(paths), config_format, dev=dev)
    except ConfigError as err:
        print(f"Config validation failed: {err}", file=sys.stderr)
        return 1
    if not quiet:
        for warning in warnings:
            print(warning, file=sys.stderr)
        print("Configuration is valid!")
    return 0
