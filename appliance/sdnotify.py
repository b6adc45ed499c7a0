"""Tell systemd how the agent is doing (the sd_notify protocol), with no dependency.

How it works: a unit with `Type=notify` starts the agent with `$NOTIFY_SOCKET` set to a unix
datagram socket. The agent sends one datagram of newline-separated `KEY=value` lines to it:
`READY=1` once its HTTP and DNS listeners are bound (systemd then reports the unit as
"active"), `RELOADING=1` with `MONOTONIC_USEC=` while a SIGHUP reload runs and `READY=1` again
after, `STOPPING=1` when shutting down, and `STATUS=` free text shown by `systemctl status`.
A name starting with `@` is a socket in the abstract namespace (a leading NUL byte).

Without `$NOTIFY_SOCKET` (not under systemd, or a unit of another type) every call does nothing.
A failure to send is never fatal: the agent keeps running and `notify` returns False.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["notify", "ready", "reloading", "stopping"]


def _address(name: str) -> str | bytes | None:
    if not name:
        return None
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None  # vsock addresses (vsock:CID:PORT) are for virtual machines; not used here


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send `fields` (`"READY=1"`, `"STATUS=..."`) to systemd; True when a datagram was sent."""
    env = os.environ if environ is None else environ
    address = _address(env.get("NOTIFY_SOCKET", ""))
    if address is None or not fields:
        return False
    payload = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError:
        return False
    return True


def ready(status: str = "", *, environ: dict[str, str] | None = None) -> bool:
    """The agent is serving: listeners bound (not "joined a cluster": a lone server is ready)."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []), environ=environ)


def reloading(*, environ: dict[str, str] | None = None) -> bool:
    """A reload has started; follow with `ready()` when it is over, whatever its outcome."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=Reloading configuration", environ=environ)


def stopping(*, environ: dict[str, str] | None = None) -> bool:
    """The agent is shutting down."""
    return notify("STOPPING=1", "STATUS=Shutting down", environ=environ)
