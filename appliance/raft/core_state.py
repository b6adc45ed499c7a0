"""The state of a Raft core, declared once for the rules that share it.

`RaftCore` (core.py) builds this state and takes the inputs and outputs; its rules live by concept
in their own modules, each a mixin over the state declared here: elections.py (timeouts, pre-vote,
votes, becoming leader), replication.py (both sides of AppendEntries, heartbeats and
InstallSnapshot, and the commit rule), read_index.py (thesis §6.4 on every role) and
leadership.py (what only a leader does each tick: heartbeats, check-quorum, leadership transfer,
and how it dispatches messages). The declarations exist for the type checker only; at run time the
attributes are the core's and the methods come from the module that owns them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import CoreConfig
    from .log import RaftLog
    from .messages import Configuration, EntryType, Message, ReadState, Role, Snapshot
    from .progress import Progress


class RandomSource(Protocol):
    def randrange(self, start: int, stop: int) -> int: ...


class CoreState:
    """What every rule of the core may read and change (see the module docstring)."""

    if TYPE_CHECKING:
        id: str
        cfg: CoreConfig
        rng: RandomSource
        log: RaftLog
        term: int
        vote: str
        role: Role
        leader: str
        votes: dict[str, bool]
        progress: dict[str, Progress]
        election_elapsed: int
        heartbeat_elapsed: int
        check_quorum_elapsed: int
        randomized_election_timeout: int
        lead_transferee: str
        transfer_elapsed: int
        read_seq: int
        pending_reads: list[tuple[int, str, int, str]]  # (round, request id, index, from)
        reads_awaiting_commit: list[tuple[str, str]]  # (request id, from)
        remote_errors: int
        _read_states: list[ReadState]
        _pending_snapshot: Snapshot | None
        _need_broadcast: bool

        @property
        def configuration(self) -> Configuration: ...

        def voters(self) -> tuple[str, ...]: ...

        def promotable(self) -> bool: ...

        def _send(self, m: Message) -> None: ...

        def _reset(self, term: int) -> None: ...

        def _become_follower(self, term: int, leader: str) -> None: ...

        def _step_follower(self, m: Message) -> None: ...

        # elections.py
        def _reset_randomized_timeout(self) -> None: ...

        def _campaign(self, kind: str) -> None: ...

        # replication.py
        def _append(self, kind: EntryType, data: bytes) -> tuple[int, int]: ...

        def _sync_progress(self) -> None: ...

        def _maybe_commit(self) -> bool: ...

        def _broadcast_append(self) -> None: ...

        def _broadcast_heartbeat(self) -> None: ...

        def _send_append(self, to: str, send_if_empty: bool = True) -> bool: ...

        def _handle_append_resp(self, m: Message, pr: Progress) -> None: ...

        def _handle_heartbeat_resp(self, m: Message, pr: Progress) -> None: ...

        # read_index.py
        def _leader_read(self, request_id: str, frm: str) -> None: ...

        def _advance_reads(self) -> None: ...

        def _reads_after_commit(self) -> None: ...

        def _refuse_read(self, m: Message) -> None: ...
