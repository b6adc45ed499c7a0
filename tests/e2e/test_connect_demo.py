"""Consul's service mesh walkthrough (seed 000, reference/connect.md §0.1), run with cairn in place
of consul and Debian's real `socat` and `nc`:

    socat -v tcp-l:<echo>,fork exec:/bin/cat           a connect-unaware echo service
    socat.json: {"service": {"name": "socat", "port": <echo>, "connect": {"sidecar_service": {}}}}
    cairn reload                                        -> socat and socat-sidecar-proxy
    cairn connect proxy -sidecar-for socat              public mTLS listener -> the echo
    web.json: web with a sidecar whose upstream is socat on <bind>
    cairn connect proxy -sidecar-for web                <bind> -> mTLS -> socat's sidecar
    nc 127.0.0.1 <bind>                                 hello! -> hello!
    cairn intention create -deny web socat              the open connection is cut within 1 s,
                                                        new ones are refused
    cairn intention delete web socat                    new connections echo again

Ports are free loopback ports rather than the seed's 8181/9191/21000 (the sidecar range is set to
them with `ports { sidecar_min_port ... }`), so the test can run beside anything else.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_ports, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not (shutil.which("socat") and shutil.which("nc")), reason="needs socat and nc"),
]


class Proc:
    """A child process in its own process group, stopped (group and all) at teardown."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None,
                 stdin: int | None = subprocess.DEVNULL, stdout: int | None = None) -> None:
        self.log = log
        self.out = open(log, "wb") if log is not None else None  # noqa: SIM115 - open for the process's life
        self.proc = subprocess.Popen(args, env=env, stdin=stdin, stdout=stdout or self.out or subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.out is not None:
            self.out.close()


class Netcat:
    """`nc 127.0.0.1 <port>` with a pipe for what the user types and one for what comes back."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(["nc", "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.fd = self.proc.stdin, self.proc.stdout.fileno()

    def say(self, line: str) -> None:
        self.stdin.write(line.encode() + b"\n")
        self.stdin.flush()

    def read(self, timeout: float) -> bytes | None:
        """What arrives within `timeout`; b"" when the connection was closed; None when nothing came."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return os.read(self.fd, 4096) if ready else None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.stdin.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def echo_works(port: int, text: str = "hello!") -> bool:
    nc = Netcat(port)
    try:
        nc.say(text)
        return nc.read(5) == (text + "\n").encode()
    finally:
        nc.close()


def test_seed_000_mesh_demo(tmp_path: Path, agent_factory) -> None:
    echo_port, bind_port, sidecar_port, metrics_port, dead_port = free_ports(5, udp=False)
    config_dir = tmp_path / "cairn.d"
    config_dir.mkdir()
    (config_dir / "ports.hcl").write_text(
        f"ports {{\n  sidecar_min_port = {sidecar_port}\n  sidecar_max_port = {sidecar_port + 1}\n}}\n")
    procs: list[Proc] = []
    try:
        socat = Proc(["socat", "-v", f"tcp-l:{echo_port},fork,reuseaddr,bind=127.0.0.1", "exec:/bin/cat"],
                     log=tmp_path / "socat.log")
        procs.append(socat)
        wait_until(lambda: _listening(echo_port), 10, what="socat listening")
        assert echo_works(echo_port)  # the echo service answers by itself

        agent = agent_factory("-config-dir", str(config_dir), node="mesh-demo")
        (config_dir / "socat.json").write_text(json.dumps(
            {"service": {"name": "socat", "port": echo_port, "connect": {"sidecar_service": {}}}}))
        reload = agent.cli("reload")
        assert reload.returncode == 0 and reload.stdout.strip() == "Configuration reload triggered"

        def catalog_sidecar() -> dict | None:
            status, _, found = agent.get_json("/v1/catalog/service/socat-sidecar-proxy")
            return found[0] if status == 200 and found else None

        side = wait_until(catalog_sidecar, 15, what="socat-sidecar-proxy in the catalog")
        assert side["ServiceKind"] == "connect-proxy" and side["ServicePort"] == sidecar_port
        assert side["ServiceProxy"]["DestinationServiceName"] == "socat"
        assert side["ServiceProxy"]["LocalServicePort"] == echo_port

        cli = [sys.executable, "-m", "appliance"]
        socat_proxy = Proc([*cli, "connect", "proxy", "-sidecar-for", "socat", "-metrics-addr",
                            f"127.0.0.1:{metrics_port}"], env=agent.env, log=tmp_path / "proxy-socat.log")
        procs.append(socat_proxy)

        upstream = {"destination_name": "socat", "local_bind_port": bind_port}
        (config_dir / "web.json").write_text(json.dumps({"service": {
            "name": "web", "port": 8080, "connect": {"sidecar_service": {"proxy": {"upstreams": [upstream]}}}}}))
        assert agent.cli("reload").returncode == 0
        wait_until(lambda: agent.get_json("/v1/agent/service/web-sidecar-proxy")[0] == 200, 15,
                   what="web's sidecar registered")
        web_proxy = Proc([*cli, "connect", "proxy", "-sidecar-for", "web"], env=agent.env,
                         log=tmp_path / "proxy-web.log")
        procs.append(web_proxy)
        banner = wait_until(lambda: "Log data will now stream" in web_proxy.text() and web_proxy.text(), 20,
                            what="web proxy started")
        assert "Configuration mode: Agent API" in banner and "Proxy ID: web-sidecar-proxy" in banner

        # socat's sidecar turns healthy once its listener answers the TCP check (every 10 s)
        wait_until(lambda: agent.get_json("/v1/health/connect/socat?passing")[2], 30,
                   what="socat's sidecar passing")
        wait_until(lambda: _listening(bind_port), 20, what="web's upstream listener")
        assert wait_until(lambda: echo_works(bind_port), 20, what="hello! echoed through two proxies")

        # a second, dead instance of socat's proxy (passing: it has no checks): every connection
        # still gets through, the upstream trying the other instance when a dial fails
        status, _, _ = agent.put("/v1/catalog/register", {
            "Node": "gone", "Address": "127.0.0.1", "Service": {
                "Kind": "connect-proxy", "Service": "socat-sidecar-proxy", "ID": "dead", "Port": dead_port,
                "Proxy": {"DestinationServiceName": "socat"}}})
        assert status == 200
        wait_until(lambda: len(agent.get_json("/v1/health/connect/socat?passing")[2]) == 2, 10,
                   what="two socat proxies listed")
        assert all(echo_works(bind_port, f"try {i}") for i in range(6))
        # closed clients are let go (a TCP client's end lingers up to 2 s for an answer)
        wait_until(lambda: _value(_metrics(metrics_port), "consul_proxy_inbound_conns") == 0, 10,
                   what="no inbound connection left open")

        # the traffic between the proxies is TLS: without a client certificate there is no echo
        _refused_without_certificate(sidecar_port)
        metrics = _metrics(metrics_port)
        assert _value(metrics, "consul_proxy_inbound_handshake_failures") >= 2, metrics

        # a deny intention cuts the open connections within 1 s and refuses new ones: nc keeps
        # running (its stdin is open) but nothing comes back; a plain client sees the close
        nc, sock = Netcat(bind_port), socket.create_connection(("127.0.0.1", bind_port), timeout=5)
        try:
            nc.say("first")
            assert nc.read(5) == b"first\n"
            sock.sendall(b"second\n")
            assert sock.recv(100) == b"second\n"
            created = agent.cli("intention", "create", "-deny", "web", "socat")
            assert created.returncode == 0, created.stderr
            assert created.stdout.strip() == "Created: web => socat (deny)"
            start = time.monotonic()
            assert _closed(sock, 1.0), "the open connection survived the deny intention"
            assert time.monotonic() - start <= 1.0
            nc.say("after")
            assert nc.read(1.0) in (None, b"")
        finally:
            nc.close()
            sock.close()
        refused, sock = Netcat(bind_port), socket.create_connection(("127.0.0.1", bind_port), timeout=5)
        try:
            refused.say("again")
            assert refused.read(3) in (None, b"")
            sock.sendall(b"again\n")
            assert _closed(sock, 5), "a new connection was not refused"
        finally:
            refused.close()
            sock.close()
        assert _value(_metrics(metrics_port), "consul_proxy_inbound_denied") >= 2

        deleted = agent.cli("intention", "delete", "web", "socat")
        assert deleted.returncode == 0, deleted.stderr
        assert deleted.stdout.strip() == "Intention deleted."
        assert wait_until(lambda: echo_works(bind_port), 10, what="echo restored after the delete")

        # a CA rotation under a live connection: it keeps working, and so do new ones (both roots
        # are trusted while leaves signed by the old one live)
        nc = Netcat(bind_port)
        try:
            nc.say("before")
            assert nc.read(5) == b"before\n"
            (tmp_path / "ca.json").write_text(json.dumps(
                {"Provider": "consul", "Config": {"PrivateKeyType": "ec", "PrivateKeyBits": 384}}))
            rotated = agent.cli("connect", "ca", "set-config", "-config-file", str(tmp_path / "ca.json"))
            assert rotated.returncode == 0, rotated.stderr
            wait_until(lambda: len(agent.get_json("/v1/agent/connect/ca/roots")[2]["Roots"]) == 2, 10,
                       what="two roots after the rotation")
            nc.say("after rotation")
            assert nc.read(5) == b"after rotation\n"
            assert echo_works(bind_port, "new connection")
        finally:
            nc.close()
    finally:
        for proc in reversed(procs):
            proc.stop()


def _closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer closes the connection within `timeout` (EOF or a reset)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _refused_without_certificate(port: int) -> None:
    """Plain TCP gets nothing back; `openssl s_client` without a certificate fails its handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"hello plain\n")
        sock.settimeout(5)
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        assert b"hello plain" not in data
    if shutil.which("openssl"):
        done = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet"],
                              input=b"hello tls\n", capture_output=True, timeout=20, check=False)
        assert b"hello tls" not in done.stdout
        assert done.returncode != 0 or b"alert" in done.stderr.lower() or b"error" in done.stderr.lower()


def _metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
