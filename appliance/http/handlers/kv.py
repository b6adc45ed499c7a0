"""/v1/kv/<key>: GET (recurse, keys, separator, raw), PUT (cas, flags), DELETE (recurse, cas).

Behaviour and texts follow reference/consul-api.md §4.4. Values travel as bytes through the log;
the JSON answer carries them base64-encoded (`null` for an empty value).

Locks (reference/coordination.md §2.1): `?acquire=<session>` proposes a `kv_lock` through the
leader's lock-delay check (appliance/sessions/leader.py: `false` while the key is in lock-delay),
`?release=<session>` a `kv_unlock`; both replace the value and flags with the request's. An empty
or unknown session is Consul's 500 (`missing session`, `invalid session "<id>"`).

Keys are byte strings, as in Consul (a Go string is bytes; memdb indexes them as they are): the key
is the unescaped path after `/v1/kv/` and need not be UTF-8. A key is held as a str in which each
byte outside valid UTF-8 is one lone surrogate (routing.path_tail, "surrogateescape"), so `k%ff`,
`k%fe` and `k%ef%bf%bd` are three keys everywhere: store, log, snapshots. Output renders a key the
way Go's encoding/json does (`go_text`): each such byte becomes U+FFFD, in `Key` and in `?keys`.
Listings come in byte order, as memdb's radix tree gives them. Nothing here limits a key's length:
Consul has no key limit of its own, only the request line's (Go's http.DefaultMaxHeaderBytes, 1 MB
for the request line and headers together).
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from appliance.http.context import HTTPContext
from appliance.http.encoding import read_body
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import blocking
from appliance.http.values import Answer, Request, json_answer
from appliance.state import watchkeys
from appliance.state.fsm import CommandError

PREFIX = "/v1/kv/"
LOCK_CHECKED = "lock_checked"  # the leader's lock-delay check (appliance/sessions/leader.py)
_SURROGATE = re.compile("[\ud800-\udfff]")


def go_text(text: str) -> str:
    """A key as Go's encoding/json writes it: each byte that is not valid UTF-8 (held as one lone
    surrogate) becomes U+FFFD, one per byte, as Go's encoder replaces each undecodable byte."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def key_bytes(key: str) -> bytes:
    """A key's exact bytes (the sort key of memdb's radix tree)."""
    return key.encode("utf-8", "surrogateescape")


def byte_order(keys: list[str]) -> list[str]:
    """Keys in byte order. The store sorts by code point, which is the same order for valid UTF-8,
    but a byte outside UTF-8 (a surrogate, U+DC80-U+DCFF) sorts among the BMP there."""
    if all(k.isascii() for k in keys):
        return keys
    return sorted(keys, key=key_bytes)


def dir_entry(rec: dict[str, Any]) -> dict[str, Any]:
    out = {
        "LockIndex": rec["LockIndex"],
        "Key": go_text(rec["Key"]),
        "Flags": rec["Flags"],
        "Value": base64.b64encode(rec["Value"]).decode() if rec["Value"] else None,
    }
    if rec.get("Session"):
        out["Session"] = rec["Session"]
    out["CreateIndex"] = rec["CreateIndex"]
    out["ModifyIndex"] = rec["ModifyIndex"]
    return out


def list_keys(keys: list[str], prefix: str, separator: str) -> list[str]:
    """Keys under prefix (in byte order), rolled up at the first separator after the prefix (like
    S3), rendered as Go renders them (`go_text`)."""
    out: list[str] = []
    for key in keys:
        if separator:
            cut = key.find(separator, len(prefix))
            if cut != -1:
                key = key[: cut + len(separator)]
        if not out or out[-1] != key:
            out.append(key)
    return [go_text(k) for k in out]


def _separator(req: Request) -> str:
    """`?separator` (or Consul's old spelling `?seperator`), unescaped to bytes like the key: the
    decoded query replaces bytes outside UTF-8 with U+FFFD, so such a value is read again raw."""
    q = req.query
    name = "separator" if "separator" in q else "seperator"
    value = q.get(name, "")
    if "\ufffd" not in value:
        return value
    raw = req.raw_path.partition("?")[2]
    for k, v in parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"):
        if k == name:
            return v
    return value


def _uint_param(req: Request, name: str, error: str) -> int | None:
    if name not in req.query:
        return None
    try:
        value = int(req.query[name])
        if value < 0 or value >= 2**64:
            raise ValueError
        return value
    except ValueError:
        raise HTTPError(400, error) from None


async def get(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    key = path_tail(req, PREFIX, keep_bytes=True)
    q = req.query
    if "keys" in q:
        separator = _separator(req)
        body, headers = await blocking(
            req, ctx, index=lambda: store.kv_index(key), prefixes=(key,), replayable=True,
            render=lambda: list_keys(byte_order(list(store.kv_prefix_keys(key))), key, separator))
        if not body and key:
            return Answer(404, headers)
        return json_answer(req, body, headers=headers)
    if "recurse" in q:
        body, headers = await blocking(
            req, ctx, index=lambda: store.kv_index(key), prefixes=(key,), replayable=True,
            render=lambda: [dir_entry(store.kv[k]) for k in byte_order(list(store.kv_prefix_keys(key)))])
        if not body:
            return Answer(404, headers)
        return json_answer(req, body, headers=headers)
    if not key:
        raise HTTPError(400, "Missing key name")
    rec, headers = await blocking(req, ctx, index=lambda: store.kv_index(key, exact=True), keys=(watchkeys.kv(key),),
                                  render=lambda: store.kv_get(key))
    if rec is None:
        return Answer(404, headers)
    if "raw" in q:
        headers.update({"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
        return Answer(200, headers, rec["Value"] or b"", "text/plain")
    return json_answer(req, [dir_entry(rec)], headers=headers)


async def put(req: Request, ctx: HTTPContext) -> Answer:
    key = path_tail(req, PREFIX, keep_bytes=True)
    if not key:
        raise HTTPError(400, "Missing key name")
    q = req.query
    if "cas" in q and ("acquire" in q or "release" in q):
        raise HTTPError(400, f"Conflicting flags: {urlencode(list(q.items()))}")
    flags = _uint_param(req, "flags", "Invalid flags") or 0
    cas = _uint_param(req, "cas", "Invalid cas index")
    limit = ctx.config.limits.kv_max_value_size
    length = req.content_length
    if length is not None and length > limit:
        raise HTTPError(
            413,
            f"Request body({length} bytes) too large, max size: {limit} bytes. "
            "See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.",
        )
    data = read_body(req, limit)
    cmd: dict[str, Any] = {"Type": "kv_set", "Verb": "set", "Key": key, "Flags": flags, "Value": data or None}
    if cas is not None:
        cmd.update(Verb="cas", Index=cas)
    elif "acquire" in q:
        cmd = {"Type": LOCK_CHECKED, "Command": {"Type": "kv_lock", "Key": key, "Flags": flags, "Value": data or None,
                                                 "Session": q["acquire"]}}
    elif "release" in q:
        cmd = {"Type": "kv_unlock", "Key": key, "Flags": flags, "Value": data or None, "Session": q["release"]}
    try:
        result = await ctx.consensus.propose(cmd)
    except CommandError as err:
        raise HTTPError(500, str(err)) from None
    return json_answer(req, bool(result))


async def delete(req: Request, ctx: HTTPContext) -> Answer:
    key = path_tail(req, PREFIX, keep_bytes=True)
    recurse = "recurse" in req.query
    cas = _uint_param(req, "cas", "Invalid cas index")
    if cas is not None and recurse:
        raise HTTPError(400, "Conflicting flags: cas and recurse")
    if not key and not recurse:
        raise HTTPError(400, "Missing key name")
    cmd: dict[str, Any] = {"Type": "kv_delete", "Key": key, "Recurse": recurse}
    if cas is not None:
        cmd["Index"] = cas
    result = await ctx.consensus.propose(cmd)
    return json_answer(req, bool(result))
