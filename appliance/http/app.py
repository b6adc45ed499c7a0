"""The HTTP API server: the aiohttp adapter between sockets and the request/answer values.

aiohttp parses HTTP and hands every request to `HTTPServer.handle` (no Application, URL
dispatcher or middleware chain). `handle` builds the request value (appliance/http/values.py:
method, raw target, headers, the client's address, and the body, read here up to the route's
body limit from the route table, appliance/http/routes.py), passes it to `routing.respond` (the
one dispatch: Consul's routing, the handler, HTTPError as Consul's status and text, a bug as a
500 logged with its traceback, JSON rendering, `X-Consul-Default-ACL-Policy` and the configured
`http_config.response_headers`), and writes the answer value back (a `StreamAnswer` chunk by
chunk). It counts and times the request (appliance.telemetry.record_http). Handlers import no
aiohttp. docs/decisions.md says why the low-level server (measured in bench/http). A read the
same target answered before, from data that has not changed since, is answered again from what
was recorded without the dispatch (appliance/http/replay.py says when and how).

Connections (docs/http-api.md, "Connections and limits")
-----------
Each connection is a `_Connection`: aiohttp's RequestHandler with Go's net/http rules at its edge,
so a client meets what it would meet at Consul's port.

- The request head is read through `_HeadReader`, which wraps aiohttp's C parser: the whole head
  may be `http_config.max_header_bytes` (1 MiB) plus Go's 4096 bytes of slack, a request line as
  long, one header field 64 KiB, 4096 fields; past that, 431. A version other than HTTP/1.x is
  answered 505. A method llhttp does not know but that is an HTTP token (`FOO`) switches the
  connection to aiohttp's pure-Python parser, so the request reaches the router, which answers as
  Consul's mux does (405 with `Allow`, or 404).
- A head that cannot be parsed is answered with Go's status and text (`400 Bad Request`, `431
  Request Header Fields Too Large`, `505 HTTP Version Not Supported: ...`, `501` for a transfer
  coding other than chunked), `Connection: close`, and logged as one DEBUG line with the client's
  address, never a traceback (`_refusal`, `_Connection.handle_error`).
- Timeouts: `read_header_timeout` from the connection's start, or from the first byte of a later
  request, to the end of its head; `read_timeout` likewise to the end of its body;
  `idle_timeout` between an answer and the next request (aiohttp's keep-alive timer). Go's server
  answers nothing when they expire, and neither does this one: the connection is closed.
- `limits.http_max_conns_per_client` (default 200) counts open TCP connections per client IP, as
  Consul's does. A connection past it first makes room by closing that client's connection which
  has waited longest for a request (nothing since it was accepted or last answered, or only part
  of a head), if that wait is at least `EVICT_AFTER_S`; otherwise it gets `429 Too Many Requests`
  and is closed before aiohttp sees it. So slow or silent connections cannot lock a client's
  other programs out (the CLI, Prometheus and consul-template all come from 127.0.0.1), while the
  limit still bounds the file descriptors one address can hold; a connection serving a request
  (a parked blocking query) is never closed for room.
Blocking handlers are cancelled when their client disconnects (`handler_cancellation`).

HTTPS (docs/tls.md)
-----
With `ports.https` set, the same handler and the same connection rules serve TLS on
`addresses.https` through appliance/tls/accept.py: a TLS handshake gets the current HTTPS context
(appliance/tls/context.py; `tls.https.verify_incoming` requires a client certificate from the
CA, and a reload swaps the certificate for the next connection); anything else is a plain request
to the TLS port, answered as Go's server answers it (`HTTP/1.0 400 Bad Request`, "Client sent an
HTTP request to an HTTPS server.") and closed. `ports.http = -1` serves HTTPS only.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import ERROR, MAX_MSG_QUEUE_SIZE, RequestHandler, RequestPayloadError

from appliance.http.context import HTTPContext
from appliance.http.replay import AGAIN, Replays, fits
from appliance.http.routes import ROUTES, Route
from appliance.http.routing import Router, respond
from appliance.http.values import Answer, Request, StreamAnswer
from appliance.http.wire import DirectAnswer, direct_answer
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.state import watchkeys
from appliance.telemetry import record_http
from appliance.tls.accept import Acceptor, Choice
from appliance.tls.context import current as current_tls

log = logging.getLogger("agent.http")

TOO_MANY = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n"
            b"Connection: close\r\n\r\nToo Many Requests\r\n")  # the body is exactly Content-Length

# Go's crypto/tls server answers plain HTTP on a TLS port with this and closes (net/http server.go)
PLAIN_TO_HTTPS = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS ClientHello (a handshake record)
HEAD_SLACK = 4096  # Go reads up to MaxHeaderBytes + 4096 ("bufio slop") before it answers 431
MAX_FIELD_BYTES = 64 << 10  # one header field: aiohttp grows a field by concatenation, quadratic past this
MAX_HEADERS = 4096  # header fields in one request (Go has no count, only the byte limit)
EVICT_AFTER_S = 1.0  # a connection waiting this long for a request may be closed to make room
REFUSAL_LINGER_S = 0.5  # Go's rstAvoidanceDelay
NO_TIMEOUT_S = 1e9  # aiohttp's keep-alive timer with idle_timeout = "0s"
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: what Go accepts as a method
QUOTED = re.compile(r"""(?<!\w)b?('[^']*'?|"[^"]*"?)""")  # a quoted (repr'd) piece of the client's request
ERROR_HTTP11 = ERROR._replace(version=HttpVersion11)  # aiohttp answers parse errors as HTTP/1.0; Go as 1.1


def _https_choice(first: bytes) -> Choice:
    """A connection to the HTTPS port: a TLS handshake record gets the current certificate (a
    reload swaps it for the next connection); anything else is Go's answer to plain HTTP."""
    context = current_tls().https
    if first != TLS_HANDSHAKE:
        return Choice(refuse=PLAIN_TO_HTTPS)
    return Choice(close=True) if context is None else Choice(tls=context)  # no certificate: no handshake


def build_router(extra_routes: Sequence[Route] = ()) -> Router:
    """The agent's routes (routes.ROUTES) and the extensions' (exporters, sd)."""
    return Router([*ROUTES, *extra_routes])


async def _read_body(request: web.BaseRequest, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the body (one more than a handler takes: its 413)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _Refused(BadHttpMessage):
    """A request refused before it is routed: `status`, `reason` and `text` are Go's answer."""

    def __init__(self, status: int, reason: str, text: str, why: str) -> None:
        super().__init__(why)
        self.status, self.reason, self.text = status, reason, text


TOO_LARGE = (431, "Request Header Fields Too Large", "431 Request Header Fields Too Large")


def _head_too_large(why: str) -> _Refused:
    return _Refused(*TOO_LARGE, why)


def _summary(message: str) -> str:
    """What to log of a parser's error: its first line, before the client's bytes it may quote."""
    line = message.split("\n", 1)[0].split(": ", 1)[0].rstrip(":")
    return QUOTED.sub("'…'", line)[:120]


def _refusal(exc: HttpProcessingError) -> tuple[int, str, str, str]:
    """Go's answer to a request its server cannot read: (status, reason, body, what to log).

    Go's net/http answers `<code> <text>` as both status line and body, `Content-Type: text/plain;
    charset=utf-8`, `Connection: close` (server.go, conn.serve). aiohttp's message may quote the
    client's bytes over several lines: the log gets its first line only.
    """
    if isinstance(exc, _Refused):
        return exc.status, exc.reason, exc.text, exc.message
    why = _summary(exc.message)
    if isinstance(exc, LineTooLong):
        return (*TOO_LARGE, "request line or header field too long")
    if why == "Too many headers received":
        return (*TOO_LARGE, why)
    if why.startswith("Request has invalid `Transfer-Encoding`"):
        return 501, "Not Implemented", "Unsupported transfer encoding", why  # Go: only "chunked"
    if exc.message.startswith("Missing 'Host' header"):  # Go's badRequestError carries its reason
        return 400, "Bad Request: missing required Host header", "400 Bad Request: missing required Host header", why
    return 400, "Bad Request", "400 Bad Request", why


def _head_size(message: Any) -> int:
    """Bytes of a parsed request head, as sent (give or take the spaces after the colons)."""
    size = len(message.method) + len(message.path) + 14  # "M /p HTTP/1.1\r\n" ... "\r\n"
    for name, value in message.raw_headers:
        size += len(name) + len(value) + 4
    return size


class _HeadReader:
    """aiohttp's HTTP parser of one connection, behind Go's rules for the request head.

    Counts the bytes of the head being read (431 past `limit`), refuses versions other than
    HTTP/1.x (505), starts the connection's header and body timers, and falls back to aiohttp's
    pure-Python parser for a method llhttp does not know (see the module docstring). aiohttp's
    RequestHandler calls it as it calls its parser.
    """

    __slots__ = ("conn", "parser", "limit", "time", "header_timeout", "head_bytes", "head_first", "body",
                 "message_consumed", "pause_reading", "feed_eof", "set_upgraded")

    def __init__(self, conn: _Connection, parser: Any, limit: int) -> None:
        self.conn = conn
        self.limit = limit
        self.time = conn._loop.time
        self.header_timeout = conn.http.read_header_timeout
        self.head_bytes = 0  # bytes of the head being read, received in earlier chunks
        self.head_first = b""  # those bytes, while there are only a few (for the fallback)
        self.body: Any = None  # the body being received, if any
        self.use(parser)

    def use(self, parser: Any) -> None:
        """Read with `parser`; what aiohttp calls besides feed_data goes to it directly."""
        self.parser = parser
        self.message_consumed = parser.message_consumed
        self.pause_reading = parser.pause_reading
        self.feed_eof = parser.feed_eof
        self.set_upgraded = parser.set_upgraded

    def feed_data(self, data: bytes) -> Any:
        conn = self.conn
        body = self.body
        if body is not None and body.is_eof():
            body = self.body = None
        if data and body is None and not conn.head_since:  # the first bytes of a head: its timer starts
            now = conn.head_since = self.time()
            timeout = self.header_timeout
            if timeout and (conn.timer is None or now + timeout < conn.timer_at):
                conn.arm(now + timeout)
        try:
            messages, upgraded, tail = self.parser.feed_data(data)
        except BadHttpMethod as err:
            return self._any_method(data, err)
        except HttpProcessingError as err:
            if body is not None:  # a malformed body (a bad chunk size): its reader fails now, not at read_timeout
                body.set_exception(RequestPayloadError(_summary(err.message)))
                body.feed_eof()  # and aiohttp does not try to drain it after the answer
            raise
        if messages:
            for message, _ in messages:
                version = message.version
                if version is not HttpVersion11 and version is not HttpVersion10 and version[0] != 1:
                    raise _Refused(505, "HTTP Version Not Supported: unsupported protocol version",
                                   "505 HTTP Version Not Supported: unsupported protocol version",
                                   f"unsupported protocol version HTTP/{version[0]}.{version[1]}")
            if self.head_bytes:
                if self.head_bytes + len(data) > self.limit and _head_size(messages[0][0]) > self.limit:
                    raise _head_too_large("request head too large")
                self.head_bytes = 0
                self.head_first = b""
            payload = messages[-1][1]
            if payload is EMPTY_PAYLOAD or payload.is_eof():
                conn.head_since = 0.0
            else:
                self.body = payload
                conn.body_started()
        elif data and body is None:
            if not self.head_bytes:
                self.head_first = data
            elif self.head_bytes < 64 and len(self.head_first) == self.head_bytes:
                self.head_first += data
            self.head_bytes += len(data)
            if self.head_bytes > self.limit:
                raise _head_too_large("request head too large")
        return messages, upgraded, tail

    def _any_method(self, data: bytes, err: BadHttpMethod) -> Any:
        """Go accepts any token as a method and lets the mux answer; llhttp knows a fixed list."""
        if self.head_bytes:
            if len(self.head_first) != self.head_bytes:
                raise err
            data = self.head_first + data
        method = data.split(b" ", 1)[0]
        if isinstance(self.parser, HttpRequestParserPy) or not TOKEN.fullmatch(method):
            raise err
        server = self.conn.http
        self.use(HttpRequestParserPy(
            self.conn, server.loop, 2**16, max_line_size=server.max_line_size, max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS, payload_exception=RequestPayloadError, max_msg_queue_size=MAX_MSG_QUEUE_SIZE))
        self.head_bytes = 0
        self.head_first = b""
        return self.feed_data(data)

    def reading_body(self) -> bool:
        return self.body is not None and not self.body.is_eof()


class _Connection(RequestHandler):
    """One HTTP connection: aiohttp's handler plus the per-client limit, Go's timeouts and answers."""

    __slots__ = ("http", "ip", "reader", "head_since", "body_deadline", "timer", "timer_at")

    def __init__(self, manager: web.Server, http: HTTPServer) -> None:
        loop = http.loop
        assert loop is not None  # HTTPServer.start sets it before it listens
        super().__init__(manager, loop=loop, keepalive_timeout=http.idle_timeout or NO_TIMEOUT_S,
                         access_log=None,  # type: ignore[arg-type]  # None: no access log (aiohttp checks)
                         logger=log, max_line_size=http.max_line_size, max_field_size=MAX_FIELD_BYTES,
                         max_headers=MAX_HEADERS)
        self.http = http
        self.ip: str | None = None
        self.reader = self._parser = _HeadReader(self, self._parser, http.max_head_bytes)  # type: ignore[assignment]
        self.head_since = 0.0  # loop time the head being read began (0: none)
        self.body_deadline = 0.0  # loop time the body being read must be in by (0: none)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    # -- the per-client limit ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        http = self.http
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "unix"
        conns = http.by_ip.get(ip)
        if conns is None:
            conns = http.by_ip[ip] = {}
        elif 0 < http.max_per_ip <= len(conns) and not http.make_room(conns, ip):
            log.debug("refused connection: from=%s error=%r", ip, "too many connections from this client")
            self._manager = None  # aiohttp's connection_lost: nothing to undo
            self._force_close = True
            transport.write(TOO_MANY)  # type: ignore[attr-defined]
            transport.close()
            return
        self.ip = ip
        conns[self] = None
        super().connection_made(transport)
        self.head_started()  # Go: the first request's header deadline runs from the accept

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.ip is not None:
            self.http.forget(self, self.ip)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        super().connection_lost(exc)

    def waiting_since(self) -> float | None:
        """Loop time since which this connection waits for a request (None: it serves one)."""
        waiter = self._waiter
        if waiter is None or waiter.done() or self._messages or self.transport is None:
            return None
        return self._next_keepalive_close_time - self._keepalive_timeout  # set on accept and each answer

    # -- timeouts ------------------------------------------------------------------------------

    def head_started(self) -> None:
        now = self._loop.time()
        self.head_since = now
        if self.http.read_header_timeout:
            self.arm(now + self.http.read_header_timeout)

    def body_started(self) -> None:
        start = self.head_since or self._loop.time()
        self.head_since = 0.0
        if self.http.read_timeout:
            self.body_deadline = start + self.http.read_timeout
            self.arm(self.body_deadline)

    def arm(self, when: float) -> None:
        if self.timer is None or when < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self._loop.call_at(when, self._expire)
            self.timer_at = when

    def _expire(self) -> None:
        self.timer = None
        if self.transport is None or self._force_close:
            return
        http = self.http
        now = self._loop.time()
        due = 0.0
        if self.head_since and http.read_header_timeout:
            due = self.head_since + http.read_header_timeout
            if due <= now:
                if not (self._request_in_progress or self._messages):
                    return self.drop(f"request head not received within {http.read_header_timeout:g}s")
                # a request is being answered: like Go, read the next head once it is done
                self.head_since, due = now, now + http.read_header_timeout
        if self.body_deadline:
            if not self.reader.reading_body():
                self.body_deadline = 0.0
            elif self.body_deadline <= now:
                return self.drop(f"request body not received within {http.read_timeout:g}s")
            else:
                due = min(due, self.body_deadline) if due else self.body_deadline
        if due:
            self.arm(due)

    def drop(self, why: str) -> None:
        log.debug("closing connection: from=%s error=%r", self.ip, why)
        self.force_close()

    # -- requests that cannot be read ----------------------------------------------------------

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):  # not a parse error: aiohttp's own answer
            return super().handle_error(request, status, exc, message)
        status, reason, text, why = _refusal(exc)
        log.debug("refused request: from=%s status=%d error=%r", request.remote, status, why)
        self.close()  # read nothing more: what the client still sends is discarded
        response = _Refusal(self, status=status, reason=reason, text=text, content_type="text/plain", charset="utf-8")
        response.force_close()
        return response


class _Refusal(web.Response):
    """Go's answer to an unreadable request, then Go's lingering close (server.go closeWriteAndWait):
    half-close and wait up to REFUSAL_LINGER_S for the client to hang up, reading and dropping what
    it still sends. Closing at once, with its bytes unread, would reset the connection, and a reset
    can discard the answer before the client reads it (a 2 MB head, say, answered 431 after 1 MB)."""

    def __init__(self, conn: _Connection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn = conn

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        transport = self.conn.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
            await asyncio.sleep(REFUSAL_LINGER_S)  # cut short (cancelled) when the client closes


class HTTPServer:
    def __init__(self, ctx: HTTPContext, extra_routes: Sequence[Route] = (), *, replay: bool = True) -> None:
        self.ctx = ctx
        self.replay = replay  # answer repeated reads from their recorded answer (appliance/http/replay.py)
        self.replays = Replays()
        self.router = build_router(extra_routes)
        cfg = ctx.config
        self.max_per_ip = cfg.limits.http_max_conns_per_client
        self.client_max_size = max(cfg.limits.kv_max_value_size, cfg.limits.txn_max_req_len) + 1
        self.max_head_bytes = cfg.http_max_header_bytes + HEAD_SLACK
        self.max_line_size = self.max_head_bytes
        self.read_header_timeout = cfg.http_read_header_timeout_s
        self.read_timeout = cfg.http_read_timeout_s
        self.idle_timeout = cfg.http_idle_timeout_s
        self.by_ip: dict[str, dict[_Connection, None]] = {}  # open connections per client IP
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: web.Server | None = None
        self.servers: list[asyncio.base_events.Server] = []
        self.tls_listeners: list[Acceptor] = []  # ports.https

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        if message is ERROR:  # a request that could not be parsed: answered in HTTP/1.1, like Go
            message = ERROR_HTTP11
        assert self.loop is not None  # set by serve() before the server accepts
        return web.BaseRequest(message, payload, protocol, writer, task, self.loop,
                               client_max_size=self.client_max_size)

    async def dispatch(self, req: Request) -> Answer:
        """The one dispatch of a request value (local, from another datacenter, or a test's)."""
        return await respond(self.router, req, self.ctx)

    def make_room(self, conns: dict[_Connection, None], ip: str) -> bool:
        """At the per-client limit: close the connection of `ip` that has waited longest for a
        request, if it has waited EVICT_AFTER_S at least. False if none has."""
        assert self.loop is not None
        oldest = self.loop.time() - EVICT_AFTER_S
        victim = None
        for conn in conns:
            since = conn.waiting_since()
            if since is not None and since <= oldest:
                victim, oldest = conn, since
        if victim is None:
            return False
        victim.drop(f"connection limit of this client reached; waited {self.loop.time() - oldest:.1f}s for a request")
        self.forget(victim, ip)
        return True

    def forget(self, conn: _Connection, ip: str) -> None:
        conn.ip = None
        conns = self.by_ip.get(ip)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self.by_ip[ip]

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        ctx = self.ctx
        tel = ctx.telemetry
        start = tel.monotonic()
        read_done = False
        replay = self.replays.by_target.get(request.raw_path) if request.method == "GET" else None
        if replay is not None and fits(request):  # a read answered before (appliance/http/replay.py)
            try:
                outcome = await replay.answer(request, ctx)
            except BaseException:  # cancelled while it waited for its read point: counted as ever
                record_http(tel, "GET", replay.pattern, start)
                raise
            if isinstance(outcome, DirectAnswer | Answer):
                record_http(tel, "GET", replay.pattern, start)
                self.replays.answered += 1
                if isinstance(outcome, Answer):  # the read point failed, as it would have the full way
                    return await self._write(request, outcome)
                return outcome  # type: ignore[return-value]  # aiohttp calls only prepare, write_eof, keep_alive
            read_done = outcome is AGAIN
        req = self._value(request)
        req.read_done = read_done
        try:
            if request.can_read_body:
                req.content_length = request.content_length
                route = self.router.route_of(req)
                limit = route.body_bytes(ctx.config.limits) if route is not None else 0
                length = req.content_length
                if limit and (length is None or length <= limit):  # else the handler answers 413
                    req.body = await _read_body(request, limit)
            answer = await respond(self.router, req, ctx)
        except RequestPayloadError as err:  # the body could not be read: the client's fault, not a bug
            log.debug("refused request: from=%s status=400 error=%r", req.remote, _summary(str(err)))
            response = web.Response(status=400, text="400 Bad Request")
            response.force_close()
            response.headers.update(ctx.response_headers)
            return response
        finally:
            record_http(tel, req.method, req.route, start)
        return await self._write(request, answer, req)

    async def _write(self, request: web.BaseRequest, answer: Answer, req: Request | None = None) -> web.StreamResponse:
        """Write `answer`; one written directly to a replayable read (`req`) is recorded for replay."""
        if isinstance(answer, StreamAnswer):
            return await self._stream(request, answer)
        direct = direct_answer(request, answer)
        if direct is not None:
            if req is not None and req.frame is not None and self.replay and request.method == "GET" and fits(request):
                self.replays.record(request.raw_path, self.router.route_of(req), req, answer, self.ctx)
            return direct  # type: ignore[return-value]  # aiohttp calls only prepare, write_eof, keep_alive
        headers = answer.headers
        ctype = answer.content_type_value()
        if ctype is not None:
            headers["Content-Type"] = ctype
        return web.Response(status=answer.status, reason=answer.reason, body=answer.body, headers=headers)

    def _value(self, request: web.BaseRequest) -> Request:
        """The request value of an aiohttp request (its body is read by `handle`)."""
        return Request(request.method, request.raw_path, request.headers, b"",
                       getattr(request.protocol, "ip", None) or "", None, request.rel_url)

    @staticmethod
    async def _stream(request: web.BaseRequest, answer: StreamAnswer) -> web.StreamResponse:
        """Write a streamed answer chunk by chunk until it ends or the client goes away."""
        headers = dict(answer.headers)
        headers["Content-Type"] = answer.content_type or "text/plain"
        response = web.StreamResponse(status=answer.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunks = answer.chunks
        try:
            async for chunk in chunks:
                await response.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        return response

    async def serve(self, hosts: list[str], port: int, *,
                    task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """Listen on each host, report started, serve until cancelled; then stop accepting,
        let requests already read start, and give those in flight 10 s to finish."""
        try:
            await self._listen(hosts, port)
            task_status.started()
            await asyncio.Event().wait()
        finally:
            await self._shutdown()

    async def _listen(self, hosts: list[str], port: int) -> None:
        self.loop = asyncio.get_running_loop()
        server = self.server = web.Server(self.handle, request_factory=self._request, handler_cancellation=True,
                                          access_log=None)
        for host in hosts if port >= 0 else ():
            srv = await self.loop.create_server(lambda: _Connection(server, self), host, port, reuse_address=True)
            self.servers.append(srv)
            log.info("Started HTTP server: address=%s:%d network=tcp", host, port)
        cfg = self.ctx.config
        if cfg.ports.https >= 0:  # the same handler behind TLS (appliance/tls/accept.py)
            for host in cfg.listen_addrs("https"):
                acceptor = Acceptor(host=host, port=cfg.ports.https, protocol_factory=lambda: _Connection(server, self),
                                    choose=_https_choice, first_byte_timeout_s=self.read_header_timeout or None,
                                    name="https")
                await acceptor.start()
                self.tls_listeners.append(acceptor)
                log.info("Started HTTPS server: address=%s:%d network=tcp", host, acceptor.port)

    async def _shutdown(self) -> None:
        for srv in self.servers:
            srv.close()
        for acceptor in self.tls_listeners:
            acceptor.close()
        self.ctx.stopping = True  # parked blocking reads answer now with what they have
        self.ctx.hub.notify((watchkeys.HTTP_STOPPING,))
        if self.server is not None:
            await asyncio.sleep(0)  # requests that arrived before the close start being handled
            self.server.pre_shutdown()
            await self.server.shutdown(10.0)
