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
from urllib.parse import unquote, unquote_to_bytes

from aiohttp import web

from appliance.http.errors import HTTPError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")  # Go's url.PathUnescape refuses these


def path_tail(request: web.Request, prefix: str, *, keep_bytes: bool = False) -> str:
    """The unescaped part of the path after `prefix` (Consul's path parameter).

    Consul takes the parameter from Go's `req.URL.Path`: the path unescaped to a byte string, which
    need not be UTF-8 (`k%ff` is the two bytes `k\\xff`), after Go's HTTP server refused a malformed
    escape (`%zz`, a lone `%`) with a 400. cairn unescapes the same way, on bytes. A KV key
    (`keep_bytes`) keeps its exact bytes: each byte that is not part of valid UTF-8 becomes one lone
    surrogate (U+DC80-U+DCFF, Python's "surrogateescape"), so `k%ff`, `k%fe` and `k%ef%bf%bd` stay
    three keys, and `key.encode("utf-8", "surrogateescape")` gives the bytes back. Everywhere else
    the parameter is a name (service, node, check, event, address) that ends up in JSON, DNS,
    gossip and error texts, and no registered name can be anything but UTF-8 (JSON bodies are), so
    a path whose parameter is not valid UTF-8 is refused with a 400 instead.
    """
    raw = request.raw_path.split("?", 1)[0]
    if not raw.startswith(prefix):
        return ""
    tail = raw[len(prefix):]
    if "%" not in tail and tail.isascii():
        return tail
    # (aiohttp's parser refuses raw non-ASCII bytes in the request line; should any reach raw_path they are bytes too)
    data = tail.encode("utf-8", "surrogateescape")
    bad = _BAD_ESCAPE.search(data)
    if bad is not None:
        escape = data[bad.start(): bad.start() + 3].decode("utf-8", "replace")
        raise HTTPError(400, f'Invalid URL path: invalid URL escape "{escape}"')
    data = unquote_to_bytes(data)
    if keep_bytes:
        return data.decode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "Invalid URL path: the name is not valid UTF-8") from None


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
