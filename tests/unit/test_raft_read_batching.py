"""Read-index requests asked together share one read-index round (driver.py, "Reads").

Thesis §6.4: a read may be served at any read index taken after it was asked; so reads that
arrive before a round starts can all use that round's index (etcd batches its linearizable
reads the same way). The driver runs exactly as in the agent: one asyncio task, a real core.
"""

from __future__ import annotations

import asyncio

from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.messages import Configuration, Server
from appliance.state.store import Store


def test_concurrent_reads_share_one_round_and_see_every_earlier_write():
    async def main():
        drv = RaftDriver(Store(), node_id="n1", address="127.0.0.1:8300", storage=MemoryStorage(),
                         config=RaftConfig(raft_multiplier=1))
        drv.open(Configuration((Server("n1", "127.0.0.1:8300"),)))
        await drv.start()
        try:
            await drv.propose({"Type": "kv_set", "Verb": "set", "Key": "a", "Value": b"1"})
            written = drv.store.kv["a"]["ModifyIndex"]
            rounds_before = drv.core.read_seq
            indexes = await asyncio.gather(*(drv.read_barrier() for _ in range(50)))
            rounds = drv.core.read_seq - rounds_before
            # every read sees the write acknowledged before it was asked (linearizable) ...
            assert all(i >= written for i in indexes)
            # ... and fifty reads asked together cost one round, not fifty
            assert rounds == 1, rounds
            assert not drv.opened_host.pending_read_rounds  # every round was answered and forgotten
            later = await drv.read_barrier()  # a read asked after them gets a round of its own
            assert drv.core.read_seq - rounds_before == 2 and later >= max(indexes)
        finally:
            await drv.stop()

    asyncio.run(main())
