"""/v1/query: prepared queries (reference/consul-api.md §4.13, coordination.md §6).

    POST   /v1/query                      create: {"ID": "<uuid>"}
    GET    /v1/query                      every query (blocking)
    GET    /v1/query/<id>                 one query by ID, as a list (blocking); 404 Query not found
    PUT    /v1/query/<id>                 replace it (the body's ID, if any, is ignored)
    DELETE /v1/query/<id>
    GET    /v1/query/<id or name>/execute ?near= ?limit=   run it (templates by name)
    GET    /v1/query/<id or name>/explain the query it resolves to, rendered: {"Query": ...}

Definitions are decoded and checked here (appliance/queries/definition.py), with Consul's texts
as 500s; what depends on the store (a name already taken, an unknown session) is checked when the
`prepared_query` command applies (appliance/state/queries.py). cairn has no ACL enforcement yet,
so a query's Token is shown as stored, as Consul shows it when ACLs are off.

Execute resolves the query from the store (appliance/queries/execute.py), runs it over the
service's instances here, and when none is left fails over: the first `Failover.NearestN`
other datacenters by round trip time (the WAN pool's order), then the listed `Datacenters`
that are known and not tried yet, each asked for its `/v1/health/service/<service>` answer
through the federation forwarder and filtered here by the same rules; the first datacenter with
instances answers. `Failovers` counts the datacenters tried. A datacenter that cannot be reached
is skipped (logged). DNS `.query` lookups run through the same handler (`run_for_dns`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from appliance.coordinates import sort_near
from appliance.federation.forward import Exchange, ForwardError
from appliance.http.context import HTTPContext
from appliance.http.encoding import decode_body, read_json
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import QueryOptions, blocking, meta_headers, parse_bool_param, query_options, read_point
from appliance.http.values import Answer, Request, json_answer
from appliance.queries import definition, execute
from appliance.queries.template import TemplateError
from appliance.state import watchkeys
from appliance.state.fsm import CommandError
from appliance.state.queries import all_queries
from appliance.state.views import check_service_nodes

PREFIX = "/v1/query/"


def _decode(req: Request) -> dict[str, Any]:
    body = read_json(req)
    if body is None:
        raise HTTPError(400, "Request decode failed: EOF")
    return definition.record(decode_body(body, definition.PREPARED_QUERY))


async def _propose(ctx: HTTPContext, cmd: dict[str, Any]) -> Any:
    try:
        return await ctx.consensus.propose(cmd)
    except CommandError as err:
        raise HTTPError(500, str(err)) from None


def _new_id(ctx: HTTPContext) -> str:
    while True:
        qid = str(uuid.UUID(int=ctx.rng.getrandbits(128), version=4))
        if qid not in ctx.store.prepared_queries:
            return qid


async def create(req: Request, ctx: HTTPContext) -> Answer:
    query = _decode(req)
    if query["ID"]:
        raise HTTPError(500, "ID must be empty when creating a new prepared query")
    try:
        definition.check(query)
    except definition.QueryError as err:
        raise HTTPError(500, str(err)) from None
    query["ID"] = _new_id(ctx)
    await _propose(ctx, {"Type": "prepared_query", "Op": "set", "Query": query})
    return json_answer(req, {"ID": query["ID"]})


async def query_list(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(watchkeys.PREPARED_QUERIES),
                                   keys=(watchkeys.PREPARED_QUERIES,), render=lambda: all_queries(store))
    return json_answer(req, body, headers=headers)


def _split(req: Request) -> tuple[str, str]:
    """(id or name, "execute" | "explain" | "") of a /v1/query/<...> path."""
    tail = path_tail(req, PREFIX)
    for action in ("execute", "explain"):
        if tail.endswith("/" + action):
            return tail[: -len(action) - 1], action
    return tail, ""


async def _existing(ctx: HTTPContext, qid: str) -> None:
    await read_point(ctx.consensus, QueryOptions())
    if qid not in ctx.store.prepared_queries:
        raise HTTPError(500, f"Cannot modify non-existent prepared query: '{qid}'")


async def update(req: Request, ctx: HTTPContext) -> Answer:
    qid, action = _split(req)
    if action or not qid:
        raise HTTPError(405, f"Method {req.method} not allowed")
    query = _decode(req)
    query["ID"] = qid
    await _existing(ctx, qid)
    try:
        definition.check(query)
    except definition.QueryError as err:
        raise HTTPError(500, str(err)) from None
    await _propose(ctx, {"Type": "prepared_query", "Op": "set", "Query": query})
    return Answer(200, None, b"")


async def delete(req: Request, ctx: HTTPContext) -> Answer:
    qid, action = _split(req)
    if action or not qid:
        raise HTTPError(405, f"Method {req.method} not allowed")
    await _existing(ctx, qid)
    await _propose(ctx, {"Type": "prepared_query", "Op": "delete", "ID": qid})
    return Answer(200, None, b"")


async def read(req: Request, ctx: HTTPContext) -> Answer:
    """GET /v1/query/<id>, /execute and /explain."""
    qid, action = _split(req)
    if action == "execute":
        return await execute_query(req, ctx, qid)
    if action == "explain":
        return await explain(req, ctx, qid)
    store = ctx.store

    def render() -> list[Any] | None:
        query = store.prepared_queries.get(qid)
        return [query] if query is not None else None

    body, headers = await blocking(req, ctx, index=lambda: store.index_of(watchkeys.PREPARED_QUERIES),
                                   keys=(watchkeys.PREPARED_QUERIES,), render=render)
    if body is None:
        return Answer.text(404, execute.NOT_FOUND, headers=headers)
    return json_answer(req, body, headers=headers)


async def _resolved(req: Request, ctx: HTTPContext, id_or_name: str) -> tuple[dict[str, Any], dict[str, str]]:
    opts = query_options(req)
    await read_point(ctx.consensus, opts)
    try:
        query = execute.resolve(ctx.store, id_or_name)
    except TemplateError as err:
        raise HTTPError(500, str(err)) from None
    headers = meta_headers(ctx.consensus, ctx.store.index_of(watchkeys.PREPARED_QUERIES), opts, False)
    if query is None:
        raise HTTPError(404, execute.NOT_FOUND)
    return query, headers


async def explain(req: Request, ctx: HTTPContext, id_or_name: str) -> Answer:
    query, headers = await _resolved(req, ctx, id_or_name)
    return json_answer(req, {"Query": query}, headers=headers)


def _limit(req: Request) -> int:
    text = req.query.get("limit", "")
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()):
        raise HTTPError(400, "Bad request: invalid limit")
    return int(text)


async def _remote_instances(ctx: HTTPContext, dc: str, service: str, connect: bool = False
                            ) -> list[dict[str, Any]] | None:
    """Another datacenter's instances of a service (its /v1/health/service answer, or
    /v1/health/connect with `connect`); None if it cannot be asked."""
    path = "/v1/health/connect/" if connect else "/v1/health/service/"
    try:
        answer = await ctx.federation.request(dc, Exchange("GET", path + quote(service, safe=""), [("stale", "")]))
    except ForwardError as err:
        ctx.log.debug("Skipping datacenter for prepared query failover: datacenter=%s error=%s", dc, err)
        return None
    if answer.status != 200:
        ctx.log.debug("Prepared query failover: datacenter=%s status=%d", dc, answer.status)
        return None
    try:
        found = json.loads(answer.body)
    except ValueError:
        return None
    return found if isinstance(found, list) else None


async def _failover_targets(ctx: HTTPContext, query: dict[str, Any]) -> list[str]:
    failover = query["Service"].get("Failover") or {}
    nearest = int(failover.get("NearestN") or 0)
    listed = [dc for dc in failover.get("Datacenters") or () if dc]
    if not nearest and not listed:
        return []
    try:
        known = await ctx.federation.datacenters()
    except ForwardError as err:
        ctx.log.warning("Prepared query failover: cannot list datacenters: %s", err)
        return []
    here = ctx.config.datacenter
    others = [dc for dc in known if dc != here]
    targets = others[:nearest]
    for dc in listed:
        if dc == here or dc in targets:
            continue
        if dc not in known:
            ctx.log.debug("Skipping unknown datacenter in prepared query: datacenter=%s", dc)
            continue
        targets.append(dc)
    return targets


async def execute_query(req: Request, ctx: HTTPContext, id_or_name: str) -> Answer:
    query, headers = await _resolved(req, ctx, id_or_name)
    store, svc = ctx.store, query["Service"]
    limit = _limit(req)
    near = execute.source_node(store, req.query.get("near", "") or svc.get("Near") or "", ctx.config.node_name,
                               _client_ip(req))
    # ?connect=true: the service's Connect-capable instances (its proxies, native instances)
    connect = parse_bool_param(req, "connect")
    here = check_service_nodes(store, svc["Service"], connect=connect)
    nodes = execute.order(execute.select(query, here), ctx.rng, near,
                          limit, lambda items: sort_near(store, items, near, ctx.config.node_name, _node_name))
    key = watchkeys.connect(svc["Service"]) if connect else watchkeys.service(svc["Service"])
    headers["X-Consul-Index"] = str(store.index_of(watchkeys.PREPARED_QUERIES, key))
    datacenter, failovers = ctx.config.datacenter, 0
    if not nodes:
        for dc in await _failover_targets(ctx, query):
            failovers += 1
            found = await _remote_instances(ctx, dc, svc["Service"], connect)
            if found:
                nodes = execute.order(execute.select(query, found), ctx.rng, "", limit)
                if nodes:
                    datacenter = dc
                    break
    return json_answer(req, execute.response(query, nodes, datacenter, failovers), headers=headers)


def _node_name(csn: dict[str, Any]) -> str:
    return str(csn["Node"]["Node"])


def _client_ip(req: Request) -> str:
    remote = req.remote or ""
    if remote.startswith("["):
        return remote[1:].partition("]")[0]
    return remote.rpartition(":")[0] if remote.count(":") == 1 else remote


async def run_for_dns(dispatch: Callable[[Request], Awaitable[Answer]], name: str, dc: str,
                      source_ip: str) -> dict[str, Any] | None:
    """Execute a query for a DNS `.query` lookup through the HTTP dispatch (so `?dc=` is carried
    to that datacenter as any request is): Consul's execute response, None for no such query.
    Raises LookupError with the text of any other failure."""
    query = [("stale", "")] + ([("dc", dc)] if dc else [])
    target = f"{PREFIX}{quote(name, safe='')}/execute?" + "&".join(f"{k}={quote(v)}" if v else k for k, v in query)
    answer = await dispatch(Request("GET", target, remote=source_ip))
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise LookupError(bytes(answer.body or b"").decode("utf-8", "replace"))
    if answer.body is None and answer.has_json:
        return dict(answer.json)
    return dict(json.loads(bytes(answer.body or b"{}")))
