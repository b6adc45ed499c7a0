"""A reader for HCL1, the dialect Consul's configuration files are written in.

How it works
------------
HCL1 is not HCL2: blocks may hold several attributes on one line (`ports { dns = 8600 http = 8500 }`),
keys inside blocks may be quoted (`service_ttl { "*" = "5s" }`), `${...}` is plain text, and
heredocs keep their text. python-hcl2 (an HCL2 parser) refuses or rewrites these, so Consul's own
examples would not load; this module reads HCL1 directly.

A tokenizer turns the text into identifiers, strings, heredocs, numbers and punctuation (comments
`#`, `//`, `/* */` and all whitespace, newlines included, are dropped: HCL1 separates items by
their keys, commas are optional). A recursive-descent parser reads an object list:

    item   := key+ ( "=" value | object )          key := IDENT | STRING
    value  := STRING | HEREDOC | NUMBER | true | false | list | object
    list   := "[" ( value ("," value)* ","? )? "]"
    object := "{" item* "}"

`key1 "label" { ... }` nests as {key1: {label: {...}}}. A key given more than once in one object
(repeated `service { }` blocks) is collected into a `Repeated` list, in file order; the loader
decides, from the configuration model, whether that means "list of blocks" or "merge the blocks".
"""

from __future__ import annotations

import re
from typing import Any


class HCLError(ValueError):
    """Malformed HCL; the message starts with `line L, column C:`."""


class Repeated(list):
    """Every value a key had when it appeared more than once in one object, in order."""


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n\ufeff]+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<heredoc><<-?(?P<marker>[A-Za-z_][A-Za-z0-9_]*)[ \t]*\r?\n)
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.\-:]*)
  | (?P<string>")
  | (?P<punct>[{}\[\]=,])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "/": "/"}


class _Tok:
    __slots__ = ("kind", "value", "line", "col")

    def __init__(self, kind: str, value: Any, line: int, col: int) -> None:
        self.kind, self.value, self.line, self.col = kind, value, line, col

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of file"
        if self.kind == "string":
            return f'string "{self.value}"'
        return f'"{self.value}"'


def _position(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def _error(text: str, pos: int, message: str) -> HCLError:
    line, col = _position(text, pos)
    return HCLError(f"line {line}, column {col}: {message}")


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string whose opening quote is at `start`; `${ ... }` may hold quotes."""
    out: list[str] = []
    i = start + 1
    depth = 0
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            raise _error(text, start, "literal not terminated")
        if ch == "\\":
            if i + 1 >= len(text):
                break
            esc = text[i + 1]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                i += 2
                continue
            width = {"u": 4, "U": 8, "x": 2}.get(esc)
            if width:
                digits = text[i + 2 : i + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise _error(text, i, "invalid escape sequence")
                out.append(chr(int(digits, 16)))
                i += 2 + width
                continue
            raise _error(text, i, f"unknown escape sequence \\{esc}")
        if ch == "$" and text.startswith("${", i):
            depth += 1
            out.append("${")
            i += 2
            continue
        if ch == "}" and depth:
            depth -= 1
        elif ch == '"' and not depth:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise _error(text, start, "literal not terminated")


def _read_heredoc(text: str, m: re.Match[str]) -> tuple[str, int]:
    marker = m.group("marker")
    indented = m.group(0).startswith("<<-")
    body_start = m.end()
    lines: list[str] = []
    i = body_start
    while i <= len(text):
        end = text.find("\n", i)
        line = text[i:] if end < 0 else text[i:end]
        if line.strip() == marker and (indented or line.rstrip("\r") == marker):
            if indented:
                pad = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
                lines = [x[pad:] for x in lines]
            body = "\n".join(x.rstrip("\r") for x in lines)
            return (body + "\n" if lines else ""), (len(text) if end < 0 else end)
        lines.append(line)
        if end < 0:
            break
        i = end + 1
    raise _error(text, m.start(), f"heredoc not terminated (missing {marker})")


def _number(raw: str) -> int | float:
    body = raw.lstrip("-")
    sign = -1 if raw.startswith("-") else 1
    if body[:2].lower() == "0x":
        return sign * int(body, 16)
    if any(c in body for c in ".eE"):
        return float(raw)
    return int(raw)


def tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if not m:
            if text.startswith("/*", pos):
                raise _error(text, pos, "comment not terminated")
            raise _error(text, pos, f'illegal character "{text[pos]}"')
        kind = m.lastgroup if m.lastgroup != "marker" else "heredoc"
        line, col = _position(text, pos)
        if kind in ("ws", "comment"):
            pos = m.end()
        elif kind == "string":
            value, pos = _read_string(text, pos)
            toks.append(_Tok("string", value, line, col))
        elif kind == "heredoc":
            value, pos = _read_heredoc(text, m)
            toks.append(_Tok("string", value, line, col))
        elif kind == "number":
            toks.append(_Tok("number", _number(m.group(0)), line, col))
            pos = m.end()
        elif kind == "ident":
            word = m.group(0)
            if word in ("true", "false"):
                toks.append(_Tok("bool", word == "true", line, col))
            else:
                toks.append(_Tok("ident", word, line, col))
            pos = m.end()
        else:
            toks.append(_Tok(m.group(0), m.group(0), line, col))
            pos = m.end()
    line, col = _position(text, n)
    toks.append(_Tok("eof", "", line, col))
    return toks


MAX_DEPTH = 100  # nested objects and lists; deeper is refused before Python's recursion limit


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, tok: _Tok, message: str) -> HCLError:
        return HCLError(f"line {tok.line}, column {tok.col}: {message}")

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(self.peek(), f"objects and lists nest deeper than {MAX_DEPTH} levels")

    def object_list(self, end: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            tok = self.peek()
            if tok.kind == end:
                return out
            if tok.kind == "eof":
                raise self.fail(tok, 'expected "}" before end of file')
            key, value = self.item()
            _put(out, key, value)
            if self.peek().kind == ",":
                self.take()

    def item(self) -> tuple[str, Any]:
        keys: list[_Tok] = []
        while self.peek().kind in ("ident", "string"):
            keys.append(self.take())
        tok = self.peek()
        if not keys:
            raise self.fail(tok, f"expected a key, found {tok.describe()}")
        if tok.kind == "=":
            if len(keys) > 1:
                raise self.fail(keys[1], f"nested object expected: {{ after {keys[0].describe()}")
            self.take()
            return str(keys[0].value), self.value()
        if tok.kind == "{":
            value: Any = self.object()
            for label in reversed(keys[1:]):
                value = {str(label.value): value}
            return str(keys[0].value), value
        raise self.fail(tok, f'key {keys[-1].describe()} expected start of object ("{{") or assignment ("="), '
                             f'found {tok.describe()}')

    def object(self) -> dict[str, Any]:
        self.nest()
        self.take()  # "{"
        out = self.object_list("}")
        self.take()
        self.depth -= 1
        return out

    def value(self) -> Any:
        tok = self.peek()
        if tok.kind in ("string", "number", "bool"):
            return self.take().value
        if tok.kind == "[":
            return self.list()
        if tok.kind == "{":
            return self.object()
        if tok.kind == "ident":
            raise self.fail(tok, f"unquoted value {tok.describe()} (strings must be quoted)")
        raise self.fail(tok, f"expected a value, found {tok.describe()}")

    def list(self) -> list[Any]:
        self.nest()
        self.take()  # "["
        out: list[Any] = []
        while True:
            tok = self.peek()
            if tok.kind == "]":
                self.take()
                self.depth -= 1
                return out
            out.append(self.value())
            tok = self.peek()
            if tok.kind == ",":
                self.take()
            elif tok.kind != "]":
                raise self.fail(tok, f'expected "," or "]" in list, found {tok.describe()}')


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if key not in out:
        out[key] = value
    elif isinstance(out[key], Repeated):
        out[key].append(value)
    else:
        out[key] = Repeated([out[key], value])


def loads(text: str) -> dict[str, Any]:
    """Parse HCL1 text into plain dicts/lists; repeated keys give `Repeated` lists."""
    parser = _Parser(tokenize(text))
    result = parser.object_list("eof")
    return result
