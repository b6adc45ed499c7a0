"""DNS answers for prepared queries: `<query>.query[.<dc>].<domain>` from an execute response.

How it works
------------
A `.query` lookup is not answered from the store by the Answerer: the DNS server runs the query
as `GET /v1/query/<name>/execute` does (appliance/http/handlers/query.py: templates, filters,
`Near`, failover to other datacenters) and hands the execute response here
(reference/coordination.md §6.6). `instances(found)` turns its `Nodes` into the
(node, service, status) triples the service answers are built from: the query already chose them,
so none is dropped again here; an instance with a warning (the query kept it: no `OnlyPassing`)
gets its service's warning weight in SRV records. `ttl(found, default)` is the query's `DNS.TTL`
in whole seconds when it sets one, else the `dns_config.service_ttl` rule for the service.
`datacenter(found, here)` is the datacenter that answered ("" for this one), so SRV targets name
`<node>.node.<dc>.<domain>` after a failover. Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Any

from appliance.queries.definition import dns_ttl_ns


def instances(found: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    out = []
    for csn in found.get("Nodes") or ():
        node, svc = csn.get("Node") or {}, csn.get("Service") or {}
        if not node.get("Node"):
            continue
        warning = any(c.get("Status") == "warning" for c in csn.get("Checks") or ())
        out.append((node, svc, "warning" if warning else "passing"))
    return out


def ttl(found: dict[str, Any], default: int) -> int:
    ns = dns_ttl_ns(found)
    return default if ns is None else ns // 1_000_000_000


def datacenter(found: dict[str, Any], here: str) -> str:
    dc = str(found.get("Datacenter") or "")
    return "" if dc.lower() == here.lower() else dc
