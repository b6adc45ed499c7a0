"""consul_exporter's metrics, computed from the agent's own state at scrape time.

How it works
------------
People who monitor Consul with Prometheus usually run consul_exporter beside it, and their
dashboards and alerts use its metric names. cairn serves the same series from inside the agent,
on `/v1/agent/metrics?format=prometheus`, so no extra process is needed and no HTTP round trips
are made: `CatalogCollector.collect()` reads the state store, the consensus module and the
member list directly. Names and labels are consul_exporter's (reference/prometheus.md §5); they
always start with `consul_` (consul_exporter's namespace), whatever `telemetry.metrics_prefix`
says, and every one is a gauge:

    consul_up                                   1: the agent answered this scrape
    consul_raft_peers, consul_raft_leader       Raft peers; 1 if a leader is known
    consul_serf_lan_members                     nodes in the catalog (as consul_exporter counts)
    consul_serf_lan_member_status{member}       1 alive, 2 leaving, 3 left, 4 failed
    consul_serf_lan_member_info{member,role,version}
    consul_serf_wan_member_status{member,dc}, consul_serf_wan_member_info{member,dc,role,version}
    consul_catalog_services                     number of service names
    consul_catalog_service_node_healthy{service_id,node,service_name}  1 if every check passes
    consul_service_tag{service_id,node,tag}     1 per tag of an instance
    consul_health_node_status{check,node,status}                       4 series per node check
    consul_health_service_status{check,node,service_id,service_name,status}  4 per service check
    consul_service_checks{service_id,service_name,check_id,check_name,node}  1 per service check
    consul_catalog_kv{key}                      numeric KV values, only when asked (below)

`consul_catalog_kv` is what consul_exporter's `--kv.prefix`/`--kv.filter` flags produce; cairn
takes them as query parameters of the scrape: `kv_prefix=<prefix>` turns it on and
`kv_filter=<regex>` (default `.*`, searched anywhere in the key) narrows it. Values that do
not parse as numbers are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from appliance.http.errors import HTTPError
from appliance.http.render import member_json

STATUSES = ("passing", "warning", "critical", "maintenance")


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class CatalogCollector:
    """consul_exporter's catalog, member and Raft series, from the typed context (appliance/http/context.py)."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def collect(self) -> Iterator[Metric]:
        api = self.api
        store = api.store
        consensus = api.consensus
        yield GaugeMetricFamily("consul_up", "1 when the agent answered every query of this scrape.", value=1)
        yield GaugeMetricFamily("consul_raft_peers", "Number of Raft peers (servers).",
                                value=len(consensus.peers()))
        leader = 1 if consensus.known_leader and consensus.leader_address() else 0
        yield GaugeMetricFamily("consul_raft_leader", "1 when the cluster has a known Raft leader.", value=leader)
        yield GaugeMetricFamily("consul_serf_lan_members", "Number of nodes in the catalog.", value=len(store.nodes))
        yield from self._members()
        yield GaugeMetricFamily("consul_catalog_services", "Number of service names in the catalog.",
                                value=len(store.service_index))
        yield from self._services()
        yield from self._checks()

    def _members(self) -> Iterator[Metric]:
        api = self.api
        lan_status = _gauge("consul_serf_lan_member_status", "LAN member status: 1 alive, 2 leaving, 3 left, "
                            "4 failed.", ["member"])
        lan_info = _gauge("consul_serf_lan_member_info", "LAN member role and version; the value is its status.",
                          ["member", "role", "version"])
        wan_status = _gauge("consul_serf_wan_member_status", "WAN member status: 1 alive, 2 leaving, 3 left, "
                            "4 failed.", ["member", "dc"])
        wan_info = _gauge("consul_serf_wan_member_info", "WAN member role and version; the value is its status.",
                          ["member", "dc", "role", "version"])
        for m in map(member_json, api.membership.members()):
            tags = m.get("Tags") or {}
            version = str(tags.get("build", "")).split(":", 1)[0]
            lan_status.add_metric([m["Name"]], m["Status"])
            lan_info.add_metric([m["Name"], tags.get("role", ""), version], m["Status"])
        if api.config.server:
            for m in map(member_json, api.membership.members(wan=True)):
                tags = m.get("Tags") or {}
                version = str(tags.get("build", "")).split(":", 1)[0]
                dc = tags.get("dc", "")
                wan_status.add_metric([m["Name"], dc], m["Status"])
                wan_info.add_metric([m["Name"], dc, tags.get("role", ""), version], m["Status"])
        yield from (lan_status, lan_info, wan_status, wan_info)

    def _services(self) -> Iterator[Metric]:
        store = self.api.store
        healthy = _gauge("consul_catalog_service_node_healthy", "1 when every check of the service instance "
                         "(node checks included) is passing.", ["service_id", "node", "service_name"])
        tag = _gauge("consul_service_tag", "1 for each tag of a service instance.", ["service_id", "node", "tag"])
        for name_key in sorted(store.service_index):
            for node, svc in store.service_instances(name_key):
                checks = store.instance_checks(node, svc)
                ok = all(c["Status"] == "passing" for c in checks)
                healthy.add_metric([svc["ID"], node["Node"], svc["Service"]], 1 if ok else 0)
                for t in dict.fromkeys(svc["Tags"] or ()):
                    tag.add_metric([svc["ID"], node["Node"], t], 1)
        yield healthy
        yield tag

    def _checks(self) -> Iterator[Metric]:
        store = self.api.store
        node_status = _gauge("consul_health_node_status", "Status of a node check: one series per status, "
                             "1 for the current one.", ["check", "node", "status"])
        svc_status = _gauge("consul_health_service_status", "Status of a service check: one series per status, "
                            "1 for the current one.", ["check", "node", "service_id", "service_name", "status"])
        links = _gauge("consul_service_checks", "Links a check to the service instance it belongs to.",
                       ["service_id", "service_name", "check_id", "check_name", "node"])
        for c in store.iter_checks():
            if c["ServiceID"]:
                for status in STATUSES:
                    svc_status.add_metric([c["CheckID"], c["Node"], c["ServiceID"], c["ServiceName"], status],
                                          1 if c["Status"] == status else 0)
                links.add_metric([c["ServiceID"], c["ServiceName"], c["CheckID"], c["Name"], c["Node"]], 1)
            else:
                for status in STATUSES:
                    node_status.add_metric([c["CheckID"], c["Node"], status], 1 if c["Status"] == status else 0)
        yield from (node_status, svc_status, links)


class KVCollector:
    """`consul_catalog_kv{key}` for numeric values under a prefix (scrape parameters kv_prefix, kv_filter)."""

    def __init__(self, api: Any, prefix: str, pattern: str = ".*") -> None:
        self.api = api
        self.prefix = prefix
        self.pattern = re.compile(pattern)

    @classmethod
    def from_query(cls, api: Any, query: Mapping[str, str]) -> KVCollector | None:
        if "kv_prefix" not in query:
            return None
        try:
            return cls(api, query["kv_prefix"], query.get("kv_filter") or ".*")
        except re.error as err:
            raise HTTPError(400, f"Invalid kv_filter: {err}") from None

    def collect(self) -> Iterator[Metric]:
        fam = _gauge("consul_catalog_kv", "Numeric value of a KV entry.", ["key"])
        for entry in self.api.store.kv_list(self.prefix):
            if not self.pattern.search(entry["Key"]):
                continue
            value = entry.get("Value")
            try:
                number = float(value.decode() if isinstance(value, bytes) else value)
            except (TypeError, ValueError, UnicodeDecodeError):
                continue
            fam.add_metric([entry["Key"]], number)
        yield fam
