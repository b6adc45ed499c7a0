"""The FSM: applies log entries (commands) to the store, in log order.

How it works
------------
A command is a plain dict (msgpack-able, versioned by its "Type" name; new types are only
ever added). `FSM.apply(index, command)` runs the command against the store with `index` as the
Raft index / ModifyIndex and returns `Applied(result, touched)`: the value the proposer gets
back (`True`/`False` for KV and catalog writes, or an error text) and the watch keys the write
touched, so blocking queries on them can wake.

Every command type has a definition in commands.py (the fields and their types); the leader
checks a command against it before the command enters the log. apply() checks it again before it
touches the store, then the handler checks what depends on state (a service registered onto a node
that does not exist, a check for an unknown service, a CAS index) before it writes anything, so a
command is applied whole or not at all, and applying the same log on every server gives the same
store. A failed precondition is a result (a CommandError), not an exception.

apply() never raises. An entry that cannot be applied at all (bytes that are not a command, an
unknown type, a command that does not match its definition: a log written by another version, or
one that bypassed the leader's check) and a handler that fails anyway (a bug) give an error result
for that index, built from the command type and the error only, so it is the same on every
replica; `Applied.failed` names the command type for the caller's log line and metric
(`fsm.apply_error`). After a handler failed mid-way, the derived indexes are rebuilt from the
tables and every watch key moves to this index, so the store stays usable and blocking queries
look again; then the next entry is applied as usual.

Command types:
  register    catalog register: node (unless SkipNodeUpdate), optional service, checks
  deregister  catalog deregister: a whole node, one service (and its checks), or one check
  kv_set      set a key (Verb "set" or "cas" with Index)
  kv_delete   delete a key, a prefix ("Recurse"), or compare-and-delete (Index; a missing key succeeds)
  kv_lock     acquire a key for a session (`?acquire=`), kv_unlock release it (`?release=`):
              appliance/state/kv.py
  session_create, session_destroy
              a session (its ID chosen by the proposer), and its invalidation with its held keys
              released or deleted (appliance/state/sessions.py); a check written critical or
              deleted and a node deregistered invalidate the sessions bound to them in the same
              write
  txn         /v1/txn: operations applied all or none (appliance/state/txn.py)
  prepared_query
              a prepared query set ("Op" "set", "Query" with its ID) or deleted ("Op" "delete",
              "ID"): appliance/state/queries.py; one bound to a session goes with the session
  acl         an ACL token, policy, role, auth method or binding rule written ("Op" "*_set",
              "Object") or deleted ("Op" "*_delete", "ID"), bootstrap, the built-ins ("init"):
              appliance/state/acl.py
  connect_ca  the Connect CA: a serial number ("Op" "serial"), the first configuration and root
              ("init"), a new configuration with its roots ("set", CAS on the roots), dropping
              rotated-out roots ("prune"): appliance/state/connect.py
  config_entry
              a config entry set ("Op" "set", "Entry") or deleted, CAS on its ModifyIndex
  autopilot   set the autopilot configuration ("Config", API names); "CAS" compares ModifyIndex,
              "Init" sets it only if none is stored (the leader seeds it from the config file)
  coordinate_batch_update
              network coordinates ("Updates": [{"Node", "Segment", "Coord"}]) that the leader
              batched from Coordinate.Update requests; updates for unknown nodes are dropped
              (a node's coordinate goes away with the node, as in Consul's state store)
  restore     replace the whole store by a snapshot ("State", appliance/state/snapshot.py bytes):
              PUT /v1/snapshot. Every watch key, old and new, moves to this entry's index, so
              every blocking query wakes and sees an index larger than the one it waited on.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.state import acl, connect, kv, queries, sessions, txn, watchkeys
from appliance.state.commands import (
    COMMANDS,
    Command,
    CommandError,
    InvalidCommand,
    UndecodableCommand,
    command_type,
    decode_command,
    validate,
)
from appliance.state.shapes import FrozenList
from appliance.state.snapshot import SnapshotError, restore
from appliance.state.store import Record, Store, _k

__all__ = ["FSM", "Applied", "ApplyFailed", "CommandError"]


class ApplyFailed(CommandError):
    """A handler failed on a valid command (a bug): the proposer gets this, the entry is skipped."""

    def __init__(self, command_type: str, err: BaseException) -> None:
        self.command_type = command_type
        # no addresses: the text is the same on every replica
        detail = re.sub(r"0x[0-9a-fA-F]+", "0x?", str(err))[:300]
        super().__init__(f"cannot apply {command_type} command: {type(err).__name__}: {detail}")


@dataclass
class Applied:
    result: Any
    touched: set[str] = field(default_factory=set)
    command: Command | None = None  # the command applied (None: the entry could not be decoded)
    failed: str = ""  # the command type (bounded label) of an entry that could not be applied at all


def _node_record(cmd: dict[str, Any], index: int, prev: Record | None) -> Record:
    return {
        "ID": cmd.get("ID") or "",
        "Node": cmd["Node"],
        "Address": cmd.get("Address") or "",
        "Datacenter": cmd.get("Datacenter") or "",
        "TaggedAddresses": cmd.get("TaggedAddresses"),
        "Meta": cmd.get("NodeMeta"),
        "CreateIndex": prev["CreateIndex"] if prev else index,
        "ModifyIndex": index,
    }


_NODE_FIELDS = ("ID", "Address", "TaggedAddresses", "Meta")


def _same_node(a: Record, b: Record) -> bool:
    return all(a.get(f) == b.get(f) for f in _NODE_FIELDS)


def _same_record(a: Record, b: Record) -> bool:
    return {k: v for k, v in a.items() if not k.endswith("Index")} == {
        k: v for k, v in b.items() if not k.endswith("Index")
    }


class FSM:
    def __init__(self, store: Store, clock: Callable[[], float] | None = None) -> None:
        self.store = store
        # the server's own clock for lock-delays (sessions.py); None: no lock-delay is recorded
        self.clock = clock
        # one handler per command definition (a definition without one fails here, loudly)
        self._handlers = {kind: getattr(self, "_apply_" + kind) for kind in COMMANDS}

    def apply_entry(self, index: int, data: Any, *, checked: bool = False) -> Applied:
        """Decode a log entry's command and apply it (see apply); bytes that are not a command
        give an error result."""
        try:
            command = decode_command(data)
        except UndecodableCommand as err:
            self.store.begin()
            return Applied(err, self.store.finish(index), None, UndecodableCommand.command_type)
        return self.apply(index, command, checked=checked)

    def apply(self, index: int, command: Command, *, checked: bool = False) -> Applied:
        """Apply one command at `index`; never raises (the module docstring says what it returns).

        `checked`: this process validated the command before encoding it into this entry (the
        leader's own proposal, same index and term), so the check is not repeated. The codec keeps
        a valid command valid, so the outcome is the one every other replica gets."""
        store = self.store
        store.begin()
        kind = command_type(command) if checked else "unknown"
        try:
            if kind == "unknown":
                kind = validate(command)
        except InvalidCommand as err:
            return Applied(err, store.finish(index), command, command_type(command))
        except Exception as err:  # noqa: BLE001 - a bug in a check: refuse the entry, go on
            kind = command_type(command)
            return Applied(ApplyFailed(kind, err), store.finish(index), command, kind)
        try:
            result: Any = self._handlers[kind](index, command)
        except CommandError as err:  # a precondition, checked before anything was written
            result = err
        except Exception as err:  # noqa: BLE001 - a bug must not stop Raft: skip the entry
            self._repair(index)
            return Applied(ApplyFailed(kind, err), store.finish(index), command, kind)
        return Applied(result, store.finish(index), command)

    def _repair(self, index: int) -> None:
        """After a handler failed mid-way: make the derived indexes agree with the tables again,
        drop what belongs to a node that is gone, and move every watch key to `index` (blocking
        queries look again). Deterministic: every replica that applied the same log repairs the
        same way."""
        s = self.store
        for table in (s.services, s.checks, s.coordinates):
            for node_key in [k for k in table if k not in s.nodes]:
                del table[node_key]
        s.service_index = {}
        for node_key, services in s.services.items():
            for svc in services.values():
                s.index_service(node_key, svc)
        s.kv_keys = sorted(s.kv)
        for sid in [sid for sid, rec in s.sessions.items() if _k(rec["Node"]) not in s.nodes]:
            del s.sessions[sid]
        sessions.rebuild(s)
        s.touch(index, *list(s.watch_index))

    def _now(self) -> float | None:
        return self.clock() if self.clock is not None else None

    # ------------------------------------------------------------------ catalog

    def _apply_register(self, index: int, cmd: dict[str, Any]) -> bool:
        s = self.store
        node_key = sys.intern(_k(cmd["Node"]))  # one string for every index holding the node
        prev = s.nodes.get(node_key)
        if cmd.get("SkipNodeUpdate") and prev is None:
            raise CommandError(f'Node "{cmd["Node"]}" does not exist')
        svc = cmd.get("Service")
        checks = cmd.get("Checks") or ()
        if checks:  # every precondition before the first write: all or nothing
            services = s.services.get(node_key, {})
            for check in checks:
                sid = check.get("ServiceID") or ""
                if sid and sid not in services and not (svc and svc["ID"] == sid):
                    raise CommandError(f'Unknown service ID "{sid}" for check ID "{check["CheckID"]}"')
        if not cmd.get("SkipNodeUpdate") or prev is None:
            rec = _node_record(cmd, index, prev)
            if prev is None or not _same_node(prev, rec):
                s.nodes[node_key] = s.shapes.node(rec)
                s.touch(index, watchkeys.NODES)
                s.touch_node(index, node_key)
        node_name = s.nodes[node_key]["Node"]
        if svc:
            self._put_service(index, node_key, svc)
        for check in checks:
            self._put_check(index, node_key, node_name, check)
        return True

    def _put_service(self, index: int, node_key: str, svc: Record) -> None:
        s = self.store
        services = s.services.setdefault(node_key, {})
        prev = services.get(svc["ID"])
        rec = s.shapes.service(dict(svc))
        rec["CreateIndex"] = prev["CreateIndex"] if prev else index
        rec["ModifyIndex"] = index
        if prev is not None and _same_record(prev, rec):
            return
        if prev is not None:
            s.unindex_service(node_key, prev)
            s.touch(index, watchkeys.service(prev["Service"]))
        services[svc["ID"]] = rec
        s.index_service(node_key, rec)
        s.touch(index, watchkeys.SERVICES, watchkeys.service(rec["Service"]), watchkeys.node(node_key))
        # A check keeps its service's name and tags (HealthCheck.ServiceName/ServiceTags); a new
        # service has no checks yet, and one whose name and tags stay has none to change.
        if prev is None or (prev["Service"] == rec["Service"] and prev["Tags"] == rec["Tags"]):
            return
        for check in list(s.checks.get(node_key, {}).values()):
            if check["ServiceID"] == rec["ID"] and (
                check["ServiceName"] != rec["Service"] or check["ServiceTags"] != rec["Tags"]
            ):
                self._put_check(index, node_key, s.nodes[node_key]["Node"], dict(check))

    def _put_check(self, index: int, node_key: str, node_name: str, check: Record) -> None:
        s = self.store
        checks = s.checks.setdefault(node_key, {})
        prev = checks.get(check["CheckID"])
        rec = dict(check)
        rec["Node"] = node_name
        sid = rec.get("ServiceID") or ""
        if sid:
            svc = s.services.get(node_key, {}).get(sid)
            if svc is None:
                raise CommandError(f'Unknown service ID "{sid}" for check ID "{rec["CheckID"]}"')
            rec["ServiceID"] = svc["ID"]  # the service's own strings and (read-only) tags
            rec["ServiceName"] = svc["Service"]
            rec["ServiceTags"] = svc["Tags"] if type(svc["Tags"]) is FrozenList else list(svc["Tags"] or [])
        s.shapes.check(rec)
        rec["CreateIndex"] = prev["CreateIndex"] if prev else index
        rec["ModifyIndex"] = index
        sessions.check_written(s, index, node_key, rec, self._now())  # critical, even unchanged
        if prev is not None and _same_record(prev, rec):
            return
        checks[rec["CheckID"]] = rec
        self._touch_check(index, node_key, rec, prev)

    def _touch_check(self, index: int, node_key: str, rec: Record, prev: Record | None) -> None:
        s = self.store
        s.touch(index, watchkeys.CHECKS, watchkeys.node(node_key))
        for check in (rec, prev):
            if check is None:
                continue
            if check["ServiceName"]:
                s.touch(index, watchkeys.service(check["ServiceName"]))
            else:  # a node check changes every instance on the node
                s.touch_node(index, node_key)

    def _apply_deregister(self, index: int, cmd: dict[str, Any]) -> bool:
        s = self.store
        node_key = _k(cmd["Node"])
        if node_key not in s.nodes:
            return True
        if cmd.get("ServiceID"):
            self._delete_service(index, node_key, cmd["ServiceID"])
        elif cmd.get("CheckID"):
            self._delete_check(index, node_key, cmd["CheckID"])
        else:
            for sid in list(s.services.get(node_key, {})):
                self._delete_service(index, node_key, sid)
            for cid in list(s.checks.get(node_key, {})):
                self._delete_check(index, node_key, cid)
            sessions.node_deleted(s, index, node_key, self._now())
            s.touch_node(index, node_key)
            s.touch(index, watchkeys.NODES)
            if s.coordinates.pop(node_key, None) is not None:
                s.touch(index, watchkeys.COORDINATES)
            del s.nodes[node_key]
            s.services.pop(node_key, None)
            s.checks.pop(node_key, None)
        return True

    def _delete_service(self, index: int, node_key: str, sid: str) -> None:
        s = self.store
        svc = s.services.get(node_key, {}).pop(sid, None)
        if svc is None:
            return
        s.unindex_service(node_key, svc)
        s.touch(index, watchkeys.SERVICES, watchkeys.service(svc["Service"]), watchkeys.node(node_key))
        for cid, check in list(s.checks.get(node_key, {}).items()):
            if check["ServiceID"] == sid:
                self._delete_check(index, node_key, cid)

    def _delete_check(self, index: int, node_key: str, cid: str) -> None:
        check = self.store.checks.get(node_key, {}).pop(cid, None)
        if check is not None:
            sessions.check_deleted(self.store, index, node_key, cid, self._now())
            self._touch_check(index, node_key, check, None)

    # ------------------------------------------------------------------ KV

    def _apply_kv_set(self, index: int, cmd: dict[str, Any]) -> bool:
        key, value, flags = cmd["Key"], cmd.get("Value"), cmd.get("Flags", 0)
        if cmd.get("Verb") == "cas":
            return kv.cas(self.store, index, key, value, flags, cmd["Index"]) is not None
        kv.set_entry(self.store, index, key, value, flags)
        return True

    def _apply_kv_delete(self, index: int, cmd: dict[str, Any]) -> bool:
        s = self.store
        key = cmd["Key"]
        if cmd.get("Recurse"):
            kv.delete_tree(s, index, key)
        elif "Index" in cmd:
            return kv.delete_cas(s, index, key, cmd["Index"])
        else:
            kv.remove(s, index, key)
        return True

    def _apply_kv_lock(self, index: int, cmd: dict[str, Any]) -> bool:
        checked = cmd.get("Checked")

        def lock(s: Store, index: int, key: str, value: Any, flags: int, session: str) -> Record | None:
            return kv.lock(s, index, key, value, flags, session, checked)

        return self._lock_verb(lock, index, cmd)

    def _apply_kv_unlock(self, index: int, cmd: dict[str, Any]) -> bool:
        return self._lock_verb(kv.unlock, index, cmd)

    def _lock_verb(self, verb: Callable[..., Record | None], index: int, cmd: dict[str, Any]) -> bool:
        try:
            rec = verb(self.store, index, cmd["Key"], cmd.get("Value"), cmd.get("Flags", 0), cmd["Session"])
            return rec is not None
        except kv.KVError as err:
            raise CommandError(str(err)) from None

    # ------------------------------------------------------------------ sessions, transactions

    def _apply_session_create(self, index: int, cmd: dict[str, Any]) -> str:
        try:
            sessions.create(self.store, index, cmd["Session"])
        except sessions.SessionError as err:
            raise CommandError(str(err)) from None
        return str(cmd["Session"]["ID"])

    def _apply_session_destroy(self, index: int, cmd: dict[str, Any]) -> bool:
        sessions.destroy(self.store, index, cmd["ID"], self._now())
        return True

    def _apply_txn(self, index: int, cmd: dict[str, Any]) -> dict[str, Any]:
        return txn.apply(self, self.store, index, cmd["Ops"], cmd.get("Checked"))

    def _apply_prepared_query(self, index: int, cmd: dict[str, Any]) -> bool:
        if cmd["Op"] == "delete":
            return queries.delete_query(self.store, index, cmd["ID"])
        try:
            queries.set_query(self.store, index, cmd["Query"])
        except queries.QueryStoreError as err:
            raise CommandError(str(err)) from None
        return True

    def _apply_acl(self, index: int, cmd: dict[str, Any]) -> Any:
        try:
            return acl.apply(self.store, index, cmd)
        except acl.AclStoreError as err:
            raise CommandError(str(err)) from None

    def _apply_connect_ca(self, index: int, cmd: dict[str, Any]) -> Any:
        try:
            return connect.apply_ca(self.store, index, cmd)
        except connect.ConnectStoreError as err:
            raise CommandError(str(err)) from None

    def _apply_config_entry(self, index: int, cmd: dict[str, Any]) -> bool:
        return connect.apply_entry(self.store, index, cmd)

    # ------------------------------------------------------------------ coordinates

    def _apply_coordinate_batch_update(self, index: int, cmd: dict[str, Any]) -> bool:
        s = self.store
        changed = False
        for update in cmd.get("Updates") or ():
            node_key = _k(update["Node"])
            node = s.nodes.get(node_key)
            if node is None:
                continue
            prev = s.coordinates.get(node_key)
            s.coordinates[node_key] = {"Node": node["Node"], "Segment": update.get("Segment") or "",
                                       "Coord": update["Coord"], "CreateIndex": prev["CreateIndex"] if prev else index,
                                       "ModifyIndex": index}
            changed = True
        if changed:
            s.touch(index, watchkeys.COORDINATES)
        return True

    # ------------------------------------------------------------------ operator

    def _apply_autopilot(self, index: int, cmd: dict[str, Any]) -> bool:
        s = self.store
        prev = s.autopilot
        if cmd.get("Init") and prev is not None:
            return False
        if "CAS" in cmd and (prev["ModifyIndex"] if prev else 0) != cmd["CAS"]:
            return False
        s.autopilot = {**cmd["Config"], "CreateIndex": prev["CreateIndex"] if prev else index, "ModifyIndex": index}
        s.touch(index, watchkeys.AUTOPILOT)
        return True

    def _apply_restore(self, index: int, cmd: dict[str, Any]) -> bool:
        s = self.store
        try:
            restored = restore(cmd["State"])
        except (SnapshotError, KeyError, TypeError, ValueError) as err:
            raise CommandError(f"cannot restore snapshot: {err}") from None
        keys = set(s.watch_index) | set(restored.watch_index)
        delays = s.lock_delays  # each server's own, not in snapshots: kept across a restore
        vars(s).clear()
        vars(s).update(vars(restored))  # in place: HTTP, DNS and the driver keep their reference
        s.lock_delays = delays
        s.begin()
        s.touch(index, *keys)
        return True
