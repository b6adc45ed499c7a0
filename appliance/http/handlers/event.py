"""/v1/event/fire/:name and /v1/event/list (reference/consul-api.md §4.7; appliance/events.py).

The list is a blocking query with Consul's special index: the XOR of the two halves of the last
event's UUID. That index is not monotonic, so the request parks while the index *equals* the
requested `?index=` (not "until it is greater"), for `wait` (default 5 min, at most 10 min).
Only `X-Consul-Index` is set on the list, as Consul's agent-local handler does.
"""

from __future__ import annotations

from appliance.events import WATCH_KEY, EventError
from appliance.http.context import HTTPContext, park
from appliance.http.encoding import read_body
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import query_options
from appliance.http.values import Answer, Request, json_answer

FIRE_PREFIX = "/v1/event/fire/"
MAX_PAYLOAD_READ = 64 * 1024  # far above Serf's 512-byte event limit, so the limit's own text answers


async def fire(req: Request, ctx: HTTPContext) -> Answer:
    name = path_tail(req, FIRE_PREFIX)
    if not name:
        raise HTTPError(400, "Missing name")
    q = req.query
    payload = read_body(req, MAX_PAYLOAD_READ) if req.content_length else b""
    try:
        record = ctx.events.fire(name, payload, q.get("node", ""), q.get("service", ""), q.get("tag", ""))
    except EventError as err:
        raise HTTPError(500, str(err)) from None
    return json_answer(req, record.to_json())


async def event_list(req: Request, ctx: HTTPContext) -> Answer:
    opts = query_options(req)
    name = req.query.get("name", "")
    events = ctx.events.list(name)
    index = ctx.events.index(events)
    if opts.index > 0 and index == opts.index:
        cfg = ctx.config
        wait = opts.wait_s if opts.wait_s > 0 else cfg.max_query_time_s
        wait = min(wait, cfg.max_query_time_s)
        loop = ctx.loop_time
        deadline = loop() + wait
        while index == opts.index and not ctx.stopping:
            remaining = deadline - loop()
            if remaining <= 0:
                break
            await park(ctx, (WATCH_KEY,), (), remaining)
            events = ctx.events.list(name)
            index = ctx.events.index(events)
    return json_answer(req, [e.to_json() for e in events], headers={"X-Consul-Index": str(index)})
