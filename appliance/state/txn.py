"""Transactions (`PUT /v1/txn`): every operation applied at one index, all of them or none.

How it works
------------
`apply` runs the operations in order against the store, each seeing the effects of the ones
before it (reference/coordination.md §3). An operation that fails records `{"OpIndex", "What"}`
with Consul's text and the others still run, so every failing operation is reported; if any
failed, the store is put back as it was before the first one and the result is
`{"Results": None, "Errors": [...]}`. Otherwise `{"Results": [...], "Errors": None}`: a write's
result is its entry without the value, a `get` the full entry, `get-tree` one result per entry,
deletes and `check-not-exists` none.

What is saved to put the store back: for KV operations only, the entries, tombstones and watch
indexes of the keys they name (and of the keys under a delete-tree's prefix) and the held-key sets
of the sessions involved, so a transaction costs what its keys cost; with a node, service or
check operation, which may cascade (services, checks, sessions, their keys), a shallow copy of
the tables, O(size of the store).

`read` runs a transaction of reads only (no write verb) against the store without the log.

Node, service and check operations go through the FSM's catalog writes (`Catalog`), so they
invalidate sessions exactly as a register or deregister does. Pure functions over the store; no
I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from appliance.state import kv, watchkeys
from appliance.state.commands import HEALTH_CHECK, NODE_SERVICE, CommandError
from appliance.state.sessions import SessionError
from appliance.state.store import Record, Store, _k

KV_WRITES = frozenset({"set", "delete", "delete-cas", "delete-tree", "cas", "lock", "unlock"})
_SAVED = ("nodes", "kv", "kv_keys", "tombstones", "watch_index", "coordinates", "sessions", "lock_delays",
          "lock_released", "_touched")
_NESTED = ("services", "checks", "service_index", "session_checks", "node_sessions", "session_keys")


class TxnOpError(ValueError):
    """One operation failed (its `What`)."""


class Catalog(Protocol):
    """The FSM's catalog writes (fsm.py), which keep sessions and watch keys right."""

    def _apply_register(self, index: int, cmd: dict[str, Any]) -> bool: ...

    def _apply_deregister(self, index: int, cmd: dict[str, Any]) -> bool: ...

    def _put_service(self, index: int, node_key: str, svc: Record) -> None: ...

    def _put_check(self, index: int, node_key: str, node_name: str, check: Record) -> None: ...


def is_write(op: dict[str, Any]) -> bool:
    """Does this operation write (Consul counts the KV write verbs and every non-get catalog verb)?"""
    for kind, body in op.items():
        verb = body.get("Verb", "")
        return verb in KV_WRITES if kind == "KV" else verb != "get"
    return False


def _save(s: Store) -> dict[str, Any]:
    saved = {name: getattr(s, name).copy() for name in _SAVED}
    for name in _NESTED:
        saved[name] = {k: v.copy() for k, v in getattr(s, name).items()}
    return saved


def _save_kv(s: Store, ops: list[dict[str, Any]]) -> Callable[[], None]:
    """For a transaction of KV operations only: save what it can change (its keys, the keys under
    its delete-tree prefixes, their holders) and return what puts it back. O(the keys touched)."""
    keys: set[str] = set()
    holders: set[str] = set()
    for op in ops:
        body = op["KV"]
        keys.add(body["Key"])
        if body["Verb"] == "delete-tree":
            keys.update(s.kv_prefix_keys(body["Key"]))
        if body.get("Session"):
            holders.add(body["Session"])
    entries = {k: (s.kv.get(k), s.tombstones.get(k), s.lock_released.get(k), s.watch_index.get(watchkeys.kv(k)))
               for k in keys}
    holders.update(rec["Session"] for rec, _, _, _ in entries.values() if rec is not None and rec.get("Session"))
    held = {sid: set(s.session_keys[sid]) if sid in s.session_keys else None for sid in holders}
    tables = {k: s.watch_index.get(k) for k in (watchkeys.KVS, watchkeys.TOMBSTONES)}
    touched = set(s._touched)

    def put_back() -> None:
        for key, (rec, tomb, released, watched) in entries.items():
            _restore(s.kv, key, rec)
            _restore(s.tombstones, key, tomb)
            _restore(s.lock_released, key, released)
            _restore(s.watch_index, watchkeys.kv(key), watched)
            if rec is None:
                s.kv_remove_key(key)
            else:
                s.kv_insert_key(key)
        for sid, keys_held in held.items():
            _restore(s.session_keys, sid, keys_held)
        for name, value in tables.items():
            _restore(s.watch_index, name, value)
        s._touched = touched

    return put_back


def _restore(table: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def apply(catalog: Catalog, s: Store, index: int, ops: list[dict[str, Any]],
          checked: int | None = None) -> dict[str, Any]:
    """`checked`: the applied index at which the leader checked lock-delays (kv.lock)."""
    if all("KV" in op for op in ops):
        put_back = _save_kv(s, ops)
    else:
        saved = _save(s)

        def put_back() -> None:
            for name, value in saved.items():
                setattr(s, name, value)

    results, errors = _run(catalog, s, index, ops, checked)
    if errors:
        put_back()
        return {"Results": None, "Errors": errors}
    return {"Results": results, "Errors": None}


def read(s: Store, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction without writes, against the store as it is (no log entry)."""
    results, errors = _run(None, s, 0, ops)
    if errors:
        return {"Results": None, "Errors": errors}
    return {"Results": results, "Errors": None}


def _run(catalog: Catalog | None, s: Store, index: int, ops: list[dict[str, Any]],
         checked: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, op in enumerate(ops):
        try:
            if not op:
                raise TxnOpError("no operation specified")
            kind, body = next(iter(op.items()))
            if kind == "KV":
                results.extend(_kv(s, index, body, checked))
            elif catalog is None and body.get("Verb") != "get":
                raise TxnOpError(f"{kind} write in a read-only transaction")
            elif kind == "Node":
                results.extend(_node(catalog, s, index, body))
            elif kind == "Service":
                results.extend(_service(catalog, s, index, body))
            elif kind == "Check":
                results.extend(_check(catalog, s, index, body))
            else:
                raise TxnOpError("no operation specified")
        except (TxnOpError, CommandError, kv.KVError, SessionError) as err:
            errors.append({"OpIndex": i, "What": str(err)})
    return results, errors


def _no_value(rec: Record) -> dict[str, Any]:
    return {"KV": {**rec, "Value": None}}


def _kv(s: Store, index: int, op: dict[str, Any], checked: int | None = None) -> list[dict[str, Any]]:
    verb, key = op["Verb"], op["Key"]
    value, flags, want, session = op.get("Value"), op.get("Flags", 0), op.get("Index", 0), op.get("Session", "")
    if verb == "set":
        return [_no_value(kv.set_entry(s, index, key, value, flags))]
    if verb == "cas":
        rec = kv.cas(s, index, key, value, flags, want)
        if rec is None:
            raise TxnOpError(f'failed to set key "{key}", index is stale')
        return [_no_value(rec)]
    if verb == "lock":
        if checked is not None and s.lock_released.get(key, 0) > checked:
            raise TxnOpError(f'failed to lock key "{key}" due to lock delay')
        rec = kv.lock(s, index, key, value, flags, session)
        if rec is None:
            raise TxnOpError(f'failed to lock key "{key}", lock is already held')
        return [_no_value(rec)]
    if verb == "unlock":
        rec = kv.unlock(s, index, key, value, flags, session)
        if rec is None:
            raise TxnOpError(f'failed to unlock key "{key}", lock isn\'t held, or is held by another session')
        return [_no_value(rec)]
    if verb == "get":
        got = s.kv.get(key)
        if got is None:
            raise TxnOpError(f'key "{key}" doesn\'t exist')
        return [{"KV": got}]
    if verb == "get-tree":
        return [{"KV": s.kv[k]} for k in s.kv_prefix_keys(key)]
    if verb == "check-index":
        got = s.kv.get(key)
        if got is None:
            raise TxnOpError(f'failed to check index, key "{key}" doesn\'t exist')
        if got["ModifyIndex"] != want:
            raise TxnOpError(f'failed index check for key "{key}", current modify index {got["ModifyIndex"]} != {want}')
        return [_no_value(got)]
    if verb == "check-session":
        got = s.kv.get(key)
        if got is None:
            raise TxnOpError(f'failed to check session, key "{key}" doesn\'t exist')
        if got.get("Session", "") != session:
            raise TxnOpError(f'failed session check for key "{key}", current session "{got.get("Session", "")}" '
                             f'!= "{session}"')
        return [_no_value(got)]
    if verb == "check-not-exists":
        if key in s.kv:
            raise TxnOpError(f'key "{key}" exists')
        return []
    if verb == "delete":
        kv.remove(s, index, key)
        return []
    if verb == "delete-tree":
        kv.delete_tree(s, index, key)
        return []
    if verb == "delete-cas":
        if not kv.delete_cas(s, index, key, want):
            raise TxnOpError(f'failed to delete key "{key}", index is stale')
        return []
    raise TxnOpError(f'unknown KV verb "{verb}"')


# ---------------------------------------------------------------------------------- catalog


def _find_node(s: Store, node: dict[str, Any]) -> Record | None:
    """By ID when one is given, else by name (Consul's getNodeTxn / getNodeIDTxn)."""
    if node.get("ID"):
        for rec in s.nodes.values():
            if rec["ID"].lower() == node["ID"].lower():
                return rec
        return None
    return s.nodes.get(_k(node["Node"]))


def _node(catalog: Any, s: Store, index: int, op: dict[str, Any]) -> list[dict[str, Any]]:
    verb, node = op["Verb"], op["Node"]
    name = node["Node"]
    existing = _find_node(s, node)
    if verb == "get":
        if existing is None:
            raise TxnOpError(f'node "{name}" doesn\'t exist')
        return [{"Node": existing}]
    if verb in ("set", "cas"):
        if verb == "cas":
            want = node.get("ModifyIndex", 0)
            if (existing is None) != (want == 0) or (existing is not None and existing["ModifyIndex"] != want):
                raise TxnOpError(f'failed to set node "{name}", index is stale')
        if not name:
            raise TxnOpError("Must provide node")
        catalog._apply_register(index, {
            "Type": "register", "Node": name, "ID": node.get("ID", ""), "Address": node.get("Address", ""),
            "Datacenter": node.get("Datacenter", ""), "TaggedAddresses": node.get("TaggedAddresses"),
            "NodeMeta": node.get("Meta")})
        return [{"Node": s.nodes[_k(name)]}]
    if verb in ("delete", "delete-cas"):
        if verb == "delete-cas" and (existing is None or existing["ModifyIndex"] != node.get("ModifyIndex", 0)):
            raise TxnOpError(f'failed to delete node "{name}", index is stale')
        if existing is not None:
            catalog._apply_deregister(index, {"Type": "deregister", "Node": existing["Node"]})
        return []
    raise TxnOpError(f'unknown Node verb "{verb}"')


def _service(catalog: Any, s: Store, index: int, op: dict[str, Any]) -> list[dict[str, Any]]:
    svc = dict(op["Service"])
    node, sid = op["Node"], svc.get("ID") or svc.get("Service") or ""
    node_key = _k(node)

    def put() -> Record:
        if not NODE_SERVICE.ok(svc):
            raise TxnOpError(f'invalid service "{sid}" on node "{node}"')
        catalog._put_service(index, node_key, svc)
        return s.services[node_key][svc["ID"]]

    return _catalog_verb("Service", f'service "{sid}" on node "{node}"', op["Verb"], svc, node, s,
                         s.services.get(node_key, {}).get(sid), put,
                         lambda: catalog._apply_deregister(index, {"Type": "deregister", "Node": node,
                                                                   "ServiceID": sid}))


def _check(catalog: Any, s: Store, index: int, op: dict[str, Any]) -> list[dict[str, Any]]:
    check = dict(op["Check"])
    node, cid = check.get("Node", ""), check.get("CheckID", "")
    node_key = _k(node)

    def put() -> Record:
        if not HEALTH_CHECK.ok(check):
            raise TxnOpError(f'invalid check "{cid}" on node "{node}"')
        catalog._put_check(index, node_key, s.nodes[node_key]["Node"], check)
        return s.checks[node_key][cid]

    return _catalog_verb("Check", f'check "{cid}" on node "{node}"', op["Verb"], check, node, s,
                         s.checks.get(node_key, {}).get(cid), put,
                         lambda: catalog._apply_deregister(index, {"Type": "deregister", "Node": node,
                                                                   "CheckID": cid}))


def _catalog_verb(kind: str, what: str, verb: str, rec: dict[str, Any], node: str, s: Store,
                  existing: Record | None, put: Callable[[], Record],
                  delete: Callable[[], Any]) -> list[dict[str, Any]]:
    """A service or check verb: `rec` is the operation's record (its ModifyIndex taken out)."""
    want = rec.pop("ModifyIndex", 0)
    rec.pop("CreateIndex", None)
    if verb == "get":
        if existing is None:
            raise TxnOpError(f"{what} doesn't exist")
        return [{kind: existing}]
    if verb in ("set", "cas"):
        if verb == "cas" and ((existing is None) != (want == 0) or (
                existing is not None and existing["ModifyIndex"] != want)):
            raise TxnOpError(f"failed to set {what}, index is stale")
        if _k(node) not in s.nodes:
            raise TxnOpError(f"failed inserting {kind.lower()}: node \"{node}\" doesn't exist")
        return [{kind: put()}]
    if verb in ("delete", "delete-cas"):
        if verb == "delete-cas" and (existing is None or existing["ModifyIndex"] != want):
            raise TxnOpError(f"failed to delete {what}, index is stale")
        if existing is not None:
            delete()
        return []
    raise TxnOpError(f'unknown {kind} verb "{verb}"')
