"""Query options and blocking queries for the read endpoints.

How a blocking read works (Consul docs: blocking queries): the handler names the watch keys (or
KV prefixes) its answer depends on and gives two functions, one computing the answer's index
and one rendering it. With `?index=N` (N > 0) the handler parks on the WatchHub until the index
passes N or `wait` (default 5m, at most 10m, plus up to wait/16 of jitter) runs out, and then
answers with whatever is current; the index is never 0. Before it reads, `read_point` waits
for the asked consistency (below). A spurious wake-up (the key was touched
but the index did not pass N) parks again. When the client goes away, aiohttp cancels the
handler and the parked wait with it.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from appliance.config.durations import DurationError, parse_duration
from appliance.coordinates import sort_near
from appliance.filter import FilterError, compile_filter
from appliance.http.errors import HTTPError
from appliance.raft.messages import NotLeader, RaftError

_rng = random.Random()


class RenderEntry:
    """One rendered answer: the body and, once encoded, its bytes (compact and pretty)."""

    __slots__ = ("index", "body", "encoded")

    def __init__(self, index: int, body: Any) -> None:
        self.index = index
        self.body = body
        self.encoded: dict[bool, bytes] = {}


class RenderCache:
    """Answers rendered once per (query, index): the index names the data the answer was built
    from, so the same query at the same index has the same answer. Bounded LRU."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.entries: OrderedDict[Any, RenderEntry] = OrderedDict()
        self.max_entries = max_entries

    def get(self, key: Any, index: int) -> RenderEntry | None:
        entry = self.entries.get(key)
        if entry is None or entry.index != index:
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, key: Any, index: int, body: Any) -> RenderEntry:
        entry = self.entries[key] = RenderEntry(index, body)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return entry


_NOT_PART_OF_ANSWER = ("index", "wait", "stale", "consistent", "leader", "max_stale", "cached", "pretty", "token")


def cache_key(request: web.Request) -> Any:
    query = request.query
    if not query:
        return request.raw_path
    items = tuple(sorted((k, v) for k, v in query.items() if k not in _NOT_PART_OF_ANSWER))
    return (request.raw_path.split("?", 1)[0], items)


@dataclass
class QueryOptions:
    index: int = 0
    wait_s: float = 0.0
    consistency: str = "leader"  # "leader" (default), "stale", "consistent"
    max_stale_s: float = 0.0  # ?max_stale: a stale read older than this is read as default


def query_options(request: web.Request) -> QueryOptions:
    q = request.query
    opts = QueryOptions()
    if q.get("max_stale"):
        try:
            opts.max_stale_s = parse_duration(q["max_stale"])
        except DurationError:
            quoted = q["max_stale"].replace("\\", "\\\\").replace('"', '\\"')
            raise HTTPError(400, f'Invalid max_stale value "{quoted}"') from None
    stale = "stale" in q or opts.max_stale_s > 0
    if stale and "consistent" in q:
        raise HTTPError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    if "cached" in q and "consistent" in q:
        raise HTTPError(400, "Cannot specify ?cached with ?consistent, conflicting semantics.")
    if stale:
        opts.consistency = "stale"
    elif "consistent" in q:
        opts.consistency = "consistent"
    if "index" in q:
        try:
            opts.index = int(q["index"])
            if opts.index < 0 or opts.index >= 2**64:
                raise ValueError
        except ValueError:
            raise HTTPError(400, "Invalid index") from None
    if "wait" in q:
        try:
            opts.wait_s = parse_duration(q["wait"])
        except DurationError:
            raise HTTPError(400, "Invalid wait time") from None
        if opts.wait_s < 0:
            raise HTTPError(400, "Invalid wait time")
    return opts


def parse_bool_param(request: web.Request, name: str) -> bool:
    """`?passing` alone means true; otherwise Go's strconv.ParseBool."""
    if name not in request.query:
        return False
    value = request.query[name]
    if value == "":
        return True
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise HTTPError(400, f"Invalid value for ?{name}")


def node_meta_filter(request: web.Request) -> dict[str, str]:
    """Repeated `node-meta=key:value` pairs (all must match)."""
    out = {}
    for item in request.query.getall("node-meta", []):
        key, _, value = item.partition(":")
        out[key] = value
    return out


def meta_matches(meta: dict[str, str] | None, want: dict[str, str]) -> bool:
    meta = meta or {}
    return all(meta.get(k) == v for k, v in want.items())


def compiled_filter(request: web.Request, endpoint: str) -> Callable[[Any], bool] | None:
    expr = request.query.get("filter", "")
    if not expr:
        return None
    try:
        return compile_filter(expr, endpoint).matches
    except FilterError as err:
        raise HTTPError(400, str(err)) from None


def near_sorted(request: web.Request, body: list[Any], node_of: Callable[[Any], str]) -> list[Any]:
    """`?near=<node>|_agent`: the answer sorted by estimated RTT from that node (appliance/coordinates.py).

    Sorted after the render cache, so a cached answer is re-sorted with the current coordinates.
    """
    near = request.query.get("near", "")
    if not near or not body:
        return body
    agent = request.app["agent"]
    return sort_near(agent.store, list(body), near, agent.config.node_name, node_of)


def meta_headers(agent: Any, index: int, opts: QueryOptions, effective: bool) -> dict[str, str]:
    consensus = agent.consensus
    headers = {
        "X-Consul-Index": str(max(index, 1)),
        "X-Consul-KnownLeader": "true" if consensus.known_leader else "false",
        # a default or consistent read waited for the leader's index: as fresh as the leader's
        "X-Consul-LastContact": str(consensus.last_contact_ms) if opts.consistency == "stale" else "0",
    }
    if effective:
        headers["X-Consul-Effective-Consistency"] = opts.consistency
    return headers


async def read_point(agent: Any, opts: QueryOptions) -> None:
    """Wait until this agent may answer a read of the asked consistency (Consul docs:
    consistency modes). `?stale`: at once, from whatever this agent has applied. Default: on the
    leader at once; on another server or a client once it has applied the leader's commit index.
    `?consistent`: once it has applied the index the leader confirmed with a heartbeat round
    (read index, Raft thesis §6.4). `?max_stale=d`: stale, unless this agent's last contact with
    the leader is older than d; then default (Consul retries such a read on the leader)."""
    consistency = opts.consistency
    if consistency == "stale" and opts.max_stale_s > 0 and agent.consensus.last_contact_ms > opts.max_stale_s * 1000:
        consistency = "leader"
    try:
        await agent.consensus.read_point(consistency)
    except NotLeader:
        raise HTTPError(500, "No cluster leader") from None
    except (RaftError, TimeoutError) as err:
        raise HTTPError(500, str(err) or "timed out waiting for the leader's read index") from None


async def blocking(
    request: web.Request,
    *,
    index: Callable[[], int],
    render: Callable[[], Any],
    keys: Iterable[str] = (),
    prefixes: Iterable[str] = (),
    effective_consistency: bool = False,
) -> tuple[Any, dict[str, str]]:
    """Run a (possibly blocking) read; return its body and Consul's query-meta headers."""
    agent = request.app["agent"]
    opts = query_options(request)
    keys, prefixes = tuple(keys), tuple(prefixes)
    await read_point(agent, opts)
    current = index()
    if opts.index > 0 and current <= opts.index:
        cfg = agent.config
        wait = opts.wait_s if opts.wait_s > 0 else cfg.default_query_time_s
        wait = min(wait, cfg.max_query_time_s)
        wait += _rng.uniform(0, wait / 16)
        loop = request.app["loop_time"]
        deadline = loop() + wait
        while current <= opts.index:
            remaining = deadline - loop()
            if remaining <= 0:
                break
            await agent.hub.wait(keys, prefixes, remaining)
            current = index()
    cache: RenderCache = request.app["render_cache"]
    key = cache_key(request)
    entry = cache.get(key, current)
    if entry is None:
        entry = cache.put(key, current, render())
    request.render_entry = entry
    return entry.body, meta_headers(agent, current, opts, effective_consistency)
