"""One Raft host for the agent, the simulator and the transcripts (appliance/raft/host.py), and the
storage protocol (appliance/raft/durable.py) its callers persist through.

The point of the host is that every simulated seed and every transcript runs the code that ships:
these tests fail if the driver, the simulator's server or the transcript runner stop driving the
same `RaftHost`, or grow a Ready loop of their own again.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from appliance.raft.config import RaftConfig
from appliance.raft.core import Compaction, Ready
from appliance.raft.driver import RaftDriver
from appliance.raft.durable import MemoryStorage, RaftStorage
from appliance.raft.host import RaftHost
from appliance.raft.messages import (
    Configuration,
    Entry,
    EntryType,
    HardState,
    NotLeader,
    OutcomeUnknown,
    Server,
    Snapshot,
)
from appliance.raft.storage import FileStorage
from appliance.state.store import Store
from tests.sim.world import Sim
from tests.transcripts.raft_env import RaftEnv

ROOT = Path(__file__).resolve().parents[2]
# The modules around a core: none of them may take a Ready or advance the core itself.
HOST_CALLERS = sorted(ROOT.glob("appliance/raft/driver/*.py")) + [
    ROOT / "tests/sim/node.py", ROOT / "tests/transcripts/raft_env.py"]


def test_driver_simulator_and_transcripts_run_the_same_host():
    drv = RaftDriver(Store(), node_id="n1", address="127.0.0.1:8300", storage=MemoryStorage(),
                     config=RaftConfig(raft_multiplier=1))
    drv.open(Configuration((Server("n1", "127.0.0.1:8300"),)))
    sim = Sim(0)
    env = RaftEnv()
    env.run("add-nodes 3")
    hosts = [drv.host, *(n.host for n in sim.nodes.values()), *(n.host for n in env.nodes.values())]
    assert all(type(h) is RaftHost for h in hosts), [type(h) for h in hosts]


@pytest.mark.parametrize("path", HOST_CALLERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_caller_runs_a_ready_loop_of_its_own(path):
    # ready(), has_ready() and advance() belong to the host: a caller that calls them has forked
    # the loop the simulator is meant to check.
    calls = [node.func.attr for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in ("ready", "has_ready", "advance")]
    assert not calls, f"{path.name} calls {calls}: take the Ready through RaftHost instead"


@pytest.mark.parametrize("impl", [MemoryStorage, FileStorage])
def test_both_storages_implement_the_protocol(impl):
    for name, member in inspect.getmembers(RaftStorage, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(member)
        theirs = inspect.signature(getattr(impl, name))
        assert list(theirs.parameters) == list(ours.parameters), (impl.__name__, name)


def _entries(first: int, last: int, term: int) -> tuple[Entry, ...]:
    return tuple(Entry(i, term, EntryType.COMMAND, b"%d" % i) for i in range(first, last + 1))


def _ready(entries: tuple[Entry, ...] = (), hard: HardState | None = None, snap: Snapshot | None = None) -> Ready:
    return Ready(None, hard, snap, entries, (), (), (), ())


def test_memory_storage_keeps_what_a_restart_loads():
    # The durability order of core.py: entries replace the stored tail from their first index.
    storage = MemoryStorage()
    storage.save(_ready(_entries(1, 5, 1), HardState(1, "a", 3)))
    storage.save(_ready(_entries(4, 6, 2), HardState(2, "b", 4)))
    state = storage.load()
    assert [(e.index, e.term) for e in state.entries] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    assert state.hard_state == HardState(2, "b", 4)
    snap = Snapshot(4, 2, Configuration.of("a", "b"), b"state")
    storage.save_snapshot(Compaction(snap, 3))
    state = storage.load()
    assert state.snapshot == snap and [e.index for e in state.entries] == [4, 5, 6]
    storage.save(_ready(snap=Snapshot(9, 3, Configuration.of("a", "b"), b"later")))
    assert storage.load().entries == () and storage.load().snapshot.index == 9


class Future:
    def __init__(self) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.resolved = False

    def done(self) -> bool:
        return self.resolved

    def set_result(self, result: object, /) -> None:
        self.result, self.resolved = result, True

    def set_exception(self, exception: BaseException, /) -> None:
        self.error, self.resolved = exception, True


def test_a_proposal_overwritten_by_another_term_fails_and_one_covered_by_a_snapshot_is_unknown():
    # Raft §5.3: an entry of a deposed leader that another term overwrote never commits; an
    # entry that an installed snapshot covers may or may not have (its outcome is unknown).
    env = RaftEnv()
    env.run("add-nodes 3 prevote=false checkquorum=false trailing=1")
    env.run("campaign 1")
    env.run("stabilize")
    lost, covered = Future(), Future()
    env.nodes["1"].host.propose(b"lost", lost)
    env.run("process-ready 1")
    env.run("deliver-msgs drop")  # nobody else has it
    env.run("campaign 2")
    env.run("stabilize 2 3")
    env.run("propose 2 winner")
    env.run("stabilize")
    assert isinstance(lost.error, NotLeader) and not isinstance(lost.error, OutcomeUnknown)
    assert env.nodes["1"].machine.applied[-1].endswith("'winner'")

    env.run("isolate 3")
    env.nodes["3"].host.propose(b"never", covered)  # 3 is a follower: refused at once
    assert isinstance(covered.error, NotLeader)
    host = env.nodes["3"].host
    index = env.nodes["2"].core.log.last_index() + 1
    pending = Future()
    host._proposals[index] = (env.nodes["2"].core.term, pending, None)  # as if it had proposed
    for i in range(3):
        env.run(f"propose 2 w{i}")
    env.run("stabilize 1 2")
    env.run("deliver-msgs 3 drop")
    env.run(f"compact 2 {env.nodes['2'].core.log.committed}")
    env.run("recover")
    env.run("tick-heartbeat 2")
    env.run("stabilize")
    assert env.nodes["3"].machine.applied[0].startswith("snapshot@")
    assert isinstance(pending.error, OutcomeUnknown), pending.error
