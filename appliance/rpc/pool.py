"""Outbound server-port connections: one per peer address, each with a bounded queue.

How it works
------------
A server dials one connection per peer address and only *writes* on it; everything it receives
arrives on the connections peers dialled to it (listener.py). Raft's messages are one-way (an
answer is just another message), so this needs no request matching. `offer(address, frame)`
queues an encoded frame and never blocks: when the queue (`QUEUE_FRAMES`) is full it returns
False and the caller decides (Raft drops and counts the message: Raft tolerates loss, and the
core must never block on a slow peer; a forwarded write fails at once). The link writes queued
frames in batches while the socket's write buffer stays under `WRITE_BUFFER_BYTES`, then drains.

A broken connection, or a dial that fails within `DIAL_TIMEOUT_S`, calls `on_lost(address)` (the
Raft transport fails the requests waiting on that peer and tells the core it is unreachable)
and is redialled after a backoff that doubles from `BACKOFF_MIN_S` to `BACKOFF_MAX_S` and resets
once a dial succeeds. Frames still queued wait for the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from .connection import dial

log = logging.getLogger("agent.server.rpc")

QUEUE_FRAMES = 1024
DIAL_TIMEOUT_S = 2.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
WRITE_BUFFER_BYTES = 1 << 20


class PeerLink:
    """The one connection this server writes to a peer address, with a bounded queue."""

    def __init__(self, pool: ConnectionPool, address: str) -> None:
        self.pool = pool
        self.address = address
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_FRAMES)
        self.connected = False
        self.tls_error = ""  # the last TLS failure logged for this peer
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"{pool.name}-{address}")

    def offer(self, data: bytes) -> bool:
        try:
            self.queue.put_nowait(data)
            return True
        except asyncio.QueueFull:
            return False

    def _tls_failed(self, err: ssl.SSLError) -> None:
        reason = err.verify_message if isinstance(err, ssl.SSLCertVerificationError) else str(err.reason or err)
        if reason != self.tls_error:
            self.tls_error = reason
            log.warning("TLS handshake with %s failed: %s", self.address, reason)

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            writer = None
            try:
                _, writer = await dial(self.address, self.pool.default_port, DIAL_TIMEOUT_S)
                self.connected = True
                self.tls_error = ""
                backoff = BACKOFF_MIN_S
                while True:
                    data = await self.queue.get()
                    writer.write(data)
                    while not self.queue.empty() and writer.transport.get_write_buffer_size() < WRITE_BUFFER_BYTES:
                        writer.write(self.queue.get_nowait())
                    await writer.drain()
            except ssl.SSLError as err:  # TLS (docs/tls.md): say why, once per reason
                self._tls_failed(err)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                self.connected = False
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            self.pool.on_lost(self.address)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)


class ConnectionPool:
    """Outbound links by peer address, created on first use (see the module docstring)."""

    def __init__(self, *, default_port: int, on_lost: Callable[[str], None], name: str = "rpc-peer") -> None:
        self.default_port = default_port
        self.on_lost = on_lost
        self.name = name  # task names: f"{name}-{address}"
        self.links: dict[str, PeerLink] = {}

    def link(self, address: str) -> PeerLink:
        link = self.links.get(address)
        if link is None:
            link = self.links[address] = PeerLink(self, address)
        return link

    def offer(self, address: str, data: bytes) -> bool:
        """Queue one encoded frame for `address`; False when its queue is full."""
        return self.link(address).offer(data)

    async def stop(self) -> None:
        tasks = [link.task for link in self.links.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
