"""Go's view of template values: how they print (`fmt`'s %v), what is true, how they compare.

Values are Python values: str, int, float, bool, None (Go's nil), list, dict, `Record` (a Go
struct such as consul-template's `HealthService`) and `NO_VALUE`, what a missing map key gives
(printed `<no value>`, as Go prints an invalid value).

`sprintf` implements the `fmt` verbs templates use: %v %s %d %q %x %X %o %b %c %f %F %e %E %g %G %t
%T %%, with flags `+ - # 0 space`, width and precision; a wrong operand prints Go's
`%!d(string=x)`, a missing one `%!d(MISSING)`, extra ones `%!(EXTRA type=value)`.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any, ClassVar


class NoValue:
    """A missing map key: false, prints `<no value>`."""

    _instance: ClassVar[NoValue | None] = None

    def __new__(cls) -> NoValue:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = NoValue()


class Record:
    """A Go struct: `FIELDS` in order are the fields `.Name` reaches; methods named in `METHODS`
    are callable from templates (`.Tags.Contains "x"`)."""

    FIELDS: ClassVar[tuple[str, ...]] = ()
    METHODS: ClassVar[tuple[str, ...]] = ()
    GO_TYPE: ClassVar[str] = "struct"

    def __init__(self, **values: Any) -> None:
        for name in self.FIELDS:
            setattr(self, name, values.get(name))

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not fields (fields are set in __init__)
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, f) == getattr(other, f) for f in self.FIELDS
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self.FIELDS)})"


class StringList(list):
    """`[]string` with consul-template's `Contains` and `ContainsAll`/`ContainsAny` helpers."""

    TEMPLATE_METHODS: ClassVar[tuple[str, ...]] = ("Contains", "ContainsAll", "ContainsAny")

    def Contains(self, value: str) -> bool:  # noqa: N802 - the template-visible name
        return value in self

    def ContainsAll(self, values: list[str]) -> bool:  # noqa: N802
        return all(v in self for v in values)

    def ContainsAny(self, values: list[str]) -> bool:  # noqa: N802
        return any(v in self for v in values)


# Python type -> Go's name for it, most specific first (bool is an int, StringList a list)
_GO_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "bool"), (int, "int"), (float, "float64"), (str, "string"), (StringList, "[]string"),
    (list, "[]interface {}"), (dict, "map[string]interface {}"),
)  # fmt: skip


def go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, Record):
        return value.GO_TYPE
    for kind, name in _GO_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def format_float(f: float, fmt: str = "g", prec: int = -1) -> str:
    """strconv.FormatFloat: shortest 'g' (what %v prints; fmt "json" for encoding/json's
    thresholds), or 'e'/'f'/'g' with a precision."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if prec >= 0:
        text = f"{f:.{prec}{fmt}}"
        return re.sub(r"e([+-])(\d)$", r"e\g<1>0\2", text)
    sign, digits, exp = Decimal(repr(f)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    assert isinstance(exp, int)
    point = len(digits) + exp  # position of the decimal point in ds
    x = point - 1 if ds != "0" else 0
    minus = "-" if sign else ""
    if ds == "0":
        return minus + "0"
    low, high = (-6, 21) if fmt == "json" else (-4, 6)
    if x < low or x >= high:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        digits_x = str(abs(x)) if fmt == "json" else f"{abs(x):02d}"
        return f"{minus}{mant}e{'-' if x < 0 else '+'}{digits_x}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return minus + ds + "0" * (point - len(ds))
    return f"{minus}{ds[:point]}.{ds[point:]}"


def to_str(value: Any) -> str:
    """fmt.Sprint of one value (Go's %v)."""
    if value is None:
        return "<nil>"
    if value is NO_VALUE:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, (bytes, bytearray)):
        return "[" + " ".join(str(b) for b in value) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(to_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{to_str(k)}:{to_str(value[k])}" for k in sorted_keys(value)) + "]"
    if isinstance(value, Record):
        return "{" + " ".join(to_str(getattr(value, f)) for f in value.FIELDS) + "}"
    return str(value)


def sorted_keys(mapping: dict[Any, Any]) -> list[Any]:
    """Go's order for a map's keys (fmt and range sort them)."""
    try:
        return sorted(mapping)
    except TypeError:
        return sorted(mapping, key=lambda k: (type(k).__name__, str(k)))


def truth(value: Any) -> bool:
    """Go template truth: false, 0, nil, empty string/slice/map are false; structs are true."""
    if value is None or value is NO_VALUE:
        return False
    if isinstance(value, Record):
        return True
    if isinstance(value, (bool, int, float, str, list, tuple, dict, bytes)):
        return bool(value)
    return True


_BASIC_KINDS = {"bool": "bool", "int": "int", "float64": "float", "string": "string", "<nil>": "nil"}


def basic_kind(value: Any) -> str:
    """Go's kinds that comparisons know: bool, int, float, string, nil, or other."""
    return "nil" if value is NO_VALUE else _BASIC_KINDS.get(go_type(value), "other")


class CompareError(Exception):
    pass


def equal(a: Any, b: Any) -> bool:
    ka, kb = basic_kind(a), basic_kind(b)
    if "nil" in (ka, kb):
        return (a is None or a is NO_VALUE) and (b is None or b is NO_VALUE)
    if ka != kb:
        raise CompareError("incompatible types for comparison")
    if ka == "other":
        raise CompareError("non-comparable type")
    return bool(a == b)


def less(a: Any, b: Any) -> bool:
    ka, kb = basic_kind(a), basic_kind(b)
    if ka != kb:
        raise CompareError("incompatible types for comparison")
    if ka not in ("int", "float", "string"):
        raise CompareError("invalid type for comparison")
    return bool(a < b)


# ------------------------------------------------------------------------------------------
# Sprintf

_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d*|\*))?([a-zA-Z%])")


def _bad(verb: str, value: Any) -> str:
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type(value)}={to_str(value)})"


def _pad(text: str, flags: str, width: int | None, numeric: bool) -> str:
    if width is None or len(text) >= width:
        return text
    if "-" in flags:
        return text.ljust(width)
    if "0" in flags and numeric:
        sign = text[0] if text[:1] in "+- " and text[:1] else ""
        return sign + text[len(sign):].rjust(width - len(sign), "0")
    return text.rjust(width)


def _signed(text: str, value: float | int, flags: str) -> str:
    if value >= 0 and not text.startswith("-"):
        if "+" in flags:
            return "+" + text
        if " " in flags:
            return " " + text
    return text


def _format_one(verb: str, flags: str, prec: int | None, value: Any) -> tuple[str, bool] | None:
    """(text, numeric) for one operand, or None when the verb does not fit the value."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if verb == "v":
        return to_str(value), False
    if verb == "T":
        return go_type(value), False
    if verb == "t":
        return (to_str(value), False) if isinstance(value, bool) else None
    if verb in "sq":
        if isinstance(value, str):
            text = value if prec is None else value[:prec]
            return (text if verb == "s" else "`" + text + "`" if "#" in flags else _go_quote(text)), False
        if verb == "s" and not isinstance(value, (int, float, bool)):
            return to_str(value), False
        if verb == "q" and is_int:
            return "'" + chr(value) + "'", False
        return None
    if verb in "dbocxXU" and is_int:
        if verb == "c":
            return chr(value), False
        if verb == "U":
            return f"U+{value:04X}", False
        base = {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}[verb]
        text = format(abs(value), base)
        if "#" in flags and verb in "xXob":
            text = {"x": "0x", "X": "0X", "o": "0", "b": ""}[verb] + text
        return _signed(("-" if value < 0 else "") + text, value, flags), True
    if verb in "xX" and isinstance(value, str):
        text = value.encode().hex()
        return (text.upper() if verb == "X" else text), False
    if verb in "eEfFgG" and isinstance(value, (int, float)) and not isinstance(value, bool):
        f = float(value)
        if verb in "gG" and prec is None:
            text = format_float(f)
        else:
            text = format_float(f, verb.lower(), 6 if prec is None else prec)
        if verb in "EG":
            text = text.upper()
        return _signed(text, f, flags), True
    return None


def _go_quote(text: str) -> str:
    from appliance.template.parse import go_quote

    return go_quote(text)


def sprintf(fmt: str, *args: Any) -> str:
    out: list[str] = []
    k = 0
    pos = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width_s, prec_s, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        width: int | None = None
        if width_s == "*":
            width = int(args[k]) if k < len(args) else None
            k += 1
        elif width_s:
            width = int(width_s)
        prec: int | None = None
        if prec_s == "*":
            prec = int(args[k]) if k < len(args) else None
            k += 1
        elif prec_s is not None:
            prec = int(prec_s or 0)
        if k >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        value = args[k]
        k += 1
        got = _format_one(verb, flags, prec, value)
        if got is None:
            out.append(_bad(verb, value))
            continue
        text, numeric = got
        out.append(_pad(text, flags, width, numeric))
    out.append(fmt[pos:])
    if k < len(args):
        extra = ", ".join(f"{go_type(a)}={to_str(a)}" for a in args[k:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def sprint(*args: Any) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for i, a in enumerate(args):
        if i > 0 and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(to_str(a))
    return "".join(out)


def sprintln(*args: Any) -> str:
    return " ".join(to_str(a) for a in args) + "\n"
