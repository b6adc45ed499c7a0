"""/v1/connect/intentions and /v1/agent/connect/authorize (reference/connect.md §2.5, §2.6).

    GET    /v1/connect/intentions                       every intention, by precedence (blocking)
    POST   /v1/connect/intentions                       create one: {"ID": "<uuid>"}
    GET    /v1/connect/intentions/exact?source=&destination=     one (404 Intention not found)
    PUT    /v1/connect/intentions/exact?source=&destination=     upsert its action: true
    DELETE /v1/connect/intentions/exact?source=&destination=     true
    GET    /v1/connect/intentions/match?by=source|destination&name=...  name -> matching, in order
    GET    /v1/connect/intentions/check?source=&destination=     {"Allowed": bool}
    GET|PUT|DELETE /v1/connect/intentions/<id>          by the ID the legacy create gave
    POST   /v1/agent/connect/authorize                  {"Authorized", "Reason"} for a client cert

Intentions live in `service-intentions` config entries, one per destination
(appliance/connect/intentions.py is the view and the rules). A change reads the destination's
entry, changes its sources and writes it back compare-and-set on its ModifyIndex, retrying when
another write came first; removing the last source deletes the entry. Authorization reads the
local store (every agent replicates it), so it answers at once; the intentions in evaluation order
are built once per change of the service-intentions entries.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from appliance.api.gojson import ANY, INT, STRING, STRING_MAP, DecodeError, List, Map, Struct, decode
from appliance.connect import entries, intentions, spiffe
from appliance.http.context import HTTPContext
from appliance.http.encoding import read_json
from appliance.http.errors import HTTPError
from appliance.http.handlers.connect_ca import connect_agent
from appliance.http.paths import INTENTION_PREFIX as PREFIX, path_tail
from appliance.http.query import QueryOptions, blocking, compiled_filter, read_point
from appliance.http.values import Answer, Request, json_answer
from appliance.state import watchkeys
from appliance.state.fsm import CommandError

KEY = watchkeys.config_kind(entries.INTENTIONS)
MAX_META = 64
CAS_ATTEMPTS = 16
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
INTENTION = Struct("structs.Intention", {
    "ID": STRING, "Description": STRING, "SourcePeer": STRING, "SourceNS": STRING, "SourceName": STRING,
    "DestinationNS": STRING, "DestinationName": STRING, "SourcePartition": STRING, "DestinationPartition": STRING,
    "SourceType": STRING, "Action": STRING, "Permissions": List(Map(ANY)), "Meta": STRING_MAP, "Precedence": INT,
    "CreatedAt": ANY, "UpdatedAt": ANY, "Hash": ANY, "LegacyID": STRING,
}, ignored=("CreateIndex", "ModifyIndex", "DefaultAddr", "DefaultPort"))
AUTHORIZE = Struct("structs.ConnectAuthorizeRequest", {
    "Target": STRING, "ClientCertURI": STRING, "ClientCertSerial": STRING, "Namespace": STRING, "Partition": STRING})


def _all(ctx: HTTPContext) -> list[dict[str, Any]]:
    """Every intention in evaluation order, built once per index of the intentions (callers do not
    change the list)."""
    agent = connect_agent(ctx)
    index = ctx.store.index_of(KEY)
    cached = agent.intentions
    if cached is not None and cached[0] == index:
        return cached[1]
    found = intentions.every(ctx.store.connect.entries_of(entries.INTENTIONS))
    agent.intentions = (index, found)
    return found


def _param(req: Request, name: str) -> str:
    value = req.query.get(name, "")
    if not value:
        raise HTTPError(500, f"required query parameter '{name}' not set")
    return value


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _decode(req: Request) -> dict[str, Any]:
    body = read_json(req)
    try:
        out: dict[str, Any] = decode(body, INTENTION) if body is not None else {}
        return out
    except DecodeError as err:
        raise HTTPError(400, f"Request decode failed: {err}") from None


def _check_legacy(ixn: dict[str, Any]) -> None:
    """Consul's Intention.Validate texts (500s, as its RPC errors are)."""
    for field in ("SourceName", "DestinationName"):
        value = ixn.get(field) or ""
        if not value:
            raise HTTPError(500, f"{field} must be set")
        if "*" in value and value != "*":
            raise HTTPError(500, f"{field}: wildcard character '*' cannot be used with partial values")
    if ixn.get("Permissions"):
        if ixn.get("Action"):
            raise HTTPError(500, "Action must be empty if Permissions are set")
    elif (ixn.get("Action") or "").lower() not in ("allow", "deny"):
        raise HTTPError(500, "Action must be set to 'allow' or 'deny'")
    if (ixn.get("SourceType") or "consul") != "consul":
        raise HTTPError(500, "SourceType must be set to 'consul'")
    if len(ixn.get("Meta") or {}) > MAX_META:
        raise HTTPError(500, f"Meta exceeds maximum element count {MAX_META}")
    if len(ixn.get("Description") or "") > intentions.MAX_DESCRIPTION:
        raise HTTPError(500, f"Description exceeds maximum length {intentions.MAX_DESCRIPTION}")


def _source(ixn: dict[str, Any], prev: dict[str, Any] | None, legacy_id: str) -> dict[str, Any]:
    """A legacy Intention as a source of its destination's entry (times and ID kept from `prev`)."""
    src: dict[str, Any] = {"Name": ixn["SourceName"], "Type": ixn.get("SourceType") or "consul",
                           "Description": ixn.get("Description", "")}
    if ixn.get("SourcePeer"):
        src["Peer"] = ixn["SourcePeer"]
    if ixn.get("Permissions"):
        src["Permissions"] = ixn["Permissions"]
    else:
        src["Action"] = ixn["Action"].lower()
    now = _now()
    legacy_id = legacy_id or (prev or {}).get("LegacyID", "")
    if legacy_id:
        src.update(LegacyID=legacy_id, LegacyMeta=ixn.get("Meta") or {},
                   LegacyCreateTime=(prev or {}).get("LegacyCreateTime") or now, LegacyUpdateTime=now)
    return src


Change = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


async def modify(ctx: HTTPContext, destination: str, change: Change) -> None:
    """Read the destination's entry, change its sources, write it back (CAS, retried)."""
    for _ in range(CAS_ATTEMPTS):
        await read_point(ctx.consensus, QueryOptions())
        entry = ctx.store.connect.entry(entries.INTENTIONS, destination)
        sources = change([dict(s) for s in (entry or {}).get("Sources") or ()])
        cmd: dict[str, Any] = {"Type": "config_entry", "Kind": entries.INTENTIONS, "Name": destination,
                               "CAS": entry["ModifyIndex"] if entry else 0}
        if sources:
            new = {k: v for k, v in (entry or {}).items() if not k.endswith("Index")}
            new.update(Kind=entries.INTENTIONS, Name=destination, Sources=sources)
            try:
                cmd.update(Op="set", Entry=intentions.check_sources(new, legacy_allowed=True))
            except entries.EntryError as err:
                raise HTTPError(500, str(err)) from None
        elif entry is None:
            return
        else:
            cmd["Op"] = "delete"
        try:
            if await ctx.consensus.propose(cmd):
                return
        except CommandError as err:
            raise HTTPError(500, str(err)) from None
    raise HTTPError(500, "intention write kept conflicting with other writes; try again")


def by_id(ctx: HTTPContext, ident: str) -> dict[str, Any] | None:
    for ixn in _all(ctx):
        if ixn.get("ID") == ident:
            return ixn
    return None


# ------------------------------------------------------------------------------------ handlers


async def intention_list(req: Request, ctx: HTTPContext) -> Answer:
    keep = compiled_filter(req, "intentions")

    def render() -> list[dict[str, Any]]:
        found = _all(ctx)
        return found if keep is None else [x for x in found if keep(x)]

    body, headers = await blocking(req, ctx, index=lambda: ctx.store.index_of(KEY), keys=(KEY,), render=render)
    return json_answer(req, body, headers=headers)


async def create(req: Request, ctx: HTTPContext) -> Answer:
    ixn = _decode(req)
    if ixn.get("ID"):
        raise HTTPError(500, "ID must be empty when creating a new intention")
    _check_legacy(ixn)
    ident = str(uuid.uuid4())

    def add(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for src in sources:
            if src["Name"] == ixn["SourceName"] and not src.get("Peer"):
                found = intentions.legacy({"Name": ixn["DestinationName"]}, src)
                raise HTTPError(500, f"duplicate intention found: {intentions.describe(found)}")
        return [*sources, _source(ixn, None, ident)]

    await modify(ctx, ixn["DestinationName"], add)
    return json_answer(req, {"ID": ident})


def _exact_params(req: Request) -> tuple[str, str]:
    return _param(req, "source"), _param(req, "destination")


async def exact_get(req: Request, ctx: HTTPContext) -> Answer:
    source, destination = _exact_params(req)
    await read_point(ctx.consensus, QueryOptions())
    for ixn in _all(ctx):
        if ixn["SourceName"] == source and ixn["DestinationName"] == destination:
            return json_answer(req, ixn, headers={"X-Consul-Index": str(ctx.store.index_of(KEY))})
    return Answer.text(404, "Intention not found")


async def exact_put(req: Request, ctx: HTTPContext) -> Answer:
    source, destination = _exact_params(req)
    ixn = _decode(req)
    ixn.update(SourceName=source, DestinationName=destination)
    ixn.pop("ID", None)
    _check_legacy(ixn)
    await _upsert(ctx, ixn, "")
    return json_answer(req, True)


async def _upsert(ctx: HTTPContext, ixn: dict[str, Any], legacy_id: str) -> None:
    def put(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out, done = [], False
        for src in sources:
            if src["Name"] == ixn["SourceName"] and not src.get("Peer"):
                out.append(_source(ixn, src, legacy_id))
                done = True
            else:
                out.append(src)
        return out if done else [*out, _source(ixn, None, legacy_id)]

    await modify(ctx, ixn["DestinationName"], put)


async def _remove(ctx: HTTPContext, source: str, destination: str) -> None:
    await modify(ctx, destination, lambda sources: [s for s in sources if s["Name"] != source or s.get("Peer")])


async def exact_delete(req: Request, ctx: HTTPContext) -> Answer:
    source, destination = _exact_params(req)
    await _remove(ctx, source, destination)
    return json_answer(req, True)


async def intention_match(req: Request, ctx: HTTPContext) -> Answer:
    by = req.query.get("by", "")
    if not by:
        raise HTTPError(500, "required query parameter 'by' not set")
    if by not in ("source", "destination"):
        raise HTTPError(500, "'by' parameter must be one of 'source' or 'destination'")
    names = req.query.getall("name", [])
    if not names or not all(names):
        raise HTTPError(500, "required query parameter 'name' not set")

    def render() -> dict[str, Any]:
        every = _all(ctx)
        return {name: intentions.match(every, by, name) for name in names}

    body, headers = await blocking(req, ctx, index=lambda: ctx.store.index_of(KEY), keys=(KEY,), render=render)
    return json_answer(req, body, headers=headers)


def default_allow(ctx: HTTPContext) -> bool:
    """With no matching intention: allow when ACLs are off, else the ACL default policy."""
    return not ctx.config.acl.enabled or ctx.config.acl.default_policy == "allow"


async def check(req: Request, ctx: HTTPContext) -> Answer:
    source, destination = _param(req, "source"), _param(req, "destination")
    if req.query.get("source-type", "consul") != "consul":
        raise HTTPError(500, "unsupported SourceType: " + req.query["source-type"])
    await read_point(ctx.consensus, QueryOptions())
    allowed, _ = intentions.decide(_all(ctx), source, destination, default_allow(ctx))
    return json_answer(req, {"Allowed": allowed})


def _id(req: Request) -> str:
    ident = path_tail(req, PREFIX)
    if not _UUID.match(ident):
        raise HTTPError(400, f"Request decode failed: invalid UUID format: {ident!r}")
    return ident


async def id_get(req: Request, ctx: HTTPContext) -> Answer:
    ident = _id(req)
    await read_point(ctx.consensus, QueryOptions())
    ixn = by_id(ctx, ident)
    if ixn is None:
        return Answer.text(404, "Intention not found")
    return json_answer(req, ixn, headers={"X-Consul-Index": str(ctx.store.index_of(KEY))})


async def id_put(req: Request, ctx: HTTPContext) -> Answer:
    ident = _id(req)
    ixn = _decode(req)
    _check_legacy(ixn)
    await read_point(ctx.consensus, QueryOptions())
    prev = by_id(ctx, ident)
    if prev is None:
        raise HTTPError(500, "Cannot modify non-existent intention: '" + ident + "'")
    if (prev["SourceName"], prev["DestinationName"]) != (ixn["SourceName"], ixn["DestinationName"]):
        await _remove(ctx, prev["SourceName"], prev["DestinationName"])
    await _upsert(ctx, ixn, ident)
    return json_answer(req, {"ID": ident})


async def id_delete(req: Request, ctx: HTTPContext) -> Answer:
    ident = _id(req)
    await read_point(ctx.consensus, QueryOptions())
    prev = by_id(ctx, ident)
    if prev is not None:
        await _remove(ctx, prev["SourceName"], prev["DestinationName"])
    return json_answer(req, True)


async def authorize(req: Request, ctx: HTTPContext) -> Answer:
    body = read_json(req)
    try:
        args: dict[str, Any] = decode(body, AUTHORIZE) if body is not None else {}
    except DecodeError as err:
        raise HTTPError(400, f"Request decode failed: {err}") from None
    target = args.get("Target") or ""
    if not target:
        raise HTTPError(400, "Target service must be specified")
    try:
        ident = spiffe.parse(args.get("ClientCertURI") or "")
    except spiffe.SpiffeError:
        raise HTTPError(400, "ClientCertURI not a valid Connect identifier") from None
    if not isinstance(ident, spiffe.ServiceID):
        raise HTTPError(400, "ClientCertURI not a valid Service identifier")
    allowed, reason = intentions.decide(_all(ctx), ident.service, target, default_allow(ctx))
    return json_answer(req, {"Authorized": allowed, "Reason": reason})
