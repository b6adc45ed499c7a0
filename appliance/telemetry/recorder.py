"""The recorder: counters, gauges and samples with labels, kept for `/v1/agent/metrics` and Prometheus.

Code that has something to count calls it with a dotted name relative to the prefix, the way
Consul's go-metrics calls are written:

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

Gauges that describe state rather than events are not pushed; `add_gauge_source(fn)` registers a
function that returns them, called whenever metrics are read. `SampledTiming` counts every event
of a hot path (DNS answers, HTTP requests) and times a sample of them. Timings are in
milliseconds, like Consul's. Everything runs on the event loop thread; nothing here blocks or
does I/O.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Labels = Mapping[str, str] | Iterable[tuple[str, str]] | None
LabelKey = tuple[tuple[str, str], ...]
GaugeSource = Callable[[], Iterable[tuple[str, float, Labels]]]

INTERVAL_S = 10.0  # go-metrics in-memory sink as Consul configures it: 10 s intervals ...
RETAIN_INTERVALS = 6  # ... kept for one minute
SUMMARY_MAX_AGE_S = 10.0  # window of the Prometheus quantiles
QUANTILES = (0.5, 0.9, 0.99)
MAX_WINDOW = 4096  # observations kept per summary window; older ones are dropped first


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

