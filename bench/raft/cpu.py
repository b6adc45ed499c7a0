"""bench/raft/cpu.py: agent CPU per replicated write on a 3-server cairn cluster.

Run:  uv run python bench/raft/cpu.py [--duration 8] [--tree PATH]

Three servers (`-server -bootstrap-expect 3`, `raft_multiplier = 1`, fsync on) on loopback, each
with its own data dir; wrk (one thread, 64 connections) sends `PUT /v1/kv/bench/<n>` with a
32-byte value to the leader for `--duration` seconds after a 2 s warm-up. The CPU time (user +
system, from /proc/<pid>/stat) each server spent during the run, divided by the writes wrk
counted, is the figure: unlike writes/s it barely moves when other work shares the machine.
`--tree` runs the agent of another checkout (bench/compare.py --bench raft-cpu uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LUA = """counter = 0
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/kv/bench/" .. (counter % 10000), nil, "0123456789abcdef0123456789abcdef")
end
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_base() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return 20000 + s.getsockname()[1] % 20000


def measure(tree: Path, duration: int) -> dict[str, float]:
    python = tree / ".venv" / "bin" / "python"
    base = free_base()
    with tempfile.TemporaryDirectory(prefix="cairn-raft-cpu-") as tmp:
        script = Path(tmp) / "put.lua"
        script.write_text(LUA)
        serf = [f"127.0.0.1:{base + i * 10 + 3}" for i in range(3)]
        procs = []
        for i in range(3):
            p = base + i * 10
            args = [str(python), "-m", "appliance", "agent", "-server", "-bootstrap-expect", "3", "-node", f"s{i}",
                    "-data-dir", f"{tmp}/s{i}", "-bind", "127.0.0.1", "-client", "127.0.0.1",
                    "-http-port", str(p), "-dns-port", "-1", "-server-port", str(p + 2), "-serf-lan-port",
                    str(p + 3), "-serf-wan-port", str(p + 4), "-log-level", "warn",
                    "-hcl", "performance { raft_multiplier = 1 }"]
            for address in serf:
                args += ["-retry-join", address]
            procs.append(subprocess.Popen(args, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            leader_port = 0
            deadline = time.monotonic() + 60
            while not leader_port and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{base}/v1/status/leader", timeout=1) as resp:
                        address = json.loads(resp.read())
                    if address:
                        leader_port = int(address.rsplit(":", 1)[1]) - 2
                except (OSError, ValueError):
                    time.sleep(0.1)
            if not leader_port:
                raise RuntimeError("no leader within 60 s")
            leader = (leader_port - base) // 10
            url = f"http://127.0.0.1:{leader_port}"
            subprocess.run(["wrk", "-t1", "-c64", "-d2s", "-s", str(script), url], capture_output=True, check=True)
            before = [cpu_s(p.pid) for p in procs]
            out = subprocess.run(["wrk", "-t1", "-c64", f"-d{duration}s", "-s", str(script), url],
                                 capture_output=True, text=True, check=True).stdout
            after = [cpu_s(p.pid) for p in procs]
        finally:
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()
    writes = int(re.search(r"(\d+) requests in", out).group(1))
    return {"writes_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "leader_us_per_write": (after[leader] - before[leader]) * 1e6 / writes,
            "all_us_per_write": sum(a - b for a, b in zip(after, before)) * 1e6 / writes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds of load (default 8)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose agent runs (default this one)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/raft/cpu.py needs wrk (Debian: apt-get install wrk)")
    print(json.dumps(measure(args.tree.resolve(), args.duration)))


if __name__ == "__main__":
    main()
