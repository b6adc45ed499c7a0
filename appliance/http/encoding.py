"""JSON in and out, the way Consul's HTTP layer does it.

Out: compact JSON by default; with `?pretty` or in -dev mode, 4-space indentation and a trailing
newline (Go's json.MarshalIndent). Bytes values (KV) are base64 by the caller, never here.
In: bodies are read with a size limit before decoding; malformed JSON, an unknown field or a value
of the wrong type for Consul's struct (appliance.api.structs) is a 400 with Consul's
`Request decode failed: ...` prefix.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

from appliance.api.gojson import DecodeError, Spec, decode
from appliance.http.errors import HTTPError


def dumps(value: Any, pretty: bool) -> bytes:
    if pretty:
        return json.dumps(value, indent=4, ensure_ascii=False).encode() + b"\n"
    return orjson.dumps(value)


def wants_pretty(request: web.Request) -> bool:
    return request.app["pretty"] or "pretty" in request.query


def json_response(request: web.Request, value: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    pretty = wants_pretty(request)
    entry = request.render_entry
    if entry is not None and entry.body is value:  # a cached answer (appliance.http.query.RenderCache)
        body = entry.encoded.get(pretty)
        if body is None:
            body = entry.encoded[pretty] = dumps(value, pretty)
    else:
        body = dumps(value, pretty)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or 413 when it is longer than `limit` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise HTTPError(413, f"Request body({length} bytes) too large, max size: {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"Request body too large, max size: {limit} bytes.")


def decode_json(data: bytes, *, empty: Any = None) -> Any:
    if not data.strip():
        return empty
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise HTTPError(400, f"Request decode failed: {err}") from err


async def read_json(request: web.Request, limit: int = 524288, *, empty: Any = None) -> Any:
    return decode_json(await read_body(request, limit), empty=empty)


def decode_body(value: Any, spec: Spec) -> Any:
    """A parsed body checked against the Go type Consul decodes it into (appliance.api.gojson)."""
    try:
        return decode(value, spec)
    except DecodeError as err:
        raise HTTPError(400, f"Request decode failed: {err}") from None
