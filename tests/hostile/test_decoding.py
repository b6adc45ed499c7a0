"""Hostile request bodies against a real agent: typed decoding, stored data, every reader.

Three parts (the security issue's probes, then generated input):

1. The probes that crashed or corrupted the agent, each asserting Consul's status and text, that
   the agent is alive, and that the catalog did not change.
2. A fuzzer over every route that takes a JSON body: bodies generated from the request specs
   (appliance.api.structs) with wrong-typed values mixed in. No 5xx other than Consul's
   deliberate ones, no traceback in the agent's log, and a refused request changes nothing.
3. A property test: nodes and services that the API accepts are read back through every
   reader (catalog, health, http_sd, metrics, DNS); none may fail.

The number of generated examples is CAIRN_FUZZ_EXAMPLES (default 60 per test, the CI budget);
BENCHMARKS.md records a long run.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from dnslib import DNSRecord
from hypothesis import HealthCheck, given, settings, strategies as st

from appliance.api import gojson
from appliance.api.structs import (
    CHECK_DEFINITION,
    CHECK_UPDATE,
    COORDINATE_UPDATE,
    DEREGISTER_REQUEST,
    REGISTER_REQUEST,
    SERVICE_DEFINITION,
)
from tests.conftest import AgentProcess, http

EXAMPLES = int(os.environ.get("CAIRN_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# 500s Consul itself answers for these bodies (reference/consul-api.md §4.1-4.2): errors of its
# RPC layer, which its HTTP layer passes on as 500.
DELIBERATE_500 = (
    b"Must provide node", b"Must provide address if SkipNodeUpdate is not set", b"Must provide service name",
    b"Unknown service ID", b"Scripts are disabled on this agent", b"does not exist", b"invalid coordinate",
    b"incompatible coordinate", b"No path to datacenter",  # a register for a datacenter nobody knows
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    proc = AgentProcess(tmp_path_factory.mktemp("hostile-decoding"), node="test-node")
    try:
        yield proc
    finally:
        proc.stop()


def _catalog_state(agent: AgentProcess) -> tuple[str, bytes, bytes]:
    _, headers, nodes = agent.get("/v1/catalog/nodes")
    _, _, services = agent.get("/v1/catalog/services")
    return headers.get("X-Consul-Index"), nodes, services


def _no_traceback(agent: AgentProcess) -> None:
    log = Path(agent.log_path).read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert agent.alive()


# ------------------------------------------------------------------------------------ 1. probes

PROBES = [
    ("/v1/catalog/register", {"Node": 123, "Address": "1.2.3.4"},
     "json: cannot unmarshal number into Go struct field RegisterRequest.Node of type string"),
    ("/v1/catalog/register", {"Node": True, "Address": "1.2.3.4"},
     "json: cannot unmarshal bool into Go struct field RegisterRequest.Node of type string"),
    ("/v1/catalog/deregister", {"Node": 123},
     "json: cannot unmarshal number into Go struct field DeregisterRequest.Node of type string"),
    ("/v1/catalog/register", {"Node": "n1", "Address": "1.2.3.4", "Check": {"CheckID": ["x"], "Name": "c"}},
     "json: cannot unmarshal array into Go struct field HealthCheck.Check.CheckID of type string"),
    ("/v1/catalog/register", {"Node": "n1", "Address": 123},
     "json: cannot unmarshal number into Go struct field RegisterRequest.Address of type string"),
    ("/v1/catalog/register", {"Node": "n1", "Address": "1.2.3.4", "TaggedAddresses": "x"},
     "json: cannot unmarshal string into Go struct field RegisterRequest.TaggedAddresses of type "
     "map[string]string"),
    ("/v1/catalog/register", {"Node": "n1", "Address": "1.2.3.4", "NodeMeta": {"a": 5}},
     "json: cannot unmarshal number into Go struct field RegisterRequest.NodeMeta of type string"),
    ("/v1/catalog/register", {"Node": "n1", "Address": "1.2.3.4", "Service": {"Service": "s", "Meta": {"a": []}}},
     "json: cannot unmarshal array into Go struct field NodeService.Service.Meta of type string"),
    ("/v1/agent/service/register", {"Name": "web", "Port": "80"},
     "json: cannot unmarshal string into Go struct field ServiceDefinition.Port of type int"),
    ("/v1/agent/service/register", {"Name": "web", "Check": {"TTL": True}},
     "json: cannot unmarshal bool into Go struct field CheckDefinition.Check.TTL of type time.Duration"),
    ("/v1/agent/check/register", {"Name": "c", "TTL": "10s", "ServiceID": 7},
     "json: cannot unmarshal number into Go struct field CheckDefinition.ServiceID of type string"),
]


@pytest.mark.parametrize(("path", "body", "text"), PROBES, ids=[f"{p}:{json.dumps(b)[:40]}" for p, b, _ in PROBES])
def test_probe_is_refused_with_gos_text_and_changes_nothing(agent, path, body, text):
    before = _catalog_state(agent)
    status, _, answer = agent.put(path, body)
    assert (status, answer.decode()) == (400, f"Request decode failed: {text}")
    assert _catalog_state(agent) == before
    _no_traceback(agent)


@pytest.mark.parametrize(("meta", "text"), [
    ({"a": "x" * 513}, "Value is too long (limit: 512 characters): a"),
    ({f"k{i}": "v" for i in range(65)}, "Node metadata cannot contain more than 64 key/value pairs"),
    ({"consul-x": "v"}, "Key prefix 'consul-' is reserved for internal use: consul-x"),
    ({"a b": "v"}, "Key contains invalid characters: a b"),
])
def test_node_meta_limits(agent, meta, text):
    before = _catalog_state(agent)
    status, _, answer = agent.put("/v1/catalog/register", {"Node": "n2", "Address": "10.0.0.2", "NodeMeta": meta})
    assert (status, answer.decode()) == (400, text)
    assert _catalog_state(agent) == before


def test_well_typed_register_still_works_and_readers_see_it(agent):
    status, _, _ = agent.put("/v1/catalog/register", {
        "node": "typed", "address": "10.0.0.9", "NodeMeta": {"rack": "r1"}, "TaggedAddresses": {"wan": "1.1.1.1"},
        "Service": {"Service": "typed-svc", "Port": 80, "Tags": ["a"], "CreateIndex": 3, "ModifyIndex": 4,
                    "TaggedAddresses": {"lan": {"Address": "10.0.0.9", "Port": 80}}},
        "Check": {"Name": "c", "Status": "passing", "ServiceID": "typed-svc",
                  "Definition": {"HTTP": "http://10.0.0.9/", "Interval": "5s"}}})
    assert status == 200
    _, _, body = agent.get("/v1/health/service/typed-svc")
    [entry] = json.loads(body)
    assert entry["Node"]["TaggedAddresses"] == {"wan": "1.1.1.1"}
    check = next(c for c in entry["Checks"] if c["CheckID"] == "c")
    assert (check["Type"], check["Interval"], check["Definition"]["Interval"]) == ("http", "5s", "5s")
    assert agent.put("/v1/catalog/deregister", {"Node": "typed"})[0] == 200


# ------------------------------------------------------------------------------------ 2. fuzzer

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _from_spec(spec: gojson.Spec, mutate: bool) -> st.SearchStrategy[Any]:
    """Values of `spec`'s Go type; with `mutate`, a value of any JSON type in about one place in
    five below the top."""
    def sub(inner: gojson.Spec) -> st.SearchStrategy[Any]:
        valid = _from_spec(inner, mutate)
        return st.one_of(valid, valid, valid, valid, ANY_JSON) if mutate else valid

    if isinstance(spec, gojson.Struct):
        return st.fixed_dictionaries({}, optional={name: sub(field) for name, field in spec.fields.items()})
    if isinstance(spec, gojson.List):
        return st.lists(sub(spec.elem), max_size=3)
    if isinstance(spec, gojson.Map):
        return st.dictionaries(st.text(max_size=8), sub(spec.elem), max_size=3)
    if isinstance(spec, gojson.Int):
        return st.integers(spec.low, spec.high) | st.integers(0, 100)
    if spec is gojson.STRING:
        return st.text(max_size=12) | st.sampled_from(["web", "10.0.0.1", "passing", "critical", "c1"])
    if spec is gojson.BOOL:
        return st.booleans()
    if spec is gojson.FLOAT:
        return st.floats(-1e3, 1e3)
    if spec is gojson.DURATION:
        return st.sampled_from(["", "1s", "10s", "1m30s", "500ms", "-1s", "soon"]) | st.integers(0, 10**12)
    return ANY_JSON


def bodies(spec: gojson.Struct, required: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Well-typed bodies with what the endpoint requires, well-typed bodies, bodies with
    wrong-typed values inside, and any JSON at all."""
    optional = {name: _from_spec(field, False) for name, field in spec.fields.items() if name not in required}
    complete = st.fixed_dictionaries(required, optional=optional)
    return complete | complete | _from_spec(spec, False) | _from_spec(spec, True) | ANY_JSON


_NAME = st.sampled_from(["web", "db", "n1", "n2"])
_VEC = st.lists(st.floats(-1, 1), min_size=8, max_size=8)
FUZZED_ROUTES = [
    ("PUT", "/v1/catalog/register", REGISTER_REQUEST, {"Node": _NAME, "Address": st.just("10.0.0.1")}),
    ("PUT", "/v1/catalog/deregister", DEREGISTER_REQUEST, {"Node": _NAME}),
    ("PUT", "/v1/agent/service/register", SERVICE_DEFINITION, {"Name": _NAME}),
    ("PUT", "/v1/agent/check/register", CHECK_DEFINITION, {"Name": _NAME, "TTL": st.just("30s")}),
    ("PUT", "/v1/agent/check/update/nothing-here", CHECK_UPDATE, {"Status": st.just("passing")}),
    ("PUT", "/v1/coordinate/update", COORDINATE_UPDATE,
     {"Node": st.just("test-node"), "Coord": st.fixed_dictionaries({"Vec": _VEC, "Height": st.floats(0, 1)})}),
]


@pytest.mark.parametrize(("method", "path", "spec", "required"), FUZZED_ROUTES, ids=[r[1] for r in FUZZED_ROUTES])
def test_fuzzed_bodies(agent, method, path, spec, required):
    counts = {"accepted": 0, "refused": 0}

    @FUZZ
    @given(body=bodies(spec, required))
    def one(body: Any) -> None:
        before = _catalog_state(agent)
        status, _, answer = http(method, agent.url + path, json.dumps(body).encode())
        assert agent.alive()
        assert status < 500 or any(text in answer for text in DELIBERATE_500), (status, answer, body)
        if status >= 400:
            counts["refused"] += 1
            assert _catalog_state(agent) == before, (status, answer, body)
        else:
            counts["accepted"] += 1

    one()
    _no_traceback(agent)
    print(f"{path}: {counts}")


QUERY_ROUTES = [
    ("GET", "/v1/catalog/nodes"), ("GET", "/v1/catalog/services"), ("GET", "/v1/catalog/service/web"),
    ("GET", "/v1/catalog/node/test-node"), ("GET", "/v1/health/service/web"), ("GET", "/v1/health/state/any"),
    ("GET", "/v1/health/node/test-node"), ("GET", "/v1/health/checks/web"), ("GET", "/v1/kv/fuzz/"),
    ("PUT", "/v1/kv/fuzz/key"), ("DELETE", "/v1/kv/fuzz/gone"), ("GET", "/v1/agent/services"),
    ("GET", "/v1/agent/checks"), ("GET", "/v1/agent/members"), ("GET", "/v1/coordinate/nodes"),
    ("GET", "/v1/event/list"), ("PUT", "/v1/event/fire/fuzz"), ("GET", "/v1/sd/prometheus"),
    ("GET", "/v1/agent/metrics"), ("GET", "/v1/status/leader"), ("GET", "/v1/agent/health/service/name/web"),
]
PARAMS = ["index", "stale", "consistent", "near", "node-meta", "tag", "filter", "passing", "cas",
          "flags", "recurse", "keys", "separator", "raw", "pretty", "segment", "format", "name", "node",
          "service", "state", "max_stale", "acquire", "release", "wan"]
# Consul's own 500s for query parameters (docs/http-api.md).
DELIBERATE_QUERY_500 = (b"Cannot provide tag filter without service filter", b"Invalid node filter",
                        b"Invalid service filter", b"Invalid tag filter", b"missing session", b"invalid session",
                        b"No cluster leader")
PARAM_VALUES = st.text(max_size=12) | st.sampled_from(
    ["", "0", "1", "-1", " 5", "5 ", "1e3", "10s", "0x10", "99999999999999999999", "true", "a:b", "Node == x",
     'Node matches "(", ']) | st.integers(-10, 10**20).map(str)


@FUZZ
@given(route=st.sampled_from(QUERY_ROUTES),
       query=st.lists(st.tuples(st.sampled_from(PARAMS), PARAM_VALUES), max_size=4))
def test_fuzzed_query_parameters(agent, route, query):
    method, path = route
    url = agent.url + path + "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query)
    if method == "GET":
        url += "&wait=1ms"  # a blocking read must not park the test (wait itself: tests/unit)
    status, _, answer = http(method, url, b"v" if method == "PUT" else None, timeout=15)
    assert agent.alive()
    if path.startswith("/v1/agent/health/service/") and status in (429, 503):
        status = 200  # Consul's answer for a warning / critical service (docs/http-api.md)
    assert status < 500 or any(text in answer for text in DELIBERATE_QUERY_500), (method, url, status, answer)
    _no_traceback(agent)


# ---------------------------------------------------------------------- 3. every reader survives

NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
ADDRESSES = st.sampled_from(["10.0.0.1", "::1", "2001:db8::5", "host.example", "", "not an address", "é.x"])


def _dns(agent: AgentProcess, name: str, qtype: str) -> DNSRecord | None:
    try:
        query = DNSRecord.question(name, qtype)
    except Exception:  # noqa: BLE001 - a name dnslib cannot encode is not a question anyone can ask
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query.pack(), ("127.0.0.1", agent.dns_port))
        reply = DNSRecord.parse(sock.recv(65535))
    assert reply.header.id == query.header.id
    return reply


@FUZZ
@given(node=NAMES, address=ADDRESSES, service=NAMES, tags=st.lists(NAMES, max_size=3),
       meta=st.dictionaries(st.from_regex(r"\A[a-z0-9_-]{1,10}\Z"), st.text(max_size=20), max_size=3),
       port=st.integers(0, 65535), svc_address=ADDRESSES, status=st.sampled_from(["passing", "warning", "critical"]))
def test_accepted_rows_survive_every_reader(agent, node, address, service, tags, meta, port, svc_address, status):
    body = {"Node": node, "Address": address or "10.0.0.1", "NodeMeta": meta, "TaggedAddresses": {"lan": address},
            "Service": {"Service": service, "Tags": tags, "Port": port, "Address": svc_address, "Meta": meta},
            "Check": {"Name": "c", "Status": status, "ServiceID": service}}
    status_code, _, answer = agent.put("/v1/catalog/register", body)
    if status_code != 200:
        assert status_code < 500 or any(t in answer for t in DELIBERATE_500), answer
        return
    try:
        reads = ["/v1/catalog/nodes", "/v1/catalog/services", f"/v1/catalog/service/{quote(service, safe='')}",
                 f"/v1/catalog/node/{quote(node, safe='')}", f"/v1/health/service/{quote(service, safe='')}",
                 f"/v1/health/node/{quote(node, safe='')}", "/v1/health/state/any", "/v1/sd/prometheus",
                 "/v1/agent/metrics?format=prometheus", "/v1/internal/ui/services"]
        for path in reads:
            code, _, data = agent.get(path)
            unprintable = code == 400 and data == b"Invalid URL path: contains non-printable characters"
            assert code in (200, 404) or unprintable, (path, code, data[:300])  # Consul refuses those too
        for name, qtype in ((f"{node}.node.consul", "A"), (f"{service}.service.consul", "SRV"),
                            (f"{service}.service.consul", "A")):
            _dns(agent, name, qtype)
        assert agent.alive()
    finally:
        assert agent.put("/v1/catalog/deregister", {"Node": node})[0] == 200
    _no_traceback(agent)
