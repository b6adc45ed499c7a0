"""Wakes blocking queries when the watch keys they read are touched by an applied write.

The state store names what each write changed as watch keys (a service, a table, a KV key, ...;
appliance.state.watchkeys). A blocking query parks on the keys its answer depends on; for KV
it parks on a prefix, which a write to any key under it touches. A parked query costs one
future and one timer (no task of its own): each key has a set of waiting futures, and a touch
resolves them all and forgets the key, so a write to another service wakes none of them and
nothing is left behind by a query that timed out or whose client went away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from appliance.state import watchkeys


class WatchHub:
    def __init__(self) -> None:
        self._exact: dict[str, set[asyncio.Future[bool]]] = {}
        self._prefixes: dict[str, set[asyncio.Future[bool]]] = {}  # KV prefix -> waiters
        self.parked = 0

    @staticmethod
    def _wake(waiters: set[asyncio.Future[bool]]) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(True)

    def notify(self, touched: Iterable[str]) -> None:
        """Called after each applied log entry with the watch keys it touched."""
        for key in touched:
            waiters = self._exact.pop(key, None)
            if waiters:
                self._wake(waiters)
            if self._prefixes and watchkeys.is_kv(key):
                kv_key = watchkeys.kv_key(key)
                for prefix in [p for p in self._prefixes if kv_key.startswith(p)]:
                    self._wake(self._prefixes.pop(prefix))

    async def wait(self, keys: Iterable[str] = (), prefixes: Iterable[str] = (), timeout: float = 0.0) -> bool:
        """Park until one of the keys/prefixes is touched or `timeout` seconds pass; True if woken."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entries = [(self._exact, k) for k in keys] + [(self._prefixes, p) for p in prefixes]
        for table, key in entries:
            table.setdefault(key, set()).add(fut)
        def expire() -> None:
            if not fut.done():
                fut.set_result(False)

        timer = loop.call_later(timeout, expire)
        self.parked += 1
        try:
            return await fut
        finally:
            self.parked -= 1
            timer.cancel()
            for table, key in entries:
                waiters = table.get(key)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        del table[key]
