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

from aiohttp import web

from appliance.state import watchkeys
from appliance.coordinates import CoordinateUpdateError, validate_update
from appliance.federation.forward import Exchange, ForwardError
from appliance.api.structs import COORDINATE_UPDATE
from appliance.http.encoding import decode_body, decode_json, json_response, read_body
from appliance.http.errors import HTTPError
from appliance.http.query import blocking
from appliance.http.routing import path_tail

NODE_PREFIX = "/v1/coordinate/node/"


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    return {"Node": rec["Node"], "Segment": rec["Segment"], "Coord": rec["Coord"]}


def _segment_filter(request: web.Request, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if "segment" not in request.query:
        return [_public(r) for r in recs]
    segment = request.query.get("segment", "")
    return [_public(r) for r in recs if r["Segment"] == segment]


async def datacenters(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    wan = getattr(agent, "wan", None)
    if wan is not None:
        return json_response(request, wan.coordinate_maps())
    if not agent.config.server:
        try:
            answer = await agent.federation.ask_server(Exchange("GET", "/v1/coordinate/datacenters"))
        except ForwardError as err:
            raise HTTPError(500, str(err)) from None
        kind = "application/json" if answer.status == 200 else "text/plain"
        return web.Response(status=answer.status, body=answer.body, content_type=kind)
    store = agent.store
    coords = []
    for node, _svc in store.service_instances("consul"):
        rec = store.coordinate(node["Node"])
        if rec is not None:
            coords.append({"Node": rec["Node"], "Coord": rec["Coord"]})
    coords.sort(key=lambda c: c["Node"])
    return json_response(request, [{"Datacenter": agent.config.datacenter, "AreaID": "WAN", "Coordinates": coords}])


async def nodes(request: web.Request) -> web.Response:
    store = request.app["agent"].store
    body, headers = await blocking(request, index=lambda: store.index_of(watchkeys.COORDINATES),
                                   render=lambda: _segment_filter(request, store.all_coordinates()),
                                   keys=(watchkeys.COORDINATES,))
    return json_response(request, body, headers=headers)


async def node(request: web.Request) -> web.Response:
    store = request.app["agent"].store
    name = path_tail(request, NODE_PREFIX)

    def render() -> list[dict[str, Any]]:
        rec = store.coordinate(name)
        return _segment_filter(request, [rec] if rec is not None else [])

    body, headers = await blocking(request, index=lambda: store.index_of(watchkeys.COORDINATES), render=render,
                                   keys=(watchkeys.COORDINATES,))
    if not body:
        return web.Response(status=404, headers=headers)
    return json_response(request, body, headers=headers)


async def update(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    body = decode_body(decode_json(await read_body(request, 64 * 1024), empty={}), COORDINATE_UPDATE)
    try:
        upd = validate_update(body)
    except CoordinateUpdateError as err:
        raise HTTPError(500, str(err)) from None
    agent.coordinate_batcher.submit(upd)
    return web.Response(status=200)


ROUTES = [
    ("GET", "/v1/coordinate/datacenters", datacenters),
    ("GET", "/v1/coordinate/nodes", nodes),
    ("GET", NODE_PREFIX, node),
    ("PUT", "/v1/coordinate/update", update),
]
