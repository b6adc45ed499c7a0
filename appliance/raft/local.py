"""The single-voter log used by `-dev` until replicated Raft lands.

It implements the same propose/apply interface the Raft driver will: `await propose(command)`
appends the command to the log at the next index, the FSM applies it in order, and the caller
gets the FSM's result once it is applied. There is no second write path: every change to the
catalog and KV goes through here. Entries are kept in memory; every `snapshot_threshold`
entries the log takes a snapshot of the store and drops the entries it covers, the way Raft
compacts its log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appliance.state.fsm import FSM, CommandError
from appliance.state.snapshot import snapshot
from appliance.state.store import Store

Listener = Callable[[set[str]], None]


class LocalLog:
    def __init__(self, store: Store, *, address: str, node_id: str, node_name: str,
                 snapshot_threshold: int = 8192) -> None:
        self.store = store
        self.fsm = FSM(store)
        self.address = address
        self.node_id = node_id
        self.node_name = node_name
        self.term = 1
        self.entries: list[tuple[int, dict[str, Any]]] = []
        self.commit_index = store.last_index
        self.snapshot_index = store.last_index
        self.snapshot_data = b""
        self.snapshot_threshold = snapshot_threshold
        self._listeners: list[Listener] = []

    # ------------------------------------------------------------------ the propose/apply interface

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(touched_watch_keys)` after every applied entry."""
        self._listeners.append(listener)

    async def propose(self, command: dict[str, Any]) -> Any:
        """Append, commit and apply one command; return the FSM's result (raise its CommandError)."""
        index = self.commit_index + 1
        self.entries.append((index, command))
        self.commit_index = index
        applied = self.fsm.apply(index, command)
        for listener in self._listeners:
            listener(applied.touched)
        if len(self.entries) >= self.snapshot_threshold:
            self._compact()
        if isinstance(applied.result, CommandError):
            raise applied.result
        return applied.result

    # ------------------------------------------------------------------ status (X-Consul-KnownLeader, status/*)

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def known_leader(self) -> bool:
        return True

    @property
    def last_contact_ms(self) -> int:
        return 0

    def leader_address(self) -> str:
        return self.address

    def peers(self) -> list[str]:
        return [self.address]

    def stats(self) -> dict[str, str]:
        """hashicorp/raft-style Stats(), as /v1/agent/self and `cairn info` show them."""
        last_index = self.commit_index
        return {
            "applied_index": str(last_index),
            "commit_index": str(last_index),
            "fsm_pending": "0",
            "last_contact": "0",
            "last_log_index": str(last_index),
            "last_log_term": str(self.term),
            "last_snapshot_index": str(self.snapshot_index),
            "last_snapshot_term": str(self.term if self.snapshot_index else 0),
            "latest_configuration": f"[{{Suffrage:Voter ID:{self.node_id} Address:{self.address}}}]",
            "latest_configuration_index": "0",
            "num_peers": "0",
            "protocol_version": "3",
            "protocol_version_max": "3",
            "protocol_version_min": "0",
            "snapshot_version_max": "1",
            "snapshot_version_min": "0",
            "state": "Leader",
            "term": str(self.term),
        }

    def _compact(self) -> None:
        self.snapshot_data = snapshot(self.store)
        self.snapshot_index = self.commit_index
        self.entries.clear()
