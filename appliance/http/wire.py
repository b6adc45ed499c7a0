"""An answer value written as HTTP/1.1 bytes, without aiohttp's response machinery.

aiohttp's `web.Response` costs a multidict of headers, content-type parsing, header
serialization and three awaits per answer; for the small JSON answers that make most of cairn's
traffic that was about a sixth of the agent's CPU per request (bench/http/cpu.py). `DirectAnswer`
stands where aiohttp expects a response: aiohttp's connection handler calls `prepare` and then
`write_eof`, and `write_eof` writes the status line, the headers and the body in one
`transport.write`, then waits only if the transport has asked the writer to pause (the same
back-pressure aiohttp's own writer applies).

What goes on the wire is what aiohttp would write for the same answer, minus `Server:` (Go's
net/http, and so Consul, sends none): `Content-Length` (none for 1xx, 204 and 304, whose answers
have no body; a HEAD answer has the length and no body), `Date` (formatted once a second),
`Connection: close` when the connection will not be kept open (HTTP/1.1) or `Connection:
keep-alive` when an HTTP/1.0 client asked to keep it. Left to aiohttp (`direct_answer` returns
None): a status with neither a standard reason phrase nor one of its own, a protocol version
other than HTTP/1.0 and 1.1, and a header holding CR or LF (aiohttp refuses those with an error
instead of writing them); streamed answers and the answers to unreadable requests
(appliance/http/app.py) are aiohttp's too, and carry its `Server:` header.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp.http import HttpVersion10, HttpVersion11

from appliance.http.values import Answer

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}
_NO_BODY = frozenset(s for s in _STATUS_LINES if s < 200 or s in (204, 304))
_date: list[Any] = [0, "", b""]  # [second, formatted, its bytes]


def http_date() -> str:
    """RFC 9110's IMF-fixdate for now, formatted at most once a second."""
    now = int(time.time())
    if now != _date[0]:
        text = formatdate(now, usegmt=True)
        _date[0], _date[1], _date[2] = now, text, text.encode()
    return _date[1]


def http_date_bytes() -> bytes:
    """`http_date()` as bytes."""
    if int(time.time()) != _date[0]:
        http_date()
    return _date[2]


class DirectAnswer:
    """The wire form of one answer, handed to aiohttp's connection handler as its response."""

    __slots__ = ("head", "body", "keep_alive", "request")

    def __init__(self, head: bytes, body: bytes, keep_alive: bool, request: Any) -> None:
        self.head = head
        self.body = body
        self.keep_alive = keep_alive
        self.request = request

    async def prepare(self, request: Any) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        request = self.request
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("Connection lost")
        transport.write(self.head + self.body)
        self.request = None
        await request.writer.drain()


def head_lines(answer: Answer) -> list[str] | None:
    """The status line (HTTP/1.1), the answer's headers and its Content-Type, as written; None
    for a status aiohttp must write (no standard reason phrase and none of its own)."""
    status = answer.status
    line = _STATUS_LINES.get(status) if answer.reason is None else f"HTTP/1.1 {status} {answer.reason}\r\n"
    if line is None:
        return None
    parts = [line]
    for name, value in answer.headers.items():
        parts.append(f"{name}: {value}\r\n")
    ctype = answer.content_type_value()
    if ctype is not None:
        parts.append(f"Content-Type: {ctype}\r\n")
    return parts


def direct_answer(request: Any, answer: Answer) -> DirectAnswer | None:
    """`answer` as bytes for `request` (an aiohttp BaseRequest), or None for aiohttp to write."""
    parts = head_lines(answer)
    if parts is None:
        return None
    status = answer.status
    body = answer.body or b""
    keep_alive = request.keep_alive
    version = request.version
    if version != HttpVersion11:
        if version != HttpVersion10:
            return None
        parts[0] = "HTTP/1.0" + parts[0][8:]
        if keep_alive:
            parts.append("Connection: keep-alive\r\n")
    elif not keep_alive:
        parts.append("Connection: close\r\n")
    if status in _NO_BODY:  # no Content-Length, no body (RFC 9110 8.6)
        body = b""
        parts.append(f"Date: {http_date()}\r\n\r\n")
        lines = len(parts) + 1
    else:  # a HEAD answer: the length a GET would have, no body
        parts.append(f"Content-Length: {len(body)}\r\nDate: {http_date()}\r\n\r\n")
        lines = len(parts) + 2  # one per part, two more in the last
        if request.method == "HEAD":
            body = b""
    head = "".join(parts)
    if head.count("\n") != lines or head.count("\r") != lines:  # a CR or LF in a header: aiohttp refuses it
        return None
    return DirectAnswer(head.encode("utf-8"), body, keep_alive, request)
