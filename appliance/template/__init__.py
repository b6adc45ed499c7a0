"""consul-template's language: Go text/template plus functions that read KV and the catalog.

`Template(name, text)` parses (errors are `TemplateError`, `template: name:line:col: ...`);
`render(resolver, env, now)` executes it against a `Resolver` of dependency answers. Nothing here
does I/O: the runner (`appliance.template.runner`) watches the agent and writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from appliance.template.deps import Dep, Resolver, dep_funcs
from appliance.template.execute import FuncError, execute
from appliance.template.funcs import LAZY, pure_funcs
from appliance.template.lexer import TemplateError
from appliance.template.parse import Tree, parse

__all__ = ["FUNC_NAMES", "Answers", "Dep", "Resolver", "Template", "TemplateError"]


def _utc_now() -> datetime:
    raise RuntimeError("the clock is passed in by the caller")


FUNC_NAMES: frozenset[str] = frozenset(pure_funcs({}, _utc_now)) | frozenset(dep_funcs(None)) | frozenset(LAZY)  # type: ignore[arg-type]


def _disabled(name: str) -> Callable[..., Any]:
    def refuse(*_args: Any) -> Any:
        raise FuncError(f"function {name!r} is disabled")

    return refuse


class Template:
    """One parsed template."""

    def __init__(self, name: str, text: str, *, left: str = "{{", right: str = "}}",
                 denylist: Collection[str] = ()) -> None:
        self.name = name
        self.denylist = frozenset(denylist)
        self.tree: Tree = parse(name, text, FUNC_NAMES, left or "{{", right or "}}")

    def render(self, resolver: Resolver, env: Mapping[str, str], now: Callable[[], datetime]) -> str:
        funcs = pure_funcs(env, now)
        funcs.update(dep_funcs(resolver))
        for name in self.denylist:
            funcs[name] = _disabled(name)
        return execute(self.tree, funcs, None)


class Answers:
    """A resolver over known answers (dependency -> decoded body), recording what one render
    used and what it lacked."""

    def __init__(self, answers: Mapping[Dep, Any] | None = None) -> None:
        self.answers = dict(answers or {})
        self.used: set[Dep] = set()
        self.missing: set[Dep] = set()

    def lookup(self, dep: Dep) -> tuple[bool, Any]:
        self.used.add(dep)
        if dep in self.answers:
            return True, self.answers[dep]
        self.missing.add(dep)
        return False, None

    def mark_missing(self, dep: Dep) -> None:
        self.missing.add(dep)

