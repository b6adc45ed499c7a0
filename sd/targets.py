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
is a pure function of store records; `GroupCache` keeps each service's groups with the
service's index so a catalog change re-renders only the services it touched.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appliance.state import watchkeys
from appliance.state.store import Record, Store
from appliance.state.views import aggregated_status, all_passing, tags_match

META = "__meta_consul_"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


@functools.lru_cache(maxsize=4096)
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
            return tuple(watchkeys.service(s) for s in self.services)
        return (watchkeys.SERVICES, watchkeys.CHECKS, watchkeys.NODES)

    def keep(self, node: Record, svc: Record, checks: list[Record]) -> bool:
        if self.tags and not tags_match(svc, list(self.tags)):
            return False
        if self.node_meta:
            meta = node.get("Meta") or {}
            if any(meta.get(k) != v for k, v in self.node_meta):
                return False
        return not self.passing or all_passing(checks)


def node_labels(node: Record) -> dict[str, str]:
    """The labels that come from the node alone: its meta and tagged addresses."""
    labels = {}
    for key, value in sorted((node.get("Meta") or {}).items()):
        labels[META + "metadata_" + sanitize_label_name(key)] = str(value)
    for key, value in sorted((node.get("TaggedAddresses") or {}).items()):
        labels[META + "tagged_address_" + sanitize_label_name(key)] = str(value)
    return labels


def instance_labels(node: Record, svc: Record, checks: list[Record], *, service: str, datacenter: str,
                    separator: str = ",", from_node: dict[str, str] | None = None) -> dict[str, str]:
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
    for key, value in sorted((svc.get("Meta") or {}).items()):
        labels[META + "service_metadata_" + sanitize_label_name(key)] = str(value)
    labels.update(node_labels(node) if from_node is None else from_node)
    return labels


def target_address(node: Record, svc: Record) -> str:
    host = svc.get("Address") or node.get("Address") or ""
    return join_host_port(host, int(svc.get("Port") or 0))


class NodeMemo:
    """Per-render memo of what is the same for every instance on a node: its labels and checks.

    Store.instance_checks scans all of a node's checks for each instance; with many instances
    per node that is quadratic, so the checks are split by service ID once per node here.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.nodes: dict[str, tuple[dict[str, str], list[Record], dict[str, list[Record]]]] = {}

    def get(self, node: Record) -> tuple[dict[str, str], list[Record], dict[str, list[Record]]]:
        key = node["Node"].lower()
        got = self.nodes.get(key)
        if got is None:
            node_level: list[Record] = []
            by_service: dict[str, list[Record]] = {}
            for check in self.store.checks.get(key, {}).values():
                sid = check["ServiceID"]
                (by_service.setdefault(sid, []) if sid else node_level).append(check)
            node_level.sort(key=lambda c: c["CheckID"])
            for checks in by_service.values():
                checks.sort(key=lambda c: c["CheckID"])
            got = self.nodes[key] = (node_labels(node), node_level, by_service)
        return got


def service_groups(store: Store, name: str, filters: Filters, datacenter: str,
                   memo: NodeMemo | None = None) -> list[dict[str, Any]]:
    memo = memo or NodeMemo(store)
    groups = []
    for node, svc in store.service_instances(name):
        from_node, node_checks, by_service = memo.get(node)
        checks = node_checks + by_service.get(svc["ID"], [])
        if not filters.keep(node, svc, checks):
            continue
        groups.append({
            "targets": [target_address(node, svc)],
            "labels": instance_labels(node, svc, checks, service=svc["Service"], datacenter=datacenter,
                                      from_node=from_node),
        })
    return groups


class GroupCache:
    """Each service's groups, kept with the service's index (`svc:<name>`): after a change only the
    services whose index moved are rendered again. Bounded; cleared when full."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.entries: dict[tuple[Filters, str], tuple[int, list[dict[str, Any]]]] = {}
        self.max_entries = max_entries

    def groups(self, store: Store, name: str, filters: Filters, datacenter: str, memo: NodeMemo) -> list[Any]:
        index = store.index_of(watchkeys.service(name))
        key = (filters, name.lower())
        hit = self.entries.get(key)
        if hit is not None and hit[0] == index:
            return hit[1]
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        groups = service_groups(store, name, filters, datacenter, memo)
        self.entries[key] = (index, groups)
        return groups


def target_groups(store: Store, filters: Filters, datacenter: str,
                  cache: GroupCache | None = None) -> list[dict[str, Any]]:
    """Every selected instance as an http_sd / file_sd target group."""
    if filters.services:
        names = sorted(set(filters.services))
    else:
        names = sorted(store.service_index)
    memo = NodeMemo(store)
    out: list[dict[str, Any]] = []
    for name in names:
        if cache is None:
            out.extend(service_groups(store, name, filters, datacenter, memo))
        else:
            out.extend(cache.groups(store, name, filters, datacenter, memo))
    return out
