"""Check status rules: what a check result means, with no I/O (the runners do the I/O).

How it works
------------
A runner (script, HTTP, TCP, UDP, alias) measures something and turns the raw result into a
`(status, output)` pair with the functions here: exit code or HTTP status to a status, and the
output texts Consul writes (`HTTP GET <url>: 200 OK Output: ...`, `TCP connect <addr>: Success`,
`Captured 4096 of 9000 bytes\\n...\\n<tail>`, `Timed out (30s) running check`, Go's dial errors).

`FlapDamper` is Consul's StatusHandler (reference/consul-api.md §7.4): it sits between a runner's
raw results and the check's stored status. Its counters start saturated, so the very first
result applies at once; afterwards a passing (or warning) result needs `success_before_passing`
consecutive successes, and a critical one `failures_before_warning` / `failures_before_critical`
consecutive failures before the status moves. Until then the old status stays and only the
output changes.

`alias_result` aggregates the checks of an aliased service (§7.3 Alias). Everything here is
plain synchronous Python; time and randomness never enter.
"""

from __future__ import annotations

import errno as errno_codes
import os
from dataclasses import dataclass

from appliance.config.durations import format_duration

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"

# Bytes of an HTTP response body kept as the check's output (Consul's 4 KiB buffer).
HTTP_BODY_MAX = 4096

# Check kinds cairn refuses, with the name Consul's documentation uses for them.
UNSUPPORTED_KINDS = {
    "grpc": "gRPC",
    "docker": "Docker",
    "h2ping": "H2PING",
    "os_service": "OSService",
}

# Kinds the check manager runs (TTL and maintenance checks are set from outside).
RUNNABLE_KINDS = frozenset({"script", "http", "tcp", "udp", "alias"})


def unsupported_check_text(kind: str) -> str | None:
    """The 400 text for a check type cairn cannot run honestly, or None if the type is fine."""
    name = UNSUPPORTED_KINDS.get(kind)
    if name is None:
        return None
    return f"Invalid check: {name} checks are not supported by cairn"


# ---------------------------------------------------------------------------------- status maps


def script_status(exit_code: int) -> str:
    """Script checks: 0 passing, 1 warning, anything else (signals included) critical."""
    if exit_code == 0:
        return PASSING
    if exit_code == 1:
        return WARNING
    return CRITICAL


def http_status(code: int) -> str:
    """HTTP checks: 2xx passing, 429 Too Many Requests warning, anything else critical."""
    if 200 <= code <= 299:
        return PASSING
    if code == 429:
        return WARNING
    return CRITICAL


# ---------------------------------------------------------------------------------- outputs


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def http_output(method: str, url: str, code: int, reason: str, body: bytes) -> str:
    """`HTTP GET http://x/health: 200 OK Output: <first 4 KiB of the body>`."""
    status = f"{code} {reason}".rstrip()
    return f"HTTP {method} {url}: {status} Output: {_text(body[:HTTP_BODY_MAX])}"


def tcp_output(addr: str) -> str:
    return f"TCP connect {addr}: Success"


def udp_output(addr: str) -> str:
    return f"UDP connect {addr}: Success"


def timeout_output(timeout_s: float) -> str:
    """`Timed out (30s) running check`, the duration written the way Go prints it."""
    return f"Timed out ({format_duration(timeout_s)}) running check"


def script_output(tail: bytes, total: int, max_size: int) -> str:
    """A script's combined stdout+stderr: whole, or the last `max_size` bytes with a header."""
    if max_size <= 0 or total <= max_size:
        return _text(tail)
    kept = tail[-max_size:]
    return f"Captured {len(kept)} of {total} bytes\n...\n{_text(kept)}"


class TailBuffer:
    """Keeps the last `max_size` bytes written and counts all of them (a circular buffer)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max(max_size, 1)
        self.total = 0
        self._data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._data += chunk
        excess = len(self._data) - self.max_size
        if excess > 0:
            del self._data[:excess]

    def output(self) -> str:
        return script_output(bytes(self._data), self.total, self.max_size)


def _errno_text(code: int | None, fallback: str) -> str:
    """Go prints syscall errors in lower case: `connection refused`, `no route to host`."""
    if code in (errno_codes.ETIMEDOUT,):
        return "i/o timeout"
    if code:
        text = os.strerror(code)
        return text[:1].lower() + text[1:]
    return fallback or "unknown error"


def dial_error(network: str, addr: str, code: int | None = None, detail: str = "", *,
               timed_out: bool = False, lookup_failed: bool = False, host: str = "") -> str:
    """Go's net.Dial error text: `dial tcp 127.0.0.1:80: connect: connection refused`."""
    if timed_out:
        return f"dial {network} {addr}: i/o timeout"
    if lookup_failed:
        return f"dial {network}: lookup {host}: no such host"
    return f"dial {network} {addr}: connect: {_errno_text(code, detail)}"


def http_error_output(method: str, url: str, reason: str) -> str:
    """Go's url.Error: `Get "http://x/health": dial tcp ...: connect: connection refused`."""
    op = method[:1].upper() + method[1:].lower()
    return f'{op} "{url}": {reason}'


def split_host_port(addr: str) -> tuple[str, int]:
    """Go's net.SplitHostPort for `host:port` and `[v6]:port`; raises ValueError when malformed."""
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0 or addr[end + 1 : end + 2] != ":":
            raise ValueError(f"address {addr}: missing port in address")
        host, port = addr[1:end], addr[end + 2 :]
    else:
        host, sep, port = addr.rpartition(":")
        if not sep:
            raise ValueError(f"address {addr}: missing port in address")
        if ":" in host:
            raise ValueError(f"address {addr}: too many colons in address")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {addr}: invalid port")
    return host, int(port)


# ---------------------------------------------------------------------------------- flap damping


@dataclass(frozen=True)
class Decision:
    """What to store after one result: the status and output, and which log line applies."""

    status: str
    output: str
    event: str  # "updated", "critical", "warning", "below_success", "below_failure"


class FlapDamper:
    """Consul's StatusHandler: consecutive-result thresholds before a status changes."""

    def __init__(self, success_before_passing: int = 0, failures_before_warning: int = 0,
                 failures_before_critical: int = 0) -> None:
        self.success_before_passing = success_before_passing
        self.failures_before_warning = failures_before_warning
        self.failures_before_critical = failures_before_critical
        # Saturated: the first result is applied at once, whatever the thresholds.
        self.successes = success_before_passing
        self.failures = failures_before_critical

    def decide(self, current: str, status: str, output: str) -> Decision:
        """The result `(status, output)` arrived while the check is `current`."""
        if status in (PASSING, WARNING):
            self.successes += 1
            self.failures = 0
            if self.successes >= self.success_before_passing:
                return Decision(status, output, "updated")
            return Decision(current, output, "below_success")
        self.failures += 1
        self.successes = 0
        if self.failures >= self.failures_before_critical:
            return Decision(CRITICAL, output, "critical")
        if self.failures >= self.failures_before_warning:
            return Decision(WARNING, output, "warning")
        return Decision(current, output, "below_failure")


# ---------------------------------------------------------------------------------- alias


def alias_result(checks: list[dict], node: str, service_id: str, *, service_exists: bool,
                 exclude_check_id: str = "") -> tuple[str, str]:
    """Aggregate health of `service_id` on `node` from that node's catalog checks.

    Node-level checks count, checks of other services do not; the alias check itself is
    skipped. Any critical wins, then any warning, else passing; a service that is not
    registered on the node is critical.
    """
    status, output = PASSING, "No checks found."
    found = False
    for check in checks:
        if check.get("CheckID") == exclude_check_id and check.get("Node", node).lower() == node.lower():
            continue
        own = check.get("ServiceID", "")
        if own and own != service_id:
            continue
        if own:
            found = True
        state = check.get("Status", CRITICAL)
        if state in (CRITICAL, WARNING):
            if status != CRITICAL:
                status = state
                output = f'Aliased check "{check.get("Name", "")}" failing: {check.get("Output", "")}'
        elif status == PASSING:
            output = "All checks passing."
    if not found and not service_exists:
        return CRITICAL, f"Service {service_id} could not be found on node {node}"
    return status, output
