"""The server-port listener: accept connections, let the first frame say whose they are.

How it works
------------
Every connection to the server port (8300) starts with a frame (frames.py). The first frame that
decodes decides what the connection is:

* a kind with a registered connection handler (`serve_connections(kind, handler)`) hands the
  whole connection over: `await handler.serve(reader, writer, first_body)` owns it until it
  closes. FOLLOW goes to the replica feed (feed.py: a client agent's stream and requests),
  DC_REQUEST to federation (appliance/federation/forward.py: one request, one answer);
* any other kind makes it a message connection: that frame and every later one go to
  `on_frame(body)`, which the Raft transport (appliance/raft/transport.py) handles: Raft
  messages, HELLO, FORWARD, READ_INDEX and their answers from peers, which are one-way
  (an answer travels back on the connection the answering server dialled, pool.py).

A kind whose handler is not registered (FOLLOW on a server without a feed) goes to `on_frame`,
which drops it. Garbage never ends the process: a header that cannot be followed closes the
connection, a body that does not decode (or that `on_frame` rejects with FrameError, ValueError,
TypeError or KeyError) is dropped; each counts one in `garbage_frames`.

TLS (docs/tls.md): with a certificate for internal_rpc the listener accepts through
appliance/tls/accept.py. A connection whose first byte is RPC_TLS (3, Consul's RPCTLS) is TLS
from the next byte on, with the frames above inside; one whose first byte is the frame version
(1) is plain and refused when verify_incoming is set. With verify_server_hostname, a connection
whose first frame makes it a message connection (server to server) must present a certificate
for `server.<dc>.<domain>`, so a client agent's certificate cannot act as a server; and a
certificate naming a SPIFFE ID (from the Connect CA, which a server with auto_encrypt.allow_tls
trusts) never can.

auto_encrypt: a connection whose first byte is RPC_TLS_INSECURE (7, Consul's RPCTLSInsecure) is
TLS without a client certificate, whatever verify_incoming says: a client agent that has no
certificate yet asks for one on it. Its first frame must be AUTO_ENCRYPT (anything else closes
it), answered by the AUTO_ENCRYPT handler (appliance/rpc/autoencrypt.py), which checks the
request's token and the server's allow_tls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from appliance.tls.accept import Acceptor, Choice
from appliance.tls.context import RPC_TLS, RPC_TLS_INSECURE, current as current_tls, peer_dns_names, peer_spiffe

from .connection import STREAM_LIMIT, read_parts
from .frames import HEADER, BadHeader, FrameError, Kind, decode_body, is_part, parse_header

log = logging.getLogger("agent.server.rpc")
INSECURE_READ_S = 10.0  # a connection without a client certificate sends its request within this
INSECURE_MAX_BYTES = 64 << 10  # ... and a small one (a CSR and a token)


class ConnectionHandler(Protocol):
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: list[Any]) -> None:
        """Serve a connection whose first frame was `body`, until it closes."""


FrameHandler = Callable[[list[Any]], None]


class RpcListener:
    """Accepts server-port connections and dispatches them by their first frame's kind."""

    def __init__(self, *, bind: str, port: int, on_frame: FrameHandler) -> None:
        self.bind = bind
        self.port = port
        self.on_frame = on_frame
        self.handlers: dict[int, ConnectionHandler] = {}
        self.garbage_frames = 0
        self._server: asyncio.base_events.Server | None = None
        self._acceptor: Acceptor | None = None  # with TLS (appliance/tls/accept.py)

    def serve_connections(self, kind: Kind, handler: ConnectionHandler | None) -> None:
        """Hand connections whose first frame is `kind` to `handler` (None: stop doing so)."""
        if handler is None:
            self.handlers.pop(int(kind), None)
        else:
            self.handlers[int(kind)] = handler

    async def start(self) -> None:
        if current_tls().rpc_server is None:
            self._server = await asyncio.start_server(self._serve, self.bind, self.port, limit=STREAM_LIMIT)
            return
        self._acceptor = Acceptor(host=self.bind, port=self.port, protocol_factory=self._protocol,
                                  choose=self._choose, name="rpc")
        await self._acceptor.start()

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=STREAM_LIMIT), self._serve)

    def _insecure_protocol(self) -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=STREAM_LIMIT), self._serve_insecure)

    async def _serve_insecure(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection without a client certificate: one AUTO_ENCRYPT request (a CSR: small, read
        within INSECURE_READ_S), nothing else."""
        try:
            async with asyncio.timeout(INSECURE_READ_S):
                length = parse_header(await reader.readexactly(HEADER.size))
                if length > INSECURE_MAX_BYTES:
                    raise FrameError(f"frame of {length} bytes")
                body = decode_body(await reader.readexactly(length))
            handler = self.handlers.get(int(Kind.AUTO_ENCRYPT))
            if body[0] != Kind.AUTO_ENCRYPT or handler is None:
                raise FrameError(f"frame kind {body[0]}")
            await handler.serve(reader, writer, body)
        except FrameError as err:
            self.garbage_frames += 1
            log.warning("refusing RPC without a client certificate from %s: only AutoEncrypt.Sign is allowed (%s)",
                        writer.get_extra_info("peername"), err)
        except (asyncio.IncompleteReadError, OSError, TimeoutError):
            pass
        finally:
            writer.close()

    def _choose(self, first: bytes) -> Choice:
        """TLS after the RPC_TLS byte with the current certificate (after RPC_TLS_INSECURE without
        asking for the client's); plain frames unless verify_incoming requires TLS (then the
        connection is closed)."""
        tls = current_tls()
        if first[0] == RPC_TLS and tls.rpc_server is not None:
            return Choice(tls=tls.rpc_server, consume=1)
        if first[0] == RPC_TLS_INSECURE and tls.rpc_insecure is not None:
            return Choice(tls=tls.rpc_insecure, consume=1, protocol_factory=self._insecure_protocol)
        if tls.rpc_require_tls:
            log.warning("Non-TLS connection attempted with verify_incoming set")
            return Choice(close=True)
        return Choice()

    def close(self) -> None:
        """Stop accepting; connections already handed over are their handlers' to close."""
        if self._server is not None:
            self._server.close()
        if self._acceptor is not None:
            self._acceptor.close()

    def _not_a_server(self, writer: asyncio.StreamWriter) -> bool:
        """With verify_server_hostname (and verify_incoming), a peer sending server-to-server
        frames must present a certificate for `server.<dc>.<domain>`: a client's cannot."""
        tls = current_tls()
        if writer.get_extra_info("sslcontext") is None:
            return False
        peercert = writer.get_extra_info("peercert")
        if peer_spiffe(peercert):  # a Connect certificate (auto_encrypt's) is never a server's
            log.warning("refusing server RPC from %s: its certificate is a Connect certificate",
                        writer.get_extra_info("peername"))
            return True
        if not tls.rpc_check_servers or tls.server_name() in peer_dns_names(peercert):
            return False
        log.warning("refusing server RPC from %s: its certificate is not one for %s",
                    writer.get_extra_info("peername"), tls.server_name())
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        readexactly = reader.readexactly  # read here rather than by connection.read_frame: the hot path
        try:
            while True:
                head = await readexactly(HEADER.size)
                try:
                    length = parse_header(head)
                except BadHeader as err:
                    self.garbage_frames += 1  # cannot find the next frame: drop the connection
                    log.warning("dropping connection: %s", err)
                    return
                data = await readexactly(length)
                if is_part(head):
                    data = await read_parts(reader, data)
                handler = None
                try:
                    body = decode_body(data)
                    if first:
                        first = False
                        handler = self.handlers.get(body[0])
                        if handler is not None:  # the connection is the handler's from here on
                            await handler.serve(reader, writer, body)
                            return
                        if self._not_a_server(writer):
                            self.garbage_frames += 1
                            return
                    self.on_frame(body)
                except (FrameError, ValueError, TypeError, KeyError):
                    self.garbage_frames += 1
                    if handler is not None:
                        return
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()
