"""Sessions on the leader: TTL timers, renewals, and the lock-delay check before a lock is written.

How it works
------------
Consul keeps session TTL timers and lock-delays in the leader's memory (reference/coordination.md
§1.5, §1.8), and so does cairn. `SessionLeader` is built on every server with the Raft driver
(the `LeaderSeat` it needs of it) and does three things:

- TTL timers, leader only (`serve`): a session with a TTL is invalidated when it was not renewed
  for 2 x TTL, by proposing `session_destroy` (the FSM releases or deletes its keys and records
  the lock-delays at that index). When this server becomes leader, every session gets a fresh
  2 x TTL, as in Consul (so a session may outlive its TTL across leader changes); when it steps
  down, its timers are dropped. Sessions created while leading are found after each applied
  write that touched the sessions table. A failed invalidation is retried after
  (1 << attempt) x 10 s, six attempts at most (`maximum revoke attempts reached for session`).
- `session_renew`, a leader operation (the HTTP handler proposes it from any agent; the Raft
  driver runs it on the leader instead of writing it to the log): reset the timer and answer
  the session, or None for an unknown one (404). Renewals change no index.
- `lock_checked`, a leader operation wrapping a `kv_lock` or a `txn`: a lock of a key whose
  lock-delay has not ended is refused before anything is written (`false`, or the txn error
  `failed to lock key "<k>" due to lock delay`); otherwise the wrapped command is proposed.
  The check runs once this leader has applied everything committed (a leader just elected may
  lag), and the command carries the applied index it saw (`Checked`): an invalidation already in
  the log but not yet applied then refuses the lock when it applies (appliance/state/kv.py).
  Lock-delays are recorded by this server's FSM on the clock given here, never replicated.

Metrics: `consul.session_ttl.active` (gauge: armed timers), `consul.session_ttl.invalidate`
(time to invalidate an expired session).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from appliance.config.durations import DurationError, parse_duration
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.state import sessions, watchkeys
from appliance.state.store import Record, Store

log = logging.getLogger("agent.leader")

RENEW = "session_renew"
LOCK_CHECKED = "lock_checked"
TTL_MULTIPLIER = 2
MAX_REVOKE_ATTEMPTS = 6
POLL_S = 0.25  # how often leadership is looked at when nothing else wakes the loop


class ClockedFSM(Protocol):
    clock: Callable[[], float] | None


class LeaderSeat(Protocol):
    """What the sessions need of a server's Raft driver."""

    store: Store
    fsm: Any  # a ClockedFSM (appliance/state/fsm.py)
    leader_ops: dict[str, Callable[[dict[str, Any]], Any]]

    @property
    def is_leader(self) -> bool: ...

    async def propose(self, command: dict[str, Any]) -> Any: ...

    async def propose_local(self, command: dict[str, Any]) -> Any: ...

    async def leader_read_index(self, consistent: bool) -> int: ...

    async def wait_applied(self, index: int, timeout_s: float = 10.0) -> None: ...

    def subscribe(self, listener: Callable[[set[str]], None]) -> None: ...


class Recorder(Protocol):
    """The telemetry recorder's public methods used here."""

    def set_gauge(self, name: str, value: float, labels: Any = None) -> None: ...

    def measure_since(self, name: str, start: float, labels: Any = None) -> float: ...


def ttl_seconds(ttl: str) -> float:
    """A session's TTL in seconds (0: none); an unparsable stored TTL counts as none."""
    if ttl in ("", "0", "0s", "0m", "0h"):
        return 0.0
    try:
        return max(parse_duration(ttl), 0.0)
    except DurationError:
        log.error("Invalid Session TTL '%s'", ttl)
        return 0.0


class SessionLeader:
    def __init__(self, raft: LeaderSeat, telemetry: Recorder | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.raft = raft
        self.store = raft.store
        self.telemetry = telemetry
        self.clock = clock
        self.timers: dict[str, float] = {}  # session ID -> deadline (clock)
        self.attempts: dict[str, int] = {}  # session ID -> failed invalidations
        self.leading = False
        self._seen: set[str] = set()  # the sessions the timers were armed from
        self._synced_at = 0  # the sessions table's index when they were
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        raft.fsm.clock = clock
        raft.leader_ops.update({RENEW: self._op_renew, LOCK_CHECKED: self._op_lock_checked})
        raft.subscribe(self._applied)

    # ------------------------------------------------------------------ leader operations

    async def _op_renew(self, command: dict[str, Any]) -> Record | None:
        rec = self.store.session(str(command.get("ID", "")))
        if rec is None:
            return None
        if self.leading:
            self._arm(rec)
        return rec

    async def _op_lock_checked(self, command: dict[str, Any]) -> Any:
        inner = command.get("Command")
        if not isinstance(inner, dict):
            raise ValueError("lock_checked: Command must be a map")
        # a new leader may not have applied every committed invalidation yet: its lock-delays
        # would be missing some keys, so it catches up before it looks
        await self.raft.wait_applied(await self.raft.leader_read_index(False))
        inner = {**inner, "Checked": self.store.last_index}  # what this check saw (state/kv.py lock)
        now = self.clock()
        sessions.expired_delays(self.store, now)
        delays = self.store.lock_delays
        if inner.get("Type") == "kv_lock":
            until = delays.get(inner.get("Key", ""))
            if until is not None and until > now:
                log.warning("Rejecting lock of key due to lock-delay: key=%s expire_time=%.3fs",
                            inner.get("Key"), until - now)
                return False
        elif inner.get("Type") == "txn":
            errors = []
            for i, op in enumerate(inner.get("Ops") or ()):
                kv = op.get("KV") if isinstance(op, dict) else None
                if isinstance(kv, dict) and kv.get("Verb") == "lock" and delays.get(kv.get("Key", ""), 0) > now:
                    errors.append({"OpIndex": i, "What": f'failed to lock key "{kv.get("Key")}" due to lock delay'})
            if errors:
                return {"Results": None, "Errors": errors}
        return await self.raft.propose_local(inner)

    # ------------------------------------------------------------------ timers

    def _applied(self, touched: set[str]) -> None:
        if watchkeys.SESSIONS in touched:
            self._wake.set()

    def _arm(self, rec: Record) -> None:
        ttl = ttl_seconds(rec.get("TTL", ""))
        if ttl > 0:
            self.timers[rec["ID"]] = self.clock() + TTL_MULTIPLIER * ttl

    def _sync(self) -> None:
        """Timers for sessions created since (fresh 2 x TTL), none for sessions gone."""
        index = self.store.index_of(watchkeys.SESSIONS)
        if index == self._synced_at:
            return
        self._synced_at = index
        sessions_now = self.store.sessions
        for sid in [sid for sid in self.timers if sid not in sessions_now]:
            del self.timers[sid]
            self.attempts.pop(sid, None)
        for sid in sessions_now.keys() - self._seen:
            self._arm(sessions_now[sid])
        self._seen = set(sessions_now)

    def _step(self) -> float:
        """One turn: follow leadership, arm and fire timers; the seconds until the next turn."""
        leading = self.raft.is_leader
        if leading and not self.leading:
            self.timers.clear()
            for rec in self.store.sessions.values():
                self._arm(rec)  # a new leader grants every session a fresh 2 x TTL
            self._seen = set(self.store.sessions)
            self._synced_at = self.store.index_of(watchkeys.SESSIONS)
        elif not leading and self.leading:
            self.timers.clear()
            self.attempts.clear()
        self.leading = leading
        if not leading:
            return POLL_S
        self._sync()
        now = self.clock()
        for sid, deadline in list(self.timers.items()):
            if deadline <= now:
                del self.timers[sid]
                task = asyncio.get_running_loop().create_task(self._invalidate(sid))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if self.telemetry is not None:
            self.telemetry.set_gauge("session_ttl.active", len(self.timers))
        soonest = min(self.timers.values(), default=now + POLL_S)
        return max(0.0, min(soonest - now, POLL_S))

    async def _invalidate(self, sid: str) -> None:
        start = time.monotonic()
        try:
            await self.raft.propose({"Type": "session_destroy", "ID": sid})
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - a failed write is retried, whatever the cause
            attempt = self.attempts.get(sid, 0) + 1
            if attempt >= MAX_REVOKE_ATTEMPTS:
                log.error("maximum revoke attempts reached for session: %s", sid)
                self.attempts.pop(sid, None)
                return
            self.attempts[sid] = attempt
            log.error("Invalidation failed: %s", err)
            if self.leading and sid in self.store.sessions:
                self.timers[sid] = self.clock() + (1 << attempt) * 10.0
            return
        self.attempts.pop(sid, None)
        log.debug("Session TTL expired: session=%s", sid)
        if self.telemetry is not None:
            self.telemetry.measure_since("session_ttl.invalidate", start)

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        task_status.started()
        loop = asyncio.get_running_loop()
        try:
            while True:
                delay = self._step()
                self._wake.clear()
                alarm = loop.call_later(delay, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    alarm.cancel()
        finally:
            for task in list(self._tasks):
                task.cancel()
            self.timers.clear()
            self.leading = False
