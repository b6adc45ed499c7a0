"""The Raft driver: one asyncio task that owns a RaftCore, its storage and the FSM.

`RaftDriver` is what the agent holds on a server (appliance/interfaces.py `Consensus`): proposals
in, the applied FSM out, read points for the HTTP reads, the status `/v1/agent/self` shows. Its
parts, each a mixin over one typed state (as the core is over its leader rules):

- base.py: the state every part shares, the inbox (`_post`), and the leader as this server knows it;
- api.py: `RaftDriver` itself: life cycle (`open`, `serve`), proposals, forwarding to the leader,
  membership changes and leadership transfer, messages in from the transport;
- loop.py: the task that drains the inbox into the core and processes each `Ready` in the
  durability order of core.py (persist, send, install a snapshot, apply, take a snapshot);
- reads.py: the read path: read index (thesis §6.4) batched per drain, Consul's default leader
  read, waiting until an index is applied;
- timing.py: the bookkeeping for Consul's `consul.raft.*` timings (appliance/raft/metrics.py);
- status.py: last contact, the Raft configuration and hashicorp/raft's `Stats()`;
- seams.py: what the driver needs of its storage and transport (Protocols) and `MemoryStorage`.

Storage: `FileStorage` (appliance/raft/storage.py) on servers, `MemoryStorage` for `-dev`. Raft's
frames go through appliance/raft/transport.py; `observers` see every applied entry, and the
replica feed (appliance/rpc/feed.py) streams them to client agents. The operator surface
(autopilot, operator requests, graceful leave) is appliance/raft/driver_autopilot.py.
"""

from .api import RaftDriver
from .seams import MemoryStorage, RaftLink, RaftStorage
from .status import go_duration

__all__ = ["MemoryStorage", "RaftDriver", "RaftLink", "RaftStorage", "go_duration"]
