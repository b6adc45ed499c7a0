"""A semaphore of `limit` holders under a KV prefix, as Consul's Go client (`api.Semaphore`) runs it.

Layout under `<prefix>/`: each contender writes `<prefix>/<session>` with `?acquire=` (its
session has `Behavior: delete`, so the key goes when the contender dies); the coordination key
`<prefix>/.lock` holds `{"Limit":N,"Holders":{"<session>":true,...}}` with the semaphore's
flag value and is changed only by check-and-set.

Acquiring: read the prefix (blocking on its index, `wait=15000ms`); take `.lock` (or a fresh
one with our limit); refuse a key with other flags (`Existing key does not match semaphore
use`) or another limit (`semaphore limit conflict (lock: 2, local: 3)`); drop the holders whose
session holds no key under the prefix any more; if `len(Holders) >= Limit` wait for the next
change; else add ourselves and `PUT .lock?cas=<ModifyIndex>` (a lost race reads again).

Held: the monitor (holder.py) reads the prefix with `?consistent` blocking queries and sets
`lost` when we are no longer among the (pruned) holders. Releasing removes us from `.lock` by
check-and-set (read again on a lost race), deletes our contender key, and destroys the
session. `destroy()` removes `.lock` when no live holder is left (`Semaphore in use`
otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from appliance.locks.holder import Holder, wait_timeout
from appliance.locks.session import (
    LockError,
    blocking_params,
    delete_cas,
    go_path_join,
    kv_get,
    kv_list,
    kv_path,
    kv_put,
    value_bytes,
)
from appliance.watches.client import BLOCKING_TIMEOUT_S, AgentClient, ApiFailure, Unreachable

SEMAPHORE_FLAG_VALUE = 0xE0F69A2BAA414DE0
SEMAPHORE_KEY = ".lock"
ERR_CONFLICT = "Existing key does not match semaphore use"
ERR_IN_USE = "Semaphore in use"


class Semaphore(Holder):
    kind = "Semaphore"
    behavior = "delete"  # a dead contender's key goes with its session

    def __init__(self, api: AgentClient, prefix: str, limit: int, **options: Any) -> None:
        if limit <= 0:
            raise LockError("semaphore limit must be positive")
        if not prefix:
            raise LockError("missing prefix")
        options.setdefault("session_name", "Consul API Semaphore")
        super().__init__(api, **options)
        self.prefix, self.limit = prefix, limit
        self.lock_key = go_path_join(prefix, SEMAPHORE_KEY)

    def _flags(self) -> list[tuple[str, str]]:
        return [("flags", str(SEMAPHORE_FLAG_VALUE))]

    # -- the .lock document -----------------------------------------------------------------

    def _find_lock(self, pairs: list[dict[str, Any]]) -> dict[str, Any]:
        for pair in pairs:
            if pair.get("Key") == self.lock_key:
                return pair
        return {"Key": self.lock_key, "Flags": SEMAPHORE_FLAG_VALUE, "ModifyIndex": 0, "Value": None}

    def _decode(self, pair: dict[str, Any]) -> dict[str, Any]:
        raw = value_bytes(pair)
        if raw is None:
            return {"Limit": self.limit, "Holders": {}}
        try:
            doc = json.loads(raw)
            return {"Limit": int(doc.get("Limit", 0)), "Holders": dict(doc.get("Holders") or {})}
        except (ValueError, TypeError, AttributeError) as err:
            raise LockError(f"lock decoding failed: {err}") from None

    @staticmethod
    def _prune(lock: dict[str, Any], pairs: list[dict[str, Any]]) -> None:
        """Drop the holders whose session holds no key under the prefix any more."""
        alive = {p["Session"] for p in pairs if p.get("Session")}
        for holder in [h for h in lock["Holders"] if h not in alive]:
            del lock["Holders"][holder]

    async def _cas_lock(self, lock: dict[str, Any], modify_index: int) -> bool:
        holders = {h: True for h in sorted(lock["Holders"])}  # a Go map: keys sorted
        body = json.dumps({"Limit": lock["Limit"], "Holders": holders}, separators=(",", ":")).encode()
        try:
            return await kv_put(self.api, self.lock_key, [("cas", str(modify_index)), *self._flags()], body)
        except (Unreachable, ApiFailure) as err:
            raise LockError(f"failed to update lock: {err}") from None

    async def _list(self, index: int, wait: float | None, consistent: bool = False) -> tuple[Any, int]:
        try:
            return await kv_list(self.api, self.prefix, blocking_params(index, wait, consistent),
                                 timeout_s=BLOCKING_TIMEOUT_S if wait is None else wait_timeout(wait))
        except (Unreachable, ApiFailure) as err:
            if consistent:
                raise
            raise LockError(f"failed to read prefix: {err}") from None

    # -- acquire and hold -------------------------------------------------------------------

    async def _take(self, waits: Iterator[float]) -> bool:
        contender = go_path_join(self.prefix, self.session)
        try:
            made = await kv_put(self.api, contender, [("acquire", self.session), *self._flags()], self.value)
        except (Unreachable, ApiFailure) as err:
            raise LockError(f"failed to make contender entry: {err}") from None
        if not made:
            raise LockError("failed to make contender entry: <nil>")
        index = 0
        for wait in waits:
            pairs, meta_index = await self._list(index, wait)
            lock_pair = self._find_lock(pairs)
            if lock_pair.get("Flags", 0) != SEMAPHORE_FLAG_VALUE:
                raise LockError(ERR_CONFLICT)
            lock = self._decode(lock_pair)
            if lock["Limit"] != self.limit:
                raise LockError(f"semaphore limit conflict (lock: {lock['Limit']}, local: {self.limit})")
            self._prune(lock, pairs)
            if len(lock["Holders"]) >= lock["Limit"]:
                index = meta_index
                continue
            lock["Holders"][self.session] = True
            if await self._cas_lock(lock, lock_pair.get("ModifyIndex", 0)):
                return True
            # a race with another contender: read again
        return False

    async def _still_held(self, index: int) -> tuple[bool, int]:
        pairs, meta_index = await self._list(index, None, consistent=True)
        lock = self._decode(self._find_lock(pairs))
        self._prune(lock, pairs)
        return self.session in lock["Holders"], meta_index

    # -- release and clean-up ---------------------------------------------------------------

    async def release(self) -> None:
        session = await self._let_go()
        try:
            while True:
                try:
                    pair, _ = await kv_get(self.api, self.lock_key)
                except (Unreachable, ApiFailure) as err:
                    raise LockError(str(err)) from None
                pair = pair or {}
                lock = self._decode(pair)
                if session not in lock["Holders"]:
                    break
                del lock["Holders"][session]
                if await self._cas_lock(lock, pair.get("ModifyIndex", 0)):
                    break
            try:
                (await self.api.delete(kv_path(go_path_join(self.prefix, session)))).ok()
            except (Unreachable, ApiFailure) as err:
                raise LockError(str(err)) from None
        finally:
            await self._stop_renewer()

    async def destroy(self) -> None:
        if self.held:
            raise LockError("Semaphore already held")
        pairs, _ = await self._list(0, None)
        lock_pair = self._find_lock(pairs)
        if not lock_pair.get("ModifyIndex"):
            return
        if lock_pair.get("Flags", 0) != SEMAPHORE_FLAG_VALUE:
            raise LockError(ERR_CONFLICT)
        lock = self._decode(lock_pair)
        self._prune(lock, pairs)
        if lock["Holders"]:
            raise LockError(ERR_IN_USE)
        if not await delete_cas(self.api, self.lock_key, lock_pair, "failed to remove semaphore"):
            raise LockError(ERR_IN_USE)
