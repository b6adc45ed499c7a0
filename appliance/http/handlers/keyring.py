"""/v1/operator/keyring: list, install, use and remove gossip encryption keys (Consul's shapes).

* `GET` -> one entry per pool: the WAN pool first, then the LAN pool of this datacenter and of
  every other datacenter the WAN pool knows, as Consul's Internal.KeyringOperation gathers them:
  `[{"WAN": true, "Datacenter": "dc1", "Segment": "", "Messages": {}, "Keys": {"<b64>": 3},
  "PrimaryKeys": {"<b64>": 3}, "NumNodes": 3}, {"WAN": false, "Datacenter": "dc1", ...}, ...]`:
  how many members of the pool hold each key and use it as primary.
* `POST` (install), `PUT` (use), `DELETE` (remove) with the body `{"Key": "<b64>"}` -> 200 and
  no body, after the operation ran on all those pools.

Where: a client agent hands the whole request to a server of its datacenter (Consul's agent
makes the same RPC). A server runs the operation on its WAN pool and its LAN pool, and carries
the request to one server of each other datacenter, marked (`SCOPE_HEADER`) so that server runs
it on its own LAN pool only and answers with its entry and its errors. `?local-only` (list
requests only) keeps to this datacenter's LAN pool. A datacenter that cannot be reached fails the
request with the forwarder's text, as Consul's global RPC does.

Each pool runs the operation as Serf does, with its internal key queries
(appliance/gossip/key_manager.py): every alive member applies it and answers, `relay-factor`
(0 to 5) members relay each answer too. When a member reports a failure, or does not answer
before the query's timeout, the answer is 500 with Consul's multi-error text, for example::

    2 errors occurred:
    \t* dc1 (LAN) error: 1/3 nodes reported failure
    \t* node1: Removing the primary key is not allowed

(`WAN error: ...` for the WAN pool).
"""

from __future__ import annotations

import json
from typing import Any

from appliance.api.structs import KEYRING_REQUEST
from appliance.federation.forward import Exchange, ForwardError
from appliance.gossip.driver import multi_error
from appliance.gossip.keyring import KeyringError
from appliance.gossip.messages import MAX_RELAY_FACTOR
from appliance.http.context import HTTPContext
from appliance.http.encoding import decode_body, read_json
from appliance.http.errors import HTTPError
from appliance.http.query import parse_bool_param
from appliance.http.remote_dc import HOP_HEADERS, MAX_FORWARDED_BODY, on_server
from appliance.http.values import Answer, Request, json_answer

OPS = {"GET": "list", "POST": "install", "PUT": "use", "DELETE": "remove"}
SCOPE_HEADER = "X-Cairn-Keyring-Scope"  # "lan": a server of another datacenter asks for its LAN pool only


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
    if not ctx.config.server:
        return await on_server(req, ctx)  # Consul's agent: the Internal.KeyringOperation RPC
    forwarded = req.headers.get(SCOPE_HEADER, "").lower() == "lan"
    lan_only = local_only or forwarded
    datacenter = ctx.config.datacenter
    answers: list[dict[str, Any]] = []
    errors: list[str] = []
    for wan in (False,) if lan_only else (True, False):  # Consul: the WAN pool (servers), then the LAN pool
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
    if forwarded:
        return json_answer(req, {"Responses": answers, "Errors": errors})
    if not lan_only:
        for dc in sorted(set(await ctx.federation.datacenters()) - {datacenter}):
            remote_answers, remote_errors = await _other_datacenter(req, ctx, dc)
            answers += remote_answers
            errors += remote_errors
    if errors:
        raise HTTPError(500, multi_error(errors))
    if op == "list":
        return json_answer(req, answers)
    return Answer()


async def _other_datacenter(req: Request, ctx: HTTPContext, dc: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The same request run on the LAN pool of datacenter `dc` by one of its servers."""
    headers = [(k, v) for k, v in req.headers.items()
               if k.lower() not in HOP_HEADERS and k.lower() != SCOPE_HEADER.lower()]
    query = [(k, v) for k, v in req.query.items() if k != "dc"]
    exchange = Exchange(req.method, req.raw_path, query, [*headers, (SCOPE_HEADER, "lan")],
                        req.body[:MAX_FORWARDED_BODY] if req.method != "GET" else b"")
    try:
        answer = await ctx.federation.request(dc, exchange)
    except ForwardError as err:
        raise HTTPError(500, str(err)) from None
    if answer.status != 200:
        raise HTTPError(answer.status, answer.body.decode("utf-8", "replace"))
    try:
        body = json.loads(answer.body)
        return list(body["Responses"]), [str(e) for e in body["Errors"]]
    except (ValueError, KeyError, TypeError):
        raise HTTPError(500, f"malformed keyring answer from datacenter {dc}") from None
