"""HTTP requests and answers as plain values (h11's lesson: no I/O in what handlers see).

A `Request` is what arrived: method, raw path (still escaped, as Consul's mux sees it), the query
string and its decoded multidict, headers, the body bytes (read by the
adapter up to the route's body limit), the client's address and the ACL token it named. An
`Answer` is what goes back: status, headers and either body bytes or a JSON value that the
dispatcher renders with Consul's rules (appliance/http/encoding.py); a `StreamAnswer` carries an
async iterator of chunks (`/v1/agent/monitor`). Handlers are `async def handler(req, ctx) ->
Answer` and import no aiohttp; the aiohttp adapter (app.py), the in-process tests and the
datacenter-request path (remote_dc.py) all build a `Request` and call the same dispatch.

The hot path builds one `Request` per HTTP request: `__slots__`; a request without a query string
parses none, and the token and the per-request scratch dict are computed only when asked for.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

# What the render cache may hold, in bytes of JSON: an answer is counted at its encoded size once
# encoded, and at ESTIMATED_ITEM_BYTES an element before (a body of 100,000 KV entries or 143,000
# checks is tens of MB of objects). Without it, 1,024 distinct queries over a large catalog (each
# `filter=` or unknown parameter is a key of its own) could each keep a 77 MB answer.
RENDER_CACHE_MAX_BYTES = 64 << 20
ESTIMATED_ITEM_BYTES = 512


class RenderEntry:
    """One rendered answer: the body and, once encoded, its bytes (compact and pretty), which
    go through `keep` so that the cache holding it can count them."""

    __slots__ = ("index", "body", "encoded", "key", "cost", "cache")

    def __init__(self, index: int, body: Any, key: Any = None, cache: RenderCache | None = None) -> None:
        self.index = index
        self.body = body
        self.encoded: dict[bool, bytes] = {}
        self.key, self.cache = key, cache
        self.cost = estimated_cost(body)

    def keep(self, pretty: bool, data: bytes) -> bytes:
        """Keep the encoded form for the next reader (within the cache's byte budget); returns it."""
        if self.cache is None:
            self.encoded[pretty] = data
        else:
            self.cache.keep(self, pretty, data)
        return data


def estimated_cost(body: Any) -> int:
    return max(1, len(body)) * ESTIMATED_ITEM_BYTES if isinstance(body, (list, dict)) else ESTIMATED_ITEM_BYTES


class RenderCache:
    """Answers rendered once per (query, index): the index names the data the answer was built
    from, so the same query at the same index has the same answer. LRU, bounded in entries and
    in bytes (RENDER_CACHE_MAX_BYTES): an answer whose encoded bytes are more than the whole
    budget is not kept (each reader renders and encodes it again), others push the least recently
    used out. One answer never encoded (re-sorted by `?near`, filtered by ACLs) may stay over the
    budget on its estimate alone, until the next one pushes it out."""

    def __init__(self, max_entries: int = 1024, max_bytes: int = RENDER_CACHE_MAX_BYTES) -> None:
        self.entries: OrderedDict[Any, RenderEntry] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0  # the cost of the entries held

    def get(self, key: Any, index: int) -> RenderEntry | None:
        entry = self.entries.get(key)
        if entry is None or entry.index != index:
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, key: Any, index: int, body: Any) -> RenderEntry:
        """Keep a rendered answer; its estimate may push the others out, its bytes decide (`keep`)."""
        entry = RenderEntry(index, body, key, self)
        self._drop(key)
        self.entries[key] = entry
        self.bytes += entry.cost
        self._trim(entry)
        return entry

    def keep(self, entry: RenderEntry, pretty: bool, data: bytes) -> None:
        if self.entries.get(entry.key) is not entry:  # pushed out meanwhile: not ours to count
            return
        encoded = entry.encoded
        cost = sum(map(len, encoded.values())) + len(data)  # the bytes replace the estimate
        self.bytes += cost - entry.cost
        entry.cost = cost
        if cost > self.max_bytes:
            self._drop(entry.key)
            return
        encoded[pretty] = data
        self._trim(entry)

    def _drop(self, key: Any) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= old.cost

    def _trim(self, keep: RenderEntry) -> None:
        entries = self.entries
        while len(entries) > self.max_entries or (self.bytes > self.max_bytes and len(entries) > 1):
            key, oldest = next(iter(entries.items()))
            if oldest is keep:
                entries.move_to_end(key)
                continue
            entries.popitem(last=False)
            self.bytes -= oldest.cost


_EMPTY_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
_EMPTY_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())
_NO_JSON = object()


class Request:
    """One HTTP request as a value (see the module docstring)."""

    __slots__ = ("method", "raw_path", "query_string", "query", "headers", "body", "remote", "content_length",
                 "route", "render_entry", "frame", "read_done", "_scratch")

    def __init__(self, method: str, target: str, headers: Mapping[str, str] | None = None, body: bytes = b"",
                 remote: str = "", content_length: int | None = None, url: URL | None = None) -> None:
        self.method = method
        path, sep, query = target.partition("?")
        self.raw_path = path  # escaped, without the query
        self.query_string = query
        if headers is None:
            headers = _EMPTY_HEADERS
        elif not isinstance(headers, (CIMultiDictProxy, CIMultiDict)):
            headers = CIMultiDict(headers)
        self.headers = headers
        self.body = body
        self.remote = remote
        self.content_length = content_length if content_length is not None else (len(body) if body else None)
        self.route = ""  # the matched route pattern (Router.dispatch), for metrics
        self.render_entry: RenderEntry | None = None  # a cached answer this request returns (query.blocking)
        self.frame: Any = None  # what a replayable read was answered from (query.ReadFrame; http/replay.py)
        self.read_done = False  # its read point was already waited for (http/replay.py)
        self._scratch: dict[str, Any] | None = None
        # The decoded query (yarl's rules, as aiohttp's `request.query`): a plain attribute, since
        # handlers read it a dozen times; no query string, no parsing. The adapter passes the URL
        # aiohttp parsed.
        if not query:
            self.query: MultiDictProxy[str] = _EMPTY_QUERY
        else:
            self.query = (url if url is not None else URL.build(path="/", query_string=query, encoded=True)).query

    @property
    def target(self) -> str:
        return self.raw_path + "?" + self.query_string if self.query_string else self.raw_path

    @property
    def token(self) -> str:
        """The ACL token the request names (`named_token`)."""
        return named_token(self.headers, self.query.get("token", "") if self.query_string else "")

    # per-request scratch space for the handler's helpers (the compiled filter, say)
    def get(self, key: str, default: Any = None) -> Any:
        return default if self._scratch is None else self._scratch.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if self._scratch is None:
            self._scratch = {}
        self._scratch[key] = value


def named_token(headers: Mapping[str, str], query_token: str) -> str:
    """The ACL token a request names: `X-Consul-Token`, else `Authorization: Bearer`, else its
    `?token` (Consul's parseTokenInternal order)."""
    token = headers.get("X-Consul-Token", "")
    if token:
        return token
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return query_token


class Answer:
    """One answer: status, headers, and body bytes or a JSON value (rendered by the dispatcher)."""

    __slots__ = ("status", "headers", "body", "json", "entry", "content_type", "charset", "reason")

    def __init__(self, status: int = 200, headers: Mapping[str, str] | None = None, body: bytes | None = None,
                 content_type: str | None = None, charset: str | None = None, reason: str | None = None) -> None:
        self.status = status
        # a handler's own dict (meta_headers, a literal) is taken as it is: the dispatcher adds to it
        self.headers: dict[str, str] = headers if type(headers) is dict else dict(headers or {})
        self.body = body
        self.json: Any = _NO_JSON
        self.entry: RenderEntry | None = None
        self.content_type = content_type
        self.charset = charset
        self.reason = reason

    @classmethod
    def text(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> Answer:
        return cls(status, headers, text.encode(), "text/plain", "utf-8")

    @classmethod
    def of_json(cls, req: Request, value: Any, status: int = 200,
                headers: Mapping[str, str] | None = None) -> Answer:
        answer = cls(status, headers, None, "application/json")
        answer.json = value
        entry = req.render_entry
        if entry is not None and entry.body is value:  # a cached answer (appliance.http.query.RenderCache)
            answer.entry = entry
        return answer

    @property
    def has_json(self) -> bool:
        return self.json is not _NO_JSON

    def content_type_value(self) -> str | None:
        """The `Content-Type` header's value, charset included (None: no such header)."""
        ctype = self.content_type
        if ctype is None or not self.charset:
            return ctype
        return ctype + "; charset=" + self.charset

    def header_list(self) -> list[tuple[str, str]]:
        """The headers as they go on the wire, Content-Type included (for another datacenter)."""
        out = list(self.headers.items())
        ctype = self.content_type_value()
        if ctype is not None:
            out.append(("Content-Type", ctype))
        return out


class StreamAnswer(Answer):
    """An answer whose body is written chunk by chunk as `chunks` yields it (chunked encoding)."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: AsyncIterator[bytes], headers: Mapping[str, str] | None = None,
                 content_type: str = "text/plain") -> None:
        super().__init__(200, headers, None, content_type)
        self.chunks = chunks


def json_answer(req: Request, value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    """A JSON answer, rendered compact or pretty by the dispatcher (encoding.render)."""
    return Answer.of_json(req, value, status, headers)
