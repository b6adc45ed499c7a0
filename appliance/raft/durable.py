"""What a Raft server keeps durable: the `RaftStorage` protocol and `MemoryStorage`.

etcd-raft's `Storage` is the model, turned around: the core (core.py, log.py) keeps the whole log
in memory, so storage is read once, at start (`load`, etcd's `InitialState` plus the entries and
snapshot), and otherwise only written, in the durability order of core.py:

* `save(rd)`: the Ready's snapshot (it replaces the whole stored log), then its entries (first
  deleting every stored entry at or after the first one given), then its hard state, with one
  fsync for the batch; nothing is acknowledged before it returns;
* `save_snapshot(c)`: a snapshot taken locally, durable before the entries it covers (index <=
  `compact_to`) are deleted;
* `bootstrap(state)`: the first configuration of an empty server; `close()`.

Two implementations: `FileStorage` (appliance/raft/storage.py, the WAL under `data_dir/raft`) on
servers and `MemoryStorage` below for `-dev` and the transcripts (nothing survives the process).
A storage error is fatal: the process stops (fail-stop), because an fsync that failed cannot be
retried and trusted. tests/unit/test_raft_host.py checks that both implement the protocol.
"""

from __future__ import annotations

from typing import Protocol

from .core import Compaction, Ready
from .messages import Entry, HardState, InitialState, Snapshot


class RaftStorage(Protocol):
    """The durable half of a Raft server (see the module docstring)."""

    def load(self) -> InitialState: ...

    def bootstrap(self, state: InitialState) -> None: ...

    def save(self, rd: Ready) -> None: ...

    def save_snapshot(self, compaction: Compaction) -> None: ...

    def close(self) -> None: ...


class MemoryStorage:
    """`RaftStorage` in the process only: what a restart of the same object would load."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []  # consecutive indexes after the snapshot's

    @property
    def state(self) -> InitialState:
        return self.load()

    @state.setter
    def state(self, state: InitialState) -> None:
        self.bootstrap(state)

    def load(self) -> InitialState:
        return InitialState(self.hard_state, self.snapshot, tuple(self.entries))

    def bootstrap(self, state: InitialState) -> None:
        self.hard_state, self.snapshot, self.entries = state.hard_state, state.snapshot, list(state.entries)

    def save(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            self._truncate_from(rd.entries[0].index)
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def save_snapshot(self, compaction: Compaction) -> None:
        self.snapshot = compaction.snapshot
        first = self.entries[0].index if self.entries else compaction.compact_to + 1
        del self.entries[:max(0, compaction.compact_to + 1 - first)]

    def close(self) -> None:
        pass

    def _truncate_from(self, index: int) -> None:
        if self.entries:
            del self.entries[max(0, index - self.entries[0].index):]


def is_empty(state: InitialState) -> bool:
    """True for the state of a server that never had any: no entries, no snapshot, no vote."""
    return not state.entries and state.snapshot is None and state.hard_state == HardState()
