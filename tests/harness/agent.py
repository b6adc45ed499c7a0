"""One real `cairn agent` process, as every multi-process test starts it.

An `Agent` has its own loopback ports (or Consul's default ports at its own address inside a
network namespace), its own data dir and an append-only log file, and runs in its own process
group, so `kill -9` can take whatever it started with it and `stop()` can prove that nothing is
left behind. It starts as often as a test likes (`start`, `stop`, `restart` from the same data
dir) and carries the small clients the tests use: raw HTTP, JSON, KV, the leader it knows, its
gossip members, the `cairn` CLI and `dig` against it.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from signal import SIGKILL, SIGTERM
from typing import Any

from .net import PROJECT_ROOT, free_ports, http, http_json, wait_until

STOP_TIMEOUT_S = 10.0
_log_counter = itertools.count(1)


class Agent:
    """`Agent(tmp_path, name, *args)` is `cairn agent -node name <ports> *args` once started.

    `dev=True` runs `-dev` (in memory, no data dir); otherwise the agent gets `-data-dir
    tmp_path/name` and binds to `host`. `join` addresses become `-retry-join` flags (its own LAN
    address left out). `netns` runs it inside that network namespace; `gid` with that process
    group id (so nftables can tell its sockets). `strict` makes `stop()` assert that SIGTERM alone
    ended it and nothing of its process group was left (the default for `-dev` agents).
    """

    def __init__(self, tmp_path: Path, name: str, *args: str, dev: bool = False, datacenter: str = "",
                 join: Sequence[str] = (), host: str = "127.0.0.1", netns: str = "", gid: int | None = None,
                 strict: bool | None = None) -> None:
        self.name, self.args, self.dev, self.host, self.netns, self.gid = name, list(args), dev, host, netns, gid
        self.datacenter = datacenter
        self.join = list(join)
        self.strict = dev if strict is None else strict
        # in a namespace of its own the agent has its own address, so Consul's ports do
        self.ports = [8500, -1, 8300, 8301, 8302] if netns else free_ports(5)
        self.http_port, self.dns_port, self.server_port, self.serf_lan_port, self.serf_wan_port = self.ports
        self.http_addr = f"{host}:{self.http_port}"
        self.url = f"http://{self.http_addr}"
        self.server_addr = f"{host}:{self.server_port}"
        self.lan_addr = f"{host}:{self.serf_lan_port}"  # what -join takes, as in Consul
        self.wan_addr = f"{host}:{self.serf_wan_port}"
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / name
        self.log_path = tmp_path / f"{name}-{next(_log_counter)}.log"
        self.env = dict(os.environ)
        for var in ("CONSUL_HTTP_TOKEN", "CAIRN_HTTP_TOKEN"):
            self.env.pop(var, None)
        self.env.update(CAIRN_HTTP_ADDR=self.http_addr, CONSUL_HTTP_ADDR=self.http_addr, PYTHONUNBUFFERED="1")
        pythonpath = self.env.get("PYTHONPATH")
        self.env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + pythonpath if pythonpath else "")
        self.proc: subprocess.Popen[bytes] | None = None
        self.command: list[str] = []
        self.starts = 0
        self.log_start = 0  # where the latest start's output begins in the log

    @property
    def node(self) -> str:
        return self.name

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *extra: str) -> Agent:
        """Start the process (again, from its data dir, after a stop); returns at once."""
        http_port, dns_port, server_port, lan, wan = self.ports
        cmd = [sys.executable, "-m", "appliance", "agent", *(["-dev"] if self.dev else []), "-node", self.name]
        if not self.dev:
            cmd += ["-data-dir", str(self.data_dir), "-bind", self.host, "-client", self.host]
        if self.datacenter:
            cmd += ["-datacenter", self.datacenter]
        cmd += ["-http-port", str(http_port), "-dns-port", str(dns_port), "-server-port", str(server_port),
                "-serf-lan-port", str(lan), "-serf-wan-port", str(wan), *self.args, *extra]
        joins = [a for a in self.join if a != self.lan_addr]
        for address in joins:
            cmd += ["-retry-join", address]
        if joins:  # an agent started a moment before the one it joins tries again soon (Consul: 30 s)
            cmd += ["-retry-interval", "1s"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]  # execs: the pid is the agent's
        self.command = cmd
        self.starts += 1
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        extra_kw: dict[str, Any] = {} if self.gid is None else {"group": self.gid, "extra_groups": []}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=self.tmp_path if self.dev else PROJECT_ROOT,
                                         start_new_session=True, **extra_kw)
        return self

    def wait_http(self, timeout: float = 30) -> Agent:
        """Until /v1/agent/self answers (failing at once if the process exited)."""
        def up() -> bool:
            assert self.alive(), f"{self.name} exited with {self.proc and self.proc.returncode}\n{self.log_tail()}"
            try:
                return http("GET", self.url + "/v1/agent/self", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(up, timeout=timeout, what=f"{self.name} answering HTTP")
        return self

    def wait_leader(self, timeout: float = 20) -> Agent:
        """Until the agent names a Raft leader (for a -dev agent: until it is ready)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"agent exited with code {self.proc and self.proc.returncode} before it was "
                                   f"ready\ncommand: {' '.join(self.command)}\n--- log tail ---\n{self.log_tail()}")
            try:
                status, _, body = http("GET", f"{self.url}/v1/status/leader", timeout=2)
                leader = json.loads(body) if status == 200 else None
                if isinstance(leader, str) and leader:
                    return self
                last = f"leader is {leader!r}" if status == 200 else f"HTTP {status}: {body[:200]!r}"
            except (OSError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"agent not ready within {timeout}s ({last})\ncommand: {' '.join(self.command)}\n"
                           f"--- log tail ---\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self, sig: int = SIGKILL) -> None:
        """Send `sig` to the agent's whole process group (kill -9 by default: a crash)."""
        if self.alive():
            _killpg(self.pgid, sig)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, kill: bool = False, *, check: bool | None = None) -> int | None:
        """SIGTERM (or with `kill`, SIGKILL to its whole process group), wait up to 10 s, then
        SIGKILL; then nothing of its process group may be left. With `check` (default: `strict`),
        assert the agent exited on SIGTERM by itself and left nothing behind."""
        if self.proc is None:
            return None
        killed = False
        if self.proc.poll() is None:
            if kill:
                _killpg(self.pgid, SIGKILL)
            else:
                self.proc.send_signal(SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                killed = True
                self.proc.kill()
                self.proc.wait(5)
        # anything the agent started (check scripts, ...) must be gone with it
        leftovers = False
        deadline = time.monotonic() + 2.0
        while self._group_alive():
            if time.monotonic() >= deadline:
                leftovers = True
                _killpg(self.pgid, SIGKILL)
                break
            time.sleep(0.05)
        if self.strict if check is None else check:
            assert not killed, f"agent did not exit within {STOP_TIMEOUT_S}s of SIGTERM\n{self.log_tail()}"
            assert not leftovers, "processes of the agent's process group were left after it exited"
        return self.proc.returncode

    def restart(self, *extra: str, kill: bool = False) -> Agent:
        self.stop(kill)
        return self.start(*extra)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def log(self, *, this_start: bool = False) -> str:
        """The log so far: every start of this agent appended, or only the latest start's."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.log_start if this_start else 0)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    # -- HTTP -----------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, bytes]:
        return http(method, self.url + path, body, **kw)

    def get(self, path: str, **kw: Any) -> tuple[int, Any, bytes]:
        return http("GET", self.url + path, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, bytes]:
        return http("PUT", self.url + path, body, **kw)

    def get_json(self, path: str, **kw: Any) -> tuple[int, Any, Any]:
        """(status, headers, the JSON body of a 2xx answer or the raw body)."""
        return http_json("GET", self.url + path, **kw)

    def read_json(self, path: str, timeout: float = 15) -> Any:
        """The JSON body of GET path, which must answer 200."""
        status, _, body = http("GET", self.url + path, timeout=timeout)
        assert status == 200, (self.name, path, status, body)
        return json.loads(body)

    def poll_json(self, path: str, timeout: float = 5) -> tuple[int, Any]:
        """(status, JSON body of a 200 or the raw body) for polling: (0, None) if unreachable."""
        try:
            status, _, body = http("GET", self.url + path, timeout=timeout)
        except OSError:
            return 0, None
        return status, json.loads(body) if status == 200 and body.strip() else body

    # -- what the tests ask of an agent -----------------------------------------------------------

    def leader(self) -> str:
        """The leader's server address this agent knows ("" if none or unreachable)."""
        try:
            status, _, body = http("GET", self.url + "/v1/status/leader", timeout=2)
            return json.loads(body) if status == 200 else ""
        except (OSError, ValueError):
            return ""

    def kv_put(self, key: str, value: str, timeout: float = 15) -> bool:
        try:
            status, _, body = http("PUT", f"{self.url}/v1/kv/{key}", value, timeout=timeout)
            return status == 200 and body.strip() == b"true"
        except OSError:
            return False

    def kv_get(self, key: str, query: str = "") -> bytes | None:
        status, _, body = http("GET", f"{self.url}/v1/kv/{key}?raw{query}", timeout=15)
        return body if status == 200 else None

    def members(self) -> dict[str, int]:
        """LAN gossip members this agent knows, name -> serf status."""
        status, body = self.poll_json("/v1/agent/members")
        return {m["Name"]: m["Status"] for m in body} if status == 200 else {}

    def serf_health(self, node: str) -> str:
        """The status of `node`'s serfHealth check in this agent's catalog."""
        status, body = self.poll_json(f"/v1/health/node/{node}")
        if status != 200:
            return "?"
        return next((c["Status"] for c in body if c["CheckID"] == "serfHealth"), "none")

    def raft_stats(self) -> dict[str, str]:
        status, body = self.poll_json("/v1/agent/self")
        return body["Stats"]["raft"] if status == 200 else {}

    def metrics(self) -> str:
        return http("GET", self.url + "/v1/agent/metrics?format=prometheus", timeout=10)[2].decode()

    def cli(self, *args: str, input: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run `cairn <args>` (as `python -m appliance <args>`) against this agent."""
        return subprocess.run([sys.executable, "-m", "appliance", *args], env=self.env, input=input,
                              capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT, check=False)

    def dig(self, name: str, qtype: str = "A") -> subprocess.CompletedProcess[str]:
        return subprocess.run(["dig", f"@{self.host}", "-p", str(self.dns_port), name, qtype, "+tries=1", "+time=5"],
                              capture_output=True, text=True, timeout=20, check=False)

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, url={self.url!r}, pid={self.proc.pid if self.proc else None})"


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
