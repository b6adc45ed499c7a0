"""Serf's user-event buffer: Lamport-time slots that deliver each event once and feed push-pull.

How it works: a user event carries the LTime of the sender's event clock. `EventBuffer.accept`
witnesses that LTime on our event clock, then drops the event if it is older than `min_time` (a
join with ignore-old sets it), or older than `clock - EVENT_BUFFER` (too old to be told apart
from a duplicate), or already in its slot `LTime mod EVENT_BUFFER` (same LTime, same name and
payload). Otherwise the event is recorded (a slot holding another LTime starts afresh) and the
caller delivers and re-broadcasts it. Two different events at one LTime (fired on two members at
once) share a slot and are both delivered. `state()` is the whole ring for push-pull;
`valid_state` checks a peer's before any of it is replayed. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from appliance.gossip.lamport import LamportClock
from appliance.gossip.messages import USER_EVENT_MAX_BYTES, UserEvent

EVENT_BUFFER = 512  # Serf's EventBuffer: LTimes of recent user events kept for dedup and push-pull
USER_EVENT_SIZE_LIMIT = 512  # Serf's default UserEventSizeLimit (name + payload, bytes)


class UserEventError(ValueError):
    """A user event that cannot be sent (too large; Serf's texts)."""


class EventBuffer:
    def __init__(self, stats: Counter[str]) -> None:
        self.slots: list[tuple[int, list[tuple[str, bytes]]] | None] = [None] * EVENT_BUFFER
        self.min_time = 0
        self.stats = stats

    def accept(self, clock: LamportClock, msg: UserEvent) -> bool:
        """Serf's handleUserEvent: True if the event is new (deliver it, re-broadcast it)."""
        clock.witness(msg.ltime)
        if msg.ltime < self.min_time:
            self.stats["user_events_ignored_old"] += 1
            return False
        now_lt = clock.time()
        if now_lt > EVENT_BUFFER and msg.ltime < now_lt - EVENT_BUFFER:
            self.stats["user_events_too_old"] += 1
            return False
        idx = msg.ltime % EVENT_BUFFER
        slot = self.slots[idx]
        pair = (msg.name, msg.payload)
        if slot is not None and slot[0] == msg.ltime:
            if pair in slot[1]:
                self.stats["user_events_duplicate"] += 1
                return False
            slot[1].append(pair)
        else:
            self.slots[idx] = (msg.ltime, [pair])
        self.stats["user_events_received"] += 1
        return True

    def state(self) -> list[list[Any]]:
        """The ring for push-pull: [[ltime, [[name, payload], ...]], ...] (empty slots left out)."""
        return [[lt, [[name, payload] for name, payload in events]]
                for slot in self.slots if slot is not None for lt, events in (slot,)]


def valid_state(events: Any) -> bool:
    """A peer's push-pull event ring: the shape of `EventBuffer.state()` within Serf's sizes."""
    if type(events) is not list or len(events) > EVENT_BUFFER:
        return False
    for slot in events:
        if type(slot) is not list or len(slot) != 2 or type(slot[0]) is not int or slot[0] < 0:
            return False
        if type(slot[1]) is not list or len(slot[1]) > EVENT_BUFFER:
            return False
        for ev in slot[1]:
            if (type(ev) is not list or len(ev) != 2 or type(ev[0]) is not str or type(ev[1]) is not bytes
                    or len(ev[0]) + len(ev[1]) > USER_EVENT_MAX_BYTES):
                return False
    return True
