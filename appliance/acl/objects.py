"""ACL objects from request bodies and back: validation with Consul's texts, link resolution,
hashes, and the JSON shapes the API answers (full objects, list stubs, `?expanded`).

Bodies are decoded as Go does (field names without case). Policy and role links are accepted by
ID or by Name and stored by ID; names are filled in when read. IDs and times come from the
caller (the HTTP layer generates them), so this module stays pure.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from appliance.acl.builtin import RESERVED_PREFIX, TEMPLATES
from appliance.acl.policy import PolicyError, parse
from appliance.acl.resolve import parse_time
from appliance.config.durations import DurationError, format_duration_ns, parse_duration_ns

if TYPE_CHECKING:
    from appliance.state.acl import AclTables

Record = dict[str, Any]
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
NAME_RE = re.compile(r"^[A-Za-z0-9\-_]{1,128}$")
IDENTITY_RE = re.compile(r"^[a-z0-9]([a-z0-9\-_]*[a-z0-9])?$")
TOKEN_FIELDS = ("AccessorID", "SecretID", "Description", "Policies", "Roles", "ServiceIdentities", "NodeIdentities",
                "TemplatedPolicies", "Local", "AuthMethod", "ExpirationTime", "ExpirationTTL", "CreateTime", "Hash",
                "CreateIndex", "ModifyIndex")
POLICY_FIELDS = ("ID", "Name", "Description", "Rules", "Datacenters", "Hash", "CreateIndex", "ModifyIndex")
ROLE_FIELDS = ("ID", "Name", "Description", "Policies", "ServiceIdentities", "NodeIdentities", "TemplatedPolicies",
               "Hash", "CreateIndex", "ModifyIndex")


class ObjectError(ValueError):
    """A body Consul refuses: its status (400, 403, 500) and text."""

    def __init__(self, text: str, status: int = 500) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def canonical(body: Any, fields: tuple[str, ...]) -> Record:
    """A JSON object with its known field names in their canonical case (Go's decoder)."""
    if not isinstance(body, dict):
        return {}
    names = {f.lower(): f for f in fields}
    return {names.get(k.lower(), k): v for k, v in body.items() if isinstance(k, str)}


def is_uuid(text: Any) -> bool:
    return isinstance(text, str) and UUID_RE.match(text) is not None


def time_text(at: float) -> str:
    """RFC 3339 with nanoseconds, as Go writes a UTC time."""
    stamp = datetime.fromtimestamp(at, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _hash(*parts: Any) -> str:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()
    return base64.b64encode(digest).decode()


def _links(tables: AclTables, raw: Any, kind: str) -> list[Record]:
    """Policy or role links by ID or Name, resolved to IDs, de-duplicated."""
    out: list[Record] = []
    table = tables.policies if kind == "policy" else tables.roles
    by_name = tables.policy_by_name if kind == "policy" else tables.role_by_name
    for link in raw or ():
        link = canonical(link, ("ID", "Name"))
        oid, name = link.get("ID") or "", link.get("Name") or ""
        if oid:
            if oid not in table:
                raise ObjectError(f'No such ACL {kind} with ID "{oid}"')
        else:
            found = by_name(name)
            if found is None:
                raise ObjectError(f'No such ACL {kind} with name "{name}"')
            oid = found["ID"]
        if all(x["ID"] != oid for x in out):
            out.append({"ID": oid})
    return out


def _identities(raw_services: Any, raw_nodes: Any, local: bool, holder: str) -> tuple[list[Record], list[Record]]:
    services: list[Record] = []
    for raw in raw_services or ():
        ident = canonical(raw, ("ServiceName", "Datacenters"))
        name = ident.get("ServiceName") or ""
        if not name:
            raise ObjectError(f"Service identity is missing the service name field on this {holder}")
        if not IDENTITY_RE.match(name):
            raise ObjectError(f'Service identity "{name}" has an invalid name. Only lowercase alphanumeric '
                              "characters, '-' and '_' are allowed")
        dcs = list(ident.get("Datacenters") or [])
        if dcs and local:
            raise ObjectError(f'Service identity "{name}" cannot specify a list of datacenters on a local token')
        same = next((s for s in services if s["ServiceName"] == name), None)
        if same is not None:
            merged = sorted(set(same.get("Datacenters", [])) | set(dcs))
            same.pop("Datacenters", None)
            if merged:
                same["Datacenters"] = merged
            continue
        services.append({"ServiceName": name, **({"Datacenters": sorted(set(dcs))} if dcs else {})})
    nodes: list[Record] = []
    for raw in raw_nodes or ():
        ident = canonical(raw, ("NodeName", "Datacenter"))
        name, dc = ident.get("NodeName") or "", ident.get("Datacenter") or ""
        if not name:
            raise ObjectError(f"Node identity is missing the node name field on this {holder}")
        if not dc:
            raise ObjectError(f"Node identity is missing the datacenter field on this {holder}")
        if not IDENTITY_RE.match(name):
            raise ObjectError("Node identity has an invalid name. Only lowercase alphanumeric characters, "
                              "'-' and '_' are allowed")
        if not any(n["NodeName"] == name and n["Datacenter"] == dc for n in nodes):
            nodes.append({"NodeName": name, "Datacenter": dc})
    return services, nodes


def _templated(raw: Any) -> list[Record]:
    out: list[Record] = []
    for item in raw or ():
        tp = canonical(item, ("TemplateName", "TemplateVariables", "Datacenters"))
        name = tp.get("TemplateName") or ""
        if name not in TEMPLATES:
            raise ObjectError(f'templated policy "{name}" does not exist')
        variables = canonical(tp.get("TemplateVariables") or {}, ("Name",))
        if TEMPLATES[name][2] and not variables.get("Name"):
            raise ObjectError(f'Failed to validate templated policy variables for "{name}": name: '
                              "Invalid type. Expected: string, given: null")
        rec: Record = {"TemplateName": name}
        if variables:
            rec["TemplateVariables"] = {"Name": variables.get("Name", "")}
        if tp.get("Datacenters"):
            rec["Datacenters"] = list(tp["Datacenters"])
        out.append(rec)
    return out


MIN_TTL_S, MAX_TTL_S = 60.0, 24 * 3600.0  # Consul's acl.token_min/max_expiration_ttl defaults


def _expiry_text(now: float, ttl_s: float) -> str:
    """ExpirationTime for a lifetime, within Consul's bounds (1m to 24h)."""
    shown = format_duration_ns(int(min(ttl_s, 1e12) * 1e9))
    if ttl_s > MAX_TTL_S:
        raise ObjectError(f"ExpirationTime cannot be more than 24h0m0s in the future (was {shown})")
    if ttl_s < MIN_TTL_S:
        raise ObjectError(f"ExpirationTime cannot be less than 1m0s in the future (was {shown})")
    return time_text(now + ttl_s)


def _check_id(text: Any, field: str) -> None:
    if not is_uuid(text):
        raise ObjectError(f"Invalid Token: {field} - not a valid UUID")
    if str(text).startswith(RESERVED_PREFIX):
        raise ObjectError(f'Invalid Token: {field} - UUIDs with the prefix "{RESERVED_PREFIX}" are reserved')


def _ttl_ns(raw: Any) -> int:
    if isinstance(raw, str):
        try:
            return parse_duration_ns(raw)
        except DurationError as err:
            raise ObjectError(f"Token decoding failed: {err}", 400) from None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return int(raw)
    raise ObjectError("Token decoding failed: ExpirationTTL must be a duration", 400)


def token_from_body(tables: AclTables, body: Any, *, accessor: str, secret: str, now: float,
                    prev: Record | None = None) -> Record:
    """The token a create (`prev` None) or update writes, checked as Consul checks it."""
    b = canonical(body, TOKEN_FIELDS)
    if b.get("AuthMethod"):
        raise ObjectError("AuthMethod field is disallowed outside of login")
    local = bool(b.get("Local", False))
    if prev is None:
        if b.get("AccessorID"):
            _check_id(b["AccessorID"], "AccessorID")
            accessor = b["AccessorID"]
        if b.get("SecretID"):
            _check_id(b["SecretID"], "SecretID")
            secret = b["SecretID"]
        create_time = now
        expires: str | None = None
        ttl, at = b.get("ExpirationTTL"), b.get("ExpirationTime")
        if ttl not in (None, 0, "") and at:
            raise ObjectError("Token Expiration TTL and Expiration Time cannot both be set")
        if ttl not in (None, 0, ""):
            ns = _ttl_ns(ttl)
            if ns < 0:
                raise ObjectError(f"Token Expiration TTL '{format_duration_ns(ns)}' should be > 0")
            if ns:
                expires = _expiry_text(now, ns / 1e9)
        elif at:
            try:
                at_s = parse_time(str(at))
            except ValueError:
                raise ObjectError(f'Token decoding failed: parsing time "{at}" as RFC 3339', 400) from None
            if at_s < now:
                raise ObjectError("ExpirationTime cannot be before CreateTime")
            expires = _expiry_text(now, at_s - now)
        create = time_text(create_time)
    else:
        accessor, secret = prev["AccessorID"], b.get("SecretID") or prev["SecretID"]
        if secret != prev["SecretID"]:
            raise ObjectError("Changing a token's SecretID is not permitted")
        if local != bool(prev.get("Local")):
            raise ObjectError(f"Cannot toggle local mode of {accessor}")
        at = b.get("ExpirationTime")
        if at and at != prev.get("ExpirationTime"):
            raise ObjectError(f"Cannot change expiration time of {accessor}")
        expires, create = prev.get("ExpirationTime"), prev.get("CreateTime", time_text(now))
    services, nodes = _identities(b.get("ServiceIdentities"), b.get("NodeIdentities"), local, "token")
    tok: Record = {"AccessorID": accessor, "SecretID": secret, "Description": str(b.get("Description") or ""),
                   "Policies": _links(tables, b.get("Policies"), "policy"),
                   "Roles": _links(tables, b.get("Roles"), "role"), "ServiceIdentities": services,
                   "NodeIdentities": nodes, "TemplatedPolicies": _templated(b.get("TemplatedPolicies")),
                   "Local": local, "CreateTime": create}
    if prev is not None and prev.get("AuthMethod"):
        tok["AuthMethod"] = prev["AuthMethod"]
    if expires:
        tok["ExpirationTime"] = expires
    tok["Hash"] = _hash(tok["Description"], local, tok["Policies"], tok["Roles"], services, nodes)
    return {k: v for k, v in tok.items() if v != [] or k in ("Policies",)}


def _named_links(tables: AclTables, links: Any, kind: str) -> list[Record]:
    table = tables.policies if kind == "policy" else tables.roles
    return [{"ID": link["ID"], "Name": table[link["ID"]]["Name"]} for link in links or () if link["ID"] in table]


def render_token(tables: AclTables, tok: Record, show_secret: bool = True) -> Record:
    """A token as the API shows it: links with names, empty lists left out."""
    out: Record = {"AccessorID": tok["AccessorID"], "SecretID": tok["SecretID"] if show_secret else "<hidden>",
                   "Description": tok.get("Description", "")}
    policies = _named_links(tables, tok.get("Policies"), "policy")
    roles = _named_links(tables, tok.get("Roles"), "role")
    for key, value in (("Policies", policies), ("Roles", roles),
                       ("ServiceIdentities", tok.get("ServiceIdentities")),
                       ("NodeIdentities", tok.get("NodeIdentities")),
                       ("TemplatedPolicies", tok.get("TemplatedPolicies"))):
        if value:
            out[key] = value
    out["Local"] = bool(tok.get("Local"))
    if tok.get("AuthMethod"):
        out["AuthMethod"] = tok["AuthMethod"]
    if tok.get("ExpirationTime"):
        out["ExpirationTime"] = tok["ExpirationTime"]
    out["CreateTime"] = tok.get("CreateTime", "0001-01-01T00:00:00Z")
    out["Hash"] = tok.get("Hash", "")
    out["CreateIndex"], out["ModifyIndex"] = tok.get("CreateIndex", 0), tok.get("ModifyIndex", 0)
    return out


def token_stub(tables: AclTables, tok: Record, show_secret: bool) -> Record:
    full = render_token(tables, tok, show_secret)
    full.pop("TemplatedPolicies", None)
    full["Legacy"] = False
    return full


def policy_from_body(tables: AclTables, body: Any, *, pid: str, prev: Record | None) -> Record:
    b = canonical(body, POLICY_FIELDS)
    name = b.get("Name") or ""
    if not name:
        raise ObjectError("Invalid Policy: no Name is set")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ObjectError("Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed")
    rules = b.get("Rules") or ""
    if not isinstance(rules, str):
        raise ObjectError("Policy decoding failed: Rules must be a string", 400)
    try:
        parse(rules)
    except PolicyError as err:
        raise ObjectError(str(err)) from None
    dcs = [str(dc) for dc in b.get("Datacenters") or []]
    out: Record = {"ID": pid, "Name": name, "Description": str(b.get("Description") or ""), "Rules": rules}
    if dcs:
        out["Datacenters"] = dcs
    out["Hash"] = _hash(rules, dcs)
    return out


def render_policy(policy: Record) -> Record:
    return {k: policy[k] for k in POLICY_FIELDS if k in policy and (k != "Datacenters" or policy[k])}


def policy_stub(policy: Record) -> Record:
    out = {k: policy.get(k) for k in ("ID", "Name", "Description", "Datacenters", "Hash", "CreateIndex",
                                     "ModifyIndex")}
    out["Datacenters"] = policy.get("Datacenters") or None
    return out


def role_from_body(tables: AclTables, body: Any, *, rid: str) -> Record:
    b = canonical(body, ROLE_FIELDS)
    name = b.get("Name") or ""
    if not name:
        raise ObjectError("Invalid Role: no Name is set")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ObjectError("Invalid Role: invalid Name. Only alphanumeric characters, '-' and '_' are allowed")
    services, nodes = _identities(b.get("ServiceIdentities"), b.get("NodeIdentities"), False, "role")
    role: Record = {"ID": rid, "Name": name, "Description": str(b.get("Description") or ""),
                    "Policies": _links(tables, b.get("Policies"), "policy"), "ServiceIdentities": services,
                    "NodeIdentities": nodes, "TemplatedPolicies": _templated(b.get("TemplatedPolicies"))}
    role["Hash"] = _hash(role["Description"], role["Policies"], services, nodes)
    return role


def render_role(tables: AclTables, role: Record) -> Record:
    out: Record = {"ID": role["ID"], "Name": role["Name"], "Description": role.get("Description", "")}
    for key, value in (("Policies", _named_links(tables, role.get("Policies"), "policy")),
                       ("ServiceIdentities", role.get("ServiceIdentities")),
                       ("NodeIdentities", role.get("NodeIdentities")),
                       ("TemplatedPolicies", role.get("TemplatedPolicies"))):
        if value:
            out[key] = value
    out["Hash"] = role.get("Hash", "")
    out["CreateIndex"], out["ModifyIndex"] = role.get("CreateIndex", 0), role.get("ModifyIndex", 0)
    return out
