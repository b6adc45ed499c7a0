"""GET /v1/sd/prometheus: the catalog as a Prometheus http_sd endpoint.

How it works
------------
Debian's own Prometheus build has no Consul discovery, but every Prometheus since 2.28 has
`http_sd_configs`: it fetches a URL every `refresh_interval` and expects a JSON array of
`{"targets": [...], "labels": {...}}` groups with `Content-Type: application/json`
(reference/prometheus.md §3). This endpoint serves the catalog in that form, with the same
`__meta_consul_*` labels as consul_sd (sd.targets), so relabel rules carry over.

Query parameters (all optional):

    service=<name>     only this service; repeat for several
    tag=<tag>          only instances with this tag; repeat to require several
    node-meta=<k>:<v>  only instances on nodes with this meta pair; repeatable
    passing            only instances whose checks all pass
    dc=<dc>            the agent's datacenter (another one is Consul's 500 "No path to datacenter")
    index, wait        a blocking query, like the rest of the API (X-Consul-Index in the answer)

The answer depends on the watch keys of the chosen services (`svc:<name>`) or, for the whole
catalog, on `services`, `checks` and `nodes`; appliance.http.query.blocking parks on them and
renders through the agent's render cache, so one catalog index is rendered once however many
scrapers ask, and the encoded bytes are cached with it. Rendering itself reuses the groups of
every service whose own index did not move (sd.targets.GroupCache). Bodies are compact JSON unless
`?pretty` is given (not pretty by default even in -dev: the answer can be megabytes).
"""

from __future__ import annotations

import weakref
from typing import Any

from appliance.http.context import HTTPContext
from appliance.http.encoding import render
from appliance.http.errors import HTTPError
from appliance.http.query import blocking, node_meta_filter, parse_bool_param
from appliance.http.routes import Route
from appliance.http.values import Answer, Request, json_answer
from sd.targets import Filters, GroupCache, target_groups

PATH = "/v1/sd/prometheus"
_caches: weakref.WeakKeyDictionary[Any, GroupCache] = weakref.WeakKeyDictionary()  # store -> its cache


def parse_filters(req: Request, ctx: HTTPContext) -> Filters:
    dc = req.query.get("dc", "")
    if dc and dc != ctx.config.datacenter:
        raise HTTPError(500, "No path to datacenter")
    services = tuple(sorted({s.lower() for s in req.query.getall("service", []) if s}))
    tags = tuple(req.query.getall("tag", []))
    meta = tuple(sorted(node_meta_filter(req).items()))
    return Filters(services=services, tags=tags, node_meta=meta, passing=parse_bool_param(req, "passing"))


async def prometheus_targets(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    filters = parse_filters(req, ctx)
    keys = filters.watch_keys()
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = GroupCache()
    body, headers = await blocking(
        req, ctx,
        index=lambda: store.index_of(*keys),
        render=lambda: target_groups(store, filters, ctx.config.datacenter, cache),
        keys=keys,
    )
    # the sd endpoint is compact unless ?pretty, even in -dev (as before: its own rendering)
    answer = Answer(200, headers, None, "application/json")
    answer.body = render(json_answer(req, body), req, False)
    return answer


ROUTES: list[Route] = [
    Route("GET", PATH, prometheus_targets, "filter:service,node", blocking=True,
          summary="Prometheus http_sd targets from the catalog"),
]


class SDExtension:
    """What the agent mounts: the http_sd route."""

    def __init__(self) -> None:
        self.routes = list(ROUTES)


def mount(api: Any) -> SDExtension:
    """The `cairn.extensions` entry point (appliance never imports sd); needs nothing of `api`."""
    return SDExtension()
