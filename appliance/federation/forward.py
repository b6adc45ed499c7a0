"""Requests for another datacenter: carried over server RPC, answered by that datacenter's servers.

How it works
------------
A request for datacenter `dc` (an HTTP request with `?dc=<dc>`, or a DNS lookup of
`<svc>.service.<dc>.consul`) becomes an `Exchange`: method, path, query pairs (without `dc`),
request headers and body. `Forwarder.request(dc, exchange)` returns an `Answer`: status, headers,
body.

* On a client agent it opens a connection to a server of its own datacenter (from the LAN pool,
  appliance/client/servers.py) and sends one DC_REQUEST frame (appliance/rpc/frames.py:
  `u8 version | u32 length | msgpack [9, {...}]`); the server answers with one DC_RESPONSE frame
  `[10, {status, headers, body}]` on the same connection, which is then closed.
* On a server, a request for its own datacenter is answered locally (`local`, which runs the
  request through the agent's own HTTP handling in-process, appliance/http/remote_dc.py). For
  another datacenter the server picks an alive server of that datacenter from the WAN pool
  (pool.py) and sends it the DC_REQUEST with `hops = 1`; if the dial fails it tries the next one.
  A server never forwards a request that already crossed datacenters, so two pools with
  different views cannot bounce a request around.

Errors are Consul's: a datacenter with no WAN member is `500 No path to datacenter`; one whose
servers are all failed or unreachable is `500 Remote DC has no server currently reachable`; a
client agent that knows no server says `500 No known Consul servers`. Blocking queries keep
their semantics because the remote server runs them: the exchange may take up to the remote
`max_query_time` plus its jitter, so the reply deadline is `max_query_time_s x 17/16 + 30 s`.
If the asker goes away (its HTTP client disconnects, so the connection closes) the server
running the request sees end-of-file and cancels it. Only the first request on a connection is
read (appliance/rpc/listener.py hands over connections whose first frame is DC_REQUEST); frames
that do not decode are counted in the listener's `garbage_frames` and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from appliance.rpc.connection import dial, read_frame
from appliance.rpc.frames import Kind, decode_body, encode_frame

log = logging.getLogger("agent.server.rpc")

DIAL_TIMEOUT_S = 5.0
NO_PATH = "No path to datacenter"
DC_NOT_AVAILABLE = "Remote DC has no server currently reachable"
NO_SERVERS = "No known Consul servers"


class ForwardError(Exception):
    """A request that could not reach its datacenter (the text is Consul's error)."""


@dataclass
class Exchange:
    method: str
    path: str  # raw (still percent-encoded) path, no query
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def encode(self, dc: str, hops: int) -> bytes:
        return encode_frame([Kind.DC_REQUEST, {
            "dc": dc, "method": self.method, "path": self.path, "query": [list(p) for p in self.query],
            "headers": [list(h) for h in self.headers], "body": self.body, "hops": hops}])


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def error(cls, text: str, status: int = 500) -> Answer:
        return cls(status, [("Content-Type", "text/plain; charset=utf-8")], text.encode())


def _pairs(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise ValueError("expected a list of pairs")
    out = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2 or not all(isinstance(x, str) for x in item):
            raise ValueError("bad pair")
        out.append((item[0], item[1]))
    return out


def decode_request(body: Any) -> tuple[str, int, Exchange]:
    """(dc, hops, exchange) from a DC_REQUEST frame body; ValueError when it is garbage."""
    if (not isinstance(body, list) or len(body) != 2 or body[0] != Kind.DC_REQUEST
            or not isinstance(body[1], dict)):
        raise ValueError("not a DC_REQUEST")
    d = body[1]
    dc, method, path, hops, data = d.get("dc"), d.get("method"), d.get("path"), d.get("hops"), d.get("body", b"")
    if not (isinstance(dc, str) and isinstance(method, str) and isinstance(path, str) and path.startswith("/")):
        raise ValueError("bad dc, method or path")
    if type(hops) is not int or not 0 <= hops <= 1 or not isinstance(data, bytes):
        raise ValueError("bad hops or body")
    return dc, hops, Exchange(method, path, _pairs(d.get("query", [])), _pairs(d.get("headers", [])), data)


def decode_answer(body: Any) -> Answer:
    if (not isinstance(body, list) or len(body) != 2 or body[0] != Kind.DC_RESPONSE
            or not isinstance(body[1], dict)):
        raise ValueError("not a DC_RESPONSE")
    d = body[1]
    status, data = d.get("status"), d.get("body", b"")
    if type(status) is not int or not 100 <= status <= 599 or not isinstance(data, bytes):
        raise ValueError("bad status or body")
    return Answer(status, _pairs(d.get("headers", [])), data)


LocalHandler = Callable[[Exchange], Awaitable[Answer]]


class Forwarder:
    """Sends requests to other datacenters and answers the ones that arrive over server RPC."""

    def __init__(self, *, datacenter: str, local: LocalHandler, rng: random.Random, pool: Any = None,
                 servers: Any = None, max_query_time_s: float = 600.0,
                 on_cross_dc: Callable[[str], None] | None = None) -> None:
        self.datacenter = datacenter
        self.local = local
        self.rng = rng
        self.pool = pool  # a server's WanPool (pool.py); None on a client agent or without a WAN pool
        self.servers = servers  # a client agent's ServerList (appliance/client/servers.py)
        self.reply_timeout_s = max_query_time_s * 17 / 16 + 30.0
        self.stats = {"forwarded": 0, "served": 0, "failed": 0}
        self.on_cross_dc = on_cross_dc  # counts consul.rpc.cross-dc{datacenter} on a server

    # ------------------------------------------------------------------ asking

    async def request(self, dc: str, exchange: Exchange, hops: int = 0) -> Answer:
        """Run `exchange` in datacenter `dc`; ForwardError when no server of it can be reached."""
        if dc == self.datacenter:
            return await self.local(exchange)
        if self.servers is not None:  # a client agent: a server of our datacenter does the rest
            targets = list(self.servers.known())
            self.rng.shuffle(targets)
            if not targets:
                raise ForwardError(NO_SERVERS)
            return await self._send(targets, dc, exchange, hops, NO_SERVERS)
        if self.pool is None or hops > 0 or not self.pool.known(dc):
            log.warning("RPC request for DC is currently failing as no path was found: datacenter=%s method=%s",
                        dc, exchange.method)
            raise ForwardError(NO_PATH)
        if self.on_cross_dc is not None:
            self.on_cross_dc(dc)
        targets = self.pool.server_addresses(dc)
        if not targets:
            log.warning("RPC request to DC is currently failing as no server can be reached: datacenter=%s", dc)
            raise ForwardError(DC_NOT_AVAILABLE)
        return await self._send(targets, dc, exchange, hops + 1, DC_NOT_AVAILABLE)

    async def lookup(self, dc: str, kind: str, name: str) -> Any:
        """A DNS lookup of another datacenter (`<svc>.service.<dc>.consul`): its
        /v1/health/service (kind "service") or /v1/catalog/node answer, stale as Consul's DNS reads
        by default; None for a node it does not know."""
        path = ("/v1/health/service/" if kind == "service" else "/v1/catalog/node/") + quote(name, safe="")
        answer = await self.request(dc, Exchange("GET", path, [("stale", "")]))
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise ForwardError(answer.body.decode("utf-8", "replace"))
        return json.loads(answer.body)

    async def ask_server(self, exchange: Exchange) -> Answer:
        """A client agent: run `exchange` on a server of this datacenter (what only servers know)."""
        targets = list(self.servers.known()) if self.servers is not None else []
        self.rng.shuffle(targets)
        if not targets:
            raise ForwardError(NO_SERVERS)
        return await self._send(targets, self.datacenter, exchange, 0, NO_SERVERS)

    async def _send(self, targets: list[str], dc: str, exchange: Exchange, hops: int, none_reached: str) -> Answer:
        data = exchange.encode(dc, hops)
        for address in targets:
            try:
                reader, writer = await dial(address, 8300, DIAL_TIMEOUT_S, datacenter=dc)  # TLS: server.<dc>
            except (OSError, TimeoutError) as err:
                log.warning("RPC failed to server in DC: server=%s datacenter=%s error=%s", address, dc, err)
                continue  # nothing was sent: the next server may take it
            self.stats["forwarded"] += 1
            try:
                writer.write(data)
                await writer.drain()
                async with asyncio.timeout(self.reply_timeout_s):
                    return decode_answer(decode_body(await read_frame(reader)))
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as err:  # FrameError too
                self.stats["failed"] += 1  # it may have run there: never sent twice
                raise ForwardError(f"rpc error making call: {type(err).__name__}: {err}" if str(err)
                                   else f"rpc error making call: {type(err).__name__}") from None
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        self.stats["failed"] += 1
        raise ForwardError(none_reached)

    # ------------------------------------------------------------------ answering

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any) -> None:
        """Answer the DC_REQUEST that opened this connection (called by the RPC transport)."""
        try:
            dc, hops, exchange = decode_request(body)
        except ValueError as err:
            answer = Answer.error(f"malformed datacenter request: {err}", 400)
        else:
            self.stats["served"] += 1
            work = asyncio.ensure_future(self._answer(dc, hops, exchange))
            gone = asyncio.ensure_future(reader.read(1))  # the asker closes: stop working for it
            try:
                await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the agent is stopping
                work.cancel()
                gone.cancel()
                raise
            gone.cancel()
            if not work.done():  # the asker hung up: stop working for it
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                return
            answer = work.result()
        writer.write(encode_frame([Kind.DC_RESPONSE, {"status": answer.status,
                                                      "headers": [list(h) for h in answer.headers],
                                                      "body": answer.body}]))
        with contextlib.suppress(OSError):
            await writer.drain()

    async def _answer(self, dc: str, hops: int, exchange: Exchange) -> Answer:
        try:
            return await self.request(dc, exchange, hops)
        except ForwardError as err:
            return Answer.error(str(err))
        except Exception as err:  # a bug answers 500, never kills the connection handler
            log.error("datacenter request failed: path=%s error=%r", exchange.path, err, exc_info=True)
            return Answer.error(str(err) or type(err).__name__)
