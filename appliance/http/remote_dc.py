"""`?dc=<other>` on the HTTP API, and running a request that came from another datacenter.

How it works
------------
**Asking.** `wrap_datacenter_routes(router)` wraps the handlers of the catalog, health, KV,
status, session, transaction, prepared-query, event-fire, operator and snapshot endpoints and the
coordinate node reads (not `/v1/catalog/datacenters` and the keyring, which are local in Consul
too). A request whose `dc` names another
datacenter (compared without case) is not run here: its method, raw path, query
without `dc`, headers and body (read with the KV size limit) become an `Exchange` that the
agent's `Forwarder` (appliance/federation/forward.py) carries to a server of that datacenter.
The remote answer's status, headers (`X-Consul-Index`, `X-Consul-KnownLeader`, ...) and body
are sent back as they are, so blocking queries and the index come from the remote datacenter. A
datacenter that cannot be reached is Consul's `500` with `No path to datacenter` (or the
forwarder's other error text). `dc` naming this datacenter runs the handler as usual.

**Answering.** `run_local(dispatch, exchange)` runs a request that arrived over server RPC
through the very dispatch a local request goes through (`routing.respond`: routing, handlers,
error texts, response headers): the exchange becomes a request value, the answer value becomes
the exchange's answer. Cancelling the task cancels a parked blocking query, as a client
disconnect does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from appliance.federation.forward import Answer as RemoteAnswer, Exchange, ForwardError
from appliance.http.encoding import read_body
from appliance.http.errors import HTTPError
from appliance.http.values import Answer, Request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from appliance.http.context import HTTPContext

FORWARDED_PREFIXES = ("/v1/catalog/", "/v1/health/", "/v1/kv/", "/v1/status/", "/v1/coordinate/nodes",
                      "/v1/coordinate/node/", "/v1/query", "/v1/session/", "/v1/txn", "/v1/event/fire/",
                      "/v1/operator/", "/v1/snapshot")
# answered here whatever `dc` says, as Consul does: the keyring is asked of every datacenter, the
# event list is the agent's own
LOCAL_ONLY = frozenset({"/v1/catalog/datacenters", "/v1/operator/keyring"})
# Connection-level headers are not part of the request or answer that crosses datacenters.
HOP_HEADERS = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive", "host", "date",
                         "server", "upgrade", "te", "trailer", "proxy-connection"})
MAX_FORWARDED_BODY = 1 << 20


# ------------------------------------------------------------------ asking another datacenter


def forwardable(pattern: str) -> bool:
    """Whether `?dc=` on this route pattern is carried to that datacenter."""
    return pattern.startswith(FORWARDED_PREFIXES) and pattern not in LOCAL_ONLY


def _exchange(req: Request, ctx: HTTPContext) -> Exchange:
    body = b""
    if req.method not in ("GET", "HEAD"):
        body = read_body(req, max(ctx.config.limits.kv_max_value_size, MAX_FORWARDED_BODY))
    return Exchange(
        req.method, req.raw_path,
        [(k, v) for k, v in req.query.items() if k != "dc"],
        [(k, v) for k, v in req.headers.items() if k.lower() not in HOP_HEADERS], body)


async def forward(req: Request, ctx: HTTPContext, dc: str) -> Answer:
    try:
        answer = await ctx.federation.request(dc, _exchange(req, ctx))
    except ForwardError as err:
        raise HTTPError(500, str(err)) from None
    return _answer_of(answer)


async def on_server(req: Request, ctx: HTTPContext) -> Answer:
    """A client agent: run this request on a server of its own datacenter and answer what it
    answers (what only servers do in Consul: ACL login and logout)."""
    try:
        answer = await ctx.federation.ask_server(_exchange(req, ctx))
    except ForwardError as err:
        raise HTTPError(500, str(err)) from None
    return _answer_of(answer)


def _answer_of(answer: RemoteAnswer) -> Answer:
    out = Answer(answer.status, None, answer.body)
    headers = [(k, v) for k, v in answer.headers if k.lower() not in HOP_HEADERS]
    for k, v in headers:
        if k.lower() == "content-type":
            out.content_type = v  # written as it came (charset and all)
        else:
            out.headers[k] = v
    return out


# ------------------------------------------------------------------ answering for another datacenter


def request_of(exchange: Exchange) -> Request:
    """The request value of a request that came from another datacenter."""
    query = urlencode(exchange.query, doseq=True, safe="/:")
    headers = [(k, v) for k, v in exchange.headers if k.lower() not in HOP_HEADERS]
    return Request(exchange.method, exchange.path + ("?" + query if query else ""), dict(headers), exchange.body,
                   remote="", content_length=len(exchange.body) if exchange.body else None)


async def run_local(dispatch: Callable[[Request], Awaitable[Answer]], exchange: Exchange) -> RemoteAnswer:
    """Answer `exchange` with this agent's HTTP dispatch (`routing.respond`, the one a local
    request goes through), in-process."""
    answer = await dispatch(request_of(exchange))
    if answer.body is None and answer.has_json:
        return RemoteAnswer.error("the answer cannot be sent to another datacenter")
    headers = [(k, v) for k, v in answer.header_list() if k.lower() not in HOP_HEADERS]
    return RemoteAnswer(answer.status, headers, bytes(answer.body or b""))
