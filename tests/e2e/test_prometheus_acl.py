"""Prometheus and vmagent against an agent with ACLs denying by default, configured as
docs/acl.md ("Metrics and Prometheus") shows.

- Prometheus (Debian's) scrapes `/v1/agent/metrics?format=prometheus` with a bearer token
  (`authorization` in the scrape config) holding `agent_prefix "" read`; the same scrape without a
  token is refused (the target is down, 403).
- Prometheus discovers through http_sd (`/v1/sd/prometheus`) with a token scoped to
  `service_prefix "web"`: only the web instances, not the db one beside them.
- vmagent's consul_sd with that token (`token:`) discovers the same web instances only.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import AgentProcess, free_port, http, wait_until

from tests.e2e.test_prometheus import Server, by_instance, register_fleet, targets

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shutil.which("vmagent") or not shutil.which("prometheus"),
                       reason="needs the Debian packages victoria-metrics and prometheus "
                              "(scripts/debian-packages.txt)"),
]

MANAGEMENT = str(uuid.uuid4())
WEB = {"127.0.0.1:8080", "10.1.1.1:8081"}  # web-1 and web-2 of register_fleet; db-1 is 10.2.0.1:5432

PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1h
scrape_configs:
  - job_name: cairn
    scrape_interval: 1s
    metrics_path: /v1/agent/metrics
    params:
      format: [prometheus]
    authorization:
      type: Bearer
      credentials_file: {metrics_token_file}
    static_configs:
      - targets: [{agent}]
  - job_name: cairn-no-token
    scrape_interval: 1s
    metrics_path: /v1/agent/metrics
    params:
      format: [prometheus]
    static_configs:
      - targets: [{agent}]
  - job_name: services
    http_sd_configs:
      - url: http://{agent}/v1/sd/prometheus
        refresh_interval: 1s
        authorization:
          type: Bearer
          credentials: {web_token}
"""

VMAGENT_CONFIG = """
global:
  scrape_interval: 1h
scrape_configs:
  - job_name: services
    consul_sd_configs:
      - server: {agent}
        token: {web_token}
"""


def _at_least_web(api: str) -> set[str] | None:
    found = set(by_instance(targets(api), "services"))
    return found if found >= WEB else None


class WithToken:
    """The agent, every request carrying the management token (register_fleet calls `put`)."""

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent

    def put(self, path: str, body: Any = None) -> tuple[int, Any, bytes]:
        return http("PUT", self.agent.url + path, body, {"X-Consul-Token": MANAGEMENT})


def token_for(agent: AgentProcess, name: str, rules: str) -> str:
    api = WithToken(agent)
    status, _, body = api.put("/v1/acl/policy", {"Name": name, "Rules": rules})
    assert status == 200, body
    status, _, body = api.put("/v1/acl/token", {"Description": name, "Policies": [{"Name": name}]})
    assert status == 200, body
    return json.loads(body)["SecretID"]


@pytest.fixture
def secured(agent_factory) -> AgentProcess:
    agent = agent_factory("-hcl", f'acl {{ enabled = true\n default_policy = "deny"\n'
                                  f' tokens {{ initial_management = "{MANAGEMENT}" }} }}', node="prom-acl")
    register_fleet(WithToken(agent))  # type: ignore[arg-type]
    return agent


def test_prometheus_scrapes_with_a_bearer_token_and_discovers_only_what_its_token_reads(secured, tmp_path: Path):
    metrics_token = token_for(secured, "prometheus-metrics", 'agent_prefix "" { policy = "read" }')
    web_token = token_for(secured, "prometheus-web",
                          'service_prefix "web" { policy = "read" }\nnode_prefix "" { policy = "read" }')
    # the agent itself: no token, no metrics
    assert http("GET", secured.url + "/v1/agent/metrics?format=prometheus")[0] == 403
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    token_file = workdir / "cairn-token"
    token_file.write_text(metrics_token + "\n")
    config = workdir / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(agent=secured.http_addr, metrics_token_file=token_file,
                                               web_token=web_token))
    port = free_port(udp=False)
    server = Server(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], workdir / "prometheus.log",
                    workdir)
    api = f"http://127.0.0.1:{port}"
    try:
        def health(job: str) -> str | None:
            target = by_instance(targets(api), job).get(secured.http_addr)
            return target["health"] if target and target["health"] != "unknown" else None

        assert wait_until(lambda: health("cairn") == "up" or None, timeout=30,
                          what=f"the scrape with the token is up\n{server.tail()}")
        assert wait_until(lambda: health("cairn-no-token"), timeout=30) == "down"
        refused = by_instance(targets(api), "cairn-no-token")[secured.http_addr]["lastError"]
        assert "403" in refused, refused
        found = wait_until(lambda: _at_least_web(api), timeout=30,
                           what=f"http_sd targets\n{server.tail()}")
        assert found == WEB
    finally:
        server.stop()


def test_vmagent_consul_sd_with_a_scoped_token_discovers_only_web(secured, tmp_path: Path):
    web_token = token_for(secured, "vmagent-web",
                          'service_prefix "web" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
                          'agent_prefix "" { policy = "read" }')
    workdir = tmp_path / "vmagent"
    workdir.mkdir()
    config = workdir / "scrape.yml"
    config.write_text(VMAGENT_CONFIG.format(agent=secured.http_addr, web_token=web_token))
    port = free_port(udp=False)
    server = Server(["vmagent", f"-promscrape.config={config}", f"-httpListenAddr=127.0.0.1:{port}",
                     f"-remoteWrite.tmpDataPath={workdir / 'data'}", "-remoteWrite.url=http://127.0.0.1:9/write",
                     "-promscrape.consulSDCheckInterval=1s", "-loggerLevel=WARN"], workdir / "vmagent.log", workdir)
    api = f"http://127.0.0.1:{port}"
    try:
        found = wait_until(lambda: _at_least_web(api), timeout=30,
                           what=f"vmagent targets\n{server.tail()}")
        assert found == WEB
    finally:
        server.stop()
