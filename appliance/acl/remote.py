"""Tokens this agent's own tables cannot resolve: a secondary datacenter without token replication
asks the primary (`RemoteTokens`), a client agent asks a server (`ServerTokens`), both kept for
`acl.token_ttl` with `acl.down_policy` while nobody answers (appliance/acl/down.py).

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

`ServerTokens` (a client agent) is described in its docstring.

The token's rules are merged from this datacenter's tables (its replicated policies and roles)
by the same `Resolver` every other request uses, so a remote token is checked by the route
table's authorizer like any other. An expired token is `ACL not found`. Pure but for the
awaited `fetch`: the caller passes the tables and the time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from appliance.acl.authorizer import Authorizer
from appliance.acl.builtin import ANONYMOUS_ID, ANONYMOUS_SECRET
from appliance.acl.down import DownPolicy
from appliance.acl.resolve import ACLNotFound, Identity, NotInReplica, Resolver, expiry

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
        self.down = DownPolicy(down_policy)
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
                if self.down.keeps_last() and entry is not None and entry[0] is not None:
                    return self._identity(entry[0], tables, now)
                return self.down.answer()
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


class ServerTokens:
    """A client agent's tokens, resolved by a server of its datacenter as Consul's client agents
    resolve them (see docs/acl.md#client-agents).

    A client's replica holds every token without its secret (appliance/rpc/feed.py: each token's
    `SecretID` there is its `AccessorID`), so the one thing it asks a server is which token a
    secret names: `fetch(secret)` (the agent sends `GET /v1/acl/token/self` to a server) answers
    the token record, None for `ACL not found`, or raises `Unreachable`. The answer's accessor is
    kept for `token_ttl`; the token's policies, roles, identities and expiry are read from the
    replica, which streams every change, so a token edited or deleted on a server changes what a
    client allows as soon as the change reaches its replica, and at the latest after token_ttl. An
    unknown secret is not remembered (the next request asks again), as in Consul.

    In a secondary datacenter without token replication (`elsewhere`) a global token is in no
    replica of this datacenter: its server resolved it in the primary (`RemoteTokens`), and the
    record it answered stands for token_ttl, with this datacenter's policies and roles.

    While no server answers (`connected()` false, or the fetch fails) an answer older than
    token_ttl is refreshed never; `acl.down_policy` decides (appliance/acl/down.py)."""

    def __init__(self, resolver: Resolver, fetch: Fetch, token_ttl_s: float, down_policy: str,
                 connected: Callable[[], bool], elsewhere: bool = False) -> None:
        self.resolver = resolver
        self.fetch = fetch
        self.token_ttl_s = token_ttl_s
        self.connected = connected
        self.down = DownPolicy(down_policy)
        self.elsewhere = elsewhere
        self.entries: dict[str, tuple[Record, float]] = {}  # secret -> (the token a server answered, when)
        self.fetched = 0

    def fresh(self, secret: str, now: float) -> bool:
        """Whether a server named the token `secret` names less than token_ttl ago."""
        entry = self.entries.get(secret)
        return entry is not None and now - entry[1] < self.token_ttl_s

    def known(self, secret: str, tables: AclTables, index: int, now: float) -> Identity:
        """The token `secret` names as a server last said, however long ago (ACLNotFound if none
        did, or the token is gone from the replica since): what a request already admitted with
        it re-checks (a blocking query when it wakes)."""
        entry = self.entries.get(secret)
        if entry is None:
            raise ACLNotFound()
        return self._identity(secret, entry[0], tables, index, now)

    async def identity(self, secret: str, tables: AclTables, index: int, now: float) -> Identity:
        """The identity of `secret` (see the class docstring); ACLNotFound if it names no token."""
        entry = self.entries.get(secret)
        if entry is not None and now - entry[1] < self.token_ttl_s:
            return self._identity(secret, entry[0], tables, index, now)
        try:
            if not self.connected():
                raise Unreachable("No known Consul servers")
            token = await self.fetch(secret)
        except Unreachable:
            if self.down.keeps_last() and entry is not None:
                self.down.down_answers += 1
                return self._identity(secret, entry[0], tables, index, now)
            return self.down.answer()
        self.fetched += 1
        if token is None or not isinstance(token.get("AccessorID"), str):
            self.entries.pop(secret, None)
            raise ACLNotFound()
        if len(self.entries) >= _CACHE_LIMIT:
            self.entries.clear()
        self.entries[secret] = (token, now)
        return self._identity(secret, token, tables, index, now)

    def _identity(self, secret: str, token: Record, tables: AclTables, index: int, now: float) -> Identity:
        accessor = token["AccessorID"]
        stored = tables.tokens.get(accessor)
        if stored is not None:  # in the replica a token's SecretID is its AccessorID ("anonymous" stays)
            found = self.resolver.resolve(tables, index, stored["SecretID"], now)
        elif accessor == ANONYMOUS_ID:  # before the leader made the anonymous token
            found = self.resolver.resolve(tables, index, ANONYMOUS_SECRET, now)
        elif self.elsewhere:  # a global token the primary resolved
            expires = expiry(token)
            if expires is not None and expires <= now:
                raise ACLNotFound()
            rules = self.resolver.rules_of(tables, token)
            return Identity(accessor, {**token, "SecretID": secret}, Authorizer(rules, self.resolver.default_allow))
        else:
            raise NotInReplica()
        if found.token is None:
            raise ACLNotFound()
        return Identity(found.accessor, {**found.token, "SecretID": secret}, found.authz)
