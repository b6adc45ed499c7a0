"""A watch plan as Consul's `watch.Parse` builds it and as its run loop decides (sans-IO).

How it works
------------
`parse(params, exempt)` takes a watch definition (the agent's `watches` block, or the flags of
`cairn watch` turned into the same mapping) and checks it with Consul's rules and texts: the
generic keys (`type`, `datacenter`, `token`, `handler_type`, `http_handler_config`), then the
type's own keys, each of the expected JSON type, and no key left over (`Invalid parameters:
[k]`). Keys named in `exempt` (`handler`, `args` for the agent) are set aside for the caller.
The result, a `WatchSpec`, names the one HTTP endpoint the watch reads.

`Plan` is the state of one running watch. The driver asks it for the next request (`query()`,
with `?index=` of the last answer), hands it each answer (`observe(status, index, body)`) and
gets back a `Fire` when the handler must run, or None:

* the first successful answer always fires, even a missing key (`null`);
* an answer at the index already seen (a blocking query that timed out) never fires;
* an answer at a new index whose data is equal to the last delivered data does not fire;
* an error (a status other than 2xx, except the 404 of a KV read) forgets the index, so the
  next good answer fires again, and `failed()` returns the back-off (5 s x failures², at most
  180 s).

An event watch delivers only the events after the last one delivered: the list's index is the
XOR of the two halves of the last event's UUID, and events up to the one with that index are
dropped. KV pairs are given with `Session` always present (`""`), as Consul's API structs encode
them; the other types pass the agent's JSON through.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.config.durations import DurationError, parse_duration
from appliance.local.definitions import DefinitionError

RETRY_BASE_S = 5.0
MAX_BACKOFF_S = 180.0
DEFAULT_HTTP_TIMEOUT_S = 10.0
WATCH_TYPES = ("key", "keyprefix", "services", "nodes", "service", "checks", "event")


class WatchError(DefinitionError):
    """A watch definition Consul would refuse; the message is Consul's text (the agent refuses
    to start with it, as with a bad service definition)."""


@dataclass(frozen=True)
class HTTPHandlerConfig:
    path: str
    method: str = "POST"
    header: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    timeout_s: float = DEFAULT_HTTP_TIMEOUT_S
    tls_skip_verify: bool = False


@dataclass(frozen=True)
class Query:
    """One HTTP GET: path and query parameters (in order)."""

    path: str
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class WatchSpec:
    type: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    datacenter: str = ""
    token: str = ""
    handler_type: str = ""
    http_handler: HTTPHandlerConfig | None = None
    exempt: Mapping[str, Any] = field(default_factory=dict)
    allow_404: bool = False  # a KV read answers 404 for "nothing there", not an error


@dataclass(frozen=True)
class Fire:
    index: int
    data: Any


# ------------------------------------------------------------------------------------------
# parsing


def _take_str(params: dict[str, Any], name: str) -> str:
    if name not in params:
        return ""
    value = params.pop(name)
    if not isinstance(value, str):
        raise WatchError(f"Expecting {name} to be a string")
    return value


def _take_bool(params: dict[str, Any], name: str) -> bool:
    if name not in params:
        return False
    value = params.pop(name)
    if not isinstance(value, bool):
        raise WatchError(f"Expecting {name} to be a boolean")
    return value


def _take_strings(params: dict[str, Any], name: str) -> list[str]:
    if name not in params:
        return []
    value = params.pop(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise WatchError(f"Index {i} of {name} expected to be string")
        return list(value)
    raise WatchError(f"Expecting {name} to be a string or []string")


def _weak_str(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def parse_http_handler_config(raw: Any) -> HTTPHandlerConfig:
    """`http_handler_config`: path (required), method (POST), header (name -> list), timeout
    (Go duration, 10s), tls_skip_verify."""
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], Mapping):
        raw = raw[0]  # an HCL block read as a list of one
    if not isinstance(raw, Mapping):
        raise WatchError("Failed to parse 'http_handler_config': expected a map, got "
                         f"'{type(raw).__name__}'")
    path = _weak_str(raw.get("path"))
    if not path:
        raise WatchError("Requires 'path' to be set")
    header: dict[str, tuple[str, ...]] = {}
    raw_header = raw.get("header") or {}
    if isinstance(raw_header, list) and len(raw_header) == 1:
        raw_header = raw_header[0]
    if not isinstance(raw_header, Mapping):
        raise WatchError("Failed to parse 'http_handler_config': 'header' expected a map")
    for name, values in raw_header.items():
        items = values if isinstance(values, (list, tuple)) else [values]
        header[str(name)] = tuple(_weak_str(v) for v in items)
    timeout_raw = _weak_str(raw.get("timeout"))
    timeout_s = DEFAULT_HTTP_TIMEOUT_S
    if timeout_raw:
        try:
            timeout_s = parse_duration(timeout_raw)
        except DurationError as err:
            raise WatchError(f"Failed to parse timeout: {err}") from None
    skip = raw.get("tls_skip_verify", False)
    if isinstance(skip, str):
        skip = skip.lower() in ("1", "t", "true")
    return HTTPHandlerConfig(path=path, method=_weak_str(raw.get("method")) or "POST", header=header,
                             timeout_s=timeout_s, tls_skip_verify=bool(skip))


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text: str, safe: str = "") -> str:
    """Percent-encode a path segment (UTF-8), keeping unreserved characters and `safe`."""
    keep = _UNRESERVED | frozenset(safe)
    return "".join(ch if ch in keep else "".join(f"%{b:02X}" for b in ch.encode()) for ch in text)


def _kv_path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def _type_query(kind: str, params: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bool]:
    """The endpoint of one watch type; consumes that type's keys from `params`."""
    query: list[tuple[str, str]] = []
    if kind != "event" and _take_bool(params, "stale"):
        query.append(("stale", ""))
    if kind == "key":
        key = _take_str(params, "key")
        if not key:
            raise WatchError("Must specify a single key to watch")
        return _kv_path(key), query, True
    if kind == "keyprefix":
        prefix = _take_str(params, "prefix")
        if not prefix:
            raise WatchError("Must specify a single prefix to watch")
        return _kv_path(prefix), [("recurse", ""), *query], True
    if kind == "services":
        return "/v1/catalog/services", query, False
    if kind == "nodes":
        return "/v1/catalog/nodes", query, False
    if kind == "service":
        service = _take_str(params, "service")
        if not service:
            raise WatchError("Must specify a single service to watch")
        tags = _take_strings(params, "tag")
        passing = _take_bool(params, "passingonly")
        query += [("tag", t) for t in tags]
        if passing:
            query.append(("passing", "1"))
        return "/v1/health/service/" + quote(service, safe=""), query, False
    if kind == "checks":
        service = _take_str(params, "service")
        state = _take_str(params, "state")
        if service and state:
            raise WatchError("Cannot specify service and state")
        tags = _take_strings(params, "tag")
        if service:
            return "/v1/health/checks/" + quote(service, safe=""), query, False
        query += [("tag", t) for t in tags]
        return "/v1/health/state/" + quote(state or "any", safe=""), query, False
    # event
    name = _take_str(params, "name")
    return "/v1/event/list", ([("name", name)] if name else []), False


def parse(raw: Mapping[str, Any], exempt: Sequence[str] = ()) -> WatchSpec:
    """Consul's `watch.ParseExempt`: check a definition and name its endpoint."""
    params = dict(raw)
    datacenter = _take_str(params, "datacenter")
    token = _take_str(params, "token")
    kind = _take_str(params, "type")
    if not kind:
        raise WatchError("Watch type must be specified")
    handler_type = _take_str(params, "handler_type")
    http_handler = None
    if handler_type == "http":
        if "http_handler_config" not in params:
            raise WatchError("Handler type 'http' requires 'http_handler_config' to be set")
        http_handler = parse_http_handler_config(params.pop("http_handler_config"))
    if kind not in WATCH_TYPES:
        raise WatchError(f"Unsupported watch type: {kind}")
    path, query, allow_404 = _type_query(kind, params)
    kept = {name: params.pop(name) for name in exempt if name in params}
    if params:
        raise WatchError(f"Invalid parameters: [{' '.join(params)}]")
    if datacenter:
        query.append(("dc", datacenter))
    return WatchSpec(type=kind, path=path, params=tuple(query), datacenter=datacenter, token=token,
                     handler_type=handler_type, http_handler=http_handler, exempt=kept,
                     allow_404=allow_404)


# ------------------------------------------------------------------------------------------
# the payload


def _kv_pair(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A KV entry as Consul's API struct encodes it: every field, `Session` included."""
    pair = {
        "Key": entry.get("Key", ""),
        "CreateIndex": entry.get("CreateIndex", 0),
        "ModifyIndex": entry.get("ModifyIndex", 0),
        "LockIndex": entry.get("LockIndex", 0),
        "Flags": entry.get("Flags", 0),
        "Value": entry.get("Value"),
        "Session": entry.get("Session") or "",
    }
    for extra in ("Namespace", "Partition"):
        if entry.get(extra):
            pair[extra] = entry[extra]
    return pair


def shape(kind: str, status: int, body: Any) -> Any:
    """The data a handler gets for one answer (`body` is the decoded JSON)."""
    if kind == "key":
        if status == 404 or not body:
            return None
        return _kv_pair(body[0])
    if kind == "keyprefix":
        if status == 404 or not body:
            return None
        return [_kv_pair(e) for e in body]
    if kind == "services" and isinstance(body, Mapping):
        return {name: body[name] for name in sorted(body)}
    return body


def event_index(event_id: str) -> int:
    """Consul's IDToIndex: the XOR of the UUID's two 64-bit halves."""
    hexed = event_id.replace("-", "")
    return int(hexed[:16], 16) ^ int(hexed[16:32], 16)


_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
               ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def encode(data: Any, indent: str | None = None) -> str:
    """JSON as Go's encoder writes it: compact (or indented), `<>&` escaped, no trailing newline."""
    if indent is None:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(data, ensure_ascii=False, indent=indent, separators=(",", ": "))
    for ch, esc in _GO_ESCAPES:
        text = text.replace(ch, esc)
    return text


# ------------------------------------------------------------------------------------------
# the run loop's decisions


class Plan:
    """One running watch: what to ask next and whether an answer fires the handler."""

    def __init__(self, spec: WatchSpec) -> None:
        self.spec = spec
        self.last_index: int | None = None
        self.last_result: Any = None
        self.failures = 0

    def query(self) -> Query:
        params = list(self.spec.params)
        if self.last_index:
            params.append(("index", str(self.last_index)))
        return Query(self.spec.path, tuple(params))

    def failed(self) -> float:
        """An answer that was an error: forget the index; the delay before the next try."""
        self.failures += 1
        self.last_index = None
        return min(RETRY_BASE_S * self.failures * self.failures, MAX_BACKOFF_S)

    def is_error(self, status: int) -> bool:
        return not (200 <= status < 300 or (status == 404 and self.spec.allow_404))

    def observe(self, status: int, index: int, body: Any) -> Fire | None:
        """A successful answer (`body` decoded JSON); a Fire when the handler must run."""
        data = shape(self.spec.type, status, body)
        if self.spec.type == "event" and self.last_index is not None and isinstance(data, list):
            for i, event in enumerate(data):
                if isinstance(event, Mapping) and event_index(str(event.get("ID", ""))) == self.last_index:
                    data = data[i + 1:]
                    break
        self.failures = 0
        old = self.last_index
        if old is not None and old == index:
            return None
        self.last_index = index
        if old is not None and data == self.last_result:
            return None
        self.last_result = data
        return Fire(index, data)
