"""Query options and blocking queries for the read endpoints.

How a blocking read works (Consul docs: blocking queries): the handler names the watch keys (or
KV prefixes) its answer depends on and gives two functions, one computing the answer's index
and one rendering it. With `?index=N` (N > 0) the handler parks on the WatchHub until the index
passes N or `wait` (default 5m, at most 10m, plus up to wait/16 of jitter) runs out, and then
answers with whatever is current; the index is never 0. Before it reads, `read_point` waits
for the asked consistency (below). A spurious wake-up (the key was touched
but the index did not pass N) parks again. When the client goes away, aiohttp cancels the
handler and the parked wait with it.

`?index` is parsed as Consul does (Go's strconv.ParseUint: digits only, else `400 Invalid
index`), after `?wait`; empty values are absent ones.

A `filter=` over a large answer is evaluated in slices (FilterFn, render_filtered): the render
runs with the filter answering inline for its first FIRST_PASS_S of evaluation and deferring
the rest, the deferred evaluations run SLICE_S at a time with the event loop free in between,
then the render runs again with the answers. A small answer renders once, as without a filter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.config.durations import DurationError, parse_duration
from appliance.coordinates import sort_near
from appliance.filter import FilterError, compile_filter
from appliance.http.context import park
from appliance.http.errors import HTTPError
from appliance.http.values import Request
from appliance.raft.messages import NotLeader, RaftError

if TYPE_CHECKING:
    from appliance.http.context import HTTPContext
    from appliance.interfaces import Consensus


_NOT_PART_OF_ANSWER = ("index", "wait", "stale", "consistent", "leader", "max_stale", "cached", "pretty", "token")


def cache_key(req: Request) -> Any:
    if not req.query_string:
        return req.raw_path
    items = tuple(sorted((k, v) for k, v in req.query.items() if k not in _NOT_PART_OF_ANSWER))
    return (req.raw_path, items)


@dataclass
class QueryOptions:
    index: int = 0
    wait_s: float = 0.0
    consistency: str = "leader"  # "leader" (default), "stale", "consistent"
    max_stale_s: float = 0.0  # ?max_stale: a stale read older than this is read as default


def query_options(req: Request) -> QueryOptions:
    q = req.query
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
    # Consul's parseWait: wait first, then index; an empty value is no value
    if q.get("wait"):
        try:
            opts.wait_s = parse_duration(q["wait"])
        except DurationError:
            raise HTTPError(400, "Invalid wait time") from None
        if opts.wait_s < 0:
            raise HTTPError(400, "Invalid wait time")
    if q.get("index"):
        opts.index = parse_index(q["index"])
    return opts


def parse_index(text: str) -> int:
    """Go's strconv.ParseUint(text, 10, 64): ASCII digits only (Python's int() also takes
    " 5", "+5", "1_000" and other scripts' digits), below 2**64; else 400 Invalid index."""
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or int(text) >= 2**64:
        raise HTTPError(400, "Invalid index")
    return int(text)


def parse_bool_param(req: Request, name: str) -> bool:
    """`?passing` alone means true; otherwise Go's strconv.ParseBool."""
    if name not in req.query:
        return False
    value = req.query[name]
    if value == "":
        return True
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise HTTPError(400, f"Invalid value for ?{name}")


def node_meta_filter(req: Request) -> dict[str, str]:
    """Repeated `node-meta=key:value` pairs (all must match)."""
    out = {}
    for item in req.query.getall("node-meta", []):
        key, _, value = item.partition(":")
        out[key] = value
    return out


def meta_matches(meta: dict[str, str] | None, want: dict[str, str]) -> bool:
    meta = meta or {}
    return all(meta.get(k) == v for k, v in want.items())


_KEEP = "cairn.filter"  # the request's FilterFn, for blocking() to find


def compiled_filter(req: Request, endpoint: str) -> Callable[[Any], bool] | None:
    """The request's `filter=` as `keep(obj) -> bool` (None without one); 400 if it is bad."""
    expr = req.query.get("filter", "")
    if not expr:
        return None
    try:
        keep = FilterFn(compile_filter(expr, endpoint).matches)
    except FilterError as err:
        raise HTTPError(400, str(err)) from None
    req[_KEEP] = keep
    return keep


# A filter over a large catalog must not hold the event loop (checks, DNS, Raft and every other
# request wait meanwhile): blocking() evaluates it in slices (FilterFn, render_filtered).
FIRST_PASS_S = 0.010  # evaluation done inline while rendering, before the rest is deferred
SLICE_S = 0.010  # evaluation between two returns to the event loop
MAX_PASSES = 4  # renders at most; the last one evaluates whatever is left inline


class FilterFn:
    """`keep(obj) -> bool` for a handler's render function, able to defer its evaluations.

    Called outside `render_filtered` it just evaluates the filter. In the first pass of
    `render_filtered` it records every object it is asked about, in call order, with its answer;
    once the pass has spent FIRST_PASS_S evaluating, it answers "keep" without evaluating and
    leaves the answer open. The open answers are then computed in slices with the event loop
    running in between, and the render runs again. A render is a function of the data its
    index names (the render cache rests on that too), so when the index has not moved the
    next pass asks about the same objects in the same order and takes the answers by position;
    otherwise an object equal to the one recorded at its position gets the recorded answer (the
    filter depends on nothing else) and any other is evaluated, or deferred again.
    """

    __slots__ = ("matches", "fn", "final", "deferring", "deadline", "objs", "answers", "prev_objs",
                 "prev_answers", "pos")

    def __init__(self, matches: Callable[[Any], bool]) -> None:
        self.matches = matches
        self.fn: Callable[[Any], bool] = matches
        self.final = False
        self.deferring = False
        self.deadline = 0.0
        self.objs: list[Any] = []
        self.answers: list[bool | None] = []
        self.prev_objs: list[Any] = []
        self.prev_answers: list[bool | None] = []
        self.pos = 0

    def __call__(self, obj: Any) -> bool:
        return self.fn(obj)

    def _recording(self, obj: Any) -> bool:
        i = len(self.objs)
        self.objs.append(obj)
        prev = self.prev_objs
        if i < len(prev) and (prev[i] is obj or prev[i] == obj):
            answer = self.prev_answers[i]
        elif self.deferring:
            answer = None
        else:
            answer = self.matches(obj)
            if not self.final and (i & 15) == 0 and time.perf_counter() > self.deadline:
                self.deferring = True
        self.answers.append(answer)
        return True if answer is None else answer

    def _replaying(self, obj: Any) -> bool:
        i = self.pos
        self.pos = i + 1
        answers = self.prev_answers
        return answers[i] if i < len(answers) else self.matches(obj)  # type: ignore[return-value]

    def start_pass(self, final: bool, same_data: bool) -> None:
        self.prev_objs, self.prev_answers = self.objs, self.answers
        self.objs, self.answers = [], []
        self.final, self.deferring, self.pos = final, False, 0
        self.deadline = time.perf_counter() + FIRST_PASS_S
        self.fn = self._replaying if same_data else self._recording

    async def settle(self) -> None:
        """Compute the open answers of the last pass, returning to the event loop every SLICE_S."""
        objs, answers, matches = self.objs, self.answers, self.matches
        deadline = time.perf_counter() + SLICE_S
        for i, answer in enumerate(answers):
            if answer is None:
                answers[i] = matches(objs[i])
                if time.perf_counter() > deadline:
                    await asyncio.sleep(0)
                    deadline = time.perf_counter() + SLICE_S

    def finish(self) -> None:
        self.fn = self.matches
        self.objs, self.answers, self.prev_objs, self.prev_answers = [], [], [], []


async def render_filtered(keep: FilterFn, render: Callable[[], Any], index: Callable[[], int],
                          current: int) -> tuple[Any, int]:
    """Render with a filter whose evaluation may be spread over several turns of the event
    loop; returns the body and the index it was rendered at."""
    try:
        same_data = False
        for n in range(1, MAX_PASSES + 1):
            keep.start_pass(final=n == MAX_PASSES, same_data=same_data)
            body = render()
            if not keep.deferring:  # (a replaying pass never defers)
                return body, current
            await keep.settle()
            now = index()  # the store may have moved on while the loop ran
            same_data, current = now == current, now
        raise AssertionError("the last pass defers nothing")
    finally:
        keep.finish()


def near_sorted(req: Request, ctx: HTTPContext, body: list[Any], node_of: Callable[[Any], str]) -> list[Any]:
    """`?near=<node>|_agent`: the answer sorted by estimated RTT from that node (appliance/coordinates.py).

    Sorted after the render cache, so a cached answer is re-sorted with the current coordinates.
    """
    near = req.query.get("near", "")
    if not near or not body:
        return body
    return sort_near(ctx.store, list(body), near, ctx.config.node_name, node_of)


def meta_headers(consensus: Consensus, index: int, opts: QueryOptions, effective: bool) -> dict[str, str]:
    headers = {
        "X-Consul-Index": str(max(index, 1)),
        "X-Consul-KnownLeader": "true" if consensus.known_leader else "false",
        # a default or consistent read waited for the leader's index: as fresh as the leader's
        "X-Consul-LastContact": str(consensus.last_contact_ms) if opts.consistency == "stale" else "0",
    }
    if effective:
        headers["X-Consul-Effective-Consistency"] = opts.consistency
    return headers


async def read_point(consensus: Consensus, opts: QueryOptions) -> None:
    """Wait until this agent may answer a read of the asked consistency (Consul docs:
    consistency modes). `?stale`: at once, from whatever this agent has applied. Default: on the
    leader at once; on another server or a client once it has applied the leader's commit index.
    `?consistent`: once it has applied the index the leader confirmed with a heartbeat round
    (read index, Raft thesis §6.4). `?max_stale=d`: stale, unless this agent's last contact with
    the leader is older than d; then default (Consul retries such a read on the leader)."""
    consistency = opts.consistency
    if consistency == "stale" and opts.max_stale_s > 0 and consensus.last_contact_ms > opts.max_stale_s * 1000:
        consistency = "leader"
    try:
        await consensus.read_point(consistency)
    except NotLeader:
        raise HTTPError(500, "No cluster leader") from None
    except (RaftError, TimeoutError) as err:
        raise HTTPError(500, str(err) or "timed out waiting for the leader's read index") from None


class ReadFrame:
    """What a replayable read's answer was made of (appliance/http/replay.py): the function of
    its index, its render cache key, its query options and the index it was answered at."""

    __slots__ = ("index", "key", "opts", "at")

    def __init__(self, index: Callable[[], int], key: Any, opts: QueryOptions, at: int) -> None:
        self.index, self.key, self.opts, self.at = index, key, opts, at


async def blocking(
    req: Request,
    ctx: HTTPContext,
    *,
    index: Callable[[], int],
    render: Callable[[], Any],
    keys: Iterable[str] = (),
    prefixes: Iterable[str] = (),
    effective_consistency: bool = False,
    replayable: bool = False,
) -> tuple[Any, dict[str, str]]:
    """Run a (possibly blocking) read; return its body and Consul's query-meta headers.

    `replayable`: the handler answers with the body and these headers as they are (plus fixed
    ones), so the same request at the same index may be answered again from the recorded answer
    (appliance/http/replay.py) without running the handler."""
    opts = query_options(req)
    keys, prefixes = tuple(keys), tuple(prefixes)
    if not req.read_done:
        await read_point(ctx.consensus, opts)
    current = index()
    if opts.index > 0 and current <= opts.index:
        cfg = ctx.config
        wait = opts.wait_s if opts.wait_s > 0 else cfg.default_query_time_s
        wait = min(wait, cfg.max_query_time_s)
        wait += ctx.rng.uniform(0, wait / 16)
        loop = ctx.loop_time
        deadline = loop() + wait
        while current <= opts.index:
            remaining = deadline - loop()
            if remaining <= 0:
                break
            await park(ctx, keys, prefixes, remaining)
            current = index()
            if ctx.stopping:
                break
    cache = ctx.render_cache
    key = cache_key(req)
    entry = cache.get(key, current)
    if entry is None:
        keep = req.get(_KEEP)
        if keep is None:
            body = render()
        else:
            body, current = await render_filtered(keep, render, index, current)
        entry = cache.put(key, current, body)
    req.render_entry = entry
    if replayable:
        req.frame = ReadFrame(index, key, opts, current)
    return entry.body, meta_headers(ctx.consensus, current, opts, effective_consistency)
