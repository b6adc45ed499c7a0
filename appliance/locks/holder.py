"""What a lock and a semaphore share: the session, the bounded wait, the monitor, the release.

`Holder.acquire()` creates the session (renewed every TTL/2 by `Renewer`), runs the subclass's
`_take(waits)` and, once held, starts a monitor task that repeats the subclass's consistent
blocking read (`_still_held(index)`) until it says the hold is gone, then sets `lost`. A network
error or a 500 during monitoring is retried `monitor_retries` times, `monitor_retry_s` apart,
with a non-blocking read, as the Go client does; any other error ends the hold. When the take
fails (an error, or `try_once` out of time) the session is destroyed at once.

`_waits()` yields the `wait` of each attempt: always `wait_s`, or with `try_once` what is left of
`wait_s` since the first attempt, and stops when nothing is left.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator

from appliance.locks.session import DEFAULT_TTL, LockError, Renewer, create_session, retryable
from appliance.watches.client import AgentClient, ApiFailure, Unreachable

WAIT_S = 15.0  # DefaultLockWaitTime, DefaultSemaphoreWaitTime
MONITOR_RETRY_S = 2.0  # DefaultMonitorRetryTime


def wait_timeout(wait_s: float) -> float:
    """The client's timeout for a blocking read of `wait_s` (the server may add wait/16)."""
    return wait_s + wait_s / 16 + 10.0


class Holder(ABC):
    kind = "Lock"  # in "<kind> already held" and "<kind> not held"
    behavior = ""  # the session's Behavior ("" is the server's default, release)

    def __init__(self, api: AgentClient, *, session_name: str, session_ttl: str = DEFAULT_TTL,
                 value: bytes = b"", try_once: bool = False, wait_s: float = WAIT_S,
                 monitor_retries: int = 0, monitor_retry_s: float = MONITOR_RETRY_S) -> None:
        self.api, self.value = api, value
        self.session_name, self.session_ttl = session_name, session_ttl
        self.try_once, self.wait_s = try_once, wait_s
        self.monitor_retries, self.monitor_retry_s = monitor_retries, monitor_retry_s
        self.session = ""
        self.held = False
        self.lost = asyncio.Event()
        self._renewer: Renewer | None = None
        self._monitor: asyncio.Task[None] | None = None

    @abstractmethod
    async def _take(self, waits: Iterator[float]) -> bool:
        """Wait for and take the hold with self.session; False when `waits` runs out."""

    @abstractmethod
    async def _still_held(self, index: int) -> tuple[bool, int]:
        """One consistent blocking read at `index`: (still ours, the answer's index)."""

    def _waits(self) -> Iterator[float]:
        start = time.monotonic()
        yield self.wait_s
        while True:
            elapsed = time.monotonic() - start
            if self.try_once and elapsed > self.wait_s:
                return
            yield self.wait_s - elapsed if self.try_once else self.wait_s

    async def acquire(self) -> bool:
        """True once held; False when `try_once` ran out of time. Raises LockError."""
        if self.held:
            raise LockError(f"{self.kind} already held")
        self.session = await create_session(self.api, self.session_name, self.session_ttl, self.behavior)
        self._renewer = Renewer(self.api, self.session, self.session_ttl)
        self._renewer.start()
        try:
            self.held = await self._take(self._waits())
        finally:
            if not self.held:
                await self._stop_renewer()
        if self.held:
            self._monitor = asyncio.get_running_loop().create_task(self._watch(), name=f"{self.kind}-monitor")
        return self.held

    async def _watch(self) -> None:
        index = 0
        try:
            while True:
                retries = self.monitor_retries
                while True:
                    try:
                        held, index = await self._still_held(index)
                        break
                    except (Unreachable, ApiFailure, LockError) as err:
                        if retries > 0 and not isinstance(err, LockError) and retryable(err):
                            await asyncio.sleep(self.monitor_retry_s)
                            retries, index = retries - 1, 0
                            continue
                        return
                if not held:
                    return
        finally:
            self.lost.set()

    async def _let_go(self) -> str:
        """Start of a release: stop monitoring; the session that held."""
        if not self.held:
            raise LockError(f"{self.kind} not held")
        self.held = False
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
        session, self.session = self.session, ""
        return session

    async def _stop_renewer(self) -> None:
        """Stop renewing and destroy the session."""
        if self._renewer is not None:
            await self._renewer.stop()
            self._renewer = None
