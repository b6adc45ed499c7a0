"""`cairn validate`: Consul's outputs and exit codes (reference/consul-api.md §5.3, §8.4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.cli.validate import run


@pytest.fixture
def good(tmp_path: Path) -> Path:
    d = tmp_path / "cairn.d"
    d.mkdir()
    (d / "agent.hcl").write_text(f'data_dir = "{tmp_path / "data"}"\nserver = true\nbootstrap_expect = 3\n')
    (d / "web.json").write_text(json.dumps({"service": {"name": "web", "port": 80}}))
    return d


def test_valid_directory(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(good)]) == 0
    out, err = capsys.readouterr()
    assert out == "Configuration is valid!\n" and err == ""
    assert not (good.parent / "data").exists()  # validation writes nothing


def test_quiet_prints_nothing(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["-quiet", str(good)]) == 0
    assert capsys.readouterr() == ("", "")


def test_no_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([]) == 1
    assert capsys.readouterr().err == "Must specify at least one config file or directory\n"


def test_invalid_config(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = good / "zz.json"
    bad.write_text(json.dumps({"ports": {"http": "abc"}}))
    assert run([str(good)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f'Config validation failed: Error parsing {bad}: ports.http: invalid value "abc" (expected integer)\n'


def test_unknown_key_and_semantic_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path), "bogus": 1}))
    assert run([str(path)]) == 1
    assert capsys.readouterr().err == f"Config validation failed: {path}: invalid config key bogus\n"
    path.write_text(json.dumps({"server": False, "bootstrap": True, "data_dir": str(tmp_path)}))
    assert run([str(path)]) == 1
    assert capsys.readouterr().err == "Config validation failed: 'bootstrap = true' requires 'server = true'\n"
    path.write_text(json.dumps({"server": True}))
    assert run([str(path)]) == 1
    assert capsys.readouterr().err == "Config validation failed: data_dir cannot be empty\n"


def test_several_paths_merge_in_order(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"bootstrap": True}))  # with bootstrap_expect from the dir: refused
    assert run([str(good), str(extra)]) == 1
    assert "mutually exclusive" in capsys.readouterr().err


def test_config_format_and_skip_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(f'data_dir = "{tmp_path}"\n')
    assert run([str(conf)]) == 1  # skipped, so data_dir is missing
    out, err = capsys.readouterr()
    assert err == "Config validation failed: data_dir cannot be empty\n"
    assert run(["-config-format=hcl", str(conf)]) == 0
    assert capsys.readouterr().out == "Configuration is valid!\n"
    assert run(["-config-format", "json", str(conf)]) == 1
    assert capsys.readouterr().err.startswith(f"Config validation failed: Error parsing {conf}: line 1, column 1:")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a.json").write_text(json.dumps({"data_dir": str(tmp_path)}))
    assert run([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "Configuration is valid!\n"
    assert (f"skipping file {tmp_path / 'notes.txt'}, extension must be .hcl or .json, "
            "or config format must be set") in err


def test_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.hcl"
    assert run([str(missing)]) == 1
    assert capsys.readouterr().err == f"Config validation failed: Error reading {missing}: No such file or directory\n"


def test_flags(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["-h"]) == 0
    assert capsys.readouterr().out.startswith("Usage: cairn validate [options] FILE_OR_DIRECTORY...")
    assert run(["-bogus", str(good)]) == 1
    assert capsys.readouterr().err == "flag provided but not defined: -bogus\n"
    assert run(["-config-format=yaml", str(good)]) == 1
    assert 'must be "json" or "hcl"' in capsys.readouterr().err
    assert run(["--quiet=true", str(good)]) == 0
    assert capsys.readouterr().out == ""
