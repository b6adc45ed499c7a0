"""Serf's event coalescing: member events and user events held back and merged for a short while.

How it works
------------
A `CoalesceLoop` sits between the Serf layer and its event list, with a period (the quantum) and a
quiescent period. An event its coalescer does not take passes straight through. The first event
it takes starts the quantum; every event it takes restarts the quiescent timer; when either runs
out everything held is flushed at once, and the next event starts afresh. So a burst is delivered
one quiescent period after it ends, and continuous churn at least once per quantum. Timers are the
core's (`call_at`); a check that fires after its deadline moved on does nothing.

* `MemberCoalescer` (Serf's CoalescePeriod/QuiescentPeriod): keeps the latest event per member;
  at the flush a member whose latest event has the same type as the one last delivered for it is
  dropped (except member-update), so join-leave-join inside a window is one join, or none if the
  member was already delivered as joined. Flushed grouped by type, then by name.
* `UserCoalescer` (UserCoalescePeriod/UserQuiescentPeriod): takes only user events sent with the
  coalesce flag; per event name keeps the events with the highest LTime (several at that LTime are
  all kept) and flushes them all.

Both are off unless both of their periods are above zero (Serf's defaults, and Consul's). Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appliance.gossip.serf_members import SerfEvent, SerfEventKind

MEMBER_KINDS = frozenset({SerfEventKind.MEMBER_JOIN, SerfEventKind.MEMBER_LEAVE, SerfEventKind.MEMBER_FAILED,
                          SerfEventKind.MEMBER_UPDATE, SerfEventKind.MEMBER_REAP})
KIND_ORDER = {kind: i for i, kind in enumerate(SerfEventKind)}


class MemberCoalescer:
    def __init__(self) -> None:
        self.latest: dict[str, SerfEvent] = {}
        self.last_delivered: dict[str, SerfEventKind] = {}

    @staticmethod
    def handles(event: SerfEvent) -> bool:
        return event.kind in MEMBER_KINDS

    def coalesce(self, event: SerfEvent) -> None:
        self.latest[event.node] = event

    def flush(self) -> list[SerfEvent]:
        out: list[SerfEvent] = []
        for name, event in self.latest.items():
            previous = self.last_delivered.get(name)
            if previous is event.kind and event.kind is not SerfEventKind.MEMBER_UPDATE:
                continue
            self.last_delivered[name] = event.kind
            out.append(event)
        self.latest = {}
        out.sort(key=lambda e: (KIND_ORDER[e.kind], e.node))
        return out


class UserCoalescer:
    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, list[SerfEvent]]] = {}

    @staticmethod
    def handles(event: SerfEvent) -> bool:
        return event.kind is SerfEventKind.USER and event.coalesce

    def coalesce(self, event: SerfEvent) -> None:
        held = self.latest.get(event.name)
        if held is None or held[0] < event.ltime:
            self.latest[event.name] = (event.ltime, [event])
        elif held[0] == event.ltime:
            held[1].append(event)

    def flush(self) -> list[SerfEvent]:
        out = [e for name in sorted(self.latest) for e in self.latest[name][1]]
        self.latest = {}
        return out


Coalescer = MemberCoalescer | UserCoalescer


class CoalesceLoop:
    """Serf's coalesceLoop without a goroutine: `push` events in, flushed ones come out of `sink`."""

    def __init__(self, coalescer: Coalescer, period_s: float, quiescent_s: float,
                 call_at: Callable[[float, Callable[[Any], None], Any], None],
                 sink: Callable[[SerfEvent], None]) -> None:
        self.coalescer = coalescer
        self.period_s = period_s
        self.quiescent_s = quiescent_s
        self.call_at = call_at
        self.sink = sink
        self.quantum_at: float | None = None
        self.quiescent_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.period_s > 0 and self.quiescent_s > 0

    def push(self, event: SerfEvent, now: float) -> None:
        if not self.enabled or not self.coalescer.handles(event):
            self.sink(event)
            return
        if self.quantum_at is None:
            self.quantum_at = now + self.period_s
            self.call_at(self.quantum_at, self._check, self.quantum_at)
        self.quiescent_at = now + self.quiescent_s
        self.call_at(self.quiescent_at, self._check, self.quiescent_at)
        self.coalescer.coalesce(event)

    def _check(self, when: float) -> None:
        """A timer set for `when`: flush if it is still the quantum's or the quiescent period's end."""
        if self.quantum_at is None or (when < self.quantum_at and when < self.quiescent_at):
            return
        self.flush()

    def flush(self) -> None:
        self.quantum_at = None
        for event in self.coalescer.flush():
            self.sink(event)
