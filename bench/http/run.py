"""bench/http: cairn's HTTP API against a bare aiohttp handler, and 10,000 parked blocking queries.

Run:  uv run python bench/http/run.py [--duration 10] [--parked 10000] [--write BENCHMARKS.md]

1. Throughput. A real `cairn agent -dev` with three instances of `web` answers
   `GET /v1/health/service/web?passing`; a bare aiohttp handler (bench/http/bare_server.py)
   returns the very same bytes and headers. Each server is pinned to CPU 0 and wrk (Debian's
   package) to CPU 1; same wrk settings for both. Both servers stay up and are measured in
   alternating pairs (`--rounds`, default 5): each pair gives a ratio cairn / bare, and the result
   is the median pair, so a burst of noise on the machine moves one pair, not the figure.
2. Parked blocking queries. N raw HTTP/1.1 connections (one asyncio process) each park
   `GET /v1/health/service/web?index=<current>&wait=5m`; the agent's RSS is read before and after
   they are all parked; then one TTL check flips and the time until every client has its answer
   is measured from the flip.
3. ACLs on (`--acl`, or `--only acl`). Two agents with the same catalog, one with ACLs off and one
   with `default_policy = "deny"`, measured in alternating pairs on the same request as 1; wrk
   sends the second one a token of 20 policies (19 that match nothing the request touches, then
   the one granting `service_prefix ""` and `node_prefix ""` read), so every request resolves the
   token, consults its compiled rules and filters the answer. The answers are the same bytes. The
   figure is the median pair's ratio ACL-on / ACL-off (target 0.9x).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402 - the project's root is on the path only now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, token: str = "") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"X-Consul-Token": token} if token else {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, dict(resp.headers), resp.read()


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http("GET", url)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def start_agent(port: int, *extra: str) -> subprocess.Popen:
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "appliance", "agent", "-dev", "-node", "bench",
           "-http-port", str(port), "-dns-port", "-1", "-log-level", "warn", "-server-port", str(free_port()),
           "-serf-lan-port", str(free_port()), "-serf-wan-port", str(free_port()), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v1/status/leader")
    return proc


def register_web(base: str, ttl: bool = False, token: str = "") -> None:
    for i in range(3):
        body = {"Node": f"web-node-{i}", "Address": f"10.0.0.{i + 1}",
                "Service": {"ID": f"web-{i}", "Service": "web", "Port": 8080, "Tags": ["v1"]},
                "Check": {"CheckID": f"web-{i}-check", "Name": "web", "Status": "passing", "ServiceID": f"web-{i}"}}
        http("PUT", f"{base}/v1/catalog/register", json.dumps(body).encode(), token)


def wrk(url: str, duration: int, *headers: str) -> float:
    extra = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{duration}s", *extra, url],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def throughput(duration: int, rounds: int = 5) -> dict:
    port, bare_port = free_port(), free_port()
    agent = start_agent(port)
    bare = None
    try:
        base = f"http://127.0.0.1:{port}"
        register_web(base)
        path = "/v1/health/service/web?passing"
        _, headers, body = http("GET", base + path)
        keep = {k: v for k, v in headers.items() if k.lower().startswith("x-consul") or k == "Content-Type"}
        with tempfile.NamedTemporaryFile(delete=False) as fh:
            fh.write(body)
        bare = subprocess.Popen(["taskset", "-c", "0", sys.executable, str(Path(__file__).with_name("bare_server.py")),
                                 str(bare_port), fh.name, json.dumps(keep)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{bare_port}/")
        assert http("GET", f"http://127.0.0.1:{bare_port}{path}")[2] == body
        bare_url = f"http://127.0.0.1:{bare_port}{path}"
        wrk(base + path, 2)  # warm-up
        wrk(bare_url, 2)
        pairs = []
        for _ in range(rounds):
            cairn_rps = wrk(base + path, duration)
            bare_rps = wrk(bare_url, duration)
            pairs.append({"cairn_rps": cairn_rps, "bare_rps": bare_rps, "ratio": cairn_rps / bare_rps})
        median = sorted(pairs, key=lambda p: p["ratio"])[len(pairs) // 2]
        return {"body_bytes": len(body), **median, "pairs": pairs}
    finally:
        agent.terminate()
        if bare is not None:
            bare.terminate()
        agent.wait()


MANAGEMENT = "b3c4e5f6-0000-4000-8000-000000000014"
ACL_HCL = f'acl {{ enabled = true\n default_policy = "deny"\n tokens {{ initial_management = "{MANAGEMENT}" }} }}'


def token_of_20_policies(base: str) -> str:
    """A token whose last of 20 policies grants what the health request reads."""
    names = []
    for i in range(20):
        rules = (f'key_prefix "app-{i}/" {{ policy = "write" }}\nservice "svc-{i}" {{ policy = "read" }}\n'
                 f'node "node-{i}" {{ policy = "read" }}\nsession_prefix "s-{i}" {{ policy = "write" }}')
        if i == 19:
            rules = 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'
        name = f"bench-{i:02d}"
        http("PUT", f"{base}/v1/acl/policy", json.dumps({"Name": name, "Rules": rules}).encode(), MANAGEMENT)
        names.append({"Name": name})
    _, _, body = http("PUT", f"{base}/v1/acl/token", json.dumps({"Policies": names}).encode(), MANAGEMENT)
    return json.loads(body)["SecretID"]


@contextlib.contextmanager
def acl_agents() -> Iterator[tuple[subprocess.Popen, str, subprocess.Popen, str, str]]:
    """Two agents with the same catalog, ACLs off and on (default deny): (off, its URL, on, its URL,
    the secret of a token whose last of 20 policies grants the health read)."""
    off_port, on_port = free_port(), free_port()
    off, on = start_agent(off_port), start_agent(on_port, "-hcl", ACL_HCL)
    try:
        off_base, on_base = f"http://127.0.0.1:{off_port}", f"http://127.0.0.1:{on_port}"
        register_web(off_base)
        register_web(on_base, token=MANAGEMENT)
        yield off, off_base, on, on_base, token_of_20_policies(on_base)
    finally:
        for proc in (off, on):
            proc.terminate()
            proc.wait()


def acl_throughput(duration: int, rounds: int = 5) -> dict:
    with acl_agents() as (_, off_base, _, on_base, token):
        path = "/v1/health/service/web?passing"
        same = http("GET", off_base + path)[2]
        acled = http("GET", on_base + path, token=token)[2]
        # the same answer but for the Raft indexes (the ACL agent's log also holds its ACL tables)
        assert len(acled) == len(same) and re.sub(rb'Index": \d+', b"", acled) == re.sub(rb'Index": \d+', b"", same), \
            "the ACL'd answer differs"
        assert json.loads(http("GET", on_base + path)[2]) == []  # anonymous: filtered out
        header = f"X-Consul-Token: {token}"
        wrk(off_base + path, 2)  # warm-up
        wrk(on_base + path, 2, header)
        pairs = []
        for _ in range(rounds):
            off_rps = wrk(off_base + path, duration)
            on_rps = wrk(on_base + path, duration, header)
            pairs.append({"acl_off_rps": off_rps, "acl_on_rps": on_rps, "ratio": on_rps / off_rps})
    median = sorted(pairs, key=lambda p: p["ratio"])[len(pairs) // 2]
    return {"body_bytes": len(same), **median, "pairs": pairs}


def acl_part(acl: dict) -> str:
    pairs = ", ".join(f"{p['acl_on_rps']:,.0f} / {p['acl_off_rps']:,.0f} ({p['ratio']:.2f}x)" for p in acl["pairs"])
    return f"""### ACLs on

Measured {datetime.date.today().isoformat()} on {machine()} with
`uv run python bench/http/run.py --only acl --write BENCHMARKS.md`: the same request against two agents, ACLs off
and `default_policy = "deny"` with a token of 20 policies (the answer filtered by it: the same bytes but for
the Raft indexes); median of {len(acl['pairs'])} alternating pairs.

| what | ACLs on | ACLs off | ratio |
| --- | --- | --- | --- |
| `GET /v1/health/service/web?passing`, wrk -t1 -c32 | {acl['acl_on_rps']:.0f} req/s | {acl['acl_off_rps']:.0f} req/s | **{acl['ratio']:.2f}x** (target 0.9x) |

All pairs (on / off req/s): {pairs}.
"""


def write_acl_part(path: Path, acl: dict) -> None:
    """Replace (or add) the `### ACLs on` part of the HTTP API section, nothing else."""
    text = path.read_text()
    part = acl_part(acl).rstrip("\n") + "\n"
    old = re.compile(r"### ACLs on\n.*?(?=\n## |\n### |\Z)", re.S)
    if old.search(text):
        text = old.sub(lambda _: part, text, count=1)
    else:
        http_section = re.compile(r"(## HTTP API\n.*?)(?=\n## |\Z)", re.S)
        text = http_section.sub(lambda m: m.group(1).rstrip("\n") + "\n\n" + part, text, count=1)
    path.write_text(text)


def parked_queries(n: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = free_port()
    agent = start_agent(port, "-hcl", f"limits {{ http_max_conns_per_client = {n + 100} }}")
    base = f"http://127.0.0.1:{port}"
    try:
        register_web(base)
        time.sleep(0.5)
        before = rss_mb(agent.pid)
        _, headers, _ = http("GET", base + "/v1/health/service/web")
        index = int(headers["X-Consul-Index"])
        result = asyncio.run(_park_and_flip(base, n, index, agent.pid))
        result.update(rss_before_mb=before, extra_mb=result["rss_parked_mb"] - before, parked=n)
        return result
    finally:
        agent.terminate()
        agent.wait()


class _Parked(asyncio.Protocol):
    """One raw HTTP/1.1 client connection: sends the request, notes when the answer starts."""

    def __init__(self, request: bytes, answered: list[float]) -> None:
        self.request = request
        self.answered = answered
        self.done = asyncio.get_running_loop().create_future()
        self.seen = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.seen:
            self.seen = True
            self.answered.append(time.monotonic())
            if not self.done.done():
                self.done.set_result(data[:12])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(b"")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _park_and_flip(base: str, n: int, index: int, pid: int) -> dict:
    """Park n raw connections (the client must not be the bottleneck), flip a check, time the answers."""
    loop = asyncio.get_running_loop()
    port = int(base.rsplit(":", 1)[1])
    request = (f"GET /v1/health/service/web?index={index}&wait=5m HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\nConnection: close\r\n\r\n").encode()
    answered: list[float] = []
    conns = []
    for i in range(n):
        _, proto = await loop.create_connection(lambda: _Parked(request, answered), "127.0.0.1", port)
        conns.append(proto)
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    await asyncio.sleep(3)
    rss_parked = rss_mb(pid)
    early = len(answered)
    body = {"Node": "web-node-0", "Address": "10.0.0.1", "SkipNodeUpdate": True,
            "Check": {"CheckID": "web-0-check", "Name": "web", "Status": "critical", "ServiceID": "web-0"}}
    cpu_before = cpu_seconds(pid)
    flip = time.monotonic()
    await loop.run_in_executor(None, http, "PUT", f"{base}/v1/catalog/register", json.dumps(body).encode())
    statuses = await asyncio.gather(*(c.done for c in conns))
    cpu_used = cpu_seconds(pid) - cpu_before
    assert all(s.startswith(b"HTTP/1.1 200") for s in statuses), set(statuses)
    return {"rss_parked_mb": rss_parked, "answered_before_flip": early, "agent_cpu_s": cpu_used,
            "all_answered_s": max(answered) - flip, "median_answer_s": sorted(answered)[len(answered) // 2] - flip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating cairn/bare pairs")
    parser.add_argument("--parked", type=int, default=10000)
    parser.add_argument("--acl", action="store_true", help="also measure ACLs on against ACLs off")
    parser.add_argument("--only", choices=("acl",), help="acl: only the ACL comparison (its part of the section)")
    parser.add_argument("--write", help="append the results to this markdown file's HTTP section")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        sys.exit("bench/http needs wrk and taskset (Debian: apt-get install wrk util-linux)")
    if args.only != "acl":
        tp = throughput(args.duration, args.rounds)
        print(json.dumps(tp, indent=2))
        pq = parked_queries(args.parked)
        print(json.dumps(pq, indent=2))
        if args.write:
            write_section(Path(args.write), tp, pq)
    if args.acl or args.only == "acl":
        acl = acl_throughput(args.duration, args.rounds)
        print(json.dumps(acl, indent=2))
        if args.write:
            write_acl_part(Path(args.write), acl)


def write_section(path: Path, tp: dict, pq: dict) -> None:
    today = datetime.date.today().isoformat()
    section = f"""## HTTP API

Measured {today} on {machine()} with `uv run python bench/http/run.py --write BENCHMARKS.md`.

| what | cairn | peer | ratio |
| --- | --- | --- | --- |
| `GET /v1/health/service/web?passing`, 3 instances ({tp['body_bytes']} bytes), wrk -t1 -c32, server on CPU 0, wrk on CPU 1; median of {len(tp['pairs'])} alternating pairs | {tp['cairn_rps']:.0f} req/s | bare aiohttp handler, same bytes: {tp['bare_rps']:.0f} req/s | **{tp['ratio']:.2f}x** (target 0.9x) |

All pairs (cairn / bare req/s): {', '.join(f"{p['cairn_rps']:,.0f} / {p['bare_rps']:,.0f} ({p['ratio']:.2f}x)" for p in tp['pairs'])}.

| {pq['parked']:,} parked blocking queries on `health/service/web` | value | target |
| --- | --- | --- |
| agent RSS before / with them parked | {pq['rss_before_mb']:.0f} MB / {pq['rss_parked_mb']:.0f} MB (+{pq['extra_mb']:.0f} MB) | under +150 MB |
| answered before the change (spurious wake-ups) | {pq['answered_before_flip']} | 0 |
| all answered after one check flip | {pq['all_answered_s']:.2f} s (median {pq['median_answer_s']:.2f} s) | within 1 s |
| agent CPU to answer them all | {pq['agent_cpu_s']:.2f} s | |

The parked clients are raw HTTP/1.1 connections from one asyncio process (so the client is not the
bottleneck); "answered" is when the first byte of each answer arrives.
"""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach benchmark runs cairn and a real peer side by side in one run.\n"
    # the measured part only: the `###` parts under it (the ACL comparison, notes) stay
    pattern = re.compile(r"## HTTP API\n.*?(?=\n### |\n## |\Z)", re.S)
    text = pattern.sub(section.rstrip("\n") + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
