"""The web UI's Prometheus panels with a real Debian Prometheus behind the agent's metrics proxy.

Prometheus finds its targets in cairn's catalog (http_sd on /v1/sd/prometheus, the service name
as `job`) and scrapes them every second: Prometheus itself, registered in the catalog as the
service "prometheus" (a real exporter of request counters and latency histograms), and the agent's
own metrics. The service page's panels, with PromQL templates from
ui_config.metrics_provider_options_json, show numbers from it; the cluster page shows cairn's
own; the proxy refuses paths outside its allow-list; and with Prometheus gone the panels say so
while the catalog keeps rendering.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import AgentProcess, free_port, http_json, wait_until
from test_prometheus import Server
from ui_browser import available, browser, page_of, shots_dir

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not available() or not shutil.which("prometheus"),
                       reason="needs Playwright, Debian's chromium and prometheus (scripts/debian-packages.txt)"),
]

PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: catalog
    http_sd_configs:
      - url: http://{agent}/v1/sd/prometheus
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_consul_service]
        regex: consul
        action: drop
      - source_labels: [__meta_consul_service]
        target_label: job
  - job_name: cairn
    metrics_path: /v1/agent/metrics
    params:
      format: [prometheus]
    static_configs:
      - targets: [{agent}]
"""

QUERIES = {"service": {
    "Targets up": 'sum(up{job="{{service}}"})',
    "Request rate (req/s)": 'sum(rate(prometheus_http_requests_total{job="{{service}}"}[{{range}}]))',
    "Error ratio (%)": '100 * (sum(rate(prometheus_http_requests_total{job="{{service}}",code=~"5.."}[{{range}}]))'
                       ' or vector(0)) / sum(rate(prometheus_http_requests_total{job="{{service}}"}[{{range}}]))',
    "p99 latency (s)": 'histogram_quantile(0.99, sum by (le) '
                       '(rate(prometheus_http_request_duration_seconds_bucket{job="{{service}}"}[{{range}}])))',
}}


def hcl_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is an HCL string


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, str, Server]]:
    prom_port = free_port(udp=False)
    prom_url = f"http://127.0.0.1:{prom_port}"
    ui = ('ui_config { metrics_provider = "prometheus" '
          f'metrics_provider_options_json = {hcl_string(json.dumps({"queries": QUERIES}))} '
          f'metrics_proxy {{ base_url = "{prom_url}" }} '
          'dashboard_url_templates { '
          'service = "http://127.0.0.1:3000/d/x?var-svc={{Service.Name}}&dc={{Datacenter}}" } }')
    workdir = tmp_path_factory.mktemp("ui-prometheus")
    agent = AgentProcess(workdir, "-hcl", ui, node="prom-node")
    server = None
    try:
        status, _, data = agent.put("/v1/agent/service/register", {
            "Name": "prometheus", "ID": "prometheus-1", "Address": "127.0.0.1", "Port": prom_port,
            "Check": {"CheckID": "prom-http", "Name": "Prometheus ready", "HTTP": f"{prom_url}/-/ready",
                      "Interval": "1s"}})
        assert status == 200, data
        config = workdir / "prometheus.yml"
        config.write_text(PROMETHEUS_CONFIG.format(agent=agent.http_addr))
        server = Server(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                        workdir / "prometheus.log", workdir)
        yield agent, prom_url, server
    finally:
        if server is not None:
            server.stop()
        agent.stop()


def instant(url: str, query: str) -> list[Any]:
    try:
        status, _, body = http_json("GET", f"{url}/api/v1/query?query={urllib.parse.quote(query)}", timeout=5)
    except OSError:
        return []
    return body["data"]["result"] if status == 200 else []


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def test_service_and_cluster_panels_show_prometheus_numbers(stack: tuple[AgentProcess, str, Server],
                                                            tmp_path: Path) -> None:
    agent, prom_url, _ = stack
    shots = shots_dir(tmp_path)
    rate = 'sum(rate(prometheus_http_requests_total{job="prometheus"}[15m]))'
    wait_until(lambda: instant(prom_url, 'sum(up{job="prometheus"})') and instant(prom_url, rate)
               and instant(prom_url, "sum(rate(consul_api_http_count[15m]))"),
               timeout=60, interval=0.5, what="Prometheus scraping the catalog's exporter and the agent")
    # the proxy: allow-listed paths only
    status, _, _ = agent.get("/v1/internal/ui/metrics-proxy/api/v1/status/config")
    assert status == 403
    status, _, body = agent.get_json("/v1/internal/ui/metrics-proxy/api/v1/query?query=" + urllib.parse.quote(rate))
    assert status == 200 and body["status"] == "success"
    with browser() as chromium:
        p = page_of(chromium)
        page = p.page
        page.goto(agent.url + "/ui/services/prometheus")
        up = page.locator('[data-panel="Targets up"]')
        up.filter(has_text="1").wait_for(timeout=10000)
        dash = page.locator("#svc-dashboard")
        assert dash.get_attribute("href") == "http://127.0.0.1:3000/d/x?var-svc=prometheus&dc=dc1"
        assert dash.get_attribute("rel") == "noopener noreferrer"
        values = {label: page.locator(f'[data-panel="{label}"]').inner_text() for label in QUERIES["service"]}
        assert number(values["Targets up"]) == 1
        assert (number(values["Request rate (req/s)"]) or 0) > 0, values
        assert number(values["p99 latency (s)"]) is not None, values
        assert number(values["Error ratio (%)"]) == 0, values
        page.screenshot(path=str(shots / "service-metrics.png"), full_page=True)
        page.goto(agent.url + "/ui/cluster")
        http_panel = page.locator('[data-panel="HTTP requests (/s)"]')
        wait_until(lambda: number(http_panel.inner_text()) is not None, timeout=10, what="the cluster's HTTP panel")
        assert number(page.locator('[data-panel="Raft commit time (ms, median)"]').inner_text()) is not None
        page.screenshot(path=str(shots / "cluster-metrics.png"), full_page=True)
        assert p.problems == []


def test_prometheus_gone_degrades_the_panels_only(stack: tuple[AgentProcess, str, Server]) -> None:
    agent, _, server = stack
    server.stop()
    status, _, body = agent.get_json("/v1/internal/ui/metrics-proxy/api/v1/query?query=up")
    assert status == 502 and b"metrics backend unreachable" in body
    with browser() as chromium:
        p = page_of(chromium)
        page = p.page
        page.goto(agent.url + "/ui/services/prometheus")
        page.locator("#metrics [role=status]").filter(has_text="Metrics unavailable").wait_for(timeout=10000)
        page.locator('[data-instance="prometheus-1"]').wait_for()  # the catalog still renders
        assert all("502" in x or "Bad Gateway" in x for x in p.problems), p.problems

