"""bench/connect: throughput and connection rate through a pair of cairn proxies, beside socat.

Run:  uv run python bench/connect/run.py [--duration 5] [--rounds 3] [--write BENCHMARKS.md]

The same echo service (`socat tcp-l:<port>,fork exec:/bin/cat`) is reached three ways, each two
hops from the client as the mesh is:

- cairn: the client dials web's upstream listener (`cairn connect proxy -sidecar-for web`), which
  dials socat's sidecar (`cairn connect proxy -sidecar-for socat`) over mutual TLS with leaf
  certificates from the agent's CA, checked against the intentions, which dials the echo;
- socat: `socat tcp-l:A,fork tcp:127.0.0.1:B` and `socat tcp-l:B,fork tcp:<echo>`, plain TCP;
- socat+TLS: the same pair with `openssl-listen`/`openssl` (mutual TLS, certificates from
  `cairn tls`), the nearest thing to the proxies' work that is not Python.

Two figures per path: throughput, one connection writing 1 MiB blocks while a thread reads the
echo back, in MB/s echoed for `--duration` seconds; and connection rate, new connections per
second, each sending one line and reading its echo before closing, for `--duration` seconds. The
paths are measured in interleaved rounds; the ratios (cairn / socat+TLS, cairn / socat) are the
median of the per-round ratios, with the spread. Everything is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402 - the project's root is on the path only now

BLOCK = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what: str, ok: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def echoes(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping\n")
        return sock.recv(16) == b"ping\n"


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs: object) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def agent_api(port: int, path: str, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="PUT" if data else "GET")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def cairn_path(procs: Procs, tmp: Path, echo: int) -> int:
    """A -dev agent, socat and web with sidecars, both proxies; the port of web's upstream."""
    http, bind, sidecar = free_port(), free_port(), free_port()
    cli = [sys.executable, "-m", "appliance"]
    config = tmp / "cairn.d"
    config.mkdir()
    (config / "mesh.hcl").write_text(f"ports {{\n  sidecar_min_port = {sidecar}\n  sidecar_max_port = {sidecar}\n}}\n")
    (config / "socat.json").write_text(json.dumps(
        {"service": {"name": "socat", "port": echo, "connect": {"sidecar_service": {"checks": []}}}}))
    procs.start([*cli, "agent", "-dev", "-node", "bench", "-config-dir", str(config), "-http-port", str(http),
                 "-dns-port", "-1", "-server-port", str(free_port()), "-serf-lan-port", str(free_port()),
                 "-serf-wan-port", str(free_port()), "-log-level", "warn"], cwd=ROOT)
    wait("the agent", lambda: agent_api(http, "/v1/status/leader"))
    agent_api(http, "/v1/agent/service/register", {
        "Name": "web", "Port": 8080, "Connect": {"SidecarService": {
            "Port": free_port(), "Checks": [],
            "Proxy": {"Upstreams": [{"DestinationName": "socat", "LocalBindPort": bind}]}}}})
    env = dict(os.environ, CONSUL_HTTP_ADDR=f"127.0.0.1:{http}")
    procs.start([*cli, "connect", "proxy", "-sidecar-for", "socat", "-log-level", "warn"], cwd=ROOT, env=env)
    procs.start([*cli, "connect", "proxy", "-sidecar-for", "web", "-log-level", "warn"], cwd=ROOT, env=env)
    wait("an echo through both proxies", lambda: echoes(bind), 60)
    return bind


def socat_path(procs: Procs, tmp: Path, echo: int, tls: bool) -> int:
    front, back = free_port(), free_port()
    if tls:
        certs = tmp / "certs"
        certs.mkdir(exist_ok=True)
        if not (certs / "consul-agent-ca.pem").exists():
            cli = [sys.executable, "-m", "appliance", "tls"]
            for args in (["ca", "create"], ["cert", "create", "-server"], ["cert", "create", "-client"]):
                subprocess.run([*cli, *args], cwd=certs, check=True, capture_output=True, env=dict(
                    os.environ, PYTHONPATH=str(ROOT)))
        ca, srv, cl = certs / "consul-agent-ca.pem", certs / "dc1-server-consul-0", certs / "dc1-client-consul-0"
        procs.start(["socat", f"openssl-listen:{back},fork,reuseaddr,bind=127.0.0.1,cert={srv}.pem,"
                     f"key={srv}-key.pem,cafile={ca},verify=1", f"tcp:127.0.0.1:{echo}"])
        procs.start(["socat", f"tcp-l:{front},fork,reuseaddr,bind=127.0.0.1",
                     f"openssl:127.0.0.1:{back},cert={cl}.pem,key={cl}-key.pem,cafile={ca},verify=1,"
                     "commonname=server.dc1.consul"])
    else:
        procs.start(["socat", f"tcp-l:{back},fork,reuseaddr,bind=127.0.0.1", f"tcp:127.0.0.1:{echo}"])
        procs.start(["socat", f"tcp-l:{front},fork,reuseaddr,bind=127.0.0.1", f"tcp:127.0.0.1:{back}"])
    wait("an echo through socat", lambda: echoes(front))
    return front


def throughput(port: int, duration: float) -> float:
    """MB/s echoed back on one connection."""
    got = [0]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        def reader() -> None:
            while True:
                data = sock.recv(BLOCK)
                if not data:
                    return
                got[0] += len(data)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        block = b"x" * BLOCK
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < duration:
            sock.sendall(block)
            sent += BLOCK
        while got[0] < sent and time.monotonic() - start < duration + 30:
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        sock.shutdown(socket.SHUT_RDWR)
    return got[0] / elapsed / 1e6


def conn_rate(port: int, duration: float) -> float:
    """Connections per second, each one line echoed, then closed."""
    count = 0
    start = time.monotonic()
    while time.monotonic() - start < duration:
        if echoes(port):
            count += 1
    return count / (time.monotonic() - start)


def measure(duration: float, rounds: int) -> dict:
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-connect-") as tmp:
        try:
            echo = free_port()
            procs.start(["socat", f"tcp-l:{echo},fork,reuseaddr,bind=127.0.0.1", "exec:/bin/cat"])
            wait("the echo service", lambda: echoes(echo))
            ports = {"cairn": cairn_path(procs, Path(tmp), echo), "socat": socat_path(procs, Path(tmp), echo, False),
                     "socat_tls": socat_path(procs, Path(tmp), echo, True)}
            runs: dict[str, dict[str, list[float]]] = {k: {"mbps": [], "cps": []} for k in ports}
            for i in range(rounds):
                order = list(ports) if i % 2 == 0 else list(reversed(ports))
                for name in order:
                    runs[name]["mbps"].append(throughput(ports[name], duration))
                    runs[name]["cps"].append(conn_rate(ports[name], duration))
                    print(name, {k: round(v[-1], 1) for k, v in runs[name].items()}, flush=True)
        finally:
            procs.stop()
    out: dict = {"runs": runs}
    for peer in ("socat", "socat_tls"):
        for figure in ("mbps", "cps"):
            ratios = [c / p for c, p in zip(runs["cairn"][figure], runs[peer][figure])]
            out[f"{figure}_vs_{peer}"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return out


def section(result: dict, duration: float) -> str:
    runs = result["runs"]

    def cell(name: str, figure: str) -> str:
        values = runs[name][figure]
        return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"

    def ratio(figure: str, peer: str) -> str:
        r = result[f"{figure}_vs_{peer}"]
        return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"

    return f"""## Connect proxies

Measured {datetime.date.today().isoformat()} on {machine()},
with `uv run python bench/connect/run.py --write BENCHMARKS.md`
({duration:g} s per figure, {len(runs['cairn']['mbps'])} interleaved rounds; median and range). The same
echo service two hops away: through web's and socat's cairn proxies (mutual TLS with the CA's leaf
certificates), through two plain socat relays, and through two socat relays speaking mutual TLS.

| path | throughput, MB/s echoed | connections/s |
| --- | --- | --- |
| cairn proxies | {cell('cairn', 'mbps')} | {cell('cairn', 'cps')} |
| socat + OpenSSL | {cell('socat_tls', 'mbps')} | {cell('socat_tls', 'cps')} |
| socat, plain TCP | {cell('socat', 'mbps')} | {cell('socat', 'cps')} |

cairn / socat+OpenSSL: throughput {ratio('mbps', 'socat_tls')}, connections {ratio('cps', 'socat_tls')};
cairn / plain socat: throughput {ratio('mbps', 'socat')}, connections {ratio('cps', 'socat')} (median of the
per-round ratios, spread in brackets).
"""


def write_section(path: Path, text: str) -> None:
    import re

    doc = path.read_text()
    pattern = re.compile(r"## Connect proxies\n.*?(?=\n## |\Z)", re.S)
    doc = pattern.sub(lambda _: text.rstrip("\n") + "\n", doc) if pattern.search(doc) else doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per figure (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--write", help="write the `## Connect proxies` section of this markdown file")
    args = parser.parse_args()
    if not shutil.which("socat"):
        sys.exit("bench/connect needs socat (Debian: apt-get install socat)")
    result = measure(args.duration, args.rounds)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    text = section(result, args.duration)
    print(text)
    if args.write:
        write_section(Path(args.write), text)


if __name__ == "__main__":
    main()
