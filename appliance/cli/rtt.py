"""``cairn rtt``: estimated round-trip time between two nodes from their network coordinates.

Reads the LAN coordinates from ``/v1/coordinate/nodes`` (``-wan``: the servers' coordinates from
``/v1/coordinate/datacenters``, names given as ``<node>.<datacenter>``), computes Vivaldi's
distance estimate as Consul does, and prints ``Estimated a <-> b rtt: 1.234 ms (using LAN
coordinates)``. The second node defaults to the agent's own node.
"""

from __future__ import annotations

from typing import Any

from appliance.cli.flags import CliError, CliParser, UsageError, command, out
from appliance.cli.http_client import ApiError, add_http_flags, client_from_args
from appliance.gossip.coordinate import Coordinate, CoordinateError

USAGE = "cairn rtt [options] node1 [node2]"
DESCRIPTION = """\
Estimates the round trip time between two nodes using cairn's network coordinate
model of the cluster. At least one node name is required. If the second node name
isn't given, it is set to the agent's node name. These are the node names as known
to cairn as "cairn members" would show, not IP addresses.

By default, the two nodes are assumed to be nodes in the local datacenter and the
LAN coordinates are used. If the -wan option is given, then the WAN coordinates are
used, and the node names must be suffixed by a period and the datacenter
(for example "myserver.dc1")."""


def build_parser() -> CliParser:
    p = CliParser("cairn rtt", USAGE, DESCRIPTION)
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-wan", "--wan", dest="wan", action="store_true",
                   help="Use WAN coordinates instead of LAN coordinates.")
    return p


def _coord(raw: Any) -> Coordinate | None:
    try:
        return Coordinate.from_json(raw)
    except CoordinateError:
        return None


def estimate_line(node1: str, node2: str, c1: Coordinate, c2: Coordinate, source: str) -> str:
    if not c1.is_compatible_with(c2):
        raise CliError("Coordinates are not compatible (different dimensionality)")
    ms = int(c1.distance_to(c2) * 1e9) / 1e6  # Go's time.Duration truncates to whole nanoseconds
    return f"Estimated {node1} <-> {node2} rtt: {ms:.3f} ms (using {source} coordinates)"


@command
def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse(argv)
    nodes = list(args.args)
    if not 1 <= len(nodes) <= 2:
        raise UsageError("One or two node names must be specified\n\n" + parser.format_help())
    client = client_from_args(args)
    if len(nodes) < 2:
        try:
            config = (client.get_json("/v1/agent/self") or {}).get("Config") or {}
        except ApiError as exc:
            raise CliError(f"Unable to look up agent info: {exc}") from None
        name = config.get("NodeName", "")
        nodes.append(f"{name}.{config.get('Datacenter', '')}" if args.wan else name)
    coords: list[Coordinate | None] = [None, None]
    if args.wan:
        source = "WAN"
        parts = [n.split(".") for n in nodes]
        if any(len(p) != 2 for p in parts):
            raise CliError("Node names must be specified as <node name>.<datacenter> with -wan")
        try:
            dcs = client.get_json("/v1/coordinate/datacenters") or []
        except ApiError as exc:
            raise CliError(f"Error getting coordinates: {exc}") from None
        for dc in dcs:
            for entry in dc.get("Coordinates") or []:
                for i, (node, dc_name) in enumerate(parts):
                    named = entry.get("Node") in (node, f"{node}.{dc_name}")  # WAN names are <node>.<dc>
                    if dc.get("Datacenter") == dc_name and named and coords[i] is None:
                        coords[i] = _coord(entry.get("Coord"))
    else:
        source = "LAN"
        try:
            entries = client.get_json("/v1/coordinate/nodes") or []
        except ApiError as exc:
            raise CliError(f"Error getting coordinates: {exc}") from None
        for entry in entries:
            for i, node in enumerate(nodes):
                if entry.get("Node") == node and coords[i] is None:
                    coords[i] = _coord(entry.get("Coord"))
    a, b = coords
    for i, coord in enumerate((a, b)):
        if coord is None:
            raise CliError(f'Could not find a coordinate for node "{nodes[i]}"')
    assert a is not None and b is not None
    out(estimate_line(nodes[0], nodes[1], a, b, source))
    return 0
