"""Serf user events and Vivaldi coordinates in the sans-IO gossip layer.

Rules cited: `# Serf` (serf.go handleUserEvent/UserEvent, delegate.go push-pull state,
ping_delegate.go), `# Vivaldi` (Dabek et al. 2004 plus Serf's coordinate package: latency
filter, adjustment, gravity), reference scenario numbers `S29`/`S30` (gossip notes §12).
"""

from __future__ import annotations

import heapq
import math
import random

import pytest
from hypothesis import given, strategies as st

from appliance.gossip import GossipConfig, Serf, SerfEventKind
from appliance.gossip.coordinate import (
    Coordinate,
    CoordinateClient,
    CoordinateConfig,
    CoordinateError,
    sort_by_distance,
)
from appliance.gossip.messages import (
    Ack,
    Alive,
    DecodeError,
    UserEvent,
    decode_coordinate_payload,
    decode_packet,
    encode_coordinate_payload,
    encode_message,
    encode_packet,
)
from appliance.gossip.outputs import Send
from appliance.gossip.user_events import EVENT_BUFFER, UserEventError

LAN = GossipConfig.lan()


class Net:
    """A tiny loss-free network of Serf members: datagrams after `delay_s`, streams answered at once."""

    def __init__(self, names: list[str], delay_s: float = 0.001, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.delay_s = delay_s
        self.now = 0.0
        self.members: dict[tuple[str, int], Serf] = {}
        self.by_name: dict[str, Serf] = {}
        self.heap: list = []
        self.seq = 0
        self.delivered: dict[str, list] = {}
        self.down: set[str] = set()
        for i, name in enumerate(names):
            self.add(name, i)

    def add(self, name: str, i: int) -> Serf:
        addr = (f"10.0.0.{i + 1}", 7946)
        serf = Serf(name, addr[0], addr[1], LAN, random.Random(self.rng.random()), self.now, tags={"role": "node"})
        self.members[addr] = serf
        self.by_name[name] = serf
        self.delivered[name] = []
        return serf

    def addr(self, name: str) -> tuple[str, int]:
        s = self.by_name[name]
        return (s.core.addr, s.core.port)

    def flush(self, serf: Serf) -> None:
        for out in serf.take_outputs():
            if type(out) is Send:
                dst = self.members.get(out.dest)
                if dst is not None and dst.name not in self.down:
                    self.seq += 1
                    heapq.heappush(self.heap, (self.now + self.delay_s, self.seq, dst, (serf.core.addr, serf.core.port),
                                               out.data))
            else:
                dst = self.members.get(out.dest)
                reply = None
                if dst is not None and dst.name not in self.down:
                    reply = dst.on_stream((serf.core.addr, serf.core.port), out.data, self.now)
                    self.flush(dst)
                    self._collect(dst)
                serf.on_stream_reply(out.token, reply, self.now)
                self.flush(serf)
        self._collect(serf)

    def _collect(self, serf: Serf) -> None:
        for ev in serf.take_events():
            if ev.kind is SerfEventKind.USER:
                self.delivered[serf.name].append((ev.ltime, ev.name, ev.payload))

    def run(self, until: float) -> None:
        for s in self.by_name.values():
            self.flush(s)
        while True:
            live = [s for s in self.by_name.values() if s.name not in self.down]
            next_timer = min((s.next_deadline() for s in live), default=None)
            next_pkt = self.heap[0][0] if self.heap else None
            t = min(x for x in (next_timer, next_pkt, until + 1) if x is not None)
            if t > until:
                break
            self.now = t
            if next_pkt is not None and next_pkt <= t:
                _, _, dst, src, data = heapq.heappop(self.heap)
                if dst.name not in self.down:
                    dst.on_packet(src, data, t)
                    self.flush(dst)
                continue
            for s in live:
                if s.next_deadline() is not None and s.next_deadline() <= t:
                    s.tick(t)
                    self.flush(s)
        self.now = until


def _cluster(n: int = 5, seed: int = 1) -> Net:
    net = Net([f"n{i}" for i in range(n)], seed=seed)
    for i in range(1, n):
        net.by_name[f"n{i}"].join([net.addr("n0")], 0.0)
    net.run(5.0)
    return net


# ============================================================================ user events


def test_user_event_reaches_every_member_exactly_once():
    # Serf S29: delivered once per node despite several receptions; clocks move past the LTime.
    net = _cluster(5)
    a = net.by_name["n1"]
    ltime = a.user_event("deploy", b"v1", False, net.now)
    net.run(net.now + 3.0)
    for name, got in net.delivered.items():
        assert got == [(ltime, "deploy", b"v1")], name
        assert net.by_name[name].event_clock.time() > ltime
    dups = sum(s.stats["user_events_duplicate"] for s in net.by_name.values())
    assert dups > 0  # gossip did deliver copies; the buffer dropped them


def test_same_ltime_other_payload_is_a_different_event():
    # Serf S29: ("deploy", "v2") at the same LTime lands in the same slot and is delivered.
    net = _cluster(3)
    s = net.by_name["n2"]
    s.handle_user_event(UserEvent(100, "deploy", b"v1", False))
    s.handle_user_event(UserEvent(100, "deploy", b"v2", False))
    s.handle_user_event(UserEvent(100, "deploy", b"v1", False))
    net.flush(s)
    assert net.delivered["n2"] == [(100, "deploy", b"v1"), (100, "deploy", b"v2")]
    assert s.stats["user_events_duplicate"] == 1


def test_event_older_than_the_buffer_is_dropped():
    # Serf S29: LTime 10 while the clock is 700 is too old (10 < 700 - 512).
    net = _cluster(2)
    s = net.by_name["n1"]
    s.handle_user_event(UserEvent(699, "late", b"", False))
    s.handle_user_event(UserEvent(10, "old", b"", False))
    s.handle_user_event(UserEvent(700 - EVENT_BUFFER, "edge", b"", False))
    net.flush(s)
    assert [e[1] for e in net.delivered["n1"]] == ["late", "edge"]
    assert s.stats["user_events_too_old"] == 1


def test_event_size_limit_uses_serfs_text():
    net = _cluster(2)
    s = net.by_name["n0"]
    with pytest.raises(UserEventError, match="user event exceeds configured limit of 512 bytes before encoding"):
        s.user_event("x" * 10, b"y" * 503, False, net.now)
    # Serf checks the encoded message against the same limit: 512 bytes of name and payload do
    # fit once framed; 490 do (array and length headers, type, LTime, flag: at most 16 bytes).
    with pytest.raises(UserEventError, match="user event exceeds configured limit of 512 bytes after encoding"):
        s.user_event("x" * 10, b"y" * 502, False, net.now)
    s.user_event("x" * 10, b"y" * 480, False, net.now)
    with pytest.raises(UserEventError):
        Serf("z", "10.0.0.9", 7946, LAN, random.Random(1), 0.0, user_event_size_limit=10 * 1024)


def test_late_joiner_gets_recent_events_through_push_pull_unless_ignore_old():
    # Serf: the event ring is part of push-pull state; a join with ignoreOld skips it.
    net = _cluster(3)
    first = net.by_name["n0"].user_event("deploy", b"v1", False, net.now)
    net.run(net.now + 3.0)
    late = net.add("late", 10)
    late.join([net.addr("n1")], net.now)
    quiet = net.add("quiet", 11)
    quiet.join([net.addr("n2")], net.now, ignore_old=True)
    net.run(net.now + 3.0)
    assert net.delivered["late"] == [(first, "deploy", b"v1")]
    assert net.delivered["quiet"] == []
    assert quiet.event_buffer.min_time > first
    # Newer events still reach the member that ignored the old ones.
    second = net.by_name["n1"].user_event("deploy", b"v2", True, net.now)
    net.run(net.now + 3.0)
    assert net.delivered["quiet"] == [(second, "deploy", b"v2")]


def test_remote_event_state_garbage_is_counted_not_applied():
    s = _cluster(2).by_name["n0"]
    import msgpack

    bad = msgpack.packb([3, {}, [], 5, [[1, [["n", "not-bytes"]]]]], use_bin_type=True)
    s.merge_remote_state(bad, False)
    assert s.stats["bad_remote_state"] == 1
    s.merge_remote_state(msgpack.packb([3, {}, []], use_bin_type=True), False)  # old peers: no event fields
    assert s.stats["bad_remote_state"] == 1


def test_user_event_message_round_trips_and_rejects_bad_fields():
    msg = UserEvent(2**40, "deploy", b"\x00\xff", True)
    assert decode_packet(encode_packet([encode_message(msg)])) == ([msg], 0)
    import msgpack

    bad = b"\x01" + msgpack.packb([[11, 5, "n", "payload-as-str", False]], use_bin_type=True)
    with pytest.raises(DecodeError):
        decode_packet(bad)


def test_event_queue_is_bounded():
    # Serf#78: with nobody to tell, the queue is pruned to MaxQueueDepth at each check.
    s = Serf("alone", "10.0.0.1", 7946, LAN, random.Random(1), 0.0)
    for i in range(5000):
        s.user_event("e", str(i).encode(), False, 0.0)
    s.tick(31.0)
    assert len(s.events_queue) == 4096
    assert s.stats["event_queue_pruned"] == 904


# ============================================================================ coordinates


def test_vivaldi_single_step_matches_serf():
    # Gossip notes §9.4: local at origin, peer at -10 ms, RTT 25 ms.
    client = CoordinateClient(random.Random(1))
    peer = Coordinate.origin()
    peer.vec[0] = -0.010
    coord = client.update("peer", peer, 0.025)
    assert coord.vec[0] == pytest.approx(0.0018725, rel=1e-3)
    assert coord.error == pytest.approx(1.3874, abs=1e-4)
    assert coord.height == pytest.approx(13.74e-6, rel=1e-2)
    assert coord.adjustment == pytest.approx(0.3276e-3, rel=1e-2)
    assert coord.distance_to(peer) == pytest.approx(0.012224, rel=1e-3)
    for _ in range(30):
        coord = client.update("peer", peer, 0.025)
    assert coord.distance_to(peer) == pytest.approx(0.02351, rel=1e-2)
    assert coord.error == pytest.approx(0.263, abs=0.01)


def test_latency_filter_and_rejected_samples():
    # Serf: median of the last 3 samples; RTT 0 accepted, negative or > 10 s rejected, NaN peers rejected.
    client = CoordinateClient(random.Random(1))
    assert client._latency_filter("x", 0.010) == 0.010
    assert client._latency_filter("x", 0.100) == 0.100  # two samples: the larger
    assert client._latency_filter("x", 0.012) == 0.012
    assert client._latency_filter("x", 0.011) == 0.012  # window of 3: [0.100, 0.012, 0.011]
    client.update("p", Coordinate.origin(), 0.0)
    assert client.zero_rtts == 1
    for rtt in (-0.001, 11.0, float("nan")):
        with pytest.raises(CoordinateError):
            client.update("p", Coordinate.origin(), rtt)
    bad = Coordinate.origin()
    bad.vec[3] = float("nan")
    with pytest.raises(CoordinateError):
        client.update("p", bad, 0.01)
    with pytest.raises(CoordinateError):
        client.update("p", Coordinate([0.0] * 3, 1.5, 0.0, 1e-5), 0.01)
    assert client.rejected == 5


def test_coordinates_converge_to_true_rtts():
    # Serf S30: A-B 10 ms, B-C 10 ms, A-C 20 ms, D 50 ms to everyone. The A-C diagonal is the
    # slow one (about 13 ms after 200 rounds, 19.4 ms after 1000); after 3000 rounds every pair is
    # within 5 %.
    rtt = {("A", "B"): 0.010, ("B", "C"): 0.010, ("A", "C"): 0.020,
           ("A", "D"): 0.050, ("B", "D"): 0.050, ("C", "D"): 0.050}
    rng = random.Random(7)
    clients = {n: CoordinateClient(random.Random(i)) for i, n in enumerate("ABCD")}
    for _ in range(3000):
        for a in "ABCD":
            b = rng.choice([x for x in "ABCD" if x != a])
            true = rtt.get((a, b)) or rtt[(b, a)]
            clients[a].update(b, clients[b].get(), true)
    for (a, b), true in rtt.items():
        est = clients[a].get().distance_to(clients[b].get())
        assert abs(est - true) / true < 0.05, (a, b, est, true)
    assert all(c.get().error < 1.5 for c in clients.values())


def test_sort_by_distance_is_stable_and_puts_unknown_last():
    # Consul ?near: stable sort by estimated RTT, nodes without a coordinate last.
    src = Coordinate.origin()
    near, far = Coordinate.origin(), Coordinate.origin()
    near.vec[0], far.vec[0] = 0.001, 0.050
    coords = {"far": far, "near": near, "same": Coordinate.origin()}
    items = ["unknown", "far", "near", "same", "unknown2"]
    assert sort_by_distance(items, src, coords.get) == ["same", "near", "far", "unknown", "unknown2"]
    assert sort_by_distance(items, None, coords.get) == items


def test_coordinate_json_round_trip_and_errors():
    c = Coordinate([0.001] * 8, 0.5, 0.0001, 2e-5)
    assert Coordinate.from_json(c.to_json()) == c
    for bad in ({}, {"Vec": []}, {"Vec": ["x"]}, {"Vec": [1.0], "Error": True}, [1], {"Vec": [float("inf")]}):
        with pytest.raises(CoordinateError):
            Coordinate.from_json(bad)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=8),
       st.floats(0, 2), st.floats(-1, 1), st.floats(0, 1))
def test_coordinate_payload_round_trip(vec, error, adjustment, height):
    payload = encode_coordinate_payload(vec, error, adjustment, height)
    assert decode_coordinate_payload(payload) == (vec, error, adjustment, height)


def test_coordinate_payload_versions_and_garbage():
    assert decode_coordinate_payload(b"") is None  # an old ack without payload
    assert decode_coordinate_payload(b"\x07whatever") is None  # a future version: ignored
    for bad in (b"\x01", b"\x01\xc1", b"\x01\x93\x01\x02\x03", b"\x01\x94\x90\x01\x02\x03"):
        with pytest.raises(DecodeError):
            decode_coordinate_payload(bad)


def test_acks_carry_coordinates_and_probes_update_them():
    # Serf ping delegate: direct acks within the probe timeout are RTT samples; every member's
    # coordinate moves off the origin and peers' coordinates are cached.
    net = _cluster(4)
    net.delay_s = 0.005  # 10 ms round trips
    net.run(net.now + 30.0)
    for s in net.by_name.values():
        assert s.coordinates.updates > 0, s.name
        assert s.coordinate().error < 1.5
        others = [n for n in net.by_name if n != s.name]
        assert all(s.cached_coordinate(o) is not None for o in others)
        est = s.coordinate().distance_to(s.cached_coordinate(others[0]))
        assert 0.005 < est < 0.02, est


def test_garbage_coordinate_in_an_ack_is_counted_not_fatal():
    s = Serf("a", "10.0.0.1", 7946, LAN, random.Random(1), 0.0)
    s.notify_ping_complete("b", 0.01, b"\x01\xc1")
    s.notify_ping_complete("b", 0.01, encode_coordinate_payload([math.nan] * 8, 1.5, 0.0, 1e-5))
    s.notify_ping_complete("b", 0.01, encode_coordinate_payload([0.0] * 3, 1.5, 0.0, 1e-5))
    assert s.stats["bad_coordinates"] == 1
    assert s.stats["rejected_coordinates"] == 2
    assert s.coordinate() == Coordinate.origin()
    assert s.cached_coordinate("b") is None


def test_ack_to_a_ping_carries_the_local_coordinate():
    s = Serf("a", "10.0.0.1", 7946, LAN, random.Random(1), 0.0)
    from appliance.gossip.messages import Ping

    s.on_packet(("10.0.0.2", 7946), encode_packet([encode_message(Alive(1, "b", "10.0.0.2", 7946, b"")),
                                                   encode_message(Ping(9, "a", "b", "10.0.0.2", 7946))]), 0.1)
    acks = [m for out in s.take_outputs() if type(out) is Send for m in decode_packet(out.data)[0] if type(m) is Ack]
    assert acks and decode_coordinate_payload(acks[0].payload) == (
        [0.0] * CoordinateConfig().dimensionality, 1.5, 0.0, 1e-5)
