"""Timings of the edges: DNS answers (`consul.dns.*_query`) and HTTP requests (`consul.api.http`).

Both are hot paths, so each counts every event and times a sample (`SampledTiming`).
`record_http`, called by the HTTP server's middleware, times each request as
`consul.api.http{method,path}`, with the path of the route that answered
(`/v1/health/service/web` -> `v1.health.service._`).
"""

from __future__ import annotations

import functools
from typing import Any

from appliance.telemetry.recorder import SampledTiming, Telemetry

_PTR_ZONES = (b"\x07in-addr\x04arpa\x00", b"\x03ip6\x04arpa\x00")


def is_ptr_query(packet: bytes) -> bool:
    """True when the question's name is under in-addr.arpa or ip6.arpa (Consul's PTR handler)."""
    i = 12
    while i < len(packet):
        length = packet[i]
        if length == 0:
            return packet[12:i + 1].lower().endswith(_PTR_ZONES)
        if length >= 0xC0:  # a pointer in a question: not ours to judge
            return False
        i += 1 + length
    return False


# Timing every DNS answer costs more than a cached answer itself (about 3 us against 1 us), so
# instrument_dns times a sample of them: every query while they come slower than one per
# DNS_SAMPLE_GAP_S per kind, and under load one in DNS_SAMPLE_EVERY.
DNS_SAMPLE_EVERY = 32
DNS_SAMPLE_GAP_S = 0.1
HTTP_SAMPLE_EVERY = 16
HTTP_SAMPLE_GAP_S = 0.1


def instrument_dns(tel: Telemetry, server: Any, node_name: str, *, every: int = DNS_SAMPLE_EVERY,
                   gap_s: float = DNS_SAMPLE_GAP_S) -> None:
    """Time DNS answers as `consul.dns.domain_query{node}` or `consul.dns.ptr_query{node}`.

    Wraps `server.answer(packet, tcp)`, the synchronous question-to-reply step of
    appliance.dns.server, so the time is cairn's own work (forwarding to recursors excluded).
    Every query is counted and a sample is timed (SampledTiming says what the summaries mean).
    The cache hits of a batched UDP read skip `answer` (appliance/dns/mmsg.py): the server
    reports them once per batch through `server.on_hits`, counted by kind and timed as the
    batch's time on them over their number, one sample standing for them all.
    """
    inner = server.answer
    labels = (("node", node_name),)
    clock = tel.monotonic
    domain = SampledTiming(tel, "dns.domain_query", labels, every, gap_s)
    ptr = SampledTiming(tel, "dns.ptr_query", labels, every, gap_s)

    def answer(packet: bytes, tcp: bool) -> Any:
        start = clock()
        kind = ptr if b"\x04arpa\x00" in packet.lower() and is_ptr_query(packet) else domain
        if not kind.begin(start):
            return inner(packet, tcp)  # counted; recorded with the next timed query
        try:
            return inner(packet, tcp)
        finally:
            kind.record(start, (clock() - start) * 1000.0)

    def on_hits(domain_hits: int, ptr_hits: int, elapsed_s: float) -> None:
        start = clock()
        each_ms = elapsed_s * 1000.0 / (domain_hits + ptr_hits)
        for kind, count in ((domain, domain_hits), (ptr, ptr_hits)):
            if count:
                kind.pending += count - 1
                if kind.begin(start):
                    kind.record(start, each_ms)

    server.answer = answer
    server.on_hits = on_hits


# ---------------------------------------------------------------------- HTTP


@functools.lru_cache(maxsize=256)
def route_label(pattern: str) -> str:
    """The `path` label of `consul.api.http`: the route pattern, `/` -> `.`, a parameter as `_`."""
    if pattern.endswith("/"):
        pattern += "_"
    return pattern.strip("/").replace("/", ".")


def record_http(tel: Telemetry, method: str, route: str, start: float) -> None:
    """Count a request that reached a route and time a sample, as `consul.api.http{method,path}`
    (SampledTiming says what the summary means). Called by the HTTP server's middleware with the
    request's method and matched route pattern (`Request.route`, set by
    appliance.http.routing.Router.dispatch; empty when no route answered: not counted)."""
    if not route:
        return
    key = (method, route)
    timing = tel.http_timings.get(key)
    if timing is None:
        labels = {"method": method, "path": route_label(route)}
        timing = tel.http_timings[key] = SampledTiming(tel, "api.http", labels, HTTP_SAMPLE_EVERY,
                                                       HTTP_SAMPLE_GAP_S)
    if timing.begin(start):
        timing.record(start, (tel.monotonic() - start) * 1000.0)
