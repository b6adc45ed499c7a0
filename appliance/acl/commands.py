"""What a write forwarded by a client agent needs: the permissions of a command, checked on the server.

How it works
------------
A client agent forwards its writes to a server as log commands (appliance/rpc/feed.py), each with
the secret it acts with: the caller's token for a write made over its HTTP API, the agent's tokens
and the services' registration tokens for anti-entropy and coordinates (appliance/acl/caller.py).
Consul's servers authorize every RPC a client sends; so does a cairn server: `command_needs`
lists the (resource, level, segment) a command needs, read from the command and the server's
store, exactly as the route table asks them of the same write made over HTTP
(appliance/http/authz_routes.py), and `ForwardedWrites.check` resolves the secret with the same
`Resolver` and decides with the same `Authorizer` the route table uses. A refusal is Consul's
`Permission denied: token with AccessorID '<id>' lacks permission '<res>:<level>' on "<name>"`
(the client's HTTP layer answers 403 with it), an unknown secret `ACL not found`.

- register: node:write on the node when it is new or its record changes; service:write on the
  service (and on the name a re-registered ID had); each check as its service or node.
- deregister: node:write for a node or a node check, service:write for a service or its check.
- kv_set, kv_lock, kv_unlock: key:write on the key; kv_delete the same, or with Recurse write on
  everything under the prefix (KeyWritePrefix).
- session_create: session:write on the session's node; session_destroy and session_renew
  session:write on the stored session's node.
- txn: each operation as its endpoint asks it (reads need read); lock_checked: what the wrapped
  command needs.
- prepared_query: query:write on the new and the stored name.
- acl: acl:write (bootstrap: nothing, the FSM allows it once).
- coordinate_batch_update: node:write on each update's node.
- autopilot, raft_remove_peer, raft_transfer_leader: operator:write; autopilot_health and
  raft_configuration: operator:read.
- restore: acl:write (Consul's snapshot restore needs a management token).
- config_entry: what /v1/config asks of its kind (appliance/connect/entries.py `needs`: service
  or intention write on the name, mesh:write for the mesh-wide kinds).
- connect_ca: none from a client agent: the CA's keys (its first root, a rotation) and its
  bookkeeping (serial numbers, pruning) are the servers', and a client agent asks a server to
  sign its leaves and to read or set the configuration (appliance/http/handlers/connect_ca.py).

A command only servers propose (the ACL tables' start-up `init`, autopilot's `Init`, connect_ca,
anything not in the table) is refused whatever the token: `Permission denied: <type> is not a
client agent's write`. Pure: the caller passes the store and the time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.acl.builtin import denied_text
from appliance.acl.resolve import Identity, Resolver

if TYPE_CHECKING:
    from appliance.state.store import Store

Need = tuple[str, str, "str | None"]
NeedsFn = Callable[[dict[str, Any], "Store"], list[Need]]


class PermissionDenied(Exception):
    """A forwarded write the token may not make; str() is Consul's text."""


class ServerOnly(PermissionDenied):
    """A command no client agent may forward."""

    def __init__(self, command_type: str) -> None:
        super().__init__(f"Permission denied: {command_type} is not a client agent's write")


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _changes_node(existing: dict[str, Any], cmd: dict[str, Any]) -> bool:
    """Whether a register command rewrites the node record (the FSM's node fields)."""
    want = {"ID": cmd.get("ID") or "", "Address": cmd.get("Address") or "",
            "TaggedAddresses": cmd.get("TaggedAddresses"), "Meta": cmd.get("NodeMeta")}
    return any(existing.get(k) != v for k, v in want.items())


def _register(cmd: dict[str, Any], store: Store) -> list[Need]:
    node = _s(cmd.get("Node"))
    out: list[Need] = []
    existing = store.node(node)
    if not cmd.get("SkipNodeUpdate") and (existing is None or _changes_node(existing, cmd)):
        out.append(("node", "write", node))
    stored = {s["ID"]: s["Service"] for s in store.node_services(node)} if existing is not None else {}
    svc = cmd.get("Service")
    if isinstance(svc, dict):
        name = _s(svc.get("Service"))
        out.append(("service", "write", name))
        previous = stored.get(_s(svc.get("ID")) or name)
        if previous is not None and previous != name:  # re-registering an ID under another name
            out.append(("service", "write", previous))
    for check in cmd.get("Checks") or ():
        sid = _s(check.get("ServiceID")) if isinstance(check, dict) else ""
        if sid:
            owner = _s(svc.get("Service")) if isinstance(svc, dict) and _s(svc.get("ID")) == sid else stored.get(sid)
            out.append(("service", "write", owner if owner is not None else sid))
        elif ("node", "write", node) not in out:
            out.append(("node", "write", node))
    return out


def _deregister(cmd: dict[str, Any], store: Store) -> list[Need]:
    node = _s(cmd.get("Node"))
    services = {s["ID"]: s["Service"] for s in store.node_services(node)} if store.node(node) else {}
    sid, cid = _s(cmd.get("ServiceID")), _s(cmd.get("CheckID"))
    if sid:
        return [("service", "write", services.get(sid, sid))]
    if cid:
        for check in store.node_checks(node) if services or store.node(node) else ():
            if check["CheckID"] == cid and check.get("ServiceID"):
                return [("service", "write", services.get(check["ServiceID"], check.get("ServiceName", "")))]
    return [("node", "write", node)]


def _key_write(cmd: dict[str, Any], store: Store) -> list[Need]:
    return [("key", "write", _s(cmd.get("Key")))]


def _kv_delete(cmd: dict[str, Any], store: Store) -> list[Need]:
    return [("key_prefix" if cmd.get("Recurse") else "key", "write", _s(cmd.get("Key")))]


def _session_create(cmd: dict[str, Any], store: Store) -> list[Need]:
    sess = cmd.get("Session")
    return [("session", "write", _s(sess.get("Node")) if isinstance(sess, dict) else "")]


def _session_stored(cmd: dict[str, Any], store: Store) -> list[Need]:
    sess = store.sessions.get(_s(cmd.get("ID")))
    return [] if sess is None else [("session", "write", _s(sess.get("Node")))]


_KV_READS = frozenset({"get", "get-tree", "check-index", "check-session", "check-not-exists"})
_CATALOG_READS = frozenset({"get", "check-index", "check-not-exists"})


def txn_op_need(op: Any) -> Need | None:
    """What one transaction operation needs, as its own endpoint would (None: not an operation)."""
    if not isinstance(op, dict):
        return None
    kv, node, svc, check = (op.get(k) for k in ("KV", "Node", "Service", "Check"))
    if isinstance(kv, dict):
        verb, key = kv.get("Verb"), _s(kv.get("Key"))
        if verb == "delete-tree":
            return ("key_prefix", "write", key)
        return ("key", "read" if verb in _KV_READS else "write", key)
    if isinstance(node, dict):
        inner = node.get("Node")
        level = "read" if node.get("Verb") in _CATALOG_READS else "write"
        return ("node", level, _s(inner.get("Node")) if isinstance(inner, dict) else "")
    if isinstance(svc, dict):
        inner = svc.get("Service")
        level = "read" if svc.get("Verb") in _CATALOG_READS else "write"
        return ("service", level, _s(inner.get("Service")) if isinstance(inner, dict) else "")
    if isinstance(check, dict):
        inner = check.get("Check")
        inner = inner if isinstance(inner, dict) else {}
        level = "read" if check.get("Verb") in _CATALOG_READS else "write"
        if inner.get("ServiceID"):
            return ("service", level, _s(inner.get("ServiceName")))
        return ("node", level, _s(inner.get("Node")))
    return None


def _txn(cmd: dict[str, Any], store: Store) -> list[Need]:
    return [need for op in cmd.get("Ops") or () if (need := txn_op_need(op)) is not None]


def _lock_checked(cmd: dict[str, Any], store: Store) -> list[Need]:
    inner = cmd.get("Command")
    if not isinstance(inner, dict) or inner.get("Type") not in ("kv_lock", "txn"):
        raise ServerOnly("lock_checked")
    return command_needs(inner, store)


def _prepared_query(cmd: dict[str, Any], store: Store) -> list[Need]:
    query = cmd.get("Query")
    qid = _s(query.get("ID")) if isinstance(query, dict) else _s(cmd.get("ID"))
    out: list[Need] = []
    if isinstance(query, dict):
        out.append(("query", "write", _s(query.get("Name"))))
    stored = store.prepared_queries.get(qid)
    if stored is not None and ("query", "write", _s(stored.get("Name"))) not in out:
        out.append(("query", "write", _s(stored.get("Name"))))
    return out


def _acl(cmd: dict[str, Any], store: Store) -> list[Need]:
    op = cmd.get("Op")
    if op == "bootstrap":
        return []  # the FSM allows it once, whoever asks (PUT /v1/acl/bootstrap needs no token)
    if op == "init":
        raise ServerOnly("acl init")
    return [("acl", "write", None)]


def _autopilot(cmd: dict[str, Any], store: Store) -> list[Need]:
    if cmd.get("Init"):
        raise ServerOnly("autopilot Init")
    return [("operator", "write", None)]


def _coordinates(cmd: dict[str, Any], store: Store) -> list[Need]:
    nodes = {_s(u.get("Node")) for u in cmd.get("Updates") or () if isinstance(u, dict)}
    return [("node", "write", node) for node in sorted(nodes)]


def _config_entry(cmd: dict[str, Any], store: Store) -> list[Need]:
    """A config entry (an intention too) by its kind, as /v1/config and /v1/connect/intentions ask."""
    from appliance.connect.entries import SPECS, needs  # Consul's CanWrite per kind

    kind, name = _s(cmd.get("Kind")), _s(cmd.get("Name"))
    return needs(kind, name, "write") if kind in SPECS else [("operator", "write", None)]


def _connect_ca(cmd: dict[str, Any], store: Store) -> list[Need]:
    """Servers only: the CA's configuration and roots carry its private keys, and its bookkeeping
    (the first root, serial numbers, pruning rotated roots) is done where the keys are."""
    raise ServerOnly("connect_ca")


def _scalar(resource: str, level: str) -> NeedsFn:
    return lambda cmd, store: [(resource, level, None)]


NEEDS: dict[str, NeedsFn] = {
    "register": _register,
    "deregister": _deregister,
    "kv_set": _key_write,
    "kv_lock": _key_write,
    "kv_unlock": _key_write,
    "kv_delete": _kv_delete,
    "session_create": _session_create,
    "session_destroy": _session_stored,
    "session_renew": _session_stored,
    "txn": _txn,
    "lock_checked": _lock_checked,
    "prepared_query": _prepared_query,
    "acl": _acl,
    "coordinate_batch_update": _coordinates,
    "autopilot": _autopilot,
    "raft_remove_peer": _scalar("operator", "write"),
    "raft_transfer_leader": _scalar("operator", "write"),
    "autopilot_health": _scalar("operator", "read"),
    "raft_configuration": _scalar("operator", "read"),
    "restore": _scalar("acl", "write"),
    "config_entry": _config_entry,
    "connect_ca": _connect_ca,
}


def command_needs(cmd: dict[str, Any], store: Store) -> list[Need]:
    """The permissions a forwarded command needs; ServerOnly for one no client may send."""
    kind = cmd.get("Type")
    fn = NEEDS.get(kind) if isinstance(kind, str) else None
    if fn is None:
        raise ServerOnly(str(kind))
    return fn(cmd, store)


def allowed(ident: Identity, need: Need) -> bool:
    resource, level, segment = need
    if resource == "key_prefix":
        return ident.authz.key_write_prefix(segment or "")
    return ident.authz.allowed(resource, segment or "", level)


def refusal(ident: Identity, need: Need) -> PermissionDenied:
    resource, level, segment = need
    if resource == "key_prefix":
        resource, level = "key", "write"
    return PermissionDenied(denied_text(ident.accessor, f"{resource}:{level}", segment))


class ForwardedWrites:
    """A server's check of the writes client agents forward (see the module docstring)."""

    def __init__(self, datacenter: str, default_allow: bool) -> None:
        self.resolver = Resolver(datacenter, default_allow)

    def check(self, store: Store, secret: str, cmd: dict[str, Any], now: float,
              ident: Identity | None = None) -> None:
        """Nothing when the token may make this write; PermissionDenied or ACLNotFound if not.
        `ident`: the token as resolved elsewhere (by the primary datacenter, appliance/acl/remote.py)."""
        needs = command_needs(cmd, store)
        if not needs:
            return
        if ident is None:
            ident = self.resolver.resolve(store.acl, store.watch_index.get("acl", 0), secret or "anonymous", now)
        for need in needs:
            if not allowed(ident, need):
                raise refusal(ident, need)
