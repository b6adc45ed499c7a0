"""`?dc=<other>` on the HTTP API, and running a request that came from another datacenter.

How it works
------------
**Asking.** `wrap_datacenter_routes(router)` wraps the handlers of the catalog, health, KV and
status endpoints and the coordinate node reads (not `/v1/catalog/datacenters`, which is local in
Consul too). A request whose `dc`
names another datacenter (compared without case) is not run here: its method, raw path, query
without `dc`, headers and body (read with the KV size limit) become an `Exchange` that the
agent's `Forwarder` (appliance/federation/forward.py) carries to a server of that datacenter.
The remote answer's status, headers (`X-Consul-Index`, `X-Consul-KnownLeader`, ...) and body
are sent back as they are, so blocking queries and the index come from the remote datacenter. A
datacenter that cannot be reached is Consul's `500` with `No path to datacenter` (or the
forwarder's other error text). `dc` naming this datacenter runs the handler as usual.

**Answering.** `run_local(agent, exchange)` runs a request that arrived over server RPC through
this agent's own HTTP handling (`HTTPServer.handle`: routing, handlers, error texts, response
headers) without a socket: it builds an aiohttp request from the exchange, with the body in a
fed, finished stream. Handlers see an ordinary request. Cancelling the task cancels a parked
blocking query, as a client disconnect does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from appliance.federation.forward import Answer, Exchange, ForwardError
from appliance.http.encoding import read_body
from appliance.http.errors import HTTPError

FORWARDED_PREFIXES = ("/v1/catalog/", "/v1/health/", "/v1/kv/", "/v1/status/", "/v1/coordinate/nodes",
                      "/v1/coordinate/node/")
LOCAL_ONLY = frozenset({"/v1/catalog/datacenters"})
# Connection-level headers are not part of the request or answer that crosses datacenters.
HOP_HEADERS = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive", "host", "date",
                         "server", "upgrade", "te", "trailer", "proxy-connection"})
MAX_FORWARDED_BODY = 1 << 20


# ------------------------------------------------------------------ asking another datacenter


def forwardable(pattern: str) -> bool:
    return pattern.startswith(FORWARDED_PREFIXES) and pattern not in LOCAL_ONLY


def wrap_datacenter_routes(router: Any) -> None:
    """Make the catalog, health, KV, status and coordinate-node handlers honour `?dc=`."""
    for table in (router.exact, router.prefixes):
        for pattern, methods in table.items():
            if forwardable(pattern):
                for method, handler in list(methods.items()):
                    methods[method] = _dc_aware(handler)


def _dc_aware(handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        dc = request.query.get("dc", "")
        if dc:
            agent = request.app["agent"]
            dc = dc.lower()
            if dc != agent.config.datacenter.lower():
                return await forward(request, dc)
        return await handler(request)

    handle.__name__ = getattr(handler, "__name__", "handle")
    handle.__doc__ = handler.__doc__
    return handle


async def forward(request: web.Request, dc: str) -> web.Response:
    agent = request.app["agent"]
    body = b""
    if request.method not in ("GET", "HEAD"):
        body = await read_body(request, max(agent.config.limits.kv_max_value_size, MAX_FORWARDED_BODY))
    exchange = Exchange(
        request.method, request.raw_path.split("?", 1)[0],
        [(k, v) for k, v in request.query.items() if k != "dc"],
        [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_HEADERS], body)
    try:
        answer = await agent.federation.request(dc, exchange)
    except ForwardError as err:
        raise HTTPError(500, str(err)) from None
    headers = CIMultiDict((k, v) for k, v in answer.headers if k.lower() not in HOP_HEADERS)
    return web.Response(status=answer.status, body=answer.body, headers=headers)


# ------------------------------------------------------------------ answering for another datacenter


class _Peer:
    """What an aiohttp request and its body stream ask of the connection: there is none."""

    ssl_context = None
    peername = ("127.0.0.1", 0)
    sockname = None
    transport = None
    connected = True
    _reading_paused = False
    max_field_size = 8190
    max_headers = 128

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


async def run_local(agent: Any, exchange: Exchange) -> Answer:
    """Answer `exchange` with this agent's HTTP handling, in-process."""
    from appliance.http.app import ApiRequest  # app.py imports this module to wrap its routes

    server = agent.http
    if not server.app or server.loop is None:
        return Answer.error("agent is starting: HTTP handling is not ready", 503)
    query = urlencode(exchange.query, doseq=True, safe="/:")
    target = exchange.path + ("?" + query if query else "")
    headers = CIMultiDict((k, v) for k, v in exchange.headers if k.lower() not in HOP_HEADERS)
    if exchange.body or exchange.method not in ("GET", "HEAD", "DELETE"):
        headers["Content-Length"] = str(len(exchange.body))
    url = URL.build(path=exchange.path, query_string=query, encoded=True)
    message = RawRequestMessage(exchange.method, target, HttpVersion11, CIMultiDictProxy(headers),
                                tuple((k.encode(), v.encode()) for k, v in headers.items()), False, None, False,
                                False, url)
    peer = _Peer()
    payload = StreamReader(peer, max(len(exchange.body), 1 << 16), loop=server.loop)  # type: ignore[arg-type]
    if exchange.body:
        payload.feed_data(exchange.body)
    payload.feed_eof()
    request = ApiRequest(message, payload, peer, None, asyncio.current_task(), server.loop,  # type: ignore[arg-type]
                         client_max_size=server.client_max_size)
    request.app = server.app
    response = await server.handle(request)
    body = response.body if isinstance(response, web.Response) else b""
    if body is None:
        body = b""
    elif not isinstance(body, (bytes, bytearray)):
        body = getattr(body, "_value", b"")  # a bytes payload
        if not isinstance(body, (bytes, bytearray)):
            return Answer.error("the answer cannot be sent to another datacenter")
    headers_out = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_HEADERS]
    return Answer(response.status, headers_out, bytes(body))
