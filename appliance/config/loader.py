"""Reading configuration sources (files, directories, -hcl fragments) and merging them.

How it works
------------
Each source becomes one or more *fragments*: (name, dict) pairs holding only the keys that source
set, already checked against the model (appliance.config.model), so an error names the file and
the key. A directory contributes its `.json` and `.hcl` files (not recursive) in lexical order of
their names; other files are skipped with Consul's warning, unless `-config-format` forces one
format for every file. The builder folds the fragments together with `merge`, in command-line
order: scalars last wins, lists appended, maps merged key by key.

HCL quirks are settled here, guided by the model: a block given twice (`ports { }` twice) merges,
`service { }` given twice is two services, a scalar given twice keeps the last. Per fragment,
`service` entries are folded into `services` and `check` into `checks` (both spellings are
accepted and concatenated), and each definition is checked with appliance.local.definitions.
"""

from __future__ import annotations

import json
import os
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from appliance.config import hcl
from appliance.config.errors import ConfigError, from_validation_error
from appliance.config.model import LIST_OF_BLOCKS, ConfigFile
from appliance.config.runtime import ConfigSource
from appliance.local import definitions

Fragment = tuple[str, dict[str, Any]]
FORMATS = ("json", "hcl")


def skip_warning(path: str) -> str:
    return f"skipping file {path}, extension must be .hcl or .json, or config format must be set"


# -- parsing -------------------------------------------------------------------------------------


def parse_text(text: str, fmt: str, name: str) -> dict[str, Any]:
    """Parse JSON or HCL text into a plain mapping (HCL repeats resolved by the model)."""
    if fmt == "json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"Error parsing {name}: line {err.lineno}, column {err.colno}: {err.msg}") from None
        except RecursionError:  # json's decoder recurses once per nested array or object
            raise ConfigError(f"Error parsing {name}: arrays and objects nest too deeply") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"Error parsing {name}: top level must be a JSON object")
        return raw
    try:
        raw = hcl.loads(text)
    except hcl.HCLError as err:
        raise ConfigError(f"Error parsing {name}: {err}") from None
    return normalise(raw, ConfigFile)


def _block_model(model: type[BaseModel], key: str) -> tuple[type[BaseModel] | None, bool, bool]:
    """For a key of `model`: (nested model or None, is a mapping, is a list)."""
    field = model.model_fields.get(key)
    if field is None:
        for candidate in model.model_fields.values():
            if candidate.alias == key:
                field = candidate
                break
    if field is None:
        return None, False, False
    for arg in typing.get_args(field.annotation) or (field.annotation,):
        if typing.get_origin(arg) is typing.Annotated:
            arg = typing.get_args(arg)[0]
        origin = typing.get_origin(arg) or arg
        if isinstance(origin, type) and issubclass(origin, BaseModel):
            return origin, True, False
        if origin is dict:
            return None, True, False
        if origin is list:
            return None, False, True
    return None, False, False


def _merge_blocks(values: list[Any]) -> Any:
    dicts = [v for v in values if isinstance(v, dict)]
    if len(dicts) != len(values):
        return values[-1]
    out: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if k in out and isinstance(out[k], dict) and isinstance(v, dict):
                out[k] = _merge_blocks([out[k], v])
            elif k in out:
                out[k] = hcl.Repeated([*(out[k] if isinstance(out[k], hcl.Repeated) else [out[k]]), v])
            else:
                out[k] = v
    return out


def normalise(raw: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """Resolve HCL's repeated keys using the model's shape (see module docstring)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if model is ConfigFile and key in LIST_OF_BLOCKS:
            items = value if isinstance(value, list) else [value]
            flat: list[Any] = []
            for item in items:
                flat.extend(item if isinstance(item, list) else [item])
            out[key] = [_plain_definition(item) for item in flat]
            continue
        nested, is_map, is_list = _block_model(model, key)
        if isinstance(value, hcl.Repeated):
            if is_list and all(isinstance(v, dict) for v in value):  # `bootstrap { }` blocks: a list of them
                value = list(value)
            else:
                value = _merge_blocks(list(value)) if (is_map or nested) else value[-1]
        if nested is not None and isinstance(value, dict):
            value = normalise(value, nested)
        elif is_map and isinstance(value, dict):
            value = {k: (v[-1] if isinstance(v, hcl.Repeated) else v) for k, v in value.items()}
        out[key] = value
    return out


def _plain_definition(value: Any) -> Any:
    """A service/check block as plain data; several `check { }` blocks in a service become `checks`."""
    if isinstance(value, list):
        return [_plain_definition(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, hcl.Repeated) and key.lower() in ("check", "checks"):
            # several `check { }` blocks (or `checks = [...]` twice): all of them, as `checks`
            flat = [c for v in item for c in (v if isinstance(v, list) else [v])]
            target = "checks" if key.lower() == "check" else key
            out[target] = [*out.get(target, []), *(_plain_definition(c) for c in flat)]
        elif key.lower() in ("upstreams", "paths") and isinstance(item, (list, dict)):
            # a proxy's `upstreams { }` / expose `paths { }` blocks, one or several: a list
            flat = [u for v in (item if isinstance(item, list) else [item])
                    for u in (v if isinstance(v, list) else [v])]
            out[key] = [_plain_definition(u) for u in flat]
        elif isinstance(item, hcl.Repeated) and all(isinstance(v, dict) for v in item):
            out[key] = _plain_definition(_merge_blocks(list(item)))
        elif key == "checks" and isinstance(item, list) and "checks" in out:
            out["checks"] = [*out["checks"], *_plain_definition(item)]
        else:
            out[key] = _plain_definition(list(item) if isinstance(item, hcl.Repeated) else item)
    return out


# -- one fragment ------------------------------------------------------------------------------


def check_fragment(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """Validate one source's mapping; return only the keys it set, services/checks folded."""
    try:
        model = ConfigFile.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(name, err) from None
    data = model.model_dump(exclude_unset=True, by_alias=True)
    for single, plural in (("service", "services"), ("check", "checks")):
        if single in data or plural in data:
            data[plural] = [*(data.pop(single, None) or []), *(data.get(plural) or [])]
    _check_definitions(data, name)
    return data


def _check_definitions(data: dict[str, Any], name: str) -> None:
    for n, raw in enumerate(data.get("services") or [], start=1):
        try:
            definitions.parse_service_definition(raw, from_config=True)
        except definitions.DefinitionError as err:
            raise ConfigError(f"{name}: {_label('service', raw, n)}: {err}") from None
    for n, raw in enumerate(data.get("checks") or [], start=1):
        try:
            definitions.parse_check_definition(raw, from_config=True)
        except definitions.DefinitionError as err:
            raise ConfigError(f"{name}: {_label('check', raw, n)}: {err}") from None


def _label(kind: str, raw: dict[str, Any], n: int) -> str:
    folded = {str(k).lower().replace("_", ""): v for k, v in raw.items()}
    ident = folded.get("name") or folded.get("id") or folded.get("checkid")
    return f'{kind} "{ident}"' if isinstance(ident, str) and ident else f"{kind} #{n}"


# -- sources ---------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError:
        raise ConfigError(f"Error reading {path}: not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(f"Error reading {path}: {err.strerror or err}") from None


def _format_of(path: str, forced: str) -> str:
    if forced:
        return forced
    for fmt in FORMATS:
        if path.endswith("." + fmt):
            return fmt
    return ""


def load_file(path: str, forced: str, warnings: list[str]) -> list[Fragment]:
    fmt = _format_of(path, forced)
    if not fmt:
        warnings.append(skip_warning(path))
        return []
    return [(path, check_fragment(parse_text(_read(path), fmt, path), path))]


def load_source(source: ConfigSource, forced: str, warnings: list[str]) -> list[Fragment]:
    """The fragments one command-line source gives, in the order they apply."""
    fmt = source.format or forced
    if fmt and fmt not in FORMATS:
        raise ConfigError(f'-config-format must be "json" or "hcl", not "{fmt}"')
    if source.kind == "hcl":
        return [("-hcl", check_fragment(parse_text(source.value, "hcl", "-hcl"), "-hcl"))]
    path = source.value
    if not os.path.exists(path):
        raise ConfigError(f"Error reading {path}: No such file or directory")
    if source.kind == "dir" or os.path.isdir(path):
        if not os.path.isdir(path):
            raise ConfigError(f"Error reading {path}: not a directory")
        try:
            names = sorted(os.listdir(path))
        except OSError as err:
            raise ConfigError(f"Error reading {path}: {err.strerror or err}") from None
        fragments: list[Fragment] = []
        for entry in names:
            full = os.path.join(path, entry)
            if os.path.isdir(full):
                continue
            fragments.extend(load_file(full, fmt, warnings))
        return fragments
    return load_file(path, fmt, warnings)


# -- merging ---------------------------------------------------------------------------------


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Consul's merge: scalars last wins, lists appended, maps merged key by key."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            out[key] = merge(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            out[key] = [*old, *value]
        else:
            out[key] = value
    return out
