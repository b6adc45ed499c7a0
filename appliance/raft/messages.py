"""Raft's data types: log entries, messages between servers, configurations, persisted state.

How it works
------------
Everything that crosses the core's boundary is a frozen dataclass defined here, so the core,
the storage layer, the transport codec and the simulator all speak the same types:

* `Entry`: one log entry (index, term, type, data). `data` is opaque bytes for commands; for a
  configuration entry it is the msgpack encoding of a `Configuration` (`encode_configuration`).
* `Message`: one RPC or RPC response. A single shape with optional fields (the way etcd-raft's
  `raftpb.Message` does it) keeps the codec to one table: what each field means depends on `type`,
  documented on `MsgType`.
* `HardState`: what must be durable before anything that depends on it leaves the server
  (term, vote, commit). `Snapshot`: a compacted prefix of the log with the FSM state and the
  configuration as of its last index.
* `Configuration`: the servers and their suffrage (hashicorp/raft: Voter, Nonvoter), plus the
  single-server changes (`ConfChange`) that derive one configuration from the previous one.

Wire enums are append-only: never renumber a member, only add new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import msgpack

NONE = ""  # "no node": no vote, no known leader


class RaftError(Exception):
    """Base class of the errors a caller of the core can handle."""


class NotLeader(RaftError):
    """This server is not the leader; `leader` is the id of the one it knows of ("" if none)."""

    def __init__(self, leader: str = NONE) -> None:
        super().__init__(f"not the leader (known leader: {leader or 'none'})")
        self.leader = leader


class OutcomeUnknown(NotLeader):
    """The proposal's index was covered by a snapshot installed from the leader before its entry
    was applied here: it may or may not have committed. A `NotLeader` for callers that do not
    tell the two apart."""


class ProposalDropped(RaftError):
    """The leader refuses new entries for now (leadership transfer under way, or it is being
    removed). Retry after a short wait; the entry was not appended."""


class ConfChangeRefused(RaftError):
    """A membership change cannot be made now or at all (one is already pending, the leader has
    not committed an entry of its term yet, or the change makes no sense)."""


class TransferRefused(RaftError):
    """A leadership transfer cannot start (no such voter, the target is this server)."""


class InvariantViolation(AssertionError):
    """A broken invariant inside the core: a bug, never a peer's or a caller's fault."""


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class EntryType(IntEnum):
    """Append-only. Numbers follow hashicorp/raft's LogType where one exists."""

    COMMAND = 0
    NOOP = 1
    CONFIGURATION = 5


class MsgType(IntEnum):
    """Append-only.

    APPEND           leader -> follower. index/log_term: the entry before `entries`; commit: the
                     leader's commit index.
    APPEND_RESP      follower -> leader. Success: index = last index this RPC verified. Reject:
                     index = the rejected `index`, reject_hint/log_term = where the leader should
                     probe next (the follower's last entry at or below `index` whose term is at
                     most the request's log_term).
    VOTE, PRE_VOTE   candidate -> voter. term: the term it is (or would be) campaigning in;
                     index/log_term: its last entry; transfer: sent because of TimeoutNow.
    *_VOTE_RESP      voter -> candidate. reject: not granted.
    HEARTBEAT        leader -> follower. commit: min(follower's match, commit) so a follower never
                     commits an entry the leader has not verified it holds; context: read round.
    HEARTBEAT_RESP   follower -> leader, echoing context.
    SNAPSHOT         leader -> follower (InstallSnapshot), snapshot: the whole snapshot. The
                     follower answers with an APPEND_RESP for the snapshot's index.
    TIMEOUT_NOW      leader -> transfer target: campaign now, skipping pre-vote.
    READ_INDEX       follower -> leader: run a read-index round for request_id.
    READ_INDEX_RESP  leader -> follower: index = the read index (reject: could not serve).
    """

    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10
    READ_INDEX = 11
    READ_INDEX_RESP = 12


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.COMMAND
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Server:
    id: str
    address: str = ""
    voter: bool = True

    @property
    def suffrage(self) -> str:
        return "Voter" if self.voter else "Nonvoter"


@dataclass(frozen=True, slots=True)
class Configuration:
    """The servers of the cluster, sorted by id (so iteration order is deterministic)."""

    servers: tuple[Server, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.servers, key=lambda s: s.id))
        ids = [s.id for s in ordered]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate server id in configuration: {ids}")
        object.__setattr__(self, "servers", ordered)

    @classmethod
    def of(cls, *voters: str, nonvoters: tuple[str, ...] = ()) -> Configuration:
        return cls(tuple(Server(v) for v in voters) + tuple(Server(n, voter=False) for n in nonvoters))

    @property
    def voters(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.servers if s.voter)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.servers)

    def server(self, node_id: str) -> Server | None:
        for s in self.servers:
            if s.id == node_id:
                return s
        return None

    def is_voter(self, node_id: str) -> bool:
        s = self.server(node_id)
        return s is not None and s.voter

    def describe(self) -> str:
        return "[" + " ".join(s.id if s.voter else s.id + "(nonvoter)" for s in self.servers) + "]"


class ConfChangeType(IntEnum):
    """Append-only. hashicorp/raft's AddVoter, AddNonvoter, DemoteVoter, RemoveServer."""

    ADD_VOTER = 0
    ADD_NONVOTER = 1
    DEMOTE_VOTER = 2
    REMOVE_SERVER = 3


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    id: str
    address: str = ""

    def apply_to(self, conf: Configuration) -> Configuration:
        """The configuration after this single-server change; ValueError if it changes nothing."""
        current = conf.server(self.id)
        others = tuple(s for s in conf.servers if s.id != self.id)
        if self.type == ConfChangeType.ADD_VOTER:
            if current is not None and current.voter:
                raise ValueError(f"{self.id} is already a voter")
            address = self.address or (current.address if current else "")
            return Configuration(others + (Server(self.id, address, True),))
        if self.type == ConfChangeType.ADD_NONVOTER:
            if current is not None:
                raise ValueError(f"{self.id} is already in the configuration")
            return Configuration(others + (Server(self.id, self.address, False),))
        if self.type == ConfChangeType.DEMOTE_VOTER:
            if current is None or not current.voter:
                raise ValueError(f"{self.id} is not a voter")
            return Configuration(others + (Server(self.id, current.address, False),))
        if current is None:
            raise ValueError(f"{self.id} is not in the configuration")
        return Configuration(others)


CONFIGURATION_FORMAT = 1


def encode_configuration(conf: Configuration) -> bytes:
    body = [[s.id, s.address, s.voter] for s in conf.servers]
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return bytes([CONFIGURATION_FORMAT]) + packed


def decode_configuration(data: bytes) -> Configuration:
    if not data or data[0] != CONFIGURATION_FORMAT:
        raise ValueError(f"unknown configuration format {data[:1]!r}")
    body = msgpack.unpackb(data[1:], raw=False)  # its errors are ValueErrors
    if type(body) is not list or not all(type(s) is list and len(s) == 3 for s in body):
        raise ValueError("configuration is not a list of [id, address, voter]")
    return Configuration(tuple(Server(str(i), str(a), bool(v)) for i, a, v in body))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A compacted log prefix: FSM state `data` as of `index` (whose entry had `term`), and the
    configuration in force at `index` (appended at `configuration_index`)."""

    index: int
    term: int
    configuration: Configuration
    configuration_index: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Message:
    type: MsgType
    frm: str
    to: str
    term: int
    index: int = 0
    log_term: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: int = 0
    request_id: str = ""
    transfer: bool = False
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class HardState:
    """Must be durable before any message that reveals it is sent (Raft §5.1, Figure 2)."""

    term: int = 0
    vote: str = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile, informational: the role and the leader this server knows of."""

    role: Role = Role.FOLLOWER
    leader: str = NONE


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read-index request released: serve `request_id` once applied index >= `index`.
    `index` is -1 if the read cannot be served here (leadership lost); retry elsewhere."""

    request_id: str
    index: int


@dataclass(frozen=True)
class InitialState:
    """What storage hands the core on start: the durable hard state, the latest snapshot (or
    None) and the log entries after it, in order."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()


def bootstrap_state(configuration: Configuration) -> InitialState:
    """The state every server of a new cluster starts from (hashicorp/raft BootstrapCluster):
    the configuration as entry 1 of term 1. Identical on every server, so Log Matching holds."""
    entry = Entry(1, 1, EntryType.CONFIGURATION, encode_configuration(configuration))
    return InitialState(HardState(term=1), None, (entry,))
