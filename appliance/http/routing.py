"""Consul's URL routing: exact paths and prefix paths (ending in "/") with the rest as a parameter.

Consul registers endpoints on a Go ServeMux: `/v1/kv/` matches every path below it, and the
handler takes the unescaped remainder as the key (`/v1/kv/a%2Fb` is key `a/b`). aiohttp's router
decodes differently, so cairn routes itself: the adapter hands every request value to
`respond`, whose `Router.dispatch` picks the exact path or the longest matching prefix, answers
`OPTIONS` with the `Allow` list, a wrong method with 405, and an unknown `/v1/` path with Consul's
404 text. A route of the catalog, health, KV, status or coordinate-node reads whose `?dc=` names
another datacenter is carried there (remote_dc.forward) instead of run here. With ACLs on, the
route's `acl` column is enforced here and nowhere else: the token is resolved and checked before
the handler, a filtered route's answer filtered after it (appliance/http/authz.py). `respond` is the one
dispatch: the aiohttp adapter, requests from other datacenters and the in-process tests call it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from appliance.acl.commands import PermissionDenied
from appliance.http.authz import admit, admitted, finish, passes
from appliance.http.encoding import render
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.remote_dc import forward, forwardable
from appliance.http.routes import Route
from appliance.http.values import Answer, Request

if TYPE_CHECKING:
    from appliance.http.context import HTTPContext

log = logging.getLogger("agent.http")
__all__ = ["Router", "path_tail", "respond"]
_CONTROL = re.compile("[\x00-\x1f\x7f]")


class Router:
    """Routes by Consul's ServeMux rules: exact paths, and prefixes ending in "/"."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.exact: dict[str, dict[str, Route]] = {}
        self.prefixes: dict[str, dict[str, Route]] = {}
        self.routes: list[Route] = []
        self.forwarded: set[str] = set()  # patterns whose `?dc=<other>` goes to that datacenter
        self.add_all(routes)

    def add(self, route: Route) -> None:
        table = self.prefixes if route.prefix else self.exact
        table.setdefault(route.path, {})[route.method] = route
        self.routes.append(route)
        if forwardable(route.path):
            self.forwarded.add(route.path)

    def add_all(self, routes: Iterable[Route]) -> None:
        for route in routes:
            self.add(route)

    def resolve(self, path: str) -> tuple[str, dict[str, Route]] | None:
        """(route pattern, routes by method) for a raw path: the exact path, else the longest prefix."""
        methods = self.exact.get(path)
        if methods is not None:
            return path, methods
        cut = path.rfind("/")
        while cut >= 0:  # longest prefix first: one dict lookup per path segment
            prefix = path[: cut + 1]
            methods = self.prefixes.get(prefix)
            if methods is not None:
                return prefix, methods
            cut = path.rfind("/", 0, cut)
        return None

    def route_of(self, req: Request) -> Route | None:
        """The route `req` goes to, if any (the adapter reads its body limit before dispatch)."""
        found = self.resolve(req.raw_path)
        return None if found is None else found[1].get(req.method)

    async def dispatch(self, req: Request, ctx: HTTPContext) -> Answer:
        raw = req.raw_path
        if _CONTROL.search(unquote(raw) if "%" in raw else raw):
            raise HTTPError(400, "Invalid URL path: contains non-printable characters")
        found = self.resolve(raw)
        if found is None:
            if raw == "/":
                if ctx.config.ui_enabled:
                    return Answer.text(301, "301: Moved Permanently", {"Location": "/ui/"})
                raise HTTPError(404, "Consul Agent: UI disabled. To enable, set ui_config.enabled=true in the "
                                     "agent configuration and restart.")
            raise HTTPError(404, "Invalid URL path: not a recognized HTTP API endpoint")
        pattern, methods = found
        req.route = pattern
        if req.method == "OPTIONS":
            return Answer(200, {"Allow": ",".join(["OPTIONS", *sorted(methods)])})
        route = methods.get(req.method)
        if route is None:
            raise HTTPError(405, f"method {req.method} not allowed", {"Allow": ",".join(["OPTIONS", *sorted(methods)])})
        if req.query_string and pattern in self.forwarded:
            dc = req.query.get("dc", "")
            if dc and dc.lower() != ctx.config.datacenter.lower():
                return await forward(req, ctx, dc.lower())
        # the one place permissions are checked (appliance/http/authz.py): the common read in one
        # lookup, else the token resolved from the cache and allowed without awaiting, else `admit`
        if ctx.config.acl.enabled and not passes(route, req, ctx):
            if not admitted(route, req, ctx):
                refused = await admit(route, req, ctx)
                if refused is not None:
                    return refused
            return finish(route, req, ctx, await route.handler(req, ctx))
        return await route.handler(req, ctx)


async def respond(router: Router, req: Request, ctx: HTTPContext) -> Answer:
    """Dispatch `req` and finish its answer: HTTPError becomes Consul's status and text, a bug a
    500 with its message (logged with its traceback); a JSON value is rendered to bytes; every
    answer carries the configured response headers. Cancellation passes through."""
    try:
        answer = await router.dispatch(req, ctx)
    except HTTPError as err:
        answer = Answer.text(err.status, err.text, err.headers)
    except PermissionDenied as err:  # a server refused a forwarded write (appliance/acl/commands.py)
        answer = Answer.text(403, str(err))
    except Exception as err:
        log.error("request failed: method=%s url=%s error=%r", req.method, unquote(req.raw_path), err, exc_info=True)
        answer = Answer.text(500, str(err) or type(err).__name__)
    if answer.has_json:
        answer.body = render(answer, req, ctx.pretty)
    answer.headers.update(ctx.response_headers)
    return answer
