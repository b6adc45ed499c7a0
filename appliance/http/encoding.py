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

from appliance.api.gojson import DecodeError, Spec, decode
from appliance.http.errors import HTTPError
from appliance.http.values import Answer, Request
from appliance.rpc.frames import MAX_MESSAGE_BYTES

JSON_BODY_LIMIT = 524288  # a JSON body Consul decodes (its default request limit)
# A snapshot restore travels as one RPC message (in parts over 64 MiB) and one WAL record: keep
# room for their envelope.
MAX_RESTORE_BYTES = MAX_MESSAGE_BYTES - (1 << 20)


def dumps(value: Any, pretty: bool) -> bytes:
    if pretty:
        return _pretty(value)
    return orjson.dumps(value)


def _pretty(value: Any) -> bytes:
    """Four-space indentation and a trailing newline, as Go's json.MarshalIndent writes it.

    orjson indents by two spaces, in C; the standard library's indenting encoder is pure Python
    and held the event loop 1.9 s for a 77 MB `/v1/health/state/any` (and about 5 ms for 20
    instances of a service, each time a blocking query woke). A raw tab or newline never occurs
    inside an orjson string (both are escaped), so a line's indentation is the run of spaces after
    a newline. When no string holds two spaces in a row (the compact form has none), every pair
    of spaces is indentation and one pass doubles them all; otherwise the indentation becomes one
    tab a level, a pass over the bytes a level, then four spaces a tab. Numbers are written as the
    compact form writes them (orjson: 0.00001 and 1e-7, as Go does; the standard library wrote
    1e-05 and 1e-07). A value orjson cannot write (an integer over 64 bits) goes through the
    standard library."""
    try:
        data = orjson.dumps(value, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:
        return json.dumps(value, indent=4, ensure_ascii=False).encode() + b"\n"
    if b"\n  " not in data:
        return data + b"\n"
    if b"  " not in orjson.dumps(value):
        return data.replace(b"  ", b"    ") + b"\n"
    data = data.replace(b"\n  ", b"\n\t")
    while b"\t  " in data:
        data = data.replace(b"\t  ", b"\t\t")
    return data.replace(b"\t", b"    ") + b"\n"


def render(answer: Answer, req: Request, pretty_default: bool) -> bytes | None:
    """The bytes of an answer: its body, or its JSON value compact or pretty (`?pretty`, -dev);
    a cached answer's bytes are encoded once per form (appliance.http.query.RenderCache)."""
    if not answer.has_json:
        return answer.body
    pretty = pretty_default or (bool(req.query_string) and "pretty" in req.query)
    entry = answer.entry
    if entry is not None:
        body = entry.encoded.get(pretty)
        if body is None:
            body = entry.keep(pretty, dumps(answer.json, pretty))
        return body
    return dumps(answer.json, pretty)


def read_body(req: Request, limit: int) -> bytes:
    """The request body, or 413 when it is longer than `limit` bytes. The adapter read at most
    the route's body limit plus one byte, and nothing when the declared length was over it."""
    length = req.content_length
    if length is not None and length > limit:
        raise HTTPError(413, f"Request body({length} bytes) too large, max size: {limit} bytes.")
    if len(req.body) > limit:
        raise HTTPError(413, f"Request body too large, max size: {limit} bytes.")
    return req.body


def decode_json(data: bytes, *, empty: Any = None) -> Any:
    if not data.strip():
        return empty
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise HTTPError(400, f"Request decode failed: {err}") from err


def read_json(req: Request, limit: int = JSON_BODY_LIMIT, *, empty: Any = None) -> Any:
    return decode_json(read_body(req, limit), empty=empty)


def decode_body(value: Any, spec: Spec) -> Any:
    """A parsed body checked against the Go type Consul decodes it into (appliance.api.gojson)."""
    try:
        return decode(value, spec)
    except DecodeError as err:
        raise HTTPError(400, f"Request decode failed: {err}") from None
