"""Real agent processes for the multi-process tests: servers (`cairn agent -server
-bootstrap-expect N`) and client agents on loopback, each with its own data dir and ports, joined
by `-retry-join` on their gossip ports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT, free_ports, http


class Server:
    """One server (a client agent with `server=False`); `start(join)` runs it (again, from its data
    dir, after a stop)."""

    def __init__(self, tmp_path: Path, name: str, expect: int = 3, hcl: str = "", server: bool = True) -> None:
        self.name = name
        self.ports = free_ports(5)
        self.data_dir = tmp_path / name
        self.log_dir = tmp_path
        self.url = f"http://127.0.0.1:{self.ports[0]}"
        self.server_addr = f"127.0.0.1:{self.ports[2]}"
        self.serf_addr = f"127.0.0.1:{self.ports[3]}"  # -retry-join goes to the gossip port
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.expect = expect
        self.hcl = hcl
        self.server = server

    def start(self, join: list[str]) -> None:
        http_port, dns_port, server_port, lan, wan = self.ports
        role = ["-server", "-bootstrap-expect", str(self.expect)] if self.server else []
        args = [sys.executable, "-m", "appliance", "agent", *role,
                "-node", self.name, "-data-dir", str(self.data_dir), "-bind", "127.0.0.1",
                "-client", "127.0.0.1", "-http-port", str(http_port), "-dns-port", str(dns_port),
                "-server-port", str(server_port), "-serf-lan-port", str(lan), "-serf-wan-port", str(wan),
                "-hcl", "performance { raft_multiplier = 1 }"]
        if self.hcl:
            args += ["-hcl", self.hcl]
        for address in join:
            args += ["-retry-join", address]
        self.starts += 1
        log = open(self.log_dir / f"{self.name}-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                     start_new_session=True)

    def leader(self) -> str:
        try:
            status, _, body = http("GET", self.url + "/v1/status/leader", timeout=1)
            return json.loads(body) if status == 200 else ""
        except (OSError, ValueError):
            return ""

    def put(self, key: str, value: str, timeout: float = 15) -> bool:
        try:
            status, _, body = http("PUT", f"{self.url}/v1/kv/{key}", value, timeout=timeout)
            return status == 200 and body.strip() == b"true"
        except OSError:
            return False

    def get(self, key: str, query: str = "") -> bytes | None:
        status, _, body = http("GET", f"{self.url}/v1/kv/{key}?raw{query}", timeout=15)
        return body if status == 200 else None

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if sig_kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
