"""A client agent's token cache and `acl.down_policy`: what a token may do while no server answers.

How it works
------------
Consul's client agents resolve a token by asking a server, keep the answer for `acl.token_ttl`
(30 s) and, when no server can be reached once that has run out, apply `acl.down_policy`. A cairn
client agent resolves tokens in its replica of the servers' ACL tables (appliance/client/
replica.py), which is as current as a server's while it streams from one; `TokenCache` gives it
Consul's behaviour when it does not:

* servers reachable: the token is resolved in the replica (an unknown or expired secret is
  `ACL not found`) and the answer cached with the time;
* no server reachable, the cached answer younger than `token_ttl`: the cached answer;
* no server reachable, older or none: the down policy. `extend-cache` (the default) and
  `async-cache` keep using a cached answer however old (unless the token has expired since),
  and deny a token never seen; `allow` allows everything a default-allow agent allows (not the
  ACL system itself, nor snapshots); `deny` denies everything.

`async-cache` differs from `extend-cache` in Consul only while the servers are up (a stale
answer is served while a fresh one is fetched); a replica refreshes as entries arrive, so here
the two behave the same. Pure: the caller passes the time, whether a server is reachable and
how to resolve in the replica.
"""

from __future__ import annotations

from collections.abc import Callable

from appliance.acl.authorizer import Authorizer
from appliance.acl.policy import Rules
from appliance.acl.resolve import Identity, expiry

_CACHE_LIMIT = 10_000


class TokenCache:
    """Resolved tokens by secret with the time they were resolved (see the module docstring)."""

    def __init__(self, down_policy: str, token_ttl_s: float) -> None:
        self.down_policy = down_policy
        self.token_ttl_s = token_ttl_s
        self.entries: dict[str, tuple[Identity, float]] = {}
        self.allow_all = Identity("", None, Authorizer(Rules(), True))
        self.deny_all = Identity("", None, Authorizer(Rules(), False))
        self.down_answers = 0  # answers the down policy gave (not a fresh or cached resolution)

    def resolve(self, secret: str, now: float, servers_up: bool, fresh: Callable[[], Identity]) -> Identity:
        """The identity of `secret`: `fresh()` (ACLNotFound passes through) while servers are up,
        else the cache or the down policy."""
        if servers_up:
            ident = fresh()
            if len(self.entries) >= _CACHE_LIMIT:
                self.entries.clear()
            self.entries[secret] = (ident, now)
            return ident
        cached = self.entries.get(secret)
        if cached is not None:
            ident, at = cached
            expires = expiry(ident.token) if ident.token is not None else None
            if expires is not None and expires <= now:
                cached = None  # expired while the servers were away: never extended
            elif now - at < self.token_ttl_s:
                return ident
        self.down_answers += 1
        if self.down_policy in ("extend-cache", "async-cache") and cached is not None:
            return cached[0]
        return self.allow_all if self.down_policy == "allow" else self.deny_all
