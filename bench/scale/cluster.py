"""bench/scale/cluster: bench/scale's catalog on a real 3-server cluster and a client agent.

    uv run python bench/scale/cluster.py [--nodes 10000] [--instances 100000] [--per-service 10]
        [--parked 50000] [--flips 1000] [--reps 1000] [--quick] [--write BENCHMARKS.md]

Starts three `cairn agent -server -bootstrap-expect 3` processes and one client agent on
127.0.0.1 (each its own ports and data dir in a temporary directory, Raft at multiplier 1, the
per-client HTTP connection limit raised), then, one after the other:

1. loads bench/scale/catalog.py's catalog (as an external registrar writes it: no service
   addresses, a `node-health` node check) through `PUT /v1/txn` on the leader, 64 operations a
   request from --loaders concurrent connections (nodes first, then the instances, each
   instance's service and checks in one request); the time until every server has applied the
   leader's index and the client's replica serves it;
2. each agent's memory (/proc/<pid>/smaps_rollup, Rss and Pss) before and after, per instance;
   the client agent keeps a full replica of the store (appliance/client/replica.py);
3. `GET /v1/health/service/<one>?passing` (--reps sequential requests on one connection) against
   the leader and the client, and a DNS `<one>.service.consul` A query over UDP (--reps);
4. `GET /v1/sd/prometheus` on the leader and the client: the first render, then after one flip;
5. `GET /v1/snapshot` (time, size) and `PUT /v1/snapshot` of the same bytes (time);
6. a follower catching up: one follower stopped, its Raft state (data dir `raft/`) deleted,
   started again: the time until its applied index reaches the leader's and until a stale
   `catalog/services` from it lists every service;
7. a wake-up storm: --parked blocking `health/service/<name>` queries spread over the services,
   the four agents and source addresses 127.0.0.2.. (held by worker processes: one process may
   hold 20,000 descriptors here), then --flips check flips (one `PUT /v1/txn` each, 20
   connections): how many woke, how many were due, first flip to last wake, and whether every
   woken answer's X-Consul-Index is at or after its service's flip;
8. vmagent with `consul_sd_configs` against the client agent on every service (each target's
   address rewritten to 127.0.0.1:1, so nothing is dialled elsewhere): the time until its
   discovered targets equal the catalog's instances, and the CPU of vmagent and the agent.
If a step fails, its error (and the agent log lines) is recorded and the next step runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http.client
import json
import multiprocessing
import queue
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import command_line, machine  # noqa: E402 - the project's root is on the path only now
from bench.scale.catalog import bodies  # noqa: E402
from bench.sd.run import cpu_seconds  # noqa: E402
from tests.harness import Agent, Cluster, free_port  # noqa: E402

TXN_OPS = 64
MB = 1 << 20
SECTION = "### A 3-server cluster at 100,000 instances"
RAFT_MULTIPLIER = 5  # Consul's default


def snapshots(instances: int) -> str:
    """A snapshot every instances / 100 entries (Consul: 16,384) keeping a quarter of that behind
    it (Consul: 10,240): the load's instances / 25 txn entries are compacted into a snapshot, and
    a new server is sent that snapshot rather than the log."""
    every = max(16, instances // 100)
    return f"raft_snapshot_threshold = {every}\nraft_trailing_logs = {every // 4}"


# -- small clients ------------------------------------------------------------------------------

class Conn:
    """One keep-alive HTTP/1.1 connection to an agent."""

    def __init__(self, agent: Agent, timeout: float = 300) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        self.conn.request(method, path, body=body)
        resp = self.conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()

    def ok(self, method: str, path: str, body: bytes | None = None) -> tuple[dict[str, str], bytes]:
        status, headers, data = self.request(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:300]!r}")
        return headers, data

    def close(self) -> None:
        self.conn.close()


def smaps(pid: int) -> dict[str, int]:
    """Rss and Pss of a process, bytes (/proc/<pid>/smaps_rollup)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def applied_index(agent: Agent) -> int:
    return int(agent.raft_stats().get("applied_index", 0))


def catalog_index(agent: Agent) -> tuple[int, int]:
    """(X-Consul-Index, service names) of a stale `catalog/services` read from `agent`."""
    status, headers, body = agent.get("/v1/catalog/services?stale", timeout=120)
    if status != 200:
        return 0, 0
    return int(headers.get("X-Consul-Index", 0)), len(json.loads(body))


def pct(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> float:
    """Seconds until `predicate` holds; raises after `timeout`."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
    return time.perf_counter() - start


# -- 1. loading ---------------------------------------------------------------------------------

def txn_groups(nodes: int, instances: int, per_service: int) -> Iterator[list[dict[str, Any]]]:
    """The catalog as groups of txn operations: a node with its check, or an instance's service
    with its checks; a group never spans two requests."""
    for body in bodies(nodes, instances, gossip=False, per_service=per_service):
        node = body["Node"]
        if "Service" not in body:
            yield [{"Node": {"Verb": "set", "Node": {"Node": node, "Address": body["Address"],
                                                     "Meta": body["NodeMeta"]}}},
                   {"Check": {"Verb": "set", "Check": {"Node": node, **body["Check"]}}}]
            continue
        service = body["Service"]
        yield [{"Service": {"Verb": "set", "Node": node, "Service": service}},
               *({"Check": {"Verb": "set", "Check": {"Node": node, "ServiceName": service["Service"], **check}}}
                 for check in body["Checks"])]


def requests_of(groups: Iterator[list[dict[str, Any]]]) -> Iterator[bytes]:
    ops: list[dict[str, Any]] = []
    for group in groups:
        if len(ops) + len(group) > TXN_OPS:
            yield json.dumps(ops).encode()
            ops = []
        ops.extend(group)
    if ops:
        yield json.dumps(ops).encode()


def send_all(agent: Agent, payloads: list[bytes], loaders: int) -> None:
    todo: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for payload in payloads:
        todo.put(payload)
    errors: list[str] = []

    def loader() -> None:
        conn = Conn(agent)
        try:
            while not errors:
                try:
                    payload = todo.get_nowait()
                except queue.Empty:
                    return
                status, _, data = conn.request("PUT", "/v1/txn", payload)
                if status != 200:
                    errors.append(f"PUT /v1/txn: HTTP {status}: {data[:300]!r}")
        except OSError as exc:
            errors.append(f"PUT /v1/txn: {exc!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=loader) for _ in range(loaders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])


def load(cluster: Cluster, leader: Agent, args: argparse.Namespace) -> dict[str, Any]:
    groups = list(txn_groups(args.nodes, args.instances, args.per_service))
    node_requests = list(requests_of(iter(groups[:args.nodes])))
    instance_requests = list(requests_of(iter(groups[args.nodes:])))
    ops = sum(len(g) for g in groups)
    del groups
    start = time.perf_counter()
    send_all(leader, node_requests, args.loaders)
    send_all(leader, instance_requests, args.loaders)
    loaded = time.perf_counter() - start
    target = applied_index(leader)
    leader_catalog = catalog_index(leader)[0]
    replicated = wait_for("every server applying the leader's index",
                          lambda: all(applied_index(s) >= target for s in cluster.servers), 600, 0.2)
    client = cluster.clients[0]
    client_s = wait_for("the client's replica at the leader's catalog index",
                        lambda: catalog_index(client)[0] >= leader_catalog, 600, 0.2)
    return {"requests": len(node_requests) + len(instance_requests), "ops": ops, "load_s": loaded,
            "replicated_s": replicated, "client_s": client_s, "index": target}


# -- 3. answer latency ----------------------------------------------------------------------------

def http_latency(agent: Agent, path: str, reps: int) -> dict[str, Any]:
    conn = Conn(agent, timeout=30)
    times, size = [], 0
    for _ in range(reps):
        start = time.perf_counter()
        _, body = conn.ok("GET", path)
        times.append(time.perf_counter() - start)
        size = len(body)
    conn.close()
    return {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99), "bytes": size, "reps": reps}


def dns_query(name: str, qid: int) -> bytes:
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def dns_latency(agent: Agent, name: str, reps: int) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", agent.dns_port))
    times, answers = [], 0
    for i in range(reps):
        query = dns_query(name, i & 0xFFFF)
        start = time.perf_counter()
        sock.send(query)
        reply = sock.recv(65535)
        times.append(time.perf_counter() - start)
        qid, flags, _, answers = struct.unpack("!HHHH", reply[:8])
        if qid != i & 0xFFFF or flags & 0xF or not answers:
            raise RuntimeError(f"DNS {name} from {agent.name}: id {qid}, rcode {flags & 0xF}, {answers} answers")
    sock.close()
    return {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99), "answers": answers, "reps": reps}


# -- 4. http_sd -----------------------------------------------------------------------------------

def flip_body(i: int, args: argparse.Namespace, status: str) -> bytes:
    """A txn setting instance i's first check to `status`."""
    sid = f"svc-{i // args.per_service:05d}-{i % args.per_service}"
    check = {"Node": f"node-{i % args.nodes:05d}", "CheckID": f"service:{sid}", "Name": f"Service "
             f"'svc-{i // args.per_service:05d}' check", "ServiceID": sid,
             "ServiceName": f"svc-{i // args.per_service:05d}", "Status": status, "Output": "HTTP GET: 200 OK"}
    return json.dumps([{"Check": {"Verb": "set", "Check": check}}]).encode()


def first_status(i: int) -> str:
    return "passing" if i % 50 else "critical"  # as bench/scale/catalog.py writes it


def flip(conn: Conn, i: int, args: argparse.Namespace, status: str) -> int:
    """Set instance i's check; the flip's index."""
    _, data = conn.ok("PUT", "/v1/txn", flip_body(i, args, status))
    return int(json.loads(data)["Results"][0]["Check"]["ModifyIndex"])


def sd_render(leader: Agent, agent: Agent, args: argparse.Namespace) -> dict[str, Any]:
    conn = Conn(agent)
    start = time.perf_counter()
    _, body = conn.ok("GET", "/v1/sd/prometheus")
    cold = time.perf_counter() - start
    groups = len(json.loads(body))
    writer = Conn(leader)
    index = flip(writer, 1, args, "critical")
    wait_for("the flip on the agent", lambda: index_of(agent) >= index, 60, 0.02)
    start = time.perf_counter()
    _, after = conn.ok("GET", "/v1/sd/prometheus")
    flipped = time.perf_counter() - start
    flip(writer, 1, args, first_status(1))
    conn.close()
    writer.close()
    return {"cold_ms": cold * 1000, "bytes": len(body), "groups": groups, "flip_ms": flipped * 1000,
            "flip_bytes": len(after)}


def index_of(agent: Agent) -> int:
    status, headers, _ = agent.get("/v1/health/service/svc-00000?stale", timeout=30)
    return int(headers.get("X-Consul-Index", 0)) if status == 200 else 0


# -- 5. snapshot ----------------------------------------------------------------------------------

def snapshot(leader: Agent) -> dict[str, Any]:
    conn = Conn(leader)
    start = time.perf_counter()
    _, data = conn.ok("GET", "/v1/snapshot")
    save = time.perf_counter() - start
    out: dict[str, Any] = {"save_ms": save * 1000, "bytes": len(data)}
    start = time.perf_counter()
    status, _, body = conn.request("PUT", "/v1/snapshot", data)
    out["restore_ms"] = (time.perf_counter() - start) * 1000
    if status != 200:
        out["restore_error"] = f"HTTP {status}: {body[:300].decode(errors='replace')}"
    conn.close()
    return out


# -- 6. a follower catching up --------------------------------------------------------------------

def raft_view(follower: Agent, leader: Agent) -> str:
    """The follower's own Raft figures and the leader's idea of its last index, for a report."""
    own = {k: follower.raft_stats().get(k) for k in ("state", "applied_index", "last_log_index", "term")}
    servers = leader.poll_json("/v1/operator/raft/configuration")[1] or {}
    seen = next((s.get("LastIndex") for s in servers.get("Servers", []) if s["Address"] == follower.server_addr), None)
    said = [line[24:160] for line in follower.log(this_start=True).splitlines() if "bootstrap" in line]
    return (f"{follower.name}: {own}; the leader's operator/raft/configuration gives it LastIndex {seen}; "
            f"its log: {said[:2]}")


def catch_up(cluster: Cluster, leader: Agent, server: Agent, timeout: float) -> dict[str, Any]:
    """Start `server` (stopped, or new) and time until it has the leader's index and serves every service."""
    wait_for("a snapshot on the leader", lambda: int(leader.raft_stats().get("last_snapshot_index", 0)) > 0, 120, 1.0)
    snapshot_index = int(leader.raft_stats()["last_snapshot_index"])
    services = catalog_index(leader)[1]
    target = applied_index(leader)
    start = time.perf_counter()
    server.start()
    server.wait_http(timeout=120)
    try:
        wait_for(f"{server.name} applying the leader's index {target}", lambda: applied_index(server) >= target,
                 timeout, 0.1)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; {raft_view(server, leader)}") from None
    applied_s = time.perf_counter() - start
    wait_for(f"a stale catalog/services on {server.name} listing every service",
             lambda: catalog_index(server)[1] >= services, timeout, 0.1)
    return {"server": server.name, "index": target, "snapshot_index": snapshot_index, "applied_s": applied_s,
            "full_read_s": time.perf_counter() - start,
            "services": services, "log": [line[24:200] for line in server.log(this_start=True).splitlines()
                                          if re.search(r"snapshot|bootstrap", line, re.I)][:4]}


def follower_catch_up(cluster: Cluster, leader: Agent, timeout: float) -> dict[str, Any]:
    """One follower stopped, its Raft state deleted, started again; if it does not catch up it is
    stopped again (the rest of the run goes on without it)."""
    follower = next(s for s in cluster.servers if s is not leader)
    follower.stop()
    shutil.rmtree(follower.data_dir / "raft")
    try:
        return catch_up(cluster, leader, follower, timeout)
    except RuntimeError:
        follower.stop(kill=True, check=False)
        raise


def new_server_catch_up(cluster: Cluster, leader: Agent, timeout: float) -> dict[str, Any]:
    """A fresh fourth server joins; it leaves again afterwards."""
    s1 = cluster.servers[0]
    server = Agent(s1.tmp_path, "s4", "-server", *s1.args[3:], join=cluster.join)  # no -bootstrap-expect
    try:
        return catch_up(cluster, leader, server, timeout)
    finally:
        server.cli("leave")
        server.stop(check=False)


# -- 7. the wake-up storm ---------------------------------------------------------------------------

PER_SOURCE = 2000  # connections from one source address (the kernel gives each bound address 28,000 ports)
PER_WORKER = 16000  # connections one worker process holds (its descriptor limit is 20,000 here)


class Parked(asyncio.Protocol):
    """One raw HTTP/1.1 connection holding a blocking query: when (wall clock) its answer's head
    arrived, its status and X-Consul-Index."""

    def __init__(self, request: bytes) -> None:
        self.request, self.head = request, b""
        self.answer: tuple[float, int, int] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.head += data  # an error's body (Consul's text) is kept too, up to 4 kB
        if self.answer is None and b"\r\n\r\n" in self.head:
            head = self.head.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
            index = re.search(r"(?im)^X-Consul-Index:\s*(\d+)", head)
            self.answer = (time.time(), int(head.split()[1]), int(index[1]) if index else 0)
        if (self.answer is not None and self.answer[1] == 200) or len(self.head) > 4096:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.answer is None


def park_worker(jobs: list[tuple[str, int, str]], pipe: Any) -> None:
    """Hold `jobs` (source address, agent port, path) as parked queries until told to stop; then
    send back every answer (job number, wall time, status, index) and the connections lost."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        conns: list[Parked] = []
        errors: list[str] = []

        async def one(src: str, port: int, path: str) -> None:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            proto = Parked(request)
            conns.append(proto)
            try:
                await loop.create_connection(lambda: proto, "127.0.0.1", port, local_addr=(src, 0))
            except OSError as exc:
                proto.lost = True
                errors.append(repr(exc))

        for start in range(0, len(jobs), 200):
            await asyncio.gather(*(one(*job) for job in jobs[start:start + 200]))
        pipe.send(("parked", len(jobs) - len(errors), errors[:3]))
        await loop.run_in_executor(None, pipe.recv)
        refused = [c.head.split(b"\r\n\r\n", 1)[-1][:200].decode(errors="replace") for c in conns
                   if c.answer and c.answer[1] != 200]
        pipe.send(("done", [(n, *c.answer) for n, c in enumerate(conns) if c.answer],
                   sum(c.lost for c in conns), refused[:1]))

    asyncio.run(main())


def blocking_gauge(agent: Agent) -> int:
    status, _, body = agent.get("/v1/agent/metrics", timeout=60)
    if status != 200:
        return -1
    return next((int(g["Value"]) for g in json.loads(body)["Gauges"] if g["Name"].endswith("rpc.queries_blocking")), 0)


def flip_many(leader: Agent, services: list[int], args: argparse.Namespace,
              instance: int = 0) -> tuple[dict[int, int], list[str], float]:
    """Flip one check of each service (its `instance`-th instance) from 20 connections to the
    leader: each service's flip index, the errors, the seconds from the first to the last."""
    done: dict[int, int] = {}
    errors: list[str] = []
    lock, pending = threading.Lock(), list(services)

    def flipper() -> None:
        conn = Conn(leader, timeout=120)
        while True:
            with lock:
                if not pending:
                    break
                s = pending.pop()
            i = s * args.per_service + instance
            try:
                done[s] = flip(conn, i, args, "passing" if first_status(i) == "critical" else "critical")
            except (OSError, RuntimeError, http.client.HTTPException) as exc:
                errors.append(f"{exc}"[:200])
                conn.close()
                conn = Conn(leader, timeout=120)
        conn.close()

    threads = [threading.Thread(target=flipper) for _ in range(20)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done, errors, time.time() - start


def storm(cluster: Cluster, leader: Agent, args: argparse.Namespace) -> dict[str, Any]:
    agents = [a for a in cluster.agents if a.alive()]
    services = args.instances // args.per_service
    flipped = sorted({j * services // args.flips for j in range(args.flips)})
    baseline: dict[str, Any] = {}
    if args.per_service > 1:  # the same number of flips of other instances, nothing parked yet
        done, errors, baseline["baseline_flips_s"] = flip_many(leader, flipped, args, instance=1)
        baseline["baseline_flips"], baseline["baseline_errors"] = len(done), len(errors)
    index = applied_index(leader)
    jobs = [(f"127.0.{(2 + k // PER_SOURCE) // 256}.{(2 + k // PER_SOURCE) % 256}", agents[k % len(agents)].http_port,
             f"/v1/health/service/svc-{k % services:05d}?index={index}&wait=10m") for k in range(args.parked)]
    ctx = multiprocessing.get_context("fork")
    workers = []
    for start in range(0, len(jobs), PER_WORKER):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=park_worker, args=(jobs[start:start + PER_WORKER], theirs), daemon=True)
        proc.start()
        workers.append((proc, mine, start))
    out: dict[str, Any] = {**baseline, "asked": args.parked, "services": services, "agents": len(agents),
                           "sources": (args.parked + PER_SOURCE - 1) // PER_SOURCE, "workers": len(workers)}
    try:
        t0 = time.perf_counter()
        opened, errors = 0, []
        for _, pipe, _ in workers:
            if not pipe.poll(900):
                raise RuntimeError("a parking worker did not report within 900 s")
            _, n, errs = pipe.recv()
            opened += n
            errors += errs
        out.update(opened=opened, open_errors=errors[:3], open_s=time.perf_counter() - t0)
        gauges: list[int] = []
        sums: list[int] = []

        def all_parked() -> bool:  # or no more for 15 s
            gauges[:] = [blocking_gauge(a) for a in agents]
            sums.append(sum(gauges))
            return sums[-1] >= opened or (len(sums) > 15 and sums[-1] == sums[-16])

        try:
            out["park_s"] = wait_for("every opened query parked", all_parked, 300, 1.0)
        except RuntimeError as exc:
            out["park_error"] = str(exc)
        out["parked"], out["parked_by_agent"] = sum(gauges), list(gauges)
        out["rss_parked"] = {a.name: smaps(a.pgid)["Rss"] for a in agents}
        first = time.time()
        due_index, flip_errors, out["flips_s"] = flip_many(leader, flipped, args)
        out["flips"], out["flip_errors"], out["flip_error"] = len(due_index), len(flip_errors), flip_errors[:1]
        due = sum(1 for _, _, path in jobs if int(path.split("svc-")[1][:5]) in due_index)
        out["due"] = due
        previous, still = -1, opened
        settle = time.perf_counter()
        while time.perf_counter() - settle < 120:  # until the parked count stops falling
            still = sum(blocking_gauge(a) for a in agents)
            if still <= opened - due or still == previous:
                break
            previous = still
            time.sleep(2)
        out["still_parked"] = still
        answers: list[tuple[int, float, int, int]] = []
        lost = 0
        for _, pipe, _ in workers:
            pipe.send("stop")
        for _, pipe, start in workers:
            if not pipe.poll(300):
                raise RuntimeError("a parking worker did not answer within 300 s")
            _, got, n_lost, refused = pipe.recv()
            out["refused"] = out.get("refused") or refused
            answers += [(start + n, at, status, idx) for n, at, status, idx in got]
            lost += n_lost
        early = [a for a in answers if a[1] < first]
        woke = [a for a in answers if a[1] >= first]
        svc = [int(jobs[n][2].split("svc-")[1][:5]) for n, *_ in woke]
        woke_due = [a for a, s in zip(woke, svc, strict=True) if s in due_index]
        out.update(statuses={str(k): v for k, v in Counter(a[2] for a in answers).items()},
                   early=len(early), woke=len(woke), woke_due=len(woke_due), woke_other=len(woke) - len(woke_due),
                   lost=lost, non_200=sum(1 for a in answers if a[2] != 200),
                   index_ok=sum(1 for a, s in zip(woke, svc, strict=True) if s in due_index and a[3] >= due_index[s]),
                   last_wake_s=max((a[1] for a in woke_due), default=first) - first)
        if woke_due:
            out["median_wake_s"] = statistics.median(a[1] for a in woke_due) - first
    finally:
        for proc, pipe, _ in workers:
            pipe.close()
            proc.terminate()
            proc.join(10)
    return out


# -- 8. vmagent -------------------------------------------------------------------------------------

def vmagent_config(port: int) -> str:
    """vmagent's scrape config (JSON, which YAML reads): consul_sd over every service of the agent
    at `port`; each target keeps its address as `instance` and its service ID, and is scraped (once
    an hour) at 127.0.0.1:1, never at the catalog's made-up addresses."""
    relabel = [{"source_labels": ["__address__"], "target_label": "instance"},
               {"source_labels": ["__meta_consul_service_id"], "target_label": "service_id"},
               {"target_label": "__address__", "replacement": "127.0.0.1:1"}]
    return json.dumps({"global": {"scrape_interval": "1h"}, "scrape_configs": [
        {"job_name": "cluster", "consul_sd_configs": [{"server": f"127.0.0.1:{port}"}], "relabel_configs": relabel}]})


def vmagent_targets(api_port: int) -> int:
    """Targets vmagent's consul_sd has discovered: the scrapers it started for them."""
    c = http.client.HTTPConnection("127.0.0.1", api_port, timeout=30)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    except OSError:
        return 0
    finally:
        c.close()
    found = re.search(r'^vm_promscrape_active_scrapers\{type="consul_sd_configs"\} (\S+)', text, re.M)
    return int(float(found[1])) if found else 0


def vmagent(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    client = cluster.clients[0]
    want = args.instances + len(client.read_json("/v1/catalog/service/consul"))  # with the servers' own
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "scrape.yml"
        config.write_text(vmagent_config(client.http_port))
        api_port = free_port()
        log = open(Path(tmp) / "vmagent.log", "wb")  # noqa: SIM115 - closed with the directory
        cpu0, t0 = cpu_seconds(client.pgid), time.perf_counter()
        vm = subprocess.Popen(["vmagent", f"-promscrape.config={config}", f"-httpListenAddr=127.0.0.1:{api_port}",
                               f"-remoteWrite.tmpDataPath={tmp}/data", "-remoteWrite.url=http://127.0.0.1:9/write",
                               "-promscrape.consulSDCheckInterval=1s", "-promscrape.consul.waitTime=2m",
                               "-loggerLevel=ERROR"], stdout=subprocess.DEVNULL, stderr=log)
        try:
            seen = [0]

            def all_seen() -> bool:
                if vm.poll() is not None:
                    raise RuntimeError(f"vmagent exited: {Path(log.name).read_text()[-500:]!r}")
                seen[0] = vmagent_targets(api_port)
                return seen[0] >= want

            try:
                found = wait_for("vmagent discovering every instance", all_seen, args.vmagent_timeout, 1.0)
            except RuntimeError as exc:
                return {"error": str(exc), "targets": seen[0], "want": want}
            start_cpu, vm_start_cpu = cpu_seconds(client.pgid) - cpu0, cpu_seconds(vm.pid)
            cpu1, vm1, t1 = cpu_seconds(client.pgid), cpu_seconds(vm.pid), time.perf_counter()
            time.sleep(args.cpu_window)
            window = time.perf_counter() - t1
            return {"targets": seen[0], "want": want, "found_s": found, "start_cpu_s": start_cpu,
                    "vm_start_cpu_s": vm_start_cpu, "window_s": window, "watches": blocking_gauge(client),
                    "cpu_per_min": (cpu_seconds(client.pgid) - cpu1) / window * 60,
                    "vm_cpu_per_min": (cpu_seconds(vm.pid) - vm1) / window * 60, "started_s": time.perf_counter() - t0}
        finally:
            vm.terminate()
            vm.wait(30)
            log.close()


# -- the run ----------------------------------------------------------------------------------------

def step(results: dict[str, Any], name: str, cluster: Cluster, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one step; a failure is recorded with the agents' last error lines, and the run goes on."""
    print(f"-- {name}", flush=True)
    start = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 - a failing step is a result: record it, go on
        logs = {a.name: [line[:300] for line in a.log().splitlines() if re.search(r"\[ERROR\]|Error:", line)][-3:]
                for a in cluster.agents}
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "agent_errors": {k: v for k, v in logs.items() if v},
                         "trace": traceback.format_exc().splitlines()[-4:]}
    results[name]["step_s"] = time.perf_counter() - start
    print(json.dumps(results[name]), flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the agents started below inherit it
    services = args.instances // args.per_service
    limits = f"limits {{ http_max_conns_per_client = {max(4 * services, args.parked) + 1000} }}"
    results: dict[str, Any] = {"nodes": args.nodes, "instances": args.instances, "services": services,
                               "nofile": hard, "started": f"{datetime.datetime.now(datetime.UTC):%H:%M}"}
    with tempfile.TemporaryDirectory(prefix="cairn-cluster-") as tmp:
        # Consul's default Raft timing (the harness sets multiplier 1 for the tests' timing)
        timing = f"performance {{ raft_multiplier = {RAFT_MULTIPLIER} }}"
        cluster = Cluster(Path(tmp), servers=3, clients=1, hcl=[limits, timing, snapshots(args.instances)])
        try:
            cluster.start()
            leader = cluster.wait_leader(timeout=60)
            cluster.clients[0].wait_http(timeout=60)
            wait_for("the client knowing the leader", lambda: bool(cluster.clients[0].leader()), 60)
            time.sleep(2)
            results["rss_before"] = {a.name: smaps(a.pgid) for a in cluster.agents}
            step(results, "load", cluster, lambda: load(cluster, leader, args))
            time.sleep(2)
            results["rss_after"] = {a.name: smaps(a.pgid) for a in cluster.agents}
            one = f"svc-{services // 2:05d}"
            client = cluster.clients[0]
            step(results, "latency", cluster, lambda: {
                "name": one,
                "http_leader": http_latency(leader, f"/v1/health/service/{one}?passing", args.reps),
                "http_client": http_latency(client, f"/v1/health/service/{one}?passing", args.reps),
                "http_client_stale": http_latency(client, f"/v1/health/service/{one}?passing&stale", args.reps),
                "dns_leader": dns_latency(leader, f"{one}.service.consul", args.reps),
                "dns_client": dns_latency(client, f"{one}.service.consul", args.reps)})
            step(results, "sd", cluster, lambda: {"leader": sd_render(leader, leader, args),
                                                   "client": sd_render(leader, client, args)})
            leader = cluster.wait_leader(timeout=120)
            step(results, "storm", cluster, lambda: storm(cluster, leader, args))
            if args.vmagent:
                step(results, "vmagent", cluster, lambda: vmagent(cluster, args))
            leader = cluster.wait_leader(timeout=120)
            step(results, "snapshot", cluster, lambda: snapshot(leader))
            leader = cluster.wait_leader(timeout=120)
            step(results, "catch_up", cluster, lambda: follower_catch_up(cluster, leader, args.catch_up_timeout))
            leader = cluster.wait_leader(timeout=120)
            step(results, "catch_up_new", cluster, lambda: new_server_catch_up(cluster, leader, args.catch_up_timeout))
            leader = cluster.wait_leader(timeout=120)
            results["rss_end"] = {a.name: smaps(a.pgid) for a in cluster.agents if a.alive()}
            results["alive"] = {a.name: a.alive() for a in cluster.agents}
        except BaseException as exc:
            results["aborted"] = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, Exception) and type(exc).__name__ != "Failed":
                raise
        finally:
            results["elections"] = sorted(f"{line[11:23]} {a.name}" for a in cluster.servers
                                          for line in a.log().splitlines() if "entering leader state" in line)
            for agent in cluster.agents:
                agent.stop(check=False)
            kept = Path(tempfile.mkdtemp(prefix="cairn-cluster-logs-"))
            for log in Path(tmp).glob("*.log"):
                shutil.copy(log, kept)
            results["logs"] = str(kept)
    return results


# -- the section ------------------------------------------------------------------------------------

def _mb(n: float) -> str:
    return f"{n / MB:,.1f} MB"


def _failed(r: dict[str, Any], name: str) -> str | None:
    part = r.get(name) or {"error": "not run"}
    if "error" not in part:
        return None
    errors = "; ".join(f"{k}: {' / '.join(v)}" for k, v in part.get("agent_errors", {}).items())
    return f"**failed**: `{part['error']}`" + (f" (agent log: `{errors}`)" if errors else "")


def rows(r: dict[str, Any]) -> list[str]:
    n = r["instances"]
    out = []
    if (err := _failed(r, "load")) is None:
        ld = r["load"]
        out.append(f"| loading through `PUT /v1/txn` on the leader ({ld['requests']:,} requests, {ld['ops']:,} "
                   f"operations, 4 connections) | {ld['load_s']:.1f} s = {n / ld['load_s']:,.0f} instances/s; every "
                   f"server at the leader's index {ld['replicated_s']:.1f} s later, the client's replica "
                   f"{ld['client_s']:.1f} s later |")
    else:
        out.append(f"| loading | {err} |")
    for name in sorted(r["rss_after"]):
        b, a = r["rss_before"][name], r["rss_after"][name]
        kind = "client agent (its replica)" if name.startswith("c") else "server"
        out.append(f"| {name}, {kind}: Rss / Pss before -> after | {_mb(b['Rss'])} -> {_mb(a['Rss'])} "
                   f"(**{(a['Rss'] - b['Rss']) / n:,.0f} B** per instance) / {_mb(b['Pss'])} -> {_mb(a['Pss'])} |")
    if (err := _failed(r, "latency")) is None:
        lt = r["latency"]
        for key, what in (("http_leader", "HTTP, leader"), ("http_client", "HTTP, client agent (default consistency)"),
                          ("http_client_stale", "HTTP, client agent, `&stale`")):
            f = lt[key]
            out.append(f"| `health/service/{lt['name']}?passing`, {what}, {f['reps']:,} sequential | p50 "
                       f"{f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms ({f['bytes']:,} bytes) |")
        for key, what in (("dns_leader", "leader"), ("dns_client", "client agent")):
            f = lt[key]
            out.append(f"| DNS `{lt['name']}.service.consul` A over UDP, {what}, {f['reps']:,} sequential | p50 "
                       f"{f['p50_ms']:.3f} ms, p99 {f['p99_ms']:.3f} ms ({f['answers']} answers) |")
    else:
        out.append(f"| answer latency | {err} |")
    if (err := _failed(r, "sd")) is None:
        for key in ("leader", "client"):
            f = r["sd"][key]
            out.append(f"| `GET /v1/sd/prometheus` on the {key}: first render / after one check flip | "
                       f"{f['cold_ms']:,.0f} ms / {f['flip_ms']:,.0f} ms ({f['groups']:,} groups, {_mb(f['bytes'])}) |")
    else:
        out.append(f"| `/v1/sd/prometheus` | {err} |")
    sn = r.get("snapshot", {})
    if "save_ms" in sn:
        restore = (f"{sn['restore_ms']:,.0f} ms" if "restore_error" not in sn
                   else f"**refused** after {sn['restore_ms']:,.0f} ms: `{sn['restore_error']}`")
        out.append(f"| `GET /v1/snapshot` on the leader / `PUT /v1/snapshot` of the same bytes | "
                   f"{sn['save_ms']:,.0f} ms, {_mb(sn['bytes'])} ({sn['bytes'] / n:,.0f} B per instance) / {restore} |")
    else:
        out.append(f"| snapshot | {_failed(r, 'snapshot')} |")
    for key, what in (("catch_up", "a follower restarted with its data dir's `raft/` deleted"),
                      ("catch_up_new", "then a fresh fourth server joining (it leaves afterwards)")):
        if (err := _failed(r, key)) is None:
            cu = r[key]
            out.append(f"| {what}: at the leader's applied index {cu['index']:,} (its last snapshot at "
                       f"{cu['snapshot_index']:,}) / a stale `catalog/services` from it listing all "
                       f"{cu['services']:,} names | {cu['applied_s']:.1f} s / {cu['full_read_s']:.1f} s |")
        else:
            out.append(f"| {what} | {err} |")
    return out


def storm_text(r: dict[str, Any]) -> str:
    if (err := _failed(r, "storm")) is not None:
        return f"Wake-up storm: {err}\n"
    s = r["storm"]
    reached = ("reached" if s["parked"] >= s["asked"] else
               f"**not reached**: {s['opened']:,} connections opened, {s['parked']:,} parked"
               + (f" ({s['park_error']})" if "park_error" in s else "")
               + (f"; connect errors: `{'; '.join(s['open_errors'])}`" if s["open_errors"] else ""))
    rss = ", ".join(f"{k} {_mb(v)}" for k, v in sorted(s["rss_parked"].items()))
    return (f"Wake-up storm: {s['asked']:,} blocking `health/service/<name>` queries asked for ({reached}), "
            f"spread over {s['services']:,} services, the {s['agents']} agents ({', '.join(map(str, s['parked_by_agent']))} "
            f"parked) and {s['sources']} source addresses, held by {s['workers']} worker processes (descriptor limit "
            f"{r['nofile']:,} a process); all parked in {s.get('park_s', 0):.1f} s, RSS with them parked: {rss}. "
            f"{s['flips']:,} check flips (one `PUT /v1/txn` each from 20 connections to the leader) took "
            f"**{s['flips_s']:.2f} s**" + (f" ({s['flip_errors']:,} failed: `{s['flip_error'][0]}`)" if s.get("flip_errors") else "")
            + (f"; as many flips of other instances before anything was parked took {s['baseline_flips_s']:.2f} s"
               if "baseline_flips_s" in s else "")
            + f". {s['due']:,} parked queries were due to wake (their service flipped); "
            f"**{s['woke_due']:,} woke**, {s['woke_other']:,} others woke too, {s['early']:,} answered before the "
            f"first flip, {s['lost']:,} connections were lost unanswered, {s['non_200']:,} answers were not 200 "
            f"(statuses {s.get('statuses', {})}{'; ' + repr(s['refused'][0]) if s.get('refused') else ''}); "
            f"{s['index_ok']:,} of the woken due answers carried an X-Consul-Index at or after their service's flip. "
            f"First flip to last due wake: **{s['last_wake_s']:.2f} s** (median {s.get('median_wake_s', 0):.2f} s).\n")


def vmagent_text(r: dict[str, Any]) -> str:
    if "vmagent" not in r:
        return ""
    if (err := _failed(r, "vmagent")) is not None:
        v = r["vmagent"]
        return f"\nvmagent: {err} ({v.get('targets', 0):,} of {v.get('want', 0):,} targets seen)\n"
    v = r["vmagent"]
    return (f"\nvmagent with `consul_sd_configs` against the client agent (`-promscrape.consulSDCheckInterval=1s`, "
            f"blocking wait 2 min, every target's address rewritten to 127.0.0.1:1): its discovered targets reached "
            f"the catalog's {v['want']:,} instances in **{v['found_s']:.1f} s** (the client agent used "
            f"{v['start_cpu_s']:.1f} s of CPU meanwhile, vmagent {v['vm_start_cpu_s']:.1f} s); then, with "
            f"{v['watches']:,} watches parked and nothing changing, the client agent used {v['cpu_per_min']:.2f} s "
            f"of CPU per minute and vmagent {v['vm_cpu_per_min']:.2f} s (over {v['window_s']:.0f} s).\n")


def section(r: dict[str, Any], command: str) -> str:
    when = datetime.datetime.now(datetime.UTC)
    return "\n".join([
        SECTION, "",
        f"Measured {when:%Y-%m-%d} {r['started']}-{when:%H:%M} UTC on {machine()}, with `{command}`: three `cairn agent -server "
        f"-bootstrap-expect 3` processes and one client agent on 127.0.0.1, each with its data dir on disk. The "
        f"catalog is bench/scale/catalog.py's as an external registrar writes it: {r['nodes']:,} nodes, "
        f"{r['instances']:,} instances of {r['services']:,} services ({r['instances'] // r['services']} each), "
        f"written through the HTTP API. Each figure is one run.", "",
        "| what | figure |", "| --- | --- |", *rows(r), "", storm_text(r) + vmagent_text(r)
        + elections_text(r) + (f"\nThe run stopped early: `{r['aborted']}`.\n" if "aborted" in r else "")])


def elections_text(r: dict[str, Any]) -> str:
    times = r.get("elections", [])
    if len(times) <= 1:
        return "\nOne leader throughout (no election after the first).\n"
    return (f"\nLeader elections after the first: {len(times) - 1} (UTC time and the new leader: "
            f"{', '.join(times[1:])}; Raft at Consul's default timing, raft_multiplier {RAFT_MULTIPLIER}).\n")


def write_section(path: Path, text: str) -> None:
    doc = path.read_text()
    old = re.compile(re.escape(SECTION) + r"\n.*?(?=\n### |\n## |\Z)", re.S)
    if old.search(doc):
        doc = old.sub(lambda _: text.rstrip("\n") + "\n", doc)
    else:
        at = doc.index("### Bad input at scale")
        doc = doc[:at] + text.rstrip("\n") + "\n\n" + doc[at:]
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=10000)
    p.add_argument("--instances", type=int, default=100000)
    p.add_argument("--per-service", type=int, default=10, help="instances of each service name")
    p.add_argument("--loaders", type=int, default=4, help="concurrent txn connections while loading")
    p.add_argument("--reps", type=int, default=1000, help="sequential requests per latency figure")
    p.add_argument("--parked", type=int, default=50000, help="blocking queries parked for the storm")
    p.add_argument("--flips", type=int, default=1000, help="check flips in the storm (at most one a service)")
    p.add_argument("--no-vmagent", dest="vmagent", action="store_false", help="skip the vmagent step")
    p.add_argument("--vmagent-timeout", type=float, default=600, help="seconds vmagent may take to see every target")
    p.add_argument("--cpu-window", type=float, default=60, help="seconds of quiet vmagent watching measured")
    p.add_argument("--catch-up-timeout", type=float, default=120, help="seconds a catching-up server may take")
    p.add_argument("--quick", action="store_true", help="200 nodes, 2,000 instances, 2,000 parked, 100 flips")
    p.add_argument("--write", help="(re)write this markdown file's cluster subsection of Catalog at scale")
    args = p.parse_args(argv)
    if args.quick:
        args.nodes, args.instances, args.reps, args.parked, args.flips, args.cpu_window = 200, 2000, 200, 2000, 100, 5
        args.catch_up_timeout, args.vmagent_timeout = 15, 60
    services = args.instances // args.per_service if args.per_service > 0 else 0
    if args.nodes < 1 or services < 1 or not 1 <= args.flips <= services:
        p.error("--nodes, --instances / --per-service and --flips must be at least 1, --flips at most the services")
    if args.vmagent and not shutil.which("vmagent"):
        p.error("the vmagent step needs vmagent (Debian: apt-get install victoria-metrics), or --no-vmagent")
    results = run(args)
    print(json.dumps(results, indent=2, default=str))
    text = section(results, command_line("bench/scale/cluster.py", argv))
    print(text)
    if args.write:
        write_section(Path(args.write), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
