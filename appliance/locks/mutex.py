"""A mutex on one KV key, as Consul's Go client (`api.Lock`) takes and holds it.

Acquiring (after the session, holder.py): read the key (blocking on its index once someone
holds it, `wait=15000ms`); a key whose flags are not the lock's flag value is someone else's
(`Existing key does not match lock use`); a key held by our session is ours; a key held by
another waits for the next change; otherwise `PUT ?acquire=<session>&flags=3304740253564472344`.
A refused acquire is read again at once: held by someone, wait for it; free, it is the
lock-delay of a session that lost the key, so wait 5 s.

Held: the monitor reads the key with `?consistent` blocking queries while our session holds it.
Releasing: `PUT ?release=<session>` with the same flags, then the session is destroyed.
`destroy()` removes the key when nobody holds it (`DELETE ?cas=<ModifyIndex>`), `Lock in use`
otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from appliance.locks.holder import Holder, wait_timeout
from appliance.locks.session import LockError, blocking_params, delete_cas, kv_get, kv_put
from appliance.watches.client import BLOCKING_TIMEOUT_S, AgentClient, ApiFailure, Unreachable

LOCK_FLAG_VALUE = 0x2DDCCBC058A50C18
LOCK_RETRY_S = 5.0  # after a refused acquire of a free key (lock-delay)
ERR_CONFLICT = "Existing key does not match lock use"
ERR_IN_USE = "Lock in use"


class Lock(Holder):
    kind = "Lock"

    def __init__(self, api: AgentClient, key: str, **options: Any) -> None:
        options.setdefault("session_name", "Consul API Lock")
        super().__init__(api, **options)
        self.key = key

    def _params(self, verb: str, session: str) -> list[tuple[str, str]]:
        return [(verb, session), ("flags", str(LOCK_FLAG_VALUE))]

    async def _read(self, index: int, wait: float | None, consistent: bool = False) -> tuple[Any, int]:
        try:
            return await kv_get(self.api, self.key, blocking_params(index, wait, consistent),
                                timeout_s=BLOCKING_TIMEOUT_S if wait is None else wait_timeout(wait))
        except (Unreachable, ApiFailure) as err:
            if consistent:
                raise
            raise LockError(f"failed to read lock: {err}") from None

    async def _take(self, waits: Iterator[float]) -> bool:
        index = 0
        for wait in waits:
            pair, meta_index = await self._read(index, wait)
            if pair is not None and pair.get("Flags", 0) != LOCK_FLAG_VALUE:
                raise LockError(ERR_CONFLICT)
            if pair is not None and pair.get("Session") == self.session:
                return True
            if pair is not None and pair.get("Session"):
                index = meta_index
                continue
            try:
                if await kv_put(self.api, self.key, self._params("acquire", self.session), self.value):
                    return True
            except (Unreachable, ApiFailure) as err:
                raise LockError(f"failed to acquire lock: {err}") from None
            pair, meta_index = await self._read(0, wait)
            if pair is not None and pair.get("Session"):
                index = meta_index
            else:
                index = 0
                await asyncio.sleep(LOCK_RETRY_S)  # a lock-delay is in effect
        return False

    async def _still_held(self, index: int) -> tuple[bool, int]:
        pair, meta_index = await self._read(index, None, consistent=True)
        return pair is not None and pair.get("Session") == self.session, meta_index

    async def release(self) -> None:
        session = await self._let_go()
        try:
            await kv_put(self.api, self.key, self._params("release", session), self.value)
        except (Unreachable, ApiFailure) as err:
            raise LockError(f"failed to release lock: {err}") from None
        finally:
            await self._stop_renewer()

    async def destroy(self) -> None:
        if self.held:
            raise LockError("Lock already held")
        pair, _ = await self._read(0, None)
        if pair is None:
            return
        if pair.get("Flags", 0) != LOCK_FLAG_VALUE:
            raise LockError(ERR_CONFLICT)
        if pair.get("Session"):
            raise LockError(ERR_IN_USE)
        if not await delete_cas(self.api, self.key, pair, "failed to remove lock"):
            raise LockError(ERR_IN_USE)
