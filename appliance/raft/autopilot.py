"""Autopilot: server health, promotion of new servers and dead-server cleanup (sans-IO).

How it works
------------
The leader runs autopilot (driver_autopilot.py calls in here about once a second with `now` in
seconds). Everything here is pure: the caller passes what it knows and gets back a report and at
most one membership change to make.

**Servers.** The caller describes each server as a `ServerState`: whether it is in the Raft
configuration (and as voter or non-voter), its membership status (`alive`, `failed`, `left`:
Serf's words, from whatever discovers servers), the time since the leader last heard from it,
and its last log index and term as the leader sees them (the follower's match index).

**Health** (hashicorp/raft-autopilot `isHealthy`). A server is healthy when its status is
`alive`, its last contact is within `LastContactThreshold` (the leader counts as 0), its last
log term is the leader's, and it trails the leader's last index by at most `MaxTrailingLogs`.
`StableSince` is when its health last changed. The cluster is healthy when every server is;
`FailureTolerance` is how many healthy voters could fail with a quorum left:
`healthy voters - (voters / 2 + 1)`, never below 0.

**Changes**, one per round, because the Raft core accepts one uncommitted configuration change
at a time (thesis §4.1), in Consul's order:

1. a server that is alive and known but not in the configuration is added as a **non-voter**
   (Consul's leader does this when a server joins; the non-voter catches up without counting
   toward quorum, thesis §4.2.1);
2. a non-voter that has been healthy for `ServerStabilizationTime` is **promoted** to voter;
3. with `CleanupDeadServers`, failed servers are **removed**: non-voters first, then voters, and
   voters only as `adjudicateRemoval` allows: never leave fewer than `MinQuorum` voters, and never
   remove `(voters - 1) / 2` or more voters in one round (a removal that takes away a majority is
   not safe). A server that left is removed the same way.

Promotion and removal never happen in the same round (raft-autopilot's rule: let the cluster
settle). The leader itself is never removed here: a leaving leader transfers leadership first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from appliance.config.durations import DurationError, coerce_duration, format_duration

from .messages import ConfChange, ConfChangeType

ALIVE, FAILED, LEFT = "alive", "failed", "left"


class AutopilotConfigError(ValueError):
    """A configuration an operator sent that cannot be used (the text says why)."""


@dataclass(frozen=True)
class AutopilotConfig:
    """Consul's autopilot settings (config block `autopilot {}`, API
    /v1/operator/autopilot/configuration). Durations in seconds, names with units last."""

    cleanup_dead_servers: bool = True
    last_contact_threshold_s: float = 0.2
    max_trailing_logs: int = 250
    min_quorum: int = 0
    server_stabilization_time_s: float = 10.0
    redundancy_zone_tag: str = ""
    disable_upgrade_migration: bool = False
    upgrade_version_tag: str = ""

    def __post_init__(self) -> None:
        if self.last_contact_threshold_s < 0 or self.server_stabilization_time_s < 0:
            raise AutopilotConfigError("durations must not be negative")
        if self.max_trailing_logs < 0 or self.min_quorum < 0:
            raise AutopilotConfigError("MaxTrailingLogs and MinQuorum must not be negative")

    # API names (Consul's api.AutopilotConfiguration) <-> fields
    _API = {
        "CleanupDeadServers": ("cleanup_dead_servers", bool),
        "LastContactThreshold": ("last_contact_threshold_s", "duration"),
        "MaxTrailingLogs": ("max_trailing_logs", int),
        "MinQuorum": ("min_quorum", int),
        "ServerStabilizationTime": ("server_stabilization_time_s", "duration"),
        "RedundancyZoneTag": ("redundancy_zone_tag", str),
        "DisableUpgradeMigration": ("disable_upgrade_migration", bool),
        "UpgradeVersionTag": ("upgrade_version_tag", str),
    }

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (attr, kind) in self._API.items():
            value = getattr(self, attr)
            out[name] = format_duration(value) if kind == "duration" else value
        return out

    def merged(self, body: Any) -> AutopilotConfig:
        """This configuration with the fields `body` (API names) sets; a missing field keeps its
        value. AutopilotConfigError names a field of the wrong type or an unknown field."""
        if not isinstance(body, dict):
            raise AutopilotConfigError("autopilot configuration must be a JSON object")
        changes: dict[str, Any] = {}
        for name, value in body.items():
            if name in ("CreateIndex", "ModifyIndex"):
                continue
            spec = self._API.get(name)
            if spec is None:
                raise AutopilotConfigError(f'unknown field "{name}"')
            attr, kind = spec
            if kind == "duration":
                try:
                    changes[attr] = coerce_duration(value)
                except DurationError as err:
                    raise AutopilotConfigError(f"{name}: {err}") from None
            elif kind is int:
                if type(value) is not int:
                    raise AutopilotConfigError(f"{name} must be an integer, not {value!r}")
                changes[attr] = value
            elif not isinstance(value, (bool if kind is bool else str)):
                raise AutopilotConfigError(f"{name} must be a {'boolean' if kind is bool else 'string'}, "
                                           f"not {value!r}")
            else:
                changes[attr] = value
        return replace(self, **changes)

    @classmethod
    def from_api(cls, record: dict[str, Any] | None, default: AutopilotConfig | None = None) -> AutopilotConfig:
        base = default or cls()
        return base if not record else base.merged(record)


@dataclass(frozen=True)
class ServerState:
    """What the leader knows about one server (see the module docstring)."""

    id: str
    address: str
    name: str = ""
    in_configuration: bool = True
    voter: bool = True
    leader: bool = False
    status: str = ALIVE
    last_contact_s: float | None = None  # None: never heard from
    last_term: int = 0
    last_index: int = 0
    version: str = ""


@dataclass(frozen=True)
class ServerHealth:
    id: str
    healthy: bool
    stable_since: float  # `now` of the caller when `healthy` last changed


@dataclass
class AutopilotState:
    """Autopilot's memory between rounds: health and when it last changed, per server."""

    health: dict[str, ServerHealth] = field(default_factory=dict)


def is_healthy(cfg: AutopilotConfig, s: ServerState, leader_term: int, leader_last_index: int) -> bool:
    if s.status != ALIVE:
        return False
    if not s.leader and (s.last_contact_s is None or s.last_contact_s > cfg.last_contact_threshold_s):
        return False
    if s.last_term != leader_term:
        return False
    return s.last_index + cfg.max_trailing_logs >= leader_last_index


def update_health(state: AutopilotState, cfg: AutopilotConfig, servers: list[ServerState], leader_term: int,
                  leader_last_index: int, now: float) -> dict[str, ServerHealth]:
    """Re-evaluate every server's health; keeps `stable_since` while health does not change."""
    fresh: dict[str, ServerHealth] = {}
    for s in servers:
        healthy = is_healthy(cfg, s, leader_term, leader_last_index)
        prev = state.health.get(s.id)
        since = prev.stable_since if prev is not None and prev.healthy == healthy else now
        fresh[s.id] = ServerHealth(s.id, healthy, since)
    state.health = fresh
    return fresh


def failure_tolerance(servers: list[ServerState], health: dict[str, ServerHealth]) -> int:
    voters = [s for s in servers if s.in_configuration and s.voter]
    healthy = sum(1 for s in voters if health.get(s.id) and health[s.id].healthy)
    return max(0, healthy - (len(voters) // 2 + 1))


def adjudicate_removal(candidates: list[ServerState], voters: int, min_quorum: int) -> list[ServerState]:
    """The failed servers that may go now (raft-autopilot `adjudicateRemoval`): non-voters always;
    voters while `voters - removed - 1 >= min_quorum` and fewer than `(voters - 1) / 2` go."""
    out = []
    max_removal = (voters - 1) // 2
    removed = 0
    for s in candidates:
        if s.voter:
            if voters - removed - 1 < min_quorum or max_removal < 1:
                continue
            max_removal -= 1
            removed += 1
        out.append(s)
    return out


def next_change(cfg: AutopilotConfig, servers: list[ServerState], health: dict[str, ServerHealth],
                now: float) -> ConfChange | None:
    """The one membership change to make this round, or None (order in the module docstring)."""
    for s in sorted(servers, key=lambda s: s.id):
        if not s.in_configuration and s.status == ALIVE:
            return ConfChange(ConfChangeType.ADD_NONVOTER, s.id, s.address)
    for s in sorted(servers, key=lambda s: s.id):
        h = health.get(s.id)
        if (s.in_configuration and not s.voter and s.status == ALIVE and h is not None and h.healthy
                and now - h.stable_since >= cfg.server_stabilization_time_s):
            return ConfChange(ConfChangeType.ADD_VOTER, s.id, s.address)
    if not cfg.cleanup_dead_servers:
        return None
    members = [s for s in servers if s.in_configuration]
    dead = sorted((s for s in members if s.status in (FAILED, LEFT) and not s.leader),
                  key=lambda s: (s.voter, s.id))  # non-voters first
    voters = sum(1 for s in members if s.voter)
    for s in adjudicate_removal(dead, voters, cfg.min_quorum):
        return ConfChange(ConfChangeType.REMOVE_SERVER, s.id, s.address)
    return None
