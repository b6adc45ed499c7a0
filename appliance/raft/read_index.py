"""Read index (thesis §6.4) on every role: a linearizable read point without a log entry.

How it works
------------
`read_index(request_id)` asks for the index a read must wait for. On the leader (`_leader_read`):

1. the leader must have committed an entry of its own term, since until then its commit index may
   lag the cluster's (a new leader learns it when its no-op commits; etcd #7331): a read asked
   earlier waits in `reads_awaiting_commit` and is registered when that commit happens;
2. the read is registered with the current commit index and a fresh heartbeat round: heartbeats
   carry the latest round number (`read_seq`), and a read is released when a majority of voters
   has answered a heartbeat of its round or a later one (answers to earlier rounds may predate
   the read and prove nothing);
3. the released `ReadState(request_id, index)` comes out in a Ready (or, for a follower that
   asked, a READ_INDEX_RESP), and the host serves the read once this server has applied `index`
   (appliance/raft/host.py).

A follower forwards the request to the leader it knows (READ_INDEX) and hands out the answer;
without a known leader, or asked by a peer while not leading, the answer is -1 ("cannot serve
here": retry). Losing leadership fails the reads this server asked for (-1). No leases: every
linearizable read costs one heartbeat round, shared by all reads registered before it starts.
"""

from __future__ import annotations

from . import quorum
from .core_state import CoreState
from .messages import NONE, Message, MsgType, ReadState, Role


class ReadIndexRules(CoreState):
    """The read-index rules of `RaftCore` (a mixin over core_state.py)."""

    def _read_index(self, request_id: str) -> None:
        if self.role == Role.LEADER:
            self._leader_read(request_id, self.id)
        elif self.leader != NONE:
            self._send(Message(MsgType.READ_INDEX, self.id, self.leader, self.term, request_id=request_id))
        else:
            self._read_states.append(ReadState(request_id, -1))

    def _leader_read(self, request_id: str, frm: str) -> None:
        if self.log.term(self.log.committed) != self.term:
            # A new leader's commit index may lag the cluster's until its no-op commits.
            self.reads_awaiting_commit.append((request_id, frm))
            return
        self.read_seq += 1
        self.pending_reads.append((self.read_seq, request_id, self.log.committed, frm))
        self._broadcast_heartbeat()  # a fresh round: only answers to it confirm leadership
        self._advance_reads()

    def _reads_after_commit(self) -> None:
        """An entry of this term just committed: the reads that waited for it start their round."""
        if self.reads_awaiting_commit:
            waiting, self.reads_awaiting_commit = self.reads_awaiting_commit, []
            for request_id, frm in waiting:
                self._leader_read(request_id, frm)

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

    def _refuse_read(self, m: Message) -> None:
        """A READ_INDEX reached a server that does not lead: the asker retries elsewhere."""
        self._send(Message(MsgType.READ_INDEX_RESP, self.id, m.frm, self.term,
                           request_id=m.request_id, reject=True))

    def _read_answered(self, m: Message) -> None:
        """The leader's answer to a READ_INDEX this follower forwarded."""
        self._read_states.append(ReadState(m.request_id, -1 if m.reject else m.index))

    def _drop_reads(self) -> None:
        """Leadership (or the term) is lost: the reads this server asked for fail (-1), the ones
        peers asked for are forgotten (they time out and retry)."""
        for _, request_id, _, frm in self.pending_reads:
            if frm == self.id:
                self._read_states.append(ReadState(request_id, -1))
        for request_id, frm in self.reads_awaiting_commit:
            if frm == self.id:
                self._read_states.append(ReadState(request_id, -1))
        self.pending_reads = []
        self.reads_awaiting_commit = []
