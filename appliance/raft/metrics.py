"""What the Raft driver reports for metrics: one hook object, called at fixed points.

How it works
------------
The driver (driver.py) owns the clock: it reads `time.monotonic()` around the work it wants
timed and calls a method of its `metrics` hook with the result in milliseconds. The hook only
records; it never reads a clock and never does I/O, so a test drives it with plain numbers.
`RaftMetrics` below records nothing (the driver's default, and what the simulator and unit tests
of the driver get); `appliance.telemetry.RaftTelemetry` records into the agent's recorder with
the names hashicorp/raft gives them under Consul (reference/prometheus.md §6):

| hook call | where the driver calls it | Consul metric |
| --- | --- | --- |
| `role_changed(role)` | a Ready reports a new role (and once at start: follower) | `raft.state.{leader,candidate,follower}` counters |
| `proposal_accepted()` | the leader's core accepted a proposal | `raft.apply` counter |
| `committed(ms, n)` | a proposal of this leader was applied: time since it was proposed; n entries applied in that Ready | `raft.commitTime` summary, `raft.commitNumLogs` gauge |
| `dispatched(ms, n)` | the leader made n new entries durable (one fsync) | `raft.leader.dispatchLog` summary, `raft.leader.dispatchNumLogs` gauge |
| `follower_contact(peer, ms)` | every leader lease round, per follower: time since it last answered | `raft.leader.lastContact` summary |
| `append_rpc(peer, ms, n)` | the leader got the answer to an AppendEntries of n entries | `raft.replication.appendEntries.rpc{peer_id}` summary, `...logs{peer_id}` counter |
| `rpc_handled(kind, ms)` | a follower answered an AppendEntries, RequestVote or InstallSnapshot (after its fsync) | `raft.rpc.appendEntries`, `raft.rpc.requestVote`, `raft.rpc.installSnapshot` |
| `fsm_applied(command, ms)` | one command applied to the FSM | `raft.fsm.apply`, and `fsm.register`, `fsm.kvs{op}`, ... per command type |
| `fsm_apply_error(command_type)` | the FSM could not apply an entry (not a command, unknown type, malformed, a handler failed); the entry is skipped. Also called by a client agent's replica (appliance/client/replica.py) | `fsm.apply_error{type}` counter (cairn's own; `type` is a known command type, `unknown` or `undecodable`) |
| `command_done(command, ms)` | `propose()` returned (forwarding to the leader included) | `catalog.register`, `kvs.apply`, ... |
| `snapshot_created(ms)`, `snapshot_persisted(ms)` | a local snapshot was taken / made durable | `raft.snapshot.create`, `raft.snapshot.persist` |

The index, term and peer gauges (`raft.last_index`, `raft.commit_index`, `raft.applied_index`,
`raft.term`, `raft.peers`) are read from `RaftDriver.stats()` whenever metrics are read, not
pushed through this hook.
"""

from __future__ import annotations

from typing import Any

# RequestVote, AppendEntries, InstallSnapshot: the `kind` values of rpc_handled
RPC_KINDS = ("appendEntries", "requestVote", "installSnapshot")
ROLES = ("leader", "candidate", "follower")


class RaftMetrics:
    """The hook the driver calls; this base records nothing (see the module docstring)."""

    def role_changed(self, role: str) -> None:
        """`role` is one of ROLES (a pre-candidate counts as a candidate, as in hashicorp/raft)."""

    def proposal_accepted(self) -> None:
        pass

    def committed(self, elapsed_ms: float, batch: int) -> None:
        pass

    def dispatched(self, elapsed_ms: float, entries: int) -> None:
        pass

    def follower_contact(self, peer: str, since_ms: float) -> None:
        pass

    def append_rpc(self, peer: str, elapsed_ms: float, entries: int) -> None:
        pass

    def rpc_handled(self, kind: str, elapsed_ms: float) -> None:
        """`kind` is one of RPC_KINDS."""

    def fsm_applied(self, command: dict[str, Any], elapsed_ms: float) -> None:
        pass

    def fsm_apply_error(self, command_type: str) -> None:
        """`command_type` is bounded: a known command type, "unknown" or "undecodable"."""

    def command_done(self, command: dict[str, Any], elapsed_ms: float) -> None:
        pass

    def snapshot_created(self, elapsed_ms: float) -> None:
        pass

    def snapshot_persisted(self, elapsed_ms: float) -> None:
        pass
