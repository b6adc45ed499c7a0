"""The web UI: its static files under /ui/ and the internal endpoints its pages read
(/v1/internal/ui/services, nodes, node/<name>; reference/ui.md §1-2).

Static files come from the package (appliance/ui/static, shipped in the wheel) or from
`ui_config.dir`, under `ui_config.content_path` (the table routes /ui/; another content path is
one more route the agent adds, routes.ui_content_routes, and /ui/ then redirects there).
`index.html` is rendered per request with the page's settings in a
`<script type="application/json" id="cairn-ui-config">` element (the JSON escaped so no value can
close the tag; the metrics proxy's headers are never in it). A path without a file extension that
names no file is a page of the single-page app and gets index.html; a missing asset is a 404.
Every UI answer carries an explicit Content-Type, nosniff and a strict Content-Security-Policy.

The internal endpoints are blocking reads with Consul's shapes: a service listing with health
counts over unique (node, CheckID) pairs, node checks included (Consul's summarizeServices), and
NodeInfo dumps. With ACLs on, what the token may not read is left out of the answer.
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.http.authz import FILTERED, IDENTITY, acl_agent
from appliance.http.context import HTTPContext
from appliance.http.encoding import dumps
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import blocking
from appliance.http.values import Answer, Request, json_answer
from appliance.state import watchkeys
from appliance.state.store import Store

STATIC = Path(__file__).resolve().parents[2] / "ui" / "static"
PREFIX = "/ui/"
NODE_PREFIX = "/v1/internal/ui/node/"
CONFIG_MARK = "/*CAIRN_UI_CONFIG*/{}"
BASE_MARK = '<base href="/ui/">'
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'")
NOT_API = "Invalid URL path: if attempting to use the HTTP API, ensure the path starts with '/v1/'"
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
         ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json", ".txt": "text/plain",
         ".ico": "image/x-icon", ".woff2": "font/woff2"}
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def ui_on(ctx: HTTPContext) -> bool:
    return ctx.config.ui_enabled or bool(ctx.config.ui_dir)


def page_config(ctx: HTTPContext) -> dict[str, Any]:
    """What the page is told about the agent (never the metrics proxy's headers or base URL)."""
    cfg = ctx.config
    metrics = cfg.ui_metrics
    return {
        "ContentPath": cfg.ui_content_path,
        "ACLsEnabled": cfg.acl.enabled,
        "LocalDatacenter": cfg.datacenter,
        "PrimaryDatacenter": cfg.primary_datacenter,
        "Version": __version__,
        "UIConfig": {
            "metrics_provider": metrics.provider,
            "metrics_proxy_enabled": bool(metrics.proxy_base_url),
            "metrics_provider_options": metrics.provider_options,
            "dashboard_url_templates": metrics.dashboard_url_templates,
        },
    }


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: nothing in it can end the element."""
    text = json.dumps(value, ensure_ascii=False)
    for char, escape in _SCRIPT_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def _ui_headers(cache: str) -> dict[str, str]:
    return {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": cache}


def _file_under(root: Path, tail: str) -> Path | None:
    parts = [p for p in tail.split("/") if p]
    if any(p in (".", "..") or "\\" in p or "\x00" in p for p in parts):
        return None
    path = root.joinpath(*parts) if parts else root
    return path if path.is_file() else None


async def static(req: Request, ctx: HTTPContext) -> Answer:
    """GET /ui/<path>: a file of the UI, or index.html for a page of the app."""
    if not ui_on(ctx):
        raise HTTPError(404, NOT_API)
    prefix = ctx.config.ui_content_path
    if prefix != PREFIX and req.raw_path.startswith(PREFIX):  # the UI lives elsewhere (content_path)
        if req.raw_path == PREFIX:  # where `/` redirects to: on to the content path
            return Answer.text(301, "301: Moved Permanently", {"Location": prefix})
        raise HTTPError(404, NOT_API)
    root = Path(ctx.config.ui_dir) if ctx.config.ui_dir else STATIC
    tail = path_tail(req, prefix)
    found = _file_under(root, tail)
    if found is None or found.name == "index.html":
        last = tail.rsplit("/", 1)[-1]
        if found is None and "." in last:  # a missing asset: a real 404, never index.html
            return Answer(404, _ui_headers("no-store"), b"404 page not found\n", "text/plain", "utf-8")
        index = root / "index.html"
        if not index.is_file():
            return Answer(404, _ui_headers("no-store"), b"404 page not found\n", "text/plain", "utf-8")
        html = index.read_text("utf-8").replace(CONFIG_MARK, script_json(page_config(ctx)))
        html = html.replace(BASE_MARK, f'<base href="{prefix}">')  # content_path is [A-Za-z0-9/_-]+
        return Answer(200, _ui_headers("no-cache"), html.encode(), "text/html", "utf-8")
    stat = found.stat()
    etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    headers = _ui_headers("no-cache")
    headers["ETag"] = etag
    if req.headers.get("If-None-Match") == etag:  # revalidated from the browser's cache
        return Answer(304, headers, b"")
    ctype = TYPES.get(found.suffix) or mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    charset = "utf-8" if ctype.startswith("text/") or ctype.endswith(("json", "svg+xml")) else None
    return Answer(200, headers, found.read_bytes(), ctype, charset)


# ---------------------------------------------------------------- summaries (Consul's shapes)

def service_summaries(store: Store) -> list[dict[str, Any]]:
    """ServiceListingSummary per service name, sorted by name (Consul's UIServices)."""
    acc: dict[str, dict[str, Any]] = {}
    for node_key in sorted(store.services):
        node = store.nodes.get(node_key)
        if node is None:
            continue
        checks = store.checks.get(node_key, {})
        node_checks = [c for c in checks.values() if not c["ServiceID"]]
        for svc in store.services[node_key].values():
            kind = svc.get("Kind") or ""
            names = [svc["Service"]]
            proxy = svc.get("Proxy") or {}
            dest = proxy.get("DestinationServiceName") if kind == "connect-proxy" else ""
            if dest:  # a sidecar's checks count for the service it fronts, too
                names.append(dest)
            own = [c for c in checks.values() if c["ServiceID"] == svc["ID"]]
            for i, name in enumerate(names):
                s = acc.get(name)
                if s is None:
                    s = acc[name] = {"name": name, "kind": "", "dc": "", "tags": set(), "nodes": set(),
                                     "sources": set(), "count": 0, "checks": {}, "native": False,
                                     "proxied": False, "seen": False}
                if i == 1:
                    s["proxied"] = True
                else:
                    s["seen"] = True
                    s["kind"] = kind
                    s["dc"] = node["Datacenter"]
                    s["tags"].update(svc["Tags"] or ())
                    s["nodes"].add(node["Node"])
                    source = (svc["Meta"] or {}).get("external-source")
                    if source:
                        s["sources"].add(source)
                    s["count"] += 1
                    s["native"] = s["native"] or bool((svc.get("Connect") or {}).get("Native"))
                for c in (*node_checks, *own):
                    s["checks"][(node["Node"], c["CheckID"])] = c["Status"]
    out = []
    for name in sorted(acc):
        s = acc[name]
        if not s["seen"]:
            continue
        statuses = list(s["checks"].values())
        entry: dict[str, Any] = {}
        if s["kind"]:
            entry["Kind"] = s["kind"]
        entry.update(
            Name=name, Datacenter=s["dc"], Tags=sorted(s["tags"]) or None, Nodes=sorted(s["nodes"]) or None,
            ExternalSources=sorted(s["sources"]) or None, InstanceCount=s["count"],
            ChecksPassing=statuses.count("passing"), ChecksWarning=statuses.count("warning"),
            ChecksCritical=statuses.count("critical"), GatewayConfig={}, TransparentProxy=False,
            ConnectNative=s["native"], ConnectedWithProxy=s["proxied"], ConnectedWithGateway=False)
        out.append(entry)
    return out


def node_info(store: Store, node: dict[str, Any]) -> dict[str, Any]:
    """structs.NodeInfo: the node with its services and checks (never null)."""
    name = node["Node"]
    meta = dict(node["Meta"] or {})
    return {"ID": node["ID"], "Node": name, "Address": node["Address"], "Datacenter": node["Datacenter"],
            "TaggedAddresses": node["TaggedAddresses"], "Meta": meta,
            "Services": store.node_services(name), "Checks": store.node_checks(name)}


# ---------------------------------------------------------------- ACL filtering of the answers

async def _allowed(req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    """(the token's read check, whether to say the answer was filtered), or (None, False) with
    ACLs off. The routes' ACL column is `none`: these answers are filtered here, by shape."""
    if not ctx.config.acl.enabled:
        return None, False
    ident = req.get(IDENTITY) or await acl_agent(ctx).identity(req)
    return ident.authz.allowed, not ident.anonymous_default


async def _filter_services(req: Request, ctx: HTTPContext, body: list[Any], headers: dict[str, str]) -> list[Any]:
    allowed, say = await _allowed(req, ctx)
    if allowed is None:
        return body
    kept = [s for s in body if allowed("service", s["Name"], "read")]
    if len(kept) != len(body) and say:
        headers[FILTERED] = "true"
    return kept


def _filter_node(allowed: Any, info: dict[str, Any]) -> dict[str, Any] | None:
    if not allowed("node", info["Node"], "read"):
        return None
    services = [s for s in info["Services"] if allowed("service", s["Service"], "read")]
    checks = [c for c in info["Checks"] if not c["ServiceName"] or allowed("service", c["ServiceName"], "read")]
    return {**info, "Services": services, "Checks": checks}


# ---------------------------------------------------------------- handlers

def _compact(req: Request, body: Any, headers: dict[str, str]) -> Answer:
    """Compact JSON even in -dev (the pages parse megabytes of it; `?pretty` still indents),
    encoded once per index when the answer is the cached one."""
    if req.query_string and "pretty" in req.query:
        return json_answer(req, body, headers=headers)
    entry = req.render_entry
    if entry is not None and entry.body is body:
        data = entry.encoded.get(False)
        if data is None:
            data = entry.keep(False, dumps(body, False))
    else:
        data = dumps(body, False)
    return Answer(200, headers, data, "application/json")


async def services(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    keys = (watchkeys.SERVICES, watchkeys.CHECKS, watchkeys.NODES)
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(*keys),
                                   render=lambda: service_summaries(store), keys=keys, effective_consistency=True)
    return _compact(req, await _filter_services(req, ctx, body, headers), headers)


async def nodes(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    keys = (watchkeys.NODES, watchkeys.SERVICES, watchkeys.CHECKS)
    body, headers = await blocking(req, ctx, index=lambda: store.index_of(*keys),
                                   render=lambda: [node_info(store, n) for n in store.all_nodes()], keys=keys,
                                   effective_consistency=True)
    allowed, say = await _allowed(req, ctx)
    if allowed is None:
        return _compact(req, body, headers)
    kept = [k for k in (_filter_node(allowed, info) for info in body) if k is not None]
    sizes = [(len(i["Services"]), len(i["Checks"])) for i in body]
    if say and sizes != [(len(k["Services"]), len(k["Checks"])) for k in kept]:
        headers[FILTERED] = "true"
    return _compact(req, kept, headers)


async def node(req: Request, ctx: HTTPContext) -> Answer:
    store = ctx.store
    name = path_tail(req, NODE_PREFIX)
    if not name:
        raise HTTPError(400, "Missing node name")
    key = watchkeys.node(name)

    def render() -> Any:
        found = store.node(name)
        return None if found is None else node_info(store, found)

    body, headers = await blocking(req, ctx, index=lambda: store.index_of(key), render=render, keys=(key,),
                                   effective_consistency=True)
    allowed, _ = await _allowed(req, ctx)
    if body is not None and allowed is not None:
        body = _filter_node(allowed, body)
    if body is None:
        return Answer(404, headers, b"")
    return json_answer(req, body, headers=headers)
