"""Remote exec on the agent: the `_rexec` user event that `cairn exec` (and `consul exec`) fires.

How it works
------------
`cairn exec` (appliance/cli/exec.py) creates a session (behaviour "delete", TTL 15 s), writes the
job under `<prefix>/<session>/job` (prefix `_rexec`) holding the session's lock, and fires the
user event `_rexec` with the payload `{"Prefix": ..., "Session": ...}` and its node, service and
tag filters. Every agent whose filters match gets the event (appliance/events.py hands it here
instead of keeping it in the event list, as Consul's agent does) and:

1. **refuses it unless `disable_remote_exec = false`** (the default is true, as in Consul since
   0.8): it logs `ignoring remote exec event, disabled.` and does nothing, so `cairn exec` hears
   from no node;
2. reads the job spec from its own copy of the store, then with a consistent read if it is not
   there yet: `{"Command": "<shell line>"}` run with `/bin/sh -c`, or `{"Args": [...]}` run as
   they are, or `{"Script": "<base64>"}` written to a temporary file and run; `Wait` (Go
   nanoseconds) is the heartbeat period;
3. writes `<prefix>/<session>/<node>/ack`, then the command's output (stdout and stderr
   together) as `out/00000`, `out/00001`, ... chunks of at most 4 KiB, flushed after 500 ms
   without output, and an empty chunk every `Wait` while the command runs and is silent (so the
   CLI's quiet timer does not end the job); finally `exit` with the exit code as text (255 when
   the command cannot be started). Every key is written holding the job's session (a `kv_lock`
   write): when `cairn exec` destroys the session, all of them are deleted. With ACLs the writes
   carry the agent token, as Consul's do, so it needs `key:write` on the prefix.

The command runs as the agent's user with the agent's environment, in its own process group,
killed when the agent stops. This is arbitrary code execution for anyone who can write to the
KV store and fire events: docs/security.md says when (not) to turn it on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import tempfile
from collections.abc import Callable
from typing import Any

from appliance.acl.caller import acting_as
from appliance.interfaces import Consensus
from appliance.state.store import Store

log = logging.getLogger("agent")

JOB_FILE = "job"  # Consul's rExecFileName
ACK_SUFFIX = "ack"
EXIT_SUFFIX = "exit"
OUTPUT_SIZE = 4096  # Consul's remoteExecOutputSize
OUTPUT_IDLE_S = 0.5  # Consul's remoteExecOutputDeadline
DEFAULT_WAIT_S = 2.0
MAX_TASKS = 16  # remote exec jobs running at once on one agent; more are dropped (logged)


class RemoteExec:
    """Runs the `_rexec` jobs this agent receives (when enabled)."""

    def __init__(self, node: str, store: Store, consensus: Consensus, enabled: Callable[[], bool]) -> None:
        self.node = node
        self.store = store
        self.consensus = consensus
        self.enabled = enabled
        self.token: Callable[[], str] = lambda: ""  # the agent token its writes carry (Consul: AgentToken)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stats = {"received": 0, "ignored": 0, "run": 0, "failed": 0}

    def handle(self, record: Any) -> None:
        """A `_rexec` user event whose filters match this agent (called from the event loop)."""
        self.stats["received"] += 1
        if not self.enabled():
            self.stats["ignored"] += 1
            log.info("ignoring remote exec event, disabled.: event_name=%s event_id=%s", record.name, record.id)
            return
        if len(self.tasks) >= MAX_TASKS:
            self.stats["ignored"] += 1
            log.warning("ignoring remote exec event, too many running: event_id=%s", record.id)
            return
        task = asyncio.get_running_loop().create_task(self._run(record))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, record: Any) -> None:
        log.debug("received remote exec event: id=%s", record.id)
        try:
            event = json.loads(record.payload or b"")
            prefix, session = str(event["Prefix"]), str(event["Session"])
        except (ValueError, KeyError, TypeError) as err:
            log.error("failed to decode remote exec event: error=%s", err)
            return
        try:
            spec = await self._spec(prefix, session)
            if spec is None:
                log.debug("remote exec aborted, job spec missing")
                return
            if not await self._write(prefix, session, ACK_SUFFIX, None):
                return
            self.stats["run"] += 1
            code = await self._execute(prefix, session, spec)
            await self._write(prefix, session, EXIT_SUFFIX, str(code).encode())
        except Exception as err:  # noqa: BLE001 - one job's trouble must not reach the event loop
            self.stats["failed"] += 1
            log.error("remote exec failed: error=%s", err)

    async def _spec(self, prefix: str, session: str) -> dict[str, Any] | None:
        key = f"{prefix}/{session}/{JOB_FILE}"
        entry = self.store.kv_get(key)
        if entry is None:  # not replicated here yet: ask for the leader's view
            log.debug("trying consistent fetch of remote exec job spec")
            await self.consensus.read_point("consistent")
            entry = self.store.kv_get(key)
        if entry is None or not entry.get("Value"):
            return None
        value = entry["Value"]
        spec = json.loads(value if isinstance(value, (bytes, str)) else b"{}")
        return spec if isinstance(spec, dict) else None

    async def _write(self, prefix: str, session: str, suffix: str, value: bytes | None) -> bool:
        key = f"{prefix}/{session}/{self.node}/{suffix}"
        try:
            with acting_as(self.token()):  # with ACLs: needs key:write on the prefix
                ok = await self.consensus.propose({"Type": "kv_lock", "Key": key, "Flags": 0, "Value": value or None,
                                                   "Session": session})
        except Exception as err:  # noqa: BLE001 - no leader, an invalid session: the job ends here
            log.error("failed to write remote exec key: key=%s error=%s", key, err)
            return False
        if not ok:
            log.error("failed to write remote exec key: key=%s (session gone)", key)
        return bool(ok)

    async def _execute(self, prefix: str, session: str, spec: dict[str, Any]) -> int:
        wait_s = spec.get("Wait") or 0
        wait_s = wait_s / 1e9 if isinstance(wait_s, (int, float)) and wait_s > 0 else DEFAULT_WAIT_S
        script_path = ""
        if spec.get("Script"):
            fd, script_path = tempfile.mkstemp(prefix="rexec")
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(spec["Script"]))
            os.chmod(script_path, 0o700)
            argv = [script_path]
        elif spec.get("Args"):
            argv = [str(a) for a in spec["Args"]]
        else:
            argv = ["/bin/sh", "-c", str(spec.get("Command") or "")]
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            log.debug("failed to start remote exec: error=%s", err)
            if script_path:
                os.unlink(script_path)
            return 255
        try:
            return await self._stream(prefix, session, proc, wait_s)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            if script_path:
                with contextlib.suppress(OSError):
                    os.unlink(script_path)

    async def _stream(self, prefix: str, session: str, proc: asyncio.subprocess.Process, wait_s: float) -> int:
        """Send the output in chunks (with heartbeats) until the command exits; its exit code."""
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        num, buf = 0, b""
        last_write = loop.time()

        async def send(chunk: bytes) -> bool:
            nonlocal num, last_write
            ok = await self._write(prefix, session, f"out/{num:05x}", chunk)
            num += 1
            last_write = loop.time()
            return ok

        while True:
            timeout = OUTPUT_IDLE_S if buf else max(0.01, wait_s - (loop.time() - last_write))
            try:
                data = await asyncio.wait_for(proc.stdout.read(OUTPUT_SIZE - len(buf)), timeout)
            except TimeoutError:
                if not await send(buf):  # flush what is pending, or a heartbeat
                    return 255
                buf = b""
                continue
            if not data:
                break
            buf += data
            if len(buf) >= OUTPUT_SIZE:
                if not await send(buf):
                    return 255
                buf = b""
        if buf and not await send(buf):
            return 255
        code = await proc.wait()
        return code if code >= 0 else 128 - code  # killed by a signal: 128 + its number, as a shell says
