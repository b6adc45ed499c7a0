"""Pure text formatting shared by the CLI verbs.

Consul's commands lay out tables in two ways and scripts parse both, so the rules are kept
exact here:

* ``columnize``: every cell is trimmed, each column but the last is left-aligned and padded
  to its widest cell, columns are joined by two spaces, and no line ends in spaces.
* ``tabwrite``: the layout of Go's text/tabwriter with minwidth 0 and padding 6 (used by
  ``catalog services -tags``): a cell followed by a TAB is padded to the column's widest cell
  plus the padding; the last cell of a line is written as it is.

``go_json_dumps`` writes JSON the way Go's ``json.MarshalIndent`` does (HTML-significant
characters escaped, non-ASCII kept), for output that scripts diff against Consul's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

COLUMN_GLUE = "  "
TABWRITER_PADDING = 6


def columnize(rows: Iterable[Sequence[str]], glue: str = COLUMN_GLUE) -> str:
    """Lay out rows of cells as aligned columns (no trailing newline)."""
    cells = [[str(c).strip() for c in row] for row in rows]
    if not cells:
        return ""
    ncols = max(len(r) for r in cells)
    widths = [0] * ncols
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = []
    for row in cells:
        parts = []
        for i, c in enumerate(row):
            if i == len(row) - 1:
                parts.append(c)
            else:
                parts.append(c.ljust(widths[i]) + glue)
        lines.append("".join(parts).rstrip())
    return "\n".join(lines)


def tabwrite(rows: Iterable[Sequence[str]], padding: int = TABWRITER_PADDING) -> str:
    """Lay out rows the way text/tabwriter does for ``"a\\tb\\n"`` lines (no trailing newline).

    Every cell but the last of a row is padded to its column's width plus ``padding``; the
    last cell is not padded (but what came before it keeps its padding, even when it is empty).
    """
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        return ""
    ncols = max(len(r) for r in cells)
    widths = [0] * ncols
    for row in cells:
        for i, c in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(c))
    lines = []
    for row in cells:
        parts = [c.ljust(widths[i] + padding) for i, c in enumerate(row[:-1])]
        parts.append(row[-1] if row else "")
        lines.append("".join(parts))
    return "\n".join(lines)


def format_kv_map(m: Mapping[str, Any] | None) -> str:
    """``{"b": "2", "a": "1"}`` -> ``a=1, b=2`` (sorted by key; empty or null -> "")."""
    if not m:
        return ""
    return ", ".join(f"{k}={m[k]}" for k in sorted(m))


_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def go_json_dumps(value: Any, indent: str | None = None) -> str:
    """JSON text as Go's encoding/json writes it (Marshal, or MarshalIndent with ``indent``).

    Outside strings JSON has no ``<``, ``>``, ``&`` or U+2028/U+2029, so escaping them over
    the whole text only touches string contents, exactly as Go does.
    """
    if indent is None:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(value, ensure_ascii=False, indent=indent, separators=(",", ": "))
        # Go writes empty arrays and objects as [] and {} even when indenting (Python does too)
    for ch, esc in _GO_ESCAPES.items():
        if ch in text:
            text = text.replace(ch, esc)
    return text


def parse_go_bool(text: str) -> bool:
    """Go's strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid boolean value {text!r}")
