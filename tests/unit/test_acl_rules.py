"""The ACL rules language: parsing (Consul's texts), matching, merging, the any/all checks,
KeyWritePrefix, and the 40 precedence cases of the reference (security.md §6.4)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from appliance.acl.authorizer import ALLOW, DEFAULT, DENIED, Authorizer, Tree
from appliance.acl.builtin import GLOBAL_MANAGEMENT_RULES, denied_text
from appliance.acl.policy import PolicyError, Rules, merge, parse

RESOURCES = ("agent", "key", "node", "service", "session", "event", "query")


def p1(res: str) -> str:
    if res == "service":
        return ('service "foo" { policy = "write" intentions = "write" }\nservice "football" { policy = "deny" }\n'
                'service_prefix "foot" { policy = "read" intentions = "read" }\n'
                'service_prefix "fo" { policy = "read" intentions = "read" }')
    return (f'{res} "foo" {{ policy = "write" }}\n{res} "football" {{ policy = "deny" }}\n'
            f'{res}_prefix "foot" {{ policy = "read" }}\n{res}_prefix "fo" {{ policy = "read" }}')


def authz(*texts: str, allow: bool = False) -> Authorizer:
    return Authorizer(merge(parse(t) for t in texts), allow)


P1_CASES = [  # (case number, level, segment, allowed)
    (1, "read", "fo", True), (2, "write", "fo", False), (3, "read", "for", True), (4, "write", "for", False),
    (5, "read", "foo", True), (6, "write", "foo", True), (7, "read", "foot", True), (8, "write", "foot", False),
    (9, "read", "foot2", True), (10, "write", "foot2", False), (11, "read", "food", True),
    (12, "write", "food", False), (13, "read", "football", False), (14, "write", "football", False),
]


@pytest.mark.parametrize("res", RESOURCES)
@pytest.mark.parametrize(("case", "level", "segment", "allowed"), P1_CASES)
def test_cases_1_to_14_prefer_exact_matches(res: str, case: int, level: str, segment: str, allowed: bool) -> None:
    assert authz(p1(res)).allowed(res, segment, level) is allowed, case
    assert authz(p1(res), allow=True).allowed(res, segment, level) is allowed, case


def test_case_15_intentions_from_service_rules() -> None:
    a = authz(p1("service"))
    assert a.allowed("intention", "foo", "write")
    assert not a.allowed("intention", "fo", "write")
    assert not a.allowed("intention", "football", "read")


def test_case_16_empty_policy_defaults() -> None:
    empty = Authorizer(Rules(), False)
    assert empty.decide("key", "foo", "read") == DEFAULT
    allow = Authorizer(Rules(), True)
    assert allow.allowed("key", "foo", "write") and allow.allowed("operator", "", "write")
    assert not allow.allowed("acl", "", "read") and not allow.snapshot()
    assert not empty.allowed("key", "foo", "read") and not empty.allowed("acl", "", "read")


@pytest.mark.parametrize(("case", "text", "read", "write"), [
    (17, 'service "foo" { policy = "write" intentions = "write" }\n'
         'service_prefix "" { policy = "deny" intentions = "deny" }', ALLOW, DENIED),
    (18, 'service "foo" { policy = "write" intentions = "deny" }\n'
         'service_prefix "" { policy = "write" intentions = "write" }', ALLOW, DENIED),
    (19, 'service "foo" { policy = "write" intentions = "write" }\n'
         'service_prefix "" { policy = "write" intentions = "write" }', ALLOW, ALLOW),
    (20, 'service "foo" { policy = "write" intentions = "write" }', ALLOW, DEFAULT),
    (21, 'service "foo" { policy = "write" intentions = "deny" }', DEFAULT, DENIED),
])
def test_cases_17_to_21_intention_wildcards(case: int, text: str, read: str, write: str) -> None:
    a = authz(text)
    assert a.decide("intention", "*", "read") == read, case
    assert a.decide("intention", "*", "write") == write, case


def tree(exact: dict[str, str] | None = None, prefix: dict[str, str] | None = None) -> Tree:
    return Tree(exact or {}, prefix or {})


@pytest.mark.parametrize(("case", "t", "expected"), [
    (22, tree(prefix={"": "write", "foo": "deny"}), (ALLOW, ALLOW, ALLOW)),
    (23, tree(prefix={"": "list"}), (ALLOW, ALLOW, DENIED)),
    (24, tree(prefix={"": "read"}), (ALLOW, DENIED, DENIED)),
    (25, tree(exact={"foo": "write"}, prefix={"": "deny"}), (ALLOW, ALLOW, ALLOW)),
    (26, tree(prefix={"": "deny", "foo": "read"}), (ALLOW, DENIED, DENIED)),
])
def test_cases_22_to_26_any_allowed(case: int, t: Tree, expected: tuple[str, str, str]) -> None:
    assert tuple(t.any_allowed(level) for level in ("read", "list", "write")) == expected, case


def test_case_27_all_allowed_and_28_no_rules() -> None:
    t = tree(prefix={"": "write", "foo": "list"})
    assert [t.all_allowed(level) for level in ("read", "list", "write")] == [ALLOW, ALLOW, DENIED]
    for level in ("read", "list", "write"):
        assert tree().any_allowed(level) == DEFAULT and tree().all_allowed(level) == DEFAULT


def test_cases_29_to_31_key_write_prefix() -> None:
    assert authz('key_prefix "" { policy = "write" }\nkey "foo/bar" { policy = "read" }'
                 ).key_write_prefix_decision("foo/") == DENIED
    a = authz('key_prefix "foo/" { policy = "write" }')
    assert [a.key_write_prefix_decision(p) for p in ("foo/", "foo/x", "bar/")] == [ALLOW, ALLOW, DEFAULT]
    assert authz('key "foo/" { policy = "write" }').key_write_prefix_decision("foo/") == DEFAULT
    assert authz('key "foo/" { policy = "write" }', allow=True).key_write_prefix("foo/")


def test_case_32_key_list() -> None:
    a = authz('key_prefix "" { policy = "list" }')
    assert a.allowed("key", "a/", "list") and a.allowed("key", "a/b", "read") and not a.allowed("key", "a/b", "write")


def test_cases_33_to_35_merging() -> None:
    assert not authz('key_prefix "app/" { policy = "write" }', 'key_prefix "app/" { policy = "deny" }'
                     ).allowed("key", "app/x", "read")
    assert authz('key_prefix "app/" { policy = "write" }', 'key_prefix "" { policy = "deny" }'
                 ).allowed("key", "app/x", "write")
    assert authz('node "n1" { policy = "read" }', 'node "n1" { policy = "write" }').allowed("node", "n1", "write")


def test_cases_36_to_38_scalars() -> None:
    a = authz('operator = "read"')
    assert a.allowed("mesh", "", "read") and not a.allowed("mesh", "", "write")
    b = authz('mesh = "write"\noperator = "deny"')
    assert b.allowed("mesh", "", "write") and not b.allowed("operator", "", "read")
    c = authz('acl = "read"', allow=True)
    assert c.allowed("acl", "", "read") and not c.allowed("acl", "", "write") and not c.snapshot()


@pytest.mark.parametrize(("text", "error"), [
    ('key_prefix "x" { policy = "list" }', None),
    ('node_prefix "x" { policy = "list" }', "Invalid node_prefix policy: "),
    ('keyring = "nope"', 'Invalid keyring policy: "nope"'),
    ('keyring = ""', None),
    ('key_prefix "a" { policy = "WRITE" }', None),  # case 40: levels are lowercased
    ('acl = "nope"', 'Invalid acl policy: "nope"'),
    ('service "x" { policy = "read" intentions = "list" }', "Invalid service intentions policy: "),
    ('agent "x" { }', 'Invalid agent policy: &acl.AgentRule{Node:"x", Policy:""}'),
    ("acl = ", "Failed to parse ACL rules: At 1:7: "),
    ('acl = "read"\nacl = "write"', 'Failed to parse ACL rules: The argument "acl" was already set'),
    ('{"key_prefix": {"": {"policy": "read"', "Failed to parse ACL rules: At 1:"),
    ('namespace "x" { policy = "write" }', None),
    ("", None),
])
def test_cases_39_40_parse(text: str, error: str | None) -> None:
    if error is None:
        parse(text)
    else:
        with pytest.raises(PolicyError) as info:
            parse(text)
        assert str(info.value).startswith(error)


def test_case_40_level_is_lowercased_and_block_names_are_case_sensitive() -> None:
    assert authz('key_prefix "a" { policy = "WRITE" }').allowed("key", "a/b", "write")
    assert parse('KEY_PREFIX "a" { policy = "write" }') == Rules()


def test_json_rules_are_the_same_as_hcl() -> None:
    assert parse('{"key_prefix":{"":{"policy":"read"}},"acl":"write","service":[{"web":{"policy":"write"}}]}') == \
        parse('key_prefix "" { policy = "read" }\nacl = "write"\nservice "web" { policy = "write" }')


def test_global_management_grants_everything_but_is_not_manage_all() -> None:
    a = authz(GLOBAL_MANAGEMENT_RULES)
    for res in ("agent", "event", "key", "node", "query", "service", "session", "intention"):
        assert a.allowed(res, "anything", "write")
    for res in ("acl", "keyring", "operator", "mesh", "peering"):
        assert a.allowed(res, "", "write")
    assert a.snapshot() and a.key_write_prefix("") and a.all_allowed("node", "read")


def test_denied_texts() -> None:
    assert denied_text("00000000-0000-0000-0000-000000000002", "key:read", "foo") == (
        "Permission denied: anonymous token lacks permission 'key:read' on \"foo\". The anonymous token is used "
        "implicitly when a request does not specify a token.")
    assert denied_text("abc", "operator:read", None) == \
        "Permission denied: token with AccessorID 'abc' lacks permission 'operator:read'"


SEGMENTS = st.text(alphabet="abf/o", max_size=5)
LEVELS = st.sampled_from(["read", "write", "deny", "list"])
RULES = st.lists(st.tuples(st.sampled_from(["exact", "prefix"]), SEGMENTS, LEVELS), max_size=6)


def build(rules: list[tuple[str, str, str]], resource: str = "key") -> Rules:
    out = Rules()
    for kind, segment, level in rules:
        out.put(kind, resource, segment, level)
    return out


@given(RULES, st.sampled_from(["exact", "prefix"]), SEGMENTS, SEGMENTS, st.sampled_from(["read", "list", "write"]),
       st.booleans())
def test_adding_a_deny_never_grants(rules: list[tuple[str, str, str]], kind: str, deny_at: str, segment: str,
                                    level: str, allow: bool) -> None:
    before = Authorizer(build(rules), allow)
    after = Authorizer(merge([build(rules), build([(kind, deny_at, "deny")])]), allow)
    assert not (after.allowed("key", segment, level) and not before.allowed("key", segment, level))
    assert not (after.key_write_prefix(segment) and not before.key_write_prefix(segment))
    assert not (after.any_allowed("key", level) and not before.any_allowed("key", level))
    assert not (after.all_allowed("key", level) and not before.all_allowed("key", level))


@given(RULES, SEGMENTS, SEGMENTS, LEVELS)
def test_longest_prefix_wins(rules: list[tuple[str, str, str]], base: str, extra: str, level: str) -> None:
    """A prefix rule longer than any other covering rule decides, whatever the shorter ones say."""
    longest = base + extra + "z"  # longer than every generated segment's covering prefix
    merged = merge([build([r for r in rules if r[0] == "prefix" or r[1] != longest + "q"]),
                    build([("prefix", longest, level)])])
    a = Authorizer(merged, False)
    want = merged.prefix["key"][longest]
    assert a.tree("key").rule(longest + "q") == want
    assert a.tree("key").rule(longest) == merged.exact.get("key", {}).get(longest, want)
