"""The check manager: one task per running check, results into the agent's local state.

How it works
------------
`reconcile()` compares the checks in the local state (`LocalState.checks`) with the runners it
owns and starts, stops or restarts them. It is called whenever local state changes (the `changed`
callable the manager is given, appliance/local/agent.py),
is synchronous and cheap (an identity or equality test per check), and never awaits. A check
whose definition did not change keeps its runner, its flap-damping counters and its last status,
across re-registration and reload alike; a changed definition gets a new runner.

Interval checks (script, HTTP, TCP, UDP) wait a random stagger in [0, interval) first, then run
once per interval, measured from the end of the previous run, so a check never overlaps
itself. Executions share a semaphore (64 by default) so a burst of checks cannot open
unbounded processes or sockets. Each raw result goes through the check's `FlapDamper`
(rules.py) and is stored with `LocalState.set_status(...)`; if status or output changed,
`changed()` wakes anti-entropy. Alias checks are event-driven (alias.py) and store
their result directly. TTL and maintenance checks have no runner: LocalState and the syncer
handle them. A check cairn cannot run (gRPC, Docker, H2PING, OSService) or a script check this
agent does not allow is set critical with an output saying why.

`deregister_critical_service_after`: every `reap_interval_s` (30 s, as Consul) the reaper
removes a service whose check has been critical for longer than its setting (never less than
Consul's minimum of one minute) and logs Consul's line.

Test hook: the environment variable `CAIRN_TEST_CHECK_REAP_INTERVAL` (seconds, e.g. `0.2`)
sets the reap interval and removes the one-minute minimum, so tests need not wait minutes.

`stop()` cancels every runner; a script runner kills its process group and reaps the child when
cancelled (script.py), and any group still recorded is killed as a last sweep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.checks.alias import run_alias
from appliance.checks.http import HTTPChecker
from appliance.checks.rules import (
    CRITICAL,
    RUNNABLE_KINDS,
    UNSUPPORTED_KINDS,
    FlapDamper,
    unsupported_check_text,
)
from appliance.checks.script import ProcessGroups, run_script
from appliance.checks.tcp import run_tcp
from appliance.checks.udp import run_udp
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.local.definitions import CheckDefinition, DefinitionError, ServiceDefinition
from appliance.local.state import LocalCheck, LocalState

if TYPE_CHECKING:
    from appliance.config.runtime import RuntimeConfig
    from appliance.state.store import Store
    from appliance.watch import WatchHub

log = logging.getLogger("agent")

REAP_INTERVAL_ENV = "CAIRN_TEST_CHECK_REAP_INTERVAL"
DEFAULT_REAP_INTERVAL_S = 30.0
DEREGISTER_MINIMUM_S = 60.0
MAX_CONCURRENT_CHECKS = 64
STOP_TIMEOUT_S = 5.0

SCRIPTS_DISABLED_CONFIG = ("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
                           "'enable_local_script_checks' to true")
SCRIPTS_DISABLED_REMOTE = ("Scripts are disabled on this agent from remote calls; to enable, configure "
                           "'enable_script_checks' to true")


def scripts_refusal(config: RuntimeConfig, source: str) -> str | None:
    """Why a script check from `source` ("config" or "api") may not run here, or None."""
    if config.enable_script_checks:
        return None
    if source == "config":
        return None if config.enable_local_script_checks else SCRIPTS_DISABLED_CONFIG
    return SCRIPTS_DISABLED_REMOTE


def _same(a: CheckDefinition, b: CheckDefinition) -> bool:
    return a is b or a == b


@dataclass
class _Runner:
    definition: CheckDefinition
    damper: FlapDamper
    task: asyncio.Task[None] | None = None


class CheckManager:
    """Runs the checks of `local`; `changed()` is called after it stored a result or reaped a
    service; `config()` is the agent's current configuration (script checks allowed or not);
    alias checks read `store` and wait on `hub`."""

    def __init__(self, local: LocalState, *, changed: Callable[[], None], config: Callable[[], RuntimeConfig],
                 store: Store, hub: WatchHub, max_concurrent: int = MAX_CONCURRENT_CHECKS,
                 reap_interval_s: float | None = None, deregister_minimum_s: float | None = None,
                 rng: random.Random | None = None) -> None:
        self.local = local
        self.changed = changed
        self.config = config
        self.store = store
        self.hub = hub
        self.rng = rng or random.Random()
        env = os.environ.get(REAP_INTERVAL_ENV, "")
        fast = float(env) if env else None
        self.reap_interval_s = reap_interval_s or fast or DEFAULT_REAP_INTERVAL_S
        if deregister_minimum_s is None:
            deregister_minimum_s = 0.0 if fast else DEREGISTER_MINIMUM_S
        self.deregister_minimum_s = deregister_minimum_s
        self.max_concurrent = max_concurrent
        self.runners: dict[str, _Runner] = {}
        self.groups = ProcessGroups()
        self.http = HTTPChecker()
        self._sem: asyncio.Semaphore | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopped = False
        self._reconciling = False
        self._again = False

    # ------------------------------------------------------------------ reconcile

    def reconcile(self) -> None:
        """Bring the runners in line with `local.checks` (start, stop, restart)."""
        if not self._started or self._stopped:
            return
        if self._reconciling:  # a refusal stored below called local_changed(): go round again
            self._again = True
            return
        self._reconciling = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._reconcile_once()
        finally:
            self._reconciling = False

    def _reconcile_once(self) -> None:
        checks = self.local.checks
        for cid in list(self.runners):
            runner = self.runners[cid]
            local = checks.get(cid)
            if local is None or not _same(runner.definition, local.definition):
                self._cancel(cid)
            else:
                runner.definition = local.definition
        for kind in (*RUNNABLE_KINDS, *UNSUPPORTED_KINDS):
            for cid in sorted(self.local.kinds.get(kind, ())):
                if cid not in self.runners:
                    self._start(checks[cid])

    def _cancel(self, cid: str) -> None:
        runner = self.runners.pop(cid)
        if runner.task is not None and not runner.task.done():
            runner.task.cancel()
            self._stopping.add(runner.task)
            runner.task.add_done_callback(self._stopping.discard)

    def _start(self, local: LocalCheck) -> None:
        d = local.definition
        runner = _Runner(d, FlapDamper(d.success_before_passing, d.failures_before_warning,
                                       d.failures_before_critical))
        self.runners[d.id] = runner
        refusal = unsupported_check_text(d.kind)
        if refusal is None and d.kind == "script":
            refusal = scripts_refusal(self.config(), local.source)
        if refusal is not None:
            log.error("Check not started: check=%s error=%r", d.id, refusal)
            self._store(runner, CRITICAL, refusal)
            return
        if d.kind == "alias":
            coro = run_alias(self.store, self.hub, self.config().node_name, d,
                             lambda status, output: self._store(runner, status, output))
        else:
            coro = self._loop(runner)
        runner.task = asyncio.get_running_loop().create_task(coro, name=f"check:{d.id}")

    # ------------------------------------------------------------------ running

    async def _loop(self, runner: _Runner) -> None:
        d = runner.definition
        await asyncio.sleep(self.rng.uniform(0, d.interval_s))
        assert self._sem is not None
        while True:
            async with self._sem:
                status, output = await self._execute(d)
            self._apply(runner, status, output)
            await asyncio.sleep(d.interval_s)

    async def _execute(self, d: CheckDefinition) -> tuple[str, str]:
        max_size = d.output_max_size or self.local.output_max_size
        try:
            if d.kind == "script":
                return await run_script(d.script_args, d.timeout_s or 30.0, max_size, self.groups)
            if d.kind == "http":
                return await self.http.run(d)
            if d.kind == "tcp":
                return await run_tcp(d)
            if d.kind == "udp":
                return await run_udp(d)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - a runner bug makes the check critical, never kills it
            log.error("Check failed to run: check=%s error=%r", d.id, str(err))
            return CRITICAL, f"check failed to run: {err}"
        return CRITICAL, f"unknown check type {d.kind!r}"

    def _apply(self, runner: _Runner, status: str, output: str) -> None:
        """A raw result: through the flap damper, then stored."""
        d = runner.definition
        if self.runners.get(d.id) is not runner:
            return  # stopped or replaced while it ran
        local = self.local.checks.get(d.id)
        if local is None:
            return
        decision = runner.damper.decide(local.status, status, output)
        if decision.event == "critical":
            log.warning("Check is now critical: check=%s", d.id)
        elif decision.event == "warning":
            log.warning("Check is now warning: check=%s", d.id)
        elif decision.event == "updated":
            log.debug("Check status updated: check=%s status=%s", d.id, decision.status)
        elif decision.event == "below_success":
            log.debug("Check passed but has not reached success threshold: check=%s status=%s "
                      "success_count=%d success_threshold=%d", d.id, status, runner.damper.successes,
                      runner.damper.success_before_passing)
        else:
            log.debug("Check failed but has not reached warning/failure threshold: check=%s status=%s "
                      "failure_count=%d warning_threshold=%d failure_threshold=%d", d.id, status,
                      runner.damper.failures, runner.damper.failures_before_warning,
                      runner.damper.failures_before_critical)
        self._store(runner, decision.status, decision.output)

    def _store(self, runner: _Runner, status: str, output: str) -> None:
        d = runner.definition
        if self.runners.get(d.id) is not runner:
            return
        local = self.local.checks.get(d.id)
        if local is None or (local.status == status and local.output == output):
            return
        local = self.local.set_status(d.id, status, output, time.monotonic())
        if d.kind == "script":
            local.output = output  # already capped by the script's tail buffer, with its own header
        self.changed()

    # ------------------------------------------------------------------ reaper

    def reap(self, now: float) -> list[str]:
        """Deregister services whose check stayed critical too long; return their IDs."""
        local = self.local
        reaped = []
        for cid, check in list(local.checks.items()):
            d = check.definition
            after = d.deregister_critical_service_after_s
            if not d.service_id or after <= 0 or check.status != CRITICAL or check.critical_since is None:
                continue
            if d.service_id not in local.services:
                continue
            if now - check.critical_since > max(after, self.deregister_minimum_s):
                local.remove_service(d.service_id)
                reaped.append(d.service_id)
                log.info("Check for service has been critical for too long; deregistered service: "
                         "service=%s check=%s", d.service_id, cid)
        if reaped:
            self.changed()
        return reaped

    # ------------------------------------------------------------------ lifecycle

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """Start the runners for what is registered now, then reap until cancelled; on the way
        down, stop every runner (scripts are killed with their process group and reaped)."""
        self._sem = asyncio.Semaphore(self.max_concurrent)
        self._started = True
        self.reconcile()
        task_status.started()
        try:
            while True:
                await asyncio.sleep(self.reap_interval_s)
                self.reap(time.monotonic())
        finally:
            await self._stop_runners()

    async def _stop_runners(self) -> None:
        self._stopped = True
        tasks = [r.task for r in self.runners.values() if r.task is not None] + list(self._stopping)
        self.runners.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        self.groups.kill_all()
        await self.http.close()


def refuse_config_checks(config: RuntimeConfig, services: list[ServiceDefinition],
                         checks: list[CheckDefinition]) -> None:
    """Agent start and reload: a config file may not define a check this agent will not run.

    Raises DefinitionError with Consul's text for script checks while both script options are
    off, and with cairn's text for check types it does not support."""
    every = list(checks) + [c for svc in services for c in svc.checks]
    for check in every:
        text = unsupported_check_text(check.kind)
        if text is None and check.kind == "script":
            text = scripts_refusal(config, "config")
        if text is not None:
            raise DefinitionError(text)
