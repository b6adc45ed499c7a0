"""PUT /v1/txn: up to 128 KV, node, service and check operations, all applied or none.

The body is decoded as Consul's HTTP layer does (reference/coordination.md §3.1): a body over
max(txn_max_req_len, kv_max_value_size) is a 413, JSON that does not parse a 400 `Failed to parse
body: ...`, more than 128 operations a 413, a KV value over kv_max_value_size a 413. Then every
operation is checked before anything is written (`Must provide key`, an unknown verb, an
operation of no type): each failing one is reported with its OpIndex in a 409, and nothing is
written. A transaction without writes is served from this agent's store at the asked consistency
(`?stale`, default, `?consistent`), with no log entry. One with writes is one `txn` command,
applied all or none at one index (appliance/state/txn.py); one holding a `lock` goes through the
leader's lock-delay check (appliance/sessions/leader.py). Errors answer 409 with the response
object (`Results` null); success 200.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from appliance.api.gojson import json_kind
from appliance.api.structs import TXN_OP
from appliance.http.context import HTTPContext
from appliance.http.encoding import decode_body, decode_json, read_body
from appliance.http.errors import HTTPError
from appliance.http.handlers.catalog import _catalog_check, _catalog_service
from appliance.http.handlers.kv import LOCK_CHECKED, dir_entry, go_text
from appliance.http.query import meta_headers, query_options, read_point
from appliance.http.values import Answer, Request, json_answer
from appliance.local.definitions import DefinitionError
from appliance.state import txn
from appliance.state.commands import MAX_TXN_OPS
from appliance.state.fsm import CommandError

KV_VERBS = frozenset({"set", "delete", "delete-cas", "delete-tree", "cas", "lock", "unlock", "get", "get-tree",
                      "check-index", "check-session", "check-not-exists"})
CATALOG_VERBS = frozenset({"get", "set", "cas", "delete", "delete-cas"})


def _kv_op(raw: dict[str, Any], max_value: int) -> dict[str, Any]:
    value = raw.get("Value")
    if value is not None:
        if not isinstance(value, str):
            raise HTTPError(400, "Failed to parse body: failed to decode value: illegal base64 data")
        try:
            value = base64.b64decode(value, validate=True) or None
        except (binascii.Error, ValueError) as err:
            raise HTTPError(400, f"Failed to parse body: failed to decode value: {err}") from None
    key = raw.get("Key", "")
    if value is not None and len(value) > max_value:
        raise HTTPError(413, f'Value for key "{key}" is too large ({len(value)} > {max_value} bytes)')
    op: dict[str, Any] = {"Verb": raw.get("Verb", ""), "Key": key, "Value": value}
    for name in ("Flags", "Index", "Session"):
        if name in raw:
            op[name] = raw[name]
    return op


class _Undecodable(HTTPError):
    """A body Go's decoder would refuse: the whole request is a 400, not one operation's error."""


def _field(record: dict[str, Any], name: str, kind: type, struct: str) -> Any:
    """A field of a Service or Check taken as given (Go decodes them into typed structs)."""
    value: Any = record.get(name, kind())
    ok = type(value) is str if kind is str else type(value) is int and 0 <= int(value) < 2**64
    if not ok:
        go_type = "uint64" if kind is int else "string"
        raise _Undecodable(400, f"Failed to parse body: json: cannot unmarshal {json_kind(value)} into Go struct "
                             f"field {struct}.{name} of type {go_type}")
    return value


def _catalog_op(kind: str, raw: dict[str, Any], datacenter: str) -> dict[str, Any]:
    """A Node, Service or Check operation in the shapes the store keeps (appliance/state/txn.py)."""
    verb = raw.get("Verb", "")
    writes = verb in ("set", "cas")
    if kind == "Node":
        node = dict(raw.get("Node") or {})
        node.pop("CreateIndex", None), node.pop("PeerName", None), node.pop("Namespace", None)
        node.pop("Partition", None)
        node.setdefault("Node", "")
        if not node.get("Datacenter"):
            node["Datacenter"] = datacenter
        return {"Verb": verb, "Node": node}
    if kind == "Service":
        node, svc = raw.get("Node", ""), raw.get("Service") or {}
        if not isinstance(svc, dict):
            raise DefinitionError("Service must be an object")
        index = _field(svc, "ModifyIndex", int, "NodeService")
        svc = {k: v for k, v in svc.items() if k not in ("CreateIndex", "ModifyIndex")}
        if writes:
            out = _catalog_service(svc, node, datacenter)
        else:
            out = {"ID": _field(svc, "ID", str, "NodeService") or _field(svc, "Service", str, "NodeService")}
        return {"Verb": verb, "Node": node, "Service": {**out, "ModifyIndex": index}}
    check = raw.get("Check") or {}
    if not isinstance(check, dict):
        raise DefinitionError("Check must be an object")
    node, index = _field(check, "Node", str, "HealthCheck"), _field(check, "ModifyIndex", int, "HealthCheck")
    if writes:
        out = _catalog_check(check, node)
    else:
        out = {"Node": node, "CheckID": _field(check, "CheckID", str, "HealthCheck")}
    return {"Verb": verb, "Check": {**out, "ModifyIndex": index}}


def parse_ops(body: Any, ctx: HTTPContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The operations as the `txn` command carries them, and the errors found before any write."""
    if not isinstance(body, list):
        raise HTTPError(400, "Failed to parse body: json: cannot unmarshal object into Go value of type api.TxnOps")
    if len(body) > MAX_TXN_OPS:
        raise HTTPError(413, f"Transaction contains too many operations ({len(body)} > {MAX_TXN_OPS})")
    ops: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    max_value = ctx.config.limits.kv_max_value_size
    for i, item in enumerate(body):
        try:
            decoded = decode_body(item if item is not None else {}, TXN_OP)
        except HTTPError as err:
            raise HTTPError(400, "Failed to parse body: " + err.text.removeprefix("Request decode failed: ")) from None
        kinds = [k for k in ("KV", "Node", "Service", "Check") if k in decoded]
        what = ""
        op: dict[str, Any] = {}
        if not kinds:
            what = "no operation specified"
        elif kinds[0] == "KV":
            kv_op = _kv_op(decoded["KV"], max_value)
            op = {"KV": kv_op}
            if kv_op["Verb"] not in KV_VERBS:
                what = f'unknown KV verb "{kv_op["Verb"]}"'
            elif not kv_op["Key"] and kv_op["Verb"] != "delete-tree":
                what = "Must provide key"
        else:
            kind = kinds[0]
            verb = decoded[kind].get("Verb", "")
            if verb not in CATALOG_VERBS:
                what = f'unknown {kind} verb "{verb}"'
            else:
                try:
                    op = {kind: _catalog_op(kind, decoded[kind], ctx.config.datacenter)}
                except _Undecodable:
                    raise
                except (DefinitionError, HTTPError) as err:
                    what = err.text if isinstance(err, HTTPError) else str(err)
        if what:
            errors.append({"OpIndex": i, "What": what})
        ops.append(op)
    return ops, errors


def render(result: dict[str, Any]) -> dict[str, Any]:
    results = result.get("Results")
    errors = result.get("Errors")
    out_results = None
    if results is not None:
        out_results = [{"KV": dir_entry(r["KV"])} if "KV" in r else r for r in results]
    out_errors = None
    if errors:
        out_errors = [{"OpIndex": e["OpIndex"], "What": go_text(e["What"])} for e in errors]
    return {"Results": out_results, "Errors": out_errors}


async def apply(req: Request, ctx: HTTPContext) -> Answer:
    limit = max(ctx.config.limits.txn_max_req_len, ctx.config.limits.kv_max_value_size)
    try:
        data = read_body(req, limit)
    except HTTPError:
        raise HTTPError(413, f"Request body too large, max size: {limit} bytes") from None
    try:
        body = decode_json(data)
    except HTTPError as err:
        raise HTTPError(400, "Failed to parse body: " + err.text.removeprefix("Request decode failed: ")) from None
    ops, errors = parse_ops(body if body is not None else [], ctx)
    if errors:
        return json_answer(req, {"Results": None, "Errors": errors}, status=409)
    headers: dict[str, str] = {}
    if not any(txn.is_write(op) for op in ops):
        opts = query_options(req)
        await read_point(ctx.consensus, opts)
        result = txn.read(ctx.store, ops)
        meta = meta_headers(ctx.consensus, ctx.store.last_index, opts, False)
        headers = {k: v for k, v in meta.items() if k != "X-Consul-Index"}
    else:
        cmd: dict[str, Any] = {"Type": "txn", "Ops": ops}
        if any(op.get("KV", {}).get("Verb") == "lock" for op in ops):
            cmd = {"Type": LOCK_CHECKED, "Command": cmd}
        try:
            result = await ctx.consensus.propose(cmd)
        except CommandError as err:
            raise HTTPError(500, str(err)) from None
    out = render(result)
    return json_answer(req, out, status=409 if out["Errors"] else 200, headers=headers)
