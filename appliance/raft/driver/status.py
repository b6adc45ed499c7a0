"""What a Raft server says about itself: its last contact with the leader, the servers it knows,
the Raft configuration as `/v1/operator/raft/configuration` shows it, and hashicorp/raft's
`Stats()` as `/v1/agent/self` and `cairn info` show them.

All of it reads the driver's state (base.py) and the core; nothing here changes either.
"""

from __future__ import annotations

import time
from typing import Any

from appliance.config.durations import format_duration_ns

from ..messages import Role, Server
from .base import DriverBase

_ROLE_NAMES = {Role.FOLLOWER: "Follower", Role.PRE_CANDIDATE: "Candidate", Role.CANDIDATE: "Candidate",
               Role.LEADER: "Leader"}


class StatusMixin(DriverBase):
    """The status calls of `RaftDriver`."""

    @property
    def last_contact_ms(self) -> int:
        if self.is_leader:
            return 0
        return int((time.monotonic() - self.timing.last_contact) * 1000)

    def last_contact(self) -> str:
        """hashicorp/raft's `last_contact` stat: "0" on the leader, "never", or a Go duration."""
        if self.is_leader:
            return "0"
        if not self.timing.heard_leader:
            return "never"
        return format_duration_ns(max(0, int((time.monotonic() - self.timing.last_contact) * 1e9)))

    def peer_last_contact_s(self, peer: str) -> float | None:
        """On the leader: seconds since `peer` last answered it (None if it never did)."""
        at = self.timing.peer_contact.get(peer)
        return None if at is None else max(0.0, time.monotonic() - at)

    def server_address(self, node_id: str) -> str:
        server = self.core.configuration.server(node_id) if self.core else None
        return server.address if server is not None and server.address else ""

    def leader_address(self) -> str:
        return self.server_address(self.leader_id) if self.leader_id else ""

    def servers(self) -> tuple[Server, ...]:
        return self.core.configuration.servers if self.core else ()

    def configuration(self) -> dict[str, Any]:
        """The latest Raft configuration, as /v1/operator/raft/configuration shows it."""
        core = self.opened_core
        index, conf = core.log.latest_config()
        servers = []
        for s in conf.servers:
            if s.id == self.node_id:
                last = core.log.last_index()
            else:
                pr = core.progress.get(s.id) if core.role == Role.LEADER else None
                last = pr.match if pr is not None else 0
            servers.append({"ID": s.id, "Address": s.address, "Leader": s.id == core.leader,
                            "Voter": s.voter, "ProtocolVersion": "3", "LastIndex": last})
        return {"Servers": servers, "Index": index}

    def peers(self) -> list[str]:
        return [s.address for s in self.servers() if s.voter and s.address]

    def stats(self) -> dict[str, str]:
        """hashicorp/raft-style Stats(), as /v1/agent/self and `cairn info` show them."""
        core = self.opened_core
        raft_log = core.log
        snap = raft_log.snapshot
        conf_index, conf = raft_log.latest_config()
        servers = " ".join(f"{{Suffrage:{s.suffrage} ID:{s.id} Address:{s.address}}}" for s in conf.servers)
        return {
            "applied_index": str(self.applied_index),
            "commit_index": str(raft_log.committed),
            "fsm_pending": str(max(0, raft_log.committed - self.applied_index)),
            "last_contact": self.last_contact(),
            "last_log_index": str(raft_log.last_index()),
            "last_log_term": str(raft_log.last_term()),
            "last_snapshot_index": str(snap.index if snap else 0),
            "last_snapshot_term": str(snap.term if snap else 0),
            "latest_configuration": f"[{servers}]",
            "latest_configuration_index": str(conf_index),
            "num_peers": str(max(0, len(conf.voters) - (1 if conf.is_voter(self.node_id) else 0))),
            "protocol_version": "3",
            "protocol_version_max": "3",
            "protocol_version_min": "0",
            "snapshot_version_max": "1",
            "snapshot_version_min": "0",
            "state": _ROLE_NAMES[core.role],
            "term": str(core.term),
        }
