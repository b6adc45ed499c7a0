"""The catalog and KV state store: in-memory tables, indexes and watch keys.

How it works
------------
Tables hold records in the JSON shape Consul emits (Node, NodeService, HealthCheck, DirEntry),
with `CreateIndex`/`ModifyIndex`. Records are never mutated in place: a write builds a new dict
and swaps it in, so a reader may hand a stored record straight to the encoder. The values that
repeat across records (Weights, Proxy, Tags, Meta, names) are shared read-only copies
(appliance.state.shapes): a reader that wants to change one copies it first.

Only the FSM (appliance.state.fsm) writes, and only while applying a log entry; the entry's log
index is the `ModifyIndex` of everything it touches. Every write records *watch keys* with that
index: the tables it changed, the node, the service, the KV key (appliance.state.watchkeys builds
and lists them all).

A query's index is the highest index among the keys it reads (`index_of`), never below 1, so a
blocking `health/service/web` wakes only when web's answer can have changed. KV indexes are
computed from the entries and tombstones under the prefix, as Consul does. The store is plain
synchronous Python with no I/O, clock or randomness.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

from appliance.state import watchkeys
from appliance.state.acl import AclTables
from appliance.state.connect import ConnectTables
from appliance.state.shapes import Shapes

Record = dict[str, Any]


def _k(name: str) -> str:
    """Node and service names are matched case-insensitively, like Consul's memdb indexes."""
    return name.lower()


def connect_destination(svc: Record) -> str:
    """The (lower-cased) service a connect-proxy stands for, or a Connect-native service's own name."""
    if svc.get("Kind") == "connect-proxy":
        return _k((svc.get("Proxy") or {}).get("DestinationServiceName") or "")
    if (svc.get("Connect") or {}).get("Native"):
        return _k(svc["Service"])
    return ""


def _discard(index: dict[str, set[tuple[str, str]]], key: str, member: tuple[str, str]) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]


class Store:
    def __init__(self) -> None:
        self.nodes: dict[str, Record] = {}
        self.services: dict[str, dict[str, Record]] = {}  # node key -> service ID -> NodeService
        self.checks: dict[str, dict[str, Record]] = {}  # node key -> check ID -> HealthCheck
        self.service_index: dict[str, set[tuple[str, str]]] = {}  # service name key -> {(node key, id)}
        # Connect: destination name key -> {(node key, id)} of the proxies for it and its native
        # instances; a service name key -> the destinations its instances stand for (so a change
        # to a proxy's instances or checks also wakes reads of /v1/health/connect/<destination>)
        self.connect_index: dict[str, set[tuple[str, str]]] = {}
        self.connect_of: dict[str, dict[str, int]] = {}
        self._connect_touched: set[str] = set()
        self.kv: dict[str, Record] = {}
        self.kv_keys: list[str] = []  # sorted, for prefix scans
        self.tombstones: dict[str, int] = {}  # deleted KV key -> index of the delete
        self.watch_index: dict[str, int] = {}
        self.last_index = 0
        self.autopilot: Record | None = None  # autopilot configuration (API names + indexes)
        self.coordinates: dict[str, Record] = {}  # node key -> {"Node", "Segment", "Coord", indexes}
        # sessions (appliance/state/sessions.py): ID -> Session, and the derived indexes
        self.sessions: dict[str, Record] = {}
        self.session_checks: dict[tuple[str, str], set[str]] = {}  # (node key, check ID lower) -> IDs
        self.node_sessions: dict[str, set[str]] = {}  # node key -> session IDs
        self.session_keys: dict[str, set[str]] = {}  # session ID -> the KV keys it holds
        # KV key -> end of its lock-delay on the FSM's clock; each server's own, never replicated
        self.lock_delays: dict[str, float] = {}
        # KV key -> index of the invalidation that released it with a lock-delay (replicated: a
        # lock the leader checked before it had applied that index is refused, kv.lock)
        self.lock_released: dict[str, int] = {}
        self.prepared_queries: dict[str, Record] = {}  # ID -> PreparedQuery (appliance/state/queries.py)
        self.acl = AclTables()  # tokens, policies, roles, auth methods (appliance/state/acl.py)
        self.connect = ConnectTables()  # CA, config entries (appliance/state/connect.py)
        # the values records share (Weights, Tags, Meta, ...): appliance/state/shapes.py
        self.shapes = Shapes()
        self._touched: set[str] = set()

    # ------------------------------------------------------------------ write support (FSM only)

    def begin(self) -> None:
        self._touched = set()

    def touch(self, index: int, *keys: str) -> None:
        for key in keys:
            self.watch_index[key] = index
            self._touched.add(key)
            if self.connect_of and key.startswith(watchkeys.SERVICE_PREFIX):
                for dest in self.connect_of.get(key[len(watchkeys.SERVICE_PREFIX):], ()):
                    self.watch_index[watchkeys.connect(dest)] = index
                    self._touched.add(watchkeys.connect(dest))

    def finish(self, index: int) -> set[str]:
        """Close a write: advance the store's index and return the watch keys it touched."""
        if self._connect_touched:
            self.touch(index, *(watchkeys.connect(d) for d in self._connect_touched))
            self._connect_touched = set()
        self.last_index = max(self.last_index, index)
        touched, self._touched = self._touched, set()
        return touched

    def touch_node(self, index: int, node_key: str) -> None:
        """Something about a node changed: its own answers and every service on it change."""
        name = self.nodes[node_key]["Node"] if node_key in self.nodes else node_key
        self.touch(index, watchkeys.node(name))
        for svc in self.services.get(node_key, {}).values():
            self.touch(index, watchkeys.service(svc["Service"]))

    def index_service(self, node_key: str, svc: Record) -> None:
        self.service_index.setdefault(_k(svc["Service"]), set()).add((node_key, svc["ID"]))
        dest = connect_destination(svc)
        if dest:
            self.connect_index.setdefault(dest, set()).add((node_key, svc["ID"]))
            dests = self.connect_of.setdefault(_k(svc["Service"]), {})
            dests[dest] = dests.get(dest, 0) + 1
            self._connect_touched.add(dest)

    def unindex_service(self, node_key: str, svc: Record) -> None:
        key = _k(svc["Service"])
        members = self.service_index.get(key)
        if members is not None:
            members.discard((node_key, svc["ID"]))
            if not members:
                del self.service_index[key]
        dest = connect_destination(svc)
        if dest:
            _discard(self.connect_index, dest, (node_key, svc["ID"]))
            dests = self.connect_of.get(key, {})
            dests[dest] = dests.get(dest, 1) - 1
            if dests[dest] <= 0:
                dests.pop(dest, None)
                if not dests:
                    self.connect_of.pop(key, None)
            self._connect_touched.add(dest)

    def kv_insert_key(self, key: str) -> None:
        i = bisect.bisect_left(self.kv_keys, key)
        if i == len(self.kv_keys) or self.kv_keys[i] != key:
            self.kv_keys.insert(i, key)

    def kv_remove_key(self, key: str) -> None:
        i = bisect.bisect_left(self.kv_keys, key)
        if i < len(self.kv_keys) and self.kv_keys[i] == key:
            del self.kv_keys[i]

    # ------------------------------------------------------------------ indexes

    def index_of(self, *keys: str) -> int:
        """The index a blocking query reading these watch keys reports: never 0."""
        best = 0
        for key in keys:
            best = max(best, self.watch_index.get(key, 0))
        return best or 1

    def kv_index(self, prefix: str, exact: bool = False) -> int:
        """Consul's KV index: one entry's ModifyIndex, or the max over entries and tombstones under a prefix."""
        if exact:
            entry = self.kv.get(prefix)
            if entry is not None:
                index: int = entry["ModifyIndex"]
                return index
            return max(self.watch_index.get(watchkeys.KVS, 0), self.watch_index.get(watchkeys.TOMBSTONES, 0)) or 1
        best = 0
        for key in self.kv_prefix_keys(prefix):
            best = max(best, self.kv[key]["ModifyIndex"])
        for key, index in self.tombstones.items():
            if index > best and key.startswith(prefix):
                best = index
        return best or 1

    # ------------------------------------------------------------------ catalog reads

    def node(self, name: str) -> Record | None:
        return self.nodes.get(_k(name))

    def all_nodes(self) -> list[Record]:
        return [self.nodes[k] for k in sorted(self.nodes)]

    def node_services(self, name: str) -> list[Record]:
        svcs = self.services.get(_k(name), {})
        return [svcs[i] for i in sorted(svcs)]

    def node_checks(self, name: str) -> list[Record]:
        checks = self.checks.get(_k(name), {})
        return [checks[i] for i in sorted(checks)]

    def service_instances(self, service: str) -> list[tuple[Record, Record]]:
        """(node, NodeService) pairs of a service, sorted by node name then service ID."""
        members = self.service_index.get(_k(service), ())
        out = []
        for node_key, sid in sorted(members):
            node = self.nodes.get(node_key)
            svc = self.services.get(node_key, {}).get(sid)
            if node is not None and svc is not None:
                out.append((node, svc))
        return out

    def connect_instances(self, service: str) -> list[tuple[Record, Record]]:
        """(node, NodeService) pairs able to take Connect traffic for a service: the proxies whose
        destination it is and its Connect-native instances, by node name then service ID."""
        out = []
        for node_key, sid in sorted(self.connect_index.get(_k(service), ())):
            node = self.nodes.get(node_key)
            svc = self.services.get(node_key, {}).get(sid)
            if node is not None and svc is not None:
                out.append((node, svc))
        return out

    def instance_checks(self, node: Record, svc: Record) -> list[Record]:
        """Node checks first, then the service's own checks (Consul's CheckServiceNode order)."""
        checks = self.checks.get(_k(node["Node"]), {})
        node_checks = [c for c in checks.values() if not c["ServiceID"]]
        svc_checks = [c for c in checks.values() if c["ServiceID"] == svc["ID"]]
        node_checks.sort(key=lambda c: c["CheckID"])
        svc_checks.sort(key=lambda c: c["CheckID"])
        return node_checks + svc_checks

    def service_names(self) -> dict[str, list[Record]]:
        """Service name -> its instances' NodeService records."""
        out: dict[str, list[Record]] = {}
        for node_key in sorted(self.services):
            for svc in self.services[node_key].values():
                out.setdefault(svc["Service"], []).append(svc)
        return out

    def coordinate(self, name: str) -> Record | None:
        """A node's stored network coordinate record ({"Node", "Segment", "Coord"}), or None."""
        return self.coordinates.get(_k(name))

    def all_coordinates(self) -> list[Record]:
        return [self.coordinates[k] for k in sorted(self.coordinates)]

    def iter_checks(self) -> Iterator[Record]:
        for node_key in sorted(self.checks):
            checks = self.checks[node_key]
            for cid in sorted(checks):
                yield checks[cid]

    # ------------------------------------------------------------------ KV reads

    def kv_get(self, key: str) -> Record | None:
        return self.kv.get(key)

    def kv_prefix_keys(self, prefix: str) -> Iterable[str]:
        i = bisect.bisect_left(self.kv_keys, prefix)
        keys = self.kv_keys
        while i < len(keys) and keys[i].startswith(prefix):
            yield keys[i]
            i += 1

    def kv_list(self, prefix: str) -> list[Record]:
        return [self.kv[k] for k in self.kv_prefix_keys(prefix)]

    # ------------------------------------------------------------------ session reads

    def session(self, session_id: str) -> Record | None:
        return self.sessions.get(session_id)

    def all_sessions(self) -> list[Record]:
        """Every session, ordered by ID (memdb's id index)."""
        return [self.sessions[k] for k in sorted(self.sessions)]

    def sessions_of_node(self, name: str) -> list[Record]:
        ids = self.node_sessions.get(_k(name), ())
        return [self.sessions[i] for i in sorted(ids) if i in self.sessions]
