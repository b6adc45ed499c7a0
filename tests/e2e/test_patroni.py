"""Patroni on cairn: Debian's `patroni` and PostgreSQL 15 with a Consul DCS on a 3-server cluster.

Each PostgreSQL member runs beside its own cairn client agent, as in a real deployment, and its
Patroni (the unmodified Debian package: python3-consul underneath) talks to that agent. Patroni
elects its primary with a session (`checks: []`, `behavior: delete`, TTL `ttl/2`) and
`PUT .../leader?acquire=<session>`, and watches the leader key with blocking queries
(reference: coordination.md §7).

What is checked, sampling every member's REST API and the leader key all along:
- two members: one becomes the primary, the other streams from it as a replica, and a row
  written on the primary is read on the replica;
- `kill -9` of the primary's Patroni and PostgreSQL: the session is no longer renewed, expires at
  2 x its TTL (= `ttl`), its leader key is deleted, and the replica becomes the primary within
  `ttl + loop_wait` (plus the time to promote), with the row there;
- at no sampled moment do two members report themselves primary;
- the old primary, restarted, rejoins as a replica of the new one;
- again with the cairn Raft leader killed (`kill -9`) right after the primary.

PostgreSQL refuses to run as root: Patroni runs as the `postgres` user (setpriv), in a directory
of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.harness import Agent, Cluster, free_ports, http, wait_until

pytestmark = pytest.mark.timeout(420)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SCOPE = "pgcairn"
TTL, LOOP_WAIT, RETRY_TIMEOUT = 20, 2, 5  # Patroni's smallest ttl; the session TTL is ttl/2 = 10 s
SUPERUSER_PASSWORD = "cairn-super"
PRIMARY_ROLES = ("master", "primary")


def postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


class Member:
    """One PostgreSQL member: Patroni (as the postgres user) pointed at its cairn agent."""

    def __init__(self, base: Path, name: str, agent: Agent) -> None:
        self.name = name
        self.agent = agent
        self.pg_port, self.api_port = free_ports(2, udp=False)
        self.dir = base / name
        self.data_dir = self.dir / "data"
        self.config = self.dir / "patroni.yml"
        self.log_path = self.dir / "patroni.log"
        self.proc: subprocess.Popen | None = None
        self.dir.mkdir()
        uid, gid = postgres_ids()
        os.chown(self.dir, uid, gid)
        self.config.write_text(json.dumps(self._config()))  # JSON is YAML

    def _config(self) -> dict:
        pg_hba = ["local all all trust", "host all all 127.0.0.1/32 md5",
                  "host replication replicator 127.0.0.1/32 md5"]
        return {
            "scope": SCOPE, "name": self.name,
            "restapi": {"listen": f"127.0.0.1:{self.api_port}", "connect_address": f"127.0.0.1:{self.api_port}"},
            "consul": {"host": f"127.0.0.1:{self.agent.http_port}", "register_service": False},
            "bootstrap": {
                "dcs": {"ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
                        "maximum_lag_on_failover": 16 * 1024 * 1024,
                        "postgresql": {"use_pg_rewind": True, "parameters": {"wal_log_hints": "on"}}},
                "initdb": [{"encoding": "UTF8"}, "data-checksums"],
                "pg_hba": pg_hba,
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg_port}", "connect_address": f"127.0.0.1:{self.pg_port}",
                "data_dir": str(self.data_dir), "bin_dir": str(PG_BIN), "pgpass": str(self.dir / "pgpass"),
                "pg_hba": pg_hba,
                "authentication": {
                    "superuser": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                    "replication": {"username": "replicator", "password": "cairn-repl"},
                    "rewind": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                },
                "parameters": {"unix_socket_directories": str(self.dir), "shared_buffers": "16MB",
                               "max_connections": 20, "max_wal_senders": 5, "max_replication_slots": 5},
            },
        }

    def start(self) -> None:
        uid, gid = postgres_ids()
        log = open(self.log_path, "ab")  # noqa: SIM115 - open for the process's lifetime
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", shutil.which("patroni") or "patroni",
             str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True,
            env={**os.environ, "HOME": str(self.dir)})

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill9(self) -> None:
        """kill -9 of Patroni and of PostgreSQL (the postmaster and every backend)."""
        pid = self.postmaster_pid()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if pid is not None:
            subprocess.run(["pkill", "-KILL", "-s", str(os.getsid(pid))] if _alive(pid) else ["true"], check=False)
            wait_until(lambda: not _alive(pid), timeout=10, what=f"postmaster {pid} gone")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        pid = self.postmaster_pid()
        if pid is not None and _alive(pid):
            subprocess.run(["pkill", "-KILL", "-s", str(os.getsid(pid))], check=False)

    def status(self) -> dict | None:
        """Patroni's own view (GET /patroni): role and state; None when it does not answer."""
        try:
            code, _, body = http("GET", f"http://127.0.0.1:{self.api_port}/patroni", timeout=1)
        except OSError:
            return None
        if code not in (200, 503):
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def role(self) -> str:
        st = self.status()
        if st is None or st.get("state") != "running":
            return ""
        return "primary" if st.get("role") in PRIMARY_ROLES else st.get("role", "")

    def psql(self, sql: str) -> str:
        dsn = f"host=127.0.0.1 port={self.pg_port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres"
        out = subprocess.run([str(PG_BIN / "psql"), dsn, "-XAtc", sql], capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return out.stdout.strip()

    def has_row(self, token: str) -> bool:
        """The row is there (False while PostgreSQL is not accepting connections)."""
        try:
            return self.psql(f"SELECT count(*) FROM cairn_test WHERE v = '{token}'") == "1"
        except RuntimeError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Sampler(threading.Thread):
    """Samples every member's role (and the leader key) until stopped; records any moment with two
    members reporting themselves primary."""

    def __init__(self, members: list[Member], agents: list[Agent]) -> None:
        super().__init__(daemon=True)
        self.members = members
        self.agents = agents
        self.stopped = threading.Event()
        self.samples = 0
        self.split: list[tuple[float, list[str]]] = []
        self.holders: set[str] = set()

    def leader_key(self) -> str:
        for agent in self.agents:
            try:
                code, _, body = http("GET", f"{agent.url}/v1/kv/service/{SCOPE}/leader?raw&stale", timeout=1)
            except OSError:
                continue
            return body.decode() if code == 200 else ""
        return ""

    def run(self) -> None:
        while not self.stopped.is_set():
            primaries = [m.name for m in self.members if m.role() == "primary"]
            if len(primaries) > 1:
                self.split.append((time.monotonic(), primaries))
            holder = self.leader_key()
            if holder:
                self.holders.add(holder)
            self.samples += 1
            time.sleep(0.1)


@pytest.fixture
def setup(tmp_path: Path):
    cluster = Cluster(tmp_path, servers=3)
    clients = [Agent(tmp_path, f"pg-host{i}", join=cluster.join) for i in (1, 2)]
    servers = cluster.servers
    for agent in servers + clients:
        agent.start()
    base = Path(tempfile.mkdtemp(prefix="cairn-patroni-"))
    os.chmod(base, 0o755)
    members = [Member(base, f"pg{i}", clients[i - 1]) for i in (1, 2)]
    try:
        wait_until(lambda: all(s.leader() for s in servers), timeout=30, what="a Raft leader")
        for client in clients:  # the client agent is in the catalog (sessions name its node)
            wait_until(lambda c=client: registered(c), timeout=30, what=f"{client.name} registered")
        yield servers, clients, members
    finally:
        for m in members:
            m.stop()
        for agent in clients + servers:
            agent.stop()
        shutil.rmtree(base, ignore_errors=True)


def registered(agent: Agent) -> bool:
    try:
        return http("GET", f"{agent.url}/v1/catalog/node/{agent.name}", timeout=2)[0] == 200
    except OSError:  # not started yet, or no server streams to it yet
        return False


def wait_roles(members: list[Member], want: dict[str, str], timeout: float) -> float:
    start = time.monotonic()

    def ok() -> bool:
        for m in members:
            if m.name in want and m.proc is not None and m.proc.poll() is not None:
                raise AssertionError(f"patroni {m.name} exited ({m.proc.returncode}):\n{m.log_tail()}")
        return all(m.role() == want[m.name] for m in members if m.name in want)

    try:
        wait_until(ok, timeout=timeout, interval=0.2, what=f"roles {want}")
    except pytest.fail.Exception:
        tails = "\n".join(f"--- {m.name}\n{m.log_tail()}" for m in members)
        raise AssertionError(f"roles not {want}: {[(m.name, m.status()) for m in members]}\n{tails}") from None
    return time.monotonic() - start


def raft_leader(servers: list[Agent]) -> Agent:
    address = next(s.leader() for s in servers if s.proc is not None and s.proc.poll() is None and s.leader())
    return next(s for s in servers if s.server_addr == address)


def failover(servers: list[Agent], members: list[Member], *, kill_raft_leader: bool) -> None:
    primary = next(m for m in members if m.role() == "primary")
    replica = next(m for m in members if m is not primary)
    token = f"row-{time.monotonic_ns()}"
    primary.psql(f"INSERT INTO cairn_test VALUES ('{token}')")
    wait_until(lambda: replica.has_row(token), timeout=20, what="the row replicated")

    killed = time.monotonic()
    primary.kill9()
    dead_server = None
    if kill_raft_leader:
        dead_server = raft_leader(servers)
        dead_server.stop(kill=True)
    took = wait_roles(members, {replica.name: "primary"}, timeout=TTL + LOOP_WAIT + 40)
    elapsed = time.monotonic() - killed
    # the session expires at 2 x ttl/2 after the last renew (at most loop_wait before the kill); the
    # replica sees the key go at once (blocking query) and promotes
    assert elapsed <= TTL + LOOP_WAIT + 15, f"failover took {elapsed:.1f}s ({took:.1f}s waiting)"
    print(f"failover{' with the Raft leader killed' if kill_raft_leader else ''}: {replica.name} primary "
          f"{elapsed:.1f}s after kill -9 of {primary.name} (ttl {TTL}s, loop_wait {LOOP_WAIT}s)")
    assert replica.has_row(token)

    if dead_server is not None:
        dead_server.start()
    primary.start()  # the old primary comes back as a replica of the new one
    wait_roles(members, {primary.name: "replica", replica.name: "primary"}, timeout=90)
    token2 = f"row-{time.monotonic_ns()}"
    replica.psql(f"INSERT INTO cairn_test VALUES ('{token2}')")
    wait_until(lambda: primary.has_row(token2), timeout=60, what="the old primary replicating from the new one")


def test_patroni_elects_fails_over_and_rejoins_on_cairn(setup):
    servers, clients, members = setup
    sampler = Sampler(members, servers)
    members[0].start()
    wait_roles(members[:1], {"pg1": "primary"}, timeout=90)
    members[1].start()
    wait_roles(members, {"pg1": "primary", "pg2": "replica"}, timeout=90)
    members[0].psql("CREATE TABLE cairn_test (v text)")
    sampler.start()
    try:
        failover(servers, members, kill_raft_leader=False)
        failover(servers, members, kill_raft_leader=True)
    finally:
        sampler.stopped.set()
        sampler.join(5)
    assert sampler.samples > 100
    assert not sampler.split, f"two primaries at once: {sampler.split[:5]}"
    assert sampler.holders <= {"pg1", "pg2"}, sampler.holders
