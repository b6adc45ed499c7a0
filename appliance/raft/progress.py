"""What the leader knows about each follower's log, and how it paces replication to it.

How it works
------------
Each follower has a `Progress`: `match` (highest index known to be in its log: only ever grows
within a term) and `next` (the next index to send; invariant `match < next`), and one of three
states:

  PROBE      the leader does not know where the logs match. It sends one AppendEntries and waits
             (`probe_sent`) for its answer or the next heartbeat answer before sending another.
  REPLICATE  the logs match at `match`. The leader streams: every AppendEntries moves `next`
             forward at once (pipelining) and is recorded in the in-flight window; a full window
             pauses sending until acknowledgements free it (flow control).
  SNAPSHOT   the entries the follower needs were compacted away; an InstallSnapshot is under way
             and nothing else is sent (heartbeats still are). After `snapshot_timeout_ticks`
             without an answer the leader falls back to PROBE and tries again.

Stale answers are filtered here: an acknowledgement that does not move `match` changes nothing,
and a rejection is honoured only if it answers the AppendEntries currently being probed (PROBE)
or is for an index above `match` (REPLICATE).
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Last indexes of the AppendEntries RPCs sent and not yet acknowledged, oldest first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: deque[int] = deque()

    def add(self, last_index: int) -> None:
        if self.full():
            raise AssertionError("inflight window overflow")
        self._items.append(last_index)

    def free_le(self, index: int) -> None:
        while self._items and self._items[0] <= index:
            self._items.popleft()

    def full(self) -> bool:
        return len(self._items) >= self.size

    def reset(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class Progress:
    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.recent_active = False
        self.read_ack = 0  # highest read-index round this follower has answered

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match} next={self.next}"
            f" inflight={len(self.inflights)}{' paused' if self.paused() else ''})"
        )

    # -- state transitions -------------------------------------------------------------------

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    # -- events ------------------------------------------------------------------------------

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement that the follower holds everything up to `index`.
        Returns True if `match` moved (stale or duplicate answers return False)."""
        updated = False
        if index > self.match:
            self.match = index
            self.probe_sent = False
            updated = True
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the AppendEntries whose previous entry was `rejected`; `match_hint`
        is where the logs may match. Returns False for a stale rejection."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        if rejected == self.match and match_hint < self.match:
            # The follower no longer holds the entry it acknowledged as its match: its state was
            # lost (a server restarted with an empty data dir). Probe back from where its log
            # ends, as hashicorp/raft does; a lower match only delays commits, never undoes one.
            self.match = match_hint
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int, count: int) -> None:
        """Record an AppendEntries carrying `count` entries up to `last_index`."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True
