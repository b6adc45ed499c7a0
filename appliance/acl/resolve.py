"""From a request's secret to its token and authorizer, compiled once and cached.

The secret a request names (or the agent's default token, or `anonymous`) is looked up in the
store's ACL tables. A token's effective rules are the merge of its policies (those whose
`Datacenters` include this datacenter, or name none), its roles' policies and identities, its
service and node identities and its templated policies (appliance/acl/builtin.py's synthetic
rules). The authorizer for a secret is kept until the ACL tables change (their watch index
moves: any token, policy or role write) or the token expires; a policy's parsed rules are kept
by (ID, ModifyIndex). An unknown or expired secret is `ACL not found`; the root names `allow`,
`deny` and `manage` are `Cannot resolve root ACL`. Pure: the caller passes the tables, their
index and the time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from appliance.acl.authorizer import Authorizer
from appliance.acl.builtin import (
    ANONYMOUS_ID,
    ANONYMOUS_SECRET,
    NODE_IDENTITY,
    ROOT_NAMES,
    SERVICE_IDENTITY,
    TEMPLATES,
    render_template,
)
from appliance.acl.policy import PolicyError, Rules, merge, parse

if TYPE_CHECKING:
    from appliance.state.acl import AclTables

Record = dict[str, Any]
_CACHE_LIMIT = 10_000


class ACLNotFound(Exception):
    """An unknown or expired secret (403 `ACL not found`)."""

    def __init__(self, text: str = "ACL not found") -> None:
        super().__init__(text)


class NotInReplica(ACLNotFound):
    """A client agent: a server named a token its replica does not hold yet (or no longer)."""


@dataclass(slots=True)
class Identity:
    """A resolved request: who (the token) and what it may do."""

    accessor: str
    token: Record | None  # None when ACLs are off
    authz: Authorizer
    anonymous_default: bool = False  # the request named no token

    @property
    def anonymous(self) -> bool:
        return self.accessor == ANONYMOUS_ID


def expiry(token: Record) -> float | None:
    """The token's ExpirationTime as epoch seconds, None if it never expires."""
    raw = token.get("ExpirationTime")
    if not raw or not isinstance(raw, str) or raw.startswith("0001-01-01"):
        return None
    try:
        return parse_time(raw)
    except ValueError:  # not a time (a restored snapshot from elsewhere): treated as long expired
        return 0.0


def parse_time(raw: str) -> float:
    text = raw.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Go writes up to 9 fractional digits; Python reads 6
        digits = "".join(c for c in rest if c.isdigit())
        text = head + "." + (digits[:6] or "0") + rest[len(digits):]
    return datetime.fromisoformat(text).timestamp()


class Resolver:
    """Secrets to `Identity`s for one agent (see the module docstring)."""

    def __init__(self, datacenter: str, default_allow: bool) -> None:
        self.datacenter = datacenter
        self.default_allow = default_allow
        self._tokens: dict[str, tuple[int, float | None, Identity]] = {}
        self._rules: dict[tuple[str, int], Rules] = {}

    def cached(self, secret: str, index: int, now: float) -> Identity | None:
        """The identity `resolve` would return from its cache (None: it would look it up)."""
        cached = self._tokens.get(secret)
        if cached is not None and cached[0] == index and (cached[1] is None or cached[1] > now):
            return cached[2]
        return None

    def resolve(self, tables: AclTables, index: int, secret: str, now: float) -> Identity:
        cached = self.cached(secret, index, now)
        if cached is not None:
            return cached
        if secret in ROOT_NAMES:
            raise ACLNotFound("Cannot resolve root ACL")
        token = tables.token_by_secret(secret)
        if token is None and secret == ANONYMOUS_SECRET:  # before the leader created it
            token = {"AccessorID": ANONYMOUS_ID, "SecretID": ANONYMOUS_SECRET, "Description": "Anonymous Token"}
        if token is None:
            raise ACLNotFound()
        expires = expiry(token)
        if expires is not None and expires <= now:
            raise ACLNotFound()
        identity = Identity(token["AccessorID"], token, Authorizer(self.rules_of(tables, token), self.default_allow))
        if len(self._tokens) >= _CACHE_LIMIT:
            self._tokens.clear()
        self._tokens[secret] = (index, expires, identity)
        return identity

    def rules_of(self, tables: AclTables, token: Record) -> Rules:
        """The merged rules of a token (or role)."""
        return merge(self._sources(tables, token, depth=0))

    def _sources(self, tables: AclTables, holder: Record, depth: int) -> Iterator[Rules]:
        for link in holder.get("Policies") or ():
            policy = tables.policies.get(link["ID"])
            if policy is not None and self._here(policy.get("Datacenters")):
                yield self._parsed(policy)
        if depth == 0:
            for link in holder.get("Roles") or ():
                role = tables.roles.get(link["ID"])
                if role is not None:
                    yield from self._sources(tables, role, depth + 1)
        for text in synthetic_rules(holder, self.datacenter):
            yield self._parse_text(text)

    def _here(self, datacenters: list[str] | None) -> bool:
        return not datacenters or self.datacenter in datacenters

    def _parsed(self, policy: Record) -> Rules:
        key = (policy["ID"], policy.get("ModifyIndex", 0))
        rules = self._rules.get(key)
        if rules is None:
            rules = self._parse_text(policy.get("Rules", ""))
            if len(self._rules) >= _CACHE_LIMIT:
                self._rules.clear()
            self._rules[key] = rules
        return rules

    @staticmethod
    def _parse_text(text: str) -> Rules:
        try:
            return parse(text)
        except PolicyError:  # stored before a stricter check, or restored: grants nothing
            return Rules()


def synthetic_rules(holder: Record, datacenter: str) -> Iterator[str]:
    """The rules of a token's or role's service and node identities and templated policies."""
    for ident in holder.get("ServiceIdentities") or ():
        dcs = ident.get("Datacenters")
        if not dcs or datacenter in dcs:
            yield SERVICE_IDENTITY.format(name=ident["ServiceName"])
    for ident in holder.get("NodeIdentities") or ():
        if ident.get("Datacenter") == datacenter:
            yield NODE_IDENTITY.format(name=ident["NodeName"])
    for tp in holder.get("TemplatedPolicies") or ():
        dcs = tp.get("Datacenters")
        if tp.get("TemplateName") in TEMPLATES and (not dcs or datacenter in dcs):
            yield render_template(tp["TemplateName"], tp.get("TemplateVariables") or {})
