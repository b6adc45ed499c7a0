"""bench/dns: cairn's DNS server against dnsmasq, with dnsperf, in one run.

Run:  uv run python bench/dns/run.py [--duration 10] [--reps 3] [--write BENCHMARKS.md]

Cases (each server pinned to CPU 0 with taskset, dnsperf to CPU 1, UDP, `-c 1 -T 1 -q 100`):

1. cairn, cached: a real `cairn agent -dev` with `web` on three catalog nodes answers
   `web.service.consul A` (three A records) from its wire answer cache.
2. dnsmasq: the same three A records for the same name from a hosts file (`--addn-hosts`,
   no upstream), the peer the issue measures against.
3. cairn, every query misses: the same agent with its answer cache off
   (`CAIRN_DNS_CACHE_ENTRIES=0`), so every query is parsed, looked up in the store and packed.
4. cairn, cached, one datagram per system call (`CAIRN_DNS_NO_MMSG=1`): what the batched reads
   and writes of appliance/dns/mmsg.py are worth.

Each case runs `--reps` times, the cases interleaved; the median is reported with the range. The
headline is the median of the per-round ratios cairn cached / dnsmasq, with their spread. Beside
queries/s each case reports the server's CPU time per answered query (user + system from
/proc/<pid>/stat over the run), which moves much less than queries/s when the machine is shared
(and when dnsperf, not the server, is what limits the rate). Nothing here is a test: the figures depend on the machine and on
whatever else it runs, which is why the machine and date are written next to them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402 - the project's root is on the path only now

NAME = "web.service.consul"
ADDRESSES = ("10.0.0.1", "10.0.0.2", "10.0.0.3")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def http(method: str, url: str, body: dict | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=10) as resp:
        return resp.read()


def dig_ok(port: int) -> bool:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=1", "+tries=1", NAME],
                         capture_output=True, text=True).stdout
    return sorted(out.split()) == sorted(ADDRESSES)


def wait(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def start_cairn(cache: bool, batched: bool = True) -> tuple[subprocess.Popen, int]:
    http_port, dns_port = free_port(), free_port()
    others = [str(free_port()) for _ in range(3)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if not cache:
        env["CAIRN_DNS_CACHE_ENTRIES"] = "0"
    if not batched:
        env["CAIRN_DNS_NO_MMSG"] = "1"
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "appliance", "agent", "-dev", "-node", "bench",
           "-http-port", str(http_port), "-dns-port", str(dns_port), "-server-port", others[0],
           "-serf-lan-port", others[1], "-serf-wan-port", others[2], "-log-level", "warn"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{http_port}"
    wait(lambda: http("GET", base + "/v1/status/leader") != b'""', "the agent")
    for i, address in enumerate(ADDRESSES):
        http("PUT", base + "/v1/catalog/register", {
            "Node": f"web-node-{i}", "Address": address,
            "Service": {"ID": f"web-{i}", "Service": "web", "Port": 8080},
            "Check": {"CheckID": f"web-{i}-check", "Name": "web", "Status": "passing", "ServiceID": f"web-{i}"},
        })  # fmt: skip
    wait(lambda: dig_ok(dns_port), "cairn's DNS answer")
    return proc, dns_port


def start_dnsmasq(workdir: Path) -> tuple[subprocess.Popen, int]:
    hosts = workdir / "hosts"
    hosts.write_text("".join(f"{a} {NAME}\n" for a in ADDRESSES))
    port = free_port()
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    cmd = ["taskset", "-c", "0", shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--no-daemon", f"--port={port}",
           "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", "--conf-file=/dev/null", "--pid-file",
           "--listen-address=127.0.0.1", "--bind-interfaces", f"--user={user}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(lambda: dig_ok(port), "dnsmasq")
    return proc, port


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dnsperf(port: int, queries: Path, duration: int, pid: int) -> dict:
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
           "-l", str(duration), "-c", "1", "-T", "1", "-q", "100"]
    before = cpu_s(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu = cpu_s(pid) - before
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = float(re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out).group(1))
    done = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    return {"qps": qps, "lost_pct": lost, "us_per_query": cpu * 1e6 / max(done, 1)}


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def measure(duration: int, reps: int) -> dict:
    results: dict[str, list[dict]] = {"cairn_cached": [], "dnsmasq": [], "cairn_uncached": [], "cairn_single": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        queries = workdir / "queries"
        queries.write_text(f"{NAME} A\n")
        for _ in range(reps):  # interleaved, so drift on a shared machine hits every case alike
            for case in results:
                if case == "dnsmasq":
                    proc, port = start_dnsmasq(workdir)
                else:
                    proc, port = start_cairn(cache=case != "cairn_uncached", batched=case != "cairn_single")
                try:
                    dnsperf(port, queries, 2, proc.pid)  # warm-up
                    results[case].append(dnsperf(port, queries, duration, proc.pid))
                finally:
                    stop(proc)
                print(case, results[case][-1], flush=True)
    summary = {}
    for case, runs in results.items():
        qps = [r["qps"] for r in runs]
        summary[case] = {"median": statistics.median(qps), "min": min(qps), "max": max(qps),
                         "lost_pct": max(r["lost_pct"] for r in runs), "runs": len(runs),
                         "us_per_query": statistics.median(r["us_per_query"] for r in runs)}
    ratios = [c["qps"] / d["qps"] for c, d in zip(results["cairn_cached"], results["dnsmasq"])]
    summary["ratio_cached_vs_dnsmasq"] = statistics.median(ratios)
    summary["ratios"] = ratios
    summary["cpu_ratio"] = summary["dnsmasq"]["us_per_query"] / summary["cairn_cached"]["us_per_query"]
    return summary


def tool_versions() -> dict:
    dnsmasq = subprocess.run(["dnsmasq", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    perf = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    perf_version = re.search(r"Version ([\d.]+)", perf.stdout + perf.stderr)
    return {"dnsmasq": dnsmasq.replace("Dnsmasq version ", "").split()[0] if dnsmasq else "?",
            "dnsperf": perf_version.group(1) if perf_version else "?"}


def write_section(path: Path, s: dict, m: dict, duration: int) -> None:
    def cell(case: str) -> str:
        c = s[case]
        return (f"{c['median']:,.0f} q/s ({c['min']:,.0f}-{c['max']:,.0f}, {c['runs']} runs) | "
                f"{c['us_per_query']:.2f} us")

    cached_ok = "met" if s["ratio_cached_vs_dnsmasq"] >= 1.0 else "not met"
    miss_ok = "met" if s["cairn_uncached"]["median"] >= 15000 else "not met"
    spread = f"{min(s['ratios']):.2f}-{max(s['ratios']):.2f}"
    section = f"""## DNS

Measured {datetime.date.today().isoformat()} on {machine()}, dnsmasq {m['dnsmasq']},
dnsperf {m['dnsperf']}, with `uv run python bench/dns/run.py --write BENCHMARKS.md` ({duration} s per run).
Server pinned to CPU 0, dnsperf to CPU 1 (`-c 1 -T 1 -q 100`, UDP); query `{NAME} A`, three A records
in every answer; median (range) over interleaved runs, and the server's CPU time per answered query
(median). The agent runs as shipped, its per-query DNS timing metric included. The machine is shared,
so figures move between runs.

| case | queries/s | CPU per query | vs target |
| --- | --- | --- | --- |
| cairn, answer cache hits | {cell('cairn_cached')} | **{s['ratio_cached_vs_dnsmasq']:.2f}x dnsmasq** (median of pairs, spread {spread}; target 1.0x: {cached_ok}); per CPU {s['cpu_ratio']:.2f}x |
| dnsmasq, same records from a hosts file | {cell('dnsmasq')} | peer |
| cairn, every query misses the cache (`CAIRN_DNS_CACHE_ENTRIES=0`) | {cell('cairn_uncached')} | target 15,000 q/s: {miss_ok} |
| cairn, cache hits, one datagram per system call (`CAIRN_DNS_NO_MMSG=1`) | {cell('cairn_single')} | what batching is worth |

Queries lost: at most {max(s[c]['lost_pct'] for c in ('cairn_cached', 'dnsmasq', 'cairn_uncached')):.2f} %.
"""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach benchmark runs cairn and a real peer side by side in one run.\n"
    # the measured part only (up to its "Queries lost" line): notes written under it stay
    pattern = re.compile(r"## DNS\n.*?Queries lost:[^\n]*\n", re.S)
    text = pattern.sub(lambda _: section, text, count=1) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per dnsperf run")
    parser.add_argument("--reps", type=int, default=3, help="runs per case")
    parser.add_argument("--write", help="write the results to this markdown file's `## DNS` section")
    args = parser.parse_args()
    for tool in ("dnsperf", "taskset", "dig"):
        if not shutil.which(tool):
            sys.exit(f"bench/dns needs {tool} (Debian: apt-get install dnsperf dnsmasq bind9-dnsutils util-linux)")
    if not (shutil.which("dnsmasq") or Path("/usr/sbin/dnsmasq").exists()):
        sys.exit("bench/dns needs dnsmasq (Debian: apt-get install dnsmasq)")
    m = tool_versions()
    s = measure(args.duration, args.reps)
    print(json.dumps({"machine": machine(), **m, "results": s}, indent=2))
    print(f"cached / dnsmasq = {s['ratio_cached_vs_dnsmasq']:.2f}x (pairs {', '.join(f'{r:.2f}' for r in s['ratios'])}); "
          f"CPU per query dnsmasq / cairn = {s['cpu_ratio']:.2f}x; "
          f"uncached = {s['cairn_uncached']['median']:,.0f} q/s")
    if args.write:
        write_section(Path(args.write), s, m, args.duration)


if __name__ == "__main__":
    main()
