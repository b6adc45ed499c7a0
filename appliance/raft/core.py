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

This module holds the state, the inputs and outputs, the term rules every message passes first
(`step`) and the dispatch by role; the rules themselves live by concept: elections.py,
replication.py, read_index.py and leadership.py, each a mixin over the state core_state.py
declares.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import CoreConfig
from .core_state import RandomSource
from .elections import ElectionRules
from .leadership import LeadershipRules
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
    RaftError,
    ReadState,
    Role,
    Snapshot,
    SoftState,
    encode_configuration,
)
from .progress import Progress, ProgressState
from .read_index import ReadIndexRules
from .replication import ReplicationRules

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


class RaftCore(ElectionRules, ReplicationRules, ReadIndexRules, LeadershipRules):
    """One server's Raft state machine (see the module docstring); the rules live by concept in
    elections.py, replication.py, read_index.py and leadership.py, over core_state.py's state."""

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
        self._read_index(request_id)

    def transfer_leadership(self, target: str | None = None) -> str:
        """Hand leadership to `target` (or the most up-to-date voter): catch it up, then send
        TimeoutNow (thesis §3.10). Proposals are refused until it ends; it is aborted after an
        election timeout. Returns the target."""
        self._check_input()
        return self._transfer(target)

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

    # ------------------------------------------------------------------ role changes (elections.py elects)

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
        self._drop_reads()

    def _become_follower(self, term: int, leader: str) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    # ------------------------------------------------------------------ all roles

    def _send(self, m: Message) -> None:
        # A follower that learned a new term and forwards a READ_INDEX in the same batch would
        # reveal a term it has not persisted (not yet handed out in a Ready): it waits for that
        # Ready's fsync, like the acknowledgements.
        late = m.type in _AFTER_PERSIST or (m.type == MsgType.READ_INDEX and m.term > self._prev_hard.term)
        (self._msgs_after if late else self._msgs).append(m)

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
            self._read_answered(m)
        elif t == MsgType.READ_INDEX:
            self._refuse_read(m)



__all__ = ["Compaction", "RaftCore", "RaftError", "RandomSource", "Ready"]
