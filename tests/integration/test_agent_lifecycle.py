"""The agent process: config errors, reload, log formats, the connection limit, client hang-ups."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from appliance.agent import Agent
from appliance.config import build_agent_config
from tests import harness
from tests.conftest import PROJECT_ROOT, free_port, wait_until

pytestmark = pytest.mark.timeout(60)


def test_bad_config_file_stops_the_agent_before_it_binds(tmp_path: Path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "bad.json").write_text('{"ports": {"http": "abc"}}')
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "agent", "-dev", "-config-dir", str(conf), "-http-port", str(port)],
        capture_output=True, text=True, timeout=30, cwd=PROJECT_ROOT)
    assert proc.returncode == 1
    assert "bad.json" in proc.stderr and "ports.http" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing was left listening


def test_sighup_reloads_services_and_log_level(agent_factory, tmp_path: Path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "web.json").write_text(json.dumps({"service": {"name": "web", "port": 80}}))
    agent = agent_factory("-config-dir", str(conf))  # flags win over files, so no -log-level here
    status, _, body = agent.get_json("/v1/catalog/service/web")
    assert [s["ServiceID"] for s in body] == ["web"]

    (conf / "web.json").write_text(json.dumps({"service": {"name": "api", "port": 81}}))
    assert agent.get_json("/v1/agent/self")[2]["DebugConfig"]["LogLevel"] == "DEBUG"  # -dev default
    (conf / "level.hcl").write_text('log_level = "warn"\n')
    agent.signal(signal.SIGHUP)
    wait_until(lambda: agent.get_json("/v1/catalog/service/api")[2], what="api registered after SIGHUP")
    assert agent.get_json("/v1/catalog/service/web")[2] == []
    assert agent.get_json("/v1/agent/self")[2]["DebugConfig"]["LogLevel"] == "WARN"

    (conf / "broken.json").write_text("{not json")
    agent.signal(signal.SIGHUP)
    wait_until(lambda: "Failed to reload configs" in agent.log_path.read_text(), what="reload error logged")
    assert agent.alive()  # a bad file keeps the running config
    assert [s["ServiceID"] for s in agent.get_json("/v1/catalog/service/api")[2]] == ["api"]


def test_log_lines_in_consuls_format_and_json(agent_factory):
    plain = agent_factory(node="plain")
    wait_until(lambda: "Consul agent running!" in plain.log_path.read_text())
    line = next(ln for ln in plain.log_path.read_text().splitlines() if "agent running" in ln)
    # 2026-01-02T03:04:05.678Z [INFO]  agent: Consul agent running!
    assert line[23:] == "Z [INFO]  agent: Consul agent running!"
    assert "Synced node info" in plain.log_path.read_text()

    js = agent_factory("-log-json", node="json")
    wait_until(lambda: "agent running" in js.log_path.read_text())
    records = [json.loads(ln) for ln in js.log_path.read_text().splitlines() if ln.startswith("{")]
    running = next(r for r in records if r["@message"] == "Consul agent running!")
    assert (running["@level"], running["@module"]) == ("info", "agent")


def test_connections_past_the_per_client_limit_get_429(agent_factory):
    agent = agent_factory("-hcl", "limits { http_max_conns_per_client = 3 }")
    held = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", agent.http_port))
            held.append(s)
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", agent.http_port))
        extra.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
        extra.settimeout(5)
        reply = extra.recv(4096)
        extra.close()
        assert reply.startswith(b"HTTP/1.1 429 Too Many Requests")
    finally:
        for s in held:
            s.close()
    # once the held connections close, requests are served again
    wait_until(lambda: agent.get("/v1/status/leader")[0] == 200, what="served again")


async def _serving(base: str) -> None:
    """Wait until an in-process agent answers over HTTP."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(base + "/v1/status/leader") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)


def test_blocking_query_stops_when_its_client_goes_away(tmp_path: Path):
    """An in-process agent on a real socket: parked queries vanish when their clients hang up."""
    port = free_port()
    cfg = build_agent_config(["-dev", "-node", "inproc", "-http-port", str(port), "-dns-port", "-1"])

    async def scenario() -> None:
        agent = Agent(cfg)
        runner = asyncio.create_task(agent.run())
        base = f"http://127.0.0.1:{port}"
        await _serving(base)
        async with aiohttp.ClientSession() as session, session.get(base + "/v1/kv/k") as resp:
            index = resp.headers["X-Consul-Index"]
        clients = [aiohttp.ClientSession() for _ in range(20)]
        parked = [asyncio.create_task(c.get(f"{base}/v1/kv/k?index={index}&wait=5m")) for c in clients]
        for _ in range(100):
            if agent.hub.parked == 20:
                break
            await asyncio.sleep(0.05)
        assert agent.hub.parked == 20
        for task in parked:
            task.cancel()
        for c in clients:
            await c.close()
        for _ in range(100):
            if agent.hub.parked == 0:
                break
            await asyncio.sleep(0.05)
        assert agent.hub.parked == 0
        assert not agent.hub._exact and not agent.hub._prefixes
        agent.request_shutdown("test")
        await runner

    asyncio.run(scenario())


def test_parked_blocking_queries_answer_at_once_when_the_agent_stops(tmp_path: Path):
    """Shutdown does not wait out a blocking query: each parked one answers at once with what it
    has (its index unchanged, as at the end of its wait), and the agent is down in well under the
    10 s the HTTP server gives requests in flight."""
    port = free_port()
    cfg = build_agent_config(["-dev", "-node", "inproc", "-http-port", str(port), "-dns-port", "-1"])

    async def scenario() -> None:
        agent = Agent(cfg)
        runner = asyncio.create_task(agent.run())
        base = f"http://127.0.0.1:{port}"
        await _serving(base)
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/v1/catalog/services") as resp:
                index = resp.headers["X-Consul-Index"]

            async def parked(path: str) -> tuple[int, str]:
                async with session.get(f"{base}{path}?index={index}&wait=5m") as resp:
                    await resp.read()
                    return resp.status, resp.headers.get("X-Consul-Index", "")

            tasks = [asyncio.create_task(parked(p)) for p in ("/v1/catalog/services", "/v1/health/service/x",
                                                               "/v1/catalog/nodes")]
            for _ in range(100):
                if agent.hub.parked == len(tasks):
                    break
                await asyncio.sleep(0.05)
            assert agent.hub.parked == len(tasks)
            began = time.monotonic()
            agent.request_shutdown("test")
            answers = await asyncio.gather(*tasks)
            await runner
            took = time.monotonic() - began
        assert [status for status, _ in answers] == [200, 200, 200]
        assert answers[0][1] == index
        assert took < 5.0, f"the agent took {took:.1f}s to stop with parked queries"

    asyncio.run(scenario())


def test_api_registrations_survive_a_restart_with_a_data_dir(tmp_path: Path):
    agent = harness.Agent(tmp_path, "persist", "-server", "-bootstrap")  # a server listens for peers and clients
    base = agent.url
    from tests.conftest import http, http_json

    agent.start().wait_leader()
    try:
        body = {"Name": "web", "ID": "web-1", "Port": 80, "Check": {"TTL": "60s"}}
        assert http_json("PUT", base + "/v1/agent/service/register", body)[0] == 200
        assert http("PUT", base + "/v1/agent/check/pass/service:web-1?note=up")[0] == 200
        assert http("PUT", base + "/v1/agent/service/maintenance/web-1?enable=true&reason=deploy")[0] == 200
    finally:
        agent.stop()
    agent.start().wait_leader()
    try:
        checks = http_json("GET", base + "/v1/agent/checks")[2]
        assert checks["service:web-1"]["Status"] == "passing" and checks["service:web-1"]["Output"] == "up"
        assert checks["_service_maintenance:web-1"]["Notes"] == "deploy"
        instances = http_json("GET", base + "/v1/health/service/web")[2]
        assert [i["Service"]["ID"] for i in instances] == ["web-1"]
    finally:
        agent.stop()
