"""What an agent's watch runs when its data changes: a script, or an HTTP request.

Script (`args`, or the deprecated `handler` string run by `sh -c`): the data as JSON and a
newline on stdin, `CONSUL_INDEX=<index>` added to the agent's environment, stdout and stderr
kept together in a 4 KiB ring buffer (a longer output is logged as `Captured 4096 of <n>
bytes\\n...\\n<last 4096 bytes>`) and logged at DEBUG. A failure (a non-zero exit, a command
that cannot start) is logged `Failed to run watch handler '<h>': <err>`. The script runs in
its own process group and is killed with it if the watch is stopped (agent shutdown, reload).

HTTP (`handler_type = "http"`): the data as the JSON body of `method` (POST) to `path`, with
`Content-Type: application/json`, `X-Consul-Index: <index>` and the configured headers,
within `timeout` (10 s). A 2xx answer is logged at DEBUG, anything else as an error with the
status and up to 4 KiB of the body.

The handlers run inside the watch's loop: the next blocking query starts when the handler is
done, as in Consul.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from appliance.watches.plan import HTTPHandlerConfig, encode

WATCH_BUF_SIZE = 4096
Handler = Callable[[int, Any], Awaitable[None]]


def go_list(args: Sequence[str]) -> str:
    """A string slice as Go's %v prints it: `[a b c]`."""
    return "[" + " ".join(args) + "]"


def exit_text(code: int) -> str:
    """Go's text for a process's end: `exit status N` or `signal: killed`."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
        return "signal: " + {"SIGKILL": "killed", "SIGTERM": "terminated", "SIGINT": "interrupt",
                             "SIGHUP": "hangup"}.get(name, name.lower().removeprefix("sig"))
    return f"exit status {code}"


class RingBuffer:
    """Keeps the last `size` bytes written; says how much was dropped."""

    def __init__(self, size: int = WATCH_BUF_SIZE) -> None:
        self.size = size
        self.total = 0
        self._data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._data += chunk
        if len(self._data) > self.size:
            del self._data[: len(self._data) - self.size]

    def text(self) -> str:
        out = self._data.decode("utf-8", "replace")
        if self.total > self.size:
            return f"Captured {self.size} of {self.total} bytes\n...\n{out}"
        return out


def shell_argv(script: str) -> list[str]:
    """Consul's ExecScript: `$SHELL -c <script>`, /bin/sh when SHELL is not set."""
    return [os.environ.get("SHELL") or "/bin/sh", "-c", script]


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def script_handler(command: str | Sequence[str], log: logging.Logger) -> Handler:
    """`args` (a list, run as it is) or `handler` (a string, run by the shell)."""
    argv = shell_argv(command) if isinstance(command, str) else list(command)
    label = command if isinstance(command, str) else go_list(command)

    async def run(index: int, data: Any) -> None:
        env = dict(os.environ, CONSUL_INDEX=str(index))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, process_group=0)
        except OSError as err:
            log.error("Failed to run watch handler '%s': %s", label, err)
            return
        buf = RingBuffer()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(encode(data).encode() + b"\n")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the script does not read its input
            proc.stdin.close()
            while chunk := await proc.stdout.read(65536):
                buf.write(chunk)
            code = await proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        if code != 0:
            log.error("Failed to run watch handler '%s': %s", label, exit_text(code))
        log.debug("watch handler '%s' output: %s", label, buf.text())

    return run


def http_handler(config: HTTPHandlerConfig, log: logging.Logger) -> Handler:
    """POST (or `method`) the data to `path`."""
    ssl_ctx: ssl.SSLContext | bool = True
    if config.tls_skip_verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ssl_ctx = ctx

    async def run(index: int, data: Any) -> None:
        headers = [(name, value) for name, values in config.header.items() for value in values]
        headers += [("Content-Type", "application/json"), ("X-Consul-Index", str(index))]
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx, force_close=True),
                                             trust_env=False) as session, session.request(
                config.method, config.path, data=encode(data).encode(), headers=headers,
                timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            ) as resp:
                body = (await resp.content.read(WATCH_BUF_SIZE)).decode("utf-8", "replace")
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
            log.error("Failed to invoke http watch handler '%s': %s", config.path, err or type(err).__name__)
            return
        if 200 <= status < 300:
            log.debug("http watch handler '%s' output: %s", config.path, body)
        else:
            log.error("http watch handler '%s' got '%s' with body: %s", config.path, status, body)

    return run
