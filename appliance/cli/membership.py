"""``cairn join`` and ``cairn force-leave``: change the gossip pool through the local agent.

* ``join ADDR...``: PUT /v1/agent/join/<addr> for each address ("host" or "host:port"; without a
  port the agent's own serf_lan port, 8301). Prints ``Successfully joined cluster by contacting
  N nodes.``; each failed address prints ``Error joining address '<addr>': <error>`` on stderr,
  and when none succeeded ``Failed to join any nodes.`` and exit 1. ``-wan`` joins the WAN pool
  (servers only; the default port is then the agent's serf_wan port, 8302).
* ``force-leave [-prune] NODE``: PUT /v1/agent/force-leave/<node>: a failed member becomes
  ``left`` everywhere (the leader then deregisters it from the catalog); ``-prune`` forgets it at
  once instead of keeping it listed until it is reaped. Prints nothing on success.
"""

from __future__ import annotations

from appliance.cli.flags import CliParser, UsageError, command, err, out
from appliance.cli.http_client import ApiError, add_http_flags, client_from_args, quote_path

JOIN_DESCRIPTION = """\
Tells a running agent to join the cluster by contacting the agents at the given
addresses ("host" or "host:port"; the default port is the agent's serf_lan port,
8301). One address of any agent already in the cluster is enough."""

FORCE_LEAVE_DESCRIPTION = """\
Forces a member of the cluster to enter the "left" state. A node that failed
(rather than leaving gracefully) stays "failed" and keeps its catalog entries,
with a critical serfHealth check, until it is reaped after reconnect_timeout
(72h). force-leave marks it left now, so the leader removes it from the catalog.
If the node is in fact still alive it rejoins on its own."""


@command
def run_join(argv: list[str]) -> int:
    p = CliParser("cairn join", "cairn join [options] address ...", JOIN_DESCRIPTION)
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-wan", "--wan", dest="wan", action="store_true",
                   help="Join the WAN pool (servers of every datacenter; the agent must be a server).")
    args = p.parse(argv)
    if not args.args:
        raise UsageError("At least one address to join must be specified.")
    client = client_from_args(args)
    joins = 0
    for address in args.args:
        try:
            client.put("/v1/agent/join/" + quote_path(address), [("wan", "1")] if args.wan else None)
        except ApiError as exc:
            err(f"Error joining address '{address}': {exc}")
        else:
            joins += 1
    if joins == 0:
        err("Failed to join any nodes.")
        return 1
    out(f"Successfully joined cluster by contacting {joins} nodes.")
    return 0


@command
def run_force_leave(argv: list[str]) -> int:
    p = CliParser("cairn force-leave", "cairn force-leave [options] name", FORCE_LEAVE_DESCRIPTION)
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-prune", "--prune", dest="prune", action="store_true",
                   help="Remove the member from the member list at once instead of keeping it "
                        "listed as left until it is reaped.")
    g.add_argument("-wan", "--wan", dest="wan", action="store_true",
                   help="Force the member (named <node>.<datacenter>) out of the WAN pool.")
    args = p.parse(argv)
    if len(args.args) != 1:
        raise UsageError("A single node name must be specified to force leave.")
    params = [("prune", "1")] if args.prune else []
    if args.wan:
        params.append(("wan", "1"))
    try:
        client_from_args(args).put("/v1/agent/force-leave/" + quote_path(args.args[0]), params or None)
    except ApiError as exc:
        err(f"Error force leaving: {exc}")
        return 1
    return 0
