"""Snapshot and restore of the whole store.

A snapshot is one msgpack document behind a version byte: the store's last index, its tables
(nodes, services, checks, KV entries, tombstones, sessions, prepared queries, ACLs, the
Connect CA and config entries) and its watch indexes. Restoring builds a new store from it, shares
the records' repeated values as the FSM does (appliance/state/shapes.py) and rebuilds the derived
indexes (service-name index, sorted KV keys); Raft uses this to compact its log and to bring a
lagging follower up to date. Restoring does not touch the bytes of KV values (they stay bytes).

KV keys are byte strings and need not be UTF-8: such a key is held with one lone surrogate per
byte outside UTF-8 (see appliance/http/handlers/kv.py), and msgpack writes it back as those exact
bytes in a str ("surrogateescape" both ways), so a snapshot never merges two keys. Nothing else in
the store can hold such text; `foreign_text` finds it in a snapshot that came from outside.
"""

from __future__ import annotations

from typing import Any

import msgpack

from appliance.state import sessions, watchkeys
from appliance.state.acl import AclTables
from appliance.state.connect import ConnectTables
from appliance.state.shapes import Shapes, text
from appliance.state.store import Record, Store

SNAPSHOT_VERSION = 1
_TEXT = "surrogateescape"  # KV keys keep their bytes (module docstring)


class SnapshotError(ValueError):
    """A snapshot that cannot be read (wrong version, corrupt)."""


def snapshot(store: Store) -> bytes:
    doc: dict[str, Any] = {
        "last_index": store.last_index,
        "nodes": list(store.nodes.values()),
        "services": [[node_key, list(svcs.values())] for node_key, svcs in store.services.items()],
        "checks": [[node_key, list(checks.values())] for node_key, checks in store.checks.items()],
        "kv": list(store.kv.values()),
        "tombstones": store.tombstones,
        "watch_index": store.watch_index,
        "autopilot": store.autopilot,
        "coordinates": list(store.coordinates.values()),
        "sessions": list(store.sessions.values()),
        "lock_released": store.lock_released,
        "prepared_queries": list(store.prepared_queries.values()),
        "acl": store.acl.dump(),
        "connect": store.connect.dump(),
    }
    data: bytes
    try:  # strict first: msgpack's fast path (with an error handler it encodes each string apart)
        data = msgpack.packb(doc, use_bin_type=True)
    except UnicodeEncodeError:  # a KV key holding bytes outside UTF-8
        data = msgpack.packb(doc, use_bin_type=True, unicode_errors=_TEXT)
    return bytes([SNAPSHOT_VERSION]) + data


def restore(data: bytes) -> Store:
    if not data or data[0] != SNAPSHOT_VERSION:
        raise SnapshotError(f"unsupported snapshot version {data[:1]!r}")
    try:
        doc = msgpack.unpackb(data[1:], raw=False, unicode_errors=_TEXT)
    except (ValueError, msgpack.UnpackException) as err:
        raise SnapshotError(f"corrupt snapshot: {err}") from err
    try:
        return _tables(doc)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:  # wrong shape
        raise SnapshotError(f"corrupt snapshot: {type(err).__name__}: {err}") from None


def _tables(doc: Any) -> Store:
    store = Store()
    store.last_index = doc["last_index"]
    shapes = store.shapes  # records share their repeated values, as the FSM's do (shapes.py)
    for node in doc["nodes"]:
        store.nodes[text(node["Node"].lower())] = shapes.node(node)
    for node_key, svcs in doc["services"]:
        node_key = text(node_key)
        store.services[node_key] = {svc["ID"]: shapes.service(svc) for svc in svcs}
        for svc in svcs:
            store.index_service(node_key, svc)
    for node_key, checks in doc["checks"]:
        services = store.services.get(node_key, {})
        store.checks[text(node_key)] = {check["CheckID"]: _check(shapes, check, services) for check in checks}
    for entry in doc["kv"]:
        store.kv[entry["Key"]] = entry
    store.kv_keys = sorted(store.kv)
    store.tombstones = dict(doc["tombstones"])
    store.watch_index = dict(doc["watch_index"])
    store.autopilot = doc.get("autopilot")  # absent in snapshots written before it existed
    for rec in doc.get("coordinates", ()):  # likewise
        store.coordinates[rec["Node"].lower()] = rec
    for rec in doc.get("sessions", ()):  # likewise
        store.sessions[rec["ID"]] = rec
    store.lock_released = dict(doc.get("lock_released", {}))
    for rec in doc.get("prepared_queries", ()):  # likewise
        store.prepared_queries[rec["ID"]] = rec
    store.acl = AclTables.load(doc.get("acl"))  # absent before ACLs existed
    store.connect = ConnectTables.load(doc.get("connect"))  # absent before Connect existed
    sessions.rebuild(store)
    return store


def _check(shapes: Shapes, check: Record, services: dict[str, Record]) -> Record:
    """A restored check sharing its values, and its service's ID string as the FSM stamps it."""
    sid = check.get("ServiceID")
    svc = services.get(sid) if type(sid) is str and sid else None
    if svc is not None:
        check["ServiceID"] = svc["ID"]
    return shapes.check(check)


def _has_surrogate(value: Any) -> bool:
    stack = [value]  # a loop, not recursion: a snapshot from outside may nest hundreds deep
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")  # only a lone surrogate cannot be encoded
                except UnicodeEncodeError:
                    return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return False


def foreign_text(store: Store) -> str | None:
    """Where a restored store holds text that is not UTF-8 outside KV keys (which may: they are
    bytes), or None. Only a snapshot from outside (`PUT /v1/snapshot`) can: names and the other
    text fields come from JSON and gossip, always UTF-8, and JSON output cannot render them."""
    tables: dict[str, Any] = {
        "nodes": store.nodes, "services": store.services, "checks": store.checks,
        "coordinates": store.coordinates, "autopilot": store.autopilot, "sessions": store.sessions,
        "prepared queries": store.prepared_queries,
        "watch indexes": {k: v for k, v in store.watch_index.items() if not watchkeys.is_kv(k)},
    }
    for name, table in tables.items():
        if _has_surrogate(table):
            return name
    if any(_has_surrogate({k: v for k, v in entry.items() if k != "Key"}) for entry in store.kv.values()):
        return "kv"
    return None
