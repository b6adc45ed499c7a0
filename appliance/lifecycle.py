"""The agent's task tree: one root group, subsystems started in order, one way down.

How it works. Each subsystem is an `async def serve(..., task_status)` that binds its sockets (or
loads its state), calls `task_status.started()`, then runs until it is cancelled, cleaning up in
its own `finally`. `Lifecycle.start()` runs one such `serve` as a child task and returns only once
it has reported started, so the next subsystem starts on top of a running one (the Raft log is
replayed before anything reads the store; the HTTP server binds last). A `serve` that raises
before `started()` makes `start()` raise that same error (an `OSError` for a port in use, noted
"while starting <name>"); one that returns first raises `StartError`. The block's exit then stops
what was already started, newest first.

Leaving the `async with` block is the one way down: the children are cancelled one at a time in
reverse start order, each given `stop_timeout_s` to finish its cleanup, so the HTTP server stops
accepting requests before the Raft driver it proposes to is gone, and gossip's sockets close
after everything that broadcasts over them. A graceful leave runs before that, inside the block,
through `shielded()`: bounded by a deadline and shielded from a second signal's cancellation.

A started child that fails later is logged with its traceback and reported to `on_failure` (the
agent shuts down with exit code 1); it never takes its siblings down abruptly. Background jobs
that may finish on their own (retry-join) go in with `start_soon()`.

This is the standard library's asyncio (decision of 2026-12-07 in docs/decisions.md), not
`asyncio.TaskGroup`: a TaskGroup cancels every child at once and waits for them without a bound,
where the agent needs reverse order and a deadline. The children are plain asyncio tasks owned by
this object; after the block no task it started is left running unless one ignored cancellation
past its deadline, which is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

log = logging.getLogger("agent.lifecycle")

T = TypeVar("T")

STOP_TIMEOUT_S = 5.0  # per subsystem, after its cancellation


class TaskStatus(Protocol):
    def started(self, value: Any = None) -> None: ...


class _Ignored:
    """The `task_status` of a serve() called outside a Lifecycle (tests, tools)."""

    def started(self, value: Any = None) -> None:
        pass


TASK_STATUS_IGNORED: TaskStatus = _Ignored()


class StartError(Exception):
    """A subsystem returned before it reported started."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: returned before it started")
        self.name = name


class _Status:
    def __init__(self, future: asyncio.Future[Any]) -> None:
        self._future = future

    def started(self, value: Any = None) -> None:
        if not self._future.done():
            self._future.set_result(value)


@dataclass(eq=False)
class _Child:
    name: str
    task: asyncio.Task[None] | None = None
    stop_timeout_s: float = STOP_TIMEOUT_S
    error: BaseException | None = None
    started: asyncio.Future[Any] | None = field(default=None, repr=False)


class Lifecycle:
    """`async with Lifecycle() as life:` start subsystems in order; leaving the block stops them."""

    def __init__(self, *, stop_timeout_s: float = STOP_TIMEOUT_S,
                 on_failure: Callable[[str, BaseException], None] | None = None) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.on_failure = on_failure
        self._children: list[_Child] = []
        self._stopping = False
        self.errors: list[tuple[str, BaseException]] = []  # started children that failed later

    async def __aenter__(self) -> Lifecycle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ starting

    async def start(self, name: str, serve: Callable[..., Awaitable[None]], *args: Any,
                    stop_timeout_s: float | None = None) -> Any:
        """Run `serve(*args, task_status=...)` as a child; return the value it reports started
        with. Raises what it raised before that, or StartError if it returned first."""
        loop = asyncio.get_running_loop()
        child = self._add(name, stop_timeout_s)
        child.started = loop.create_future()
        child.task = loop.create_task(self._guard(child, serve(*args, task_status=_Status(child.started))),
                                      name=name)
        try:
            await asyncio.wait((child.started, child.task), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            child.started.cancel()
            raise
        if child.started.done():
            return child.started.result()
        child.started.cancel()
        if child.error is not None:
            child.error.add_note(f"while starting {name}")
            raise child.error
        raise StartError(name)

    def start_soon(self, name: str, job: Awaitable[None], *, stop_timeout_s: float | None = None) -> None:
        """A background job that needs no start order and may end by itself."""
        child = self._add(name, stop_timeout_s)
        child.task = asyncio.get_running_loop().create_task(self._guard(child, job), name=name)

    def _add(self, name: str, stop_timeout_s: float | None) -> _Child:
        if self._stopping:
            raise RuntimeError(f"cannot start {name}: the agent is stopping")
        child = _Child(name, stop_timeout_s=self.stop_timeout_s if stop_timeout_s is None else stop_timeout_s)
        self._children.append(child)
        return child

    async def _guard(self, child: _Child, job: Awaitable[None]) -> None:
        try:
            await job
        except asyncio.CancelledError:
            raise
        except Exception as err:
            child.error = err
            if child.started is not None and not child.started.done():
                return  # start() raises it
            log.error("%s failed: %r", child.name, err, exc_info=err)
            self.errors.append((child.name, err))
            if self.on_failure is not None and not self._stopping:
                self.on_failure(child.name, err)

    # ------------------------------------------------------------------ stopping

    async def shielded(self, job: Awaitable[T], timeout_s: float) -> T | None:
        """Run `job` to completion or `timeout_s`, whichever is first (None then), shielded
        from the caller's cancellation: a second signal during a graceful leave does not cut
        it short; the deadline does."""
        task = asyncio.ensure_future(self._bounded(job, timeout_s))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await asyncio.wait((task,))  # bounded by timeout_s
            raise

    @staticmethod
    async def _bounded(job: Awaitable[T], timeout_s: float) -> T | None:
        try:
            async with asyncio.timeout(timeout_s):
                return await job
        except TimeoutError:
            log.warning("gave up after %.1fs", timeout_s)
            return None

    async def stop(self) -> None:
        """Cancel the children newest first, each bounded by its stop timeout. Idempotent."""
        self._stopping = True
        while self._children:
            child = self._children.pop()
            task = child.task
            if task is None or task.done():
                continue
            task.cancel()
            began = time.monotonic()
            done, _ = await asyncio.wait((task,), timeout=child.stop_timeout_s)
            if not done:
                log.error("%s did not stop within %.1fs; leaving it", child.name, child.stop_timeout_s)
            else:
                log.debug("stopped %s in %.3fs", child.name, time.monotonic() - began)

    def running(self) -> list[str]:
        """The names of the children still running, in start order."""
        return [c.name for c in self._children if c.task is not None and not c.task.done()]


async def park(task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
    """Report started and wait to be cancelled (a subsystem whose work is done in callbacks)."""
    task_status.started()
    await asyncio.Event().wait()
