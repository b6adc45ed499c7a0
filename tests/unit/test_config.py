"""appliance.config: files (JSON, HCL1), directories, merge rules, flags, -dev, errors, reload.

Rules checked come from reference/consul-api.md §8 (Consul docs: agent configuration) and §6.9.
Every test writes real files under tmp_path.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from pydantic import BaseModel

from appliance.config import ConfigError, HelpRequested, build_agent_config, hcl, model, rebuild, usage
from appliance.config.flags import FLAGS, parse_agent_flags

REFERENCE_HCL = """
datacenter       = "dc1"
data_dir         = "{data}"
node_name        = "server-1"
server           = true
bootstrap_expect = 3
bind_addr        = "0.0.0.0"
client_addr      = "0.0.0.0"
advertise_addr   = "10.0.0.1"
ui_config {{ enabled = true }}
ports {{ dns = 8600  http = 8500  grpc = 8502 }}
retry_join = ["10.0.0.2", "10.0.0.3"]
encrypt    = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
acl {{ enabled = true  default_policy = "deny"  tokens {{ initial_management = "m" agent = "a" }} }}
telemetry {{ prometheus_retention_time = "24h"  disable_hostname = true }}
dns_config {{ only_passing = true  service_ttl {{ "*" = "5s" }}  node_ttl = "10s" }}
service {{
  name = "web"  id = "web-1"  port = 8080  tags = ["v1"]
  check {{ http = "http://localhost:8080/health"  interval = "10s"  timeout = "1s" }}
}}
"""


def write(path: Path, text: str | dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return str(path)


def build(*argv: str):
    return build_agent_config(list(argv), hostname="testhost")


def error_of(*argv: str) -> str:
    with pytest.raises(ConfigError) as info:
        build(*argv)
    return str(info.value)


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path / "data")


def base(tmp_path: Path, data_dir: str, extra: dict | None = None) -> str:
    return write(tmp_path / "base.json", {"data_dir": data_dir, "advertise_addr": "10.0.0.1", **(extra or {})})


# -- file formats (§8.1) ---------------------------------------------------------------------


def test_reference_hcl_example_loads(tmp_path: Path, data_dir: str) -> None:
    path = write(tmp_path / "server.hcl", REFERENCE_HCL.format(data=data_dir))
    cfg = build("-config-file", path)
    assert (cfg.datacenter, cfg.node_name, cfg.server, cfg.bootstrap_expect) == ("dc1", "server-1", True, 3)
    assert cfg.ui_enabled and cfg.ports.dns == 8600 and cfg.ports.http == 8500 and cfg.ports.grpc == 8502
    assert cfg.client_addrs == ("0.0.0.0",) and cfg.retry_join == ("10.0.0.2", "10.0.0.3")
    assert cfg.acl.enabled and cfg.acl.default_policy == "deny"
    assert cfg.acl.tokens == {"initial_management": "m", "agent": "a"}
    assert cfg.telemetry.prometheus_retention_time_s == 24 * 3600 and cfg.telemetry.disable_hostname
    assert cfg.dns_config.only_passing and cfg.dns_config.service_ttl_s == {"*": 5.0}
    assert cfg.dns_config.node_ttl_s == 10.0
    assert cfg.services == (
        {
            "name": "web",
            "id": "web-1",
            "port": 8080,
            "tags": ["v1"],
            "check": {"http": "http://localhost:8080/health", "interval": "10s", "timeout": "1s"},
        },
    )


def test_reference_json_example_loads(tmp_path: Path, data_dir: str) -> None:
    path = write(
        tmp_path / "server.json",
        {
            "datacenter": "dc1",
            "data_dir": data_dir,
            "server": True,
            "bootstrap_expect": 1,
            "advertise_addr": "10.0.0.1",
            "ui_config": {"enabled": True},
            "ports": {"dns": 8600},
            "services": [{"name": "web", "port": 8080, "checks": [{"tcp": "localhost:8080", "interval": "10s"}]}],
        },
    )
    cfg = build("-config-file", path)
    # bootstrap_expect = 1 is bootstrap mode, with a warning
    assert cfg.bootstrap and cfg.bootstrap_expect == 0
    assert any("bootstrap_expect = 1" in w for w in cfg.config_warnings)
    assert cfg.services[0]["checks"] == [{"tcp": "localhost:8080", "interval": "10s"}]


def test_hcl1_quirks() -> None:
    text = r'''
    # hash comment
    // slash comment
    /* block
       comment */
    a = "x ${not_interpolated} \"q\" \u00e9"
    n = -3
    f = 1.5
    h = 0x10
    ports { dns = 1  http = 2 }
    ports { https = 3 }
    doc = <<EOF
line one
  line two
EOF
    list = [1, 2,]
    obj = { "*" = "5s", b = 1 }
    labelled "name" { k = "v" }
    '''
    out = hcl.loads(text)
    assert out["a"] == 'x ${not_interpolated} "q" é'
    assert (out["n"], out["f"], out["h"]) == (-3, 1.5, 16)
    assert out["ports"] == hcl.Repeated([{"dns": 1, "http": 2}, {"https": 3}])
    assert out["doc"] == "line one\n  line two\n"
    assert out["list"] == [1, 2]
    assert out["obj"] == {"*": "5s", "b": 1}
    assert out["labelled"] == {"name": {"k": "v"}}


def test_hcl_repeated_blocks_merge_or_list(tmp_path: Path, data_dir: str) -> None:
    path = write(
        tmp_path / "a.hcl",
        f'''
        data_dir = "{data_dir}"
        advertise_addr = "10.0.0.1"
        ports {{ dns = 8601 }}
        ports {{ http = 8501 }}
        node_meta {{ rack = "r1" }}
        node_meta {{ zone = "z1" }}
        log_level = "warn"
        log_level = "error"
        service {{ name = "a" }}
        service {{
          name = "b"
          check {{ ttl = "10s" }}
          check {{ ttl = "20s" }}
          checks = [{{ ttl = "30s" }}]
        }}
        check {{ id = "c1" name = "c1" ttl = "30s" }}
        ''',
    )
    cfg = build("-config-file", path)
    assert (cfg.ports.dns, cfg.ports.http) == (8601, 8501)
    assert cfg.node_meta == {"rack": "r1", "zone": "z1"}
    assert cfg.log_level == "error"
    assert [s["name"] for s in cfg.services] == ["a", "b"]
    assert cfg.services[1]["checks"] == [{"ttl": "10s"}, {"ttl": "20s"}, {"ttl": "30s"}]
    assert cfg.checks == ({"id": "c1", "name": "c1", "ttl": "30s"},)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.hcl", 'datacenter = "dc1\n', "Error parsing {p}: line 1, column 14: literal not terminated"),
        ("bad.hcl", "ports { dns = }", 'Error parsing {p}: line 1, column 15: expected a value, found "}"'),
        ("bad.hcl", "server = yes", 'Error parsing {p}: line 1, column 10: unquoted value "yes" (strings must be '
         'quoted)'),
        ("bad.json", '{"server": true,}', "Error parsing {p}: line 1, column 17: Expecting property name enclosed in "
         "double quotes"),
        ("bad.json", "[1]", "Error parsing {p}: top level must be a JSON object"),
    ],
)
def test_syntax_errors_name_file_and_position(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = write(tmp_path / name, text)
    assert error_of("-config-file", path) == expected.replace("{p}", path)


# -- directories and merge rules (§8.1) --------------------------------------------------------


def test_config_dir_lexical_order_and_merge_rules(tmp_path: Path, data_dir: str) -> None:
    d = tmp_path / "conf.d"
    write(d / "2-b.json", {"log_level": "warn", "retry_join": ["b"], "node_meta": {"k2": "v2", "k": "b"},
                           "services": [{"name": "s2"}], "service": {"name": "s1b"}})
    write(d / "10-a.hcl", f'data_dir = "{data_dir}"\nadvertise_addr = "10.0.0.1"\nlog_level = "info"\n'
                          'retry_join = ["a"]\nnode_meta { k = "a" }\nservice { name = "s1" }\n')
    write(d / "README.md", "not config")
    write(d / "sub" / "ignored.json", {"log_level": "trace"})
    cfg = build("-config-dir", str(d))
    # "10-a.hcl" sorts before "2-b.json": scalars last wins, lists appended, maps key by key
    assert cfg.log_level == "warn"
    assert cfg.retry_join == ("a", "b")
    assert cfg.node_meta == {"k": "b", "k2": "v2"}
    assert [s["name"] for s in cfg.services] == ["s1", "s1b", "s2"]  # service + services concatenated
    assert cfg.config_warnings == (
        f"skipping file {d / 'README.md'}, extension must be .hcl or .json, or config format must be set",
    )


def test_config_format_forces_format(tmp_path: Path, data_dir: str) -> None:
    path = write(tmp_path / "agent.conf", {"data_dir": data_dir, "datacenter": "east", "advertise_addr": "10.0.0.1"})
    skipped = build("-config-file", path, "-data-dir", data_dir, "-advertise", "10.0.0.1")
    assert skipped.datacenter == "dc1" and skipped.config_warnings[0].startswith("skipping file")
    assert build("-config-format=json", "-config-file", path, "-data-dir", data_dir).datacenter == "east"
    hcl_path = write(tmp_path / "x.json",
                     f'datacenter = "west"\ndata_dir = "{data_dir}"\nadvertise_addr = "10.0.0.1"\n')
    assert build("-config-format", "hcl", "-config-file", hcl_path).datacenter == "west"


def test_sources_apply_in_command_line_order_then_hcl_then_flags(tmp_path: Path, data_dir: str) -> None:
    first = write(tmp_path / "a.json", {"data_dir": data_dir, "log_level": "warn", "datacenter": "one",
                                        "advertise_addr": "10.0.0.1", "recursors": ["1.1.1.1"]})
    write(tmp_path / "d" / "b.json", {"datacenter": "two", "recursors": ["8.8.8.8"]})
    cfg = build("-hcl", 'log_level = "error"', "-config-file", first, "-config-dir", str(tmp_path / "d"),
                "-recursor", "9.9.9.9")
    assert cfg.datacenter == "two"
    assert cfg.log_level == "error"  # -hcl after files, wherever it was given
    assert cfg.recursors == ("1.1.1.1", "8.8.8.8", "9.9.9.9")  # flags' lists append last
    assert build("-config-file", first, "-hcl", 'log_level = "error"', "-log-level", "trace").log_level == "trace"
    assert [s.kind for s in cfg.sources] == ["file", "dir", "hcl", "flags"]
    assert build("-config-dir", str(tmp_path / "d"), "-config-file", first).datacenter == "one"


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    assert error_of("-config-file", missing) == f"Error reading {missing}: No such file or directory"


# -- flags (§8.3) ---------------------------------------------------------------------------


FLAG_CASES = [
    (["-advertise", "10.1.1.1"], lambda c: c.advertise_addr, "10.1.1.1"),
    (["-advertise-wan=10.2.2.2"], lambda c: c.advertise_addr_wan, "10.2.2.2"),
    (["-alt-domain", "example"], lambda c: c.alt_domain, "example."),
    (["-bind", "10.0.0.5"], lambda c: c.bind_addr, "10.0.0.5"),
    (["-server", "-bootstrap"], lambda c: (c.server, c.bootstrap), (True, True)),
    (["-server", "-bootstrap-expect", "3"], lambda c: c.bootstrap_expect, 3),
    (["-client", "127.0.0.1 10.0.0.9"], lambda c: c.client_addrs, ("127.0.0.1", "10.0.0.9")),
    (["-datacenter", "eu-west_1"], lambda c: c.datacenter, "eu-west_1"),
    (["-disable-host-node-id"], lambda c: c.dev, False),
    (["-dns-port", "53"], lambda c: c.ports.dns, 53),
    (["-domain", "cairn"], lambda c: c.domain, "cairn."),
    (["-enable-local-script-checks"], lambda c: c.enable_local_script_checks, True),
    (["-enable-script-checks=true"], lambda c: c.enable_script_checks, True),
    (["-encrypt", "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="], lambda c: len(c.encrypt), 44),
    (["-grpc-port", "8502"], lambda c: c.ports.grpc, 8502),
    (["-grpc-tls-port", "8503"], lambda c: c.ports.grpc_tls, 8503),
    (["-hcl", "raft_protocol = 3"], lambda c: c.raft_protocol, 3),
    (["-hcl", "raft_snapshot_threshold = 64"], lambda c: c.raft_snapshot_threshold, 64),
    (["-hcl", "raft_trailing_logs = 0"], lambda c: c.raft_trailing_logs, 0),
    (["-http-port", "8501"], lambda c: c.ports.http, 8501),
    (["-https-port", "8443"], lambda c: c.ports.https, 8443),
    (["-join", "a", "-join", "b"], lambda c: c.start_join, ("a", "b")),
    (["-join-wan", "w1"], lambda c: c.start_join_wan, ("w1",)),
    (["-log-file", "/var/log/cairn.log"], lambda c: c.log_file, "/var/log/cairn.log"),
    (["-log-json"], lambda c: c.log_json, True),
    (["-log-level", "WARN"], lambda c: c.log_level, "warn"),
    (["-node", "n1"], lambda c: c.node_name, "n1"),
    (["-node-id", "0E0E0E0E-0000-4000-8000-000000000001"], lambda c: c.node_id, "0e0e0e0e-0000-4000-8000-000000000001"),
    (["-node-meta", "rack:r1", "-node-meta=url:http://x"], lambda c: c.node_meta, {"rack": "r1", "url": "http://x"}),
    (["-pid-file", "/run/cairn.pid"], lambda c: c.pid_file, "/run/cairn.pid"),
    (["-raft-protocol", "3"], lambda c: c.raft_protocol, 3),
    (["-recursor", "1.1.1.1", "-recursor", "8.8.8.8:53"], lambda c: c.recursors, ("1.1.1.1", "8.8.8.8:53")),
    (["-retry-interval", "1m30s"], lambda c: c.retry_interval_s, 90.0),
    (["-retry-join", "a", "--retry-join=b"], lambda c: c.retry_join, ("a", "b")),
    (["-retry-max", "5"], lambda c: c.retry_max, 5),
    (["-retry-join-wan", "w1:8302", "-retry-join-wan=w2"], lambda c: c.retry_join_wan, ("w1:8302", "w2")),
    (["-retry-interval-wan", "5s"], lambda c: c.retry_interval_wan_s, 5.0),
    (["-retry-max-wan", "3"], lambda c: c.retry_max_wan, 3),
    (["-serf-lan-port", "9301"], lambda c: c.ports.serf_lan, 9301),
    (["-serf-wan-port", "9302"], lambda c: c.ports.serf_wan, 9302),
    (["-server"], lambda c: (c.server, c.leave_on_terminate, c.skip_leave_on_interrupt), (True, False, True)),
    (["-server-port", "9300"], lambda c: c.ports.server, 9300),
    (["-ui"], lambda c: c.ui_enabled, True),
    (["-ui-content-path", "console"], lambda c: c.ui_content_path, "/console/"),
    (["-ui-dir", "/srv/ui"], lambda c: c.ui_dir, "/srv/ui"),
]


@pytest.mark.parametrize(("argv", "get", "expected"), FLAG_CASES, ids=[c[0][0] for c in FLAG_CASES])
def test_every_flag(data_dir: str, argv: list[str], get, expected) -> None:
    cfg = build("-data-dir", data_dir, "-advertise", "10.0.0.1", *argv)
    assert get(cfg) == expected


def test_flag_table_is_fully_covered_by_tests_and_help() -> None:
    tested = {arg.lstrip("-").split("=")[0] for case in FLAG_CASES for arg in case[0] if arg.startswith("-")}
    names = {f.name for f in FLAGS}
    assert names - tested <= {"config-dir", "config-file", "config-format", "data-dir", "dev"}
    text = usage()
    for name in names:
        assert f"  -{name}" in text


def test_go_flag_syntax() -> None:
    flags = parse_agent_flags(["--server", "-bootstrap=false", "-datacenter", "-x-", "-http-port=1"])
    assert flags.values == {"server": True, "bootstrap": False, "datacenter": "-x-", "ports": {"http": 1}}
    # a boolean flag never takes the next argument; flags stop at the first non-flag
    flags = parse_agent_flags(["-server", "extra", "-ui"])
    assert flags.values == {"server": True} and flags.args == ["extra", "-ui"]
    assert parse_agent_flags(["-node", "a", "-node", "b"]).values == {"node_name": "b"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-bogus"], "flag provided but not defined: -bogus"),
        (["-datacenter"], "flag needs an argument: -datacenter"),
        (["-http-port", "abc"], 'invalid value "abc" for flag -http-port: parse error'),
        (["-retry-interval=soon"], 'invalid value "soon" for flag -retry-interval: parse error'),
        (["-server=maybe"], 'invalid boolean value "maybe" for -server: parse error'),
        (["-node-meta", "novalue"], 'invalid value "novalue" for flag -node-meta: must be key:value'),
        (["-config-format", "yaml"], 'invalid value "yaml" for flag -config-format: must be "json" or "hcl"'),
        (["-dev", "stray"], "Unexpected extra arguments: stray"),
    ],
)
def test_flag_errors(argv: list[str], message: str) -> None:
    assert error_of(*argv) == message


def test_help_lists_every_flag() -> None:
    for spelling in ("-h", "-help", "--help"):
        with pytest.raises(HelpRequested) as info:
            build_agent_config(["-dev", spelling])
        assert str(info.value).startswith("Usage: cairn agent [options]")


# -- -dev (§8.3) and identity ----------------------------------------------------------------


def test_dev_defaults() -> None:
    cfg = build("-dev")
    assert cfg.dev and cfg.server and cfg.bootstrap and cfg.bootstrap_expect == 0
    assert (cfg.bind_addr, cfg.client_addrs, cfg.advertise_addr) == ("127.0.0.1", ("127.0.0.1",), "127.0.0.1")
    assert cfg.log_level == "debug" and cfg.ui_enabled and cfg.pretty_json
    assert cfg.data_dir == "" and cfg.raft_multiplier == 1
    assert (cfg.ports.http, cfg.ports.dns, cfg.ports.grpc) == (8500, 8600, 8502)
    assert cfg.node_name == "testhost" and cfg.domain == "consul." and cfg.datacenter == "dc1"
    assert str(uuid.UUID(cfg.node_id)) == cfg.node_id
    assert build("-dev").node_id != cfg.node_id  # random in -dev
    assert build("-dev", "-log-level", "info", "-client", "0.0.0.0").log_level == "info"


def test_defaults_without_dev(data_dir: str) -> None:
    cfg = build("-data-dir", data_dir, "-bind", "10.0.0.7")
    assert not cfg.server and not cfg.ui_enabled and not cfg.pretty_json
    assert cfg.advertise_addr == "10.0.0.7" == cfg.advertise_addr_wan
    assert cfg.ports.grpc == -1 and cfg.log_level == "info" and cfg.raft_multiplier == 5
    assert cfg.leave_on_terminate and not cfg.skip_leave_on_interrupt  # client defaults
    assert cfg.listen_addrs("http") == ("127.0.0.1",)
    assert cfg.default_query_time_s == 300.0 and cfg.max_query_time_s == 600.0
    assert cfg.dns_config.max_stale_s == 87600 * 3600 and cfg.dns_config.udp_answer_limit == 3


def test_node_id_persisted_in_data_dir(data_dir: str) -> None:
    first = build("-data-dir", data_dir, "-advertise", "10.0.0.1")
    assert Path(data_dir, "node-id").read_text() == first.node_id
    assert build("-data-dir", data_dir, "-advertise", "10.0.0.1").node_id == first.node_id
    Path(data_dir, "node-id").write_text("garbage")
    assert "is not a valid UUID" in error_of("-data-dir", data_dir, "-advertise", "10.0.0.1")


def test_addresses_override_client_addr(tmp_path: Path, data_dir: str) -> None:
    path = base(tmp_path, data_dir, {"client_addr": "127.0.0.1 ::1", "addresses": {"dns": "0.0.0.0"}})
    cfg = build("-config-file", path)
    assert cfg.client_addrs == ("127.0.0.1", "::1")
    assert cfg.listen_addrs("dns") == ("0.0.0.0",) and cfg.listen_addrs("http") == ("127.0.0.1", "::1")


def test_durations_and_legacy_keys(tmp_path: Path, data_dir: str) -> None:
    path = base(tmp_path, data_dir, {
        "retry_interval": "1m30s", "default_query_time": "30s", "max_query_time": "1h",
        "dns_config": {"service_ttl": {"web": "500ms", "db*": "1m"}, "recursor_timeout": "3s", "max_stale": "5s"},
        "ui": True, "ui_content_path": "/console", "acl": {"tokens": {"master": "m", "agent_master": "r"}},
        "http_config": {"response_headers": {"X-A": "1"}},
        "limits": {"http_max_conns_per_client": 10, "rpc_rate": 5.5},
    })
    cfg = build("-config-file", path)
    assert cfg.retry_interval_s == 90 and cfg.default_query_time_s == 30 and cfg.max_query_time_s == 3600
    assert cfg.dns_config.service_ttl_s == {"web": 0.5, "db*": 60.0}
    assert cfg.dns_config.recursor_timeout_s == 3 and cfg.dns_config.max_stale_s == 5
    assert cfg.ui_enabled and cfg.ui_content_path == "/console/"
    assert cfg.acl.tokens == {"initial_management": "m", "agent_recovery": "r"}
    assert cfg.http_response_headers == {"X-A": "1"}
    assert cfg.limits.http_max_conns_per_client == 10 and cfg.limits.kv_max_value_size == 524288


# -- error texts (§8.4) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"foo": 1}, "{p}: invalid config key foo"),
        ({"ports": {"htp": 1}}, "{p}: invalid config key ports.htp"),
        ({"dns_config": {"service_ttl": {"*": "5s"}, "bogus": True}}, "{p}: invalid config key dns_config.bogus"),
        ({"ports": {"http": "abc"}}, 'Error parsing {p}: ports.http: invalid value "abc" (expected integer)'),
        ({"server": "maybe"}, 'Error parsing {p}: server: invalid value "maybe" (expected boolean)'),
        ({"datacenter": 5}, "Error parsing {p}: datacenter: invalid value 5 (expected string)"),
        ({"retry_join": "a"}, 'Error parsing {p}: retry_join: invalid value "a" (expected list)'),
        ({"ports": 8500}, "Error parsing {p}: ports: invalid value 8500 (expected object)"),
        ({"retry_interval": "10"},
         'Error parsing {p}: retry_interval: invalid value "10" (expected duration, e.g. "10s")'),
        ({"dns_config": {"service_ttl": {"web": "x"}}},
         'Error parsing {p}: dns_config.service_ttl.web: invalid value "x" (expected duration, e.g. "10s")'),
    ],
)
def test_file_errors_name_file_and_key(tmp_path: Path, content: dict, expected: str) -> None:
    path = write(tmp_path / "web.json", content)
    assert error_of("-dev", "-config-file", path) == expected.replace("{p}", path)


def test_hcl_unknown_key_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "web.hcl", 'telemetry { prometheus_retention_time = "1h" foo = 1 }')
    assert error_of("-dev", "-config-file", path) == f"{path}: invalid config key telemetry.foo"
    assert error_of("-dev", "-hcl", "bogus = 1") == "-hcl: invalid config key bogus"


def test_service_definition_errors_name_file_and_service(tmp_path: Path) -> None:
    path = write(tmp_path / "svc.json", {"service": {"name": "web", "port": "abc"}})
    message = error_of("-dev", "-config-file", path)
    assert message.startswith(f'{path}: service "web": ')
    path = write(tmp_path / "svc2.json", {"services": [{"port": 1}]})
    assert error_of("-dev", "-config-file", path) == f"{path}: service #1: Missing service name"


SEMANTIC = [
    ({}, "data_dir cannot be empty", False),
    ({"datacenter": "DC1"}, "datacenter can only contain lowercase alphanumeric, - or _ characters.", True),
    ({"datacenter": ""}, "datacenter cannot be empty", True),
    ({"node_name": ""}, "node_name cannot be empty", True),
    ({"bootstrap": True}, "'bootstrap = true' requires 'server = true'", True),
    ({"bootstrap_expect": 3}, "'bootstrap_expect > 0' requires 'server = true'", True),
    ({"server": True, "bootstrap_expect": -1},
     "bootstrap_expect cannot be -1. Must be greater than or equal to zero", True),
    ({"server": True, "bootstrap": True, "bootstrap_expect": 3},
     "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive", True),
    ({"bind_addr": ""}, "bind_addr cannot be empty", True),
    ({"bind_addr": "10.0.0.1 10.0.0.2"}, "bind_addr cannot contain multiple addresses", True),
    ({"bind_addr": "unix:///tmp/x"}, "bind_addr cannot be a unix socket", True),
    ({"client_addr": "unix:///tmp/x"}, "client_addr cannot be a unix socket", True),
    ({"addresses": {"dns": "unix:///tmp/x"}}, "DNS address cannot be a unix socket", True),
    ({"advertise_addr": "0.0.0.0"}, "Advertise address cannot be 0.0.0.0, :: or [::]", True),
    ({"recursors": ["0.0.0.0"]}, "DNS recursor address cannot be 0.0.0.0, :: or [::]", True),
    ({"dns_config": {"udp_answer_limit": -1}},
     "dns_config.udp_answer_limit cannot be -1. Must be greater than or equal to zero", True),
    ({"dns_config": {"a_record_limit": -1}},
     "dns_config.a_record_limit cannot be -1. Must be greater than or equal to zero", True),
    ({"performance": {"raft_multiplier": 11}},
     "performance.raft_multiplier cannot be 11. Must be between 1 and 10", True),
    ({"raft_protocol": 2}, "raft_protocol version 2 is not supported by this version of Consul", True),
    ({"raft_snapshot_threshold": 0}, "raft_snapshot_threshold cannot be 0. Must be at least 1", True),
    ({"raft_trailing_logs": -1}, "raft_trailing_logs cannot be -1. Must be at least 0", True),
    ({"ports": {"http": 8600}}, "HTTP address 127.0.0.1:8600 already configured for DNS", True),
    ({"node_meta": {"k" * 129: "v"}}, "Key is too long (limit: 128 characters)", True),
    ({"node_meta": {"k": "v" * 513}}, "Value is too long (limit: 512 characters)", True),
    ({"node_meta": {f"k{i}": "v" for i in range(65)}},
     "Node metadata cannot contain more than 64 key/value pairs", True),
    ({"node_meta": {"consul-x": "v"}}, "Key prefix 'consul-' is reserved for internal use: consul-x", True),
    ({"alt_domain": "service.example"}, "alt_domain cannot start with {service,connect,node,query,addr,dc1}", True),
    ({"ui_config": {"enabled": True, "dir": "/srv/ui"}},
     "Both the ui_config.enabled and ui_config.dir (or -ui and -ui-dir) were specified, "
     "please provide only one.", True),
    ({"encrypt": "short"}, "encrypt has invalid key: illegal base64 data", True),
    ({"log_level": "loud"}, 'Invalid log level: "loud". Valid log levels are: [TRACE DEBUG INFO WARN ERR]', True),
    ({"node_id": "not-a-uuid"}, 'node_id: "not-a-uuid" is not a valid UUID', True),
]


@pytest.mark.parametrize(("content", "expected", "with_data_dir"), SEMANTIC, ids=[c[1][:40] for c in SEMANTIC])
def test_semantic_errors(tmp_path: Path, data_dir: str, content: dict, expected: str, with_data_dir: bool) -> None:
    extra = {"data_dir": data_dir, "advertise_addr": "10.0.0.1"} if with_data_dir else {"advertise_addr": "10.0.0.1"}
    path = write(tmp_path / "c.json", {**extra, **content})
    assert error_of("-config-file", path) == expected


def test_dev_rejects_bootstrap_expect() -> None:
    assert error_of("-dev", "-bootstrap-expect", "3") == "'bootstrap_expect > 0' not allowed in dev mode"


def test_data_dir_must_be_a_directory(tmp_path: Path) -> None:
    target = write(tmp_path / "file", "x")
    assert error_of("-data-dir", target, "-advertise", "10.0.0.1") == f'data_dir "{target}" is not a directory'


# -- reload ---------------------------------------------------------------------------------


def test_rebuild_rereads_sources_and_keeps_node_id(tmp_path: Path) -> None:
    d = tmp_path / "conf.d"
    write(d / "a.json", {"log_level": "info", "services": [{"name": "web"}]})
    first = build("-dev", "-config-dir", str(d))
    write(d / "b.hcl", 'log_level = "warn"\nservice { name = "db" }\n')
    second = rebuild(first, hostname="testhost")
    assert second.log_level == "warn" and [s["name"] for s in second.services] == ["web", "db"]
    assert second.node_id == first.node_id and second.flag_args == first.flag_args
    write(d / "c.json", "{broken")
    with pytest.raises(ConfigError):
        rebuild(first)


def test_runtime_config_is_frozen() -> None:
    cfg = build("-dev")
    with pytest.raises(AttributeError):
        cfg.server = False


# -- the model ------------------------------------------------------------------------------


def _models() -> list[type[BaseModel]]:
    return [v for v in vars(model).values()
            if isinstance(v, type) and issubclass(v, model.Block) and v is not model.Block]


@pytest.mark.parametrize("cls", _models(), ids=lambda c: c.__name__)
def test_every_model_field_is_described(cls: type[BaseModel]) -> None:
    for name, field in cls.model_fields.items():
        assert field.description, f"{cls.__name__}.{name} has no description"
    assert cls.model_config.get("extra") == "forbid"


def test_environment_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.9.9.9:1")
    assert build("-dev").listen_addrs("http") == ("127.0.0.1",)
    assert os.environ["CONSUL_HTTP_ADDR"] == "10.9.9.9:1"


# -- http_config: the HTTP server's limits on requests and connections (appliance/http/app.py) --


def test_http_limits_defaults_and_keys(tmp_path: Path, data_dir: str) -> None:
    cfg = build("-dev")
    assert cfg.http_max_header_bytes == 1 << 20  # Go's DefaultMaxHeaderBytes
    assert (cfg.http_read_header_timeout_s, cfg.http_read_timeout_s, cfg.http_idle_timeout_s) == (30.0, 300.0, 300.0)

    path = base(tmp_path, data_dir, {"http_config": {
        "max_header_bytes": 65536, "read_header_timeout": "5s", "read_timeout": "1m30s", "idle_timeout": "0s"}})
    cfg = build("-config-file", path)
    assert cfg.http_max_header_bytes == 65536
    assert (cfg.http_read_header_timeout_s, cfg.http_read_timeout_s, cfg.http_idle_timeout_s) == (5.0, 90.0, 0.0)

    # Consul: "If zero, or negative, http.DefaultMaxHeaderBytes is used"
    for value in (0, -1):
        cfg = build("-dev", "-hcl", f"http_config {{ max_header_bytes = {value} }}")
        assert cfg.http_max_header_bytes == 1 << 20
    cfg = build("-dev", "-hcl", 'http_config { read_header_timeout = "250ms" }')
    assert cfg.http_read_header_timeout_s == 0.25 and cfg.http_read_timeout_s == 300.0


@pytest.mark.parametrize("key", ["read_header_timeout", "read_timeout", "idle_timeout"])
def test_http_timeouts_are_durations_not_below_zero(tmp_path: Path, data_dir: str, key: str) -> None:
    path = base(tmp_path, data_dir, {"http_config": {key: "-1s"}})
    assert error_of("-config-file", path) == f"http_config.{key} must not be negative"
    path = base(tmp_path, data_dir, {"http_config": {key: "30"}})
    assert error_of("-config-file", path) == (
        f'Error parsing {path}: http_config.{key}: invalid value "30" (expected duration, e.g. "10s")')
