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
from tests.harness import FAST_RAFT, Agent, free_port, http, wait_until

pytestmark = pytest.mark.timeout(180)

# msgpack as an older version wrote it: no schema was checked before the log
POISON = msgpack.packb({"Type": "register", "Node": 123, "Address": "1.2.3.4"}, use_bin_type=True)


def server_process(tmp_path: Path, name: str, *mode: str) -> Agent:
    """`cairn agent -server` with its own data dir (`log(this_start=True)`: the latest start's output)."""
    return Agent(tmp_path, name, "-server", *mode, "-hcl", FAST_RAFT)


def get(server: Agent, path: str) -> tuple[int, bytes]:
    try:
        status, _, body = server.get(path, timeout=5)
        return status, body
    except OSError:
        return 0, b""


def storage_of(server: Agent) -> FileStorage:
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


def error_lines(server: Agent, index: int) -> list[str]:
    lines = server.log(this_start=True).splitlines()
    return [line for line in lines if "[ERROR]" in line and f"index={index} " in line]


def assert_no_raft_failure(server: Agent) -> None:
    text = server.log(this_start=True)
    assert "raft stopped" not in text and "Traceback" not in text, text[-3000:]


def test_a_single_server_starts_over_a_poison_entry(tmp_path: Path):
    server = server_process(tmp_path, "solo", "-bootstrap")
    server.start()
    try:
        wait_until(lambda: server.leader(), timeout=30, what="the server to elect itself")
        status, _, _ = http("PUT", server.url + "/v1/catalog/register",
                            {"Node": "before", "Address": "10.0.0.5", "Service": {"Service": "web", "Port": 80}})
        assert status == 200
        assert server.kv_put("kept", "yes")
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
        assert server.alive(), server.log(this_start=True)[-3000:]
        stats = wait_until(lambda: (s := server.raft_stats()) and int(s.get("applied_index", 0)) > poison_index and s,
                           timeout=15, what="the log applied past the poison entry")
        assert stats["state"] == "Leader"
        status, body = get(server, "/v1/catalog/nodes")
        assert status == 200
        assert {"before", "solo"} <= {n["Node"] for n in json.loads(body)}
        status, body = get(server, "/v1/kv/kept?raw")
        assert (status, body) == (200, b"yes")
        # one line, at ERROR, naming the index and the command type
        [line] = error_lines(server, poison_index)
        assert re.search(r"\[ERROR\] +agent\.server\.raft: skipped a log entry the FSM cannot apply: "
                         rf"index={poison_index} type=register error=invalid register command: Node", line), line
        # the metric counts it (the Prometheus form is cumulative; the JSON one shows one 10 s interval)
        status, body = get(server, "/v1/agent/metrics?format=prometheus")
        assert status == 200 and re.search(rb"^consul_fsm_apply_error\S* 1(\.0)?$", body, re.M), body[-3000:]

        # writes go on; the same poison sent over HTTP is refused and harms nothing
        assert server.kv_put("after", "1")
        status, _, text = http("PUT", server.url + "/v1/catalog/register", {"Node": 123, "Address": "1.2.3.4"})
        assert status in (400, 500), (status, text)
        assert b"Node" in text
        status, _, text = http("PUT", server.url + "/v1/catalog/deregister", {"Node": True})
        assert status in (400, 500), (status, text)
        assert server.alive() and server.kv_put("still", "1")
        assert get(server, "/v1/catalog/nodes")[0] == 200
        assert_no_raft_failure(server)
    finally:
        server.stop()

    # and again: the entry is replayed on every start, and skipped every time
    server.start()
    try:
        wait_until(lambda: server.leader() or not server.alive(), timeout=30, what="the second restart")
        assert server.alive(), server.log(this_start=True)[-3000:]
        wait_until(lambda: get(server, "/v1/kv/still?raw") == (200, b"1"), timeout=15, what="the later writes")
        assert len(error_lines(server, poison_index)) <= 1  # none if a snapshot already covers it
        assert_no_raft_failure(server)
    finally:
        server.stop()


def test_three_servers_restart_over_the_same_poison_entry(tmp_path: Path):
    servers = [server_process(tmp_path, f"s{i}", "-bootstrap-expect", "3") for i in range(1, 4)]
    for s in servers:
        s.join = [other.lan_addr for other in servers]
        s.start()
    try:
        wait_until(lambda: all(s.leader() for s in servers) and len({s.leader() for s in servers}) == 1,
                   timeout=40, what="one leader known to all three")
        for i, s in enumerate(servers):
            assert s.kv_put(f"before/{i}", s.name)
        # let the three logs settle on the same last entry before the stop
        wait_until(lambda: len({(st.get("last_log_index"), st.get("commit_index"))
                                for st in (s.raft_stats() for s in servers)}) == 1, timeout=20,
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
        s.start()
    try:
        wait_until(lambda: all(s.leader() for s in servers) and len({s.leader() for s in servers}) == 1
                   or not all(s.alive() for s in servers), timeout=40, what="a leader after the restart")
        assert all(s.alive() for s in servers), [s.log(this_start=True)[-2000:] for s in servers if not s.alive()]
        for s in servers:
            assert len(error_lines(s, poison.index)) == 1, s.log(this_start=True)[-3000:]
        # writes through every server (followers forward to the leader)
        for i, s in enumerate(servers):
            assert s.kv_put(f"after/{i}", s.name)

        def same_everywhere():
            views = []
            for s in servers:
                nodes = get(s, "/v1/catalog/nodes?stale")
                keys = get(s, "/v1/kv/?recurse&stale")
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
