"""Prometheus exposition of the agent's own metrics, with Consul's names and types.

How it works
------------
Each agent gets its own prometheus-client `CollectorRegistry` (never the process-global one, so
two agents in one process, as in tests, do not mix). Its collectors read state when Prometheus
scrapes; nothing is copied in the background:

* `TelemetryCollector` turns the agent's recorder (appliance.telemetry) into metric families the
  way Consul's go-metrics Prometheus sink does: the key's parts joined with `_` (` .=-/`
  become `_`), gauges as gauges, counters as counters *without* a `_total` suffix, samples
  and timers as summaries in milliseconds with quantiles 0.5, 0.9 and 0.99;
* `exporters.catalog.CatalogCollector` adds the metrics of consul_exporter;
* prometheus-client's process, platform and GC collectors stand in for Go's `process_*`/`go_*`.

`encode()` writes the text format 0.0.4. prometheus-client's writer always appends `_total`
to a counter's name, which would rename every Consul counter (`consul_raft_apply` would become
`consul_raft_apply_total` and dashboards would break), so families of type `ConsulCounter` are
written with their name kept as it is; every other family goes through prometheus-client.
Consul answers the text format even when the scraper asks for OpenMetrics, and so does cairn.

The agent mounts this module through the `cairn.extensions` entry point (appliance never imports
exporters): `mount(api)`, given the typed context, builds the registry and registers a "prometheus"
formatter on `api.telemetry`, which the `/v1/agent/metrics` handler calls for
`?format=prometheus` and OpenMetrics `Accept` headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from exporters.catalog import CatalogCollector, KVCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_REPLACE = re.compile(r"[ .=\-/]")
_NAME_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def prometheus_name(key: str) -> str:
    """go-metrics' flattening: `consul.raft.leader.lastContact` -> `consul_raft_leader_lastContact`."""
    name = _NAME_INVALID.sub("_", _NAME_REPLACE.sub("_", key))
    return "_" + name if name[:1].isdigit() else name


class ConsulCounter(Metric):
    """A counter family written without the `_total` suffix (see module docstring)."""

    def __init__(self, name: str, documentation: str) -> None:
        super().__init__(name, documentation, "counter")
        self.name = name  # Metric.__init__ strips a trailing "_total"; Consul's names keep theirs


class _One:
    """A registry-shaped wrapper so generate_latest() writes one family."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> list[Metric]:
        return [self.metric]


def encode(metrics: Iterable[Metric]) -> bytes:
    """The text format. A family name already written is skipped (Prometheus rejects a second
    TYPE line): `consul_raft_peers` comes from the recorder and from the consul_exporter
    collector when `disable_hostname` is set, with the same value."""
    out: list[bytes] = []
    written: set[str] = set()
    for metric in metrics:
        if metric.name in written:
            continue
        written.add(metric.name)
        if isinstance(metric, ConsulCounter):
            gauge = Metric(metric.name, metric.documentation, "gauge")
            gauge.samples = metric.samples
            text = generate_latest(_One(gauge))
            out.append(text.replace(f"# TYPE {metric.name} gauge\n".encode(),
                                    f"# TYPE {metric.name} counter\n".encode(), 1))
        else:
            out.append(generate_latest(_One(metric)))
    return b"".join(out)


class TelemetryCollector:
    """The agent recorder's live series as metric families."""

    def __init__(self, telemetry: Any) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        series = self.telemetry.prometheus_series()
        families: dict[tuple[str, str], Metric] = {}

        def family(kind: str, key: str) -> Metric:
            name = prometheus_name(key)
            fam = families.get((kind, name))
            if fam is None:
                fam = ConsulCounter(name, key) if kind == "counter" else Metric(name, key, kind)
                families[(kind, name)] = fam
            return fam

        for key, labels, value in series["counters"]:
            fam = family("counter", key)
            fam.add_sample(fam.name, dict(labels), value)
        for key, labels, value in series["gauges"]:
            fam = family("gauge", key)
            fam.add_sample(fam.name, dict(labels), value)
        for key, labels, count, total, quantiles in series["summaries"]:
            fam = family("summary", key)
            for q, v in quantiles.items():
                fam.add_sample(fam.name, {**dict(labels), "quantile": _go_float(q)}, v)
            fam.add_sample(fam.name + "_sum", dict(labels), total)
            fam.add_sample(fam.name + "_count", dict(labels), count)
        # A name used both as a counter and a gauge would be two families of one name, which
        # Prometheus rejects: keep the first kind seen.
        seen: set[str] = set()
        for (_, name), fam in families.items():
            if name not in seen:
                seen.add(name)
                yield fam


def _go_float(q: float) -> str:
    return repr(q).rstrip("0").rstrip(".") if "." in repr(q) else repr(q)


def build_registry(api: Any) -> CollectorRegistry:
    """The agent's own registry: recorder, consul_exporter metrics, process and runtime. `api` is
    the agent's typed context (appliance.http.context.HTTPContext), never the agent."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TelemetryCollector(api.telemetry))
    registry.register(CatalogCollector(api))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class ExportersExtension:
    """What the agent mounts: the registry, and the "prometheus" formatter for /v1/agent/metrics."""

    routes: list[Any] = []  # served through /v1/agent/metrics?format=prometheus, no route of its own

    def __init__(self, api: Any) -> None:
        self.registry = build_registry(api)

    def render(self, api: Any, query: Mapping[str, str]) -> tuple[bytes, str]:
        metrics = list(self.registry.collect())
        kv = KVCollector.from_query(api, query)
        if kv is not None:
            metrics.extend(kv.collect())
        return encode(metrics), CONTENT_TYPE


def mount(api: Any) -> ExportersExtension:
    """The `cairn.extensions` entry point: register the formatter on the agent's recorder. `api`
    is the agent's typed context (appliance.http.context.HTTPContext)."""
    ext = ExportersExtension(api)
    api.telemetry.formatters["prometheus"] = ext.render
    return ext
