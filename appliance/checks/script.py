"""Script checks: run `args` as a child process and map its exit code to a status.

How it works
------------
The argv is exec'd directly (no shell) in a new process group whose ID is the child's PID, with
stdin from /dev/null and stdout+stderr merged into one pipe. A reader task drains the pipe into
a `TailBuffer`, so a chatty script never blocks on a full pipe and only the last
`output_max_size` bytes are kept (`Captured %d of %d bytes\\n...\\n<tail>` when cut).

The whole group is killed with SIGKILL (to -pgid) when:
- the timeout passes (the result is critical, `Timed out (30s) running check`);
- the script exits but something it started still runs in its group (nothing is orphaned);
- the running check is cancelled (a reload changed or removed it, or the agent stops).
The child is then always waited for, so it is reaped and never left a zombie. `ProcessGroups`
records every live group so the manager can kill whatever is left at shutdown as a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from collections.abc import Sequence

from appliance.checks.rules import CRITICAL, TailBuffer, script_status, timeout_output

READ_CHUNK = 65536
DRAIN_AFTER_EXIT_S = 1.0  # how long the pipe may stay open once the group is gone


class ProcessGroups:
    """The process groups of running scripts (by pgid), for a last sweep at shutdown."""

    def __init__(self) -> None:
        self.live: set[int] = set()

    def kill_all(self) -> None:
        for pgid in list(self.live):
            kill_group(pgid)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def invoke_error(args: Sequence[str], err: OSError) -> str:
    """Go's exec error texts, which is what Consul puts in the output."""
    prog = args[0] if args else ""
    if err.errno == errno.ENOENT and "/" not in prog:
        return f'exec: "{prog}": executable file not found in $PATH'
    text = os.strerror(err.errno) if err.errno else str(err)
    return f"fork/exec {prog}: {text[:1].lower() + text[1:]}"


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for the killed child. Shielded: if this task is cancelled meanwhile, the event
    loop's child watcher still collects the exit status, so no zombie is left either way."""
    await asyncio.shield(proc.wait())


async def run_script(args: Sequence[str], timeout_s: float, max_size: int,
                     groups: ProcessGroups | None = None) -> tuple[str, str]:
    """Run one script check; returns (status, output)."""
    if not args:
        return CRITICAL, "Check has no script arguments"
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            process_group=0,  # own group: pgid == pid, so the whole tree can be killed
        )
    except OSError as err:
        return CRITICAL, invoke_error(args, err)
    pgid = proc.pid
    if groups is not None:
        groups.live.add(pgid)
    buf = TailBuffer(max_size)

    async def pump() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(READ_CHUNK):
            buf.write(chunk)

    reader = asyncio.create_task(pump())
    try:
        try:
            async with asyncio.timeout(timeout_s):
                code = await proc.wait()
        except TimeoutError:
            kill_group(pgid)
            await _reap(proc)
            return CRITICAL, timeout_output(timeout_s)
        # The script is done; anything it left behind in its group goes with it.
        kill_group(pgid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), DRAIN_AFTER_EXIT_S)
        return script_status(code), buf.output()
    finally:
        # Also on cancellation (reload, shutdown): never leave the group running or unreaped.
        try:
            if proc.returncode is None:
                kill_group(pgid)
                await _reap(proc)
        finally:
            if groups is not None:
                groups.live.discard(pgid)
            reader.cancel()
            await asyncio.wait([reader])
            if not reader.cancelled():
                reader.exception()  # retrieved: a broken pipe read is not worth a warning
