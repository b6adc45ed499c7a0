"""`cairn exec` against real agents: run where `disable_remote_exec = false`, ignored elsewhere.

An agent started with `disable_remote_exec = false` runs the job the `_rexec` user event names
(appliance/rexec.py): the CLI prints its output lines as `    <node>: <line>`, `==> <node>:
finished with exit code N` and `N / M node(s) completed / acknowledged`, and exits 2 when a
command failed. A default agent logs `ignoring remote exec event, disabled.` and the CLI hears
from nobody. Either way the job's keys under `_rexec/` and its session are gone afterwards.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(90)


def no_leftovers(agent) -> None:
    code, _, _ = agent.get("/v1/kv/_rexec/?recurse")
    assert code == 404  # every key of the job deleted
    code, _, body = agent.get("/v1/session/list")
    assert code == 200 and json.loads(body) == []


def test_exec_runs_on_an_agent_that_allows_it(agent_factory, tmp_path):
    agent = agent_factory("-hcl", "disable_remote_exec = false", node="exec-node")
    proc = agent.cli("exec", "-wait", "1s", "echo hello; echo world >&2; exit 3")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 2, (proc.stdout, proc.stderr, agent.log_tail())
    assert "    exec-node: hello" in lines and "    exec-node: world" in lines
    assert "==> exec-node: finished with exit code 3" in lines
    assert lines[-1] == "1 / 1 node(s) completed / acknowledged"
    no_leftovers(agent)

    marker = tmp_path / "ran"
    proc = agent.cli("exec", "-wait", "1s", "-verbose", "-node", "^exec-", f"sleep 2.5; touch {marker}; echo done")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "    Node exec-node: acknowledged" in proc.stdout  # heartbeats kept it waiting past -wait
    assert "    exec-node: done" in proc.stdout and marker.exists()
    assert "1 / 1 node(s) completed / acknowledged" in proc.stdout

    proc = agent.cli("exec", "-shell=false", "-wait", "1s", "printf", "%s-%s\\n", "a b", "c")
    assert proc.returncode == 0 and "    exec-node: a b-c" in proc.stdout.splitlines(), proc.stdout
    proc = agent.cli("exec", "-wait", "1s", "-", input="#!/bin/sh\necho from-script\n")
    assert proc.returncode == 0 and "    exec-node: from-script" in proc.stdout, proc.stdout

    proc = agent.cli("exec", "-wait", "1s", "-node", "^nobody$", "true")  # the filter matches no agent
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "0 / 0 node(s) completed / acknowledged"
    no_leftovers(agent)


def test_exec_is_ignored_by_default(agent_factory):
    agent = agent_factory(node="plain-node")
    proc = agent.cli("exec", "-wait", "1s", "echo should-not-run")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.splitlines() == ["0 / 0 node(s) completed / acknowledged"]
    wait_until(lambda: "ignoring remote exec event, disabled." in agent.log_tail(200), timeout=5,
               what="the agent logging the refusal")
    no_leftovers(agent)


def test_exec_usage_errors(agent_factory):
    agent = agent_factory(node="usage-node")
    proc = agent.cli("exec")
    assert proc.returncode == 1 and "Must specify a command to execute" in proc.stderr
    proc = agent.cli("exec", "-tag", "x", "true")
    assert proc.returncode == 1 and "Cannot provide tag filter without service filter." in proc.stderr


def test_exec_across_a_cluster_runs_only_where_enabled(tmp_path):
    """A server (remote exec off, the default) and a client agent (on), joined over the LAN pool:
    the event reaches both, only the client runs the job, through its server for every write."""
    from tests.harness import Agent

    server, client = Agent(tmp_path, "rx-server"), Agent(tmp_path, "rx-client")
    try:
        server.start("-server", "-bootstrap")
        server.wait_http()
        client.start("-retry-join", f"127.0.0.1:{server.serf_lan_port}", "-retry-interval", "1s",
                     "-hcl", "disable_remote_exec = false")
        client.wait_http()
        wait_until(lambda: len(server.read_json("/v1/agent/members")) == 2, timeout=30, what="both agents joined")
        wait_until(lambda: "rx-client" in [n["Node"] for n in server.read_json("/v1/catalog/nodes")], timeout=30,
                   what="the client in the catalog")
        proc = server.cli("exec", "-wait", "1500ms", "hostname >/dev/null && echo ran-here")
        assert proc.returncode == 0, (proc.stdout, proc.stderr, client.log())
        lines = proc.stdout.splitlines()
        assert "    rx-client: ran-here" in lines and "==> rx-client: finished with exit code 0" in lines
        assert not any("rx-server:" in line for line in lines)
        assert lines[-1] == "1 / 1 node(s) completed / acknowledged"
        wait_until(lambda: "ignoring remote exec event, disabled." in server.log(), timeout=5,
                   what="the server refusing the job")
        proc = client.cli("exec", "-wait", "1s", "-node", "^rx-server$", "echo no")  # only the server: nobody runs it
        assert proc.returncode == 0 and proc.stdout.splitlines() == ["0 / 0 node(s) completed / acknowledged"]
    finally:
        client.stop()
        server.stop()
