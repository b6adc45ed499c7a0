"""Loopback ports, a tiny HTTP client and polling, shared by every test that talks to an agent."""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]

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
