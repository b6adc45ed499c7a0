"""/v1/session/*: create, destroy, renew and the blocking reads (reference/coordination.md §1).

Create fills Consul's defaults before reading the body (Node = this agent, LockDelay 15 s,
NodeChecks and Checks ["serfHealth"]), decodes it case-insensitively (python-consul sends
`name`, `ttl`, `lockdelay`, `behavior`, `checks`), then applies Consul's rules: a LockDelay below
1000 counts in seconds (`5` and `"500ns"` are 5 s and 500 s), an explicit `null` LockDelay
keeps the default, and the empty-checks fixup (`fixup_checks`). Behavior and TTL are checked
here with Consul's texts, which are 500s with a plain-text body (Patroni matches
`Invalid Session TTL` on status 500); the node and the checks are checked when the command
applies (appliance/state/sessions.py). The TTL is kept as the string given and echoed back.

Renew is not a write: it goes to the leader as the `session_renew` leader operation
(appliance/sessions/leader.py), which resets the session's timer and answers the session, or
nothing: `404 Session id '<id>' not found`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from appliance.api.gojson import _fold, json_kind
from appliance.api.structs import SESSION_REQUEST
from appliance.config.durations import DurationError, format_duration_ns, parse_duration_ns
from appliance.http.context import HTTPContext
from appliance.http.encoding import decode_body, read_json
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import blocking
from appliance.http.values import Answer, Request, json_answer
from appliance.raft.messages import NotLeader
from appliance.state import watchkeys
from appliance.state.fsm import CommandError

DEFAULT_LOCK_DELAY_NS = 15 * 1_000_000_000
LOCK_DELAY_MIN_THRESHOLD = 1000  # below this many nanoseconds, a LockDelay counts in seconds
SESSION_TTL_MAX_NS = 24 * 3600 * 1_000_000_000
MAX_DURATION_NS = (1 << 63) - 1  # Go's time.Duration
SERF_CHECK = "serfHealth"
RENEW = "session_renew"  # the leader operation (appliance/sessions/leader.py)


def lock_delay_ns(value: Any) -> int:
    """Session.UnmarshalJSON's LockDelay: a Go duration or nanoseconds; below 1000, seconds."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise HTTPError(400, f"Request decode failed: json: cannot unmarshal {json_kind(value)} into Go struct "
                             "field Session.LockDelay of type time.Duration")
    if isinstance(value, str):
        try:
            ns = parse_duration_ns(value)
        except DurationError as err:
            raise HTTPError(400, f"Request decode failed: {err}") from None
    else:
        ns = int(value)
    if ns < LOCK_DELAY_MIN_THRESHOLD:
        ns *= 1_000_000_000
    return min(max(ns, 0), MAX_DURATION_NS)  # at most 60 s is applied (appliance/state/sessions.py)


def fixup_checks(sess: dict[str, Any]) -> None:
    """fixupEmptySessionChecks: an empty Checks means no checks at all; the default
    ["serfHealth"] in Checks defers to NodeChecks; an empty NodeChecks drops Checks."""
    checks, node_checks = sess.get("Checks"), sess.get("NodeChecks")
    if not checks:
        sess["NodeChecks"], sess["Checks"] = [], None
    elif checks == [SERF_CHECK] or not node_checks:
        sess["Checks"] = None


def session_ttl_min_ns(ctx: HTTPContext) -> int:
    return int(ctx.config.session_ttl_min_s * 1e9)


def validate_ttl(ttl: str, min_ns: int) -> None:
    if not ttl:
        return
    try:
        ns = parse_duration_ns(ttl)
    except DurationError as err:
        raise HTTPError(500, f"Session TTL '{ttl}' invalid: {err}") from None
    if ns != 0 and (ns < min_ns or ns > SESSION_TTL_MAX_NS):
        raise HTTPError(500, f"Invalid Session TTL '{ns}', must be between "
                             f"[{format_duration_ns(min_ns)}={format_duration_ns(SESSION_TTL_MAX_NS)}]")


def session_command(body: Any, node: str, session_id: str, ttl_min_ns: int) -> dict[str, Any]:
    """A create body (parsed JSON or None) as a `session_create` command."""
    if body is not None and not isinstance(body, dict):
        decode_body(body, SESSION_REQUEST)  # Go's text for a body that is not an object
    raw = body or {}
    d = decode_body(raw, SESSION_REQUEST)
    nulls = {_fold(k) for k, v in raw.items() if v is None}
    sess: dict[str, Any] = {"Node": node, "NodeChecks": [SERF_CHECK], "Checks": [SERF_CHECK],
                            "LockDelay": DEFAULT_LOCK_DELAY_NS, "Behavior": "", "TTL": "", "Name": ""}
    for name in ("Name", "Node", "Behavior", "TTL", "NodeChecks", "Checks", "ServiceChecks"):
        if name in d:
            sess[name] = d[name]
        elif _fold(name) in nulls:
            sess[name] = None  # an explicit null is Go's nil slice (or the zero string)
    if "LockDelay" in d:
        sess["LockDelay"] = lock_delay_ns(d["LockDelay"])
    fixup_checks(sess)
    sess["Name"], sess["Node"] = sess["Name"] or "", sess["Node"] or ""
    behavior = sess["Behavior"] or "release"
    if behavior not in ("release", "delete"):
        raise HTTPError(500, f"Invalid Behavior setting '{behavior}'")
    sess["Behavior"] = behavior
    sess["TTL"] = sess["TTL"] or ""
    validate_ttl(sess["TTL"], ttl_min_ns)
    if not sess["Node"]:
        raise HTTPError(500, "Must provide Node")
    sess["ServiceChecks"] = [{"ID": c.get("ID", ""), "Namespace": c.get("Namespace", "")}
                             for c in sess.get("ServiceChecks") or ()] or None
    if not sess.get("Checks"):
        sess.pop("Checks", None)
    return {"Type": "session_create", "Session": {"ID": session_id, **sess}}


def new_session_id(ctx: HTTPContext) -> str:
    while True:
        sid = str(uuid.UUID(int=ctx.rng.getrandbits(128), version=4))
        if sid not in ctx.store.sessions:
            return sid


def view(rec: dict[str, Any]) -> dict[str, Any]:
    """A stored session as Consul renders it (Checks only when not empty)."""
    if "Checks" in rec and not rec["Checks"]:
        return {k: v for k, v in rec.items() if k != "Checks"}
    return rec


async def create(req: Request, ctx: HTTPContext) -> Answer:
    start = time.monotonic()
    cmd = session_command(read_json(req), ctx.config.node_name, new_session_id(ctx), session_ttl_min_ns(ctx))
    try:
        sid = await ctx.consensus.propose(cmd)
    except CommandError as err:
        raise HTTPError(500, str(err)) from None
    finally:
        ctx.telemetry.measure_since("session.apply", start)
    return json_answer(req, {"ID": sid})


async def destroy(req: Request, ctx: HTTPContext) -> Answer:
    sid = path_tail(req, "/v1/session/destroy/")
    if not sid:
        raise HTTPError(400, "Missing session")
    start = time.monotonic()
    try:
        await ctx.consensus.propose({"Type": "session_destroy", "ID": sid})
    except CommandError as err:
        raise HTTPError(500, str(err)) from None
    finally:
        ctx.telemetry.measure_since("session.apply", start)
    return json_answer(req, True)


async def renew(req: Request, ctx: HTTPContext) -> Answer:
    sid = path_tail(req, "/v1/session/renew/")
    if not sid:
        raise HTTPError(400, "Missing session")
    try:
        rec = await ctx.consensus.propose({"Type": RENEW, "ID": sid})
    except CommandError as err:
        raise HTTPError(500, str(err)) from None
    except NotLeader:  # never a 404 for a session that may exist (clients would drop it)
        raise HTTPError(500, "No cluster leader") from None
    if not rec:
        raise HTTPError(404, f"Session id '{sid}' not found")
    return json_answer(req, [view(rec)])


async def info(req: Request, ctx: HTTPContext) -> Answer:
    sid = path_tail(req, "/v1/session/info/")
    if not sid:
        raise HTTPError(400, "Missing session")
    store = ctx.store

    def render() -> list[dict[str, Any]]:
        rec = store.session(sid)
        return [view(rec)] if rec is not None else []

    body, headers = await blocking(req, ctx, index=lambda: store.index_of(watchkeys.SESSIONS),
                                   keys=(watchkeys.SESSIONS,), render=render)
    return json_answer(req, body, headers=headers)


async def node(req: Request, ctx: HTTPContext) -> Answer:
    name = path_tail(req, "/v1/session/node/")
    if not name:
        raise HTTPError(400, "Missing node name")
    store = ctx.store
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(watchkeys.SESSIONS),
                                   keys=(watchkeys.SESSIONS,),
                                   render=lambda: [view(r) for r in store.sessions_of_node(name)])
    return json_answer(req, body, headers=headers)


async def session_list(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(watchkeys.SESSIONS),
                                   keys=(watchkeys.SESSIONS,),
                                   render=lambda: [view(r) for r in store.all_sessions()])
    return json_answer(req, body, headers=headers)
