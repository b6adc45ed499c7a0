"""Prometheus exporters: the agent's own metrics and consul_exporter's, in the text format.

exporters.exposition holds the per-agent registry, the text encoder and `mount(agent)` (the
`cairn.extensions` entry point); exporters.catalog holds consul_exporter's metrics.
"""
