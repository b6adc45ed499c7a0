"""The agent's task tree (appliance/lifecycle.py): start order, the way down, deadlines, no strays.

Timing tests run on a virtual-time event loop: when nothing is ready, the loop jumps its clock to
the next timer instead of sleeping (the job trio's MockClock(autojump_threshold=0) does, on
asyncio, where the agent's drivers live). A 60-second hang costs no wall time.
"""

from __future__ import annotations

import asyncio
import selectors
import time

import pytest

from appliance.lifecycle import TASK_STATUS_IGNORED, Lifecycle, StartError, park


class _JumpSelector:
    """A selector that never blocks: a wait with a timeout moves the loop's clock instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list:
        events = self._inner.select(0)
        if events or timeout is not None and timeout <= 0:
            return events
        if timeout is None:
            raise RuntimeError("deadlock: nothing ready and no timer pending")
        self._loop.now += timeout
        return []

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(selector=_JumpSelector(self))

    def time(self) -> float:
        return self.now


def run_virtual(main):
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


def run(main):
    return asyncio.run(main())


class Recorder:
    """Subsystems that log when they start, report started, and stop."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def subsystem(self, name: str, *, fail_at_start: bool = False, fail_later: bool = False, value=None):
        async def serve(*, task_status=TASK_STATUS_IGNORED) -> None:
            self.events.append(f"start {name}")
            await asyncio.sleep(0.01)  # binding takes a moment: the next must wait for it
            if fail_at_start:
                raise OSError(f"{name}: address already in use")
            task_status.started(value)
            self.events.append(f"started {name}")
            try:
                if fail_later:
                    await asyncio.sleep(1)
                    raise RuntimeError(f"{name} broke")
                await asyncio.Event().wait()
            finally:
                self.events.append(f"stop {name}")
        return serve


def test_subsystems_start_in_order_and_stop_in_reverse():
    rec = Recorder()

    async def main():
        async with Lifecycle() as life:
            for name in ("raft", "gossip", "http"):
                await life.start(name, rec.subsystem(name))
            assert life.running() == ["raft", "gossip", "http"]
        return life

    life = run_virtual(main)
    assert rec.events == ["start raft", "started raft", "start gossip", "started gossip", "start http",
                          "started http", "stop http", "stop gossip", "stop raft"]
    assert life.running() == []


def test_start_returns_what_the_subsystem_reported():
    rec = Recorder()

    async def main():
        async with Lifecycle() as life:
            return await life.start("dns", rec.subsystem("dns", value=("127.0.0.1", 8600)))

    assert run_virtual(main) == ("127.0.0.1", 8600)


def test_a_failure_at_start_stops_those_started_before_it_in_reverse():
    rec = Recorder()

    async def main():
        with pytest.raises(OSError) as caught:
            async with Lifecycle() as life:
                await life.start("raft", rec.subsystem("raft"))
                await life.start("gossip", rec.subsystem("gossip"))
                await life.start("http", rec.subsystem("http", fail_at_start=True))
                await life.start("never", rec.subsystem("never"))
        return caught.value

    err = run_virtual(main)
    assert str(err) == "http: address already in use"
    assert err.__notes__ == ["while starting http"]
    assert rec.events == ["start raft", "started raft", "start gossip", "started gossip", "start http",
                          "stop gossip", "stop raft"]


def test_returning_before_started_is_a_start_error():
    async def quits(*, task_status=TASK_STATUS_IGNORED) -> None:
        return None

    async def main():
        async with Lifecycle() as life:
            await life.start("quits", quits)

    with pytest.raises(StartError, match="returned before it started"):
        run_virtual(main)


def test_a_later_failure_is_reported_and_the_rest_stops_in_order():
    rec = Recorder()
    failures = []

    async def main():
        stop = asyncio.Event()

        def on_failure(name, err):
            failures.append((name, str(err)))
            stop.set()

        async with Lifecycle(on_failure=on_failure) as life:
            await life.start("raft", rec.subsystem("raft"))
            await life.start("checks", rec.subsystem("checks", fail_later=True))
            await life.start("http", rec.subsystem("http"))
            await stop.wait()
        return life

    life = run_virtual(main)
    assert failures == [("checks", "checks broke")]
    assert [name for name, _ in life.errors] == ["checks"]
    assert rec.events[-3:] == ["stop checks", "stop http", "stop raft"]


def test_shutdown_deadline_is_respected_for_a_child_that_will_not_stop():
    rec = Recorder()

    async def stubborn(*, task_status=TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            rec.events.append("ignored cancel")
        await asyncio.sleep(3600)  # a cleanup that hangs

    async def main():
        loop = asyncio.get_running_loop()
        async with Lifecycle(stop_timeout_s=2.0) as life:
            await life.start("raft", rec.subsystem("raft"))
            await life.start("stubborn", stubborn)
            began = loop.time()
        elapsed = loop.time() - began
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()  # the one that ignored us, so the test's loop closes cleanly
        return elapsed

    elapsed = run_virtual(main)
    assert elapsed == pytest.approx(2.0, abs=0.02)  # the deadline, then on to the next child
    assert rec.events[-2:] == ["ignored cancel", "stop raft"]


def test_graceful_leave_is_bounded_and_shielded():
    async def leave(seconds: float, done: list) -> str:
        await asyncio.sleep(seconds)
        done.append(seconds)
        return "left"

    async def main():
        loop = asyncio.get_running_loop()
        life = Lifecycle()
        done: list = []
        assert await life.shielded(leave(1.0, done), timeout_s=5.0) == "left"
        began = loop.time()
        assert await life.shielded(leave(60.0, done), timeout_s=5.0) is None  # the deadline wins
        assert loop.time() - began == pytest.approx(5.0)
        # a second signal cancels the waiter: the leave still runs to its end
        waiter = asyncio.ensure_future(life.shielded(leave(2.0, done), timeout_s=5.0))
        await asyncio.sleep(0.5)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return done

    assert run_virtual(main) == [1.0, 2.0]


def test_no_stray_tasks_after_the_block():
    rec = Recorder()

    async def background() -> None:
        await asyncio.sleep(3600)

    async def finishes() -> None:
        await asyncio.sleep(0.1)

    async def main():
        before = asyncio.all_tasks()
        async with Lifecycle() as life:
            await life.start("raft", rec.subsystem("raft"))
            await life.start("parked", park)
            life.start_soon("retry-join", background())
            life.start_soon("done-soon", finishes())
            await asyncio.sleep(1)
            assert life.running() == ["raft", "parked", "retry-join"]
        late = background()
        with pytest.raises(RuntimeError):
            life.start_soon("late", late)
        late.close()
        return asyncio.all_tasks() - before

    assert run_virtual(main) == set()


def test_cancelling_the_agent_still_stops_everything_in_order():
    rec = Recorder()

    async def main():
        async def agent():
            async with Lifecycle() as life:
                await life.start("raft", rec.subsystem("raft"))
                await life.start("http", rec.subsystem("http"))
                await asyncio.Event().wait()

        task = asyncio.ensure_future(agent())
        await asyncio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main)
    assert rec.events[-2:] == ["stop http", "stop raft"]


def test_virtual_time_costs_no_wall_time():
    async def main():
        await asyncio.sleep(3600)

    began = time.monotonic()
    run_virtual(main)
    assert time.monotonic() - began < 1.0


# ---------------------------------------------------------------------------------- drivers in virtual time


def test_coordinate_batcher_flushes_once_per_period_in_virtual_time():
    # Consul's CoordinateUpdatePeriod: updates submitted within a period go out together
    from appliance.coordinates import COORDINATE_UPDATE_PERIOD_S, CoordinateBatcher

    flushed: list[tuple[float, list[str]]] = []

    async def main():
        loop = asyncio.get_running_loop()

        async def propose(cmd):
            flushed.append((loop.time(), [u["Node"] for u in cmd["Updates"]]))

        batcher = CoordinateBatcher(propose)
        async with Lifecycle() as life:
            await life.start("coordinate-batch", batcher.serve)
            batcher.submit({"Node": "a", "Segment": "", "Coord": {}})
            await asyncio.sleep(1.0)
            batcher.submit({"Node": "b", "Segment": "", "Coord": {}})
            await asyncio.sleep(COORDINATE_UPDATE_PERIOD_S * 3)
            batcher.submit({"Node": "c", "Segment": "", "Coord": {}})
            await asyncio.sleep(COORDINATE_UPDATE_PERIOD_S)

    run_virtual(main)
    assert flushed == [(pytest.approx(COORDINATE_UPDATE_PERIOD_S), ["a", "b"]),
                       (pytest.approx(COORDINATE_UPDATE_PERIOD_S * 4), ["c"])]


def test_check_manager_serve_reaps_on_its_interval_until_cancelled():
    # the check manager's serve(): started at once, reaps every reap_interval_s until cancelled
    from types import SimpleNamespace

    from appliance.checks.manager import CheckManager

    local = SimpleNamespace(checks={}, services={}, kinds={})
    reaps: list[float] = []

    async def main():
        loop = asyncio.get_running_loop()
        manager = CheckManager(local, changed=lambda: None, config=lambda: None, store=None, hub=None,
                               reap_interval_s=30.0)
        manager.reap = lambda now: reaps.append(loop.time())
        async with Lifecycle() as life:
            await life.start("checks", manager.serve)
            await asyncio.sleep(95)
        return manager

    manager = run_virtual(main)
    assert reaps == [30.0, 60.0, 90.0]
    assert manager.runners == {}
