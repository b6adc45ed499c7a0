"""Frames over an asyncio stream: dialling a server address and reading one frame.

How it works: a server address is `host:port` (`[v6]:port`, or a bare host that takes the
default port). `read_frame` reads one header and its body (or a body's parts, joined: see
frames.py) and returns the body's bytes; the caller decodes it with `frames.decode_body`, so a
body that does not decode costs that frame only, while `BadHeader` (unknown version, over a size
limit) means the stream cannot be followed and the caller closes the connection. `dial` speaks
TLS when internal_rpc's verify_outgoing is set (docs/tls.md).
"""

from __future__ import annotations

import asyncio
import ssl

from appliance.tls.context import RPC_TLS, RPC_TLS_INSECURE, current as current_tls

from .frames import HEADER, add_part, is_part, parse_header

STREAM_LIMIT = 1 << 20  # the StreamReader's buffer limit on the server port's connections


def split_address(address: str, default_port: int) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "]" in port:
        return address.strip("[]"), default_port
    return host.strip("[]"), int(port)


async def dial(address: str, default_port: int, timeout_s: float, *, datacenter: str | None = None,
               insecure: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection to a server address within `timeout_s` (OSError or TimeoutError).

    With internal_rpc's verify_outgoing (appliance/tls/context.py) the connection is TLS: the
    byte RPC_TLS, then the handshake, presenting this agent's certificate and checking the
    server's against the CA and, with verify_server_hostname, its name `server.<datacenter>.<domain>`
    (this agent's datacenter unless `datacenter` names another). A failed check is an
    ssl.SSLError, an OSError: the caller treats it as a server it could not reach.
    `insecure` (auto_encrypt's first request, appliance/rpc/autoencrypt.py) sends RPC_TLS_INSECURE
    instead of RPC_TLS: the server asks for no client certificate on that connection.
    """
    host, port = split_address(address, default_port)
    tls = current_tls()
    context = tls.rpc_client
    if context is None:
        return await asyncio.wait_for(asyncio.open_connection(host, port, limit=STREAM_LIMIT), timeout_s)
    server_name = tls.server_name(datacenter) if context.check_hostname else None
    marker = RPC_TLS_INSECURE if insecure else RPC_TLS
    return await asyncio.wait_for(_dial_tls(host, port, context, server_name, marker), timeout_s)


async def _dial_tls(host: str, port: int, context: ssl.SSLContext, server_name: str | None,
                    marker: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
    try:
        writer.write(bytes([marker]))
        await writer.start_tls(context, server_hostname=server_name)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def read_frame(reader: asyncio.StreamReader, silence_s: float | None = None) -> bytes:
    """The next body's bytes (IncompleteReadError at end of stream, BadHeader on garbage). With
    `silence_s`, TimeoutError when a header does not come within it, or a frame's body within it
    plus a second per MiB."""
    head = await asyncio.wait_for(reader.readexactly(HEADER.size), silence_s)
    data = await _read_body(reader, parse_header(head), silence_s)
    return await read_parts(reader, data, silence_s) if is_part(head) else data


async def read_parts(reader: asyncio.StreamReader, first: bytes, silence_s: float | None = None) -> bytes:
    """A body whose first part (`first`) was read: the rest of its parts, joined."""
    parts: list[bytes] = []
    total = add_part(parts, 0, first)
    while True:
        head = await asyncio.wait_for(reader.readexactly(HEADER.size), silence_s)
        total = add_part(parts, total, await _read_body(reader, parse_header(head), silence_s))
        if not is_part(head):
            return b"".join(parts)


async def _read_body(reader: asyncio.StreamReader, length: int, silence_s: float | None) -> bytes:
    if silence_s is None:
        return await reader.readexactly(length)
    return await asyncio.wait_for(reader.readexactly(length), silence_s + length / (1 << 20))
