"""bench/reads: what a default-consistency read costs where the leader is not.

Run:  uv run python bench/reads/run.py [--requests 300]

Starts three servers (`-server -bootstrap-expect 3`, raft_multiplier 1) and one client agent on
loopback, writes one KV key, then times `GET /v1/kv/bench/key` sequentially (one request at a
time, keep-alive) against the leader, a follower server and the client, in each consistency
mode (`?stale`, default, `?consistent`). A stale read is served locally everywhere; a default
read on a follower or a client first asks the leader for its commit index (one round trip over
server RPC, no heartbeat round); `?consistent` adds the leader's heartbeat round to a quorum. The
difference between a row's default and stale figures is the price of an honest default read.
Prints p50/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from tests.conftest import free_ports  # noqa: E402


def start(tmp: Path, name: str, server: bool, join: list[str],
          ports: list[int]) -> tuple[subprocess.Popen, list[int]]:
    http_port, dns_port, server_port, lan, wan = ports
    args = [sys.executable, "-m", "appliance", "agent", "-node", name, "-data-dir", str(tmp / name),
            "-bind", "127.0.0.1", "-client", "127.0.0.1", "-http-port", str(http_port), "-dns-port", str(dns_port),
            "-server-port", str(server_port), "-serf-lan-port", str(lan), "-serf-wan-port", str(wan),
            "-log-level", "warn"]
    if server:
        args += ["-server", "-bootstrap-expect", "3", "-hcl", "performance { raft_multiplier = 1 }"]
    for address in join:
        args += ["-retry-join", address]
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), ports


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    return resp.status, resp.read()


def timed(port: int, path: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for _ in range(20):  # warm up
        request(conn, "GET", path)
    for _ in range(n):
        t0 = time.perf_counter()
        status, _ = request(conn, "GET", path)
        out.append((time.perf_counter() - t0) * 1000)
        assert status == 200, status
    conn.close()
    return out


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        procs = []
        try:
            all_ports = free_ports(20)
            port_sets = [all_ports[i:i + 5] for i in range(0, 20, 5)]
            join = [f"127.0.0.1:{ports[3]}" for ports in port_sets[:3]]  # LAN gossip
            servers = []
            for i in range(3):
                servers.append(start(tmp, f"s{i + 1}", True, join, port_sets[i]))
                procs.append(servers[-1][0])
            client = start(tmp, "c1", False, join, port_sets[3])
            procs.append(client[0])
            http_ports = {f"s{i + 1}": ports[0] for i, (_, ports) in enumerate(servers)}
            rpc = {f"127.0.0.1:{ports[2]}": f"s{i + 1}" for i, (_, ports) in enumerate(servers)}
            deadline = time.monotonic() + 60
            leader = ""
            while time.monotonic() < deadline:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", client[1][0], timeout=2)
                    status, body = request(conn, "GET", "/v1/status/leader")
                    if status == 200 and json.loads(body):
                        leader = rpc[json.loads(body)]
                        status, _ = request(conn, "PUT", "/v1/kv/bench/key", b"value")
                        if status == 200:
                            break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.2)
            assert leader, "no leader"
            follower = next(n for n in http_ports if n != leader)
            rows = [("leader", http_ports[leader]), ("follower server", http_ports[follower]),
                    ("client agent", client[1][0])]
            print(f"{args.requests} sequential GET /v1/kv/bench/key per cell, ms p50 / p99")
            print(f"{'agent':<16} {'stale':>16} {'default':>16} {'consistent':>16}")
            for label, port in rows:
                cells = []
                for query in ("?stale", "", "?consistent"):
                    t = timed(port, "/v1/kv/bench/key" + query, args.requests)
                    cells.append(f"{statistics.median(t):.2f} / {pct(t, 99):.2f}")
                print(f"{label:<16} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16}")
            print(f"machine: {machine()}")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
