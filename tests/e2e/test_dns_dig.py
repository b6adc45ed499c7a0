"""The DNS interface as a user meets it: the real `dig` against a real `cairn agent -dev`.

DESIGN "who uses it" step 4: `dig @127.0.0.1 -p 8600 web.service.consul`. Instances are put on
different catalog nodes (and addresses) with `PUT /v1/catalog/register`; checks decide which of
them DNS hands out (reference/consul-api.md §6.4). dig comes from Debian's bind9-dnsutils.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess

import pytest

from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed (Debian bind9-dnsutils)")


def dig(agent, *args: str) -> str:
    cmd = ["dig", "@127.0.0.1", "-p", str(agent.dns_port), "+time=3", "+tries=1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def short(agent, *args: str) -> list[str]:
    return sorted(line for line in dig(agent, "+short", *args).splitlines() if line and not line.startswith(";"))


def status(out: str) -> str:
    return re.search(r"status: (\w+)", out).group(1)


def flags(out: str) -> set[str]:
    return set(re.search(r";; flags: ([a-z ]+);", out).group(1).split())


def register(agent, node: str, address: str, service: str, port: int, *, tags=(), status: str = "passing",
             sid: str | None = None) -> None:
    sid = sid or f"{service}-{node}"
    body = {
        "Node": node, "Address": address,
        "Service": {"ID": sid, "Service": service, "Port": port, "Tags": list(tags)},
        "Checks": [{"CheckID": f"{sid}-health", "Name": "health", "Status": status, "ServiceID": sid}],
    }  # fmt: skip
    code, _, text = agent.put("/v1/catalog/register", body)
    assert code == 200, text


@pytest.fixture
def dns_agent(agent_factory):
    agent = agent_factory("-hcl", "dns_config { enable_truncate = true }", node="dns-node")
    register(agent, "web-1", "10.20.0.1", "web", 8001, tags=("v1",))
    register(agent, "web-2", "10.20.0.2", "web", 8002, tags=("v2",))
    register(agent, "web-3", "10.20.0.3", "web", 8003, status="warning")
    register(agent, "web-4", "10.20.0.4", "web", 8004, status="critical")
    return agent


def test_a_lists_only_healthy_instances(dns_agent):
    out = dig(dns_agent, "web.service.consul")
    assert status(out) == "NOERROR" and "aa" in flags(out)
    assert short(dns_agent, "web.service.consul") == ["10.20.0.1", "10.20.0.2", "10.20.0.3"]  # not web-4


def test_srv_has_ports_and_additional_addresses(dns_agent):
    out = dig(dns_agent, "web.service.consul", "SRV", "+noall", "+answer", "+additional")
    srv = re.findall(r"IN\s+SRV\s+1 1 (\d+) (\S+)", out)
    assert sorted(srv) == [("8001", "web-1.node.dc1.consul."), ("8002", "web-2.node.dc1.consul."),
                           ("8003", "web-3.node.dc1.consul.")]
    additional = re.findall(r"^(\S+)\s+\d+\s+IN\s+A\s+(\S+)$", out, re.M)
    assert sorted(additional) == [("web-1.node.dc1.consul.", "10.20.0.1"), ("web-2.node.dc1.consul.", "10.20.0.2"),
                                  ("web-3.node.dc1.consul.", "10.20.0.3")]


def test_tag_and_rfc2782_lookups(dns_agent):
    assert short(dns_agent, "v1.web.service.consul") == ["10.20.0.1"]
    assert short(dns_agent, "_web._v2.service.consul", "SRV") == ["1 1 8002 web-2.node.dc1.consul."]
    assert len(short(dns_agent, "_web._tcp.service.consul", "SRV")) == 3
    assert len(short(dns_agent, "_web._tcp.consul", "SRV")) == 3


def test_node_lookup_and_ptr(dns_agent):
    assert short(dns_agent, "dns-node.node.consul") == ["127.0.0.1"]
    assert short(dns_agent, "web-2.node.dc1.consul") == ["10.20.0.2"]
    assert short(dns_agent, "-x", "10.20.0.3") == ["web-3.node.dc1.consul."]


def test_unknown_service_is_nxdomain_with_soa(dns_agent):
    out = dig(dns_agent, "nope.service.consul")
    assert status(out) == "NXDOMAIN"
    assert re.search(r"^consul\.\s+\d+\s+IN\s+SOA\s+ns\.consul\. hostmaster\.consul\.", out, re.M)
    assert status(dig(dns_agent, "example.com")) == "REFUSED"  # no recursors configured


def test_answer_changes_at_once_after_a_catalog_change(dns_agent):
    assert "10.20.0.9" not in short(dns_agent, "web.service.consul")
    register(dns_agent, "web-9", "10.20.0.9", "web", 8009)
    assert "10.20.0.9" in short(dns_agent, "web.service.consul")
    code, _, _ = dns_agent.put("/v1/catalog/deregister", {"Node": "web-9"})
    assert code == 200
    assert "10.20.0.9" not in short(dns_agent, "web.service.consul")


def test_truncation_over_udp_and_full_answer_over_tcp(dns_agent):
    for i in range(6):
        register(dns_agent, f"big-{i}", f"10.30.0.{i + 1}", "big", 9000 + i)
    udp = dig(dns_agent, "big.service.consul", "+noedns", "+ignore")  # +ignore: do not retry over TCP
    assert "tc" in flags(udp)
    assert len(re.findall(r"IN\s+A\s+10\.30\.0\.\d+", udp)) == 3  # udp_answer_limit
    tcp = dig(dns_agent, "big.service.consul", "+tcp")
    assert "tc" not in flags(tcp)
    assert len(re.findall(r"IN\s+A\s+10\.30\.0\.\d+", tcp)) == 6
    # dig's default (UDP, then TCP on TC) ends with every instance too
    assert len(short(dns_agent, "big.service.consul", "+noedns")) == 6


def test_started_log_lines(dns_agent):
    text = dns_agent.log_path.read_text()
    assert f"Started DNS server: address=127.0.0.1:{dns_agent.dns_port} network=udp" in text
    assert f"Started DNS server: address=127.0.0.1:{dns_agent.dns_port} network=tcp" in text


# --------------------------------------------------------------------------- recursors (§6.8)

BIG_TXT = ["x" * 200 + str(i) for i in range(6)]


@pytest.fixture
def upstream(tmp_path):
    """A real dnsmasq as the recursor: fixed answers for *.upstream.test, REFUSED for the rest."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.path.exists(binary):
        pytest.skip(reason="dnsmasq not installed (Debian dnsmasq)")
    port = free_port()
    args = [binary, "--no-daemon", f"--port={port}", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file", f"--user={getpass.getuser()}",
            "--address=/a.upstream.test/192.0.2.7"]
    args += [f"--txt-record=big.upstream.test,{t}" for t in BIG_TXT]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready():
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=1", "+tries=1",
                              "a.upstream.test"], capture_output=True, text=True, timeout=10).stdout
        return "192.0.2.7" in out

    try:
        wait_until(ready, timeout=10, what="upstream dnsmasq")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)


def test_recursors_answer_outside_names(agent_factory, upstream):
    dead = free_port()  # nothing listens there: the agent must move on to the next recursor
    agent = agent_factory("-recursor", f"127.0.0.1:{dead}", "-recursor", f"127.0.0.1:{upstream}",
                          "-hcl", 'dns_config { recursor_timeout = "1s" }')
    out = dig(agent, "a.upstream.test")
    assert status(out) == "NOERROR" and "ra" in flags(out)
    assert short(agent, "a.upstream.test") == ["192.0.2.7"]
    assert "ra" in flags(dig(agent, "test-node.node.consul"))  # RA on our own answers too
    assert status(dig(agent, "other.example")) == "SERVFAIL"  # upstream REFUSED: every recursor failed
    # UDP first, TCP when the recursor's UDP answer is truncated and the client is on TCP
    tcp = dig(agent, "big.upstream.test", "TXT", "+tcp", "+noedns")
    assert "tc" not in flags(tcp) and len(tcp) > 512
    assert len(re.findall(r"^big\.upstream\.test\.\s+\d+\s+IN\s+TXT", tcp, re.M)) == len(BIG_TXT)
