"""The executor of a parsed template: walks the tree with a value for `.` and writes text.

It follows Go's text/template: the last command of a pipeline receives the previous command's
result as its final argument; `if`, `with` and `range` test Go truth; `range` over a map visits the
keys in sorted order; `and`/`or` evaluate their arguments lazily and return one of them; a
variable declared in a control structure ends at its `{{end}}`; `.Name` on a map is a key lookup
(missing gives `<no value>`), on a struct a field or method. Errors name the template, line,
column and the node, like Go's `template: name:3:7: executing "name" at <.Foo>: ...`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from appliance.template.gofmt import (
    NO_VALUE,
    CompareError,
    Record,
    go_type,
    sorted_keys,
    to_str,
    truth,
)
from appliance.template.lexer import TemplateError
from appliance.template.parse import (
    Action,
    Break,
    Chain,
    Command,
    Continue,
    Control,
    Dot,
    Field,
    Identifier,
    Literal,
    Nil,
    Node,
    Pipe,
    TemplateCall,
    Text,
    Tree,
    Variable,
)

MAX_DEPTH = 1000
_MISSING = object()  # no final argument (first command of a pipeline)


class FuncError(Exception):
    """Raised by a template function; shown as `error calling <name>: <message>`."""


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _ExecError(Exception):
    def __init__(self, node: Node, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


_arity_cache: dict[Callable[..., Any], inspect.Signature | None] = {}


def _check_arity(name: str, fn: Callable[..., Any], args: list[Any]) -> str | None:
    if fn not in _arity_cache:
        try:
            _arity_cache[fn] = inspect.signature(fn)
        except (TypeError, ValueError):
            _arity_cache[fn] = None
    sig = _arity_cache[fn]
    if sig is None:
        return None
    try:
        sig.bind(*args)
    except TypeError:
        params = list(sig.parameters.values())
        want = sum(1 for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty)
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            return f"wrong number of args for {name}: want at least {want} got {len(args)}"
        return f"wrong number of args for {name}: want {want} got {len(args)}"
    return None


class Executor:
    def __init__(self, tree: Tree, funcs: Mapping[str, Callable[..., Any]]) -> None:
        self.tree = tree
        self.funcs = funcs
        self.out: list[str] = []
        self.vars: list[tuple[str, Any]] = []
        self.depth = 0

    def run(self, data: Any) -> str:
        self.vars = [("$", data)]
        try:
            self.walk_list(data, self.tree.root)
        except _ExecError as exc:
            line, col = self.tree.source.position(exc.node.pos)
            where = f'executing "{self.tree.name}" at <{_short(exc.node)}>: '
            raise TemplateError(self.tree.name, line, col, where + exc.message) from None
        return "".join(self.out)

    # -- statements -----------------------------------------------------------------------

    def walk_list(self, dot: Any, nodes: list[Node]) -> None:
        for node in nodes:
            self.walk(dot, node)

    def walk(self, dot: Any, node: Node) -> None:
        if isinstance(node, Text):
            self.out.append(node.text)
        elif isinstance(node, Action):
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.out.append(to_str(value))
        elif isinstance(node, Control):
            mark = len(self.vars)
            try:
                if node.kind == "range":
                    self.walk_range(dot, node)
                else:
                    value = self.pipeline(dot, node.pipe)
                    if truth(value):
                        self.walk_list(value if node.kind == "with" else dot, node.body)
                    elif node.else_body is not None:
                        self.walk_list(dot, node.else_body)
            finally:
                del self.vars[mark:]
        elif isinstance(node, TemplateCall):
            self.walk_template(dot, node)
        elif isinstance(node, Break):
            raise _Break
        elif isinstance(node, Continue):
            raise _Continue
        else:  # pragma: no cover - the parser makes no other statements
            raise _ExecError(node, f"unknown node {type(node).__name__}")

    def walk_range(self, dot: Any, node: Control) -> None:
        pipe = node.pipe
        value = self.pipeline(dot, Pipe(pipe.pos, [], False, pipe.cmds))
        items: list[tuple[Any, Any]]
        if isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif isinstance(value, dict):
            items = [(k, value[k]) for k in sorted_keys(value)]
        elif isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise _ExecError(pipe, f"range can't iterate over {value}")
            items = [(i, i) for i in range(value)]
        elif value is None or value is NO_VALUE:
            items = []
        else:
            raise _ExecError(pipe, f"range can't iterate over {to_str(value)}")
        if not items:
            if node.else_body is not None:
                self.walk_list(dot, node.else_body)
            return
        mark = len(self.vars)
        for key, elem in items:
            del self.vars[mark:]
            if len(pipe.decl) == 1:
                self.set_var(pipe.decl[0], elem, pipe.is_assign)
            elif len(pipe.decl) == 2:
                self.set_var(pipe.decl[0], key, pipe.is_assign)
                self.set_var(pipe.decl[1], elem, pipe.is_assign)
            try:
                self.walk_list(elem, node.body)
            except _Continue:
                continue
            except _Break:
                break

    def walk_template(self, dot: Any, node: TemplateCall) -> None:
        body = self.tree.defines.get(node.name)
        if body is None:
            raise _ExecError(node, f'template: no template "{node.name}" associated with template "{self.tree.name}"')
        value = self.pipeline(dot, node.pipe) if node.pipe is not None else None
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _ExecError(node, f"exceeded maximum template depth ({MAX_DEPTH})")
        saved, self.vars = self.vars, [("$", value)]
        try:
            self.walk_list(value, body)
        finally:
            self.vars = saved
            self.depth -= 1

    # -- variables ------------------------------------------------------------------------

    def set_var(self, name: str, value: Any, assign: bool) -> None:
        if assign:
            for i in range(len(self.vars) - 1, -1, -1):
                if self.vars[i][0] == name:
                    self.vars[i] = (name, value)
                    return
        self.vars.append((name, value))

    def var_value(self, node: Node, name: str) -> Any:
        for var, value in reversed(self.vars):
            if var == name:
                return value
        raise _ExecError(node, f"undefined variable: {name}")

    # -- pipelines and commands -----------------------------------------------------------

    def pipeline(self, dot: Any, pipe: Pipe) -> Any:
        value: Any = _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        if value is _MISSING:
            value = None
        for name in pipe.decl:
            self.set_var(name, value, pipe.is_assign)
        return value

    def command(self, dot: Any, cmd: Command, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, Field):
            return self.field_chain(dot, dot, first, first.names, cmd.args, final)
        if isinstance(first, Chain):
            receiver = self.arg(dot, first.node)
            return self.field_chain(dot, receiver, first, first.names, cmd.args, final)
        if isinstance(first, Identifier):
            return self.call(dot, first, cmd.args, final)
        if isinstance(first, Variable):
            value = self.var_value(first, first.names[0])
            if len(first.names) == 1:
                self.not_a_function(first, cmd.args, final)
                return value
            return self.field_chain(dot, value, first, first.names[1:], cmd.args, final)
        self.not_a_function(first, cmd.args, final)
        return self.arg(dot, first)

    def not_a_function(self, node: Node, args: list[Node], final: Any) -> None:
        if len(args) > 1 or final is not _MISSING:
            raise _ExecError(node, f"can't give argument to non-function {_short(node)}")

    def arg(self, dot: Any, node: Node) -> Any:
        """The value of one argument."""
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Nil):
            return None
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Field):
            return self.field_chain(dot, dot, node, node.names, [node], _MISSING)
        if isinstance(node, Variable):
            value = self.var_value(node, node.names[0])
            if len(node.names) == 1:
                return value
            return self.field_chain(dot, value, node, node.names[1:], [node], _MISSING)
        if isinstance(node, Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, Identifier):
            return self.call(dot, node, [node], _MISSING)
        if isinstance(node, Chain):
            receiver = self.arg(dot, node.node)
            return self.field_chain(dot, receiver, node, node.names, [node], _MISSING)
        raise _ExecError(node, f"can't handle {_short(node)}")

    def field_chain(self, dot: Any, receiver: Any, node: Node, names: list[str], args: list[Node], final: Any) -> Any:
        for name in names[:-1]:
            receiver = self.field(dot, node, name, receiver, [], _MISSING)
        return self.field(dot, node, names[-1], receiver, args[1:], final)

    def field(self, dot: Any, node: Node, name: str, receiver: Any, args: list[Node], final: Any) -> Any:
        has_args = bool(args) or final is not _MISSING
        if receiver is NO_VALUE:
            return NO_VALUE
        method = _method(receiver, name)
        if method is not None:
            values = [self.arg(dot, a) for a in args]
            if final is not _MISSING:
                values.append(final)
            return self.invoke(node, name, method, values)
        if isinstance(receiver, dict):
            if has_args:
                raise _ExecError(node, f"{name} is not a method but has arguments")
            return receiver.get(name, NO_VALUE)
        if isinstance(receiver, Record) and name in receiver.FIELDS:
            if has_args:
                raise _ExecError(node, f"{name} has arguments but cannot be invoked as function")
            return getattr(receiver, name)
        if receiver is None:
            raise _ExecError(node, f"nil pointer evaluating interface {{}}.{name}")
        raise _ExecError(node, f"can't evaluate field {name} in type {go_type(receiver)}")

    def call(self, dot: Any, ident: Identifier, args: list[Node], final: Any) -> Any:
        name = ident.name
        if name in ("and", "or"):
            return self.and_or(dot, ident, args[1:], final)
        fn = self.funcs.get(name)
        if fn is None:
            raise _ExecError(ident, f'"{name}" is not a defined function')
        values = [self.arg(dot, a) for a in args[1:]]
        if final is not _MISSING:
            values.append(final)
        return self.invoke(ident, name, fn, values)

    def and_or(self, dot: Any, ident: Identifier, args: list[Node], final: Any) -> Any:
        operands: list[Node | None] = [*args, *([None] if final is not _MISSING else [])]
        if not operands:
            raise _ExecError(ident, f"wrong number of args for {ident.name}: want at least 1 got 0")
        value: Any = None
        for operand in operands:  # evaluated one by one: the first deciding value ends it
            value = final if operand is None else self.arg(dot, operand)
            if truth(value) != (ident.name == "and"):
                return value
        return value

    def invoke(self, node: Node, name: str, fn: Callable[..., Any], values: list[Any]) -> Any:
        problem = _check_arity(name, fn, values)
        if problem:
            raise _ExecError(node, problem)
        try:
            return fn(*values)
        except FuncError as exc:
            raise _ExecError(node, f"error calling {name}: {exc}") from None
        except CompareError as exc:
            raise _ExecError(node, f"error calling {name}: {exc}") from None
        except (TypeError, AttributeError, ValueError, KeyError, IndexError) as exc:
            # a Go function would have refused the argument's type before running
            raise _ExecError(node, f"error calling {name}: wrong type for value: {exc}") from None


def _method(receiver: Any, name: str) -> Callable[..., Any] | None:
    if isinstance(receiver, Record):
        return getattr(receiver, name) if name in receiver.METHODS else None
    if isinstance(receiver, list) and name in getattr(type(receiver), "TEMPLATE_METHODS", ()):
        method: Callable[..., Any] = getattr(receiver, name)
        return method
    return None


def _short(node: Node) -> str:
    text = str(node)
    return text if len(text) <= 40 else text[:37] + "..."


def execute(tree: Tree, funcs: Mapping[str, Callable[..., Any]], data: Any = None) -> str:
    """Run a parsed template; raises TemplateError on a runtime error."""
    return Executor(tree, funcs).run(data)
