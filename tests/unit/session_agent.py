"""An in-process agent (tests/unit/http_inprocess.py) with the sessions' leader side running:
TTL timers, renewals and the lock-delay check (appliance/sessions/leader.py), on a clock the
test moves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from http_inprocess import InProcessAgent, http_agent

from appliance.sessions.leader import SessionLeader


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def session_agent(*flags: str, clock: FakeClock | None = None) -> AsyncIterator[tuple[InProcessAgent,
                                                                                         SessionLeader]]:
    async with http_agent(*flags) as api:
        leader = SessionLeader(api.raft, api.ctx.telemetry, clock=clock or FakeClock())
        task = asyncio.get_running_loop().create_task(leader.serve())
        try:
            yield api, leader
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
