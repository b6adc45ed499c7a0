"""TCP checks: a connection that opens within the timeout is passing.

How it works
------------
The `tcp` address (`host:port`, `[v6]:port`) is resolved and each resolved address is tried in
turn, like Go's dialer, all within the check's timeout (default 10s). The first connection that
opens makes the check passing with `TCP connect <addr>: Success`; it is closed at once. With
`tcp_use_tls` a TLS handshake must also succeed (`tls_skip_verify`, `tls_server_name` apply).
Failure is critical with Go's dial error as the output
(`dial tcp 127.0.0.1:9: connect: connection refused`, `dial tcp 10.0.0.1:80: i/o timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from appliance.checks.rules import CRITICAL, PASSING, dial_error, split_host_port, tcp_output
from appliance.local.definitions import CheckDefinition


def client_ssl_context(skip_verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def resolve(host: str, port: int, sock_type: int) -> list[tuple]:
    """Addresses for host:port, IPv4 and IPv6 as the resolver orders them."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=sock_type)
    return [(family, addr) for family, _type, _proto, _name, addr in infos]


async def run_tcp(check: CheckDefinition) -> tuple[str, str]:
    """One dial; returns (status, output)."""
    addr = check.tcp
    try:
        host, port = split_host_port(addr)
    except ValueError as err:
        return CRITICAL, f"dial tcp: {err}"
    tls = client_ssl_context(check.tls_skip_verify) if check.tcp_use_tls else None
    first_error: OSError | None = None
    try:
        async with asyncio.timeout(check.timeout_s or 10.0):
            try:
                targets = await resolve(host, port, socket.SOCK_STREAM)
            except socket.gaierror:
                return CRITICAL, dial_error("tcp", addr, lookup_failed=True, host=host)
            for _family, sockaddr in targets:
                try:
                    _reader, writer = await asyncio.open_connection(
                        sockaddr[0], sockaddr[1], ssl=tls,
                        server_hostname=(check.tls_server_name or host) if tls else None,
                    )
                except OSError as err:
                    first_error = first_error or err
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return PASSING, tcp_output(addr)
    except TimeoutError:
        return CRITICAL, dial_error("tcp", addr, timed_out=True)
    if isinstance(first_error, ssl.SSLError):
        return CRITICAL, f"tls: {first_error.reason or first_error}"
    if first_error is None:
        return CRITICAL, dial_error("tcp", addr, lookup_failed=True, host=host)
    return CRITICAL, dial_error("tcp", addr, first_error.errno, first_error.strerror or str(first_error))
