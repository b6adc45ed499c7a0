"""GET /v1/internal/ui/metrics-proxy/<path>: the web UI's proxy to Prometheus (reference/ui.md §2.9, §6.4).

Consul's steps, in order: 404 `UI is not enabled`, 404 `Metrics proxy is not enabled`; with ACLs
on, the token (from headers only) must read every node and every service (403 otherwise); the
path is joined to `base_url`, cleaned, and must equal an entry of the allow-list exactly (403 with
an empty body otherwise; default /api/v1/query and /api/v1/query_range); a path that leaves
`base_url` is 400 `Invalid path.`. Only GET is proxied. The request's own headers are never
forwarded (so neither its token nor its cookies reach Prometheus): only the configured
`add_headers` and Accept. Redirects are not followed; a backend that does not answer is a 502
with a JSON body (504 after the timeout) so the page can tell it from "not configured".
"""

from __future__ import annotations

import json
import posixpath
from urllib.parse import urlsplit

from appliance.http.authz import IDENTITY, acl_agent
from appliance.http.context import HTTPContext
from appliance.http.errors import HTTPError
from appliance.http.handlers.ui import ui_on
from appliance.http.metrics_fetch import Unreachable, fetch
from appliance.http.values import Answer, Request

PREFIX = "/v1/internal/ui/metrics-proxy"


def target_url(base_url: str, raw_path: str, allow: tuple[str, ...]) -> str | None:
    """The URL to fetch for a proxied request path (raw, with the prefix), or None (403).
    Raises HTTPError 400 for a path that does not stay under base_url."""
    sub = raw_path[len(PREFIX):]
    base = urlsplit(base_url)
    joined = (base.path.rstrip("/") + "/" + sub.lstrip("/")) if sub else base.path or "/"
    cleaned = posixpath.normpath(joined) if joined else "/"
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    url = f"{base.scheme}://{base.netloc}{cleaned}"
    if not url.startswith(base_url):
        raise HTTPError(400, "Invalid path.")
    if allow and cleaned not in allow:
        return None
    return url


def _json_error(status: int, error: str, detail: str) -> Answer:
    body = json.dumps({"error": error, "detail": detail}).encode()
    return Answer(status, {"X-Content-Type-Options": "nosniff"}, body, "application/json")


async def metrics_proxy(req: Request, ctx: HTTPContext) -> Answer:
    if not ui_on(ctx):
        raise HTTPError(404, "UI is not enabled")
    metrics = ctx.config.ui_metrics
    if not metrics.proxy_base_url:
        raise HTTPError(404, "Metrics proxy is not enabled")
    if ctx.config.acl.enabled:  # the route's ACL column is `none`: Consul's check is made here
        authz = (req.get(IDENTITY) or await acl_agent(ctx).identity(req)).authz
        if not (authz.all_allowed("node", "read") and authz.all_allowed("service", "read")):
            raise HTTPError(403, "Permission denied: the metrics proxy needs node:read and service:read on "
                                 "every node and service")
    url = target_url(metrics.proxy_base_url, req.raw_path, metrics.proxy_path_allowlist)
    if url is None:
        ctx.log.warning("metrics proxy: target URL path is not allowed: path=%s", req.raw_path[len(PREFIX):])
        return Answer(403, {}, b"")
    headers = {"Accept": "application/json"}
    host = None
    for name, value in metrics.proxy_add_headers:
        if name.lower() == "host":
            host = value
        else:
            headers[name] = value
    if host:
        headers["Host"] = host
    if req.query_string:
        url += "?" + req.query_string
    try:
        status, ctype, body = await fetch(url, headers)
    except Unreachable as err:
        if err.timed_out:
            return _json_error(504, "metrics backend timed out", urlsplit(url).netloc)
        return _json_error(502, "metrics backend unreachable", f"{urlsplit(url).netloc}: {err}")
    return Answer(status, {"X-Content-Type-Options": "nosniff"}, body, ctype)
