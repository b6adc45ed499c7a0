"""This agent's own services and checks: the authoritative copy anti-entropy pushes to the catalog.

How it works
------------
`LocalState` keeps the services and checks registered on this agent (from config files or the
`/v1/agent/*` API), each check's current status and output, TTL deadlines and the maintenance
checks. It is synchronous and does no I/O: callers pass `now` (monotonic seconds) where time
matters. `catalog_view()` renders what the catalog should hold for this node (Consul's
NodeService and HealthCheck shapes); appliance.local.sync compares that with the store and
proposes the difference, so the catalog only changes through the log.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from typing import Any

from appliance.local.definitions import CheckDefinition, DefinitionError, ServiceDefinition, sidecar_definition
from appliance.local.mesh import SIDECAR_SUFFIX, MeshError, agent_proxy, proxy_config, sidecar_port

NODE_MAINT_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
NODE_MAINT_DEFAULT = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
SERVICE_MAINT_DEFAULT = (
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
)


class NotFound(KeyError):
    """An unknown service or check ID; str() is Consul's 404 text."""

    def __str__(self) -> str:
        return str(self.args[0])


def truncate_output(output: str, max_size: int) -> str:
    """CheckTTL.SetStatus: keep the first max_size bytes and say how much was captured."""
    data = output.encode()
    if max_size <= 0 or len(data) <= max_size:
        return output
    head = data[:max_size].decode(errors="ignore")
    return f"{head} ... (captured {max_size} of {len(data)} bytes)"


def _ip_family(address: str) -> str:
    return "ipv6" if ":" in address else "ipv4"


def service_tagged_addresses(svc: ServiceDefinition) -> dict[str, dict[str, Any]]:
    """Tagged addresses as Consul stores them: given ones plus lan_/wan_ ipv4|ipv6 from Address."""
    tagged = {k: dict(v) for k, v in svc.tagged_addresses.items()}
    if svc.address:
        fam = _ip_family(svc.address)
        for net in ("lan", "wan"):
            tagged.setdefault(f"{net}_{fam}", {"Address": svc.address, "Port": svc.port})
    return tagged


@dataclass(slots=True)
class LocalCheck:
    definition: CheckDefinition
    status: str
    output: str = ""
    source: str = "api"  # "api", "config" or "maintenance"
    notes: str = ""
    raw: dict[str, Any] | None = None  # the API body, kept so the registration can be persisted
    ttl_deadline: float | None = None
    critical_since: float | None = None

    @property
    def id(self) -> str:
        return self.definition.id


@dataclass(slots=True)
class LocalService:
    definition: ServiceDefinition
    source: str = "api"
    raw: dict[str, Any] | None = None  # the API body, kept so the registration can be persisted


@dataclass
class LocalState:
    node_name: str
    datacenter: str
    output_max_size: int = 4096
    services: dict[str, LocalService] = field(default_factory=dict)
    checks: dict[str, LocalCheck] = field(default_factory=dict)
    # What changed since anti-entropy last looked (appliance/local/sync.py): the IDs of services
    # and checks, or everything (at start and after a reload). A sync of a change compares only
    # these with the catalog, so its cost does not grow with the agent's other checks.
    dirty_services: set[str] = field(default_factory=set)
    dirty_checks: set[str] = field(default_factory=set)
    dirty_all: bool = True
    # (deadline, check ID) of every TTL deadline set; an entry whose check has another deadline
    # now is stale and dropped when it comes up, so finding the expired ones costs only those
    _ttl_heap: list[tuple[float, str]] = field(default_factory=list)

    # check IDs by kind ("ttl", "http", ...), so the check runners find theirs without a scan
    kinds: dict[str, set[str]] = field(default_factory=dict)
    # ports.sidecar_min_port..sidecar_max_port, and the port each sidecar had (kept across reloads)
    sidecar_min_port: int = 21000
    sidecar_max_port: int = 21255
    sidecar_ports: dict[str, int] = field(default_factory=dict)

    def _put(self, local: LocalCheck) -> None:
        prev = self.checks.get(local.id)
        if prev is not None:
            self.kinds[prev.definition.kind].discard(local.id)
        self.checks[local.id] = local
        self.kinds.setdefault(local.definition.kind, set()).add(local.id)

    def _drop(self, check_id: str) -> LocalCheck | None:
        prev = self.checks.pop(check_id, None)
        if prev is not None:
            self.kinds[prev.definition.kind].discard(check_id)
        return prev

    def _arm_ttl(self, local: LocalCheck, deadline: float) -> None:
        local.ttl_deadline = deadline
        heapq.heappush(self._ttl_heap, (deadline, local.id))

    def _ttl_top(self) -> tuple[float, str] | None:
        """The earliest live TTL deadline, stale entries dropped on the way."""
        heap = self._ttl_heap
        while heap:
            deadline, cid = heap[0]
            local = self.checks.get(cid)
            if local is not None and local.ttl_deadline == deadline:
                return heap[0]
            heapq.heappop(heap)
        return None

    def take_dirty(self) -> tuple[set[str], set[str]] | None:
        """The changed (service IDs, check IDs) since the last call, or None for everything."""
        out = None if self.dirty_all else (self.dirty_services, self.dirty_checks)
        self.dirty_services, self.dirty_checks, self.dirty_all = set(), set(), False
        return out

    # ------------------------------------------------------------------ services

    def _sidecar_of(self, svc: ServiceDefinition) -> ServiceDefinition | None:
        """The expanded `connect { sidecar_service {} }` of svc (DefinitionError when it cannot be)."""
        if svc.sidecar is None:
            return None
        sid = svc.id + SIDECAR_SUFFIX
        used = (s.definition.port for k, s in self.services.items() if k != sid and k != svc.id)
        try:
            port = sidecar_port(svc.id, svc.sidecar.get("Port", 0), self.sidecar_ports.get(sid, 0),
                                [svc.port, *used], self.sidecar_min_port, self.sidecar_max_port)
        except MeshError as err:
            raise DefinitionError(str(err)) from None
        return sidecar_definition(svc, port)

    def add_service(self, svc: ServiceDefinition, *, source: str = "api", now: float = 0.0,
                    replace_existing_checks: bool = False, raw: dict[str, Any] | None = None) -> None:
        """Register svc (and the sidecar it asks for, which is deregistered with it)."""
        sidecar = self._sidecar_of(svc)
        old_sidecar = svc.id + SIDECAR_SUFFIX
        if sidecar is None and (prev := self.services.get(old_sidecar)) and prev.definition.sidecar_of == svc.id:
            self.remove_service(old_sidecar)
        self._add_service(svc, source, now, replace_existing_checks, raw)
        if sidecar is not None:
            self.sidecar_ports[sidecar.id] = sidecar.port
            self._add_service(sidecar, source, now, replace_existing_checks, None)

    def _add_service(self, svc: ServiceDefinition, source: str, now: float, replace_existing_checks: bool,
                     raw: dict[str, Any] | None) -> None:
        if replace_existing_checks:
            keep = {c.id for c in svc.checks}
            for cid in [cid for cid, c in self.checks.items()
                        if c.definition.service_id == svc.id and c.source != "maintenance" and cid not in keep]:
                self._drop(cid)
                self.dirty_checks.add(cid)
        self.services[svc.id] = LocalService(svc, source, raw)
        self.dirty_services.add(svc.id)
        for check in svc.checks:
            self.add_check(check, source=source, now=now)

    def remove_service(self, service_id: str) -> ServiceDefinition:
        entry = self.services.pop(service_id, None)
        if entry is None:
            raise NotFound(f'Unknown service ID "{service_id}". '
                           "Ensure that the service ID is passed, not the service name.")
        self.dirty_services.add(service_id)
        for cid in [cid for cid, c in self.checks.items() if c.definition.service_id == service_id]:
            self._drop(cid)
            self.dirty_checks.add(cid)
        self.sidecar_ports.pop(service_id, None)
        sidecar = self.services.get(service_id + SIDECAR_SUFFIX)
        if sidecar is not None and sidecar.definition.sidecar_of == service_id:
            self.remove_service(sidecar.definition.id)
        return entry.definition

    def service(self, service_id: str) -> ServiceDefinition:
        entry = self.services.get(service_id)
        if entry is None:
            raise NotFound(f"unknown service ID: {service_id}")
        return entry.definition

    # ------------------------------------------------------------------ checks

    def add_check(self, check: CheckDefinition, *, source: str = "api", now: float = 0.0,
                  raw: dict[str, Any] | None = None) -> None:
        if check.service_id and check.service_id not in self.services:
            raise NotFound(f'ServiceID "{check.service_id}" does not exist')
        prev = self.checks.get(check.id)
        status, output = check.status, ""
        if prev is not None and prev.definition == check:
            status, output = prev.status, prev.output  # re-registration keeps the last result
        local = LocalCheck(check, status, output, source, notes=check.notes, raw=raw)
        self._put(local)
        if check.kind == "ttl":
            self._arm_ttl(local, now + check.ttl_s)
        self.dirty_checks.add(check.id)
        self._note_critical(local, now)

    def remove_check(self, check_id: str) -> None:
        self.dirty_checks.add(check_id)
        if self._drop(check_id) is None:
            raise NotFound(f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.')

    def check(self, check_id: str) -> LocalCheck:
        local = self.checks.get(check_id)
        if local is None:
            raise NotFound(f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.')
        return local

    def set_status(self, check_id: str, status: str, output: str, now: float) -> LocalCheck:
        """A check result: status and output (truncated like Consul), resetting a TTL's timer."""
        local = self.check(check_id)
        max_size = local.definition.output_max_size or self.output_max_size
        local.status = status
        local.output = truncate_output(output, max_size)
        self.dirty_checks.add(check_id)
        if local.definition.kind == "ttl":
            self._arm_ttl(local, now + local.definition.ttl_s)
        self._note_critical(local, now)
        return local

    def update_ttl(self, check_id: str, status: str, output: str, now: float) -> LocalCheck:
        local = self.check(check_id)
        if local.definition.kind != "ttl":
            raise ValueError(f'CheckID "{check_id}" does not have associated TTL')
        return self.set_status(check_id, status, output, now)

    def expire_ttls(self, now: float) -> list[str]:
        """Turn every TTL check whose deadline passed critical; return their IDs."""
        expired = []
        while (top := self._ttl_top()) is not None and top[0] <= now:
            heapq.heappop(self._ttl_heap)
            local = self.checks[top[1]]
            if local.definition.kind == "ttl":
                local.ttl_deadline = None
                local.status = "critical"
                local.output = (
                    f"TTL expired (last output before timeout follows): {local.output}" if local.output
                    else "TTL expired"
                )
                self._note_critical(local, now)
                expired.append(local.id)
                self.dirty_checks.add(local.id)
        return expired

    def next_ttl_deadline(self) -> float | None:
        top = self._ttl_top()
        return top[0] if top is not None else None

    def _note_critical(self, local: LocalCheck, now: float) -> None:
        if local.status == "critical":
            if local.critical_since is None:
                local.critical_since = now
        else:
            local.critical_since = None

    # ------------------------------------------------------------------ maintenance

    def set_node_maintenance(self, enable: bool, reason: str, token: str = "") -> None:
        """Node maintenance: a critical check, written with `token` (the request's, as Consul's)."""
        self.dirty_checks.add(NODE_MAINT_ID)
        if not enable:
            self._drop(NODE_MAINT_ID)
            return
        if NODE_MAINT_ID in self.checks:
            return
        self._add_maintenance(NODE_MAINT_ID, "Node Maintenance Mode", reason or NODE_MAINT_DEFAULT, "", token)

    def set_service_maintenance(self, service_id: str, enable: bool, reason: str, token: str = "") -> None:
        if service_id not in self.services:
            raise NotFound(f'Unknown service ID "{service_id}". '
                           "Ensure that the service ID is passed, not the service name.")
        cid = SERVICE_MAINT_PREFIX + service_id
        self.dirty_checks.add(cid)
        if not enable:
            self._drop(cid)
            return
        if cid in self.checks:
            return
        self._add_maintenance(cid, "Service Maintenance Mode", reason or SERVICE_MAINT_DEFAULT, service_id, token)

    def _add_maintenance(self, cid: str, name: str, notes: str, service_id: str, token: str) -> None:
        definition = CheckDefinition(id=cid, name=name, kind="maintenance", service_id=service_id, notes=notes,
                                     token=token)
        self._put(LocalCheck(definition, "critical", "", "maintenance", notes=notes))

    # ------------------------------------------------------------------ reload

    def replace_config_definitions(self, services: list[ServiceDefinition], checks: list[CheckDefinition],
                                   now: float) -> None:
        """A reload: drop what config files registered before, add what they register now.

        Checks that keep their ID and definition keep their last status and output."""
        self.dirty_all = True
        old_checks = {cid: c for cid, c in self.checks.items() if c.source == "config"}
        for sid in [sid for sid, s in self.services.items() if s.source == "config"]:
            self.services.pop(sid)
        for cid in old_checks:
            self._drop(cid)
        for svc in services:
            self.add_service(svc, source="config", now=now)
        for check in checks:
            self.add_check(check, source="config", now=now)
        for cid, old in old_checks.items():
            new = self.checks.get(cid)
            if new is not None and new.definition == old.definition:
                self._put(replace(old))

    # ------------------------------------------------------------------ views

    def agent_service(self, svc: ServiceDefinition) -> dict[str, Any]:
        """AgentService (reference/consul-api.md §3.5)."""
        out: dict[str, Any] = {}
        if svc.kind:
            out["Kind"] = svc.kind
        out.update(ID=svc.id, Service=svc.name, Tags=list(svc.tags), Meta=dict(svc.meta), Port=svc.port,
                   Address=svc.address)
        if svc.socket_path:
            out["SocketPath"] = svc.socket_path
        tagged = service_tagged_addresses(svc)
        if tagged:
            out["TaggedAddresses"] = tagged
        out.update(Weights=dict(svc.weights), EnableTagOverride=svc.enable_tag_override)
        if svc.proxy is not None:
            out["Proxy"] = agent_proxy(svc.proxy)
        if svc.native:
            out["Connect"] = {"Native": True}
        out["Datacenter"] = self.datacenter
        return out

    def health_check(self, local: LocalCheck) -> dict[str, Any]:
        """HealthCheck (§3.4) without the indexes."""
        d = local.definition
        svc = self.services.get(d.service_id) if d.service_id else None
        return {
            "Node": self.node_name,
            "CheckID": d.id,
            "Name": d.name,
            "Status": local.status,
            "Notes": local.notes,
            "Output": local.output,
            "ServiceID": d.service_id,
            "ServiceName": svc.definition.name if svc else "",
            "ServiceTags": list(svc.definition.tags) if svc else [],
            "Type": d.type_name(),
            "Interval": d.interval_text(),
            "Timeout": d.timeout_text(),
            "ExposedPort": 0,
            "Definition": {},
        }

    def node_service(self, svc: ServiceDefinition) -> dict[str, Any]:
        """NodeService as the catalog stores it."""
        out: dict[str, Any] = {}
        if svc.kind:
            out["Kind"] = svc.kind
        out.update(ID=svc.id, Service=svc.name, Tags=list(svc.tags), Address=svc.address)
        tagged = service_tagged_addresses(svc)
        if tagged:
            out["TaggedAddresses"] = tagged
        out.update(Meta=dict(svc.meta), Port=svc.port)
        if svc.socket_path:
            out["SocketPath"] = svc.socket_path
        out.update(
            Weights=dict(svc.weights),
            EnableTagOverride=svc.enable_tag_override,
            Proxy=svc.proxy if svc.proxy is not None else proxy_config(None),
            Connect={"Native": True} if svc.native else {},
            PeerName="",
        )
        return out

    def catalog_view(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """(services by ID, checks by ID) as the catalog should hold them for this node."""
        services = {sid: self.node_service(s.definition) for sid, s in self.services.items()}
        checks = {cid: self.health_check(c) for cid, c in self.checks.items()}
        return services, checks
