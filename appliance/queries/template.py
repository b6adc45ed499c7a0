"""Prepared-query templates: a query whose Service fields are rendered from the name looked up.

How it works
------------
A query with `Template.Type = "name_prefix_match"` answers every name that starts with its own
Name (the empty Name answers every name). Before it runs, every string in its `Service` section
(the service name, Near, Peer, each tag, each ignored check ID, each failover datacenter, each
meta value) is rendered with HIL interpolations (reference/coordination.md §6.4):

    ${name.full}     the name looked up            ${name.prefix}   the template's Name
    ${name.suffix}   the name without the prefix   ${match(N)}      the Nth submatch of Regexp
    ${agent.segment} the network segment of the agent (always "" in cairn: no segments)

`Template.Regexp` is Go's regexp (RE2, run by RE2 itself: appliance/filter/regex.py gives Go's
error texts) applied to the whole looked-up name; a submatch that does not exist, or a regexp
that does not match, renders as "" and is never an error. `RemoveEmptyTags` drops tags that
rendered empty. `$${` is a literal `${`.

`compile_template(query)` checks a definition once (when it is written) with Consul's texts and
a test render with the query's own Name; `render(query, name)` gives the query to run. Pure
functions, no I/O.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import re2

from appliance.filter.regex import RegexError, compile_re2

NAME_PREFIX_MATCH = "name_prefix_match"
_INDEX = re.compile(r"\s*match\s*\(\s*(-?\d+)\s*\)\s*")
_VARIABLE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*")


class TemplateError(ValueError):
    """A template that does not compile or render (Consul's text)."""


def is_template(query: dict[str, Any]) -> bool:
    return bool((query.get("Template") or {}).get("Type"))


def _pieces(text: str) -> list[tuple[bool, str]]:
    """The text as (is_expression, part) pieces; TemplateError for an unclosed `${`."""
    out: list[tuple[bool, str]] = []
    i, literal = 0, []
    while i < len(text):
        if text.startswith("$${", i):
            literal.append("${")
            i += 3
        elif text.startswith("${", i):
            end = text.find("}", i + 2)
            if end < 0:
                raise TemplateError("expected expression end, got end of text")
            if literal:
                out.append((False, "".join(literal)))
                literal = []
            out.append((True, text[i + 2:end]))
            i = end + 1
        else:
            literal.append(text[i])
            i += 1
    if literal:
        out.append((False, "".join(literal)))
    return out


def _check_expression(expr: str) -> None:
    if _INDEX.fullmatch(expr) or _VARIABLE.fullmatch(expr):
        return
    raise TemplateError(f"parse error: unexpected {expr.strip()!r}")


class _Context:
    def __init__(self, name: str, prefix: str, matches: list[str]) -> None:
        self.variables = {"name.full": name, "name.prefix": prefix, "name.suffix": name[len(prefix):],
                          "agent.segment": ""}
        self.matches = matches

    def evaluate(self, expr: str) -> str:
        m = _INDEX.fullmatch(expr)
        if m is not None:
            n = int(m.group(1))
            return self.matches[n] if 0 <= n < len(self.matches) else ""
        var = expr.strip()
        if var not in self.variables:
            raise TemplateError(f"unknown variable accessed: {var}")
        return self.variables[var]


_MAPS = frozenset({"NodeMeta", "ServiceMeta"})


def _walk(value: Any, path: str, fn: Callable[[str, str], Any], in_map: bool = False) -> Any:
    """Apply fn(text, path) to every string in a JSON-like value (struct fields, list items, map
    values); paths are spelled as Consul's errors spell them (`.Service`, `.Tags[0]`, `.NodeMeta[k]`)."""
    if isinstance(value, str):
        return fn(value, path)
    if isinstance(value, list):
        return [_walk(v, f"{path}[{i}]", fn) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _walk(v, f"{path}[{k}]" if in_map else f"{path}.{k}", fn, not in_map and k in _MAPS)
                for k, v in value.items()}
    return value


def _regexp(query: dict[str, Any]) -> Any:
    pattern = (query.get("Template") or {}).get("Regexp") or ""
    if not pattern:
        return None
    try:
        compile_re2(pattern)  # Go's texts for what Go refuses
    except RegexError as err:
        raise TemplateError(f"Bad Regexp: {err}") from None
    return re2.compile(pattern)


def compile_template(query: dict[str, Any]) -> None:
    """Check a template definition (Consul's prepared_query.Compile): its type, its regexp, every
    interpolation in Service, and a render with its own Name. TemplateError with Consul's text."""
    kind = (query.get("Template") or {}).get("Type") or ""
    if kind != NAME_PREFIX_MATCH:
        raise TemplateError(f"Bad Template.Type '{kind}'")
    _regexp(query)

    def check(text: str, path: str) -> str:
        try:
            for is_expr, part in _pieces(text):
                if is_expr:
                    _check_expression(part)
        except TemplateError as err:
            raise TemplateError(f"Bad format '{text}' in Service{path}: {err}") from None
        return text

    _walk(query.get("Service") or {}, "", check)
    render(query, query.get("Name") or "")


def render(query: dict[str, Any], name: str) -> dict[str, Any]:
    """The query a template gives for `name` (a non-template query is returned as it is)."""
    if not is_template(query):
        return query
    prefix = query.get("Name") or ""
    regexp = _regexp(query)
    matches: list[str] = []
    if regexp is not None:
        m = regexp.search(name)
        if m is not None:
            matches = [m.group(0) or ""] + [g or "" for g in m.groups()]
    ctx = _Context(name, prefix, matches)

    def interpolate(text: str, path: str) -> str:
        if "${" not in text:
            return text
        try:
            return "".join(ctx.evaluate(part) if is_expr else part for is_expr, part in _pieces(text))
        except TemplateError as err:
            raise TemplateError(f"Bad evaluation for '{text}' in Service{path}: {err}") from None

    out = copy.deepcopy(query)
    service = _walk(out.get("Service") or {}, "", interpolate)
    if (out.get("Template") or {}).get("RemoveEmptyTags") and service.get("Tags"):
        service["Tags"] = [t for t in service["Tags"] if t != ""]
    out["Service"] = service
    return out
