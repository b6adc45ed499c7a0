"""scripts/bench.sh: its help and list work, every benchmark under bench/ is reachable from it (so a
new one cannot be forgotten), a quick run writes nothing unless told, and a missing program is named
with its Debian package before anything runs. Nothing here runs a benchmark (`--dry-run`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench.sh"


def bench_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=env)


def listed() -> dict[str, tuple[str, str]]:
    """name -> (set, command) from `--list`."""
    proc = bench_sh("--list")
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines()[1:]:
        name, group, _minutes, rest = line.split(None, 3)
        rows[name] = (group, rest)
    return rows


def dry_run(*args: str) -> dict[str, str]:
    """name -> the command a dry run would run."""
    proc = bench_sh("--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    return dict(re.findall(r"^== ([\w-]+): (.*)$", proc.stdout, re.M))


def test_help_names_the_default_set_its_time_and_every_option():
    proc = bench_sh("-h")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert re.search(r"default set is .* takes about \d+ minutes", text, re.S), text
    for option in ("--only", "--all", "--quick", "--write", "--no-write", "--logs", "--list", "--dry-run"):
        assert option in text
    assert "sd-vmagent" in text and "gossip-hour" in text  # the long ones, and that they run only when asked
    assert bench_sh("--help").stdout == text


def test_every_benchmark_script_is_reachable_and_every_write_is_used():
    rows = listed()
    commands = " ".join(command for _, command in rows.values())
    scripts = sorted(p for p in (ROOT / "bench").glob("*/*.py")
                     if re.search(r'^if __name__ == "__main__":', p.read_text(), re.M)
                     and "argparse" in p.read_text())
    assert scripts, "no benchmark scripts found"
    for script in scripts:
        rel = script.relative_to(ROOT).as_posix()
        assert rel in commands, f"{rel} is not run by scripts/bench.sh: add it to its table"
        if re.search(r"""add_argument\(\s*["']--write["']""", script.read_text()):
            for name, (_, command) in rows.items():
                if rel in command.split():
                    assert "{write}" in command, f"bench.sh runs {rel} ({name}) without its --write"
    assert {group for group, _ in rows.values()} == {"default", "named"}
    assert rows["sd-vmagent"][0] == rows["gossip-hour"][0] == "named"


def test_full_runs_write_benchmarks_md_and_quick_runs_write_only_when_told():
    full = dry_run()
    assert "sd-vmagent" not in full and "gossip-hour" not in full
    assert full["dns"].endswith("--write BENCHMARKS.md")
    quick = dry_run("--quick")
    assert set(quick) == set(full)
    assert all("--write" not in command for command in quick.values()), quick
    told = dry_run("--quick", "--only", "dns,reads", "--write", "/tmp/out.md")
    assert list(told) == ["dns", "reads"]
    assert told["dns"].endswith("--write /tmp/out.md") and "--write" not in told["reads"]
    assert all("--write" not in c for c in dry_run("--no-write").values())


def test_the_long_runs_replace_the_short_ones_they_rewrite():
    everything = dry_run("--all")
    assert "sd-vmagent" in everything and "sd" not in everything
    assert "gossip-hour" in everything and "gossip" not in everything
    assert "1000:3600" in everything["gossip-hour"]
    assert list(dry_run("--only", "gossip,dns")) == ["dns", "gossip"]  # the table's order


def test_unknown_names_and_arguments_are_refused():
    proc = bench_sh("--only", "dns,nope")
    assert proc.returncode == 2 and "no benchmark named 'nope'" in proc.stderr
    proc = bench_sh("--bogus")
    assert proc.returncode == 2 and "unknown argument --bogus" in proc.stderr


def test_a_missing_program_is_named_with_its_package_before_anything_runs(tmp_path: Path):
    # a PATH with uv and what the script itself uses, but none of the benchmarks' programs
    for tool in ("bash", "cat", "dirname", "grep", "mktemp", "sed", "tee", "env", "python3", "uv"):
        found = shutil.which(tool)
        assert found, tool
        (tmp_path / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = bench_sh("--only", "raft,sd-vmagent,reads", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "== " not in proc.stdout  # nothing ran
    assert "etcd-server: etcd for raft" in proc.stderr and "wrk: wrk for raft" in proc.stderr
    assert "victoria-metrics: vmagent for sd-vmagent" in proc.stderr
    install = re.search(r"apt-get install --no-install-recommends (.*)", proc.stderr)
    assert install and set(install[1].split()) == {"etcd-server", "wrk", "victoria-metrics"}


def test_the_packages_it_names_are_the_projects_debian_packages():
    table = SCRIPT.read_text().split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    named = {pair.split(":", 1)[1] for line in table.splitlines() for pair in line.split("|")[3].split()}
    listed_packages = {line.split("#", 1)[0].strip()
                       for line in (ROOT / "scripts" / "debian-packages.txt").read_text().splitlines()} - {""}
    assert named, "no tool:package pairs found"
    # util-linux (taskset) is Essential: every Debian system has it
    assert named - {"util-linux"} <= listed_packages, named - listed_packages


def test_every_option_in_its_commands_is_one_the_script_takes():
    # the quick commands in particular run rarely: an option renamed in a script must fail here
    table = SCRIPT.read_text().split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    checked = 0
    for line in table.splitlines():
        name, _set, _minutes, _tools, full, quick, _replaces = line.split("|")
        for command in (full, quick):
            script = re.search(r"python (bench/\S+\.py)", command)
            if script is None:
                continue
            source = (ROOT / script[1]).read_text()
            taken = set(re.findall(r"""add_argument\(\s*["'](--[\w-]+)["']""", source))
            used = set(re.findall(r"(?<!\S)(--[\w-]+)", command.split(script[1], 1)[1]))
            assert used <= taken, f"{name}: {script[1]} takes no {sorted(used - taken)}"
            checked += 1
    assert checked >= 20
