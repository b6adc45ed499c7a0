"""``cairn config write|read|list|delete``: config entries (/v1/config), as Consul's verbs.

* ``write [-cas -modify-index=N] FILE|-``: an entry in HCL or JSON (PascalCase or snake_case keys);
  ``Config entry written: <kind>/<name>`` (with -cas and a changed entry: ``Config entry not
  updated``, exit 1).
* ``read -kind K -name N``: the entry as indented JSON.
* ``list -kind K``: the names of a kind's entries, one per line.
* ``delete -kind K -name N [-cas -modify-index=N]``: ``Config entry deleted: <kind>/<name>``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from appliance.cli.flags import ApiError, CliError, CliParser, UsageError, command, expect_args, out, run_subcommand
from appliance.cli.format import go_json_dumps
from appliance.cli.http_client import add_http_flags, client_from_args, quote_path
from appliance.config.hcl import HCLError, loads

HELP = """\
Usage: cairn config <subcommand> [options] [args]

  Writes, reads, lists and deletes centralized config entries (service-defaults,
  proxy-defaults, service-router, service-splitter, service-resolver, ingress-gateway,
  terminating-gateway, service-intentions, mesh, exported-services).

    Write an entry from a file:  cairn config write web-defaults.hcl
    Read it back:                cairn config read -kind service-defaults -name web
    List a kind:                 cairn config list -kind service-defaults
    Delete it:                   cairn config delete -kind service-defaults -name web

Subcommands:
    delete    Delete a centralized config entry
    list      List centralized config entries of a given kind
    read      Read a centralized config entry
    write     Create or update a centralized config entry
"""


def _kind_name(args: Any, name: bool = True) -> None:
    if not args.kind:
        raise CliError("Must specify the -kind parameter")
    if name and not args.name:
        raise CliError("Must specify the -name parameter")


def _parser(sub: str, usage: str, text: str, name: bool = True, cas: bool = False) -> CliParser:
    p = CliParser(f"cairn config {sub}", usage, text)
    add_http_flags(p)
    g = p.add_argument_group("Command Options")
    if sub != "write":
        g.add_argument("-kind", "--kind", dest="kind", default="", metavar="<kind>", help="The kind of the entry.")
    if name:
        g.add_argument("-name", "--name", dest="name", default="", metavar="<name>", help="The name of the entry.")
    if cas:
        g.add_argument("-cas", "--cas", dest="cas", action="store_true",
                       help="Only change the entry if its ModifyIndex is -modify-index (0: only create).")
        g.add_argument("-modify-index", "--modify-index", dest="modify_index", type=int, default=0, metavar="<n>",
                       help="The ModifyIndex for -cas.")
    return p


def parse_entry(text: str) -> dict[str, Any]:
    """An entry from a file's text: JSON, else HCL."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = loads(text)
        except HCLError as exc:
            raise CliError(f"Failed to decode config entry input: {exc}") from None
    if not isinstance(value, dict):
        raise CliError("Failed to decode config entry input: the file must hold one object")
    return value


def _label(entry: dict[str, Any]) -> str:
    kind = entry.get("Kind", entry.get("kind", ""))
    name = entry.get("Name", entry.get("name", ""))
    return f"{kind}/{name}"


def write(argv: list[str]) -> int:
    p = _parser("write", "cairn config write [options] FILE", "Creates or updates a config entry from a JSON "
                "or HCL file (- reads stdin).", name=False, cas=True)
    args = p.parse(argv)
    if len(args.args) != 1:
        raise UsageError("Must provide exactly one positional argument to specify the config entry to write")
    path = args.args[0]
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"Failed to read config entry input: {exc}") from None
    entry = parse_entry(text)
    params = {"cas": str(args.modify_index)} if args.cas else None
    try:
        resp = client_from_args(args).put("/v1/config", params, json.dumps(entry).encode(),
                                          content_type="application/json")
    except ApiError as exc:
        raise CliError(f"Error writing config entry {_label(entry)}: {exc}") from None
    if resp.json() is not True:
        raise CliError(f"Config entry not updated: {_label(entry)}")
    out(f"Config entry written: {_label(entry)}")
    return 0


def read(argv: list[str]) -> int:
    p = _parser("read", "cairn config read -kind <kind> -name <name> [options]", "Reads a config entry.")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    _kind_name(args)
    try:
        entry = client_from_args(args).get_json(f"/v1/config/{quote_path(args.kind)}/{quote_path(args.name)}",
                                                server=True)
    except ApiError as exc:
        raise CliError(f"Error reading config entry {args.kind}/{args.name}: {exc}") from None
    out(go_json_dumps(entry, indent="    "))
    return 0


def list_(argv: list[str]) -> int:
    p = _parser("list", "cairn config list -kind <kind> [options]", "Lists the names of a kind's config entries.",
                name=False)
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    _kind_name(args, name=False)
    try:
        found = client_from_args(args).get_json(f"/v1/config/{quote_path(args.kind)}", server=True)
    except ApiError as exc:
        raise CliError(f"Error listing config entries for kind {args.kind}: {exc}") from None
    for name in sorted(e.get("Name", "") for e in found or ()):
        out(name)
    return 0


def delete(argv: list[str]) -> int:
    p = _parser("delete", "cairn config delete -kind <kind> -name <name> [options]", "Deletes a config entry.",
                cas=True)
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    _kind_name(args)
    params = {"cas": str(args.modify_index)} if args.cas else None
    label = f"{args.kind}/{args.name}"
    try:
        resp = client_from_args(args).delete(f"/v1/config/{quote_path(args.kind)}/{quote_path(args.name)}", params)
    except ApiError as exc:
        raise CliError(f"Error deleting config entry {label}: {exc}") from None
    if args.cas and resp.json() is not True:
        raise CliError(f"Config entry not deleted: {label}")
    out(f"Config entry deleted: {label}")
    return 0


SUBCOMMANDS = {"write": write, "read": read, "list": list_, "delete": delete}


@command
def run(argv: list[str]) -> int:
    return run_subcommand("config", argv, HELP, SUBCOMMANDS)
