"""``cairn catalog datacenters|nodes|services``: read the replicated catalog.

* ``datacenters``: GET /v1/catalog/datacenters, one name a line.
* ``nodes``: GET /v1/catalog/nodes (or /v1/catalog/service/<name> with ``-service``), a
  columnized table ``Node  ID  Address  DC`` (ID shortened to its first dash group), or with
  ``-detailed`` the full ID plus ``TaggedAddresses`` and ``Meta`` as sorted ``k=v`` lists.
* ``services``: GET /v1/catalog/services (or /v1/catalog/node/<name> with ``-node``), names
  sorted one a line, or with ``-tags`` a tabwriter layout ``name<pad>tag1,tag2``.

An empty answer prints Consul's "try expanding your search" line on stderr and exits 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from appliance.cli.flags import CliParser, UsageError, command, err, expect_args, out, run_subcommand
from appliance.cli.format import columnize, format_kv_map, tabwrite
from appliance.cli.http_client import HTTPClient, add_http_flags, client_from_args, quote_path

USAGE = "cairn catalog <subcommand> [options] [args]"
HELP = """\
Usage: cairn catalog <subcommand> [options] [args]

  Reads the catalog: the datacenters, nodes and services known to the servers.

    List datacenters:        cairn catalog datacenters
    List nodes:              cairn catalog nodes
    List nodes of a service: cairn catalog nodes -service=web
    List services:           cairn catalog services
    List services with tags: cairn catalog services -tags

Subcommands:
    datacenters    Lists all known datacenters
    nodes          Lists all nodes in the given datacenter
    services       Lists all registered services in a datacenter

For help on a subcommand run: cairn catalog <subcommand> -h
"""

NO_NODES = "No nodes match the given query - try expanding your search."
NO_SERVICES = "No services match the given query - try expanding your search."


# ------------------------------------------------------------------------------------------
# formatting


def short_node_id(node_id: str) -> str:
    """The first dash group of a node ID (``40e4a748-2192-...`` -> ``40e4a748``)."""
    return (node_id or "").split("-", 1)[0]


def format_nodes(nodes: Iterable[Mapping[str, Any]], *, detailed: bool = False) -> str:
    if detailed:
        rows = [["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]]
        for n in nodes:
            rows.append([
                str(n.get("Node", "")),
                str(n.get("ID", "") or ""),
                str(n.get("Address", "")),
                str(n.get("Datacenter", "")),
                format_kv_map(n.get("TaggedAddresses")),
                format_kv_map(n.get("Meta")),
            ])  # fmt: skip
    else:
        rows = [["Node", "ID", "Address", "DC"]]
        for n in nodes:
            rows.append([
                str(n.get("Node", "")),
                short_node_id(str(n.get("ID", "") or "")),
                str(n.get("Address", "")),
                str(n.get("Datacenter", "")),
            ])  # fmt: skip
    return columnize(rows)


def nodes_from_service_nodes(service_nodes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Catalog ServiceNode entries -> distinct Node objects, sorted by node name."""
    by_name: dict[str, dict[str, Any]] = {}
    for sn in service_nodes:
        name = str(sn.get("Node", ""))
        if name in by_name:
            continue
        by_name[name] = {
            "ID": sn.get("ID", ""),
            "Node": name,
            "Address": sn.get("Address", ""),
            "Datacenter": sn.get("Datacenter", ""),
            "TaggedAddresses": sn.get("TaggedAddresses"),
            "Meta": sn.get("NodeMeta"),
        }
    return [by_name[k] for k in sorted(by_name)]


def format_services(services: Mapping[str, Iterable[str] | None], *, tags: bool = False) -> str:
    names = sorted(services)
    if not tags:
        return "\n".join(names)
    rows = [[name, ",".join(sorted(services[name] or []))] for name in names]
    return tabwrite(rows)


def parse_node_meta(values: Iterable[str]) -> list[tuple[str, str]]:
    """``-node-meta key=value`` flags -> ``node-meta=key:value`` query parameters."""
    params = []
    for v in values:
        key, sep, value = v.partition("=")
        if not sep:
            key, sep, value = v.partition(":")
        if not key:
            raise UsageError(f"Error parsing -node-meta: missing key in {v!r}")
        params.append(("node-meta", f"{key}:{value}"))
    return params


# ------------------------------------------------------------------------------------------
# verbs


def datacenters(argv: list[str]) -> int:
    p = CliParser("cairn catalog datacenters", "cairn catalog datacenters [options]",
                  "Lists the datacenters known to the agent, nearest first.")
    add_http_flags(p, server=False)
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    client = client_from_args(args)
    dcs = client.get_json("/v1/catalog/datacenters") or []
    if not dcs:
        err("No datacenters found")
        return 1
    for dc in dcs:
        out(str(dc))
    return 0


def nodes(argv: list[str]) -> int:
    p = CliParser("cairn catalog nodes", "cairn catalog nodes [options]",
                  "Lists the nodes in the catalog of a datacenter, sorted by name.")
    add_http_flags(p)
    g = p.add_argument_group("Command Options")
    g.add_argument("-detailed", "--detailed", dest="detailed", action="store_true",
                   help="Show the full node ID, tagged addresses and metadata.")
    g.add_argument("-service", "--service", dest="service", default="", metavar="<name>",
                   help="Only list nodes that provide this service.")
    g.add_argument("-near", "--near", dest="near", default="", metavar="<node>",
                   help="Sort by round-trip time from this node ('_agent' for this agent).")
    g.add_argument("-filter", "--filter", dest="filter", default="", metavar="<expression>",
                   help="Filter expression over the nodes (Consul's filter language).")
    g.add_argument("-node-meta", "--node-meta", dest="node_meta", action="append", default=[],
                   metavar="<key=value>", help="Only match nodes with this metadata; repeatable.")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    client = client_from_args(args)
    params = parse_node_meta(args.node_meta)
    if args.near:
        params.append(("near", args.near))
    if args.filter:
        params.append(("filter", args.filter))
    if args.service:
        found = client.get_json(f"/v1/catalog/service/{quote_path(args.service)}", params, server=True) or []
        result = nodes_from_service_nodes(found)
    else:
        result = client.get_json("/v1/catalog/nodes", params, server=True) or []
    if not result:
        err(NO_NODES)
        return 0
    out(format_nodes(result, detailed=args.detailed))
    return 0


def _services_of_node(client: HTTPClient, node: str, params: list[tuple[str, str]]) -> dict[str, list[str]]:
    answer = client.get_json(f"/v1/catalog/node/{quote_path(node)}", params, server=True, allow_404=True)
    if not isinstance(answer, Mapping):
        return {}
    services = answer.get("Services") or {}
    items = services.values() if isinstance(services, Mapping) else services
    merged: dict[str, set[str]] = {}
    for svc in items:
        merged.setdefault(str(svc.get("Service", "")), set()).update(svc.get("Tags") or [])
    return {name: sorted(tags) for name, tags in merged.items()}


def services(argv: list[str]) -> int:
    p = CliParser("cairn catalog services", "cairn catalog services [options]",
                  "Lists the services registered in a datacenter, sorted by name.")
    add_http_flags(p)
    g = p.add_argument_group("Command Options")
    g.add_argument("-tags", "--tags", dest="tags", action="store_true",
                   help="Show each service's tags (the union over its instances).")
    g.add_argument("-node", "--node", dest="node", default="", metavar="<name>",
                   help="Only list the services registered on this node.")
    g.add_argument("-node-meta", "--node-meta", dest="node_meta", action="append", default=[],
                   metavar="<key=value>", help="Only match nodes with this metadata; repeatable.")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    client = client_from_args(args)
    params = parse_node_meta(args.node_meta)
    if args.node:
        result: Mapping[str, Any] = _services_of_node(client, args.node, params)
    else:
        result = client.get_json("/v1/catalog/services", params, server=True) or {}
    if not result:
        err(NO_SERVICES)
        return 0
    out(format_services(result, tags=args.tags))
    return 0


SUBCOMMANDS = {"datacenters": datacenters, "nodes": nodes, "services": services}


@command
def run(argv: list[str]) -> int:
    return run_subcommand("catalog", argv, HELP, SUBCOMMANDS)
