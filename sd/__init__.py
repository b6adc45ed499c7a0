"""Prometheus service discovery from the catalog: the http_sd endpoint and the file_sd writer.

The agent mounts this package through the `cairn.extensions` entry point (appliance never
imports it): `mount(agent)` returns an extension whose `routes` add `GET /v1/sd/prometheus`
(sd.http). Target groups and their `__meta_consul_*` labels are built in sd.targets; the
`cairn sd file-sd` verb lives in sd.cli.
"""

from __future__ import annotations

from typing import Any


class SDExtension:
    def __init__(self, agent: Any) -> None:
        from sd.http import ROUTES

        self.agent = agent
        self.routes = list(ROUTES)


def mount(agent: Any) -> SDExtension:
    return SDExtension(agent)
