"""The ECS modules' rendered containers, started as real cairn processes on loopback.

Terraform plans ecs-server (one server) and ecs-client (an app's agent registering a service
with a TCP check) offline; the test takes each container's entryPoint, command and environment
from the plan and runs exactly that (`/bin/sh -ec <script>`) with `cairn` on PATH. What a Fargate
task would supply comes from the test instead:

* the ECS task metadata endpoint v4 (ECS_CONTAINER_METADATA_URI_V4): a small server on
  127.0.0.1 that gives the server task 127.0.0.41 and the app task 127.0.0.42, so each agent
  picks its advertise address from it as it would on Fargate;
* the secret named in `secrets` (CAIRN_GOSSIP_KEY): a key from `cairn keygen`;
* the data directory, the listen addresses and the node name (CAIRN_DATA_DIR, CAIRN_BIND_ADDR,
  CAIRN_CLIENT_ADDR, CAIRN_NODE_NAME): a temporary directory, the task's address instead of
  0.0.0.0 / 127.0.0.1, and a name per "task", since both share this machine's network and host
  name (each Fargate task has its own).

The client joins the server through the rendered retry_join (the address the server's Cloud Map
name would resolve to), its service is answered over DNS and the catalog, the rendered health
check command succeeds, and SIGTERM makes it leave. The server's own ECS auto-join entry has no
credentials and its ECS endpoint is a closed loopback port, so it never leaves the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, free_ports, http, wait_until
from tests.deploy.terraform_helpers import MIRROR, OFFLINE_PROVIDER, copy_tree, tf

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed"),
]

SERVER_IP, CLIENT_IP = "127.0.0.41", "127.0.0.42"
GOSSIP_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:wiring-gossip-AbCdEf"

ROOT_CONFIG = """
module "server" {
  source                = "../modules/ecs-server"
  name                  = "wiring"
  image                 = "cairn:test"
  ecs_cluster_arn       = "arn:aws:ecs:eu-west-1:123456789012:cluster/wiring"
  vpc_id                = "vpc-0123456789abcdef0"
  subnet_ids            = ["subnet-0123456789abcdef0"]
  server_count          = 1
  gossip_key_secret_arn = "%(gossip)s"
}

module "client" {
  source                = "../modules/ecs-client"
  image                 = "cairn:test"
  retry_join            = ["%(server_ip)s"]
  gossip_key_secret_arn = module.server.gossip_key_secret_arn
  services = [{
    name   = "web"
    port   = %(app_port)d
    tags   = ["v1"]
    checks = [{ tcp = "%(client_ip)s:%(app_port)d", interval = "1s", timeout = "1s" }]
  }]
}

output "server_container" {
  value = jsondecode(module.server.container_definitions)[0]
}

output "client_container" {
  value = module.client.container_definition
}
"""


class Metadata(BaseHTTPRequestHandler):
    """ECS task metadata v4: /<task>/ is the container document, /<task>/task the task's."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        task, _, rest = self.path.strip("/").partition("/")
        ip = {"server": SERVER_IP, "client": CLIENT_IP}.get(task)
        container = {"Name": task, "Type": "NORMAL", "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [ip]}]}
        doc = {"TaskARN": f"arn:aws:ecs:eu-west-1:123456789012:task/wiring/{task}", "Containers": [container]}
        body = json.dumps(doc if rest == "task" else container).encode()
        self.send_response(200 if ip else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def metadata() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def rendered(tmp_path: Path, app_port: int) -> tuple[dict, dict]:
    assert MIRROR.is_dir(), f"the provider mirror {MIRROR} is missing"
    tree = copy_tree(tmp_path)
    root = tree / "wiring"
    root.mkdir()
    (root / "main.tf").write_text(
        ROOT_CONFIG % {"gossip": GOSSIP_ARN, "server_ip": SERVER_IP, "client_ip": CLIENT_IP, "app_port": app_port}
    )
    (root / "provider.tf").write_text(
        OFFLINE_PROVIDER.replace('provider "aws" {', 'provider "aws" {\n  region = "eu-west-1"')
    )
    tf(root, "init", "-backend=false", "-input=false")
    tf(root, "plan", "-refresh=false", "-input=false", "-lock=false", "-out=wiring.tfplan")
    plan = json.loads(tf(root, "show", "-json", "wiring.tfplan").stdout)
    outputs = plan["planned_values"]["outputs"]
    return outputs["server_container"]["value"], outputs["client_container"]["value"]


def cairn_on_path(tmp_path: Path) -> Path:
    """A `cairn` executable as the image has one: this checkout's agent."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "cairn"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{PROJECT_ROOT}" exec "{sys.executable}" -m appliance "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def start(container: dict, env: dict[str, str], log: Path) -> subprocess.Popen:
    argv = container["entryPoint"] + container["command"]
    assert argv[:2] == ["/bin/sh", "-ec"]
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True
        )


def dns_a(server: str, port: int, name: str) -> list[str]:
    from dnslib import QTYPE, DNSRecord

    reply = DNSRecord.parse(DNSRecord.question(name, "A").send(server, port, timeout=2))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def test_rendered_server_and_client_run_and_find_each_other(tmp_path: Path, metadata: str) -> None:
    app_port = free_ports(1, udp=False)[0]
    server_c, client_c = rendered(tmp_path, app_port)

    # what the modules promise about these containers
    assert server_c["essential"] and client_c["essential"]
    assert [s["name"] for s in server_c["secrets"]] == ["CAIRN_GOSSIP_KEY"] == [s["name"] for s in client_c["secrets"]]
    assert client_c["healthCheck"]["command"] == ["CMD", "cairn", "members"]

    bin_dir = cairn_on_path(tmp_path)
    key = subprocess.run([str(bin_dir / "cairn"), "keygen"], capture_output=True, text=True, check=True).stdout.strip()
    closed_port = free_ports(1, udp=False)[0]
    base = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_ENDPOINT_URL_ECS": f"http://127.0.0.1:{closed_port}",
        "CAIRN_GOSSIP_KEY": key,
    }

    def env_of(container: dict, task: str, ip: str) -> dict[str, str]:
        env = dict(base)
        env.update({e["name"]: e["value"] for e in container["environment"]})
        env.update(
            ECS_CONTAINER_METADATA_URI_V4=f"{metadata}/{task}",
            CAIRN_DATA_DIR=str(tmp_path / task),
            CAIRN_BIND_ADDR=ip,
            CAIRN_CLIENT_ADDR=ip,
            CAIRN_NODE_NAME=f"{task}-task",
        )
        return env

    app = socket.create_server((CLIENT_IP, app_port))  # the "application" the TCP check looks at
    server = start(server_c, env_of(server_c, "server", SERVER_IP), tmp_path / "server.log")
    client = None
    try:
        url = f"http://{SERVER_IP}:8500"

        def leader() -> str:
            try:
                status, _, body = http("GET", url + "/v1/status/leader", timeout=1)
                return json.loads(body) if status == 200 else ""
            except (OSError, ValueError):
                return ""

        assert wait_until(leader, timeout=30, interval=0.2, what="the server elects itself") == f"{SERVER_IP}:8300"
        client_env = env_of(client_c, "client", CLIENT_IP)
        client = start(client_c, client_env, tmp_path / "client.log")

        def catalog() -> list:
            status, _, body = http("GET", url + "/v1/health/service/web?passing", timeout=2)
            return json.loads(body) if status == 200 else []

        entries = wait_until(catalog, timeout=30, interval=0.3, what="web registered by the client and passing")
        assert entries[0]["Node"]["Address"] == CLIENT_IP  # advertised from the task metadata
        assert entries[0]["Service"]["Port"] == app_port and entries[0]["Service"]["Tags"] == ["v1"]
        assert wait_until(lambda: dns_a(CLIENT_IP, 8600, "web.service.consul"), timeout=10) == [CLIENT_IP]
        assert dns_a(SERVER_IP, 8600, "web.service.consul") == [CLIENT_IP]

        # the rendered health check, run where the container would run it
        check = client_c["healthCheck"]["command"][1:]
        out = subprocess.run(
            check,
            env={**client_env, "CONSUL_HTTP_ADDR": f"http://{CLIENT_IP}:8500"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0 and "127.0.0.41" in out.stdout and "127.0.0.42" in out.stdout, out

        # gossip is encrypted with the key from the "secret"
        assert "Gossip Encryption: true" in (tmp_path / "client.log").read_text()

        # ECS stops a task with SIGTERM: the agent leaves
        client.send_signal(signal.SIGTERM)
        assert client.wait(20) == 0

        def left() -> bool:
            status, _, body = http("GET", url + "/v1/agent/members", timeout=2)
            return any(m["Addr"] == CLIENT_IP and m["Status"] == 3 for m in json.loads(body))

        wait_until(left, timeout=15, interval=0.3, what="the client left")
        # the server tried its own ECS auto-join entry, which fails here without credentials
        assert 'Cannot discover address: address="provider=aws ecs_cluster=' in (tmp_path / "server.log").read_text()
    finally:
        app.close()
        for proc in (client, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
