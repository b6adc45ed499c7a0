"""/v1/health/*: node, checks, state and service, all blocking (reference/consul-api.md §4.3)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.state import watchkeys
from appliance.http.encoding import json_response
from appliance.http.query import (
    blocking,
    compiled_filter,
    meta_matches,
    near_sorted,
    node_meta_filter,
    parse_bool_param,
)
from appliance.http.routing import path_tail
from appliance.state.views import all_passing, check_service_nodes, tags_match


async def node(request: web.Request) -> web.Response:
    store = request.app["agent"].store
    name = path_tail(request, "/v1/health/node/")
    keep = compiled_filter(request, "health_checks")
    key = watchkeys.node(name)

    def render() -> list[Any]:
        return [c for c in store.node_checks(name) if keep is None or keep(c)]

    body, headers = await blocking(request, index=lambda: store.index_of(key), render=render, keys=(key,),
                                   effective_consistency=True)
    return json_response(request, body, headers=headers)


async def checks(request: web.Request) -> web.Response:
    store = request.app["agent"].store
    name = path_tail(request, "/v1/health/checks/")
    keep = compiled_filter(request, "health_checks")
    want_meta = node_meta_filter(request)
    key = watchkeys.service(name)

    def render() -> list[Any]:
        out = []
        for node_rec, svc in store.service_instances(name):
            if not meta_matches(node_rec["Meta"], want_meta):
                continue
            out.extend(c for c in store.node_checks(node_rec["Node"]) if c["ServiceID"] == svc["ID"])
        return [c for c in out if keep is None or keep(c)]

    body, headers = await blocking(request, index=lambda: store.index_of(key), render=render, keys=(key,),
                                   effective_consistency=True)
    return json_response(request, body, headers=headers)


async def state(request: web.Request) -> web.Response:
    store = request.app["agent"].store
    wanted = path_tail(request, "/v1/health/state/")
    keep = compiled_filter(request, "health_checks")
    want_meta = node_meta_filter(request)

    def render() -> list[Any]:
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
    body, headers = await blocking(request, index=lambda: store.index_of(*keys), render=render, keys=keys,
                                   effective_consistency=True)
    return json_response(request, body, headers=headers)


async def service(request: web.Request) -> web.Response:
    store = request.app["agent"].store
    name = path_tail(request, "/v1/health/service/")
    tags = request.query.getall("tag", [])
    passing = parse_bool_param(request, "passing")
    want_meta = node_meta_filter(request)
    keep = compiled_filter(request, "health_service")
    key = watchkeys.service(name)

    def render() -> list[Any]:
        out = []
        for csn in check_service_nodes(store, name):
            if tags and not tags_match(csn["Service"], tags):
                continue
            if want_meta and not meta_matches(csn["Node"]["Meta"], want_meta):
                continue
            if passing and not all_passing(csn["Checks"]):
                continue
            if keep is None or keep(csn):
                out.append(csn)
        return out

    body, headers = await blocking(request, index=lambda: store.index_of(key), render=render, keys=(key,),
                                   effective_consistency=True)
    headers["X-Consul-Query-Backend"] = "blocking-query"
    body = near_sorted(request, body, lambda csn: csn["Node"]["Node"])
    return json_response(request, body, headers=headers)


ROUTES = [
    ("GET", "/v1/health/node/", node),
    ("GET", "/v1/health/checks/", checks),
    ("GET", "/v1/health/state/", state),
    ("GET", "/v1/health/service/", service),
]
