"""``cairn keyring``: list, install, use and remove gossip encryption keys across the cluster.

Exactly one action per call, as Consul's ``keyring`` command:

* ``-list``: GET /v1/operator/keyring, then per pool (``WAN:`` first on a server, then
  ``dc1 (LAN):``) one line per key, ``  <key> [<members holding it>/<members>]``;
  ``-list-primary`` counts primary keys instead;
* ``-install KEY`` (POST), ``-use KEY`` (PUT), ``-remove KEY`` (DELETE) with ``{"Key": KEY}``.

Each prints a ``==> `` progress line first. When any member reports a failure or does not
answer, the agent's multi-error text is printed as ``error: ...`` and the exit code is 1. A
rotation is: ``-install NEW``, ``-use NEW``, ``-remove OLD``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from appliance.cli.flags import CliError, CliParser, UsageError, command, out
from appliance.cli.http_client import ApiError, add_http_flags, client_from_args

DESCRIPTION = """\
Manages encryption keys used for gossip messages. Gossip encryption is
optional. When enabled, this command may be used to examine active encryption
keys in the cluster, add new keys, and remove old ones. When combined, this
functionality provides the ability to perform key rotation cluster-wide,
without disrupting the cluster.

All variations of the keyring command return 0 if all nodes reply and there
are no errors. If any node fails to reply or reports failure, the exit code
will be 1."""


def format_response(response: Mapping[str, Any], keys: Mapping[str, int]) -> str:
    """One pool's block of ``-list`` output."""
    pool = "WAN" if response.get("WAN") else f"{response.get('Datacenter', '')} (LAN)"
    if response.get("Segment"):
        pool += f" [{response['Segment']}]"
    lines = ["", f"{pool}:"]
    for node, message in sorted((response.get("Messages") or {}).items()):
        lines.append(f"  ===> {node}: {message}")
    total = response.get("NumNodes", 0)
    for key, num in sorted(keys.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {key} [{num}/{total}]")
    return "\n".join(lines)


def build_parser() -> CliParser:
    p = CliParser("cairn keyring", "cairn keyring [options]", DESCRIPTION)
    add_http_flags(p, server=False)
    g = p.add_argument_group("Command Options")
    g.add_argument("-install", "--install", dest="install", default="", metavar="<key>",
                   help="Install a new encryption key. This will broadcast the new key to all members in the cluster.")
    g.add_argument("-use", "--use", dest="use", default="", metavar="<key>",
                   help="Change the primary encryption key, which is used to encrypt messages. The key must "
                        "already be installed before this operation can succeed.")
    g.add_argument("-remove", "--remove", dest="remove", default="", metavar="<key>",
                   help="Remove the given key from the cluster. This operation may only be performed on keys "
                        "which are not currently the primary key.")
    g.add_argument("-list", "--list", dest="list", action="store_true",
                   help="List all keys currently in use within the cluster.")
    g.add_argument("-list-primary", "--list-primary", dest="list_primary", action="store_true",
                   help="List all primary keys currently in use within the cluster.")
    g.add_argument("-relay-factor", "--relay-factor", dest="relay_factor", default=0, type=int, metavar="<int>",
                   help="Each member also relays its answer through this many other random members, "
                        "so answers survive a lossy path. 0 to 5, default 0.")
    g.add_argument("-local-only", "--local-only", dest="local_only", action="store_true",
                   help="List the local datacenter's LAN pool only (no WAN traffic). List only.")
    return p


@command
def run(argv: list[str]) -> int:
    p = build_parser()
    args = p.parse(argv)
    if args.args:
        raise UsageError(f"Too many arguments (expected 0, got {len(args.args)})")
    actions = sum([bool(args.list), bool(args.list_primary), bool(args.install), bool(args.use), bool(args.remove)])
    if actions == 0:
        raise UsageError(p.format_help().rstrip())
    if actions > 1:
        raise UsageError("Only a single action is allowed")
    if not 0 <= args.relay_factor <= 5:
        raise UsageError("Error parsing relay factor: Relay factor must be in range: [0, 5]")
    if args.local_only and not args.list:
        raise UsageError("Error validating local-only: local-only can only be set for list requests")
    client = client_from_args(args)
    params = [("relay-factor", str(args.relay_factor))] if args.relay_factor else None
    try:
        if args.list or args.list_primary:
            out("==> Gathering installed primary encryption keys..." if args.list_primary
                else "==> Gathering installed encryption keys...")
            list_params = list(params or []) + ([("local-only", "true")] if args.local_only else [])
            responses = client.get_json("/v1/operator/keyring", list_params or None) or []
            for response in responses:
                out(format_response(response, response.get("PrimaryKeys" if args.list_primary else "Keys") or {}))
            return 0
        for flag, method, text in ((args.install, "POST", "Installing new gossip encryption key..."),
                                   (args.use, "PUT", "Changing primary gossip encryption key..."),
                                   (args.remove, "DELETE", "Removing gossip encryption key...")):
            if flag:
                out(f"==> {text}")
                client.request(method, "/v1/operator/keyring", params, json.dumps({"Key": flag}).encode(),
                               content_type="application/json")
        return 0
    except ApiError as exc:
        raise CliError(f"error: {exc}") from None
