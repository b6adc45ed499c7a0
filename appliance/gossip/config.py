"""Gossip timing profiles (LAN, WAN, local) with memberlist's and Serf's defaults.

How it works: `GossipConfig` is a frozen dataclass that the sans-IO core receives once. Every field
carries a `description` in its metadata (units, default, the formula it feeds), so docs and
`cairn` help text can be generated from it. `GossipConfig.lan()` is the base profile;
`wan()` and `local()` start from it and override the fields memberlist's WAN and local profiles
override. `validate()` rejects combinations that make the failure detector useless (a probe
timeout not shorter than the probe interval leaves no time for indirect probes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class GossipConfigError(ValueError):
    """A gossip configuration that cannot work (raised by `GossipConfig.validate`)."""


def _f(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class GossipConfig:
    # ---- failure detection (SWIM probe cycle)
    probe_interval_s: float = _f(
        1.0,
        "Seconds between probes of one random member (round robin over a shuffled list). LAN 1 s, "
        "WAN 5 s, local 1 s. Scaled by the local health multiplier: probe deadline = "
        "probe_interval_s x (awareness score + 1).",
    )
    probe_timeout_s: float = _f(
        0.5,
        "Seconds to wait for a direct ack before asking indirect_checks members to probe. "
        "LAN 500 ms, WAN 3 s, local 200 ms. Must be shorter than probe_interval_s.",
    )
    indirect_checks: int = _f(
        3, "Members asked to probe a target indirectly when the direct probe times out. LAN/WAN 3, local 1."
    )
    nack_delay_fraction: float = _f(
        1.0,
        "An indirect-probe helper sends a nack after nack_delay_fraction x probe_timeout_s without "
        "an ack. 1.0 is memberlist parity (its nacks usually miss a healthy prober's 1 s deadline); "
        "0.8 is the Lifeguard paper's advice.",
    )
    suspicion_mult: int = _f(
        4,
        "Suspicion timeout minimum = suspicion_mult x max(1, log10(n)) x probe_interval_s; expected "
        "independent confirmations k = suspicion_mult - 2. LAN 4, WAN 6, local 3.",
    )
    suspicion_max_timeout_mult: int = _f(
        6,
        "Suspicion timeout maximum = suspicion_max_timeout_mult x minimum. The timer starts at the "
        "maximum and shrinks towards the minimum with each independent confirmation (Lifeguard). 6 in "
        "every profile.",
    )
    awareness_max_multiplier: int = _f(
        8,
        "Upper bound of the local health multiplier (score + 1). The score rises on failed probes, "
        "missed nacks and refutations and falls on successful probes; it stretches the probe "
        "deadline up to awareness_max_multiplier x probe_interval_s. 8 in every profile.",
    )
    # ---- dissemination
    gossip_interval_s: float = _f(
        0.2, "Seconds between gossip rounds (queued broadcasts to gossip_nodes members). "
        "LAN 200 ms, WAN 500 ms, local 100 ms."
    )
    gossip_nodes: int = _f(3, "Random members sent queued broadcasts each gossip round. LAN 3, WAN 4, local 3.")
    gossip_to_the_dead_time_s: float = _f(
        30.0,
        "Seconds a dead member is still gossiped to (so a falsely accused member can hear it and "
        "refute) and kept in the member table before it is purged. LAN 30 s, WAN 60 s, local 15 s.",
    )
    retransmit_mult: int = _f(
        4,
        "Each broadcast is sent retransmit_mult x ceil(log10(n + 1)) times in total, then dropped. "
        "LAN/WAN 4, local 2.",
    )
    udp_buffer_size: int = _f(
        1400, "Largest gossip packet in bytes (message plus piggybacked broadcasts). 1400 in every profile."
    )
    # ---- anti-entropy
    push_pull_interval_s: float = _f(
        30.0,
        "Seconds between full-state exchanges with one random alive member, scaled for clusters above "
        "32 members by ceil(log2(n) - log2(32)) + 1. 0 disables periodic push-pull. LAN 30 s, WAN 60 s, local 15 s.",
    )
    tcp_timeout_s: float = _f(
        10.0, "Deadline in seconds for one push-pull exchange (join or periodic). LAN 10 s, WAN 30 s, local 1 s."
    )
    dead_node_reclaim_time_s: float = _f(
        0.0,
        "A dead member's name may be taken by a new address after this many seconds; 0 never (memberlist "
        "default; Consul uses 30 s). A member that left can always be reclaimed.",
    )
    # ---- Serf layer
    reconnect_interval_s: float = _f(
        30.0,
        "Seconds between attempts to rejoin a random failed member, made with probability "
        "failed / (members - failed - left). Serf default 30 s.",
    )
    reconnect_timeout_s: float = _f(
        24 * 3600.0, "A failed member is reaped (forgotten) after this many seconds. Serf 24 h, Consul 72 h."
    )
    tombstone_timeout_s: float = _f(
        24 * 3600.0, "A member that left is reaped after this many seconds. Serf 24 h."
    )
    reap_interval_s: float = _f(15.0, "Seconds between reap passes over failed and left members. Serf 15 s.")
    recent_intent_timeout_s: float = _f(
        300.0, "Seconds a join/leave intent for a not-yet-known member is kept. Serf 5 min."
    )
    broadcast_timeout_s: float = _f(
        5.0, "Longest wait in seconds for a leave broadcast to be fully transmitted during a graceful leave. Serf 5 s."
    )
    leave_propagate_delay_s: float = _f(
        1.0,
        "Seconds a leaving member keeps answering probes after its leave is broadcast, so peers that "
        "have not heard yet do not accuse it. Serf 1 s, Consul 3 s.",
    )
    flap_timeout_s: float = _f(
        60.0, "A member that rejoins within this many seconds of failing counts as a flap. Serf 60 s."
    )
    coalesce_period_s: float = _f(
        0.0,
        "Member events are held and merged for at most this many seconds (one event per member, the "
        "latest; one flush per type). Needs quiescent_period_s too. 0 = off (Serf and Consul).",
    )
    quiescent_period_s: float = _f(
        0.0, "Held member events are flushed once no new one arrived for this many seconds. 0 = off."
    )
    user_coalesce_period_s: float = _f(
        0.0,
        "User events fired with coalescing are held for at most this many seconds; per name only the "
        "newest LTime's events are delivered. Needs user_quiescent_period_s too. 0 = off (Serf and Consul).",
    )
    user_quiescent_period_s: float = _f(
        0.0, "Held user events are flushed once no new one arrived for this many seconds. 0 = off."
    )
    name_conflict_resolution: bool = _f(
        True,
        "When another address claims our name, ask every member (_serf_conflict) and shut down if the "
        "majority knows the other one. Serf default true; Consul false (the conflict is only logged).",
    )

    # ------------------------------------------------------------------ profiles

    @classmethod
    def lan(cls, **overrides: Any) -> GossipConfig:
        """memberlist's LAN profile (Consul's `gossip_lan` defaults)."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> GossipConfig:
        """memberlist's WAN profile: slower probes, longer suspicion, wider fan-out."""
        base: dict[str, Any] = dict(
            tcp_timeout_s=30.0,
            suspicion_mult=6,
            push_pull_interval_s=60.0,
            probe_timeout_s=3.0,
            probe_interval_s=5.0,
            gossip_nodes=4,
            gossip_interval_s=0.5,
            gossip_to_the_dead_time_s=60.0,
        )
        base.update(overrides)
        return dataclasses.replace(cls(), **base)

    @classmethod
    def local(cls, **overrides: Any) -> GossipConfig:
        """memberlist's local (loopback) profile: fast timeouts, fewer retransmits."""
        base: dict[str, Any] = dict(
            tcp_timeout_s=1.0,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            push_pull_interval_s=15.0,
            probe_timeout_s=0.2,
            probe_interval_s=1.0,
            gossip_interval_s=0.1,
            gossip_to_the_dead_time_s=15.0,
        )
        base.update(overrides)
        return dataclasses.replace(cls(), **base)

    def validate(self) -> GossipConfig:
        """Return self, or raise GossipConfigError naming the first unusable value."""
        if not 0 < self.probe_timeout_s < self.probe_interval_s:
            raise GossipConfigError(
                "probe_timeout_s must be positive and shorter than probe_interval_s "
                f"(got {self.probe_timeout_s} and {self.probe_interval_s})"
            )
        if self.gossip_interval_s <= 0:
            raise GossipConfigError("gossip_interval_s must be positive")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise GossipConfigError("suspicion_mult and suspicion_max_timeout_mult must be at least 1")
        if self.awareness_max_multiplier < 1:
            raise GossipConfigError("awareness_max_multiplier must be at least 1")
        if self.retransmit_mult < 1 or self.gossip_nodes < 0 or self.indirect_checks < 0:
            raise GossipConfigError("retransmit_mult must be >= 1; gossip_nodes and indirect_checks >= 0")
        if not 0 < self.nack_delay_fraction <= 1:
            raise GossipConfigError("nack_delay_fraction must be in (0, 1]")
        if not 64 <= self.udp_buffer_size <= 65_000:
            raise GossipConfigError("udp_buffer_size must be between 64 and 65000 bytes")
        if self.push_pull_interval_s < 0:
            raise GossipConfigError("push_pull_interval_s must not be negative")
        if min(self.coalesce_period_s, self.quiescent_period_s, self.user_coalesce_period_s,
               self.user_quiescent_period_s) < 0:
            raise GossipConfigError("coalescing periods must not be negative")
        return self

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name to description, for docs and help text."""
        return {f.name: f.metadata["description"] for f in dataclasses.fields(cls)}
