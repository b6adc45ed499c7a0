"""The discovery chain: a service's routers, splitters and resolvers compiled into Consul's
CompiledDiscoveryChain (reference/connect.md §4).

How it works
------------
Compilation starts at the service. With an HTTP-family protocol a `service-router` becomes the
node `router:<service>`: its routes in order, then the implicit catch-all (`PathPrefix "/"` to the
service itself). A route, or the chain's start, that names a service without a subset goes to
that service's `service-splitter` when there is one (`splitter:<service>`; a split to another
service with a splitter of its own is followed, a loop is refused), else to its resolver.

A resolver node is named after its target, `[<subset>.]<service>.<namespace>.<partition>.<dc>`
(here always `default.default`): the service's `service-resolver` picks the default subset, a
redirect (followed, a cycle refused: `detected circular resolver redirect`), the connect timeout
(5s by default), and failover targets (other datacenters, or another service). With no resolver
entry the node and the chain are `Default`. Each target carries its SNI,
`[<subset>.]<service>.default.<dc>.internal.<trust domain>`, the subset's filter, and the mesh
gateway mode (override, else the resolver's service-defaults, else proxy-defaults).

Overrides (the POST body) set the protocol, every target's connect timeout and mesh gateway mode,
and mark the chain with a `CustomizationHash`. Pure functions over the stored entries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from appliance.connect import entries
from appliance.connect.entries import EntryError

Entries = dict[tuple[str, str], dict[str, Any]]
DEFAULT_CONNECT_TIMEOUT = "5s"
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Overrides:
    connect_timeout: str = ""
    protocol: str = ""
    mesh_gateway_mode: str = ""

    def hash(self) -> str:
        if not (self.connect_timeout or self.protocol or self.mesh_gateway_mode):
            return ""
        text = json.dumps([self.connect_timeout, self.protocol, self.mesh_gateway_mode])
        return hashlib.sha256(text.encode()).hexdigest()[:8]


class _Compiler:
    def __init__(self, store: Entries, service: str, dc: str, trust_domain: str, over: Overrides) -> None:
        self.entries, self.service, self.dc, self.td, self.over = store, service, dc, trust_domain, over
        self.protocol = over.protocol or entries.protocol(store, service)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, dict[str, Any]] = {}
        self.custom = False  # some router, splitter or resolver entry shaped the chain

    def l7(self) -> bool:
        return self.protocol in entries.L7_PROTOCOLS

    def start(self) -> str:
        router = self.entries.get((entries.ROUTER, self.service))
        if router is not None and self.l7():
            return self.router(router)
        return self.split_or_resolve(self.service, "", ())

    def router(self, router: dict[str, Any]) -> str:
        self.custom = True
        name = f"router:{self.service}"
        routes = []
        for route in [*(router.get("Routes") or ()),
                      {"Match": {"HTTP": {"PathPrefix": "/"}}, "Destination": {"Service": self.service}}]:
            dest = route.get("Destination") or {}
            service = dest.get("Service") or self.service
            subset = dest.get("ServiceSubset") or ""
            nxt = self.resolver(service, subset, self.dc, ()) if subset else self.split_or_resolve(service, "", ())
            routes.append({"Definition": route, "NextNode": nxt})
        self.nodes[name] = {"Type": "router", "Name": self.service, "Routes": routes}
        return name

    def split_or_resolve(self, service: str, subset: str, seen: tuple[str, ...]) -> str:
        splitter = self.entries.get((entries.SPLITTER, service))
        if subset or splitter is None or not self.l7():
            return self.resolver(service, subset, self.dc, ())
        if service in seen or len(seen) > MAX_DEPTH:
            raise EntryError(f"detected circular reference for splitter: {service}")
        self.custom = True
        name = f"splitter:{service}"
        splits = []
        for split in splitter.get("Splits") or ():
            target = split.get("Service") or service
            sub = split.get("ServiceSubset") or ""
            if target != service and not sub:
                nxt = self.split_or_resolve(target, "", (*seen, service))
            else:
                nxt = self.resolver(target, sub, self.dc, ())
            splits.append({"Definition": split, "Weight": split.get("Weight", 0), "NextNode": nxt})
        self.nodes[name] = {"Type": "splitter", "Name": service, "Splits": splits}
        return name

    def resolver(self, service: str, subset: str, dc: str, seen: tuple[str, ...]) -> str:
        entry = self.entries.get((entries.RESOLVER, service))
        if entry is not None:
            self.custom = True
            redirect = entry.get("Redirect") or {}
            if redirect.get("Service") or redirect.get("ServiceSubset") or redirect.get("Datacenter"):
                key = f"{subset}.{service}.{dc}"
                if key in seen or len(seen) > MAX_DEPTH:
                    raise EntryError("detected circular resolver redirect")
                return self.resolver(redirect.get("Service") or service, redirect.get("ServiceSubset") or "",
                                     redirect.get("Datacenter") or dc, (*seen, key))
            subset = subset or entry.get("DefaultSubset") or ""
        target = self.target(service, subset, dc, entry)
        name = f"resolver:{target}"
        if name in self.nodes:
            return name
        timeout = self.over.connect_timeout or (entry or {}).get("ConnectTimeout") or DEFAULT_CONNECT_TIMEOUT
        resolver: dict[str, Any] = {}
        if entry is None:
            resolver["Default"] = True
        resolver.update(ConnectTimeout=timeout, Target=target)
        if (entry or {}).get("RequestTimeout"):
            resolver["RequestTimeout"] = entry["RequestTimeout"]  # type: ignore[index]
        failover = ((entry or {}).get("Failover") or {})
        chosen = failover.get(subset) or failover.get("*")
        if chosen:
            fo_service = chosen.get("Service") or service
            fo_subset = chosen.get("ServiceSubset") or ("" if chosen.get("Service") else subset)
            dcs = chosen.get("Datacenters") or [dc]
            resolver["Failover"] = {"Targets": [
                self.target(fo_service, fo_subset, d, self.entries.get((entries.RESOLVER, fo_service)))
                for d in dcs]}
        node: dict[str, Any] = {"Type": "resolver", "Name": target, "Resolver": resolver}
        lb = (entry or {}).get("LoadBalancer")
        if lb:
            node["LoadBalancer"] = lb
        self.nodes[name] = node
        return name

    def mesh_gateway(self, service: str) -> dict[str, Any]:
        if self.over.mesh_gateway_mode:
            return {"Mode": self.over.mesh_gateway_mode}
        for key in ((entries.SERVICE_DEFAULTS, service), (entries.PROXY_DEFAULTS, "global")):
            mode = ((self.entries.get(key) or {}).get("MeshGateway") or {}).get("Mode")
            if mode:
                return {"Mode": mode}
        return {}

    def target(self, service: str, subset: str, dc: str, entry: dict[str, Any] | None) -> str:
        ident = f"{subset + '.' if subset else ''}{service}.default.default.{dc}"
        if ident in self.targets:
            return ident
        sni = f"{subset + '.' if subset else ''}{service}.default.{dc}.internal.{self.td}"
        sub = ((entry or {}).get("Subsets") or {}).get(subset) or {}
        target: dict[str, Any] = {"ID": ident, "Service": service}
        if subset:
            target["ServiceSubset"] = subset
        target.update(Namespace="default", Partition="default", Datacenter=dc, MeshGateway=self.mesh_gateway(service),
                      Subset={k: v for k, v in sub.items() if v}, TransparentProxy={},
                      ConnectTimeout=self.over.connect_timeout or (entry or {}).get("ConnectTimeout")
                      or DEFAULT_CONNECT_TIMEOUT, SNI=sni, Name=sni)
        self.targets[ident] = target
        return ident


def compile_chain(store: Entries, service: str, dc: str, trust_domain: str,
                  overrides: Overrides | None = None) -> dict[str, Any]:
    """The CompiledDiscoveryChain of `service` in `dc` (EntryError for a loop in the entries)."""
    over = overrides or Overrides()
    c = _Compiler(store, service, dc, trust_domain, over)
    start = c.start()
    chain: dict[str, Any] = {"ServiceName": service, "Namespace": "default", "Partition": "default", "Datacenter": dc}
    custom = over.hash()
    if custom:
        chain["CustomizationHash"] = custom
    if not c.custom:
        chain["Default"] = True
    chain.update(Protocol=c.protocol, StartNode=start, Nodes=c.nodes, Targets=c.targets, AutoVirtualIPs=None,
                 ManualVirtualIPs=None)
    return chain
