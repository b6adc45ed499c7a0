"""The functions a template may call that need no agent: Go's builtins and consul-template's
helpers (strings, JSON, maths, `env`, `timestamp`).

Argument order follows consul-template so that pipes read as they do there:
`{{ .Tags | join "," }}` is `join "," .Tags`, `{{ key "x" | split "," }}` is `split "," (key "x")`,
`{{ 5 | subtract 2 }}` is 3. The environment and the clock are passed in (`pure_funcs(env, now)`):
this module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from appliance.template.execute import FuncError
from appliance.template.gofmt import (
    NO_VALUE,
    Record,
    StringList,
    equal,
    less,
    sprint,
    sprintf,
    sprintln,
    to_str,
    truth,
)
from appliance.template.timefmt import go_time_format

# ------------------------------------------------------------------------------------------
# Go's builtins (`and` and `or` are evaluated lazily by the executor)


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise FuncError("missing argument for comparison")
    return any(equal(a, b) for b in others)


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if item is None or item is NO_VALUE:
            raise FuncError("index of untyped nil")
        if isinstance(item, dict):
            item = item.get(key, NO_VALUE)
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise FuncError(f"cannot index slice/array with type {type(key).__name__}")
            seq = item.encode() if isinstance(item, str) else item
            if not 0 <= key < len(seq):
                raise FuncError(f"index out of range: {key}")
            item = seq[key]
        else:
            raise FuncError(f"can't index item of type {type(item).__name__}")
    return item


def _slice(item: Any, *bounds: int) -> Any:
    if not isinstance(item, (list, tuple, str)):
        raise FuncError(f"can't slice item of type {type(item).__name__}")
    if len(bounds) > 3:
        raise FuncError(f"too many slice indexes: {len(bounds)}")
    size = len(item)
    idx = list(bounds)
    low = idx[0] if idx else 0
    high = idx[1] if len(idx) > 1 else size
    if not 0 <= low <= high <= size:
        raise FuncError(f"index out of range: {high if high > size else low}")
    return item[low:high]


def _len(item: Any) -> int:
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, (list, tuple, dict, bytes)):
        return len(item)
    raise FuncError(f"len of type {type(item).__name__}")


def _html(*args: Any) -> str:
    text = sprint(*args)
    for a, b in (("&", "&amp;"), ("'", "&#39;"), ('"', "&#34;"), ("<", "&lt;"), (">", "&gt;"), ("\0", "\ufffd")):
        text = text.replace(a, b)
    return text


def _js(*args: Any) -> str:
    out = []
    for ch in sprint(*args):
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif ch in "<>&=" or ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def _call(fn: Any, *args: Any) -> Any:
    if not callable(fn):
        raise FuncError(f"non-function of type {type(fn).__name__}")
    return fn(*args)


BUILTINS: dict[str, Callable[..., Any]] = {
    "not": lambda x: not truth(x),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": sprint,
    "printf": lambda fmt, *args: sprintf(fmt, *args),
    "println": sprintln,
    "html": _html,
    "js": _js,
    "urlquery": lambda *args: urllib.parse.quote_plus(sprint(*args), safe=""),
    "call": _call,
    "eq": _eq,
    "ne": lambda a, b: not equal(a, b),
    "lt": lambda a, b: less(a, b),
    "le": lambda a, b: less(a, b) or equal(a, b),
    "gt": lambda a, b: not (less(a, b) or equal(a, b)),
    "ge": lambda a, b: not less(a, b),
}

# ------------------------------------------------------------------------------------------
# JSON as Go's encoding/json writes it


def plain(value: Any) -> Any:
    """Template values as JSON-ready Python: structs as objects in field order, maps sorted."""
    if value is NO_VALUE:
        return None
    if isinstance(value, Record):
        return {f: plain(getattr(value, f)) for f in value.FIELDS}
    if isinstance(value, dict):
        return {str(k): plain(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def to_json(value: Any, indent: int | None = None, escape: bool = True) -> str:
    text = json.dumps(plain(value), ensure_ascii=False, indent=indent, separators=(",", ": ") if indent else (",", ":"))
    if escape:
        for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(a, b)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise FuncError(str(exc)) from None


# ------------------------------------------------------------------------------------------
# strings and lists


def _split(sep: str, s: str) -> list[str]:
    s = to_str(s).strip()
    return [] if not s else s.split(sep) if sep else list(s)


def _join(sep: str, items: Any) -> str:
    if not isinstance(items, (list, tuple)):
        raise FuncError(f"wrong type for value; expected []string; got {type(items).__name__}")
    return sep.join(to_str(i) for i in items)


def _in(container: Any, value: Any) -> bool:
    if isinstance(container, str):
        return isinstance(value, str) and value in container
    if isinstance(container, (list, tuple)):
        return value in container
    if isinstance(container, dict):
        return value in container
    raise FuncError(f"cannot find value in type {type(container).__name__}")


def _contains_some(all_needed: bool, invert: bool) -> Callable[[Any, Any], bool]:
    def check(values: Any, container: Any) -> bool:
        hits = [_in(container, v) for v in (values or [])]
        result = all(hits) if all_needed else any(hits)
        return not result if invert else result

    return check


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise FuncError(f"error parsing regexp: {exc}") from None


def _regex_replace_all(pattern: str, repl: str, s: str) -> str:
    # Go's $1 / ${1} / ${name} references
    py = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: f"\\g<{m.group(1) or m.group(2)}>", repl.replace("\\", "\\\\"))
    try:
        return _regex(pattern).sub(py, s)
    except (re.error, IndexError) as exc:
        raise FuncError(str(exc)) from None


def _b64decode(s: str, urlsafe: bool = False) -> str:
    try:
        raw = base64.urlsafe_b64decode(s) if urlsafe else base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FuncError(f"base64Decode: {exc}") from None
    return raw.decode("utf-8", "replace")


def _indent(spaces: int, s: str) -> str:
    if spaces < 0:
        raise FuncError("indent value must be a positive integer")
    pad = " " * spaces
    return "\n".join(pad + line for line in s.split("\n"))


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    return float(value)
                except ValueError:
                    pass
        raise FuncError(f"unsupported type {type(value).__name__}")
    return value


def _divide(b: Any, a: Any) -> int | float:
    x, y = _number(a), _number(b)
    if y == 0:
        raise FuncError("division by zero")
    if isinstance(x, int) and isinstance(y, int):
        q = abs(x) // abs(y)
        return q if (x >= 0) == (y >= 0) else -q
    return x / y


def _modulo(b: Any, a: Any) -> int | float:
    x, y = _number(a), _number(b)
    if y == 0:
        raise FuncError("division by zero")
    if isinstance(x, int) and isinstance(y, int):
        r = abs(x) % abs(y)
        return r if x >= 0 else -r
    raise FuncError("modulo: unsupported type float64")


def _parse_int(s: str) -> int:
    try:
        return int(s.strip() or "0", 0) if s.strip()[:2].lower() in ("0x", "0o", "0b") else int(s.strip() or "0")
    except ValueError:
        raise FuncError(f'strconv.ParseInt: parsing "{s}": invalid syntax') from None


def _parse_float(s: str) -> float:
    try:
        return float(s.strip() or "0")
    except ValueError:
        raise FuncError(f'strconv.ParseFloat: parsing "{s}": invalid syntax') from None


def _parse_bool(s: str) -> bool:
    table = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
             "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False}  # fmt: skip
    if s.strip() == "":
        return False
    if s not in table:
        raise FuncError(f'strconv.ParseBool: parsing "{s}": invalid syntax')
    return table[s]


def _loop(*args: int) -> list[int]:
    if len(args) == 1:
        return list(range(args[0]))
    if len(args) == 2:
        return list(range(args[0], args[1]))
    raise FuncError(f"loop: wrong number of arguments, expected 1 or 2, but got {len(args)}")


# ------------------------------------------------------------------------------------------
# KV pairs and services reshaped (consul-template's byKey, byTag, explode)


def _by_key(pairs: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        top, _, rest = pair.Key.partition("/")
        if not rest:
            continue
        copy = type(pair)(**{f: getattr(pair, f) for f in pair.FIELDS})
        copy.Key = rest
        out.setdefault(top, {})[rest] = copy
    return out


def _by_tag(services: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for svc in services or []:
        for tag in dict.fromkeys(svc.Tags or []):
            out.setdefault(tag, []).append(svc)
    return out


def _explode(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        parts = pair.Key.split("/")
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        if parts[-1]:
            node[parts[-1]] = pair.Value
    return out


def _explode_map(mapping: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(mapping or {}):
        parts = str(key).strip("/").split("/")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = mapping[key]
    return out


class Scratch(Record):
    """consul-template's `scratch`: a key/value space that lives for one render.
    `{{ scratch.Set "k" "v" }}{{ scratch.Get "k" }}`."""

    METHODS = ("Key", "Get", "Set", "SetX", "MapSet", "MapSetX", "MapValues")
    GO_TYPE = "*template.Scratch"

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, Any] = {}

    def Key(self, key: str) -> bool:  # noqa: N802 - the template-visible names
        return key in self.values

    def Get(self, key: str) -> Any:  # noqa: N802
        return self.values.get(key)

    def Set(self, key: str, value: Any) -> str:  # noqa: N802
        self.values[key] = value
        return ""

    def SetX(self, key: str, value: Any) -> str:  # noqa: N802
        self.values.setdefault(key, value)
        return ""

    def MapSet(self, key: str, map_key: str, value: Any) -> str:  # noqa: N802
        self.values.setdefault(key, {})[map_key] = value
        return ""

    def MapSetX(self, key: str, map_key: str, value: Any) -> str:  # noqa: N802
        self.values.setdefault(key, {}).setdefault(map_key, value)
        return ""

    def MapValues(self, key: str) -> list[Any]:  # noqa: N802
        mapping = self.values.get(key) or {}
        return [mapping[k] for k in sorted(mapping)]


def pure_funcs(env: Mapping[str, str], now: Callable[[], datetime]) -> dict[str, Callable[..., Any]]:
    """Every function that needs no agent, with the process environment and clock bound in."""

    def must_env(name: str) -> str:
        if name not in env:
            raise FuncError(f"required environment variable {name} is missing")
        return env[name]

    def timestamp(*layout: str) -> str:
        if len(layout) > 1:
            raise FuncError(f"timestamp: wrong number of arguments, expected 0 or 1, but got {len(layout)}")
        t = now()
        if not layout:
            return go_time_format(t, "2006-01-02T15:04:05Z07:00")
        if layout[0] == "unix":
            return str(int(t.timestamp()))
        return go_time_format(t, layout[0])

    scratch = Scratch()
    funcs: dict[str, Callable[..., Any]] = dict(BUILTINS)
    funcs.update({
        "scratch": lambda: scratch,
        "env": lambda name: env.get(name, ""),
        "envOrDefault": lambda name, default: env.get(name) or default,
        "mustEnv": must_env,
        "timestamp": timestamp,
        "toJSON": lambda v: to_json(v),
        "toJSONPretty": lambda v: to_json(v, indent=2),
        "toUnescapedJSON": lambda v: to_json(v, escape=False),
        "toUnescapedJSONPretty": lambda v: to_json(v, indent=2, escape=False),
        "parseJSON": _parse_json,
        "parseBool": _parse_bool,
        "parseInt": _parse_int,
        "parseUint": lambda s: abs(_parse_int(s)),
        "parseFloat": _parse_float,
        "join": _join,
        "split": lambda sep, s: StringList(_split(sep, s)),
        "replaceAll": lambda old, new, s: s.replace(old, new),
        "regexReplaceAll": _regex_replace_all,
        "regexMatch": lambda pattern, s: _regex(pattern).search(s) is not None,
        "toLower": lambda s: s.lower(),
        "toUpper": lambda s: s.upper(),
        "toTitle": lambda s: s.title(),
        "trimSpace": lambda s: s.strip(),
        "trim": lambda cutset, s: s.strip(cutset),
        "trimPrefix": lambda prefix, s: s.removeprefix(prefix),
        "trimSuffix": lambda suffix, s: s.removesuffix(suffix),
        "contains": lambda v, container: _in(container, v),
        "in": _in,
        "containsAll": _contains_some(True, False),
        "containsAny": _contains_some(False, False),
        "containsNone": _contains_some(False, True),
        "containsNotAll": _contains_some(True, True),
        "byKey": _by_key,
        "byTag": _by_tag,
        "explode": _explode,
        "explodeMap": _explode_map,
        "base64Encode": lambda s: base64.b64encode(s.encode()).decode(),
        "base64Decode": _b64decode,
        "base64URLEncode": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
        "base64URLDecode": lambda s: _b64decode(s, urlsafe=True),
        "sha256Hex": lambda s: hashlib.sha256(s.encode()).hexdigest(),
        "md5sum": lambda s: hashlib.md5(s.encode(), usedforsecurity=False).hexdigest(),
        "indent": _indent,
        "add": lambda b, a: _number(a) + _number(b),
        "subtract": lambda b, a: _number(a) - _number(b),
        "multiply": lambda b, a: _number(a) * _number(b),
        "divide": _divide,
        "modulo": _modulo,
        "minimum": lambda b, a: min(_number(a), _number(b)),
        "maximum": lambda b, a: max(_number(a), _number(b)),
        "loop": _loop,
    })  # fmt: skip
    return funcs


# names the parser accepts besides those above: `and`/`or` run in the executor
LAZY = ("and", "or")
