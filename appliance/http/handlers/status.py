"""/v1/status/leader and /v1/status/peers (reference/consul-api.md §4.8)."""

from __future__ import annotations

from appliance.http.context import HTTPContext
from appliance.http.values import Answer, Request, json_answer


async def leader(req: Request, ctx: HTTPContext) -> Answer:
    consensus = ctx.consensus
    return json_answer(req, consensus.leader_address() if consensus.known_leader else "")


async def peers(req: Request, ctx: HTTPContext) -> Answer:
    return json_answer(req, ctx.consensus.peers())
