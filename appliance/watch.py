"""Wakes blocking queries when the watch keys they read are touched by an applied write.

The state store names what each write changed as watch keys ("svc:web", "nodes", "kv:a/b", ...;
see appliance.state.store). A blocking query parks on the keys its answer depends on; for KV
it parks on a prefix, which a write to any key under it touches. One asyncio.Event per key (or
prefix) is shared by every query parked on it, so 10,000 queries on `health/service/web` cost
one wake-up, and a write to another service wakes none of them. Events are dropped once no
query is parked on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class _Slot:
    __slots__ = ("event", "waiters")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiters = 0


class WatchHub:
    def __init__(self) -> None:
        self._exact: dict[str, _Slot] = {}
        self._prefixes: dict[str, _Slot] = {}  # KV prefix -> slot
        self.parked = 0

    def notify(self, touched: Iterable[str]) -> None:
        """Called after each applied log entry with the watch keys it touched."""
        for key in touched:
            slot = self._exact.pop(key, None)
            if slot is not None:
                slot.event.set()
            if key.startswith("kv:") and self._prefixes:
                kv_key = key[3:]
                for prefix in [p for p in self._prefixes if kv_key.startswith(p)]:
                    self._prefixes.pop(prefix).event.set()

    def notify_all(self) -> None:
        """Wake everything (snapshot restore, leadership change)."""
        for table in (self._exact, self._prefixes):
            for slot in table.values():
                slot.event.set()
            table.clear()

    def _slot(self, table: dict[str, _Slot], key: str) -> _Slot:
        slot = table.get(key)
        if slot is None:
            slot = table[key] = _Slot()
        return slot

    async def wait(self, keys: Iterable[str] = (), prefixes: Iterable[str] = (), timeout: float = 0.0) -> bool:
        """Park until one of the keys/prefixes is touched or `timeout` seconds pass; True if woken."""
        keys, prefixes = list(keys), list(prefixes)
        slots = [self._slot(self._exact, k) for k in keys]
        slots += [self._slot(self._prefixes, p) for p in prefixes]
        if not slots:
            await asyncio.sleep(timeout)
            return False
        for slot in slots:
            slot.waiters += 1
        self.parked += 1
        waits = [asyncio.ensure_future(s.event.wait()) for s in slots] if len(slots) > 1 else None
        try:
            if waits is None:
                try:
                    await asyncio.wait_for(slots[0].event.wait(), timeout)
                    return True
                except TimeoutError:
                    return False
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return bool(done)
        finally:
            self.parked -= 1
            if waits is not None:
                for w in waits:
                    w.cancel()
            owners = [(k, self._exact) for k in keys] + [(p, self._prefixes) for p in prefixes]
            for (key, table), slot in zip(owners, slots):
                slot.waiters -= 1
                if slot.waiters <= 0 and table.get(key) is slot:
                    del table[key]
