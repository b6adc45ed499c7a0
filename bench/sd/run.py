"""bench/sd: one `GET /v1/sd/prometheus` over 5,000 services x 3 instances, and its peers.

Run:  uv run python bench/sd/run.py [--services 5000] [--instances 3] [--reps 20] [--write BENCHMARKS.md]

A real `cairn agent -dev` gets `services x instances` instances through /v1/catalog/register
(each on one of 500 nodes with node meta, two tags, service meta and a passing check). Then:

1. the first `GET /v1/sd/prometheus` (renders every target group) and its size; the same
   request after one check flipped (one service rendered again; median of --reps); and the
   same request with nothing changed (served from the render cache; median of --reps);
2. `?service=<one>` (one service's three groups), median of --reps;
3. peer 1: the requests Prometheus's consul_sd makes for the same targets against the same
   agent: `/v1/catalog/services` plus one `/v1/health/service/<name>` per service, one
   keep-alive connection, one after the other;
4. peer 2: a bare aiohttp handler (bench/http/bare_server.py) returning the very same bytes,
   which bounds what serving a cached answer can cost.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _bench_http() -> ModuleType:
    """bench/http/run.py, for its helpers (free_port, wait_http, machine)."""
    spec = importlib.util.spec_from_file_location("bench_http_run", ROOT / "bench" / "http" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _bench_http()
free_port, machine, wait_http = _helpers.free_port, _helpers.machine, _helpers.wait_http


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def timed_get(self, path: str) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        status, body = self.request("GET", path)
        assert status == 200, body[:200]
        return time.perf_counter() - t0, body


def populate(conn: Conn, services: int, instances: int, nodes: int = 500) -> None:
    n = 0
    for s in range(services):
        for i in range(instances):
            node = f"node-{n % nodes}"
            body = {"Node": node, "Address": f"10.{n % nodes // 250}.{n % 250}.{1 + n % 200}",
                    "NodeMeta": {"rack": f"r{n % 20}", "env": "prod"},
                    "Service": {"ID": f"svc-{s}-{i}", "Service": f"svc-{s}", "Port": 9100 + i,
                                "Tags": ["v1", "prod"], "Meta": {"team": f"t{s % 50}", "version": "1.0"}},
                    "Check": {"CheckID": f"svc-{s}-{i}-alive", "Name": "alive", "Status": "passing",
                              "ServiceID": f"svc-{s}-{i}"}}
            status, data = conn.request("PUT", "/v1/catalog/register", json.dumps(body).encode())
            assert status == 200, data
            n += 1


def median_get(conn: Conn, path: str, reps: int) -> float:
    return statistics.median(conn.timed_get(path)[0] for _ in range(reps))


def run(services: int, instances: int, reps: int) -> dict:
    port = free_port()
    agent = subprocess.Popen([sys.executable, "-m", "appliance", "agent", "-dev", "-node", "bench", "-http-port",
                              str(port), "-dns-port", "-1", "-log-level", "warn"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bare = None
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/status/leader")
        conn = Conn(port)
        t0 = time.perf_counter()
        populate(conn, services, instances)
        populate_s = time.perf_counter() - t0
        cold_s, body = conn.timed_get("/v1/sd/prometheus")  # nothing rendered yet: every group
        groups = json.loads(body)
        assert len(groups) == services * instances + 1  # + the agent's own `consul` service
        warm_s = median_get(conn, "/v1/sd/prometheus", reps)
        flips = []
        for rep in range(reps):  # one check flips: one service is rendered again, the rest reused
            status, _ = conn.request("PUT", "/v1/catalog/register", json.dumps({
                "Node": "node-0", "Address": "10.0.0.1", "NodeMeta": {"rack": "r0", "env": "prod"},
                "Check": {"CheckID": "svc-0-0-alive", "Name": "alive", "Status": ("critical", "passing")[rep % 2],
                          "ServiceID": "svc-0-0"}}).encode())
            assert status == 200
            flips.append(conn.timed_get("/v1/sd/prometheus")[0])
        flip_s = statistics.median(flips)
        one_s = median_get(conn, "/v1/sd/prometheus?service=svc-42", reps)

        t0 = time.perf_counter()
        _, names = conn.request("GET", "/v1/catalog/services?stale=&wait=120000ms")
        sd_bytes = len(names)
        for name in json.loads(names):
            status, data = conn.request("GET", f"/v1/health/service/{name}?stale=&wait=120000ms")
            sd_bytes += len(data)
        consul_sd_s = time.perf_counter() - t0

        bare_port = free_port()
        with tempfile.NamedTemporaryFile(delete=False) as fh:
            fh.write(body)
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "http" / "bare_server.py"), str(bare_port),
                                 fh.name, json.dumps({"Content-Type": "application/json"})],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{bare_port}/")
        bare_s = median_get(Conn(bare_port), "/", reps)
        os.unlink(fh.name)
        return {"services": services, "instances": instances, "targets": len(groups), "populate_s": populate_s,
                "bytes": len(body), "cold_ms": cold_s * 1000, "flip_ms": flip_s * 1000, "warm_ms": warm_s * 1000, "one_ms": one_s * 1000,
                "consul_sd_requests": len(json.loads(names)) + 1, "consul_sd_ms": consul_sd_s * 1000,
                "consul_sd_bytes": sd_bytes, "bare_ms": bare_s * 1000}
    finally:
        for proc in (agent, bare):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def write_section(path: Path, r: dict) -> None:
    today = datetime.date.today().isoformat()
    section = f"""## Service discovery

Measured {today} on {machine()} with `uv run python bench/sd/run.py --write BENCHMARKS.md`.
Catalog: {r['services']:,} services x {r['instances']} instances ({r['targets']:,} targets with the
agent's own), on 500 nodes, each with node meta, two tags, service meta and one check.

| what | time | size |
| --- | --- | --- |
| `GET /v1/sd/prometheus`, first ever (renders every group) | {r['cold_ms']:.0f} ms | {r['bytes'] / 1e6:.1f} MB |
| the same after one check flip (one service rendered again, the rest reused; median) | {r['flip_ms']:.0f} ms | same |
| the same again, from the render cache (median) | {r['warm_ms']:.1f} ms | same |
| `GET /v1/sd/prometheus?service=svc-42` (median) | {r['one_ms']:.2f} ms | |
| peer: bare aiohttp handler returning the same bytes (median) | {r['bare_ms']:.1f} ms | same |
| peer: consul_sd's requests for the same targets, sequential ({r['consul_sd_requests']:,} requests) | {r['consul_sd_ms']:.0f} ms | {r['consul_sd_bytes'] / 1e6:.1f} MB |
"""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach benchmark runs cairn and a real peer side by side in one run.\n"
    pattern = re.compile(r"## Service discovery\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(section.rstrip("\n") + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--write", help="put the results in this markdown file's Service discovery section")
    args = parser.parse_args()
    result = run(args.services, args.instances, args.reps)
    print(json.dumps(result, indent=2))
    if args.write:
        write_section(Path(args.write), result)


if __name__ == "__main__":
    main()
