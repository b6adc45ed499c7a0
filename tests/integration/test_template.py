"""`cairn template` against a real `cairn agent -dev`: the shipped examples (the nginx upstream of
the seed and a Prometheus file_sd file) rendered with `-once`, then kept current: a KV write or a
service registration is in the files within a second, and the command runs only when a file's
content changed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "templates"
RENDER_BOUND_S = 1.0


def cli(agent: Any, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "template", *args], env=agent.env, cwd=cwd,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


def register(agent: Any, body: dict[str, Any]) -> None:
    status, _, data = agent.put("/v1/agent/service/register", body)
    assert status == 200, data


def put_key(agent: Any, key: str, value: str) -> None:
    status, _, data = agent.put(f"/v1/kv/{key}", value)
    assert status == 200, data


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    """Poll every 10 ms; return the seconds it took."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def targets(path: Path) -> list[str]:
    text = read(path)
    try:
        groups = json.loads(text)
    except ValueError:
        return []
    return sorted(t for g in groups for t in g["targets"])


def test_once_renders_the_nginx_and_file_sd_examples(agent: Any, tmp_path: Path) -> None:
    put_key(agent, "master/test", "test_data")
    register(agent, {"Name": "web", "ID": "web1", "Port": 8080, "Address": "10.1.0.1", "Tags": ["metrics"]})
    register(agent, {"Name": "api", "ID": "api1", "Port": 9100, "Address": "10.1.0.2", "Tags": ["metrics"]})
    register(agent, {"Name": "db", "ID": "db1", "Port": 5432, "Address": "10.1.0.3"})
    nginx, sd = tmp_path / "test.conf", tmp_path / "targets.json"
    proc = cli(agent, "-template", f"./nginx.ctmpl:{nginx}", "-template", f"file_sd.ctmpl:{sd}", "-once",
               cwd=EXAMPLES)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = nginx.read_text()
    assert "# test_data\n" in text
    assert "upstream web {\n  server 10.1.0.1:8080;" in text
    groups = json.loads(sd.read_text())
    assert groups == [
        {"targets": ["10.1.0.2:9100"], "labels": {"job": "api", "node": agent.node, "datacenter": "dc1"}},
        {"targets": ["10.1.0.1:8080"], "labels": {"job": "web", "node": agent.node, "datacenter": "dc1"}},
    ]


def test_dry_and_config_file(agent: Any, tmp_path: Path) -> None:
    put_key(agent, "app/port", "8080")
    config = tmp_path / "t.hcl"
    config.write_text(f"""
template {{
  contents    = "port={{{{ key \\"app/port\\" }}}} home={{{{ env \\"HOME\\" }}}}"
  destination = "{tmp_path / 'never-written'}"
}}
""")
    proc = cli(agent, "-config", str(config), "-once", "-dry", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"> {tmp_path / 'never-written'}\nport=8080 home=")
    assert not (tmp_path / "never-written").exists()


def test_a_template_that_does_not_parse_is_a_config_error(agent: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ctmpl"
    bad.write_text("ok\n{{ range service \"web\" }}\n  {{ .Address | nosuchfunc }}\n{{ end }}\n")
    proc = cli(agent, "-template", f"{bad}:{tmp_path / 'out'}", "-once", cwd=tmp_path)
    assert proc.returncode == 14
    assert f'template: {bad}:3:17: function "nosuchfunc" not defined' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rerenders_within_a_second_and_runs_the_command_only_on_change(agent: Any, tmp_path: Path) -> None:
    put_key(agent, "master/test", "first")
    register(agent, {"Name": "web", "ID": "web1", "Port": 8080, "Address": "10.2.0.1", "Tags": ["metrics"]})
    nginx, sd, count = tmp_path / "test.conf", tmp_path / "targets.json", tmp_path / "count"
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "template",
         "-template", f"nginx.ctmpl:{nginx}:echo run >> {count}",
         "-template", f"file_sd.ctmpl:{sd}"],
        env=agent.env, cwd=EXAMPLES, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: "# first" in read(nginx) and targets(sd) == ["10.2.0.1:8080"], 15, "the first render")
        wait_for(lambda: read(count) == "run\n", 5, "the first command")

        # a KV change
        put_key(agent, "master/test", "second")
        took = wait_for(lambda: "# second" in read(nginx), 5, "the KV change")
        assert took < RENDER_BOUND_S, f"KV change rendered after {took:.2f}s"

        # a catalog change: a new instance of a service both templates read
        register(agent, {"Name": "web", "ID": "web2", "Port": 8081, "Address": "10.2.0.2", "Tags": ["metrics"]})
        took = wait_for(lambda: "10.2.0.2:8081" in read(nginx) and len(targets(sd)) == 2, 5, "the registration")
        assert took < RENDER_BOUND_S, f"registration rendered after {took:.2f}s"
        wait_for(lambda: read(count) == "run\nrun\nrun\n", 5, "the command after each change")

        # changes that leave the output as it is: an unrelated key, the same value again, an unrelated service
        put_key(agent, "unrelated", "x")
        put_key(agent, "master/test", "second")
        register(agent, {"Name": "db", "ID": "db1", "Port": 5432})
        time.sleep(1.5)
        assert read(count) == "run\nrun\nrun\n"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_sighup_loads_the_templates_again(agent: Any, tmp_path: Path) -> None:
    put_key(agent, "greeting", "hello")
    source, dest = tmp_path / "in.ctmpl", tmp_path / "out.txt"
    source.write_text('{{ key "greeting" }}\n')
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "template", "-template", f"{source}:{dest}"],
                            env=agent.env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: read(dest) == "hello\n", 15, "the first render")
        source.write_text('{{ key "greeting" | toUpper }} {{ keyOrDefault "name" "world" }}\n')
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: read(dest) == "HELLO world\n", 5, "the render after SIGHUP")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "reloaded 1 template(s)" in stderr
