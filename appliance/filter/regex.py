"""RE2 (Go ``regexp``) patterns checked and translated for Python's ``re``.

``matches`` uses Go's RE2 dialect.  Python's ``re`` differs both ways (it accepts look-around and
back-references, lacks ``\\pL``/``\\z``/``\\Q..\\E``/POSIX classes, treats ``$`` and ``[^x]``
differently around newlines, is Unicode-aware in ``\\d\\w\\s\\b``).  ``compile_re2`` walks the
pattern once, the way RE2's parser does, raising ``RegexError`` with Go's message
(``error parsing regexp: <reason>: `<text>` ``) for the syntax RE2 rejects, and emitting an
equivalent Python pattern: Perl/POSIX/Unicode classes become explicit code-point ranges, ``$``
(without ``m``) becomes ``\\Z``, negated classes exclude ``\\n`` unless ``s`` is set, mid-group
flag changes become scoped flag groups, ``U`` (ungreedy) flips quantifier laziness, and named
groups become plain groups.  Known gaps: Unicode script names (``\\p{Greek}``) are rejected, and
Python's backtracking engine has no linear-time guarantee.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_MAX_RUNE = 0x10FFFF
_PERL = {
    "d": [(48, 57)],
    "s": [(9, 10), (12, 13), (32, 32)],
    "w": [(48, 57), (65, 90), (95, 95), (97, 122)],
}
_POSIX = {
    "alnum": [(48, 57), (65, 90), (97, 122)], "alpha": [(65, 90), (97, 122)],
    "ascii": [(0, 127)], "blank": [(9, 9), (32, 32)], "cntrl": [(0, 31), (127, 127)],
    "digit": [(48, 57)], "graph": [(33, 126)], "lower": [(97, 122)], "print": [(32, 126)],
    "punct": [(33, 47), (58, 64), (91, 96), (123, 126)], "space": [(9, 13), (32, 32)],
    "upper": [(65, 90)], "word": [(48, 57), (65, 90), (95, 95), (97, 122)],
    "xdigit": [(48, 57), (65, 70), (97, 102)],
}
_CATEGORIES = {
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn",
    "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk",
    "Sm", "So", "Z", "Zl", "Zp", "Zs",
}
_WORD = "[0-9A-Za-z_]"
_SIMPLE = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}


class RegexError(Exception):
    """An RE2 syntax error; ``str()`` is Go's text."""

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")


@lru_cache(maxsize=None)
def _category_ranges(name: str) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for cp in range(_MAX_RUNE + 1):
        cat = unicodedata.category(chr(cp))
        if cat == "Cn" or not cat.startswith(name):
            continue
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return tuple(out)


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, nxt = [], 0
    for lo, hi in sorted(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= _MAX_RUNE:
        out.append((nxt, _MAX_RUNE))
    return out


def _emit_class(ranges: list[tuple[int, int]], negate: bool) -> str:
    if not ranges:
        return "[^\\x00-\\U0010ffff]" if not negate else "[\\x00-\\U0010ffff]"
    body = "".join(
        "\\U%08x" % lo if lo == hi else "\\U%08x-\\U%08x" % (lo, hi) for lo, hi in sorted(ranges))
    return ("[^" if negate else "[") + body + "]"


def _flag_group(old: dict, new: dict) -> str:
    on = "".join(f for f in "ims" if new[f] and not old[f])
    off = "".join(f for f in "ims" if old[f] and not new[f])
    return "(?" + on + ("-" + off if off else "") + ":"


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.s = pattern
        self.n = len(pattern)
        self.out: list[str] = []
        self.flags = {"i": False, "m": False, "s": False, "U": False}
        self.atom_start = 0

    # -- escapes -------------------------------------------------------------------------------
    def escape(self, j: int) -> tuple[int, int]:
        """Parse the escape at s[j] == '\\\\' as a single code point; return (rune, next index)."""
        s, n = self.s, self.n
        if j + 1 >= n:
            raise RegexError("trailing backslash at end of expression", "")
        c, k = s[j + 1], j + 2
        if c.isascii() and not c.isalnum():
            return ord(c), k
        if c in "01234567":
            if c != "0" and (k >= n or s[k] not in "01234567"):
                raise RegexError("invalid escape sequence", s[j:k])
            value = int(c)
            for _ in range(2):
                if k < n and s[k] in "01234567":
                    value, k = value * 8 + int(s[k]), k + 1
            return value, k
        if c == "x":
            if k >= n:
                raise RegexError("invalid escape sequence", s[j:k])
            first, k = s[k], k + 1
            if first == "{":
                value, digits = 0, 0
                while True:
                    if k >= n:
                        raise RegexError("invalid escape sequence", s[j:k])
                    ch, k = s[k], k + 1
                    if ch == "}":
                        break
                    if ch not in "0123456789abcdefABCDEF":
                        raise RegexError("invalid escape sequence", s[j:k])
                    value, digits = value * 16 + int(ch, 16), digits + 1
                    if value > _MAX_RUNE:
                        raise RegexError("invalid escape sequence", s[j:k])
                if digits == 0:
                    raise RegexError("invalid escape sequence", s[j:k])
                return value, k
            second = ""
            if k < n:
                second, k = s[k], k + 1
            hexdigits = "0123456789abcdefABCDEF"
            if first not in hexdigits or not second or second not in hexdigits:
                raise RegexError("invalid escape sequence", s[j:k])
            return int(first + second, 16), k
        if c in _SIMPLE:
            return _SIMPLE[c], k
        raise RegexError("invalid escape sequence", s[j:k])

    def unicode_class(self, j: int) -> tuple[list[tuple[int, int]], int] | None:
        s = self.s
        if not (s.startswith("\\p", j) or s.startswith("\\P", j)):
            return None
        negate = s[j + 1] == "P"
        if j + 2 < self.n and s[j + 2] == "{":
            end = s.find("}", j)
            if end < 0:
                raise RegexError("invalid character class range", s[j:])
            seq, name, k = s[j:end + 1], s[j + 3:end], end + 1
        else:
            k = min(j + 3, self.n)
            seq, name = s[j:k], s[j + 2:k]
        if name.startswith("^"):
            negate, name = not negate, name[1:]
        if name == "Any":
            ranges = [(0, _MAX_RUNE)]
        elif name in _CATEGORIES:
            ranges = list(_category_ranges(name))
        else:
            raise RegexError("invalid character class range", seq)
        return (_complement(ranges) if negate else ranges), k

    def perl_class(self, j: int) -> tuple[list[tuple[int, int]], int] | None:
        s = self.s
        if j + 1 < self.n and s[j] == "\\" and s[j + 1].lower() in _PERL:
            ranges = _PERL[s[j + 1].lower()]
            return (_complement(ranges) if s[j + 1].isupper() else list(ranges)), j + 2
        return None

    def char_class(self, j: int) -> int:
        s, n = self.s, self.n
        k, negate, first = j + 1, False, True
        if k < n and s[k] == "^":
            negate, k = True, k + 1
        ranges: list[tuple[int, int]] = []
        while k >= n or s[k] != "]" or first:
            if k >= n:
                raise RegexError("missing closing ]", s[j:])
            first = False
            if s.startswith("[:", k) and k + 2 < n:
                end = s.find(":]", k + 2)
                if end >= 0:
                    name = s[k + 2:end]
                    neg_posix = name.startswith("^")
                    if name.lstrip("^") not in _POSIX or name.count("^") > 1:
                        raise RegexError("invalid character class range", s[k:end + 2])
                    group = _POSIX[name.lstrip("^")]
                    ranges += _complement(group) if neg_posix else group
                    k = end + 2
                    continue
            found = self.unicode_class(k) or self.perl_class(k)
            if found:
                ranges += found[0]
                k = found[1]
                continue
            start = k
            lo, k = self.class_char(k, j)
            hi = lo
            if k + 1 < n and s[k] == "-" and s[k + 1] != "]":
                hi, k = self.class_char(k + 1, j)
                if hi < lo:
                    raise RegexError("invalid character class range", s[start:k])
            ranges.append((lo, hi))
        if negate and not self.flags["s"]:
            ranges.append((10, 10))
        self.out.append(_emit_class(ranges, negate))
        return k + 1

    def class_char(self, k: int, class_start: int) -> tuple[int, int]:
        if k >= self.n:
            raise RegexError("missing closing ]", self.s[class_start:])
        if self.s[k] == "\\":
            return self.escape(k)
        return ord(self.s[k]), k + 1

    # -- repetition ----------------------------------------------------------------------------
    def repeat_braces(self, j: int) -> tuple[int, int, int] | None:
        """Parse {n}, {n,} or {n,m} at j; None when it is a literal brace (as RE2 does)."""
        m = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.s, j)
        if not m:
            return None
        lo_txt, hi_txt = m.group(1), m.group(3)
        for txt in (lo_txt, hi_txt):
            if txt and len(txt) > 1 and txt[0] == "0":
                return None
        lo = int(lo_txt) if len(lo_txt) <= 9 else -1
        if m.group(2) is None:
            hi = lo
        elif hi_txt == "":
            hi = -1
        else:
            hi = int(hi_txt) if len(hi_txt) <= 9 else 1001
        return lo, hi, m.end()

    # -- main loop -----------------------------------------------------------------------------
    def translate(self) -> str:  # noqa: C901 - mirrors the shape of RE2's parse loop
        s, n, out = self.s, self.n, self.out
        # group stack entries: [saved flags, base flags, out index of the group, extra closes]
        groups: list[list] = []
        top = [dict(self.flags), dict(self.flags), 0, 0]
        atom: int | None = None
        last_repeat: int | None = None
        i = 0
        while i < n:
            c = s[i]
            repeat_at: int | None = None
            if c == "(":
                if s.startswith("(?P<", i) and n - i > 4:
                    end = s.find(">", i)
                    if end < 0:
                        raise RegexError("invalid named capture", s[i:])
                    name = s[i + 4:end]
                    if not name or not all(ch.isascii() and (ch.isalnum() or ch == "_")
                                           for ch in name):
                        raise RegexError("invalid named capture", s[i:end + 1])
                    groups.append(top)
                    top = [dict(self.flags), dict(self.flags), len(out), 0]
                    out.append("(")
                    i, atom = end + 1, None
                elif s.startswith("(?", i):
                    j, new, sign, saw = i + 2, dict(self.flags), 1, False
                    while True:
                        if j >= n:
                            raise RegexError("invalid or unsupported Perl syntax", s[i:j])
                        ch, j = s[j], j + 1
                        if ch in "imsU":
                            new[ch], saw = sign > 0, True
                        elif ch == "-" and sign > 0:
                            sign, saw = -1, False
                        elif ch in ":)" and (sign > 0 or saw):
                            break
                        else:
                            raise RegexError("invalid or unsupported Perl syntax", s[i:j])
                    if ch == ":":
                        groups.append(top)
                        top = [dict(self.flags), dict(new), len(out), 0]
                        out.append(_flag_group(self.flags, new))
                    else:
                        out.append(_flag_group(self.flags, new))
                        top[3] += 1
                    self.flags = new
                    i, atom = j, None
                else:
                    groups.append(top)
                    top = [dict(self.flags), dict(self.flags), len(out), 0]
                    out.append("(")
                    i, atom = i + 1, None
            elif c == ")":
                if not groups:
                    raise RegexError("unexpected )", s)
                out.append(")" * (top[3] + 1))
                self.flags = top[0]
                atom = top[2]
                top = groups.pop()
                i += 1
            elif c == "|":
                out.append(")" * top[3] + "|")
                if top[3]:
                    out.append(_flag_group(top[1], self.flags))
                    top[3] = 1
                i, atom = i + 1, None
            elif c in "*+?" or (c == "{" and self.repeat_braces(i)):
                if c == "{":
                    lo, hi, j = self.repeat_braces(i)  # type: ignore[misc]
                    if lo < 0 or lo > 1000 or hi > 1000 or (hi >= 0 and lo > hi):
                        raise RegexError("invalid repeat count", s[i:j])
                    op = "{%d}" % lo if hi == lo else ("{%d,}" % lo if hi < 0 else
                                                       "{%d,%d}" % (lo, hi))
                else:
                    op, j = c, i + 1
                lazy = j < n and s[j] == "?"
                if lazy:
                    j += 1
                if last_repeat is not None:
                    raise RegexError("invalid nested repetition operator", s[last_repeat:j])
                if atom is None:
                    raise RegexError("missing argument to repetition operator", s[i:j])
                out[atom:] = ["(?:" + "".join(out[atom:]) + ")"]
                out.append(op + ("?" if lazy != self.flags["U"] else ""))
                repeat_at, i = i, j
            else:
                self.atom_start = len(out)
                i = self.atom(i)
                atom = self.atom_start
            last_repeat = repeat_at
        if groups:
            raise RegexError("missing closing )", s)
        out.append(")" * top[3])
        return "".join(out)

    def atom(self, i: int) -> int:
        s, out = self.s, self.out
        c = s[i]
        if c == "[":
            return self.char_class(i)
        if c == "^":
            out.append("^")
        elif c == "$":
            out.append("$" if self.flags["m"] else "\\Z")
        elif c == ".":
            out.append(".")
        elif c == "\\":
            if i + 1 >= self.n:
                raise RegexError("trailing backslash at end of expression", "")
            e = s[i + 1]
            if e == "A":
                out.append("\\A")
            elif e == "z":
                out.append("\\Z")
            elif e in "bB":
                w = _WORD
                look = (f"(?<={w})(?!{w})|(?<!{w})(?={w})" if e == "b"
                        else f"(?<={w})(?={w})|(?<!{w})(?!{w})")
                out.append("(?-i:" + look + ")")
            elif e == "C":
                raise RegexError("invalid escape sequence", "\\C")
            elif e == "Q":
                end = s.find("\\E", i + 2)
                text = s[i + 2:] if end < 0 else s[i + 2:end]
                if not text:
                    out.append("(?:)")
                else:
                    # each quoted character is its own atom: a quantifier binds to the last one
                    out.append("".join(re.escape(ch) for ch in text[:-1]))
                    self.atom_start = len(out)
                    out.append(re.escape(text[-1]))
                return self.n if end < 0 else end + 2
            else:
                found = self.unicode_class(i) or self.perl_class(i)
                if found:
                    out.append(_emit_class(found[0], False))
                    return found[1]
                rune, k = self.escape(i)
                out.append(re.escape(chr(rune)))
                return k
            return i + 2
        else:
            out.append(re.escape(c))
        return i + 1


def compile_re2(pattern: str) -> "re.Pattern[str]":
    """Validate ``pattern`` as RE2 and return an equivalent compiled Python pattern."""
    translated = _Translator(pattern).translate()
    try:
        return re.compile(translated)
    except (re.error, RecursionError, OverflowError, ValueError):
        raise RegexError("expression too large", pattern) from None
