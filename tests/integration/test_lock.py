"""`cairn lock` against a real `cairn agent -dev`: mutual exclusion, the semaphore's limit, a lost lock.

Each contender is a real `cairn lock` process. The child is a small Python script that marks
the critical section with an exclusive file (O_EXCL: a second child inside at the same time
cannot create it and records an overlap), so the tests see overlaps directly instead of
inferring them from the result.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import AgentProcess
from tests.harness import Cluster, wait_until

LOCK_TIMEOUT_S = 120.0

MUTEX_CHILD = """
import os, sys, time
d = sys.argv[1]
try:
    fd = os.open(os.path.join(d, "inside"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    open(os.path.join(d, "overlaps"), "a").write("overlap\\n")
    fd = None
assert os.environ["CONSUL_LOCK_HELD"] == "true"
path = os.path.join(d, "counter")
n = int(open(path).read())
time.sleep(0.02)
open(path, "w").write(str(n + 1))
if fd is not None:
    os.close(fd)
    os.unlink(os.path.join(d, "inside"))
"""

SEMAPHORE_CHILD = """
import os, sys, time
d = sys.argv[1]
mine = os.path.join(d, "in", str(os.getpid()))
open(mine, "w").close()
inside = len(os.listdir(os.path.join(d, "in")))
open(os.path.join(d, "seen"), "a").write(f"{inside}\\n")
time.sleep(0.8)
os.unlink(mine)
"""


def lock_proc(agent: AgentProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "appliance", "lock", *args], env=agent.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    out = []
    for proc in procs:
        try:
            _, stderr = proc.communicate(timeout=LOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        out.append((proc.returncode, stderr))
    return out


def test_twenty_contenders_count_exactly_without_overlap(agent: AgentProcess, tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(MUTEX_CHILD)
    (tmp_path / "counter").write_text("0")
    procs = [lock_proc(agent, "-shell=false", "/locks/counter", sys.executable, str(child), str(tmp_path))
             for _ in range(20)]
    results = finish(procs)
    assert all(code == 0 for code, _ in results), results
    assert (tmp_path / "counter").read_text() == "20"
    assert not (tmp_path / "overlaps").exists()
    # released and cleaned up: the lock key is gone, no session is left
    assert agent.get("/v1/kv/locks/counter/.lock")[0] == 404
    assert json.loads(agent.get("/v1/session/list")[2]) == []


def test_semaphore_never_admits_a_fourth(agent: AgentProcess, tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(SEMAPHORE_CHILD)
    (tmp_path / "in").mkdir()
    procs = [lock_proc(agent, "-n", "3", "-shell=false", "sem/pool", sys.executable, str(child), str(tmp_path))
             for _ in range(9)]
    results = finish(procs)
    assert all(code == 0 for code, _ in results), results
    seen = [int(x) for x in (tmp_path / "seen").read_text().split()]
    assert len(seen) == 9
    assert max(seen) <= 3, seen
    assert max(seen) >= 2, seen  # contenders did share the semaphore
    assert agent.get("/v1/kv/sem/pool?recurse")[0] == 404  # contender keys and .lock removed
    assert json.loads(agent.get("/v1/session/list")[2]) == []


def test_timeout_exit_codes_and_conflicts(agent: AgentProcess, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    holder = lock_proc(agent, "busy", f"touch {ready}; sleep 30")
    try:
        wait_until(ready.exists, 30, what="the first holder's child")
        start = time.monotonic()
        waited = agent.cli("lock", "-timeout", "1s", "busy", "true")
        assert (waited.returncode, waited.stderr) == (1, "Shutdown triggered or timeout during lock acquisition\n")
        assert time.monotonic() - start < 10
        conflict = agent.cli("lock", "-n", "2", "busy", "true")
        assert conflict.returncode == 1
        assert conflict.stderr == "Lock acquisition failed: Existing key does not match semaphore use\n"
    finally:
        holder.send_signal(signal.SIGTERM)  # passed on to the child; the lock is released
        _, stderr = holder.communicate(timeout=30)
    assert holder.returncode == 0, stderr
    assert agent.get("/v1/kv/busy/.lock")[0] == 404
    failed = agent.cli("lock", "busy", "exit 3")
    assert (failed.returncode, failed.stderr) == (0, "Error running handler: exit status 3\n")
    assert agent.cli("lock", "-child-exit-code", "busy", "exit 3").returncode == 2
    assert agent.cli("lock", "-child-exit-code", "busy", "exit 0").returncode == 0
    piped = agent.cli("lock", "-pass-stdin", "busy", "cat; echo \" $CONSUL_LOCK_HELD\"", input="in")
    assert (piped.returncode, piped.stdout) == (0, "in true\n")
    assert agent.cli("lock", "busy", "cat", input="in").stdout == ""  # stdin not passed by default
    for args, text in ((["-n", "0", "p", "true"], "Lock holder limit must be positive\n"),
                       (["p"], "Key prefix and child command must be specified\n"),
                       (["-monitor-retry", "-1", "p", "true"], "Number for 'monitor-retry' must be >= 0\n")):
        proc = agent.cli("lock", *args)
        assert (proc.returncode, proc.stderr) == (1, text)


@pytest.mark.parametrize("limit", [1, 2])
def test_lost_lock_terminates_the_child(agent: AgentProcess, tmp_path: Path, limit: int) -> None:
    ready, terminated = tmp_path / "ready", tmp_path / "terminated"
    holder = lock_proc(agent, "-verbose", "-n", str(limit), "lost",
                       f"trap 'touch {terminated}; exit 0' TERM; touch {ready}; while true; do sleep 0.1; done")
    try:
        wait_until(ready.exists, 30, what="the holder's child")
        status, _, body = agent.get("/v1/kv/lost/?recurse")
        assert status == 200
        (session,) = {e["Session"] for e in json.loads(body) if e.get("Session")}  # lock or contender key
        assert agent.put(f"/v1/session/destroy/{session}")[0] == 200  # the lock is lost
        wait_until(terminated.exists, 15, what="the child to be terminated")
        stdout, stderr = holder.communicate(timeout=15)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)
    assert holder.returncode == 0, stderr
    assert "Lock lost, killing child" in stdout
    assert "Terminating child pid" in stdout


# the child of the cluster test finishes its short critical section even when its lock is
# declared lost during the election (SIGTERM ignored; the 5 s grace period is far longer)
CLUSTER_CHILD = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + MUTEX_CHILD + """
open(os.path.join(d, "done"), "a").write("1\\n")
"""


FAILURES = ("Lock acquisition failed: ", "Lock release failed: ", "Lock cleanup failed: ",
            "Error querying Consul agent: ")


@pytest.mark.timeout(240)  # a contender that met the election may leave a 15 s lock-delay behind
def test_mutual_exclusion_across_a_leader_kill(tmp_path: Path) -> None:
    """20 contenders on a follower of a 3-server cluster; the Raft leader is killed with SIGKILL
    once a few have counted. The count is exact (one per child that ran) and no two
    children overlapped."""
    cluster = Cluster(tmp_path, servers=3).start()
    servers = cluster.servers
    try:
        wait_until(lambda: all(s.leader() for s in servers) and len({s.leader() for s in servers}) == 1,
                   timeout=30, what="one leader")
        leader_addr = servers[0].leader()
        old = next(s for s in servers if s.server_addr == leader_addr)
        follower = next(s for s in servers if s is not old)
        wait_until(lambda: follower.kv_put("ready", "1", timeout=2), timeout=30, what="writes through a follower")
        child = tmp_path / "child.py"
        child.write_text(CLUSTER_CHILD)
        work = tmp_path / "work"
        work.mkdir()
        (work / "counter").write_text("0")
        env = dict(os.environ, CAIRN_HTTP_ADDR=follower.url.removeprefix("http://"))

        def contenders(count: int) -> list[subprocess.Popen[str]]:
            return [subprocess.Popen([sys.executable, "-m", "appliance", "lock", "-shell=false", "counter",
                                      sys.executable, str(child), str(work)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(count)]

        procs = contenders(20)
        wait_until(lambda: (work / "done").exists() and len((work / "done").read_text().split()) >= 4,
                   timeout=60, what="a few increments before the kill")
        old.stop(kill=True)
        before = len((work / "done").read_text().split())
        results = finish(procs)
        # under the new leader the lock works again: three more contenders, one after the other
        wait_until(lambda: follower.leader() not in ("", leader_addr), timeout=15, what="a new leader")
        after = finish(contenders(3))
    finally:
        cluster.stop()
    done = len((work / "done").read_text().split())
    assert (work / "counter").read_text() == str(done)  # every child that ran counted once
    assert not (work / "overlaps").exists()
    assert after == [(0, "")] * 3 and done >= before + 3
    # As with Consul's client, a contender whose request met the election fails (exit 1, the
    # server's 500 in the message), before its child ran or after (releasing, cleaning up).
    failed = [(code, err) for code, err in results if code != 0]
    assert done >= len(results) - len(failed), results
    for code, err in failed:
        assert code == 1 and err.startswith(FAILURES), err
    print(f"{done} children ran, {before} before the kill; {len(failed)} contenders failed in the election")


def test_the_session_is_renewed_past_twice_its_ttl(agent: AgentProcess) -> None:
    """A 10 s session would be invalidated after 20 s without renewals; the lock outlives that."""
    from appliance.locks.mutex import Lock
    from appliance.watches.client import AgentClient

    async def hold() -> tuple[bool, str, bool]:
        async with AgentClient(agent.url) as api:
            lock = Lock(api, "renew/.lock", session_ttl="10s")
            assert await lock.acquire()
            session = lock.session
            await asyncio.sleep(23)
            still = not lock.lost.is_set()
            await lock.release()
            await lock.destroy()
            return still, session, lock.lost.is_set()

    still, session, _ = asyncio.run(hold())
    assert still
    assert agent.get("/v1/kv/renew/.lock")[0] == 404
    assert json.loads(agent.get(f"/v1/session/info/{session}")[2] or b"null") in (None, [])  # destroyed
