"""What the agent's parts may ask of each other: small typed interfaces, never the `Agent`.

The composition root (appliance/agent.py) builds the subsystems and hands each consumer (the HTTP
handlers through `appliance.http.context.HTTPContext`, DNS, check runners, the `exporters` and
`sd` extensions) the interfaces it needs:

- `Consensus`: the write path and read points: a `RaftDriver` on a server, a `Replica` on a
  client agent (appliance/client/replica.py). Both satisfy it.
- catalog reads: the `Store` itself and the `WatchHub` (appliance/state), concrete classes.
- the local agent: `LocalState` (appliance/local/state.py: services, checks, maintenance, TTL
  updates) and `AgentControl` (sync-now after a change, reload, leave).
- `Membership`: the LAN (and WAN) gossip pools: members, join, leave, force-leave, keyring.
- `Federation`: other datacenters: their names, and a request carried to one.
- `Events`: user events; `Coordinates`: this agent's coordinate and coordinate updates.
- `AgentInfo`: what `/v1/agent/self` shows of the agent (rendered in appliance/http/render.py).
- `MeteredConsensus`: a `Consensus` with its metrics hook, which the agent's recorder replaces
  (appliance/telemetry); `Leadership`: whether this server leads the Raft cluster (a server's
  `RaftDriver`; a client agent has none).

They are Protocols: structural, so the concrete classes need not know about them, and a test may
pass a small fake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from appliance.config.runtime import RuntimeConfig
    from appliance.coordinates import Coordinate
    from appliance.federation.forward import Answer as RemoteAnswer, Exchange
    from appliance.gossip.serf import Member
    from appliance.raft.metrics import RaftMetrics


@runtime_checkable
class Consensus(Protocol):
    """The replicated log as the rest of the agent sees it."""

    async def propose(self, command: dict[str, Any]) -> Any: ...

    async def read_point(self, consistency: str) -> None: ...

    @property
    def known_leader(self) -> bool: ...

    @property
    def last_contact_ms(self) -> int: ...

    def leader_address(self) -> str: ...

    def configuration(self) -> dict[str, Any]: ...

    def peers(self) -> list[str]: ...

    def stats(self) -> dict[str, str]: ...


class AgentControl(Protocol):
    """What acts on the agent as a whole: after a change of its own services and checks (held in
    appliance/local/state.py `LocalState`, a concrete class), sync now; reload; leave."""

    async def changed(self) -> None:
        """Local state changed: wake hash-blocked readers and sync it to the catalog now."""
        ...

    async def reload(self) -> None: ...

    async def leave(self) -> None: ...

    def full_sync_soon(self) -> None:
        """Compare everything with the catalog at the next sync, soon (the agent's tokens changed)."""
        ...


class Membership(Protocol):
    """The gossip pools: members as Consul renders them, join, force-leave, the keyring."""

    def members(self, wan: bool = False, segment: str | None = None) -> list[Member]: ...

    def local_member(self) -> Member: ...

    async def join(self, addresses: list[str], wan: bool = False) -> int: ...

    def force_leave(self, node: str, prune: bool = False, wan: bool = False) -> None: ...

    async def keyring_operation(self, op: str, key: str, relay_factor: int = 0, wan: bool = False) -> Any: ...

    def stats(self) -> dict[str, Any]: ...

    def wan_stats(self) -> dict[str, Any] | None: ...


class Federation(Protocol):
    """Other datacenters (appliance/federation/forward.py)."""

    async def datacenters(self) -> list[str]: ...

    def known_datacenters(self) -> int: ...

    def wan_coordinates(self) -> list[tuple[str, Any]] | None:
        """(node.dc, coordinate) of the WAN pool's members; None when this agent is not in it."""
        ...

    async def request(self, dc: str, exchange: Exchange) -> RemoteAnswer: ...

    async def ask_server(self, exchange: Exchange) -> RemoteAnswer: ...


class Events(Protocol):
    """User events (appliance/events.py)."""

    def fire(self, name: str, payload: bytes, node: str, service: str, tag: str) -> Any: ...

    def list(self, name: str = "") -> Any: ...

    def index(self, events: Any) -> int: ...


class Coordinates(Protocol):
    """This agent's network coordinate and the batcher that writes updates to the log."""

    def lan_coordinate(self) -> Coordinate: ...

    def submit(self, update: dict[str, Any]) -> None: ...


class AgentInfo(Protocol):
    """What the agent says about itself (/v1/agent/self, the catalog's node record)."""

    @property
    def config(self) -> RuntimeConfig: ...

    def node_info(self) -> dict[str, Any]: ...

    def known_servers(self) -> int: ...


class MeteredConsensus(Consensus, Protocol):
    """A `Consensus` that reports what it times to a metrics hook (appliance/raft/metrics.py): the
    Raft driver and a client agent's replica both do; the agent's recorder sets the hook."""

    metrics: RaftMetrics


class Leadership(Protocol):
    """Whether this server is the Raft leader now (the Raft driver)."""

    @property
    def is_leader(self) -> bool: ...
