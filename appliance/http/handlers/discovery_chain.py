"""/v1/discovery-chain/<service>: the compiled discovery chain (reference/connect.md §4).

    GET  /v1/discovery-chain/<service>[?compile-dc=dc2]   {"Chain": ...} (blocking)
    POST /v1/discovery-chain/<service>                    the same, with overrides in the body:
         {"OverrideConnectTimeout": "10s", "OverrideProtocol": "http",
          "OverrideMeshGateway": {"Mode": "local"}}

The chain is compiled from the stored config entries by appliance/connect/chain.py; a blocking
read waits on the entry kinds a chain reads and on the CA (whose trust domain names the targets).
A POST answers at once: its body is part of the answer, so it is not cached with the GETs.
"""

from __future__ import annotations

from typing import Any

from appliance.api.gojson import STRING, DecodeError, Struct, decode
from appliance.connect import authority, chain, entries
from appliance.http.context import HTTPContext
from appliance.http.encoding import read_json
from appliance.http.errors import HTTPError
from appliance.http.handlers.connect_ca import ensure_ca
from appliance.http.paths import DISCOVERY_CHAIN_PREFIX as PREFIX, path_tail
from appliance.http.query import blocking, meta_headers, query_options, read_point
from appliance.http.values import Answer, Request, json_answer
from appliance.state import watchkeys

KEYS = (*(watchkeys.config_kind(k) for k in (entries.SERVICE_DEFAULTS, entries.PROXY_DEFAULTS, entries.ROUTER,
                                             entries.SPLITTER, entries.RESOLVER)), watchkeys.CONNECT_CA)
OVERRIDES = Struct("discoverychain.discoveryChainReadRequest", {
    "OverrideConnectTimeout": entries.DURATION, "OverrideProtocol": STRING,
    "OverrideMeshGateway": Struct("structs.MeshGatewayConfig", {"Mode": STRING})})
MESH_GATEWAY_MODES = ("", "none", "local", "remote")


def _overrides(req: Request) -> chain.Overrides:
    if req.method != "POST":
        return chain.Overrides()
    body = read_json(req)
    try:
        args: dict[str, Any] = decode(body, OVERRIDES) if body is not None else {}
    except DecodeError as err:
        raise HTTPError(400, f"Request decoding failed: {err}") from None
    mode = (args.get("OverrideMeshGateway") or {}).get("Mode", "")
    if mode not in MESH_GATEWAY_MODES:
        raise HTTPError(400, "Invalid OverrideMeshGateway.Mode parameter")
    return chain.Overrides(args.get("OverrideConnectTimeout", ""), (args.get("OverrideProtocol") or "").lower(), mode)


async def read(req: Request, ctx: HTTPContext) -> Answer:
    service = path_tail(req, PREFIX)
    if not service:
        raise HTTPError(400, "Missing chain name")
    overrides = _overrides(req)
    dc = req.query.get("compile-dc") or ctx.config.datacenter
    await ensure_ca(ctx)
    tables = ctx.store.connect

    def render() -> dict[str, Any]:
        try:
            return {"Chain": chain.compile_chain(tables.entries, service, dc, authority.trust_domain(tables),
                                                 overrides)}
        except entries.EntryError as err:
            raise HTTPError(500, str(err)) from None

    if req.method == "POST":  # the body shapes the answer: not for the render cache, answered at once
        opts = query_options(req)
        await read_point(ctx.consensus, opts)
        headers = meta_headers(ctx.consensus, ctx.store.index_of(*KEYS), opts, False)
        return json_answer(req, render(), headers=headers)
    body, headers = await blocking(req, ctx, index=lambda: ctx.store.index_of(*KEYS), keys=KEYS, render=render)
    return json_answer(req, body, headers=headers)
