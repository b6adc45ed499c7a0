"""The tokenizer of Go's text/template syntax, as consul-template reads `.ctmpl` files.

How it works
------------
Text outside the delimiters is one TEXT token. Inside `{{ ... }}` the lexer emits identifiers,
fields (`.Name`), variables (`$x`), literals, `|`, `(`, `)`, `:=`, `=`, `,` and `.`, each with its
offset in the source, and whether white space came before it (Go separates the arguments of a
command by spaces, so `.A .B` is two arguments but `.A.B` one chain).

Trim markers follow Go: `{{- ` (dash then a space) trims all white space before the action from
the preceding text, ` -}}` trims it after. `{{-3}}` is the number -3, not a trim marker. A comment
`{{/* ... */}}` must touch its delimiters (after a trim marker's space) and yields no token.

Errors carry the offset; `SourceText.position` turns it into line and column (1-based).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KEYWORDS = frozenset(
    {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue", "nil", "true", "false"}
)

SPACE = " \t\r\n"


class TemplateError(Exception):
    """A template that does not parse or fails to execute; the message is Go's shape:
    ``template: <name>:<line>:<col>: <what>``."""

    def __init__(self, name: str, line: int, col: int, message: str) -> None:
        super().__init__(f"template: {name}:{line}:{col}: {message}")
        self.name, self.line, self.col, self.message = name, line, col, message


@dataclass(frozen=True)
class Token:
    kind: str  # text left right ident keyword field var string char number pipe lparen rparen declare assign comma dot
    value: str
    pos: int
    space_before: bool = False


class SourceText:
    """The template's text and name, to turn offsets into `name:line:col`."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text

    def position(self, pos: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, pos) + 1
        start = self.text.rfind("\n", 0, pos) + 1
        return line, pos - start + 1

    def error(self, pos: int, message: str) -> TemplateError:
        line, col = self.position(pos)
        return TemplateError(self.name, line, col, message)


_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)i?"
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ALNUM = re.compile(r"[A-Za-z0-9_]*")


def tokenize(source: SourceText, left: str = "{{", right: str = "}}") -> list[Token]:
    """Split the template into tokens; raises TemplateError on malformed actions."""
    text = source.text
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        start = text.find(left, i)
        if start < 0:
            tokens.append(Token("text", text[i:], i))
            break
        after = start + len(left)
        trim_left = text.startswith("-", after) and after + 1 < n and text[after + 1] in SPACE
        chunk = text[i:start]
        if trim_left:
            chunk = chunk.rstrip(SPACE)
        if chunk:
            tokens.append(Token("text", chunk, i))
        i = _lex_action(source, tokens, start, after + (2 if trim_left else 0), right)
        if tokens[-1].kind == "right" and tokens[-1].value == "trim":
            while i < n and text[i] in SPACE:
                i += 1
    return tokens


def _right_at(text: str, j: int, right: str) -> tuple[bool, int, bool]:
    """Is there a right delimiter (optionally ` -`-trimmed) at j? -> (found, end, trim)."""
    if text.startswith(right, j):
        return True, j + len(right), False
    if j + 1 < len(text) and text[j] in SPACE and text.startswith("-" + right, j + 1):
        return True, j + 2 + len(right), True
    return False, j, False


def _lex_action(source: SourceText, tokens: list[Token], start: int, j: int, right: str) -> int:
    text = source.text
    n = len(text)
    # a comment: {{/* ... */}} with optional trim markers
    if text.startswith("/*", j):
        end = text.find("*/", j + 2)
        if end < 0:
            raise source.error(start, "unclosed comment")
        found, after, trim = _right_at(text, end + 2, right)
        if not found:
            raise source.error(end, "comment ends before closing delimiter")
        tokens.append(Token("left", "comment", start))
        tokens.append(Token("right", "trim" if trim else "", end + 2))
        return after
    tokens.append(Token("left", "", start))
    space = True
    while True:
        if j >= n:
            raise source.error(start, "unclosed action")
        found, after, trim = _right_at(text, j, right)
        if found:
            tokens.append(Token("right", "trim" if trim else "", j))
            return after
        c = text[j]
        if c in SPACE:
            j += 1
            space = True
            continue
        if text.startswith("/*", j):
            raise source.error(j, "comment must be alone in its action, next to the delimiters")
        tok, j = _lex_one(source, j, space)
        tokens.append(tok)
        space = False


def _lex_one(source: SourceText, j: int, space: bool) -> tuple[Token, int]:
    text = source.text
    c = text[j]
    if c == "|":
        return Token("pipe", c, j, space), j + 1
    if c == "(":
        return Token("lparen", c, j, space), j + 1
    if c == ")":
        return Token("rparen", c, j, space), j + 1
    if c == ",":
        return Token("comma", c, j, space), j + 1
    if text.startswith(":=", j):
        return Token("declare", ":=", j, space), j + 2
    if c == "=":
        return Token("assign", "=", j, space), j + 1
    if c == '"':
        return _lex_quoted(source, j, '"', "string", space)
    if c == "'":
        return _lex_quoted(source, j, "'", "char", space)
    if c == "`":
        end = text.find("`", j + 1)
        if end < 0:
            raise source.error(j, "unterminated raw quoted string")
        return Token("rawstring", text[j + 1 : end], j, space), end + 1
    if c == "$":
        m = _ALNUM.match(text, j + 1)
        end = m.end() if m else j + 1
        return Token("var", text[j:end], j, space), end
    if c == ".":
        nxt = text[j + 1] if j + 1 < len(text) else ""
        if nxt.isdigit():
            m = _NUMBER.match(text, j)
            assert m is not None
            return Token("number", m.group(), j, space), m.end()
        m = _ALNUM.match(text, j + 1)
        end = m.end() if m else j + 1
        if end == j + 1:
            return Token("dot", ".", j, space), j + 1
        return Token("field", text[j + 1 : end], j, space), end
    if c.isdigit() or (c in "+-" and j + 1 < len(text) and (text[j + 1].isdigit() or text[j + 1] == ".")):
        m = _NUMBER.match(text, j)
        if m is None:
            raise source.error(j, f"bad number syntax: {text[j:j + 10]!r}")
        end = m.end()
        if end < len(text) and (text[end].isalnum() or text[end] == "_"):
            stop = _ALNUM.match(text, end)
            raise source.error(j, f"bad number syntax: {text[j:stop.end() if stop else end]!r}")
        return Token("number", m.group(), j, space), end
    m = _IDENT.match(text, j)
    if m:
        word = m.group()
        return Token("keyword" if word in KEYWORDS else "ident", word, j, space), m.end()
    raise source.error(j, f"unexpected {c!r} in command")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", '"': '"', "'": "'"}


def _lex_quoted(source: SourceText, j: int, quote: str, kind: str, space: bool) -> tuple[Token, int]:
    text = source.text
    out: list[str] = []
    k = j + 1
    while True:
        if k >= len(text) or text[k] == "\n":
            what = "quoted string" if kind == "string" else "character constant"
            raise source.error(j, f"unterminated {what}")
        c = text[k]
        if c == quote:
            break
        if c == "\\":
            k, ch = _escape(source, k)
            out.append(ch)
            continue
        out.append(c)
        k += 1
    value = "".join(out)
    if kind == "char" and len(value) != 1:
        raise source.error(j, f"malformed character constant: {text[j:k + 1]}")
    return Token(kind, value, j, space), k + 1


def _escape(source: SourceText, k: int) -> tuple[int, str]:
    text = source.text
    c = text[k + 1] if k + 1 < len(text) else ""
    if c in _ESCAPES:
        return k + 2, _ESCAPES[c]
    widths = {"x": 2, "u": 4, "U": 8}
    if c in widths:
        digits = text[k + 2 : k + 2 + widths[c]]
        if len(digits) == widths[c] and all(d in "0123456789abcdefABCDEF" for d in digits):
            return k + 2 + widths[c], chr(int(digits, 16))
    if c in "01234567" and c:
        digits = text[k + 1 : k + 4]
        if len(digits) == 3 and all(d in "01234567" for d in digits):
            return k + 4, chr(int(digits, 8))
    raise source.error(k, f"invalid escape sequence \\{c}")
