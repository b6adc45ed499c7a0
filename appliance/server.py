"""What a server adds to an agent: the Raft log, the server RPC port, autopilot, the leader's
session timers and its reconciliation of gossip members into the catalog.

`ServerRole` builds them from the RuntimeConfig: the Raft driver (appliance/raft/driver/; in
-dev and without a data_dir a one-voter log in memory, else the WAL under data_dir), on servers
other than -dev the RPC listener (appliance/raft/transport.py; peers, client agents following the
store through appliance/rpc/feed.py, other datacenters' requests), autopilot
(appliance/raft/driver_autopilot.py), the sessions' leader side (appliance/sessions/leader.py: TTL
timers, renewals, lock-delays) and the member reconciler (appliance/reconcile.py:
`serfHealth`, the `consul` service). It listens to the LAN pool: a server of this datacenter that
is alive becomes a peer the RPC layer can dial (bootstrap_expect), and autopilot hears of servers
that fail or leave. With ACLs on, the writes client agents forward are authorized with the token
each carries before they are proposed (`forwarded_writes`). The composition root
(appliance/agent.py) starts the parts in its task tree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from appliance import CONSUL_COMPAT_VERSION
from appliance.acl.commands import ForwardedWrites
from appliance.acl.remote import RemoteTokens
from appliance.config.identity import advertise_address
from appliance.config.runtime import RuntimeConfig
from appliance.gossip.driver import GossipDriver
from appliance.gossip.serf import Member, MemberStatus, SerfEvent
from appliance.local.sync import StateSyncer
from appliance.raft.autopilot import AutopilotConfig
from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.driver_autopilot import Autopilot
from appliance.raft.messages import Configuration, Server
from appliance.raft.storage import FileStorage
from appliance.raft.transport import RaftTransport
from appliance.reconcile import MemberReconciler
from appliance.rpc.feed import ReplicaFeed
from appliance.sessions.leader import SessionLeader
from appliance.state.store import Store

log = logging.getLogger("agent")


class ServerRole:
    def __init__(self, config: RuntimeConfig, store: Store, gossip: GossipDriver, *, rng: random.Random,
                 on_fatal: Callable[[BaseException], None]) -> None:
        self.config = config
        self.store = store
        address = f"{advertise_address(config)}:{config.ports.server}"
        self.raft = RaftDriver(
            store, node_id=config.node_id or config.node_name, address=address,
            storage=MemoryStorage() if config.dev or not config.data_dir
            else FileStorage(os.path.join(config.data_dir, "raft")),
            config=RaftConfig(raft_multiplier=config.raft_multiplier, snapshot_threshold=config.raft_snapshot_threshold,
                              trailing_logs=config.raft_trailing_logs), rng=rng, on_fatal=on_fatal)
        self.sessions = SessionLeader(self.raft)  # TTL timers, renewals, lock-delays (on the leader)
        self.autopilot = Autopilot(self.raft, defaults=autopilot_defaults(config), version=CONSUL_COMPAT_VERSION,
                                   names=self._node_names_by_id)
        # server RPC: servers other than -dev listen on it (peers and client agents; peers: gossip)
        self.transport: RaftTransport | None = None
        if not config.dev:
            self.transport = RaftTransport(self.raft, bind=config.bind_addr, port=config.ports.server,
                                           bootstrap_expect=config.bootstrap_expect)
            self.transport.feed = ReplicaFeed(self.raft, store,  # client agents follow it
                                              authorize=forwarded_writes(config, store))
            self.transport.on_server_seen = self.autopilot.server_seen
        self.reconciler = MemberReconciler(
            store=store, consensus=self.raft, members=gossip.members, member=gossip.member,
            datacenter=config.datacenter, self_name=config.node_name, version=CONSUL_COMPAT_VERSION,
            on_leadership=lambda: log.info("New leader elected: payload=%s", config.node_name))
        gossip.subscribe(self.reconciler.on_event)
        gossip.subscribe(self.on_member)

    def open_log(self) -> None:
        """Replay the log; -dev and -bootstrap write a configuration of this one voter into empty
        storage first."""
        cfg = self.config
        self.raft.open(Configuration((Server(self.raft.node_id, self.raft.address),))
                       if cfg.dev or cfg.bootstrap else None)

    def on_member(self, event: SerfEvent, member: Member | None) -> None:
        """LAN member events: autopilot's view of the servers (dead-server cleanup), and an alive
        server of this datacenter is a Raft peer the RPC layer can dial."""
        if member is None or member.tags.get("role") != "consul":
            return
        server_id = member.tags.get("id") or member.name
        if member.status == MemberStatus.FAILED:
            self.autopilot.server_failed(server_id)
        elif member.status == MemberStatus.LEFT:
            self.autopilot.server_left(server_id)
        elif member.status == MemberStatus.ALIVE:
            self.autopilot.server_alive(server_id)
        tags = member.tags
        if (self.transport is None or member.status != MemberStatus.ALIVE
                or tags.get("dc") != self.config.datacenter or not tags.get("port", "").isdigit()):
            return
        host = f"[{member.addr}]" if ":" in member.addr else member.addr
        self.transport.add_server(server_id, f"{host}:{tags['port']}")

    async def register_node(self, syncer: StateSyncer) -> None:
        """Register this server in the catalog: at once on a one-server cluster (-dev, no RPC
        port), which leads from the start; else once the cluster has a leader, retrying."""
        if self.transport is None:
            await syncer.sync_now()  # registers this node first ("Synced node info")
            await self.reconciler.reconcile_all()  # as leader: serfHealth and the `consul` service
            return
        while True:
            try:
                await syncer.sync_now()
                return
            except Exception as err:  # noqa: BLE001 - no leader yet: retry
                log.debug("registering with the cluster: %s", err)
                await asyncio.sleep(1.0)

    async def leave(self) -> None:
        """Graceful leave: hand over leadership and leave the Raft configuration (not in -dev)."""
        if self.transport is not None:
            await self.autopilot.leave()

    def _node_names_by_id(self) -> dict[str, str]:
        return {(n.get("ID") or "").lower(): n["Node"] for n in self.store.nodes.values() if n.get("ID")}


def forwarded_writes(cfg: RuntimeConfig, store: Store) -> Callable[[dict[str, Any], str], None] | None:
    """With ACLs on, the check of the writes client agents forward (appliance/acl/commands.py):
    the token each carries, resolved in this server's tables, must allow the write."""
    if not cfg.acl.enabled:
        return None
    writes = ForwardedWrites(cfg.datacenter, cfg.acl.default_policy == "allow")
    return lambda command, secret: writes.check(store, secret, command, time.time())


def remote_writes(cfg: RuntimeConfig, store: Store,
                  remote: RemoteTokens) -> Callable[[dict[str, Any], str], Awaitable[None]]:
    """A secondary datacenter without token replication: the check of a forwarded write whose
    token this server does not hold, with the token as the primary resolves it."""
    writes = ForwardedWrites(cfg.datacenter, cfg.acl.default_policy == "allow")

    async def check(command: dict[str, Any], secret: str) -> None:
        ident = await remote.identity(secret or "anonymous", store.acl, time.time())
        writes.check(store, secret, command, time.time(), ident)
    return check


def autopilot_defaults(cfg: RuntimeConfig) -> AutopilotConfig:
    a = cfg.autopilot
    return AutopilotConfig(cleanup_dead_servers=a.cleanup_dead_servers,
                           last_contact_threshold_s=a.last_contact_threshold_s,
                           max_trailing_logs=a.max_trailing_logs, min_quorum=a.min_quorum,
                           server_stabilization_time_s=a.server_stabilization_time_s)
