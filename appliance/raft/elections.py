"""Elections: randomised timeouts, pre-vote, votes, the vote lease and becoming leader.

How it works
------------
A follower that heard from no leader for a random timeout in [election_ticks, 2 × election_ticks)
campaigns (Raft §5.2; the tick itself is in core.py). With pre-vote (thesis §9.6) it first asks,
at term + 1 but without raising its own term, whether it could win; only a majority of pre-votes
starts the real election, which raises the term and votes for itself. A campaign started by
TimeoutNow (a leadership transfer, thesis §3.10) skips pre-vote and carries a flag that lets
voters ignore their vote lease.

A voter grants one vote per term, to a candidate whose log is at least as up to date as its own
(§5.4.1) and which is a voter of its latest configuration or has a log strictly more up to date
(it may hold a configuration this server has not received yet; with an equal log it has this
server's configuration, so a removed server gets no vote); the vote is durable before the grant
leaves (the grant is a message after persist, core.py). With check-quorum, a server that heard
from a leader within the minimum election timeout ignores vote requests altogether (the vote
lease, thesis §4.2.3; the check is in core.py's `step`). A majority of grants makes a leader,
which appends a no-op of its term at once (it lets the leader commit, and so learn, what earlier
terms committed: reads and configuration changes wait for it).
"""

from __future__ import annotations

from . import quorum
from .core_state import CoreState
from .messages import NONE, EntryType, InvariantViolation, Message, MsgType, Role


class ElectionRules(CoreState):
    """The election rules of `RaftCore` (a mixin over core_state.py)."""

    def _reset_randomized_timeout(self) -> None:
        t = self.cfg.election_ticks
        self.randomized_election_timeout = self.rng.randrange(t, 2 * t)

    def _become_leader(self) -> None:
        if self.role != Role.CANDIDATE:
            raise InvariantViolation(f"{self.role.name} -> leader")
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        self._sync_progress()
        # The no-op lets this leader commit (and so learn) everything earlier terms committed:
        # reads and configuration changes wait for it (§5.4.2, thesis §6.4).
        self._append(EntryType.NOOP, b"")

    def _campaign(self, kind: str) -> None:
        if kind == "pre":
            self.role = Role.PRE_CANDIDATE
            self.leader = NONE
            self.votes = {}
            self.election_elapsed = 0
            self._reset_randomized_timeout()
            vote_term, msg_type = self.term + 1, MsgType.PRE_VOTE
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            vote_term, msg_type = self.term, MsgType.VOTE
        self.votes[self.id] = True
        if quorum.vote_result(self.voters(), self.votes) == quorum.VoteResult.WON:
            if kind == "pre":
                self._campaign("election")
            else:
                self._become_leader()
            return
        for v in self.voters():
            if v != self.id:
                self._send(Message(msg_type, self.id, v, vote_term, index=self.log.last_index(),
                                   log_term=self.log.last_term(), transfer=kind == "transfer"))

    def _in_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.leader != NONE
            and self.election_elapsed < self.cfg.election_ticks
        )

    def _handle_vote_request(self, m: Message) -> None:
        resp = MsgType.VOTE_RESP if m.type == MsgType.VOTE else MsgType.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (m.type == MsgType.PRE_VOTE and m.term > self.term)
        )
        # A candidate that is not a voter of our latest configuration gets a vote only if its log
        # is strictly more up to date than ours: then it may hold a newer configuration that makes
        # it a voter, which we have not received (refusing left a cluster whose most up-to-date
        # voter needed a lagging server's vote unable to elect: sim seeds 1571332345, 109573).
        # With an equal log it has our configuration, in which it is no voter (it was removed).
        up_to_date = self.log.is_up_to_date(m.index, m.log_term)  # Raft §5.4.1
        member = self.configuration.is_voter(m.frm) or (
            up_to_date and (m.log_term, m.index) != (self.log.last_term(), self.log.last_index()))
        if can_vote and member and up_to_date:
            self._send(Message(resp, self.id, m.frm, m.term))
            if m.type == MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, self.id, m.frm, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
            self._become_follower(self.term, m.frm)
            self._step_follower(m)
            return
        wanted = MsgType.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if m.type == wanted:
            self.votes.setdefault(m.frm, not m.reject)
            result = quorum.vote_result(self.voters(), self.votes)
            if result == quorum.VoteResult.WON:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign("election")
                else:
                    self._become_leader()
            elif result == quorum.VoteResult.LOST:
                self._become_follower(self.term, NONE)
        elif m.type == MsgType.READ_INDEX:
            self._refuse_read(m)
