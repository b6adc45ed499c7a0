"""The agent's side of appliance/interfaces.py: small classes over the subsystems it built.

The composition root (appliance/agent.py) builds these from its parts and hands them out through
`HTTPContext` (appliance/http/context.py); nothing here holds the `Agent`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from appliance.federation.forward import Answer, Exchange, Forwarder, ForwardError
from appliance.gossip.driver import JoinError

if TYPE_CHECKING:
    from appliance.config.runtime import RuntimeConfig
    from appliance.coordinates import CoordinateBatcher
    from appliance.federation.pool import WanPool
    from appliance.gossip.coordinate import Coordinate
    from appliance.gossip.serf import Member

log = logging.getLogger("agent")


class GossipMembership:
    """`Membership` over the LAN pool's driver and the WAN pool (None: not in it)."""

    def __init__(self, gossip: Any, wan: WanPool | None) -> None:
        self.gossip = gossip
        self.wan = wan

    def members(self, wan: bool = False, segment: str | None = None) -> list[Member]:
        """The LAN pool as this agent sees it (failed and left members until reaped). `segment`
        keeps one network segment's members ("" the default segment); `wan` lists the WAN pool
        (empty on a client agent and in -dev, which are not in it)."""
        if wan:
            return list(self.wan.members()) if self.wan is not None else []
        return [m for m in self.gossip.members() if segment is None or m.tags.get("segment", "") == segment]

    def local_member(self) -> Member:
        return self.gossip.local_member()

    async def join(self, addresses: list[str], wan: bool = False) -> int:
        """PUT /v1/agent/join and `cairn join`: the number of agents contacted (JoinError if none)."""
        if wan and self.wan is None:
            raise JoinError("Must be a server to join WAN cluster")
        pool = "WAN" if wan else "LAN"
        log.info("(%s) joining: %s_addresses=[%s]", pool, pool.lower(), " ".join(addresses))
        try:
            n = await (self.wan.join(addresses) if wan and self.wan is not None else self.gossip.join(addresses))
        except JoinError as err:
            log.warning("(%s) couldn't join: number_of_nodes=0 error=%s", pool, err)
            raise
        log.info("(%s) joined: number_of_nodes=%d", pool, n)
        return n

    def force_leave(self, node: str, prune: bool = False, wan: bool = False) -> None:
        """PUT /v1/agent/force-leave: mark a member left; KeyError with Consul's text if unknown.
        `wan`: a member of the WAN pool (`<node>.<dc>`)."""
        log.info("Force leaving node: node=%s", node)
        pool = self.gossip if not wan else self.wan.driver if self.wan is not None else None
        if pool is None or not pool.force_leave(node, prune=prune):
            raise KeyError(f"agent: No node found with name '{node}'")

    async def keyring_operation(self, op: str, key: str, relay_factor: int = 0, wan: bool = False) -> Any:
        """A keyring operation on the LAN pool, or the WAN pool (None when this agent has none)."""
        if wan:
            return None if self.wan is None else await self.wan.driver.keyring_operation(op, key, relay_factor)
        return await self.gossip.keyring_operation(op, key, relay_factor)

    def stats(self) -> dict[str, Any]:
        return self.gossip.stats()

    def wan_stats(self) -> dict[str, Any] | None:
        return self.wan.driver.stats() if self.wan is not None else None


class Federation:
    """`Federation`: the WAN pool's datacenters, and requests carried by the agent's Forwarder."""

    def __init__(self, config: Callable[[], RuntimeConfig], forwarder: Forwarder, wan: WanPool | None) -> None:
        self.config = config
        self.forwarder = forwarder
        self.wan = wan

    async def datacenters(self) -> list[str]:
        """/v1/catalog/datacenters: the WAN pool's, nearest first; a client agent asks a server."""
        if self.wan is not None:
            return self.wan.datacenters()
        cfg = self.config()
        if cfg.server:
            return [cfg.datacenter]  # -dev, or serf_wan -1: no WAN pool
        answer = await self.forwarder.ask_server(Exchange("GET", "/v1/catalog/datacenters"))
        if answer.status != 200:
            raise ForwardError(answer.body.decode("utf-8", "replace"))
        return json.loads(answer.body)

    def known_datacenters(self) -> int:
        return len(self.wan.datacenters()) if self.wan is not None else 1

    def wan_coordinates(self) -> list[Any] | None:
        return self.wan.coordinate_maps() if self.wan is not None else None

    async def request(self, dc: str, exchange: Exchange) -> Answer:
        return await self.forwarder.request(dc, exchange)

    async def ask_server(self, exchange: Exchange) -> Answer:
        return await self.forwarder.ask_server(exchange)


class Control:
    """`AgentControl` over the agent's callables (sync after a local change, reload, leave)."""

    def __init__(self, changed: Callable[[], None], sync_now: Callable[[], Awaitable[Any]],
                 reload: Callable[[], Awaitable[None]], leave: Callable[[], Awaitable[None]],
                 full_sync_soon: Callable[[], None] = lambda: None) -> None:
        self._changed, self._sync_now, self._reload, self._leave = changed, sync_now, reload, leave
        self.full_sync_soon = full_sync_soon

    async def changed(self) -> None:
        self._changed()
        await self._sync_now()

    async def reload(self) -> None:
        await self._reload()

    async def leave(self) -> None:
        await self._leave()


class Coordinates:
    """`Coordinates`: this agent's LAN coordinate and the batcher of coordinate updates."""

    def __init__(self, lan_coordinate: Callable[[], Coordinate], batcher: CoordinateBatcher) -> None:
        self.lan_coordinate = lan_coordinate
        self.batcher = batcher

    def submit(self, update: dict[str, Any]) -> None:
        self.batcher.submit(update)


class Info:
    """`AgentInfo`: the agent's configuration, catalog node record and known servers."""

    def __init__(self, config: Callable[[], RuntimeConfig], node_info: Callable[[], dict[str, Any]],
                 known_servers: Callable[[], int]) -> None:
        self._config, self.node_info, self.known_servers = config, node_info, known_servers

    @property
    def config(self) -> RuntimeConfig:
        return self._config()
