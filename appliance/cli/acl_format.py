"""Consul's pretty output of ACL objects for `cairn acl ...` (labels padded to 18 columns), and
`-format=json` (4-space indented JSON)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def go_time(text: str) -> str:
    """An RFC 3339 time as Go's time.Time.String() prints it (`2006-01-02 15:04:05.999999999 -0700 MST`)."""
    m = _TIME.match(text or "")
    if m is None:
        return text
    frac = (m.group(3) or "").rstrip("0")
    frac = "" if frac == "." else frac
    zone = m.group(4)
    offset = "+0000 UTC" if zone == "Z" else zone.replace(":", "") + " " + zone.replace(":", "")
    return f"{m.group(1)} {m.group(2)}{frac} {offset}"


def as_json(value: Any) -> str:
    return json.dumps(value, indent=4)


def _row(label: str, value: Any) -> str:
    return f"{label + ':':<18}{value}"


def _hash_hex(value: str) -> str:
    try:
        return base64.b64decode(value).hex()
    except ValueError:
        return value


def _links(lines: list[str], title: str, links: Any) -> None:
    if links:
        lines.append(f"{title}:")
        lines += [f"   {link.get('ID', '')} - {link.get('Name', '')}" for link in links]


def _identities(lines: list[str], holder: dict[str, Any]) -> None:
    services = holder.get("ServiceIdentities") or []
    if services:
        lines.append("Service Identities:")
        for s in services:
            dcs = ", ".join(s.get("Datacenters") or []) or "all"
            lines.append(f"   {s['ServiceName']} (Datacenters: {dcs})")
    nodes = holder.get("NodeIdentities") or []
    if nodes:
        lines.append("Node Identities:")
        lines += [f"   {n['NodeName']} (Datacenter: {n['Datacenter']})" for n in nodes]
    templated = holder.get("TemplatedPolicies") or []
    if templated:
        lines.append("Templated Policies:")
        for t in templated:
            lines.append(f"   {t['TemplateName']}")
            name = (t.get("TemplateVariables") or {}).get("Name")
            if name:
                lines.append(f"      Name: {name}")
            lines.append(f"      Datacenters: {', '.join(t.get('Datacenters') or []) or 'all'}")


def _meta(lines: list[str], obj: dict[str, Any], show_meta: bool, hex_hash: bool = True) -> None:
    if show_meta:
        lines.append(_row("Hash", _hash_hex(obj.get("Hash", "")) if hex_hash else obj.get("Hash", "")))
        lines.append(_row("Create Index", obj.get("CreateIndex", 0)))
        lines.append(_row("Modify Index", obj.get("ModifyIndex", 0)))


def token(tok: dict[str, Any], show_meta: bool = False, listing: bool = False) -> str:
    lines = [_row("AccessorID", tok.get("AccessorID", "")), _row("SecretID", tok.get("SecretID", ""))]
    lines.append(_row("Description", tok.get("Description", "")))
    lines.append(_row("Local", str(bool(tok.get("Local"))).lower()))
    if tok.get("AuthMethod"):
        lines.append(_row("Auth Method", tok["AuthMethod"]))
    lines.append(_row("Create Time", go_time(tok.get("CreateTime", ""))))
    if tok.get("ExpirationTime"):
        lines.append(_row("Expiration Time", go_time(tok["ExpirationTime"])))
    if listing:
        lines.append(_row("Legacy", "false"))
    _meta(lines, tok, show_meta)
    _links(lines, "Policies", tok.get("Policies"))
    _links(lines, "Roles", tok.get("Roles"))
    _identities(lines, tok)
    return "\n".join(lines)


def policy(p: dict[str, Any], show_meta: bool = False, listing: bool = False) -> str:
    lines = [_row("ID", p.get("ID", "")), _row("Name", p.get("Name", "")),
             _row("Description", p.get("Description", "")),
             _row("Datacenters", ", ".join(p.get("Datacenters") or []))]
    _meta(lines, p, show_meta)
    if not listing:
        lines.append("Rules:")
        lines.append(p.get("Rules", ""))
    return "\n".join(lines)


def role(r: dict[str, Any], show_meta: bool = False) -> str:
    lines = [_row("ID", r.get("ID", "")), _row("Name", r.get("Name", "")),
             _row("Description", r.get("Description", ""))]
    _meta(lines, r, show_meta)
    _links(lines, "Policies", r.get("Policies"))
    _identities(lines, r)
    return "\n".join(lines)


def auth_method(m: dict[str, Any], show_meta: bool = False) -> str:
    lines = [_row("Name", m.get("Name", "")), _row("Type", m.get("Type", "")),
             _row("Display Name", m.get("DisplayName", "")), _row("Description", m.get("Description", ""))]
    if m.get("MaxTokenTTL"):
        lines.append(_row("Max Token TTL", m["MaxTokenTTL"]))
    if m.get("TokenLocality"):
        lines.append(_row("Token Locality", m["TokenLocality"]))
    if show_meta:
        lines.append(_row("Create Index", m.get("CreateIndex", 0)))
        lines.append(_row("Modify Index", m.get("ModifyIndex", 0)))
    lines.append("Config:")
    lines.append(json.dumps(m.get("Config") or {}, indent=2))
    return "\n".join(lines)


def binding_rule(r: dict[str, Any], show_meta: bool = False) -> str:
    lines = [_row("ID", r.get("ID", "")), _row("AuthMethod", r.get("AuthMethod", "")),
             _row("Description", r.get("Description", "")), _row("BindType", r.get("BindType", "")),
             _row("BindName", r.get("BindName", "")), _row("Selector", r.get("Selector", ""))]
    if show_meta:
        lines.append(_row("Create Index", r.get("CreateIndex", 0)))
        lines.append(_row("Modify Index", r.get("ModifyIndex", 0)))
    return "\n".join(lines)
