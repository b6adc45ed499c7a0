"""KV writes: the entry primitives and every verb of the KV endpoint and of a transaction.

How it works
------------
Two primitives change the KV table, `put` and `remove`; everything else calls them, so the sorted
key list, the tombstones, the session -> held keys index and the watch keys always agree with the
entries. The verbs follow Consul's state store (reference/coordination.md §2.1) exactly:

- `set_entry` is kvsSetTxn: CreateIndex kept, ModifyIndex = the write's index; unless the verb
  changes the lock (`update_session`), the entry keeps the session that holds it (a plain PUT
  never steals or clears a lock); LockIndex is the one given (0 for a plain write, so a plain
  PUT on a locked key resets it); an identical write (LockIndex, Flags, Value, Session equal)
  changes nothing and keeps ModifyIndex.
- `lock` (`?acquire=`): absent key -> LockIndex 1; a key held by the same session is re-acquired
  (value and flags replaced, LockIndex unchanged); an unheld key -> LockIndex + 1; held by
  another session -> False. `unlock` (`?release=`) needs the key held by that session (which
  need not exist any more): the session is cleared, value and flags replaced, LockIndex kept.
- `delete_cas` on a missing key succeeds (Consul's kvsDeleteCASTxn).

Failed preconditions that Consul reports as errors (`missing session`, `invalid session "<id>"`)
raise `KVError`; the others return False. Lock-delay is not checked here: it is the leader's
check before a lock enters the log (appliance/sessions/guard.py), never part of the replicated
apply. Pure functions over the store; no I/O.
"""

from __future__ import annotations

from typing import Any

from appliance.state import watchkeys
from appliance.state.store import Record, Store


class KVError(ValueError):
    """A KV verb's precondition that Consul reports as an error (HTTP 500 with its text)."""


def put(s: Store, index: int, rec: Record) -> None:
    """Store an entry (a new dict; records are never changed in place)."""
    key = rec["Key"]
    prev = s.kv.get(key)
    if prev is None:
        s.kv_insert_key(key)
    else:
        _unhold(s, prev)
    s.kv[key] = rec
    holder = rec.get("Session")
    if holder:
        s.session_keys.setdefault(holder, set()).add(key)
    s.tombstones.pop(key, None)
    s.touch(index, watchkeys.KVS, watchkeys.kv(key))


def remove(s: Store, index: int, key: str) -> bool:
    """Delete an entry, leaving a tombstone at `index`; False if there was none."""
    prev = s.kv.pop(key, None)
    if prev is None:
        return False
    _unhold(s, prev)
    s.kv_remove_key(key)
    s.tombstones[key] = index
    s.touch(index, watchkeys.KVS, watchkeys.TOMBSTONES, watchkeys.kv(key))
    return True


def _unhold(s: Store, rec: Record) -> None:
    holder = rec.get("Session")
    if holder:
        keys = s.session_keys.get(holder)
        if keys is not None:
            keys.discard(rec["Key"])
            if not keys:
                del s.session_keys[holder]


def set_entry(s: Store, index: int, key: str, value: Any, flags: int, *, lock_index: int = 0,
              session: str | None = None) -> Record:
    """kvsSetTxn: `session` None keeps the holder (a plain write), a string sets it ("" clears)."""
    prev = s.kv.get(key)
    holder = (prev.get("Session", "") if prev is not None else "") if session is None else session
    if prev is not None and prev["LockIndex"] == lock_index and prev["Flags"] == flags and (
            (prev["Value"] or None) == (value or None)) and prev.get("Session", "") == holder:
        return prev  # identical: no write, ModifyIndex kept
    rec: Record = {"LockIndex": lock_index, "Key": key, "Flags": flags, "Value": value,
                   "CreateIndex": prev["CreateIndex"] if prev is not None else index, "ModifyIndex": index}
    if holder:
        rec["Session"] = holder
    put(s, index, rec)
    return rec


def cas(s: Store, index: int, key: str, value: Any, flags: int, want: int) -> Record | None:
    """Set only if ModifyIndex is `want` (0: only if the key does not exist); None if not."""
    prev = s.kv.get(key)
    if want == 0 and prev is not None:
        return None
    if want != 0 and (prev is None or prev["ModifyIndex"] != want):
        return None
    return set_entry(s, index, key, value, flags)


def lock(s: Store, index: int, key: str, value: Any, flags: int, session: str,
         checked: int | None = None) -> Record | None:
    """kvsLockTxn: acquire `key` for `session`; None if another session holds it, or if the
    leader checked the key's lock-delay (at applied index `checked`) before the invalidation that
    started one was applied."""
    if not session:
        raise KVError("missing session")
    if session not in s.sessions:
        raise KVError(f'invalid session "{session}"')
    released = s.lock_released.get(key)
    if checked is not None and released is not None and released > checked:
        return None
    prev = s.kv.get(key)
    if prev is None:
        lock_index = 1
    elif prev.get("Session"):
        if prev["Session"] != session:
            return None
        lock_index = prev["LockIndex"]  # re-acquire: same epoch
    else:
        lock_index = prev["LockIndex"] + 1
    s.lock_released.pop(key, None)
    return set_entry(s, index, key, value, flags, lock_index=lock_index, session=session)


def unlock(s: Store, index: int, key: str, value: Any, flags: int, session: str) -> Record | None:
    """kvsUnlockTxn: release `key` held by `session`; None if it is not held by it."""
    if not session:
        raise KVError("missing session")
    prev = s.kv.get(key)
    if prev is None or prev.get("Session", "") != session:
        return None
    return set_entry(s, index, key, value, flags, lock_index=prev["LockIndex"], session="")


def delete_tree(s: Store, index: int, prefix: str) -> None:
    for key in list(s.kv_prefix_keys(prefix)):
        remove(s, index, key)


def delete_cas(s: Store, index: int, key: str, want: int) -> bool:
    """Delete if ModifyIndex is `want`; a missing key succeeds."""
    prev = s.kv.get(key)
    if prev is None:
        return True
    if prev["ModifyIndex"] != want:
        return False
    remove(s, index, key)
    return True


def rebuild_holders(s: Store) -> None:
    """The session -> held keys index, from the entries (after a restore or a repair)."""
    s.session_keys = {}
    for key, rec in s.kv.items():
        holder = rec.get("Session")
        if holder:
            s.session_keys.setdefault(holder, set()).add(key)
