"""Prometheus service discovery from the catalog: the http_sd endpoint and the file_sd writer.

sd.targets builds target groups with consul_sd's `__meta_consul_*` labels; sd.http serves them
at `GET /v1/sd/prometheus` and holds `mount(agent)`, the `cairn.extensions` entry point; sd.cli
is the `cairn sd file-sd` verb.
"""
