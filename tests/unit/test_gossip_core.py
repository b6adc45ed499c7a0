"""Unit tests for the sans-IO gossip core: formulas, state rules, probe cycle, codec, Serf layer.

Each test cites the rule it checks: `# SWIM §x` (Das, Gupta, Motivala 2002), `# Lifeguard §x`
(Dadgar, Phillips, Currey 2018: LHA-Probe, LHA-Suspicion, buddy system), `# memberlist` (its
defaults and state rules as built), `# Serf` (intents, Lamport clocks).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings, strategies as st

from appliance.gossip import (
    Awareness,
    EventKind,
    GossipConfig,
    GossipConfigError,
    GossipCore,
    LamportClock,
    MemberStatus,
    Send,
    Serf,
    SerfEventKind,
    TransmitLimitedQueue,
    decode_tags,
    encode_tags,
    expected_confirmations,
    push_pull_scale,
    remaining_suspicion_time,
    retransmit_limit,
    suspicion_bounds,
)
from appliance.gossip.messages import (
    MAX_PACKET_BYTES,
    Ack,
    Alive,
    Dead,
    DecodeError,
    IndirectPing,
    JoinIntent,
    LeaveIntent,
    Nack,
    NodeStateKind,
    Ping,
    PushNode,
    PushPull,
    StreamError,
    Suspect,
    UserEvent,
    decode_packet,
    decode_stream,
    encode_message,
    encode_packet,
    encode_stream,
)
from appliance.gossip.serf import TagsError

LAN = GossipConfig.lan()

# ============================================================================ formulas


@pytest.mark.parametrize(
    "n, low, high, k",
    [
        (1, 4, 24, 0),
        (3, 4, 24, 0),
        (4, 4, 24, 2),
        (10, 4, 24, 2),
        (20, 5.204, 31.224, 2),
        (50, 6.792, 40.752, 2),
        (100, 8, 48, 2),
        (500, 10.792, 64.752, 2),
        (1000, 12, 72, 2),
        (10000, 16, 96, 2),
    ],
)
def test_suspicion_bounds_lan(n, low, high, k):
    # Lifeguard §LHA-Suspicion: min = alpha * max(1, log10 n) * PI, max = beta * min, K = alpha - 2
    # (memberlist: alpha = SuspicionMult 4, beta = SuspicionMaxTimeoutMult 6; k = 0 when n - 2 < k).
    got_low, got_high = suspicion_bounds(4, 6, n, 1.0)
    assert got_low == pytest.approx(low, abs=1e-9)
    assert got_high == pytest.approx(high, abs=1e-9)
    assert expected_confirmations(4, n) == k


@pytest.mark.parametrize(
    "n, after_one",
    [(10, 11.381), (20, 14.807), (50, 19.325), (100, 22.762), (500, 30.707), (1000, 34.144), (10000, 45.525)],
)
def test_suspicion_timeout_shrinks_with_confirmations(n, after_one):
    # Lifeguard §LHA-Suspicion: timeout(C) = max(Min, Max - (Max - Min) * log(C+1)/log(K+1)).
    low, high = suspicion_bounds(4, 6, n, 1.0)
    k = expected_confirmations(4, n)
    assert remaining_suspicion_time(0, k, 0.0, low, high) == pytest.approx(high)
    assert remaining_suspicion_time(1, k, 0.0, low, high) == pytest.approx(after_one, abs=1e-3)
    assert remaining_suspicion_time(2, k, 0.0, low, high) == pytest.approx(low)
    # Elapsed time is subtracted; an overdue timer reports a non-positive remainder.
    assert remaining_suspicion_time(2, k, low + 1, low, high) == pytest.approx(-1)


def test_suspicion_timeout_wan_four_confirmations():
    # Lifeguard §LHA-Suspicion with memberlist's WAN profile: alpha 6, PI 5 s, K = 4.
    low, high = suspicion_bounds(6, 6, 8, 5.0)
    assert (low, high) == (30.0, 180.0)
    k = expected_confirmations(6, 8)
    assert k == 4
    got = [remaining_suspicion_time(c, k, 0.0, low, high) for c in range(1, 5)]
    assert got == pytest.approx([115.398, 77.609, 50.797, 30.0], abs=1e-3)
    assert expected_confirmations(6, 5) == 0  # n - 2 < k: not enough others to confirm


def test_suspicion_timeout_local_profile():
    # memberlist local profile: alpha 3 -> k = 1; one confirmation reaches the minimum.
    low, high = suspicion_bounds(3, 6, 5, 1.0)
    assert (low, high) == (3.0, 18.0)
    assert remaining_suspicion_time(1, expected_confirmations(3, 5), 0.0, low, high) == pytest.approx(3.0)
    assert expected_confirmations(3, 2) == 0


def test_awareness_scales_probe_deadline_and_saturates():
    # Lifeguard §LHA-Probe: LHM is a saturating counter in [0, S]; the probe deadline is
    # multiplied by (LHM + 1). memberlist: S = AwarenessMaxMultiplier - 1 = 7.
    a = Awareness(8)
    assert a.scale_timeout(1.0) == 1.0
    assert a.apply_delta(3) == 3
    assert a.scale_timeout(1.0) == 4.0
    assert a.apply_delta(100) == 7
    assert a.scale_timeout(1.0) == 8.0
    assert a.apply_delta(-1) == 6
    assert a.apply_delta(-100) == 0


@pytest.mark.parametrize(
    "mult, n, limit",
    [(4, 1, 4), (4, 9, 4), (4, 10, 8), (4, 99, 8), (4, 100, 12), (4, 999, 12), (4, 1000, 16), (4, 10000, 20),
     (2, 5, 2), (2, 50, 4), (2, 500, 6)],
)
def test_retransmit_limit(mult, n, limit):
    # SWIM §4.1: piggyback each update lambda * log n times; memberlist: RetransmitMult * ceil(log10(n + 1)).
    assert retransmit_limit(mult, n) == limit


@pytest.mark.parametrize(
    "n, period", [(1, 30), (32, 30), (33, 60), (64, 60), (65, 90), (128, 90), (129, 120), (1000, 180), (10000, 300)]
)
def test_push_pull_scale(n, period):
    # memberlist: PushPullInterval * (ceil(log2 n - log2 32) + 1) above 32 members.
    assert push_pull_scale(30.0, n) == pytest.approx(period)


def test_profiles_carry_memberlist_defaults():
    # memberlist DefaultLANConfig / DefaultWANConfig / DefaultLocalConfig.
    lan, wan, local = GossipConfig.lan(), GossipConfig.wan(), GossipConfig.local()
    timing = (lan.probe_interval_s, lan.probe_timeout_s, lan.suspicion_mult, lan.suspicion_max_timeout_mult)
    assert timing == (1, 0.5, 4, 6)
    assert (lan.gossip_interval_s, lan.gossip_nodes, lan.push_pull_interval_s, lan.retransmit_mult) == (0.2, 3, 30, 4)
    assert (lan.awareness_max_multiplier, lan.indirect_checks, lan.udp_buffer_size) == (8, 3, 1400)
    assert (wan.probe_interval_s, wan.probe_timeout_s, wan.suspicion_mult, wan.gossip_nodes) == (5, 3, 6, 4)
    assert (local.probe_timeout_s, local.indirect_checks, local.retransmit_mult, local.suspicion_mult) == (0.2, 1, 2, 3)
    descriptions = GossipConfig.describe()
    assert all(len(text) > 20 for text in descriptions.values())
    assert set(descriptions) == {f.name for f in dataclasses.fields(GossipConfig)}


def test_config_rejects_probe_timeout_not_below_interval():
    # memberlist#149: PT >= PI makes indirect probes useless.
    with pytest.raises(GossipConfigError):
        GossipConfig.lan(probe_timeout_s=1.0).validate()
    with pytest.raises(GossipConfigError):
        GossipConfig.lan(nack_delay_fraction=0).validate()


# ============================================================================ broadcast queue


def test_queue_invalidation_order_and_limit():
    # memberlist queue: (transmits asc, size desc, newest first); a message about X replaces
    # the queued one; each message goes out retransmit_limit times (n = 10 -> 8).
    finished: list[str] = []
    q = TransmitLimitedQueue(4)
    q.queue(b"suspect-X-5", key="X", on_finished=lambda: finished.append("sX5"))
    q.queue(b"alive-Y-2!!", key="Y", on_finished=lambda: finished.append("aY2"))
    q.queue(b"alive-X-6!!", key="X", on_finished=lambda: finished.append("aX6"))
    assert finished == ["sX5"] and len(q) == 2
    assert q.get_broadcasts(0, 1000, 10) == [b"alive-X-6!!", b"alive-Y-2!!"]
    q.queue(b"a-much-larger-message", key="Z")
    assert q.get_broadcasts(0, 1000, 10)[0] == b"a-much-larger-message"  # fewest transmits first
    for _ in range(6):
        q.get_broadcasts(0, 1000, 10)
    assert finished == ["sX5", "aX6", "aY2"] and len(q) == 1  # each hook exactly once
    q.get_broadcasts(0, 1000, 10)
    assert len(q) == 0 and finished == ["sX5", "aX6", "aY2"]


def test_queue_fills_packet_largest_first_and_prunes():
    q = TransmitLimitedQueue(4)
    for i in range(30):
        q.queue(bytes(100), key=f"n{i}")
    q.queue(bytes(150), key="big")
    got = q.get_broadcasts(2, 1398, 10)
    assert len(got[0]) == 150 and sum(len(x) + 2 for x in got) <= 1398
    assert len(got) == 1 + (1398 - 152) // 102
    # Unkeyed (Serf) broadcasts are never invalidated.
    q.queue(b"same")
    q.queue(b"same")
    assert len(q) == 33
    assert q.prune(5) == 28 and len(q) == 5


# ============================================================================ state rules


def _core(name="a", n_others=4, now=0.0, config=LAN, seed=1) -> GossipCore:
    core = GossipCore(name, "10.0.0.1", 7946, config, random.Random(seed), now)
    for i in range(n_others):
        alive = Alive(1, f"p{i}", f"10.0.1.{i}", 7946, b"")
        core.on_packet(("10.0.1.1", 7946), encode_packet([encode_message(alive)]), now)
    core.take_events()
    core.take_outputs()
    return core


def _run_until(core, until: float) -> None:
    """Tick at every timer deadline up to `until`, as a driver does (one big tick would run every
    overdue timer at the late time, like a stalled process)."""
    while (deadline := core.next_deadline()) is not None and deadline <= until:
        core.tick(deadline)
    core.tick(until)


def _feed(core: GossipCore, *msgs, now: float = 0.0) -> None:
    core.on_packet(("10.9.9.9", 7946), encode_packet([encode_message(m) for m in msgs]), now)


def test_refute_suspicion_about_self():
    # SWIM §4.2: a suspected member refutes with a higher incarnation; Lifeguard §LHA-Probe: +1 score.
    core = _core()
    assert core.incarnation == 1
    _feed(core, Suspect(1, "a", "p0"))
    assert core.incarnation == 2 and core.awareness.score == 1 and core.stats["refutes"] == 1
    assert core.member("a").state == NodeStateKind.ALIVE
    # An accusation far ahead makes us jump past it.
    _feed(core, Dead(10, "a", "p1"))
    assert core.incarnation == 11 and core.member("a").state == NodeStateKind.ALIVE
    # Stale accusations are ignored.
    _feed(core, Suspect(3, "a", "p2"))
    assert core.incarnation == 11
    # Our refutation is queued: it goes out on the next packets.
    parts = core.broadcasts.get_broadcasts(0, 1400, 5)
    assert encode_message(Alive(11, "a", "10.0.0.1", 7946, b"")) in parts


def test_refute_alive_about_self_with_other_meta():
    # memberlist: an alive about us with a higher incarnation (or same with other meta) is refuted.
    core = _core()
    _feed(core, Alive(5, "a", "10.0.0.1", 7946, b"other"))
    assert core.incarnation == 6
    _feed(core, Alive(6, "a", "10.0.0.1", 7946, b""))  # identical to ours: ignored
    assert core.incarnation == 6


def test_precedence_alive_suspect_dead():
    # SWIM §4.2 as memberlist builds it: alive needs a strictly higher incarnation; suspect and
    # dead an equal or higher one; dead is sticky until a higher alive; left = dead from itself.
    core = _core()
    _feed(core, Suspect(1, "p0", "p1"))
    assert core.member("p0").state == NodeStateKind.SUSPECT
    _feed(core, Alive(1, "p0", "10.0.1.0", 7946, b""))
    assert core.member("p0").state == NodeStateKind.SUSPECT  # equal incarnation does not clear it
    _feed(core, Alive(2, "p0", "10.0.1.0", 7946, b""))
    assert core.member("p0").state == NodeStateKind.ALIVE and not core.is_suspected("p0")
    _feed(core, Dead(1, "p0", "p1"))
    assert core.member("p0").state == NodeStateKind.ALIVE  # older incarnation
    # cairn: another member's death verdict is one more witness: it starts our own suspicion.
    _feed(core, Dead(2, "p0", "p1"))
    assert core.member("p0").state == NodeStateKind.SUSPECT and core.member("p0").incarnation == 2
    _run_until(core, 40.0)  # our own timer (24 s maximum, then the last-chance probe) declares it
    assert core.member("p0").state == NodeStateKind.DEAD
    _feed(core, Alive(2, "p0", "10.0.1.0", 7946, b""), now=40.0)
    assert core.member("p0").state == NodeStateKind.DEAD  # dead is sticky
    _feed(core, Alive(3, "p0", "10.0.1.0", 7946, b"new"), now=40.0)
    assert core.member("p0").state == NodeStateKind.ALIVE
    _feed(core, Alive(1, "q", "10.0.1.9", 7946, b""), Dead(1, "q", "q"), now=40.0)
    assert core.member("q").state == NodeStateKind.LEFT  # a member's own announcement is final
    kinds = [(e.kind, e.node) for e in core.take_events() if e.node in ("p0", "q")]
    assert kinds == [(EventKind.SUSPECT, "p0"), (EventKind.SUSPECT, "p0"), (EventKind.FAIL, "p0"),
                     (EventKind.JOIN, "p0"), (EventKind.JOIN, "q"), (EventKind.LEAVE, "q")]


def test_address_conflict_is_ignored_unless_left():
    # memberlist: a different address for a live name is a conflict; a left name can be reclaimed.
    core = _core()
    _feed(core, Alive(9, "p0", "10.6.6.6", 7946, b""))
    assert core.member("p0").addr == "10.0.1.0" and core.stats["conflicts"] == 1
    _feed(core, Dead(1, "p1", "p1"), Alive(1, "p1", "10.7.7.7", 7946, b""))
    assert core.member("p1").addr == "10.7.7.7" and core.member("p1").state == NodeStateKind.ALIVE


def test_suspicion_confirmations_shorten_the_timer():
    # Lifeguard §LHA-Suspicion: n = 5 -> min 4 s, max 24 s, k = 2; two independent
    # confirmations bring the death to 4 s after the suspicion began; the accuser never counts.
    core = _core(n_others=4)
    _feed(core, Suspect(1, "p0", "p1"), now=10.0)
    _feed(core, Suspect(1, "p0", "p1"), now=10.5)  # same accuser again: not a confirmation
    core.tick(14.1)
    assert core.member("p0").state == NodeStateKind.SUSPECT
    _feed(core, Suspect(1, "p0", "p2"), now=11.0)
    _feed(core, Suspect(1, "p0", "p3"), now=12.0)
    core.tick(12.99)
    assert core.member("p0").state == NodeStateKind.SUSPECT and core.stats["suspicion_verifications"] == 0
    core.tick(13.0)  # one probe deadline before the timer: the last-chance probe starts
    assert core.stats["suspicion_verifications"] == 1
    core.tick(13.99)
    assert core.member("p0").state == NodeStateKind.SUSPECT  # never before the suspicion timeout
    _run_until(core, 14.0 + 8.0)
    assert core.member("p0").state == NodeStateKind.DEAD and core.stats["suspicion_degraded"] == 0
    assert [e.kind for e in core.take_events() if e.node == "p0"][-1] == EventKind.FAIL


def _verify_packets(outputs, dest):
    found = []
    for out in outputs:
        msgs, _ = decode_packet(out.data)
        if out.dest == dest and len(msgs) == 2 and isinstance(msgs[0], Suspect) and isinstance(msgs[1], Ping):
            found.append(msgs[1])
    return found


QUIET = GossipConfig.lan(push_pull_interval_s=0, gossip_nodes=0)


def test_uncorroborated_suspicion_waits_the_maximum_then_verifies():
    # Lifeguard §LHA-Suspicion: one accuser alone -> the full maximum (24 s at n = 5). cairn then
    # probes the suspect once more with the accusation (twice, PT apart), starting one probe
    # deadline before the timeout, and declares it dead at the timeout (every suspicion does).
    core = _core(n_others=4, config=QUIET)
    _feed(core, Suspect(1, "p0", "p1"), now=0.0)
    core.tick(22.9)
    assert core.member("p0").state == NodeStateKind.SUSPECT and core.stats["suspicion_verifications"] == 0
    core.tick(23.0)
    assert core.member("p0").state == NodeStateKind.SUSPECT and core.stats["suspicion_verifications"] == 1
    core.tick(23.99)
    assert core.member("p0").state == NodeStateKind.SUSPECT
    core.tick(24.0)
    assert core.member("p0").state == NodeStateKind.DEAD


def test_verification_answered_by_refutation_saves_the_member():
    core = _core(n_others=4, config=QUIET)
    _feed(core, Suspect(1, "p0", "p1"), now=0.0)
    core.tick(22.99)
    core.take_outputs()
    core.tick(23.0)
    (ping,) = _verify_packets(core.take_outputs(), ("10.0.1.0", 7946))
    _feed(core, Ack(ping.seq, b""), Alive(2, "p0", "10.0.1.0", 7946, b""), now=23.01)
    core.tick(200.0)
    assert core.member("p0").state == NodeStateKind.ALIVE and core.stats["suspicion_degraded"] == 0


def test_verification_ack_without_refutation_restarts_the_suspicion():
    core = _core(n_others=4, config=QUIET)
    _feed(core, Suspect(1, "p0", "p1"), now=0.0)
    core.tick(22.99)
    core.take_outputs()
    core.tick(23.0)
    (ping,) = _verify_packets(core.take_outputs(), ("10.0.1.0", 7946))
    _feed(core, Ack(ping.seq, b""), now=23.01)
    core.tick(30.0)
    assert core.member("p0").state == NodeStateKind.SUSPECT and core.stats["suspicion_restarted"] == 1


def test_stale_accusation_resends_our_alive():
    # cairn: a member that missed our refutation still accuses an older incarnation of us.
    core = _core()
    _feed(core, Suspect(1, "a", "p0"))
    assert core.incarnation == 2
    while len(core.broadcasts):
        core.broadcasts.get_broadcasts(0, 1400, 5)
    _feed(core, Suspect(1, "a", "p1"))
    assert core.incarnation == 2 and core.stats["stale_accusations"] == 1
    assert core.broadcasts.transmits_of("a") == 0


def test_push_pull_suspicion_does_not_confirm_or_spread():
    # cairn: second-hand suspicion from a push-pull table is not an independent witness.
    core = _core(n_others=4)
    _feed(core, Suspect(1, "p0", "p1"), now=0.0)
    nodes = (PushNode("p0", "10.0.1.0", 7946, b"", 1, NodeStateKind.SUSPECT),)
    core.on_stream(("10.0.1.5", 7946), encode_stream(PushPull(False, False, nodes, b"")), 1.0)
    core.tick(23.9)
    assert core.member("p0").state == NodeStateKind.SUSPECT  # still at the 24 s maximum
    nodes = (PushNode("p2", "10.0.1.2", 7946, b"", 1, NodeStateKind.DEAD),)
    core.take_outputs()
    core.on_stream(("10.0.1.5", 7946), encode_stream(PushPull(False, False, nodes, b"")), 2.0)
    assert core.member("p2").state == NodeStateKind.SUSPECT and core.broadcasts.transmits_of("p2") is None
    sent = [o for o in core.take_outputs() if isinstance(o, Send)]
    assert any(o.dest == ("10.0.1.2", 7946) for o in sent)  # the accused is told directly
    _feed(core, Suspect(1, "p2", "p1"), now=30.0)
    _feed(core, Alive(2, "p2", "10.0.1.2", 7946, b""), now=31.0)  # the accused refuted
    core.tick(100.0)
    assert core.member("p2").state == NodeStateKind.ALIVE


def _probe_until_sent(core: GossipCore, start: float) -> tuple[float, Send, Ping]:
    for _ in range(1000):
        t = core.next_deadline()
        core.tick(t)
        for out in core.take_outputs():
            msgs, _ = decode_packet(out.data)
            pings = [m for m in msgs if isinstance(m, Ping)]
            if pings:
                return t, out, pings[0]
    raise AssertionError("no probe was sent")


def test_probe_cycle_indirect_then_suspect_and_awareness():
    # SWIM §3: direct ping, after PT ping-req through k members, at the deadline suspect.
    # Lifeguard §LHA-Probe: a failed probe adds the missed nacks to the score.
    core = _core(n_others=4, config=GossipConfig.lan(push_pull_interval_s=0, gossip_nodes=0))
    t0, out, ping = _probe_until_sent(core, 0.0)
    target = ping.node
    core.tick(t0 + 0.5)
    reqs = [decode_packet(o.data)[0][0] for o in core.take_outputs()]
    assert len(reqs) == 3 and all(isinstance(r, IndirectPing) and r.node == target for r in reqs)
    _feed(core, Nack(ping.seq), now=t0 + 0.9)  # one helper answered "no ack" in time
    core.tick(t0 + 1.0)
    assert core.member(target).state == NodeStateKind.SUSPECT
    assert core.awareness.score == 2  # 3 expected nacks, 1 received
    # The next probe of a suspect carries the suspicion itself (Lifeguard buddy system).
    assert core.stats["probes_failed"] == 1


def test_probe_success_lowers_awareness_and_buddy_system():
    core = _core(n_others=2, config=GossipConfig.lan(push_pull_interval_s=0, gossip_nodes=0))
    core.awareness.apply_delta(3)
    t0, out, ping = _probe_until_sent(core, 0.0)
    _feed(core, Ack(ping.seq, b""), now=t0 + 0.01)
    assert core.awareness.score == 2 and core.stats["probes_ok"] == 1
    # Suspect every other member, then the next probe sends ping + suspect and nothing else.
    for name in ("p0", "p1"):
        _feed(core, Suspect(1, name, "zz"), now=t0 + 0.02)
    t1, out, ping = _probe_until_sent(core, t0)
    msgs, _ = decode_packet(out.data)
    assert len(msgs) == 2 and isinstance(msgs[0], Suspect) and msgs[0].node == ping.node and msgs[1] == ping


def test_helper_relays_ack_and_sends_nack():
    # SWIM §3 ping-req; memberlist nack (protocol 4) after the probe timeout without an ack.
    core = _core(config=GossipConfig.lan(push_pull_interval_s=0, gossip_nodes=0, probe_interval_s=100,
                                         probe_timeout_s=0.5))
    _feed(core, IndirectPing(77, "p3", "10.0.1.3", 7946, True, "p0", "10.0.1.0", 7946), now=5.0)
    (out,) = core.take_outputs()
    assert out.dest == ("10.0.1.3", 7946)
    ping = decode_packet(out.data)[0][0]
    _feed(core, Ack(ping.seq, b""), now=5.1)
    (relay,) = core.take_outputs()
    assert relay.dest == ("10.0.1.0", 7946) and decode_packet(relay.data)[0][0] == Ack(77, b"")
    core.tick(6.0)
    assert not core.take_outputs()  # acked: no nack
    _feed(core, IndirectPing(78, "p3", "10.0.1.3", 7946, True, "p0", "10.0.1.0", 7946), now=7.0)
    core.take_outputs()
    core.tick(7.5)
    (nack,) = core.take_outputs()
    assert decode_packet(nack.data)[0][0] == Nack(78)


def test_ping_for_another_name_is_not_acked():
    core = _core()
    _feed(core, Ping(1, "someone-else", "p0", "10.0.1.0", 7946))
    assert not core.take_outputs() and core.stats["ping_wrong_node"] == 1
    _feed(core, Ping(2, "a", "p0", "10.0.1.0", 7946))
    (out,) = core.take_outputs()
    assert decode_packet(out.data)[0][0] == Ack(2, b"")


def test_push_pull_merge_maps_remote_dead_to_suspect():
    # memberlist mergeState: remote dead or suspect -> suspect from us; left -> left.
    core = _core()
    nodes = (
        PushNode("p0", "10.0.1.0", 7946, b"", 1, NodeStateKind.DEAD),
        PushNode("p1", "10.0.1.1", 7946, b"", 1, NodeStateKind.LEFT),
        PushNode("new", "10.0.2.1", 7946, b"", 4, NodeStateKind.ALIVE),
        PushNode("a", "10.0.0.1", 7946, b"", 1, NodeStateKind.DEAD),
    )
    reply = core.on_stream(("10.0.1.5", 7946), encode_stream(PushPull(False, False, nodes, b"")), 1.0)
    assert isinstance(decode_stream(reply), PushPull) and decode_stream(reply).reply
    assert core.member("p0").state == NodeStateKind.SUSPECT
    assert core.member("p1").state == NodeStateKind.LEFT
    assert core.member("new").state == NodeStateKind.ALIVE
    assert core.incarnation == 2  # we heard we were dead: refuted
    assert isinstance(decode_stream(core.on_stream(("x", 1), b"\x01\xc1", 1.0)), StreamError)


def test_leave_announces_left_and_finishes():
    core = _core()
    core.leave(1.0)
    assert core.member("a").state == NodeStateKind.LEFT and not core.leave_broadcast_done
    for _ in range(4):
        core.broadcasts.get_broadcasts(0, 1400, 5)
    assert core.leave_broadcast_done
    _feed(core, Suspect(9, "a", "p0"))
    assert core.incarnation == 1  # a left member never refutes


# ============================================================================ codec

_name = st.text(max_size=20)
_u32 = st.integers(0, 2**32 - 1)
_port = st.integers(0, 65535)
_msgs = st.one_of(
    st.builds(Ping, _u32, _name, _name, _name, _port),
    st.builds(IndirectPing, _u32, _name, _name, _port, st.booleans(), _name, _name, _port),
    st.builds(Ack, _u32, st.binary(max_size=64)),
    st.builds(Nack, _u32),
    st.builds(Suspect, _u32, _name, _name),
    st.builds(Alive, _u32, _name, _name, _port, st.binary(max_size=512)),
    st.builds(Dead, _u32, _name, _name),
    st.builds(JoinIntent, st.integers(0, 2**64 - 1), _name),
    st.builds(LeaveIntent, st.integers(0, 2**64 - 1), _name, st.booleans()),
    st.builds(UserEvent, st.integers(0, 2**64 - 1), _name, st.binary(max_size=64), st.booleans()),
)


@given(st.lists(_msgs, min_size=1, max_size=20))
def test_packet_round_trip(msgs):
    assert decode_packet(encode_packet([encode_message(m) for m in msgs])) == (msgs, 0)


@given(st.booleans(), st.booleans(),
       st.lists(st.builds(PushNode, _name, _name, _port, st.binary(max_size=32), _u32, st.integers(0, 3)), max_size=10),
       st.binary(max_size=64))
def test_stream_round_trip(join, reply, nodes, user_state):
    msg = PushPull(join, reply, tuple(nodes), user_state)
    assert decode_stream(encode_stream(msg)) == msg


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_never_raises_anything_but_decode_error(data):
    for blob in (data, b"\x01" + data):
        for decode in (decode_packet, decode_stream):
            try:
                decode(blob)
            except DecodeError:
                pass


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_core_counts_garbage_and_never_raises(data):
    core = _core(n_others=1)
    before = core.stats["packets_received"]
    core.on_packet(("10.9.9.9", 1), b"\x01" + data, 1.0)
    core.on_packet(("10.9.9.9", 1), data, 1.0)
    core.on_stream(("10.9.9.9", 1), b"\x01" + data, 1.0)
    assert core.stats["packets_received"] == before + 2
    assert core.member("a").state == NodeStateKind.ALIVE


def test_truncated_oversized_and_unknown_messages():
    msgs = [Alive(3, "x", "10.0.0.9", 7946, b"m"), Suspect(2, "y", "z")]
    data = encode_packet([encode_message(m) for m in msgs])
    for cut in range(len(data)):  # every proper prefix is rejected, never half-applied
        with pytest.raises(DecodeError):
            decode_packet(data[:cut])
    with pytest.raises(DecodeError):
        decode_packet(b"\x01" + bytes(MAX_PACKET_BYTES))
    with pytest.raises(DecodeError):
        decode_packet(b"\x02" + data[1:])  # another wire version
    unknown = encode_packet([b"\x92\xcc\xc8\x01", encode_message(msgs[1])])  # type 200: from a newer peer
    assert decode_packet(unknown) == ([msgs[1]], 1)
    with pytest.raises(DecodeError):
        decode_packet(encode_packet([b"\x93\x04\x01\x02"]))  # alive with wrong arity
    with pytest.raises(DecodeError):
        decode_packet(encode_packet([b"\x96\x04\xc3\xa1x\xa1y\x01\xc4\x00"]))  # bool as incarnation


def test_core_sends_packets_within_the_size_limit():
    core = _core(n_others=0)
    for i in range(200):
        _feed(core, Alive(1, f"member-with-a-long-name-{i:04d}", f"10.1.{i // 250}.{i % 250}", 7946, bytes(100)))
    core.take_outputs()
    _feed(core, Ping(5, "a", "p", "10.0.1.0", 7946))
    (out,) = core.take_outputs()
    assert len(out.data) <= LAN.udp_buffer_size
    msgs, _ = decode_packet(out.data)
    assert msgs[0] == Ack(5, b"") and len(msgs) > 5


# ============================================================================ Serf layer


def test_lamport_clock():
    # Serf lamport.go: witness moves past the seen value; increment returns the new value.
    c = LamportClock()
    assert c.increment() == 1
    c.witness(0)
    assert c.time() == 1
    c.witness(9)
    assert c.time() == 10
    c.witness(5)
    assert c.time() == 10


def test_tags_encoding_and_limit():
    # Serf: 0xFF + msgpack map; legacy metadata is the bare role; 512-byte limit.
    tags = {"role": "consul", "dc": "dc1", "port": "8300"}
    assert decode_tags(encode_tags(tags)) == tags
    assert decode_tags(b"node") == {"role": "node"}
    assert decode_tags(b"\xff\xc1") is None
    with pytest.raises(TagsError):
        encode_tags({"x": "y" * 600})


def _serf(name="a") -> Serf:
    s = Serf(name, "10.0.0.1", 7946, LAN, random.Random(3), 0.0, tags={"role": "node"})
    for peer in ("b", "c"):
        alive = Alive(1, peer, f"10.0.1.{ord(peer)}", 7946, b"")
        s.on_packet(("10.0.1.1", 7946), encode_packet([encode_message(alive)]), 0.0)
    s.take_events()
    return s


def test_serf_failed_then_late_leave_intent_becomes_left():
    # Serf S13: memberlist's dead before the leave intent -> failed, then left with member-leave.
    s = _serf()
    _feed(s.core, Dead(1, "b", "b"), now=1.0)
    assert s.members["b"].status == MemberStatus.FAILED
    s.handle_intent(LeaveIntent(5, "b", False))
    assert s.members["b"].status == MemberStatus.LEFT
    assert [e.kind for e in s.take_events()] == [SerfEventKind.MEMBER_FAILED, SerfEventKind.MEMBER_LEAVE]
    assert s.clock.time() == 6


def test_serf_leave_intent_first_gives_left_and_intents_do_not_echo():
    # Serf PR #606: status_ltime is updated even for leaving members, so a second older/equal intent
    # is not re-broadcast.
    s = _serf()
    s.handle_intent(LeaveIntent(5, "c", False))
    assert s.members["c"].status == MemberStatus.LEAVING and len(s.intents) == 1
    s.handle_intent(LeaveIntent(5, "c", False))
    s.handle_intent(LeaveIntent(4, "c", False))
    assert len(s.intents) == 1
    s.handle_intent(LeaveIntent(7, "c", False))
    assert len(s.intents) == 2
    _feed(s.core, Dead(1, "c", "c"), now=1.0)
    assert s.members["c"].status == MemberStatus.LEFT
    assert [e.kind for e in s.take_events()] == [SerfEventKind.MEMBER_LEAVE]


def test_serf_refutes_stale_leave_about_itself():
    # Serf S17: a leave intent about a live member is answered with a newer join intent.
    s = _serf()
    s.handle_intent(LeaveIntent(20, "a", False))
    assert s.members["a"].status == MemberStatus.ALIVE and s.stats["leave_refuted"] == 1
    assert s.clock.time() >= 21
    assert s.members["a"].status_ltime >= 21


def test_serf_buffers_intent_for_unknown_member():
    # Serf S14: a leave for an unknown member is kept; the member then appears as leaving.
    s = _serf()
    s.handle_intent(LeaveIntent(7, "d", False))
    assert "d" in s.recent_intents and len(s.intents) == 1
    s.handle_intent(LeaveIntent(7, "d", False))
    assert len(s.intents) == 1
    _feed(s.core, Alive(1, "d", "10.0.1.100", 7946, b""), now=2.0)
    assert s.members["d"].status == MemberStatus.LEAVING and s.members["d"].status_ltime == 7
    # Intents older than recent_intent_timeout_s are purged by the reaper.
    s.handle_intent(JoinIntent(3, "e"))
    s.tick(400.0)
    assert "e" not in s.recent_intents


def test_serf_reaps_failed_members_after_reconnect_timeout():
    cfg = GossipConfig.lan(reconnect_timeout_s=60.0, tombstone_timeout_s=30.0)
    s = Serf("a", "10.0.0.1", 7946, cfg, random.Random(3), 0.0)
    _feed(s.core, Alive(1, "b", "10.0.1.1", 7946, b""), Alive(1, "c", "10.0.1.2", 7946, b""))
    _feed(s.core, Dead(1, "b", "x"), now=1.0)
    s.handle_intent(LeaveIntent(9, "c", False))
    _feed(s.core, Dead(1, "c", "c"), now=1.0)
    _run_until(s, 50.0)  # b: one witness -> our own suspicion (k = 0: 4 s) -> failed; c left at 1 s
    assert s.members["b"].status == MemberStatus.FAILED and "c" not in s.members
    _run_until(s, 200.0)
    assert "b" not in s.members
    assert [e.kind for e in s.take_events()][-2:] == [SerfEventKind.MEMBER_REAP, SerfEventKind.MEMBER_REAP]


def test_serf_graceful_leave_alone_finishes():
    s = Serf("solo", "10.0.0.1", 7946, LAN, random.Random(1), 0.0)
    s.leave(1.0)
    s.tick(1.0 + LAN.leave_propagate_delay_s)
    assert s.has_left and s.members["solo"].status in (MemberStatus.LEAVING, MemberStatus.LEFT)


# ============================================================================ cairn's healing rules


def test_stale_alive_for_a_dead_member_accuses_it_directly():
    # cairn: alive(X, i) while we hold dead(X, i): tell X, it refutes, the refutation rides back.
    core = _core(config=QUIET)
    _feed(core, Suspect(1, "p0", "p1"), now=0.0)
    _run_until(core, 40.0)
    assert core.member("p0").state == NodeStateKind.DEAD
    core.take_outputs()
    _feed(core, Alive(1, "p0", "10.0.1.0", 7946, b""), now=41.0)
    found = _verify_packets(core.take_outputs(), ("10.0.1.0", 7946))
    assert found and core.stats["direct_accusations"] == 1
    _feed(core, Alive(1, "p0", "10.0.1.0", 7946, b""), now=41.1)
    assert core.stats["direct_accusations"] == 1  # at most once per probe interval


def test_stale_accusation_about_a_live_member_is_corrected_at_the_sender():
    # cairn: a peer gossips suspect(p0, 1) while we know alive(p0, 2): send it our newer alive.
    core = _core(config=QUIET)
    _feed(core, Alive(2, "p0", "10.0.1.0", 7946, b""), now=1.0)
    core.take_outputs()
    core.on_packet(("10.0.1.3", 7946), encode_packet([encode_message(Suspect(1, "p0", "p3"))]), 2.0)
    (out,) = core.take_outputs()
    assert out.dest == ("10.0.1.3", 7946)
    assert Alive(2, "p0", "10.0.1.0", 7946, b"") in decode_packet(out.data)[0]
    assert core.member("p0").state == NodeStateKind.ALIVE


def test_join_is_followed_by_one_resync_push_pull():
    slow_probes = GossipConfig.lan(push_pull_interval_s=0, gossip_nodes=0, probe_interval_s=30)
    core = GossipCore("a", "10.0.0.1", 7946, slow_probes, random.Random(1), 0.0)
    (token,) = core.join([("10.0.1.1", 7946)], 0.0)
    reply = PushPull(True, True, (PushNode("b", "10.0.1.1", 7946, b"", 1, NodeStateKind.ALIVE),), b"")
    core.take_outputs()
    core.on_stream_reply(token, encode_stream(reply), 0.1)
    _run_until(core, 0.1 + 10 * QUIET.gossip_interval_s)
    assert core.stats["join_resyncs"] == 1
