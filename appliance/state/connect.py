"""Connect in the store: the CA's configuration, roots and serial counter, and config entries.

How it works
------------
`ConnectTables` hold, in the replicated state (so every server, and every client agent's replica,
has the same):

    ca_config       {"Provider", "Config", "ClusterID", "CreateIndex", "ModifyIndex"} or None
    roots           the CARoot records, oldest first; exactly one is Active
    keys            root ID -> the PEM private key of the root (never rendered)
    roots_index     the index of the last write to the roots
    serial          the last serial number the CA handed out (shared by every certificate)
    entries         (kind, name) -> a config entry in Consul's JSON shape, with indexes

The `connect_ca` command (FSM) has four ops: `serial` takes the next serial number (the result is
{"Serial", "Index"}: the index is the leaf's CreateIndex, as Consul's "leaf issued" bump);
`init` stores the first configuration and root if none is stored (False otherwise); `set` replaces
configuration and roots together, compare-and-set on `roots_index` (Consul's
CAOpSetRootsAndConfig: "could not atomically update roots and config"); `prune` drops inactive
roots by ID. The `config_entry` command sets or deletes one entry, with an optional CAS on its
ModifyIndex (0: only if absent); it answers True or False. Every write touches its watch key
(CONNECT_CA for the CA, the kind's key for entries). Pure functions over the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.state import watchkeys

Record = dict[str, Any]


class ConnectStoreError(ValueError):
    """A write the store refuses (Consul's state-store text)."""


@dataclass
class ConnectTables:
    ca_config: Record | None = None
    roots: list[Record] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    roots_index: int = 0
    serial: int = 0
    entries: dict[tuple[str, str], Record] = field(default_factory=dict)

    def active_root(self) -> Record | None:
        for root in self.roots:
            if root.get("Active"):
                return root
        return None

    def entry(self, kind: str, name: str) -> Record | None:
        return self.entries.get((kind, name))

    def entries_of(self, kind: str) -> list[Record]:
        return [self.entries[k] for k in sorted(k for k in self.entries if k[0] == kind)]

    def dump(self) -> dict[str, Any]:
        return {"ca_config": self.ca_config, "roots": self.roots, "keys": self.keys,
                "roots_index": self.roots_index, "serial": self.serial,
                "entries": list(self.entries.values())}

    @classmethod
    def load(cls, doc: Any) -> ConnectTables:
        if not doc:
            return cls()
        entries = {(e["Kind"], e["Name"]): e for e in doc.get("entries", ())}
        return cls(doc.get("ca_config"), list(doc.get("roots", ())), dict(doc.get("keys", {})),
                   int(doc.get("roots_index", 0)), int(doc.get("serial", 0)), entries)


def _indexed(rec: Record, index: int, prev: Record | None) -> Record:
    return {**rec, "CreateIndex": prev["CreateIndex"] if prev else index, "ModifyIndex": index}


def _put_roots(t: ConnectTables, index: int, roots: list[Record], keys: dict[str, str]) -> None:
    old = {r["ID"]: r for r in t.roots}
    out: list[Record] = []
    for root in roots:
        prev = old.get(root["ID"])
        same = prev is not None and {k: v for k, v in prev.items() if not k.endswith("Index")} == root
        out.append(prev if same and prev is not None else _indexed(root, index, prev))
    t.roots = out
    t.keys = {rid: pem for rid, pem in {**t.keys, **keys}.items() if any(r["ID"] == rid for r in out)}
    t.roots_index = index


def apply_ca(s: Any, index: int, cmd: dict[str, Any]) -> Any:
    t: ConnectTables = s.connect
    op = cmd["Op"]
    if op == "serial":
        t.serial += 1
        s.touch(index, watchkeys.CONNECT_LEAF)
        return {"Serial": t.serial, "Index": index}
    if op == "init" and t.ca_config is not None:
        return False
    if op in ("init", "set"):
        if op == "set" and "CAS" in cmd and cmd["CAS"] != t.roots_index:
            raise ConnectStoreError("could not atomically update roots and config")
        config = cmd.get("Config")
        if config is not None:
            t.ca_config = _indexed(config, index, t.ca_config)
        if cmd.get("Roots") is not None:
            _put_roots(t, index, cmd["Roots"], cmd.get("Keys") or {})
        t.serial = max(t.serial, int(cmd.get("Serial", 0)))
        s.touch(index, watchkeys.CONNECT_CA)
        return True
    if op == "prune":
        drop = set(cmd.get("IDs") or ())
        kept = [r for r in t.roots if r["ID"] not in drop or r.get("Active")]
        if len(kept) == len(t.roots):
            return False
        _put_roots(t, index, [{k: v for k, v in r.items() if not k.endswith("Index")} for r in kept], {})
        s.touch(index, watchkeys.CONNECT_CA)
        return True
    raise ConnectStoreError(f"unknown CA operation {op!r}")


def apply_entry(s: Any, index: int, cmd: dict[str, Any]) -> bool:
    t: ConnectTables = s.connect
    kind, name = cmd["Kind"], cmd["Name"]
    prev = t.entries.get((kind, name))
    if "CAS" in cmd and (prev["ModifyIndex"] if prev else 0) != cmd["CAS"]:
        return False
    if cmd["Op"] == "delete":
        if prev is None:
            return True
        del t.entries[(kind, name)]
    else:
        entry = {k: v for k, v in cmd["Entry"].items() if k not in ("CreateIndex", "ModifyIndex")}
        t.entries[(kind, name)] = _indexed({**entry, "Kind": kind, "Name": name}, index, prev)
    s.touch(index, watchkeys.config_kind(kind), watchkeys.config_entry(kind, name))
    return True
