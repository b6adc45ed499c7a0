"""Real Prometheus clients against a real cairn agent: vmagent's consul_sd, Prometheus's http_sd
and file_sd, and Prometheus scraping cairn's own metrics.

vmagent (Debian `victoria-metrics`) speaks Consul's API the way Prometheus's consul_sd does
(agent/self, catalog/services, blocking health/service per service); Debian's Prometheus 2.42 has
no consul_sd (reference/prometheus.md §0.1), so it reads `/v1/sd/prometheus` (http_sd) and a file
kept by `cairn sd file-sd` (file_sd). The same relabel_configs run in both, and the test checks
that they produce the same target labels, before and after a health flip. The configurations are
the ones docs/prometheus.md shows.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from conftest import AgentProcess, free_port, http_json, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shutil.which("vmagent") or not shutil.which("prometheus"),
                       reason="needs the Debian packages victoria-metrics and prometheus "
                              "(scripts/debian-packages.txt)"),
]

# The relabelling docs/prometheus.md shows; it must mean the same with consul_sd and http_sd.
RELABEL = """
    relabel_configs:
      - source_labels: [__meta_consul_service]
        regex: consul
        action: drop
      - source_labels: [__meta_consul_service]
        target_label: service
      - source_labels: [__meta_consul_node]
        target_label: node
      - source_labels: [__meta_consul_health]
        target_label: health
      - source_labels: [__meta_consul_tags]
        regex: .*,v1,.*
        target_label: track
        replacement: v1
      - source_labels: [__meta_consul_metadata_rack_name]
        target_label: rack
      - regex: __meta_consul_service_metadata_(.+)
        action: labelmap
        replacement: meta_$1
"""

VMAGENT_CONFIG = """
global:
  scrape_interval: 1h
scrape_configs:
  - job_name: services
    consul_sd_configs:
      - server: {agent}
""" + RELABEL

PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1h
scrape_configs:
  - job_name: services
    http_sd_configs:
      - url: http://{agent}/v1/sd/prometheus
        refresh_interval: 1s
""" + RELABEL + """
  - job_name: services-file
    file_sd_configs:
      - files: [{sd_file}]
        refresh_interval: 1s
  - job_name: cairn
    scrape_interval: 1s
    metrics_path: /v1/agent/metrics
    params:
      format: [prometheus]
    static_configs:
      - targets: [{agent}]
"""


class Server:
    """A child process in its own process group, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=cwd, start_new_session=True)

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def targets(api: str) -> list[dict[str, Any]]:
    try:
        status, _, body = http_json("GET", api + "/api/v1/targets", timeout=5)
    except OSError:
        return []
    return body["data"]["activeTargets"] if status == 200 else []


def by_instance(active: list[dict[str, Any]], job: str = "services") -> dict[str, dict[str, Any]]:
    return {t["labels"]["instance"]: t for t in active if t["labels"].get("job") == job}


def consul_meta(target: dict[str, Any]) -> dict[str, str]:
    """The non-empty __meta_consul_* labels (Prometheus drops empty ones; vmagent adds namespace="")."""
    return {k: v for k, v in target["discoveredLabels"].items() if k.startswith("__meta_consul_") and v}


def register_fleet(agent: AgentProcess) -> None:
    for body in (
        {"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1", "blue"],
         "Meta": {"version": "1.2", "team-name": "shop"}, "Check": {"CheckID": "web-1-ttl", "TTL": "10m"}},
        {"Name": "web", "ID": "web-2", "Port": 8081, "Address": "10.1.1.1", "Tags": ["v2"],
         "Check": {"CheckID": "web-2-ttl", "TTL": "10m"}},
    ):
        status, _, data = agent.put("/v1/agent/service/register", body)
        assert status == 200, data
    assert agent.put("/v1/agent/check/pass/web-1-ttl")[0] == 200
    assert agent.put("/v1/agent/check/warn/web-2-ttl")[0] == 200
    status, _, data = agent.put("/v1/catalog/register", {
        "Node": "ext-1", "Address": "10.2.0.1", "NodeMeta": {"rack-name": "r1"},
        "TaggedAddresses": {"lan": "10.2.0.1", "wan": "198.51.100.1"},
        "Service": {"Service": "db", "ID": "db-1", "Port": 5432, "Tags": []},
        "Check": {"CheckID": "db-1-check", "Name": "db alive", "Status": "passing", "ServiceID": "db-1"},
    })
    assert status == 200, data


@pytest.fixture
def fleet(agent: AgentProcess) -> AgentProcess:
    register_fleet(agent)
    return agent


@pytest.fixture
def vmagent(fleet: AgentProcess, tmp_path: Path):
    port = free_port(udp=False)
    workdir = tmp_path / "vmagent"
    workdir.mkdir()
    config = workdir / "scrape.yml"
    config.write_text(VMAGENT_CONFIG.format(agent=fleet.http_addr))
    server = Server(["vmagent", f"-promscrape.config={config}", f"-httpListenAddr=127.0.0.1:{port}",
                     f"-remoteWrite.tmpDataPath={workdir / 'data'}", "-remoteWrite.url=http://127.0.0.1:9/write",
                     "-promscrape.consulSDCheckInterval=1s", "-loggerLevel=WARN"], workdir / "vmagent.log", workdir)
    yield f"http://127.0.0.1:{port}", server
    server.stop()


@pytest.fixture
def prometheus(fleet: AgentProcess, tmp_path: Path):
    port = free_port(udp=False)
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    sd_file = workdir / "cairn-targets.json"
    writer = subprocess.Popen([sys.executable, "-m", "appliance", "sd", "file-sd", "-out", str(sd_file),
                               "-service", "web", "-wait", "30s"], env=fleet.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    config = workdir / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(agent=fleet.http_addr, sd_file=sd_file))
    check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    server = Server(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], workdir / "prometheus.log",
                    workdir)
    yield f"http://127.0.0.1:{port}", server
    server.stop()
    writer.terminate()
    writer.wait(5)


def expected_labels(active: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {inst: {k: v for k, v in t["labels"].items() if k != "job"} for inst, t in active.items()}


def test_vmagent_consul_sd_and_prometheus_http_sd_agree(fleet, vmagent, prometheus):
    vm_api, vm_server = vmagent
    prom_api, prom_server = prometheus

    def discovered(api: str, want: set[str]) -> dict[str, dict[str, Any]] | None:
        found = by_instance(targets(api))
        return found if set(found) == want else None

    want = {"127.0.0.1:8080", "10.1.1.1:8081", "10.2.0.1:5432"}
    vm = wait_until(lambda: discovered(vm_api, want), timeout=30, what=f"vmagent targets\n{vm_server.tail()}")
    prom = wait_until(lambda: discovered(prom_api, want), timeout=30,
                      what=f"prometheus targets\n{prom_server.tail()}")

    # consul_sd (vmagent) and cairn's http_sd produce the same __meta_consul_* labels ...
    for inst in want:
        assert consul_meta(vm[inst]) == consul_meta(prom[inst]), inst
    web1 = consul_meta(vm["127.0.0.1:8080"])
    assert web1["__meta_consul_tags"] == ",v1,blue,"
    assert web1["__meta_consul_service_metadata_team_name"] == "shop"
    assert web1["__meta_consul_tagged_address_lan"] == "127.0.0.1"
    assert web1["__meta_consul_dc"] == "dc1"
    assert consul_meta(vm["10.1.1.1:8081"])["__meta_consul_service_address"] == "10.1.1.1"
    db = consul_meta(vm["10.2.0.1:5432"])
    assert db["__meta_consul_node"] == "ext-1" and db["__meta_consul_metadata_rack_name"] == "r1"
    assert db["__meta_consul_tagged_address_wan"] == "198.51.100.1"

    # ... so the same relabel_configs give the same target labels.
    assert expected_labels(vm) == expected_labels(prom)
    assert expected_labels(vm)["127.0.0.1:8080"] == {
        "instance": "127.0.0.1:8080", "service": "web", "node": "test-node", "health": "passing", "track": "v1",
        "meta_version": "1.2", "meta_team_name": "shop"}
    assert {inst: t["labels"]["health"] for inst, t in vm.items()} == {
        "127.0.0.1:8080": "passing", "10.1.1.1:8081": "warning", "10.2.0.1:5432": "passing"}
    assert vm["10.2.0.1:5432"]["labels"]["rack"] == "r1"

    # A health flip reaches both.
    assert fleet.put("/v1/agent/check/fail/web-1-ttl")[0] == 200

    def health(api: str) -> str | None:
        t = by_instance(targets(api)).get("127.0.0.1:8080")
        return t["labels"]["health"] if t else None

    wait_until(lambda: health(vm_api) == "critical", timeout=20, what="vmagent sees the flip")
    wait_until(lambda: health(prom_api) == "critical", timeout=20, what="prometheus sees the flip")

    # A service that goes away leaves both.
    assert fleet.put("/v1/agent/service/deregister/web-2")[0] == 200
    gone = want - {"10.1.1.1:8081"}
    wait_until(lambda: discovered(vm_api, gone), timeout=20, what="vmagent drops web-2")
    wait_until(lambda: discovered(prom_api, gone), timeout=20, what="prometheus drops web-2")


def test_prometheus_file_sd_and_self_scrape(fleet, prometheus):
    prom_api, prom_server = prometheus

    def file_targets() -> set[str]:
        return set(by_instance(targets(prom_api), "services-file"))

    wait_until(lambda: file_targets() == {"127.0.0.1:8080", "10.1.1.1:8081"}, timeout=30,
               what=f"file_sd targets\n{prom_server.tail()}")
    status, _, _ = fleet.put("/v1/agent/service/register", {"Name": "web", "ID": "web-3", "Port": 8082})
    assert status == 200
    wait_until(lambda: "127.0.0.1:8082" in file_targets(), timeout=20, what="file_sd follows the catalog")
    labels = by_instance(targets(prom_api), "services-file")["127.0.0.1:8080"]["discoveredLabels"]
    assert labels["__meta_consul_service"] == "web" and labels["__meta_consul_tags"] == ",v1,blue,"

    # Prometheus scrapes cairn's own metrics (text format, Consul's names).
    def scraped(query: str) -> list[dict[str, Any]]:
        url = prom_api + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
        status, _, body = http_json("GET", url, timeout=5)
        return body["data"]["result"] if status == 200 else []

    cairn = wait_until(lambda: by_instance(targets(prom_api), "cairn").get(fleet.http_addr, {}).get("health") == "up"
                       or None, timeout=20, what="the cairn scrape is up")
    assert cairn
    healthy = wait_until(lambda: scraped('consul_catalog_service_node_healthy{service_name="web"}'), timeout=10)
    values = {r["metric"]["service_id"]: r["value"][1] for r in healthy}
    assert (values["web-1"], values["web-2"], values["web-3"]) == ("1", "0", "1")  # web-2 warns; web-3 has no check
    assert wait_until(lambda: scraped('consul_api_http_count{path="v1.sd.prometheus"}'), timeout=10)
    up = scraped('up{job="cairn"}')
    assert up and up[0]["value"][1] == "1"
