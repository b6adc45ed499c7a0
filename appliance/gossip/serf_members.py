"""Serf's values: member records and statuses, Serf events, the tags codec, and the read-only
view a driver and its metrics take of a Serf instance (pure, no I/O; serf.py re-exports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

import msgpack

from appliance.gossip.messages import META_MAX_BYTES
from appliance.gossip.outputs import CoreView

TAGS_MAGIC = 0xFF  # Serf's tag encoding marker (protocol >= 3)


class MemberStatus(IntEnum):
    NONE = 0
    ALIVE = 1
    LEAVING = 2
    LEFT = 3
    FAILED = 4


class SerfEventKind(Enum):
    MEMBER_JOIN = "member-join"
    MEMBER_LEAVE = "member-leave"
    MEMBER_FAILED = "member-failed"
    MEMBER_UPDATE = "member-update"
    MEMBER_REAP = "member-reap"
    USER = "user"
    QUERY = "query"


@dataclass(frozen=True, slots=True)
class SerfEvent:
    """A member event (`node` set), a user event (`name`, `payload`, `ltime`, `coalesce` set) or a
    query (`name`, `payload`, `ltime`, and `query`: the request to answer with `Serf.respond`)."""

    kind: SerfEventKind
    node: str
    time: float
    name: str = ""
    payload: bytes = b""
    ltime: int = 0
    coalesce: bool = False
    query: Any = None  # queries.QueryRequest for a QUERY event


@dataclass
class Member:
    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: MemberStatus
    status_ltime: int = 0
    leave_time: float | None = None  # when it failed or left (for reaping)


class TagsError(ValueError):
    """Tags that cannot be encoded within the metadata limit."""


def encode_tags(tags: dict[str, str]) -> bytes:
    """Serf's node metadata: 0xFF then a msgpack map of strings; at most 512 bytes."""
    packed: bytes = msgpack.packb(dict(sorted(tags.items())), use_bin_type=True)
    data = bytes((TAGS_MAGIC,)) + packed
    if len(data) > META_MAX_BYTES:
        raise TagsError(f"encoded tags are {len(data)} bytes, the limit is {META_MAX_BYTES}")
    return data


def decode_tags(meta: bytes) -> dict[str, str] | None:
    """Tags from metadata; legacy metadata without the marker is the bare `role`. None if garbage."""
    if not meta:
        return {}
    if meta[0] != TAGS_MAGIC:
        try:
            return {"role": meta.decode("utf-8")}
        except UnicodeDecodeError:
            return None
    try:
        tags = msgpack.unpackb(meta[1:], raw=False, max_str_len=META_MAX_BYTES, max_map_len=META_MAX_BYTES)
    except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
        return None
    if type(tags) is not dict or not all(type(k) is str and type(v) is str for k, v in tags.items()):
        return None
    return tags


@dataclass(frozen=True, slots=True)
class SerfView:
    """A snapshot of one Serf instance and its core (`Serf.view()`, cheap enough for every input):
    what the driver reports in /v1/agent/self's serf sections and what metrics sample, without
    reading Serf's or the core's internals."""

    core: CoreView
    members: int  # every member known, failed and left ones until reaped
    intent_queue: int  # queued join/leave intents (serf.queue.Intent)
    event_queue: int  # queued user events (serf.queue.Event)
    member_time: int  # the member Lamport clock
    event_time: int  # the user-event Lamport clock
    coordinate_resets: int
    flaps: int  # members that failed and came back within the flap timeout
    query_queue: int = 0  # queued queries (serf.queue.Query)
    query_time: int = 1  # the query Lamport clock
    stats: Mapping[str, int] = field(default_factory=dict)  # Serf's counters (queries, query_acks, ...)

    @property
    def health_score(self) -> int:
        return self.core.health_score
