"""What each route's ACL permission applies to: segments of `<resource>:<level>` routes and the
shapes `filter:` routes answer with (security.md §3.3).

`requirements(route, req, ctx)` lists (resource, level, segment) for a denying route. The
default is the route's own permission on the path parameter (a prefix route) or on nothing (an
exact route, and every scalar resource: acl, keyring, operator); `agent` is this agent's node
name. `SEGMENTS` overrides that for routes whose segment is elsewhere: the service a local
service ID names, the node or service in a registration body, the node a session is bound to, a
prepared query's name; a KV delete with `?recurse` needs write on everything under the prefix
(resource `key_prefix`, Consul's KeyWritePrefix), a KV read with `?recurse` or `?keys` is
filtered instead (with `list` on the prefix when `acl.enable_key_list_policy`). Something a
handler will refuse anyway (no such service, a body that does not decode) needs nothing here:
the handler answers with its own text.

`FILTERS[path]` takes a handler's JSON answer and the token's authorizer and returns the answer
with what may not be read removed, and whether anything was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.acl.commands import command_needs, txn_op_need
from appliance.http.encoding import decode_json
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail

if TYPE_CHECKING:
    from appliance.acl.authorizer import Authorizer
    from appliance.http.context import HTTPContext
    from appliance.http.values import Request

Need = tuple[str, str, "str | None"]
SegmentFn = Callable[["Request", "HTTPContext"], list[Need]]
FilterFn = Callable[[Any, "Authorizer", "Request", "HTTPContext"], tuple[Any, bool]]
SCALARS = frozenset({"acl", "keyring", "operator", "mesh", "peering"})
NOT_FOUND = object()  # a filtered answer with nothing left that Consul answers 404 (a KV listing)


def _field(body: Any, name: str) -> Any:
    """A body field, matched without case as Go's decoder does."""
    if not isinstance(body, dict):
        return None
    if name in body:
        return body[name]
    low = name.lower()
    for key, value in body.items():
        if isinstance(key, str) and key.lower() == low:
            return value
    return None


def _body(req: Request) -> Any:
    try:
        return decode_json(req.body) if req.body else None
    except HTTPError:
        return None


def _tail(req: Request, route: str) -> str:
    try:
        return path_tail(req, route)
    except HTTPError:
        return ""


def _local_service(ctx: HTTPContext, sid: str) -> str | None:
    local = ctx.local.services.get(sid)
    return None if local is None else local.definition.name


def _local_service_needs(level: str, route: str) -> SegmentFn:
    def needs(req: Request, ctx: HTTPContext) -> list[Need]:
        name = _local_service(ctx, _tail(req, route))
        return [] if name is None else [("service", level, name)]
    return needs


def _check_needs(service_id: str, ctx: HTTPContext) -> list[Need]:
    """A check on a service needs service:write on it; a node check node:write on this node."""
    if service_id:
        name = _local_service(ctx, service_id)
        return [] if name is None else [("service", "write", name)]
    return [("node", "write", ctx.config.node_name)]


def _local_check_needs(route: str) -> SegmentFn:
    def needs(req: Request, ctx: HTTPContext) -> list[Need]:
        local = ctx.local.checks.get(_tail(req, route))
        return [] if local is None else _check_needs(local.definition.service_id or "", ctx)
    return needs


def _service_register(req: Request, ctx: HTTPContext) -> list[Need]:
    body = _body(req)
    name = _field(body, "Name")
    out: list[Need] = [("service", "write", name)] if isinstance(name, str) else []
    proxy = _field(body, "Proxy")
    dest = _field(proxy, "DestinationServiceName") or _field(proxy, "destination_service_name")
    if isinstance(dest, str) and dest:
        out.append(("service", "write", dest))
    # a `connect { sidecar_service {} }` registers <name>-sidecar-proxy too (appliance/local/mesh.py)
    connect = _field(body, "Connect")
    sidecar = _field(connect, "SidecarService") or _field(connect, "sidecar_service")
    if isinstance(sidecar, dict) and isinstance(name, str):
        side = _field(sidecar, "Name")
        out.append(("service", "write", side if isinstance(side, str) and side else f"{name}-sidecar-proxy"))
    return out


def _check_register(req: Request, ctx: HTTPContext) -> list[Need]:
    sid = _field(_body(req), "ServiceID")
    return _check_needs(sid if isinstance(sid, str) else "", ctx)


def _catalog_register(req: Request, ctx: HTTPContext) -> list[Need]:
    """What the register command this body makes needs, the rule a server applies to the same
    command forwarded by a client agent (appliance/acl/commands.py: node:write when the node is
    new or its record changes, Consul's ChangesNode)."""
    from appliance.http.handlers.catalog import register_command  # the handler's own decoding

    try:
        cmd = register_command(_body(req), ctx.config.datacenter)
    except (HTTPError, ValueError, TypeError, KeyError):
        return []  # a body the handler refuses: its own error text
    return command_needs(cmd, ctx.store)


def _catalog_deregister(req: Request, ctx: HTTPContext) -> list[Need]:
    body = _body(req)
    node = _field(body, "Node")
    if not isinstance(node, str):
        return []
    return command_needs({"Type": "deregister", "Node": node, "ServiceID": _field(body, "ServiceID"),
                          "CheckID": _field(body, "CheckID")}, ctx.store)


def _kv_get(req: Request, ctx: HTTPContext) -> list[Need]:
    key = path_tail(req, "/v1/kv/", keep_bytes=True)
    if "recurse" in req.query or "keys" in req.query:
        req["acl.kv_filter"] = True
        return [("key", "list", key)] if ctx.config.acl.enable_key_list_policy else []
    return [("key", "read", key)]


def _kv_delete(req: Request, ctx: HTTPContext) -> list[Need]:
    key = path_tail(req, "/v1/kv/", keep_bytes=True)
    return [("key_prefix" if "recurse" in req.query else "key", "write", key)]


def _session_node(level: str, route: str) -> SegmentFn:
    def needs(req: Request, ctx: HTTPContext) -> list[Need]:
        sess = ctx.store.sessions.get(_tail(req, route))
        return [] if sess is None else [("session", level, sess["Node"])]
    return needs


def _session_create(req: Request, ctx: HTTPContext) -> list[Need]:
    node = _field(_body(req), "Node")
    return [("session", "write", node if isinstance(node, str) and node else ctx.config.node_name)]


def _query_named(level: str) -> SegmentFn:
    def needs(req: Request, ctx: HTTPContext) -> list[Need]:
        tail = _tail(req, "/v1/query/")
        for action in ("/execute", "/explain"):
            if tail.endswith(action):
                if action == "/execute":
                    req["acl.query_execute"] = True
                    return []
                tail = tail[: -len(action)]
        store = ctx.store.prepared_queries
        query = store.get(tail) or next((q for q in store.values() if (q.get("Name") or "") == tail), None)
        return [] if query is None else [("query", level, query.get("Name") or "")]
    return needs


def _query_create(req: Request, ctx: HTTPContext) -> list[Need]:
    name = _field(_body(req), "Name")
    return [("query", "write", name if isinstance(name, str) else "")]


def _body_node(resource: str) -> SegmentFn:
    def needs(req: Request, ctx: HTTPContext) -> list[Need]:
        node = _field(_body(req), "Node")
        return [(resource, "write", node if isinstance(node, str) else "")]
    return needs


def txn_op_needs(req: Request) -> list[tuple[int, Need]]:
    """Each operation of a transaction (by its index) as its own endpoint would need it: the same
    rule a server applies to a forwarded transaction (appliance/acl/commands.py `txn_op_need`),
    on the body's fields matched without case as Go's decoder does."""
    body = _body(req)
    out: list[tuple[int, Need]] = []
    for i, raw in enumerate(body if isinstance(body, list) else ()):
        op = {k: _field(raw, k) for k in ("KV", "Node", "Service", "Check")}
        if isinstance(op["Check"], dict):
            op["Check"] = {**op["Check"], "Check": _field(op["Check"], "Check")}
        need = txn_op_need(op)
        if need is not None:
            out.append((i, need))
    return out


def _txn_needs(req: Request, ctx: HTTPContext) -> list[Need]:
    return [need for _, need in txn_op_needs(req)]


def _config_needs(level: str) -> SegmentFn:
    """A config entry's permission by its kind (appliance/connect/entries.py `needs`): from the
    path, or from the body of a write."""
    from appliance.connect.entries import SPECS, needs

    def fn(req: Request, ctx: HTTPContext) -> list[Need]:
        if req.method == "PUT":
            body = _body(req)
            kind, name = _field(body, "Kind"), _field(body, "Name")
        else:
            kind, _, name = _tail(req, "/v1/config/").partition("/")
        if not isinstance(kind, str) or kind not in SPECS or not isinstance(name, str) or not name:
            return []  # a listing is filtered; a bad kind or body gets the handler's own error
        return needs(kind, name, level)
    return fn


def _intention_needs(level: str, where: str) -> SegmentFn:
    """intention:<level> on the destination: from ?destination=, the body, or the intention an ID names."""
    def fn(req: Request, ctx: HTTPContext) -> list[Need]:
        if where == "query":
            dest = req.query.get("destination", "")
        elif where == "body":
            dest = _field(_body(req), "DestinationName")
        else:
            from appliance.connect.intentions import every

            ident = _tail(req, "/v1/connect/intentions/")
            found = next((x for x in every(ctx.store.connect.entries_of("service-intentions"))
                          if x.get("ID") == ident), None)
            dest = found["DestinationName"] if found else ""
            body = _body(req) if req.method == "PUT" else None
            if _field(body, "DestinationName"):
                return [("intention", level, d) for d in {dest, _field(body, "DestinationName")} if d]
        return [("intention", level, dest)] if isinstance(dest, str) and dest else []
    return fn


def _authorize(req: Request, ctx: HTTPContext) -> list[Need]:
    target = _field(_body(req), "Target")
    return [("service", "write", target)] if isinstance(target, str) and target else []


SEGMENTS: dict[tuple[str, str], SegmentFn] = {
    ("PUT", "/v1/txn"): _txn_needs,
    ("GET", "/v1/agent/service/"): _local_service_needs("read", "/v1/agent/service/"),
    ("GET", "/v1/agent/health/service/id/"): _local_service_needs("read", "/v1/agent/health/service/id/"),
    ("PUT", "/v1/agent/service/register"): _service_register,
    ("PUT", "/v1/agent/service/deregister/"): _local_service_needs("write", "/v1/agent/service/deregister/"),
    ("PUT", "/v1/agent/service/maintenance/"): _local_service_needs("write", "/v1/agent/service/maintenance/"),
    ("PUT", "/v1/agent/check/register"): _check_register,
    ("PUT", "/v1/agent/maintenance"): lambda req, ctx: [("node", "write", ctx.config.node_name)],
    ("PUT", "/v1/catalog/register"): _catalog_register,
    ("PUT", "/v1/catalog/deregister"): _catalog_deregister,
    ("GET", "/v1/kv/"): _kv_get,
    ("PUT", "/v1/kv/"): lambda req, ctx: [("key", "write", path_tail(req, "/v1/kv/", keep_bytes=True))],
    ("DELETE", "/v1/kv/"): _kv_delete,
    ("PUT", "/v1/session/create"): _session_create,
    ("PUT", "/v1/session/destroy/"): _session_node("write", "/v1/session/destroy/"),
    ("PUT", "/v1/session/renew/"): _session_node("write", "/v1/session/renew/"),
    ("POST", "/v1/query"): _query_create,
    ("GET", "/v1/query/"): _query_named("read"),
    ("PUT", "/v1/query/"): _query_named("write"),
    ("DELETE", "/v1/query/"): _query_named("write"),
    ("PUT", "/v1/coordinate/update"): _body_node("node"),
    ("GET", "/v1/config/"): _config_needs("read"),
    ("PUT", "/v1/config"): _config_needs("write"),
    ("DELETE", "/v1/config/"): _config_needs("write"),
    ("POST", "/v1/connect/intentions"): _intention_needs("write", "body"),
    ("GET", "/v1/connect/intentions/exact"): _intention_needs("read", "query"),
    ("PUT", "/v1/connect/intentions/exact"): _intention_needs("write", "query"),
    ("DELETE", "/v1/connect/intentions/exact"): _intention_needs("write", "query"),
    ("GET", "/v1/connect/intentions/check"): _intention_needs("read", "query"),
    ("GET", "/v1/connect/intentions/"): _intention_needs("read", "id"),
    ("PUT", "/v1/connect/intentions/"): _intention_needs("write", "id"),
    ("DELETE", "/v1/connect/intentions/"): _intention_needs("write", "id"),
    ("POST", "/v1/agent/connect/authorize"): _authorize,
    ("PUT", "/v1/agent/connect/authorize"): _authorize,
}
for _verb in ("deregister", "pass", "warn", "fail", "update"):
    SEGMENTS[("PUT", f"/v1/agent/check/{_verb}/")] = _local_check_needs(f"/v1/agent/check/{_verb}/")


def requirements(route: Any, req: Request, ctx: HTTPContext) -> list[Need]:
    """The permissions a denying route needs for this request."""
    fn = SEGMENTS.get((route.method, route.path))
    if fn is not None:
        return fn(req, ctx)
    resource, _, level = route.acl.partition(":")
    if resource in SCALARS:
        return [(resource, level, None)]
    if resource == "agent":
        return [(resource, level, ctx.config.node_name)]
    return [(resource, level, _tail(req, route.path) if route.prefix else "")]


# ------------------------------------------------------------------------------------ filters


def _keep_list(value: Any, keep: Callable[[Any], bool]) -> tuple[Any, bool]:
    if not isinstance(value, list):
        return value, False
    out = [item for item in value if keep(item)]
    return (value, False) if len(out) == len(value) else (out, True)


def _keep_map(value: Any, keep: Callable[[str, Any], bool]) -> tuple[Any, bool]:
    if not isinstance(value, dict):
        return value, False
    out = {k: v for k, v in value.items() if keep(k, v)}
    return (value, False) if len(out) == len(value) else (out, True)


def _get(item: Any, *path: str) -> str:
    for name in path:
        item = item.get(name) if isinstance(item, dict) else None
    return item if isinstance(item, str) else ""


def _by(resource: str, *path: str) -> FilterFn:
    """A list whose items are readable by `resource` on the name at `path`."""
    def keep(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
        return _keep_list(value, lambda item: authz.allowed(resource, _get(item, *path), "read"))
    return keep


def _check_readable(authz: Authorizer, check: Any) -> bool:
    """A node check needs node:read on its node; a service check service:read as well."""
    if not authz.allowed("node", _get(check, "Node"), "read"):
        return False
    return not _get(check, "ServiceID") or authz.allowed("service", _get(check, "ServiceName"), "read")


def _health_checks(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    return _keep_list(value, lambda c: _check_readable(authz, c))


def _health_service(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    return _keep_list(value, lambda e: authz.allowed("node", _get(e, "Node", "Node"), "read")
                      and authz.allowed("service", _get(e, "Service", "Service"), "read"))


def _catalog_service(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    return _keep_list(value, lambda e: authz.allowed("node", _get(e, "Node"), "read")
                      and authz.allowed("service", _get(e, "ServiceName"), "read"))


def _catalog_services(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    if isinstance(value, list):  # ?filter= answers a list of {ServiceName, ...}
        return _keep_list(value, lambda e: authz.allowed("service", _get(e, "ServiceName"), "read"))
    return _keep_map(value, lambda name, _: authz.allowed("service", name, "read"))


def _catalog_node(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    """catalog/node(-services): nothing without node:read on the node; its services filtered."""
    if not isinstance(value, dict):
        return value, False
    if not authz.allowed("node", _get(value, "Node", "Node"), "read"):
        return None, True
    services = value.get("Services")
    if isinstance(services, dict):
        kept, removed = _keep_map(services, lambda _, s: authz.allowed("service", _get(s, "Service"), "read"))
    else:
        kept, removed = _keep_list(services, lambda s: authz.allowed("service", _get(s, "Service"), "read"))
    return ({**value, "Services": kept} if removed else value), removed


def _agent_services(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    return _keep_map(value, lambda _, s: authz.allowed("service", _get(s, "Service"), "read"))


def _agent_checks(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    return _keep_map(value, lambda _, c: _check_readable(authz, c))


def _kv(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    if not req.get("acl.kv_filter"):
        return value, False
    kept, removed = _keep_list(value, lambda e: authz.allowed("key", e if isinstance(e, str) else _get(e, "Key"),
                                                             "read"))
    return (NOT_FOUND if removed and not kept else kept), removed


def _query(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    if req.get("acl.query_execute") and isinstance(value, dict):
        kept, removed = _health_service(value.get("Nodes"), authz, req, ctx)
        return ({**value, "Nodes": kept} if removed else value), removed
    return value, False


def _sd_groups(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    """Prometheus http_sd target groups (sd/http.py): one group per instance, named by its labels."""
    return _keep_list(value, lambda g: authz.allowed("service", _get(g, "labels", "__meta_consul_service"), "read")
                      and authz.allowed("node", _get(g, "labels", "__meta_consul_node"), "read"))


def _config_entries(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    from appliance.connect.entries import needs

    def readable(e: Any) -> bool:
        return all(_allowed_need(authz, need) for need in needs(_get(e, "Kind"), _get(e, "Name"), "read"))
    return _keep_list(value, readable)


def _allowed_need(authz: Authorizer, need: Need) -> bool:
    resource, level, segment = need
    return authz.allowed(resource, segment or "", level)


def _intention_readable(authz: Authorizer, ixn: Any) -> bool:
    return authz.allowed("intention", _get(ixn, "DestinationName"), "read")


def _intentions(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    return _keep_list(value, lambda x: _intention_readable(authz, x))


def _intention_match(value: Any, authz: Authorizer, req: Request, ctx: HTTPContext) -> tuple[Any, bool]:
    if not isinstance(value, dict):
        return value, False
    out, removed = {}, False
    for name, found in value.items():
        out[name], dropped = _keep_list(found, lambda x: _intention_readable(authz, x))
        removed = removed or dropped
    return (out if removed else value), removed


FILTERS: dict[str, FilterFn] = {
    "/v1/agent/members": _by("node", "Name"),
    "/v1/agent/services": _agent_services,
    "/v1/agent/checks": _agent_checks,
    "/v1/catalog/nodes": _by("node", "Node"),
    "/v1/catalog/services": _catalog_services,
    "/v1/catalog/service/": _catalog_service,
    "/v1/catalog/node/": _catalog_node,
    "/v1/catalog/node-services/": _catalog_node,
    "/v1/health/node/": _health_checks,
    "/v1/health/checks/": _health_checks,
    "/v1/health/state/": _health_checks,
    "/v1/health/service/": _health_service,
    "/v1/kv/": _kv,
    "/v1/session/info/": _by("session", "Node"),
    "/v1/session/node/": _by("session", "Node"),
    "/v1/session/list": _by("session", "Node"),
    "/v1/query": _by("query", "Name"),
    "/v1/query/": _query,
    "/v1/event/list": _by("event", "Name"),
    "/v1/coordinate/nodes": _by("node", "Node"),
    "/v1/coordinate/node/": _by("node", "Node"),
    "/v1/sd/prometheus": _sd_groups,
    "/v1/config/": _config_entries,
    "/v1/connect/intentions": _intentions,
    "/v1/connect/intentions/match": _intention_match,
}
