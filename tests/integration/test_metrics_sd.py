"""/v1/agent/metrics, /v1/sd/prometheus and `cairn sd file-sd` against a real `cairn agent -dev`.

Shapes and texts: reference/consul-api.md §4.1 (metrics JSON, 415), reference/prometheus.md §3
(http_sd: status 200, Content-Type application/json, [] when empty) and §6 (names, types).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import AgentProcess, wait_until
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)


def register(agent: AgentProcess, body: dict) -> None:
    status, _, data = agent.put("/v1/agent/service/register", body)
    assert status == 200, data


def families(text: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def test_metrics_json_shape(agent):
    register(agent, {"Name": "web", "Port": 80, "Check": {"TTL": "30s"}})
    status, headers, body = agent.get_json("/v1/agent/metrics")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert list(body) == ["Timestamp", "Gauges", "Points", "Counters", "Samples"]
    assert body["Timestamp"].endswith(" +0000 UTC")
    for gauge in body["Gauges"]:
        assert list(gauge) == ["Name", "Value", "Labels"]
    names = {g["Name"].split(".", 2)[-1] for g in body["Gauges"]}  # consul.<host>.<name>
    assert {"rpc.queries_blocking", "raft.applied_index", "agent.check.status"} <= names
    for sample in body["Samples"]:
        assert list(sample) == ["Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels"]
    assert any(s["Name"] == "consul.api.http" for s in body["Samples"])


def test_prometheus_format_with_consul_names(agent):
    register(agent, {"Name": "web", "Port": 80, "Tags": ["v1"], "Check": {"TTL": "30s"}})
    agent.put("/v1/kv/limits/web", "12.5")
    agent.get("/v1/catalog/services")
    status, headers, text = agent.get("/v1/agent/metrics?format=prometheus&kv_prefix=limits/")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = families(text)
    http = fams["consul_api_http"]
    assert http.type == "summary"
    paths = {s.labels.get("path") for s in http.samples}
    assert {"v1.agent.service.register", "v1.kv._", "v1.catalog.services"} <= paths
    assert fams["consul_fsm_kvs"].samples[0].labels["op"] == "set"
    assert "consul_catalog_register" in fams and "consul_kvs_apply" in fams
    assert fams["consul_up"].samples[0].value == 1
    healthy = {s.labels["service_id"]: s.value for s in fams["consul_catalog_service_node_healthy"].samples}
    assert healthy["web"] == 0  # TTL checks start critical
    assert [(s.labels["key"], s.value) for s in fams["consul_catalog_kv"].samples] == [("limits/web", 12.5)]
    assert any(name.startswith("process_") for name in fams)


# Consul >= 1.7.2: an OpenMetrics Accept header selects the Prometheus format
def test_openmetrics_accept_header(agent):
    accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
              "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    status, headers, text = agent.get("/v1/agent/metrics", headers={"Accept": accept})
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE consul_up gauge" in text


def test_prometheus_disabled_is_415(agent_factory, tmp_path):
    cfg = tmp_path / "telemetry.json"
    cfg.write_text(json.dumps({"telemetry": {"prometheus_retention_time": "0s", "disable_hostname": True}}))
    agent = agent_factory("-config-file", str(cfg))
    status, _, body = agent.get("/v1/agent/metrics?format=prometheus")
    assert (status, body) == (415, b"Prometheus is not enabled since its retention time is not positive")
    status, _, body = agent.get_json("/v1/agent/metrics")
    assert status == 200
    assert "consul.rpc.queries_blocking" in {g["Name"] for g in body["Gauges"]}  # no host name in it


def test_metrics_prefix(agent_factory, tmp_path):
    cfg = tmp_path / "telemetry.json"
    cfg.write_text(json.dumps({"telemetry": {"metrics_prefix": "cairn", "disable_hostname": True}}))
    agent = agent_factory("-config-file", str(cfg))
    _, _, text = agent.get("/v1/agent/metrics?format=prometheus")
    fams = families(text)
    assert "cairn_rpc_queries_blocking" in fams
    assert "consul_up" in fams  # consul_exporter's names keep their namespace


def test_sd_endpoint_content_type_filters_and_blocking(agent):
    status, headers, body = agent.get("/v1/sd/prometheus?service=nosuch")
    assert (status, headers["Content-Type"], body) == (200, "application/json", b"[]")
    register(agent, {"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"], "Check": {"TTL": "30s"}})
    register(agent, {"Name": "web", "ID": "web-2", "Port": 8081, "Address": "10.1.1.1"})
    status, headers, groups = agent.get_json("/v1/sd/prometheus?service=web")
    assert [g["targets"] for g in groups] == [["127.0.0.1:8080"], ["10.1.1.1:8081"]]
    index = int(headers["X-Consul-Index"])
    _, _, groups = agent.get_json("/v1/sd/prometheus?service=web&passing")
    assert [g["labels"]["__meta_consul_service_id"] for g in groups] == ["web-2"]
    _, _, groups = agent.get_json("/v1/sd/prometheus?tag=v1")
    assert [g["labels"]["__meta_consul_service_id"] for g in groups] == ["web-1"]
    status, _, body = agent.get("/v1/sd/prometheus?dc=elsewhere")
    assert (status, body) == (500, b"No path to datacenter")

    result = {}

    def blocked() -> None:
        t0 = time.monotonic()
        result["answer"] = agent.get_json(f"/v1/sd/prometheus?service=web&index={index}&wait=20s")
        result["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=blocked)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # parked until web changes
    agent.put("/v1/agent/check/pass/service:web-1")
    thread.join(10)
    _, headers, groups = result["answer"]
    assert result["elapsed"] < 10 and int(headers["X-Consul-Index"]) > index
    assert {g["labels"]["__meta_consul_health"] for g in groups} == {"passing"}


def test_file_sd_writer(agent, tmp_path: Path):
    out = tmp_path / "sd" / "targets.json"
    out.parent.mkdir()
    done = agent.cli("sd", "file-sd", "-out", str(out), "-service", "web", "-once")
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == []
    register(agent, {"Name": "web", "Port": 9100})
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "sd", "file-sd", "-out", str(out), "-service", "web",
                             "-wait", "10s"], env=agent.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: out.exists() and json.loads(out.read_text()) != [], timeout=10, what="first write")
        register(agent, {"Name": "web", "ID": "web-b", "Port": 9101})

        def targets() -> list[str]:
            return [g["targets"][0] for g in json.loads(out.read_text())]

        wait_until(lambda: len(targets()) == 2, timeout=10, what="the file follows the catalog")
        assert targets() == ["127.0.0.1:9100", "127.0.0.1:9101"]
        assert [p.name for p in out.parent.iterdir()] == ["targets.json"]  # no temp files left
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_file_sd_usage_errors(agent):
    done = agent.cli("sd", "file-sd")
    assert done.returncode == 1 and "Missing required flag: -out" in done.stderr
    done = agent.cli("sd", "nosuch")
    assert done.returncode == 1 and "Unknown subcommand" in done.stderr
