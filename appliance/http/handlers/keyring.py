"""/v1/operator/keyring: list, install, use and remove gossip encryption keys (Consul's shapes).

* `GET` -> `[{"WAN": false, "Datacenter": "dc1", "Segment": "", "Messages": {}, "Keys": {"<b64>": 3},
  "PrimaryKeys": {"<b64>": 3}, "NumNodes": 3}]`: how many members hold each key and use it as
  primary. The operations act on the LAN pool, so there is one entry; a server's WAN pool keeps
  the ring it started with from `encrypt` (`serf/remote.keyring`, appliance/federation/pool.py).
* `POST` (install), `PUT` (use), `DELETE` (remove) with the body `{"Key": "<b64>"}` -> 200 and
  no body.

The agent that receives the request runs the operation on every alive member of the pool over
the gossip port (appliance/gossip/driver.py, `keyring_operation`). When a member reports a
failure, or does not answer, the answer is 500 with Consul's multi-error text, for example::

    2 errors occurred:
    \t* dc1 (LAN) error: 1/3 nodes reported failure
    \t* node1: Removing the primary key is not allowed

`?relay-factor` (0 to 5) and `?local-only` are accepted for compatibility; answers always come
back directly.
"""

from __future__ import annotations

from typing import Any

from appliance.api.structs import KEYRING_REQUEST
from appliance.gossip.driver import multi_error
from appliance.gossip.keyring import KeyringError
from appliance.http.context import HTTPContext
from appliance.http.encoding import decode_body, read_json
from appliance.http.errors import HTTPError
from appliance.http.query import parse_bool_param
from appliance.http.values import Answer, Request, json_answer

OPS = {"GET": "list", "POST": "install", "PUT": "use", "DELETE": "remove"}
MAX_RELAY_FACTOR = 5


def response_json(result: Any, datacenter: str) -> dict[str, Any]:
    return {"WAN": False, "Datacenter": datacenter, "Segment": "", "Messages": dict(result.messages),
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
    if "local-only" in req.query and parse_bool_param(req, "local-only") and op != "list":
        raise HTTPError(400, "Invalid use of local-only: local-only can only be set for list requests")
    datacenter = ctx.config.datacenter
    pool = f"{datacenter} (LAN)"
    try:
        result = await ctx.membership.keyring_operation(op, key)
    except KeyringError as err:
        raise HTTPError(500, multi_error([f"{pool} error: {err}"])) from None
    if result.error:
        errors = [f"{pool} error: {result.error}"]
        errors += [f"{node}: {message}" for node, message in sorted(result.messages.items())]
        raise HTTPError(500, multi_error(errors))
    if op == "list":
        return json_answer(req, [response_json(result, datacenter)])
    return Answer()
