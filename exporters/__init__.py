"""Prometheus exporters: the agent's own metrics and consul_exporter's, in the text format.

The agent mounts this package through the `cairn.extensions` entry point (appliance never
imports it). `mount(agent)` builds the agent's own CollectorRegistry and registers a
"prometheus" formatter on `agent.telemetry`; the appliance's `/v1/agent/metrics` handler calls
it for `?format=prometheus` and OpenMetrics `Accept` headers. See exporters.exposition and
exporters.catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporters.catalog import KVCollector
from exporters.exposition import CONTENT_TYPE, build_registry, encode


class ExportersExtension:
    routes: list[Any] = []

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.registry = build_registry(agent)

    def render(self, agent: Any, query: Mapping[str, str]) -> tuple[bytes, str]:
        metrics = list(self.registry.collect())
        kv = KVCollector.from_query(agent, query)
        if kv is not None:
            metrics.extend(kv.collect())
        return encode(metrics), CONTENT_TYPE


def mount(agent: Any) -> ExportersExtension:
    ext = ExportersExtension(agent)
    agent.telemetry.formatters["prometheus"] = ext.render
    return ext
