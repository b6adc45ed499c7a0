"""The Raft driver's read path: read index, Consul's default leader read, waiting for an index.

`read_barrier()` is the read index of Raft thesis §6.4: the leader confirms with a heartbeat
round that it still leads, returns its commit index, and the caller proceeds once this server has
applied that index; `?consistent` reads call it. Reads asked between two drains of the inbox
share one read-index round (`_read_index_batch`, called by the loop at the end of each drain).

`read_point(consistency)` is what the HTTP reads call: stale reads are served at once, default
reads at once on the leader, and on another server once it has applied the leader's commit index
(asked with a READ_INDEX frame, no heartbeat round: Consul's default leader read).

The loop (loop.py) answers what is pending here: `_answer_reads` with the core's read states,
`_release_readers` once the applied index moved.
"""

from __future__ import annotations

import asyncio

from ..messages import NotLeader, ReadState
from .base import DriverBase

MAX_READ_BATCHES = 1024  # read-index rounds awaiting their answer


class ReadPathMixin(DriverBase):
    """The read calls of `RaftDriver`."""

    async def read_barrier(self, timeout_s: float = 10.0) -> int:
        """Linearizable read point (read index): returns once this server has applied it."""
        for _ in range(3):
            await self._wait_for_leader()
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            request_id = f"{self.node_id}/{next(self._read_ids)}"
            self._reads[request_id] = fut
            self._post(("read", request_id))
            try:
                index = await asyncio.wait_for(fut, timeout_s)
            finally:
                self._reads.pop(request_id, None)
            if index < 0:
                await asyncio.sleep(self.config.tick_ms / 1000)
                continue
            if self.applied_index < index:
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._read_waiters.append((index, waiter))
                await asyncio.wait_for(waiter, timeout_s)
            return index
        raise NotLeader(self.leader_id)

    async def wait_applied(self, index: int, timeout_s: float = 10.0) -> None:
        """Return once this server has applied `index` (TimeoutError after `timeout_s`)."""
        if self.applied_index >= index:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._read_waiters.append((index, waiter))
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

    # ------------------------------------------------------------------ called by the loop

    def _read_index_batch(self) -> None:
        """One read-index round for every read asked since the last drain. Each of them was
        asked before the round starts, so the index it returns is a valid read point for all of
        them (thesis §6.4; etcd batches its linearizable reads the same way)."""
        batch_id = f"{self.node_id}/b{next(self._read_ids)}"
        self._read_batches[batch_id] = self._read_batch
        self._read_batch = []
        while len(self._read_batches) > MAX_READ_BATCHES:  # answers lost with a leader: forget
            del self._read_batches[next(iter(self._read_batches))]
        self.opened_core.read_index(batch_id)

    def _answer_reads(self, read_states: tuple[ReadState, ...]) -> None:
        """The core released read-index rounds: each read of a round gets its index."""
        for rs in read_states:
            for request_id in self._read_batches.pop(rs.request_id, (rs.request_id,)):
                fut = self._reads.get(request_id)
                if fut is not None and not fut.done():
                    fut.set_result(rs.index)

    def _release_readers(self) -> None:
        """Wake whoever waits for an index this server has now applied."""
        if self._read_waiters:
            still = []
            for index, waiter in self._read_waiters:
                if index <= self.applied_index:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    still.append((index, waiter))
            self._read_waiters = still
