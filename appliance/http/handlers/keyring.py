"""/v1/operator/keyring: list, install, use and remove gossip encryption keys (Consul's shapes).

* `GET` -> one entry per pool, the WAN pool first on a server (as Consul orders them):
  `[{"WAN": true, "Datacenter": "dc1", "Segment": "", "Messages": {}, "Keys": {"<b64>": 3},
  "PrimaryKeys": {"<b64>": 3}, "NumNodes": 3}, {"WAN": false, "Datacenter": "dc1", ...}]`: how
  many members of the pool hold each key and use it as primary. Client agents have no WAN pool.
* `POST` (install), `PUT` (use), `DELETE` (remove) with the body `{"Key": "<b64>"}` -> 200 and
  no body, after the operation ran on both pools.

Each pool runs the operation as Serf does, with its internal key queries
(appliance/gossip/key_manager.py): every alive member applies it and answers, `relay-factor`
(0 to 5) members relay each answer too. When a member reports a failure, or does not answer
before the query's timeout, the answer is 500 with Consul's multi-error text, for example::

    2 errors occurred:
    \t* dc1 (LAN) error: 1/3 nodes reported failure
    \t* node1: Removing the primary key is not allowed

(`WAN error: ...` for the WAN pool). `?local-only` (list requests only) leaves the WAN pool out.
"""

from __future__ import annotations

from typing import Any

from appliance.api.structs import KEYRING_REQUEST
from appliance.gossip.driver import multi_error
from appliance.gossip.keyring import KeyringError
from appliance.gossip.messages import MAX_RELAY_FACTOR
from appliance.http.context import HTTPContext
from appliance.http.encoding import decode_body, read_json
from appliance.http.errors import HTTPError
from appliance.http.query import parse_bool_param
from appliance.http.values import Answer, Request, json_answer

OPS = {"GET": "list", "POST": "install", "PUT": "use", "DELETE": "remove"}


def response_json(result: Any, datacenter: str, wan: bool = False) -> dict[str, Any]:
    return {"WAN": wan, "Datacenter": datacenter, "Segment": "", "Messages": dict(result.messages),
            "Keys": dict(result.keys), "PrimaryKeys": dict(result.primary_keys), "NumNodes": result.num_nodes}


async def keyring(req: Request, ctx: HTTPContext) -> Answer:
    op = OPS[req.method]
    key = ""
    if op != "list":
        key = decode_body(read_json(req, empty={}), KEYRING_REQUEST).get("Key", "")
    relay = req.query.get("relay-factor", "")
    if relay:
        if not relay.lstrip("-").isdigit():
            raise HTTPError(400, f'Error parsing relay factor: strconv.Atoi: parsing "{relay}": invalid syntax')
        if not 0 <= int(relay) <= MAX_RELAY_FACTOR:
            raise HTTPError(400, f"Invalid relay-factor: Relay factor must be in range: [0, {MAX_RELAY_FACTOR}]")
    local_only = "local-only" in req.query and parse_bool_param(req, "local-only")
    if local_only and op != "list":
        raise HTTPError(400, "Invalid use of local-only: local-only can only be set for list requests")
    datacenter = ctx.config.datacenter
    answers: list[dict[str, Any]] = []
    errors: list[str] = []
    for wan in (False,) if local_only else (True, False):  # Consul: the WAN pool (servers), then the LAN pool
        pool = "WAN" if wan else f"{datacenter} (LAN)"
        try:
            result = await ctx.membership.keyring_operation(op, key, int(relay or 0), wan=wan)
        except KeyringError as err:
            errors.append(f"{pool} error: {err}")
            continue
        if result is None:
            continue
        answers.append(response_json(result, datacenter, wan))
        if result.error:
            errors.append(f"{pool} error: {result.error}")
            errors += [f"{node}: {message}" for node, message in sorted(result.messages.items())]
    if errors:
        raise HTTPError(500, multi_error(errors))
    if op == "list":
        return json_answer(req, answers)
    return Answer()
