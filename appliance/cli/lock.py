"""``cairn lock``: run a command while holding a lock (``-n 1``) or a semaphore slot (``-n N``).

As ``consul lock``: the prefix's leading ``/`` is dropped; ``-n 1`` is a mutex on
``<prefix>/.lock`` (appliance/locks/mutex.py), ``-n N`` a semaphore of N holders under
``<prefix>/`` (appliance/locks/semaphore.py), so a lock and a semaphore on one prefix refuse each
other. The session is named ``Consul lock for '<command>' at '<prefix>'`` unless ``-name`` is
given. ``-timeout`` (or its old name ``-try``) bounds the wait; without it the verb waits for
ever.

Once held, the command runs (``$SHELL -c`` with the arguments joined, or directly with
``-shell=false``) with ``CONSUL_LOCK_HELD=true`` in its environment, stdin only with
``-pass-stdin``, in its own process group. SIGINT and SIGTERM are passed on to it and end the
verb; SIGHUP, SIGUSR1 and SIGUSR2 are passed on. If the lock is lost while it runs (the key
released or deleted, the session invalidated, the agent unreachable after ``-monitor-retry``
retries a second apart), the command gets SIGTERM, then SIGKILL 5 s later. Then the lock is
released and, when nobody else uses it, its key removed.

Exit codes are Consul's: 0 (also when the lock was lost), 1 for a usage error, a failure to
reach the agent or to take the lock (``Shutdown triggered or timeout during lock
acquisition`` when the wait ran out), 2 with ``-child-exit-code`` when the command failed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from appliance.cli.flags import CliParser, command, err
from appliance.cli.http_client import add_http_flags
from appliance.cli.watch import add_true_flag, agent_answers, agent_client, rewrite_true_flag
from appliance.config.durations import DurationError, parse_duration
from appliance.locks.mutex import ERR_IN_USE as LOCK_IN_USE, Lock
from appliance.locks.semaphore import ERR_IN_USE as SEMAPHORE_IN_USE, Semaphore
from appliance.locks.session import LockError, go_path_join
from appliance.watches.client import ApiFailure, Unreachable
from appliance.watches.handlers import exit_text, shell_argv

USAGE = "cairn lock [options] prefix child..."
DESCRIPTION = """\
  Acquires a lock or semaphore at a given path, and invokes a child process
  when successful. The child process can assume the lock is held while it
  executes. If the lock is lost or communication is disrupted the child
  process will be sent a SIGTERM signal and given time to gracefully exit.
  After the grace period expires the process will be hard terminated.

  When -n=1, only a single lock holder or leader exists providing mutual
  exclusion. Setting a higher value switches to a semaphore allowing multiple
  holders to coordinate.

  The prefix provided must have write privileges."""

KILL_GRACE_S = 5.0
MONITOR_RETRY_S = 1.0
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def build_parser() -> CliParser:
    p = CliParser("cairn lock", USAGE, DESCRIPTION)
    add_http_flags(p)
    g = p.add_argument_group("Command Options")
    g.add_argument("-child-exit-code", "--child-exit-code", dest="child_exit_code", action="store_true",
                   help="Exit 2 if the child process exited with an error. Default false.")
    g.add_argument("-n", "--n", dest="n", type=int, default=1, metavar="<int>",
                   help="Limit on the number of concurrent lock holders: more than 1 switches from a lock "
                   "to a semaphore. Default 1.")
    g.add_argument("-monitor-retry", "--monitor-retry", dest="monitor_retry", type=int, default=3, metavar="<int>",
                   help="Times to retry when the agent answers 500 or is unreachable while the lock is "
                   "monitored, 1s apart. Default 3; 0 disables retries.")
    g.add_argument("-name", "--name", dest="name", default="", metavar="<string>",
                   help="Name of the lock session. Default: generated from the child command.")
    g.add_argument("-pass-stdin", "--pass-stdin", dest="pass_stdin", action="store_true",
                   help="Pass stdin to the child process.")
    add_true_flag(g, "shell", "Use a shell to run the command (the SHELL environment variable picks it). "
                  "Default true.")
    g.add_argument("-timeout", "--timeout", dest="timeout", default="0", metavar="<duration>",
                   help='Maximum time to wait for the lock, a duration such as "1s" or "3h". Default 0 '
                   "(wait for ever).")
    g.add_argument("-try", "--try", dest="timeout", metavar="<duration>", help="DEPRECATED. Use -timeout instead.")
    g.add_argument("-verbose", "--verbose", dest="verbose", action="store_true",
                   help="Enable verbose (debugging) output.")
    return p


def info(args: Any, text: str) -> None:
    if args.verbose:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class Child:
    """The command: started once, signalled as a process group."""

    def __init__(self, argv: list[str], pass_stdin: bool) -> None:
        self.argv, self.pass_stdin = argv, pass_stdin
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self) -> bool:
        """Run to the end; True when it succeeded."""
        env = dict(os.environ, CONSUL_LOCK_HELD="true")
        stdin = None if self.pass_stdin else asyncio.subprocess.DEVNULL
        try:
            self.proc = await asyncio.create_subprocess_exec(*self.argv, stdin=stdin, env=env, process_group=0)
        except OSError as exc:
            err(f"Error starting handler: {exc.strerror or exc}")
            return False
        code = await self.proc.wait()
        if code != 0:
            err(f"Error running handler: {exit_text(code)}")
        return code == 0

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


async def _kill(args: Any, child: Child, running: asyncio.Task[bool]) -> None:
    """SIGTERM, then SIGKILL after the grace period."""
    if child.proc is None:
        info(args, "No child process to kill")
        return
    info(args, f"Terminating child pid {child.proc.pid}")
    child.signal(signal.SIGTERM)
    done, _ = await asyncio.wait((running,), timeout=KILL_GRACE_S)
    if done:
        info(args, "Child terminated")
        return
    info(args, f"Child did not exit after grace period of {KILL_GRACE_S:g}s")
    info(args, f"Killing child pid {child.proc.pid}")
    child.signal(signal.SIGKILL)
    await asyncio.gather(running, return_exceptions=True)


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
            elif not t.cancelled():
                t.exception()  # retrieved: the caller reads the shielded future itself


async def _hold(args: Any, lock: Lock | Semaphore, child: Child, shutdown: asyncio.Event) -> int:
    """Lock held: run the child until it ends, the lock is lost or a shutdown signal comes."""
    if shutdown.is_set():
        err("Shutdown triggered during lock acquisition")
        return 0
    info(args, "Starting handler")
    running = asyncio.ensure_future(child.run())
    await _first(asyncio.shield(running), lock.lost.wait(), shutdown.wait())
    if running.done():
        info(args, "Child terminated, releasing lock")
        return 0 if running.result() else 2
    info(args, "Shutdown triggered, killing child" if shutdown.is_set() else "Lock lost, killing child")
    await _kill(args, child, running)
    return 0


async def _lock(args: Any, prefix: str, child_args: list[str], timeout_s: float) -> int:
    name = args.name or f"Consul lock for '{' '.join(child_args)}' at '{prefix}'"
    argv = shell_argv(" ".join(child_args)) if args.shell else child_args
    loop = asyncio.get_running_loop()
    shutdown = asyncio.Event()
    child = Child(argv, args.pass_stdin)

    def on_signal(sig: int) -> None:
        child.signal(sig)
        if sig in SHUTDOWN_SIGNALS:
            shutdown.set()

    for sig in (*SHUTDOWN_SIGNALS, *FORWARDED_SIGNALS):
        loop.add_signal_handler(sig, on_signal, sig)
    async with agent_client(args) as api:
        if not await agent_answers(api):
            return 1
        options: dict[str, Any] = dict(session_name=name, try_once=timeout_s > 0,
                                       monitor_retries=args.monitor_retry, monitor_retry_s=MONITOR_RETRY_S)
        if timeout_s > 0:
            options["wait_s"] = timeout_s
        lock: Lock | Semaphore
        try:
            if args.n == 1:
                key = go_path_join(prefix, ".lock")
                info(args, f"Setting up lock at path: {key}")
                lock, in_use = Lock(api, key, **options), LOCK_IN_USE
            else:
                info(args, f"Setting up semaphore (limit {args.n}) at prefix: {prefix}")
                lock, in_use = Semaphore(api, prefix, args.n, **options), SEMAPHORE_IN_USE
        except LockError as exc:
            err(f"Lock setup failed: {exc}")
            return 1
        info(args, "Attempting lock acquisition")
        acquiring = asyncio.ensure_future(lock.acquire())
        try:
            await _first(asyncio.shield(acquiring), shutdown.wait())
            if not acquiring.done():
                acquiring.cancel()
                await asyncio.gather(acquiring, return_exceptions=True)
                err("Shutdown triggered or timeout during lock acquisition")
                return 1
            if not acquiring.result():
                err("Shutdown triggered or timeout during lock acquisition")
                return 1
        except (LockError, Unreachable, ApiFailure) as exc:
            err(f"Lock acquisition failed: {exc}")
            return 1
        code = await _hold(args, lock, child, shutdown)
        try:
            await lock.release()
        except LockError as exc:
            err(f"Lock release failed: {exc}")
            return 1
        try:
            await lock.destroy()
            info(args, "Cleanup succeeded")
        except LockError as exc:
            if str(exc) != in_use:
                err(f"Lock cleanup failed: {exc}")
                return 1
            info(args, "Cleanup aborted, lock in use")
        return code if args.child_exit_code else 0


@command
def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse(rewrite_true_flag(parser, argv, "shell"))
    if args.n <= 0:
        err("Lock holder limit must be positive")
        return 1
    if len(args.args) < 2:
        err("Key prefix and child command must be specified")
        return 1
    prefix = args.args[0].removeprefix("/")
    try:
        timeout_s = parse_duration(args.timeout or "0")
    except DurationError as exc:
        parser.error(f'invalid value "{args.timeout}" for flag -timeout: {exc}')
    if timeout_s < 0:
        err("Timeout must be positive")
        return 1
    if args.monitor_retry < 0:
        err("Number for 'monitor-retry' must be >= 0")
        return 1
    return asyncio.run(_lock(args, prefix, args.args[1:], timeout_s))
