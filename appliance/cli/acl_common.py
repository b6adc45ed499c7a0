"""Helpers the `cairn acl` commands share: flags, output, calls, ID prefixes, links."""

from __future__ import annotations

import json
import sys
from typing import Any

from appliance.cli import acl_format as fmt
from appliance.cli.flags import CliError, CliParser, UsageError, out
from appliance.cli.http_client import ApiError, HTTPClient, add_http_flags, client_from_args


def parser(name: str, usage: str, description: str, *, show: bool = True) -> CliParser:
    p = CliParser(f"cairn acl {name}", f"cairn acl {usage}", description)
    add_http_flags(p)
    if show:
        p.flag("format", default="pretty", metavar="<string>", help='Output format: "pretty" or "json".')
        p.flag("meta", action="store_true", help="Show the hash and the Raft indexes.")
    return p


def show(args: Any, value: Any, pretty: str) -> None:
    if args.format == "json":
        out(fmt.as_json(value))
    elif args.format == "pretty":
        out(pretty)
    else:
        raise UsageError(f"Invalid format: {args.format}")


def read_value(text: str) -> str:
    """A flag value, ``@file`` or ``-`` for stdin (Consul's helpers.LoadDataSource)."""
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise CliError(f"Failed to read file: {exc.strerror or exc}") from None
    return text


def call(client: HTTPClient, method: str, path: str, body: Any = None, failure: str = "") -> Any:
    try:
        data = None if body is None else json.dumps(body).encode()
        resp = client.request(method, path, None, data) if data is not None else client.request(method, path)
    except ApiError as exc:
        raise CliError(f"{failure}: {exc}" if failure else str(exc)) from None
    return resp.json() if resp.body else None


def resolve_id(client: HTTPClient, kind: str, partial: str) -> str:
    """A policy's or role's ID from a unique prefix of it (builtin names for the management policy)."""
    if kind == "policy" and partial == "anonymous":
        return partial
    listing = call(client, "GET", "/v1/acl/policies" if kind == "policy" else "/v1/acl/roles")
    found = [x["ID"] for x in listing or [] if x["ID"].startswith(partial)]
    if len(found) != 1:
        raise CliError(f"Error determining {kind} ID: " + (f"No such {kind} ID with prefix: {partial}" if not found
                                                          else f"Ambiguous {kind} ID prefix: {partial}"))
    return found[0]


def links(client: HTTPClient, kind: str, ids: list[str], names: list[str]) -> list[dict[str, str]]:
    return [{"ID": resolve_id(client, kind, i)} for i in ids] + [{"Name": n} for n in names]


def identities(services: list[str], nodes: list[str]) -> dict[str, Any]:
    out_: dict[str, Any] = {}
    if services:
        out_["ServiceIdentities"] = []
        for spec in services:
            name, _, dcs = spec.partition(":")
            ident: dict[str, Any] = {"ServiceName": name}
            if dcs:
                ident["Datacenters"] = [d.strip() for d in dcs.split(",") if d.strip()]
            out_["ServiceIdentities"].append(ident)
    if nodes:
        out_["NodeIdentities"] = []
        for spec in nodes:
            name, sep, dc = spec.partition(":")
            if not sep or not dc:
                raise CliError(f"Malformed -node-identity argument: {spec!r}")
            out_["NodeIdentities"].append({"NodeName": name, "Datacenter": dc})
    return out_


def link_flags(p: CliParser, roles: bool = True) -> None:
    p.flag("policy-id", action="append", default=[], metavar="<string>", help="ID (or unique prefix) of a policy.")
    p.flag("policy-name", action="append", default=[], metavar="<string>", help="Name of a policy.")
    if roles:
        p.flag("role-id", action="append", default=[], metavar="<string>", help="ID (or unique prefix) of a role.")
        p.flag("role-name", action="append", default=[], metavar="<string>", help="Name of a role.")
    p.flag("service-identity", action="append", default=[], metavar="<string>",
           help="NAME or NAME:DC1,DC2: a service identity.")
    p.flag("node-identity", action="append", default=[], metavar="<string>", help="NAME:DC: a node identity.")
    p.flag("templated-policy", action="append", default=[], metavar="<string>", help="A templated policy's name.")
    p.flag("var", action="append", default=[], metavar="<string>", help="name:VALUE for -templated-policy.")


def linked(client: HTTPClient, args: Any, roles: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"Policies": links(client, "policy", args.policy_id, args.policy_name)}
    if roles:
        body["Roles"] = links(client, "role", args.role_id, args.role_name)
    body.update(identities(args.service_identity, args.node_identity))
    if args.templated_policy:
        variables = {k.capitalize(): v for k, _, v in (x.partition(":") for x in args.var)}
        body["TemplatedPolicies"] = [{"TemplateName": t, **({"TemplateVariables": variables} if variables else {})}
                                     for t in args.templated_policy]
    return body


def indented(title: str, text: str) -> str:
    """One entry of a pretty list: its title, then its fields indented three spaces."""
    return f"{title}:\n" + "\n".join("   " + line for line in text.splitlines())


def lister(name: str, path: str, what: str, title: str, render: Any, query: str = "") -> Any:
    """A `<kind> list` command: GET `path` and show each entry under its `title` field."""
    plural = what[:-1] + "ies" if what.endswith("y") else what + "s"

    def run(argv: list[str]) -> int:
        p = parser(f"{name} list", f"{name} list [options]", f"Lists {plural}.")
        if query:
            p.flag(query, default="", metavar="<string>", help=f"Only the {plural} of this auth {query}.")
        args = p.parse(argv)
        target = path
        if query and getattr(args, query):
            target += f"?authmethod={getattr(args, query)}"
        items = call(client_from_args(args), "GET", target, None, f"Failed to retrieve the {what} list")
        show(args, items, "\n".join(indented(x[title], render(x, args.meta)) for x in items or []))
        return 0
    return run
