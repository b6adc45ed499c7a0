"""What the Raft driver times for Consul's `consul.raft.*` metrics: a hook on the host.

`RaftTiming` watches the host's steps (appliance/raft/host.py `HostHooks`), never the loop: the
fsync of the leader's entries, each FSM apply, a proposal until it is applied, a follower's answer
to an RPC, an AppendEntries round trip, snapshots. It hands the milliseconds to `metrics`
(appliance/raft/metrics.py), which the agent replaces by one that records Consul's names
(appliance.telemetry). It keeps the bookkeeping that spans more than one Ready: role transitions
as Consul counts them, AppendEntries in flight per peer, when each follower last answered the
leader, the RPCs answered since the last Ready, and when this server last heard from a leader
(status.py's `last_contact`). Times are the host's clock (time.monotonic in the driver).
"""

from __future__ import annotations

import collections

from appliance.state.fsm import Applied

from ..core import Compaction, RaftCore, Ready
from ..host import HostHooks
from ..messages import Entry, Message, MsgType, Role, SoftState
from ..metrics import RaftMetrics

# the RPCs a server answers, timed from arrival to answer (consul.raft.rpc.*)
RPC_KINDS = {MsgType.APPEND: "appendEntries", MsgType.VOTE: "requestVote", MsgType.SNAPSHOT: "installSnapshot"}
MAX_APPENDS_TIMED = 256  # AppendEntries awaiting an answer, per peer, kept for their round-trip time
# an AppendEntries awaiting its answer: (last index it carries, sent at, entries)
SentAppend = tuple[int, float, int]


class RaftTiming(HostHooks):
    """The metrics bookkeeping of one Raft server."""

    def __init__(self, node_id: str, lease_ticks: int, now: float) -> None:
        self.node_id = node_id
        self.metrics: RaftMetrics = RaftMetrics()
        self.last_contact = now  # when this server last heard from a leader
        self.heard_leader = False
        self.peer_contact: dict[str, float] = {}  # peer -> when it last answered this leader
        self._lease_ticks = lease_ticks
        self._ticks = 0
        self._counted_role = Role.FOLLOWER
        self._rpcs_answered: list[tuple[str, float]] = []  # RPCs stepped since the last Ready
        self._appends_sent: dict[str, collections.deque[SentAppend]] = {}  # peer -> AppendEntries in flight

    def ticked(self, core: RaftCore, now: float) -> None:
        """Each leader lease round, per follower: time since it last answered (hashicorp/raft
        samples it in checkLeaderLease)."""
        self._ticks += 1
        if core.role != Role.LEADER or self._ticks % self._lease_ticks:
            return
        for peer in core.voters():
            if peer != self.node_id:
                self.metrics.follower_contact(peer, (now - self.peer_contact.setdefault(peer, now)) * 1000.0)

    def stepping(self, core: RaftCore, m: Message, arrived: float) -> None:
        if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT) and m.term >= core.term:
            self.last_contact = arrived
            self.heard_leader = True
        elif m.type in (MsgType.APPEND_RESP, MsgType.HEARTBEAT_RESP) and core.role == Role.LEADER:
            self._answered(m, arrived)
        if m.type in RPC_KINDS:
            self._rpcs_answered.append((RPC_KINDS[m.type], arrived))

    def proposed(self, index: int) -> None:
        self.metrics.proposal_accepted()

    def ready(self, core: RaftCore, rd: Ready, now: float) -> None:
        for m in rd.messages:
            if m.type == MsgType.APPEND and m.entries:
                sent = self._appends_sent.get(m.to)
                if sent is None:
                    sent = self._appends_sent[m.to] = collections.deque(maxlen=MAX_APPENDS_TIMED)
                sent.append((m.index + len(m.entries), now, len(m.entries)))

    def persisted(self, core: RaftCore, rd: Ready, synced_s: float | None, now: float) -> None:
        if synced_s is not None and rd.entries and core.role == Role.LEADER:
            self.metrics.dispatched(synced_s * 1000.0, len(rd.entries))
        # the RPCs stepped since the last Ready are answered (their answers were just sent)
        for rpc, arrived in self._rpcs_answered:
            self.metrics.rpc_handled(rpc, (now - arrived) * 1000.0)
        self._rpcs_answered = []

    def role_changed(self, core: RaftCore, soft: SoftState, now: float) -> None:
        if soft.role != Role.LEADER and soft.leader:
            self.last_contact = now
            self.heard_leader = True
        role = soft.role
        if role == self._counted_role:
            return  # the same role with another leader: not a transition
        if role == Role.LEADER:
            self.peer_contact = {v: now for v in core.voters() if v != self.node_id}
            self._appends_sent = {}
            if self._counted_role not in (Role.PRE_CANDIDATE, Role.CANDIDATE):
                self.metrics.role_changed("candidate")  # elected within one Ready (a single voter)
        elif role == Role.CANDIDATE and self._counted_role == Role.PRE_CANDIDATE:
            self._counted_role = role
            return  # pre-vote won: still the same candidacy
        self._counted_role = role
        self.metrics.role_changed("leader" if role == Role.LEADER else "follower" if role == Role.FOLLOWER
                                  else "candidate")

    def applied(self, entry: Entry, applied: Applied | None, apply_s: float) -> None:
        if applied is None:
            return
        if applied.failed:
            self.metrics.fsm_apply_error(applied.failed)
        elif applied.command is not None:  # set whenever the entry was applied
            self.metrics.fsm_applied(applied.command, apply_s * 1000.0)

    def committed(self, latency_s: float, batch: int) -> None:
        self.metrics.committed(latency_s * 1000.0, batch)

    def snapshot_taken(self, compaction: Compaction, took_s: float) -> None:
        self.metrics.snapshot_created(took_s * 1000.0)

    def snapshot_saved(self, compaction: Compaction, took_s: float) -> None:
        self.metrics.snapshot_persisted(took_s * 1000.0)

    def _answered(self, m: Message, arrived: float) -> None:
        """A follower answered the leader: its last contact, and the AppendEntries it acknowledges."""
        self.peer_contact[m.frm] = arrived
        sent = self._appends_sent.get(m.frm)
        if not sent or m.type != MsgType.APPEND_RESP:
            return
        if m.reject:
            sent.clear()  # the follower's log diverges: what was in flight is resent anyway
            return
        while sent and sent[0][0] <= m.index:
            _, at, entries = sent.popleft()
            self.metrics.append_rpc(m.frm, (arrived - at) * 1000.0, entries)
