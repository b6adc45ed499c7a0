"""ConfigError, and how a pydantic validation failure becomes one line naming the file and key.

Syntax and type errors read `Error parsing <file>: <key>: invalid value "abc" (expected integer)`;
an unknown key reads `<file>: invalid config key <key>`, as Consul prints them. Semantic errors of
the merged configuration carry Consul's texts as they are (`data_dir cannot be empty`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError


class ConfigError(Exception):
    """A configuration cairn refuses; str() is the one line to show the operator."""


_EXPECTED = {
    "int_parsing": "integer",
    "int_type": "integer",
    "int_from_float": "integer",
    "float_parsing": "number",
    "float_type": "number",
    "bool_parsing": "boolean",
    "bool_type": "boolean",
    "string_type": "string",
    "list_type": "list",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}


def go_quote(value: Any) -> str:
    """A value as Go's %q/%v would show it in an error: strings quoted, the rest as JSON."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def dotted(loc: tuple[Any, ...]) -> str:
    """('ports', 'http') -> 'ports.http'; list positions become [n]."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def from_validation_error(source: str, exc: ValidationError) -> ConfigError:
    """The first problem pydantic found, in Consul's words, naming the source and the key."""
    errors = exc.errors(include_url=False)
    # An unknown key is the most useful thing to report: a misspelt key explains the rest.
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    err = unknown[0] if unknown else errors[0]
    key = dotted(tuple(err["loc"]))
    if len(unknown) > 1:  # every unknown key, as Consul's multierror lists them
        lines = "".join(f"\n\t* invalid config key {dotted(tuple(e['loc']))}" for e in unknown)
        return ConfigError(f"{source}: {len(unknown)} errors occurred:{lines}\n")
    if err["type"] == "extra_forbidden":
        return ConfigError(f"{source}: invalid config key {key}")
    if err["type"] == "value_error":
        message = str(err.get("ctx", {}).get("error", err["msg"]))
        return ConfigError(f"Error parsing {source}: {key}: {message}")
    expected = _EXPECTED.get(err["type"])
    if expected:
        return ConfigError(f"Error parsing {source}: {key}: invalid value {go_quote(err['input'])} "
                           f"(expected {expected})")
    return ConfigError(f"Error parsing {source}: {key}: {err['msg']}")
