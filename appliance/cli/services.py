"""``cairn services register|deregister``: manage this agent's local services.

``register`` takes the service from flags (``-name -id -address -port -tag -meta``) or from
files holding a service definition in JSON or HCL (``{"service": {...}}`` or
``{"services": [...]}``, as in a config directory) and sends each to
PUT /v1/agent/service/register. A file's definition is sent with the keys it was written with:
the agent's register endpoint reads both snake_case and PascalCase keys, as Consul's does.

``deregister`` takes ``-id`` or the same files (the ID is the definition's ``id``, else its
``name``) and calls PUT /v1/agent/service/deregister/<id>.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from appliance.cli.flags import CliError, CliParser, UsageError, command, err, out, run_subcommand
from appliance.cli.http_client import ApiError, add_http_flags, client_from_args, quote_path

HELP = """\
Usage: cairn services <subcommand> [options] [args]

  Registers and deregisters services on the local agent. A service registered
  here belongs to this agent, which keeps it in the catalog (anti-entropy).

    Register from flags:   cairn services register -name=web -port=8080 -tag=v1
    Register from a file:  cairn services register web.json
    Deregister:            cairn services deregister -id=web

Subcommands:
    deregister    Deregister services with the local agent
    register      Register services with the local agent

For help on a subcommand run: cairn services <subcommand> -h
"""

# ------------------------------------------------------------------------------------------
# reading definition files


def parse_definition_text(text: str, name: str = "") -> Any:
    """A definition file's text as data: JSON by extension or content, else HCL."""
    lower = name.lower()
    if lower.endswith(".json") or (not lower.endswith(".hcl") and text.lstrip().startswith(("{", "["))):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CliError(f"Error parsing {name or 'service definition'}: {exc}") from None
    from appliance.config import ConfigError
    from appliance.config.loader import parse_text

    try:
        return parse_text(text, "hcl", name or "service definition")
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _get_ci(m: Mapping[str, Any], *names: str) -> Any:
    """A key looked up case-insensitively (Go's JSON decoding does the same)."""
    wanted = {n.lower() for n in names}
    for k, v in m.items():
        if isinstance(k, str) and k.lower() in wanted:
            return v
    return None


def services_from_data(data: Any, source: str = "") -> list[dict[str, Any]]:
    """``{"service": {...}}`` / ``{"services": [...]}`` -> list of service mappings."""
    where = f" in {source}" if source else ""
    if not isinstance(data, Mapping):
        raise CliError(f"Error: expected a JSON object with a \"service\" or \"services\" key{where}")
    found: list[dict[str, Any]] = []
    single = _get_ci(data, "service")
    if single is not None:
        found.extend(single if isinstance(single, list) else [single])
    many = _get_ci(data, "services")
    if many is not None:
        found.extend(many if isinstance(many, list) else [many])
    if not found:
        raise CliError(f"Error: no service definition found{where} (expected \"service\" or \"services\")")
    for svc in found:
        if not isinstance(svc, Mapping):
            raise CliError(f"Error: a service definition must be an object{where}")
    return [dict(s) for s in found]


def load_definition_files(paths: Iterable[str]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for path in paths:
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
        except OSError as exc:
            raise CliError(f"Error reading {path}: {exc.strerror or exc}") from None
        result.extend(services_from_data(parse_definition_text(text, os.path.basename(path)), path))
    return result


def service_name(svc: Mapping[str, Any]) -> str:
    return str(_get_ci(svc, "name", "service") or "")


def service_id(svc: Mapping[str, Any]) -> str:
    return str(_get_ci(svc, "id", "serviceid", "service_id") or service_name(svc))


def parse_meta(values: Iterable[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise UsageError(f"Error parsing -meta: expected key=value, got {v!r}")
        meta[key] = value
    return meta


def registration_from_flags(
    name: str, sid: str, address: str, port: int, tags: Iterable[str], meta: Iterable[str]
) -> dict[str, Any]:
    reg: dict[str, Any] = {"Name": name}
    if sid:
        reg["ID"] = sid
    if address:
        reg["Address"] = address
    if port:
        reg["Port"] = port
    tag_list = list(tags)
    if tag_list:
        reg["Tags"] = tag_list
    meta_map = parse_meta(meta)
    if meta_map:
        reg["Meta"] = meta_map
    return reg


# ------------------------------------------------------------------------------------------
# verbs


def register(argv: list[str]) -> int:
    p = CliParser("cairn services register", "cairn services register [options] [FILE...]",
                  "Registers services with the local agent, from flags or from definition files\n"
                  "(JSON or HCL, the same format as a service in a config directory).")
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-name", "--name", dest="name", default="", metavar="<name>", help="Service name.")
    g.add_argument("-id", "--id", dest="id", default="", metavar="<id>",
                   help="Service ID; unique on this agent. Defaults to the name.")
    g.add_argument("-address", "--address", dest="address", default="", metavar="<addr>",
                   help="Service address; empty means the node's address.")
    g.add_argument("-port", "--port", dest="port", type=int, default=0, metavar="<port>", help="Service port.")
    g.add_argument("-tag", "--tag", dest="tag", action="append", default=[], metavar="<value>",
                   help="A tag; repeat for several.")
    g.add_argument("-meta", "--meta", dest="meta", action="append", default=[], metavar="<key=value>",
                   help="A metadata pair; repeat for several.")
    args = p.parse(argv)
    flags_given = bool(args.name or args.id or args.address or args.port or args.tag or args.meta)
    if args.args and flags_given:
        raise UsageError("Error: service flags and definition files cannot be given together")
    if args.args:
        regs = load_definition_files(args.args)
    elif args.name:
        regs = [registration_from_flags(args.name, args.id, args.address, args.port, args.tag, args.meta)]
    else:
        raise UsageError("Error: give -name or at least one service definition file")
    client = client_from_args(args)
    for reg in regs:
        name = service_name(reg)
        body = json.dumps(reg).encode()
        try:
            client.put("/v1/agent/service/register", None, body, content_type="application/json")
        except ApiError as exc:
            err(f'Error registering service "{name}": {exc}')
            return 1
        out(f"Registered service: {name}")
    return 0


def deregister(argv: list[str]) -> int:
    p = CliParser("cairn services deregister", "cairn services deregister [options] [FILE...]",
                  "Deregisters services from the local agent, by -id or by the IDs in definition files.")
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-id", "--id", dest="id", default="", metavar="<id>", help="ID of the service to remove.")
    args = p.parse(argv)
    if args.args and args.id:
        raise UsageError("Error: -id and definition files cannot be given together")
    if args.args:
        ids = [service_id(s) for s in load_definition_files(args.args)]
    elif args.id:
        ids = [args.id]
    else:
        raise UsageError("Error: give -id or at least one service definition file")
    client = client_from_args(args)
    for sid in ids:
        try:
            client.put(f"/v1/agent/service/deregister/{quote_path(sid)}")
        except ApiError as exc:
            err(f'Error deregistering service "{sid}": {exc}')
            return 1
        out(f"Deregistered service: {sid}")
    return 0


SUBCOMMANDS = {"register": register, "deregister": deregister}


@command
def run(argv: list[str]) -> int:
    return run_subcommand("services", argv, HELP, SUBCOMMANDS)
