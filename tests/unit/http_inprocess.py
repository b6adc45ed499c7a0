"""In-process HTTP: a real Store, a one-voter in-memory Raft (as `-dev` runs it) and the typed
context, with request values dispatched straight to `routing.respond` (no socket, no process).

    async with http_agent() as api:
        answer = await api.call("PUT", "/v1/kv/a", b"1")
        assert answer.status == 200 and answer.json_body() is True
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from appliance.config import build_agent_config
from appliance.coordinates import CoordinateBatcher
from appliance.events import AgentEvents
from appliance.federation.forward import Answer as RemoteAnswer, Exchange, ForwardError
from appliance.gossip.coordinate import Coordinate
from appliance.http.context import HTTPContext
from appliance.http.remote_dc import run_local
from appliance.http.routes import ROUTES
from appliance.http.routing import Router, respond
from appliance.http.values import Answer, Request
from appliance.local.state import LocalState
from appliance.local.sync import StateSyncer
from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.messages import Configuration, Server
from appliance.seams import Control, Coordinates, Info
from appliance.state.store import Store
from appliance.telemetry import Telemetry
from appliance.watch import WatchHub


class NoMembers:
    """Membership of an agent alone (no gossip pool)."""

    def members(self, wan: bool = False, segment: str | None = None) -> list[Any]:
        return []

    async def join(self, addresses: list[str], wan: bool = False) -> int:
        from appliance.gossip.driver import JoinError

        raise JoinError("no gossip pool in-process")

    def force_leave(self, node: str, prune: bool = False, wan: bool = False) -> None:
        raise KeyError(f"agent: No node found with name '{node}'")


class Datacenters:
    """Federation where other datacenters answer through a function (or are unreachable)."""

    def __init__(self, dc: str) -> None:
        self.dc = dc
        self.remote: dict[str, Any] = {}  # dc -> async (Exchange) -> RemoteAnswer
        self.sent: list[tuple[str, Exchange]] = []

    async def datacenters(self) -> list[str]:
        return sorted({self.dc, *self.remote})

    def known_datacenters(self) -> int:
        return 1 + len(self.remote)

    def wan_coordinates(self) -> None:
        return None

    async def request(self, dc: str, exchange: Exchange) -> RemoteAnswer:
        self.sent.append((dc, exchange))
        answer = self.remote.get(dc)
        if answer is None:
            raise ForwardError("No path to datacenter")
        return await answer(exchange)

    async def ask_server(self, exchange: Exchange) -> RemoteAnswer:
        raise ForwardError("No known Consul servers")


class InProcessAgent:
    def __init__(self, ctx: HTTPContext, router: Router, raft: RaftDriver) -> None:
        self.ctx, self.router, self.raft = ctx, router, raft
        self.dispatched: list[Request] = []

    async def dispatch(self, req: Request) -> Answer:
        self.dispatched.append(req)
        return await respond(self.router, req, self.ctx)

    async def call(self, method: str, target: str, body: bytes | str | Any = b"",
                   headers: dict[str, str] | None = None) -> Answer:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        return await self.dispatch(Request(method, target, headers, body))

    async def serve_exchange(self, exchange: Exchange) -> RemoteAnswer:
        """A request from another datacenter, as server RPC hands it over (remote_dc.run_local)."""
        return await run_local(self.dispatch, exchange)


def inprocess(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """An async test body run on its own event loop (pytest sees a plain function, its fixtures kept)."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))
    return run


def json_body(answer: Answer) -> Any:
    return json.loads(answer.body or b"null")


@contextlib.asynccontextmanager
async def http_agent(*flags: str, node: str = "n1") -> AsyncIterator[InProcessAgent]:
    config = build_agent_config(["-dev", "-node", node, "-log-level", "warn", *flags])
    rng = random.Random(7)
    store, hub = Store(), WatchHub()
    raft = RaftDriver(store, node_id=config.node_id or node, address="127.0.0.1:8300", storage=MemoryStorage(),
                      config=RaftConfig(raft_multiplier=config.raft_multiplier), rng=rng,
                      on_fatal=lambda err: None)
    raft.subscribe(hub.notify)
    raft.open(Configuration((Server(raft.node_id, raft.address),)))
    await raft.start()
    local = LocalState(config.node_name, config.datacenter, config.check_output_max_size)

    def node_info() -> dict[str, Any]:
        return {"Node": config.node_name, "ID": config.node_id, "Address": "127.0.0.1",
                "Datacenter": config.datacenter, "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
                "NodeMeta": {"consul-network-segment": ""}}

    syncer = StateSyncer(store, raft, local, node_info, rng=rng, cluster_size=lambda: 1)

    async def leave() -> None:
        return None

    ctx = HTTPContext(
        config=config, store=store, hub=hub, consensus=raft, local=local,
        control=Control(lambda: hub.notify(("local",)), syncer.sync_now, leave, leave),
        membership=NoMembers(),  # type: ignore[arg-type]
        federation=Datacenters(config.datacenter),
        events=AgentEvents(config.node_name, lambda: [], notify=hub.notify),
        coordinates=Coordinates(Coordinate.origin, CoordinateBatcher(raft.propose)),
        info=Info(lambda: config, node_info, lambda: 0),
        telemetry=Telemetry(hostname="test"), raft=raft, rng=rng)
    try:
        for _ in range(500):  # the one voter elects itself
            if raft.is_leader:
                break
            await asyncio.sleep(0.01)
        await syncer.sync_now()
        yield InProcessAgent(ctx, Router(ROUTES), raft)
    finally:
        await raft.stop()
