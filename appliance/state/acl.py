"""ACL tokens, policies, roles, auth methods and binding rules in the store.

How it works
------------
`AclTables` holds each object as the API shows it, links stored by ID only (`Policies: [{"ID"}]`;
names are filled in when read, so a renamed policy shows its new name everywhere), with
`CreateIndex`/`ModifyIndex`. Derived: secret -> accessor, policy and role name -> ID. `bootstrap`
is the index of the bootstrap (or of the initial management token), 0 before: Consul's reset
index.

One command type, `acl`, carries an `Op` and the object (the proposer built it whole: IDs,
CreateTime and ExpirationTime come from the HTTP layer, never from the apply). What depends on
the store is checked here at apply, with Consul's texts: a secret or accessor already used, a
policy or role name taken, the built-in global-management policy's rules and datacenters, the
anonymous token and the global-management policy not deleted, bootstrap only once. Every write
touches the ACL watch key: the authorizer cache (appliance/acl/resolve.py) keys on its index.
Pure functions over the store; no I/O.
"""

from __future__ import annotations

from typing import Any

from appliance.acl.builtin import ANONYMOUS_ID, ANONYMOUS_SECRET, BUILTIN_POLICIES, GLOBAL_MANAGEMENT_ID
from appliance.state import watchkeys

Record = dict[str, Any]
OPS = ("init", "token_set", "token_delete", "tokens_delete", "policy_set", "policy_delete", "role_set", "role_delete",
       "method_set", "method_delete", "rule_set", "rule_delete", "bootstrap")
_TABLES = ("tokens", "policies", "roles", "methods", "rules")


_KEYS = {"token_set": ("AccessorID", "SecretID"), "bootstrap": ("AccessorID", "SecretID"),
         "policy_set": ("ID", "Name"), "role_set": ("ID", "Name"), "method_set": ("Name", "Type"),
         "rule_set": ("ID", "AuthMethod")}
_LINKS = ("Policies", "Roles")


def command_problem(cmd: Record) -> tuple[str, str] | None:
    """(field, problem) of an `acl` command the store could not apply, or None (commands.py)."""
    op = cmd["Op"]
    if op not in OPS:
        return "Op", f"must be one of {', '.join(OPS)}"
    obj = cmd.get("Object")
    if op == "bootstrap" and not obj:
        return None
    for key in _KEYS.get(op, ()):
        if not isinstance((obj or {}).get(key), str):
            return f"Object.{key}", "must be a string"
    for field in _LINKS:
        links = (obj or {}).get(field) or []
        if not isinstance(links, list) or not all(isinstance(x, dict) and isinstance(x.get("ID"), str)
                                                  for x in links):
            return f"Object.{field}", "must be a list of {ID} links"
    if op.endswith("_delete") and op != "tokens_delete" and not isinstance(cmd.get("ID"), str):
        return "ID", "is missing"
    return None


class AclStoreError(ValueError):
    """A write the store refuses (Consul's text; the HTTP layer answers 500, or 403 for bootstrap)."""


class AclTables:
    """The ACL objects of one store (see the module docstring)."""

    def __init__(self) -> None:
        self.tokens: dict[str, Record] = {}  # AccessorID -> token
        self.policies: dict[str, Record] = {}  # ID -> policy
        self.roles: dict[str, Record] = {}  # ID -> role
        self.methods: dict[str, Record] = {}  # Name -> auth method
        self.rules: dict[str, Record] = {}  # ID -> binding rule
        self.bootstrap = 0  # index of the bootstrap; 0: bootstrap allowed
        self.secrets: dict[str, str] = {}  # SecretID -> AccessorID
        self.policy_names: dict[str, str] = {}  # Name -> ID
        self.role_names: dict[str, str] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AclTables) and self.dump() == other.dump()

    __hash__ = None  # type: ignore[assignment]

    def rebuild(self) -> None:
        self.secrets = {t["SecretID"]: a for a, t in self.tokens.items()}
        self.policy_names = {p["Name"]: i for i, p in self.policies.items()}
        self.role_names = {r["Name"]: i for i, r in self.roles.items()}

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: list(getattr(self, name).values()) for name in _TABLES}
        out["bootstrap"] = self.bootstrap
        return out

    @classmethod
    def load(cls, doc: dict[str, Any] | None) -> AclTables:
        tables = cls()
        if doc:
            tables.tokens = {t["AccessorID"]: t for t in doc.get("tokens", ())}
            tables.policies = {p["ID"]: p for p in doc.get("policies", ())}
            tables.roles = {r["ID"]: r for r in doc.get("roles", ())}
            tables.methods = {m["Name"]: m for m in doc.get("methods", ())}
            tables.rules = {r["ID"]: r for r in doc.get("rules", ())}
            tables.bootstrap = int(doc.get("bootstrap", 0))
        tables.rebuild()
        return tables

    def token_by_secret(self, secret: str) -> Record | None:
        accessor = self.secrets.get(secret)
        return None if accessor is None else self.tokens.get(accessor)

    def policy_by_name(self, name: str) -> Record | None:
        pid = self.policy_names.get(name)
        return None if pid is None else self.policies.get(pid)

    def role_by_name(self, name: str) -> Record | None:
        rid = self.role_names.get(name)
        return None if rid is None else self.roles.get(rid)


def _stamp(rec: Record, prev: Record | None, index: int) -> Record:
    out = {k: v for k, v in rec.items() if k not in ("CreateIndex", "ModifyIndex")}
    out["CreateIndex"] = prev["CreateIndex"] if prev else index
    out["ModifyIndex"] = index
    return out


def _token_set(t: AclTables, index: int, token: Record, create: bool) -> Record:
    accessor, secret = token["AccessorID"], token["SecretID"]
    prev = t.tokens.get(accessor)
    if create and prev is not None:
        raise AclStoreError("Invalid Token: AccessorID is already in use")
    if not create and prev is None:
        raise AclStoreError(f'Cannot find token "{accessor}"')
    owner = t.secrets.get(secret)
    if owner is not None and owner != accessor:
        raise AclStoreError("Invalid Token: SecretID is already in use")
    if create and secret in t.tokens:
        raise AclStoreError("Invalid Token: SecretID is already in use")
    if create and accessor in t.secrets:
        raise AclStoreError("Invalid Token: AccessorID is already in use")
    if prev is not None and prev["SecretID"] != secret:
        raise AclStoreError("Changing a token's SecretID is not permitted")
    for link in token.get("Policies") or ():
        if link["ID"] not in t.policies:
            raise AclStoreError(f'No such ACL policy with ID "{link["ID"]}"')
    for link in token.get("Roles") or ():
        if link["ID"] not in t.roles:
            raise AclStoreError(f'No such ACL role with ID "{link["ID"]}"')
    rec = _stamp(token, prev, index)
    t.tokens[accessor] = rec
    t.secrets[secret] = accessor
    return rec


def _token_delete(t: AclTables, accessor: str) -> bool:
    if accessor == ANONYMOUS_ID:
        raise AclStoreError("Delete operation not permitted on the anonymous token")
    rec = t.tokens.pop(accessor, None)
    if rec is None:
        return False
    t.secrets.pop(rec["SecretID"], None)
    return True


def _policy_set(t: AclTables, index: int, policy: Record) -> Record:
    pid, name = policy["ID"], policy["Name"]
    prev = t.policies.get(pid)
    owner = t.policy_names.get(name)
    if owner is not None and owner != pid:
        if prev is None:
            raise AclStoreError(f'Invalid Policy: A Policy with Name "{name}" already exists')
        raise AclStoreError(f'Invalid Policy: A policy with name "{name}" already exists')
    if pid == GLOBAL_MANAGEMENT_ID and prev is not None:
        if policy.get("Rules", "") != prev.get("Rules", ""):
            raise AclStoreError("Changing the Rules for the builtin global-management policy is not permitted")
        if policy.get("Datacenters"):
            raise AclStoreError("Changing the Datacenters of the builtin global-management policy is not permitted")
    rec = _stamp(policy, prev, index)
    if prev is not None:
        t.policy_names.pop(prev["Name"], None)
    t.policies[pid] = rec
    t.policy_names[name] = pid
    return rec


def _policy_delete(t: AclTables, pid: str) -> bool:
    if pid == GLOBAL_MANAGEMENT_ID:
        raise AclStoreError("Delete operation not permitted on the builtin global-management policy")
    rec = t.policies.pop(pid, None)
    if rec is None:
        return False
    t.policy_names.pop(rec["Name"], None)
    _unlink(t.tokens, "Policies", pid)
    _unlink(t.roles, "Policies", pid)
    return True


def _unlink(table: dict[str, Record], field: str, oid: str) -> None:
    """Drop links to a deleted policy or role (Consul resolves dangling links to nothing)."""
    for key, rec in list(table.items()):
        links = rec.get(field) or []
        if any(link["ID"] == oid for link in links):
            table[key] = {**rec, field: [link for link in links if link["ID"] != oid]}


def _role_set(t: AclTables, index: int, role: Record) -> Record:
    rid, name = role["ID"], role["Name"]
    prev = t.roles.get(rid)
    owner = t.role_names.get(name)
    if owner is not None and owner != rid:
        if prev is None:
            raise AclStoreError(f'Invalid Role: A Role with Name "{name}" already exists')
        raise AclStoreError(f'Invalid Role: A role with name "{name}" already exists')
    for link in role.get("Policies") or ():
        if link["ID"] not in t.policies:
            raise AclStoreError(f'No such ACL policy with ID "{link["ID"]}"')
    rec = _stamp(role, prev, index)
    if prev is not None:
        t.role_names.pop(prev["Name"], None)
    t.roles[rid] = rec
    t.role_names[name] = rid
    return rec


def _role_delete(t: AclTables, rid: str) -> bool:
    rec = t.roles.pop(rid, None)
    if rec is None:
        return False
    t.role_names.pop(rec["Name"], None)
    _unlink(t.tokens, "Roles", rid)
    return True


def _method_delete(t: AclTables, name: str) -> bool:
    if t.methods.pop(name, None) is None:
        return False
    for rid in [rid for rid, rule in t.rules.items() if rule.get("AuthMethod") == name]:
        del t.rules[rid]
    for accessor in [a for a, tok in t.tokens.items() if tok.get("AuthMethod") == name]:
        _token_delete(t, accessor)
    return True


def ensure_builtins(t: AclTables, index: int) -> bool:
    """Create the built-in policies and the anonymous token if missing (the leader proposes this)."""
    changed = False
    for pid, name, description, rules in BUILTIN_POLICIES:
        if pid not in t.policies:
            taken = t.policy_names.get(name)
            _policy_set(t, index, {"ID": pid, "Name": name if taken is None else pid, "Description": description,
                                   "Rules": rules})
            changed = True
    if ANONYMOUS_ID not in t.tokens:
        _token_set(t, index, {"AccessorID": ANONYMOUS_ID, "SecretID": ANONYMOUS_SECRET,
                              "Description": "Anonymous Token", "Local": False,
                              "CreateTime": "0001-01-01T00:00:00Z"}, True)
        changed = True
    return changed


def apply(s: Any, index: int, cmd: Record) -> Any:
    """Apply one `acl` command to a Store (AclStoreError, nothing written, when the store refuses it)."""
    t: AclTables = s.acl
    op = cmd["Op"]
    obj = cmd.get("Object") or {}
    result: Any
    if op == "bootstrap":
        if t.bootstrap and cmd.get("ResetIndex") != t.bootstrap:
            raise AclStoreError(f"ACL bootstrap no longer allowed (reset index: {t.bootstrap})")
        ensure_builtins(t, index)
        result = _token_set(t, index, obj, True) if obj else True
        t.bootstrap = index
    elif op == "init":  # the leader, when ACLs are on: built-ins and the initial management token
        result = ensure_builtins(t, index)
        if obj and obj["SecretID"] not in t.secrets:
            _token_set(t, index, obj, True)
            t.bootstrap = t.bootstrap or index
            result = True
    elif op == "token_set":
        result = _token_set(t, index, obj, bool(cmd.get("Create")))
    elif op == "token_delete":
        result = _token_delete(t, cmd.get("ID", ""))
    elif op == "tokens_delete":  # expired tokens, reaped by the leader
        result = [a for a in cmd.get("IDs") or () if a != ANONYMOUS_ID and _token_delete(t, a)]
    elif op == "policy_set":
        result = _policy_set(t, index, obj)
    elif op == "policy_delete":
        result = _policy_delete(t, cmd.get("ID", ""))
    elif op == "role_set":
        result = _role_set(t, index, obj)
    elif op == "role_delete":
        result = _role_delete(t, cmd.get("ID", ""))
    elif op == "method_set":
        prev = t.methods.get(obj["Name"])
        result = t.methods[obj["Name"]] = _stamp(obj, prev, index)
    elif op == "method_delete":
        result = _method_delete(t, cmd.get("ID", ""))
    elif op == "rule_set":
        prev = t.rules.get(obj["ID"])
        result = t.rules[obj["ID"]] = _stamp(obj, prev, index)
    else:  # rule_delete
        result = t.rules.pop(cmd.get("ID", ""), None) is not None
    s.touch(index, watchkeys.ACL)
    return result
