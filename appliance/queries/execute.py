"""Finding a prepared query by ID or name, and running it over a service's instances.

How it works
------------
`resolve(store, id_or_name)` is Consul's PreparedQueryResolve (reference/coordination.md §6.3):
a query whose ID is the text; else the query whose Name is the text (without case); else the
template whose Name is the longest prefix of the text (the template with an empty Name catches
every name). A template is rendered for the text (appliance/queries/template.py). None: `Query
not found`.

`select(query, instances)` is the execute step's filter (§6.5) over CheckServiceNode objects
({"Node", "Service", "Checks"}), from this datacenter's store or another's
`/v1/health/service/<name>` answer alike:

* health: an instance with a critical check is dropped, and one with a warning too when
  `OnlyPassing`; checks named in `IgnoreCheckIDs` do not count;
* `NodeMeta` and `ServiceMeta`: every pair must be on the node / the service;
* `Tags`: case-insensitive; every plain tag must be on the instance, no `!tag` may be.

`order(instances, ...)` shuffles (the caller's `random.Random`), then sorts by estimated round
trip time from the `Near` node (`?near=` first, then the query's `Near`; `_agent` is the agent
answering, `_ip` the node whose address is the asker's IP) when that node has a coordinate, moving
the node itself to the front if it is among the first ten; `limit` keeps the first ones. Pure
functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from appliance.queries.template import is_template, render
from appliance.state.store import Record, Store

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
NOT_FOUND = "Query not found"
NEAR_MOVE_WINDOW = 10  # the source node moves to the front only from among the first ten


class Shuffler(Protocol):
    def shuffle(self, x: list[Any]) -> None: ...


def resolve(store: Store, id_or_name: str) -> Record | None:
    """The query `id_or_name` names, a template rendered for it; None when none does."""
    if not id_or_name:
        return None
    table = store.prepared_queries
    if _UUID.fullmatch(id_or_name):
        found = table.get(id_or_name.lower()) or table.get(id_or_name)
        if found is not None:
            return found
    wanted = id_or_name.lower()
    best: Record | None = None
    for query in table.values():
        name = (query.get("Name") or "").lower()
        if name and name == wanted:
            return render(query, id_or_name)
        if is_template(query) and wanted.startswith(name) and (
                best is None or len(name) > len(best.get("Name") or "")):
            best = query
    return render(best, id_or_name) if best is not None else None


def _healthy(checks: Iterable[Record], only_passing: bool, ignored: set[str]) -> bool:
    for check in checks:
        if check.get("CheckID") in ignored:
            continue
        status = check.get("Status")
        if status == "critical" or (only_passing and status != "passing"):
            return False
    return True


def _meta_ok(meta: dict[str, str] | None, want: dict[str, str] | None) -> bool:
    if not want:
        return True
    meta = meta or {}
    return all(meta.get(k) == v for k, v in want.items())


def _tags_ok(tags: Iterable[str] | None, want: list[str] | None) -> bool:
    if not want:
        return True
    have = {t.lower() for t in tags or ()}
    for tag in want:
        tag = tag.lower()
        if tag.startswith("!"):
            if tag[1:] in have:
                return False
        elif tag not in have:
            return False
    return True


def select(query: Record, instances: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The instances the query's Service section keeps (health, meta, tags)."""
    svc = query["Service"]
    only_passing = bool(svc.get("OnlyPassing"))
    ignored = set(svc.get("IgnoreCheckIDs") or ())
    out = []
    for csn in instances:
        node, service = csn.get("Node") or {}, csn.get("Service") or {}
        if (_healthy(csn.get("Checks") or (), only_passing, ignored)
                and _meta_ok(node.get("Meta"), svc.get("NodeMeta"))
                and _meta_ok(service.get("Meta"), svc.get("ServiceMeta"))
                and _tags_ok(service.get("Tags"), svc.get("Tags"))):
            out.append(csn)
    return out


def source_node(store: Store, near: str, agent_node: str, source_ip: str) -> str:
    """The node a `Near` value names: `_agent` this agent, `_ip` the node with the asker's IP."""
    if near == "_agent":
        return agent_node
    if near == "_ip":
        if not source_ip:
            return ""
        for node in store.all_nodes():
            if node.get("Address") == source_ip:
                return str(node["Node"])
        return ""
    return near


def order(instances: list[dict[str, Any]], rng: Shuffler, near: str, limit: int,
          sort_near: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Shuffled, then sorted by RTT from the `near` node (a node name, already resolved) with
    `sort_near` (the agent's coordinate sort, appliance/coordinates.py), then cut to `limit` (0: all)."""
    out = list(instances)
    rng.shuffle(out)
    if near:
        if sort_near is not None:
            out = sort_near(out)
        for i, csn in enumerate(out[:NEAR_MOVE_WINDOW]):
            if csn["Node"]["Node"].lower() == near.lower():
                out.insert(0, out.pop(i))
                break
    if limit > 0:
        out = out[:limit]
    return out


def response(query: Record, nodes: list[dict[str, Any]], datacenter: str, failovers: int) -> dict[str, Any]:
    """Consul's PreparedQueryExecuteResponse."""
    return {"Service": query["Service"]["Service"], "Nodes": nodes, "DNS": dict(query.get("DNS") or {"TTL": ""}),
            "Datacenter": datacenter, "Failovers": failovers}
