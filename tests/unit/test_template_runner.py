"""`cairn template` without an agent: configuration blocks and flags, the atomic write, and the
runner's loop against a fake agent (answers changed by the test)."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from appliance.cli.template import load_config
from appliance.template import Template
from appliance.template.config import ConfigError, RunConfig, TemplateConfig, Wait, merge_file, parse_flag, parse_wait
from appliance.template.output import OutputError, run_command, write_atomic
from appliance.template.runner import FetchError, Runner

# -- configuration -----------------------------------------------------------------------------


def test_template_flag() -> None:
    assert parse_flag("in.ctmpl:/etc/out.conf") == TemplateConfig(source="in.ctmpl", destination="/etc/out.conf")
    cfg = parse_flag("./nginx.ctmpl:/etc/test.conf:nginx -s reload; echo a:b")
    assert (cfg.source, cfg.destination) == ("./nginx.ctmpl", "/etc/test.conf")
    assert cfg.command == "nginx -s reload; echo a:b"
    for bad in ("only", ":out", "in:"):
        with pytest.raises(ConfigError, match="invalid template format"):
            parse_flag(bad)


def test_wait() -> None:
    assert parse_wait("2s") == Wait(2.0, 8.0)
    assert parse_wait("500ms:3s") == Wait(0.5, 3.0)
    assert parse_wait({"min": "1s", "max": "4s"}) == Wait(1.0, 4.0)
    with pytest.raises(ConfigError, match="min must be less than max"):
        parse_wait("5s:2s")
    with pytest.raises(ConfigError, match="wait"):
        parse_wait("soon")


def test_hcl_and_json_config_files(tmp_path: Path) -> None:
    hcl = tmp_path / "a.hcl"
    hcl.write_text("""
consul { address = "127.0.0.1:8501" }
wait { min = "1s" }
template {
  source = "in.ctmpl"
  destination = "out.conf"
  command = "reload"
  perms = 0600
  wait { min = "2s" max = "10s" }
}
template {
  contents = "{{ key \\"a\\" }}"
  destination = "b.conf"
  command = ["svc", "reload"]
  command_timeout = "5s"
  backup = true
}
""")
    js = tmp_path / "b.json"
    js.write_text(json.dumps({"template": {"source": "x", "destination": "y", "perms": "0640"}}))
    run = load_config([str(hcl), str(js)])
    assert run.address == "127.0.0.1:8501"
    assert run.wait == Wait(1.0, 4.0)
    first, second, third = run.templates
    assert (first.source, first.destination, first.command, first.perms) == ("in.ctmpl", "out.conf", "reload", 0o600)
    assert first.wait == Wait(2.0, 10.0)
    assert (second.contents, second.command, second.command_timeout_s, second.backup) == (
        '{{ key "a" }}', ["svc", "reload"], 5.0, True)
    assert third.perms == 0o640
    # a directory loads its files in name order
    assert len(load_config([str(tmp_path)]).templates) == 3


@pytest.mark.parametrize(("block", "message"), [
    ({"source": "a"}, "missing destination"),
    ({"destination": "a"}, "missing source or contents"),
    ({"destination": "a", "source": "b", "contents": "c"}, "mutually exclusive"),
    ({"destination": "a", "source": "b", "exec": {}}, "unsupported setting(s): exec"),
    ({"destination": "a", "source": "b", "perms": "rw"}, "perms"),
    ({"destination": "a", "source": "b", "command": 5}, "command must be"),
])  # fmt: skip
def test_bad_template_blocks(block: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        merge_file(RunConfig(), {"template": [block]})


def test_unknown_top_level_setting() -> None:
    with pytest.raises(ConfigError, match="f.hcl: unsupported setting.*vault"):
        merge_file(RunConfig(), {"vault": {}}, origin="f.hcl")


# -- atomic write and commands -----------------------------------------------------------------


def test_write_atomic(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "out.conf"
    assert write_atomic(str(dest), b"one") is True
    assert dest.read_bytes() == b"one"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert write_atomic(str(dest), b"one") is False  # same bytes: nothing written
    os.chmod(dest, 0o600)
    inode = dest.stat().st_ino
    assert write_atomic(str(dest), b"two", backup=True) is True
    assert dest.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600  # the existing mode is kept
    assert (tmp_path / "sub" / "out.conf.bak").read_bytes() == b"one"
    assert write_atomic(str(dest), b"three", perms=0o640) is True
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.conf", "out.conf.bak"]  # no temporary left
    with pytest.raises(OutputError, match="no parent directory"):
        write_atomic(str(tmp_path / "missing" / "x"), b"x", create_dirs=False)


def test_run_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run_command(f"echo hi > {marker}", 5)
    assert marker.read_text() == "hi\n"
    run_command(["touch", str(tmp_path / "list")], 5)
    assert (tmp_path / "list").exists()
    with pytest.raises(OutputError, match="exited with code 3"):
        run_command("exit 3", 5)
    with pytest.raises(OutputError, match="did not finish within"):
        run_command("sleep 5", 0.2)


# -- the runner against a fake agent -----------------------------------------------------------


class FakeAgent:
    """Answers blocking queries from a dict of path -> value; a change wakes waiting queries."""

    def __init__(self) -> None:
        self.kv: dict[str, str] = {}
        self.index = 1
        self.cond = threading.Condition()
        self.requests: list[tuple[str, list[tuple[str, str]]]] = []
        self.down = False

    def put(self, key: str, value: str) -> None:
        with self.cond:
            self.kv[key] = value
            self.index += 1
            self.cond.notify_all()

    def __call__(self, path: str, params: list[tuple[str, str]],
                 timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        self.requests.append((path, params))
        if self.down:
            raise FetchError("connection refused")
        query = dict(params)
        with self.cond:
            if "index" in query:
                self.cond.wait_for(lambda: self.index > int(query["index"]), timeout=0.5)
            headers = {"x-consul-index": str(self.index)}
            key = path.removeprefix("/v1/kv/")
            if key not in self.kv:
                return 404, headers, b""
            value = base64.b64encode(self.kv[key].encode()).decode()
            return 200, headers, json.dumps([{"Key": key, "Value": value}]).encode()


def start(runner: Runner) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(runner.run()), daemon=True)
    thread.start()
    return thread, code


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def make(tmp_path: Path, text: str, **cfg: object) -> tuple[TemplateConfig, Template]:
    config = TemplateConfig(destination=str(tmp_path / "out.txt"), contents=text, **cfg)  # type: ignore[arg-type]
    return config, Template("t", text)


def test_once_waits_for_a_missing_key_then_exits(tmp_path: Path) -> None:
    agent = FakeAgent()
    runner = Runner([make(tmp_path, '{{ key "a" }}-{{ keyOrDefault "b" "d" }}')], agent, once=True, log=lambda m: None)
    thread, code = start(runner)
    time.sleep(0.3)
    assert not (tmp_path / "out.txt").exists()  # `key` on a missing key blocks the render
    agent.put("a", "x")
    thread.join(5)
    assert code == [0]
    assert (tmp_path / "out.txt").read_text() == "x-d"
    assert any(dict(p).get("stale") == "" for _, p in agent.requests)


def test_command_runs_only_when_the_output_changes(tmp_path: Path) -> None:
    agent = FakeAgent()
    agent.put("a", "1")
    count = tmp_path / "count"
    cfg, tmpl = make(tmp_path, '{{ key "a" }}', command=f"echo x >> {count}")
    runner = Runner([(cfg, tmpl)], agent, log=lambda m: None)
    thread, _ = start(runner)
    wait_for(lambda: count.exists())
    agent.put("a", "2")
    wait_for(lambda: (tmp_path / "out.txt").read_text() == "2")
    agent.put("other", "z")  # not used by the template
    agent.put("a", "2")  # same value
    time.sleep(0.4)
    runner.stop()
    thread.join(5)
    assert count.read_text() == "x\nx\n"


def test_quiescence_renders_once_after_a_burst(tmp_path: Path) -> None:
    agent = FakeAgent()
    agent.put("a", "0")
    renders: list[str] = []
    cfg, tmpl = make(tmp_path, '{{ key "a" }}', wait=Wait(1.0, 5.0))
    runner = Runner([(cfg, tmpl)], agent, log=renders.append)
    thread, _ = start(runner)
    wait_for(lambda: len(renders) == 1)
    for i in range(1, 6):
        agent.put("a", str(i))
        time.sleep(0.1)
    assert (tmp_path / "out.txt").read_text() == "0"  # still quiet-waiting
    wait_for(lambda: (tmp_path / "out.txt").read_text() == "5")
    time.sleep(0.3)
    runner.stop()
    thread.join(5)
    assert len([r for r in renders if "rendered" in r]) == 2


def test_dry_prints_instead_of_writing(tmp_path: Path) -> None:
    import io

    agent = FakeAgent()
    agent.put("a", "v")
    out = io.StringIO()
    runner = Runner([make(tmp_path, '{{ key "a" }}\n')], agent, once=True, dry=True, stdout=out)
    assert runner.run() == 0
    assert out.getvalue() == f"> {tmp_path / 'out.txt'}\nv\n"
    assert not (tmp_path / "out.txt").exists()


def test_execution_error_with_all_data_stops_with_13(tmp_path: Path) -> None:
    agent = FakeAgent()
    agent.put("a", "v")
    logs: list[str] = []
    runner = Runner([make(tmp_path, '{{ key "a" | len | printf "%d" | index 3 }}')], agent, once=True, log=logs.append)
    assert runner.run() == 13
    assert any("[ERR] template: t:1:" in m for m in logs)


def test_an_unreachable_agent_is_retried_then_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import appliance.template.runner as runner_mod

    monkeypatch.setattr(runner_mod, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.setattr(runner_mod, "RETRY_MAX_BACKOFF_S", 0.02)
    agent = FakeAgent()
    agent.down = True
    logs: list[str] = []
    runner = Runner([make(tmp_path, '{{ key "a" }}')], agent, once=True, log=logs.append)
    assert runner.run() == 13
    assert sum("connection refused" in m and "WARN" in m for m in logs) == runner_mod.RETRY_ATTEMPTS - 1
    assert "giving up after 12 attempts" in logs[-1]


def test_reload_renders_the_new_templates(tmp_path: Path) -> None:
    agent = FakeAgent()
    agent.put("a", "A")
    agent.put("b", "B")
    runner = Runner([make(tmp_path, '{{ key "a" }}')], agent, log=lambda m: None)
    out = tmp_path / "out.txt"
    thread, _ = start(runner)
    wait_for(lambda: read_text(out) == "A")

    def broken() -> list[tuple[TemplateConfig, Template]]:
        return [make(tmp_path, "{{ nope }}")]

    runner.reloader = broken
    runner.request_reload()
    time.sleep(0.2)
    runner.reloader = lambda: [make(tmp_path, '{{ key "b" }}')]
    runner.request_reload()
    wait_for(lambda: read_text(out) == "B")
    runner.stop()
    thread.join(5)


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
