"""The parser of Go's text/template language: tokens in, a tree of nodes out.

Grammar (as Go's text/template/parse reads it):

    list     := ( TEXT | action )*
    action   := "{{" pipeline "}}" | "{{if" pipeline "}}" list ("{{else" ("if"|"with") ...)? "{{end}}"
              | range / with (like if) | "{{template" STRING pipeline? "}}" | "{{define" STRING "}}" list "{{end}}"
              | "{{block" STRING pipeline "}}" list "{{end}}" | "{{break}}" | "{{continue}}" | comment
    pipeline := (VAR ("," VAR)? (":=" | "="))? command ("|" command)*
    command  := operand+          operand := term FIELD*
    term     := literal | "." | FIELD+ | VAR FIELD* | IDENT | "(" pipeline ")"

Functions are checked while parsing, as Go does: an unknown name is `function "x" not defined`.
Variables are checked too (`undefined variable "$x"`); a variable lives until the `{{end}}` of the
control structure that declared it. Every error carries `name:line:col`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from appliance.template.lexer import SourceText, TemplateError, Token, tokenize


@dataclass
class Node:
    pos: int


@dataclass
class Text(Node):
    text: str


@dataclass
class Field(Node):
    names: list[str]

    def __str__(self) -> str:
        return "".join("." + n for n in self.names)


@dataclass
class Variable(Node):
    names: list[str]  # "$x", then fields

    def __str__(self) -> str:
        return ".".join(self.names)


@dataclass
class Dot(Node):
    def __str__(self) -> str:
        return "."


@dataclass
class Nil(Node):
    def __str__(self) -> str:
        return "nil"


@dataclass
class Literal(Node):
    value: Any
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class Identifier(Node):
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass
class Chain(Node):
    node: Node
    names: list[str]

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, Pipe) else str(self.node)
        return inner + "".join("." + n for n in self.names)


@dataclass
class Command(Node):
    args: list[Node]

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, Pipe) else str(a) for a in self.args)


@dataclass
class Pipe(Node):
    decl: list[str]
    is_assign: bool
    cmds: list[Command]

    def __str__(self) -> str:
        head = ", ".join(self.decl) + (" = " if self.is_assign else " := ") if self.decl else ""
        return head + " | ".join(str(c) for c in self.cmds)


@dataclass
class Action(Node):
    pipe: Pipe


@dataclass
class Control(Node):
    kind: str  # if range with
    pipe: Pipe
    body: list[Node]
    else_body: list[Node] | None = None


@dataclass
class TemplateCall(Node):
    name: str
    pipe: Pipe | None

    def __str__(self) -> str:
        return f"template {go_quote(self.name)}"


@dataclass
class Break(Node):
    pass


@dataclass
class Continue(Node):
    pass


@dataclass
class Tree:
    name: str
    source: SourceText
    root: list[Node]
    defines: dict[str, list[Node]] = field(default_factory=dict)


_NUMBER_BASES = {"0x": 16, "0X": 16, "0b": 2, "0B": 2, "0o": 8, "0O": 8}


def parse_number(text: str) -> int | float:
    """A Go number literal (ints in any base, floats, `_` separators) as a Python number."""
    raw = text.replace("_", "")
    if raw.endswith("i"):
        raise ValueError("complex numbers are not supported")
    sign = -1 if raw.startswith("-") else 1
    body = raw.lstrip("+-")
    base = _NUMBER_BASES.get(body[:2])
    if base:
        return sign * int(body[2:], base)
    if len(body) > 1 and body[0] == "0" and body.isdigit():
        return sign * int(body, 8)
    if any(c in body for c in ".eE"):
        value = float(body)
        return sign * (int(value) if value.is_integer() and "." not in body and abs(value) < 2**63 else value)
    return sign * int(body)


class _Parser:
    def __init__(self, source: SourceText, tokens: list[Token], funcs: Collection[str]) -> None:
        self.source = source
        self.tokens = tokens
        self.i = 0
        self.funcs = funcs
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.defines: dict[str, list[Node]] = {}

    # -- token access ---------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token | None:
        k = self.i + ahead
        return self.tokens[k] if k < len(self.tokens) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            end = len(self.source.text)
            raise self.source.error(end, "unexpected EOF")
        self.i += 1
        return tok

    def error(self, tok: Token | None, message: str) -> TemplateError:
        return self.source.error(tok.pos if tok else len(self.source.text), message)

    def expect(self, kind: str, context: str) -> Token:
        tok = self.next()
        if tok.kind != kind:
            raise self.error(tok, f"unexpected {describe(tok)} in {context}")
        return tok

    # -- lists and actions ----------------------------------------------------------------

    def parse(self) -> list[Node]:
        nodes: list[Node] = []
        while self.peek() is not None:
            tok = self.peek()
            assert tok is not None
            nxt = self.peek(1)
            if tok.kind == "left" and nxt is not None and nxt.kind == "keyword" and nxt.value == "define":
                self.define()
                continue
            node, stop = self.text_or_action()
            if stop is not None:
                raise self.error(stop, f"unexpected {{{{{stop.value}}}}}")
            if node is not None:
                nodes.append(node)
        return nodes

    def item_list(self, context: str) -> tuple[list[Node], Token]:
        """Nodes up to `{{end}}` or `{{else}}`; returns them and the stopping keyword token."""
        nodes: list[Node] = []
        while True:
            if self.peek() is None:
                raise self.error(None, f"unexpected EOF in {context}")
            node, stop = self.text_or_action()
            if stop is not None:
                return nodes, stop
            if node is not None:
                nodes.append(node)

    def text_or_action(self) -> tuple[Node | None, Token | None]:
        tok = self.next()
        if tok.kind == "text":
            return Text(tok.pos, tok.value), None
        if tok.kind != "left":
            raise self.error(tok, f"unexpected {describe(tok)}")
        if tok.value == "comment":
            self.next()
            return None, None
        head = self.peek()
        if head is not None and head.kind == "keyword":
            return self.keyword_action(head)
        pipe = self.pipeline("command", "right")
        return Action(tok.pos, pipe), None

    def keyword_action(self, head: Token) -> tuple[Node | None, Token | None]:
        word = head.value
        if word in ("end", "else"):
            self.next()
            if word == "end":
                self.expect("right", "end")
            return None, head
        if word in ("if", "range", "with"):
            self.next()
            return self.control(word, head), None
        if word in ("break", "continue"):
            self.next()
            if self.range_depth == 0:
                raise self.error(head, f"{{{{{word}}}}} outside {{{{range}}}}")
            self.expect("right", word)
            return (Break(head.pos) if word == "break" else Continue(head.pos)), None
        if word in ("template", "block"):
            self.next()
            return self.template_call(head), None
        if word == "define":
            raise self.error(head, "{{define}} is only allowed at the top level")
        return Action(head.pos, self.pipeline("command", "right")), None

    def control(self, kind: str, head: Token) -> Control:
        mark = len(self.vars)
        if kind == "range":
            self.range_depth += 1
        pipe = self.pipeline(kind, "right")
        body, stop = self.item_list(kind)
        else_body: list[Node] | None = None
        if stop.value == "else":
            nxt = self.peek()
            if nxt is not None and nxt.kind == "keyword" and nxt.value in ("if", "with") and kind != "range":
                # `{{else if x}}` is `{{else}}{{if x}}...{{end}}` sharing the outer {{end}}
                self.next()
                else_body = [self.control(nxt.value, nxt)]
            else:
                self.expect("right", "else")
                if kind == "range":
                    self.range_depth -= 1
                else_body, stop = self.item_list(kind)
                if stop.value != "end":
                    raise self.error(stop, f"expected end; found {{{{{stop.value}}}}}")
                if kind == "range":
                    self.range_depth += 1
        if kind == "range":
            self.range_depth -= 1
        del self.vars[mark:]
        return Control(head.pos, kind, pipe, body, else_body)

    def template_call(self, head: Token) -> TemplateCall:
        name_tok = self.next()
        if name_tok.kind not in ("string", "rawstring"):
            raise self.error(name_tok, f"unexpected {describe(name_tok)} in {head.value} clause")
        pipe: Pipe | None = None
        if self.peek() is not None and self.peek().kind != "right":  # type: ignore[union-attr]
            pipe = self.pipeline(head.value, "right")
        else:
            self.expect("right", head.value)
        if head.value == "block":
            body, stop = self.item_list("block")
            if stop.value != "end":
                raise self.error(stop, "unexpected {{else}} in block")
            self.defines[name_tok.value] = body
        return TemplateCall(head.pos, name_tok.value, pipe)

    def define(self) -> None:
        self.next()
        head = self.next()
        name_tok = self.next()
        if name_tok.kind not in ("string", "rawstring"):
            raise self.error(name_tok, f"unexpected {describe(name_tok)} in define clause")
        self.expect("right", "define clause")
        saved, self.vars = self.vars, ["$"]
        body, stop = self.item_list("define")
        self.vars = saved
        if stop.value != "end":
            raise self.error(stop, "unexpected {{else}} in define")
        if name_tok.value in self.defines:
            raise self.error(head, f"template: multiple definition of template {name_tok.value!r}")
        self.defines[name_tok.value] = body

    # -- pipelines and commands -----------------------------------------------------------

    def pipeline(self, context: str, end: str) -> Pipe:
        start = self.peek()
        pos = start.pos if start else len(self.source.text)
        decl, is_assign = self.declarations(context)
        cmds: list[Command] = []
        while True:
            tok = self.peek()
            if tok is None:
                raise self.error(None, f"unclosed action in {context}")
            if tok.kind == end:
                self.next()
                break
            if tok.kind in ("right", "rparen"):
                raise self.error(tok, f"unexpected {describe(tok)} in {context}")
            cmds.append(self.command(context))
            sep = self.peek()
            if sep is not None and sep.kind == "pipe":
                self.next()
                nxt = self.peek()
                if nxt is not None and nxt.kind in ("right", "rparen"):
                    raise self.error(nxt, "missing command after |")
        if not cmds:
            raise self.error(start, f"missing value for {context}")
        for k, cmd in enumerate(cmds[1:], 2):
            if isinstance(cmd.args[0], (Literal, Nil, Dot)):
                raise self.error(self.tokens[self.i - 1], f"non executable command in pipeline stage {k}")
        self.vars.extend(v for v in decl if not is_assign)
        return Pipe(pos, decl, is_assign, cmds)

    def declarations(self, context: str) -> tuple[list[str], bool]:
        first, second = self.peek(), self.peek(1)
        if first is None or first.kind != "var" or second is None:
            return [], False
        if second.kind in ("declare", "assign"):
            self.i += 2
            if second.kind == "assign" and first.value not in self.vars:
                raise self.error(first, f"undefined variable {first.value!r}")
            return [first.value], second.kind == "assign"
        third, fourth = self.peek(2), self.peek(3)
        if second.kind == "comma" and third is not None and third.kind == "var" and fourth is not None:
            if context != "range":
                raise self.error(second, f"too many declarations in {context}")
            if fourth.kind not in ("declare", "assign"):
                raise self.error(fourth, f"unexpected {describe(fourth)} in range")
            self.i += 4
            return [first.value, third.value], fourth.kind == "assign"
        return [], False

    def command(self, context: str) -> Command:
        first = self.peek()
        assert first is not None
        args: list[Node] = []
        while True:
            tok = self.peek()
            if tok is None or tok.kind in ("right", "rparen", "pipe"):
                break
            if args and not tok.space_before and tok.kind != "field":
                raise self.error(tok, f"missing space before {describe(tok)}")
            args.append(self.operand(context))
        if not args:
            raise self.error(first, "empty command")
        return Command(first.pos, args)

    def operand(self, context: str) -> Node:
        node = self.term(context)
        names: list[str] = []
        while True:
            tok = self.peek()
            if tok is None or tok.kind != "field" or tok.space_before:
                break
            self.next()
            names.append(tok.value)
        if not names:
            return node
        if isinstance(node, Field):
            return Field(node.pos, node.names + names)
        if isinstance(node, Variable):
            return Variable(node.pos, node.names + names)
        if isinstance(node, (Literal, Nil)):
            raise self.error(self.tokens[self.i - 1], f"unexpected . after term {str(node)!r}")
        return Chain(node.pos, node, names)

    def term(self, context: str) -> Node:
        tok = self.next()
        kind, value, pos = tok.kind, tok.value, tok.pos
        if kind == "ident":
            if value not in self.funcs:
                raise self.error(tok, f'function "{value}" not defined')
            return Identifier(pos, value)
        if kind == "dot":
            return Dot(pos)
        if kind == "field":
            return Field(pos, [value])
        if kind == "var":
            if value not in self.vars:
                raise self.error(tok, f'undefined variable "{value}"')
            return Variable(pos, [value])
        if kind == "keyword" and value in ("true", "false"):
            return Literal(pos, value == "true", value)
        if kind == "keyword" and value == "nil":
            return Nil(pos)
        if kind == "string":
            return Literal(pos, value, go_quote(value))
        if kind == "rawstring":
            return Literal(pos, value, f"`{value}`")
        if kind == "char":
            return Literal(pos, ord(value), f"'{value}'")
        if kind == "number":
            try:
                return Literal(pos, parse_number(value), value)
            except ValueError:
                raise self.error(tok, f"illegal number syntax: {value!r}") from None
        if kind == "lparen":
            return self.pipeline("parenthesized pipeline", "rparen")
        raise self.error(tok, f"unexpected {describe(tok)} in operand")


def describe(tok: Token) -> str:
    if tok.kind == "right":
        return '"}}"'
    if tok.kind == "left":
        return '"{{"'
    if tok.kind == "string":
        return f"quoted string {go_quote(tok.value)}"
    if tok.kind == "text":
        return "text"
    if tok.kind == "field":
        return f'<.{tok.value}>'
    if tok.kind == "keyword":
        return f"<{tok.value}>"
    if tok.kind in ("pipe", "lparen", "rparen", "comma", "declare", "assign"):
        return f'"{tok.value}"'
    return f"<{tok.value}>"


def go_quote(s: str) -> str:
    """strconv.Quote for the usual characters."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def parse(name: str, text: str, funcs: Collection[str], left: str = "{{", right: str = "}}") -> Tree:
    """Parse a template; raises TemplateError (`template: name:line:col: ...`)."""
    source = SourceText(name, text)
    parser = _Parser(source, tokenize(source, left, right), funcs)
    root = parser.parse()
    return Tree(name, source, root, parser.defines)
