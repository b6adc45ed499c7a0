"""What the Raft driver times for Consul's `consul.raft.*` metrics.

The driver reads the clock around what Consul times (the fsync of the leader's entries, each FSM
apply, a proposal until it is applied, a follower's answer to an RPC, an AppendEntries round
trip, snapshots) and hands the milliseconds to its `metrics` hook (appliance/raft/metrics.py),
which the agent replaces by one that records Consul's names (appliance.telemetry). This module
keeps the bookkeeping that spans more than one Ready: role transitions as Consul counts them,
AppendEntries in flight per peer, when each follower last answered the leader, and the RPCs
answered since the last Ready. The loop (loop.py) calls in here; the times of one step (a
fsync, an apply) are taken where the step runs.
"""

from __future__ import annotations

import collections
import time

from ..core import RaftCore
from ..messages import Message, MsgType, Role
from .base import DriverBase

# the RPCs a server answers, timed from arrival to answer (consul.raft.rpc.*)
RPC_KINDS = {MsgType.APPEND: "appendEntries", MsgType.VOTE: "requestVote", MsgType.SNAPSHOT: "installSnapshot"}
MAX_APPENDS_TIMED = 256  # AppendEntries awaiting an answer, per peer, kept for their round-trip time


class TimingMixin(DriverBase):
    """The metrics bookkeeping of `RaftDriver`."""

    def _ticked(self, core: RaftCore) -> None:
        """One tick went into the core: each leader lease round, sample follower contact."""
        self._ticks += 1
        if core.role == Role.LEADER and self._ticks % self._lease_ticks == 0:
            self._sample_follower_contact()

    def _rpcs_done(self) -> None:
        """The RPCs stepped since the last Ready are answered (their answers were just sent)."""
        if self._rpcs_answered:
            now = time.monotonic()
            for rpc, arrived in self._rpcs_answered:
                self.metrics.rpc_handled(rpc, (now - arrived) * 1000.0)
            self._rpcs_answered = []

    def _role_changed(self, role: Role) -> None:
        if role == self._counted_role:
            return  # the same role with another leader: not a transition
        if role == Role.LEADER:
            now = time.monotonic()
            self._peer_contact = {v: now for v in self.opened_core.voters() if v != self.node_id}
            self._appends_sent = {}
            if self._counted_role not in (Role.PRE_CANDIDATE, Role.CANDIDATE):
                self.metrics.role_changed("candidate")  # elected within one Ready (a single voter)
        elif role == Role.CANDIDATE and self._counted_role == Role.PRE_CANDIDATE:
            self._counted_role = role
            return  # pre-vote won: still the same candidacy
        self._counted_role = role
        self.metrics.role_changed("leader" if role == Role.LEADER else "follower" if role == Role.FOLLOWER
                                  else "candidate")

    def _append_sent(self, m: Message) -> None:
        sent = self._appends_sent.get(m.to)
        if sent is None:
            sent = self._appends_sent[m.to] = collections.deque(maxlen=MAX_APPENDS_TIMED)
        sent.append((m.index + len(m.entries), time.monotonic(), len(m.entries)))

    def _answered(self, m: Message, arrived: float) -> None:
        """A follower answered the leader: its last contact, and the AppendEntries it acknowledges."""
        self._peer_contact[m.frm] = arrived
        sent = self._appends_sent.get(m.frm)
        if not sent or m.type != MsgType.APPEND_RESP:
            return
        if m.reject:
            sent.clear()  # the follower's log diverges: what was in flight is resent anyway
            return
        while sent and sent[0][0] <= m.index:
            _, at, entries = sent.popleft()
            self.metrics.append_rpc(m.frm, (arrived - at) * 1000.0, entries)

    def _sample_follower_contact(self) -> None:
        """Each leader lease round, per follower: time since it last answered (hashicorp/raft
        samples it in checkLeaderLease)."""
        now = time.monotonic()
        for peer in self.opened_core.voters():
            if peer != self.node_id:
                self.metrics.follower_contact(peer, (now - self._peer_contact.setdefault(peer, now)) * 1000.0)
