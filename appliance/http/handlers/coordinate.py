"""/v1/coordinate/*: network coordinates (reference/consul-api.md §3.10, §4.9; appliance/coordinates.py).

`nodes` and `node/:node` are blocking reads of the catalog's coordinate table (watch key
`coordinates`), sorted by node name, optionally only one `?segment=`; an unknown node is a 404
with an empty body. `update` validates the body as Consul's Coordinate.Update does and hands it to
the agent's batcher, which writes it to the log within one update period (5 s).
`datacenters` lists every datacenter of the WAN pool, nearest first, with its servers' WAN
coordinates named `<node>.<dc>` (appliance/federation/pool.py). An agent outside the WAN pool
(-dev, serf_wan -1) lists this datacenter with its servers' LAN coordinates (the nodes running the
`consul` service); a client agent asks a server, as Consul's clients do.
"""

from __future__ import annotations

from typing import Any

from appliance.api.structs import COORDINATE_UPDATE
from appliance.coordinates import CoordinateUpdateError, validate_update
from appliance.federation.forward import Exchange, ForwardError
from appliance.http.context import HTTPContext
from appliance.http.encoding import decode_body, decode_json, read_body
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import blocking
from appliance.http.values import Answer, Request, json_answer
from appliance.state import watchkeys

NODE_PREFIX = "/v1/coordinate/node/"
MAX_UPDATE_BYTES = 64 * 1024


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    return {"Node": rec["Node"], "Segment": rec["Segment"], "Coord": rec["Coord"]}


def _segment_filter(req: Request, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if "segment" not in req.query:
        return [_public(r) for r in recs]
    segment = req.query.get("segment", "")
    return [_public(r) for r in recs if r["Segment"] == segment]


async def datacenters(req: Request, ctx: HTTPContext) -> Answer:
    maps = ctx.federation.wan_coordinates()
    if maps is not None:
        return json_answer(req, maps)
    if not ctx.config.server:
        try:
            answer = await ctx.federation.ask_server(Exchange("GET", "/v1/coordinate/datacenters"))
        except ForwardError as err:
            raise HTTPError(500, str(err)) from None
        kind = "application/json" if answer.status == 200 else "text/plain"
        return Answer(answer.status, None, answer.body, kind)
    store = ctx.store
    coords = []
    for node, _svc in store.service_instances("consul"):
        rec = store.coordinate(node["Node"])
        if rec is not None:
            coords.append({"Node": rec["Node"], "Coord": rec["Coord"]})
    if ctx.config.server and not any(c["Node"] == ctx.config.node_name for c in coords):
        # this server before its first coordinate reached the catalog: its own, as Consul's
        # servers list theirs from the start
        coords.append({"Node": ctx.config.node_name, "Coord": ctx.coordinates.lan_coordinate().to_json()})
    coords.sort(key=lambda c: c["Node"])
    return json_answer(req, [{"Datacenter": ctx.config.datacenter, "AreaID": "WAN", "Coordinates": coords}])


async def nodes(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(watchkeys.COORDINATES),
                                   render=lambda: _segment_filter(req, store.all_coordinates()),
                                   keys=(watchkeys.COORDINATES,))
    return json_answer(req, body, headers=headers)


async def node(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    name = path_tail(req, NODE_PREFIX)

    def render() -> list[dict[str, Any]]:
        rec = store.coordinate(name)
        return _segment_filter(req, [rec] if rec is not None else [])

    body, headers = await blocking(req, ctx, index=lambda: store.index_of(watchkeys.COORDINATES), render=render,
                                   keys=(watchkeys.COORDINATES,))
    if not body:
        return Answer(404, headers)
    return json_answer(req, body, headers=headers)


async def update(req: Request, ctx: HTTPContext) -> Answer:
    body = decode_body(decode_json(read_body(req, MAX_UPDATE_BYTES), empty={}), COORDINATE_UPDATE)
    try:
        upd = validate_update(body)
    except CoordinateUpdateError as err:
        raise HTTPError(500, str(err)) from None
    ctx.coordinates.submit(upd)
    return Answer()
