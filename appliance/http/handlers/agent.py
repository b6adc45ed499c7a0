"""/v1/agent/*: this agent's services, checks, maintenance, members, join, force-leave, self, reload,
leave, monitor.

Agent endpoints act on the local state (appliance.local.state), which is authoritative for this
node; every change is followed by an anti-entropy sync through the log before the answer goes
out, so a client that registers a service and then reads the catalog sees it. Shapes and texts
are reference/consul-api.md §4.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import orjson
from aiohttp import web

from appliance import logs
from appliance.checks.rules import unsupported_check_text
from appliance.filter import FilterError
from appliance.gossip.driver import JoinError
from appliance.api.structs import CHECK_UPDATE
from appliance.http.encoding import decode_body, json_response, read_json
from appliance.http.errors import HTTPError
from appliance.http.query import compiled_filter, parse_bool_param, query_options
from appliance.http.routing import path_tail
from appliance.local.definitions import (
    STATUSES,
    DefinitionError,
    UnknownFieldError,
    parse_check_definition,
    parse_service_definition,
)
from appliance.local.state import NotFound
from appliance.state.views import aggregated_status

SCRIPTS_DISABLED = ("Scripts are disabled on this agent from remote calls; to enable, configure "
                    "'enable_script_checks' to true")


def _decode_error(err: Exception) -> HTTPError:
    if isinstance(err, UnknownFieldError):
        return HTTPError(400, f"Request decode failed: {err}")
    return HTTPError(400, str(err))


async def _changed(agent: Any) -> None:
    """Local state changed: sync it to the catalog now and wake hash-blocked readers."""
    agent.local_changed()
    await agent.syncer.sync_now()


# ---------------------------------------------------------------------------------------- reads


async def self_(request: web.Request) -> web.Response:
    return json_response(request, request.app["agent"].self_info())


async def version(request: web.Request) -> web.Response:
    return json_response(request, request.app["agent"].version_info())


async def members(request: web.Request) -> web.Response:
    wan = parse_bool_param(request, "wan")
    segment = request.query.get("segment")
    if wan and segment:
        raise HTTPError(400, "Cannot provide a segment with wan=true")
    if segment == "_all":  # Consul's AllSegments: every member
        segment = None
    return json_response(request, request.app["agent"].members(wan=wan, segment=segment))


async def join(request: web.Request) -> web.Response:
    """PUT /v1/agent/join/<address>[?wan]: join the LAN (or WAN) pool through the agent at that address."""
    address = path_tail(request, "/v1/agent/join/")
    wan = parse_bool_param(request, "wan")
    if not address:
        raise HTTPError(400, "Missing address to join")
    try:
        await request.app["agent"].join([address], wan=wan)
    except JoinError as err:
        raise HTTPError(500, str(err)) from None
    return web.Response(status=200)


async def force_leave(request: web.Request) -> web.Response:
    """PUT /v1/agent/force-leave/<node>[?prune][?wan]: mark a failed member left (prune: forget it)."""
    node = path_tail(request, "/v1/agent/force-leave/")
    prune = parse_bool_param(request, "prune")
    wan = parse_bool_param(request, "wan")  # a member of the WAN pool, named <node>.<dc>
    if not node:
        raise HTTPError(400, "Missing node name to force leave")
    try:
        request.app["agent"].force_leave(node, prune=prune, wan=wan)
    except KeyError as err:
        raise HTTPError(500, err.args[0]) from None
    return web.Response(status=200)


async def services(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    keep = compiled_filter(request, "agent_services")
    out = {}
    for sid in sorted(agent.local.services):
        svc = agent.local.agent_service(agent.local.services[sid].definition)
        if keep is None or keep(svc):
            out[sid] = svc
    return json_response(request, out)


def _hash(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


async def service(request: web.Request) -> web.Response:
    """AgentService with ContentHash; `?hash=&wait=` blocks until the hash differs."""
    agent = request.app["agent"]
    sid = path_tail(request, "/v1/agent/service/")

    def render() -> dict[str, Any]:
        try:
            svc = agent.local.agent_service(agent.local.service(sid))
        except NotFound as err:
            raise HTTPError(404, str(err)) from None
        svc["ContentHash"] = _hash(svc)
        return svc

    opts = query_options(request)
    body = render()
    want = request.query.get("hash", "")
    if want and want == body["ContentHash"]:
        wait = min(opts.wait_s or agent.config.default_query_time_s, agent.config.max_query_time_s)
        deadline = time.monotonic() + wait + agent.rng.uniform(0, wait / 16)
        while body["ContentHash"] == want and (remaining := deadline - time.monotonic()) > 0:
            await agent.hub.wait(("local",), (), remaining)
            body = render()
    return json_response(request, body, headers={"X-Consul-ContentHash": body["ContentHash"]})


async def checks(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    keep = compiled_filter(request, "agent_checks")
    out = {}
    for cid in sorted(agent.local.checks):
        check = agent.local.health_check(agent.local.checks[cid])
        try:
            if keep is None or keep(check):
                out[cid] = check
        except FilterError as err:  # selector errors surface on the first check (Consul does the same)
            raise HTTPError(400, str(err)) from None
    return json_response(request, out)


def _service_health(agent: Any, sid: str) -> tuple[str, dict[str, Any]]:
    local = agent.local
    svc = local.agent_service(local.service(sid))
    own = [local.health_check(c) for c in local.checks.values()
           if c.definition.service_id == sid or not c.definition.service_id]
    status = aggregated_status(own)
    return status, {"AggregatedStatus": status, "Service": svc, "Checks": own}


_CODES = {"passing": 200, "warning": 429, "critical": 503, "maintenance": 503}


def _wants_text(request: web.Request) -> bool:
    return request.query.get("format") == "text" or request.headers.get("Accept", "").startswith("text/plain")


async def health_service_id(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    sid = path_tail(request, "/v1/agent/health/service/id/")
    text = _wants_text(request)
    try:
        status, body = _service_health(agent, sid)
    except NotFound:
        reason = f"ServiceId {sid} not found"
        if text:
            return web.Response(status=404, text=reason, headers={"X-Consul-Reason": reason})
        return json_response(request, {"AggregatedStatus": "critical", "Service": None, "Checks": None},
                             status=404, headers={"X-Consul-Reason": reason})
    code = _CODES[status]
    if text:
        return web.Response(status=code, text=status, headers={"X-Consul-Reason": status})
    return json_response(request, body, status=code, headers={"X-Consul-Reason": status})


async def health_service_name(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    name = path_tail(request, "/v1/agent/health/service/name/")
    text = _wants_text(request)
    found = [_service_health(agent, sid) for sid, s in sorted(agent.local.services.items())
             if s.definition.name == name]
    if not found:
        reason = f"ServiceName {name} Not Found"
        if text:
            return web.Response(status=404, text=reason, headers={"X-Consul-Reason": reason})
        return json_response(request, [], status=404, headers={"X-Consul-Reason": reason})
    rank = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}
    worst = max((status for status, _ in found), key=lambda s: rank[s])
    code = _CODES[worst]
    if text:
        return web.Response(status=code, text=worst, headers={"X-Consul-Reason": worst})
    return json_response(request, [body for _, body in found], status=code, headers={"X-Consul-Reason": worst})


# ---------------------------------------------------------------------------------------- writes


def _refuse_remote_scripts(agent: Any, kinds: list[str]) -> None:
    for kind in kinds:
        if text := unsupported_check_text(kind):
            raise HTTPError(400, text)
    if "script" in kinds and not agent.config.enable_script_checks:
        raise HTTPError(500, SCRIPTS_DISABLED)


async def service_register(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    replace_checks = parse_bool_param(request, "replace-existing-checks")
    body = await read_json(request, empty={})
    try:
        svc = parse_service_definition(body)
    except DefinitionError as err:
        raise _decode_error(err) from None
    if svc.name and not all(ch.isalnum() or ch == "-" for ch in svc.name):
        agent.log.warning(f'Service name "{svc.name}" will not be discoverable via DNS due to invalid '
                          "characters. Valid characters include all alpha-numerics and dashes.")
    _refuse_remote_scripts(agent, [c.kind for c in svc.checks])
    agent.local.add_service(svc, source="api", now=time.monotonic(), replace_existing_checks=replace_checks,
                           raw=body)
    await _changed(agent)
    return web.Response(status=200)


async def service_deregister(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    sid = path_tail(request, "/v1/agent/service/deregister/")
    try:
        agent.local.remove_service(sid)
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    await _changed(agent)
    return web.Response(status=200)


async def check_register(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    body = await read_json(request, empty={})
    try:
        check = parse_check_definition(body)
    except DefinitionError as err:
        text = str(err)
        if text.startswith("Status for checks"):
            text = "Bad check status"
        raise _decode_error(DefinitionError(text) if type(err) is DefinitionError else err) from None
    _refuse_remote_scripts(agent, [check.kind])
    try:
        agent.local.add_check(check, source="api", now=time.monotonic(), raw=body)
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    await _changed(agent)
    return web.Response(status=200)


async def check_deregister(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    cid = path_tail(request, "/v1/agent/check/deregister/")
    try:
        agent.local.remove_check(cid)
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    await _changed(agent)
    return web.Response(status=200)


async def _set_ttl(request: web.Request, cid: str, status: str, output: str) -> web.Response:
    agent = request.app["agent"]
    try:
        agent.local.update_ttl(cid, status, output, time.monotonic())
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    except ValueError as err:
        raise HTTPError(500, str(err)) from None
    await _changed(agent)
    return web.Response(status=200)


def _ttl_verb(status: str, prefix: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return await _set_ttl(request, path_tail(request, prefix), status, request.query.get("note", ""))

    handler.__name__ = f"check_{status}"
    return handler


async def check_update(request: web.Request) -> web.Response:
    cid = path_tail(request, "/v1/agent/check/update/")
    d = decode_body(await read_json(request, empty={}), CHECK_UPDATE)
    status = d.get("Status", "")
    if status not in STATUSES:
        raise HTTPError(400, f"Invalid check status: '{status}'")
    return await _set_ttl(request, cid, status, d.get("Output", ""))


def _enable_param(request: web.Request) -> bool:
    if "enable" not in request.query:
        raise HTTPError(400, "Missing value for enable")
    raw = request.query["enable"]
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise HTTPError(400, f'Invalid value for enable: "{raw}"')


async def service_maintenance(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    sid = path_tail(request, "/v1/agent/service/maintenance/")
    enable = _enable_param(request)
    try:
        agent.local.set_service_maintenance(sid, enable, request.query.get("reason", ""))
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    agent.log.info(f"{'Service entered' if enable else 'Service left'} maintenance mode: service={sid}")
    await _changed(agent)
    return web.Response(status=200)


async def node_maintenance(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    enable = _enable_param(request)
    agent.local.set_node_maintenance(enable, request.query.get("reason", ""))
    agent.log.info("Node entered maintenance mode" if enable else "Node left maintenance mode")
    await _changed(agent)
    return web.Response(status=200)


async def reload(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    try:
        await agent.reload()
    except Exception as err:  # noqa: BLE001 - a failed reload keeps the running config
        raise HTTPError(500, f"Failed reloading: {err}") from None
    return web.Response(status=200)


async def leave(request: web.Request) -> web.Response:
    await request.app["agent"].leave()  # leaves the gossip pool gracefully, then shuts down
    return web.Response(status=200)


async def monitor(request: web.Request) -> web.StreamResponse:
    level_name = request.query.get("loglevel", "info")
    try:
        level = logs.parse_level(level_name)
    except logs.UnknownLevel:
        raise HTTPError(400, f"Unknown log level: {level_name}") from None
    sub = logs.Subscriber(level, "logjson" in request.query)
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    logs.monitor.subscribers.add(sub)
    try:
        while True:
            line = await sub.queue.get()
            await response.write(line.encode() + b"\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        logs.monitor.subscribers.discard(sub)
    return response


ROUTES = [
    ("GET", "/v1/agent/self", self_),
    ("GET", "/v1/agent/version", version),
    ("GET", "/v1/agent/members", members),
    ("GET", "/v1/agent/services", services),
    ("GET", "/v1/agent/service/", service),
    ("GET", "/v1/agent/checks", checks),
    ("GET", "/v1/agent/health/service/id/", health_service_id),
    ("GET", "/v1/agent/health/service/name/", health_service_name),
    ("PUT", "/v1/agent/service/register", service_register),
    ("PUT", "/v1/agent/service/deregister/", service_deregister),
    ("PUT", "/v1/agent/service/maintenance/", service_maintenance),
    ("PUT", "/v1/agent/check/register", check_register),
    ("PUT", "/v1/agent/check/deregister/", check_deregister),
    ("PUT", "/v1/agent/check/pass/", _ttl_verb("passing", "/v1/agent/check/pass/")),
    ("PUT", "/v1/agent/check/warn/", _ttl_verb("warning", "/v1/agent/check/warn/")),
    ("PUT", "/v1/agent/check/fail/", _ttl_verb("critical", "/v1/agent/check/fail/")),
    ("PUT", "/v1/agent/check/update/", check_update),
    ("PUT", "/v1/agent/maintenance", node_maintenance),
    ("PUT", "/v1/agent/reload", reload),
    ("PUT", "/v1/agent/leave", leave),
    ("PUT", "/v1/agent/join/", join),
    ("PUT", "/v1/agent/force-leave/", force_leave),
    ("GET", "/v1/agent/monitor", monitor),
]

