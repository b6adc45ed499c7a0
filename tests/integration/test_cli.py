"""The ``cairn`` verbs as real processes against a real ``cairn agent -dev``.

Each test runs ``python -m appliance <verb> ...`` exactly as a user would, with the agent's
address in the environment (``CAIRN_HTTP_ADDR``), and checks the texts and exit codes of
reference/consul-api.md §5 (Consul's CLI outputs).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CLI_TIMEOUT_S = 30.0


def cairn(agent: Any, *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None,
          text: bool = True) -> subprocess.CompletedProcess[Any]:
    """Run ``cairn <args>`` against ``agent`` and return the finished process."""
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        env=env if env is not None else agent.env,
        input=input,
        capture_output=True,
        text=text,
        timeout=CLI_TIMEOUT_S,
    )
    stderr = proc.stderr if text else proc.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr
    return proc


def ok(agent: Any, *args: str, **kw: Any) -> str:
    """Run a verb that must succeed; return its stdout."""
    proc = cairn(agent, *args, **kw)
    assert proc.returncode == 0, f"cairn {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def poll(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what or predicate}")
        time.sleep(0.1)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_HTTP_", "CONSUL_HTTP_"))}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# --------------------------------------------------------------------------------------------
# verbs that need no agent


def test_version_and_keygen_without_agent() -> None:
    env = base_env()
    version = subprocess.run([sys.executable, "-m", "appliance", "version"], env=env, capture_output=True,
                             text=True, timeout=CLI_TIMEOUT_S)
    assert version.returncode == 0
    lines = version.stdout.splitlines()
    assert lines[0].startswith("Cairn v")
    assert lines[-1] == "Compatible with the Consul HTTP API v1"
    keygen = subprocess.run([sys.executable, "-m", "appliance", "keygen"], env=env, capture_output=True,
                            text=True, timeout=CLI_TIMEOUT_S)
    assert keygen.returncode == 0
    assert len(base64.b64decode(keygen.stdout.strip())) == 32


def test_unreachable_agent_is_one_line_exit_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = base_env()
    env["CONSUL_HTTP_ADDR"] = f"127.0.0.1:{port}"
    for argv in (["members"], ["kv", "get", "x"], ["catalog", "services"], ["info"]):
        proc = subprocess.run([sys.executable, "-m", "appliance", *argv], env=env, capture_output=True,
                              text=True, timeout=CLI_TIMEOUT_S)
        assert proc.returncode == 1, argv
        assert proc.stderr.startswith("Error connecting to Consul agent: "), proc.stderr
        assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_usage_and_unknown_verb() -> None:
    env = base_env()
    helped = subprocess.run([sys.executable, "-m", "appliance", "--help"], env=env, capture_output=True,
                            text=True, timeout=CLI_TIMEOUT_S)
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: cairn")
    bad = subprocess.run([sys.executable, "-m", "appliance", "nope"], env=env, capture_output=True,
                         text=True, timeout=CLI_TIMEOUT_S)
    assert bad.returncode == 1
    assert "Usage: cairn" in bad.stderr


# --------------------------------------------------------------------------------------------
# members (§5.1)


def test_members(agent: Any) -> None:
    lines = ok(agent, "members").splitlines()
    assert lines[0].split() == ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
    assert len(lines) == 2
    row = lines[1].split()
    assert row[0] == "test-node"
    assert row[2:4] == ["alive", "server"]
    assert row[-2:] == ["default", "<all>"]
    assert all(line == line.rstrip() for line in lines)

    # -status is a regexp over the status word; nothing left -> exit 2, no output
    assert len(ok(agent, "members", "-status=ali").splitlines()) == 2
    none = cairn(agent, "members", "-status", "^(left|failed)$")
    assert none.returncode == 2
    assert none.stdout == ""

    detailed = ok(agent, "members", "-detailed").splitlines()
    assert detailed[0].split() == ["Node", "Address", "Status", "Tags"]
    assert "role=consul" in detailed[1]


def test_members_with_flag_address_and_consul_env(agent: Any) -> None:
    env = base_env()
    assert "test-node" in ok(agent, "members", f"-http-addr={agent.http_addr}", env=env)
    assert "test-node" in ok(agent, "members", "-http-addr", f"http://{agent.http_addr}", env=env)
    env["CONSUL_HTTP_ADDR"] = agent.http_addr
    assert "test-node" in ok(agent, "members", env=env)


# --------------------------------------------------------------------------------------------
# catalog (§5.3)


def test_catalog_datacenters_nodes_services(agent: Any) -> None:
    assert ok(agent, "catalog", "datacenters").split() == ["dc1"]

    nodes = ok(agent, "catalog", "nodes").splitlines()
    assert nodes[0].split() == ["Node", "ID", "Address", "DC"]
    row = nodes[1].split()
    assert row[0] == "test-node" and row[-1] == "dc1"
    assert len(row[1]) == 8 and all(c in "0123456789abcdef" for c in row[1])

    detailed = ok(agent, "catalog", "nodes", "-detailed").splitlines()
    assert detailed[0].split() == ["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]

    assert "consul" in ok(agent, "catalog", "services").split()

    missing = cairn(agent, "catalog", "nodes", "-service=no-such-service")
    assert missing.returncode == 0
    assert missing.stderr.strip() == "No nodes match the given query - try expanding your search."


# --------------------------------------------------------------------------------------------
# services register / deregister (§5.3)


def _catalog_services(agent: Any, *extra: str) -> str:
    return ok(agent, "catalog", "services", *extra)


def test_services_register_from_flags_and_deregister(agent: Any) -> None:
    out = ok(agent, "services", "register", "-name=web", "-id=web-1", "-port=8080", "-tag=v1", "-tag=blue",
             "-meta", "env=prod", "-address=127.0.0.1")
    assert out == "Registered service: web\n"
    poll(lambda: "web" in _catalog_services(agent).split(), what="web in the catalog")

    tagged = {line.split()[0]: line.split()[1:] for line in _catalog_services(agent, "-tags").splitlines()}
    assert tagged["web"] == ["blue,v1"]

    nodes = poll(lambda: ok(agent, "catalog", "nodes", "-service=web"), what="nodes of web")
    assert nodes.splitlines()[1].split()[0] == "test-node"

    assert ok(agent, "catalog", "services", "-node=test-node").split().count("web") == 1

    assert ok(agent, "services", "deregister", "-id=web-1") == "Deregistered service: web-1\n"
    poll(lambda: "web" not in _catalog_services(agent).split(), what="web gone from the catalog")


def test_services_register_from_json_and_hcl_files(agent: Any, tmp_path: Path) -> None:
    (tmp_path / "api.json").write_text(json.dumps(
        {"service": {"name": "api", "id": "api-1", "port": 9000, "tags": ["json"], "meta": {"team": "a"}}}
    ))  # fmt: skip
    (tmp_path / "db.hcl").write_text('service {\n  name = "db"\n  port = 5432\n  tags = ["hcl"]\n}\n')
    out = ok(agent, "services", "register", str(tmp_path / "api.json"), str(tmp_path / "db.hcl"))
    assert out.splitlines() == ["Registered service: api", "Registered service: db"]

    def both() -> bool:
        names = _catalog_services(agent).split()
        return "api" in names and "db" in names

    poll(both, what="api and db in the catalog")
    tagged = {line.split()[0]: line.split()[1:] for line in _catalog_services(agent, "-tags").splitlines()}
    assert tagged["api"] == ["json"] and tagged["db"] == ["hcl"]

    out = ok(agent, "services", "deregister", str(tmp_path / "api.json"), str(tmp_path / "db.hcl"))
    assert out.splitlines() == ["Deregistered service: api-1", "Deregistered service: db"]


def test_services_deregister_unknown_id_is_an_http_error(agent: Any) -> None:
    proc = cairn(agent, "services", "deregister", "-id=nope")
    assert proc.returncode == 1
    assert "Unexpected response code: 404" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# --------------------------------------------------------------------------------------------
# kv (§5.3)


def test_kv_put_get_delete(agent: Any, tmp_path: Path) -> None:
    assert ok(agent, "kv", "put", "app/config/conns", "5") == "Success! Data written to: app/config/conns\n"
    assert ok(agent, "kv", "get", "app/config/conns") == "5\n"

    # value from a file, from stdin, and base64 both ways
    (tmp_path / "v.txt").write_text("from a file")
    ok(agent, "kv", "put", "app/file", f"@{tmp_path / 'v.txt'}")
    assert ok(agent, "kv", "get", "app/file") == "from a file\n"
    ok(agent, "kv", "put", "app/stdin", "-", input="piped")
    assert ok(agent, "kv", "get", "app/stdin") == "piped\n"
    ok(agent, "kv", "put", "-base64", "app/b64", base64.b64encode(b"decoded").decode())
    assert ok(agent, "kv", "get", "app/b64") == "decoded\n"
    assert ok(agent, "kv", "get", "-base64", "app/b64") == base64.b64encode(b"decoded").decode() + "\n"
    ok(agent, "kv", "put", "app/neg", "-1")  # a value that looks like a flag after the key
    assert ok(agent, "kv", "get", "app/neg") == "-1\n"

    # -flags and -detailed
    ok(agent, "kv", "put", "-flags=42", "app/flagged", "x")
    detail = dict(line.split(None, 1) if " " in line else (line, "") for line in
                  ok(agent, "kv", "get", "-detailed", "app/flagged").splitlines())
    assert detail["Flags"] == "42"
    assert detail["Key"] == "app/flagged"
    assert detail["Session"] == "-"
    assert detail["Value"] == "x"
    modify_index = int(detail["ModifyIndex"])

    # check-and-set
    stale = cairn(agent, "kv", "put", "-cas", f"-modify-index={modify_index + 1000}", "app/flagged", "y")
    assert stale.returncode == 1
    assert stale.stderr == "Error! Did not write to app/flagged: CAS failed\n"
    ok(agent, "kv", "put", "-cas", f"-modify-index={modify_index}", "app/flagged", "y")
    assert ok(agent, "kv", "get", "app/flagged") == "y\n"
    create_only = cairn(agent, "kv", "put", "-cas", "app/flagged", "z")
    assert create_only.returncode == 1

    # listing
    recurse = ok(agent, "kv", "get", "-recurse", "app/").splitlines()
    assert "app/config/conns:5" in recurse
    assert recurse == sorted(recurse)
    assert ok(agent, "kv", "get", "-keys", "app/").splitlines() == [
        "app/b64", "app/config/", "app/file", "app/flagged", "app/neg", "app/stdin",
    ]  # fmt: skip

    # missing key
    missing = cairn(agent, "kv", "get", "app/none")
    assert missing.returncode == 1
    assert missing.stderr == "Error! No key exists at: app/none\n"

    # delete
    assert ok(agent, "kv", "delete", "app/file") == "Success! Deleted key: app/file\n"
    assert cairn(agent, "kv", "get", "app/file").returncode == 1
    assert ok(agent, "kv", "delete", "-recurse", "app/") == "Success! Deleted keys with prefix: app/\n"
    assert ok(agent, "kv", "get", "-recurse", "app/") == ""


def test_kv_binary_value_round_trip(agent: Any) -> None:
    raw = bytes(range(256))
    ok(agent, "kv", "put", "-base64", "bin", base64.b64encode(raw).decode())
    proc = cairn(agent, "kv", "get", "bin", text=False)
    assert proc.returncode == 0
    assert proc.stdout == raw + b"\n"


def test_kv_export_import(agent: Any, tmp_path: Path) -> None:
    ok(agent, "kv", "put", "exp/a", "1")
    ok(agent, "kv", "put", "-flags=7", "exp/b/c", "two")
    ok(agent, "kv", "put", "other", "x")

    exported = ok(agent, "kv", "export", "exp/")
    assert exported.startswith("[\n\t{\n\t\t\"key\": ")
    data = json.loads(exported)
    assert data == [
        {"key": "exp/a", "flags": 0, "value": base64.b64encode(b"1").decode()},
        {"key": "exp/b/c", "flags": 7, "value": base64.b64encode(b"two").decode()},
    ]

    ok(agent, "kv", "delete", "-recurse", "exp/")
    (tmp_path / "dump.json").write_text(exported)
    assert ok(agent, "kv", "import", f"@{tmp_path / 'dump.json'}").splitlines() == [
        "Imported: exp/a", "Imported: exp/b/c",
    ]  # fmt: skip
    assert ok(agent, "kv", "get", "exp/b/c") == "two\n"
    assert ok(agent, "kv", "export", "exp/") == exported

    ok(agent, "kv", "import", "-prefix=copy/", "-", input=exported)
    assert ok(agent, "kv", "get", "copy/exp/a") == "1\n"
    assert json.loads(ok(agent, "kv", "export", "nothing-here/")) == []


# --------------------------------------------------------------------------------------------
# maint (§5.3, §4.1 maintenance checks)


def test_maint_node_and_service(agent: Any) -> None:
    assert ok(agent, "maint") == ""

    assert ok(agent, "maint", "-enable", "-reason=kernel upgrade") == "Node maintenance is now enabled\n"
    listing = ok(agent, "maint")
    assert listing == "Node:\n  Name:   test-node\n  Reason: kernel upgrade\n\n"

    ok(agent, "services", "register", "-name=web", "-id=web-1", "-port=80")
    assert ok(agent, "maint", "-enable", "-service=web-1") == 'Service maintenance is now enabled for "web-1"\n'
    listing = ok(agent, "maint")
    assert listing.startswith("Node:\n")
    assert "Service:\n  ID:     web-1\n  Reason: Maintenance mode is enabled for this service" in listing

    assert ok(agent, "maint", "-disable", "-service=web-1") == 'Service maintenance is now disabled for "web-1"\n'
    assert ok(agent, "maint", "-disable") == "Node maintenance is now disabled\n"
    assert ok(agent, "maint") == ""

    both = cairn(agent, "maint", "-enable", "-disable")
    assert both.returncode == 1
    assert both.stderr.startswith("Only one of -enable or -disable may be provided")


# --------------------------------------------------------------------------------------------
# info, reload, monitor, leave (§5.2, §5.3)


def test_info(agent: Any) -> None:
    text = ok(agent, "info")
    sections = [line[:-1] for line in text.splitlines() if not line.startswith("\t")]
    assert sections == sorted(sections)
    assert {"agent", "build", "consul", "raft"} <= set(sections)
    for line in text.splitlines():
        assert line.endswith(":") or (line.startswith("\t") and " = " in line), line
    assert "\tserver = true" in text.splitlines()


def test_reload(agent: Any) -> None:
    assert ok(agent, "reload") == "Configuration reload triggered\n"


def test_monitor_until_ctrl_c(agent: Any) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "monitor", "-log-level=debug"],
        env=agent.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.5)
        ok(agent, "reload")  # something to log
        ok(agent, "kv", "put", "monitor/poke", "1")
        time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert b"Traceback" not in stderr


def test_leave_shuts_the_agent_down(agent: Any) -> None:
    assert ok(agent, "leave") == "Graceful leave complete\n"
    alive = getattr(agent, "alive", None)
    if alive is not None:
        poll(lambda: not alive(), timeout=15, what="agent to exit after leave")
    gone = cairn(agent, "members")
    assert gone.returncode == 1
    assert gone.stderr.startswith("Error connecting to Consul agent: ")
