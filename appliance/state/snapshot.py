"""Snapshot and restore of the whole store.

A snapshot is one msgpack document behind a version byte: the store's last index, its tables
(nodes, services, checks, KV entries, tombstones) and its watch indexes. Restoring builds a new
store from it and rebuilds the derived indexes (service-name index, sorted KV keys); Raft uses
this to compact its log and to bring a lagging follower up to date. Restoring does not touch the
bytes of KV values (they stay bytes).
"""

from __future__ import annotations

from typing import Any

import msgpack

from appliance.state.store import Store

SNAPSHOT_VERSION = 1


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
    }
    return bytes([SNAPSHOT_VERSION]) + msgpack.packb(doc, use_bin_type=True)


def restore(data: bytes) -> Store:
    if not data or data[0] != SNAPSHOT_VERSION:
        raise SnapshotError(f"unsupported snapshot version {data[:1]!r}")
    try:
        doc = msgpack.unpackb(data[1:], raw=False)
    except (ValueError, msgpack.UnpackException) as err:
        raise SnapshotError(f"corrupt snapshot: {err}") from err
    store = Store()
    store.last_index = doc["last_index"]
    for node in doc["nodes"]:
        store.nodes[node["Node"].lower()] = node
    for node_key, svcs in doc["services"]:
        store.services[node_key] = {svc["ID"]: svc for svc in svcs}
        for svc in svcs:
            store.index_service(node_key, svc)
    for node_key, checks in doc["checks"]:
        store.checks[node_key] = {check["CheckID"]: check for check in checks}
    for entry in doc["kv"]:
        store.kv[entry["Key"]] = entry
    store.kv_keys = sorted(store.kv)
    store.tombstones = dict(doc["tombstones"])
    store.watch_index = dict(doc["watch_index"])
    store.autopilot = doc.get("autopilot")  # absent in snapshots written before it existed
    for rec in doc.get("coordinates", ()):  # likewise
        store.coordinates[rec["Node"].lower()] = rec
    return store
