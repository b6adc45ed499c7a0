"""bench/http/cpu.py: agent CPU per HTTP read, cairn beside a bare aiohttp handler.

Run:  uv run python bench/http/cpu.py [--duration 5] [--tree PATH]

A `cairn agent -dev` with the three `web` instances of bench/http answers
`GET /v1/health/service/web?passing`, and a bare aiohttp handler (bench/http/bare_server.py)
returns the same bytes and headers; wrk (one thread, 32 connections) loads each for `--duration`
seconds after a 2 s warm-up. The CPU time (user + system, from /proc/<pid>/stat) each server
spent, divided by the requests wrk counted, is the figure: unlike req/s it barely moves when other
work shares the machine, so a change to the HTTP path can be measured on a busy machine.
`--tree` runs the agent of another checkout (bench/compare.py --bench http-cpu uses it).

`--acl` measures instead two agents of this checkout with the same catalog, ACLs off and ACLs on
(default deny, the request's token holding 20 policies, the last of which grants the read: the
same setup as `bench/http/run.py --only acl`), `--rounds` alternating pairs: what ACL
enforcement costs per request, in CPU.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.http.run import acl_agents, free_port, http, register_web, wait_http  # noqa: E402
from bench.raft.cpu import cpu_s  # noqa: E402

PATH = "/v1/health/service/web?passing"


def load(pid: int, url: str, duration: int, *headers: str) -> float:
    """CPU microseconds `pid` spent per request while wrk loaded `url`."""
    extra = [arg for header in headers for arg in ("-H", header)]
    subprocess.run(["wrk", "-t1", "-c32", "-d2s", *extra, url], capture_output=True, check=True)
    before = cpu_s(pid)
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{duration}s", *extra, url], capture_output=True, text=True,
                         check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return (cpu_s(pid) - before) * 1e6 / requests


def measure(tree: Path, duration: int) -> dict[str, float]:
    port, bare_port = free_port(), free_port()
    cmd = [str(tree / ".venv" / "bin" / "python"), "-m", "appliance", "agent", "-dev", "-node", "bench",
           "-http-port", str(port), "-dns-port", "-1", "-log-level", "warn", "-server-port", str(free_port()),
           "-serf-lan-port", str(free_port()), "-serf-wan-port", str(free_port())]
    agent = subprocess.Popen(cmd, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bare = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/v1/status/leader")
        register_web(base)
        _, headers, body = http("GET", base + PATH)
        keep = {k: v for k, v in headers.items() if k.lower().startswith("x-consul") or k == "Content-Type"}
        with tempfile.NamedTemporaryFile(delete=False) as fh:
            fh.write(body)
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench/http/bare_server.py"), str(bare_port), fh.name,
                                 json.dumps(keep)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{bare_port}/")
        cairn_us = load(agent.pid, base + PATH, duration)
        bare_us = load(bare.pid, f"http://127.0.0.1:{bare_port}{PATH}", duration)
    finally:
        for proc in (agent, bare):
            if proc is not None:
                proc.terminate()
                proc.wait()
    return {"cairn_us_per_request": cairn_us, "bare_us_per_request": bare_us, "ratio": bare_us / cairn_us}


def measure_acl(duration: int, rounds: int) -> dict[str, object]:
    with acl_agents() as (off, off_base, on, on_base, token):
        header = f"X-Consul-Token: {token}"
        pairs = []
        for _ in range(rounds):
            off_us = load(off.pid, off_base + PATH, duration)
            on_us = load(on.pid, on_base + PATH, duration, header)
            pairs.append({"acl_off_us": off_us, "acl_on_us": on_us, "cost": on_us / off_us})
    median = sorted(pairs, key=lambda p: p["cost"])[len(pairs) // 2]
    return {**median, "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per server (default 5)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose agent runs (default this one)")
    parser.add_argument("--acl", action="store_true", help="ACLs on against ACLs off (this checkout)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs with --acl (default 3)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/http/cpu.py needs wrk (Debian: apt-get install wrk)")
    if args.acl:
        print(json.dumps(measure_acl(args.duration, args.rounds), indent=2))
        return
    print(json.dumps(measure(args.tree.resolve(), args.duration)))


if __name__ == "__main__":
    main()
