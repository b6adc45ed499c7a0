"""Tests for the filter= expression language (appliance.filter).

The numbered cases are the forty cases of the filtering reference, section 7; the parse-error
vectors are the reference parser's own; the remaining tests pin lexer edges, coercion, Go regexp
semantics, the evaluation limits and robustness on odd data (the regex engine itself:
test_regex.py).
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings, strategies as st

from appliance.filter import Filter, FilterError, compile_filter
from appliance.filter.gostr import parse_int, unquote
from appliance.filter.regex import RegexError, compile_re2

P = "Failed to create boolean expression evaluator: "

S1 = {"ID": "redis1", "Service": "redis", "Tags": ["primary", "production"],
      "Meta": {"env": "production", "foo": "bar"}, "Port": 1234, "Address": "",
      "TaggedAddresses": {"lan": {"Address": "127.0.0.1", "Port": 8000}},
      "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False, "Datacenter": "dc1"}
S3 = {"ID": "redis3", "Service": "redis", "Tags": ["primary", "qa"], "Meta": {"env": "qa"},
      "Port": 1234, "Address": "", "Weights": {"Passing": 1, "Warning": 1},
      "EnableTagOverride": False}
HC = {"Node": "node-1", "CheckID": "svc-web-health", "Name": "Service level check - web",
      "Status": "warning", "Notes": "", "Output": "took 15ms", "ServiceID": "",
      "ServiceName": "web", "ServiceTags": [], "Type": "http"}
CSN = {
    "Node": {"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "foobar",
             "Address": "10.1.10.12", "Datacenter": "dc1",
             "TaggedAddresses": {"lan": "10.1.10.12", "wan": "10.1.10.12"},
             "Meta": {"instance_type": "t2.medium"}},
    "Service": {"ID": "redis", "Service": "redis", "Tags": ["primary"], "Address": "10.1.10.12",
                "TaggedAddresses": {"lan": {"Address": "10.1.10.12", "Port": 8000},
                                    "wan": {"Address": "198.18.1.2", "Port": 80}},
                "Meta": {"redis_version": "4.0"}, "Port": 8000,
                "Weights": {"Passing": 10, "Warning": 1}},
    "Checks": [
        {"Node": "foobar", "CheckID": "service:redis", "Name": "Service 'redis' check",
         "Status": "passing", "ServiceID": "redis", "ServiceName": "redis",
         "ServiceTags": ["primary"]},
        {"Node": "foobar", "CheckID": "serfHealth", "Name": "Serf Health Status",
         "Status": "passing", "ServiceTags": []},
    ],
}
CSN0 = {**copy.deepcopy(CSN), "Checks": []}
SN = {"Node": "node-2", "Address": "198.18.0.2", "Datacenter": "dc1",
      "NodeMeta": {"arch": "arm", "os": "linux"}, "ServiceID": "api-internal",
      "ServiceName": "api-internal", "ServiceTags": ["test", "tag"],
      "ServiceMeta": {"environment": "production"}, "ServicePort": 9090, "CreateIndex": 29}

FIXTURES = {"S1": (S1, "agent_services"), "S3": (S3, "agent_services"),
            "HC": (HC, "health_checks"), "CSN": (CSN, "health_service"),
            "CSN0": (CSN0, "health_service"), "SN": (SN, "catalog_service")}

# (case number, expression, fixture, expected bool or error text without the prefix)
CASES = [
    (1, 'Meta.env == "qa"', "S3", True),
    (2, 'Meta.env == "qa"', "S1", False),
    (3, "Meta.env == qa", "S3", True),
    (4, 'Meta["env"] == `qa`', "S3", True),
    (5, "Service==redis", "S1", True),
    (6, "Service == Meta.env", "S1", False),
    (7, 'ServiceName != ""', "HC", True),
    (8, "Status == passing and Status == critical or ServiceName == web", "HC", True),
    (9, "not ServiceName == web or Status == critical", "HC", False),
    (10, "not not Status == warning", "HC", True),
    (11, 'Status == warning and (Node == "x" or ServiceName == "web")', "HC", True),
    (12, '"prod" in Meta.env', "S1", True),
    (13, '"prod" in Tags', "S1", False),
    (14, 'Tags contains production and "qa" not in Tags', "S1", True),
    (15, 'Meta contains "env"', "S1", True),
    (16, '"" in Service', "S1", True),
    (17, "ServiceTags is empty", "HC", True),
    (18, 'Meta.missing == "x"', "S1", False),
    (19, 'Meta.missing != "x"', "S1", True),
    (20, 'Meta.missing matches "."', "S1", True),
    (21, 'TaggedAddresses.lan.Port == 8000 and TaggedAddresses.wan.Address != "x"', "S1", True),
    (22, 'Port == "1234"', "S1", True),
    (23, 'Port == "0x4d2"', "S1", True),
    (24, "Port == 1234.0", "S1", 'Failed to coerce value "1234.0" for selector "Port": '
                                 'strconv.ParseInt: parsing "1234.0": invalid syntax'),
    (25, "EnableTagOverride == F", "S1", True),
    (26, "EnableTagOverride == yes", "S1",
     'Failed to coerce value "yes" for selector "EnableTagOverride": '
     'strconv.ParseBool: parsing "yes": invalid syntax'),
    (27, 'Service matches "^re" and Service not matches "^RE"', "S1", True),
    (28, r"Output matches `\d+ms`", "HC", True),
    (29, 'Service matches "("', "S1",
     'Failed to compile regular expression "(": error parsing regexp: missing closing ): `(`'),
    (30, "Checks.Status == passing", "CSN", True),
    (31, "Checks.Status != passing", "CSN", False),
    (32, "not (Checks.Status == passing)", "CSN0", True),
    (33, 'Node.Meta.instance_type == "t2.medium" and Service.TaggedAddresses.wan.Port == 80 '
         'and "primary" in Service.Tags', "CSN", True),
    (34, "NodeMeta.os == linux and ServicePort == 9090", "SN", True),
    (35, "service == redis", "S1", 'Selector "service" is not valid'),
    (36, "Datacenter == dc1", "S1", 'Selector "Datacenter" is not valid'),
    (37, "Port contains 12", "S1", 'Invalid match operator "In" for selector "Port"'),
    (38, "Service is empty", "S1", 'Invalid match operator "Is Empty" for selector "Service"'),
    (39, "Address == 10.10.10.10", "SN", '1:17 (16): rule "number": Invalid number literal'),
    (40, "Node == host-name", "SN",
     '1:13 (12): no match found, expected: ".", "[", [ \\t\\r\\n], [a-zA-Z0-9_] or EOF'),
]


@pytest.mark.parametrize("number,expression,fixture,expected", CASES,
                         ids=[f"case{c[0]}" for c in CASES])
def test_reference_case(number: int, expression: str, fixture: str, expected) -> None:
    obj, endpoint = FIXTURES[fixture]
    if isinstance(expected, bool):
        assert compile_filter(expression, endpoint).matches(obj) is expected, number
    else:
        with pytest.raises(FilterError) as info:
            compile_filter(expression, endpoint)
        assert str(info.value) == P + expected, number


PARSE_ERRORS = [
    ('foo == "12x', '1:12 (11): rule "string": Unterminated string literal'),
    ("foo == `12x", '1:12 (11): rule "string": Unterminated string literal'),
    ("foo == 3x", '1:9 (8): rule "number": Invalid number literal'),
    ("foo[3] == abc", '1:5 (4): rule "index": Invalid index'),
    ('x in foo["abc"', '1:15 (14): rule "index": Unclosed index expression'),
    ('foo["abc" == 3', '1:11 (10): rule "index": Unclosed index expression'),
    ("x in 32", '1:6 (5): rule "match": Invalid selector'),
    ("32 == 32", '1:4 (3): no match found, expected: "in", "not" or [ \\t\\r\\n]'),
    ("32 is empty", '1:4 (3): no match found, expected: "in", "not" or [ \\t\\r\\n]'),
    ("x in foo abc", '1:10 (9): no match found, expected: "and", "or", [ \\t\\r\\n] or EOF'),
    ("x in foo and ", '1:14 (13): no match found, expected: "(", "-", "0", "\\"", "`", "not", '
                      '[ \\t\\r\\n], [1-9] or [a-zA-Z]'),
    ("x in foo or not ", '1:17 (16): no match found, expected: "!=", "(", "-", "0", "==", '
                         '"\\"", "`", "contains", "in", "is", "matches", "not", [ \\t\\r\\n], '
                         '[1-9] or [a-zA-Z]'),
    ("(foo == 4", '1:10 (9): rule "grouping": Unmatched parentheses'),
    ("Status == passing AND Node == x",
     '1:19 (18): no match found, expected: "and", "or", [ \\t\\r\\n] or EOF'),
    ('Notes == "a\\"b"', '1:10 (9): rule "string": invalid syntax'),
    ("foo", '1:4 (3): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or '
            '[a-zA-Z0-9_]'),
    ("foo == 08", '1:9 (8): rule "number": Invalid number literal'),
    ("foo == x\nand", '2:4 (12): no match found, expected: [ \\t\\r\\n]'),
]


@pytest.mark.parametrize("expression,expected", PARSE_ERRORS)
def test_parse_error_texts(expression: str, expected: str) -> None:
    # the parse errors do not depend on the endpoint: try one
    with pytest.raises(FilterError) as info:
        compile_filter(expression, "agent_services")
    assert str(info.value) == P + expected


@pytest.mark.parametrize("expression", [
    "not(Status == warning)", "(Status == warning)and(Node == x)", "Status == warning AND x",
    " ", "Checks[0].Status == x", "Checks.0.Status == x", '"x" == Status', "Node == 'x'",
    "Status == a b", "Status =! x", "Status ==", "in Status", "Status is not  nonempty",
])
def test_syntax_errors(expression: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(expression, "health_checks")
    assert str(info.value).startswith(P)


@pytest.mark.parametrize("expression,expected", [
    ("(Status == warning)", True),                 # whole filter in one pair of parens
    ("  ( Status == warning )  ", True),
    ("Status==warning and Node!=x", True),         # == / != need no spaces
    ("Status\t==\nwarning", True),
    ("Status == `warn\ning`", False),
    ('Name == "Service level check - web"', True),
    ('Output == "took\\x2015ms"', True),           # Go escapes in double quotes
    ('Output == "took\\04015ms"', True),
    ('Output == "took\\u002015ms"', True),
    ("Output matches `^took \\d+ms$`", True),      # backticks are raw
    ('Output matches "\\\\d+ms$"', True),
    ("Status in Status", False),                   # value 'Status' is text, not a selector
    ("warn in Status", True),
    ("not not not Status == warning", False),
    ("Status == warning or Status == x and Node == y", True),   # and binds tighter
    ("(Status == x or Status == warning) and Node == node1x", False),
])
def test_lexer_and_precedence(expression: str, expected: bool) -> None:
    assert compile_filter(expression, "health_checks").matches(HC) is expected


def test_keywords_are_not_reserved() -> None:
    # a selector spelled like a keyword is just an unknown field: schema, not syntax, error
    with pytest.raises(FilterError, match='Selector "and" is not valid'):
        compile_filter("and == or", "health_checks")
    with pytest.raises(FilterError, match='Selector "not" is not valid'):
        compile_filter("not == x", "health_checks")


def test_selector_error_prints_prefix_dot_joined() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter('Meta["a b"].x.y == 1', "catalog_nodes")
    assert str(info.value) == P + 'Selector "Meta.a b.x" is not valid'
    with pytest.raises(FilterError) as info:
        compile_filter("Weights == 1", "agent_services")
    assert str(info.value) == P + 'Invalid match operator "Equal" for selector "Weights"'
    with pytest.raises(FilterError) as info:
        compile_filter("CreateIndex == 1", "catalog_service")
    assert str(info.value) == P + 'Selector "CreateIndex" is not valid'
    with pytest.raises(FilterError) as info:
        compile_filter("ServiceTags is empty", "health_service")
    assert str(info.value) == P + 'Selector "ServiceTags" is not valid'


def test_first_error_in_left_to_right_order() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("Port == x or Nope == 1", "agent_services")
    assert "Failed to coerce" in str(info.value)


@pytest.mark.parametrize("raw,ok", [
    ("80", True), ("-1", True), ("+80", True), ("0x50", True), ("0o120", True), ("0120", True),
    ("0b1010000", True), ("8_0", True), ("08", False), ("80.0", False), ("abc", False),
    ("", False), ("_80", False), ("0x", False), ("9223372036854775808", False),
])
def test_go_integer_coercion(raw: str, ok: bool) -> None:
    expression = f"Port == `{raw}`"
    if ok:
        assert compile_filter(expression, "agent_services").matches({"Port": 80}) is (
            raw not in ("-1",))
    else:
        with pytest.raises(FilterError, match="strconv.ParseInt"):
            compile_filter(expression, "agent_services")


def test_out_of_range_text() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("Port == 99999999999999999999", "agent_services")
    assert str(info.value).endswith(
        'strconv.ParseInt: parsing "99999999999999999999": value out of range')
    assert parse_int("-9223372036854775808") == -(1 << 63)


def test_unquote_go_rules() -> None:
    assert unquote('"a\\tb"') == "a\tb"
    assert unquote("`a\\tb`") == "a\\tb"
    for bad in ('"\\q"', '"\\\'"', '"a\nb"', '"\\400"', '"\\ud800"'):
        with pytest.raises(ValueError):
            unquote(bad)


def test_zero_values_for_absent_fields() -> None:
    f = compile_filter('Port == 0 and Kind == "" and TaggedAddresses is empty and PeerName == ""'
                       " and Weights.Passing == 0 and Proxy.Mode == \"\" and not Connect.Native"
                       " == true and Tags is empty and Meta is empty", "agent_services")
    assert f.matches({"ID": "x"})
    assert f.matches({"Tags": None, "Meta": None, "Proxy": None, "Weights": None})


def test_missing_key_dispositions() -> None:
    obj = {"Meta": {"env": "qa"}, "TaggedAddresses": None}
    expect = {"==": False, "!=": True, "matches": True, "not matches": True}
    for op, want in expect.items():
        assert compile_filter(f"Meta.nope {op} x", "agent_services").matches(obj) is want
    assert compile_filter('"x" in Meta.nope', "agent_services").matches(obj) is False
    assert compile_filter('"x" not in Meta.nope', "agent_services").matches(obj) is True
    assert compile_filter("TaggedAddresses.lan.Port == 0", "agent_services").matches(obj) is False
    assert compile_filter("TaggedAddresses.lan.Port != 1", "agent_services").matches(obj) is True


def test_any_semantics_over_nested_slices() -> None:
    svc = {"Proxy": {"Upstreams": [{"DestinationName": "db"}, {"DestinationName": "cache",
                                                                 "LocalBindPort": 9}]}}
    ok = compile_filter("Proxy.Upstreams.DestinationName == db and Proxy.Upstreams.LocalBindPort"
                        " == 9 and Proxy.Upstreams is not empty", "agent_services")
    assert ok.matches(svc)
    none = compile_filter("Proxy.Upstreams.DestinationName != db", "agent_services")
    assert none.matches(svc) is True  # "some upstream is not db"
    assert none.matches({"Proxy": {"Upstreams": []}}) is False


def test_odd_data_does_not_raise() -> None:
    f = compile_filter('Checks.Status == passing or "a" in Service.Tags or Node.Meta.x == y or '
                       "Service.Port == 3 or Checks is empty", "health_service")
    for obj in ({}, {"Node": None, "Service": None, "Checks": None},
                {"Checks": [None, 3, "x", {"Status": None}]},
                {"Service": {"Tags": [None, 1, {"a": 1}], "Port": "3"}, "Node": {"Meta": []}},
                {"Service": [], "Node": "x", "Checks": {"Status": "passing"}}):
        f.matches(obj)
    assert f.apply([{}, {"Checks": [{"Status": "passing"}]}]) == [
        {}, {"Checks": [{"Status": "passing"}]}]


def test_apply_keeps_order_and_empty_filter_matches_all() -> None:
    objs = [{"Node": "a"}, {"Node": "b"}, {"Node": "a"}]
    assert compile_filter("Node == a", "catalog_nodes").apply(objs) == [objs[0], objs[2]]
    everything = compile_filter("", "catalog_nodes")
    assert isinstance(everything, Filter)
    assert everything.apply(objs) == objs


def test_catalog_endpoints() -> None:
    node = {"Node": "n1", "Address": "10.0.0.1", "TaggedAddresses": {"lan": "10.0.0.1"},
            "Meta": {"consul-network-segment": ""}}
    assert compile_filter('Meta["consul-network-segment"] == ""', "catalog_nodes").matches(node)
    assert compile_filter("TaggedAddresses.lan == `10.0.0.1`", "catalog_nodes").matches(node)
    assert compile_filter("ServiceTaggedAddresses.lan_ipv4.Port == 80 and ServiceWeights.Passing"
                          " == 1 and ServiceProxy.MeshGateway.Mode == \"\"",
                          "catalog_services").matches(
        {"ServiceTaggedAddresses": {"lan_ipv4": {"Address": "a", "Port": 80}},
         "ServiceWeights": {"Passing": 1, "Warning": 1}})
    assert compile_filter("Service == web", "catalog_node_services").matches({"Service": "web"})


def test_agent_checks_defers_schema_errors() -> None:
    f = compile_filter("Foo == 1", "agent_checks")
    assert f.apply([]) == []
    with pytest.raises(FilterError) as info:
        f.apply([HC])
    assert str(info.value) == 'Selector "Foo" is not valid'
    with pytest.raises(FilterError) as info:
        compile_filter("Foo ==", "agent_checks")
    assert str(info.value).startswith(P)


def test_unknown_endpoint() -> None:
    with pytest.raises(ValueError):
        compile_filter("a == b", "nope")


@pytest.mark.parametrize("pattern,subject,expected", [
    ("^re", "redis", True), ("(?i)^RE", "redis", True), ("a$", "a\n", False),
    # Go's regexp.Compile parses with syntax.Perl, which has ClassNL: [^a] matches a newline
    ("(?m)a$", "a\nb", True), ("[^a]", "\n", True), ("(?s)[^a]", "\n", True),
    (r"\pL+$", "héllo", True), (r"\d", "٣", False), (r"\bfoo\b", "a foo b", True),
    (r"\Qa.b\E", "axb", False), ("x{,5}", "x{,5}", True), ("a(?i)b|c", "C", True),
    (r"\x{41}\101\x41", "AAA", True), ("[[:digit:]]+", "42", True), ("a*?b", "aab", True),
    ("(?U)a+", "aaa", True), (r"\z", "", True),
])
def test_re2_semantics(pattern: str, subject: str, expected: bool) -> None:
    assert bool(compile_re2(pattern).search(subject)) is expected


@pytest.mark.parametrize("pattern,message", [
    ("(", "missing closing ): `(`"), ("a)", "unexpected ): `a)`"),
    ("a**", "invalid nested repetition operator: `**`"),
    ("*a", "missing argument to repetition operator: `*`"),
    ("a{2,1}", "invalid repeat count: `{2,1}`"), ("a{1001}", "invalid repeat count: `{1001}`"),
    (r"\1", "invalid escape sequence: `\\1`"), (r"\q", "invalid escape sequence: `\\q`"),
    (r"\Z", "invalid escape sequence: `\\Z`"), ("(?=x)", "invalid or unsupported Perl syntax: `(?=`"),
    ("(?<!x)", "invalid or unsupported Perl syntax: `(?<`"),
    ("[z-a]", "invalid character class range: `z-a`"), ("[a", "missing closing ]: `[a`"),
    ("[[:foo:]]", "invalid character class range: `[:foo:]`"),
    ("\\", "trailing backslash at end of expression: ``"),
    ("(?P<>x)", "invalid named capture: `(?P<>`"),
])
def test_re2_errors(pattern: str, message: str) -> None:
    with pytest.raises(RegexError) as info:
        compile_re2(pattern)
    assert str(info.value) == "error parsing regexp: " + message


def test_regex_error_in_filter_is_quoted_go_style() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter('Service matches "a\\\\1"', "agent_services")
    assert str(info.value) == (P + 'Failed to compile regular expression "a\\\\1": '
                               "error parsing regexp: invalid escape sequence: `\\1`")


def test_expression_length_limit() -> None:
    from appliance.filter import MAX_EXPRESSION_LENGTH
    head = 'Node == "'
    fits = head + "x" * (MAX_EXPRESSION_LENGTH - len(head) - 1) + '"'
    assert len(fits) == MAX_EXPRESSION_LENGTH
    assert not compile_filter(fits, "catalog_nodes").matches({"Node": "y"})
    too_long = fits[:-1] + 'x"'
    with pytest.raises(FilterError) as info:
        compile_filter(too_long, "catalog_nodes")
    assert str(info.value) == P + (f"Expression length ({MAX_EXPRESSION_LENGTH + 1}) exceeds the limit "
                                   f"({MAX_EXPRESSION_LENGTH})")


def test_match_expression_limit() -> None:
    from appliance.filter import MAX_MATCHES
    # a balanced tree of `or`s: the parser's own nesting limit is not what stops it
    def tree(names: list[str]) -> str:
        if len(names) == 1:
            return f"Node == {names[0]}"
        half = len(names) // 2
        return f"({tree(names[:half])}) or ({tree(names[half:])})"

    names = [f"n{i}" for i in range(MAX_MATCHES)]
    f = compile_filter(tree(names), "catalog_nodes")
    assert f.matches({"Node": "n31"}) and not f.matches({"Node": "n32"})
    with pytest.raises(FilterError) as info:
        compile_filter(tree(names + ["n32"]), "catalog_nodes")
    assert str(info.value) == P + f"Number of match expressions ({MAX_MATCHES + 1}) exceeds the limit ({MAX_MATCHES})"
    # counted before anything else is checked, like a parse error (agent checks too)
    with pytest.raises(FilterError) as info:
        compile_filter(tree(["x"] * (MAX_MATCHES + 1)).replace("Node", "Nope"), "agent_checks")
    assert "Number of match expressions" in str(info.value)


def test_regex_program_budget_is_shared_by_a_filter() -> None:
    big = "(.|.){1000}"  # about 8,000 RE2 instructions: one fits the budget, two do not
    assert compile_filter(f"Node matches `{big}` or Node matches `^a`", "catalog_nodes")
    with pytest.raises(FilterError) as info:
        compile_filter(f"Node matches `{big}` and Address matches `{big}`", "catalog_nodes")
    assert str(info.value) == (P + f'Failed to compile regular expression "{big}": error parsing '
                               f"regexp: expression too large: `{big}`")


def test_pathological_regex_filter_is_fast() -> None:
    import time
    nodes = [{"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": f"node-{i}"} for i in range(2000)]
    for expr in ('ID matches "^(.|.){0,25}Z"', 'ID matches "^(.|.)*Z"', 'Node matches "(x+x+)+y"'):
        f = compile_filter(expr, "catalog_nodes")
        started = time.perf_counter()
        assert f.apply(nodes) == []
        assert time.perf_counter() - started < 1.0, expr  # Python's re: seconds per node, or never


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(FilterError):
        compile_filter("(" * 400 + "Node == x" + ")" * 400, "catalog_nodes")
    assert compile_filter("(" * 8 + "Node == x" + ")" * 8, "catalog_nodes").matches({"Node": "x"})


_ALPHABET = st.sampled_from(list(' ()"`[].=!-_09aAzZ\t\n\\') +
                            ["and", "or", "not", "in", "is", "empty", "contains", "matches",
                             "Status", "Meta", "Checks", "Node"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_random_text_only_raises_filter_error(text: str) -> None:
    for endpoint in ("health_service", "agent_checks"):
        try:
            f = compile_filter(text, endpoint)
            f.apply([CSN, CSN0, {}])  # agent checks raise their deferred schema errors here
        except FilterError:
            continue


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=25).map(" ".join))
def test_random_token_soup_only_raises_filter_error(text: str) -> None:
    try:
        f = compile_filter(text, "health_service")
    except FilterError:
        return
    assert isinstance(f.matches(CSN), bool)


# -- evaluation in slices (appliance.http.query.render_filtered) ---------------------------------


def _catalog(count: int) -> list[dict]:
    return [{"Node": f"n{i}", "Meta": {"rack": f"r{i % 7}"}} for i in range(count)]


def _render_of(nodes: list[dict], keep) -> callable:
    def render() -> list[dict]:
        calls.append(1)
        return [dict(n) for n in nodes if keep(dict(n))]  # fresh objects, like most renders
    calls: list[int] = []
    render.calls = calls
    return render


def test_small_filtered_render_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import appliance.http.query as query
    from appliance.http.query import FilterFn, render_filtered
    # An answer evaluated within the first pass renders once. The pass is 10 ms of wall time, which
    # a loaded machine can take from 50 objects: the rule is tested, not the machine's speed.
    monkeypatch.setattr(query, "FIRST_PASS_S", 60.0)
    nodes = _catalog(50)
    keep = FilterFn(compile_filter('Meta.rack == "r3"', "catalog_nodes").matches)
    render = _render_of(nodes, keep)
    body, index = asyncio.run(render_filtered(keep, render, lambda: 7, 7))
    assert [n["Node"] for n in body] == [n["Node"] for n in nodes if n["Meta"]["rack"] == "r3"]
    assert index == 7 and len(render.calls) == 1
    assert keep({"Meta": {"rack": "r3"}}) and not keep({})  # outside a render: plain evaluation


def test_large_filtered_render_yields_to_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import appliance.http.query as query
    monkeypatch.setattr(query, "FIRST_PASS_S", 0.0)  # defer from the 16th object on
    monkeypatch.setattr(query, "SLICE_S", 0.0)  # back to the loop after every evaluation
    nodes = _catalog(2000)
    want = [n["Node"] for n in nodes if n["Meta"]["rack"] in ("r1", "r5")]

    async def run() -> tuple[list[dict], int, int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        keep = query.FilterFn(compile_filter('Meta.rack == "r1" or Meta.rack == "r5"', "catalog_nodes").matches)
        render = _render_of(nodes, keep)
        body, index = await query.render_filtered(keep, render, lambda: 3, 3)
        task.cancel()
        return body, index, len(render.calls), ticks

    body, index, renders, ticks = asyncio.run(run())
    assert [n["Node"] for n in body] == want
    assert index == 3 and renders == 2 and ticks > 1000


def test_filtered_render_follows_data_that_changed_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import appliance.http.query as query
    monkeypatch.setattr(query, "FIRST_PASS_S", 0.0)
    monkeypatch.setattr(query, "SLICE_S", 0.0)
    nodes = _catalog(500)
    index = [10]

    async def writer() -> None:  # the store changes while the filter is evaluated
        await asyncio.sleep(0)
        nodes.insert(0, {"Node": "new", "Meta": {"rack": "r2"}})
        del nodes[100]
        nodes[200] = {"Node": "moved", "Meta": {"rack": "r2"}}
        index[0] = 11

    async def run() -> tuple[list[dict], int]:
        keep = query.FilterFn(compile_filter('Meta.rack == "r2"', "catalog_nodes").matches)
        task = asyncio.create_task(writer())
        body, at = await query.render_filtered(keep, _render_of(nodes, keep), lambda: index[0], 10)
        await task
        return body, at

    body, at = asyncio.run(run())
    assert at == 11
    assert [n["Node"] for n in body] == [n["Node"] for n in nodes if n["Meta"]["rack"] == "r2"]
    assert "new" in [n["Node"] for n in body] and "moved" in [n["Node"] for n in body]
