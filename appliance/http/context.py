"""What an HTTP handler may use: one dataclass of typed fields, built by the composition root.

Handlers are `async def handler(req: Request, ctx: HTTPContext) -> Answer`; they never see the
`Agent` (appliance/interfaces.py names each seam). The same context serves the aiohttp adapter,
requests from other datacenters (remote_dc.py) and the in-process tests.

The packages that build on the agent (metrics exporters, Prometheus SD) are mounted with the same
context (`load_extensions`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.http.values import RenderCache
from appliance.state import watchkeys

if TYPE_CHECKING:
    from appliance.config.runtime import RuntimeConfig
    from appliance.interfaces import AgentControl, AgentInfo, Consensus, Coordinates, Events, Federation, Membership
    from appliance.local.state import LocalState
    from appliance.raft.driver import RaftDriver
    from appliance.raft.driver_autopilot import Autopilot
    from appliance.state.store import Store
    from appliance.telemetry import Telemetry
    from appliance.watch import WatchHub

EXTENSION_GROUP = "cairn.extensions"


@dataclass(slots=True, eq=False)
class HTTPContext:
    config: RuntimeConfig
    store: Store  # catalog reads
    hub: WatchHub  # blocking waits on watch keys
    consensus: Consensus  # writes and read points
    local: LocalState  # this agent's services and checks (appliance/local/state.py)
    control: AgentControl  # sync-now, reload, leave
    membership: Membership
    federation: Federation
    events: Events
    coordinates: Coordinates
    info: AgentInfo
    telemetry: Telemetry
    autopilot: Autopilot | None = None  # servers only
    raft: RaftDriver | None = None  # a server's Raft (snapshots); None on a client agent
    rng: random.Random = field(default_factory=random.Random)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("agent"))
    render_cache: RenderCache = field(default_factory=RenderCache)
    acl: Any = None  # this agent's ACL state (appliance/http/authz.py), made on first use with acl.enabled
    connect: Any = None  # this agent's leaf cache (appliance/http/handlers/connect_ca.py), made on first use
    loop_time: Callable[[], float] = time.monotonic  # the event loop's clock (monotonic)
    pretty: bool = field(init=False)  # -dev: JSON is indented unless asked otherwise
    stopping: bool = field(init=False, default=False)  # the server is stopping: blocking reads answer now
    response_headers: dict[str, str] = field(init=False)  # on every answer

    def __post_init__(self) -> None:
        self.pretty = self.config.pretty_json
        self.response_headers = {"X-Consul-Default-ACL-Policy": self.config.acl.default_policy,
                                 **self.config.http_response_headers}


def load_extensions(ctx: HTTPContext) -> list[Any]:
    """Mount the packages that build on the agent (metrics exporters, Prometheus SD).

    They depend on `appliance`, never the reverse, so the agent finds them through the
    `cairn.extensions` entry point group: each entry is a `mount(ctx) -> extension` callable given
    this context, never the agent. An extension has `routes` (appliance.http.routes.Route), and
    may have `async serve(task_status=...)`, run in the agent's task tree like a subsystem
    (appliance/lifecycle.py).
    """
    from importlib.metadata import entry_points

    return [entry.load()(ctx) for entry in sorted(entry_points(group=EXTENSION_GROUP), key=lambda e: e.name)]


async def park(ctx: HTTPContext, keys: tuple[str, ...], prefixes: tuple[str, ...], timeout: float) -> bool:
    """A blocking read's wait on the watch hub: until one of `keys`/`prefixes` is touched, `timeout`
    seconds pass or the HTTP server starts stopping (then it returns False, and so does every
    later call: the read answers with what it has, as at the end of its wait)."""
    if ctx.stopping:
        return False
    return await ctx.hub.wait((*keys, watchkeys.HTTP_STOPPING), prefixes, timeout) and not ctx.stopping
