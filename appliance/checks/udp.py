"""UDP checks: send one datagram; a reply or silence is passing, an ICMP error is critical.

How it works
------------
A UDP socket is connected to the `udp` address (`host:port`), so the kernel reports an ICMP
"port unreachable" for it as ECONNREFUSED on the socket. One small datagram is sent, then the
check waits up to its timeout (default 10s) for an answer:
- a datagram comes back: passing, `UDP connect <addr>: Success`;
- nothing arrives before the timeout: also passing (most UDP services do not answer garbage);
- the socket reports an error (ICMP unreachable, a failed send): critical, with Go's text
  `read udp 127.0.0.1:9: read: connection refused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from appliance.checks.rules import CRITICAL, PASSING, dial_error, split_host_port, udp_output
from appliance.local.definitions import CheckDefinition

PROBE = b"health"


class _Probe(asyncio.DatagramProtocol):
    def __init__(self, answered: asyncio.Future[None]) -> None:
        self.answered = answered

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not self.answered.done():
            self.answered.set_result(None)

    def error_received(self, exc: Exception) -> None:
        if not self.answered.done():
            self.answered.set_exception(exc)


def _go_errno(err: OSError) -> str:
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


def _fmt(sockaddr: tuple) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run_udp(check: CheckDefinition) -> tuple[str, str]:
    """One probe; returns (status, output)."""
    addr = check.udp
    try:
        host, port = split_host_port(addr)
    except ValueError as err:
        return CRITICAL, f"dial udp: {err}"
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM)
    except socket.gaierror:
        return CRITICAL, dial_error("udp", addr, lookup_failed=True, host=host)
    family, _type, _proto, _name, remote = infos[0]
    answered: asyncio.Future[None] = loop.create_future()
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: _Probe(answered),
                                                           remote_addr=(str(remote[0]), int(remote[1])), family=family)
    except OSError as err:
        return CRITICAL, dial_error("udp", addr, err.errno, err.strerror or str(err))
    try:
        transport.sendto(PROBE)
        try:
            await asyncio.wait_for(answered, check.timeout_s or 10.0)
        except TimeoutError:
            pass  # no answer is not a failure: the datagram was not refused
        except OSError as err:
            # Go also names the local port; it changes every run, and an output that changes
            # every run would cost a catalog write every run, so only the remote is named.
            return CRITICAL, f"read udp {_fmt(remote)}: read: {_go_errno(err)}"
        return PASSING, udp_output(addr)
    finally:
        with contextlib.suppress(Exception):
            transport.close()
