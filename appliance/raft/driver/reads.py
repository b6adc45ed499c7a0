"""The Raft driver's read path: read index, Consul's default leader read, waiting for an index.

`read_barrier()` is the read index of Raft thesis §6.4: the leader confirms with a heartbeat
round that it still leads, returns its commit index, and the caller proceeds once this server has
applied that index; `?consistent` reads call it. Reads asked between two drains of the inbox
share one read-index round (the host, appliance/raft/host.py, batches them and answers each once
this server has applied its index).

`read_point(consistency)` is what the HTTP reads call: stale reads are served at once, default
reads at once on the leader, and on another server once it has applied the leader's commit index
(asked with a READ_INDEX frame, no heartbeat round: Consul's default leader read).
"""

from __future__ import annotations

import asyncio

from ..messages import NotLeader
from .base import DriverBase


class ReadPathMixin(DriverBase):
    """The read calls of `RaftDriver`."""

    async def read_barrier(self, timeout_s: float = 10.0) -> int:
        """Linearizable read point (read index): returns once this server has applied it."""
        for _ in range(3):
            await self._wait_for_leader()
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._post(("read", fut))
            index = await asyncio.wait_for(fut, timeout_s)  # answered once applied here
            if index < 0:
                await asyncio.sleep(self.config.tick_ms / 1000)
                continue
            return index
        raise NotLeader(self.leader_id)

    async def wait_applied(self, index: int, timeout_s: float = 10.0) -> None:
        """Return once this server has applied `index` (TimeoutError after `timeout_s`)."""
        if self.applied_index >= index:
            return
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.opened_host.wait_applied(index, waiter)
        await asyncio.wait_for(waiter, timeout_s)

    async def leader_read_index(self, consistent: bool) -> int:
        """On the leader: the index a read must wait for. `consistent` confirms leadership with a
        heartbeat round (read_barrier); default mode answers the commit index without it (Consul's
        default leader read), unless this leader has not committed an entry of its term yet (its
        commit index may then lag the cluster's: thesis §6.4 step 1)."""
        if not self.is_leader:
            raise NotLeader(self.leader_id)
        core = self.opened_core
        if consistent or core.log.term(core.log.committed) != core.term:
            return await self.read_barrier()
        return core.log.committed

    async def cluster_read_index(self, consistent: bool) -> int:
        """The leader's read index, asked of the leader when this server is not it."""
        for attempt in range(3):
            leader = await self._wait_for_leader()
            try:
                if leader == self.node_id:
                    return await self.leader_read_index(consistent)
                if self.transport is None:
                    raise NotLeader(leader)
                return await self.transport.read_index(leader, consistent)
            except NotLeader:
                if attempt == 2:
                    raise
                await asyncio.sleep(self.config.tick_ms / 1000)  # leadership moved: ask again
        raise NotLeader(self.leader_id)

    async def read_point(self, consistency: str) -> None:
        """Wait until this server may serve a read of `consistency` ("stale", "leader" = Consul's
        default, "consistent"): stale at once, default on the leader at once, otherwise once this
        server has applied the leader's read index."""
        if consistency == "stale":
            return
        if consistency == "consistent":
            await self.read_barrier()
            return
        if self.is_leader:
            return
        await self.wait_applied(await self.cluster_read_index(False))
