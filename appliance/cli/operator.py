"""``cairn operator raft|autopilot``: the Raft peer set and autopilot, as Consul's operator verbs.

* ``raft list-peers``: GET /v1/operator/raft/configuration, Consul's columns ``Node  ID  Address
  State  Voter  RaftProtocol  Commit Index  Trails Leader By`` (the leader trails by ``-``, the
  others by ``N commits``, ``1 commit``).
* ``raft remove-peer -id=<id> | -address=<ip:port>``: DELETE /v1/operator/raft/peer.
* ``raft transfer-leader [-id=<id>]``: POST /v1/operator/raft/transfer-leader.
* ``autopilot get-config``: GET /v1/operator/autopilot/configuration as ``Name = value`` lines.
* ``autopilot set-config [-cleanup-dead-servers=bool ...]``: reads the configuration, changes the
  given fields and writes it back with ``?cas=<ModifyIndex>``, so a concurrent change is not lost.
* ``autopilot state``: GET /v1/operator/autopilot/state in Consul's layout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from appliance.cli.flags import CliError, CliParser, UsageError, command, expect_args, out, run_subcommand
from appliance.cli.format import columnize, parse_go_bool
from appliance.cli.http_client import ApiError, add_http_flags, client_from_args
from appliance.config.durations import DurationError, format_duration, parse_duration

HELP = """\
Usage: cairn operator <subcommand> [options]

  Provides cluster-level tools for operators: the Raft peer set and autopilot.
  These commands need operator rights when ACLs are enabled.

Subcommands:
    autopilot    Provides tools for modifying Autopilot configuration
    raft         Provides cluster-level tools for Raft
"""

RAFT_HELP = """\
Usage: cairn operator raft <subcommand> [options]

  Inspects and changes the Raft peer set of the servers.

      List the current Raft peers:      $ cairn operator raft list-peers
      Remove a failed server:           $ cairn operator raft remove-peer -id=<server id>
      Move leadership elsewhere:        $ cairn operator raft transfer-leader

Subcommands:
    list-peers         Display the current Raft peer configuration
    remove-peer        Remove a Cairn server from the Raft configuration
    transfer-leader    Transfer raft leadership to another node
"""

AUTOPILOT_HELP = """\
Usage: cairn operator autopilot <subcommand> [options]

  Reads and changes autopilot: health checking of servers, promotion of new servers to voters
  and cleanup of dead servers.

Subcommands:
    get-config    Display the current Autopilot configuration
    set-config    Modify the current Autopilot configuration
    state         Display the current Autopilot state
"""


# ------------------------------------------------------------------------------------------ raft


def format_peers(conf: Mapping[str, Any]) -> str:
    servers = list(conf.get("Servers") or [])
    leader_index = next((int(s.get("LastIndex") or 0) for s in servers if s.get("Leader")), 0)
    rows = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol", "Commit Index", "Trails Leader By"]]
    for s in servers:
        last = int(s.get("LastIndex") or 0)
        if s.get("Leader"):
            trails = "-"
        else:
            behind = leader_index - last if last <= leader_index else 0
            trails = f"{behind} commit" if behind == 1 else f"{behind} commits"
        rows.append([s.get("Node", ""), s.get("ID", ""), s.get("Address", ""),
                     "leader" if s.get("Leader") else "follower", "true" if s.get("Voter") else "false",
                     s.get("ProtocolVersion") or "<=1", str(last), trails])
    return columnize(rows)


def list_peers(argv: list[str]) -> int:
    p = CliParser("cairn operator raft list-peers", "cairn operator raft list-peers [options]",
                  "Displays the current Raft peer configuration.")
    add_http_flags(p)
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    client = client_from_args(args)
    try:
        conf = client.get_json("/v1/operator/raft/configuration", server=True)
    except ApiError as exc:
        raise CliError(f"Error getting peers: Failed to retrieve raft configuration: {exc}") from None
    out(format_peers(conf or {}))
    return 0


def remove_peer(argv: list[str]) -> int:
    p = CliParser("cairn operator raft remove-peer", "cairn operator raft remove-peer [options]",
                  "Removes the Cairn server with the given -id or -address from the Raft configuration.\n"
                  "Use it for a server that failed and will not come back; a server that is still\n"
                  "running is added again by the leader (stop it with `cairn leave` instead).")
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-address", "--address", dest="address", default="", metavar="<ip:port>",
                   help="The server RPC address of the peer to remove.")
    g.add_argument("-id", "--id", dest="id", default="", metavar="<id>",
                   help="The ID of the peer to remove.")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    if not args.id and not args.address:
        raise CliError("Error removing peer: an address or id is required for the peer to remove")
    if args.id and args.address:
        raise CliError("Error removing peer: cannot give both an address and id")
    client = client_from_args(args)
    params = {"id": args.id} if args.id else {"address": args.address}
    try:
        client.delete("/v1/operator/raft/peer", params)
    except ApiError as exc:
        raise CliError(f"Error removing peer: {exc}") from None
    out(f'Removed peer with id "{args.id}"' if args.id else f'Removed peer with address "{args.address}"')
    return 0


def transfer_leader(argv: list[str]) -> int:
    p = CliParser("cairn operator raft transfer-leader", "cairn operator raft transfer-leader [options]",
                  "Transfers Raft leadership to the server with -id, or to the most up-to-date voter.")
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-id", "--id", dest="id", default="", metavar="<id>",
                   help="The ID of the server to transfer leadership to (default: any voter).")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    client = client_from_args(args)
    try:
        resp = client.request("POST", "/v1/operator/raft/transfer-leader", {"id": args.id} if args.id else None)
    except ApiError as exc:
        raise CliError(f"Error transferring leadership: {exc}") from None
    result = resp.json() or {}
    if not result.get("Success"):
        raise CliError("Error transferring leadership: the leader did not report success")
    out("Success")
    return 0


# ------------------------------------------------------------------------------------------ autopilot

CONFIG_ORDER = ("CleanupDeadServers", "LastContactThreshold", "MaxTrailingLogs", "MinQuorum",
                "ServerStabilizationTime", "RedundancyZoneTag", "DisableUpgradeMigration", "UpgradeVersionTag")


def format_config(conf: Mapping[str, Any]) -> str:
    lines = []
    for key in CONFIG_ORDER:
        value = conf.get(key)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str) and key.endswith("Tag"):
            text = json.dumps(value)
        else:
            text = str(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines)


def get_config(argv: list[str]) -> int:
    p = CliParser("cairn operator autopilot get-config", "cairn operator autopilot get-config [options]",
                  "Displays the current autopilot configuration.")
    add_http_flags(p)
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    conf = client_from_args(args).get_json("/v1/operator/autopilot/configuration", server=True)
    out(format_config(conf or {}))
    return 0


def _duration_flag(name: str, raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return format_duration(parse_duration(raw))
    except DurationError as exc:
        raise UsageError(f'invalid value "{raw}" for flag -{name}: {exc}') from None


def set_config(argv: list[str]) -> int:
    p = CliParser("cairn operator autopilot set-config", "cairn operator autopilot set-config [options]",
                  "Changes the given autopilot settings; the others keep their values.")
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-cleanup-dead-servers", "--cleanup-dead-servers", dest="cleanup", default=None,
                   metavar="<bool>", help="Remove dead servers from the Raft configuration automatically.")
    g.add_argument("-last-contact-threshold", "--last-contact-threshold", dest="last_contact", default=None,
                   metavar="<duration>", help='A server not heard from for longer is unhealthy (e.g. "200ms").')
    g.add_argument("-max-trailing-logs", "--max-trailing-logs", dest="max_trailing", default=None, type=int,
                   metavar="<n>", help="A server trailing the leader by more entries is unhealthy.")
    g.add_argument("-min-quorum", "--min-quorum", dest="min_quorum", default=None, type=int, metavar="<n>",
                   help="Dead-server cleanup never leaves fewer voters than this.")
    g.add_argument("-server-stabilization-time", "--server-stabilization-time", dest="stabilization", default=None,
                   metavar="<duration>", help="How long a new server must be healthy before it becomes a voter.")
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    changes: dict[str, object] = {}  # checked before anything is sent
    if args.cleanup is not None:
        try:
            changes["CleanupDeadServers"] = parse_go_bool(args.cleanup)
        except ValueError:
            raise UsageError(f'invalid boolean value "{args.cleanup}" for -cleanup-dead-servers') from None
    for key, value in (("LastContactThreshold", _duration_flag("last-contact-threshold", args.last_contact)),
                       ("ServerStabilizationTime", _duration_flag("server-stabilization-time", args.stabilization)),
                       ("MaxTrailingLogs", args.max_trailing), ("MinQuorum", args.min_quorum)):
        if value is not None:
            changes[key] = value
    client = client_from_args(args)
    conf = client.get_json("/v1/operator/autopilot/configuration") or {}
    conf.update(changes)
    cas = str(conf.get("ModifyIndex", 0))
    body = json.dumps({k: conf[k] for k in CONFIG_ORDER if k in conf}).encode()
    resp = client.put("/v1/operator/autopilot/configuration", {"cas": cas}, body, content_type="application/json")
    if resp.json() is True:
        out("Configuration updated!")
        return 0
    raise CliError("Configuration could not be atomically updated, please try again")


def format_state(state: Mapping[str, Any]) -> str:
    def yes(v: Any) -> str:
        return "true" if v else "false"

    lines = [f"Healthy:                      {yes(state.get('Healthy'))}",
             f"Failure Tolerance:            {state.get('FailureTolerance', 0)}",
             f"Optimistic Failure Tolerance: {state.get('OptimisticFailureTolerance', 0)}",
             f"Leader:                       {state.get('Leader', '')}",
             "Voters:"]
    lines += [f"   {v}" for v in state.get("Voters") or []]
    lines.append("")
    lines.append("Servers:")
    for sid, s in sorted((state.get("Servers") or {}).items()):
        lines += [f"   {sid}",
                  f"      Name:            {s.get('Name', '')}",
                  f"      Address:         {s.get('Address', '')}",
                  f"      Version:         {s.get('Version', '')}",
                  f"      Status:          {s.get('Status', '')}",
                  f"      Node Status:     {s.get('NodeStatus', '')}",
                  f"      Healthy:         {yes(s.get('Healthy'))}",
                  f"      Last Contact:    {s.get('LastContact', '')}",
                  f"      Last Term:       {s.get('LastTerm', 0)}",
                  f"      Last Index:      {s.get('LastIndex', 0)}",
                  f"      Stable Since:    {s.get('StableSince', '')}",
                  ""]
    return "\n".join(lines).rstrip("\n")


def state(argv: list[str]) -> int:
    p = CliParser("cairn operator autopilot state", "cairn operator autopilot state [options]",
                  "Displays autopilot's view of the servers: health, voters, failure tolerance.")
    add_http_flags(p)
    p.add_argument_group("Command Options").add_argument(
        "-format", "--format", dest="format", default="pretty", choices=("pretty", "json"),
        help='Output format: "pretty" (default) or "json".')
    args = p.parse(argv)
    expect_args(args.args, 0, 0)
    result = client_from_args(args).get_json("/v1/operator/autopilot/state", server=True) or {}
    out(json.dumps(result, indent=4) if args.format == "json" else format_state(result))
    return 0


RAFT = {"list-peers": list_peers, "remove-peer": remove_peer, "transfer-leader": transfer_leader}
AUTOPILOT = {"get-config": get_config, "set-config": set_config, "state": state}


@command
def run_raft(argv: list[str]) -> int:
    return run_subcommand("operator raft", argv, RAFT_HELP, RAFT)


@command
def run_autopilot(argv: list[str]) -> int:
    return run_subcommand("operator autopilot", argv, AUTOPILOT_HELP, AUTOPILOT)


@command
def run(argv: list[str]) -> int:
    return run_subcommand("operator", argv, HELP, {"raft": run_raft, "autopilot": run_autopilot})
