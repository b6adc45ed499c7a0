"""``cairn intention create|delete|get|list|match|check``: Connect intentions, as Consul's verbs.

* ``create [-allow|-deny] [-replace] [-meta k=v] [-description d] SRC DST``: ``Created: web => db
  (allow)``; without -replace an existing intention is an error, with it it is updated.
* ``delete SRC DST`` or ``delete ID``: ``Intention deleted.``
* ``get SRC DST`` or ``get ID``: the intention as aligned ``Name: value`` lines.
* ``list``: ID, Source, Action, Destination, Precedence columns (exit 2 when there are none).
* ``match [-source|-destination] NAME``: one ``src => dst (action)`` line per match, in order.
* ``check SRC DST``: ``Allowed`` (exit 0) or ``Denied`` (exit 1); errors exit 2.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from appliance.cli.flags import ApiError, CliError, CliExit, CliParser, command, err, out, run_subcommand
from appliance.cli.format import columnize
from appliance.cli.http_client import HTTPClient, add_http_flags, client_from_args, quote_path

HELP = """\
Usage: cairn intention <subcommand> [options] [args]

  Creates, reads and checks the intentions that say which services may connect to
  which over the service mesh.

    Deny web to db:         cairn intention create -deny web db
    Is web allowed to db?   cairn intention check web db
    Remove it:              cairn intention delete web db

Subcommands:
    check     Check whether a connection between two services is allowed
    create    Create intentions for service connections
    delete    Delete an intention
    get       Show information about an intention
    list      List intentions
    match     Show intentions that match a source or destination
"""
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _string(ixn: dict[str, Any]) -> str:
    return f"{ixn['SourceName']} => {ixn['DestinationName']} ({ixn.get('Action') or ''})"


def _parser(sub: str, usage: str, text: str) -> CliParser:
    p = CliParser(f"cairn intention {sub}", usage, text)
    add_http_flags(p)
    return p


def _exact(client: HTTPClient, source: str, dest: str) -> dict[str, Any] | None:
    resp = client.get("/v1/connect/intentions/exact", {"source": source, "destination": dest}, allow_404=True)
    return None if resp.status == 404 else resp.json()


def create(argv: list[str]) -> int:
    p = _parser("create", "cairn intention create [options] SRC DST",
                "Creates an intention from SRC to DST (allow unless -deny).")
    g = p.add_argument_group("Command Options")
    g.add_argument("-allow", "--allow", dest="allow", action="store_true", help="Allow the connection (default).")
    g.add_argument("-deny", "--deny", dest="deny", action="store_true", help="Deny the connection.")
    g.add_argument("-replace", "--replace", dest="replace", action="store_true",
                   help="Replace an existing intention with the same source and destination.")
    g.add_argument("-description", "--description", dest="description", default="", metavar="<text>",
                   help="A description of the intention.")
    g.add_argument("-meta", "--meta", dest="meta", action="append", default=[], metavar="<key=value>",
                   help="Metadata to set on the intention, key=value (repeatable).")
    args = p.parse(argv)
    if args.allow and args.deny:
        raise CliError("Only one of -allow or -deny may be specified.")
    if len(args.args) != 2:
        raise CliError("Error: Must specify two arguments: source and destination")
    source, dest = args.args
    meta = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"Error: -meta must be key=value, not {item!r}")
        meta[key] = value
    ixn: dict[str, Any] = {"SourceName": source, "DestinationName": dest, "SourceType": "consul",
                           "Action": "deny" if args.deny else "allow", "Description": args.description,
                           "Meta": meta}
    client = client_from_args(args)
    try:
        if args.replace:
            client.put("/v1/connect/intentions/exact", {"source": source, "destination": dest},
                       json.dumps(ixn).encode(), content_type="application/json")
        else:
            client.request("POST", "/v1/connect/intentions", None, json.dumps(ixn).encode(),
                           content_type="application/json")
    except ApiError as exc:
        raise CliError(f'Error creating intention "{_string(ixn)}": {exc}') from None
    out(f"Created: {_string(ixn)}")
    return 0


def _target(client: HTTPClient, argv: list[str]) -> dict[str, Any]:
    """The intention named by `SRC DST` or by `ID`."""
    if len(argv) == 1 and _UUID.match(argv[0]):
        return dict(client.get_json(f"/v1/connect/intentions/{quote_path(argv[0])}"))
    if len(argv) == 1:
        raise CliError("Error: an intention is named by its ID or by SRC DST")
    found = _exact(client, argv[0], argv[1])
    if found is None:
        raise CliError(f"Intention with source {argv[0]!r} and destination {argv[1]!r} not found.")
    return found


def delete(argv: list[str]) -> int:
    p = _parser("delete", "cairn intention delete [options] (SRC DST | ID)", "Deletes an intention.")
    args = p.parse(argv)
    if len(args.args) not in (1, 2):
        raise CliError("command requires exactly 1 or 2 arguments")
    client = client_from_args(args)
    try:
        if len(args.args) == 2:
            client.delete("/v1/connect/intentions/exact", {"source": args.args[0], "destination": args.args[1]})
        else:
            client.delete(f"/v1/connect/intentions/{quote_path(args.args[0])}")
    except ApiError as exc:
        raise CliError(f"Error deleting the intention: {exc}") from None
    out("Intention deleted.")
    return 0


def _time(stamp: str) -> str:
    """Go's RFC850 layout in local time: Monday, 02-Jan-06 15:04:05 MST."""
    when = datetime.fromisoformat(stamp.rstrip("Z")[:26] + "+00:00").astimezone()
    return when.strftime("%A, %d-%b-%y %H:%M:%S ") + (when.strftime("%Z") or "UTC")


def get(argv: list[str]) -> int:
    p = _parser("get", "cairn intention get [options] (SRC DST | ID)", "Shows an intention.")
    args = p.parse(argv)
    if len(args.args) not in (1, 2):
        raise CliError("command requires exactly 1 or 2 arguments")
    try:
        ixn = _target(client_from_args(args), args.args)
    except ApiError as exc:
        raise CliError(f"Error reading the intention: {exc}") from None
    rows = [["Source:", ixn["SourceName"]], ["Destination:", ixn["DestinationName"]]]
    if ixn.get("Action"):
        rows.append(["Action:", ixn["Action"]])
    if ixn.get("ID"):
        rows.append(["ID:", ixn["ID"]])
    if ixn.get("Description"):
        rows.append(["Description:", ixn["Description"]])
    rows += [[f"Meta[{k}]:", v] for k, v in sorted((ixn.get("Meta") or {}).items())]
    if ixn.get("CreatedAt"):
        rows.append(["Created At:", _time(ixn["CreatedAt"])])
    out(columnize(rows, glue=" "))
    if ixn.get("Permissions"):
        out()
        out("Permissions:")
        out(json.dumps(ixn["Permissions"], indent="  "))
    return 0


def list_(argv: list[str]) -> int:
    p = _parser("list", "cairn intention list [options]", "Lists every intention, by precedence.")
    args = p.parse(argv)
    try:
        found = client_from_args(args).get_json("/v1/connect/intentions", server=True) or []
    except ApiError as exc:
        raise CliError(f"Error listing intentions: {exc}") from None
    if not found:
        err("There are no intentions.")
        raise CliExit(2)
    rows = [["ID", "Source", "Action", "Destination", "Precedence"]]
    rows += [[x.get("ID", ""), x["SourceName"], x.get("Action", ""), x["DestinationName"], str(x["Precedence"])]
             for x in found]
    out(columnize(rows))
    return 0


def match(argv: list[str]) -> int:
    p = _parser("match", "cairn intention match [options] NAME",
                "Shows the intentions that match NAME as a destination (or -source), in evaluation order.")
    g = p.add_argument_group("Command Options")
    g.add_argument("-source", "--source", dest="source", action="store_true", help="Match by source.")
    g.add_argument("-destination", "--destination", dest="destination", action="store_true",
                   help="Match by destination (the default).")
    args = p.parse(argv)
    if args.source and args.destination:
        raise CliError("Error: only one of -source or -destination may be specified")
    if len(args.args) != 1:
        raise CliError("Error: command requires exactly one argument: src or dst")
    by, name = ("source" if args.source else "destination"), args.args[0]
    try:
        found = client_from_args(args).get_json("/v1/connect/intentions/match", {"by": by, "name": name},
                                                server=True)
    except ApiError as exc:
        raise CliError(f"Error matching the intention: {exc}") from None
    for ixn in (found or {}).get(name) or ():
        out(_string(ixn))
    return 0


def check(argv: list[str]) -> int:
    p = _parser("check", "cairn intention check [options] SRC DST",
                "Checks whether SRC may connect to DST: Allowed (exit 0) or Denied (exit 1).")
    args = p.parse(argv)
    if len(args.args) != 2:
        err("Error: command requires exactly two arguments: src and dst")
        raise CliExit(2)
    try:
        found = client_from_args(args).get_json("/v1/connect/intentions/check",
                                                {"source": args.args[0], "destination": args.args[1]}, server=True)
    except ApiError as exc:
        err(f"Error checking the connection: {exc}")
        raise CliExit(2) from None
    if found and found.get("Allowed"):
        out("Allowed")
        return 0
    out("Denied")
    return 1


SUBCOMMANDS = {"create": create, "delete": delete, "get": get, "list": list_, "match": match, "check": check}


@command
def run(argv: list[str]) -> int:
    return run_subcommand("intention", argv, HELP, SUBCOMMANDS)
