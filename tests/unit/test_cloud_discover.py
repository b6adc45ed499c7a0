"""Cloud auto-join strings: go-discover's grammar (its own test vectors), String(), the checks cairn
adds, redaction, and the expansion the retry-join loop does on every attempt."""

from __future__ import annotations

import asyncio
import logging

import pytest

from appliance.cloud import discover
from appliance.cloud.discover import DiscoverError, check, expand, go_quote, go_unquote, parse, redact, render

# go-discover config_test.go TestConfigParse
PARSE_OK = [
    ("", None),
    ("key=a", {"key": "a"}),
    ("key=a key2=b", {"key": "a", "key2": "b"}),
    ("key=a+b key2=c/d", {"key": "a+b", "key2": "c/d"}),
    (" key=a    key2=b ", {"key": "a", "key2": "b"}),
    (" key = a   key2 = b ", {"key": "a", "key2": "b"}),
    ('  "k e \\\\\\" y" = "a \\" b" key2=c', {'k e \\" y': 'a " b', "key2": "c"}),
    (
        'secret_access_key="fpOfcHQJAQBczjAxiVpeyLmX1M0M0KPBST+GU2GvEN4="',
        {"secret_access_key": "fpOfcHQJAQBczjAxiVpeyLmX1M0M0KPBST+GU2GvEN4="},
    ),
    (
        'project_name=Test zone_pattern=us-(?west|east).+ tag_value="consul server" credentials_file=xxx',
        {
            "project_name": "Test",
            "zone_pattern": "us-(?west|east).+",
            "tag_value": "consul server",
            "credentials_file": "xxx",
        },
    ),
]

PARSE_ERRORS = [
    ("provider=aws foo", "foo: missing '='"),
    ("key", "key: missing '='"),
    ("key=", "key: missing value"),
    ('key="a', "key: unbalanced quotes"),
    ('key="\\', "key: unterminated escape sequence"),
    ("key=a key=b", "key: duplicate key"),
    ("key key2", "key: missing '='"),
    (
        "secret_access_key=fpOfcHQJAQBczjAxiVpeyLmX1M0M0KPBST+GU2GvEN4=",
        "secret_access_key: - equals in key's value, enclosing double-quote needed "
        'secret_access_key="value-with-=-symbol"',
    ),
    # Go's strconv.Unquote refuses an unknown escape
    ('key="a\\qb"', "key: invalid syntax"),
]

# TestConfigString
STRINGS = [
    ("", ""),
    ("   ", ""),
    ('b=c "a a"="b b"', '"a a"="b b" b=c'),
    ("a=b provider=foo x=y", "provider=foo a=b x=y"),
    (
        'provider=k8s namespace=vault label_selector="app.kubernetes.io/name=vault,component=server"',
        'provider=k8s label_selector="app.kubernetes.io/name=vault,component=server" namespace=vault',
    ),
]

# TestConfigRoundTrip
ROUND_TRIP = [
    "",
    '"a a"="b b" b=c',
    "provider=foo a=b x=y",
    "key=a",
    "key=a key2=b",
    "key=a+b key2=c/d",
    '"k e \\\\\\" y"="a \\" b" key2=c',
    'secret_access_key="fpOfcHQJAQBczjAxiVpeyLmX1M0M0KPBST+GU2GvEN4="',
    'credentials_file=xxx project_name=Test tag_value="consul server" zone_pattern=us-(?west|east).+',
    'provider=k8s label_selector="app.kubernetes.io/name=vault,component=server" namespace=vault',
]


@pytest.mark.parametrize(("text", "want"), PARSE_OK)
def test_parse_vectors(text: str, want: dict | None) -> None:
    assert parse(text) == want


@pytest.mark.parametrize(("text", "error"), PARSE_ERRORS)
def test_parse_error_vectors(text: str, error: str) -> None:
    with pytest.raises(DiscoverError) as exc:
        parse(text)
    assert str(exc.value) == error


@pytest.mark.parametrize(("text", "want"), STRINGS)
def test_string_vectors(text: str, want: str) -> None:
    assert render(parse(text)) == want


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(text: str) -> None:
    assert render(parse(render(parse(text)))) == text


def test_go_escapes() -> None:
    assert go_unquote('"\\u00e9\\x41\\101\\t\\U0001F600"') == "\u00e9AA\t\U0001f600"
    for bad in ('"\\ud800"', '"\\x4"', '"\\400"', '"a\nb"', '"\\\'"'):
        with pytest.raises(DiscoverError):
            go_unquote(bad)
    assert go_quote('a "b"\\\n\x01é') == '"a \\"b\\"\\\\\\n\\x01é"'
    assert go_unquote(go_quote("tab\there\x7f")) == "tab\there\x7f"


def test_tabs_are_not_separators() -> None:
    assert parse("key=a\tb") == {"key": "a\tb"}


GOOD = "provider=aws tag_key=cairn tag_value=prod"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("tag_key=a tag_value=b", "discover: no provider"),
        ("provider=nimbus tag_key=a", "discover: unknown provider nimbus"),
        ("provider=gce tag_value=x", "discover: provider gce is not supported by cairn (supported: aws)"),
        ("provider=aws tag_value=b", "discover-aws: tag_key is required"),
        ("provider=aws tag_key=a", "discover-aws: tag_value is required"),
        (GOOD + " tag_vlaue=x", 'discover-aws: unknown key "tag_vlaue"'),
        (
            GOOD + " addr_type=public_v5",
            'discover-aws: addr_type "public_v5" is not one of private_v4, public_v4, public_v6',
        ),
        (GOOD + " service=eks", 'discover-aws: service "eks" is not one of ec2, ecs'),
        (
            GOOD + " service=ecs addr_type=public_v4",
            "discover-aws: addr_type public_v4 is not available with service=ecs",
        ),
        (GOOD + " ecs_cluster=x", "discover-aws: ecs_cluster needs service=ecs"),
        (GOOD + " region=Europe", 'discover-aws: region "Europe" is not an AWS region name'),
        (
            GOOD + " endpoint=127.0.0.1:5000",
            'discover-aws: endpoint "127.0.0.1:5000" is not an http:// or https:// URL',
        ),
        (GOOD + " endpoint=http://127.0.0.1:99999", 'discover-aws: endpoint "http://127.0.0.1:99999" is not'),
        (GOOD + " access_key_id=AKIA", "discover-aws: access_key_id and secret_access_key go together"),
        (GOOD + " session_token=x", "discover-aws: session_token needs access_key_id and secret_access_key"),
        ('provider=aws tag_key="a', "discover: tag_key: unbalanced quotes"),
    ],
)
def test_check_names_the_mistake(text: str, error: str) -> None:
    with pytest.raises(DiscoverError) as exc:
        check(text)
    assert str(exc.value).startswith(error)


def test_check_accepts_every_documented_key() -> None:
    config = check(
        'provider=aws region=eu-west-1 tag_key=cairn tag_value="prod servers" addr_type=private_v4 '
        "service=ecs ecs_cluster=arn:aws:ecs:eu-west-1:123456789012:cluster/main ecs_family=cairn-server "
        'endpoint=http://127.0.0.1:4566 access_key_id=AKIAEXAMPLE secret_access_key="abc/def+ghi=" '
        "session_token=tok"
    )
    assert config["tag_value"] == "prod servers"
    assert check(GOOD + " addr_type=public_v6")["addr_type"] == "public_v6"


def test_redact_hides_secrets() -> None:
    text = 'provider=aws tag_key=k tag_value=v access_key_id=AKIAX secret_access_key="s3cr/et=" session_token=tok123'
    out = redact(text)
    assert "s3cr" not in out and "tok123" not in out
    assert "secret_access_key=<hidden>" in out and "session_token=<hidden>" in out and "access_key_id=AKIAX" in out
    # a string that does not parse is still redacted
    broken = "provider=aws secret_access_key=abc= session_token=zzz tag_key"
    out = redact(broken)
    assert "abc" not in out and "zzz" not in out


def test_expand_resolves_cloud_entries_on_every_call(caplog: pytest.LogCaptureFixture) -> None:
    answers = [["127.0.0.21", "127.0.0.22"], ["127.0.0.23"]]
    calls: list[str] = []

    def fake_provider(entry: str) -> list[str]:  # the provider's API is exercised in tests/deploy (moto)
        calls.append(entry)
        return answers[len(calls) - 1]

    entries = ["10.0.0.9:8301", GOOD]
    first = asyncio.run(expand(entries, "LAN", discover=fake_provider))
    second = asyncio.run(expand(entries, "LAN", discover=fake_provider))
    assert first == ["10.0.0.9:8301", "127.0.0.21", "127.0.0.22"]
    assert second == ["10.0.0.9:8301", "127.0.0.23"]
    assert len(calls) == 2


def test_expand_logs_a_failing_entry_redacted_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    entry = GOOD + ' access_key_id=AKIAX secret_access_key="very-secret"'

    def failing(text: str) -> list[str]:
        raise DiscoverError(
            "discover-aws: An error occurred (UnauthorizedOperation) when calling the "
            "DescribeInstances operation: You are not authorized"
        )

    with caplog.at_level(logging.INFO, logger="agent"):
        out = asyncio.run(expand([entry, "127.0.0.5"], "LAN", discover=failing))
    assert out == ["127.0.0.5"]
    text = caplog.text
    assert "Cannot discover address" in text and "UnauthorizedOperation" in text
    assert "very-secret" not in text and "secret_access_key=<hidden>" in text


def test_expand_survives_an_unexpected_provider_error(caplog: pytest.LogCaptureFixture) -> None:
    def broken(text: str) -> list[str]:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="agent"):
        assert asyncio.run(expand([GOOD], "WAN", discover=broken)) == []
    assert "RuntimeError: boom" in caplog.text


def test_bad_entry_is_an_error_not_a_crash_when_resolved() -> None:
    with pytest.raises(DiscoverError, match="tag_key is required"):
        discover.addresses("provider=aws tag_value=x")
