"""Prepared-query definitions: the request body decoded, checked, and the record the store keeps.

How it works
------------
A `POST /v1/query` or `PUT /v1/query/<id>` body is decoded as Go decodes it into Consul's
`structs.PreparedQuery` (field names case-insensitive, Go's texts for a value of the wrong type:
appliance/api/gojson.py), then given every field with its zero value (`record`) so the stored
query always has the shape Consul renders (reference/coordination.md §6.1):

    ID, Name, Session, Token, Template {Type, Regexp, RemoveEmptyTags},
    Service {Service, Failover {NearestN, Datacenters, Targets}, OnlyPassing, IgnoreCheckIDs,
             Near, Tags, NodeMeta, ServiceMeta, Peer, Connect {Enabled}},
    DNS {TTL}, CreateIndex, ModifyIndex

`check(query)` is Consul's parseQuery (prepared_query_endpoint.go): a query needs a Name, a
template or a session; a Service name; NearestN >= 0; node metadata within Consul's limits; a DNS
TTL that is a non-negative Go duration. Its errors read `Invalid prepared query: <why>` and are
500s. Template definitions are compiled too (appliance/queries/template.py). What depends on the
store (a name taken, an unknown session) is checked when the command applies
(appliance/state/queries.py). Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Any

from appliance.api.gojson import BOOL, INT, STRING, STRING_MAP, STRINGS, List, Struct
from appliance.config.durations import DurationError, parse_duration_ns
from appliance.queries.template import TemplateError, compile_template, is_template

REDACTED = "<hidden>"
MAX_META_PAIRS = 64
MAX_META_KEY = 128
MAX_META_VALUE = 512

_TARGET = Struct("structs.QueryFailoverTarget", {"Peer": STRING, "Datacenter": STRING, "Partition": STRING,
                                                 "Namespace": STRING})
_FAILOVER = Struct("structs.QueryFailoverOptions", {"NearestN": INT, "Datacenters": STRINGS,
                                                    "Targets": List(_TARGET)})
_CONNECT = Struct("structs.QueryConnect", {"Enabled": BOOL})
_SERVICE = Struct("structs.ServiceQuery", {
    "Service": STRING, "SamenessGroup": STRING, "Failover": _FAILOVER, "OnlyPassing": BOOL,
    "IgnoreCheckIDs": STRINGS, "Near": STRING, "Tags": STRINGS, "NodeMeta": STRING_MAP, "ServiceMeta": STRING_MAP,
    "Peer": STRING, "Connect": _CONNECT, "Namespace": STRING, "Partition": STRING,
})
_TEMPLATE = Struct("structs.QueryTemplateOptions", {"Type": STRING, "Regexp": STRING, "RemoveEmptyTags": BOOL})
_DNS = Struct("structs.QueryDNSOptions", {"TTL": STRING})
PREPARED_QUERY = Struct("structs.PreparedQuery", {
    "ID": STRING, "Name": STRING, "Session": STRING, "Token": STRING, "Template": _TEMPLATE, "Service": _SERVICE,
    "DNS": _DNS,
}, ignored=("CreateIndex", "ModifyIndex"))


class QueryError(ValueError):
    """A definition Consul refuses; str() is its text (a 500 with a plain-text body)."""


def record(decoded: dict[str, Any]) -> dict[str, Any]:
    """A decoded body as the full stored shape (every field, Go's zero values), without indexes."""
    svc = decoded.get("Service") or {}
    failover = svc.get("Failover") or {}
    template = decoded.get("Template") or {}
    return {
        "ID": decoded.get("ID", ""), "Name": decoded.get("Name", ""), "Session": decoded.get("Session", ""),
        "Token": decoded.get("Token", ""),
        "Template": {"Type": template.get("Type", ""), "Regexp": template.get("Regexp", ""),
                     "RemoveEmptyTags": template.get("RemoveEmptyTags", False)},
        "Service": {
            "Service": svc.get("Service", ""),
            "Failover": {"NearestN": failover.get("NearestN", 0), "Datacenters": failover.get("Datacenters"),
                         "Targets": failover.get("Targets")},
            "OnlyPassing": svc.get("OnlyPassing", False), "IgnoreCheckIDs": svc.get("IgnoreCheckIDs"),
            "Near": svc.get("Near", ""), "Tags": svc.get("Tags"), "NodeMeta": svc.get("NodeMeta"),
            "ServiceMeta": svc.get("ServiceMeta"), "Peer": svc.get("Peer", ""),
            "Connect": {"Enabled": (svc.get("Connect") or {}).get("Enabled", False)},
        },
        "DNS": {"TTL": (decoded.get("DNS") or {}).get("TTL", "")},
    }


def _check_meta(meta: dict[str, str] | None, what: str) -> None:
    if not meta:
        return
    if len(meta) > MAX_META_PAIRS:
        raise QueryError(f"{what} cannot contain more than {MAX_META_PAIRS} key/value pairs")
    for key, value in meta.items():
        if key == "":
            raise QueryError("Key cannot be blank")
        if len(key) > MAX_META_KEY:
            raise QueryError(f"Key is too long (limit: {MAX_META_KEY} characters)")
        if len(value) > MAX_META_VALUE:
            raise QueryError(f"Value is too long (limit: {MAX_META_VALUE} characters)")


def dns_ttl_ns(query: dict[str, Any]) -> int | None:
    """The query's DNS TTL in nanoseconds, None when it sets none (or an invalid one)."""
    ttl = (query.get("DNS") or {}).get("TTL") or ""
    if not ttl:
        return None
    try:
        return parse_duration_ns(ttl)
    except DurationError:
        return None


def _parse(query: dict[str, Any]) -> None:
    """parseQuery: the rules a definition follows, unwrapped."""
    if not query["Name"] and not query["Template"]["Type"] and not query["Session"]:
        raise QueryError("Must be bound to a session")
    if query["Token"] == REDACTED:
        raise QueryError(f"Bad Token '{REDACTED}', it looks like a query definition with a redacted token was "
                         "submitted")
    svc = query["Service"]
    if not svc["Service"]:
        raise QueryError("Must provide a Service name to query")
    failover = svc["Failover"]
    if failover["NearestN"] < 0:
        raise QueryError(f"Bad NearestN '{failover['NearestN']}', must be >= 0")
    if failover.get("Targets") and (failover["NearestN"] or failover.get("Datacenters")):
        raise QueryError("Targets cannot be populated with NearestN or Datacenters")
    _check_meta(svc["NodeMeta"], "Node metadata")
    _check_meta(svc["ServiceMeta"], "Service metadata")
    ttl = query["DNS"]["TTL"]
    if ttl:
        try:
            ns = parse_duration_ns(ttl)
        except DurationError as err:
            raise QueryError(f"Bad DNS TTL '{ttl}': {err}") from None
        if ns < 0:
            raise QueryError(f"DNS TTL '{ns}', must be >=0")


def check(query: dict[str, Any]) -> None:
    """Consul's checks of a definition to create or update (QueryError with its text)."""
    try:
        _parse(query)
    except QueryError as err:
        raise QueryError(f"Invalid prepared query: {err}") from None
    if is_template(query):
        try:
            compile_template(query)
        except TemplateError as err:
            raise QueryError(f"failed compiling template: {err}") from None

