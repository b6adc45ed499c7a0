"""The monitoring kit (packaging/common/prometheus/) checked by the real tools and run for real.

* promtool (Debian's Prometheus 2.42) checks the alerting rules and runs their unit tests, and
  checks every Prometheus example configuration; the consul_sd example, which Debian's build
  cannot parse (reference/prometheus.md §0.1), is checked by vmagent's parser and by promtool
  with its consul_sd_configs block swapped out;
* every example runs against a real `cairn agent -dev`: vmagent with vmagent.yml, Prometheus
  with the http_sd, file_sd and dns_sd examples (dns_sd in a mount namespace whose
  /etc/resolv.conf points at the agent's DNS server), and the targets are read back from their
  target APIs;
* a live agent's `/v1/agent/metrics?format=prometheus` must carry every metric the rules and
  the Grafana dashboard name, except the ones listed in AWAITING;
* every YAML block of docs/prometheus.md must be a piece of a kit file, so the docs show only
  configurations these tests run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT_ROOT, AgentProcess, free_port, http, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_prometheus import Server, by_instance, consul_meta, targets

KIT = PROJECT_ROOT / "packaging" / "common" / "prometheus"
DOCS = PROJECT_ROOT / "docs" / "prometheus.md"
RULES = KIT / "cairn.rules.yml"
DASHBOARD = KIT / "grafana-dashboard.json"
PROMETHEUS_EXAMPLES = ["prometheus-http-sd.yml", "prometheus-file-sd.yml", "prometheus-dns-sd.yml"]
KIT_ADDR = "127.0.0.1:8500"  # the agent address the examples are written for
KIT_SD_FILE = "/etc/prometheus/cairn-targets.json"

# Metrics the rules and the dashboard use that this build does not record yet. They carry
# Consul's names, which the gossip issue will register (reference/prometheus.md §6); when one of
# them appears, the test below says so and it must leave this list.
AWAITING: dict[str, str] = {}  # the gossip metrics (consul_serf_member_flap, ..._health_score) arrived

# Raft metrics a one-server agent records once it has applied a write (hashicorp/raft's names under
# Consul); the replication and RPC timings need peers (tests/integration/test_raft_faults.py).
RAFT_METRICS = {
    "consul_raft_state_leader": "counter", "consul_raft_state_candidate": "counter",
    "consul_raft_state_follower": "counter", "consul_raft_apply": "counter",
    "consul_raft_commitTime": "summary", "consul_raft_fsm_apply": "summary",
    "consul_raft_leader_dispatchLog": "summary", "consul_raft_leader_dispatchNumLogs": "gauge",
    "consul_raft_last_index": "gauge", "consul_raft_commit_index": "gauge", "consul_raft_applied_index": "gauge",
    "consul_raft_term": "gauge", "consul_raft_peers": "gauge",
}

METRIC_NAME = re.compile(r"\b((?:consul|process|python)_[A-Za-z0-9_]+)\b")

pytestmark = pytest.mark.skipif(not shutil.which("promtool") or not shutil.which("vmagent")
                                or not shutil.which("prometheus"),
                                reason="needs the Debian packages prometheus and victoria-metrics "
                                       "(scripts/debian-packages.txt)")


def run(*args: str, cwd: Path = KIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------------- what the kit names


def rule_exprs(text: str) -> list[str]:
    """The `expr:` values of a rules file, folded block scalars included."""
    exprs: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("expr:"):
            continue
        value = stripped[len("expr:"):].strip()
        if value in (">-", ">", "|", "|-"):
            indent = len(line) - len(line.lstrip())
            parts = []
            for follow in lines[i + 1:]:
                if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                    break
                parts.append(follow.strip())
            value = " ".join(parts)
        exprs.append(value)
    return exprs


def dashboard_queries(node: Any) -> Iterator[str]:
    """Every PromQL string of the dashboard: panel targets and templating queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def kit_metric_names() -> dict[str, set[str]]:
    """Metric name -> where it is used ("rules", "dashboard")."""
    used: dict[str, set[str]] = {}
    for expr in rule_exprs(RULES.read_text()):
        for name in METRIC_NAME.findall(expr):
            used.setdefault(name, set()).add("rules")
    for query in dashboard_queries(json.loads(DASHBOARD.read_text())):
        for name in METRIC_NAME.findall(query):
            used.setdefault(name, set()).add("dashboard")
    return used


def test_kit_names_metrics():
    used = kit_metric_names()
    assert len(rule_exprs(RULES.read_text())) == 10
    assert {"consul_raft_leader", "consul_serf_lan_member_status", "consul_health_service_status",
            "consul_rpc_queries_blocking", "consul_api_http_count", "consul_dns_domain_query"} <= set(used)
    assert set(AWAITING) <= set(used), "every awaited metric is used by the rules or the dashboard"


# ---------------------------------------------------------------------- promtool and vmagent


def test_promtool_checks_and_tests_the_rules():
    check = run("promtool", "check", "rules", "cairn.rules.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 10 rules found" in check.stdout
    tested = run("promtool", "test", "rules", "cairn.rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.parametrize("name", PROMETHEUS_EXAMPLES)
def test_promtool_checks_prometheus_example(name):
    check = run("promtool", "check", "config", name)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 10 rules found" in check.stdout  # rule_files: [cairn.rules.yml] resolves


def _without_consul_sd(text: str) -> str:
    """The consul_sd example with its consul_sd_configs block replaced by a static target."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.strip() == "consul_sd_configs:":
            skipping = True
            out.append(line.replace("consul_sd_configs:", "static_configs:"))
            out.append(line[: len(line) - len(line.lstrip())] + "  - targets: ['127.0.0.1:9']")
            continue
        if skipping and line.strip() and not line.startswith("      "):
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def test_consul_sd_example_is_valid_upstream_configuration(tmp_path):
    # Debian's promtool has no consul_sd: that must be its only complaint ...
    check = run("promtool", "check", "config", "prometheus-consul-sd.yml")
    assert check.returncode != 0
    errors = [line for line in (check.stdout + check.stderr).splitlines() if re.search(r"line \d+:", line)]
    assert len(errors) == 1 and "field consul_sd_configs not found" in errors[0], check.stdout + check.stderr
    # ... everything else is valid for Prometheus ...
    swapped = tmp_path / "prometheus-consul-sd.yml"
    swapped.write_text(_without_consul_sd((KIT / "prometheus-consul-sd.yml").read_text()))
    shutil.copy(RULES, tmp_path)
    check = run("promtool", "check", "config", str(swapped), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    # ... and the consul_sd block parses (strictly, unknown fields refused) in vmagent, which
    # implements the same consul_sd_configs (it does not evaluate rules: those keys go).
    text = (KIT / "prometheus-consul-sd.yml").read_text()
    text = re.sub(r"\n  evaluation_interval: .*", "", text)
    text = re.sub(r"\nrule_files:\n(  - .*\n)+", "\n", text)
    scrape = tmp_path / "vmagent-consul-sd.yml"
    scrape.write_text(text)
    dry = run("vmagent", "-dryRun", f"-promscrape.config={scrape}", "-loggerLevel=ERROR", cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr


def test_vmagent_accepts_its_example():
    dry = run("vmagent", "-dryRun", "-promscrape.config=vmagent.yml", "-loggerLevel=ERROR")
    assert dry.returncode == 0, dry.stdout + dry.stderr


def test_dashboard_is_grafana_json_with_valid_promql(tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "job", "instance"}
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    # promtool parses PromQL in rule files: every panel query, Grafana variables filled in
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        expr = expr.replace("$__rate_interval", "5m").replace("$job", "cairn").replace("$instance", ".*")
        rules += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(expr)}"]
    (tmp_path / "dashboard.rules.yml").write_text("\n".join(rules) + "\n")
    check = run("promtool", "check", "rules", str(tmp_path / "dashboard.rules.yml"), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


# ---------------------------------------------------------------------- a live agent's metrics


def dns_query(port: int, name: str, qtype: str) -> bytes:
    from dnslib import DNSRecord

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(DNSRecord.question(name, qtype).pack(), ("127.0.0.1", port))
        return sock.recv(4096)


def docs_kv_params() -> dict[str, str]:
    """The `params` of the consul_exporter KV example in docs/prometheus.md."""
    block = next(b for b in yaml_blocks(DOCS.read_text()) if "kv_prefix" in b)
    params = dict(re.findall(r"^\s*(\w+): \[['\"]?([^'\"\]]*)['\"]?\]", block, re.M))
    assert set(params) == {"format", "kv_prefix", "kv_filter"}, block
    return params


def test_live_agent_exposes_every_metric_the_kit_uses(agent_factory):
    agent: AgentProcess = agent_factory("-hcl", "telemetry { disable_hostname = true }")
    status, _, data = agent.put("/v1/agent/service/register", {
        "Name": "web", "ID": "web-1", "Port": 8080, "Check": {"CheckID": "web-1-ttl", "TTL": "10m"}})
    assert status == 200, data
    assert agent.put("/v1/agent/check/fail/web-1-ttl")[0] == 200
    for key, value in (("limits/web", "40"), ("limits/api", "7"), ("limits/web-name", "x")):
        assert agent.put(f"/v1/kv/{key}", value)[0] == 200
    dns_query(agent.dns_port, "web.service.consul", "SRV")
    dns_query(agent.dns_port, "1.0.0.127.in-addr.arpa", "PTR")
    agent.get("/v1/health/service/web")

    status, headers, body = agent.get("/v1/agent/metrics?format=prometheus")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    exposed: set[str] = set()
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        exposed.add(family.name)
        types[family.name] = family.type
        exposed.update(sample.name for sample in family.samples)
    assert {name: types.get(name) for name in RAFT_METRICS} == RAFT_METRICS

    used = kit_metric_names()
    missing = {name: sorted(where) for name, where in used.items() if name not in exposed and name not in AWAITING}
    assert not missing, f"the kit uses metrics a live agent does not expose: {missing}"
    arrived = sorted(set(AWAITING) & exposed)
    assert not arrived, f"now exposed, take them out of AWAITING: {arrived}"

    # The consul_exporter KV example of docs/prometheus.md, as a scrape would send it.
    params = docs_kv_params()
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, _, body = agent.get("/v1/agent/metrics?" + query)
    assert status == 200
    kv = {s.labels["key"]: s.value for f in text_string_to_metric_families(body.decode())
          if f.name == "consul_catalog_kv" for s in f.samples}
    assert kv == {"limits/web": 40.0}  # the filter leaves limits/api out; "x" is not a number


# ---------------------------------------------------------------------- the examples, running


def kit_config(name: str, agent: AgentProcess, workdir: Path, **replace: str) -> Path:
    """A kit example pointed at the test's agent, written next to a copy of the rules."""
    text = (KIT / name).read_text().replace(KIT_ADDR, agent.http_addr)
    for old, new in replace.items():
        text = text.replace(old, new)
    workdir.mkdir(exist_ok=True)
    shutil.copy(RULES, workdir)
    path = workdir / name
    path.write_text(text)
    return path


def start_prometheus(config: Path, workdir: Path, wrap: list[str] | None = None) -> tuple[str, Server]:
    port = free_port(udp=False)
    args = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    return f"http://127.0.0.1:{port}", Server([*(wrap or []), *args], workdir / "prometheus.log", workdir)


def register_web(agent: AgentProcess) -> None:
    for body in (
        {"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"], "Meta": {"version": "1.2"},
         "Check": {"CheckID": "web-1-ttl", "TTL": "10m"}},
        {"Name": "web", "ID": "web-2", "Port": 8081, "Address": "10.1.1.1",
         "Check": {"CheckID": "web-2-ttl", "TTL": "10m"}},
    ):
        status, _, data = agent.put("/v1/agent/service/register", body)
        assert status == 200, data
    assert agent.put("/v1/agent/check/pass/web-1-ttl")[0] == 200
    assert agent.put("/v1/agent/check/pass/web-2-ttl")[0] == 200


WEB = {"127.0.0.1:8080", "10.1.1.1:8081"}


def check_services(found: dict[str, dict[str, Any]]) -> None:
    web1 = found["127.0.0.1:8080"]
    assert web1["labels"]["service"] == "web" and web1["labels"]["health"] == "passing"
    assert web1["labels"]["track"] == "v1" and web1["labels"]["meta_version"] == "1.2"
    assert consul_meta(web1)["__meta_consul_service_id"] == "web-1"


def rules_loaded(api: str) -> int:
    status, _, body = http("GET", api + "/api/v1/rules", timeout=5)
    if status != 200:
        return 0
    return sum(len(g["rules"]) for g in json.loads(body)["data"]["groups"])


def test_vmagent_example_discovers_through_consul_sd(agent, tmp_path):
    register_web(agent)
    workdir = tmp_path / "vmagent"
    config = kit_config("vmagent.yml", agent, workdir)
    port = free_port(udp=False)
    server = Server(["vmagent", f"-promscrape.config={config}", f"-httpListenAddr=127.0.0.1:{port}",
                     f"-remoteWrite.tmpDataPath={workdir / 'data'}", "-remoteWrite.url=http://127.0.0.1:9/write",
                     "-promscrape.consulSDCheckInterval=1s", "-loggerLevel=WARN"], workdir / "vmagent.log", workdir)
    try:
        api = f"http://127.0.0.1:{port}"
        found = wait_until(lambda: (lambda f: f if set(f) == WEB else None)(by_instance(targets(api))),
                           timeout=30, what=f"vmagent targets\n{server.tail()}")
        check_services(found)
        assert agent.http_addr in by_instance(targets(api), "cairn")
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["prometheus-http-sd.yml", "prometheus-file-sd.yml"])
def test_prometheus_example_discovers(name, agent, tmp_path):
    register_web(agent)
    workdir = tmp_path / "prometheus"
    sd_file = workdir / "cairn-targets.json"
    config = kit_config(name, agent, workdir,
                        **{KIT_SD_FILE: str(sd_file), "refresh_interval: 30s": "refresh_interval: 1s"})
    writer = None
    if name == "prometheus-file-sd.yml":
        # the command the example's comment shows
        writer = subprocess.Popen([sys.executable, "-m", "appliance", "sd", "file-sd", "-out", str(sd_file),
                                   "-http-addr", agent.http_addr], env=agent.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(sd_file.exists, timeout=20, what="cairn sd file-sd writes the file")
    api, server = start_prometheus(config, workdir)
    try:
        found = wait_until(lambda: (lambda f: f if set(f) == WEB else None)(by_instance(targets(api))),
                           timeout=30, what=f"prometheus targets\n{server.tail()}")
        check_services(found)
        assert agent.http_addr in by_instance(targets(api), "cairn")
        assert wait_until(lambda: rules_loaded(api) == 10, timeout=10, what="cairn.rules.yml loaded")
        # a new instance shows up
        assert agent.put("/v1/agent/service/register", {"Name": "web", "ID": "web-3", "Port": 8082})[0] == 200
        wait_until(lambda: "127.0.0.1:8082" in by_instance(targets(api)), timeout=30,
                   what=f"the new instance\n{server.tail()}")
    finally:
        server.stop()
        if writer is not None:
            writer.terminate()
            writer.wait(5)


def _loopback_dns_address() -> str | None:
    """A 127.x.y.z address whose port 53 is free for UDP and TCP."""
    for _ in range(20):
        addr = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind((addr, 53))
                t.bind((addr, 53))
            return addr
        except OSError:
            continue
    return None


def test_prometheus_dns_sd_example_finds_srv_targets(agent_factory, tmp_path):
    """Prometheus's dns_sd asks the servers of /etc/resolv.conf on port 53, so it runs in a mount
    namespace whose resolv.conf names a loopback address where the agent's DNS listens on 53."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip(reason="needs root (port 53, a mount namespace for /etc/resolv.conf)")
    addr = _loopback_dns_address()
    if addr is None:
        pytest.skip(reason="no loopback address with port 53 free")
    agent = agent_factory("-dns-port", "53", "-hcl", f'addresses {{ dns = "{addr}" }}')
    register_web(agent)
    workdir = tmp_path / "prometheus"
    config = kit_config("prometheus-dns-sd.yml", agent, workdir, **{"refresh_interval: 30s": "refresh_interval: 1s"})
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {addr}\noptions timeout:1 attempts:1\n")
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv)]
    api, server = start_prometheus(config, workdir, wrap)
    try:
        want = {"test-node.node.dc1.consul:8080", "0a010101.addr.dc1.consul:8081"}
        found = wait_until(lambda: (lambda f: f if set(f) == want else None)(by_instance(targets(api), "web")),
                           timeout=30, what=f"dns_sd targets\n{server.tail()}")
        t = found["test-node.node.dc1.consul:8080"]
        assert t["labels"]["service"] == "web"
        assert t["discoveredLabels"]["__meta_dns_name"] == "web.service.consul"
        assert t["discoveredLabels"]["__meta_dns_srv_record_target"] == "test-node.node.dc1.consul."
        # DNS answers healthy instances only: a failing check takes web-2 out
        assert agent.put("/v1/agent/check/fail/web-2-ttl")[0] == 200
        wait_until(lambda: set(by_instance(targets(api), "web")) == {"test-node.node.dc1.consul:8080"},
                   timeout=30, what=f"web-2 leaves dns_sd\n{server.tail()}")
    finally:
        server.stop()
    # the host's resolv.conf was never touched
    assert f"nameserver {addr}" not in Path("/etc/resolv.conf").read_text()


# ---------------------------------------------------------------------- docs/prometheus.md


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def _normalised(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _contains(haystack: list[str], needle: list[str]) -> bool:
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def test_every_docs_config_is_a_piece_of_the_kit():
    kit = {p.name: _normalised(p.read_text()) for p in KIT.glob("*.yml")}
    blocks = yaml_blocks(DOCS.read_text())
    assert len(blocks) >= 5
    for block in blocks:
        if "kv_prefix" in block:  # run by test_live_agent_exposes_every_metric_the_kit_uses
            continue
        lines = _normalised(block)
        assert lines, block
        assert any(_contains(text, lines) for text in kit.values()), (
            f"this docs/prometheus.md block is not part of any file in {KIT.relative_to(PROJECT_ROOT)}:\n{block}")
    # and the docs name each kit file
    for path in KIT.iterdir():
        assert path.name in DOCS.read_text(), f"docs/prometheus.md does not mention {path.name}"
