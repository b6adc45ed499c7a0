"""Intentions: which service may open a connection to which (reference/connect.md §2).

How it works
------------
Intentions are stored as modern Consul stores them: one `service-intentions` config entry per
destination (or `*`), whose `Sources` are the intentions to it. The legacy API
(`/v1/connect/intentions`) is a view: one legacy Intention per source, `SourceNS` and
`DestinationNS` "default", the entry's indexes, and an `ID` only for intentions created through
the legacy API (kept in the source's `LegacyID`).

Precedence (Consul's UpdatePrecedence, namespaces always exact here): an exact destination
gives 9 for an exact source and 8 for `*`; the wildcard destination 6 and 5. Evaluation sorts by
precedence, highest first, ties by source then destination name, and the first intention whose
source and destination match decides. An intention with L7 `Permissions` decides "deny" for an
L4 check (the built-in proxy and `authorize` cannot look at HTTP requests). With no match, the
default comes from ACLs: allow when they are off, else the ACL default policy.

`check_sources` is Consul's validation of a service-intentions entry, with its texts, and fills
in what Consul computes on write (Precedence, Type "consul", lower-case actions). Pure functions.
"""

from __future__ import annotations

from typing import Any

from appliance.connect.entries import INTENTIONS, EntryError

WILDCARD = "*"
MAX_DESCRIPTION = 512
DEFAULT_REASON = "Default behavior configured by ACLs"


def precedence(source: str, destination: str) -> int:
    top = 9 if destination != WILDCARD else 6
    return top if source != WILDCARD else top - 1


def _check_name(field: str, name: str) -> None:
    if WILDCARD in name and name != WILDCARD:
        raise EntryError(f"{field}: wildcard character '*' cannot be used with partial values")


def check_sources(entry: dict[str, Any], *, legacy_allowed: bool = False) -> dict[str, Any]:
    """A service-intentions entry validated and completed (EntryError with Consul's text)."""
    dest = entry.get("Name") or ""
    if not dest:
        raise EntryError("Name is required")
    _check_name("Name", dest)
    sources, seen = [], set()
    for i, src in enumerate(entry.get("Sources") or []):
        src = dict(src)
        name = src.get("Name") or ""
        if not name:
            raise EntryError(f"Sources[{i}].Name is required")
        _check_name(f"Sources[{i}].Name", name)
        key = (name, src.get("Peer") or "")
        if key in seen:
            raise EntryError(f'Sources[{i}] defines "{name}" more than once')
        seen.add(key)
        if not legacy_allowed:
            for legacy in ("LegacyID", "LegacyMeta", "LegacyCreateTime", "LegacyUpdateTime"):
                if src.get(legacy):
                    raise EntryError(f"Sources[{i}].{legacy} must be omitted")
        if len(src.get("Description") or "") > MAX_DESCRIPTION:
            raise EntryError(f"Sources[{i}].Description exceeds maximum length {MAX_DESCRIPTION}")
        action = (src.get("Action") or "").lower()
        perms = src.get("Permissions") or []
        if perms:
            if action:
                raise EntryError(f"Sources[{i}].Action must be omitted if Permissions are specified")
            if dest == WILDCARD:
                raise EntryError(f"Sources[{i}].Permissions cannot be specified on intentions with wildcarded "
                                 "destinations")
            for j, perm in enumerate(perms):
                if (perm.get("Action") or "").lower() not in ("allow", "deny"):
                    raise EntryError(f"Sources[{i}].Permissions[{j}].Action must be set to 'allow' or 'deny'")
                perm["Action"] = perm["Action"].lower()
        elif action not in ("allow", "deny"):
            raise EntryError(f"Sources[{i}].Action must be set to 'allow' or 'deny'")
        stype = src.get("Type") or "consul"
        if stype != "consul":
            raise EntryError(f"Sources[{i}].Type must be set to 'consul'")
        src.update(Type=stype, Precedence=precedence(name, dest))
        if action:
            src["Action"] = action
        else:
            src.pop("Action", None)
        sources.append(src)
    if not sources:
        raise EntryError("At least one source is required")
    return {**entry, "Sources": sources}


def legacy(entry: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    """One source of a service-intentions entry as a legacy Intention."""
    out: dict[str, Any] = {}
    if src.get("LegacyID"):
        out["ID"] = src["LegacyID"]
    out["Description"] = src.get("Description", "")
    out.update(SourceNS="default", SourceName=src["Name"], DestinationNS="default", DestinationName=entry["Name"],
               SourceType=src.get("Type", "consul"))
    if src.get("Peer"):
        out["SourcePeer"] = src["Peer"]
    if src.get("Action"):
        out["Action"] = src["Action"]
    if src.get("Permissions"):
        out["Permissions"] = src["Permissions"]
    out["Meta"] = src.get("LegacyMeta") or {}
    out["Precedence"] = src.get("Precedence", precedence(src["Name"], entry["Name"]))
    if src.get("LegacyCreateTime"):
        out["CreatedAt"] = src["LegacyCreateTime"]
    if src.get("LegacyUpdateTime"):
        out["UpdatedAt"] = src["LegacyUpdateTime"]
    out["CreateIndex"], out["ModifyIndex"] = entry.get("CreateIndex", 0), entry.get("ModifyIndex", 0)
    return out


def _order(ixn: dict[str, Any]) -> tuple[int, str, str, str, str]:
    return (-ixn["Precedence"], ixn["SourceNS"], ixn["SourceName"], ixn["DestinationNS"], ixn["DestinationName"])


def every(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every intention of these service-intentions entries, in evaluation order."""
    out = [legacy(e, s) for e in entries if e.get("Kind", INTENTIONS) == INTENTIONS for s in e.get("Sources") or ()]
    return sorted(out, key=_order)


def match(intentions: list[dict[str, Any]], by: str, name: str) -> list[dict[str, Any]]:
    """Those whose destination (by="destination") or source is `name` or `*`, in evaluation order."""
    field = "DestinationName" if by == "destination" else "SourceName"
    return [x for x in intentions if x[field] in (name, WILDCARD) and not x.get("SourcePeer")]


def find(intentions: list[dict[str, Any]], source: str, destination: str) -> dict[str, Any] | None:
    """The intention that decides a connection from `source` to `destination`, or None."""
    for ixn in match(intentions, "destination", destination):
        if ixn["SourceName"] in (source, WILDCARD):
            return ixn
    return None


def describe(ixn: dict[str, Any]) -> str:
    """Consul's Intention.String(): `ALLOW default/web => default/db (ID: ..., Precedence: 9)`."""
    ident = f"ID: {ixn['ID']}, " if ixn.get("ID") else ""
    return (f"{(ixn.get('Action') or '').upper()} {ixn['SourceNS']}/{ixn['SourceName']} => "
            f"{ixn['DestinationNS']}/{ixn['DestinationName']} ({ident}Precedence: {ixn['Precedence']})")


def decide(intentions: list[dict[str, Any]], source: str, destination: str, default_allow: bool) -> tuple[bool, str]:
    """(authorized, reason) for a connection, as /v1/agent/connect/authorize answers."""
    ixn = find(intentions, source, destination)
    if ixn is None:
        return default_allow, DEFAULT_REASON
    if ixn.get("Permissions"):
        return False, f"Matched L7 intention: {describe(ixn)}"
    return ixn.get("Action") == "allow", f"Matched L4 intention: {describe(ixn)}"


def cli_string(ixn: dict[str, Any]) -> str:
    """The api package's String(): `web => db (allow)` (namespaces omitted when default)."""
    return f"{ixn['SourceName']} => {ixn['DestinationName']} ({ixn.get('Action') or ''})"
