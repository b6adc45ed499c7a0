"""``cairn maint``: node and service maintenance mode.

``-enable``/``-disable`` call PUT /v1/agent/maintenance or
PUT /v1/agent/service/maintenance/<id> (with ``-service``); the agent registers or removes a
critical check (``_node_maintenance`` or ``_service_maintenance:<id>``) that takes the node or
service out of DNS and ``?passing`` answers. Without flags the verb lists what is in
maintenance, read from those checks in GET /v1/agent/checks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from appliance.cli.flags import ApiError, CliError, CliParser, UsageError, command, expect_args, out
from appliance.cli.http_client import add_http_flags, client_from_args, quote_path

NODE_MAINT_CHECK = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"

DESCRIPTION = """\
Puts the node or one of its services into maintenance mode, or takes it out.
In maintenance the node (or service) is reported critical and is left out of
DNS answers and healthy-only queries. Without flags, lists what is in maintenance.

  cairn maint -enable -reason="kernel upgrade"
  cairn maint -enable -service=web-1
  cairn maint -disable"""


def format_maint_listing(checks: Iterable[Mapping[str, Any]]) -> str:
    """The listing for ``cairn maint`` without flags: node first, then services by ID.

    Each block ends with an empty line, as Consul prints it.
    """
    node_blocks = []
    service_blocks = []
    for c in checks:
        check_id = str(c.get("CheckID", ""))
        if check_id == NODE_MAINT_CHECK:
            node_blocks.append(f"Node:\n  Name:   {c.get('Node', '')}\n  Reason: {c.get('Notes', '')}\n\n")
        elif check_id.startswith(SERVICE_MAINT_PREFIX):
            sid = str(c.get("ServiceID") or check_id[len(SERVICE_MAINT_PREFIX):])
            service_blocks.append((sid, f"Service:\n  ID:     {sid}\n  Reason: {c.get('Notes', '')}\n\n"))
    service_blocks.sort(key=lambda b: b[0])
    return "".join(node_blocks) + "".join(text for _, text in service_blocks)


def build_parser() -> CliParser:
    p = CliParser("cairn maint", "cairn maint [options]", DESCRIPTION)
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-enable", "--enable", dest="enable", action="store_true", help="Enable maintenance mode.")
    g.add_argument("-disable", "--disable", dest="disable", action="store_true", help="Disable maintenance mode.")
    g.add_argument("-reason", "--reason", dest="reason", default="", metavar="<text>",
                   help="Why maintenance is enabled; shown in the check's notes.")
    g.add_argument("-service", "--service", dest="service", default="", metavar="<service-id>",
                   help="Act on this local service instead of the whole node.")
    return p


@command
def run(argv: list[str]) -> int:
    args = build_parser().parse(argv)
    expect_args(args.args, 0, 0)
    if args.enable and args.disable:
        raise UsageError("Only one of -enable or -disable may be provided")
    if not args.enable and args.reason:
        raise UsageError("Reason may only be provided with -enable")
    if not args.enable and not args.disable and args.service:
        raise UsageError("Service requires either -enable or -disable")
    client = client_from_args(args)

    if not args.enable and not args.disable:
        checks = client.get_json("/v1/agent/checks") or {}
        values = checks.values() if isinstance(checks, Mapping) else checks
        text = format_maint_listing(values)
        if text:
            sys.stdout.write(text)
        return 0

    params = [("enable", "true" if args.enable else "false")]
    if args.enable and args.reason:
        params.append(("reason", args.reason))
    verb = "enabling" if args.enable else "disabling"
    state = "enabled" if args.enable else "disabled"
    what, path = "node", "/v1/agent/maintenance"
    if args.service:
        what, path = "service", f"/v1/agent/service/maintenance/{quote_path(args.service)}"
    try:
        client.put(path, params)
    except ApiError as err:  # Consul's words: "Error enabling service maintenance: Unexpected ..."
        raise CliError(f"Error {verb} {what} maintenance: {err}") from None
    if args.service:
        out(f'Service maintenance is now {state} for "{args.service}"')
    else:
        out(f"Node maintenance is now {state}")
    return 0
