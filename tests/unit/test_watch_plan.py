"""The watch plan core: Consul's parsing texts, the endpoint of each type, and when a handler fires."""

from __future__ import annotations

import logging

import pytest

from appliance.watches.plan import Plan, WatchError, encode, event_index, parse
from appliance.watches.runner import compile_watch


@pytest.mark.parametrize(("params", "path", "query"), [
    ({"type": "key", "key": "a/b c"}, "/v1/kv/a/b%20c", ()),
    ({"type": "keyprefix", "prefix": "app/", "stale": True}, "/v1/kv/app/", (("recurse", ""), ("stale", ""))),
    ({"type": "services", "datacenter": "dc2"}, "/v1/catalog/services", (("dc", "dc2"),)),
    ({"type": "nodes"}, "/v1/catalog/nodes", ()),
    ({"type": "service", "service": "web", "tag": ["a", "b"], "passingonly": True},
     "/v1/health/service/web", (("tag", "a"), ("tag", "b"), ("passing", "1"))),
    ({"type": "checks"}, "/v1/health/state/any", ()),
    ({"type": "checks", "state": "critical", "tag": "x"}, "/v1/health/state/critical", (("tag", "x"),)),
    ({"type": "checks", "service": "web"}, "/v1/health/checks/web", ()),
    ({"type": "event", "name": "deploy"}, "/v1/event/list", (("name", "deploy"),)),
])
def test_endpoints(params: dict, path: str, query: tuple) -> None:
    spec = parse(params)
    assert (spec.path, spec.params) == (path, query)


@pytest.mark.parametrize(("params", "text"), [
    ({}, "Watch type must be specified"),
    ({"type": "bogus"}, "Unsupported watch type: bogus"),
    ({"type": "key"}, "Must specify a single key to watch"),
    ({"type": "keyprefix"}, "Must specify a single prefix to watch"),
    ({"type": "service"}, "Must specify a single service to watch"),
    ({"type": "checks", "service": "a", "state": "any"}, "Cannot specify service and state"),
    ({"type": "key", "key": 3}, "Expecting key to be a string"),
    ({"type": "key", "key": "k", "stale": "yes"}, "Expecting stale to be a boolean"),
    ({"type": "service", "service": "s", "tag": 4}, "Expecting tag to be a string or []string"),
    ({"type": "nodes", "key": "k"}, "Invalid parameters: [key]"),
    ({"type": "key", "key": "k", "handler_type": "http"},
     "Handler type 'http' requires 'http_handler_config' to be set"),
    ({"type": "key", "key": "k", "handler_type": "http", "http_handler_config": {"method": "PUT"}},
     "Requires 'path' to be set"),
])
def test_refusals(params: dict, text: str) -> None:
    with pytest.raises(WatchError) as err:
        parse(params)
    assert str(err.value) == text


def test_http_handler_config_defaults() -> None:
    spec = parse({"type": "nodes", "handler_type": "http",
                  "http_handler_config": {"path": "http://127.0.0.1:1/h", "header": {"x": ["1", "2"]},
                                          "timeout": "2.5s"}})
    cfg = spec.http_handler
    assert cfg is not None
    assert (cfg.method, cfg.timeout_s, dict(cfg.header), cfg.tls_skip_verify) == ("POST", 2.5, {"x": ("1", "2")}, False)


@pytest.mark.parametrize(("params", "text"), [
    ({"type": "key", "key": "k"}, "Must define a watch handler"),
    ({"type": "key", "key": "k", "args": ["a"], "handler": "b"}, "Only one watch handler allowed"),
    ({"type": "key", "key": "k", "args": ["a"], "handler_type": "http",
      "http_handler_config": {"path": "http://x"}}, "Only one watch handler allowed"),
    ({"type": "key", "key": "k", "handler_type": "exec", "args": ["a"]}, "Handler type 'exec' not recognized"),
    ({"type": "connect_roots", "args": ["a"]}, "Watch type connect_roots is not allowed in agent config"),
    ({"type": "key", "key": "k", "handler": ["a"]}, "Watch handler must be a string"),
])
def test_agent_refusals(params: dict, text: str) -> None:
    with pytest.raises(WatchError) as err:
        compile_watch(params, logging.getLogger("test"))
    assert str(err.value) == text


def test_agent_parse_error_names_the_definition() -> None:
    with pytest.raises(WatchError) as err:
        compile_watch({"type": "key", "args": ["a"]}, logging.getLogger("test"))
    assert str(err.value).startswith("Failed to parse watch (")
    assert str(err.value).endswith("): Must specify a single key to watch")


def kv(value: str, index: int) -> list[dict]:
    return [{"Key": "k", "CreateIndex": 1, "ModifyIndex": index, "LockIndex": 0, "Flags": 0, "Value": value}]


def test_first_answer_fires_even_for_a_missing_key() -> None:
    plan = Plan(parse({"type": "key", "key": "k"}))
    assert plan.query().params == ()
    fire = plan.observe(404, 5, None)
    assert fire is not None and (fire.index, fire.data) == (5, None)
    assert ("index", "5") in plan.query().params


def test_same_index_and_same_data_do_not_fire() -> None:
    plan = Plan(parse({"type": "key", "key": "k"}))
    assert plan.observe(200, 5, kv("YQ==", 5)) is not None
    assert plan.observe(200, 5, kv("YQ==", 5)) is None  # the blocking query timed out
    assert plan.observe(200, 6, kv("YQ==", 5)) is None  # another key of the table changed
    fire = plan.observe(200, 7, kv("Yg==", 7))
    assert fire is not None and fire.data["Value"] == "Yg==" and fire.data["Session"] == ""


def test_an_error_forgets_the_index_and_backs_off() -> None:
    plan = Plan(parse({"type": "key", "key": "k"}))
    plan.observe(200, 5, kv("YQ==", 5))
    assert [plan.failed() for _ in range(4)] == [5.0, 20.0, 45.0, 80.0]
    assert plan.query().params == ()
    assert plan.observe(200, 5, kv("YQ==", 5)) is not None  # fires again, as Consul's plan does
    assert plan.failures == 0
    assert Plan(parse({"type": "nodes"})).is_error(404)
    assert not plan.is_error(404)


def test_event_watch_delivers_only_new_events() -> None:
    ids = ["6e6b9d4a-0c2e-4c53-b9a1-2d1e2b7c0f11", "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"]
    events = [{"ID": i, "Name": "deploy"} for i in ids]
    plan = Plan(parse({"type": "event"}))
    first = plan.observe(200, event_index(ids[0]), events[:1])
    assert first is not None and first.data == events[:1]
    second = plan.observe(200, event_index(ids[1]), events)
    assert second is not None and second.data == events[1:]


def test_encode_as_go() -> None:
    assert encode({"a": "<&>", "b": [1]}) == '{"a":"\\u003c\\u0026\\u003e","b":[1]}'
    assert encode({"a": 1}, indent="    ") == '{\n    "a": 1\n}'


def test_handler_helpers() -> None:
    from appliance.watches.handlers import RingBuffer, exit_text, go_list

    buf = RingBuffer(8)
    buf.write(b"0123456789")
    buf.write(b"ab")
    assert buf.text() == "Captured 8 of 12 bytes\n...\n456789ab"
    small = RingBuffer(8)
    small.write(b"ok")
    assert small.text() == "ok"
    assert (exit_text(3), exit_text(-9), exit_text(-15)) == ("exit status 3", "signal: killed", "signal: terminated")
    assert go_list(["/bin/h", "-x"]) == "[/bin/h -x]"


@pytest.mark.parametrize(("argv", "shell", "rest"), [
    (["-shell=false", "cmd", "-shell=true"], False, ["cmd", "-shell=true"]),  # a child's argument stays
    (["-key", "-shell=false", "-shell=0", "x"], False, ["x"]),
    (["-shell", "x"], True, ["x"]),
    (["x", "-shell=false"], True, ["x", "-shell=false"]),
])
def test_cli_shell_flag(argv: list[str], shell: bool, rest: list[str]) -> None:
    from appliance.cli.watch import build_parser, rewrite_true_flag

    parser = build_parser()
    args = parser.parse(rewrite_true_flag(parser, argv, "shell"))
    assert (args.shell, args.args) == (shell, rest)
