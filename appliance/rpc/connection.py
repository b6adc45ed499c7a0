"""Frames over an asyncio stream: dialling a server address and reading one frame.

How it works: a server address is `host:port` (`[v6]:port`, or a bare host that takes the
default port). `read_frame` reads one header and its body and returns the body's bytes; the
caller decodes it with `frames.decode_body`, so a body that does not decode costs that frame
only, while `BadHeader` (unknown version, over the size limit) means the stream cannot be
followed and the caller closes the connection.
"""

from __future__ import annotations

import asyncio

from .frames import HEADER, parse_header

STREAM_LIMIT = 1 << 20  # the StreamReader's buffer limit on the server port's connections


def split_address(address: str, default_port: int) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "]" in port:
        return address.strip("[]"), default_port
    return host.strip("[]"), int(port)


async def dial(address: str, default_port: int, timeout_s: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection to a server address within `timeout_s` (OSError or TimeoutError)."""
    host, port = split_address(address, default_port)
    return await asyncio.wait_for(asyncio.open_connection(host, port, limit=STREAM_LIMIT), timeout_s)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame's body bytes (IncompleteReadError at end of stream, BadHeader on garbage)."""
    length = parse_header(await reader.readexactly(HEADER.size))
    return await reader.readexactly(length)
