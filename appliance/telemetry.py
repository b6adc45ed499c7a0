"""The agent's metric recorder: counters, gauges and samples with labels, Consul's names.

How it works
------------
One `Telemetry` per agent (`agent.telemetry`). Code that has something to count calls it with a
dotted name relative to the prefix, the way Consul's go-metrics calls are written:

    tel.incr_counter("catalog.service.query", labels={"service": name})
    tel.set_gauge("rpc.queries_blocking", 3)
    start = time.monotonic(); ...; tel.measure_since("dns.domain_query", start, {"node": node})

The full key is `<metrics_prefix>.<name>`; gauges also get the host name after the prefix
unless `telemetry.disable_hostname` is set (`consul.<host>.runtime.alloc_bytes`). Every value is
kept twice:

* in memory, in fixed intervals (10 s, the last 6 kept): each interval aggregates samples and
  counters (count, sum, sum of squares, min, max) and keeps the last value of each gauge.
  `display()` renders the most recent *finished* interval (the current one when it is the only
  one) as Consul's `/v1/agent/metrics` JSON;
* cumulatively, for Prometheus (only when `prometheus_retention_time` > 0): counter totals,
  last gauge values, and for samples a count, a sum and the observations of the last 10 s
  (quantiles 0.5/0.9/0.99). A series not updated within the retention time is dropped.
  `prometheus_series()` hands these to the exporters package, which owns the exposition format.

Gauges that describe state rather than events (blocking queries parked, Raft indexes, table
sizes, per-check status) are not pushed; `add_gauge_source(fn)` registers a function that
returns them, called whenever metrics are read. Timings are in milliseconds, like Consul's.
Everything runs on the event loop thread; nothing here blocks or does I/O.

`instrument(agent)` wires the recorder into the agent: it gives the Raft driver a
`RaftTelemetry`, the driver's metrics hook (appliance/raft/metrics.py), which records what the
driver times under hashicorp/raft's and Consul's names: `consul.raft.*` (state transitions,
commitTime, apply, fsm.apply, leader.dispatchLog, leader.lastContact, replication and RPC
timings, snapshots), every command proposed to the log (`consul.catalog.register`,
`consul.kvs.apply`, ...), every FSM apply (`consul.fsm.*`) and every log entry the FSM could not
apply (`consul.fsm.apply_error{type}`, cairn's own); and it registers the agent's
state gauges (Raft indexes, term and peers among them). `record_http`, called by the HTTP
server's middleware, times each request as `consul.api.http{method,path}`, with the path of
the route that answered (`/v1/health/service/web` -> `v1.health.service._`).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from appliance.raft.metrics import RaftMetrics

Labels = Mapping[str, str] | Iterable[tuple[str, str]] | None
LabelKey = tuple[tuple[str, str], ...]
GaugeSource = Callable[[], Iterable[tuple[str, float, Labels]]]

INTERVAL_S = 10.0  # go-metrics in-memory sink as Consul configures it: 10 s intervals ...
RETAIN_INTERVALS = 6  # ... kept for one minute
SUMMARY_MAX_AGE_S = 10.0  # window of the Prometheus quantiles
QUANTILES = (0.5, 0.9, 0.99)
MAX_WINDOW = 4096  # observations kept per summary window; older ones are dropped first
STATUSES = ("passing", "warning", "critical", "maintenance")

# command "Type" -> (RPC timing name, FSM timing name)
_WRITE_NAMES = {
    "register": ("catalog.register", "fsm.register"),
    "deregister": ("catalog.deregister", "fsm.deregister"),
    "kv_set": ("kvs.apply", "fsm.kvs"),
    "kv_delete": ("kvs.apply", "fsm.kvs"),
}


def _label_key(labels: Labels) -> LabelKey:
    if not labels:
        return ()
    items = labels.items() if isinstance(labels, Mapping) else labels
    return tuple(sorted((str(k), str(v)) for k, v in items))


@dataclass
class Aggregate:
    """go-metrics' AggregateSample: what one interval knows about a counter or a sample."""

    count: int = 0
    sum: float = 0.0
    sum_sq: float = 0.0
    min: float = 0.0
    max: float = 0.0

    def add(self, value: float, weight: int = 1) -> None:
        """Add `value` observed `weight` times (weight > 1: a sampled timing standing for others)."""
        if self.count == 0 or value < self.min:
            self.min = value
        if self.count == 0 or value > self.max:
            self.max = value
        self.count += weight
        self.sum += value * weight
        self.sum_sq += value * value * weight

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    @property
    def stddev(self) -> float:
        div = self.count * (self.count - 1)
        if div == 0:
            return 0.0
        num = self.count * self.sum_sq - self.sum * self.sum
        return math.sqrt(max(num, 0.0) / div)


@dataclass
class Interval:
    start: float  # wall-clock seconds, a multiple of INTERVAL_S
    gauges: dict[tuple[str, LabelKey], float] = field(default_factory=dict)
    counters: dict[tuple[str, LabelKey], Aggregate] = field(default_factory=dict)
    samples: dict[tuple[str, LabelKey], Aggregate] = field(default_factory=dict)


@dataclass
class Summary:
    count: int = 0
    sum: float = 0.0
    window: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_WINDOW))
    updated: float = 0.0


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted `values`; NaN when there are none."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q * len(values)))
    return values[min(rank, len(values)) - 1]


class Telemetry:
    def __init__(
        self,
        *,
        prefix: str = "consul",
        hostname: str = "",
        disable_hostname: bool = False,
        retention_s: float = 60.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix = prefix
        self.hostname = "" if disable_hostname else hostname
        self.retention_s = retention_s
        self.wall = wall
        self.monotonic = monotonic
        self.intervals: list[Interval] = []
        self.counters: dict[tuple[str, LabelKey], list[float]] = {}  # key -> [total, updated]
        self.gauges: dict[tuple[str, LabelKey], list[float]] = {}  # key -> [value, updated]
        self.summaries: dict[tuple[str, LabelKey], Summary] = {}
        self.gauge_sources: list[GaugeSource] = []
        # Functions called before metrics are read, to record what hot paths keep aside
        # (instrument_dns's queries counted but not yet recorded).
        self.read_hooks: list[Callable[[], None]] = []
        self.http_timings: dict[tuple[str, str], SampledTiming] = {}  # (method, route) -> timing
        # Output formats other than JSON, registered by extensions: name -> fn(agent, query)
        # returning (body bytes, content type). exporters registers "prometheus".
        self.formatters: dict[str, Callable[[Any, Mapping[str, str]], tuple[bytes, str]]] = {}

    @property
    def prometheus_enabled(self) -> bool:
        return self.retention_s > 0

    # ------------------------------------------------------------------ names

    def key(self, name: str, *, gauge: bool = False) -> str:
        parts = [self.prefix] if self.prefix else []
        if gauge and self.hostname:
            parts.append(self.hostname)
        parts.append(name)
        return ".".join(parts)

    # ------------------------------------------------------------------ recording

    def _interval(self) -> Interval:
        now = self.wall()
        start = now - (now % INTERVAL_S)
        if not self.intervals or self.intervals[-1].start != start:
            self.intervals.append(Interval(start))
            del self.intervals[:-RETAIN_INTERVALS]
        return self.intervals[-1]

    def incr_counter(self, name: str, value: float = 1.0, labels: Labels = None) -> None:
        k = (self.key(name), _label_key(labels))
        self._interval().counters.setdefault(k, Aggregate()).add(value)
        if self.prometheus_enabled:
            slot = self.counters.setdefault(k, [0.0, 0.0])
            slot[0] += value
            slot[1] = self.monotonic()

    def set_gauge(self, name: str, value: float, labels: Labels = None) -> None:
        k = (self.key(name, gauge=True), _label_key(labels))
        self._interval().gauges[k] = float(value)
        if self.prometheus_enabled:
            self.gauges[k] = [float(value), self.monotonic()]

    def add_sample(self, name: str, value: float, labels: Labels = None, *, weight: int = 1,
                   observe: bool = True) -> None:
        """Record a sample. `weight` > 1 says it stands for that many events (count and sum grow by
        `weight` and `value * weight`); `observe=False` leaves it out of the quantile window (an
        estimate for events that were counted but not measured)."""
        k = (self.key(name), _label_key(labels))
        interval = self._interval()
        agg = interval.samples.get(k)
        if agg is None:
            agg = interval.samples[k] = Aggregate()
        agg.add(value, weight)
        if self.prometheus_enabled:
            now = self.monotonic()
            summary = self.summaries.get(k)
            if summary is None:
                summary = self.summaries[k] = Summary()
            summary.count += weight
            summary.sum += value * weight
            if observe:
                summary.window.append((now, value))
            summary.updated = now

    def measure_since(self, name: str, start: float, labels: Labels = None) -> float:
        """Record the milliseconds since `start` (a `time.monotonic()` reading) as a sample."""
        elapsed_ms = (self.monotonic() - start) * 1000.0
        self.add_sample(name, elapsed_ms, labels)
        return elapsed_ms

    def add_gauge_source(self, source: GaugeSource) -> None:
        self.gauge_sources.append(source)

    def add_read_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook()` before every read of the metrics (display, prometheus_series)."""
        self.read_hooks.append(hook)

    def _run_read_hooks(self) -> None:
        for hook in self.read_hooks:
            hook()

    def computed_gauges(self) -> list[tuple[str, LabelKey, float]]:
        out = []
        for source in self.gauge_sources:
            for name, value, labels in source():
                out.append((self.key(name, gauge=True), _label_key(labels), float(value)))
        return out

    # ------------------------------------------------------------------ reading: Consul's JSON

    def display(self) -> dict[str, Any]:
        """`GET /v1/agent/metrics`: the latest finished interval, as Consul renders it."""
        self._run_read_hooks()
        self._interval()
        data = self.intervals
        interval = data[0] if len(data) == 1 else data[-2]
        stamp = datetime.fromtimestamp(round(interval.start), tz=UTC)
        gauges = dict(interval.gauges)
        for name, labels, value in self.computed_gauges():
            gauges[(name, labels)] = value

        def agg(items: dict[tuple[str, LabelKey], Aggregate]) -> list[dict[str, Any]]:
            return [
                {"Name": name, "Count": a.count, "Rate": a.sum / INTERVAL_S, "Sum": a.sum, "Min": a.min,
                 "Max": a.max, "Mean": a.mean, "Stddev": a.stddev, "Labels": dict(labels)}
                for (name, labels), a in sorted(items.items())
            ]

        return {
            "Timestamp": stamp.strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
            "Gauges": [{"Name": name, "Value": value, "Labels": dict(labels)}
                       for (name, labels), value in sorted(gauges.items())],
            "Points": [],
            "Counters": agg(interval.counters),
            "Samples": agg(interval.samples),
        }

    # ------------------------------------------------------------------ reading: for Prometheus

    def prometheus_series(self) -> dict[str, list[Any]]:
        """Live series for the exporters: counters and gauges as (key, labels, value), summaries as
        (key, labels, count, sum, {quantile: value}). Expired series are dropped here."""
        self._run_read_hooks()
        now = self.monotonic()
        cutoff = now - self.retention_s
        for table in (self.counters, self.gauges):
            for k in [k for k, (_, updated) in table.items() if updated < cutoff]:
                del table[k]
        for k in [k for k, s in self.summaries.items() if s.updated < cutoff]:
            del self.summaries[k]
        summaries = []
        for (name, labels), s in sorted(self.summaries.items()):
            while s.window and s.window[0][0] < now - SUMMARY_MAX_AGE_S:
                s.window.popleft()
            values = sorted(v for _, v in s.window)
            summaries.append((name, labels, s.count, s.sum, {q: quantile(values, q) for q in QUANTILES}))
        gauges = {k: v for k, (v, _) in self.gauges.items()}
        for name, labels, value in self.computed_gauges():
            gauges[(name, labels)] = value
        return {
            "counters": [(name, labels, v) for (name, labels), (v, _) in sorted(self.counters.items())],
            "gauges": [(name, labels, v) for (name, labels), v in sorted(gauges.items())],
            "summaries": summaries,
        }


# ---------------------------------------------------------------------- wiring into the agent


def for_agent(agent: Any) -> Telemetry:
    """Build the agent's recorder from its config and instrument the agent with it."""
    cfg = agent.config.telemetry
    tel = Telemetry(prefix=cfg.metrics_prefix, hostname=socket.gethostname(),
                    disable_hostname=cfg.disable_hostname, retention_s=cfg.prometheus_retention_time_s)
    instrument(tel, agent)
    return tel


def kv_op(command: Mapping[str, Any]) -> str:
    """Consul's KVS operation name for a KV command (the `op` label of `consul.fsm.kvs`)."""
    if command.get("Type") == "kv_set":
        return "cas" if command.get("Verb") == "cas" else "set"
    if command.get("Recurse"):
        return "delete-tree"
    return "delete-cas" if "Index" in command else "delete"


class RaftTelemetry(RaftMetrics):
    """The Raft driver's metrics hook (appliance/raft/metrics.py says when each call comes),
    recording with the names hashicorp/raft and Consul give these metrics."""

    def __init__(self, tel: Telemetry) -> None:
        self.tel = tel

    def role_changed(self, role: str) -> None:
        self.tel.incr_counter("raft.state." + role)

    def proposal_accepted(self) -> None:
        self.tel.incr_counter("raft.apply")

    def committed(self, elapsed_ms: float, batch: int) -> None:
        self.tel.add_sample("raft.commitTime", elapsed_ms)
        self.tel.set_gauge("raft.commitNumLogs", batch)

    def dispatched(self, elapsed_ms: float, entries: int) -> None:
        self.tel.add_sample("raft.leader.dispatchLog", elapsed_ms)
        self.tel.set_gauge("raft.leader.dispatchNumLogs", entries)

    def follower_contact(self, peer: str, since_ms: float) -> None:
        self.tel.add_sample("raft.leader.lastContact", since_ms)

    def append_rpc(self, peer: str, elapsed_ms: float, entries: int) -> None:
        labels = (("peer_id", peer),)
        self.tel.add_sample("raft.replication.appendEntries.rpc", elapsed_ms, labels)
        self.tel.incr_counter("raft.replication.appendEntries.logs", entries, labels)

    def rpc_handled(self, kind: str, elapsed_ms: float) -> None:
        self.tel.add_sample("raft.rpc." + kind, elapsed_ms)

    def fsm_applied(self, command: dict[str, Any], elapsed_ms: float) -> None:
        self.tel.add_sample("raft.fsm.apply", elapsed_ms)
        kind = str(command.get("Type"))
        name = _WRITE_NAMES.get(kind, ("", "fsm." + kind))[1]
        self.tel.add_sample(name, elapsed_ms, {"op": kv_op(command)} if name == "fsm.kvs" else None)

    def fsm_apply_error(self, command_type: str) -> None:
        self.tel.incr_counter("fsm.apply_error", labels=(("type", command_type),))

    def command_done(self, command: dict[str, Any], elapsed_ms: float) -> None:
        rpc = _WRITE_NAMES.get(str(command.get("Type")), ("",))[0]
        if rpc:
            self.tel.add_sample(rpc, elapsed_ms)

    def snapshot_created(self, elapsed_ms: float) -> None:
        self.tel.add_sample("raft.snapshot.create", elapsed_ms)

    def snapshot_persisted(self, elapsed_ms: float) -> None:
        self.tel.add_sample("raft.snapshot.persist", elapsed_ms)


def instrument(tel: Telemetry, agent: Any) -> None:
    """Give the Raft driver its metrics hook; register the agent's state gauges."""
    agent.consensus.metrics = RaftTelemetry(tel)
    tel.add_gauge_source(lambda: agent_gauges(agent))


def agent_gauges(agent: Any) -> list[tuple[str, float, Labels]]:
    """State gauges, read when metrics are read."""
    out: list[tuple[str, float, Labels]] = [("rpc.queries_blocking", agent.hub.parked, None)]
    stats = agent.consensus.stats()
    for name, stat in (("raft.applied_index", "applied_index"), ("raft.last_index", "last_log_index"),
                       ("raft.commit_index", "commit_index"), ("raft.term", "term")):
        if stats.get(stat, "").isdigit():
            out.append((name, int(stats[stat]), None))
    if agent.config.server:  # a client agent runs no Raft (appliance/client)
        out.append(("raft.peers", len(agent.consensus.peers()), None))
    if agent.config.server:
        store = agent.store
        out += [
            ("state.nodes", len(store.nodes), None),
            ("state.services", len(store.service_index), None),
            ("state.service_instances", sum(len(s) for s in store.services.values()), None),
            ("state.kv_entries", len(store.kv), None),
            ("server.isLeader", 1 if agent.consensus.is_leader else 0, None),
        ]
    try:
        out.append(("runtime.num_goroutines", len(asyncio.all_tasks()), None))
    except RuntimeError:  # no running loop (tests)
        pass
    out.append(("runtime.total_gc_runs", sum(s["collections"] for s in gc.get_stats()), None))
    out += check_gauges(agent.local)
    return out


def check_gauges(local: Any) -> list[tuple[str, float, Labels]]:
    """`agent.check.status`: for each of this agent's checks, one series per status, 1 for the current one."""
    out: list[tuple[str, float, Labels]] = []
    for cid in sorted(local.checks):
        check = local.checks[cid]
        d = check.definition
        svc = local.services.get(d.service_id) if d.service_id else None
        base = {"check_id": cid, "check_name": d.name, "service_id": d.service_id,
                "service_name": svc.definition.name if svc is not None else ""}
        for status in STATUSES:
            out.append(("agent.check.status", 1 if check.status == status else 0, {**base, "status": status}))
    return out


# ---------------------------------------------------------------------- DNS

_PTR_ZONES = (b"\x07in-addr\x04arpa\x00", b"\x03ip6\x04arpa\x00")


def is_ptr_query(packet: bytes) -> bool:
    """True when the question's name is under in-addr.arpa or ip6.arpa (Consul's PTR handler)."""
    i = 12
    while i < len(packet):
        length = packet[i]
        if length == 0:
            return packet[12:i + 1].lower().endswith(_PTR_ZONES)
        if length >= 0xC0:  # a pointer in a question: not ours to judge
            return False
        i += 1 + length
    return False


# Timing every DNS answer costs more than a cached answer itself (about 3 us against 1 us), so
# instrument_dns times a sample of them: every query while they come slower than one per
# DNS_SAMPLE_GAP_S per kind, and under load one in DNS_SAMPLE_EVERY.
DNS_SAMPLE_EVERY = 32
DNS_SAMPLE_GAP_S = 0.1
HTTP_SAMPLE_EVERY = 16
HTTP_SAMPLE_GAP_S = 0.1


class SampledTiming:
    """A timing that counts every event but times a sample of them (DNS answers, HTTP requests).

    An event is timed when `every` events have happened since the last timed one, or when the
    last timed one started `gap_s` or more before it; so below about ten events a second every
    event is timed, and under load one in `every` is. A timed event is recorded with the weight of
    the events it stands for (those since the previous timed one, itself included): `_count` is
    the exact number of events, `_sum` the sum of the timed durations times their weights (an
    estimate of the total), and the quantiles are those of the timed events over the last 10 s.
    Events after the last timed one are added, at that timing, whenever the metrics are read
    (`flush`, a read hook), so `_count` is exact at every scrape.
    """

    __slots__ = ("tel", "name", "labels", "every", "gap_s", "pending", "last_start", "last_ms")

    def __init__(self, tel: Telemetry, name: str, labels: Labels, every: int, gap_s: float) -> None:
        self.tel, self.name, self.labels, self.every, self.gap_s = tel, name, labels, every, gap_s
        self.pending = 0  # events since the last recorded one (not yet recorded)
        self.last_start = -math.inf  # monotonic start of the last timed event
        self.last_ms = 0.0  # its duration
        tel.add_read_hook(self.flush)

    def begin(self, start: float) -> bool:
        """Count one event starting at `start`; True if this one is to be timed."""
        self.pending += 1
        return self.pending >= self.every or start - self.last_start >= self.gap_s

    def record(self, start: float, elapsed_ms: float) -> None:
        self.tel.add_sample(self.name, elapsed_ms, self.labels, weight=self.pending)
        self.pending, self.last_start, self.last_ms = 0, start, elapsed_ms

    def flush(self) -> None:
        if self.pending:
            self.tel.add_sample(self.name, self.last_ms, self.labels, weight=self.pending, observe=False)
            self.pending = 0


def instrument_dns(tel: Telemetry, server: Any, node_name: str, *, every: int = DNS_SAMPLE_EVERY,
                   gap_s: float = DNS_SAMPLE_GAP_S) -> None:
    """Time DNS answers as `consul.dns.domain_query{node}` or `consul.dns.ptr_query{node}`.

    Wraps `server.answer(packet, tcp)`, the synchronous question-to-reply step of
    appliance.dns.server, so the time is cairn's own work (forwarding to recursors excluded).
    Every query is counted and a sample is timed (SampledTiming says what the summaries mean).
    """
    inner = server.answer
    labels = (("node", node_name),)
    clock = tel.monotonic
    domain = SampledTiming(tel, "dns.domain_query", labels, every, gap_s)
    ptr = SampledTiming(tel, "dns.ptr_query", labels, every, gap_s)

    def answer(packet: bytes, tcp: bool) -> Any:
        start = clock()
        kind = ptr if b"\x04arpa\x00" in packet.lower() and is_ptr_query(packet) else domain
        if not kind.begin(start):
            return inner(packet, tcp)  # counted; recorded with the next timed query
        try:
            return inner(packet, tcp)
        finally:
            kind.record(start, (clock() - start) * 1000.0)

    server.answer = answer


# ---------------------------------------------------------------------- gossip

# The gossip driver's internal counter and sample names -> Consul's metric names (memberlist and
# serf). Counters of bytes: udp.sent/received, tcp.sent; counts: tcp.accept/connect, msg.* (state
# changes accepted), serf.member.* (member events). Samples in ms: gossip (one gossip round),
# probeNode (one probe, ping to its end); serf.queue.* (queue depths every 30 s).
GOSSIP_COUNTERS = {
    "udp_sent": "memberlist.udp.sent", "udp_received": "memberlist.udp.received",
    "tcp_sent": "memberlist.tcp.sent", "tcp_accept": "memberlist.tcp.accept",
    "tcp_connect": "memberlist.tcp.connect", "msg_alive": "memberlist.msg.alive",
    "msg_suspect": "memberlist.msg.suspect", "msg_dead": "memberlist.msg.dead",
    "decrypt_failed": "memberlist.decrypt_failed", "decode_errors": "memberlist.decode_errors",
    "member-join": "serf.member.join", "member-leave": "serf.member.left",
    "member-failed": "serf.member.failed", "member-update": "serf.member.update",
    "member-reap": "serf.member.reap", "member-flap": "serf.member.flap", "user": "serf.events",
}
GOSSIP_SAMPLES = {
    "gossip": "memberlist.gossip", "probe_node": "memberlist.probeNode",
    "queue_intent": "serf.queue.Intent", "queue_event": "serf.queue.Event", "queue_query": "serf.queue.Query",
}


def instrument_gossip(tel: Telemetry, driver: Any) -> None:
    """Record the LAN gossip pool's metrics under Consul's names; `memberlist.health.score` and
    `serf.members` are read from the driver when metrics are read."""

    def sink(kind: str, name: str, value: float) -> None:
        if kind == "counter":
            metric = GOSSIP_COUNTERS.get(name)
            if metric is not None:
                tel.incr_counter(metric, value)
        else:
            metric = GOSSIP_SAMPLES.get(name)
            if metric is not None:
                tel.add_sample(metric, value)

    driver.metrics_sink = sink
    tel.add_gauge_source(lambda: [("memberlist.health.score", driver.health_score(), None),
                                  ("serf.members", len(driver.members()), None)])

    def declared() -> None:
        # Alerts use increase(consul_serf_member_flap[15m]): the series must exist before the first
        # flap, as Consul's declared counters do, so it is kept at its total (0 until a flap).
        if tel.prometheus_enabled:
            slot = tel.counters.setdefault((tel.key("serf.member.flap"), ()), [0.0, 0.0])
            slot[1] = tel.monotonic()

    tel.add_read_hook(declared)


# ---------------------------------------------------------------------- HTTP


@functools.lru_cache(maxsize=256)
def route_label(pattern: str) -> str:
    """The `path` label of `consul.api.http`: the route pattern, `/` -> `.`, a parameter as `_`."""
    if pattern.endswith("/"):
        pattern += "_"
    return pattern.strip("/").replace("/", ".")


def record_http(tel: Telemetry, request: web.Request, start: float) -> None:
    """Count a request that reached a route and time a sample, as `consul.api.http{method,path}`
    (SampledTiming says what the summary means). Called by the HTTP server's middleware."""
    pattern = request.route  # set by appliance.http.routing.Router.dispatch
    if not pattern:
        return
    key = (request.method, pattern)
    timing = tel.http_timings.get(key)
    if timing is None:
        labels = {"method": request.method, "path": route_label(pattern)}
        timing = tel.http_timings[key] = SampledTiming(tel, "api.http", labels, HTTP_SAMPLE_EVERY,
                                                       HTTP_SAMPLE_GAP_S)
    if timing.begin(start):
        timing.record(start, (tel.monotonic() - start) * 1000.0)
