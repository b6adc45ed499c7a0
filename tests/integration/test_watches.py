"""Watches against a real `cairn agent -dev`: `cairn watch` and the agent's `watches` block.

A handler is a small shell script that appends one line per call (`CONSUL_INDEX` and the JSON
it read on stdin) to a file, so a test counts the calls: the first answer fires once, and then
only real changes of the watched data do (not a write to another key, not an identical write,
not a blocking query that timed out). The HTTP handler is an aiohttp server of the test, on
loopback, run in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import AgentProcess, free_port, wait_until

QUIET_S = 1.5  # how long "no further call" is watched for


def recorder(tmp_path: Path, name: str = "calls") -> tuple[Path, Path]:
    """(script, log): the script appends `<CONSUL_INDEX> <stdin>` as one line to log."""
    log = tmp_path / f"{name}.log"
    script = tmp_path / f"{name}.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s %s\\n" "$CONSUL_INDEX" "$(cat)" >> {log}\n')
    script.chmod(0o755)
    return script, log


def calls(log: Path) -> list[tuple[int, Any]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        index, _, payload = line.partition(" ")
        out.append((int(index), json.loads(payload)))
    return out


def wait_calls(log: Path, count: int, timeout: float = 10.0) -> list[tuple[int, Any]]:
    wait_until(lambda: len(calls(log)) >= count, timeout, what=f"{count} handler calls in {log.name}")
    time.sleep(QUIET_S)
    got = calls(log)
    assert len(got) == count, got
    return got


def value(entry: dict[str, Any]) -> str:
    return base64.b64decode(entry["Value"]).decode()


def start_watch(agent: AgentProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "appliance", "watch", *args], env=agent.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def watch_procs() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------------------------------
# cairn watch


def test_watch_prints_the_current_value_and_exits(agent: AgentProcess) -> None:
    missing = agent.cli("watch", "-type", "key", "-key", "nothing/here")
    assert (missing.returncode, missing.stdout) == (0, "null\n")
    agent.put("/v1/kv/app/a", "1")
    agent.put("/v1/kv/app/b?flags=7", "<2>")
    listed = agent.cli("watch", "-type", "keyprefix", "-prefix", "app/")
    assert listed.returncode == 0, listed.stderr
    pairs = json.loads(listed.stdout)
    assert [(p["Key"], value(p), p["Flags"], p["Session"]) for p in pairs] == [
        ("app/a", "1", 0, ""), ("app/b", "<2>", 7, "")]
    assert listed.stdout.startswith('[\n    {\n        "Key": "app/a",')
    services = agent.cli("watch", "-type", "services")
    assert json.loads(services.stdout) == {"consul": []}


@pytest.mark.parametrize(("args", "text"), [
    (["-type", "bogus"], "Unsupported watch type: bogus\n"),
    (["-type", "key"], "Must specify a single key to watch\n"),
    (["-type", "checks", "-service", "a", "-state", "any"], "Cannot specify service and state\n"),
    (["-type", "service", "-service", "web", "-passingonly", "maybe"],
     'Failed to parse passingonly flag: strconv.ParseBool: parsing "maybe": invalid syntax\n'),
])
def test_watch_refusals(agent: AgentProcess, args: list[str], text: str) -> None:
    proc = agent.cli("watch", *args)
    assert (proc.returncode, proc.stderr) == (1, text)


def test_watch_without_type_prints_help(agent: AgentProcess) -> None:
    proc = agent.cli("watch")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Watch type must be specified\n\nUsage: cairn watch")


def test_watch_key_handler_runs_once_per_real_change(agent: AgentProcess, tmp_path: Path,
                                                     watch_procs: list[subprocess.Popen[str]]) -> None:
    script, log = recorder(tmp_path)
    watch_procs.append(start_watch(agent, "-type", "key", "-key", "cfg/db", str(script)))
    first = wait_calls(log, 1)
    assert first[0][1] is None  # the first answer fires even for a missing key
    agent.put("/v1/kv/cfg/db", "v1")
    got = wait_calls(log, 2)
    assert value(got[1][1]) == "v1" and got[1][1]["Session"] == ""
    assert got[1][0] == got[1][1]["ModifyIndex"]  # CONSUL_INDEX is the answer's index
    agent.put("/v1/kv/cfg/db", "v1")  # identical write
    agent.put("/v1/kv/cfg/other", "x")  # another key
    agent.put("/v1/agent/service/register", {"Name": "web", "Port": 80})
    assert len(calls(log)) == 2
    agent.put("/v1/kv/cfg/db", "v2")
    got = wait_calls(log, 3)
    assert value(got[2][1]) == "v2"
    http_status, _, _ = agent.get("/v1/kv/cfg/db")
    assert http_status == 200
    watch_procs[0].send_signal(signal.SIGTERM)
    assert watch_procs[0].wait(10) == 0


def test_watch_services_handler_runs_once_per_registration(agent: AgentProcess, tmp_path: Path,
                                                           watch_procs: list[subprocess.Popen[str]]) -> None:
    script, log = recorder(tmp_path)
    watch_procs.append(start_watch(agent, "-type", "services", str(script)))
    assert wait_calls(log, 1)[0][1] == {"consul": []}
    agent.put("/v1/agent/service/register", {"Name": "web", "Port": 80, "Tags": ["v1"]})
    assert wait_calls(log, 2)[1][1] == {"consul": [], "web": ["v1"]}
    agent.put("/v1/kv/unrelated", "x")
    agent.put("/v1/agent/service/register", {"Name": "web", "Port": 80, "Tags": ["v1"]})  # the same again
    assert len(calls(log)) == 2
    agent.put("/v1/agent/service/deregister/web")
    assert wait_calls(log, 3)[2][1] == {"consul": []}


def test_watch_service_health_and_event_payloads(agent: AgentProcess, tmp_path: Path,
                                                 watch_procs: list[subprocess.Popen[str]]) -> None:
    svc_script, svc_log = recorder(tmp_path, "service")
    ev_script, ev_log = recorder(tmp_path, "event")
    watch_procs.append(start_watch(agent, "-type", "service", "-service", "api", "-passingonly=true",
                                   str(svc_script)))
    watch_procs.append(start_watch(agent, "-type", "event", "-name", "deploy", str(ev_script)))
    assert wait_calls(svc_log, 1)[0][1] == []
    assert wait_calls(ev_log, 1)[0][1] == []
    agent.put("/v1/agent/service/register", {"Name": "api", "ID": "api1", "Port": 9})
    entries = wait_calls(svc_log, 2)[1][1]
    assert [(e["Node"]["Node"], e["Service"]["ID"]) for e in entries] == [(agent.node, "api1")]
    assert {"Node", "Service", "Checks"} <= set(entries[0])
    for n in range(2):
        agent.put("/v1/event/fire/deploy", f"p{n}")
        got = wait_calls(ev_log, 2 + n)
        assert [base64.b64decode(e["Payload"]).decode() for e in got[-1][1]] == [f"p{n}"]  # only the new one
    agent.put("/v1/event/fire/other", "x")
    time.sleep(QUIET_S)
    assert len(calls(ev_log)) == 3


def test_watch_handler_failure_ends_the_watch(agent: AgentProcess) -> None:
    proc = agent.cli("watch", "-type", "nodes", "cat > /dev/null; exit 3")
    assert proc.returncode == 1
    assert proc.stderr == "Error executing handler: exit status 3\n"


def test_watch_without_shell(agent: AgentProcess, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = agent.cli("watch", "-type", "key", "-key", "k", "-shell=false", sys.executable, "-c",
                     f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read()); sys.exit(5)")
    assert proc.returncode == 1 and out.read_text() == "null\n"


def test_watch_agent_unreachable() -> None:
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "appliance", "watch", "-http-addr", f"127.0.0.1:{port}",
                           "-type", "nodes"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error querying Consul agent: Get \"http://127.0.0.1:")


# ------------------------------------------------------------------------------------------
# the agent's watches block


class HandlerServer:
    """An aiohttp server on loopback that records each request (method, headers, JSON body)."""

    def __init__(self) -> None:
        self.port = free_port(udp=False)
        self.requests: list[tuple[str, Any, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.method, request.headers.copy(), json.loads(body)))
        return web.Response(text="ok")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/hook", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def hook() -> Iterator[HandlerServer]:
    server = HandlerServer()
    yield server
    server.close()


def write_watches(path: Path, watches: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({"watches": watches}))


def test_agent_watches_script_and_http_reloaded_on_sighup(
        agent_factory: Callable[..., AgentProcess], tmp_path: Path, hook: HandlerServer) -> None:
    script, log = recorder(tmp_path)
    config = tmp_path / "watches.json"
    hook_url = f"http://127.0.0.1:{hook.port}/hook"
    write_watches(config, [
        {"type": "key", "key": "first", "args": [str(script)]},
        {"type": "keyprefix", "prefix": "web/", "handler_type": "http",
         "http_handler_config": {"path": hook_url, "method": "PUT", "header": {"x-test": ["a", "b"]},
                                 "timeout": "5s"}},
    ])
    agent = agent_factory("-config-file", str(config), node="watcher")
    assert wait_calls(log, 1)[0][1] is None
    wait_until(lambda: len(hook.requests) == 1, what="the first HTTP handler call")
    method, headers, body = hook.requests[0]
    assert (method, body, headers["Content-Type"]) == ("PUT", None, "application/json")
    assert headers.getall("X-Test") == ["a", "b"]
    agent.put("/v1/kv/first", "one")
    assert value(wait_calls(log, 2)[1][1]) == "one"
    agent.put("/v1/kv/web/a", "1")
    wait_until(lambda: len(hook.requests) == 2, what="the HTTP handler on a change")
    _, headers, body = hook.requests[1]
    assert [p["Key"] for p in body] == ["web/a"] and headers["X-Consul-Index"] == str(body[0]["ModifyIndex"])
    time.sleep(QUIET_S)
    assert len(hook.requests) == 2

    # reload: the key watch moves to "second"; the HTTP watch is gone
    write_watches(config, [{"type": "key", "key": "second", "args": [str(script)]}])
    agent.signal(signal.SIGHUP)
    got = wait_calls(log, 3)
    assert got[2][1] is None  # the new plan's first answer (the key does not exist)
    agent.put("/v1/kv/first", "two")
    agent.put("/v1/kv/web/b", "2")
    agent.put("/v1/kv/second", "three")
    got = wait_calls(log, 4)
    assert value(got[3][1]) == "three"
    assert len(hook.requests) == 2

    # a bad block is refused on reload and the running plans keep going
    write_watches(config, [{"type": "bogus", "args": ["true"]}])
    agent.signal(signal.SIGHUP)
    wait_until(lambda: "Unsupported watch type: bogus" in agent.log_tail(200), what="the refused reload")
    agent.put("/v1/kv/second", "four")
    assert value(wait_calls(log, 5)[4][1]) == "four"


def test_agent_refuses_a_bad_watches_block(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    write_watches(config, [{"type": "key", "key": "k"}])
    with pytest.raises(RuntimeError) as err:
        AgentProcess(tmp_path, "-config-file", str(config), node="bad-watch")
    assert "Error starting agent: Must define a watch handler" in str(err.value)
