"""Runs watch plans: the blocking-query loop, and the agent's `watches` subsystem.

`run_plan(plan, api, handler)` is the loop of one watch: ask the agent (`plan.query()`, a
blocking GET), let the plan decide (`plan.observe`), run the handler when it fires, and on an
error wait the plan's back-off and log `Watch errored`. It runs until it is cancelled; a handler
that raises `StopWatch` ends it (`cairn watch` stops on a failed handler).

`WatchService` is the agent's subsystem for the `watches` block. `compile_watches(config)`
checks every definition with Consul's texts (`Failed to parse watch (...)`, `Handler type 'x'
not recognized`, `Only one watch handler allowed`, ...) before anything runs; `serve()` starts
one task per plan against the agent's own HTTP API (its first HTTP listener, the default
token) and `reload(config)` checks the new block, then restarts every plan, as Consul does
(each fires once more with the current data). A block that does not check out keeps the
running plans and raises `WatchError` (the agent logs it as a failed reload).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.watches.client import BLOCKING_TIMEOUT_S, AgentClient, Unreachable
from appliance.watches.handlers import Handler, http_handler, script_handler
from appliance.watches.plan import Plan, WatchError, WatchSpec, parse

log = logging.getLogger("agent.watch")

DEPRECATED_HANDLER = ("The 'handler' field in watches has been deprecated and replaced with the 'args' "
                      "field. See https://www.consul.io/docs/agent/watches.html")


class StopWatch(Exception):
    """Raised by a handler to end its watch's loop."""


async def run_plan(plan: Plan, api: AgentClient, handler: Handler, logger: logging.Logger = log) -> None:
    while True:
        query = plan.query()
        try:
            reply = await api.get(query.path, query.params, token=plan.spec.token,
                                  timeout_s=BLOCKING_TIMEOUT_S)
            if plan.is_error(reply.status):
                raise WatchError(f"Unexpected response code: {reply.status} ({reply.text()})")
            body = reply.json() if reply.status != 404 else None
        except (Unreachable, WatchError, ValueError) as err:
            retry = plan.failed()
            logger.error("Watch errored: type=%s error=%s retry=%ss", plan.spec.type, err, f"{retry:g}")
            await asyncio.sleep(retry)
            continue
        fire = plan.observe(reply.status, reply.index, body)
        if fire is not None:
            try:
                await handler(fire.index, fire.data)
            except StopWatch:
                return


# ------------------------------------------------------------------------------------------
# the agent's watches block


@dataclass(frozen=True)
class AgentWatch:
    spec: WatchSpec
    handler: Handler


def _go_map(params: Mapping[str, Any]) -> str:
    """A definition in the message of a refused watch (Go's %#v of the map, roughly)."""
    inner = ", ".join(f'"{k}":{v!r}' for k, v in params.items())
    return "map[string]interface {}{" + inner + "}"


def compile_watch(params: Mapping[str, Any], logger: logging.Logger = log) -> AgentWatch:
    """One entry of `watches`: Consul's checks (agent.reloadWatches and makeWatchPlan)."""
    params = dict(params)
    if "handler_type" not in params:
        params["handler_type"] = "script"
    elif params["handler_type"] not in ("http", "script"):
        raise WatchError(f"Handler type '{params['handler_type']}' not recognized")
    kind = params.get("type")
    if isinstance(kind, str) and kind.startswith("connect_"):
        raise WatchError(f"Watch type {kind} is not allowed in agent config")
    try:
        spec = parse(params, exempt=("handler", "args"))
    except WatchError as err:
        raise WatchError(f"Failed to parse watch ({_go_map(params)}): {err}") from None
    has_handler, has_args = "handler" in spec.exempt, "args" in spec.exempt
    if has_handler:
        logger.warning(DEPRECATED_HANDLER)
        if not isinstance(spec.exempt["handler"], str):
            raise WatchError("Watch handler must be a string")
    if has_args:
        args = spec.exempt["args"]
        if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
            raise WatchError("Watch args must be a list of strings")
    is_http = spec.handler_type == "http"
    if (has_handler and has_args) or (is_http and (has_handler or has_args)):
        raise WatchError("Only one watch handler allowed")
    if not (has_handler or has_args or is_http):
        raise WatchError("Must define a watch handler")
    if has_handler:
        handler = script_handler(spec.exempt["handler"], logger)
    elif has_args:
        handler = script_handler(list(spec.exempt["args"]), logger)
    else:
        assert spec.http_handler is not None
        handler = http_handler(spec.http_handler, logger)
    return AgentWatch(spec, handler)


def agent_address(config: Any) -> tuple[str, bool]:
    """The agent's own HTTP API: (base URL, is https). Wildcard binds become loopback."""
    ports = config.ports
    if ports.http >= 0:
        scheme, port, addrs = "http", ports.http, config.listen_addrs("http")
    elif ports.https >= 0:
        scheme, port, addrs = "https", ports.https, config.listen_addrs("https")
    else:
        raise WatchError("watch plans require an HTTP or HTTPS endpoint")
    host = next((a for a in addrs if not a.startswith("unix://")), "127.0.0.1")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}", scheme == "https"


def compile_watches(config: Any, logger: logging.Logger = log) -> list[AgentWatch]:
    watches: Sequence[Mapping[str, Any]] = getattr(config, "watches", ()) or ()
    if not watches:
        return []
    agent_address(config)  # refuses an agent with no HTTP listener
    return [compile_watch(w, logger) for w in watches]


class WatchService:
    """The agent's `watches`: one task per plan; `reload` swaps them all."""

    def __init__(self, config: Any, logger: logging.Logger = log) -> None:
        self.log = logger
        self._config = config
        self._watches = compile_watches(config, logger)
        self._tasks: list[asyncio.Task[None]] = []
        self._api: AgentClient | None = None
        self._running = False

    @property
    def count(self) -> int:
        return len(self._tasks)

    def _start(self) -> None:
        if not self._watches:
            return
        base_url, https = agent_address(self._config)
        token = self._config.acl.tokens.get("default", "") if hasattr(self._config, "acl") else ""
        self._api = AgentClient(base_url, token=token, verify_tls=not https)
        for watch in self._watches:
            task = asyncio.get_running_loop().create_task(
                run_plan(Plan(watch.spec), self._api, watch.handler, self.log), name=f"watch:{watch.spec.type}")
            task.add_done_callback(self._done)
            self._tasks.append(task)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("Watch stopped: %s", task.exception())

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def reload(self, config: Any) -> None:
        """Check the new block (raising WatchError keeps the running plans), then restart all."""
        watches = compile_watches(config, self.log)
        self._config, self._watches = config, watches
        if self._running:
            await self._stop()
            self._start()

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        self._running = True
        self._start()
        task_status.started()
        try:
            await asyncio.Event().wait()
        finally:
            self._running = False
            await asyncio.shield(self._stop())
