"""Prepared-query failover across the WAN, as real processes on loopback.

dc1 and dc2 each have one server, joined over the WAN pool (as tests/integration/test_wan.py
starts them). `db` runs in both; in dc1 its only instance is critical. A query defined in dc1
with `Failover` answers from dc2: over HTTP (`Datacenter` "dc2", `Failovers` 1) and over DNS
(`dig db.query.consul` on dc1 gives dc2's address, SRV targets name dc2). When dc1's instance
is healthy again the query answers from dc1. `<name>.query.dc2.consul` runs dc2's own query.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import wait_until
from tests.harness import Agent

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed (Debian bind9-dnsutils)")]


def register(agent: Agent, node: str, address: str, status: str) -> None:
    body = {"Node": node, "Address": address, "Service": {"ID": "db", "Service": "db", "Port": 5432},
            "Check": {"CheckID": "db-up", "Name": "db up", "Status": status, "ServiceID": "db"}}
    code, _, text = agent.request("PUT", "/v1/catalog/register", body)
    assert code == 200, text


def answers(agent: Agent, name: str, qtype: str = "A") -> tuple[str, list[str]]:
    out = agent.dig(name, qtype)
    assert out.returncode == 0, out.stderr
    status = out.stdout.split("status: ", 1)[1].split(",", 1)[0]
    rows = [line.split() for line in out.stdout.splitlines() if line and not line.startswith(";")]
    return status, [" ".join(r[4:]) for r in rows if len(r) > 4 and r[3] == qtype]


@pytest.fixture(scope="module")
def two_dcs(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("query-wan")
    s1, s2 = Agent(tmp, "qs1", datacenter="dc1"), Agent(tmp, "qs2", datacenter="dc2")
    try:
        s1.start("-server", "-bootstrap")
        s1.wait_http()
        s2.start("-server", "-bootstrap", "-retry-join-wan", s1.wan_addr, "-retry-interval-wan", "1s")
        s2.wait_http()
        wait_until(lambda: s1.request("GET", "/v1/catalog/datacenters")[2] == b'["dc1","dc2"]', timeout=30,
                   what="dc1 knowing dc2")
        yield s1, s2
    finally:
        s1.stop()
        s2.stop()


def test_failover_to_the_second_datacenter(two_dcs):
    s1, s2 = two_dcs
    register(s1, "db-east", "10.1.0.5", "critical")
    register(s2, "db-west", "10.2.0.7", "passing")
    code, _, body = s1.request("POST", "/v1/query", {"Name": "db", "Service": {
        "Service": "db", "Failover": {"Datacenters": ["dc2"]}}, "DNS": {"TTL": "5s"}})
    assert code == 200, body

    out = s1.read_json("/v1/query/db/execute")
    assert (out["Datacenter"], out["Failovers"]) == ("dc2", 1)
    assert [n["Node"]["Node"] for n in out["Nodes"]] == ["db-west"]
    assert answers(s1, "db.query.consul") == ("NOERROR", ["10.2.0.7"])
    status, srv = answers(s1, "db.query.consul", "SRV")
    assert status == "NOERROR" and srv == ["1 1 5432 db-west.node.dc2.consul."]

    register(s1, "db-east", "10.1.0.5", "passing")  # healthy here again: no failover
    assert answers(s1, "db.query.consul") == ("NOERROR", ["10.1.0.5"])
    assert s1.read_json("/v1/query/db/execute")["Failovers"] == 0


def test_nearest_n_and_other_datacenters_queries(two_dcs):
    s1, s2 = two_dcs
    register(s1, "db-east", "10.1.0.5", "critical")
    register(s2, "db-west", "10.2.0.7", "passing")
    code, _, body = s1.request("POST", "/v1/query", {"Name": "db-near", "Service": {
        "Service": "db", "Failover": {"NearestN": 1}}})
    assert code == 200, body
    out = s1.read_json("/v1/query/db-near/execute")
    assert (out["Datacenter"], out["Failovers"]) == ("dc2", 1)
    # a query of dc2, asked of dc1's DNS and HTTP API
    code, _, body = s2.request("POST", "/v1/query", {"Name": "west-db", "Service": {"Service": "db"}})
    assert code == 200, body
    assert answers(s1, "west-db.query.dc2.consul") == ("NOERROR", ["10.2.0.7"])
    assert answers(s1, "west-db.query.consul")[0] == "NXDOMAIN"  # not defined in dc1
    assert json.loads(s1.request("GET", "/v1/query/west-db/execute?dc=dc2")[2])["Datacenter"] == "dc2"
    # no failover configured, no healthy instance: NXDOMAIN
    code, _, body = s1.request("POST", "/v1/query", {"Name": "db-local", "Service": {"Service": "db"}})
    assert code == 200, body
    assert answers(s1, "db-local.query.consul")[0] == "NXDOMAIN"
