"""Raft timing and limits: durations at the edge, ticks inside the core.

How it works
------------
`RaftConfig` is what an operator sets, with hashicorp/raft's names (units last). The core never
sees milliseconds: the driver calls `RaftCore.tick()` every `tick_ms(raft_multiplier)` and the
core counts ticks (`CoreConfig`). The tick is a tenth of the scaled heartbeat timeout, the same
ratio hashicorp/raft uses between its heartbeat interval and `HeartbeatTimeout`, so:

    tick_ms                = heartbeat_timeout_ms * raft_multiplier / 10
    election_ticks         = ceil(election_timeout_ms   / base tick), randomised to [T, 2T)
    leader_lease_ticks     = ceil(leader_lease_timeout_ms / base tick)
    heartbeat_ticks        = 1 (a heartbeat every tick)

`raft_multiplier` (Consul's `performance.raft_multiplier`, default 5, 1 recommended for
production, 1..10) scales the heartbeat, election and leader-lease timeouts together, so it only
changes the length of a tick: the tick counts, and therefore every ratio between timeouts, stay
the same whatever the multiplier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_RAFT_MULTIPLIER = 10


def _doc(text: str, default: Any) -> Any:  # a field with its description attached (shown by `describe()`)
    return field(default=default, metadata={"description": text})


@dataclass(frozen=True)
class RaftConfig:
    heartbeat_timeout_ms: int = _doc(
        "A follower that hears nothing from a leader for a random time in [1x, 2x) this starts an "
        "election (hashicorp/raft HeartbeatTimeout). Scaled by raft_multiplier. Also sets the tick: "
        "a tenth of it; the leader sends a heartbeat every tick.",
        1000,
    )
    election_timeout_ms: int = _doc(
        "A candidate that has not won after a random time in [1x, 2x) this starts a new election "
        "(hashicorp/raft ElectionTimeout); also how long a leadership transfer may take before it "
        "is aborted. Scaled by raft_multiplier.",
        1000,
    )
    leader_lease_timeout_ms: int = _doc(
        "Check-quorum: a leader that has not heard from a quorum of voters within this steps down "
        "(hashicorp/raft LeaderLeaseTimeout). A step-down timer, not a read lease. Scaled by "
        "raft_multiplier.",
        500,
    )
    max_append_entries: int = _doc(
        "Most entries in one AppendEntries RPC (hashicorp/raft MaxAppendEntries, <= 1024).", 64
    )
    max_append_bytes: int = _doc(
        "Soft cap on the entry bytes of one AppendEntries RPC (at least one entry is always sent).",
        1 << 20,
    )
    max_rpcs_in_flight: int = _doc(
        "Pipelining depth: AppendEntries RPCs sent to one follower without an answer "
        "(hashicorp/raft DefaultMaxRPCsInFlight is 2).",
        2,
    )
    trailing_logs: int = _doc(
        "Entries kept in the log behind a snapshot, so a slightly lagging follower catches up "
        "from the log instead of a snapshot (hashicorp/raft TrailingLogs; Consul 10240).",
        10240,
    )
    snapshot_threshold: int = _doc(
        "Applied entries since the last snapshot before the next one is taken "
        "(hashicorp/raft SnapshotThreshold; Consul 16384).",
        16384,
    )
    snapshot_interval_ms: int = _doc(
        "How often the driver checks snapshot_threshold (hashicorp/raft SnapshotInterval; "
        "Consul 30 s). Not scaled.",
        30_000,
    )
    pre_vote_disabled: bool = _doc(
        "Turn off pre-vote (Raft thesis §9.6). On by default, as in hashicorp/raft.", False
    )
    check_quorum: bool = _doc(
        "Leader steps down without a quorum (leader_lease_timeout_ms), and followers ignore vote "
        "requests while they hear from a leader. Always on in hashicorp/raft.",
        True,
    )
    raft_multiplier: int = _doc(
        "Consul performance.raft_multiplier: scales heartbeat, election and leader-lease "
        "timeouts (1..10; Consul's default 5, 1 recommended in production).",
        5,
    )

    def __post_init__(self) -> None:
        if not 1 <= self.raft_multiplier <= MAX_RAFT_MULTIPLIER:
            raise ValueError(f"raft_multiplier must be 1..{MAX_RAFT_MULTIPLIER}")
        if self.heartbeat_timeout_ms < 10:
            raise ValueError("heartbeat_timeout_ms must be at least 10")
        if self.election_timeout_ms < self.heartbeat_timeout_ms:
            raise ValueError("election_timeout_ms must be >= heartbeat_timeout_ms")
        if self.leader_lease_timeout_ms > self.heartbeat_timeout_ms:
            raise ValueError("leader_lease_timeout_ms must be <= heartbeat_timeout_ms")
        if not 1 <= self.max_append_entries <= 1024:
            raise ValueError("max_append_entries must be 1..1024")
        if self.max_rpcs_in_flight < 1 or self.snapshot_threshold < 1 or self.trailing_logs < 0:
            raise ValueError("max_rpcs_in_flight and snapshot_threshold must be >= 1, trailing_logs >= 0")

    @property
    def tick_ms(self) -> float:
        """Real time between two `RaftCore.tick()` calls, with raft_multiplier applied."""
        return self.heartbeat_timeout_ms * self.raft_multiplier / 10

    def core(self) -> CoreConfig:
        base_tick = self.heartbeat_timeout_ms / 10
        return CoreConfig(
            election_ticks=max(2, math.ceil(self.election_timeout_ms / base_tick)),
            heartbeat_ticks=1,
            leader_lease_ticks=max(2, math.ceil(self.leader_lease_timeout_ms / base_tick)),
            max_append_entries=self.max_append_entries,
            max_append_bytes=self.max_append_bytes,
            max_inflight=self.max_rpcs_in_flight,
            trailing_logs=self.trailing_logs,
            snapshot_threshold=self.snapshot_threshold,
            pre_vote=not self.pre_vote_disabled,
            check_quorum=self.check_quorum,
        )

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {f.name: f.metadata["description"] for f in cls.__dataclass_fields__.values()}


@dataclass(frozen=True)
class CoreConfig:
    """The core's view: everything in ticks (see the module docstring for the mapping)."""

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    leader_lease_ticks: int = 5
    max_append_entries: int = 64
    max_append_bytes: int = 1 << 20
    max_inflight: int = 2
    trailing_logs: int = 10240
    snapshot_threshold: int = 16384
    pre_vote: bool = True
    check_quorum: bool = True
    max_committed_per_ready: int = 1024

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if self.leader_lease_ticks < 1:
            raise ValueError("leader_lease_ticks must be >= 1")
