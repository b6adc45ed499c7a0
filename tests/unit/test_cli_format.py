"""The CLI's pure formatting helpers, its Go-style flag parsing and its HTTP edge.

Output texts are checked against reference/consul-api.md §5 (Consul's CLI outputs); the
HTTP edge is checked against a stub server on loopback that records each request.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from appliance.cli import catalog, kv, maint, members, ops, services
from appliance.cli.flags import CliParser
from appliance.cli.format import columnize, go_json_dumps, parse_go_bool, tabwrite
from appliance.cli.http_client import (
    DEFAULT_HTTP_ADDR,
    add_http_flags,
    config_from_args,
    normalize_address,
    resolve_address,
    resolve_token,
)
from appliance.cli.main import main, usage

SERVER_MEMBER = {
    "Name": "server1",
    "Addr": "127.0.0.1",
    "Port": 8301,
    "Tags": {
        "acls": "0", "build": "1.17.0:4e3f428b", "dc": "dc1", "id": "40e4a748-2192-161a-0510-9bf59fe950b5",
        "port": "8300", "role": "consul", "segment": "", "vsn": "2", "vsn_max": "3", "vsn_min": "2",
    },
    "Status": 1,
}  # fmt: skip
CLIENT_MEMBER = {
    "Name": "a-client",
    "Addr": "10.0.0.7",
    "Port": 8301,
    "Tags": {"build": "0.1.0:abc", "dc": "dc1", "role": "node", "segment": "", "vsn": "2"},
    "Status": 4,
}


# --------------------------------------------------------------------------------------------
# columnize / tabwriter / Go JSON


def test_columnize_pads_all_but_last_column_with_two_spaces() -> None:
    text = columnize([["Node", "Address", "Status"], ["server1", "127.0.0.1:8301", "alive"]])
    assert text.splitlines() == [
        "Node     Address         Status",
        "server1  127.0.0.1:8301  alive",
    ]


def test_columnize_trims_cells_and_leaves_no_trailing_spaces() -> None:
    text = columnize([[" a ", "b", ""], ["ccc", "", "d"]])
    assert text.splitlines() == ["a    b", "ccc     d"]
    assert all(line == line.rstrip() for line in text.splitlines())


def test_columnize_empty() -> None:
    assert columnize([]) == ""


def test_tabwrite_pads_terminated_cells_by_six() -> None:
    # text/tabwriter, minwidth 0, padding 6: a tab-terminated cell is padded even before an empty cell
    assert tabwrite([["consul", ""], ["web", "v1,v2"]]).splitlines() == [
        "consul" + " " * 6,
        "web" + " " * 9 + "v1,v2",
    ]


def test_go_json_escapes_html_characters_and_keeps_unicode() -> None:
    assert go_json_dumps({"k": "<a&b>é\u2028"}) == '{"k":"\\u003ca\\u0026b\\u003eé\\u2028"}'


@pytest.mark.parametrize(
    ("text", "value"), [("1", True), ("t", True), ("TRUE", True), ("True", True), ("0", False), ("F", False)]
)
def test_parse_go_bool(text: str, value: bool) -> None:
    assert parse_go_bool(text) is value


def test_parse_go_bool_rejects_yes() -> None:
    with pytest.raises(ValueError):
        parse_go_bool("yes")


# --------------------------------------------------------------------------------------------
# members (§5.1)


def test_members_standard_table_matches_consul_example() -> None:
    text = members.format_members([SERVER_MEMBER])
    assert text is not None
    assert text.splitlines() == [
        "Node     Address         Status  Type    Build   Protocol  DC   Partition  Segment",
        "server1  127.0.0.1:8301  alive   server  1.17.0  2         dc1  default    <all>",
    ]


def test_members_servers_first_then_by_name_and_client_segment() -> None:
    text = members.format_members([CLIENT_MEMBER, SERVER_MEMBER])
    assert text is not None
    lines = text.splitlines()
    assert lines[1].startswith("server1 ")
    assert lines[2].split() == ["a-client", "10.0.0.7:8301", "failed", "client", "0.1.0", "2", "dc1", "default",
                                "<default>"]


def test_members_status_filter_is_an_unanchored_regexp() -> None:
    text = members.format_members([CLIENT_MEMBER, SERVER_MEMBER], status="fail")
    assert text is not None and len(text.splitlines()) == 2
    assert members.format_members([SERVER_MEMBER], status="^left$") is None


@pytest.mark.parametrize(("code", "name"), [(0, "none"), (1, "alive"), (2, "leaving"), (3, "left"), (4, "failed")])
def test_member_status_names(code: int, name: str) -> None:
    assert members.status_name(code) == name


def test_members_detailed_lists_tags_sorted() -> None:
    text = members.format_members([CLIENT_MEMBER], detailed=True)
    assert text is not None
    header, row = text.splitlines()
    assert header.split() == ["Node", "Address", "Status", "Tags"]
    assert row.split()[-1] == "build=0.1.0:abc,dc=dc1,role=node,segment=,vsn=2"


def test_member_address_ipv6() -> None:
    assert members.member_address({"Addr": "::1", "Port": 8301}) == "[::1]:8301"


# --------------------------------------------------------------------------------------------
# catalog (§5.3)

NODE = {
    "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
    "Node": "server-1",
    "Address": "127.0.0.1",
    "Datacenter": "dc1",
    "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
    "Meta": {"consul-version": "1.17.0", "consul-network-segment": ""},
}


def test_catalog_nodes_table_short_id() -> None:
    assert catalog.format_nodes([NODE]).splitlines() == [
        "Node      ID        Address    DC",
        "server-1  40e4a748  127.0.0.1  dc1",
    ]


def test_catalog_nodes_detailed_maps_sorted() -> None:
    header, row = catalog.format_nodes([NODE], detailed=True).splitlines()
    assert header.split() == ["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]
    assert "40e4a748-2192-161a-0510-9bf59fe950b5" in row
    assert row.endswith("lan=127.0.0.1, wan=127.0.0.1  consul-network-segment=, consul-version=1.17.0")


def test_catalog_nodes_from_service_nodes_dedupes_and_sorts() -> None:
    sn = [
        {"Node": "b", "ID": "x", "Address": "1", "Datacenter": "dc1", "NodeMeta": {"k": "v"}},
        {"Node": "a", "ID": "y", "Address": "2", "Datacenter": "dc1"},
        {"Node": "b", "ID": "x", "Address": "1", "Datacenter": "dc1"},
    ]
    got = catalog.nodes_from_service_nodes(sn)
    assert [n["Node"] for n in got] == ["a", "b"]
    assert got[1]["Meta"] == {"k": "v"}


def test_catalog_services_plain_and_tags() -> None:
    data = {"web": ["v2", "v1"], "consul": []}
    assert catalog.format_services(data) == "consul\nweb"
    assert catalog.format_services(data, tags=True).splitlines() == ["consul" + " " * 6, "web" + " " * 9 + "v1,v2"]


def test_node_meta_flag_becomes_query_pairs() -> None:
    assert catalog.parse_node_meta(["env=prod", "rack=r1"]) == [("node-meta", "env:prod"), ("node-meta", "rack:r1")]


# --------------------------------------------------------------------------------------------
# kv (§5.3)


def _entry(key: str, value: bytes | None, flags: int = 0) -> dict[str, Any]:
    return {
        "LockIndex": 0, "Key": key, "Flags": flags,
        "Value": base64.b64encode(value).decode() if value is not None else None,
        "CreateIndex": 5, "ModifyIndex": 7,
    }  # fmt: skip


def test_kv_export_is_tab_indented_lowercase_json() -> None:
    text = kv.format_export([_entry("a/b", b"hello", 3), _entry("a/<c>", None)])
    assert text == (
        "[\n"
        "\t{\n"
        '\t\t"key": "a/b",\n'
        '\t\t"flags": 3,\n'
        '\t\t"value": "aGVsbG8="\n'
        "\t},\n"
        "\t{\n"
        '\t\t"key": "a/\\u003cc\\u003e",\n'
        '\t\t"flags": 0,\n'
        '\t\t"value": ""\n'
        "\t}\n"
        "]"
    )


def test_kv_export_empty_is_empty_array() -> None:
    assert kv.format_export([]) == "[]"


def test_kv_import_round_trips_export() -> None:
    text = kv.format_export([_entry("x", b"\x00\xffbin", 9), _entry("y", None)])
    assert kv.parse_import(text) == [("x", 9, b"\x00\xffbin"), ("y", 0, b"")]


def test_kv_import_field_names_case_insensitive() -> None:
    assert kv.parse_import('[{"Key": "k", "Flags": 1, "Value": "dg=="}]') == [("k", 1, b"v")]


def test_kv_import_rejects_bad_base64() -> None:
    with pytest.raises(Exception, match="base 64"):
        kv.parse_import('[{"key": "k", "flags": 0, "value": "!!"}]')


def test_kv_detailed_block() -> None:
    entry = _entry("foo", b"bar")
    assert kv.detailed_block(entry, as_base64=False).decode().splitlines() == [
        "CreateIndex  5",
        "Flags        0",
        "Key          foo",
        "LockIndex    0",
        "ModifyIndex  7",
        "Session      -",
        "Value        bar",
    ]
    assert kv.detailed_block(entry, as_base64=True).decode().endswith("Value        YmFy")


# --------------------------------------------------------------------------------------------
# maint, info, version, keygen (§5.2, §5.3)


def test_maint_listing_node_then_services() -> None:
    checks = [
        {"CheckID": "_service_maintenance:web-2", "ServiceID": "web-2", "Node": "n1", "Notes": "r2"},
        {"CheckID": "serfHealth", "Node": "n1", "Notes": ""},
        {"CheckID": "_node_maintenance", "Node": "n1", "Notes": "kernel upgrade"},
        {"CheckID": "_service_maintenance:web-1", "ServiceID": "web-1", "Node": "n1", "Notes": "r1"},
    ]
    assert maint.format_maint_listing(checks) == (
        "Node:\n  Name:   n1\n  Reason: kernel upgrade\n\n"
        "Service:\n  ID:     web-1\n  Reason: r1\n\n"
        "Service:\n  ID:     web-2\n  Reason: r2\n\n"
    )


def test_maint_listing_empty() -> None:
    assert maint.format_maint_listing([{"CheckID": "serfHealth"}]) == ""


def test_info_sections_sorted_with_tab_indent() -> None:
    stats = {"raft": {"state": "Leader", "applied_index": "4"}, "build": {"version": "0.1.0", "prerelease": ""}}
    assert ops.format_info(stats) == (
        "build:\n\tprerelease = \n\tversion = 0.1.0\nraft:\n\tapplied_index = 4\n\tstate = Leader"
    )


def test_version_lines() -> None:
    import appliance

    lines = ops.format_version().splitlines()
    assert lines[0] == f"Cairn v{appliance.__version__}"
    assert lines[-2].startswith("Protocol 2 spoken by default, understands 2 to 3")
    assert lines[-1] == "Compatible with the Consul HTTP API v1"


def test_keygen_is_32_bytes_base64() -> None:
    key = ops.new_gossip_key()
    assert len(key) == 44
    assert len(base64.b64decode(key)) == 32
    assert ops.new_gossip_key() != key


# --------------------------------------------------------------------------------------------
# service definition files


def test_service_file_hcl_blocks_collapse() -> None:
    text = 'service {\n  name = "web"\n  port = 80\n  tags = ["a"]\n  check {\n    ttl = "30s"\n  }\n}\n'
    got = services.services_from_data(services.parse_definition_text(text, "web.hcl"))
    assert got == [{"name": "web", "port": 80, "tags": ["a"], "check": {"ttl": "30s"}}]


def test_service_file_json_services_list() -> None:
    text = json.dumps({"services": [{"name": "a"}, {"Name": "b", "ID": "b1"}]})
    got = services.services_from_data(services.parse_definition_text(text, "s.json"))
    assert [services.service_name(s) for s in got] == ["a", "b"]
    assert [services.service_id(s) for s in got] == ["a", "b1"]


def test_service_from_flags() -> None:
    reg = services.registration_from_flags("web", "web-1", "10.0.0.5", 8080, ["v1", "v2"], ["env=prod", "a=b=c"])
    assert reg == {
        "Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 8080,
        "Tags": ["v1", "v2"], "Meta": {"env": "prod", "a": "b=c"},
    }  # fmt: skip


# --------------------------------------------------------------------------------------------
# flag parsing (Go flag package rules)


def _parser() -> CliParser:
    p = CliParser("cairn test", "cairn test [options]")
    add_http_flags(p)
    p.add_argument("-detailed", "--detailed", dest="detailed", action="store_true")
    p.add_argument("-reason", "--reason", dest="reason", default="")
    p.add_argument("-tag", "--tag", dest="tag", action="append", default=[])
    return p


def test_flag_equals_and_space_forms() -> None:
    a = _parser().parse(["-http-addr=10.0.0.1:8500", "-token", "secret", "--datacenter=dc2"])
    assert (a.http_addr, a.token, a.datacenter) == ("10.0.0.1:8500", "secret", "dc2")


def test_bool_flag_accepts_explicit_values() -> None:
    assert _parser().parse(["-detailed=true"]).detailed is True
    assert _parser().parse(["-detailed=false"]).detailed is False
    assert _parser().parse(["-stale"]).stale is True


def test_flag_value_may_start_with_dash() -> None:
    assert _parser().parse(["-reason", "-x-"]).reason == "-x-"


def test_repeatable_flag() -> None:
    assert _parser().parse(["-tag=a", "-tag", "b"]).tag == ["a", "b"]


def test_flags_stop_at_first_positional() -> None:
    a = _parser().parse(["-detailed", "key", "-5", "-reason=x"])
    assert a.args == ["key", "-5", "-reason=x"]
    assert a.reason == ""


@pytest.mark.parametrize("argv", [["-nope"], ["-det"], ["-detailed=maybe"], ["-reason"]])
def test_bad_flags_exit_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.cli.flags import CliExit

    with pytest.raises(CliExit) as info:
        _parser().parse(argv)
    assert info.value.code == 1
    assert capsys.readouterr().err


def test_help_goes_to_stdout_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert members.run(["-h"]) == 0
    outerr = capsys.readouterr()
    assert outerr.out.startswith("Usage: cairn members [options]")
    assert "-http-addr=<address>" in outerr.out


# --------------------------------------------------------------------------------------------
# address and token resolution


def test_address_precedence() -> None:
    env = {"CAIRN_HTTP_ADDR": "10.0.0.1:1", "CONSUL_HTTP_ADDR": "10.0.0.2:2"}
    assert resolve_address("10.0.0.3:3", env) == "http://10.0.0.3:3"
    assert resolve_address(None, env) == "http://10.0.0.1:1"
    assert resolve_address(None, {"CONSUL_HTTP_ADDR": "10.0.0.2:2"}) == "http://10.0.0.2:2"
    assert resolve_address(None, {}) == f"http://{DEFAULT_HTTP_ADDR}"


def test_address_forms() -> None:
    assert normalize_address("http://h:1/") == "http://h:1"
    assert normalize_address("HTTPS://h:1") == "https://h:1"
    assert resolve_address(None, {"CONSUL_HTTP_SSL": "true", "CONSUL_HTTP_ADDR": "h:1"}) == "https://h:1"


def test_token_precedence(tmp_path: Any) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("from-file\n")
    env = {"CAIRN_HTTP_TOKEN": "cairn", "CONSUL_HTTP_TOKEN": "consul"}
    assert resolve_token("flag", str(token_file), env) == "flag"
    assert resolve_token(None, str(token_file), env) == "from-file"
    assert resolve_token(None, None, env) == "cairn"
    assert resolve_token(None, None, {"CONSUL_HTTP_TOKEN": "consul"}) == "consul"
    assert resolve_token(None, None, {"CONSUL_HTTP_TOKEN_FILE": str(token_file)}) == "from-file"
    assert resolve_token(None, None, {}) == ""


def test_config_from_parsed_flags() -> None:
    args = _parser().parse(["-http-addr=127.0.0.1:9", "-stale", "-datacenter=dc9"])
    cfg = config_from_args(args, {"CONSUL_HTTP_TOKEN": "t"})
    assert (cfg.base_url, cfg.token, cfg.datacenter, cfg.stale) == ("http://127.0.0.1:9", "t", "dc9", True)


# --------------------------------------------------------------------------------------------
# main


def test_main_help_and_unknown_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out == usage()
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 1
    assert "Usage: cairn" in capsys.readouterr().err
    for verb in ("members", "catalog", "services", "kv", "maint", "reload", "leave", "version", "info", "monitor",
                 "keygen"):
        assert f"    {verb} " in usage()


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("Cairn v")


# --------------------------------------------------------------------------------------------
# the HTTP edge, against a stub agent


class StubAgent:
    """Answers (method, path) from a table and records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, bytes]] = {}
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.requests.append({
                    "method": self.command,
                    "path": urllib.parse.unquote(parts.path),
                    "query": urllib.parse.parse_qsl(parts.query, keep_blank_values=True),
                    "headers": dict(self.headers.items()),
                    "body": body,
                })  # fmt: skip
                status, data = stub.routes.get((self.command, urllib.parse.unquote(parts.path)), (404, b""))
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def route(self, method: str, path: str, status: int, body: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.routes[(method, path)] = (status, data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubAgent]:
    s = StubAgent()
    for name in ("CAIRN_HTTP_TOKEN", "CONSUL_HTTP_TOKEN", "CAIRN_HTTP_TOKEN_FILE", "CONSUL_HTTP_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    monkeypatch.setenv("CAIRN_HTTP_ADDR", s.addr)
    try:
        yield s
    finally:
        s.close()


def test_connection_refused_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CAIRN_HTTP_ADDR", f"127.0.0.1:{port}")
    assert members.run([]) == 1
    outerr = capsys.readouterr()
    assert outerr.out == ""
    lines = outerr.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error connecting to Consul agent: ")


def test_http_error_text(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("GET", "/v1/agent/members", 500, b"boom\n")
    assert members.run([]) == 1
    assert capsys.readouterr().err == "Unexpected response code: 500 (boom)\n"


def test_members_exit_2_when_nothing_matches(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("GET", "/v1/agent/members", 200, [SERVER_MEMBER])
    assert members.run(["-status=failed"]) == 2
    assert capsys.readouterr().out == ""
    assert members.run([]) == 0
    assert capsys.readouterr().out.startswith("Node     Address")


def test_token_header_and_datacenter_param(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("GET", "/v1/catalog/nodes", 200, [NODE])
    assert catalog.run(["nodes", "-token=s3cret", "-datacenter=dc1", "-stale", "-node-meta=env=prod"]) == 0
    req = stub.requests[-1]
    assert req["headers"]["X-Consul-Token"] == "s3cret"
    assert ("dc", "dc1") in req["query"] and ("stale", "") in req["query"]
    assert ("node-meta", "env:prod") in req["query"]
    assert "server-1  40e4a748" in capsys.readouterr().out


def test_catalog_empty_answers(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("GET", "/v1/catalog/nodes", 200, [])
    stub.route("GET", "/v1/catalog/services", 200, {})
    assert catalog.run(["nodes"]) == 0
    assert catalog.run(["services"]) == 0
    assert capsys.readouterr().err.splitlines() == [catalog.NO_NODES, catalog.NO_SERVICES]


def test_kv_put_params_and_messages(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("PUT", "/v1/kv/app/a b", 200, b"true")
    assert kv.run(["put", "-flags=42", "-cas", "-modify-index=0", "app/a b", "-value-"]) == 0
    req = stub.requests[-1]
    assert req["body"] == b"-value-"
    assert ("flags", "42") in req["query"] and ("cas", "0") in req["query"]
    assert capsys.readouterr().out == "Success! Data written to: app/a b\n"
    stub.route("PUT", "/v1/kv/app/a b", 200, b"false")
    assert kv.run(["put", "-cas", "-modify-index=3", "app/a b", "x"]) == 1
    assert capsys.readouterr().err == "Error! Did not write to app/a b: CAS failed\n"


def test_kv_put_base64_and_file(stub: StubAgent, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("PUT", "/v1/kv/k", 200, b"true")
    assert kv.run(["put", "-base64", "k", base64.b64encode(b"\x00\x01").decode()]) == 0
    assert stub.requests[-1]["body"] == b"\x00\x01"
    f = tmp_path / "v.bin"
    f.write_bytes(b"from file")
    assert kv.run(["put", "k", f"@{f}"]) == 0
    assert stub.requests[-1]["body"] == b"from file"


def test_kv_get_missing_and_present(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    assert kv.run(["get", "nope"]) == 1
    assert capsys.readouterr().err == "Error! No key exists at: nope\n"
    stub.route("GET", "/v1/kv/k", 200, [_entry("k", b"hello")])
    assert kv.run(["get", "k"]) == 0
    assert capsys.readouterr().out == "hello\n"


def test_kv_delete_recurse_message(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("DELETE", "/v1/kv/app", 200, b"true")
    assert kv.run(["delete", "-recurse", "app"]) == 0
    assert ("recurse", "") in stub.requests[-1]["query"]
    assert capsys.readouterr().out == "Success! Deleted keys with prefix: app\n"


def test_maint_enable_service(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("PUT", "/v1/agent/service/maintenance/web-1", 200, b"")
    assert maint.run(["-enable", "-service=web-1", "-reason", "deploy now"]) == 0
    req = stub.requests[-1]
    assert ("enable", "true") in req["query"] and ("reason", "deploy now") in req["query"]
    assert capsys.readouterr().out == 'Service maintenance is now enabled for "web-1"\n'


def test_services_register_from_flags(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("PUT", "/v1/agent/service/register", 200, b"")
    assert services.run(["register", "-name=web", "-port", "8080", "-tag=v1", "-meta=env=prod"]) == 0
    body = json.loads(stub.requests[-1]["body"])
    assert body == {"Name": "web", "Port": 8080, "Tags": ["v1"], "Meta": {"env": "prod"}}
    assert capsys.readouterr().out == "Registered service: web\n"


def test_monitor_stream_end(stub: StubAgent, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("GET", "/v1/agent/monitor", 200, b"line one\nline two\n")
    assert ops.run_monitor(["-log-level=debug"]) == 1
    assert capsys.readouterr().out == "line one\nline two\n"
    assert ("loglevel", "debug") in stub.requests[-1]["query"]
