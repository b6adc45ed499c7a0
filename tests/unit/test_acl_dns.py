"""DNS with ACLs: answers show only what the DNS token (else the default token, else anonymous)
may read, filtered answers look like missing records, and a policy change reaches cached answers."""

from __future__ import annotations

import random
import struct
from dataclasses import replace

from dnslib import RCODE, DNSRecord

from appliance.config.runtime import ACLConfig, RuntimeConfig
from appliance.dns.server import DNSServer
from appliance.state.fsm import FSM
from appliance.state.store import Store

SECRET = "dns-secret"


def catalog() -> tuple[Store, FSM]:
    store = Store()
    fsm = FSM(store)
    index = 0

    def apply(cmd: dict) -> None:
        nonlocal index
        index += 1
        assert fsm.apply(index, cmd).result not in (None, False)

    apply({"Type": "acl", "Op": "init"})
    for node, addr, svc in (("web-a", "10.0.1.1", "web"), ("db-a", "10.0.2.1", "db")):
        apply({"Type": "register", "Node": node, "Address": addr, "Datacenter": "dc1", "TaggedAddresses": {},
               "NodeMeta": {}, "Checks": []})
        apply({"Type": "register", "Node": node, "SkipNodeUpdate": True, "Checks": [], "Service": {
            "ID": svc, "Service": svc, "Tags": [], "Address": "", "Port": 80, "Meta": {},
            "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False, "Proxy": {}, "Connect": {},
            "PeerName": ""}})
    apply({"Type": "acl", "Op": "policy_set", "Object": {
        "ID": "p1", "Name": "dns", "Description": "",
        "Rules": 'service "web" { policy = "read" }\nnode_prefix "web-" { policy = "read" }'}})
    apply({"Type": "acl", "Op": "token_set", "Create": True, "Object": {
        "AccessorID": "a1", "SecretID": SECRET, "Description": "", "Local": False,
        "CreateTime": "2024-01-01T00:00:00Z", "Policies": [{"ID": "p1"}]}})
    return store, fsm


def ask(server: DNSServer, name: str) -> DNSRecord:
    q = DNSRecord.question(name, "A")
    out = server.answer(struct.pack("!H", 7) + bytes(q.pack())[2:], False)
    return DNSRecord.parse(out)


def config(**tokens: str) -> RuntimeConfig:
    return replace(RuntimeConfig(), acl=ACLConfig(enabled=True, default_policy="deny", tokens=tokens))


def test_the_dns_token_decides_what_resolves() -> None:
    store, _ = catalog()
    server = DNSServer(store, config(dns=SECRET), rng=random.Random(1))
    assert [str(r.rdata) for r in ask(server, "web.service.consul").rr] == ["10.0.1.1"]
    assert ask(server, "db.service.consul").header.rcode == RCODE.NXDOMAIN
    assert [str(r.rdata) for r in ask(server, "web-a.node.consul").rr] == ["10.0.1.1"]
    assert ask(server, "db-a.node.consul").header.rcode == RCODE.NXDOMAIN


def test_the_default_token_then_anonymous() -> None:
    store, _ = catalog()
    assert [str(r.rdata) for r in ask(DNSServer(store, config(default=SECRET)), "web.service.consul").rr] == \
        ["10.0.1.1"]
    assert ask(DNSServer(store, config()), "web.service.consul").header.rcode == RCODE.NXDOMAIN


def test_a_policy_change_reaches_cached_answers() -> None:
    store, fsm = catalog()
    server = DNSServer(store, config(dns=SECRET), rng=random.Random(1))
    assert ask(server, "web.service.consul").rr
    assert ask(server, "web.service.consul").rr  # cached
    fsm.apply(100, {"Type": "acl", "Op": "policy_set", "Object": {
        "ID": "p1", "Name": "dns", "Description": "", "Rules": ""}})
    assert ask(server, "web.service.consul").header.rcode == RCODE.NXDOMAIN


def test_a_dns_token_set_at_run_time_takes_over_cached_answers() -> None:
    # `cairn acl set-agent-token dns <secret>`: the agent's token, not the configured one, and the
    # answers cached for the old token go
    store, _ = catalog()
    server = DNSServer(store, config(), rng=random.Random(1))
    tokens: dict[str, str] = {}
    server.agent_tokens = lambda kind: tokens.get(kind, "")
    assert ask(server, "web.service.consul").header.rcode == RCODE.NXDOMAIN  # anonymous
    assert ask(server, "web.service.consul").header.rcode == RCODE.NXDOMAIN  # cached
    tokens["dns"] = SECRET
    assert [str(r.rdata) for r in ask(server, "web.service.consul").rr] == ["10.0.1.1"]
    del tokens["dns"]
    assert ask(server, "web.service.consul").header.rcode == RCODE.NXDOMAIN
