"""bench/gossip: the gossip layer at 100 and 1,000 members (simulated) and a real client agent idle.

Run:  uv run python bench/gossip/run.py [--sizes 100:3600,1000:600] [--seed 1] [--idle 60]
                                        [--write BENCHMARKS.md]

1. Simulator (tests/sim/gossip_sim.py, the sans-IO core as shipped, simulated time): for each
   `members:seconds` a preloaded LAN cluster with 1 % datagram loss and one CPU-starved member
   (every event it handles is up to 1.5 s late), plus churn spread over the run: members killed,
   members leaving gracefully, late joiners. Reported next to the published anchors
   (reference/perf-anchors.md §3):
   * false positives (healthy members declared failed), which must be 0;
   * failure detection: the time until *every* other member declared a killed member failed (and
     the median member), next to memberlist's suspicion bounds for that size (min, reached with
     k = 2 confirmations; max, with none) and the simulator's hard bound (someone probes it +
     slowest awareness-scaled deadline + suspicion max + dissemination);
   * convergence after a join (and of a user event): the time until every member saw a late
     joiner (delivered the event), next to the Serf
     convergence model (a logistic infection model: fraction informed after x gossip rounds
     = 1 / (1 + (N + 1) e^(-c N x)) with c N = fanout x (1 - loss) x 0.5; time to 99.99 %);
   * UDP bytes/s per member (mean, max) and push-pull bytes/s, next to the model's bandwidth bound
     (1400 B x fanout x rounds/s x 2);
   * wall time of the run (how fast the simulator is).
2. A real client agent process (`cairn agent`, server = false) joined to a `-dev` server over
   loopback gossip: its RSS and the CPU it uses while idle over `--idle` seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.gossip import GossipConfig, suspicion_bounds  # noqa: E402
from bench.machine import machine  # noqa: E402
from tests.sim.gossip import scenario_options  # noqa: E402
from tests.sim.gossip_sim import run  # noqa: E402


def serf_convergence_s(n: int, interval_s: float = 0.2, fanout: int = 3, loss: float = 0.0,
                       target: float = 0.9999) -> float:
    """Serf's convergence model: seconds until `target` of n members are informed (whole rounds)."""
    cn = fanout * (1 - loss) * 0.5  # contact rate x N
    rounds = 0
    while rounds < 1000:
        informed = 1.0 / (1.0 + (n + 1) * math.exp(-cn * rounds))
        if informed >= target:
            break
        rounds += 1
    return rounds * interval_s


def serf_bandwidth_bytes_s(interval_s: float = 0.2, fanout: int = 3) -> float:
    return 1400 * fanout * (1 / interval_s) * 2


def run_sim(members: int, duration_s: float, seed: int) -> dict:
    # The simulator's `bench` scenario (CI runs it at 60 members for 4 minutes): churn from the
    # first minute on, spread so every change still has its bound's time before the end.
    opts = scenario_options("bench", seed, members, duration_s)
    report = run(opts)
    print(report.summary(), flush=True)
    cfg = GossipConfig.lan()
    low, high = suspicion_bounds(cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, members, cfg.probe_interval_s)
    return {
        "members": members, "duration_s": duration_s, "seed": seed, "ok": report.ok,
        "failures": report.failures[:5], "false_positives": report.false_positives,
        "detection_s": report.detection_s, "detection_median_s": report.detection_median_s,
        "join_s": report.join_convergence_s, "leave_s": report.leave_convergence_s,
        "event_s": report.event_convergence_s,
        "suspicion_min_s": low, "suspicion_max_s": high, "detection_bound_s": report.bounds["detection"],
        "serf_model_s": serf_convergence_s(members, cfg.gossip_interval_s, cfg.gossip_nodes, 0.01),
        "bytes_s_mean": report.bytes_per_s_mean, "bytes_s_max": report.bytes_per_s_max,
        "push_pull_bytes_s": report.stream_bytes_per_s_mean, "suspicions": report.suspicions,
        "refutes": report.refutes, "events": report.events, "wall_s": report.wall_s,
    }


# ---------------------------------------------------------------------------------- real client agent


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS bytes) of a process from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def idle_client(idle_s: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-gossip-"))
    procs: list[subprocess.Popen] = []

    def agent(name: str, *extra: str) -> tuple[subprocess.Popen, int, int]:
        http, dns, server, lan, wan = _free_ports(5)
        args = [sys.executable, "-m", "appliance", "agent", "-node", name, "-bind", "127.0.0.1",
                "-client", "127.0.0.1", "-http-port", str(http), "-dns-port", str(dns),
                "-server-port", str(server), "-serf-lan-port", str(lan), "-serf-wan-port", str(wan), *extra]
        log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the child's lifetime
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        procs.append(proc)
        return proc, http, lan

    try:
        _, server_http, server_lan = agent("bench-server", "-dev")
        client, client_http, _ = agent("bench-client", "-data-dir", str(tmp / "client"),
                                       "-retry-join", f"127.0.0.1:{server_lan}")
        deadline = time.monotonic() + 60
        while True:
            try:
                members = _get(f"http://127.0.0.1:{server_http}/v1/agent/members")
                if sorted(m["Name"] for m in members if m["Status"] == 1) == ["bench-client", "bench-server"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or client.poll() is not None:
                raise RuntimeError("the client agent did not join; see " + str(tmp / "bench-client.log"))
            time.sleep(0.5)
        time.sleep(5.0)  # let start-up work (anti-entropy, first syncs) settle
        cpu0, _ = _proc_stats(client.pid)
        t0 = time.monotonic()
        time.sleep(idle_s)
        cpu1, rss = _proc_stats(client.pid)
        elapsed = time.monotonic() - t0
        return {"cpu_percent": 100.0 * (cpu1 - cpu0) / elapsed, "rss_mb": rss / 1e6, "idle_s": elapsed}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------- report


def _fmt_range(xs: list[float]) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    return f"{xs[0]:.1f}-{xs[-1]:.1f} s" if len(xs) > 1 else f"{xs[0]:.1f} s"


def table(sims: list[dict], client: dict | None) -> str:
    rows = [
        "Simulated (tests/sim/gossip_sim.py, the shipped sans-IO core, `bench` scenario): LAN profile, "
        "1 % datagram loss, one member whose every event is handled up to 1.5 s late, 3 members killed, "
        "2 leaving gracefully, 3 joining late and 5 user events, spread over the run. Times are simulated; "
        "\"every member\" is the slowest member that knew the killed one. The peer figures are memberlist's "
        "suspicion bounds for the size and the Serf convergence model (reference/perf-anchors.md §3.3).",
        "",
        "| members, simulated time | false positives | killed member failed at every member (median member) "
        "| memberlist suspicion min / max; hard bound | a join reaches every member | a user event reaches every "
        "member | Serf model, 99.99 % | UDP bytes/s per member mean / max | push-pull bytes/s | wall time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in sims:
        rows.append(
            f"| {s['members']}, {s['duration_s'] / 60:.0f} min | {s['false_positives']} "
            f"| {_fmt_range(s['detection_s'])} ({_fmt_range(s['detection_median_s'])}) "
            f"| {s['suspicion_min_s']:.0f} / {s['suspicion_max_s']:.0f} s; {s['detection_bound_s']:.0f} s "
            f"| {_fmt_range(s['join_s'])} | {_fmt_range(s['event_s'])} | {s['serf_model_s']:.2f} s "
            f"| {s['bytes_s_mean']:.0f} / {s['bytes_s_max']:.0f} | {s['push_pull_bytes_s']:.0f} "
            f"| {s['wall_s'] / 60:.1f} min |")
    out = "\n".join(rows)
    out += (f"\n\nSerf model bandwidth bound: {serf_bandwidth_bytes_s() / 1000:.0f} KB/s per member "
            "(1400 B x 3 x 5 rounds/s x 2).")
    if client is not None:
        out += (f"\n\nReal client agent joined to a `-dev` server over loopback, idle for {client['idle_s']:.0f} s: "
                f"**{client['cpu_percent']:.2f} % of one core, {client['rss_mb']:.0f} MB RSS** "
                "(Serf's published figure: 5 to 10 MB resident, for the Go library alone).")
    return out


def write_section(path: Path, body: str, command: str) -> None:
    today = datetime.date.today().isoformat()
    section = (f"## Gossip\n\nMeasured {today} on {machine()}, "
               f"with `{command}`.\n\n{body}\n")
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    # the measured part only (up to the idle client's line): notes written under it stay
    measured = re.compile(r"## Gossip\n.*?Serf model bandwidth bound[^\n]*\n(?:\nReal client agent[^\n]*\n)?", re.S)
    pattern = measured if measured.search(text) else re.compile(r"## Gossip\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: section, text, count=1) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100:3600,1000:600",
                   help="members:simulated-seconds pairs, comma separated (default 100:3600,1000:600)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--idle", type=float, default=60.0, help="seconds to watch the idle client agent (0: skip)")
    p.add_argument("--json", help="also write the raw figures to this file")
    p.add_argument("--write", help="write the results to this markdown file's `## Gossip` section")
    args = p.parse_args()
    sims = []
    for pair in args.sizes.split(","):
        members, seconds = pair.split(":")
        sims.append(run_sim(int(members), float(seconds), args.seed))
    client = idle_client(args.idle) if args.idle > 0 else None
    body = table(sims, client)
    print(body)
    if args.json:
        Path(args.json).write_text(json.dumps({"sims": sims, "client": client}, indent=2))
    if args.write:
        command = "uv run python bench/gossip/run.py " + " ".join(a for a in sys.argv[1:])
        write_section(Path(args.write), body, command.strip())
    return 0 if all(s["ok"] for s in sims) else 1


if __name__ == "__main__":
    sys.exit(main())
