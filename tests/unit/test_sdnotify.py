"""The sd_notify helper, against a real unix datagram socket standing in for systemd.

systemd's notify protocol (sd_notify(3)): one datagram of newline-separated KEY=value
assignments sent to $NOTIFY_SOCKET; a leading "@" names an abstract socket. With Type=notify
the unit is "active" only after READY=1, so the agent must send it once its listeners are bound.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import sdnotify
from tests.conftest import AgentProcess


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def test_ready_sends_one_datagram_with_status(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    assert sdnotify.ready("Serving", environ={"NOTIFY_SOCKET": path})
    assert fields(sock.recv(4096)) == {"READY": "1", "STATUS": "Serving"}


def test_reloading_carries_monotonic_time(systemd_socket: tuple[socket.socket, str]) -> None:
    # sd_notify(3): RELOADING=1 goes with MONOTONIC_USEC= (CLOCK_MONOTONIC, microseconds)
    sock, path = systemd_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading(environ={"NOTIFY_SOCKET": path})
    got = fields(sock.recv(4096))
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_stopping(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    assert sdnotify.stopping(environ={"NOTIFY_SOCKET": path})
    assert fields(sock.recv(4096))["STOPPING"] == "1"


def test_abstract_namespace_socket() -> None:
    name = f"cairn-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    with sock:
        assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_no_socket_is_a_no_op() -> None:
    assert sdnotify.notify("READY=1", environ={}) is False
    assert sdnotify.ready(environ={"NOTIFY_SOCKET": ""}) is False
    assert sdnotify.ready(environ={"NOTIFY_SOCKET": "relative/path"}) is False


def test_unreachable_socket_is_not_fatal(tmp_path: Path) -> None:
    assert sdnotify.ready(environ={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False


def test_agent_notifies_ready_reload_and_stop(
    systemd_socket: tuple[socket.socket, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real agent: READY=1 only once HTTP answers; RELOADING=1 then READY=1 around SIGHUP."""
    sock, path = systemd_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    agent = AgentProcess(tmp_path)  # returns once /v1/status/leader answers
    try:
        ready = fields(sock.recv(4096))
        assert ready["READY"] == "1"
        assert str(agent.http_port) in ready["STATUS"] and str(agent.dns_port) in ready["STATUS"]

        agent.signal(signal.SIGHUP)
        assert fields(sock.recv(4096))["RELOADING"] == "1"
        assert fields(sock.recv(4096))["READY"] == "1"

        agent.signal(signal.SIGTERM)
        assert fields(sock.recv(4096))["STOPPING"] == "1"
    finally:
        agent.stop(check=False)
