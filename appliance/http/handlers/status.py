"""/v1/status/leader and /v1/status/peers (reference/consul-api.md §4.8)."""

from __future__ import annotations

from aiohttp import web

from appliance.http.encoding import json_response


async def leader(request: web.Request) -> web.Response:
    consensus = request.app["agent"].consensus
    return json_response(request, consensus.leader_address() if consensus.known_leader else "")


async def peers(request: web.Request) -> web.Response:
    return json_response(request, request.app["agent"].consensus.peers())


ROUTES = [
    ("GET", "/v1/status/leader", leader),
    ("GET", "/v1/status/peers", peers),
]
