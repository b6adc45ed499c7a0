"""/v1/operator/raft/configuration (reference/consul-api.md §4.10): the servers of the latest Raft
configuration, which one leads, and the configuration entry's index. Node names come from the
catalog (the node whose ID is the server's ID)."""

from __future__ import annotations

from aiohttp import web

from appliance.http.encoding import json_response


async def raft_configuration(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    conf = agent.consensus.configuration()
    names = {(n.get("ID") or "").lower(): n["Node"] for n in agent.store.nodes.values()}
    servers = [{"ID": s["ID"], "Node": names.get(s["ID"].lower(), ""), **{k: v for k, v in s.items() if k != "ID"}}
               for s in conf["Servers"]]
    return json_response(request, {"Servers": servers, "Index": conf["Index"]})


ROUTES = [
    ("GET", "/v1/operator/raft/configuration", raft_configuration),
]
