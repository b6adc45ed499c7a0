"""``cairn event``: fire a user event to every agent of the datacenter (PUT /v1/event/fire/:name).

Checks the flags as Consul does before sending (a name; the filters compile; a tag filter only
with a service filter), then prints ``Event ID: <uuid>``. The optional single argument is the
payload. Agents keep the event only if its filters match them; see ``/v1/event/list``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from appliance.cli.flags import CliError, CliParser, UsageError, command, out
from appliance.cli.http_client import ApiError, add_http_flags, client_from_args

USAGE = "cairn event [options] [payload]"
DESCRIPTION = """\
Dispatches a custom user event across a datacenter. An event must provide a name,
but a payload is optional. Events support filtering using regular expressions on
node name, service, and service tags."""


def build_parser() -> CliParser:
    p = CliParser("cairn event", USAGE, DESCRIPTION)
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-name", "--name", dest="name", default="", metavar="<string>",
                   help="Name of the event (required).")
    add_filter_flags(g)
    return p


def add_filter_flags(g: Any) -> None:
    """-node, -service and -tag: the user event's filters (also `cairn exec`'s)."""
    g.add_argument("-node", "--node", dest="node", default="", metavar="<regexp>",
                   help="Regular expression to filter on node names.")
    g.add_argument("-service", "--service", dest="service", default="", metavar="<regexp>",
                   help="Regular expression to filter on service instances.")
    g.add_argument("-tag", "--tag", dest="tag", default="", metavar="<regexp>",
                   help="Regular expression to filter on service tags. Must be used with -service.")


def _check_regexp(pattern: str, what: str) -> None:
    if pattern:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"Failed to compile {what} filter regexp: {exc}") from None


@command
def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse(argv)
    if not args.name:
        raise UsageError("Event name must be specified")
    _check_regexp(args.node, "node")
    _check_regexp(args.service, "service")
    _check_regexp(args.tag, "tag")
    if args.tag and not args.service:
        raise UsageError("Cannot provide tag filter without service filter.")
    if len(args.args) > 1:
        raise UsageError("Too many command line arguments.\n\n" + parser.format_help())
    payload = args.args[0].encode("utf-8") if args.args else b""
    client = client_from_args(args)
    try:
        client.get_json("/v1/agent/self")
    except ApiError as exc:
        raise CliError(f"Error querying Consul agent: {exc}") from None
    params = [(k, v) for k, v in (("node", args.node), ("service", args.service), ("tag", args.tag)) if v]
    try:
        event = client.put("/v1/event/fire/" + quote(args.name, safe=""), params, body=payload).json()
    except ApiError as exc:
        raise CliError(f"Error firing event: {exc}") from None
    out(f"Event ID: {event['ID']}")
    return 0
