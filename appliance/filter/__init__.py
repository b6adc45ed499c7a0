"""The ``filter=`` expression language of the HTTP API (go-bexpr as Consul runs it).

``compile_filter(expression, endpoint)`` does everything that can fail up front, exactly in the
reference order: parse (``grammar``), then walk the AST left to right checking each match
expression against the endpoint's static schema (``schema``): selector validity, operator
legality for the field kind, literal coercion (Go integer/bool parsing, ``gostr``) and RE2
compilation (``regex``).  The first failure becomes a ``FilterError`` whose text is what Consul
returns in the HTTP 500 body.

``Filter.matches(obj)`` then evaluates against the JSON-shaped dict an endpoint emits:

* absent keys and JSON nulls read as the Go zero value of the field's kind ("" / 0 / false /
  empty); an absent nested struct reads as a zero struct (the reference would crash there);
* a missing map key stops the walk with a fixed answer: false for ``==``, ``in``,
  ``is not empty``; true for every other operator, including ``matches`` (the reference quirk);
* a slice of structs in the middle of a selector is an implicit ANY over its elements, so an
  empty slice is false for every operator; non-object elements are skipped;
* ``and``/``or`` short-circuit left to right.

Limits cairn adds (Consul has none, but its evaluator runs compiled Go): an expression of more
than ``MAX_EXPRESSION_LENGTH`` characters or with more than ``MAX_MATCHES`` match expressions is
refused before any other check (go-bexpr's own ``Number of match expressions (N) exceeds the
limit (M)`` text), and the ``matches`` operands of one filter share ``MAX_REGEX_PROGRAM`` RE2
instructions (one that does not fit is Go's ``expression too large``), which bounds the work per
byte searched.  With RE2's linear search, one object's evaluation is then bounded by the size of
its own fields.

``/v1/agent/checks`` builds its filter without a type: pass ``endpoint="agent_checks"`` and
schema errors are deferred until the first object is evaluated, then raised without the
``Failed to create boolean expression evaluator: `` prefix.  An empty expression matches all.
Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .gostr import GoSyntaxError, go_quote, parse_bool, parse_int
from .grammar import (
    EMPTY,
    EQ,
    IN,
    MATCHES,
    NE,
    NOT_EMPTY,
    NOT_IN,
    NOT_MATCHES,
    Node,
    ParseError,
    parse,
)
from .regex import MAX_PROGRAM, RegexError, compile_re2
from .schema import ANY, BOOL, ENDPOINTS, INT, LIST, MAP, SLICE, STRING, STRUCT, Field

__all__ = ["ENDPOINTS", "Filter", "FilterError", "compile_filter"]

PREFIX = "Failed to create boolean expression evaluator: "

# Bounds on the work one filter can ask for (Consul has none; docs/http-api.md, Filtering).
MAX_EXPRESSION_LENGTH = 4096  # characters; parsing costs about 10 us a character
MAX_MATCHES = 32  # match expressions: go-bexpr's own default MaxMatches, and its error text
MAX_REGEX_PROGRAM = MAX_PROGRAM  # RE2 instructions summed over a filter's `matches` operands

# operators that answer true when a map key is missing (everything but ==, in, is not empty)
_MISSING_TRUE = frozenset({NE, NOT_IN, EMPTY, MATCHES, NOT_MATCHES})


class FilterError(Exception):
    """A filter that cannot be created (or, for agent checks, evaluated); str() is Consul's text."""


class _SchemaError(Exception):
    pass


class _Match:
    __slots__ = ("selector", "op", "fields", "value")

    def __init__(self, selector: list[str], op: str, fields: list[Field], value: Any) -> None:
        self.selector, self.op, self.fields, self.value = selector, op, fields, value


def _count_matches(node: Node) -> int:
    kind = node[0]
    if kind in ("and", "or"):
        return _count_matches(node[1]) + _count_matches(node[2])
    if kind == "not":
        return _count_matches(node[1])
    return 1


def _check(node: Node, root: Field, budget: list[int]) -> Node:
    """Validate one AST against the schema; return the tree with compiled match nodes."""
    kind = node[0]
    if kind in ("and", "or"):
        return (kind, _check(node[1], root, budget), _check(node[2], root, budget))
    if kind == "not":
        return ("not", _check(node[1], root, budget))
    _, selector, op, raw = node
    path: list[Field] = []
    current = root
    for idx, segment in enumerate(selector):
        nxt = current.sub.get(segment) or current.sub.get(ANY)
        if nxt is None:
            raise _SchemaError(f"Selector {go_quote('.'.join(selector[:idx + 1]))} is not valid")
        path.append(nxt)
        current = nxt
    shown = go_quote(".".join(selector))
    if op not in current.ops:
        raise _SchemaError(f"Invalid match operator {go_quote(op)} for selector {shown}")
    value: Any = raw
    if raw is not None:
        try:
            if current.kind == INT:
                value = parse_int(raw)
            elif current.kind == BOOL:
                value = parse_bool(raw)
        except GoSyntaxError as err:
            raise _SchemaError(
                f"Failed to coerce value {go_quote(raw)} for selector {shown}: {err}") from None
        if op in (MATCHES, NOT_MATCHES):
            try:
                value = compile_re2(raw, budget)
            except RegexError as err:
                raise _SchemaError(
                    f"Failed to compile regular expression {go_quote(raw)}: {err}") from None
    return ("match", _Match(selector, op, path, value))


def _terminal(value: Any, f: Field, op: str, want: Any) -> bool:
    kind = f.kind
    if kind == STRING:
        text = value if isinstance(value, str) else ""
        if op in (EQ, NE):
            return bool(text == want) == (op == EQ)
        if op in (IN, NOT_IN):
            return bool(want in text) == (op == IN)
        return bool(want.search(text)) == (op == MATCHES)
    if kind == INT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            number: Any = 0
        else:
            number = value
        return bool(number == want) == (op == EQ)
    if kind == BOOL:
        flag = value if isinstance(value, bool) else False
        return bool(flag == want) == (op == EQ)
    if kind in (LIST, MAP, SLICE):
        container: Any = value if isinstance(value, (dict if kind == MAP else list)) else ()
        if op in (EMPTY, NOT_EMPTY):
            return (len(container) == 0) == (op == EMPTY)
        if kind == MAP:
            found = want in container
        else:
            found = any(isinstance(item, str) and item == want for item in container)
        return found == (op == IN)
    return False  # structs accept no operator; validation never lets us get here


def _walk(value: Any, f: Field, m: _Match, depth: int) -> bool:
    selector = m.selector
    if depth == len(selector):
        return _terminal(value, f, m.op, m.value)
    kind = f.kind
    if kind == SLICE:
        if not isinstance(value, list):
            return False
        as_struct = Field(STRUCT, f.sub)
        return any(_walk(item, as_struct, m, depth) for item in value if isinstance(item, dict))
    nxt = m.fields[depth]
    if kind == MAP:
        key = selector[depth]
        if not isinstance(value, dict) or value.get(key) is None:
            return m.op in _MISSING_TRUE
        return _walk(value[key], nxt, m, depth + 1)
    # struct: read the field's JSON key; a missing or null struct reads as a zero struct
    child = value.get(nxt.key) if isinstance(value, dict) else None
    return _walk(child, nxt, m, depth + 1)


def _evaluate(node: Node, obj: Any, root: Field) -> bool:
    kind = node[0]
    if kind == "and":
        return _evaluate(node[1], obj, root) and _evaluate(node[2], obj, root)
    if kind == "or":
        return _evaluate(node[1], obj, root) or _evaluate(node[2], obj, root)
    if kind == "not":
        return not _evaluate(node[1], obj, root)
    return _walk(obj, root, node[1], 0)


class Filter:
    """A compiled filter for one endpoint's element type."""

    def __init__(self, expression: str, root: Field, tree: Node | None,
                 deferred: str | None = None) -> None:
        self.expression = expression
        self._root = root
        self._tree = tree
        self._deferred = deferred

    def matches(self, obj: dict[str, Any]) -> bool:
        if self._deferred is not None:
            raise FilterError(self._deferred)
        if self._tree is None:
            return True
        return _evaluate(self._tree, obj, self._root)

    def apply(self, objs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [obj for obj in objs if self.matches(obj)]

    def __repr__(self) -> str:
        return f"Filter({self.expression!r})"


def compile_filter(expression: str, endpoint: str) -> Filter:
    """Compile ``expression`` for ``endpoint`` (a key of ``ENDPOINTS``); raise FilterError."""
    try:
        root = ENDPOINTS[endpoint]
    except KeyError:
        raise ValueError(f"unknown filter endpoint {endpoint!r}") from None
    if expression == "":
        return Filter(expression, root, None)
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise FilterError(PREFIX + f"Expression length ({len(expression)}) exceeds the limit "
                          f"({MAX_EXPRESSION_LENGTH})")
    try:
        ast = parse(expression)
    except ParseError as err:
        raise FilterError(PREFIX + str(err)) from None
    matches = _count_matches(ast)
    if matches > MAX_MATCHES:
        raise FilterError(PREFIX + f"Number of match expressions ({matches}) exceeds the limit "
                          f"({MAX_MATCHES})")
    try:
        tree = _check(ast, root, [MAX_REGEX_PROGRAM])
    except _SchemaError as err:
        if endpoint == "agent_checks":
            return Filter(expression, root, None, deferred=str(err))
        raise FilterError(PREFIX + str(err)) from None
    return Filter(expression, root, tree)
