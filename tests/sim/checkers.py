"""Invariant checkers, run after every step of every simulated server (Raft §5, Figure 3).

Ghost state (what an omniscient observer knows) is kept across crashes:

* Election Safety (§5.2): at most one leader per term, ever, counting restarts.
* Log Matching (§5.3): every entry ever written to any log is recorded by (index, term) with its
  content and the term of the entry before it; a second entry with the same (index, term) must
  agree on both, which by induction makes the whole prefixes identical.
* Leader Completeness (§5.4): when a server becomes leader, its log holds every entry applied
  anywhere so far (above its compaction point) and is at least as long.
* State Machine Safety (§5.4.3): every server applies the same entry at each index, and the KV
  state after applying index i is the same on every server (also after installing a snapshot).
* Durability order (thesis §3.8): an applied entry is already durable on the applying server; a
  message sent before the fsync never carries an unsynced term; term, commit and the vote of a
  term never go backwards across syncs and restarts (one vote per server per term).
* Monotonic applied index within a server's life; no remote errors counted by a core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.raft.core import Ready
from appliance.raft.messages import NONE, Entry, MsgType, Role, Snapshot

from .node import kv_state

if TYPE_CHECKING:
    from .node import SimNode


class SimFailure(AssertionError):
    pass


class Checker:
    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.entries: dict[tuple[int, int], tuple[int, bytes, int | None]] = {}
        self.applied: dict[int, tuple[int, int, bytes]] = {}
        self.states: dict[int, tuple] = {}
        self.votes: dict[tuple[str, int], str] = {}
        self.durable: dict[str, tuple[int, int]] = {}  # node -> (term, commit) last synced
        self.checks = 0
        self.elections = 0
        self.max_applied = 0

    def fail(self, what: str) -> None:
        raise SimFailure(what)

    # ------------------------------------------------------------------ hooks

    def on_start(self, node: SimNode) -> None:
        hs = node.disk.hard_state
        prev = self.durable.get(node.id)
        if prev is not None and (hs.term, hs.commit) < prev:
            self.fail(f"node {node.id} restarted with term/commit {hs.term}/{hs.commit} below synced {prev}")

    def after_step(self, node: SimNode) -> None:
        self.checks += 1
        core = node.core
        if core.remote_errors:
            self.fail(f"node {node.id} counted {core.remote_errors} remote errors")
        if core.role == Role.LEADER:
            holder = self.leaders.setdefault(core.term, node.id)
            if holder != node.id:
                self.fail(f"Election Safety: {holder} and {node.id} both lead term {core.term}")
            if node.last_role != Role.LEADER:
                self.elections += 1
                self._leader_completeness(node)
        node.last_role = core.role

    def after_advance(self, node: SimNode) -> None:
        self.after_step(node)
        core = node.core
        if core.log.applied != node.applied:
            self.fail(f"node {node.id}: core applied {core.log.applied} != FSM applied {node.applied}")

    def _leader_completeness(self, node: SimNode) -> None:
        log = node.core.log
        if self.max_applied > log.last_index():
            self.fail(f"Leader Completeness: leader {node.id} last index {log.last_index()} < applied "
                      f"{self.max_applied} elsewhere")
        for index, (term, _, _) in self.applied.items():
            if index > log.offset and log.term(index) != term:
                self.fail(f"Leader Completeness: leader {node.id} (term {node.core.term}) has term "
                          f"{log.term(index)} at committed index {index} (term {term})")

    def on_ready(self, node: SimNode, rd: Ready) -> None:
        log = node.core.log
        for e in rd.entries:
            self._log_matching(node, e, log.term(e.index - 1))
        self._sent_before_sync(node, rd)

    def _sent_before_sync(self, node: SimNode, rd: Ready) -> None:
        """Messages that leave before the Ready's fsync may reveal only what is already durable."""
        disk = node.disk
        hs = disk.hard_state
        durable_last = disk.entries[-1].index if disk.entries else (disk.snapshot.index if disk.snapshot else 0)
        for m in rd.messages:
            if m.type != MsgType.PRE_VOTE and m.term > hs.term:
                self.fail(f"node {node.id} sends {m.type.name} at term {m.term} before term is durable "
                          f"({hs.term})")
            if m.type == MsgType.APPEND_RESP and not m.reject and m.index > durable_last:
                self.fail(f"node {node.id} acknowledges index {m.index} with {durable_last} durable")
            if m.type == MsgType.VOTE_RESP and not m.reject and (hs.term, hs.vote) != (m.term, m.to):
                self.fail(f"node {node.id} grants its term-{m.term} vote to {m.to} before persisting it")

    def _log_matching(self, node: SimNode, e: Entry, prev_term: int | None) -> None:
        key = (e.index, e.term)
        seen = self.entries.get(key)
        if seen is None:
            self.entries[key] = (e.type, e.data, prev_term)
            return
        if seen[0] != e.type or seen[1] != e.data:
            self.fail(f"Log Matching: two different entries at {e.index}/{e.term} (node {node.id})")
        if prev_term is not None and seen[2] is not None and seen[2] != prev_term:
            self.fail(f"Log Matching: entry {e.index}/{e.term} follows term {prev_term} on {node.id}, "
                      f"{seen[2]} elsewhere")

    def on_synced(self, node: SimNode, rd: Ready) -> None:
        hs = rd.hard_state
        if hs is None:
            return
        prev = self.durable.get(node.id, (0, 0))
        if hs.term < prev[0] or hs.commit < prev[1]:
            self.fail(f"node {node.id}: durable term/commit went back {prev} -> {(hs.term, hs.commit)}")
        self.durable[node.id] = (hs.term, hs.commit)
        if hs.vote != NONE:
            voted = self.votes.setdefault((node.id, hs.term), hs.vote)
            if voted != hs.vote:
                self.fail(f"node {node.id} voted for {voted} and {hs.vote} in term {hs.term}")

    def on_apply(self, node: SimNode, e: Entry) -> None:
        ents = node.disk.entries
        on_disk = bool(ents) and ents[0].index <= e.index <= ents[-1].index \
            and ents[e.index - ents[0].index].term == e.term
        if not on_disk:
            self.fail(f"node {node.id} applies {e.index}/{e.term} before it is durable")
        seen = self.applied.setdefault(e.index, (e.term, e.type, e.data))
        if seen != (e.term, e.type, e.data):
            self.fail(f"State Machine Safety: node {node.id} applies {e.index}/{e.term}, "
                      f"another server applied {e.index}/{seen[0]}")
        self.max_applied = max(self.max_applied, e.index)
        self._state(node, e.index)

    def _state(self, node: SimNode, index: int) -> None:
        state = kv_state(node.store)
        seen = self.states.setdefault(index, state)
        if seen != state:
            self.fail(f"State Machine Safety: KV state after {index} differs on node {node.id}")

    def on_restore(self, node: SimNode, snap: Snapshot) -> None:
        seen = self.applied.get(snap.index)
        if seen is not None and seen[0] != snap.term:
            self.fail(f"node {node.id} installed snapshot {snap.index}/{snap.term}, committed term {seen[0]}")
        self._state(node, snap.index)

    def on_snapshot(self, node: SimNode, snap: Snapshot) -> None:
        self._state(node, snap.index)
