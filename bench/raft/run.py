"""bench/raft: replicated writes and linearizable reads, a 3-server cairn cluster against a
3-member etcd cluster on the same machine, and leader failover time under kill -9.

Run:  uv run python bench/raft/run.py [--duration 10] [--reps 3] [--kills 20] [--write BENCHMARKS.md]

1. Two clusters, started here on loopback, each member with its own data dir under one
   temporary directory, fsync on as each ships: cairn (`cairn agent -server -bootstrap-expect 3`,
   `raft_multiplier = 1`, autopilot `min_quorum = 3` so that dead-server cleanup keeps a killed
   server in the configuration, as etcd keeps a killed member) and etcd (Debian's `etcd-server`,
   defaults: 100 ms heartbeat, 1 s election timeout, what raft_multiplier = 1 gives cairn).
2. Writes. The same load generator for both: wrk (Debian's package, C) with one thread and 64
   connections, each sending small writes back to back to the cluster's leader: cairn
   `PUT /v1/kv/bench/<n>`, etcd `POST /v3/kv/put` on its JSON gateway, the same keys (10,000,
   cycled) and the same 32-byte value. Writes/s and the p50/p99 latency wrk measures; the
   ratio is cairn / etcd. Both clusters run all along and the runs alternate between them
   (`--reps` each, the median counts), so a busy moment on the machine hits both.
3. Linearizable reads, same generator and settings: cairn `GET /v1/kv/bench/<n>?consistent`
   (read index), etcd `POST /v3/kv/range` (linearizable by default), over 1,000 keys written
   in step 2.
4. Leader failover, `--kills` times per cluster: a client writes through a member that is not
   the leader; the leader gets SIGKILL; the time from the kill until a write succeeds again
   is the failover time (a new attempt starts every 20 ms in its own thread, so one stuck on the
   dead leader does not delay the answer). The killed member restarts from its data dir and the
   next round waits until the cluster is whole again (for cairn: three voters again).

Every request that does not answer 2xx is counted and printed: figures with errors are not
figures. The machine, the date and this command go into BENCHMARKS.md with the numbers.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402 - the project's root is on the path only now

CONNECTIONS = 64
VALUE = b"v" * 32
WRITE_KEYS = 10_000
READ_KEYS = 1_000


_GIVEN: set[int] = set()  # ports handed out in this run: both clusters run at once


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            ports.append(port)
    for s in socks:
        s.close()
    return ports


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------- the two clusters


class Cluster:
    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen | None] = [None, None, None]

    def start_all(self) -> None:
        for i in range(3):
            self.start(i)
        self.wait_whole()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def _spawn(self, i: int, args: list[str]) -> None:
        log = open(self.workdir / f"{self.name}-{i}.log", "ab")  # noqa: SIM115 - open while it runs
        self.procs[i] = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_whole(self) -> int:
        """Wait until all three members agree on one leader; return its member number."""
        def agreed():
            leaders = {self.leader_seen_by(i) for i in range(3)}
            return leaders.pop() if len(leaders) == 1 and None not in leaders else None
        return wait(agreed, 60, f"{self.name}: one leader seen by every member") - 1


class Cairn(Cluster):
    name = "cairn"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.ports = [free_ports(5) for _ in range(3)]
        self.servers = [f"127.0.0.1:{p[2]}" for p in self.ports]  # Raft addresses (/v1/status/leader)
        self.join = [f"127.0.0.1:{p[3]}" for p in self.ports]  # -join takes LAN gossip addresses

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i][0]}"

    def start(self, i: int) -> None:
        http_port, dns_port, server_port, lan, wan = self.ports[i]
        args = [sys.executable, "-m", "appliance", "agent", "-server", "-bootstrap-expect", "3",
                "-node", f"c{i + 1}", "-data-dir", str(self.workdir / f"cairn-{i}"), "-bind", "127.0.0.1",
                "-client", "127.0.0.1", "-http-port", str(http_port), "-dns-port", str(dns_port),
                "-server-port", str(server_port), "-serf-lan-port", str(lan), "-serf-wan-port", str(wan),
                "-log-level", "warn", "-retry-interval", "1s",
                "-hcl", "performance { raft_multiplier = 1 } autopilot { min_quorum = 3 }"]
        for address in self.join:
            args += ["-retry-join", address]
        self._spawn(i, args)

    def wait_whole(self) -> int:
        """One leader seen by all three, and all three voters in its configuration."""
        leader = super().wait_whole()

        def voters() -> bool:
            status, body = http("GET", self.url(leader) + "/v1/operator/raft/configuration", timeout=2)
            servers = json.loads(body)["Servers"] if status == 200 else []
            return len(servers) == 3 and all(s["Voter"] for s in servers)

        wait(voters, 60, "cairn: three voters in the Raft configuration")
        return leader

    def leader_seen_by(self, i: int) -> int | None:
        status, body = http("GET", self.url(i) + "/v1/status/leader", timeout=1)
        leader = json.loads(body) if status == 200 else ""
        return self.servers.index(leader) + 1 if leader in self.servers else None

    def write_request(self, key: str) -> tuple[str, str, bytes]:
        return "PUT", f"/v1/kv/{key}", VALUE

    def read_request(self, key: str) -> tuple[str, str, bytes]:
        return "GET", f"/v1/kv/{key}?consistent", b""

    def write_ok(self, status: int, body: bytes) -> bool:
        return status == 200 and body.strip() == b"true"


class Etcd(Cluster):
    name = "etcd"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.ports = [free_ports(2) for _ in range(3)]  # client, peer
        self.initial = ",".join(f"e{i + 1}=http://127.0.0.1:{p[1]}" for i, p in enumerate(self.ports))
        self.ids: dict[str, int] = {}

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i][0]}"

    def start(self, i: int) -> None:
        client, peer = self.ports[i]
        self._spawn(i, ["etcd", "--name", f"e{i + 1}", "--data-dir", str(self.workdir / f"etcd-{i}"),
                        "--listen-client-urls", f"http://127.0.0.1:{client}",
                        "--advertise-client-urls", f"http://127.0.0.1:{client}",
                        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                        "--initial-cluster", self.initial, "--initial-cluster-state", "new",
                        "--initial-cluster-token", "cairn-bench", "--logger", "zap", "--log-level", "error"])

    def _status(self, i: int) -> dict:
        status, body = http("POST", self.url(i) + "/v3/maintenance/status", b"{}", timeout=1)
        return json.loads(body) if status == 200 else {}

    def leader_seen_by(self, i: int) -> int | None:
        st = self._status(i)
        if not st.get("leader") or st["leader"] == "0":
            return None
        self.ids[st["header"]["member_id"]] = i
        if st["leader"] not in self.ids:  # learn the other members' ids
            for j in range(3):
                try:
                    other = self._status(j)
                except OSError:
                    continue
                if other:
                    self.ids[other["header"]["member_id"]] = j
        j = self.ids.get(st["leader"])
        return None if j is None else j + 1

    def write_request(self, key: str) -> tuple[str, str, bytes]:
        return "POST", "/v3/kv/put", json.dumps({"key": b64(key.encode()), "value": b64(VALUE)}).encode()

    def read_request(self, key: str) -> tuple[str, str, bytes]:
        return "POST", "/v3/kv/range", json.dumps({"key": b64(key.encode())}).encode()

    def write_ok(self, status: int, body: bytes) -> bool:
        return status == 200 and b'"header"' in body


# ---------------------------------------------------------------------- wrk, the load generator


def lua_script(requests: list[tuple[str, str, bytes]], path: Path) -> Path:
    """A wrk script cycling through `requests` (method, path, body), each connection in turn."""
    def lua_str(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    rows = ",\n".join(f"  {{{lua_str(m)}, {lua_str(p)}, {lua_str(b.decode())}}}" for m, p, b in requests)
    path.write_text(
        f"local reqs = {{\n{rows}\n}}\n"
        "local n = 0\n"
        "local headers = {[\"Content-Type\"] = \"application/json\"}\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  local r = reqs[((n - 1) % #reqs) + 1]\n"
        "  local body = nil\n"
        "  if r[3] ~= \"\" then body = r[3] end\n"
        "  return wrk.format(r[1], r[2], headers, body)\n"
        "end\n")
    return path


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, script: Path, duration: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
    }


def scripts(cluster: Cluster, workdir: Path) -> tuple[Path, Path]:
    writes = lua_script([cluster.write_request(f"bench/{n}") for n in range(WRITE_KEYS)],
                        workdir / f"{cluster.name}-writes.lua")
    # wrk asks request() once before it starts sending, so writes begin at bench/1
    reads = lua_script([cluster.read_request(f"bench/{n}") for n in range(1, READ_KEYS + 1)],
                       workdir / f"{cluster.name}-reads.lua")
    return writes, reads


def load(clusters: list[Cluster], duration: int, reps: int, workdir: Path) -> dict:
    """Writes, then reads: `reps` runs per cluster, alternating between the clusters so that
    noise from the rest of the machine falls on both; the run with the median rate counts."""
    plan = {c.name: (c, *scripts(c, workdir)) for c in clusters}
    for cluster, writes, _ in plan.values():  # warm-up; also writes the keys the reads ask for
        wrk(cluster.url(cluster.wait_whole()), writes, 2)
    runs: dict = {c.name: {"writes": [], "reads": []} for c in clusters}
    for kind in ("writes", "reads"):
        for _ in range(reps):
            for cluster, writes, reads in plan.values():
                url = cluster.url(cluster.wait_whole())
                if kind == "reads":
                    method, path, body = cluster.read_request(f"bench/{READ_KEYS}")
                    status, _ = http(method, url + path, body or None)
                    if status != 200:
                        raise RuntimeError(f"{cluster.name}: the keys to read are not there (HTTP {status})")
                run = wrk(url, writes if kind == "writes" else reads, duration)
                runs[cluster.name][kind].append(run)
                print(f"  {cluster.name} {kind}: {run['rps']:.0f}/s p50 {run['p50_ms']:.1f} ms "
                      f"p99 {run['p99_ms']:.1f} ms", flush=True)
    result = {}
    for name, kinds in runs.items():
        result[name] = {}
        for kind, done in kinds.items():
            ordered = sorted(done, key=lambda r: r["rps"])
            median = dict(ordered[len(ordered) // 2])
            median["all_rps"] = [r["rps"] for r in done]
            median["non_2xx"] = sum(r["non_2xx"] for r in done)
            median["socket_errors"] = "; ".join(r["socket_errors"] for r in done if r["socket_errors"])
            result[name][kind] = median
    return result


# ---------------------------------------------------------------------- failover


def failover(cluster: Cluster, kills: int) -> list[float]:
    """Seconds from SIGKILL of the leader until a write through another member succeeds."""
    times = []
    for round_ in range(kills):
        leader = cluster.wait_whole()
        other = (leader + 1) % 3
        method, path, body = cluster.write_request(f"failover/{round_}")
        status, answer = http(method, cluster.url(other) + path, body)
        if not cluster.write_ok(status, answer):
            raise RuntimeError(f"{cluster.name}: write before the kill failed: {status} {answer[:200]!r}")
        cluster.kill(leader)
        killed = time.monotonic()
        times.append(first_success(cluster, cluster.url(other) + path, method, body) - killed)
        print(f"  {cluster.name} kill {round_ + 1}: {times[-1]:.2f} s", flush=True)
        cluster.start(leader)  # back from its data dir (etcd then ignores its --initial-cluster flags)
    cluster.wait_whole()
    return times


def first_success(cluster: Cluster, url: str, method: str, body: bytes) -> float:
    """When the first write to `url` succeeds: a new attempt starts every 20 ms, each in its own
    thread (one may hang on the dead leader for seconds: etcd holds it for its 5 s request
    timeout), so the answer is not delayed by an attempt that is stuck."""
    done: list[float] = []

    def attempt() -> None:
        try:
            status, answer = http(method, url, body, timeout=10)
        except OSError:
            return
        if cluster.write_ok(status, answer):
            done.append(time.monotonic())

    started = time.monotonic()
    threads = []
    while not done:
        if time.monotonic() - started > 30:
            raise RuntimeError(f"{cluster.name}: no write succeeded within 30 s of the kill")
        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    return min(done)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


# ---------------------------------------------------------------------- report


def etcd_version() -> str:
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    return out.split("\n", 1)[0].replace("etcd Version: ", "")


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (out.stdout + out.stderr).split()[1]


def write_section(path: Path, res: dict, args: argparse.Namespace) -> None:
    today = datetime.date.today().isoformat()
    c, e = res["cairn"], res["etcd"]
    cw, ew, cr, er = c["writes"], e["writes"], c["reads"], e["reads"]
    cf, ef = res["failover"]["cairn"], res["failover"].get("etcd", [])
    command = "uv run python bench/raft/run.py --write BENCHMARKS.md"
    if args.duration != 10 or args.kills != 20 or args.reps != 3:
        command = (f"uv run python bench/raft/run.py --duration {args.duration} --kills {args.kills} "
                   f"--reps {args.reps} --write BENCHMARKS.md")

    def errs(r: dict) -> str:
        return str(r["non_2xx"]) + (f" ({r['socket_errors']})" if r["socket_errors"] else "")

    def rates(r: dict) -> str:
        return ", ".join(f"{v:.0f}" for v in r["all_rps"])

    def pairs(kind: str) -> str:
        """The spread of the per-pair ratios (run i of cairn against run i of etcd, taken in turn)."""
        ratios = [a / b for a, b in zip(c[kind]["all_rps"], e[kind]["all_rps"])]
        return f"pairs {min(ratios):.2f}-{max(ratios):.2f}"

    def fo(times: list[float]) -> str:
        if not times:
            return "not measured"
        return (f"median {statistics.median(times):.2f} s, p99 {quantile(times, 0.99):.2f} s, "
                f"max {max(times):.2f} s ({len(times)} kills)")

    section = f"""## Raft writes

Measured {today} on {machine()}, etcd {etcd_version()}, wrk {wrk_version()}, with `{command}`.
Three cairn servers (`-bootstrap-expect 3`, `raft_multiplier = 1`, autopilot `min_quorum = 3`) and three etcd members
(Debian's etcd-server, default settings) on loopback, each member with its own data dir, fsync on;
both clusters run on the same cores at the same time, loaded one at a time. Load: wrk -t1 -c{CONNECTIONS} --latency,
{args.reps} runs of {args.duration} s per cluster and kind, alternating between the clusters, the median run shown (all rates
in the last row), to the leader, {len(VALUE)}-byte values on {WRITE_KEYS:,} keys (cairn `PUT /v1/kv/bench/<n>`, etcd
`POST /v3/kv/put` on its JSON gateway); reads over {READ_KEYS:,} of those keys (cairn
`GET /v1/kv/...?consistent`, etcd `POST /v3/kv/range`, linearizable by default).

| what | cairn | etcd | cairn / etcd |
| --- | --- | --- | --- |
| writes/s | {cw['rps']:.0f} | {ew['rps']:.0f} | **{cw['rps'] / ew['rps']:.2f}x** ({pairs('writes')}; target 1.0x) |
| write latency p50 / p99 | {cw['p50_ms']:.1f} / {cw['p99_ms']:.1f} ms | {ew['p50_ms']:.1f} / {ew['p99_ms']:.1f} ms | p99 **{cw['p99_ms'] / ew['p99_ms']:.2f}x** (target at most 1.0x) |
| linearizable reads/s | {cr['rps']:.0f} | {er['rps']:.0f} | **{cr['rps'] / er['rps']:.2f}x** ({pairs('reads')}) |
| read latency p50 / p99 | {cr['p50_ms']:.1f} / {cr['p99_ms']:.1f} ms | {er['p50_ms']:.1f} / {er['p99_ms']:.1f} ms | |
| requests not answered 2xx (writes, reads) | {errs(cw)}, {errs(cr)} | {errs(ew)}, {errs(er)} | |
| leader failover after kill -9 (until a write through another member succeeds) | {fo(cf)} | {fo(ef)} | |
| every run, writes/s; reads/s | {rates(cw)}; {rates(cr)} | {rates(ew)}; {rates(er)} | |
"""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach benchmark runs cairn and a real peer side by side in one run.\n"
    pattern = re.compile(r"## Raft writes\n.*?(?=\n## |\Z)", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--kills", type=int, default=20, help="leader kills per cluster (default 20)")
    parser.add_argument("--reps", type=int, default=3, help="wrk runs per cluster and kind, alternating (default 3)")
    parser.add_argument("--write", help="put the results in this markdown file's 'Raft writes' section")
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("etcd", "etcd-server")):
        if not shutil.which(tool):
            sys.exit(f"bench/raft needs {tool} (Debian: apt-get install {package})")
    results: dict = {"failover": {}}
    with tempfile.TemporaryDirectory(prefix="cairn-bench-raft-") as tmp:
        workdir = Path(tmp)
        clusters: list[Cluster] = [Cairn(workdir), Etcd(workdir)]
        try:
            for cluster in clusters:
                cluster.start_all()
            results.update(load(clusters, args.duration, args.reps, workdir))
            print(json.dumps({c.name: results[c.name] for c in clusters}, indent=2), flush=True)
            for cluster in clusters if args.kills else ():
                results["failover"][cluster.name] = failover(cluster, args.kills)
        except BaseException:
            for log in sorted(workdir.glob("*.log")):
                print(f"--- {log.name}\n" + log.read_text(errors="replace")[-2000:], file=sys.stderr)
            raise
        finally:
            for cluster in clusters:
                cluster.stop_all()
    c, e = results["cairn"], results["etcd"]
    print(f"writes/s cairn/etcd = {c['writes']['rps'] / e['writes']['rps']:.2f}x, "
          f"p99 cairn/etcd = {c['writes']['p99_ms'] / e['writes']['p99_ms']:.2f}x, "
          f"reads/s cairn/etcd = {c['reads']['rps'] / e['reads']['rps']:.2f}x")
    for name, times in results["failover"].items():
        print(f"failover {name}: median {statistics.median(times):.2f} s, p99 {quantile(times, 0.99):.2f} s")
    if args.write:
        write_section(Path(args.write), results, args)


if __name__ == "__main__":
    main()
