"""appliance.telemetry and exporters: the recorder, Consul's metrics JSON, the Prometheus text.

Rules from reference/prometheus.md §6 (go-metrics names and types, 415 text) and
reference/consul-api.md §4.1 (the JSON shape of /v1/agent/metrics).
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.http.routes import Route
from appliance.http.routing import Router
from appliance.state.fsm import FSM
from appliance.state.store import Store
from appliance.telemetry import Aggregate, Telemetry, check_gauges, instrument, kv_op, quantile, route_label
from exporters.catalog import CatalogCollector, KVCollector
from exporters.exposition import TelemetryCollector, encode, prometheus_name


class Clock:
    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self.wall = wall
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def recorder(clock: Clock, **kw) -> Telemetry:
    kw.setdefault("hostname", "host-1")
    return Telemetry(wall=lambda: clock.wall, monotonic=lambda: clock.mono, **kw)


# ---------------------------------------------------------------------- names


def test_gauges_carry_the_hostname_unless_disabled():
    clock = Clock()
    tel = recorder(clock)
    assert tel.key("runtime.alloc_bytes", gauge=True) == "consul.host-1.runtime.alloc_bytes"
    assert tel.key("raft.apply") == "consul.raft.apply"
    tel = recorder(clock, disable_hostname=True, prefix="cairn")
    assert tel.key("runtime.alloc_bytes", gauge=True) == "cairn.runtime.alloc_bytes"


# Consul: go-metrics prometheus sink replaces " .=-/" with "_" and keeps case
@pytest.mark.parametrize("key,name", [
    ("consul.raft.leader.lastContact", "consul_raft_leader_lastContact"),
    ("consul.rpc.cross-dc", "consul_rpc_cross_dc"),
    ("consul.my host.a=b/c", "consul_my_host_a_b_c"),
    ("consul.h\u00e9.x", "consul_h__x"),
])  # fmt: skip
def test_prometheus_name(key, name):
    assert prometheus_name(key) == name


@pytest.mark.parametrize("raw,label", [
    ("/v1/health/service/web", "v1.health.service._"),
    ("/v1/agent/self", "v1.agent.self"),
    ("/v1/kv/a/b/c", "v1.kv._"),
    ("/v1/kv/", "v1.kv._"),
    ("/v1/nosuch", ""),
])  # fmt: skip
def test_route_label(raw, label):
    # the label is made from the pattern the router matched (longest prefix wins)
    router = Router(Route("GET", path, None, "none")  # type: ignore[arg-type]
                    for path in ("/v1/agent/self", "/v1/health/service/", "/v1/kv/", "/v1/health/"))
    found = router.resolve(raw)
    assert (route_label(found[0]) if found else "") == label


# ---------------------------------------------------------------------- aggregation


def test_aggregate_matches_go_metrics():
    a = Aggregate()
    for v in (2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0):
        a.add(v)
    assert (a.count, a.sum, a.min, a.max, a.mean) == (8, 40.0, 2.0, 9.0, 5.0)
    assert a.stddev == pytest.approx(2.138, abs=1e-3)  # sample standard deviation
    one = Aggregate()
    one.add(3.0)
    assert one.stddev == 0.0


def test_quantile_nearest_rank():
    values = sorted(float(i) for i in range(1, 101))
    assert quantile(values, 0.5) == 50.0
    assert quantile(values, 0.99) == 99.0
    assert math.isnan(quantile([], 0.5))


# ---------------------------------------------------------------------- /v1/agent/metrics JSON


def test_display_shape_and_interval_choice():
    clock = Clock(1_700_000_000.0)  # a multiple of 10 s
    tel = recorder(clock)
    tel.incr_counter("serf.member.join", 2)
    tel.add_sample("api.http", 5.0, {"method": "GET", "path": "v1.agent.self"})
    tel.set_gauge("runtime.num_goroutines", 7)
    first = tel.display()  # only one interval so far: the current one
    assert list(first) == ["Timestamp", "Gauges", "Points", "Counters", "Samples"]
    assert first["Timestamp"] == "2023-11-14 22:13:20 +0000 UTC"
    assert first["Points"] == []
    assert first["Gauges"] == [{"Name": "consul.host-1.runtime.num_goroutines", "Value": 7.0, "Labels": {}}]
    counter = first["Counters"][0]
    assert list(counter) == ["Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels"]
    assert counter["Name"] == "consul.serf.member.join" and counter["Count"] == 1 and counter["Sum"] == 2.0
    assert counter["Rate"] == pytest.approx(0.2)  # Sum per second of the 10 s interval
    sample = first["Samples"][0]
    assert sample["Labels"] == {"method": "GET", "path": "v1.agent.self"}
    assert isinstance(sample["Count"], int)

    clock.advance(10)
    tel.add_sample("api.http", 1.0, {"method": "GET", "path": "v1.agent.self"})
    second = tel.display()  # the finished interval, not the one being filled
    assert second["Timestamp"] == first["Timestamp"]
    assert second["Samples"][0]["Count"] == 1 and second["Samples"][0]["Sum"] == 5.0
    clock.advance(10)
    third = tel.display()
    assert third["Samples"][0]["Sum"] == 1.0


def test_only_six_intervals_are_kept():
    clock = Clock()
    tel = recorder(clock)
    for _ in range(20):
        tel.incr_counter("x")
        clock.advance(10)
    assert len(tel.intervals) == 6


def test_computed_gauges_appear_in_both_views():
    clock = Clock()
    tel = recorder(clock, disable_hostname=True)
    tel.add_gauge_source(lambda: [("rpc.queries_blocking", 3, None)])
    assert {"Name": "consul.rpc.queries_blocking", "Value": 3.0, "Labels": {}} in tel.display()["Gauges"]
    assert ("consul.rpc.queries_blocking", (), 3.0) in tel.prometheus_series()["gauges"]


# ---------------------------------------------------------------------- Prometheus view


def test_prometheus_series_expire_after_retention():
    clock = Clock()
    tel = recorder(clock, retention_s=60)
    tel.incr_counter("a")
    tel.set_gauge("g", 1)
    tel.add_sample("s", 2.0)
    clock.advance(30)
    tel.incr_counter("b")
    series = tel.prometheus_series()
    assert [c[0] for c in series["counters"]] == ["consul.a", "consul.b"]
    clock.advance(31)
    series = tel.prometheus_series()
    assert [c[0] for c in series["counters"]] == ["consul.b"]
    assert series["gauges"] == [] and series["summaries"] == []


def test_no_prometheus_data_kept_when_disabled():
    tel = recorder(Clock(), retention_s=0)
    tel.incr_counter("a")
    tel.add_sample("s", 1.0)
    assert not tel.prometheus_enabled
    assert tel.counters == {} and tel.summaries == {}
    assert tel.display()["Counters"]  # the JSON view still works


def test_summary_quantiles_use_the_last_ten_seconds():
    clock = Clock()
    tel = recorder(clock)
    tel.add_sample("s", 1000.0)
    clock.advance(11)
    for v in (1.0, 2.0, 3.0):
        tel.add_sample("s", v)
    (_, _, count, total, qs), = tel.prometheus_series()["summaries"]
    assert (count, total) == (4, 1006.0)  # count and sum are cumulative
    assert qs == {0.5: 2.0, 0.9: 3.0, 0.99: 3.0}  # quantiles only over the window
    clock.advance(11)
    (_, _, _, _, qs), = tel.prometheus_series()["summaries"]
    assert all(math.isnan(v) for v in qs.values())


def parse(text: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def test_exposition_keeps_consul_counter_names_and_types():
    clock = Clock()
    tel = recorder(clock, disable_hostname=True)
    tel.incr_counter("raft.apply", 3)
    tel.set_gauge("runtime.alloc_bytes", 1024)
    tel.add_sample("api.http", 2.0, {"method": "GET", "path": "v1.kv._"})
    text = encode(TelemetryCollector(tel).collect())
    assert b"# TYPE consul_raft_apply counter\nconsul_raft_apply 3.0\n" in text
    assert b"_total" not in text
    assert b"# TYPE consul_runtime_alloc_bytes gauge\n" in text
    assert b'consul_api_http{method="GET",path="v1.kv._",quantile="0.5"} 2.0\n' in text
    assert b'consul_api_http_count{method="GET",path="v1.kv._"} 1.0\n' in text
    families = parse(text)
    assert families["consul_api_http"].type == "summary"
    assert families["consul_runtime_alloc_bytes"].type == "gauge"


# ---------------------------------------------------------------------- instrumentation


@pytest.mark.parametrize("cmd,op", [
    ({"Type": "kv_set", "Verb": "set"}, "set"),
    ({"Type": "kv_set", "Verb": "cas", "Index": 3}, "cas"),
    ({"Type": "kv_delete", "Recurse": True}, "delete-tree"),
    ({"Type": "kv_delete", "Index": 3}, "delete-cas"),
    ({"Type": "kv_delete"}, "delete"),
])  # fmt: skip
def test_kv_op_names(cmd, op):
    assert kv_op(cmd) == op


def test_instrument_times_writes_with_consul_names():
    import asyncio

    from appliance.raft.driver import MemoryStorage, RaftDriver
    from appliance.raft.messages import Configuration, Server

    clock = Clock()
    tel = recorder(clock, disable_hostname=True)
    log = RaftDriver(Store(), node_id="n1", address="127.0.0.1:8300", storage=MemoryStorage())
    log.open(Configuration((Server("n1", "127.0.0.1:8300"),)))  # a one-voter Raft, as in -dev
    instrument(tel, consensus=log, hub=SimpleNamespace(parked=0), store=log.store,
               local=SimpleNamespace(checks={}, services={}), raft=log)

    async def writes():
        await log.start()
        try:
            await log.propose({"Type": "register", "Node": "n1", "Address": "10.0.0.1", "NodeMeta": {}})
            await log.propose({"Type": "kv_set", "Verb": "set", "Key": "a", "Value": b"1"})
            await log.propose({"Type": "kv_delete", "Key": "a", "Recurse": True})
        finally:
            await log.stop()

    asyncio.run(writes())
    names = {(s[0], s[1]) for s in tel.prometheus_series()["summaries"] if not s[0].startswith("consul.raft.")}
    assert names == {("consul.catalog.register", ()), ("consul.fsm.register", ()), ("consul.kvs.apply", ()),
                     ("consul.fsm.kvs", (("op", "set"),)), ("consul.fsm.kvs", (("op", "delete-tree"),))}
    gauges = {g[0]: g[2] for g in tel.prometheus_series()["gauges"]}
    assert gauges["consul.raft.applied_index"] == 5  # configuration, no-op, then the three writes
    assert gauges["consul.state.nodes"] == 1
    assert gauges["consul.rpc.queries_blocking"] == 0


def test_check_gauges_one_series_per_status():
    definition = SimpleNamespace(name="Service 'web' check", service_id="web")
    local = SimpleNamespace(
        checks={"service:web": SimpleNamespace(definition=definition, status="warning")},
        services={"web": SimpleNamespace(definition=SimpleNamespace(name="web"))},
    )
    rows = check_gauges(local)
    assert [(r[1], r[2]["status"]) for r in rows] == [(0, "passing"), (1, "warning"), (0, "critical"),
                                                      (0, "maintenance")]
    assert rows[0][2]["service_name"] == "web"


# ---------------------------------------------------------------------- consul_exporter metrics


def test_catalog_collector_names_and_labels():
    from test_sd_targets import build

    store = build()
    consensus = SimpleNamespace(peers=lambda: ["10.0.0.1:8300"], known_leader=True,
                                leader_address=lambda: "10.0.0.1:8300")
    member = SimpleNamespace(name="n1", addr="10.0.0.1", port=8301, status=1,
                             tags={"role": "consul", "build": "1.17.0:abc", "dc": "dc1"})
    membership = SimpleNamespace(members=lambda wan=False: [SimpleNamespace(**{**vars(member),
                                                                            "name": "n1.dc1" if wan else "n1"})])
    api = SimpleNamespace(store=store, consensus=consensus, config=SimpleNamespace(server=True), membership=membership)
    families = parse(encode(CatalogCollector(api).collect()))
    value = {f.name: f.samples for f in families.values()}
    assert value["consul_up"][0].value == 1
    assert value["consul_raft_peers"][0].value == 1
    assert value["consul_raft_leader"][0].value == 1
    assert value["consul_serf_lan_members"][0].value == 2
    assert value["consul_catalog_services"][0].value == 2
    healthy = {s.labels["service_id"]: s.value for s in value["consul_catalog_service_node_healthy"]}
    assert healthy == {"web-1": 1, "web-2": 0, "db": 0}
    assert set(value["consul_catalog_service_node_healthy"][0].labels) == {"service_id", "node", "service_name"}
    node_status = value["consul_health_node_status"]
    assert {s.labels["status"] for s in node_status} == {"passing", "warning", "critical", "maintenance"}
    assert set(node_status[0].labels) == {"check", "node", "status"}
    svc_status = value["consul_health_service_status"]
    assert set(svc_status[0].labels) == {"check", "node", "service_id", "service_name", "status"}
    crit = [s for s in svc_status if s.labels["check"] == "c-web-2" and s.value == 1]
    assert [s.labels["status"] for s in crit] == ["critical"]
    links = value["consul_service_checks"]
    assert set(links[0].labels) == {"service_id", "service_name", "check_id", "check_name", "node"}
    assert value["consul_serf_lan_member_info"][0].labels == {"member": "n1", "role": "consul", "version": "1.17.0"}
    assert families["consul_up"].type == "gauge"


def test_kv_collector_numeric_values_only():
    store = Store()
    fsm = FSM(store)
    for i, (key, value) in enumerate([("cfg/a", b"1.5"), ("cfg/b", b"text"), ("cfg/c", b"7"), ("other", b"3")], 1):
        fsm.apply(i, {"Type": "kv_set", "Verb": "set", "Key": key, "Value": value})
    agent = SimpleNamespace(store=store)
    assert KVCollector.from_query(agent, {}) is None
    samples = list(KVCollector.from_query(agent, {"kv_prefix": "cfg/"}).collect())[0].samples
    assert [(s.labels["key"], s.value) for s in samples] == [("cfg/a", 1.5), ("cfg/c", 7.0)]
    samples = list(KVCollector.from_query(agent, {"kv_prefix": "", "kv_filter": "c$"}).collect())[0].samples
    assert [s.labels["key"] for s in samples] == ["cfg/c"]


def test_exposition_is_valid_text_format():
    text = encode(TelemetryCollector(recorder(Clock())).collect())
    assert re.fullmatch(rb"(#[^\n]*\n|[^\n]+ [^\n]+\n)*", text)


# ---------------------------------------------------------------------- DNS


def test_dns_answers_are_timed_by_zone():
    from dnslib import DNSRecord

    from appliance.telemetry import instrument_dns, is_ptr_query

    forward = DNSRecord.question("web.service.consul", "A").pack()
    reverse = DNSRecord.question("1.0.0.127.IN-ADDR.ARPA", "PTR").pack()
    reverse6 = DNSRecord.question("1.0.0.0.ip6.arpa", "PTR").pack()
    assert not is_ptr_query(forward) and is_ptr_query(reverse) and is_ptr_query(reverse6)
    assert not is_ptr_query(b"\x00" * 5)  # too short: no question

    clock = Clock()
    tel = recorder(clock)
    server = SimpleNamespace(answer=lambda data, tcp: b"reply")
    instrument_dns(tel, server, "node-1")
    assert server.answer(forward, False) == b"reply"
    server.answer(reverse, True)
    names = {(s[0], s[1]) for s in tel.prometheus_series()["summaries"]}
    assert names == {("consul.dns.domain_query", (("node", "node-1"),)),
                     ("consul.dns.ptr_query", (("node", "node-1"),))}


def test_dns_timing_samples_under_load_but_counts_every_query():
    from dnslib import DNSRecord

    from appliance.telemetry import instrument_dns

    forward = DNSRecord.question("web.service.consul", "A").pack()
    reverse = DNSRecord.question("1.0.0.127.in-addr.arpa", "PTR").pack()
    clock = Clock()
    tel = recorder(clock)
    calls = []

    def answer(data, tcp):
        calls.append(data)
        clock.advance(0.002)  # every answer takes 2 ms
        return b"reply"

    server = SimpleNamespace(answer=answer)
    instrument_dns(tel, server, "node-1", every=4, gap_s=1.0)

    # A burst (much faster than one per second): the first query is timed, then one in four.
    for _ in range(10):
        assert server.answer(forward, False) == b"reply"
    key = ("consul.dns.domain_query", (("node", "node-1"),))
    summary = tel.summaries[key]
    assert len(summary.window) == 3  # queries 1, 5 and 9 were timed
    assert summary.count == 9  # query 10 is counted but not recorded yet ...
    series = {(s[0], s[1]): s for s in tel.prometheus_series()["summaries"]}
    _, _, count, total, quantiles = series[key]
    assert count == 10  # ... reading the metrics adds it, at the last timing
    assert total == pytest.approx(10 * 2.0)
    assert quantiles[0.5] == pytest.approx(2.0)
    assert len(tel.summaries[key].window) == 3  # the estimate is not a quantile observation

    # Slow traffic (one query every second or more): every query is timed.
    clock.advance(5.0)
    server.answer(reverse, False)
    clock.advance(1.5)
    server.answer(reverse, False)
    ptr = tel.summaries[("consul.dns.ptr_query", (("node", "node-1"),))]
    assert (ptr.count, len(ptr.window)) == (2, 2)

    # Consul's JSON counts every query too.
    clock.advance(10.0)
    samples = {s["Name"]: s for s in tel.display()["Samples"]}
    assert samples["consul.dns.ptr_query"]["Count"] == 2
    assert len(calls) == 12


def test_batched_cache_hits_are_counted_by_kind_and_timed_per_batch():
    """Hits of a batched UDP read skip `answer`; the server reports them per batch (on_hits)."""
    from appliance.telemetry import instrument_dns

    clock = Clock()
    tel = recorder(clock)
    server = SimpleNamespace(answer=lambda data, tcp: b"reply")
    instrument_dns(tel, server, "node-1", every=4, gap_s=1.0)
    server.on_hits(6, 2, 0.008)  # 8 hits in 8 ms: 1 ms each
    clock.advance(0.01)
    server.on_hits(3, 0, 0.006)  # 2 ms each, within the gap: counted, timed with a later batch
    series = {(s[0], s[1]): s for s in tel.prometheus_series()["summaries"]}
    _, _, count, total, quantiles = series[("consul.dns.domain_query", (("node", "node-1"),))]
    assert count == 9 and total == pytest.approx(6 * 1.0 + 3 * 1.0)  # the 3 at the last timing
    _, _, count, total, _ = series[("consul.dns.ptr_query", (("node", "node-1"),))]
    assert count == 2 and total == pytest.approx(2.0)


def test_weighted_samples_aggregate_like_repeated_ones():
    a, b = Aggregate(), Aggregate()
    a.add(3.0, weight=4)
    for _ in range(4):
        b.add(3.0)
    assert (a.count, a.sum, a.sum_sq, a.min, a.max) == (b.count, b.sum, b.sum_sq, b.min, b.max)
