"""The Raft driver: one asyncio task around a RaftHost (its core and the FSM) and its storage.

`RaftDriver` is what the agent holds on a server (appliance/interfaces.py `Consensus`): proposals
in, the applied FSM out, read points for the HTTP reads, the status `/v1/agent/self` shows. Its
parts, each a mixin over one typed state (as the core's rules are over core_state.py):

- base.py: the state every part shares, the inbox (`_post`), and the leader as this server knows it;
- api.py: `RaftDriver` itself: life cycle (`open`, `serve`), proposals, forwarding to the leader,
  membership changes and leadership transfer, messages in from the transport;
- loop.py: the task that drains the inbox into the host (appliance/raft/host.py, the sans-IO
  host the simulator and the transcripts run too) and persists each `Ready` it hands out;
- reads.py: the read path: read index (thesis §6.4; the host batches the reads of a drain),
  Consul's default leader read, waiting until an index is applied;
- timing.py: the host hook that times Consul's `consul.raft.*` metrics (appliance/raft/metrics.py);
- status.py: last contact, the Raft configuration and hashicorp/raft's `Stats()`;
- seams.py: what the driver needs of its transport (a Protocol).

Storage (appliance/raft/durable.py `RaftStorage`): `FileStorage` (appliance/raft/storage.py) on
servers, `MemoryStorage` for `-dev`. Raft's
frames go through appliance/raft/transport.py; `observers` see every applied entry, and the
replica feed (appliance/rpc/feed.py) streams them to client agents. The operator surface
(autopilot, operator requests, graceful leave) is appliance/raft/driver_autopilot.py.
"""

from ..durable import MemoryStorage, RaftStorage
from .api import RaftDriver
from .seams import RaftLink

__all__ = ["MemoryStorage", "RaftDriver", "RaftLink", "RaftStorage"]
