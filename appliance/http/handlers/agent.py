"""/v1/agent/*: this agent's services, checks, maintenance, members, join, force-leave, self, reload,
leave, monitor.

Agent endpoints act on the local state (appliance.local.state), which is authoritative for this
node; every change is followed by an anti-entropy sync through the log before the answer goes
out, so a client that registers a service and then reads the catalog sees it. Shapes and texts
are reference/consul-api.md §4.1.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from appliance import logs
from appliance.api.structs import CHECK_UPDATE
from appliance.checks.rules import unsupported_check_text
from appliance.filter import FilterError
from appliance.gossip.driver import JoinError
from appliance.http import render
from appliance.http.context import HTTPContext, park
from appliance.http.encoding import decode_body, read_json
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import compiled_filter, parse_bool_param, query_options
from appliance.http.values import Answer, Request, StreamAnswer, json_answer
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


async def _changed(ctx: HTTPContext) -> None:
    """Local state changed: sync it to the catalog now and wake hash-blocked readers."""
    await ctx.control.changed()


# ---------------------------------------------------------------------------------------- reads


async def self_(req: Request, ctx: HTTPContext) -> Answer:
    return json_answer(req, render.self_info(ctx))


async def version(req: Request, ctx: HTTPContext) -> Answer:
    return json_answer(req, render.version_info())


async def members(req: Request, ctx: HTTPContext) -> Answer:
    wan = parse_bool_param(req, "wan")
    segment = req.query.get("segment")
    if wan and segment:
        raise HTTPError(400, "Cannot provide a segment with wan=true")
    if segment == "_all":  # Consul's AllSegments: every member
        segment = None
    return json_answer(req, [render.member_json(m) for m in ctx.membership.members(wan=wan, segment=segment)])


async def join(req: Request, ctx: HTTPContext) -> Answer:
    """PUT /v1/agent/join/<address>[?wan]: join the LAN (or WAN) pool through the agent at that address."""
    address = path_tail(req, "/v1/agent/join/")
    wan = parse_bool_param(req, "wan")
    if not address:
        raise HTTPError(400, "Missing address to join")
    try:
        await ctx.membership.join([address], wan=wan)
    except JoinError as err:
        raise HTTPError(500, str(err)) from None
    return Answer()


async def force_leave(req: Request, ctx: HTTPContext) -> Answer:
    """PUT /v1/agent/force-leave/<node>[?prune][?wan]: mark a failed member left (prune: forget it)."""
    node = path_tail(req, "/v1/agent/force-leave/")
    prune = parse_bool_param(req, "prune")
    wan = parse_bool_param(req, "wan")  # a member of the WAN pool, named <node>.<dc>
    if not node:
        raise HTTPError(400, "Missing node name to force leave")
    try:
        ctx.membership.force_leave(node, prune=prune, wan=wan)
    except KeyError as err:
        raise HTTPError(500, err.args[0]) from None
    return Answer()


async def services(req: Request, ctx: HTTPContext) -> Answer:
    keep = compiled_filter(req, "agent_services")
    out = {}
    for sid in sorted(ctx.local.services):
        svc = ctx.local.agent_service(ctx.local.services[sid].definition)
        if keep is None or keep(svc):
            out[sid] = svc
    return json_answer(req, out)


def _hash(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


async def service(req: Request, ctx: HTTPContext) -> Answer:
    """AgentService with ContentHash; `?hash=&wait=` blocks until the hash differs."""
    sid = path_tail(req, "/v1/agent/service/")

    def render() -> dict[str, Any]:
        try:
            svc = ctx.local.agent_service(ctx.local.service(sid))
        except NotFound as err:
            raise HTTPError(404, str(err)) from None
        svc["ContentHash"] = _hash(svc)
        return svc

    opts = query_options(req)
    body = render()
    want = req.query.get("hash", "")
    if want and want == body["ContentHash"]:
        wait = min(opts.wait_s or ctx.config.default_query_time_s, ctx.config.max_query_time_s)
        deadline = time.monotonic() + wait + ctx.rng.uniform(0, wait / 16)
        while body["ContentHash"] == want and (remaining := deadline - time.monotonic()) > 0 and not ctx.stopping:
            await park(ctx, ("local",), (), remaining)
            body = render()
    return json_answer(req, body, headers={"X-Consul-ContentHash": body["ContentHash"]})


async def checks(req: Request, ctx: HTTPContext) -> Answer:
    keep = compiled_filter(req, "agent_checks")
    out = {}
    for cid in sorted(ctx.local.checks):
        check = ctx.local.health_check(ctx.local.checks[cid])
        try:
            if keep is None or keep(check):
                out[cid] = check
        except FilterError as err:  # selector errors surface on the first check (Consul does the same)
            raise HTTPError(400, str(err)) from None
    return json_answer(req, out)


def _service_health(ctx: HTTPContext, sid: str) -> tuple[str, dict[str, Any]]:
    local = ctx.local
    svc = local.agent_service(local.service(sid))
    own = [local.health_check(c) for c in local.checks.values()
           if c.definition.service_id == sid or not c.definition.service_id]
    status = aggregated_status(own)
    return status, {"AggregatedStatus": status, "Service": svc, "Checks": own}


_CODES = {"passing": 200, "warning": 429, "critical": 503, "maintenance": 503}


def _wants_text(req: Request) -> bool:
    return req.query.get("format") == "text" or req.headers.get("Accept", "").startswith("text/plain")


async def health_service_id(req: Request, ctx: HTTPContext) -> Answer:
    sid = path_tail(req, "/v1/agent/health/service/id/")
    text = _wants_text(req)
    try:
        status, body = _service_health(ctx, sid)
    except NotFound:
        reason = f"ServiceId {sid} not found"
        if text:
            return Answer.text(404, reason, {"X-Consul-Reason": reason})
        return json_answer(req, {"AggregatedStatus": "critical", "Service": None, "Checks": None},
                             status=404, headers={"X-Consul-Reason": reason})
    code = _CODES[status]
    if text:
        return Answer.text(code, status, {"X-Consul-Reason": status})
    return json_answer(req, body, status=code, headers={"X-Consul-Reason": status})


async def health_service_name(req: Request, ctx: HTTPContext) -> Answer:
    name = path_tail(req, "/v1/agent/health/service/name/")
    text = _wants_text(req)
    found = [_service_health(ctx, sid) for sid, s in sorted(ctx.local.services.items())
             if s.definition.name == name]
    if not found:
        reason = f"ServiceName {name} Not Found"
        if text:
            return Answer.text(404, reason, {"X-Consul-Reason": reason})
        return json_answer(req, [], status=404, headers={"X-Consul-Reason": reason})
    rank = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}
    worst = max((status for status, _ in found), key=lambda s: rank[s])
    code = _CODES[worst]
    if text:
        return Answer.text(code, worst, {"X-Consul-Reason": worst})
    return json_answer(req, [body for _, body in found], status=code, headers={"X-Consul-Reason": worst})


# ---------------------------------------------------------------------------------------- writes


def _refuse_remote_scripts(ctx: HTTPContext, kinds: list[str]) -> None:
    for kind in kinds:
        if text := unsupported_check_text(kind):
            raise HTTPError(400, text)
    if "script" in kinds and not ctx.config.enable_script_checks:
        raise HTTPError(500, SCRIPTS_DISABLED)


def _with_token(req: Request, body: Any) -> Any:
    """A registration keeps the token it was made with (anti-entropy writes it with that token,
    appliance/local/sync.py, and it is persisted with the body): the request's, unless the body
    names its own `Token`."""
    if req.token and isinstance(body, dict) and not any(isinstance(k, str) and k.lower() == "token" for k in body):
        return {**body, "Token": req.token}
    return body


async def service_register(req: Request, ctx: HTTPContext) -> Answer:
    replace_checks = parse_bool_param(req, "replace-existing-checks")
    body = _with_token(req, read_json(req, empty={}))
    try:
        svc = parse_service_definition(body)
    except DefinitionError as err:
        raise _decode_error(err) from None
    if svc.name and not all(ch.isalnum() or ch == "-" for ch in svc.name):
        ctx.log.warning(f'Service name "{svc.name}" will not be discoverable via DNS due to invalid '
                          "characters. Valid characters include all alpha-numerics and dashes.")
    _refuse_remote_scripts(ctx, [c.kind for c in svc.checks])
    try:
        ctx.local.add_service(svc, source="api", now=time.monotonic(), replace_existing_checks=replace_checks,
                               raw=body)
    except DefinitionError as err:  # a sidecar that cannot be expanded (no port left)
        raise HTTPError(400, str(err)) from None
    await _changed(ctx)
    return Answer()


async def service_deregister(req: Request, ctx: HTTPContext) -> Answer:
    sid = path_tail(req, "/v1/agent/service/deregister/")
    try:
        ctx.local.remove_service(sid)
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    await _changed(ctx)
    return Answer()


async def check_register(req: Request, ctx: HTTPContext) -> Answer:
    body = _with_token(req, read_json(req, empty={}))
    try:
        check = parse_check_definition(body)
    except DefinitionError as err:
        text = str(err)
        if text.startswith("Status for checks"):
            text = "Bad check status"
        raise _decode_error(DefinitionError(text) if type(err) is DefinitionError else err) from None
    _refuse_remote_scripts(ctx, [check.kind])
    try:
        ctx.local.add_check(check, source="api", now=time.monotonic(), raw=body)
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    await _changed(ctx)
    return Answer()


async def check_deregister(req: Request, ctx: HTTPContext) -> Answer:
    cid = path_tail(req, "/v1/agent/check/deregister/")
    try:
        ctx.local.remove_check(cid)
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    await _changed(ctx)
    return Answer()


async def _set_ttl(req: Request, ctx: HTTPContext, cid: str, status: str, output: str) -> Answer:
    try:
        ctx.local.update_ttl(cid, status, output, time.monotonic())
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    except ValueError as err:
        raise HTTPError(500, str(err)) from None
    await _changed(ctx)
    return Answer()


def _ttl_verb(status: str, prefix: str) -> Any:
    async def handler(req: Request, ctx: HTTPContext) -> Answer:
        return await _set_ttl(req, ctx, path_tail(req, prefix), status, req.query.get("note", ""))

    handler.__name__ = f"check_{status}"
    return handler


check_pass = _ttl_verb("passing", "/v1/agent/check/pass/")
check_warn = _ttl_verb("warning", "/v1/agent/check/warn/")
check_fail = _ttl_verb("critical", "/v1/agent/check/fail/")


async def check_update(req: Request, ctx: HTTPContext) -> Answer:
    cid = path_tail(req, "/v1/agent/check/update/")
    d = decode_body(read_json(req, empty={}), CHECK_UPDATE)
    status = d.get("Status", "")
    if status not in STATUSES:
        raise HTTPError(400, f"Invalid check status: '{status}'")
    return await _set_ttl(req, ctx, cid, status, d.get("Output", ""))


def _enable_param(req: Request) -> bool:
    if "enable" not in req.query:
        raise HTTPError(400, "Missing value for enable")
    raw = req.query["enable"]
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise HTTPError(400, f'Invalid value for enable: "{raw}"')


async def service_maintenance(req: Request, ctx: HTTPContext) -> Answer:
    sid = path_tail(req, "/v1/agent/service/maintenance/")
    enable = _enable_param(req)
    try:
        ctx.local.set_service_maintenance(sid, enable, req.query.get("reason", ""), req.token)
    except NotFound as err:
        raise HTTPError(404, str(err)) from None
    ctx.log.info(f"{'Service entered' if enable else 'Service left'} maintenance mode: service={sid}")
    await _changed(ctx)
    return Answer()


async def node_maintenance(req: Request, ctx: HTTPContext) -> Answer:
    enable = _enable_param(req)
    ctx.local.set_node_maintenance(enable, req.query.get("reason", ""), req.token)
    ctx.log.info("Node entered maintenance mode" if enable else "Node left maintenance mode")
    await _changed(ctx)
    return Answer()


async def reload(req: Request, ctx: HTTPContext) -> Answer:
    try:
        await ctx.control.reload()
    except Exception as err:  # noqa: BLE001 - a failed reload keeps the running config
        raise HTTPError(500, f"Failed reloading: {err}") from None
    return Answer()


async def leave(req: Request, ctx: HTTPContext) -> Answer:
    await ctx.control.leave()  # leaves the gossip pool gracefully, then shuts down
    return Answer()


async def monitor(req: Request, ctx: HTTPContext) -> Answer:
    level_name = req.query.get("loglevel", "info")
    try:
        level = logs.parse_level(level_name)
    except logs.UnknownLevel:
        raise HTTPError(400, f"Unknown log level: {level_name}") from None
    sub = logs.Subscriber(level, "logjson" in req.query)

    async def lines() -> AsyncIterator[bytes]:
        logs.monitor.subscribers.add(sub)
        try:
            while True:
                line = await sub.queue.get()
                yield line.encode() + b"\n"
        finally:
            logs.monitor.subscribers.discard(sub)

    return StreamAnswer(lines())
