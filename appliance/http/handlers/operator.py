"""/v1/operator/raft/* and /v1/operator/autopilot/* (reference/consul-api.md §4.10).

* `GET /v1/operator/raft/configuration[?stale]`: the servers of the latest Raft configuration,
  which one leads, each one's last log index (as the leader knows it), and the configuration
  entry's index. Node names come from the catalog (the node whose ID is the server's ID).
* `DELETE /v1/operator/raft/peer?id=|?address=`: remove a server from the configuration.
* `POST /v1/operator/raft/transfer-leader[?id=]`: hand leadership to a server (or the most
  up-to-date voter); answers `{"Success": true}` once this leader has stepped down.
* `GET /v1/operator/autopilot/health` (status 429 when not healthy, as Consul) and
  `GET /v1/operator/autopilot/state`: autopilot's view.
* `GET|PUT /v1/operator/autopilot/configuration[?cas=]`: the replicated autopilot settings.

The writes and the health report run on the leader: the handler proposes an operator command
(appliance/raft/driver_autopilot.py), which a follower forwards to the leader like any write.
Errors are Consul's texts with status 500 (`id "x" was not found in the Raft configuration`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.api.structs import AUTOPILOT_CONFIGURATION
from appliance.config.durations import format_duration
from appliance.api.gojson import DecodeError, decode
from appliance.http.encoding import decode_json, json_response, read_body
from appliance.http.errors import HTTPError
from appliance.raft.autopilot import AutopilotConfig, AutopilotConfigError
from appliance.raft.messages import NotLeader, RaftError
from appliance.state.fsm import CommandError


async def leader_call(request: web.Request, command: dict[str, Any]) -> Any:
    """Run an operator command on the leader (forwarded if need be); Consul's errors as 500s."""
    try:
        return await request.app["agent"].consensus.propose(command)
    except NotLeader:
        raise HTTPError(500, "No cluster leader") from None
    except (CommandError, RaftError, TimeoutError) as err:
        raise HTTPError(500, str(err) or type(err).__name__) from None


async def raft_configuration(request: web.Request) -> web.Response:
    """Served by the leader (which knows every server's LastIndex) unless `?stale`."""
    agent = request.app["agent"]
    if "stale" in request.query or getattr(agent.consensus, "is_leader", False):
        conf = agent.consensus.configuration()
    else:
        conf = await leader_call(request, {"Type": "raft_configuration"})
    names = {(n.get("ID") or "").lower(): n["Node"] for n in agent.store.nodes.values()}
    servers = [{"ID": s["ID"], "Node": names.get(s["ID"].lower(), ""), **{k: v for k, v in s.items() if k != "ID"}}
               for s in conf["Servers"]]
    return json_response(request, {"Servers": servers, "Index": conf["Index"]})


async def raft_remove_peer(request: web.Request) -> web.Response:
    node_id, address = request.query.get("id", ""), request.query.get("address", "")
    if not node_id and not address:
        raise HTTPError(400, "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
    await leader_call(request, {"Type": "raft_remove_peer", "ID": node_id, "Address": "" if node_id else address})
    return web.Response(status=200)


async def raft_transfer_leader(request: web.Request) -> web.Response:
    await leader_call(request, {"Type": "raft_transfer_leader", "ID": request.query.get("id", "")})
    return json_response(request, {"Success": True})


async def autopilot_health(request: web.Request) -> web.Response:
    health = await leader_call(request, {"Type": "autopilot_health"})
    return json_response(request, health, status=200 if health["Healthy"] else 429)  # Consul: 429 if unhealthy


def state_from_health(health: dict[str, Any]) -> dict[str, Any]:
    """/v1/operator/autopilot/state (Consul 1.9+) derived from the health report."""
    servers = {}
    leader = ""
    for s in health["Servers"]:
        if s["Leader"]:
            leader = s["ID"]
        servers[s["ID"]] = {
            "ID": s["ID"], "Name": s["Name"], "Address": s["Address"], "NodeStatus": s["SerfStatus"],
            "Version": s["Version"], "LastContact": s["LastContact"], "LastTerm": s["LastTerm"],
            "LastIndex": s["LastIndex"], "Healthy": s["Healthy"], "StableSince": s["StableSince"],
            "Status": "leader" if s["Leader"] else "voter" if s["Voter"] else "non-voter",
            "Meta": {}, "NodeType": "voter", "ReadReplica": False,
        }
    voters = sorted(i for i, s in servers.items() if s["Status"] in ("leader", "voter"))
    return {"Healthy": health["Healthy"], "FailureTolerance": health["FailureTolerance"],
            "OptimisticFailureTolerance": max(0, len([v for v in voters if servers[v]["Healthy"]])
                                              - (len(voters) // 2 + 1)),
            "Servers": servers, "Leader": leader, "Voters": voters, "ReadReplicas": None,
            "RedundancyZones": None, "Upgrade": None}


async def autopilot_state(request: web.Request) -> web.Response:
    return json_response(request, state_from_health(await leader_call(request, {"Type": "autopilot_health"})))


def _current(agent: Any) -> tuple[AutopilotConfig, dict[str, Any]]:
    record = agent.store.autopilot or {}
    if agent.autopilot is not None:
        return agent.autopilot.configuration(), record
    try:
        return AutopilotConfig.from_api(record or None), record
    except AutopilotConfigError:
        return AutopilotConfig(), record


async def autopilot_get_configuration(request: web.Request) -> web.Response:
    config, record = _current(request.app["agent"])
    return json_response(request, {**config.to_api(), "CreateIndex": record.get("CreateIndex", 0),
                                   "ModifyIndex": record.get("ModifyIndex", 0)})


async def autopilot_set_configuration(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    try:  # Consul: "Error parsing autopilot config: <decoder's error>"
        body = decode(decode_json(await read_body(request, 64 << 10), empty={}), AUTOPILOT_CONFIGURATION)
    except DecodeError as err:
        raise HTTPError(400, f"Error parsing autopilot config: {err}") from None
    body = {k: format_duration(v) if isinstance(v, float) else v for k, v in body.items()}  # merged() parses
    config, _ = _current(agent)
    try:
        new = config.merged(body)
    except AutopilotConfigError as err:
        raise HTTPError(400, f"Error parsing autopilot config: {err}") from None
    command: dict[str, Any] = {"Type": "autopilot", "Config": new.to_api()}
    if "cas" in request.query:
        try:
            command["CAS"] = int(request.query["cas"])
            if command["CAS"] < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, f"Error parsing cas value: {request.query['cas']!r}") from None
    result = await leader_call(request, command)
    return json_response(request, bool(result))


ROUTES = [
    ("GET", "/v1/operator/raft/configuration", raft_configuration),
    ("DELETE", "/v1/operator/raft/peer", raft_remove_peer),
    ("POST", "/v1/operator/raft/transfer-leader", raft_transfer_leader),
    ("GET", "/v1/operator/autopilot/health", autopilot_health),
    ("GET", "/v1/operator/autopilot/state", autopilot_state),
    ("GET", "/v1/operator/autopilot/configuration", autopilot_get_configuration),
    ("PUT", "/v1/operator/autopilot/configuration", autopilot_set_configuration),
]
