#!/usr/bin/env python3
"""Inputs and Outputs tables of a module's README, from its variables.tf and outputs.tf.

    python3 deploy/terraform/tfdoc.py deploy/terraform/modules/ecs-server          # print the tables
    python3 deploy/terraform/tfdoc.py --write deploy/terraform/modules/ecs-server  # update README.md

The README keeps the tables between `<!-- BEGIN_TF_DOCS -->` and `<!-- END_TF_DOCS -->`
(terraform-docs' markers and layout; terraform-docs itself is not packaged for Debian, PyPI or
npm). tests/deploy/test_terraform.py fails when a README differs from what this prints.

The reader understands what `terraform fmt` writes for `variable` and `output` blocks: top-level
`name = value` attributes whose value may span lines inside brackets or a heredoc. It is not a
general HCL parser.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"
BLOCK = re.compile(r'^(variable|output)\s+"([^"]+)"\s*\{\s*$')
ATTR = re.compile(r"^\s{2}([a-z_]+)\s*=\s*(.*)$")


def _depth(text: str) -> int:
    """Bracket depth change of a line, ignoring brackets inside strings."""
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    return depth


def blocks(text: str, kind: str) -> list[tuple[str, dict[str, str]]]:
    """(name, {attribute: source text}) of each top-level `kind` block, in file order."""
    out: list[tuple[str, dict[str, str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = BLOCK.match(lines[i])
        if not m or m.group(1) != kind:
            i += 1
            continue
        name, attrs = m.group(2), {}
        i += 1
        while i < len(lines) and lines[i] != "}":
            a = ATTR.match(lines[i])
            if a:
                key, value = a.group(1), a.group(2)
                depth = _depth(value)
                heredoc = re.match(r"^<<-?(\w+)$", value.strip())
                while (depth > 0 or heredoc) and i + 1 < len(lines):
                    i += 1
                    value += "\n" + lines[i]
                    if heredoc:
                        if lines[i].strip() == heredoc.group(1):
                            heredoc = None
                    else:
                        depth += _depth(lines[i])
                attrs[key] = value
            elif lines[i].strip().startswith(("validation", "lifecycle")) and lines[i].rstrip().endswith("{"):
                depth = _depth(lines[i])
                while depth > 0 and i + 1 < len(lines):
                    i += 1
                    depth += _depth(lines[i])
            i += 1
        out.append((name, attrs))
        i += 1
    return out


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def tables(module: Path) -> str:
    variables = blocks((module / "variables.tf").read_text(), "variable")
    outputs = blocks((module / "outputs.tf").read_text(), "output")
    lines = ["## Inputs", "", "| Name | Description | Type | Default | Required |",
             "|------|-------------|------|---------|:--------:|"]
    for name, attrs in sorted(variables, key=lambda v: ("default" in v[1], v[0])):
        default = attrs.get("default")
        description = _cell(_unquote(attrs.get("description", "")))
        shown = f"`{_cell(default)}`" if default is not None else "n/a"
        required = "no" if default is not None else "yes"
        lines.append(f"| `{name}` | {description} | `{_cell(attrs.get('type', 'any'))}` | {shown} | {required} |")
    lines += ["", "## Outputs", "", "| Name | Description |", "|------|-------------|"]
    for name, attrs in sorted(outputs):
        lines.append(f"| `{name}` | {_cell(_unquote(attrs.get('description', '')))} |")
    return "\n".join(lines) + "\n"


def render(module: Path) -> str:
    """The README with its tables section replaced by the current tables."""
    readme = (module / "README.md").read_text()
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + tables(module) + readme[end:]


def main(argv: list[str]) -> int:
    write = "--write" in argv
    for arg in [a for a in argv if a != "--write"]:
        module = Path(arg)
        if write:
            (module / "README.md").write_text(render(module))
        else:
            sys.stdout.write(tables(module))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
