"""Go's encoding/json decoding rules, for request bodies Consul decodes into Go structs.

How it works
------------
Consul decodes a request body into a Go struct with `encoding/json` (`DisallowUnknownFields`,
lib.DecodeJSON). A body here is first parsed to plain JSON values (orjson), then checked against
a *spec* of the Go type it would land in (appliance.api.structs). `decode(value, spec)` returns
plain data with canonical field names, or raises DecodeError whose text is Go's own:

    json: cannot unmarshal number into Go struct field RegisterRequest.Node of type string
    json: cannot unmarshal string into Go struct field NodeService.Service.Port of type int
    json: cannot unmarshal array into Go value of type structs.RegisterRequest
    json: unknown field "Nodee"

The rules, as Go applies them:
- object keys match struct fields case-insensitively (Consul's agent endpoints also accept
  snake_case spellings, so `_` and `-` are ignored when matching); the last duplicate wins;
- `null` leaves the zero value: the field is simply absent from the result;
- strings only into strings, booleans only into booleans; an integer field takes a JSON number
  with no fraction that fits the type (`1.5` is "number 1.5"); a float field takes any number;
- the error names the innermost struct type and the field's path from the top (Go 1.20+), and
  the JSON kind of the offending value (string, number, bool, array, object);
- durations (Consul's custom UnmarshalJSON) take a Go duration string or a number of nanoseconds.

Plain synchronous Python, no I/O. A spec is built once at import; decoding a body walks it once.
"""

from __future__ import annotations

from typing import Any

from appliance.config.durations import DurationError, coerce_duration

_INT_RANGES = {
    "int": (-(1 << 63), (1 << 63) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint64": (0, (1 << 64) - 1),
    "uint": (0, (1 << 64) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint8": (0, 255),
}


class DecodeError(ValueError):
    """A body Go's decoder refuses; str() is Go's text (the API prefixes `Request decode failed: `)."""


def json_kind(value: Any) -> str:
    """The JSON kind of a parsed value, as Go's UnmarshalTypeError names it."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _fold(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _mismatch(kind: str, go_type: str, struct: str, path: str) -> DecodeError:
    """Go's UnmarshalTypeError text for a value of JSON kind `kind` at `struct`.`path`."""
    if not path:
        return DecodeError(f"json: cannot unmarshal {kind} into Go value of type {go_type}")
    return DecodeError(f"json: cannot unmarshal {kind} into Go struct field {struct}.{path} of type {go_type}")


class Spec:
    go_type = "interface {}"
    name = ""  # a struct's Go name, for error texts
    zero: Any = None  # what `null` decodes to inside a list or map (Go's zero value)

    def decode(self, value: Any, struct: str, path: str) -> Any:
        return value


class _String(Spec):
    go_type = "string"
    zero = ""

    def decode(self, value: Any, struct: str, path: str) -> Any:
        if type(value) is str:
            return value
        raise _mismatch(json_kind(value), self.go_type, struct, path)


class _Bool(Spec):
    go_type = "bool"
    zero = False

    def decode(self, value: Any, struct: str, path: str) -> Any:
        if value is True or value is False:
            return value
        raise _mismatch(json_kind(value), self.go_type, struct, path)


class Int(Spec):
    zero = 0

    def __init__(self, go_type: str = "int") -> None:
        self.go_type = go_type
        self.low, self.high = _INT_RANGES[go_type]

    def decode(self, value: Any, struct: str, path: str) -> Any:
        if type(value) is int and self.low <= value <= self.high:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise _mismatch(f"number {value}", self.go_type, struct, path)
        raise _mismatch(json_kind(value), self.go_type, struct, path)


class _Float(Spec):
    go_type = "float64"
    zero = 0.0

    def decode(self, value: Any, struct: str, path: str) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _mismatch(json_kind(value), self.go_type, struct, path)


class _Duration(Spec):
    """time.Duration as Consul's structs decode it: "10s" or a number of nanoseconds; seconds out."""

    go_type = "time.Duration"
    zero = 0.0

    def decode(self, value: Any, struct: str, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _mismatch(json_kind(value), self.go_type, struct, path)
        if value == "":
            return 0.0
        try:
            return coerce_duration(value)
        except DurationError as err:
            raise DecodeError(str(err)) from None


class List(Spec):
    def __init__(self, elem: Spec) -> None:
        self.elem = elem
        self.go_type = "[]" + elem.go_type

    def decode(self, value: Any, struct: str, path: str) -> Any:
        if type(value) is not list:
            raise _mismatch(json_kind(value), self.go_type, struct, path)
        elem = self.elem
        return [elem.decode(v, struct, path) if v is not None else elem.zero for v in value]


class Map(Spec):
    """map[string]T; a null element is T's zero value, as in Go."""

    def __init__(self, elem: Spec) -> None:
        self.elem = elem
        self.go_type = "map[string]" + elem.go_type

    def decode(self, value: Any, struct: str, path: str) -> Any:
        if type(value) is not dict:
            raise _mismatch(json_kind(value), self.go_type, struct, path)
        elem = self.elem
        return {k: elem.decode(v, struct, path) if v is not None else elem.zero for k, v in value.items()}


class Struct(Spec):
    """A Go struct: canonical field name -> spec. `ignored` fields are accepted and dropped (Go would
    decode them into fields the endpoint does not use, such as a record's CreateIndex)."""

    def __init__(self, go_type: str, fields: dict[str, Spec], *, aliases: dict[str, str] | None = None,
                 ignored: tuple[str, ...] = ()) -> None:
        self.go_type = go_type
        self.name = go_type.rsplit(".", 1)[-1]
        self.fields = fields
        self.ignored = frozenset(ignored)
        self.table = {_fold(f): f for f in (*fields, *ignored)}
        self.table.update({f: f for f in (*fields, *ignored)})  # the canonical spelling: no folding
        for alias, target in (aliases or {}).items():
            self.table[_fold(alias)] = target

    @property
    def zero(self) -> Any:
        return {}  # a null element of a list of structs: an empty struct, fresh each time

    def decode(self, value: Any, struct: str, path: str) -> Any:
        if type(value) is not dict:
            raise _mismatch(json_kind(value), self.go_type, struct, path)
        out: dict[str, Any] = {}
        table, fields, prefix = self.table, self.fields, f"{path}." if path else ""
        for key, item in value.items():
            name = table.get(key) or table.get(_fold(key))
            if name is None:
                raise DecodeError(f'json: unknown field "{key}"')
            if item is None or name in self.ignored:
                out.pop(name, None)
                continue
            out[name] = fields[name].decode(item, self.name, prefix + name)
        return out


STRING = _String()
BOOL = _Bool()
INT = Int()
UINT64 = Int("uint64")
FLOAT = _Float()
DURATION = _Duration()
ANY = Spec()
STRINGS = List(STRING)
STRING_MAP = Map(STRING)


def decode(value: Any, spec: Spec) -> Any:
    """Check a parsed JSON value against `spec`; the value with canonical field names, or DecodeError.
    A `null` body leaves the zero value, as Go's Unmarshal does (the handler then refuses what is
    missing, e.g. `Missing service name`)."""
    if value is None:
        return spec.zero
    return spec.decode(value, spec.name, "")
