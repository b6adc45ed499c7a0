"""A client agent does not load what only servers run (docs/internals/performance.md, "Client footprint").

The agent is started by the real entry (`cairn agent`, appliance/cli/main.py) in a subprocess on
loopback ports; once its HTTP API answers (every subsystem has started), the process writes its
`sys.modules` to a file and stops itself. A client agent must not have loaded the server's Raft
host, RPC listener and replica feed, the leader's reconciliation and session timers, ACL
leadership and replication, the Connect CA, auto_encrypt, JWT login, snapshots or cryptography.
The same run on a server must show the server-side ones, so the names checked are real modules
that a change of layout cannot turn into a check that always passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.http import routes
from tests.harness.net import free_ports

pytestmark = pytest.mark.timeout(90)

SERVER_ONLY = (
    "appliance.server",
    "appliance.raft.driver",
    "appliance.raft.core",
    "appliance.raft.storage",
    "appliance.raft.transport",
    "appliance.rpc.listener",
    "appliance.rpc.feed",
    "appliance.reconcile",
    "appliance.sessions.leader",
    "appliance.acl_leader",
    "appliance.acl_replication",
    "appliance.rpc.autoencrypt",
    "appliance.connect.ca",
    "appliance.acl.jwt",
    "appliance.http.handlers.connect_ca",
    "appliance.http.handlers.acl_auth",
    "appliance.http.handlers.snapshot",
    "cryptography",
)
# Loaded by a server (with ACLs on, so the ACL leader starts); a -bootstrap-expect 1 server has its
# RPC port, so the transport and the feed are there too.
ON_A_SERVER = ("appliance.server", "appliance.raft.driver", "appliance.raft.storage", "appliance.raft.transport",
               "appliance.rpc.listener", "appliance.rpc.feed", "appliance.reconcile", "appliance.sessions.leader",
               "appliance.acl_leader")

# Runs `cairn agent ...` in this process; when the HTTP API answers, writes sys.modules and stops.
ENTRY = """
import asyncio, json, sys
from appliance import agent as composition
from appliance.cli.main import main

out, port, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
real_run = composition.Agent.run

async def run_then_report(self):
    task, up = asyncio.ensure_future(real_run(self)), False
    while not task.done() and not up:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
            writer.close()
            up = True
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.1)
    with open(out, "w") as fh:
        json.dump({"up": up, "modules": sorted(sys.modules)}, fh)
    self.request_shutdown("interrupt")
    await task

composition.Agent.run = run_then_report
main(["agent", *argv])
"""


def loaded_modules(tmp_path: Path, *args: str) -> set[str]:
    http, dns, server, lan, wan = free_ports(5)
    out = tmp_path / "modules.json"
    argv = ["-node", "n1", "-data-dir", str(tmp_path / "data"), "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-http-port", str(http), "-dns-port", str(dns), "-server-port", str(server),
            "-serf-lan-port", str(lan), "-serf-wan-port", str(wan), *args]
    done = subprocess.run([sys.executable, "-c", ENTRY, str(out), str(http), *argv], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    report = json.loads(out.read_text()) if out.exists() else {"up": False}
    assert report["up"], f"the agent did not come up (exit {done.returncode}):\n{done.stdout[-3000:]}"
    return set(report["modules"])


def found(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if n in modules or any(m.startswith(n + ".") for m in modules)]


def test_client_agent_does_not_load_server_modules(tmp_path):
    modules = loaded_modules(tmp_path)
    assert "appliance.client.replica" in modules  # it is a client agent, fully started
    assert "appliance.http.app" in modules and "appliance.dns.server" in modules
    assert found(modules, SERVER_ONLY) == []


def test_server_loads_them(tmp_path):
    modules = loaded_modules(tmp_path, "-server", "-bootstrap-expect", "1", "-hcl",
                            'acl { enabled = true default_policy = "allow" }')
    assert found(modules, ON_A_SERVER) == list(ON_A_SERVER)


def test_deferred_handlers_resolve():
    """Every route handler loaded on first use names a coroutine function that exists."""
    import asyncio
    import importlib

    assert len(routes.DEFERRED) >= 30
    for module, name in routes.DEFERRED:
        handler = getattr(importlib.import_module(f"appliance.http.handlers.{module}"), name)
        assert asyncio.iscoroutinefunction(handler), (module, name)
