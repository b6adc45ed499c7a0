"""bench/sd: one `GET /v1/sd/prometheus` over 5,000 services x 3 instances, and its peers.

Run:  uv run python bench/sd/run.py [--services 5000] [--instances 3] [--reps 20] [--write BENCHMARKS.md]
      [--vmagent-intervals 30s,1s] [--vmagent-wait 2m] [--cpu-window 150] [--flips 4]

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
   which bounds what serving a cached answer can cost;
5. a real vmagent (Debian `victoria-metrics`) running consul_sd over every service, once per
   `--vmagent-intervals` value of its `-promscrape.consulSDCheckInterval` (30s is its default):
   the agent's CPU (utime + stime from /proc/<pid>/stat) while vmagent starts its watches (until
   every service has a parked blocking query) and then per minute while it only watches
   (`--cpu-window` seconds, nothing changing, longer than the blocking wait `--vmagent-wait` so
   every watch returns and is asked again); then `--flips` check flips of one instance, each
   timed from the write until vmagent's targets API shows the new health label (polled every
   50 ms). vmagent keeps only that service's targets (relabelling), so it does not scrape the
   15,000 made-up addresses; discovery still watches all services.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import command_line, machine  # noqa: E402 - the project's root is on the path only now


def _bench_http() -> ModuleType:
    """bench/http/run.py, for its helpers (free_port, wait_http)."""
    spec = importlib.util.spec_from_file_location("bench_http_run", ROOT / "bench" / "http" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _bench_http()
free_port, wait_http = _helpers.free_port, _helpers.wait_http


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


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parked(port: int) -> int:
    """The agent's rpc.queries_blocking gauge, from the JSON metrics (the Prometheus format would
    render consul_exporter's series for all 15,000 instances on every call, costing the agent CPU)."""
    status, body = Conn(port).request("GET", "/v1/agent/metrics")
    if status != 200:
        return 0
    return next((int(g["Value"]) for g in json.loads(body)["Gauges"] if g["Name"].endswith("rpc.queries_blocking")), 0)


VMAGENT_CONFIG = """global:
  scrape_interval: 1h
scrape_configs:
  - job_name: services
    consul_sd_configs:
      - server: 127.0.0.1:{port}
    relabel_configs:
      - source_labels: [__meta_consul_service]
        regex: svc-0
        action: keep
      - source_labels: [__meta_consul_health]
        target_label: health
"""


def vmagent_health(api_port: int, instance: str) -> str | None:
    c = http.client.HTTPConnection("127.0.0.1", api_port, timeout=5)
    try:
        c.request("GET", "/api/v1/targets?state=active")
        data = json.loads(c.getresponse().read())
    except (OSError, ValueError):
        return None
    finally:
        c.close()
    for t in data.get("data", {}).get("activeTargets", []):
        if t["labels"].get("instance") == instance:
            return t["labels"].get("health")
    return None


def flip(conn: Conn, status: str) -> None:
    code, _ = conn.request("PUT", "/v1/catalog/register", json.dumps({
        "Node": "node-0", "Address": "10.0.0.1", "NodeMeta": {"rack": "r0", "env": "prod"},
        "Check": {"CheckID": "svc-0-0-alive", "Name": "alive", "Status": status,
                  "ServiceID": "svc-0-0"}}).encode())
    assert code == 200


def vmagent_phase(agent: subprocess.Popen, port: int, services: int, interval: str, cpu_window: float,
                  flips: int, wait: str) -> dict:
    """vmagent's consul_sd over every service: agent CPU at start and while watching, flip delays."""
    conn = Conn(port)
    flip(conn, "passing")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "scrape.yml"
        config.write_text(VMAGENT_CONFIG.format(port=port))
        api_port = free_port()
        cpu0, t0 = cpu_seconds(agent.pid), time.perf_counter()
        vm = subprocess.Popen(["vmagent", f"-promscrape.config={config}", f"-httpListenAddr=127.0.0.1:{api_port}",
                               f"-remoteWrite.tmpDataPath={tmp}/data", "-remoteWrite.url=http://127.0.0.1:9/write",
                               f"-promscrape.consulSDCheckInterval={interval}", "-loggerLevel=ERROR",
                               *([f"-promscrape.consul.waitTime={wait}"] if wait else [])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600
            while parked(port) < services:  # one blocking health query per service
                assert time.monotonic() < deadline, f"vmagent parked only {parked(port)} watches"
                assert vm.poll() is None, "vmagent exited"
                time.sleep(0.5)
            start_s, start_cpu = time.perf_counter() - t0, cpu_seconds(agent.pid) - cpu0
            watches = parked(port)
            while vmagent_health(api_port, "10.0.0.1:9100") != "passing":
                assert time.monotonic() < deadline, "vmagent never showed svc-0-0"
                time.sleep(0.2)
            vm_cpu0, cpu0, t0 = cpu_seconds(vm.pid), cpu_seconds(agent.pid), time.perf_counter()
            time.sleep(cpu_window)
            elapsed = time.perf_counter() - t0
            idle_cpu_per_min = (cpu_seconds(agent.pid) - cpu0) / elapsed * 60
            vm_cpu_per_min = (cpu_seconds(vm.pid) - vm_cpu0) / elapsed * 60
            delays = []
            for rep in range(flips):
                want = ("critical", "passing")[rep % 2]
                t0 = time.perf_counter()
                flip(conn, want)
                while vmagent_health(api_port, "10.0.0.1:9100") != want:
                    assert time.perf_counter() - t0 < 300, f"vmagent never saw {want}"
                    time.sleep(0.05)
                delays.append(time.perf_counter() - t0)
        finally:
            vm.terminate()
            vm.wait(30)
    return {"interval": interval, "wait": wait or "vmagent's default (525s)", "watches": watches, "start_s": start_s, "start_cpu_s": start_cpu,
            "idle_cpu_s_per_min": idle_cpu_per_min, "vmagent_cpu_s_per_min": vm_cpu_per_min,
            "cpu_window_s": elapsed, "flip_delays_s": delays}


def timed_gets(conn: Conn, path: str, reps: int) -> list[float]:
    return [conn.timed_get(path)[0] for _ in range(reps)]


def ms(times: list[float]) -> dict:
    """Median, fastest and slowest of `times` (seconds), in ms, with how many there were."""
    return {"median": statistics.median(times) * 1000, "min": min(times) * 1000, "max": max(times) * 1000,
            "runs": len(times)}


def raise_nofile() -> None:
    """Room for one connection per watched service (in the agent and in vmagent)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def run(services: int, instances: int, reps: int, vmagent_intervals: list[str], cpu_window: float,
        vmagent_flips: int, vmagent_wait: str) -> dict:
    port = free_port()
    raise_nofile()
    # consul_sd keeps one connection per service from one address: lift the per-client cap
    agent = subprocess.Popen([sys.executable, "-m", "appliance", "agent", "-dev", "-node", "bench", "-http-port",
                              str(port), "-dns-port", "-1", "-log-level", "warn", "-server-port", str(free_port()),
                              "-serf-lan-port", str(free_port()), "-serf-wan-port", str(free_port()),
                              "-hcl", f"limits {{ http_max_conns_per_client = {services * 2 + 100} }}"], cwd=ROOT,
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
        warm = timed_gets(conn, "/v1/sd/prometheus", reps)
        flips = []
        for rep in range(reps):  # one check flips: one service is rendered again, the rest reused
            status, _ = conn.request("PUT", "/v1/catalog/register", json.dumps({
                "Node": "node-0", "Address": "10.0.0.1", "NodeMeta": {"rack": "r0", "env": "prod"},
                "Check": {"CheckID": "svc-0-0-alive", "Name": "alive", "Status": ("critical", "passing")[rep % 2],
                          "ServiceID": "svc-0-0"}}).encode())
            assert status == 200
            flips.append(conn.timed_get("/v1/sd/prometheus")[0])
        one = timed_gets(conn, "/v1/sd/prometheus?service=svc-42", reps)

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
        bare_times = timed_gets(Conn(bare_port), "/", reps)
        os.unlink(fh.name)
        vm = [vmagent_phase(agent, port, services, iv, cpu_window, vmagent_flips, vmagent_wait)
              for iv in vmagent_intervals]
        for v in vm:
            print(json.dumps(v), flush=True)
        return {"vmagent": vm, "services": services, "instances": instances, "targets": len(groups), "populate_s": populate_s,
                "bytes": len(body), "cold_ms": cold_s * 1000, "flip": ms(flips), "warm": ms(warm), "one": ms(one),
                "consul_sd_requests": len(json.loads(names)) + 1, "consul_sd_ms": consul_sd_s * 1000,
                "consul_sd_bytes": sd_bytes, "bare": ms(bare_times)}
    finally:
        for proc in (agent, bare):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def vmagent_rows(r: dict) -> str:
    if not r.get("vmagent"):
        return ""
    rows = [f"""
vmagent {r.get('vmagent_version', '?')} (measured {datetime.date.today().isoformat()}) with `consul_sd_configs` over all {r['services']:,} services: one blocking
query per service (the agent's per-client connection limit raised for it), blocking wait
{r['vmagent'][0]['wait']} (`-promscrape.consul.waitTime`; 2 min is what Prometheus's consul_sd uses, vmagent's
own default is 525 s). CPU is the agent process's user + system time from /proc/<pid>/stat:
while vmagent opens its watches, then while it only watches, over a window longer than the wait
so every watch times out and is asked again. A flip is one check set by
`PUT /v1/catalog/register`, timed until vmagent's `/api/v1/targets` shows the new health label;
vmagent applies discovery results every `-promscrape.consulSDCheckInterval`.

| vmagent `-promscrape.consulSDCheckInterval` | watches parked | start: time / agent CPU | agent CPU while watching, nothing changing | vmagent's own CPU | check flip seen by vmagent (median, range) |
| --- | --- | --- | --- | --- | --- |"""]
    for v in r["vmagent"]:
        d = v["flip_delays_s"]
        rows.append(f"| {v['interval']} | {v['watches']:,} | {v['start_s']:.1f} s / {v['start_cpu_s']:.1f} s "
                    f"| {v['idle_cpu_s_per_min']:.2f} s per minute (over {v['cpu_window_s']:.0f} s) "
                    f"| {v['vmagent_cpu_s_per_min']:.2f} s per minute "
                    f"| {statistics.median(d):.2f} s ({min(d):.2f}-{max(d):.2f} s, {len(d)} flips) |")
    return "\n".join(rows) + "\n"


def write_section(path: Path, r: dict, command: str) -> None:
    today = datetime.date.today().isoformat()
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach benchmark runs cairn and a real peer side by side in one run.\n"
    pattern = re.compile(r"## Service discovery\n.*?(?=\n## |\Z)", re.S)
    vmagent, kept = vmagent_rows(r), ""
    old = pattern.search(text)
    if not vmagent and old and (earlier := re.search(r"\n\n(vmagent .*)", old.group(0), re.S)):
        vmagent, kept = "\n" + earlier.group(1).rstrip("\n") + "\n", " (the vmagent part kept from the last run that measured it)"

    def cell(f: dict, digits: int) -> str:
        return f"{f['median']:.{digits}f} ms ({f['min']:.{digits}f}-{f['max']:.{digits}f}, {f['runs']} runs)"

    section = f"""## Service discovery

Measured {today} on {machine()}, with `{command}`{kept}.
Catalog: {r['services']:,} services x {r['instances']} instances ({r['targets']:,} targets with the
agent's own), on 500 nodes, each with node meta, two tags, service meta and one check. Times are the
median (fastest-slowest, runs) of requests one after another on one connection; the first render
and the consul_sd pass happen once per run.

| what | time | size |
| --- | --- | --- |
| `GET /v1/sd/prometheus`, first ever (renders every group; once) | {r['cold_ms']:.0f} ms | {r['bytes'] / 1e6:.1f} MB |
| the same after one check flip (one service rendered again, the rest reused) | {cell(r['flip'], 0)} | same |
| the same again, from the render cache | {cell(r['warm'], 1)} | same |
| `GET /v1/sd/prometheus?service=svc-42` | {cell(r['one'], 2)} | |
| peer: bare aiohttp handler returning the same bytes | {cell(r['bare'], 1)} | same |
| peer: consul_sd's requests for the same targets, sequential ({r['consul_sd_requests']:,} requests, once) | {r['consul_sd_ms']:.0f} ms | {r['consul_sd_bytes'] / 1e6:.1f} MB |
""" + vmagent
    text = pattern.sub(lambda _: section.rstrip("\n") + "\n", text) if old else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--vmagent-intervals", default="30s,1s",
                        help="vmagent -promscrape.consulSDCheckInterval values to run with, comma-separated "
                             "(empty: skip vmagent)")
    parser.add_argument("--vmagent-wait", default="2m",
                        help="vmagent -promscrape.consul.waitTime, the wait of its blocking queries (2m is what "
                             "Prometheus's consul_sd uses; empty: vmagent's default, 525s)")
    parser.add_argument("--cpu-window", type=float, default=150.0,
                        help="seconds of quiet watching to measure CPU over (longer than the wait, so that "
                             "every watch returns and is asked again at least once)")
    parser.add_argument("--flips", type=int, default=4, help="check flips timed per vmagent run")
    parser.add_argument("--write", help="put the results in this markdown file's Service discovery section")
    args = parser.parse_args()
    intervals = [i for i in args.vmagent_intervals.split(",") if i]
    if intervals and not shutil.which("vmagent"):
        sys.exit("bench/sd needs vmagent for --vmagent-intervals (Debian: apt-get install victoria-metrics)")
    result = run(args.services, args.instances, args.reps, intervals, args.cpu_window, args.flips,
                 args.vmagent_wait)
    if intervals:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "victoria-metrics"], capture_output=True,
                             text=True)
        result["vmagent_version"] = out.stdout.strip() or "?"
    print(json.dumps(result, indent=2))
    if args.write:
        write_section(Path(args.write), result,
                      command_line("bench/sd/run.py"))


if __name__ == "__main__":
    main()
