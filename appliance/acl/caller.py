"""The secret a write acts with, carried from where it is known to where the write is forwarded.

A client agent forwards its writes to a server with a token (appliance/rpc/feed.py authorizes
them there). The token is known far from the forwarding: the HTTP layer knows the request's
secret (appliance/http/authz.py sets it as it resolves the request), anti-entropy knows each
service's registration token and the agent's own (appliance/local/sync.py), the coordinate
sender the agent token. Rather than thread it through every handler, the secret rides in a
context variable: `acting_as(secret)` sets it for a block, `caller_token()` reads it where the
write leaves the agent (appliance/client/replica.py). asyncio copies the context into each task,
so a request's secret stays with that request; a write made outside any of them carries none
(the server then treats it as the anonymous token's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_CALLER: ContextVar[str] = ContextVar("acl_caller_token", default="")


def caller_token() -> str:
    """The secret the current write acts with ("" when none was set)."""
    return _CALLER.get()


def set_caller(secret: str) -> None:
    """Act with `secret` from here on in this context (a request's task)."""
    _CALLER.set(secret)


@contextlib.contextmanager
def acting_as(secret: str) -> Iterator[None]:
    """Act with `secret` for the block."""
    reset = _CALLER.set(secret)
    try:
        yield
    finally:
        _CALLER.reset(reset)
