"""Log replication, both sides: AppendEntries, heartbeats, InstallSnapshot and the commit rule.

How it works
------------
The leader keeps a `Progress` per other server of the latest configuration (progress.py,
`_sync_progress`: a configuration takes effect as soon as it is appended) and:

* appends: `_append` puts an entry of its term at the end of its log (refused while it is not
  the leader or a leadership transfer is under way);
* replicates (§5.3): `_send_append` sends what a follower's progress allows (one probe, or a
  window of pipelined batches of at most `max_append_entries`), or the snapshot when the entries
  it needs were compacted (§7); rejections carry a hint so the leader skips a whole conflicting
  term per round trip; a full window whose appends were all lost is unstuck by an empty append at
  the next heartbeat answer;
* commits (§5.4.2): the highest index a majority of voters holds, counting its own entries only
  once they are durable, and only if that entry is of its own term (Figure 8); every commit
  advance is broadcast at once so followers apply without waiting for the next heartbeat; a
  leader that is no longer a voter steps down once that configuration is committed (thesis
  §4.2.2). Heartbeats carry `min(follower's match, commit)` and the latest read round.

A follower (`_handle_append`) truncates only at the first conflicting entry, so duplicated and
reordered AppendEntries are harmless, and commits only up to the last entry the RPC verified; a
prefix below its commit index matches by definition. An InstallSnapshot it already covers is old
news; one whose last entry it holds keeps the log after it; any other replaces the whole log
(Figure 13).
"""

from __future__ import annotations

from . import quorum
from .core_state import CoreState
from .messages import NONE, Entry, EntryType, InvariantViolation, Message, MsgType, NotLeader, ProposalDropped, Role
from .progress import Progress, ProgressState


class ReplicationRules(CoreState):
    """The replication rules of `RaftCore` (a mixin over core_state.py)."""

    # ------------------------------------------------------------------ the leader's side

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
        self._reads_after_commit()
        conf_index, conf = self.log.latest_config()
        if conf_index <= self.log.committed and not conf.is_voter(self.id):
            self._become_follower(self.term, NONE)  # removed: step down once C_new committed
        return True

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

    def _handle_heartbeat_resp(self, m: Message, pr: Progress) -> None:
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

    # ------------------------------------------------------------------ the follower's side

    def _handle_append(self, m: Message) -> None:
        resp = MsgType.APPEND_RESP
        if m.index < self.log.committed:  # that prefix is committed, hence it matches
            self._send(Message(resp, self.id, m.frm, self.term, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(resp, self.id, m.frm, self.term, index=last_new))
            return
        hint = self.log.find_conflict_by_term(m.index, m.log_term)
        self._send(Message(resp, self.id, m.frm, self.term, index=m.index, reject=True,
                           reject_hint=hint, log_term=self.log.term(hint) or 0))

    def _handle_heartbeat(self, m: Message) -> None:
        commit = m.commit
        if commit > self.log.last_index():
            self.remote_errors += 1  # the leader sends min(match, commit): never past our log
            commit = self.log.last_index()
        self.log.commit_to(commit)
        self._send(Message(MsgType.HEARTBEAT_RESP, self.id, m.frm, self.term, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            self.remote_errors += 1
            return
        if snap.index <= self.log.committed:
            pass  # old news (Figure 13): answer with what we have
        elif self.log.match_term(snap.index, snap.term):
            self.log.commit_to(snap.index)  # we hold that entry: keep the suffix (Figure 13 rule 6)
        else:
            self.log.restore(snap)  # discard the whole log (Figure 13 rule 7)
            self._pending_snapshot = snap
        self._send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term, index=self.log.committed))
