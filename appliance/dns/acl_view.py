"""What DNS may see with ACLs on: the store as the DNS token can read it.

DNS answers come from the store through the few reads below; with `acl.enabled` the server hands
the answerer an `AclView` instead of the store, so a node the token cannot `node:read` and an
instance whose service it cannot `service:read` (or whose node it cannot read) are simply not
there: NXDOMAIN or fewer records, exactly like data that does not exist. The token is
`acl.tokens.dns`, else `acl.tokens.default`, else anonymous (reference/security.md §3.6);
`dns_token` resolves it through the store's ACL tables; on a client agent, whose replica holds no
token secrets, through `remote` (the agent's `AclAgent.dns_authorizer`: as a server resolved it).
Pure: the caller passes the time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appliance.acl.authorizer import Authorizer, static
from appliance.acl.builtin import ANONYMOUS_SECRET
from appliance.acl.resolve import ACLNotFound, Resolver
from appliance.state import watchkeys

Record = dict[str, Any]


class AclView:
    """A read-only view of the store filtered by an authorizer (the reads DNS uses)."""

    def __init__(self, store: Any, authz: Authorizer) -> None:
        self._store = store
        self._authz = authz

    def __getattr__(self, name: str) -> Any:  # last_index, index_of, instance_checks ...
        return getattr(self._store, name)

    def _node_ok(self, name: str) -> bool:
        return self._authz.allowed("node", name, "read")

    def _service_ok(self, name: str) -> bool:
        return self._authz.allowed("service", name, "read")

    def node(self, name: str) -> Record | None:
        node = self._store.node(name)
        return node if node is not None and self._node_ok(node["Node"]) else None

    def all_nodes(self) -> list[Record]:
        return [n for n in self._store.all_nodes() if self._node_ok(n["Node"])]

    def service_instances(self, service: str) -> list[tuple[Record, Record]]:
        return [(n, s) for n, s in self._store.service_instances(service)
                if self._service_ok(s["Service"]) and self._node_ok(n["Node"])]

    def service_names(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for name, svcs in self._store.service_names().items():
            if not self._service_ok(name):
                continue
            kept = [s for s in svcs if self._node_ok(s.get("Node") or "") or not s.get("Node")]
            if kept:
                out[name] = kept
        return out


class DNSTokens:
    """The DNS token's authorizer, resolved again when the ACL tables change."""

    def __init__(self, config: Any, tokens: Callable[[str], str] | None = None) -> None:
        acl = config.acl
        self.enabled = acl.enabled
        # the agent's tokens as they are now (`cairn acl set-agent-token dns|default` at run time),
        # else the configured ones
        self.tokens: Callable[[str], str] = tokens or (lambda kind: acl.tokens.get(kind, ""))
        self.resolver = Resolver(config.datacenter, acl.default_policy == "allow")
        self.deny_all = static(False)
        self.deps = (watchkeys.ACL,) if acl.enabled else ()  # cached answers go when the ACL tables change
        self.remote: Callable[[str, float], Authorizer] | None = None  # a client agent: a server resolves

    @property
    def secret(self) -> str:
        """The DNS token, else the default token, else anonymous (Consul's order)."""
        return self.tokens("dns") or self.tokens("default") or ANONYMOUS_SECRET

    def authorizer(self, store: Any, now: float) -> Authorizer:
        if self.remote is not None:
            return self.remote(self.secret, now)
        try:
            return self.resolver.resolve(store.acl, store.watch_index.get(watchkeys.ACL, 0), self.secret, now).authz
        except ACLNotFound:  # an unknown DNS token sees nothing
            return self.deny_all

    def view(self, store: Any, now: float) -> Any:
        return AclView(store, self.authorizer(store, now)) if self.enabled else store
