"""`cairn connect proxy` as a process against a real agent: the ad-hoc proxy that registers
itself while it runs, its banner and clean shutdown, a sidecar's metrics where its registration says,
and Consul's refusals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from conftest import free_ports, wait_until

pytestmark = pytest.mark.timeout(60)


def test_adhoc_proxy_registers_while_it_runs(agent, tmp_path) -> None:
    listen, app, upstream = free_ports(3, udp=False)
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "connect", "proxy", "-service", "api", "-listen",
             f"127.0.0.1:{listen}", "-service-addr", f"127.0.0.1:{app}", "-register", "-upstream", f"db:{upstream}"],
            env=agent.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        svc = wait_until(lambda: agent.get_json("/v1/agent/service/api-proxy")[2]
                         if agent.get_json("/v1/agent/service/api-proxy")[0] == 200 else None, 20,
                         what="api-proxy registered")
        assert svc["Kind"] == "connect-proxy" and svc["Port"] == listen
        assert svc["Proxy"]["DestinationServiceName"] == "api" and svc["Proxy"]["LocalServicePort"] == app
        wait_until(lambda: agent.get_json("/v1/catalog/connect/api")[2], 10, what="api-proxy in the catalog")
        text = wait_until(lambda: "Started listener: public" in log.read_text() and log.read_text(), 20,
                          what="public listener started")
        assert "Configuration mode: Flags" in text and "Service: api" in text
        assert f"Public listener: 127.0.0.1:{listen} => 127.0.0.1:{app}" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert "==> Cairn Connect proxy shutdown" in log.read_text()
        assert agent.get_json("/v1/agent/service/api-proxy")[0] == 404
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


REFUSALS = [
    ((), "-service or -proxy-id must be specified so that proxy can configure itself."),
    (("-service", "api", "-register"), "-register may only be specified with -service and -listen"),
    (("-service", "api", "-listen", ":21000"),
     "-service-addr must be specified with -listen so the proxy knows the backend service address."),
    (("-sidecar-for", "nothing"), "No sidecar proxy registered for nothing"),
    (("-service", "api", "-upstream", "db"), "Upstream value should be name:addr:port or name:port, got 'db'"),
]


def test_refusals(agent) -> None:
    for args, text in REFUSALS:
        done = agent.cli("connect", "proxy", *args)
        assert done.returncode == 1 and done.stderr.strip() == text, (args, done.stderr)


def test_a_sidecar_serves_metrics_where_its_registration_says(agent, tmp_path) -> None:
    public, app, metrics = free_ports(3, udp=False)
    body = {"Kind": "connect-proxy", "ID": "metered-proxy", "Name": "metered-proxy", "Port": public,
            "Address": "127.0.0.1", "Proxy": {"DestinationServiceName": "metered", "LocalServicePort": app,
                                              "Config": {"envoy_prometheus_bind_addr": f"127.0.0.1:{metrics}"}}}
    assert agent.put("/v1/agent/service/register", body)[0] == 200
    with open(tmp_path / "proxy.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "connect", "proxy", "-proxy-id", "metered-proxy"],
                                env=agent.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def scrape() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2) as resp:
                    return resp.read().decode()
            except OSError:
                return None

        wait_until(scrape, 20, what="the sidecar's metrics on envoy_prometheus_bind_addr")
        wait_until(lambda: "Started listener: public" in (tmp_path / "proxy.log").read_text(), 20,
                   what="the sidecar's public listener")
        with socket.create_connection(("127.0.0.1", public), timeout=5) as plain:  # no TLS: refused, counted
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
            plain.recv(100)
        wait_until(lambda: 'consul_proxy_inbound_handshake_failures{dst="metered"} 1' in (scrape() or ""),
                   10, what="the plain TCP client counted on the sidecar's metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        agent.put("/v1/agent/service/deregister/metered-proxy")
