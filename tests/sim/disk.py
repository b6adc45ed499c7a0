"""A simulated disk for one server: what survives a crash.

Fault model (raft-notes §7.3, §12.0), at the level of the log's records: the server writes the
records of a Ready (snapshot, entries, hard state, in that order) and then fsyncs. Records written
but not yet synced are *volatile*: on a crash a random prefix of them survives (the page cache
flushed some of them in order), and with `torn_probability` the last surviving record is torn,
which recovery detects by its checksum and drops, like the torn tail of a real WAL. Synced
records always survive (an fsync that lies is outside the model, as in FoundationDB's
simulator). Locally taken snapshots are written to a temporary file, synced and renamed before the
log prefix they cover is deleted, so they are durable at once.

The durable image is kept materialised (hard state, snapshot, entries), so recovery is cheap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from appliance.raft.core import Compaction, Ready
from appliance.raft.messages import Entry, HardState, InitialState, Snapshot


@dataclass
class SimDisk:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    volatile: list[tuple] = field(default_factory=list)
    lost_records: int = 0
    torn_records: int = 0

    def initial(self) -> InitialState:
        return InitialState(self.hard_state, self.snapshot, tuple(self.entries))

    def write(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.volatile.append(("snapshot", rd.snapshot))
        if rd.entries:
            self.volatile.append(("entries", rd.entries))
        if rd.hard_state is not None:
            self.volatile.append(("hard", rd.hard_state))

    def sync(self) -> None:
        for record in self.volatile:
            self._apply(record)
        self.volatile.clear()

    def write_compaction(self, c: Compaction) -> None:
        """Snapshot to temp file, fsync, rename, fsync dir; then drop the covered log prefix."""
        self.snapshot = c.snapshot
        if self.entries and c.compact_to >= self.entries[0].index:
            del self.entries[: c.compact_to - self.entries[0].index + 1]

    def crash(self, rng: random.Random, torn_probability: float) -> None:
        keep = rng.randint(0, len(self.volatile))
        kept = self.volatile[:keep]
        if kept and rng.random() < torn_probability:
            kept.pop()
            self.torn_records += 1
        self.lost_records += len(self.volatile) - len(kept)
        for record in kept:
            self._apply(record)
        self.volatile.clear()

    def _apply(self, record: tuple) -> None:
        kind, value = record
        if kind == "snapshot":
            self.snapshot = value
            self.entries = []
        elif kind == "entries":
            first = value[0].index
            if self.entries and first <= self.entries[-1].index:
                del self.entries[max(0, first - self.entries[0].index):]
            self.entries.extend(value)
        else:
            self.hard_state = value
