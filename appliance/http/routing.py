"""Consul's URL routing: exact paths and prefix paths (ending in "/") with the rest as a parameter.

Consul registers endpoints on a Go ServeMux: `/v1/kv/` matches every path below it, and the
handler takes the unescaped remainder as the key (`/v1/kv/a%2Fb` is key `a/b`). aiohttp's router
decodes differently, so cairn routes itself: one catch-all aiohttp route hands every request to
`Router.dispatch`, which picks the exact path or the longest matching prefix, answers `OPTIONS`
with the `Allow` list, a wrong method with 405, and an unknown `/v1/` path with Consul's 404 text.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from appliance.http.errors import HTTPError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def path_tail(request: web.Request, prefix: str) -> str:
    """The unescaped part of the path after `prefix` (Consul's path parameter)."""
    raw = request.raw_path.split("?", 1)[0]
    return unquote(raw[len(prefix):]) if raw.startswith(prefix) else ""


class Router:
    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Handler]] = {}
        self.prefixes: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        table = self.prefixes if path.endswith("/") else self.exact
        table.setdefault(path, {})[method] = handler

    def add_all(self, routes: list[tuple[str, str, Handler]]) -> None:
        for method, path, handler in routes:
            self.add(method, path, handler)

    def resolve(self, path: str) -> tuple[str, dict[str, Handler]] | None:
        """(route pattern, handlers by method) for a raw path: the exact path, else the longest prefix."""
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

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0]
        if _CONTROL.search(unquote(raw) if "%" in raw else raw):
            raise HTTPError(400, "Invalid URL path: contains non-printable characters")
        found = self.resolve(raw)
        if found is None:
            if raw == "/":
                if request.app["agent"].config.ui_enabled:
                    raise web.HTTPMovedPermanently("/ui/")
                raise HTTPError(404, "Consul Agent: UI disabled. To enable, set ui_config.enabled=true in the "
                                     "agent configuration and restart.")
            raise HTTPError(404, "Invalid URL path: not a recognized HTTP API endpoint")
        pattern, methods = found
        request.route = pattern
        allow = ",".join(["OPTIONS", *sorted(methods)])
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": allow})
        handler = methods.get(request.method)
        if handler is None:
            raise HTTPError(405, f"method {request.method} not allowed", {"Allow": allow})
        return await handler(request)
