"""Registration cost and memory of an agent with a large local state.

    uv run python bench/local/run.py [--checks 30000] [--services 100000]

1. One service with --checks TTL checks (from a config directory): the median time of 30 later
   `PUT /v1/agent/service/register` calls.
2. --services config-file services (one TTL check each, in 10 files): the agent's RSS once the
   catalog holds them all, and its peak (VmHWM).
Each runs a fresh `cairn agent -dev` on free loopback ports.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.machine import machine  # noqa: E402 - the project's root is on the path only now
from tests.conftest import wait_until  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(method: str, url: str, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=120) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip() else None


def _count(url: str) -> int:
    """How many entries a JSON list or object answer has (-1 while the agent is not up)."""
    try:
        return len(_call("GET", url) or [])  # type: ignore[arg-type]
    except OSError:
        return -1


def _agent(conf: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    http = _port()
    args = [sys.executable, "-m", "appliance", "agent", "-dev", "-node", "bench", "-log-level", "warn",
            "-http-port", str(http), "-dns-port", "-1", "-server-port", str(_port()),
            "-serf-lan-port", str(_port()), "-serf-wan-port", str(_port()), "-config-dir", str(conf)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=conf.parent)
    return proc, f"http://127.0.0.1:{http}"


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return 0


def registration(tmp: Path, checks: int) -> float:
    conf = tmp / "checks.d"
    conf.mkdir()
    defs = [{"id": f"c{i}", "name": f"c{i}", "ttl": "10m"} for i in range(checks)]
    (conf / "big.json").write_text(json.dumps({"service": {"name": "big", "id": "big", "checks": defs}}))
    proc, url = _agent(conf, tmp / "checks.log")
    try:
        wait_until(lambda: _count(url + "/v1/health/checks/big") == checks, timeout=600, interval=1)
        times = []
        for i in range(30):
            start = time.perf_counter()
            _call("PUT", url + "/v1/agent/service/register", {"Name": f"s{i}", "ID": f"s{i}", "Port": 80})
            times.append(time.perf_counter() - start)
        return sorted(times)[15]
    finally:
        proc.terminate()
        proc.wait(30)


def memory(tmp: Path, services: int) -> tuple[int, int, int]:
    conf = tmp / "services.d"
    conf.mkdir()
    per = services // 10
    for f in range(10):
        svcs = [{"name": f"svc-{f}-{i}", "id": f"svc-{f}-{i}", "port": 8000 + i % 1000,
                 "address": f"10.{f}.{i // 256 % 256}.{i % 256}", "tags": ["primary", "v1", f"zone-{i % 3}"],
                 "meta": {"version": "1.2.3", "team": "payments", "owner": "someone@example.com"},
                 "check": {"id": f"chk-{f}-{i}", "name": "alive", "ttl": "30m",
                           "notes": "a ttl check standing in for an http check with a longer definition"}}
                for i in range(per)]
        (conf / f"s{f}.json").write_text(json.dumps({"services": svcs}, indent=1))
    size = sum(p.stat().st_size for p in conf.iterdir()) >> 20
    proc, url = _agent(conf, tmp / "services.log")
    try:
        wait_until(lambda: _count(url + "/v1/catalog/services") == per * 10 + 1, timeout=600, interval=1)
        time.sleep(5)
        return size, _status(proc.pid, "VmRSS"), _status(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=30_000)
    parser.add_argument("--services", type=int, default=100_000)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        median = registration(Path(tmp), opts.checks)
        print(f"service registration with {opts.checks} checks on the agent: median {median * 1000:.1f} ms")
        size, rss, peak = memory(Path(tmp), opts.services)
        print(f"{opts.services} services ({size} MB of config): RSS {rss} MB, peak {peak} MB")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
