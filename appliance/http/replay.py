"""Repeated reads answered again from their recorded answer: the HTTP API's fast path.

Most of what a read costs per request is the same each time the same request meets the same data:
routing, the query options and the render cache's key parsed from the query string, the handler's
frame, the query-meta headers and the head written from them (BENCHMARKS.md, "The gap to the bare
handler"). A `Replay` keeps the outcome of one such request, keyed by its raw target (path and
query string, as sent), and answers the next request with the same target from it, doing only
what can differ between the two.

What is recorded: a `GET` over HTTP/1.1 on a kept-alive connection, with no body, whose handler
declared its answer replayable (`query.blocking(..., replayable=True)`: the body the render cache
holds and the query-meta headers, plus fixed headers), not a blocking query (no `index`), answered
200 with the render cache's entry as it is (not re-sorted by `?near`, not filtered by ACLs). Kept:
the route, the read's frame (`query.ReadFrame`: its index function, render cache key and query
options, and the index it was answered at), whether it was pretty, the body's length, the
known-leader flag, and the head as written, without its Date, cut around the value of
`X-Consul-LastContact` when the read is stale (the one header that changes between two answers of
the same data).

Answering again (`Replay.answer`), in the order the full way does it: with ACLs on, `passes` must
let the token the request names (its header, else the recorded `?token`) through on this route
without filtering (else the full way: `admit`, `finish`); the read point of the recorded
consistency is waited for as before (a `?consistent` read still makes its read-index round, a
failure is the same 500); then the index must be the one recorded, the render cache must still hold
the entry for that key and index (the render cache's own rule: the same query at the same index has
the same answer; this also refreshes its place in the cache) with the same encoded length, and the
known-leader flag must be the same. Then the answer is the recorded head with the current
`X-Consul-LastContact` and Date, and the entry's bytes: byte for byte what the full way writes
(tests/unit/test_http_replay.py compares them). Anything else goes the full way, with the read
point already waited for, and records the new answer. The replays hold heads only (the bodies stay
in the render cache), at most REPLAYS_MAX targets of at most TARGET_MAX characters; the table
starts over when full.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp.http import HttpVersion11

from appliance.http.authz import FILTERED, read_passes
from appliance.http.errors import HTTPError
from appliance.http.query import ReadFrame, read_point
from appliance.http.values import Answer, Request, named_token
from appliance.http.wire import DirectAnswer, head_lines, http_date_bytes

if TYPE_CHECKING:
    from appliance.http.context import HTTPContext
    from appliance.http.routes import Route

REPLAYS_MAX = 1024  # targets remembered
TARGET_MAX = 1024  # characters of a target remembered (a longer one always goes the full way)
LAST_CONTACT = "X-Consul-LastContact: "
END = b"\r\n\r\n"
AGAIN = object()  # `Replay.answer`: go the full way; the read point was waited for


class Replay:
    """One recorded read (see the module docstring)."""

    __slots__ = ("route", "pattern", "query_token", "frame", "pretty", "length", "known_leader", "stale", "head",
                 "tail")

    def __init__(self, route: Route, req: Request, frame: ReadFrame, pretty: bool, length: int,
                 known_leader: bool, head: bytes, tail: bytes) -> None:
        self.route, self.pattern, self.frame = route, req.route, frame
        self.query_token = req.query.get("token", "") if req.query_string else ""  # `?token=`
        self.pretty, self.length, self.known_leader = pretty, length, known_leader
        self.stale = frame.opts.consistency == "stale"
        self.head, self.tail = head, tail  # a stale read's LastContact value goes between them

    async def answer(self, request: Any, ctx: HTTPContext) -> object:
        """The answer to `request` (aiohttp's): written (DirectAnswer), an error of the read point
        to write (Answer), or the full way: AGAIN once the read point was waited for, None before."""
        if ctx.config.acl.enabled and not read_passes(self.route, named_token(request.headers, self.query_token), ctx):
            return None
        frame = self.frame
        try:
            await read_point(ctx.consensus, frame.opts)
        except HTTPError as err:  # what the handler's frame answers (routing.respond)
            answer = Answer.text(err.status, err.text, err.headers)
            answer.headers.update(ctx.response_headers)
            return answer
        except Exception:  # noqa: BLE001 - a bug: the full way logs it and answers 500
            return None
        current = frame.index()
        if current != frame.at:
            return AGAIN
        entry = ctx.render_cache.get(frame.key, current)
        if entry is None:
            return AGAIN
        body = entry.encoded.get(self.pretty)
        consensus = ctx.consensus
        if body is None or len(body) != self.length or consensus.known_leader is not self.known_leader:
            return AGAIN
        if self.stale:
            head = self.head + str(consensus.last_contact_ms).encode() + self.tail + http_date_bytes() + END
        else:
            head = self.head + http_date_bytes() + END
        return DirectAnswer(head, body, True, request)


def fits(request: Any) -> bool:
    """A request a replay may answer: GET over HTTP/1.1, kept alive, without a body."""
    return request.keep_alive and request.version == HttpVersion11 and not request.can_read_body


class Replays:
    """The recorded reads by raw target."""

    def __init__(self) -> None:
        self.by_target: dict[str, Replay] = {}
        self.answered = 0  # requests answered from a replay

    def record(self, target: str, route: Route | None, req: Request, answer: Answer, ctx: HTTPContext) -> None:
        """Keep `answer` to `req` (sent as `target`) if it may be answered again (an answer that
        may not, to one token, leaves what the target answered to others); `answer` was written
        with `direct_answer` for a kept-alive HTTP/1.1 GET without a body."""
        replay = _replay(route, req, answer, ctx) if len(target) <= TARGET_MAX else None
        if replay is None:
            return
        by_target = self.by_target
        if len(by_target) >= REPLAYS_MAX and target not in by_target:
            by_target.clear()
        by_target[target] = replay


def _replay(route: Route | None, req: Request, answer: Answer, ctx: HTTPContext) -> Replay | None:
    frame: ReadFrame | None = req.frame
    entry = answer.entry
    body = answer.body
    if (frame is None or route is None or answer.status != 200 or entry is None or entry is not req.render_entry
            or body is None or FILTERED in answer.headers or (req.query_string and "index" in req.query)):
        return None
    encoded = entry.encoded
    pretty = encoded.get(True) is body
    if not pretty and encoded.get(False) is not body:  # not kept by the render cache (too large)
        return None
    lines = head_lines(answer)
    if lines is None:
        return None
    lines.append(f"Content-Length: {len(body)}\r\nDate: ")
    text = "".join(lines)
    before, after = text, ""
    if frame.opts.consistency == "stale":  # its LastContact changes: cut around the value
        start = text.find("\r\n" + LAST_CONTACT)
        if start < 0 or LAST_CONTACT[:-2] in ctx.response_headers:  # or it is configured
            return None
        start += 2 + len(LAST_CONTACT)
        before, after = text[:start], text[text.index("\r\n", start):]
    return Replay(route, req, frame, pretty, len(body), answer.headers.get("X-Consul-KnownLeader") == "true",
                  before.encode("utf-8"), after.encode("utf-8"))
