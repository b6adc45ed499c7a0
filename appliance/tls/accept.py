"""Listeners whose connections may start with TLS: look at the first byte, then serve.

How it works
------------
`Acceptor` owns a listening socket and accepts on it itself instead of through
`loop.create_server`, because what a connection is depends on its first byte and the listener
must decide before asyncio's transport (and TLS) takes the socket over:

1. accept; wait until the connection is readable (at most `first_byte_timeout_s`, None for no
   limit) and PEEK at its first byte, leaving it in the kernel's buffer;
2. `choose(first_byte)` answers with a `Choice`: serve it with a TLS context or in the clear,
   after dropping `consume` bytes (the RPC port's TLS marker byte), or refuse it with some bytes
   written back (plain HTTP sent to the HTTPS port), or just close it;
3. `loop.connect_accepted_socket(protocol_factory, sock, ssl=...)` makes the transport, with a
   TLS handshake bounded by `handshake_timeout_s`. The TLS context is asked for per connection, so
   a reload that installs new certificates (appliance/tls/context.py) applies to the next
   connection, while open ones keep theirs.

A handshake that fails (no client certificate when one is required, a certificate from another
CA, an expired one, not TLS at all) closes that connection and logs one DEBUG line; it never
reaches the protocol. appliance/http/app.py (the HTTPS port) and appliance/rpc/listener.py (the
server RPC port with TLS) use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("agent.tls")

HANDSHAKE_TIMEOUT_S = 10.0
LINGER_S = 0.5  # how long a refused client may take to hang up (Go's rstAvoidanceDelay)
ACCEPT_RETRY_S = 0.1  # after accept() failed (out of file descriptors)


@dataclass(frozen=True)
class Choice:
    """What to do with a new connection, given its first byte."""

    tls: ssl.SSLContext | None = None  # serve over TLS with this context (None: in the clear)
    consume: int = 0  # bytes to drop before serving (a marker byte)
    refuse: bytes | None = None  # write these and close instead of serving
    close: bool = False  # close at once
    protocol_factory: Callable[[], asyncio.BaseProtocol] | None = None  # instead of the listener's


class Acceptor:
    """One listening address whose connections are routed by their first byte (module docstring)."""

    def __init__(self, *, host: str, port: int, protocol_factory: Callable[[], asyncio.BaseProtocol],
                 choose: Callable[[bytes], Choice], first_byte_timeout_s: float | None = None,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S, name: str = "listener") -> None:
        self.host = host
        self.port = port
        self.protocol_factory = protocol_factory
        self.choose = choose
        self.first_byte_timeout_s = first_byte_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.name = name
        self.refused = 0  # connections closed before they were served (refusals, failed handshakes)
        self.sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._starting: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family, backlog=1024)
        sock.setblocking(False)
        self.sock = sock
        self.port = sock.getsockname()[1]
        self._task = asyncio.get_running_loop().create_task(self._accept_loop(), name=f"{self.name}-accept")

    def close(self) -> None:
        """Stop accepting; connections being set up are closed, served ones are left alone."""
        if self._task is not None:
            self._task.cancel()
        for task in list(self._starting):
            task.cancel()
        if self.sock is not None:
            self.sock.close()

    async def _accept_loop(self) -> None:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as err:
                log.warning("%s: accept failed: %s", self.name, err)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._start(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _peek(self, conn: socket.socket) -> bytes:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = conn.fileno()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await asyncio.wait_for(readable, self.first_byte_timeout_s)
        finally:
            loop.remove_reader(fd)
        return conn.recv(1, socket.MSG_PEEK)

    async def _drain(self, conn: socket.socket) -> None:
        """Read and drop what the client still sends until it hangs up: closing with its bytes
        unread would reset the connection, and a reset can discard the answer before it is read."""
        loop = asyncio.get_running_loop()
        while await loop.sock_recv(conn, 65536):
            pass

    async def _start(self, conn: socket.socket) -> None:
        peer = "?"
        served = False
        try:
            peer = conn.getpeername()[0]
            first = await self._peek(conn)
            choice = self.choose(first) if first else Choice(close=True)
            if choice.refuse is not None:
                log.debug("%s: refused connection: from=%s first byte %r", self.name, peer, first)
                with contextlib.suppress(OSError, TimeoutError):
                    conn.send(choice.refuse)
                    conn.shutdown(socket.SHUT_WR)
                    await asyncio.wait_for(self._drain(conn), LINGER_S)
                return
            if choice.close:
                return
            if choice.consume:
                conn.recv(choice.consume)
            await asyncio.get_running_loop().connect_accepted_socket(
                choice.protocol_factory or self.protocol_factory, conn, ssl=choice.tls,
                ssl_handshake_timeout=self.handshake_timeout_s if choice.tls is not None else None)
            served = True
        except (OSError, TimeoutError, EOFError, ValueError) as err:  # ssl.SSLError is an OSError
            log.debug("%s: connection closed: from=%s error=%r", self.name, peer, str(err) or type(err).__name__)
        finally:
            if not served:
                self.refused += 1
                conn.close()
