"""Prepared queries through DNS as a user meets them: the real `dig` against a real `cairn agent -dev`.

A query made with `POST /v1/query` answers `<name>.query.consul` (A and SRV) with the instances
executing it gives, with the query's `DNS.TTL`; a template answers any name under its prefix; an
unknown query and a query with no healthy instance are NXDOMAIN (reference/coordination.md §6.6).
Failover to another datacenter is tests/integration/test_query_failover.py.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import http
from tests.e2e.test_dns_dig import dig, register, short, status

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed (Debian bind9-dnsutils)")


def post_query(agent, body: dict) -> str:
    code, _, text = http("POST", agent.url + "/v1/query", body)
    assert code == 200, text
    return json.loads(text)["ID"]


@pytest.fixture
def query_agent(agent_factory):
    agent = agent_factory(node="query-node")
    register(agent, "db-1", "10.30.0.1", "db", 5432, tags=("primary",))
    register(agent, "db-2", "10.30.0.2", "db", 5433, tags=("replica",))
    register(agent, "db-3", "10.30.0.3", "db", 5434, tags=("replica",), status="critical")
    register(agent, "cache-1", "10.30.0.9", "redis-eu", 6379)
    return agent


def test_query_answers_a_and_srv_with_its_ttl(query_agent):
    qid = post_query(query_agent, {"Name": "db-any", "Service": {"Service": "db"}, "DNS": {"TTL": "25s"}})
    out = dig(query_agent, "db-any.query.consul", "+noall", "+answer", "+comments")
    assert status(out) == "NOERROR"
    answers = re.findall(r"^db-any\.query\.consul\.\s+(\d+)\s+IN\s+A\s+(\S+)$", out, re.M)
    assert sorted(answers) == [("25", "10.30.0.1"), ("25", "10.30.0.2")]  # db-3 is critical
    assert short(query_agent, f"{qid}.query.consul") == ["10.30.0.1", "10.30.0.2"]  # by ID too
    srv = dig(query_agent, "db-any.query.consul", "SRV", "+noall", "+answer")
    assert sorted(re.findall(r"IN\s+SRV\s+1 1 (\d+) (\S+)", srv)) == [
        ("5432", "db-1.node.dc1.consul."), ("5433", "db-2.node.dc1.consul.")]
    assert "5432" in dig(query_agent, "_db-any._tcp.query.consul", "SRV", "+short")  # RFC 2782 form


def test_query_filters_and_not_found(query_agent):
    post_query(query_agent, {"Name": "db-primary", "Service": {"Service": "db", "Tags": ["!replica"]}})
    assert short(query_agent, "db-primary.query.consul") == ["10.30.0.1"]
    post_query(query_agent, {"Name": "nothing", "Service": {"Service": "db", "Tags": ["nope"]}})
    assert status(dig(query_agent, "nothing.query.consul")) == "NXDOMAIN"
    assert status(dig(query_agent, "unknown.query.consul")) == "NXDOMAIN"


def test_template_query_by_name(query_agent):
    post_query(query_agent, {"Name": "redis-", "Template": {"Type": "name_prefix_match"},
                             "Service": {"Service": "redis-${name.suffix}"}})
    assert short(query_agent, "redis-eu.query.consul") == ["10.30.0.9"]
    assert status(dig(query_agent, "redis-us.query.consul")) == "NXDOMAIN"


def test_near_ip_puts_the_asking_node_first(query_agent):
    register(query_agent, "here", "127.0.0.1", "api", 9000)
    for i in range(4):
        register(query_agent, f"api-{i}", f"10.40.0.{i + 1}", "api", 9000)
    post_query(query_agent, {"Name": "api-near", "Service": {"Service": "api", "Near": "_ip"}})
    for _ in range(5):  # dig asks from 127.0.0.1: the node with that address comes first, every time
        first = [line for line in dig(query_agent, "api-near.query.consul", "+short").splitlines() if line][0]
        assert first == "127.0.0.1"
