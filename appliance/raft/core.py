"""The Raft core: a synchronous state machine with no I/O, clock or randomness of its own.

How it works
------------
Inputs: `tick()` (the driver's timer, see config.py for what a tick is), `step(message)` (a
message from a peer), `propose(data)`, `propose_conf_change(change)`, `read_index(request_id)`,
`transfer_leadership(target)`, `compact(index, data)`. Inputs never block and never do I/O; they
change in-memory state and queue outputs.

Outputs: `ready()` returns a `Ready` batch, which the host processes in this order and then
acknowledges with `advance(ready)`:

  1. `messages`: may be sent at once, even before step 2 (the leader's AppendEntries,
     heartbeats, snapshots, TimeoutNow and pre-votes depend on nothing new being durable).
  2. persist `snapshot` (if any: replace the whole stored log by it), then `entries` (first
     delete every stored entry with an index >= entries[0].index) and `hard_state`, with one
     fsync for the batch (group commit).
  3. send `messages_after_persist`: vote requests and grants, append and heartbeat answers. They
     reveal the term, vote or entries of step 2, so they wait for its fsync (Raft §5.1, thesis
     §3.8).
  4. restore the state machine from `snapshot` (if any), then apply `committed_entries` in order,
     then serve `read_states` whose index is applied.
  5. `advance(ready)`.

No input may be given between `ready()` and `advance()`; the core raises if one is.
Durability is tracked, not assumed: entries count as this server's own acknowledgement (leader
commit counting, Raft §5.3) and are handed out for applying only after `advance()` reports them
persisted, so a single-voter cluster never applies an entry that is not on its own disk.

The rules: elections with randomised timeouts in [T, 2T) (§5.2), optional pre-vote (thesis §9.6)
and check-quorum with the vote lease (thesis §4.2.3, §6.2); log replication with per-follower
probe/replicate/snapshot states (progress.py), batching (`max_append_entries`) and pipelining
(`max_inflight`); commit by counting only for entries of the current term (§5.4.2, Figure 8);
read index (thesis §6.4); compaction and InstallSnapshot (§7); single-server membership changes,
effective on append, one at a time and only after an entry of the leader's term committed (thesis
§4.1 and the 2015 fix); leadership transfer with TimeoutNow (thesis §3.10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from . import quorum
from .config import CoreConfig
from .leader import LeaderMixin
from .log import RaftLog
from .messages import (
    NONE,
    ConfChange,
    ConfChangeRefused,
    Configuration,
    Entry,
    EntryType,
    HardState,
    InitialState,
    InvariantViolation,
    Message,
    MsgType,
    NotLeader,
    RaftError,
    ReadState,
    Role,
    Snapshot,
    SoftState,
    TransferRefused,
    encode_configuration,
)
from .progress import Progress, ProgressState


class RandomSource(Protocol):
    def randrange(self, start: int, stop: int) -> int: ...


# Messages that reveal freshly changed term, vote or log: sent only after the Ready's fsync.
_AFTER_PERSIST = frozenset(
    {MsgType.APPEND_RESP, MsgType.VOTE, MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP, MsgType.HEARTBEAT_RESP}
)


@dataclass(frozen=True)
class Ready:
    """One batch of outputs; see the module docstring for the order to process them in."""

    soft_state: SoftState | None
    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    messages_after_persist: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]

    @property
    def must_sync(self) -> bool:
        return bool(self.hard_state or self.entries or self.snapshot)


@dataclass(frozen=True)
class Compaction:
    """A snapshot taken locally: persist `snapshot` durably, then delete stored entries with an
    index <= `compact_to` (never the other way round)."""

    snapshot: Snapshot
    compact_to: int


class RaftCore(LeaderMixin):
    def __init__(self, node_id: str, config: CoreConfig, rng: RandomSource,
                 initial: InitialState | None = None) -> None:
        if not node_id:
            raise ValueError("node id must be non-empty")
        initial = initial or InitialState()
        self.id = node_id
        self.cfg = config
        self.rng = rng
        self.log = RaftLog(initial)
        self.term = initial.hard_state.term
        self.vote = initial.hard_state.vote
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.check_quorum_elapsed = 0
        self.randomized_election_timeout = config.election_ticks
        self.lead_transferee = NONE
        self.transfer_elapsed = 0
        self.read_seq = 0
        self.pending_reads: list[tuple[int, str, int, str]] = []  # (round, request id, index, from)
        self.reads_awaiting_commit: list[tuple[str, str]] = []  # (request id, from)
        self.remote_errors = 0
        self._msgs: list[Message] = []
        self._msgs_after: list[Message] = []
        self._read_states: list[ReadState] = []
        self._pending_snapshot: Snapshot | None = None
        self._need_broadcast = False
        self._in_ready: Ready | None = None
        self._prev_soft = SoftState()
        self._prev_hard = HardState(self.term, self.vote, self.log.committed)
        self._reset_randomized_timeout()

    # ------------------------------------------------------------------ status

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER

    @property
    def configuration(self) -> Configuration:
        return self.log.latest_config()[1]

    def voters(self) -> tuple[str, ...]:
        return self.configuration.voters

    def promotable(self) -> bool:
        return self.configuration.is_voter(self.id)

    def soft_state(self) -> SoftState:
        return SoftState(self.role, self.leader)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def should_snapshot(self) -> bool:
        base = self.log.snapshot.index if self.log.snapshot else 0
        return self.log.applied - base >= self.cfg.snapshot_threshold

    # ------------------------------------------------------------------ inputs

    def _check_input(self) -> None:
        if self._in_ready is not None:
            raise RuntimeError("input between ready() and advance()")

    def tick(self) -> None:
        self._check_input()
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
                self.campaign()

    def campaign(self) -> None:
        """Start an election now (pre-vote first if enabled), as an election timeout would."""
        self._check_input()
        if self.role == Role.LEADER or not self.promotable():
            return
        self._campaign("pre" if self.cfg.pre_vote else "election")

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command; returns (index, term). It is committed when an entry with that
        index and term is applied; another term at that index means it was not."""
        self._check_input()
        self._check_can_append()
        return self._append(EntryType.COMMAND, data)

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        """Append a single-server configuration change (thesis §4.1). It takes effect at once,
        on every server as it appends it. Refused while another change is uncommitted, and until
        an entry of this leader's term has committed (the 2015 single-server change fix)."""
        self._check_input()
        self._check_can_append()
        if self.log.term(self.log.committed) != self.term:
            raise ConfChangeRefused("the leader has not yet committed an entry of its term")
        conf_index, conf = self.log.latest_config()
        if conf_index > self.log.committed:
            raise ConfChangeRefused("a configuration change is already in progress")
        try:
            new = change.apply_to(conf)
        except ValueError as err:
            raise ConfChangeRefused(str(err)) from None
        if not new.voters:
            raise ConfChangeRefused("the configuration would have no voters")
        return self._append(EntryType.CONFIGURATION, encode_configuration(new))

    def read_index(self, request_id: str) -> None:
        """Ask for a linearizable read point. A ReadState(request_id, index) comes out in a
        Ready; serve the read once this server has applied `index` (thesis §6.4). A follower
        asks its leader. Index -1 means "cannot serve here": retry."""
        self._check_input()
        if self.role == Role.LEADER:
            self._leader_read(request_id, self.id)
        elif self.leader != NONE:
            self._send(Message(MsgType.READ_INDEX, self.id, self.leader, self.term, request_id=request_id))
        else:
            self._read_states.append(ReadState(request_id, -1))

    def transfer_leadership(self, target: str | None = None) -> str:
        """Hand leadership to `target` (or the most up-to-date voter): catch it up, then send
        TimeoutNow (thesis §3.10). Proposals are refused until it ends; it is aborted after an
        election timeout. Returns the target."""
        self._check_input()
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

    def compact(self, index: int, data: bytes) -> Compaction:
        """Record a snapshot of the state machine as of applied `index` and compact the log,
        keeping `trailing_logs` entries behind it (hashicorp/raft TrailingLogs)."""
        self._check_input()
        base = self.log.snapshot.index if self.log.snapshot else 0
        if not base < index <= self.log.applied:
            raise ValueError(f"snapshot index {index} must be in ({base}, applied {self.log.applied}]")
        conf_index, conf = self.log.config_at(index)
        term = self.log.term(index)
        if term is None:
            raise InvariantViolation(f"no term for applied index {index}")
        snap = Snapshot(index, term, conf, conf_index, data)
        compact_to = max(0, min(index, self.log.last_index() - self.cfg.trailing_logs))
        self.log.compact(snap, compact_to)
        return Compaction(snap, max(compact_to, 0))

    def report_unreachable(self, peer: str) -> None:
        """The transport could not deliver to `peer`: stop pipelining to it, probe instead."""
        pr = self.progress.get(peer)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def step(self, m: Message) -> None:
        self._check_input()
        if m.to != self.id or m.frm == self.id:
            self.remote_errors += 1
            return
        if m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE) and not m.transfer and self._in_lease():
                return  # vote lease (thesis §4.2.3): we hear from a live leader; ignore entirely
            if m.type == MsgType.PRE_VOTE or (m.type == MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change terms (thesis §9.6)
            elif m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if m.type in (MsgType.APPEND, MsgType.HEARTBEAT) and (self.cfg.check_quorum or self.cfg.pre_vote):
                # A stale leader (or a lower-term peer's leader) learns our term and steps down,
                # so a stranded higher-term peer cannot block the cluster forever.
                self._send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term))
            elif m.type == MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, self.id, m.frm, self.term, reject=True))
            return
        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    # ------------------------------------------------------------------ outputs

    def has_ready(self) -> bool:
        return bool(
            (self._need_broadcast and self.role == Role.LEADER)
            or self._msgs
            or self._msgs_after
            or self._read_states
            or self._pending_snapshot is not None
            or self.soft_state() != self._prev_soft
            or self.hard_state() != self._prev_hard
            or self.log.unstable_entries()
            or self.log.next_committed(1)
        )

    def ready(self) -> Ready:
        self._check_input()
        if self._need_broadcast and self.role == Role.LEADER:
            self._broadcast_append()
        self._need_broadcast = False
        soft, hard = self.soft_state(), self.hard_state()
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            snapshot=self._pending_snapshot,
            entries=tuple(self.log.unstable_entries()),
            messages=tuple(self._msgs),
            messages_after_persist=tuple(self._msgs_after),
            committed_entries=tuple(self.log.next_committed(self.cfg.max_committed_per_ready)),
            read_states=tuple(self._read_states),
        )
        self._prev_soft, self._prev_hard = soft, hard
        self._msgs, self._msgs_after, self._read_states = [], [], []
        self._pending_snapshot = None
        self._in_ready = rd
        return rd

    def advance(self, rd: Ready) -> None:
        if rd is not self._in_ready:
            raise RuntimeError("advance() with a Ready that is not the current one")
        self._in_ready = None
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
        if self.role == Role.LEADER:
            self._maybe_commit()  # our own entries just became durable: they count now

    # ------------------------------------------------------------------ role changes

    def _reset_randomized_timeout(self) -> None:
        t = self.cfg.election_ticks
        self.randomized_election_timeout = self.rng.randrange(t, 2 * t)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.check_quorum_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.progress = {}
        self.lead_transferee = NONE
        self._need_broadcast = False
        for _, request_id, _, frm in self.pending_reads:
            if frm == self.id:
                self._read_states.append(ReadState(request_id, -1))
        for request_id, frm in self.reads_awaiting_commit:
            if frm == self.id:
                self._read_states.append(ReadState(request_id, -1))
        self.pending_reads = []
        self.reads_awaiting_commit = []

    def _become_follower(self, term: int, leader: str) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

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

    # ------------------------------------------------------------------ all roles

    def _send(self, m: Message) -> None:
        (self._msgs_after if m.type in _AFTER_PERSIST else self._msgs).append(m)

    def _handle_vote_request(self, m: Message) -> None:
        resp = MsgType.VOTE_RESP if m.type == MsgType.VOTE else MsgType.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (m.type == MsgType.PRE_VOTE and m.term > self.term)
        )
        # Only voters of our latest configuration get a vote: a removed server cannot disrupt.
        # A server that has no configuration yet (added, log still empty) votes like any other:
        # refusing would leave a cluster that just grew unable to elect (sim seed 1571332345).
        member = not self.configuration.servers or self.configuration.is_voter(m.frm)
        if can_vote and member and self.log.is_up_to_date(m.index, m.log_term):  # Raft §5.4.1
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
            self._send(Message(MsgType.READ_INDEX_RESP, self.id, m.frm, self.term,
                               request_id=m.request_id, reject=True))

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
            self.election_elapsed = 0
            self.leader = m.frm
            if t == MsgType.APPEND:
                self._handle_append(m)
            elif t == MsgType.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif t == MsgType.TIMEOUT_NOW:
            if self.promotable():
                self._campaign("transfer")  # skips pre-vote and the vote lease (thesis §3.10)
        elif t == MsgType.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.request_id, -1 if m.reject else m.index))
        elif t == MsgType.READ_INDEX:
            self._send(Message(MsgType.READ_INDEX_RESP, self.id, m.frm, self.term,
                               request_id=m.request_id, reject=True))

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


__all__ = ["Compaction", "RaftCore", "RaftError", "Ready"]
