"""The HTTP API server: aiohttp's low-level server, Consul's routing, one error path.

aiohttp parses HTTP and hands every request to `HTTPServer.handle` (no Application, URL
dispatcher or middleware chain: routing is Consul's own, appliance.http.routing.Router). Requests
are `ApiRequest`s whose `app` is a plain dict of the agent and its HTTP settings, so handlers read
`request.app["agent"]` as they would on an aiohttp Application. `handle` counts and times the
request (appliance.telemetry.record_http) and turns HTTPError into Consul's status and plain-text
body; anything else is a bug, answered 500 with its message and logged with its traceback. Every
response carries `X-Consul-Default-ACL-Policy` and the configured `http_config.response_headers`.
docs/decisions.md says why the low-level server (measured in bench/http).

`limits.http_max_conns_per_client` (default 200) counts open TCP connections per client IP;
a connection past the limit gets `429 Too Many Requests` and is closed before aiohttp sees it.
Blocking handlers are cancelled when their client disconnects (`handler_cancellation`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from aiohttp import web

from appliance.http.errors import HTTPError
from appliance.http.handlers import agent as agent_handlers
from appliance.http.handlers import catalog, coordinate, event, health, keyring, kv, metrics, operator, snapshot, status
from appliance.http.query import RenderCache, RenderEntry
from appliance.http.remote_dc import wrap_datacenter_routes
from appliance.http.routing import Router
from appliance.telemetry import record_http

log = logging.getLogger("agent.http")

TOO_MANY = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
            b"Connection: close\r\n\r\nToo Many Requests\r\n\r\n")


def build_router(extra_routes: list[Any] = ()) -> Router:
    router = Router()
    for module in (agent_handlers, catalog, coordinate, event, health, keyring, kv, metrics, operator, snapshot,
                   status):
        router.add_all(module.ROUTES)
    router.add_all(list(extra_routes))
    wrap_datacenter_routes(router)  # ?dc=<other> on catalog, health, KV, status (remote_dc.py)
    return router


class ApiRequest(web.BaseRequest):
    """A request of this server: `app` holds the agent and the HTTP settings (see create_app)."""

    ATTRS = web.BaseRequest.ATTRS | frozenset(["app", "route", "render_entry"])
    app: dict[str, Any]
    route = ""  # the matched route pattern (Router.dispatch), for metrics
    render_entry: RenderEntry | None = None  # a cached answer this request returns (query.blocking)


def create_app(agent: Any) -> dict[str, Any]:
    """What handlers find in `request.app`."""
    cfg = agent.config
    return {
        "agent": agent,
        "pretty": cfg.pretty_json,
        "response_headers": {"X-Consul-Default-ACL-Policy": "allow", **cfg.http_response_headers},
        "loop_time": asyncio.get_running_loop().time,
        "render_cache": RenderCache(),
    }


class _Limited(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol and enforces the per-IP connection limit."""

    def __init__(self, inner: asyncio.Protocol, server: HTTPServer) -> None:
        self.inner = inner
        self.server = server
        self.ip: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "unix"
        if self.server.per_ip[ip] >= self.server.max_per_ip > 0:
            self.inner = None  # type: ignore[assignment]
            transport.write(TOO_MANY)  # type: ignore[attr-defined]
            transport.close()
            return
        self.ip = ip
        self.server.per_ip[ip] += 1
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ip is not None:
            self.server.per_ip[self.ip] -= 1
            if self.server.per_ip[self.ip] <= 0:
                del self.server.per_ip[self.ip]
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class HTTPServer:
    def __init__(self, agent: Any, extra_routes: list[Any] = ()) -> None:
        self.agent = agent
        self.router = build_router(extra_routes)
        self.max_per_ip = agent.config.limits.http_max_conns_per_client
        cfg = agent.config
        self.client_max_size = max(cfg.limits.kv_max_value_size, cfg.limits.txn_max_req_len) + 1
        self.per_ip: Counter[str] = Counter()
        self.app: dict[str, Any] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: web.Server | None = None
        self.servers: list[asyncio.base_events.Server] = []

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> ApiRequest:
        request = ApiRequest(message, payload, protocol, writer, task, self.loop,
                             client_max_size=self.client_max_size)
        request.app = self.app
        return request

    async def handle(self, request: ApiRequest) -> web.StreamResponse:
        tel = self.agent.telemetry
        start = tel.monotonic()
        try:
            response = await self.router.dispatch(request)
        except HTTPError as err:
            response = web.Response(status=err.status, text=err.text, headers=err.headers)
        except web.HTTPException as err:
            if err.status == 413:
                response = web.Response(status=413, text=err.text or "Request body too large")
            else:
                response = web.Response(status=err.status, reason=err.reason, text=err.text, headers=err.headers)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as err:  # noqa: BLE001 - a bug must not take the agent down
            log.error("request failed: method=%s url=%s error=%r", request.method, request.path, err, exc_info=True)
            response = web.Response(status=500, text=str(err) or type(err).__name__)
        finally:
            record_http(tel, request, start)
        if not response.prepared:
            response.headers.update(self.app["response_headers"])
        return response

    async def start(self, hosts: list[str], port: int) -> None:
        self.app = create_app(self.agent)
        self.loop = asyncio.get_running_loop()
        server = self.server = web.Server(self.handle, request_factory=self._request, handler_cancellation=True,
                                          access_log=None)
        for host in hosts:
            srv = await self.loop.create_server(lambda: _Limited(server(), self), host, port, reuse_address=True)
            self.servers.append(srv)
            log.info("Started HTTP server: address=%s:%d network=tcp", host, port)

    async def stop(self) -> None:
        for srv in self.servers:
            srv.close()
        if self.server is not None:
            await asyncio.sleep(0)  # requests that arrived before the close start being handled
            self.server.pre_shutdown()
            await self.server.shutdown(10.0)
