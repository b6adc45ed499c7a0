"""A log entry the FSM cannot apply never stops Raft: real server processes restart over one.

The poison is what an older version let through: `{"Type": "register", "Node": 123, ...}`
committed to the log. Applying it used to raise out of the FSM, stop Raft and exit the agent, and
every restart replayed it and exited again. Here it is written straight into the WAL of stopped
servers with the project's own storage classes (storage.FileStorage.save with a Ready holding the
entry and a commit index covering it: what the leader's disk would have held had the entry been
proposed), then the servers start from that data dir:

(a) one `-server -bootstrap -data-dir D` agent: it starts, serves, `/v1/catalog/nodes` answers,
    and its log shows exactly one ERROR line for that index; what was written before is there, and
    a poison body sent over HTTP is refused (400 from the endpoint's decoding, or 500 naming the
    command from the leader's check) without harming the agent;
(b) three servers with the entry at the same index and term in every WAL: restarted together,
    they elect a leader, take writes, and all three hold the same catalog and KV;
(c) a poison command forwarded by a client agent (a real Replica dialling a real server driver,
    transport and replica feed in one process) is refused by the leader's check with a
    CommandError naming the command and the field, before anything is appended.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from appliance.client.replica import Replica
from appliance.client.servers import ServerList
from appliance.raft.config import RaftConfig
from appliance.raft.core import Ready
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.messages import NONE, Configuration, Entry, EntryType, HardState, Server
from appliance.raft.storage import FileStorage
from appliance.raft.transport import RaftTransport
from appliance.rpc.feed import ReplicaFeed
from appliance.state.fsm import CommandError
from appliance.state.snapshot import snapshot
from appliance.state.store import Store
from tests.conftest import PROJECT_ROOT, free_port, free_ports, http, wait_until

pytestmark = pytest.mark.timeout(180)

# msgpack as an older version wrote it: no schema was checked before the log
POISON = msgpack.packb({"Type": "register", "Node": 123, "Address": "1.2.3.4"}, use_bin_type=True)


class ServerProcess:
    """`cairn agent -server` on free loopback ports with its own data dir; each start logs to its own file."""

    def __init__(self, tmp_path: Path, name: str, *mode: str) -> None:
        self.name = name
        self.mode = mode
        self.ports = free_ports(5)
        self.data_dir = tmp_path / name
        self.log_dir = tmp_path
        self.url = f"http://127.0.0.1:{self.ports[0]}"
        self.serf_addr = f"127.0.0.1:{self.ports[3]}"
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.starts = 0

    def start(self, join: list[str] = ()) -> None:
        http_port, dns_port, server_port, lan, wan = self.ports
        args = [sys.executable, "-m", "appliance", "agent", "-server", *self.mode, "-node", self.name,
                "-data-dir", str(self.data_dir), "-bind", "127.0.0.1", "-client", "127.0.0.1",
                "-http-port", str(http_port), "-dns-port", str(dns_port), "-server-port", str(server_port),
                "-serf-lan-port", str(lan), "-serf-wan-port", str(wan),
                "-hcl", "performance { raft_multiplier = 1 }"]
        for address in join:
            args += ["-retry-join", address]
        self.starts += 1
        self.log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            status, _, body = http("GET", self.url + path, timeout=5)
            return status, body
        except OSError:
            return 0, b""

    def leader(self) -> str:
        status, body = self.get("/v1/status/leader")
        return json.loads(body) if status == 200 else ""

    def stats(self) -> dict[str, str]:
        status, body = self.get("/v1/agent/self")
        return json.loads(body).get("Stats", {}).get("raft", {}) if status == 200 else {}

    def put(self, key: str, value: str) -> bool:
        try:
            status, _, body = http("PUT", f"{self.url}/v1/kv/{key}", value, timeout=15)
            return status == 200 and body.strip() == b"true"
        except OSError:
            return False

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def storage_of(server: ServerProcess) -> FileStorage:
    return FileStorage(server.data_dir / "raft")


def last_entry(state) -> tuple[int, int]:
    if state.entries:
        return state.entries[-1].index, state.entries[-1].term
    return (state.snapshot.index, state.snapshot.term) if state.snapshot else (0, 0)


def append_committed(storage: FileStorage, state, entries: list[Entry]) -> None:
    """Append `entries` after the stored log and move the commit index over them: one fsync'd WAL
    write, as the driver makes it (storage.save of a Ready)."""
    hs = state.hard_state
    term = max(hs.term, entries[-1].term)
    hard = HardState(term, hs.vote if term == hs.term else NONE, max(hs.commit, entries[-1].index))
    storage.save(Ready(soft_state=None, hard_state=hard, snapshot=None, entries=tuple(entries), messages=(),
                       messages_after_persist=(), committed_entries=(), read_states=()))


def error_lines(server: ServerProcess, index: int) -> list[str]:
    return [line for line in server.log_text().splitlines() if "[ERROR]" in line and f"index={index} " in line]


def assert_no_raft_failure(server: ServerProcess) -> None:
    text = server.log_text()
    assert "raft stopped" not in text and "Traceback" not in text, text[-3000:]


def test_a_single_server_starts_over_a_poison_entry(tmp_path: Path):
    server = ServerProcess(tmp_path, "solo", "-bootstrap")
    server.start()
    try:
        wait_until(lambda: server.leader(), timeout=30, what="the server to elect itself")
        status, _, _ = http("PUT", server.url + "/v1/catalog/register",
                            {"Node": "before", "Address": "10.0.0.5", "Service": {"Service": "web", "Port": 80}})
        assert status == 200
        assert server.put("kept", "yes")
    finally:
        server.stop()

    storage = storage_of(server)
    state = storage.load()
    index, term = last_entry(state)
    poison_index = index + 1
    append_committed(storage, state, [Entry(poison_index, term, EntryType.COMMAND, POISON)])
    storage.close()

    server.start()
    try:
        wait_until(lambda: server.leader() or not server.alive(), timeout=30, what="the server to start over it")
        assert server.alive(), server.log_text()[-3000:]
        stats = wait_until(lambda: (s := server.stats()) and int(s.get("applied_index", 0)) > poison_index and s,
                           timeout=15, what="the log applied past the poison entry")
        assert stats["state"] == "Leader"
        status, body = server.get("/v1/catalog/nodes")
        assert status == 200
        assert {"before", "solo"} <= {n["Node"] for n in json.loads(body)}
        status, body = server.get("/v1/kv/kept?raw")
        assert (status, body) == (200, b"yes")
        # one line, at ERROR, naming the index and the command type
        [line] = error_lines(server, poison_index)
        assert re.search(r"\[ERROR\] +agent\.server\.raft: skipped a log entry the FSM cannot apply: "
                         rf"index={poison_index} type=register error=invalid register command: Node", line), line
        # the metric counts it
        status, body = server.get("/v1/agent/metrics")
        counters = {c["Name"]: c for c in json.loads(body)["Counters"]}
        assert any(name.endswith("fsm.apply_error") for name in counters), sorted(counters)

        # writes go on; the same poison sent over HTTP is refused and harms nothing
        assert server.put("after", "1")
        status, _, text = http("PUT", server.url + "/v1/catalog/register", {"Node": 123, "Address": "1.2.3.4"})
        assert status in (400, 500), (status, text)
        assert b"Node" in text
        status, _, text = http("PUT", server.url + "/v1/catalog/deregister", {"Node": True})
        assert status in (400, 500), (status, text)
        assert server.alive() and server.put("still", "1")
        assert server.get("/v1/catalog/nodes")[0] == 200
        assert_no_raft_failure(server)
    finally:
        server.stop()

    # and again: the entry is replayed on every start, and skipped every time
    server.start()
    try:
        wait_until(lambda: server.leader() or not server.alive(), timeout=30, what="the second restart")
        assert server.alive(), server.log_text()[-3000:]
        wait_until(lambda: server.get("/v1/kv/still?raw") == (200, b"1"), timeout=15, what="the later writes")
        assert len(error_lines(server, poison_index)) <= 1  # none if a snapshot already covers it
        assert_no_raft_failure(server)
    finally:
        server.stop()


def test_three_servers_restart_over_the_same_poison_entry(tmp_path: Path):
    servers = [ServerProcess(tmp_path, f"s{i}", "-bootstrap-expect", "3") for i in range(1, 4)]
    join = [s.serf_addr for s in servers]
    for s in servers:
        s.start(join)
    try:
        wait_until(lambda: all(s.leader() for s in servers) and len({s.leader() for s in servers}) == 1,
                   timeout=40, what="one leader known to all three")
        for i, s in enumerate(servers):
            assert s.put(f"before/{i}", s.name)
        # let the three logs settle on the same last entry before the stop
        wait_until(lambda: len({(st.get("last_log_index"), st.get("commit_index"))
                                for st in (s.stats() for s in servers)}) == 1, timeout=20,
                   what="the same last index on all three")
    finally:
        for s in servers:
            s.stop()

    # The stored logs: every one a prefix of the longest (Log Matching). A server the stop caught
    # behind gets the entries it lacks, as AppendEntries would have brought them; then the poison
    # entry goes at the same index and term into every WAL, committed.
    storages = [storage_of(s) for s in servers]
    states = [st.load() for st in storages]
    longest = max(states, key=lambda st: last_entry(st)[0])
    by_index = {e.index: e for e in longest.entries}
    for state in states:
        for e in state.entries:
            assert by_index.get(e.index, e).term == e.term, "the stored logs diverge"
    index, term = last_entry(longest)
    poison = Entry(index + 1, term, EntryType.COMMAND, POISON)
    for storage, state in zip(storages, states):
        missing = [by_index[i] for i in range(last_entry(state)[0] + 1, index + 1)]
        append_committed(storage, state, [*missing, poison])
        storage.close()

    for s in servers:
        s.start(join)
    try:
        wait_until(lambda: all(s.leader() for s in servers) and len({s.leader() for s in servers}) == 1
                   or not all(s.alive() for s in servers), timeout=40, what="a leader after the restart")
        assert all(s.alive() for s in servers), [s.log_text()[-2000:] for s in servers if not s.alive()]
        for s in servers:
            assert len(error_lines(s, poison.index)) == 1, s.log_text()[-3000:]
        # writes through every server (followers forward to the leader)
        for i, s in enumerate(servers):
            assert s.put(f"after/{i}", s.name)

        def same_everywhere():
            views = []
            for s in servers:
                nodes = s.get("/v1/catalog/nodes?stale")
                keys = s.get("/v1/kv/?recurse&stale")
                if nodes[0] != 200 or keys[0] != 200:
                    return None
                views.append((sorted((n["Node"], n["Address"]) for n in json.loads(nodes[1])),
                              sorted((e["Key"], e["Value"]) for e in json.loads(keys[1]))))
            return views if all(v == views[0] for v in views) else None

        views = wait_until(same_everywhere, timeout=20, what="the same catalog and KV on all three")
        nodes, keys = views[0]
        assert {"s1", "s2", "s3"} <= {name for name, _ in nodes}
        assert 123 not in {name for name, _ in nodes}
        assert [k for k, _ in keys] == ["after/0", "after/1", "after/2", "before/0", "before/1", "before/2"]
        for s in servers:
            assert_no_raft_failure(s)
    finally:
        for s in servers:
            s.stop()


def test_a_poison_command_forwarded_by_a_client_agent_is_refused_by_the_leader():
    async def main():
        port = free_port()
        address = f"127.0.0.1:{port}"
        driver = RaftDriver(Store(), node_id="s1", address=address, storage=MemoryStorage(),
                            config=RaftConfig(raft_multiplier=1))
        driver.open(Configuration((Server("s1", address),)))
        transport = RaftTransport(driver, bind="127.0.0.1", port=port)
        transport.feed = ReplicaFeed(driver, driver.store)
        await transport.start()
        await driver.start()
        replica = Replica(Store(), servers=ServerList(datacenter="dc1", join=(address,), default_port=8300,
                                                      rng=random.Random(1)), node_name="c1", hold_s=3.0)
        await replica.start()
        try:
            await replica.read_point("stale")
            assert await replica.propose({"Type": "kv_set", "Verb": "set", "Key": "before", "Value": b"1"}) is True
            last = driver.core.log.last_index()
            texts = []
            for poison in ({"Type": "register", "Node": 123, "Address": "1.2.3.4"},
                           {"Type": "deregister", "Node": True},
                           {"Type": "register", "Node": "n1", "Address": "1.2.3.4", "Checks": [{"CheckID": ["x"]}]},
                           {"Type": "no_such_command"}):
                try:
                    await replica.propose(poison)
                except CommandError as err:
                    texts.append(str(err))
            assert driver.core.log.last_index() == last  # nothing was appended
            assert await replica.propose({"Type": "kv_set", "Verb": "set", "Key": "after", "Value": b"2"}) is True
            assert driver.fatal is None
            assert snapshot(replica.store) == snapshot(driver.store)
            return texts
        finally:
            await replica.stop()
            await driver.stop()
            await transport.stop()

    texts = asyncio.run(main())
    assert texts == [
        "invalid register command: Node must be a non-empty string, not an integer",
        "invalid deregister command: Node must be a non-empty string, not a boolean",
        "invalid register command: Checks[0].CheckID must be a non-empty string, not a list",
        "unknown command type 'no_such_command'",
    ]
