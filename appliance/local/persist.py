"""Registrations made through the API survive a restart (agents with a data_dir, not -dev).

Consul keeps services and checks registered over HTTP under its data_dir and restores them at
start; definitions from config files are simply read again. cairn writes one JSON document,
`<data_dir>/local-state.json`, replaced atomically (temp file, fsync, rename) whenever it
changes: the API bodies of services and standalone checks as they were received, the last status
and output of their TTL checks, and the maintenance reasons. `restore()` re-parses the bodies with
the same parser the API uses, so a body that became invalid is skipped with a warning rather
than stopping the agent. A body keeps the ACL token it was registered with (anti-entropy writes
with it), so the file is readable by the agent's user only (0600), as Consul's are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from appliance.local.definitions import DefinitionError, parse_check_definition, parse_service_definition
from appliance.local.state import NODE_MAINT_ID, SERVICE_MAINT_PREFIX, LocalState

FORMAT_VERSION = 1
FILE_NAME = "local-state.json"


def document(local: LocalState) -> dict[str, Any]:
    checks = [c for c in local.checks.values() if c.source == "api"]
    maint = {cid: c.notes for cid, c in local.checks.items() if c.source == "maintenance"}
    return {
        "version": FORMAT_VERSION,
        "services": [s.raw for s in local.services.values() if s.source == "api" and s.raw is not None],
        "checks": [c.raw for c in checks if c.raw is not None],
        # TTL results only: other checks run again at start and find their status themselves
        "status": {c.id: {"Status": c.status, "Output": c.output} for c in checks if c.definition.kind == "ttl"},
        "maintenance": maint,
    }


def save(data_dir: str, local: LocalState, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the document unless it equals `previous`; return what is on disk now."""
    doc = document(local)
    if doc == previous:
        return doc
    path = Path(data_dir) / FILE_NAME
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:  # tokens inside
        os.fchmod(fh.fileno(), 0o600)
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return doc


def restore(data_dir: str, local: LocalState, now: float) -> list[str]:
    """Load the saved registrations into `local`; return warnings for what could not be restored."""
    path = Path(data_dir) / FILE_NAME
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return [f"failed to read {path}: {err}"]
    if doc.get("version") != FORMAT_VERSION:
        return [f"ignoring {path}: unknown format version {doc.get('version')!r}"]
    warnings = []
    for raw in doc.get("services", []):
        try:
            local.add_service(parse_service_definition(raw), source="api", now=now, raw=raw)
        except DefinitionError as err:
            warnings.append(f"failed to restore service: {err}")
    for raw in doc.get("checks", []):
        try:
            local.add_check(parse_check_definition(raw), source="api", now=now, raw=raw)
        except (DefinitionError, KeyError) as err:
            warnings.append(f"failed to restore check: {err}")
    for cid, state in doc.get("status", {}).items():
        if cid in local.checks:
            local.set_status(cid, state["Status"], state["Output"], now)
    for cid, notes in doc.get("maintenance", {}).items():
        if cid == NODE_MAINT_ID:
            local.set_node_maintenance(True, notes)
        elif cid.startswith(SERVICE_MAINT_PREFIX) and cid[len(SERVICE_MAINT_PREFIX):] in local.services:
            local.set_service_maintenance(cid[len(SERVICE_MAINT_PREFIX):], True, notes)
    return warnings
