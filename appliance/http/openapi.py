"""The route table as an OpenAPI 3.0 document: the API's contract, shipped as docs/openapi.json.

`openapi(routes)` renders every `Route` (appliance/http/routes.py) and the extensions' routes:
a prefix route becomes `<prefix>{param}` (the rest of the path, slashes included), its query
parameters are the common ones (`dc`, `pretty`), the blocking ones where the route blocks and
`filter` where it has a filter schema; a route that reads a body gets a request body of the
media type its handler parses (JSON, or raw bytes for KV values, event payloads and snapshots);
the responses are the statuses the agent can answer it with, Consul's (errors are plain text).
Each operation carries `x-acl` (the permission from the table: `<resource>:<level>`,
`filter:<resources>` or `none`) and `x-blocking`. The token goes in `X-Consul-Token`,
`Authorization: Bearer` or `?token=` (the security schemes); with ACLs off it is ignored.

`python scripts/openapi.py` writes the document to docs/openapi.json and `--check` verifies the
shipped file is current (tests/unit/test_openapi_doc.py does the same).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from appliance.http.encoding import JSON_BODY_LIMIT
from appliance.http.routes import Route

_BLOCKING_PARAMS: list[dict[str, Any]] = [
    {"name": "index", "in": "query", "schema": {"type": "integer", "minimum": 0},
     "description": "Blocking query: wait until the answer's index passes this one"},
    {"name": "wait", "in": "query", "schema": {"type": "string", "example": "5m"},
     "description": "Blocking query: the longest wait (Go duration, at most max_query_time)"},
]
_CONSISTENCY_PARAMS: list[dict[str, Any]] = [
    {"name": name, "in": "query", "allowEmptyValue": True, "schema": {"type": "boolean"}, "description": text}
    for name, text in (("stale", "Any server may answer"), ("consistent", "The leader confirms its leadership"),
                       ("cached", "The agent's cache may answer"))
]
_COMMON_PARAMS: list[dict[str, Any]] = [
    {"name": "pretty", "in": "query", "allowEmptyValue": True, "schema": {"type": "boolean"},
     "description": "Indented JSON"},
    {"name": "dc", "in": "query", "schema": {"type": "string"}, "description": "Datacenter to ask"},
]
_SECURITY_SCHEMES: dict[str, Any] = {
    "consulToken": {"type": "apiKey", "in": "header", "name": "X-Consul-Token"},
    "bearerToken": {"type": "http", "scheme": "bearer"},
    "queryToken": {"type": "apiKey", "in": "query", "name": "token"},
}
_STATUS: dict[str, str] = {
    "200": "OK",
    "301": "Moved permanently (the web UI's path)",
    "304": "Not modified (the web UI's files)",
    "400": "Bad request (plain text)",
    "401": "ACL support disabled, or the login's token does not exist",
    "403": "Permission denied, or ACL not found (plain text)",
    "404": "No such path, key, ID or name (plain text)",
    "405": "Method not allowed for this path",
    "409": "Transaction: errors by operation index, or a lock held",
    "413": "Request body too large",
    "415": "Metrics format not available",
    "429": "Warning: a check of the service warns, autopilot is unhealthy, too many connections, or the "
           "CA's signing rate limit",
    "500": "Server error (Consul's text), such as no path to a datacenter",
    "503": "Critical: a check of the service is critical or in maintenance",
}
# Statuses particular to some routes, beyond those every route may answer (200, 400, 403, 404, 500).
_EXTRA_BY_PATH: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/v1/acl/", ("401",)),
    ("/v1/agent/token/", ("401",)),
    ("/v1/agent/health/service/", ("429", "503")),
    ("/v1/operator/autopilot/health", ("429",)),
    ("/v1/agent/metrics", ("415",)),
    ("/v1/txn", ("409",)),
    ("/v1/query/", ("405",)),
    ("/ui/", ("301", "304")),
)
# Bodies that are not JSON: bytes stored or passed on as they are.
_RAW_BODIES = ("/v1/kv/", "/v1/event/fire/", "/v1/snapshot")


def _responses(r: Route) -> dict[str, dict[str, str]]:
    codes = {"200", "400", "403", "404", "429", "500"}
    for prefix, extra in _EXTRA_BY_PATH:
        if r.path.startswith(prefix):
            codes.update(extra)
    if r.body_limit:
        codes.add("413")
    return {code: {"description": _STATUS[code]} for code in sorted(codes)}


def _request_body(r: Route) -> dict[str, Any]:
    limit = (f"at most {r.body_limit} bytes" if isinstance(r.body_limit, int)
             else f"at most limits.{r.body_limit} bytes")
    if r.path.startswith(_RAW_BODIES):
        content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    else:
        content = {"application/json": {"schema": {}}}
    return {"required": False, "content": content,
            "description": limit + (" of JSON" if r.body_limit == JSON_BODY_LIMIT else "")}


def _parameters(r: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    if r.prefix:
        params.append({"name": "param", "in": "path", "required": True, "schema": {"type": "string"},
                       "description": "The rest of the path (a key, a name or an ID), unescaped"})
    params += _COMMON_PARAMS
    if r.blocking:
        params += _BLOCKING_PARAMS + _CONSISTENCY_PARAMS
    if r.filter:
        params.append({"name": "filter", "in": "query", "schema": {"type": "string"},
                       "description": f"Filter expression over the `{r.filter}` schema"})
    return params


def document_path(r: Route) -> str:
    """A route's path in the document: a prefix route's rest is the `{param}` path parameter."""
    return r.path + "{param}" if r.prefix else r.path


def openapi(routes: Iterable[Route], version: str = "") -> dict[str, Any]:
    """The route table as an OpenAPI 3.0 document, each operation with `x-acl` and `x-blocking`."""
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        path = document_path(r)
        op: dict[str, Any] = {
            "summary": r.summary or f"{r.method} {r.path}",
            "operationId": f"{r.method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}",
            "parameters": _parameters(r),
            "responses": _responses(r),
            "x-acl": r.acl,
            "x-blocking": r.blocking,
        }
        if r.acl == "none":
            op["security"] = [{}]
        if r.body_limit:
            op["requestBody"] = _request_body(r)
        paths.setdefault(path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "cairn HTTP API", "version": version or "0",
                 "description": "Generated from the agent's route table (appliance/http/routes.py) by "
                                "scripts/openapi.py. x-acl: the ACL permission an operation needs "
                                "(<resource>:<read|write>), filter:<resources> where the answer leaves out "
                                "what the token may not read, none where anyone may call it."},
        "servers": [{"url": "http://127.0.0.1:8500"}],
        "security": [{}, {"consulToken": []}, {"bearerToken": []}, {"queryToken": []}],
        "components": {"securitySchemes": _SECURITY_SCHEMES},
        "paths": dict(sorted(paths.items())),
    }
