"""Small operator verbs: ``reload``, ``leave``, ``info``, ``version``, ``keygen``, ``monitor``.

* ``reload``: PUT /v1/agent/reload; the agent re-reads its config files.
* ``leave``: PUT /v1/agent/leave; the agent leaves the cluster gracefully and shuts down.
* ``info``: GET /v1/agent/self and prints its ``Stats``, sections and keys sorted, each value
  on a TAB-indented ``key = value`` line.
* ``version``: the local build's version (no agent needed).
* ``keygen``: a new gossip encryption key, 32 random bytes in base64.
* ``monitor``: GET /v1/agent/monitor, streaming the agent's log until Ctrl-C (exit 0).
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
from collections.abc import Mapping
from typing import Any

import appliance
from appliance.cli.flags import CliError, CliParser, command, expect_args, out
from appliance.cli.http_client import ApiError, add_http_flags, client_from_args

PROTOCOL_DEFAULT = 2
PROTOCOL_MIN = 2
PROTOCOL_MAX = 3
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")


# ------------------------------------------------------------------------------------------
# pure helpers


def _stat_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def format_info(stats: Mapping[str, Any]) -> str:
    """``Stats`` of /v1/agent/self as ``section:`` lines and ``\\tkey = value`` lines."""
    lines = []
    for section in sorted(stats):
        lines.append(f"{section}:")
        values = stats[section] or {}
        if isinstance(values, Mapping):
            for key in sorted(values):
                lines.append(f"\t{key} = {_stat_value(values[key])}")
    return "\n".join(lines)


def version_info() -> dict[str, Any]:
    return {
        "Version": appliance.__version__,
        "Revision": getattr(appliance, "__revision__", ""),
        "Prerelease": "",
        "FIPS": "",
        "BuildDate": getattr(appliance, "__build_date__", ""),
        "RPC": {"Default": PROTOCOL_DEFAULT, "Min": PROTOCOL_MIN, "Max": PROTOCOL_MAX},
    }


def format_version(info: Mapping[str, Any] | None = None) -> str:
    info = version_info() if info is None else info
    lines = [f"Cairn v{info['Version']}"]
    if info.get("Revision"):
        lines.append(f"Revision {info['Revision']}")
    if info.get("BuildDate"):
        lines.append(f"Build Date {info['BuildDate']}")
    rpc = info["RPC"]
    lines.append(
        f"Protocol {rpc['Default']} spoken by default, understands {rpc['Min']} to {rpc['Max']} "
        f"(agent will automatically use protocol >{rpc['Default']} when speaking to compatible agents)"
    )
    lines.append("Compatible with the Consul HTTP API v1")
    return "\n".join(lines)


def new_gossip_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


# ------------------------------------------------------------------------------------------
# verbs


@command
def run_reload(argv: list[str]) -> int:
    p = CliParser("cairn reload", "cairn reload [options]",
                  "Makes the agent reload its configuration files, like sending it SIGHUP.\n"
                  "Only settings that can change at runtime take effect.")
    add_http_flags(p, server=False)
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    try:
        client_from_args(args).put("/v1/agent/reload")
    except ApiError as exc:
        raise CliError(f"Error reloading: {exc}") from None
    out("Configuration reload triggered")
    return 0


@command
def run_leave(argv: list[str]) -> int:
    p = CliParser("cairn leave", "cairn leave [options]",
                  "Makes the agent leave the cluster gracefully and shut down. A server first hands\n"
                  "over Raft leadership if it leads, then leaves the Raft configuration.")
    add_http_flags(p, server=False)
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    try:
        client_from_args(args).put("/v1/agent/leave")
    except ApiError as exc:
        raise CliError(f"Error leaving: {exc}") from None
    out("Graceful leave complete")
    return 0


@command
def run_info(argv: list[str]) -> int:
    p = CliParser("cairn info", "cairn info [options]",
                  "Prints the agent's internal counters and state, for operators debugging it.")
    add_http_flags(p, server=False)
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    try:
        self_info = client_from_args(args).get_json("/v1/agent/self")
    except ApiError as exc:
        raise CliError(f"Error querying agent: {exc}") from None
    stats = (self_info or {}).get("Stats") or {}
    out(format_info(stats))
    return 0


@command
def run_version(argv: list[str]) -> int:
    p = CliParser("cairn version", "cairn version [options]", "Prints the version of this cairn build.")
    p.flag("format", default="pretty", metavar="<pretty|json>", help="Output format: pretty or json.")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    if args.format == "json":
        out(json.dumps(version_info(), indent="   "))
    elif args.format == "pretty":
        out(format_version())
    else:
        raise CliError(f"Invalid format: {args.format}")
    return 0


@command
def run_keygen(argv: list[str]) -> int:
    p = CliParser("cairn keygen", "cairn keygen",
                  "Prints a new gossip encryption key (32 random bytes, base64) for the 'encrypt'\n"
                  "setting.")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    out(new_gossip_key())
    return 0


@command
def run_monitor(argv: list[str]) -> int:
    p = CliParser("cairn monitor", "cairn monitor [options]",
                  "Streams the agent's log lines until interrupted with Ctrl-C.")
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-log-level", "--log-level", dest="log_level", default="info", metavar="<level>",
                   help="Lowest level to show: trace, debug, info, warn or error. Default info.")
    g.add_argument("-log-json", "--log-json", dest="log_json", action="store_true",
                   help="Stream the log as JSON lines.")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    params = [("loglevel", args.log_level)]
    if args.log_json:
        params.append(("logjson", ""))
    client = client_from_args(args)
    try:
        for line in client.stream_lines("/v1/agent/monitor", params):
            sys.stdout.buffer.write(line if line.endswith(b"\n") else line + b"\n")
            sys.stdout.buffer.flush()
    except KeyboardInterrupt:
        return 0
    except ApiError as exc:
        raise CliError(f"Error starting monitor: {exc}") from None
    sys.stderr.write("The agent closed the log stream; it may have shut down.\n")
    return 1
