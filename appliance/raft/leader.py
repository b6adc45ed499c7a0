"""The leader's half of the Raft core: replication, commitment, heartbeats, read index.

How it works
------------
A mixin of `RaftCore` (core.py holds the state, the inputs and outputs, and the other roles);
split out only to keep modules short. The leader tracks a `Progress` per other server of the
latest configuration (progress.py) and:

* replicates: `_send_append` sends what a follower's progress allows (one probe, or a window of
  pipelined batches of at most `max_append_entries`), or the snapshot when the entries it needs
  were compacted; rejections carry a hint so the leader skips a whole conflicting term per round
  trip; a full window whose appends were all lost is unstuck by an empty append at the next
  heartbeat answer;
* commits: the highest index a majority of voters holds, counting its own entries only once they
  are durable, and only if that entry is of its own term (Raft §5.4.2); every commit advance is
  broadcast at once so followers apply without waiting for the next heartbeat; a leader that
  is no longer a voter steps down once that configuration is committed (thesis §4.2.2);
* checks quorum each lease round and steps down without one (thesis §6.2); aborts a leadership
  transfer after an election timeout;
* serves read index (thesis §6.4): a read is registered with the current commit index once an
  entry of this term has committed; heartbeats carry the latest read round, and a read is released
  when a majority has answered a heartbeat of its round or a later one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import quorum
from .messages import (
    NONE,
    Entry,
    EntryType,
    InvariantViolation,
    Message,
    MsgType,
    NotLeader,
    ProposalDropped,
    ReadState,
    Role,
)
from .progress import Progress, ProgressState

if TYPE_CHECKING:
    from .config import CoreConfig
    from .log import RaftLog
    from .messages import Configuration


class LeaderMixin:
    """The leader's rules of `RaftCore` (a mixin: the attributes are the core's)."""

    if TYPE_CHECKING:
        id: str
        cfg: CoreConfig
        log: RaftLog
        term: int
        role: Role
        leader: str
        progress: dict[str, Progress]
        election_elapsed: int
        heartbeat_elapsed: int
        check_quorum_elapsed: int
        lead_transferee: str
        transfer_elapsed: int
        read_seq: int
        pending_reads: list[tuple[int, str, int, str]]
        reads_awaiting_commit: list[tuple[str, str]]
        _read_states: list[ReadState]
        _need_broadcast: bool

        @property
        def configuration(self) -> Configuration: ...

        def voters(self) -> tuple[str, ...]: ...

        def _become_follower(self, term: int, leader: str) -> None: ...

        def _send(self, m: Message) -> None: ...

    def _check_can_append(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")

    def _append(self, kind: EntryType, data: bytes) -> tuple[int, int]:
        index = self.log.last_index() + 1
        self.log.append([Entry(index, self.term, kind, data)])
        if kind == EntryType.CONFIGURATION:
            self._sync_progress()
        self._need_broadcast = True
        return index, self.term

    def _sync_progress(self) -> None:
        """Track exactly the other servers of the latest configuration (effective on append)."""
        conf = self.configuration
        for sid in conf.ids:
            if sid != self.id and sid not in self.progress:
                pr = Progress(self.log.last_index() + 1, self.cfg.max_inflight)
                pr.recent_active = True
                self.progress[sid] = pr
        for sid in list(self.progress):
            if conf.server(sid) is None:
                del self.progress[sid]
        if self.lead_transferee != NONE and not conf.is_voter(self.lead_transferee):
            self.lead_transferee = NONE

    def _acked(self, sid: str) -> int:
        return self.log.stable if sid == self.id else self.progress[sid].match

    def _maybe_commit(self) -> bool:
        index = quorum.committed_index(self.voters(), self._acked)
        # Raft §5.4.2: only an entry of the current term is committed by counting replicas.
        if index <= self.log.committed or self.log.term(index) != self.term:
            return False
        self.log.commit_to(index)
        self._broadcast_append()
        if self.reads_awaiting_commit:
            waiting, self.reads_awaiting_commit = self.reads_awaiting_commit, []
            for request_id, frm in waiting:
                self._leader_read(request_id, frm)
        conf_index, conf = self.log.latest_config()
        if conf_index <= self.log.committed and not conf.is_voter(self.id):
            self._become_follower(self.term, NONE)  # removed: step down once C_new committed
        return True

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.check_quorum_elapsed += 1
        if self.lead_transferee != NONE:
            self.transfer_elapsed += 1
            if self.transfer_elapsed >= self.cfg.election_ticks:
                self.lead_transferee = NONE
        if self.check_quorum_elapsed >= self.cfg.leader_lease_ticks:
            self.check_quorum_elapsed = 0
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                def active(v: str) -> bool:
                    return v == self.id or self.progress[v].recent_active

                if not quorum.quorum_active(self.voters(), active):
                    self._become_follower(self.term, NONE)  # thesis §6.2: a stale leader steps down
                    return
                for pr in self.progress.values():
                    pr.recent_active = False
        for pr in self.progress.values():
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= self.cfg.election_ticks:
                    pr.become_probe()  # the snapshot got lost: try again
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _broadcast_append(self) -> None:
        self._need_broadcast = False
        for sid in self.progress:
            self._send_append(sid)

    def _broadcast_heartbeat(self) -> None:
        for sid, pr in self.progress.items():
            commit = min(pr.match, self.log.committed)
            self._send(Message(MsgType.HEARTBEAT, self.id, sid, self.term, commit=commit, context=self.read_seq))

    def _send_append(self, to: str, send_if_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        entries = self.log.slice(pr.next, self.cfg.max_append_entries, self.cfg.max_append_bytes)
        if prev_term is None or entries is None:
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._send(Message(MsgType.APPEND, self.id, to, self.term, index=prev, log_term=prev_term,
                           entries=tuple(entries), commit=self.log.committed))
        pr.sent_entries(prev + len(entries), len(entries))
        return bool(entries)

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        snap = self.log.snapshot
        if snap is None:
            raise InvariantViolation(f"entries for {to} are compacted but there is no snapshot")
        if not pr.recent_active:
            return False
        self._send(Message(MsgType.SNAPSHOT, self.id, to, self.term, snapshot=snap))
        pr.become_snapshot(snap.index)
        return False

    def _step_leader(self, m: Message) -> None:
        if m.type == MsgType.READ_INDEX:
            self._leader_read(m.request_id, m.frm)
            return
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        if m.type == MsgType.APPEND_RESP:
            self._handle_append_resp(m, pr)
        elif m.type == MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.match < self.log.last_index():
                prev_term = self.log.term(pr.next - 1)
                if pr.state == ProgressState.REPLICATE and pr.inflights.full() and prev_term is not None:
                    # Every in-flight append may have been lost (a full window never drains):
                    # an empty append at next-1 draws either an ack or a rejection.
                    self._send(Message(MsgType.APPEND, self.id, m.frm, self.term, index=pr.next - 1,
                                       log_term=prev_term, commit=self.log.committed))
                else:
                    if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                        pr.become_probe()
                    self._send_append(m.frm)
            pr.read_ack = max(pr.read_ack, m.context)
            self._advance_reads()

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease_to(m.index, hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if not self._maybe_commit() and was_paused:
            self._send_append(m.frm)
        if self.role != Role.LEADER:
            return
        while self._send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, m.frm, self.term))

    # ------------------------------------------------------------------ read index (thesis §6.4)

    def _leader_read(self, request_id: str, frm: str) -> None:
        if self.log.term(self.log.committed) != self.term:
            # A new leader's commit index may lag the cluster's until its no-op commits.
            self.reads_awaiting_commit.append((request_id, frm))
            return
        self.read_seq += 1
        self.pending_reads.append((self.read_seq, request_id, self.log.committed, frm))
        self._broadcast_heartbeat()  # a fresh round: only answers to it confirm leadership
        self._advance_reads()

    def _advance_reads(self) -> None:
        if not self.pending_reads:
            return
        acked = quorum.committed_index(
            self.voters(), lambda v: self.read_seq if v == self.id else self.progress[v].read_ack
        )
        while self.pending_reads and self.pending_reads[0][0] <= acked:
            _, request_id, index, frm = self.pending_reads.pop(0)
            if frm == self.id:
                self._read_states.append(ReadState(request_id, index))
            else:
                self._send(Message(MsgType.READ_INDEX_RESP, self.id, frm, self.term,
                                   index=index, request_id=request_id))
