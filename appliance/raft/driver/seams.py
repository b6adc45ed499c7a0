"""What the Raft driver needs of the server RPC: `RaftLink`.

`RaftLink` is what the driver asks of the server RPC (appliance/raft/transport.py): send a Raft
message to a peer, forward a command to the leader and ask the leader for its read index. Tests
give a driver a small fake, or none (then the driver only works as a single voter). It is a
Protocol: the transport need not know about it. The storage the driver writes to is
appliance/raft/durable.py's `RaftStorage`.
"""

from __future__ import annotations

from typing import Any, Protocol

from appliance.state.commands import Command

from ..messages import Message


class RaftLink(Protocol):
    """The server RPC as the driver uses it."""

    def send(self, m: Message) -> None:
        """Send `m` to its recipient; a message that cannot be sent is lost (Raft retries)."""
        ...

    async def forward(self, leader: str, command: Command) -> Any:
        """Have `leader` propose `command`; its result, CommandError or NotLeader."""
        ...

    async def read_index(self, leader: str, consistent: bool) -> int:
        """The read index of `leader` (NotLeader if it no longer leads)."""
        ...
