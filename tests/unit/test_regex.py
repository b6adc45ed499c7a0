"""The Go regexp engine of filter= and user events (appliance.filter.regex): RE2, linear time.

Expected answers are Go's (regexp.Compile with syntax.Perl, as Consul 1.16/1.17 build it): the
error texts are regexp/syntax's, quoted the way its Error() quotes them.
"""

from __future__ import annotations

import time

import pytest

from appliance.filter.regex import MAX_PROGRAM, GoRegexp, RegexError, compile_re2


def error_of(pattern: str) -> str:
    with pytest.raises(RegexError) as info:
        compile_re2(pattern)
    return str(info.value)


def go(reason: str, text: str) -> str:
    return f"error parsing regexp: {reason}: `{text}`"


@pytest.mark.parametrize("pattern,subject,expected", [
    # Perl flags of Go's parser: $ is the end of text, [^x] and [[:space:]] match \n, . does not
    ("a$", "a\n", False), ("(?m)a$", "a\nb", True), ("[^a]", "\n", True), (".", "\n", False),
    ("(?s).", "\n", True), ("[[:space:]]", "\n", True), (r"\A\z", "", True), ("^b", "a\nb", False),
    ("(?m)^b", "a\nb", True),
    # ASCII Perl classes and word boundaries; Unicode classes and case folding
    (r"\d", "٣", False), (r"\w", "é", False), (r"\bé", " é", False), (r"\pL", "é", True),
    (r"\p{Greek}", "λ", True), (r"\P{Greek}", "λ", False), (r"\p{^Greek}", "a", True),
    ("(?i)k", "\u212a", True), ("(?i)straße", "STRASSE", False), (r"\x{212A}", "\u212a", True),
    # escapes and literals
    (r"\Qa.b\E", "axb", False), (r"\Qa.b", "a.b", True), (r"\x41\101\x{41}", "AAA", True),
    ("x{,5}", "x{,5}", True), ("a{01}", "a{01}", True), (r"\.", "a", False),
    # flags, groups, repeats
    ("a(?i)b|c", "C", True), ("(?i:A)b", "aB", False), ("(?U)a+", "aaa", True),
    ("(?P<word>ab)+", "abab", True), ("x(?i)*", "xXX", True), ("(a|b){2,3}c", "abac", True),
    # \B between the bytes of one character is not a position (Go walks characters)
    (r"\B", "", True), (r"a\B", "ab", True), (r"A\B", "A\u212a", False), (r"\B\x{212A}", "x\u212a", False),
    (r"\Qa\B", "a\\B", True),
])
def test_go_semantics(pattern: str, subject: str, expected: bool) -> None:
    assert compile_re2(pattern).search(subject) is expected


@pytest.mark.parametrize("pattern,reason,text", [
    ("(", "missing closing )", "("), ("a(b", "missing closing )", "a(b"), ("a)", "unexpected )", "a)"),
    ("a**", "invalid nested repetition operator", "**"), ("a+{2}", "invalid nested repetition operator", "+{2}"),
    ("*a", "missing argument to repetition operator", "*"), ("a|?", "missing argument to repetition operator", "?"),
    (r"\Q\E*", "missing argument to repetition operator", "*"),
    ("a{2,1}", "invalid repeat count", "{2,1}"), ("a{1001}", "invalid repeat count", "{1001}"),
    ("((a{100}){100})", "invalid repeat count", "{100}"),
    (r"\1", "invalid escape sequence", r"\1"), (r"\q", "invalid escape sequence", r"\q"),
    (r"\Z", "invalid escape sequence", r"\Z"), (r"\8", "invalid escape sequence", r"\8"),
    (r"\x{110000}", "invalid escape sequence", r"\x{110000"), (r"[a-\d]", "invalid escape sequence", r"\d"),
    (r"\x{", "invalid escape sequence", r"\x{"), (r"\x{4", "invalid escape sequence", r"\x{4"),
    (r"\x4", "invalid escape sequence", r"\x4"), (r"a\\\x{", "invalid escape sequence", r"\x{"),
    (r"[a-\x{", "invalid escape sequence", r"\x{"),
    ("(?=x)", "invalid or unsupported Perl syntax", "(?="), ("(?!x)", "invalid or unsupported Perl syntax", "(?!"),
    ("(?P=n)", "invalid or unsupported Perl syntax", "(?P"), ("(?i", "invalid or unsupported Perl syntax", "(?i"),
    ("[z-a]", "invalid character class range", "z-a"), ("[[:foo:]]", "invalid character class range", "[:foo:]"),
    (r"\pX", "invalid character class range", r"\pX"), (r"\p{Nope}", "invalid character class range", r"\p{Nope}"),
    (r"\p{", "invalid character class range", r"\p{"),
    ("[a", "missing closing ]", "[a"), ("[]", "missing closing ]", "[]"),
    ("\\", "trailing backslash at end of expression", ""),
    ("(?P<>x)", "invalid named capture", "(?P<>"), ("(?P<a-b>x)", "invalid named capture", "(?P<a-b>"),
    ("(?P<n", "invalid named capture", "(?P<n"),
])
def test_go_error_texts(pattern: str, reason: str, text: str) -> None:
    assert error_of(pattern) == go(reason, text)


@pytest.mark.parametrize("pattern,reason,text", [
    # RE2 accepts these; Go (before 1.22 for the named group) does not
    (r"\C", "invalid escape sequence", r"\C"), (r"a[\C]", "invalid escape sequence", r"\C"),
    ("(?<n>x)", "invalid or unsupported Perl syntax", "(?<"), ("(?<!x)", "invalid or unsupported Perl syntax", "(?<"),
    ("(?<=x)", "invalid or unsupported Perl syntax", "(?<"),
    # the first error from the left wins, whichever parser would find it
    (r"a)\C", "unexpected )", r"a)\C"), (r"\q\C", "invalid escape sequence", r"\q"),
    (r"(\C", "invalid escape sequence", r"\C"), (r"[\C", "invalid escape sequence", r"\C"),
    (r"\C(?<n>", "invalid escape sequence", r"\C"), ("(?P<n(?<m>", "invalid named capture", "(?P<n(?<m>"),
    (r"\x(?<", "invalid escape sequence", r"\x(?"), ("[(?<-$]", "invalid character class range", "<-$"),
    # a class ending in \p: an empty class name, unless the \p ends a range
    ("[\\p", "invalid character class range", "\\p"), ("[\\d-\\p", "invalid character class range", "\\p"),
    ("[a-\\p", "invalid escape sequence", "\\p"),
])
def test_where_re2_and_go_differ(pattern: str, reason: str, text: str) -> None:
    assert error_of(pattern) == go(reason, text)


@pytest.mark.parametrize("pattern,subject", [
    (r"\\C", "\\C"), (r"[(?<]", "<"), (r"\Q(?<\C\E", "(?<\\C"), (r"\(?<", "<"), (r"\\(?P<n>x)", "\\x"),
])
def test_look_alikes_of_go_only_syntax_are_fine(pattern: str, subject: str) -> None:
    assert compile_re2(pattern).search(subject)


@pytest.mark.parametrize("pattern", [
    "^(.|.){0,25}Z", "^(.|.)*Z", "(x+x+)+y", "^(a|aa)*$", "(a*)*b", "(.*){1,32}[bc]", "^(\\w+\\s?)*$",
])
def test_pathological_patterns_are_linear(pattern: str) -> None:
    compiled = compile_re2(pattern)
    text = "a" * 20_000 + "!"  # Python's re: exponential in the length for most of these
    started = time.perf_counter()
    for _ in range(20):
        compiled.search(text)
    assert time.perf_counter() - started < 2.0, pattern


def test_memory_is_bounded_with_gos_text() -> None:
    # within Go's limits, beyond what RE2 may use for one pattern (max_mem)
    assert error_of(r"\pL{1000}") == go("expression too large", r"\pL{1000}")
    started = time.perf_counter()
    error_of(r"((\pL{30}){30}){1}")
    assert time.perf_counter() - started < 2.0


def test_program_budget() -> None:
    budget = [MAX_PROGRAM]
    big = compile_re2("(.|.){1000}", budget)
    assert 0 < budget[0] == MAX_PROGRAM - big.size < big.size
    with pytest.raises(RegexError) as info:
        compile_re2("(.|.){1000}", budget)
    assert str(info.value) == go("expression too large", "(.|.){1000}")
    assert compile_re2("^ab+c", budget).search("abbbc")


def test_odd_text() -> None:
    assert error_of("\ud800") == go("invalid UTF-8", "\ud800")
    r = compile_re2("^a.b$")
    assert isinstance(r, GoRegexp) and r.search("aéb") is True
    assert r.search("a\ud800b") in (True, False)  # a lone surrogate in a subject does not raise
    assert compile_re2("").search("") and compile_re2("").search("anything")
