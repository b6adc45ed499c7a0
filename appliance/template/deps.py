"""The template functions that read the agent (`key`, `ls`, `tree`, `service`, `services`, `node`,
`nodes`, `datacenters`), as consul-template defines them, without doing the reading.

How it works
------------
Each call turns its argument (`"v1.web@east|passing,warning"`) into a `Dep`: the HTTP path and
query that answers it. It asks the `Resolver` for that dependency's last answer (decoded JSON, or
None for a 404). A resolver that has no answer yet records the dependency as missing and the call
returns an empty value: the render is incomplete and is not written (consul-template's
"multi-phase" rendering); the runner starts a watch for every dependency a render used and renders
again when they answer. `key` on a key that does not exist also leaves the render incomplete, until
the key is written. The answers are reshaped into consul-template's structures (`.Key .Value`,
`.Address .Port .Tags .Status`, ...) on every render.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.template.execute import FuncError
from appliance.template.gofmt import Record, StringList


@dataclass(frozen=True)
class Dep:
    """One watched query: GET `path` with `params` (plus index/wait/stale from the runner)."""

    label: str = field(compare=False)  # how logs name it: key(master/test), service(web|passing)
    path: str = ""
    params: tuple[tuple[str, str], ...] = ()
    blocking: bool = True  # /v1/agent/self does not block; it is read once


class Resolver(Protocol):
    def lookup(self, dep: Dep) -> tuple[bool, Any]:
        """(True, decoded body or None for a 404) once answered; (False, None) before."""

    def mark_missing(self, dep: Dep) -> None:
        """The render cannot complete until `dep` changes (a `key` that does not exist)."""


# ------------------------------------------------------------------------------------------
# structures as templates see them


class KeyPair(Record):
    FIELDS = ("Path", "Key", "Value", "Exists", "CreateIndex", "ModifyIndex", "LockIndex", "Flags", "Session")
    GO_TYPE = "*dependency.KeyPair"


class HealthService(Record):
    FIELDS = (
        "Node", "NodeID", "Kind", "NodeAddress", "NodeDatacenter", "NodeTaggedAddresses", "NodeMeta",
        "ServiceMeta", "Address", "ServiceTaggedAddresses", "ID", "Name", "Namespace", "Tags", "Checks",
        "Status", "Port", "Weights",
    )  # fmt: skip
    GO_TYPE = "*dependency.HealthService"


class CatalogSnippet(Record):
    FIELDS = ("Name", "Tags")
    GO_TYPE = "*dependency.CatalogSnippet"


class Node(Record):
    FIELDS = ("ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta")
    GO_TYPE = "*dependency.Node"


class CatalogNode(Record):
    FIELDS = ("Node", "Services")
    GO_TYPE = "*dependency.CatalogNode"


class CatalogNodeService(Record):
    FIELDS = ("ID", "Service", "Tags", "Meta", "Port", "Address", "Namespace")
    GO_TYPE = "*dependency.CatalogNodeService"


# ------------------------------------------------------------------------------------------
# argument syntax

_KV = re.compile(r"^/?(?P<key>[^@]*?)(?:@(?P<dc>[\w.\-]+))?$")
_SERVICE = re.compile(
    r"^(?:(?P<tag>[\w=:.\-]+)\.)?(?P<name>[\w\-]+)(?:@(?P<dc>[\w.\-]+))?(?:~(?P<near>[\w.\-]+))?$"
)
_DC_NEAR = re.compile(r"^(?:@(?P<dc>[\w.\-]+))?(?:~(?P<near>[\w.\-]+))?$")
_NODE = re.compile(r"^(?P<name>[\w.\-]*)(?:@(?P<dc>[\w.\-]+))?$")
HEALTH_STATES = ("any", "passing", "warning", "critical", "maintenance")


def _quote(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def _dc(m: re.Match[str]) -> tuple[tuple[str, str], ...]:
    return (("dc", m.group("dc")),) if m.group("dc") else ()


def kv_dep(func: str, arg: str, recurse: bool = False) -> tuple[Dep, str]:
    m = _KV.match(arg)
    if m is None:
        raise FuncError(f"{func}: invalid format: {arg!r}")
    key = m.group("key")
    params = _dc(m) + ((("recurse", ""),) if recurse else ())
    return Dep(f"{func}({arg})", "/v1/kv/" + _quote(key), params), key


def service_dep(args: tuple[str, ...]) -> tuple[Dep, list[str], bool]:
    if not args or len(args) > 2:
        raise FuncError(f"service: wrong number of arguments, expected 1 or 2, but got {len(args)}")
    spec, _, filt = args[0].partition("|")
    if len(args) == 2:
        filt = args[1]
    m = _SERVICE.match(spec)
    if m is None:
        raise FuncError(f"service: invalid format: {args[0]!r}")
    states = [s.strip() for s in filt.split(",") if s.strip()] if filt else ["passing"]
    for state in states:
        if state not in HEALTH_STATES:
            raise FuncError(f"service: invalid filter {state!r} in {args[0]!r}")
    params: list[tuple[str, str]] = list(_dc(m))
    if m.group("tag"):
        params.append(("tag", m.group("tag")))
    if m.group("near"):
        params.append(("near", m.group("near")))
    if states == ["passing"]:
        params.append(("passing", "1"))
    label = f"service({args[0]}{'|' + filt if len(args) == 2 else ''})"
    return Dep(label, "/v1/health/service/" + _quote(m.group("name")), tuple(params)), states, bool(m.group("near"))


def _dc_near(func: str, args: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], bool]:
    if len(args) > 1:
        raise FuncError(f"{func}: wrong number of arguments, expected 0 or 1, but got {len(args)}")
    m = _DC_NEAR.match(args[0] if args else "")
    if m is None:
        raise FuncError(f"{func}: invalid format: {args[0]!r}")
    params = _dc(m) + ((("near", m.group("near")),) if m.group("near") else ())
    return params, bool(m.group("near"))


# ------------------------------------------------------------------------------------------
# answers reshaped


def _b64(value: Any) -> str:
    if not value:
        return ""
    return base64.b64decode(value).decode("utf-8", "replace")


def key_pair(entry: dict[str, Any], prefix: str) -> KeyPair:
    path = entry.get("Key", "")
    return KeyPair(
        Path=path, Key=path.removeprefix(prefix).lstrip("/"), Value=_b64(entry.get("Value")), Exists=True,
        CreateIndex=entry.get("CreateIndex", 0), ModifyIndex=entry.get("ModifyIndex", 0),
        LockIndex=entry.get("LockIndex", 0), Flags=entry.get("Flags", 0), Session=entry.get("Session", ""),
    )  # fmt: skip


def aggregated_status(checks: list[dict[str, Any]]) -> str:
    """The api package's AggregatedStatus: maintenance, then critical, warning, passing."""
    worst = "passing"
    for check in checks:
        cid = check.get("CheckID", "")
        if cid == "_node_maintenance" or cid.startswith("_service_maintenance:"):
            return "maintenance"
        status = check.get("Status", "")
        if status == "critical":
            worst = "critical"
        elif status == "warning" and worst == "passing":
            worst = "warning"
    return worst


def health_service(entry: dict[str, Any]) -> HealthService:
    node = entry.get("Node") or {}
    svc = entry.get("Service") or {}
    checks = entry.get("Checks") or []
    return HealthService(
        Node=node.get("Node", ""), NodeID=node.get("ID", ""), Kind=svc.get("Kind", ""),
        NodeAddress=node.get("Address", ""), NodeDatacenter=node.get("Datacenter", ""),
        NodeTaggedAddresses=node.get("TaggedAddresses") or {}, NodeMeta=node.get("Meta") or {},
        ServiceMeta=svc.get("Meta") or {}, Address=svc.get("Address") or node.get("Address", ""),
        ServiceTaggedAddresses=svc.get("TaggedAddresses") or {}, ID=svc.get("ID", ""),
        Name=svc.get("Service", ""), Namespace=svc.get("Namespace", ""),
        Tags=StringList(sorted(set(svc.get("Tags") or []))), Checks=checks,
        Status=aggregated_status(checks), Port=svc.get("Port", 0), Weights=svc.get("Weights") or {},
    )  # fmt: skip


def node_record(node: dict[str, Any]) -> Node:
    return Node(
        ID=node.get("ID", ""), Node=node.get("Node", ""), Address=node.get("Address", ""),
        Datacenter=node.get("Datacenter", ""), TaggedAddresses=node.get("TaggedAddresses") or {},
        Meta=node.get("Meta") or {},
    )  # fmt: skip


def catalog_node(body: dict[str, Any]) -> CatalogNode:
    services = []
    for svc in (body.get("Services") or {}).values():
        services.append(CatalogNodeService(
            ID=svc.get("ID", ""), Service=svc.get("Service", ""), Tags=StringList(sorted(svc.get("Tags") or [])),
            Meta=svc.get("Meta") or {}, Port=svc.get("Port", 0), Address=svc.get("Address", ""),
            Namespace=svc.get("Namespace", ""),
        ))  # fmt: skip
    services.sort(key=lambda s: (s.Service, s.ID))
    return CatalogNode(Node=node_record(body.get("Node") or {}), Services=services)


# ------------------------------------------------------------------------------------------
# the functions


AGENT_SELF = Dep("agent(self)", "/v1/agent/self", (), blocking=False)


def dep_funcs(resolver: Resolver) -> dict[str, Callable[..., Any]]:
    """The agent-reading functions of a template, answering from `resolver`."""

    def kv_get(func: str, path: str) -> tuple[bool, str | None, Dep]:
        dep, _ = kv_dep(func, path)
        ok, body = resolver.lookup(dep)
        if not ok or not body:
            return ok, None, dep
        return ok, _b64(body[0].get("Value")), dep

    def key(path: str) -> str:
        ok, value, dep = kv_get("key", path)
        if ok and value is None:
            resolver.mark_missing(dep)
        return value or ""

    def key_exists(path: str) -> bool:
        return kv_get("keyExists", path)[1] is not None

    def key_or_default(path: str, default: str) -> str:
        value = kv_get("keyOrDefault", path)[1]
        return default if value is None else value

    def kv_list(func: str, prefix: str) -> list[KeyPair]:
        dep, key = kv_dep(func, prefix, recurse=True)
        _, body = resolver.lookup(dep)
        return [key_pair(e, key) for e in body or []]

    def ls(prefix: str) -> list[KeyPair]:
        return [p for p in kv_list("ls", prefix) if p.Key and "/" not in p.Key]

    def tree(prefix: str) -> list[KeyPair]:
        return [p for p in kv_list("tree", prefix) if not p.Key.endswith("/") and p.Key]

    def safe(func: Callable[[str], list[KeyPair]], name: str) -> Callable[[str], list[KeyPair]]:
        def wrapped(prefix: str) -> list[KeyPair]:
            pairs = func(prefix)
            if not pairs:
                resolver.mark_missing(kv_dep(name, prefix, recurse=True)[0])
            return pairs

        return wrapped

    def service(*args: str) -> list[HealthService]:
        dep, states, near = service_dep(args)
        _, body = resolver.lookup(dep)
        found = [health_service(e) for e in body or []]
        found = [s for s in found if "any" in states or s.Status in states]
        if not near:
            found.sort(key=lambda s: (s.Node, s.ID))
        return found

    def services(*args: str) -> list[CatalogSnippet]:
        params, _ = _dc_near("services", args)
        _, body = resolver.lookup(Dep(f"services({''.join(args)})", "/v1/catalog/services", params))
        body = body or {}
        return [CatalogSnippet(Name=n, Tags=StringList(sorted(set(body[n] or [])))) for n in sorted(body)]

    def nodes(*args: str) -> list[Node]:
        params, near = _dc_near("nodes", args)
        _, body = resolver.lookup(Dep(f"nodes({''.join(args)})", "/v1/catalog/nodes", params))
        found = [node_record(n) for n in body or []]
        if not near:
            found.sort(key=lambda n: n.Node)
        return found

    def node(*args: str) -> CatalogNode | None:
        if len(args) > 1:
            raise FuncError(f"node: wrong number of arguments, expected 0 or 1, but got {len(args)}")
        m = _NODE.match(args[0] if args else "")
        if m is None:
            raise FuncError(f"node: invalid format: {args[0]!r}")
        name = m.group("name")
        if not name:
            ok, body = resolver.lookup(AGENT_SELF)
            name = ((body or {}).get("Config") or {}).get("NodeName", "")
            if not name:
                return None
        _, body = resolver.lookup(Dep(f"node({''.join(args)})", "/v1/catalog/node/" + _quote(name), _dc(m)))
        return catalog_node(body) if body else None

    def datacenters(*args: bool) -> list[str]:
        _, body = resolver.lookup(Dep("datacenters()", "/v1/catalog/datacenters"))
        return list(body or [])

    return {
        "key": key, "keyExists": key_exists, "keyOrDefault": key_or_default,
        "ls": ls, "safeLs": safe(ls, "safeLs"), "tree": tree, "safeTree": safe(tree, "safeTree"),
        "service": service, "services": services, "node": node, "nodes": nodes, "datacenters": datacenters,
    }  # fmt: skip
