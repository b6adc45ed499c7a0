"""Consul's ACL rules language: HCL or JSON text to a `Rules` value, and the merge of several.

A policy's rules name resources. The scalar ones (`acl`, `keyring`, `operator`, `mesh`,
`peering`) take one level; the named ones take blocks keyed by a segment, as an exact rule
(`key "foo" { policy = "write" }`) or a prefix rule (`key_prefix "fo" { policy = "read" }`):

    acl = "write"
    key_prefix "" { policy = "read" }
    service "web" { policy = "write" intentions = "read" }

Levels are `read`, `write`, `deny` and, for `key`/`key_prefix` only, `list`; they are read
case-insensitively. The text is HCL1 (appliance/config/hcl.py reads it) or the same object as
JSON. Unknown blocks (Enterprise's `namespace`, `partition`) are ignored as Consul CE ignores
them. Errors carry Consul's texts: `Failed to parse ACL rules: At L:C: ...` for text that does not
parse, `Invalid <kind> policy: ...` for a level that is not one.

Merging (Consul's policy merger): for one resource, kind (exact or prefix) and segment, the
level that takes precedence is kept: deny, then write, then list, then read. Different segments
are never merged; the authorizer (appliance/acl/authorizer.py) picks among them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from appliance.config.hcl import HCLError, Repeated, loads

DENY, WRITE, LIST, READ = "deny", "write", "list", "read"
ORDER = {DENY: 4, WRITE: 3, LIST: 2, READ: 1, "": 0}
SCALARS = ("acl", "keyring", "operator", "mesh", "peering")
# named resource -> (the field Consul's rule struct names the segment by, its Go rule type)
NAMED = {
    "agent": ("Node", "AgentRule"),
    "event": ("Event", "EventRule"),
    "key": ("Prefix", "KeyRule"),
    "node": ("Name", "NodeRule"),
    "query": ("Prefix", "PreparedQueryRule"),
    "service": ("Name", "ServiceRule"),
    "session": ("Node", "SessionRule"),
}
_HCL_POSITION = re.compile(r"^line (\d+), column (\d+): ")


class PolicyError(ValueError):
    """Rules that do not parse or name a level that is not one (Consul's text)."""


@dataclass(slots=True)
class Rules:
    """One policy's rules, or several merged.

    `scalars[name]` is a level; `exact[resource][segment]` and `prefix[resource][segment]` are
    levels; the service rules' `intentions` attribute is its own resource, `intention`, whose
    level is "" where the rule did not set one (the authorizer derives it, Consul's loadRules).
    """

    scalars: dict[str, str] = field(default_factory=dict)
    exact: dict[str, dict[str, str]] = field(default_factory=dict)
    prefix: dict[str, dict[str, str]] = field(default_factory=dict)

    def put(self, kind: str, resource: str, segment: str, level: str) -> None:
        """Add one rule, keeping the level that takes precedence at that segment."""
        table = (self.exact if kind == "exact" else self.prefix).setdefault(resource, {})
        if segment not in table or ORDER[level] > ORDER[table[segment]]:
            table[segment] = level

    def put_scalar(self, name: str, level: str) -> None:
        if name not in self.scalars or ORDER[level] > ORDER[self.scalars[name]]:
            self.scalars[name] = level


def merge(policies: Iterable[Rules]) -> Rules:
    """Several policies' rules as one (the first of two equal levels is kept)."""
    out = Rules()
    for rules in policies:
        for name, level in rules.scalars.items():
            out.put_scalar(name, level)
        for kind, tables in (("exact", rules.exact), ("prefix", rules.prefix)):
            for resource, table in tables.items():
                for segment, level in table.items():
                    out.put(kind, resource, segment, level)
    return out


def _level(raw: Any, allow_list: bool = False, allow_empty: bool = False) -> str | None:
    """A level from its text (any case), or None if it is not one."""
    if not isinstance(raw, str):
        return None
    level = raw.lower()
    if level in (READ, WRITE, DENY) or (allow_list and level == LIST) or (allow_empty and level == ""):
        return level
    return None


def _go_quote(value: Any) -> str:
    return json.dumps(value if isinstance(value, str) else str(value), ensure_ascii=False)


def _blocks(value: Any) -> Iterable[tuple[str, Any]]:
    """(segment, body) of every block of one resource: HCL's repeated blocks and JSON's lists."""
    parts = value if isinstance(value, list) else [value]
    for part in parts:
        if not isinstance(part, dict):
            raise PolicyError(f"Failed to parse ACL rules: blocks must be objects, found {_go_quote(part)}")
        for segment, body in part.items():
            bodies = body if isinstance(body, list) and not isinstance(body, Repeated) else [body]
            if isinstance(body, Repeated):
                bodies = list(body)
            for one in bodies:
                yield segment, one


def _attribute(body: dict[str, Any], name: str) -> Any:
    value = body.get(name, "")
    if isinstance(value, Repeated):
        raise PolicyError(f'Failed to parse ACL rules: The argument "{name}" was already set. '
                          "Each argument can only be defined once")
    return value


def _named(rules: Rules, resource: str, kind: str, value: Any) -> None:
    label = resource if kind == "exact" else resource + "_prefix"
    field_name, go_type = NAMED[resource]
    for segment, body in _blocks(value):
        if not isinstance(body, dict):
            raise PolicyError(f"Failed to parse ACL rules: {label} {_go_quote(segment)} must be a block")
        raw = _attribute(body, "policy")
        level = _level(raw, allow_list=resource == "key")
        if resource == "service":
            raw_int = _attribute(body, "intentions")
            shown = (f"&acl.{go_type}{{{field_name}:{_go_quote(segment)}, Policy:{_go_quote(raw)}, "
                     f"Intentions:{_go_quote(raw_int)}}}")
            if level is None:
                raise PolicyError(f"Invalid {label} policy: {shown}")
            intentions = _level(raw_int, allow_empty=True)
            if intentions is None:
                raise PolicyError(f"Invalid {label} intentions policy: {shown}")
            rules.put(kind, "intention", segment, intentions)
        elif level is None:
            raise PolicyError(f"Invalid {label} policy: &acl.{go_type}{{{field_name}:{_go_quote(segment)}, "
                              f"Policy:{_go_quote(raw)}}}")
        rules.put(kind, resource, segment, level)


def _decode(text: str) -> dict[str, Any]:
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise PolicyError(f"Failed to parse ACL rules: At {err.lineno}:{err.colno}: {err.msg}") from None
        except RecursionError:
            raise PolicyError("Failed to parse ACL rules: nested too deeply") from None
        if not isinstance(value, dict):
            raise PolicyError("Failed to parse ACL rules: the rules must be an object")
        return value
    try:
        return loads(text)
    except HCLError as err:
        message = _HCL_POSITION.sub(lambda m: f"At {m.group(1)}:{m.group(2)}: ", str(err))
        raise PolicyError(f"Failed to parse ACL rules: {message}") from None


def parse(text: str) -> Rules:
    """A policy's rules from their HCL or JSON text (raises PolicyError with Consul's text)."""
    rules = Rules()
    if not text.strip():
        return rules
    tree = _decode(text)
    for name, value in tree.items():
        if name in SCALARS:
            if isinstance(value, Repeated):
                raise PolicyError(f'Failed to parse ACL rules: The argument "{name}" was already set. '
                                  "Each argument can only be defined once")
            level = _level(value, allow_empty=True)
            if level is None:
                raise PolicyError(f"Invalid {name} policy: {_go_quote(value)}")
            if level:
                rules.put_scalar(name, level)
        elif name in NAMED:
            _named(rules, name, "exact", value)
        elif name.endswith("_prefix") and name[: -len("_prefix")] in NAMED:
            _named(rules, name[: -len("_prefix")], "prefix", value)
        # anything else (Enterprise's namespace/partition blocks, identity) is ignored, as in CE
    return rules
