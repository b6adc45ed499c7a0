"""What the gossip core hands out: datagrams and stream exchanges for its driver, member events,
its read-only view, and the delegate interface the Serf layer plugs in (core.py; pure values,
no I/O).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from appliance.gossip.members import Address
from appliance.gossip.messages import (
    Alive,
    JoinIntent,
    LeaveIntent,
    PushNode,
    QueryMessage,
    QueryResponseMessage,
    RelayMessage,
    UserEvent,
)


@dataclass(frozen=True, slots=True)
class Send:
    """Send one datagram (best effort)."""

    dest: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Open a reliable stream to `dest`, write `data`, read one reply before `deadline`, then call
    `on_stream_reply(token, reply_or_None, now)`."""

    token: int
    dest: Address
    data: bytes
    deadline: float


Output = Send | StreamRequest


class EventKind(Enum):
    JOIN = "join"  # a member became alive (new, or back from dead/left)
    UPDATE = "update"  # an alive member's metadata changed
    SUSPECT = "suspect"  # we started suspecting a member (informational; Serf ignores it)
    FAIL = "fail"  # a member was declared dead by someone else
    LEAVE = "leave"  # a member announced its own departure


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    node: str
    addr: str
    port: int
    meta: bytes
    incarnation: int
    time: float


@dataclass(frozen=True, slots=True)
class CoreView:
    """A snapshot of one core for its driver and metrics (`GossipCore.view()`, cheap enough for
    every input): nothing else outside the core reads its state."""

    name: str
    incarnation: int
    health_score: int  # Lifeguard's awareness score (memberlist.health.score)
    probe_target: str | None  # the member being probed now
    probe_seq: int | None  # the probe's sequence number: a new one per probe (the driver times probes)
    broadcast_queue: int  # queued member broadcasts (alive, suspect, dead)
    members: int  # the member table, self and unpurged dead and left members included
    suspected: int  # members under a running suspicion timer
    stats: Mapping[str, int]  # the core's counters (packets, probes, decode errors, msg_* ...)


class Delegate(Protocol):
    """What the Serf layer plugs into the core (all calls are synchronous and pure)."""

    def notify(self, event: MemberEvent) -> None: ...

    def handle_intent(self, msg: JoinIntent | LeaveIntent) -> None: ...

    def has_broadcasts(self) -> bool: ...

    def get_broadcasts(self, limit: int) -> list[bytes]: ...

    def local_state(self) -> bytes: ...

    def merge_remote_state(self, data: bytes, join: bool) -> None: ...

    def on_join_result(self, ok: bool) -> None: ...

    def handle_user_event(self, msg: UserEvent) -> None: ...

    def ack_payload(self) -> bytes: ...

    def notify_ping_complete(self, node: str, rtt_s: float, payload: bytes) -> None: ...

    def handle_query_message(self, msg: QueryMessage | QueryResponseMessage | RelayMessage) -> None: ...

    def notify_conflict(self, name: str, existing: Address, other: Alive, old_state: int) -> None: ...

    def check_alive(self, msg: Alive) -> bool: ...

    def check_merge(self, nodes: tuple[PushNode, ...]) -> str: ...

    def log(self, source: str, level: str, text: str) -> None: ...
