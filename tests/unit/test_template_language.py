"""The template language (appliance.template): Go text/template syntax and consul-template's
functions, parsed and executed without an agent (dependency answers come from a dict)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from appliance.template import Answers, Dep, Template, TemplateError
from appliance.template.deps import AGENT_SELF

NOW = datetime(2024, 1, 2, 15, 4, 5, 123000, tzinfo=UTC)


def kv_entry(key: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"Key": key, "Value": base64.b64encode(value.encode()).decode(), "CreateIndex": 5,
            "ModifyIndex": 7, "LockIndex": 0, "Flags": 0, **extra}  # fmt: skip


def health(node: str, sid: str, port: int, *, tags: tuple[str, ...] = (), addr: str = "",
           checks: tuple[str, ...] = ("passing",)) -> dict[str, Any]:
    return {
        "Node": {"ID": f"id-{node}", "Node": node, "Address": f"10.0.0.{len(node)}", "Datacenter": "dc1",
                 "TaggedAddresses": {}, "Meta": {"rack": "r1"}},
        "Service": {"ID": sid, "Service": "web", "Tags": list(tags), "Address": addr, "Port": port, "Meta": {}},
        "Checks": [{"CheckID": f"c{i}", "Status": s} for i, s in enumerate(checks)],
    }  # fmt: skip


WEB = [
    health("b-node", "web2", 8081, tags=("v1", "prod"), checks=("passing", "warning")),
    health("a-node", "web1", 8080, tags=("v2",), addr="192.168.1.1"),
    health("c-node", "web3", 8082, checks=("critical",)),
]

ANSWERS: dict[Dep, Any] = {
    Dep("", "/v1/kv/app/name"): [kv_entry("app/name", "cairn")],
    Dep("", "/v1/kv/app/missing"): None,
    Dep("", "/v1/kv/app", (("recurse", ""),)): [
        kv_entry("app/", ""), kv_entry("app/name", "cairn"), kv_entry("app/port", "8080"),
        kv_entry("app/db/host", "db1"), kv_entry("app/db/", ""),
    ],
    Dep("", "/v1/health/service/web", (("passing", "1"),)): [WEB[1]],
    Dep("", "/v1/health/service/web"): WEB,
    Dep("", "/v1/health/service/web", (("tag", "v1"), ("passing", "1"))): [
        health("b-node", "web2", 8081, tags=("v1", "prod", "v1")),
    ],
    Dep("", "/v1/health/service/web", (("dc", "east"), ("passing", "1"))): [],
    Dep("", "/v1/catalog/services"): {"web": ["v2", "v1", "v1"], "consul": [], "api": ["metrics"]},
    Dep("", "/v1/catalog/nodes"): [
        {"ID": "2", "Node": "n2", "Address": "10.0.0.2", "Datacenter": "dc1"},
        {"ID": "1", "Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1"},
    ],
    Dep("", "/v1/catalog/node/n1"): {
        "Node": {"ID": "1", "Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1"},
        "Services": {"web1": {"ID": "web1", "Service": "web", "Tags": ["b", "a"], "Port": 80},
                     "api": {"ID": "api", "Service": "api", "Tags": [], "Port": 81}},
    },
    AGENT_SELF: {"Config": {"NodeName": "n1"}},
    Dep("", "/v1/catalog/datacenters"): ["dc1", "dc2"],
}
ENV = {"HOME": "/home/op", "EMPTY": ""}


def render(text: str, data: dict[Dep, Any] | None = None, **kw: Any) -> str:
    return Template("t.ctmpl", text, **kw).render(Answers(ANSWERS if data is None else data), ENV, lambda: NOW)


def error_of(text: str) -> str:
    with pytest.raises(TemplateError) as info:
        render(text)
    return str(info.value)


# -- syntax ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "out"), [
    ("plain text", "plain text"),
    ("{{23 -}} < {{- 45}}", "23<45"),
    ("a  \n {{- 1 }}  \n b", "a1  \n b"),
    ("a {{ 1 -}} \n\t b", "a 1b"),
    ("{{-3}}", "-3"),
    ("x{{/* a comment */}}y", "xy"),
    ("x {{- /* trimmed comment */ -}} y", "xy"),
    ('{{ "quoted \\"s\\" \\t\\u00e9" }}', 'quoted "s" \té'),
    ("{{ `raw \\n` }}", "raw \\n"),
    ("{{ 'a' }} {{ 0x1F }} {{ 1_000 }} {{ 1.5 }} {{ 1e3 }} {{ 0o17 }} {{ 0b101 }}", "97 31 1000 1.5 1000 15 5"),
    ("{{ true }} {{ false }} {{ nil }}", "true false <nil>"),
    ('{{ "a" | printf "%s-%s" "b" }}', "b-a"),
    ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
    ("{{ $x := 1 }}{{ if true }}{{ $x = 3 }}{{ end }}{{ $x }}", "3"),
    ("{{ with $y := \"v\" }}{{ . }}{{ $y }}{{ end }}", "vv"),
    ("{{ with \"\" }}no{{ else }}empty{{ end }}", "empty"),
    ("{{ with \"\" }}no{{ else with \"w\" }}{{ . }}{{ end }}", "w"),
    ("{{ if 0 }}a{{ else if \"\" }}b{{ else if 1 }}c{{ else }}d{{ end }}", "c"),
    ("{{ range $i, $e := split \",\" \"a,b\" }}{{ $i }}={{ $e }} {{ end }}", "0=a 1=b "),
    ("{{ range split \",\" \"\" }}x{{ else }}none{{ end }}", "none"),
    ("{{ range 3 }}{{ . }}{{ end }}", "012"),
    ("{{ range loop 5 }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ if eq . 3 }}{{ break }}{{ end }}"
     "{{ . }}{{ end }}", "02"),
    ('{{ define "row" }}<{{ . }}>{{ end }}{{ template "row" "x" }}{{ template "row" 2 }}', "<x><2>"),
    ('{{ block "b" "in" }}[{{ . }}]{{ end }}', "[in]"),
    ("{{ (split \",\" \"a,b\").Contains \"b\" }}", "true"),
    ("{{ $m := parseJSON `{\"a\":{\"b\":\"c\"}}` }}{{ $m.a.b }} {{ $m.x }} {{ $m.x.y }}", "c <no value> <no value>"),
    ("{{ (parseJSON `[1,2]`) }} {{ parseJSON `{\"k\":[true,null]}` }}", "[1 2] map[k:[true <nil>]]"),
])  # fmt: skip
def test_syntax(text: str, out: str) -> None:
    assert render(text) == out


def test_range_over_a_map_visits_keys_in_sorted_order() -> None:
    text = '{{ range $k, $v := parseJSON `{"zeta":1,"alpha":2,"mid":3}` }}{{ $k }}={{ $v }};{{ end }}'
    assert render(text) == "alpha=2;mid=3;zeta=1;"
    assert render('{{ range parseJSON `{"b":"x","a":"y"}` }}{{ . }}{{ end }}') == "yx"


def test_variables_end_with_their_block() -> None:
    assert "undefined variable" in error_of("{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}")


@pytest.mark.parametrize(("text", "where", "what"), [
    ("{{ nope }}", "t.ctmpl:1:4", 'function "nope" not defined'),
    ("line1\nline2 {{ if }}", "t.ctmpl:2:13", "missing value for if"),
    ("a\nb\n  {{ end }}", "t.ctmpl:3:6", "unexpected {{end}}"),
    ("{{ if 1 }}x", "t.ctmpl:1:12", "unexpected EOF"),
    ("{{ .A", "t.ctmpl:1:1", "unclosed action"),
    ('{{ "abc }}', "t.ctmpl:1:4", "unterminated quoted string"),
    ("{{ $u }}", "t.ctmpl:1:4", 'undefined variable "$u"'),
    ("{{ 1 | 2 }}", "t.ctmpl:1:", "non executable command in pipeline stage 2"),
    ("x {{/* open", "t.ctmpl:1:3", "unclosed comment"),
    ("{{ 12ab }}", "t.ctmpl:1:4", "bad number syntax"),
    ("{{ range $a, $b, $c := . }}{{ end }}", "t.ctmpl:1:", "unexpected"),
    ("{{ break }}", "t.ctmpl:1:4", "{{break}} outside {{range}}"),
    ("{{ template \"none\" }}", "t.ctmpl:1:4", 'no template "none"'),
    ("\n {{ len 3 }}", "t.ctmpl:2:5", 'executing "t.ctmpl" at <len>: error calling len: len of type int'),
    ("{{ index (split \",\" \"a\") 4 }}", "t.ctmpl:1:4", "index out of range: 4"),
    ("{{ (parseJSON `5`).x }}", "t.ctmpl:1:5", "can't evaluate field x in type int"),
    ("{{ join \",\" }}", "t.ctmpl:1:4", "wrong number of args for join: want 2 got 1"),
    ('{{ eq 1 "a" }}', "t.ctmpl:1:4", "incompatible types for comparison"),
    ('{{ "x" 1 }}', "t.ctmpl:1:4", "can't give argument to non-function"),
    ("{{ range 1.5 }}{{ end }}", "t.ctmpl:1:10", "range can't iterate over 1.5"),
])  # fmt: skip
def test_errors_carry_file_line_and_column(text: str, where: str, what: str) -> None:
    message = error_of(text)
    assert message.startswith(f"template: {where}"), message
    assert what in message, message


def test_custom_delimiters() -> None:
    assert render('[[ key "app/name" ]] {{ x }}', left="[[", right="]]") == "cairn {{ x }}"


def test_a_denied_function_is_an_error_when_called() -> None:
    with pytest.raises(TemplateError, match="function 'env' is disabled"):
        render('{{ env "HOME" }}', denylist=["env"])


# -- Go builtins -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "out"), [
    ('{{ printf "%d|%5d|%-5d|%05d|%x|%X|%o|%b|%c|%q" 42 42 42 -42 255 255 8 5 65 "a\\"b" }}',
     '42|   42|42   |-0042|ff|FF|10|101|A|"a\\"b"'),
    ('{{ printf "%s|%v|%t|%.2f|%8.3f|%e|%g|%T|%%" "s" (split "," "a,b") true 3.14159 2.5 1234.5 0.5 1 }}',
     "s|[a b]|true|3.14|   2.500|1.234500e+03|0.5|int|%"),
    ('{{ printf "%d" "x" }} {{ printf "%s" }} {{ printf "a" 1 }}', "%!d(string=x) %!s(MISSING) a%!(EXTRA int=1)"),
    ('{{ print 1 2 "a" "b" 3 }}', "1 2ab3"),
    ('{{ println "a" 1 }}', "a 1\n"),
    ('{{ len "héllo" }} {{ len (split "," "a,b,c") }} {{ len (parseJSON `{"a":1}`) }}', "6 3 1"),
    ('{{ index (split "," "a,b") 1 }} {{ index (parseJSON `{"k":{"j":"v"}}`) "k" "j" }} {{ index "ab" 0 }}', "b v 97"),
    ('{{ slice "abcd" 1 3 }} {{ slice (split "," "a,b,c") 1 }}', "bc [b c]"),
    ("{{ eq 1 1 }} {{ eq 1 2 3 1 }} {{ ne \"a\" \"b\" }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt 1.5 2.5 }} "
     "{{ ge \"b\" \"a\" }}",
     "true true true true true false true"),
    ("{{ and 1 \"x\" }} {{ and 1 0 }} {{ or 0 \"\" }} {{ or 0 \"y\" }} {{ not 0 }} {{ not \"a\" }}",
     "x 0  y true false"),
    ("{{ and false (index nil 1) }}", "false"),
    ('{{ html "<a href=\'x\'>&" }} {{ js "a\'b<" }} {{ urlquery "a b&c" }}',
     "&lt;a href=&#39;x&#39;&gt;&amp; a\\'b\\u003C a+b%26c"),
])  # fmt: skip
def test_builtins(text: str, out: str) -> None:
    assert render(text) == out


def test_call_refuses_a_non_function() -> None:
    assert "error calling call: non-function of type int" in error_of("{{ call 1 }}")


# -- consul-template helpers -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "out"), [
    ('{{ env "HOME" }}|{{ env "NOPE" }}|{{ envOrDefault "EMPTY" "d" }}|{{ mustEnv "HOME" }}', "/home/op||d|/home/op"),
    ("{{ timestamp }}", "2024-01-02T15:04:05Z"),
    ('{{ timestamp "2006-01-02 15:04:05.000 Mon Jan 3PM -07:00" }}', "2024-01-02 15:04:05.123 Tue Jan 3PM +00:00"),
    ('{{ timestamp "unix" }}', str(int(NOW.timestamp()))),
    ('{{ split "," "a,b,,c" | join ";" }}', "a;b;;c"),
    ('{{ "a.b.c" | replaceAll "." "_" }}', "a_b_c"),
    ('{{ "web-01" | regexReplaceAll "(\\\\w+)-(\\\\d+)" "$2-$1" }} {{ regexMatch "^w" "web" }}', "01-web true"),
    ('{{ toLower "AbC" }} {{ toUpper "abc" }} {{ toTitle "hello world" }} {{ trimSpace "  x  " }}',
     "abc ABC Hello World x"),
    ('{{ trimPrefix "pre" "prefix" }} {{ trimSuffix "fix" "prefix" }} {{ trim "-" "--x--" }}', "fix pre x"),
    ('{{ parseJSON `{"b":[1,2.5,"<"],"a":null}` | toJSON }}', '{"a":null,"b":[1,2.5,"\\u003c"]}'),
    ('{{ parseJSON `{"b":1,"a":{}}` | toJSONPretty }}', '{\n  "a": {},\n  "b": 1\n}'),
    ('{{ parseJSON `["<&>"]` | toUnescapedJSON }}', '["<&>"]'),
    ('{{ parseBool "true" }} {{ parseInt "-42" }} {{ parseFloat "1.5" }} {{ parseUint "7" }}', "true -42 1.5 7"),
    ('{{ if "prod" | in (split "," "dev,prod") }}in{{ end }} {{ split "," "a,b" | contains "b" }}', "in true"),
    ('{{ $t := split "," "a,b,c" }}{{ containsAll (split "," "a,b") $t }} {{ containsAny (split "," "x,c") $t }} '
     '{{ containsNone (split "," "x") $t }} {{ containsNotAll (split "," "a,x") $t }}', "true true true true"),
    ('{{ base64Encode "hi" }} {{ base64Decode "aGk=" }} {{ base64URLEncode "??>" }} {{ base64URLDecode "Pz8-" }}',
     "aGk= hi Pz8- ??>"),
    ('{{ sha256Hex "a" | printf "%.8s" }} {{ md5sum "a" }}', "ca978112 0cc175b9c0f1b6a831c399e269772661"),
    ('{{ indent 2 "a\\nb" }}', "  a\n  b"),
    ("{{ add 1 2 }} {{ 5 | subtract 2 }} {{ multiply 2 3 }} {{ 10 | divide 3 }} {{ 7 | modulo 4 }} "
     "{{ minimum 1 2 }} {{ maximum 1 2 }} {{ add 0.5 1 }}", "3 3 6 3 3 1 2 1.5"),
    ("{{ range loop 1 3 }}{{ . }}{{ end }}", "12"),
])  # fmt: skip
def test_helpers(text: str, out: str) -> None:
    assert render(text) == out


def test_scratch_lives_for_one_render() -> None:
    text = ('{{ scratch.Set "a" 1 }}{{ scratch.SetX "a" 2 }}{{ scratch.Get "a" }} {{ scratch.Key "b" }} '
            '{{ scratch.MapSet "m" "z" 1 }}{{ scratch.MapSetX "m" "y" 2 }}{{ scratch.MapSetX "m" "y" 3 }}'
            '{{ range scratch.MapValues "m" }}{{ . }}{{ end }}')
    template = Template("t", text)
    assert template.render(Answers({}), {}, lambda: NOW) == "1 false 21"
    assert template.render(Answers({}), {}, lambda: NOW) == "1 false 21"


def test_timestamp_in_another_zone() -> None:
    t = datetime(2024, 7, 9, 8, 5, 0, tzinfo=timezone(timedelta(hours=-7)))
    text = '{{ timestamp "Jan _2 03:04:05 -0700 Z07:00 06 002" }}'
    assert Template("t", text).render(Answers({}), {}, lambda: t) == "Jul  9 08:05:00 -0700 -07:00 24 191"


def test_helper_errors() -> None:
    assert "required environment variable NOPE is missing" in error_of('{{ mustEnv "NOPE" }}')
    assert "division by zero" in error_of("{{ divide 0 1 }}")
    assert "invalid syntax" in error_of('{{ parseInt "x" }}')
    assert "error calling parseJSON" in error_of('{{ parseJSON "{" }}')


# -- dependencies ------------------------------------------------------------------------------


def test_key_and_key_or_default() -> None:
    assert render('{{ key "app/name" }} {{ key "/app/name" }}') == "cairn cairn"
    assert render('{{ keyOrDefault "app/missing" "d" }} {{ keyOrDefault "app/name" "d" }}') == "d cairn"
    assert render('{{ keyExists "app/missing" }} {{ keyExists "app/name" }}') == "false true"


def test_a_missing_key_leaves_the_render_incomplete() -> None:
    answers = Answers(ANSWERS)
    Template("t", '{{ key "app/missing" }}').render(answers, {}, lambda: NOW)
    assert answers.missing == {Dep("", "/v1/kv/app/missing")}


def test_unanswered_dependencies_are_recorded_as_missing() -> None:
    answers = Answers({})
    text = '{{ keyOrDefault "a" "d" }}{{ range service "db@east" }}x{{ end }}'
    out = Template("t", text).render(answers, {}, lambda: NOW)
    assert out == "d"
    assert answers.missing == {
        Dep("", "/v1/kv/a"),
        Dep("", "/v1/health/service/db", (("dc", "east"), ("passing", "1"))),
    }


def test_ls_and_tree() -> None:
    assert render('{{ range ls "app" }}{{ .Key }}={{ .Value }};{{ end }}') == "name=cairn;port=8080;"
    assert render('{{ range tree "app" }}{{ .Key }}={{ .Value }};{{ end }}') == "name=cairn;port=8080;db/host=db1;"
    assert render('{{ range tree "app" }}{{ .Path }} {{ .ModifyIndex }};{{ end }}').startswith("app/name 7;")
    assert render('{{ with tree "app" | explode }}{{ .db.host }} {{ .name }}{{ end }}') == "db1 cairn"
    by_key = '{{ range $k, $v := tree "app" | byKey }}{{ $k }}:{{ range $v }}{{ .Key }}{{ end }};{{ end }}'
    assert render(by_key) == "db:host;"


def test_service_with_filters_tags_and_datacenter() -> None:
    passing = '{{ range service "web" }}{{ .Address }}:{{ .Port }} {{ .Status }};{{ end }}'
    assert render(passing) == "192.168.1.1:8080 passing;"
    nodes = '{{ range service "web|any" }}{{ .Node }}/{{ .ID }}/{{ .Status }};{{ end }}'
    assert render(nodes) == "a-node/web1/passing;b-node/web2/warning;c-node/web3/critical;"
    two = '{{ range service "web|passing,warning" }}{{ .ID }};{{ end }}'
    assert render(two) == "web1;web2;"
    assert render('{{ range service "web" "critical" }}{{ .ID }}{{ end }}') == "web3"
    tagged = '{{ range service "v1.web" }}{{ .ID }} {{ .Tags }} {{ .Address }}{{ end }}'
    assert render(tagged) == "web2 [prod v1] 10.0.0.6"
    assert render('{{ range service "web@east" }}x{{ else }}none{{ end }}') == "none"
    assert render('{{ range service "web|any" }}{{ if .Tags.Contains "prod" }}{{ .ID }}{{ end }}{{ end }}') == "web2"
    by_tag = '{{ range $tag, $s := service "web|any" | byTag }}{{ $tag }}={{ len $s }};{{ end }}'
    assert render(by_tag) == "prod=1;v1=1;v2=1;"
    assert "invalid filter" in error_of('{{ service "web|bogus" }}')
    assert "invalid format" in error_of('{{ service "a b" }}')


def test_maintenance_is_its_own_status() -> None:
    entry = health("m", "web9", 1, checks=("passing",))
    entry["Checks"].append({"CheckID": "_service_maintenance:web9", "Status": "critical"})
    data = {Dep("", "/v1/health/service/web"): [entry]}
    assert render('{{ range service "web|maintenance" }}{{ .Status }}{{ end }}', data) == "maintenance"
    assert render('{{ range service "web|critical" }}x{{ end }}', data) == ""


def test_catalog_functions() -> None:
    assert render("{{ range services }}{{ .Name }}{{ .Tags }};{{ end }}") == "api[metrics];consul[];web[v1 v2];"
    assert render("{{ range nodes }}{{ .Node }}@{{ .Address }};{{ end }}") == "n1@10.0.0.1;n2@10.0.0.2;"
    one = '{{ with node "n1" }}{{ .Node.Address }}:{{ range .Services }}{{ .Service }}{{ .Tags }},{{ end }}{{ end }}'
    assert render(one) \
        == "10.0.0.1:api[],web[a b],"
    assert render("{{ with node }}{{ .Node.Node }}{{ end }}") == "n1"
    gone = '{{ with node "gone" }}x{{ else }}no node{{ end }}'
    assert render(gone, {Dep("", "/v1/catalog/node/gone"): None}) == "no node"
    assert render("{{ datacenters }}") == "[dc1 dc2]"


def test_to_json_of_dependency_structures() -> None:
    out = render('{{ range ls "app" }}{{ if eq .Key "name" }}{{ toJSON . }}{{ end }}{{ end }}')
    assert out.startswith('{"Path":"app/name","Key":"name","Value":"cairn","Exists":true,')
