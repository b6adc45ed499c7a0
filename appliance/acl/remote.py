"""A secondary datacenter without token replication: the tokens the primary resolves, cached.

How it works
------------
A secondary datacenter always copies the primary's policies and roles (appliance/acl_replication.py);
its global tokens only with `acl.enable_token_replication`. Without it, Consul's secondaries ask
the primary for each token they are shown that they do not hold, and keep the answer for
`acl.token_ttl`; so do cairn's. `RemoteTokens.identity(secret, tables, now)`:

* an answer younger than `token_ttl` is used as it is (a token, or "the primary does not know
  it": `ACL not found`, so a wrong secret does not cost a WAN round trip per request);
* otherwise `fetch(secret)` asks again (the agent passes a `GET /v1/acl/token/self` in the
  primary datacenter over the WAN federation): a token record, None for `ACL not found`, or
  `Unreachable`;
* while the primary cannot be asked, `acl.down_policy` decides, as on a client agent without
  servers (appliance/acl/down.py): `extend-cache`/`async-cache` keep the last answer however old
  (a token never seen is denied), `allow` allows all but the ACL system, `deny` denies.

The token's rules are merged from this datacenter's tables (its replicated policies and roles)
by the same `Resolver` every other request uses, so a remote token is checked by the route
table's authorizer like any other. An expired token is `ACL not found`. Pure but for the
awaited `fetch`: the caller passes the tables and the time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from appliance.acl.authorizer import Authorizer
from appliance.acl.down import TokenCache
from appliance.acl.resolve import ACLNotFound, Identity, Resolver, expiry

if TYPE_CHECKING:
    from appliance.state.acl import AclTables

Record = dict[str, Any]
Fetch = Callable[[str], Awaitable["Record | None"]]
_CACHE_LIMIT = 10_000


class Unreachable(Exception):
    """The primary datacenter could not answer (its text)."""


class RemoteTokens:
    """Tokens resolved by the primary datacenter (see the module docstring)."""

    def __init__(self, resolver: Resolver, fetch: Fetch, token_ttl_s: float, down_policy: str) -> None:
        self.resolver = resolver
        self.fetch = fetch
        self.token_ttl_s = token_ttl_s
        self.down = TokenCache(down_policy, token_ttl_s)  # its allow_all / deny_all answers
        self.entries: dict[str, tuple[Record | None, float]] = {}
        self.fetched = 0
        self.down_answers = 0

    def cached(self, secret: str, tables: AclTables, now: float) -> Identity | None:
        """The identity of a token the primary resolved less than token_ttl ago, else None."""
        entry = self.entries.get(secret)
        if entry is None or entry[0] is None or now - entry[1] >= self.token_ttl_s:
            return None
        try:
            return self._identity(entry[0], tables, now)
        except ACLNotFound:
            return None

    async def identity(self, secret: str, tables: AclTables, now: float) -> Identity:
        """The identity of `secret` as the primary resolves it; ACLNotFound if it does not."""
        entry = self.entries.get(secret)
        if entry is not None and now - entry[1] < self.token_ttl_s:
            token = entry[0]
        else:
            try:
                token = await self.fetch(secret)
            except Unreachable:
                self.down_answers += 1
                policy = self.down.down_policy
                if policy in ("extend-cache", "async-cache") and entry is not None and entry[0] is not None:
                    return self._identity(entry[0], tables, now)
                return self.down.allow_all if policy == "allow" else self.down.deny_all
            self.fetched += 1
            if len(self.entries) >= _CACHE_LIMIT:
                self.entries.clear()
            self.entries[secret] = (token, now)
        if token is None:
            raise ACLNotFound()
        return self._identity(token, tables, now)

    def _identity(self, token: Record, tables: AclTables, now: float) -> Identity:
        expires = expiry(token)
        if expires is not None and expires <= now:
            raise ACLNotFound()
        rules = self.resolver.rules_of(tables, token)
        return Identity(token["AccessorID"], token, Authorizer(rules, self.resolver.default_allow))
