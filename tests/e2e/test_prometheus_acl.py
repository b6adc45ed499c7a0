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

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess, free_port, http, http_json, wait_until

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


@contextlib.contextmanager
def running(args: list[str], workdir: Path) -> Iterator[str]:
    """Prometheus or vmagent on a free loopback port (appended as `flag=127.0.0.1:<port>` to the
    last argument's flag), its API's base URL; stopped on exit."""
    port = free_port(udp=False)
    with open(workdir / "log", "wb") as log:
        proc = subprocess.Popen([*args[:-1], f"{args[-1]}=127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            proc.kill()  # nothing if it stopped on SIGTERM
            proc.wait(5)


def active(api: str, job: str) -> dict[str, dict[str, Any]]:
    """The job's active targets by instance, as the scraper's /api/v1/targets lists them."""
    try:
        status, _, body = http_json("GET", api + "/api/v1/targets", timeout=5)
    except OSError:
        return {}
    found = body["data"]["activeTargets"] if status == 200 else []
    return {t["labels"]["instance"]: t for t in found if t["labels"].get("job") == job}


def _at_least_web(api: str) -> set[str] | None:
    found = set(active(api, "services"))
    return found if found >= WEB else None


def register_fleet(agent: AgentProcess) -> None:
    """Two web instances on the agent's node and a db one on another node."""
    api = WithToken(agent)
    for i, address in enumerate(("", "10.1.1.1")):
        status, _, data = api.put("/v1/agent/service/register",
                                  {"Name": "web", "ID": f"web-{i + 1}", "Port": 8080 + i, "Address": address})
        assert status == 200, data
    status, _, data = api.put("/v1/catalog/register", {
        "Node": "ext-1", "Address": "10.2.0.1", "Service": {"Service": "db", "ID": "db-1", "Port": 5432}})
    assert status == 200, data


class WithToken:
    """The agent, every request carrying the management token."""

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
    register_fleet(agent)
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
    args = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}", "--log.level=warn",
            "--web.listen-address"]
    with running(args, workdir) as api:
        def health(job: str) -> str | None:
            target = active(api, job).get(secured.http_addr)
            return target["health"] if target and target["health"] != "unknown" else None

        assert wait_until(lambda: health("cairn") == "up" or None, timeout=30, what="the scrape with the token is up")
        assert wait_until(lambda: health("cairn-no-token"), timeout=30) == "down"
        refused = active(api, "cairn-no-token")[secured.http_addr]["lastError"]
        assert "403" in refused, refused
        assert wait_until(lambda: _at_least_web(api), timeout=30, what="http_sd targets") == WEB


def test_vmagent_consul_sd_with_a_scoped_token_discovers_only_web(secured, tmp_path: Path):
    web_token = token_for(secured, "vmagent-web",
                          'service_prefix "web" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
                          'agent_prefix "" { policy = "read" }')
    workdir = tmp_path / "vmagent"
    workdir.mkdir()
    config = workdir / "scrape.yml"
    config.write_text(VMAGENT_CONFIG.format(agent=secured.http_addr, web_token=web_token))
    args = ["vmagent", f"-promscrape.config={config}", f"-remoteWrite.tmpDataPath={workdir / 'data'}",
            "-remoteWrite.url=http://127.0.0.1:9/write", "-promscrape.consulSDCheckInterval=1s", "-loggerLevel=WARN",
            "-httpListenAddr"]
    with running(args, workdir) as api:
        assert wait_until(lambda: _at_least_web(api), timeout=30, what="vmagent targets") == WEB
