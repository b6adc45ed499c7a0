"""The Raft driver's metrics hook, recording under hashicorp/raft's and Consul's names.

`RaftTelemetry` is what the agent's recorder gives the Raft driver (and a client agent's replica)
as its `metrics` hook (appliance/raft/metrics.py): `consul.raft.*` (state transitions,
commitTime, apply, fsm.apply, leader.dispatchLog, leader.lastContact, replication and RPC
timings, snapshots), every command proposed to the log (`consul.catalog.register`,
`consul.kvs.apply`, ...), every FSM apply (`consul.fsm.*`) and every log entry the FSM could not
apply (`consul.fsm.apply_error{type}`, cairn's own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.raft.metrics import RaftMetrics
from appliance.telemetry.recorder import Telemetry

# command "Type" -> (RPC timing name, FSM timing name)
_WRITE_NAMES = {
    "register": ("catalog.register", "fsm.register"),
    "deregister": ("catalog.deregister", "fsm.deregister"),
    "kv_set": ("kvs.apply", "fsm.kvs"),
    "kv_delete": ("kvs.apply", "fsm.kvs"),
}


def kv_op(command: Mapping[str, Any]) -> str:
    """Consul's KVS operation name for a KV command (the `op` label of `consul.fsm.kvs`)."""
    if command.get("Type") == "kv_set":
        return "cas" if command.get("Verb") == "cas" else "set"
    if command.get("Recurse"):
        return "delete-tree"
    return "delete-cas" if "Index" in command else "delete"


class RaftTelemetry(RaftMetrics):
    """The Raft driver's metrics hook (appliance/raft/metrics.py says when each call comes),
    recording with the names hashicorp/raft and Consul give these metrics."""

    def __init__(self, tel: Telemetry) -> None:
        self.tel = tel

    def role_changed(self, role: str) -> None:
        self.tel.incr_counter("raft.state." + role)

    def proposal_accepted(self) -> None:
        self.tel.incr_counter("raft.apply")

    def committed(self, elapsed_ms: float, batch: int) -> None:
        self.tel.add_sample("raft.commitTime", elapsed_ms)
        self.tel.set_gauge("raft.commitNumLogs", batch)

    def dispatched(self, elapsed_ms: float, entries: int) -> None:
        self.tel.add_sample("raft.leader.dispatchLog", elapsed_ms)
        self.tel.set_gauge("raft.leader.dispatchNumLogs", entries)

    def follower_contact(self, peer: str, since_ms: float) -> None:
        self.tel.add_sample("raft.leader.lastContact", since_ms)

    def append_rpc(self, peer: str, elapsed_ms: float, entries: int) -> None:
        labels = (("peer_id", peer),)
        self.tel.add_sample("raft.replication.appendEntries.rpc", elapsed_ms, labels)
        self.tel.incr_counter("raft.replication.appendEntries.logs", entries, labels)

    def rpc_handled(self, kind: str, elapsed_ms: float) -> None:
        self.tel.add_sample("raft.rpc." + kind, elapsed_ms)

    def fsm_applied(self, command: dict[str, Any], elapsed_ms: float) -> None:
        self.tel.add_sample("raft.fsm.apply", elapsed_ms)
        kind = str(command.get("Type"))
        name = _WRITE_NAMES.get(kind, ("", "fsm." + kind))[1]
        self.tel.add_sample(name, elapsed_ms, {"op": kv_op(command)} if name == "fsm.kvs" else None)

    def fsm_apply_error(self, command_type: str) -> None:
        self.tel.incr_counter("fsm.apply_error", labels=(("type", command_type),))

    def command_done(self, command: dict[str, Any], elapsed_ms: float) -> None:
        rpc = _WRITE_NAMES.get(str(command.get("Type")), ("",))[0]
        if rpc:
            self.tel.add_sample(rpc, elapsed_ms)

    def snapshot_created(self, elapsed_ms: float) -> None:
        self.tel.add_sample("raft.snapshot.create", elapsed_ms)

    def snapshot_persisted(self, elapsed_ms: float) -> None:
        self.tel.add_sample("raft.snapshot.persist", elapsed_ms)

