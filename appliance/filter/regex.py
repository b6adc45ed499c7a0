"""Go ``regexp`` patterns (RE2 syntax and semantics), run by RE2 itself in linear time.

Consul compiles ``matches`` operands and the user-event ``node``/``service``/``tag`` filters with
Go's ``regexp``, an RE2 engine: every search is linear in the text, whatever the pattern.
Python's ``re`` backtracks (``^(.|.){0,25}Z`` takes seconds on a 36-character ID, ``^(.|.)*Z``
never returns), so patterns run on Google's RE2 through the ``google-re2`` binding instead.

RE2's parser is the one Go's was ported from, with the flags of Go's ``syntax.Perl``: ``$`` is
the end of the text unless ``(?m)``, negated classes such as ``[^a]`` match ``\\n``, ``\\d``
``\\w`` ``\\s`` ``\\b`` are ASCII, ``(?U)`` swaps greediness, ``\\pL``/``\\p{Greek}``/
``\\Q..\\E``/``\\z``/``[[:alpha:]]`` work, look-around and back-references are syntax errors,
the same repeat limit (1000) applies, and text is matched as UTF-8. What differs is handled here:

* error texts: RE2 says ``missing ): (``, Go ``error parsing regexp: missing closing ): `(` ``.
  The offending text is the same in both; only the reason is renamed (``_GO_REASON``).
* ``\\C`` (any byte) and ``(?<name>...)`` (accepted by Go only from Go 1.22; Consul 1.16/1.17
  are built with older Go) are accepted by RE2 and refused by Go: ``_go_only_error``.
* ``[\\p`` ending the pattern: Go reads an empty class name, RE2 a bad escape.
* ``\\B`` can hold between two bytes of one UTF-8 character in RE2's search (it tries every
  byte as a start), never in Go's (it starts at characters): such patterns are searched as
  ``(?s:.)*?(?:pattern)`` anchored at the start, which moves one character at a time.

Resources: each pattern's program and lazily built DFA share RE2's ``max_mem`` (``MAX_MEM``; a
search that would need a bigger DFA runs on RE2's NFA, slower but still linear), and a caller
can cap the summed program size of several patterns (``budget``), which bounds the work per
searched byte. A pattern over either limit is refused with Go's own ``expression too large``.

``re2.compile`` is not used: it keeps the last 128 compiled patterns (up to 128 x ``max_mem``
held after a request has gone) and its ``search`` decodes match spans, where a filter only needs
"is there a match": ``GoRegexp.search`` calls the compiled program directly.
"""

from __future__ import annotations

import re

import re2
from re2 import _re2

MAX_MEM = 2 << 20  # bytes per compiled pattern, program and DFA cache (RE2's default: 8 MiB)
# RE2 instructions the patterns of one filter (or one user event) may add up to: (.|.){1000} is
# 8,004. A search costs at most about this many steps per byte when the DFA gives up.
MAX_PROGRAM = 10_000

# RE2's reasons (re2/regexp.cc) -> Go's (regexp/syntax ErrorCode); the text after ": " is the same.
_GO_REASON = {
    "unexpected error": "regexp/syntax: internal error",
    "invalid escape sequence": "invalid escape sequence",
    "invalid character class": "invalid character class",
    "invalid character class range": "invalid character class range",
    "missing ]": "missing closing ]",
    "missing )": "missing closing )",
    "unexpected )": "unexpected )",
    "trailing \\": "trailing backslash at end of expression",
    "no argument for repetition operator": "missing argument to repetition operator",
    "invalid repetition size": "invalid repeat count",
    "bad repetition operator": "invalid nested repetition operator",
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "invalid UTF-8": "invalid UTF-8",
    "invalid named capture group": "invalid named capture",
}
_REASONS_LONGEST_FIRST = sorted(_GO_REASON, key=len, reverse=True)
_GO_ONLY = {"\\C": ("invalid escape sequence", "\\C"), "(?<": ("invalid or unsupported Perl syntax", "(?<")}
_GO_ONLY_RE = re.compile(r"\\C|\(\?<")  # where they may be; the parse decides (_go_only_error)
_ESCAPE_MARKS = "qjkyghmoeiul"  # \q, \j, ...: escapes both Go and RE2 refuse
_GROUP_MARKS = "".join(map(chr, range(1, 32)))  # (?\x01, ...: refused by both


def _options() -> re2.Options:
    opts = re2.Options()
    opts.max_mem = MAX_MEM
    opts.log_errors = False  # RE2 would log every refused pattern on stderr
    opts.never_capture = True  # groups only group: nothing reads submatches
    return opts


_OPTIONS = _options()
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_START = _re2.RE2.Anchor.ANCHOR_START
_NO_MATCH = (-1, -1)


class RegexError(Exception):
    """A pattern Go's ``regexp`` refuses; ``str()`` is Go's text."""

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")
        self.code = code


class GoRegexp:
    """A compiled pattern; ``search(text)`` says whether it matches anywhere in ``text``."""

    __slots__ = ("pattern", "size", "_prog", "_anchor")

    def __init__(self, pattern: str, prog: _re2.RE2, size: int, anchor: _re2.RE2.Anchor) -> None:
        self.pattern = pattern
        self.size = size  # RE2 program instructions: the work per searched byte grows with it
        self._prog = prog
        self._anchor = anchor

    def search(self, text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return bool(self._prog.Match(self._anchor, data, 0, len(data))[0] != _NO_MATCH)

    def __repr__(self) -> str:
        return f"GoRegexp({self.pattern!r})"


def _re2_error(prog: _re2.RE2) -> tuple[str, str]:
    """(RE2's reason, the offending text) of a program that failed to compile."""
    text = prog.error().decode("utf-8", "replace")
    for reason in _REASONS_LONGEST_FIRST:
        if text == reason:
            return reason, ""
        if text.startswith(reason + ": "):
            return reason, text[len(reason) + 2:]
    return text, ""  # "pattern too large - compile failed" (max_mem) and any newer text


def _go_error(pattern: str, reason: str, arg: str) -> RegexError:
    if reason == "invalid escape sequence" and arg in ("\\p", "\\P") and pattern.endswith(arg):
        # "[\p" at the end: Go reads an empty class name there (RE2 a bad escape), unless the \p
        # ends a range ("[a-\p"), a bad escape in both: RE2 tells which by parsing "\pL]" there
        finished = _re2.RE2((pattern[:-2] + "\\pL]").encode("utf-8"), _OPTIONS)
        if finished.ok() or _re2_error(finished) != ("invalid escape sequence", "\\p"):
            return RegexError("invalid character class range", arg)
    if reason == "invalid UTF-8":
        # a Python str is valid UTF-8: RE2 ran past the end of an escape such as "\x{"
        return RegexError("invalid escape sequence", _unfinished_escape(pattern))
    if reason in _GO_REASON:
        return RegexError(_GO_REASON[reason], arg)
    return RegexError("expression too large", pattern)  # RE2 ran out of max_mem


def _unfinished_escape(pattern: str) -> str:
    """The escape that ends the pattern unfinished (RE2 says so only of a final ``\\x{``)."""
    at = pattern.rfind("\\")
    return pattern[at:] if at >= 0 else pattern


def _marker(pattern: str, prefix: str, candidates: str) -> str | None:
    for ch in candidates:
        if prefix + ch not in pattern:
            return prefix + ch
    return None


def _go_only_error(pattern: str, spans: list[tuple[int, int]]) -> RegexError | None:
    """Go's error for a pattern where ``\\C`` or ``(?<`` occur; None if none of them is parsed.

    Each occurrence gets a marker that both parsers refuse with a text the pattern cannot
    otherwise produce, wherever it is parsed as an escape or a group at all (in a class or in
    ``\\Q..\\E`` it stays literal text): ``\\C`` becomes an unused bad escape such as ``\\q``,
    and ``(?<`` gets an unused control character after its ``?``, which leaves the characters
    around it as they were (``[(?<-$`` is still the bad range ``<-$``). RE2, which like Go stops
    at the first error from the left, parses the result: if it stops at a marker, Go stops at
    the construct there; if it stops earlier, that is Go's error too, with the text put back.
    """
    escape = _marker(pattern, "\\", _ESCAPE_MARKS)
    group = _marker(pattern, "(?", _GROUP_MARKS)
    if escape is None or group is None:  # all candidates in use: not a filter-sized pattern
        lo, hi = spans[0]
        return RegexError(*_GO_ONLY[pattern[lo:hi]])
    swaps = {escape: "\\C", group + "<": "(?<"}
    parts, last = [], 0
    for lo, hi in spans:
        parts += [pattern[last:lo], escape if hi - lo == 2 else group + "<"]
        last = hi
    planted = "".join(parts) + pattern[last:]
    prog = _re2.RE2(planted.encode("utf-8"), _OPTIONS)
    if prog.ok():
        return None
    reason, arg = _re2_error(prog)
    if arg == escape:
        return RegexError(*_GO_ONLY["\\C"])
    if arg == group:
        return RegexError(*_GO_ONLY["(?<"])
    for mark, text in swaps.items():
        arg = arg.replace(mark, text)
    return _go_error(pattern, reason, arg)


def _go_only_spans(pattern: str) -> list[tuple[int, int]]:
    """Where ``\\C`` (after an even run of backslashes: an escape) and ``(?<`` occur."""
    spans = []
    for m in _GO_ONLY_RE.finditer(pattern):
        lo = m.start()
        if m.group() == "\\C":
            run = lo
            while run > 0 and pattern[run - 1] == "\\":
                run -= 1
            if (lo - run) % 2:
                continue
        spans.append(m.span())
    return spans


def _quote_state(pattern: str) -> tuple[bool, bool]:
    """(a ``\\B`` outside ``\\Q..\\E``, an unclosed ``\\Q`` at the end) of a pattern that parses."""
    i, nonword_boundary = 0, False
    while (i := pattern.find("\\", i)) >= 0:
        escaped = pattern[i + 1:i + 2]
        if escaped == "Q":
            end = pattern.find("\\E", i + 2)
            if end < 0:
                return nonword_boundary, True
            i = end + 2
            continue
        nonword_boundary = nonword_boundary or escaped == "B"
        i += 2
    return nonword_boundary, False


def compile_re2(pattern: str, budget: list[int] | None = None) -> GoRegexp:
    """Compile ``pattern`` as Go's ``regexp.Compile`` does; ``RegexError`` with Go's text if not.

    ``budget``, if given, is a one-item list holding the program instructions still allowed to
    the patterns of one filter; this pattern's size is taken from it, and a pattern that does
    not fit is ``expression too large``.
    """
    try:
        data = pattern.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: a Go string would hold invalid UTF-8 there
        raise RegexError("invalid UTF-8", pattern) from None
    spans = _go_only_spans(pattern)
    if spans and (err := _go_only_error(pattern, spans)) is not None:
        raise err
    prog = _re2.RE2(data, _OPTIONS)
    if not prog.ok():
        raise _go_error(pattern, *_re2_error(prog))
    size = prog.ProgramSize()
    if budget is not None:
        if size > budget[0]:
            raise RegexError("expression too large", pattern)
        budget[0] -= size
    nonword_boundary, open_quote = _quote_state(pattern)
    if nonword_boundary:
        whole = "(?s:.)*?(?:" + pattern + ("\\E)" if open_quote else ")")
        stepped = _re2.RE2(whole.encode("utf-8"), _OPTIONS)
        if stepped.ok():
            return GoRegexp(pattern, stepped, size, _ANCHOR_START)
    return GoRegexp(pattern, prog, size, _UNANCHORED)
