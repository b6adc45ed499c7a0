"""Deciding a check against merged rules (Consul's policy authorizer chained to the default).

Within one resource the rule for a segment is the exact rule on that very segment, else the
longest prefix rule whose key is a plain string prefix of it; no rule gives DEFAULT, which falls
through to `default_policy`. `allow` grants every DEFAULT except `acl:*` (and so snapshots,
which need `acl:write`); `deny` grants none. `mesh` and `peering` fall back to `operator` when
unset. The service rules' `intentions` default from their policy: read or write gives intention
read, deny gives deny.

Besides the point checks the authorizer answers the "any" and "all" checks (anyAllowed,
allAllowed over one resource's rules), `KeyWritePrefix` for recursive deletes (CVE-2019-12291:
the covering prefix rule and every rule at or under the prefix must grant write) and `KeyList`.
Point decisions are memoised per (resource, segment, level): an authorizer is built once per
token and its rules and the store's ACL index (appliance/acl/resolve.py).
"""

from __future__ import annotations

from typing import Final

from appliance.acl.policy import DENY, LIST, READ, SCALARS, WRITE, Rules

ALLOW: Final = "allow"
DEFAULT: Final = "default"
DENIED: Final = "deny"
RESOURCES = ("acl", "agent", "event", "intention", "key", "keyring", "mesh", "node", "operator", "peering",
             "query", "service", "session")
_MEMO_LIMIT = 4096


def enforce(rule: str | None, required: str) -> str:
    """One rule's decision for a required level (Consul's enforce)."""
    if rule == WRITE:
        return ALLOW
    if rule == LIST:
        return ALLOW if required in (LIST, READ) else DENIED
    if rule == READ:
        return ALLOW if required == READ else DENIED
    if rule == DENY:
        return DENIED
    return DEFAULT


class Tree:
    """One resource's rules: exact and prefix levels by segment."""

    __slots__ = ("exact", "prefix", "keys")

    def __init__(self, exact: dict[str, str], prefix: dict[str, str]) -> None:
        self.exact = exact
        self.prefix = prefix
        self.keys = sorted(set(exact) | set(prefix))

    def rule(self, segment: str) -> str | None:
        """The level that applies to `segment`: exact on it, else the longest prefix."""
        level = self.exact.get(segment)
        if level is not None:
            return level
        prefix = self.prefix
        if not prefix:
            return None
        for cut in range(len(segment), -1, -1):
            level = prefix.get(segment[:cut])
            if level is not None:
                return level
        return None

    def leaves(self) -> list[tuple[str | None, str | None]]:
        """(prefix level, exact level) of every segment with a rule, in key order."""
        return [(self.prefix.get(k), self.exact.get(k)) for k in self.keys]

    def sweep(self, required: str, stop: str) -> str:
        """Consul's anyAllowed (stop=ALLOW) and allAllowed (stop=DENIED): the `""` prefix rule
        sets the starting decision, and any rule whose decision is `stop` ends the walk with it."""
        decision = DEFAULT
        root = self.prefix.get("")
        if root is not None:
            decision = enforce(root, required)
            if decision == stop:
                return stop
        for pre, exact in self.leaves():
            if (pre is not None and enforce(pre, required) == stop) or \
                    (exact is not None and enforce(exact, required) == stop):
                return stop
        return decision

    def any_allowed(self, required: str) -> str:
        return self.sweep(required, ALLOW)

    def all_allowed(self, required: str) -> str:
        return self.sweep(required, DENIED)


_EMPTY = Tree({}, {})


def _intentions(rules: Rules) -> Tree:
    """The intention tree: explicit `intentions`, else derived from the service rule's policy."""
    tables = []
    for kind in ("exact", "prefix"):
        services = (rules.exact if kind == "exact" else rules.prefix).get("service", {})
        explicit = (rules.exact if kind == "exact" else rules.prefix).get("intention", {})
        table = {}
        for segment, level in services.items():
            own = explicit.get(segment, "")
            table[segment] = own if own else (DENY if level == DENY else READ)
        tables.append(table)
    return Tree(tables[0], tables[1])


class Authorizer:
    """Checks against one token's merged rules, falling through to the default policy."""

    def __init__(self, rules: Rules, default_allow: bool) -> None:
        self.rules = rules
        self.default_allow = default_allow
        self.scalars = dict(rules.scalars)
        for name in ("mesh", "peering"):
            if name not in self.scalars and "operator" in self.scalars:
                self.scalars[name] = self.scalars["operator"]
        self.trees = {r: Tree(rules.exact.get(r, {}), rules.prefix.get(r, {}))
                      for r in set(rules.exact) | set(rules.prefix) if r != "intention"}
        self.trees["intention"] = _intentions(rules)
        self._memo: dict[tuple[str, str, str], bool] = {}
        self._reads: dict[tuple[str, ...], bool] = {}  # reads_all, by the routes' resource tuples (a few)

    def tree(self, resource: str) -> Tree:
        return self.trees.get(resource, _EMPTY)

    def decide(self, resource: str, segment: str, required: str) -> str:
        """ALLOW, DENIED or DEFAULT from the rules alone."""
        if resource in SCALARS:
            return enforce(self.scalars.get(resource), required)
        if resource == "intention" and segment == "*":
            tree = self.tree("intention")
            return tree.any_allowed(READ) if required == READ else tree.all_allowed(WRITE)
        return enforce(self.tree(resource).rule(segment), required)

    def fallback(self, resource: str) -> bool:
        return self.default_allow and resource != "acl"

    def finish(self, resource: str, decision: str) -> bool:
        return decision == ALLOW or (decision == DEFAULT and self.fallback(resource))

    def allowed(self, resource: str, segment: str, required: str) -> bool:
        """Whether the token may `required` (read, list, write) `resource` on `segment`."""
        key = (resource, segment, required)
        found = self._memo.get(key)
        if found is None:
            found = self.finish(resource, self.decide(resource, segment, required))
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
        return found

    def any_allowed(self, resource: str, required: str) -> bool:
        key = ("*any", resource, required)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self.finish(resource, self.tree(resource).any_allowed(required))
        return found

    def all_allowed(self, resource: str, required: str) -> bool:
        key = ("*all", resource, required)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self.finish(resource, self.tree(resource).all_allowed(required))
        return found

    def reads_all(self, resources: tuple[str, ...]) -> bool:
        """`all_allowed(resource, "read")` for every one of `resources` (memoized as a whole)."""
        found = self._reads.get(resources)
        if found is None:
            found = self._reads[resources] = all(self.all_allowed(r, "read") for r in resources)
        return found

    def key_write_prefix_decision(self, prefix: str) -> str:
        """Recursive delete under `prefix` from the rules alone (Consul's KeyWritePrefix)."""
        tree = self.tree("key")
        decision = DEFAULT
        covering = [k for k in tree.prefix if prefix.startswith(k)]  # exact rules on the path do not count
        if covering:
            if tree.prefix[max(covering, key=len)] != WRITE:
                return DENIED
            decision = ALLOW
        for key in tree.keys:
            if key.startswith(prefix):
                for level in (tree.prefix.get(key), tree.exact.get(key)):
                    if level is not None and level != WRITE:
                        return DENIED
        return decision

    def key_write_prefix(self, prefix: str) -> bool:
        return self.finish("key", self.key_write_prefix_decision(prefix))

    def snapshot(self) -> bool:
        return self.allowed("acl", "", WRITE)


def static(allow: bool) -> Authorizer:
    """The authorizer of a token with no rules: the default policy alone."""
    return Authorizer(Rules(), allow)


MANAGE_ALL = Authorizer(Rules(scalars={"acl": WRITE, "keyring": WRITE, "operator": WRITE},
                              prefix={r: {"": WRITE} for r in ("agent", "event", "key", "node", "query", "service",
                                                             "session", "intention")}), True)
