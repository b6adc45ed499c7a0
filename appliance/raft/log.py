"""The core's in-memory view of the Raft log.

How it works
------------
The log is a list of entries after `offset` (the index of the last compacted entry, whose term is
kept as `offset_term` when known, so the consistency check on `offset` still works). Three
watermarks move through it, each monotonic except where noted:

    applied  <=  committed  <=  last_index          stable <= last_index

* `stable`: the last index known to be durable in storage. Entries above it are handed to the
  host in a Ready and become stable when the host calls `advance()`. A truncation (a follower
  overwriting a conflicting suffix, Raft §5.3) moves `stable` back below the conflict.
* `committed`: known committed; never decreases (Raft §5.4). Committing past `last_index` is a
  bug and raises.
* `applied`: handed to the state machine; only entries that are committed **and stable** are
  handed out, so a single-voter cluster never applies an entry before it is on its own disk.

Configurations take effect when appended (Raft thesis §4.1): the log remembers the index of every
configuration entry it holds, plus the configuration as of `offset` (from the snapshot), so when a
suffix is truncated the previous configuration comes back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from .messages import (
    Configuration,
    Entry,
    EntryType,
    InitialState,
    InvariantViolation,
    Snapshot,
    decode_configuration,
)


class RaftLog:
    def __init__(self, initial: InitialState) -> None:
        snap = initial.snapshot
        entries = list(initial.entries)
        self.snapshot: Snapshot | None = snap
        if entries:
            for a, b in itertools.pairwise(entries):
                if b.index != a.index + 1 or b.term < a.term:
                    raise InvariantViolation(f"storage returned a broken log at {a.index}..{b.index}")
            self.offset = entries[0].index - 1
        else:
            self.offset = snap.index if snap else 0
        if snap is not None and self.offset > snap.index:
            raise InvariantViolation("log starts after the snapshot's index: entries are missing")
        self.offset_term: int | None
        if self.offset == 0:
            self.offset_term = 0
        elif snap is not None and self.offset == snap.index:
            self.offset_term = snap.term
        else:
            self.offset_term = None
        self.entries = entries
        if snap is not None:
            if self.last_index() < snap.index:
                raise InvariantViolation("snapshot is ahead of the log")
            if self.term(snap.index) not in (None, snap.term):
                raise InvariantViolation("snapshot does not match the log at its index")
        self.stable = self.last_index()
        self.applied = snap.index if snap else 0
        self.committed = max(initial.hard_state.commit, self.applied)
        if self.committed > self.last_index():
            raise InvariantViolation(
                f"persisted commit {self.committed} is past the last index {self.last_index()}"
            )
        self.base_config: tuple[int, Configuration] = (
            (snap.configuration_index, snap.configuration) if snap else (0, Configuration())
        )
        self.configs: list[tuple[int, Configuration]] = []
        self._track_configs(e for e in entries if e.index > self.base_config[0])

    # -- lookups -----------------------------------------------------------------------------

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def first_index(self) -> int:
        return self.offset + 1

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted (term unknown) or not there."""
        if index == self.offset:
            return self.offset_term
        if self.offset < index <= self.last_index():
            return self.entries[index - self.offset - 1].term
        return None

    def last_term(self) -> int:
        t = self.term(self.last_index())
        if t is None:  # only when offset_term is unknown and the log is empty
            return self.snapshot.term if self.snapshot else 0
        return t

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.offset - 1]

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: the candidate's log is at least as up to date as ours."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, max_count: int, max_bytes: int) -> list[Entry] | None:
        """Entries from `lo` on (at least one if any exist, within the caps); None if compacted."""
        if lo <= self.offset:
            return None
        out: list[Entry] = []
        size = 0
        for i in range(lo, min(self.last_index(), lo + max_count - 1) + 1):
            e = self.entry(i)
            size += len(e.data)
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose entry's term is <= `term` (or the offset)."""
        index = min(index, self.last_index())
        while index > self.offset:
            t = self.term(index)
            if t is not None and t <= term:
                break
            index -= 1
        return index

    # -- configurations ----------------------------------------------------------------------

    def _track_configs(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            if e.type == EntryType.CONFIGURATION:
                self.configs.append((e.index, decode_configuration(e.data)))

    def latest_config(self) -> tuple[int, Configuration]:
        return self.configs[-1] if self.configs else self.base_config

    def config_at(self, index: int) -> tuple[int, Configuration]:
        best = self.base_config
        for idx, conf in self.configs:
            if idx <= index:
                best = (idx, conf)
        return best

    # -- changes -----------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        if entries[0].index != self.last_index() + 1:
            raise InvariantViolation(f"append at {entries[0].index} after last {self.last_index()}")
        self.entries.extend(entries)
        self._track_configs(entries)

    def truncate_from(self, index: int) -> None:
        """Drop entries >= index (a conflicting, uncommitted suffix)."""
        if index <= self.committed:
            raise InvariantViolation(f"truncating committed entry {index} (commit {self.committed})")
        del self.entries[index - self.offset - 1 :]
        self.configs = [(i, c) for i, c in self.configs if i < index]
        self.stable = min(self.stable, index - 1)

    def maybe_append(self, prev_index: int, prev_term: int, commit: int, entries: tuple[Entry, ...]) -> int | None:
        """AppendEntries receiver rules (Raft §5.3, Figure 2). Returns the last index this RPC
        verified, or None if the log does not hold `prev_index` with `prev_term`."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = 0
        for e in entries:  # the first entry we lack or hold with another term
            if not self.match_term(e.index, e.term):
                conflict = e.index
                break
        if conflict:
            if conflict <= self.last_index():
                self.truncate_from(conflict)
            self.append(list(entries[conflict - prev_index - 1 :]))
        # Figure 2 rule 5: commit only what this RPC verified, never a stale tail beyond it.
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        if index <= self.committed:
            return False
        if index > self.last_index():
            raise InvariantViolation(f"commit {index} past last index {self.last_index()}")
        self.committed = index
        return True

    def stable_to(self, index: int, term: int) -> None:
        """Storage reports entries up to `index` durable; ignored if that entry changed since."""
        if index > self.stable and self.term(index) == term:
            self.stable = index

    def unstable_entries(self) -> list[Entry]:
        if self.stable >= self.last_index():
            return []
        return self.entries[self.stable - self.offset :]

    def next_committed(self, max_count: int) -> list[Entry]:
        hi = min(self.committed, self.stable, self.applied + max_count)
        if hi <= self.applied:
            return []
        return self.entries[self.applied - self.offset : hi - self.offset]

    def applied_to(self, index: int) -> None:
        if index < self.applied or index > min(self.committed, self.stable):
            raise InvariantViolation(f"applied {index} out of range ({self.applied}, {self.committed}]")
        self.applied = index

    def compact(self, snapshot: Snapshot, compact_to: int) -> None:
        """Record a locally taken snapshot and drop entries <= compact_to (<= snapshot index)."""
        self.snapshot = snapshot
        if compact_to <= self.offset:
            return
        if compact_to > min(self.applied, self.stable):
            raise InvariantViolation(f"compacting {compact_to} past applied/stable")
        self.base_config = self.config_at(compact_to)
        self.configs = [(i, c) for i, c in self.configs if i > compact_to]
        self.offset_term = self.term(compact_to)
        del self.entries[: compact_to - self.offset]
        self.offset = compact_to

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a received snapshot (Raft Figure 13, rule 7)."""
        self.snapshot = snapshot
        self.entries = []
        self.offset = snapshot.index
        self.offset_term = snapshot.term
        self.stable = snapshot.index
        self.committed = max(self.committed, snapshot.index)
        self.applied = snapshot.index
        self.base_config = (snapshot.configuration_index, snapshot.configuration)
        self.configs = []
