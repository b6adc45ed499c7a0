"""/v1/kv/<key>: GET (recurse, keys, separator, raw), PUT (cas, flags), DELETE (recurse, cas).

Behaviour and texts follow reference/consul-api.md §4.4. Values travel as bytes through the log;
the JSON answer carries them base64-encoded (`null` for an empty value). Sessions and locks
(`acquire`, `release`) come with the sessions API and are refused until then.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from appliance.http.encoding import json_response, read_body
from appliance.http.errors import HTTPError
from appliance.http.query import blocking
from appliance.http.routing import path_tail

PREFIX = "/v1/kv/"


def dir_entry(rec: dict[str, Any]) -> dict[str, Any]:
    out = {
        "LockIndex": rec["LockIndex"],
        "Key": rec["Key"],
        "Flags": rec["Flags"],
        "Value": base64.b64encode(rec["Value"]).decode() if rec["Value"] else None,
    }
    if rec.get("Session"):
        out["Session"] = rec["Session"]
    out["CreateIndex"] = rec["CreateIndex"]
    out["ModifyIndex"] = rec["ModifyIndex"]
    return out


def list_keys(keys: list[str], prefix: str, separator: str) -> list[str]:
    """Keys under prefix, rolled up at the first separator after the prefix (like S3)."""
    out: list[str] = []
    for key in keys:
        if separator:
            cut = key.find(separator, len(prefix))
            if cut != -1:
                key = key[: cut + len(separator)]
        if not out or out[-1] != key:
            out.append(key)
    return out


def _uint_param(request: web.Request, name: str, error: str) -> int | None:
    if name not in request.query:
        return None
    try:
        value = int(request.query[name])
        if value < 0 or value >= 2**64:
            raise ValueError
        return value
    except ValueError:
        raise HTTPError(400, error) from None


async def get(request: web.Request) -> web.StreamResponse:
    store = request.app["agent"].store
    key = path_tail(request, PREFIX)
    q = request.query
    if "keys" in q:
        separator = q.get("separator", q.get("seperator", ""))
        body, headers = await blocking(
            request, index=lambda: store.kv_index(key), prefixes=(key,),
            render=lambda: list_keys(list(store.kv_prefix_keys(key)), key, separator))
        if not body and key:
            return web.Response(status=404, headers=headers)
        return json_response(request, body, headers=headers)
    if "recurse" in q:
        body, headers = await blocking(
            request, index=lambda: store.kv_index(key), prefixes=(key,),
            render=lambda: [dir_entry(r) for r in store.kv_list(key)])
        if not body:
            return web.Response(status=404, headers=headers)
        return json_response(request, body, headers=headers)
    if not key:
        raise HTTPError(400, "Missing key name")
    rec, headers = await blocking(request, index=lambda: store.kv_index(key, exact=True), keys=("kv:" + key,),
                                  render=lambda: store.kv_get(key))
    if rec is None:
        return web.Response(status=404, headers=headers)
    if "raw" in q:
        headers.update({"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
        return web.Response(body=rec["Value"] or b"", content_type="text/plain", headers=headers)
    return json_response(request, [dir_entry(rec)], headers=headers)


async def put(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    key = path_tail(request, PREFIX)
    if not key:
        raise HTTPError(400, "Missing key name")
    q = request.query
    if "cas" in q and ("acquire" in q or "release" in q):
        raise HTTPError(400, f"Conflicting flags: {urlencode(list(q.items()))}")
    if "acquire" in q or "release" in q:
        raise HTTPError(500, "Invalid session")
    flags = _uint_param(request, "flags", "Invalid flags") or 0
    cas = _uint_param(request, "cas", "Invalid cas index")
    limit = agent.config.limits.kv_max_value_size
    length = request.content_length
    if length is not None and length > limit:
        raise HTTPError(
            413,
            f"Request body({length} bytes) too large, max size: {limit} bytes. "
            "See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.",
        )
    data = await read_body(request, limit)
    cmd: dict[str, Any] = {"Type": "kv_set", "Verb": "set", "Key": key, "Flags": flags, "Value": data or None}
    if cas is not None:
        cmd.update(Verb="cas", Index=cas)
    result = await agent.consensus.propose(cmd)
    return json_response(request, bool(result))


async def delete(request: web.Request) -> web.Response:
    agent = request.app["agent"]
    key = path_tail(request, PREFIX)
    recurse = "recurse" in request.query
    cas = _uint_param(request, "cas", "Invalid cas index")
    if cas is not None and recurse:
        raise HTTPError(400, "Conflicting flags: cas and recurse")
    if not key and not recurse:
        raise HTTPError(400, "Missing key name")
    cmd: dict[str, Any] = {"Type": "kv_delete", "Key": key, "Recurse": recurse}
    if cas is not None:
        cmd["Index"] = cas
    result = await agent.consensus.propose(cmd)
    return json_response(request, bool(result))


ROUTES = [
    ("GET", PREFIX, get),
    ("PUT", PREFIX, put),
    ("DELETE", PREFIX, delete),
]
