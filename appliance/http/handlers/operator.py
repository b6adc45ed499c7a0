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

import orjson

from appliance.api.gojson import DecodeError, decode
from appliance.api.structs import AUTOPILOT_CONFIGURATION
from appliance.config.durations import format_duration
from appliance.federation.forward import Exchange, ForwardError
from appliance.http.context import HTTPContext
from appliance.http.encoding import decode_json, read_body
from appliance.http.errors import HTTPError
from appliance.http.query import blocking
from appliance.http.values import Answer, Request, json_answer
from appliance.raft.autopilot import AutopilotConfig, AutopilotConfigError
from appliance.raft.messages import NotLeader, RaftError
from appliance.state import watchkeys
from appliance.state.fsm import CommandError

MAX_AUTOPILOT_BYTES = 64 << 10


async def leader_call(ctx: HTTPContext, command: dict[str, Any]) -> Any:
    """Run an operator command on the leader (forwarded if need be); Consul's errors as 500s."""
    try:
        return await ctx.consensus.propose(command)
    except NotLeader:
        raise HTTPError(500, "No cluster leader") from None
    except (CommandError, RaftError, TimeoutError) as err:
        raise HTTPError(500, str(err) or type(err).__name__) from None


async def raft_configuration(req: Request, ctx: HTTPContext) -> Answer:
    """Served by the leader (which knows every server's LastIndex) unless `?stale`."""
    if "stale" in req.query or (ctx.raft is not None and ctx.raft.is_leader):
        conf = ctx.consensus.configuration()
    else:
        conf = await leader_call(ctx, {"Type": "raft_configuration"})
    names = {(n.get("ID") or "").lower(): n["Node"] for n in ctx.store.nodes.values()}
    servers = [{"ID": s["ID"], "Node": names.get(s["ID"].lower(), ""), **{k: v for k, v in s.items() if k != "ID"}}
               for s in conf["Servers"]]
    index = conf["Index"]
    if ctx.config.dev and index <= 1:  # a -dev server's bootstrap configuration: Consul answers 0
        index = 0
    return json_answer(req, {"Servers": servers, "Index": index})


async def raft_remove_peer(req: Request, ctx: HTTPContext) -> Answer:
    node_id, address = req.query.get("id", ""), req.query.get("address", "")
    if not node_id and not address:
        raise HTTPError(400, "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
    await leader_call(ctx, {"Type": "raft_remove_peer", "ID": node_id, "Address": "" if node_id else address})
    return Answer()


async def raft_transfer_leader(req: Request, ctx: HTTPContext) -> Answer:
    await leader_call(ctx, {"Type": "raft_transfer_leader", "ID": req.query.get("id", "")})
    return json_answer(req, {"Success": True})


async def autopilot_health(req: Request, ctx: HTTPContext) -> Answer:
    health = await leader_call(ctx, {"Type": "autopilot_health"})
    return json_answer(req, health, status=200 if health["Healthy"] else 429)  # Consul: 429 if unhealthy


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


async def autopilot_state(req: Request, ctx: HTTPContext) -> Answer:
    return json_answer(req, state_from_health(await leader_call(ctx, {"Type": "autopilot_health"})))


def _current(ctx: HTTPContext) -> tuple[AutopilotConfig, dict[str, Any]]:
    record = ctx.store.autopilot or {}
    if ctx.autopilot is not None:
        return ctx.autopilot.configuration(), record
    try:
        return AutopilotConfig.from_api(record or None), record
    except AutopilotConfigError:
        return AutopilotConfig(), record


async def autopilot_get_configuration(req: Request, ctx: HTTPContext) -> Answer:
    config, record = _current(ctx)
    return json_answer(req, {**config.to_api(), "CreateIndex": record.get("CreateIndex", 0),
                                   "ModifyIndex": record.get("ModifyIndex", 0)})


async def autopilot_set_configuration(req: Request, ctx: HTTPContext) -> Answer:
    try:  # Consul: "Error parsing autopilot config: <decoder's error>"
        body = decode(decode_json(read_body(req, MAX_AUTOPILOT_BYTES), empty={}), AUTOPILOT_CONFIGURATION)
    except DecodeError as err:
        raise HTTPError(400, f"Error parsing autopilot config: {err}") from None
    body = {k: format_duration(v) if isinstance(v, float) else v for k, v in body.items()}  # merged() parses
    config, _ = _current(ctx)
    try:
        new = config.merged(body)
    except AutopilotConfigError as err:
        raise HTTPError(400, f"Error parsing autopilot config: {err}") from None
    command: dict[str, Any] = {"Type": "autopilot", "Config": new.to_api()}
    if "cas" in req.query:
        try:
            command["CAS"] = int(req.query["cas"])
            if command["CAS"] < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, f"Error parsing cas value: {req.query['cas']!r}") from None
    result = await leader_call(ctx, command)
    return json_answer(req, bool(result))


# Consul's ConnectServiceInstances keys: the service kinds (plus connect-native) it counts apart
CONNECT_KINDS = ("api-gateway", "connect-native", "connect-proxy", "ingress-gateway", "mesh-gateway",
                 "terminating-gateway")


def usage_of(store: Any) -> dict[str, Any]:
    """One datacenter's figures for /v1/operator/usage: distinct service names, instances, the
    connect instances by kind, the billable instances (neither `consul` nor a connect proxy or
    gateway) and nodes."""
    names: set[str] = set()
    instances = billable = 0
    connect = dict.fromkeys(CONNECT_KINDS, 0)
    for svcs in store.services.values():
        for svc in svcs.values():
            names.add(svc["Service"])
            instances += 1
            kind = svc.get("Kind") or ""
            if kind in connect:
                connect[kind] += 1
            elif (svc.get("Connect") or {}).get("Native"):
                connect["connect-native"] += 1
            if not kind and svc["Service"] != "consul":
                billable += 1
    return {"Services": len(names), "ServiceInstances": instances, "ConnectServiceInstances": connect,
            "BillableServiceInstances": billable, "Nodes": len(store.nodes)}


async def usage(req: Request, ctx: HTTPContext) -> Answer:
    """GET /v1/operator/usage[?global]: this datacenter's usage (`?global` asks the others too;
    one that cannot be reached is left out, as Consul leaves out a failed datacenter)."""
    store = ctx.store
    keys = (watchkeys.SERVICES, watchkeys.NODES)
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(*keys),
                                   render=lambda: {"Usage": {ctx.config.datacenter: usage_of(store)}}, keys=keys)
    if "global" in req.query:
        body = {"Usage": {**body["Usage"], **await _remote_usage(ctx)}}
    return json_answer(req, body, headers=headers)


async def _remote_usage(ctx: HTTPContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dc in await ctx.federation.datacenters():
        if dc == ctx.config.datacenter:
            continue
        try:
            answer = await ctx.federation.request(dc, Exchange("GET", "/v1/operator/usage", [], [], b""))
            if answer.status == 200:
                out.update(orjson.loads(answer.body).get("Usage") or {})
        except (ForwardError, ValueError, AttributeError):
            continue
    return out
