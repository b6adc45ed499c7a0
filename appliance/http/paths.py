"""Consul's path parameter: the unescaped rest of the path after a prefix route."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from appliance.http.errors import HTTPError
from appliance.http.values import Request

# Prefixes of the routes whose handler modules load on their first request (routes.py declares them
# without importing those modules; the handlers read their path parameter after these).
LEAF_PREFIX = "/v1/agent/connect/ca/leaf/"
SIGN_PATH = "/v1/internal/connect/ca/sign"
INTENTION_PREFIX = "/v1/connect/intentions/"
DISCOVERY_CHAIN_PREFIX = "/v1/discovery-chain/"
AUTH_METHOD_PREFIX = "/v1/acl/auth-method/"
BINDING_RULE_PREFIX = "/v1/acl/binding-rule/"

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")  # Go's url.PathUnescape refuses these


def path_tail(req: Request, prefix: str, *, keep_bytes: bool = False) -> str:
    """The unescaped part of the path after `prefix` (Consul's path parameter).

    Consul takes the parameter from Go's `req.URL.Path`: the path unescaped to a byte string, which
    need not be UTF-8 (`k%ff` is the two bytes `k\\xff`), after Go's HTTP server refused a malformed
    escape (`%zz`, a lone `%`) with a 400. cairn unescapes the same way, on bytes. A KV key
    (`keep_bytes`) keeps its exact bytes: each byte that is not part of valid UTF-8 becomes one lone
    surrogate (U+DC80-U+DCFF, Python's "surrogateescape"), so `k%ff`, `k%fe` and `k%ef%bf%bd` stay
    three keys, and `key.encode("utf-8", "surrogateescape")` gives the bytes back. Everywhere else
    the parameter is a name (service, node, check, event, address) that ends up in JSON, DNS,
    gossip and error texts, and no registered name can be anything but UTF-8 (JSON bodies are), so
    a path whose parameter is not valid UTF-8 is refused with a 400 instead.
    """
    raw = req.raw_path
    if not raw.startswith(prefix):
        return ""
    tail = raw[len(prefix):]
    if "%" not in tail and tail.isascii():
        return tail
    # (aiohttp's parser refuses raw non-ASCII bytes in the request line; should any reach raw_path they are bytes too)
    data = tail.encode("utf-8", "surrogateescape")
    bad = _BAD_ESCAPE.search(data)
    if bad is not None:
        escape = data[bad.start(): bad.start() + 3].decode("utf-8", "replace")
        raise HTTPError(400, f'Invalid URL path: invalid URL escape "{escape}"')
    data = unquote_to_bytes(data)
    if keep_bytes:
        return data.decode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "Invalid URL path: the name is not valid UTF-8") from None
