"""/v1/catalog/*: register, deregister and the blocking catalog reads (reference/consul-api.md §4.2)."""

from __future__ import annotations

from typing import Any

from appliance.api.structs import DEREGISTER_REQUEST, REGISTER_REQUEST
from appliance.config.durations import format_duration
from appliance.connect import central
from appliance.federation.forward import ForwardError
from appliance.http.context import HTTPContext
from appliance.http.encoding import decode_body, read_json
from appliance.http.errors import HTTPError
from appliance.http.handlers.peering import peered
from appliance.http.paths import path_tail
from appliance.http.query import blocking, compiled_filter, meta_matches, near_sorted, node_meta_filter
from appliance.http.remote_dc import forward
from appliance.http.values import Answer, Request, json_answer
from appliance.local.definitions import DefinitionError, check_kind, parse_service_definition, validate_meta
from appliance.local.state import LocalState
from appliance.state import gateways, watchkeys
from appliance.state.fsm import CommandError
from appliance.state.views import catalog_services, service_node, tags_match


def _catalog_check(d: dict[str, Any], node: str) -> dict[str, Any]:
    """A decoded structs.HealthCheck as the `register` command carries it."""
    status = d.get("Status") or "critical"
    if status not in ("passing", "warning", "critical"):
        raise DefinitionError("Invalid check status")
    cid = d.get("CheckID") or d.get("Name") or ""
    if not cid:
        raise DefinitionError("Must provide a check ID or name")
    definition = d.get("Definition") or {}
    check_type = d.get("Type") or ""
    interval, timeout = d.get("Interval", ""), d.get("Timeout", "")
    stored_definition = {k: format_duration(v) if isinstance(v, float) else v for k, v in definition.items()}
    if definition:
        kind = check_kind(definition)
        check_type = check_type or kind
        interval = interval or (format_duration(definition["Interval"]) if definition.get("Interval") else "")
        timeout = timeout or (format_duration(definition["Timeout"]) if definition.get("Timeout") else "")
    return {
        "Node": node, "CheckID": cid, "Name": d.get("Name") or cid, "Status": status, "Notes": d.get("Notes", ""),
        "Output": d.get("Output", ""), "ServiceID": d.get("ServiceID", ""), "ServiceName": "",
        "ServiceTags": [], "Type": check_type, "Interval": interval, "Timeout": timeout, "ExposedPort": 0,
        "Definition": stored_definition,
    }


def _catalog_service(raw: dict[str, Any], node: str, datacenter: str) -> dict[str, Any]:
    """A decoded structs.NodeService, validated as an agent registration, as the command carries it."""
    if not raw.get("Service"):
        raise HTTPError(500, "Must provide service name")
    fields = {k: v for k, v in raw.items() if k not in ("Service", "Connect", "Namespace", "Partition",
                                                         "PeerName", "Locality")}
    if isinstance(raw.get("Connect"), dict) and raw["Connect"].get("Native"):
        fields["Connect"] = {"Native": raw["Connect"]["Native"]}  # only Native is kept in the catalog
    svc = parse_service_definition({"Name": raw["Service"], **fields})
    rendered = LocalState(node, datacenter).node_service(svc)
    if svc.tagged_addresses:
        rendered["TaggedAddresses"] = {k: dict(v) for k, v in svc.tagged_addresses.items()}
    else:
        rendered.pop("TaggedAddresses", None)
    return rendered


def register_command(body: Any, datacenter: str) -> dict[str, Any]:
    """Decode and validate a /v1/catalog/register body into a `register` command."""
    d = decode_body(body if body is not None else {}, REGISTER_REQUEST)
    node = d.get("Node", "")
    if not node:
        raise HTTPError(500, "Must provide node")
    if not d.get("Address") and not d.get("SkipNodeUpdate"):
        raise HTTPError(500, "Must provide address if SkipNodeUpdate is not set")
    node_meta = d.get("NodeMeta")
    if node_meta:
        validate_meta(node_meta, "Node")
    cmd: dict[str, Any] = {
        "Type": "register", "Node": node, "ID": d.get("ID", ""), "Address": d.get("Address", ""),
        "Datacenter": datacenter, "TaggedAddresses": d.get("TaggedAddresses"), "NodeMeta": node_meta,
        "SkipNodeUpdate": d.get("SkipNodeUpdate", False), "Checks": [],
    }
    if d.get("Service"):
        cmd["Service"] = _catalog_service(d["Service"], node, datacenter)
    checks = ([d["Check"]] if d.get("Check") else []) + list(d.get("Checks") or [])
    cmd["Checks"] = [_catalog_check(c, node) for c in checks]
    return cmd


async def _other_datacenter(req: Request, ctx: HTTPContext, body: Any) -> Answer | None:
    """A register or deregister whose body names another datacenter is carried there, as Consul
    forwards the write (`No path to datacenter` when none is known)."""
    dc = next((v for k, v in body.items() if k.lower() == "datacenter"), "") if isinstance(body, dict) else ""
    if isinstance(dc, str) and dc and dc.lower() != ctx.config.datacenter.lower():
        return await forward(req, ctx, dc.lower())
    return None


async def register(req: Request, ctx: HTTPContext) -> Answer:
    body = read_json(req, empty={})
    if (remote := await _other_datacenter(req, ctx, body)) is not None:
        return remote
    try:
        cmd = register_command(body, ctx.config.datacenter)
    except DefinitionError as err:
        raise HTTPError(400, str(err)) from None
    try:
        await ctx.consensus.propose(cmd)
    except CommandError as err:
        raise HTTPError(500, str(err)) from None
    return json_answer(req, True)


async def deregister(req: Request, ctx: HTTPContext) -> Answer:
    body = read_json(req, empty={})
    if (remote := await _other_datacenter(req, ctx, body)) is not None:
        return remote
    d = decode_body(body, DEREGISTER_REQUEST)
    if not d.get("Node"):
        raise HTTPError(500, "Must provide node")
    cmd = {"Type": "deregister", "Node": d["Node"], "ServiceID": d.get("ServiceID", ""),
           "CheckID": d.get("CheckID", "")}
    await ctx.consensus.propose(cmd)
    return json_answer(req, True)


async def datacenters(req: Request, ctx: HTTPContext) -> Answer:
    """Known datacenters, nearest first (the WAN pool's; a client agent asks a server)."""
    try:
        return json_answer(req, await ctx.federation.datacenters())
    except ForwardError as err:
        raise HTTPError(500, str(err)) from None


async def nodes(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    want_meta = node_meta_filter(req)
    keep = compiled_filter(req, "catalog_nodes")

    def render() -> list[Any]:
        if peered(req):
            return []
        out = [n for n in store.all_nodes() if meta_matches(n["Meta"], want_meta)]
        return [n for n in out if keep(n)] if keep else out

    body, headers = await blocking(req, ctx, index=lambda: store.index_of(watchkeys.NODES), render=render,
                                   keys=(watchkeys.NODES,), effective_consistency=True, replayable=True)
    body = near_sorted(req, ctx, body, lambda n: n["Node"])
    return json_answer(req, body, headers=headers)


async def services(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    want_meta = node_meta_filter(req)
    keep = compiled_filter(req, "catalog_services")

    def accept(node: Any, svc: Any) -> bool:
        if not meta_matches(node["Meta"] if node else None, want_meta):
            return False
        return keep is None or keep(service_node(node, svc))

    filtered = bool(want_meta) or keep is not None
    keys = (watchkeys.SERVICES, watchkeys.NODES) if want_meta else (watchkeys.SERVICES,)
    body, headers = await blocking(
        req, ctx, index=lambda: store.index_of(*keys),
        render=lambda: {} if peered(req) else catalog_services(store, accept if filtered else None),
        keys=keys, effective_consistency=True, replayable=True)
    return json_answer(req, body, headers=headers)


async def service(req: Request, ctx: HTTPContext) -> Answer:
    return await _service_nodes(req, ctx, "/v1/catalog/service/", connect=False)


async def connect(req: Request, ctx: HTTPContext) -> Answer:
    """/v1/catalog/connect/<service>: the proxies for a service and its Connect-native instances."""
    return await _service_nodes(req, ctx, "/v1/catalog/connect/", connect=True)


async def _service_nodes(req: Request, ctx: HTTPContext, prefix: str, *, connect: bool) -> Answer:
    store = ctx.store
    name = path_tail(req, prefix)
    tags = req.query.getall("tag", [])
    want_meta = node_meta_filter(req)
    keep = compiled_filter(req, "catalog_service")
    key = watchkeys.connect(name) if connect else watchkeys.service(name)
    instances = store.connect_instances if connect else store.service_instances
    merged = "merge-central-config" in req.query  # proxies with the central config (appliance/connect/central.py)
    keys = (key, *central.KEYS) if merged else (key,)

    def render() -> list[Any]:
        if peered(req):
            return []
        out = []
        for node, svc in instances(name):
            if tags and not tags_match(svc, tags):
                continue
            if not meta_matches(node["Meta"], want_meta):
                continue
            sn = service_node(node, svc)
            if merged:
                sn = central.merge(sn, store.connect.entries)
            if keep is None or keep(sn):
                out.append(sn)
        return out

    body, headers = await blocking(req, ctx, index=lambda: store.index_of(*keys), render=render, keys=keys,
                                   effective_consistency=True, replayable=True)
    body = near_sorted(req, ctx, body, lambda sn: sn["Node"])
    return json_answer(req, body, headers=headers)


async def gateway_services(req: Request, ctx: HTTPContext) -> Answer:
    """/v1/catalog/gateway-services/<gateway>: the services a terminating or ingress gateway's
    config entry links to it (structs.GatewayService)."""
    store = ctx.store
    name = path_tail(req, "/v1/catalog/gateway-services/")
    keys = gateways.gateway_keys(name)
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(*keys),
                                   render=lambda: gateways.gateway_services(store, name), keys=keys,
                                   effective_consistency=True, replayable=True)
    return json_answer(req, body, headers=headers)


def _node_services(req: Request, ctx: HTTPContext, prefix: str, as_map: bool) -> Any:
    store = ctx.store
    name = path_tail(req, prefix)
    keep = compiled_filter(req, "catalog_node" if as_map else "catalog_node_services")
    key = watchkeys.node(name)

    def render() -> Any:
        node = None if peered(req) else store.node(name)
        if node is None:
            return None
        svcs = [s for s in store.node_services(name) if keep is None or keep(s)]
        return {"Node": node, "Services": {s["ID"]: s for s in svcs} if as_map else svcs}

    return blocking(req, ctx, index=lambda: store.index_of(key), render=render, keys=(key,),
                    effective_consistency=True, replayable=True)


async def node(req: Request, ctx: HTTPContext) -> Answer:
    body, headers = await _node_services(req, ctx, "/v1/catalog/node/", as_map=True)
    return json_answer(req, body, headers=headers)


async def node_services(req: Request, ctx: HTTPContext) -> Answer:
    body, headers = await _node_services(req, ctx, "/v1/catalog/node-services/", as_map=False)
    return json_answer(req, body, headers=headers)
