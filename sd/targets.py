"""Catalog to Prometheus target groups, with the labels Prometheus's consul_sd produces.

How it works
------------
Prometheus's Consul discovery turns each entry of `/v1/health/service/<name>` into one target
(reference/prometheus.md §2). This module does the same from the state store directly, so the
http_sd and file_sd outputs carry exactly the labels `consul_sd_configs` would, and one set of
`relabel_configs` works with either:

    __address__                          Service.Address (else Node.Address) ":" Service.Port,
                                         IPv6 (any host with ":") in brackets
    __meta_consul_service                the service name
    __meta_consul_dc                     the agent's datacenter
    __meta_consul_node                   Node.Node
    __meta_consul_address                Node.Address
    __meta_consul_service_id             Service.ID
    __meta_consul_service_address        Service.Address (may be empty)
    __meta_consul_service_port           Service.Port, decimal
    __meta_consul_tags                   ",a,b," (separator on both ends; ",," with no tags)
    __meta_consul_health                 passing / warning / critical / maintenance
    __meta_consul_metadata_<k>           each node meta pair
    __meta_consul_service_metadata_<k>   each service meta pair
    __meta_consul_tagged_address_<k>     each of the node's tagged addresses

Label-name suffixes `<k>` are sanitised: every character outside `[a-zA-Z0-9_]` becomes `_`.
Each instance is its own group `{"targets": [address], "labels": {...}}` (http_sd allows only
those two keys). Groups are ordered by service name, node, then service ID. Everything here
is a pure function of store records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appliance.state.store import Record, Store
from appliance.state.views import aggregated_status, all_passing, tags_match

META = "__meta_consul_"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def sanitize_label_name(name: str) -> str:
    """Prometheus strutil.SanitizeLabelName: anything outside [a-zA-Z0-9_] becomes `_`."""
    return _INVALID.sub("_", name)


def join_host_port(host: str, port: int) -> str:
    """Go's net.JoinHostPort: a host containing ':' is bracketed."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def tags_label(tags: Iterable[str] | None, separator: str = ",") -> str:
    return separator + separator.join(tags or ()) + separator


@dataclass(frozen=True)
class Filters:
    """What a client asked for; the empty Filters selects every instance."""

    services: tuple[str, ...] = ()  # lower-cased names; empty: all
    tags: tuple[str, ...] = ()  # every tag must be on the instance
    node_meta: tuple[tuple[str, str], ...] = ()  # every pair must be in the node's meta
    passing: bool = False  # only instances whose checks all pass

    def watch_keys(self) -> tuple[str, ...]:
        """The store watch keys the answer depends on (appliance.state.store)."""
        if self.services:
            return tuple("svc:" + s for s in self.services)
        return ("services", "checks", "nodes")

    def keep(self, node: Record, svc: Record, checks: list[Record]) -> bool:
        if self.tags and not tags_match(svc, list(self.tags)):
            return False
        if self.node_meta:
            meta = node.get("Meta") or {}
            if any(meta.get(k) != v for k, v in self.node_meta):
                return False
        return not self.passing or all_passing(checks)


def instance_labels(node: Record, svc: Record, checks: list[Record], *, service: str, datacenter: str,
                    separator: str = ",") -> dict[str, str]:
    labels = {
        META + "service": service,
        META + "dc": datacenter,
        META + "node": node["Node"],
        META + "address": node.get("Address") or "",
        META + "service_id": svc["ID"],
        META + "service_address": svc.get("Address") or "",
        META + "service_port": str(int(svc.get("Port") or 0)),
        META + "tags": tags_label(svc.get("Tags"), separator),
        META + "health": aggregated_status(checks),
    }
    for key, value in sorted((node.get("Meta") or {}).items()):
        labels[META + "metadata_" + sanitize_label_name(key)] = str(value)
    for key, value in sorted((svc.get("Meta") or {}).items()):
        labels[META + "service_metadata_" + sanitize_label_name(key)] = str(value)
    for key, value in sorted((node.get("TaggedAddresses") or {}).items()):
        labels[META + "tagged_address_" + sanitize_label_name(key)] = str(value)
    return labels


def target_address(node: Record, svc: Record) -> str:
    host = svc.get("Address") or node.get("Address") or ""
    return join_host_port(host, int(svc.get("Port") or 0))


def service_groups(store: Store, name: str, filters: Filters, datacenter: str) -> list[dict[str, Any]]:
    groups = []
    for node, svc in store.service_instances(name):
        checks = store.instance_checks(node, svc)
        if not filters.keep(node, svc, checks):
            continue
        groups.append({
            "targets": [target_address(node, svc)],
            "labels": instance_labels(node, svc, checks, service=svc["Service"], datacenter=datacenter),
        })
    return groups


def target_groups(store: Store, filters: Filters, datacenter: str) -> list[dict[str, Any]]:
    """Every selected instance as an http_sd / file_sd target group."""
    if filters.services:
        names = sorted(set(filters.services))
    else:
        names = sorted(store.service_index)
    out: list[dict[str, Any]] = []
    for name in names:
        out.extend(service_groups(store, name, filters, datacenter))
    return out
