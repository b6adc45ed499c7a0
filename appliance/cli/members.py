"""``cairn members``: the gossip pool as this agent sees it (GET /v1/agent/members).

Output is Consul's: a columnized table ``Node  Address  Status  Type  Build  Protocol  DC
Partition  Segment`` (servers first, then by name), or ``Node  Address  Status  Tags`` with
``-detailed``. ``-status`` filters by a regular expression on the status word; when nothing
is left the verb prints nothing and exits 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from appliance.cli.flags import CliParser, UsageError, command, expect_args, out
from appliance.cli.format import columnize
from appliance.cli.http_client import add_http_flags, client_from_args

USAGE = "cairn members [options]"
DESCRIPTION = """\
Lists the members of the cluster as known to the agent, with their state.
A member that has failed or left stays listed for a while before it is reaped.
Exits 2 when no member matches."""

STATUS_NAMES = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}

STANDARD_HEADER = ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
DETAILED_HEADER = ["Node", "Address", "Status", "Tags"]


def status_name(status: Any) -> str:
    if isinstance(status, str):
        return status
    return STATUS_NAMES.get(int(status or 0), "none")


def member_address(member: Mapping[str, Any]) -> str:
    addr = str(member.get("Addr", ""))
    port = member.get("Port", 0)
    if ":" in addr and not addr.startswith("["):
        addr = f"[{addr}]"
    return f"{addr}:{port}"


def is_server(member: Mapping[str, Any]) -> bool:
    return (member.get("Tags") or {}).get("role") == "consul"


def sort_members(members: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Servers first, then by name."""
    return sorted(members, key=lambda m: (0 if is_server(m) else 1, str(m.get("Name", ""))))


def standard_row(member: Mapping[str, Any]) -> list[str]:
    tags = member.get("Tags") or {}
    server = is_server(member)
    build = str(tags.get("build", "")).split(":", 1)[0]
    if server:
        segment = "<all>"
    else:
        segment = tags.get("segment", "") or "<default>"
    return [
        str(member.get("Name", "")),
        member_address(member),
        status_name(member.get("Status", 0)),
        "server" if server else "client",
        build,
        str(tags.get("vsn", "")),
        str(tags.get("dc", "")),
        "default",
        segment,
    ]


def detailed_row(member: Mapping[str, Any]) -> list[str]:
    tags = member.get("Tags") or {}
    return [
        str(member.get("Name", "")),
        member_address(member),
        status_name(member.get("Status", 0)),
        ",".join(f"{k}={tags[k]}" for k in sorted(tags)),
    ]


def format_members(members: Iterable[Mapping[str, Any]], *, detailed: bool = False, status: str = ".*") -> str | None:
    """The table for ``members``; None when no member matches ``status``."""
    try:
        status_re = re.compile(status)
    except re.error as exc:
        raise UsageError(f"Failed to compile status regexp: {exc}") from None
    chosen = [m for m in sort_members(members) if status_re.search(status_name(m.get("Status", 0)))]
    if not chosen:
        return None
    if detailed:
        rows = [DETAILED_HEADER] + [detailed_row(m) for m in chosen]
    else:
        rows = [STANDARD_HEADER] + [standard_row(m) for m in chosen]
    return columnize(rows)


def build_parser() -> CliParser:
    p = CliParser("cairn members", USAGE, DESCRIPTION)
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-detailed", "--detailed", dest="detailed", action="store_true",
                   help="Show every gossip tag of each member instead of the standard columns.")
    g.add_argument("-status", "--status", dest="status", default=".*", metavar="<regexp>",
                   help="Only list members whose status matches this regular expression.")
    g.add_argument("-wan", "--wan", dest="wan", action="store_true",
                   help="List the WAN pool (servers in every datacenter) instead of the LAN pool.")
    g.add_argument("-segment", "--segment", dest="segment", default="", metavar="<name>",
                   help="Only list members of this network segment.")
    return p


@command
def run(argv: list[str]) -> int:
    args = build_parser().parse(argv)
    expect_args(args.args, 0, 0)
    client = client_from_args(args)
    params: list[tuple[str, str]] = []
    if args.wan:
        params.append(("wan", "1"))
    if args.segment:
        params.append(("segment", args.segment))
    members = client.get_json("/v1/agent/members", params) or []
    table = format_members(members, detailed=args.detailed, status=args.status)
    if table is None:
        return 2
    out(table)
    return 0
