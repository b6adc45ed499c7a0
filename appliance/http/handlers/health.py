"""/v1/health/*: node, checks, state and service, all blocking (reference/consul-api.md §4.3)."""

from __future__ import annotations

from typing import Any

from appliance.connect import central
from appliance.http.context import HTTPContext
from appliance.http.handlers.peering import peered
from appliance.http.paths import path_tail
from appliance.http.query import (
    blocking,
    compiled_filter,
    meta_matches,
    near_sorted,
    node_meta_filter,
    parse_bool_param,
)
from appliance.http.values import Answer, Request, json_answer
from appliance.state import gateways, watchkeys
from appliance.state.views import all_passing, check_service_nodes, tags_match


async def node(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    peer = peered(req)
    name = path_tail(req, "/v1/health/node/")
    keep = compiled_filter(req, "health_checks")
    key = watchkeys.node(name)

    def render() -> list[Any]:
        if peer:
            return []
        return [c for c in store.node_checks(name) if keep is None or keep(c)]

    body, headers = await blocking(req, ctx, index=lambda: store.index_of(key), render=render, keys=(key,),
                                   effective_consistency=True, replayable=True)
    return json_answer(req, body, headers=headers)


async def checks(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    peer = peered(req)
    name = path_tail(req, "/v1/health/checks/")
    keep = compiled_filter(req, "health_checks")
    want_meta = node_meta_filter(req)
    key = watchkeys.service(name)

    def render() -> list[Any]:
        if peer:
            return []
        out: list[Any] = []
        for node_rec, svc in store.service_instances(name):
            if not meta_matches(node_rec["Meta"], want_meta):
                continue
            out.extend(c for c in store.node_checks(node_rec["Node"]) if c["ServiceID"] == svc["ID"])
        return [c for c in out if keep is None or keep(c)]

    body, headers = await blocking(req, ctx, index=lambda: store.index_of(key), render=render, keys=(key,),
                                   effective_consistency=True, replayable=True)
    return json_answer(req, body, headers=headers)


async def state(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    peer = peered(req)
    wanted = path_tail(req, "/v1/health/state/")
    keep = compiled_filter(req, "health_checks")
    want_meta = node_meta_filter(req)

    def render() -> list[Any]:
        if peer:
            return []
        out = []
        for c in store.iter_checks():
            if wanted != "any" and c["Status"] != wanted:
                continue
            if want_meta and not meta_matches((store.node(c["Node"]) or {}).get("Meta"), want_meta):
                continue
            if keep is None or keep(c):
                out.append(c)
        return out

    keys = (watchkeys.CHECKS, watchkeys.NODES) if want_meta else (watchkeys.CHECKS,)
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(*keys), render=render, keys=keys,
                                   effective_consistency=True, replayable=True)
    return json_answer(req, body, headers=headers)


async def service(req: Request, ctx: HTTPContext) -> Answer:
    return await _check_service_nodes(req, ctx, "/v1/health/service/")


async def connect(req: Request, ctx: HTTPContext) -> Answer:
    """/v1/health/connect/<service>: the proxies for a service and its Connect-native instances,
    with their checks (a sidecar's alias check makes it critical when its app is)."""
    return await _check_service_nodes(req, ctx, "/v1/health/connect/", kind="connect")


async def ingress(req: Request, ctx: HTTPContext) -> Answer:
    """/v1/health/ingress/<service>: the ingress gateways whose config entry exposes the service."""
    return await _check_service_nodes(req, ctx, "/v1/health/ingress/", kind="ingress")


async def _check_service_nodes(req: Request, ctx: HTTPContext, prefix: str, *, kind: str = "service") -> Answer:
    store = ctx.store
    peer = peered(req)
    name = path_tail(req, prefix)
    tags = req.query.getall("tag", [])
    passing = parse_bool_param(req, "passing")
    want_meta = node_meta_filter(req)
    keep = compiled_filter(req, "health_service")
    if kind == "ingress":
        keys = gateways.ingress_keys(store, name)
    else:
        keys = (watchkeys.connect(name) if kind == "connect" else watchkeys.service(name),)
    merged = "merge-central-config" in req.query  # proxies with the central config (appliance/connect/central.py)
    if merged:
        keys = (*keys, *central.KEYS)

    def render() -> list[Any]:
        if peer:
            return []
        out = []
        instances = gateways.ingress_instances(store, name) if kind == "ingress" else None
        for csn in check_service_nodes(store, name, connect=kind == "connect", instances=instances):
            if tags and not tags_match(csn["Service"], tags):
                continue
            if want_meta and not meta_matches(csn["Node"]["Meta"], want_meta):
                continue
            if passing and not all_passing(csn["Checks"]):
                continue
            if merged:
                csn = {**csn, "Service": central.merge(csn["Service"], store.connect.entries)}
            if keep is None or keep(csn):
                out.append(csn)
        return out

    # an ingress gateway's keys are read from the store: they may differ next time
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(*keys), render=render, keys=keys,
                                   effective_consistency=True, replayable=kind != "ingress")
    headers["X-Consul-Query-Backend"] = "blocking-query"
    body = near_sorted(req, ctx, body, lambda csn: csn["Node"]["Node"])
    return json_answer(req, body, headers=headers)
