"""Leadership: what only a leader does each tick, how it dispatches messages, and handing over.

How it works
------------
Each tick (`_tick_leader`) the leader sends heartbeats every `heartbeat_ticks` (every tick by
default), retries a snapshot a follower never acknowledged after an election timeout, and, every
`leader_lease_ticks`, checks its quorum (thesis §6.2): with check-quorum on, a leader that has not
heard from a majority of voters within that lease round steps down, so a partitioned leader stops
serving. Messages to the leader (`_step_leader`) are answers to its appends and heartbeats
(replication.py) and read-index requests forwarded by followers (read_index.py).

A leadership transfer (thesis §3.10, `_transfer`) names a voter (or picks the most up-to-date
one), refuses new proposals while it runs (`ProposalDropped`), brings the target up to date, then
sends TimeoutNow: the target campaigns at once (elections.py). The transfer is abandoned after an
election timeout.
"""

from __future__ import annotations

from . import quorum
from .core_state import CoreState
from .messages import NONE, Message, MsgType, NotLeader, Role, TransferRefused
from .progress import ProgressState


class LeadershipRules(CoreState):
    """The leader's tick, dispatch and leadership transfer of `RaftCore` (a mixin over
    core_state.py)."""

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
            self._handle_heartbeat_resp(m, pr)

    def _transfer(self, target: str | None) -> str:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        voters = [v for v in self.voters() if v != self.id]
        if target is None:
            if not voters:
                raise TransferRefused("no other voter to transfer leadership to")
            target = max(voters, key=lambda v: (self.progress[v].match, [-ord(c) for c in v]))
        if target == self.id or target not in voters:
            raise TransferRefused(f"{target!r} is not another voter")
        if self.lead_transferee == target:
            return target
        self.lead_transferee = target
        self.transfer_elapsed = 0
        if self.progress[target].match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, target, self.term))
        else:
            self._send_append(target)
        return target
