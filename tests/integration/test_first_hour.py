"""What a newcomer meets in the first hour, against real agents and the real CLI: typos in commands
and flags, `cairn validate` on a services-only directory and with several unknown keys, error texts
in Consul's (Go's) words rather than Python's, and the 429 answer's exact body."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import PROJECT_ROOT, AgentProcess, wait_until


def cairn(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          cwd=cwd or PROJECT_ROOT, timeout=60, check=False)


def test_command_and_flag_typos() -> None:
    res = cairn("membrs")
    assert res.returncode == 1
    assert res.stderr.startswith("Unknown command: membrs\n\nDid you mean this?\n\tmembers\n")
    assert "Available commands are" not in res.stderr
    res = cairn("xyzzy")  # nothing close: the whole list, as before
    assert res.returncode == 1 and "Available commands are" in res.stderr
    res = cairn("agent", "-dve")
    assert res.returncode == 1
    assert res.stderr == "==> flag provided but not defined: -dve\nRun 'cairn agent -h' for usage.\n"


def test_validate_every_unknown_key_and_a_services_only_directory(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hcl"
    bad.write_text('datacenter = "dc1"\nfoo = 1\nbar = 2\ndata_dir = "/tmp/x"\n')
    res = cairn("validate", str(bad))
    assert res.returncode == 1
    assert res.stderr == (f"Config validation failed: {bad}: 2 errors occurred:\n\t* invalid config key foo\n"
                          "\t* invalid config key bar\n\n")
    one = tmp_path / "one.hcl"
    one.write_text('foo = 1\ndata_dir = "/tmp/x"\n')
    assert cairn("validate", str(one)).stderr == f"Config validation failed: {one}: invalid config key foo\n"

    conf = tmp_path / "cairn.d"
    conf.mkdir()
    (conf / "web.json").write_text('{"service": {"id": "web-1", "name": "web", "port": 8080, "check": '
                                   '{"http": "http://localhost:8080/", "interval": "5s", "timeout": "1s"}}}')
    res = cairn("validate", str(conf))  # a whole agent configuration, as Consul's validate
    assert (res.returncode, res.stderr) == (1, "Config validation failed: data_dir cannot be empty\n")
    res = cairn("validate", "-dev", str(conf))
    assert (res.returncode, res.stdout) == (0, "Configuration is valid!\n")


def test_consul_words_for_errors(agent: AgentProcess, tmp_path: Path) -> None:
    res = agent.cli("maint", "-enable", "-service", "nosuch")
    assert res.returncode == 1
    assert res.stderr.startswith("Error enabling service maintenance: Unexpected response code: 404 (Unknown "
                                 'service ID "nosuch"')
    res = agent.cli("maint", "-disable")
    assert res.returncode == 0

    for path, text in (("/v1/agent/service/register", b"Missing service name"),
                       ("/v1/agent/check/register", b"Missing check name")):
        status, _, body = agent.put(path, "null")  # Go decodes null into the zero struct
        assert (status, body.strip()) == (400, text)

    status, _, body = agent.put(f"/v1/agent/join/127.0.0.1:{agent.http_port}")  # an HTTP port, not gossip
    assert status == 500 and b"received invalid msgType (72)" in body

    agent.put("/v1/agent/check/register", {"Name": "f", "HTTP": "file:///etc/passwd", "Interval": "1s"})
    wait_until(lambda: agent.get_json("/v1/agent/checks")[2]["f"]["Output"], what="the check ran")
    assert agent.get_json("/v1/agent/checks")[2]["f"]["Output"] == \
        'Get "file:///etc/passwd": unsupported protocol scheme "file"'

    # a second agent on the first one's gossip port: Go's bind error, not Python's
    clash = subprocess.run(
        [sys.executable, "-m", "appliance", "agent", "-dev", "-node", "clash", "-http-port", "0",
         "-dns-port", "-1", "-serf-lan-port", str(agent.serf_lan_port)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env=agent.env)
    assert clash.returncode == 1
    assert (f"Error starting agent: listen tcp 127.0.0.1:{agent.serf_lan_port}: bind: address already in use"
            in clash.stdout + clash.stderr)


def test_429_body_is_exactly_its_length(agent_factory) -> None:  # type: ignore[no-untyped-def]
    agent = agent_factory("-hcl", "limits { http_max_conns_per_client = 1 }")
    held = socket.create_connection(("127.0.0.1", agent.http_port))
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", agent.http_port))
        extra.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
        extra.settimeout(5)
        reply = b""
        try:
            while chunk := extra.recv(4096):
                reply += chunk
        except ConnectionResetError:  # closed with our request unread: what came before it counts
            pass
        extra.close()
    finally:
        held.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 Too Many Requests") and b"Content-Length: 19" in head
    assert body == b"Too Many Requests\r\n"
