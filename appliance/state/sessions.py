"""Sessions in the store: create, destroy, and invalidation with what it does to held locks.

How it works
------------
A session (reference/coordination.md §1.1) is stored as Consul renders it: ID, Name, Node,
LockDelay (ns), Behavior, TTL (the string given), NodeChecks, ServiceChecks, Checks (the legacy
list, only when given), CreateIndex = ModifyIndex (sessions are never updated; a renew changes
nothing here). Derived indexes map a (node, check) and a node to the sessions bound to them, and a
session to the KV keys it holds (appliance/state/kv.py keeps that one).

Creation checks, at apply, what Consul's state store checks: the node is registered (`Missing
node registration`), every linked check exists on it (`Missing check '<id>' registration`) and is
not critical (`Check '<id>' is in critical state`).

Invalidation (`destroy`, §1.3-1.4) runs inside the write that causes it, at its index: an
explicit destroy or a TTL expiry (`session_destroy` command), a linked check written critical or
deleted, the session's node deregistered (fsm.py calls `check_written`, `check_deleted`,
`node_deleted`). The session row goes; every key it holds is released (Session cleared, value,
flags and LockIndex kept, ModifyIndex = the index) or deleted (Behavior "delete"); the prepared
queries bound to it are deleted (appliance/state/queries.py); and if the
session has a lock-delay (at most 60 s) each of those keys gets one, measured on the clock
the FSM was given (`now`): that table is each server's own, used only by the leader's check
before a lock is proposed, and not part of snapshots (Consul's lockDelay). The index of the
invalidation is kept too (`lock_released`, replicated): a lock the leader checked at an earlier
applied index (`Checked`) cannot have seen that lock-delay, and is refused when it applies, so an
invalidation still in flight when the leader looked cannot let a lock through early (Consul has
that gap). Pure functions over the store; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from appliance.state import kv, queries, watchkeys
from appliance.state.store import Record, Store, _k

MAX_LOCK_DELAY_NS = 60 * 1_000_000_000
KEEP_DELAYS = 256  # lock-delay entries kept before old ones are dropped
# A lock checked before a release is appended right after its check, so it applies within a few
# entries of it: a release this many entries old can no longer refuse one (kv.lock's Checked).
RELEASED_HORIZON = 10_000
BEHAVIORS = ("release", "delete")


class SessionError(ValueError):
    """A session that cannot be created (Consul's state-store texts)."""


def check_ids(sess: Record) -> list[str]:
    """Session.CheckIDs(): the legacy Checks, NodeChecks and ServiceChecks' IDs, in that order."""
    out: list[str] = []
    for cid in (*(sess.get("Checks") or ()), *(sess.get("NodeChecks") or ()),
                *(c.get("ID", "") for c in sess.get("ServiceChecks") or ())):
        if cid not in out:
            out.append(cid)
    return out


def create(s: Store, index: int, sess: Record) -> None:
    """Insert a session (its fields as the command carries them); SessionError if it cannot be."""
    sid = sess["ID"]
    if sid in s.sessions:
        raise SessionError(f"Session ID '{sid}' already exists")
    if sess.get("Behavior", "release") not in BEHAVIORS:
        raise SessionError(f"Invalid session behavior: {sess['Behavior']}")
    node_key = _k(sess["Node"])
    node = s.nodes.get(node_key)
    if node is None:
        raise SessionError("Missing node registration")
    checks = s.checks.get(node_key, {})
    ids = check_ids(sess)
    for cid in ids:
        check = checks.get(cid)
        if check is None:
            raise SessionError(f"Missing check '{cid}' registration")
        if check["Status"] == "critical":
            raise SessionError(f"Check '{cid}' is in critical state")
    rec: Record = {
        "ID": sid, "Name": sess.get("Name", ""), "Node": node["Node"], "LockDelay": sess.get("LockDelay", 0),
        "Behavior": sess.get("Behavior") or "release", "TTL": sess.get("TTL", ""),
        "NodeChecks": sess.get("NodeChecks"), "ServiceChecks": sess.get("ServiceChecks"),
    }
    if sess.get("Checks"):
        rec["Checks"] = sess["Checks"]
    rec["CreateIndex"] = rec["ModifyIndex"] = index
    s.sessions[sid] = rec
    _index(s, rec)
    s.touch(index, watchkeys.SESSIONS)


def _index(s: Store, rec: Record) -> None:
    node_key = _k(rec["Node"])
    s.node_sessions.setdefault(node_key, set()).add(rec["ID"])
    for cid in check_ids(rec):
        s.session_checks.setdefault((node_key, cid.lower()), set()).add(rec["ID"])


def _unindex(s: Store, rec: Record) -> None:
    node_key = _k(rec["Node"])
    _discard(s.node_sessions, node_key, rec["ID"])
    for cid in check_ids(rec):
        _discard(s.session_checks, (node_key, cid.lower()), rec["ID"])


def _discard(table: dict[Any, set[str]], key: Any, sid: str) -> None:
    ids = table.get(key)
    if ids is not None:
        ids.discard(sid)
        if not ids:
            del table[key]


def destroy(s: Store, index: int, sid: str, now: float | None) -> bool:
    """deleteSessionTxn: remove a session and apply its Behavior to the keys it holds; an unknown
    ID is a no-op. `now` (the FSM's clock) starts the keys' lock-delay; None records none."""
    rec = s.sessions.pop(sid, None)
    if rec is None:
        return False
    s.touch(index, watchkeys.SESSIONS)
    delay_s = min(rec["LockDelay"], MAX_LOCK_DELAY_NS) / 1e9
    for key in sorted(s.session_keys.pop(sid, ())):
        entry = s.kv.get(key)
        if entry is None or entry.get("Session") != sid:
            continue
        if rec["Behavior"] == "delete":
            kv.remove(s, index, key)
        else:
            kv.set_entry(s, index, key, entry["Value"], entry["Flags"], lock_index=entry["LockIndex"], session="")
        if delay_s > 0:
            s.lock_released[key] = index
            if now is not None:
                s.lock_delays[key] = now + delay_s
    _forget_old_delays(s, index, now)
    queries.session_ended(s, index, sid)  # a query bound to the session goes with it
    _unindex(s, rec)
    return True


def _forget_old_delays(s: Store, index: int, now: float | None) -> None:
    """Keep the lock-delay tables small: keys released long ago (by index: the same on every
    replica) and lock-delays that ended are dropped once there are many."""
    if len(s.lock_released) > KEEP_DELAYS:
        s.lock_released = {k: r for k, r in s.lock_released.items() if r > index - RELEASED_HORIZON}
    if now is not None and len(s.lock_delays) > KEEP_DELAYS:
        expired_delays(s, now)


def destroy_all(s: Store, index: int, ids: Iterable[str], now: float | None) -> None:
    for sid in sorted(set(ids)):
        destroy(s, index, sid, now)


def check_written(s: Store, index: int, node_key: str, check: Record, now: float | None) -> None:
    """A check was written: critical (even unchanged) invalidates the sessions bound to it."""
    if check["Status"] == "critical":
        destroy_all(s, index, s.session_checks.get((node_key, check["CheckID"].lower()), ()), now)


def check_deleted(s: Store, index: int, node_key: str, check_id: str, now: float | None) -> None:
    destroy_all(s, index, s.session_checks.get((node_key, check_id.lower()), ()), now)


def node_deleted(s: Store, index: int, node_key: str, now: float | None) -> None:
    destroy_all(s, index, s.node_sessions.get(node_key, ()), now)


def rebuild(s: Store) -> None:
    """The derived session indexes from the tables (after a restore or a repair)."""
    s.node_sessions, s.session_checks = {}, {}
    for rec in s.sessions.values():
        _index(s, rec)
    kv.rebuild_holders(s)


def expired_delays(s: Store, now: float) -> None:
    """Forget lock-delays that ended before `now` (the table stays small)."""
    for key in [k for k, until in s.lock_delays.items() if until <= now]:
        del s.lock_delays[key]
