"""Gateways in the catalog: which services a terminating or ingress gateway serves, and which
ingress gateways expose a service (reference/connect.md §5.3).

The links come from config entries (`ingress-gateway`: `Listeners[].Services[]`;
`terminating-gateway`: `Services[]`) named after the gateway service. A service named `*` stands
for every typical service in the catalog (`FromWildcard`). `gateway_services` renders Consul's
structs.GatewayService objects for `/v1/catalog/gateway-services/<gateway>`; `ingress_for`
names the ingress gateways exposing a service (`/v1/health/ingress/<service>`, DNS
`<service>.ingress.<domain>`). Pure functions over the store.
"""

from __future__ import annotations

from typing import Any

from appliance.state import watchkeys
from appliance.state.store import Record, Store

INGRESS, TERMINATING = "ingress-gateway", "terminating-gateway"


def _typical_services(store: Store) -> list[str]:
    names: set[str] = set()
    for svcs in store.services.values():
        for svc in svcs.values():
            if not svc.get("Kind"):
                names.add(svc["Service"])
    return sorted(names)


def _linked(gateway: str, kind: str, service: str, fields: dict[str, Any], entry: Record,
            wildcard: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"Gateway": {"Name": gateway}, "Service": {"Name": service}, "GatewayKind": kind}
    out.update({k: v for k, v in fields.items() if v})
    if wildcard:
        out["FromWildcard"] = True
    out.update(CreateIndex=entry.get("CreateIndex", 0), ModifyIndex=entry.get("ModifyIndex", 0))
    return out


def gateway_services(store: Store, gateway: str) -> list[dict[str, Any]]:
    """structs.GatewayService for every service a gateway's config entry links to it."""
    out: list[dict[str, Any]] = []
    term = store.connect.entry(TERMINATING, gateway)
    if term is not None:
        for linked in term.get("Services") or ():
            fields = {k: linked.get(k, "") for k in ("CAFile", "CertFile", "KeyFile", "SNI")}
            names = _typical_services(store) if linked.get("Name") == "*" else [linked.get("Name", "")]
            out.extend(_linked(gateway, TERMINATING, n, fields, term, linked.get("Name") == "*")
                       for n in names if n)
    ingress = store.connect.entry(INGRESS, gateway)
    if ingress is not None:
        for listener in ingress.get("Listeners") or ():
            for svc in listener.get("Services") or ():
                fields = {"Port": listener.get("Port", 0), "Protocol": listener.get("Protocol") or "tcp",
                          "Hosts": svc.get("Hosts") or []}
                names = _typical_services(store) if svc.get("Name") == "*" else [svc.get("Name", "")]
                out.extend(_linked(gateway, INGRESS, n, fields, ingress, svc.get("Name") == "*")
                           for n in names if n)
    return out


def ingress_for(store: Store, service: str) -> list[str]:
    """Names of the ingress gateways whose config entry exposes `service` (or `*`)."""
    want = service.lower()
    out = []
    for entry in store.connect.entries_of(INGRESS):
        for listener in entry.get("Listeners") or ():
            names = {str(s.get("Name", "")).lower() for s in listener.get("Services") or ()}
            if want in names or "*" in names:
                out.append(entry["Name"])
                break
    return out


def ingress_instances(store: Store, service: str) -> list[tuple[Record, Record]]:
    """(node, NodeService) of the ingress-gateway services exposing `service`."""
    out: list[tuple[Record, Record]] = []
    for gateway in ingress_for(store, service):
        out.extend((node, svc) for node, svc in store.service_instances(gateway) if svc.get("Kind") == INGRESS)
    return out


def ingress_keys(store: Store, service: str) -> tuple[str, ...]:
    """The watch keys an ingress read of `service` waits on: the entries and each gateway's service."""
    return (watchkeys.config_kind(INGRESS), *(watchkeys.service(g) for g in ingress_for(store, service)))


def gateway_keys(gateway: str) -> tuple[str, ...]:
    """The watch keys of /v1/catalog/gateway-services/<gateway> (wildcards follow the services table)."""
    return (watchkeys.config_entry(TERMINATING, gateway), watchkeys.config_entry(INGRESS, gateway),
            watchkeys.SERVICES)
