"""Go ``strconv`` behaviour needed by the filter language.

The filter language was designed in Go, so literal decoding and value coercion follow Go's
rules rather than Python's: double-quoted strings are decoded with Go escape rules
(``unquote``), integers are parsed with base prefixes and underscores as Go's
``ParseInt(s, 0, 64)`` does (``parse_int``; note that ``0120`` is octal), booleans accept exactly
Go's twelve spellings (``parse_bool``), and error texts quote values the way Go's ``%q`` verb does
(``go_quote``).  Everything here is pure computation.
"""

from __future__ import annotations

_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_QUOTE_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


class GoSyntaxError(ValueError):
    """A Go ``strconv`` error; ``str()`` is Go's message text."""


def go_quote(text: str) -> str:
    """Quote ``text`` like Go's ``strconv.Quote`` (and therefore the ``%q`` verb)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == " " or (ch.isprintable() and not 0xD800 <= code <= 0xDFFF):
            out.append(ch)
        elif code in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[code])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte carried through surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def unquote(literal: str) -> str:
    """Decode a quoted literal (with its quotes) as Go's ``strconv.Unquote``.

    Raises ``GoSyntaxError("invalid syntax")`` on a bad escape or a raw newline.  ``\\xHH`` and
    octal escapes produce raw bytes; the result is decoded as UTF-8 with surrogateescape so a
    byte sequence that is not valid UTF-8 never compares equal to real data.
    """
    if len(literal) < 2 or literal[0] != literal[-1]:
        raise GoSyntaxError("invalid syntax")
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        if "`" in body:
            raise GoSyntaxError("invalid syntax")
        return body.replace("\r", "")
    if quote != '"' or "\n" in body or '"' in body:
        raise GoSyntaxError("invalid syntax")
    if "\\" not in body:
        return body
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= n:
            raise GoSyntaxError("invalid syntax")
        esc = body[i + 1]
        i += 2
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
        elif esc == '"':
            out.append(34)
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i:i + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise GoSyntaxError("invalid syntax")
            value = int(digits, 16)
            i += width
            if esc == "x":
                out.append(value)
            else:
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    raise GoSyntaxError("invalid syntax")
                out += chr(value).encode("utf-8")
        elif esc in "01234567":
            digits = body[i - 1:i + 2]
            if len(digits) != 3 or any(c not in "01234567" for c in digits):
                raise GoSyntaxError("invalid syntax")
            value = int(digits, 8)
            if value > 255:
                raise GoSyntaxError("invalid syntax")
            out.append(value)
            i += 2
        else:
            raise GoSyntaxError("invalid syntax")
    return out.decode("utf-8", "surrogateescape")


def _underscore_ok(s: str) -> bool:
    saw = "^"
    i = 0
    if s[:1] in ("-", "+"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def _parse_uint(s: str, bits: int) -> tuple[int, str | None]:
    """Go ParseUint(s, 0, bits) -> (value, error kind or None)."""
    if s == "":
        return 0, "invalid syntax"
    s0, base = s, 10
    if s[0] == "0":
        if len(s) >= 3 and s[1].lower() in "box":
            base = {"b": 2, "o": 8, "x": 16}[s[1].lower()]
            s = s[2:]
        else:
            base, s = 8, s[1:]
    max_val = (1 << bits) - 1
    n, underscores = 0, False
    for c in s:
        if c == "_":
            underscores = True
            continue
        if "0" <= c <= "9":
            d = ord(c) - 48
        elif "a" <= c.lower() <= "z" and c.isascii():
            d = ord(c.lower()) - 87
        else:
            return 0, "invalid syntax"
        if d >= base:
            return 0, "invalid syntax"
        n = n * base + d
        if n > max_val:
            return max_val, "value out of range"
    if underscores and not _underscore_ok(s0):
        return 0, "invalid syntax"
    return n, None


def parse_int(s: str, bits: int = 64) -> int:
    """Go ``strconv.ParseInt(s, 0, bits)``; raises GoSyntaxError with Go's message."""
    def fail(kind: str) -> GoSyntaxError:
        return GoSyntaxError(f"strconv.ParseInt: parsing {go_quote(s)}: {kind}")

    if s == "":
        raise fail("invalid syntax")
    body, neg = s, False
    if body[0] in "+-":
        neg, body = body[0] == "-", body[1:]
    value, err = _parse_uint(body, 64)
    if err == "invalid syntax":
        raise fail(err)
    cutoff = 1 << (bits - 1)
    if err or (not neg and value >= cutoff) or (neg and value > cutoff):
        raise fail("value out of range")
    return -value if neg else value


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(s: str) -> bool:
    """Go ``strconv.ParseBool``; raises GoSyntaxError with Go's message."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise GoSyntaxError(f"strconv.ParseBool: parsing {go_quote(s)}: invalid syntax")
