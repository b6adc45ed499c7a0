"""Deterministic simulator for the gossip core: many `Serf` instances over a simulated network.

How it works
------------
One seeded `random.Random` drives the world (delays, loss, which member joins whom, who is
killed); each member gets its own `random.Random` derived from it. The shared kernel's event heap
(kernel.py; time in seconds here) holds four kinds of events per member: WAKE (call `tick` when its
next timer is due), PACKET (a datagram arrives), STREAM_REQ / STREAM_REPLY (a push-pull
exchange), plus world ACTIONs (start, kill, leave, partition, heal). After every event the
member's outputs go onto the network and its events into the checkers. Nothing reads the wall
clock, so a seed replays exactly; `SimReport.state_hash` fingerprints the final state.

Network: one-way delay `delay_min_s + Exp(delay_mean_s)`, independent loss per datagram,
partitions that drop datagrams and fail streams between sides. Streams are reliable (TCP) and
fail fast to a dead member, at their deadline across a partition. A CPU-starved member handles
every event (packets and its own timers) late by up to `starve_lag_s`, in order.

Checkers (`SimReport.failures`, empty when the run is good)
  * false positives: a core FAIL about a member that is running (the starved one included), except
    across a partition until the suspicion maximum after it heals: must be 0;
  * detection: each killed member is declared failed by every member that knew it and ran on,
    within `detection_bound_s` (memberlist's bound: probe allowance + largest awareness-scaled
    deadline + suspicion maximum + dissemination), and the median observer within
    `detection_expected_s` (suspicion minimum + a few probe intervals: Lifeguard confirmations);
  * convergence: each join and each graceful leave reaches every member within
    `push_pull_bound_s` and >= 99 % of (change, member) pairs within `gossip_bound_s`
    (a few log2(N) gossip rounds); after a partition heals everyone sees everyone alive again
    within `heal_bound_s`;
  * user events (`user_events`): each is delivered at most once per member, and to every member
    running when it was fired within `push_pull_bound_s` (counted in the gossip-bound fraction);
  * invariants: a running member never sees itself suspect/dead; per observer, incarnations of
    a member never go down; no gossip packet above `udp_buffer_size` (the core asserts).
Latency bounds assume a whole network: kills, joins and leaves whose bound window overlaps a
partition (or its healing) are only checked for false positives and the final all-alive view.
Figures: detection and convergence latencies, UDP and stream bytes/s per member, suspicions,
refutations, decode errors, events processed, wall time.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

from appliance.gossip import GossipConfig, Serf, push_pull_scale, suspicion_bounds
from appliance.gossip.messages import (
    NodeStateKind,
    PushNode,
    PushPull,
    Suspect,
    encode_message,
    encode_packet,
    encode_stream,
)
from appliance.gossip.outputs import EventKind, Send
from appliance.gossip.serf import MemberStatus, SerfEventKind, encode_tags

from .kernel import Kernel

WAKE, PACKET, STREAM_REQ, STREAM_REPLY = range(4)
PORT = 7946
PROFILES = {"lan": GossipConfig.lan, "wan": GossipConfig.wan, "local": GossipConfig.local}


@dataclass
class SimOptions:
    seed: int
    members: int = 100
    duration_s: float = 60.0
    profile: str = "lan"
    loss: float = 0.01
    delay_min_s: float = 0.0002
    delay_mean_s: float = 0.0008
    starved: int = 1  # members whose CPU is starved for the whole run
    starve_lag_s: float = 1.5
    bootstrap: str = "join"  # "join": staggered joins; "preloaded": everyone starts knowing everyone
    join_spacing_s: float = 0.02
    churn_at_s: float | None = None  # default: 5 s after the last bootstrap join
    kills: int = 1
    leaves: int = 0
    late_joins: int = 0
    churn_spread_s: float = 2.0
    partition_at_s: float | None = None
    partition_for_s: float = 0.0
    partition_fraction: float = 0.5
    garbage_per_s: float = 0.0  # random datagrams from outside the cluster
    liars: int = 0  # members that also flood suspicions about random healthy members
    liar_per_s: float = 1.0
    user_events: int = 0  # Serf user events fired by random members during the churn window

    @classmethod
    def swarm(cls, seed: int, members: tuple[int, int] = (50, 200), duration_s: float = 90.0) -> SimOptions:
        """Options picked by the seed itself (swarm testing): size, loss, faults, churn."""
        pick = random.Random(f"gossip-swarm-{seed}")
        return cls(
            seed=seed,
            members=pick.randint(*members),
            duration_s=duration_s,
            loss=pick.choice((0.0, 0.01, 0.01, 0.02)),
            starved=pick.choice((0, 1, 1, 2)),
            starve_lag_s=pick.choice((0.5, 1.0, 1.5)),
            bootstrap=pick.choice(("join", "preloaded")),
            kills=pick.randint(0, 3),
            leaves=pick.randint(0, 3),
            late_joins=pick.randint(0, 3),
            garbage_per_s=pick.choice((0.0, 0.0, 20.0)),
            liars=pick.choice((0, 0, 1)),
            partition_at_s=pick.choice((None, None, None, 10.0)),
            partition_for_s=pick.choice((5.0, 15.0, 30.0)),
            partition_fraction=pick.choice((0.5, 0.2, 0.05)),
        )


@dataclass
class SimNode:
    idx: int
    name: str
    addr: tuple[str, int]
    serf: Serf | None = None
    running: bool = False
    state: str = "new"  # new, running, leaving, left, killed
    started_at: float = 0.0
    lag_s: float = 0.0
    busy_until: float = 0.0
    wake_at: float | None = None
    udp_bytes: int = 0
    stream_bytes: int = 0
    liar: bool = False


@dataclass
class SimReport:
    options: SimOptions
    failures: list[str] = field(default_factory=list)
    false_positives: int = 0
    detection_s: list[float] = field(default_factory=list)  # per killed member: slowest observer
    detection_median_s: list[float] = field(default_factory=list)
    join_convergence_s: list[float] = field(default_factory=list)  # per join: slowest observer
    leave_convergence_s: list[float] = field(default_factory=list)
    event_convergence_s: list[float] = field(default_factory=list)  # per user event: slowest member
    heal_convergence_s: float | None = None
    gossip_fraction: float = 1.0  # share of (change, observer) pairs inside gossip_bound_s
    bytes_per_s_mean: float = 0.0
    bytes_per_s_max: float = 0.0
    stream_bytes_per_s_mean: float = 0.0
    suspicions: int = 0
    refutes: int = 0
    decode_errors: int = 0
    events: int = 0
    wall_s: float = 0.0
    state_hash: str = ""
    bounds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        o = self.options

        def fmt(xs: list[float]) -> str:
            return f"max {max(xs):.2f}s median {sorted(xs)[len(xs) // 2]:.2f}s (n={len(xs)})" if xs else "-"

        lines = [
            f"SEED={o.seed} members={o.members} duration={o.duration_s}s profile={o.profile} loss={o.loss} "
            f"starved={o.starved}x{o.starve_lag_s}s bootstrap={o.bootstrap} kills={o.kills} leaves={o.leaves} "
            f"late_joins={o.late_joins} partition={o.partition_at_s}+{o.partition_for_s}s "
            f"garbage/s={o.garbage_per_s} liars={o.liars} user_events={o.user_events}",
            f"  result: {'OK' if self.ok else 'FAIL'}  false_positives={self.false_positives}",
            f"  detection (slowest observer): {fmt(self.detection_s)}; median observer: {fmt(self.detection_median_s)}",
            f"  join convergence: {fmt(self.join_convergence_s)}; leave convergence: {fmt(self.leave_convergence_s)}; "
            f"user events: {fmt(self.event_convergence_s)}",
            f"  heal convergence: {self.heal_convergence_s}; inside gossip bound: {self.gossip_fraction:.4f}",
            "  bounds: " + ", ".join(f"{k}={v:.2f}s" for k, v in self.bounds.items()),
            f"  udp bytes/s per member: mean {self.bytes_per_s_mean:.0f} max {self.bytes_per_s_max:.0f}; "
            f"push-pull {self.stream_bytes_per_s_mean:.0f}",
            f"  suspicions={self.suspicions} refutes={self.refutes} decode_errors={self.decode_errors} "
            f"events={self.events} wall={self.wall_s:.1f}s hash={self.state_hash[:16]}",
        ]
        lines.extend(f"  FAILURE: {f}" for f in self.failures[:20])
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- bounds


def gossip_bound_s(cfg: GossipConfig, n: int) -> float:
    """'A few log(N) gossip rounds': 3 x ceil(log2 N) rounds, plus one probe interval of slack."""
    return 3 * math.ceil(math.log2(max(2, n))) * cfg.gossip_interval_s + cfg.probe_interval_s


def detection_bound_s(cfg: GossipConfig, n: int) -> float:
    """memberlist's bound for n members: time until someone probes the dead member (10 probe
    intervals: P(no prober) ~ e^-10), the slowest awareness-scaled probe deadline, the suspicion
    maximum (no confirmations at all), then dissemination."""
    _, high = suspicion_bounds(cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n, cfg.probe_interval_s)
    return (10 * cfg.probe_interval_s + cfg.awareness_max_multiplier * cfg.probe_interval_s + high
            + gossip_bound_s(cfg, n))


def detection_expected_s(cfg: GossipConfig, n: int) -> float:
    """With Lifeguard's confirmations the typical observer learns of a death near the suspicion
    minimum: first probe + minimum + confirmations gathered within a few probe intervals."""
    low, _ = suspicion_bounds(cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n, cfg.probe_interval_s)
    return low + 6 * cfg.probe_interval_s + gossip_bound_s(cfg, n)


def push_pull_bound_s(cfg: GossipConfig, n: int) -> float:
    """Anything gossip misses is repaired by the next push-pull of the member that missed it."""
    return 2 * push_pull_scale(cfg.push_pull_interval_s, n) + gossip_bound_s(cfg, n)


def heal_bound_s(cfg: GossipConfig, n: int) -> float:
    """After a partition heals, the next reconnect attempt (every reconnect_interval_s, with
    probability failed/alive) re-joins the sides and the revived members spread by gossip; a
    member that misses that wave (or whose own reconnect hit a really dead member) is repaired by
    its next periodic push-pull."""
    return cfg.reconnect_interval_s + push_pull_scale(cfg.push_pull_interval_s, n) + 2 * gossip_bound_s(cfg, n)


# ---------------------------------------------------------------------------------- the simulator


class GossipSim(Kernel):
    def __init__(self, options: SimOptions, config: GossipConfig | None = None) -> None:
        super().__init__(options.seed)
        self.o = options
        self.cfg = config or PROFILES[options.profile]()
        self.rng = random.Random(options.seed)
        self.nodes: list[SimNode] = []
        self.by_addr: dict[tuple[str, int], SimNode] = {}
        self.sides: dict[int, int] | None = None
        self.partition_window: tuple[float, float] | None = None
        self.part_sides: dict[int, int] = {}
        self.report = SimReport(options)
        self.killed_at: dict[str, float] = {}
        self.knew_victim: dict[str, set[str]] = {}
        self.last_rejoin = 0.0
        self.fail_seen: dict[str, dict[str, float]] = defaultdict(dict)
        self.changes: list[tuple[str, str, float]] = []  # (kind, member, time) for joins and leaves
        self.join_seen: dict[str, dict[str, float]] = defaultdict(dict)
        self.leave_seen: dict[str, dict[str, float]] = defaultdict(dict)
        self.last_inc: dict[tuple[str, str], int] = {}
        self.fired: dict[tuple[int, str], tuple[float, set[str]]] = {}  # (ltime, name) -> (time, running then)
        self.delivered: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)  # -> member -> deliveries
        self.event_seen: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)  # -> member -> first time

    # ------------------------------------------------------------ heap

    def push(self, when: float, kind: int, idx: int, payload, deferred: bool = False) -> None:
        self.at(when, self.dispatch, kind, idx, payload, deferred)

    # ------------------------------------------------------------ world actions

    def add_node(self) -> SimNode:
        idx = len(self.nodes)
        node = SimNode(idx, f"node-{idx:04d}", (f"10.{idx // 250}.{idx % 250}.1", PORT))
        self.nodes.append(node)
        self.by_addr[node.addr] = node
        return node

    def start(self, node: SimNode, join_via: list[SimNode]) -> None:
        rng = random.Random(self.rng.getrandbits(64))
        node.serf = Serf(node.name, node.addr[0], PORT, self.cfg, rng, self.now, tags={"role": "node"})
        node.running, node.state, node.started_at = True, "running", self.now
        if join_via:
            node.serf.join([peer.addr for peer in join_via], self.now)
            self.changes.append(("join", node.name, self.now))
        self.after(node)

    def preload(self, node: SimNode, table: bytes) -> None:
        """Give a fresh member the whole table (`preload_table`) through the public push-pull
        path, then drop the news it queued (a settled cluster has nothing left to gossip)."""
        node.serf.on_stream(("0.0.0.0", 0), table, self.now)
        node.serf.take_outputs()
        node.serf.core.broadcasts.reset()
        node.serf.intents.reset()
        node.serf.core.take_events()
        node.serf.take_events()

    @staticmethod
    def preload_table(everyone: list[SimNode]) -> bytes:
        """The push-pull stream of a settled cluster (encoded once for every member)."""
        meta = encode_tags({"role": "node"})
        nodes = tuple(PushNode(p.name, p.addr[0], PORT, meta, 1, NodeStateKind.ALIVE) for p in everyone)
        return encode_stream(PushPull(False, False, nodes, b""))

    def kill(self, node: SimNode) -> None:
        if node.running:
            node.running, node.state = False, "killed"
            self.killed_at[node.name] = self.now
            self.knew_victim[node.name] = {
                n.name for n in self.nodes if n.running and n.serf.core.member(node.name) is not None}

    def leave(self, node: SimNode) -> None:
        if node.running and node.state == "running":
            node.state = "leaving"
            self.changes.append(("leave", node.name, self.now))
            node.serf.leave(self.now)
            self.after(node)

    def partition(self, fraction: float) -> None:
        order = list(range(len(self.nodes)))
        self.rng.shuffle(order)
        cut = max(1, int(len(order) * fraction))
        self.sides = {idx: (0 if i < cut else 1) for i, idx in enumerate(order)}

    def heal(self) -> None:
        self.sides = None

    def garbage(self) -> None:
        running = [n for n in self.nodes if n.running]
        if running:
            target = running[self.rng.randrange(len(running))]
            size = self.rng.choice((0, 1, 2, 5, 40, 300, 1400))
            data = bytes(self.rng.getrandbits(8) for _ in range(size))
            if size and self.rng.random() < 0.5:
                data = b"\x01" + data[1:]  # right version byte, garbage after it
            self.deliver(("192.0.2.1", 9), target, data)
        self.at(self.now + self.rng.expovariate(self.o.garbage_per_s), self.garbage)

    def lie(self, liar: SimNode) -> None:
        """A liar member floods suspicions about random healthy members (one accuser only)."""
        if not liar.running:
            return
        victims = [n for n in self.nodes if n.running and n is not liar and n.state == "running"]
        if victims:
            victim = victims[self.rng.randrange(len(victims))]
            ns = liar.serf.core.member(victim.name)
            inc = ns.incarnation if ns else 1
            data = encode_packet([encode_message(Suspect(inc, victim.name, liar.name))])
            for target in (victims[self.rng.randrange(len(victims))] for _ in range(3)):
                self.send(liar, Send(target.addr, data))
        self.at(self.now + self.rng.expovariate(self.o.liar_per_s), self.lie, liar)

    # ------------------------------------------------------------ network

    def cut(self, a: SimNode, b: SimNode) -> bool:
        return self.sides is not None and self.sides.get(a.idx) != self.sides.get(b.idx)

    def delay(self) -> float:
        return self.o.delay_min_s + self.rng.expovariate(1.0 / self.o.delay_mean_s)

    def send(self, src: SimNode, out: Send) -> None:
        src.udp_bytes += len(out.data)
        dst = self.by_addr.get(out.dest)
        if dst is None or self.cut(src, dst) or (self.o.loss and self.rng.random() < self.o.loss):
            return
        self.push(self.now + self.delay(), PACKET, dst.idx, (src.addr, out.data))

    def deliver(self, src_addr, dst: SimNode, data: bytes) -> None:
        self.push(self.now + self.delay(), PACKET, dst.idx, (src_addr, data))

    def stream(self, src: SimNode, req) -> None:
        src.stream_bytes += len(req.data)
        dst = self.by_addr.get(req.dest)
        if dst is None or not dst.running:
            self.push(self.now + 2 * self.delay(), STREAM_REPLY, src.idx, (req.token, None))
        elif self.cut(src, dst):
            self.push(req.deadline, STREAM_REPLY, src.idx, (req.token, None))
        else:
            self.push(self.now + self.delay(), STREAM_REQ, dst.idx, (src.idx, req.token, req.data, req.deadline))

    # ------------------------------------------------------------ per-member processing

    def after(self, node: SimNode) -> None:
        serf = node.serf
        for out in serf.take_outputs():
            if type(out) is Send:
                self.send(node, out)
            else:
                self.stream(node, out)
        for ev in serf.core.take_events():
            self.observe(node, ev)
        for ev in serf.take_events():
            if ev.kind is SerfEventKind.USER:
                got = self.delivered[(ev.ltime, ev.name)]
                got[node.name] = got.get(node.name, 0) + 1
                if got[node.name] == 1:
                    self.event_seen[(ev.ltime, ev.name)][node.name] = self.now
        if node.state == "leaving" and serf.has_left:
            node.running, node.state = False, "left"
            return
        deadline = serf.next_deadline()
        if deadline is not None and (node.wake_at is None or deadline < node.wake_at):
            node.wake_at = deadline
            self.push(max(deadline, self.now), WAKE, node.idx, deadline)

    def observe(self, node: SimNode, ev) -> None:
        key = (node.name, ev.node)
        last = self.last_inc.get(key)
        if last is not None and ev.incarnation < last:
            self.report.failures.append(
                f"t={self.now:.3f} {node.name} saw {ev.node}'s incarnation go down {last} -> {ev.incarnation}")
        self.last_inc[key] = ev.incarnation
        if ev.node == node.name:
            if ev.kind in (EventKind.SUSPECT, EventKind.FAIL) or (ev.kind is EventKind.LEAVE and node.state ==
                                                                  "running"):
                self.report.failures.append(f"t={self.now:.3f} {node.name} marked itself {ev.kind.value}")
            return
        subject = self.by_name(ev.node)
        if ev.kind is EventKind.FAIL:
            self.fail_seen[ev.node].setdefault(node.name, self.now)
            if subject is not None and subject.state == "running" and not self.exempt(node, subject):
                self.report.false_positives += 1
                self.report.failures.append(
                    f"t={self.now:.3f} false positive: {node.name} declared healthy {ev.node} failed")
        elif ev.kind is EventKind.LEAVE:
            self.leave_seen[ev.node].setdefault(node.name, self.now)
            if subject is not None and subject.state == "running":
                self.report.failures.append(f"t={self.now:.3f} {node.name} saw running {ev.node} leave")
        elif ev.kind is EventKind.JOIN:
            self.join_seen[ev.node].setdefault(node.name, self.now)
            if self.partition_window is not None and self.now >= self.partition_window[1]:
                self.last_rejoin = self.now
        elif ev.kind is EventKind.SUSPECT:
            self.report.suspicions += 1

    def exempt(self, observer: SimNode, subject: SimNode) -> bool:
        """Across a partition, failures are expected until the suspicion maximum after the heal."""
        if self.partition_window is None:
            return False
        start, heal = self.partition_window
        if not start <= self.now <= heal + self.bounds["suspicion_max"] + self.cfg.probe_interval_s * 10:
            return False
        return self.part_sides.get(observer.idx) != self.part_sides.get(subject.idx)

    def by_name(self, name: str) -> SimNode | None:
        if name.startswith("node-"):
            try:
                idx = int(name[5:])
            except ValueError:
                return None
            if 0 <= idx < len(self.nodes):
                return self.nodes[idx]
        return None

    # ------------------------------------------------------------ scenario and run

    def schedule_scenario(self) -> None:
        o, rng = self.o, self.rng
        for _ in range(o.members):
            self.add_node()
        if o.bootstrap == "preloaded":
            for node in self.nodes:
                self.start(node, [])
            table = self.preload_table(self.nodes)
            for node in self.nodes:
                self.preload(node, table)
            boot_end = 0.0
        else:
            self.start(self.nodes[0], [])
            for i in range(1, o.members):
                self.at(i * o.join_spacing_s, self._join_random_earlier, i)
            boot_end = (o.members - 1) * o.join_spacing_s
        for idx in rng.sample(range(o.members), min(o.starved, o.members)):
            self.nodes[idx].lag_s = o.starve_lag_s
        churn_at = o.churn_at_s if o.churn_at_s is not None else boot_end + 5.0
        healthy = [n for n in self.nodes if n.lag_s == 0]
        victims = rng.sample(healthy, min(len(healthy), o.kills + o.leaves + o.liars))
        for node in victims[: o.kills]:
            self.at(churn_at + rng.uniform(0, o.churn_spread_s), self.kill, node)
        for node in victims[o.kills: o.kills + o.leaves]:
            self.at(churn_at + rng.uniform(0, o.churn_spread_s), self.leave, node)
        for node in victims[o.kills + o.leaves:]:
            node.liar = True
            self.at(boot_end + 1.0, self.lie, node)
        for i in range(o.user_events):
            self.at(churn_at + rng.uniform(0, o.churn_spread_s), self.fire_event, f"event-{i}")
        for _ in range(o.late_joins):
            self.at(churn_at + rng.uniform(0, o.churn_spread_s), self._late_join)
        if o.partition_at_s is not None and o.partition_for_s > 0:
            self.partition_window = (o.partition_at_s, o.partition_at_s + o.partition_for_s)
            self.at(o.partition_at_s, self._partition)
            self.at(o.partition_at_s + o.partition_for_s, self.heal)
        if o.garbage_per_s > 0:
            self.at(rng.expovariate(o.garbage_per_s), self.garbage)

    def _partition(self) -> None:
        self.partition(self.o.partition_fraction)
        self.part_sides = dict(self.sides)

    def _join_random_earlier(self, i: int) -> None:
        running = [n for n in self.nodes[:i] if n.running]
        self.start(self.nodes[i], [running[self.rng.randrange(len(running))]] if running else [])

    def fire_event(self, name: str) -> None:
        """A random running member fires a Serf user event; every member running now must get it once."""
        running = [n for n in self.nodes if n.running and n.state == "running"]
        if not running:
            return
        src = running[self.rng.randrange(len(running))]
        ltime = src.serf.user_event(name, self.rng.randbytes(self.rng.randrange(0, 64)), False, self.now)
        self.fired[(ltime, name)] = (self.now, {n.name for n in running})
        self.after(src)

    def _late_join(self) -> None:
        running = [n for n in self.nodes if n.running and n.state == "running"]
        node = self.add_node()
        self.start(node, [running[self.rng.randrange(len(running))]])

    def run(self) -> SimReport:
        wall = time.perf_counter()
        n = self.o.members
        low, high = suspicion_bounds(self.cfg.suspicion_mult, self.cfg.suspicion_max_timeout_mult, n,
                                     self.cfg.probe_interval_s)
        self.bounds = {
            "suspicion_min": low,
            "suspicion_max": high,
            "gossip": gossip_bound_s(self.cfg, n),
            "detection": detection_bound_s(self.cfg, n),
            "detection_expected": detection_expected_s(self.cfg, n),
            "push_pull": push_pull_bound_s(self.cfg, n),
            "heal": heal_bound_s(self.cfg, n),
        }
        self.report.bounds = self.bounds
        self.schedule_scenario()
        end = self.o.duration_s
        self.run_until(end)
        self.now = end
        self.report.events = self.events
        self.finish()
        self.report.wall_s = time.perf_counter() - wall
        return self.report

    def dispatch(self, kind: int, idx: int, payload, deferred: bool) -> None:
        """One member event: a timer, a datagram, either end of a push-pull stream."""
        when = self.now
        node = self.nodes[idx]
        if not node.running:
            return
        if node.lag_s and not deferred:
            t = max(when + node.lag_s * (0.5 + 0.5 * self.rng.random()), node.busy_until)
            node.busy_until = t
            self.push(t, kind, idx, payload, True)
            return
        serf = node.serf
        if kind == WAKE:
            if payload != node.wake_at:
                return
            node.wake_at = None
            serf.tick(when)
        elif kind == PACKET:
            serf.on_packet(payload[0], payload[1], when)
        elif kind == STREAM_REQ:
            src_idx, token, data, deadline = payload
            src = self.nodes[src_idx]
            reply = serf.on_stream(src.addr, data, when)
            node.stream_bytes += len(reply)
            back = when + self.delay()
            if self.cut(node, src) or back > deadline:
                self.push(deadline, STREAM_REPLY, src_idx, (token, None))
            else:
                self.push(back, STREAM_REPLY, src_idx, (token, reply))
        else:
            token, data = payload
            serf.on_stream_reply(token, data, when)
        self.after(node)

    # ------------------------------------------------------------ final checks

    def finish(self) -> None:
        r, end, b = self.report, self.o.duration_s, self.bounds
        survivors = [n for n in self.nodes if n.running and n.state == "running"]
        pairs_total = pairs_fast = 0
        # Detection of killed members.
        for name, t_kill in sorted(self.killed_at.items()):
            if t_kill + b["detection"] > end or self.disturbed(t_kill, t_kill + b["detection"]):
                continue
            seen = self.fail_seen.get(name, {})
            lat = []
            for obs in survivors:
                if obs.name not in self.knew_victim[name] or obs.liar:
                    continue
                t = seen.get(obs.name, self.leave_seen.get(name, {}).get(obs.name))
                if t is None:
                    r.failures.append(f"{obs.name} never declared killed {name} failed")
                    continue
                lat.append(t - t_kill)
            if lat:
                lat.sort()
                r.detection_s.append(lat[-1])
                r.detection_median_s.append(lat[len(lat) // 2])
                if lat[-1] > b["detection"]:
                    r.failures.append(f"{name}: slowest detection {lat[-1]:.2f}s > bound {b['detection']:.2f}s")
                if lat[len(lat) // 2] > b["detection_expected"]:
                    r.failures.append(
                        f"{name}: median detection {lat[len(lat) // 2]:.2f}s > expected {b['detection_expected']:.2f}s")
        # Convergence of joins and graceful leaves.
        for kind, name, t0 in self.changes:
            if t0 + b["gossip"] > end or self.disturbed(t0, t0 + b["push_pull"]):
                continue
            hard = t0 + b["push_pull"] <= end  # a missing view is a failure only once push-pull had its chance
            seen = (self.join_seen if kind == "join" else self.leave_seen).get(name, {})
            subject = self.by_name(name)
            if kind == "join" and subject.state != "running":
                continue
            lat = []
            for obs in survivors:
                if obs.name == name or obs.started_at > t0:
                    continue
                t = seen.get(obs.name)
                if t is None:
                    if hard:
                        r.failures.append(f"{obs.name} never saw {kind} of {name}")
                    else:
                        pairs_total += 1
                    continue
                lat.append(max(0.0, t - t0))
            if lat:
                pairs_total += len(lat)
                pairs_fast += sum(1 for x in lat if x <= b["gossip"])
                (r.join_convergence_s if kind == "join" else r.leave_convergence_s).append(max(lat))
                if max(lat) > b["push_pull"]:
                    r.failures.append(
                        f"{kind} of {name} reached everyone after {max(lat):.2f}s > {b['push_pull']:.2f}s")
        # User events: at most once everywhere; everyone running at the fire (and still running)
        # got it within the push-pull bound; most within the gossip bound.
        for key, per_member in self.delivered.items():
            for member, count in per_member.items():
                if count > 1:
                    r.failures.append(f"{member} delivered user event {key} {count} times")
        for key, (t0, audience) in sorted(self.fired.items()):
            if t0 + b["push_pull"] > end or self.disturbed(t0, t0 + b["push_pull"]):
                continue
            seen = self.event_seen.get(key, {})
            lat = []
            for obs in survivors:
                if obs.name not in audience:
                    continue
                t = seen.get(obs.name)
                if t is None:
                    r.failures.append(f"{obs.name} never delivered user event {key}")
                    continue
                lat.append(t - t0)
            if lat:
                pairs_total += len(lat)
                pairs_fast += sum(1 for x in lat if x <= b["gossip"])
                r.event_convergence_s.append(max(lat))
        r.gossip_fraction = pairs_fast / pairs_total if pairs_total else 1.0
        if r.gossip_fraction < 0.99:
            r.failures.append(f"only {r.gossip_fraction:.4f} of member views converged within the gossip bound")
        # After a heal everyone must see every survivor alive again.
        if self.partition_window is not None:
            heal = self.partition_window[1]
            names = {n.name for n in survivors}
            if heal + b["heal"] <= end:
                for obs in survivors:
                    for other in names - {obs.name}:
                        ns = obs.serf.core.member(other)
                        if ns is None or ns.state not in (NodeStateKind.ALIVE, NodeStateKind.SUSPECT):
                            r.failures.append(f"after heal {obs.name} sees {other} as "
                                              f"{'unknown' if ns is None else ns.state.name}")
                            break
            last = max(0.0, self.last_rejoin - heal)
            r.heal_convergence_s = last
            if last > b["heal"]:
                r.failures.append(f"views converged {last:.2f}s after the heal > bound {b['heal']:.2f}s")
        # Invariants on final state.
        for node in survivors:
            me = node.serf.core.member(node.name)
            if me is None or me.state != NodeStateKind.ALIVE:
                r.failures.append(f"{node.name} does not see itself alive at the end")
            if node.serf.members[node.name].status != MemberStatus.ALIVE:
                r.failures.append(f"{node.name}'s Serf status for itself is not alive")
        duration = max(1e-9, end)
        ran = [n for n in self.nodes if n.serf is not None]
        rates = [n.udp_bytes / max(1e-9, (self.now - n.started_at)) for n in ran]
        r.bytes_per_s_mean = sum(rates) / len(rates)
        r.bytes_per_s_max = max(rates)
        r.stream_bytes_per_s_mean = sum(n.stream_bytes for n in ran) / len(ran) / duration
        r.refutes = sum(n.serf.core.stats["refutes"] for n in ran)
        r.decode_errors = sum(n.serf.core.stats["decode_errors"] for n in ran)
        if self.o.garbage_per_s == 0 and r.decode_errors:
            r.failures.append(f"{r.decode_errors} decode errors without injected garbage")
        r.state_hash = self.state_hash()

    def disturbed(self, t0: float, t1: float) -> bool:
        """Whether [t0, t1] overlaps a partition or its healing: latency bounds assume a whole network."""
        if self.partition_window is None:
            return False
        start, heal = self.partition_window
        return t0 <= heal + self.bounds["heal"] and start <= t1

    def state_hash(self) -> str:
        h = hashlib.sha256()
        for node in self.nodes:
            h.update(f"{node.name}|{node.state}|{node.udp_bytes}|{node.stream_bytes}\n".encode())
            if node.serf is None:
                continue
            core = node.serf.core
            for ns in sorted(core.members(), key=lambda m: m.name):
                h.update(f"{ns.name}:{int(ns.state)}:{ns.incarnation}:{ns.state_change!r};".encode())
            for m in node.serf.member_list():
                h.update(f"{m.name}:{int(m.status)}:{m.status_ltime};".encode())
            h.update(repr(sorted(core.stats.items())).encode())
        h.update(repr(self.rng.random()).encode())  # the "unseed": the next draw of the world RNG
        return h.hexdigest()


def run(options: SimOptions, config: GossipConfig | None = None) -> SimReport:
    return GossipSim(options, config).run()
