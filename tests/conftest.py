"""Shared test helpers: free ports, a real `cairn agent -dev` process, a tiny HTTP client.

The agent runs as a child process exactly as a user would start it
(`python -m appliance agent -dev ...`), in its own process group so that teardown can
prove nothing it started is left behind.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------------------------
# ports


_handed_out: set[int] = set()
_port_rng = random.Random()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int, *, udp: bool = True) -> list[int]:
    """Return `count` distinct loopback ports that are free for TCP (and UDP if `udp`).

    Ports come from below the kernel's ephemeral range and none is handed out twice in one test
    session: ports from the ephemeral range collide with outgoing connections of agents already
    running, and the kernel offers a just-closed port again (30-agent clusters hit both). Each
    port is bind-checked; there is still the usual small race with other processes.
    """
    low, high = 10000, _ephemeral_low()
    ports: list[int] = []
    while len(ports) < count:
        port = _port_rng.randrange(low, high)
        if port in _handed_out:
            continue
        _handed_out.add(port)
        held: list[socket.socket] = []
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,):
                sock = socket.socket(socket.AF_INET, kind)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        ports.append(port)
    return ports


def free_port(*, udp: bool = True) -> int:
    return free_ports(1, udp=udp)[0]


# --------------------------------------------------------------------------------------------
# HTTP


def http(
    method: str,
    url: str,
    body: bytes | str | dict | list | None = None,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 30.0,
) -> tuple[int, Any, bytes]:
    """One HTTP request; returns (status, headers, body bytes) and never raises on 4xx/5xx.

    `headers` in the result is an `http.client.HTTPMessage` (case-insensitive `.get()`).
    A dict or list body is sent as JSON; a str body is UTF-8 encoded.
    """
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def http_json(method: str, url: str, body: Any = None, **kw: Any) -> tuple[int, Any, Any]:
    """Like `http`, but decodes a 2xx body as JSON (None for an empty body)."""
    status, headers, data = http(method, url, body, **kw)
    if 200 <= status < 300 and data.strip():
        return status, headers, json.loads(data)
    return status, headers, data


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns a truthy value (returned) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate!r}; last value: {last!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# the agent process


_log_counter = itertools.count(1)


class AgentProcess:
    """A real `cairn agent -dev` child process on free loopback ports."""

    def __init__(self, tmp_path: Path, *extra_args: str, node: str = "test-node") -> None:
        self.node = node
        (
            self.http_port,
            self.dns_port,
            self.server_port,
            self.serf_lan_port,
            self.serf_wan_port,
        ) = free_ports(5)
        self.http_addr = f"127.0.0.1:{self.http_port}"
        self.url = f"http://{self.http_addr}"
        self.log_path = tmp_path / f"agent-{node}-{next(_log_counter)}.log"
        self.args = [
            sys.executable, "-m", "appliance", "agent", "-dev",
            "-node", node,
            "-http-port", str(self.http_port),
            "-dns-port", str(self.dns_port),
            "-server-port", str(self.server_port),
            "-serf-lan-port", str(self.serf_lan_port),
            "-serf-wan-port", str(self.serf_wan_port),
            *extra_args,
        ]  # fmt: skip
        self.env = dict(os.environ)
        self.env.pop("CONSUL_HTTP_TOKEN", None)
        self.env.pop("CAIRN_HTTP_TOKEN", None)
        self.env["CAIRN_HTTP_ADDR"] = self.http_addr
        self.env["CONSUL_HTTP_ADDR"] = self.http_addr
        pythonpath = self.env.get("PYTHONPATH")
        self.env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + pythonpath if pythonpath else "")
        self.env["PYTHONUNBUFFERED"] = "1"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open for the process's lifetime
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=tmp_path,
            start_new_session=True,  # own process group: teardown can check nothing is left
        )
        self.pgid = self.proc.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop(check=False)
            raise

    # -- lifecycle ----------------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"agent exited with code {self.proc.returncode} before it was ready\n"
                    f"command: {' '.join(self.args)}\n--- log tail ---\n{self.log_tail()}"
                )
            try:
                status, _, body = http("GET", f"{self.url}/v1/status/leader", timeout=2)
                if status == 200:
                    leader = json.loads(body)
                    if isinstance(leader, str) and leader:
                        return
                    last = f"leader is {leader!r}"
                else:
                    last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"agent not ready within {START_TIMEOUT_S}s ({last})\n"
            f"command: {' '.join(self.args)}\n--- log tail ---\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, *, check: bool = True) -> int | None:
        """SIGTERM, wait up to 10 s, then SIGKILL. With `check`, assert the agent exited on
        SIGTERM by itself and nothing of its process group is left."""
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
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
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            time.sleep(0.05)
        if not self._log.closed:
            self._log.close()
        if check:
            assert not killed, (
                f"agent did not exit within {STOP_TIMEOUT_S}s of SIGTERM\n--- log tail ---\n{self.log_tail()}"
            )
            assert not leftovers, "processes of the agent's process group were left after it exited"
        return self.proc.returncode

    # -- conveniences -------------------------------------------------------------------------

    def cli(self, *args: str, input: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run `cairn <args>` (as `python -m appliance <args>`) against this agent."""
        return subprocess.run(
            [sys.executable, "-m", "appliance", *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def get(self, path: str, **kw: Any) -> tuple[int, Any, bytes]:
        return http("GET", self.url + path, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, bytes]:
        return http("PUT", self.url + path, body, **kw)

    def get_json(self, path: str, **kw: Any) -> tuple[int, Any, Any]:
        return http_json("GET", self.url + path, **kw)

    def __repr__(self) -> str:
        return f"AgentProcess(node={self.node!r}, url={self.url!r}, pid={self.proc.pid})"


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    """A fresh `cairn agent -dev` with node name "test-node"."""
    proc = AgentProcess(tmp_path, node="test-node")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """`agent_factory(*extra_args, node="...")` starts another agent; all stop at teardown."""
    started: list[AgentProcess] = []

    def start(*extra_args: str, node: str = "test-node") -> AgentProcess:
        proc = AgentProcess(tmp_path, *extra_args, node=node)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        failures = []
        for proc in reversed(started):
            try:
                proc.stop()
            except AssertionError as exc:
                failures.append(str(exc))
        assert not failures, "\n".join(failures)
