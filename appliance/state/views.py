"""Read-side shapes: store records rendered as Consul's JSON objects (reference/consul-api.md §3).

Pure functions over store records; they build new dicts and never change the records.
"""

from __future__ import annotations

from typing import Any

from appliance.state.store import Record, Store

STATUS_ORDER = {"passing": 0, "warning": 1, "critical": 2}


def service_node(node: Record, svc: Record) -> dict[str, Any]:
    """Catalog ServiceNode (§3.2): a service instance flattened with its node."""
    out: dict[str, Any] = {
        "ID": node["ID"],
        "Node": node["Node"],
        "Address": node["Address"],
        "Datacenter": node["Datacenter"],
        "TaggedAddresses": node["TaggedAddresses"],
        "NodeMeta": node["Meta"],
        "ServiceKind": svc.get("Kind", ""),
        "ServiceID": svc["ID"],
        "ServiceName": svc["Service"],
        "ServiceTags": svc["Tags"] if svc["Tags"] is not None else [],
        "ServiceAddress": svc["Address"],
    }
    if svc.get("TaggedAddresses"):
        out["ServiceTaggedAddresses"] = svc["TaggedAddresses"]
    out.update(
        ServiceWeights=svc["Weights"],
        ServiceMeta=svc["Meta"] if svc["Meta"] is not None else {},
        ServicePort=svc["Port"],
        ServiceSocketPath=svc.get("SocketPath", ""),
        ServiceEnableTagOverride=svc["EnableTagOverride"],
        ServiceProxy=svc["Proxy"],
        ServiceConnect=svc["Connect"],
        ServiceLocality=None,
        CreateIndex=svc["CreateIndex"],
        ModifyIndex=svc["ModifyIndex"],
    )
    return out


def tags_match(svc: Record, tags: list[str]) -> bool:
    """Every requested tag is on the instance (case-insensitive)."""
    have = {t.lower() for t in svc["Tags"] or ()}
    return all(t.lower() in have for t in tags)


def all_passing(checks: list[Record]) -> bool:
    return all(c["Status"] == "passing" for c in checks)


def check_service_nodes(store: Store, service: str, *, connect: bool = False,
                        instances: list[tuple[Record, Record]] | None = None) -> list[dict[str, Any]]:
    """Health CheckServiceNode objects (§3.3) for every instance of a service (with `connect`,
    for every proxy of it and Connect-native instance; or for the `instances` given)."""
    if instances is None:
        instances = store.connect_instances(service) if connect else store.service_instances(service)
    return [{"Node": node, "Service": svc, "Checks": store.instance_checks(node, svc)} for node, svc in instances]


def catalog_services(store: Store, keep: Any = None) -> dict[str, list[str]]:
    """name -> sorted union of tags, over the instances `keep(node, svc)` accepts."""
    out: dict[str, set[str]] = {}
    for node_key in sorted(store.services):
        node = store.nodes.get(node_key)
        for svc in store.services[node_key].values():
            if keep is not None and not keep(node, svc):
                continue
            out.setdefault(svc["Service"], set()).update(svc["Tags"] or ())
    return {name: sorted(tags) for name, tags in sorted(out.items())}


def aggregated_status(checks: list[dict[str, Any]]) -> str:
    """api/health.go AggregatedStatus: maintenance, then critical, warning, passing."""
    for c in checks:
        if c["CheckID"] == "_node_maintenance" or c["CheckID"].startswith("_service_maintenance:"):
            return "maintenance"
    worst = "passing"
    for c in checks:
        if STATUS_ORDER.get(c["Status"], 2) > STATUS_ORDER[worst]:
            worst = c["Status"] if c["Status"] in STATUS_ORDER else "critical"
    return worst
