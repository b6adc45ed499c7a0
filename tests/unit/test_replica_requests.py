"""A client agent's requests to its server keep within the server's in-flight cap.

A server answers at most MAX_REQUESTS_IN_FLIGHT unanswered READ_INDEX/FORWARD requests on one
connection and refuses more with "too many requests in flight on this connection" (a burst of
12,500 blocking queries on a client agent of a 100,000-instance cluster got 431 such 500s). The
client's replica sends at most that many and queues the rest until answers free a slot.
"""

from __future__ import annotations

import asyncio
import random

from appliance.client.replica import Replica
from appliance.client.servers import ServerList
from appliance.rpc.frames import MAX_REQUESTS_IN_FLIGHT, Kind, decode_frame
from appliance.state.store import Store


class Wire:
    """The connection's writer: keeps the request ids sent."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def write(self, data: bytes) -> None:
        body, _ = decode_frame(data)
        self.sent.append(body[1])


def test_requests_past_the_cap_wait_for_a_free_slot():
    async def run() -> None:
        replica = Replica(Store(), servers=ServerList(datacenter="dc1", join=[], default_port=8300,
                                                      rng=random.Random(1)), node_name="c1")
        wire = Wire()
        replica._writer = wire  # type: ignore[assignment]
        replica._connected.set()
        extra = 44
        tasks = [asyncio.create_task(replica._request(Kind.READ_INDEX, False, retry=True))
                 for _ in range(MAX_REQUESTS_IN_FLIGHT + extra)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(wire.sent) == MAX_REQUESTS_IN_FLIGHT  # the rest wait
        for request_id in wire.sent[:extra]:
            replica._handle([Kind.READ_INDEX_RESP, request_id, "ok", 7])
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(wire.sent) == MAX_REQUESTS_IN_FLIGHT + extra
        for request_id in wire.sent[extra:]:
            replica._handle([Kind.READ_INDEX_RESP, request_id, "ok", 7])
        assert [await t for t in tasks] == [("ok", 7, 0)] * (MAX_REQUESTS_IN_FLIGHT + extra)

    asyncio.run(run())
