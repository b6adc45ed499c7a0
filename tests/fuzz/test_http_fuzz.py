"""Hostile request targets and headers into the HTTP request-value builder and the path helpers.

Declared outcomes (appliance/http/values.py, paths.py, query.py, routing.py): a `Request` is built
from any target and headers, with no error; reading its token, query options, booleans, node-meta
pairs, cache key and path parameters answers a value or an `HTTPError` (Consul's 400s); the router
resolves any raw path to a route or None. An input is a target line, then header lines ("Name:
value"), as the adapter hands them over (text with the request's bytes kept, surrogateescape).
Inputs: random bytes, byte mutations, and token-level mutations of real targets (escapes,
repeated keys, odd durations and indexes, non-UTF-8 escapes, control characters).
"""

from __future__ import annotations

from multidict import CIMultiDict

from appliance.http.app import build_router
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import cache_key, node_meta_filter, parse_bool_param, query_options
from appliance.http.values import Request
from tests.fuzz.harness import Target, as_text, from_text, fuzz_tests, seed_tests

ROUTER = build_router()
PREFIXES = ("/v1/kv/", "/v1/catalog/service/", "/v1/health/service/", "/v1/agent/service/", "/v1/event/fire/")

SEEDS = [
    "/v1/kv/foo%2Fbar/baz?recurse&index=12&wait=5s&separator=%2F\nX-Consul-Token: abc",
    "/v1/health/service/web?passing=1&node-meta=rack:r1&node-meta=az:a&filter=Service.Tags%20contains%20%22x%22&dc=dc2"
    "\nAuthorization: Bearer t0k\nContent-Type: application/json",
    "/v1/catalog/nodes?stale&max_stale=10s&cached&near=_agent",
    "/v1/agent/service/web%ff?consistent&index=18446744073709551615&wait=1m30s",
    "/v1/kv/k%ef%bf%bd%fe?cas=0&flags=42&token=t",
    "/v1/catalog/service/db?tag=primary&passing=false&ns=default",
    "/v1/event/fire/deploy?node=web.*&service=api&tag=v2",
    "/",
]
WORDS = ["index", "wait", "stale", "consistent", "max_stale", "cached", "passing", "node-meta", "token", "dc",
         "filter", "=", "&", "?", "%2F", "%00", "%", "5s", "-1s", "1e3h", "18446744073709551616", "\u0661",
         "X-Consul-Token", "Authorization", ":", "Bearer ", "/v1/kv/", "/../", "//", "%C0%AF", "\r", "\t"]


def _request(data: bytes) -> None:
    target, _, rest = as_text(data).partition("\n")
    headers = CIMultiDict(tuple(line.split(":", 1)) for line in rest.split("\n") if ":" in line)
    req = Request("GET", target, headers, b"", "127.0.0.1")
    _ = req.token, cache_key(req), node_meta_filter(req)
    ROUTER.route_of(req)
    for read in (lambda: query_options(req), lambda: parse_bool_param(req, "passing"),
                 *(lambda p=p: path_tail(req, p, keep_bytes=p == "/v1/kv/") for p in PREFIXES)):
        try:
            read()
        except HTTPError as err:
            assert 400 <= err.status < 500, err


TARGETS = [Target("http.request", _request, (), [from_text(s) for s in SEEDS], text=True, words=WORDS)]

test_http_decoders_have_only_declared_outcomes = fuzz_tests(TARGETS)
test_http_seeds_are_valid = seed_tests(TARGETS)
