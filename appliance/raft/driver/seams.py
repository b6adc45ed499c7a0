"""What the Raft driver needs of the things around it, and the storage of `-dev` servers.

Storage. `RaftStorage` is the durable half of the driver: `FileStorage` (appliance/raft/storage.py,
the WAL under `data_dir/raft`) on servers, `MemoryStorage` below for `-dev` (nothing survives the
process). A storage error is fatal: the process stops (fail-stop), because an fsync that failed
cannot be retried and trusted.

Transport. `RaftLink` is what the driver asks of the server RPC (appliance/raft/transport.py):
send a Raft message to a peer, forward a command to the leader and ask the leader for its read
index. Tests give a driver a small fake, or none (then the driver only works as a single voter).

Both are Protocols: the concrete classes need not know about them.
"""

from __future__ import annotations

from typing import Any, Protocol

from appliance.state.commands import Command

from ..core import Compaction, Ready
from ..messages import HardState, InitialState, Message


class RaftStorage(Protocol):
    """The calls the driver makes on its storage, in the durability order of core.py."""

    def load(self) -> InitialState: ...

    def bootstrap(self, state: InitialState) -> None: ...

    def save(self, rd: Ready) -> None: ...

    def save_snapshot(self, compaction: Compaction) -> None: ...

    def close(self) -> None: ...


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


class MemoryStorage:
    """Storage for -dev: the same calls as FileStorage, kept in the process only."""

    def __init__(self) -> None:
        self.state = InitialState()

    def load(self) -> InitialState:
        return self.state

    def bootstrap(self, state: InitialState) -> None:
        self.state = state

    def save(self, rd: Ready) -> None:
        pass

    def save_snapshot(self, compaction: Compaction) -> None:
        pass

    def close(self) -> None:
        pass


def is_empty(state: InitialState) -> bool:
    """True for the state of a server that never had any: no entries, no snapshot, no vote."""
    return not state.entries and state.snapshot is None and state.hard_state == HardState()
