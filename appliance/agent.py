"""The composition root: builds the agent's subsystems from a RuntimeConfig and runs them.

What is built: the state store and its watch hub; the LAN gossip pool on serf_lan
(appliance/gossip/; -join/-retry-join go there); on a server the `ServerRole` (appliance/server.py:
the Raft log, the RPC port, autopilot, the leader's reconciliation of members into the catalog),
on a client agent a replica of the store streamed from a server (appliance/client/); on a server
the WAN pool on serf_wan (appliance/federation/pool.py; -join-wan/-retry-join-wan); the forwarder
to other datacenters; this agent's own services and checks (`LocalAgent`, appliance/local/agent.py:
state, check runners, anti-entropy); user events and coordinates; telemetry; the extensions; DNS
and HTTP; the `watches` block's plans (appliance/watches/), run against that HTTP API.
Subsystems receive the interfaces they need (appliance/interfaces.py), never the Agent. What only
a server runs (the server role, auto_encrypt's signing side, the Connect CA) is imported in the
branch that builds it, so a client agent never loads it (docs/internals/performance.md, "Client
footprint").

`run()` starts them in two levels of one task tree (appliance/lifecycle.py), waits for
SIGINT/SIGTERM or `/v1/agent/leave`, and handles SIGHUP as a reload (services, checks, watches,
log level). Task tree and shutdown order: docs/internals/architecture.md.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import random
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from appliance import logs, sdnotify, seams, telemetry
from appliance.client.replica import Replica
from appliance.client.servers import ServerList
from appliance.config.identity import member_tags, node_info
from appliance.config.runtime import RuntimeConfig
from appliance.coordinates import CoordinateBatcher, send_coordinates
from appliance.dns.server import DNSServer
from appliance.events import AgentEvents
from appliance.federation.forward import Forwarder
from appliance.federation.pool import WanPool, runs_wan_pool
from appliance.gossip.coordinate import Coordinate
from appliance.gossip.driver import JoinError
from appliance.gossip.pool_setup import lan_driver, retry_join
from appliance.http.app import HTTPServer
from appliance.http.authz import acl_agent
from appliance.http.context import HTTPContext, load_extensions
from appliance.http.handlers import query
from appliance.http.remote_dc import run_local
from appliance.http.routes import ui_content_routes
from appliance.lifecycle import TASK_STATUS_IGNORED, Lifecycle, TaskStatus
from appliance.local.agent import LocalAgent
from appliance.local.sync import ACL_BLOCKED_COUNTERS
from appliance.rexec import RemoteExec
from appliance.state import watchkeys
from appliance.state.store import Store
from appliance.tls import context as tls
from appliance.tls.context import AutoCert, install_auto
from appliance.watch import WatchHub
from appliance.watches.runner import WatchService

if TYPE_CHECKING:
    from appliance.raft.driver import RaftDriver
    from appliance.rpc.autoencrypt import AutoEncrypt
    from appliance.server import ServerRole

GC_THRESHOLDS = (20_000, 20, 20)  # CPython's default is (700, 10, 10)
LEAVE_TIMEOUT_S = 20.0  # Raft hand-over, WAN then LAN: inside the systemd unit's TimeoutStopSec=30


class Agent:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.log = logging.getLogger("agent")
        tls.install(config)  # certificates for HTTPS and server RPC (appliance/tls/context.py)
        self.rng = rng = random.Random()
        self.store = store = Store()
        self.hub = WatchHub()
        # Every agent is a member of the LAN gossip pool on its serf_lan port (appliance/gossip/).
        self.gossip = lan_driver(config, member_tags(config), rng=rng)
        self.server: ServerRole | None = None
        self.servers: ServerList | None = None  # a client agent's view of the servers
        self.replica: Replica | None = None  # a client agent's copy of the store
        consensus: RaftDriver | Replica
        if config.server:
            from appliance.server import ServerRole  # Raft, server RPC, the replica feed: servers only

            self.server = ServerRole(config, store, self.gossip, rng=rng,
                                     on_fatal=lambda err: self.request_shutdown("raft failure"))
            consensus = self.server.raft
        else:  # a client agent: a replica streamed from a server, writes forwarded (appliance/client)
            self.servers = ServerList(  # servers are the gossip members tagged role=consul
                datacenter=config.datacenter, join=(), default_port=config.ports.server, rng=rng,
                members=self.gossip.members)
            consensus = self.replica = Replica(store, servers=self.servers, node_name=config.node_name,
                                               on_leader=lambda: self.local.syncer.server_up())
        self.consensus = consensus
        consensus.subscribe(self.hub.notify)
        # Servers of every datacenter meet in the WAN pool on serf_wan (appliance/federation/pool.py);
        # `?dc=` and `<svc>.service.<dc>.consul` go to the other datacenter over server RPC (forward.py).
        self.wan = WanPool(config, member_tags(config), rng) if runs_wan_pool(config) else None
        if self.wan is not None:
            self.gossip.subscribe(self.wan.on_lan_event)  # Consul's flood join
        self.federation = Forwarder(datacenter=config.datacenter,
                                    local=lambda exchange: run_local(self.http.dispatch, exchange),
                                    rng=rng, pool=self.wan, servers=self.servers,
                                    max_query_time_s=config.max_query_time_s,
                                    on_cross_dc=lambda dc: self.telemetry.incr_counter("rpc.cross-dc", 1,
                                                                                       {"datacenter": dc}))
        if self.server is not None and self.server.transport is not None:
            self.server.transport.dc_requests = self.federation
        self.exit_code = 0
        self.local = LocalAgent(lambda: self.config, store=store, hub=self.hub, consensus=consensus,
                                node_info=lambda: node_info(self.config), cluster_size=self.cluster_size, rng=rng)
        self.events = AgentEvents(config.node_name, self.local.event_services, notify=self.hub.notify)
        self.events.attach(self.gossip)  # user events travel over the LAN pool (appliance/events.py)
        self.rexec = RemoteExec(config.node_name, store, consensus, lambda: not self.config.disable_remote_exec)
        self.events.on_remote_exec = self.rexec.handle  # `cairn exec` jobs, when enabled (appliance/rexec.py)
        self.rexec.token = lambda: self.local.syncer.tokens.node()  # its KV writes carry the agent token
        self.coordinate_batcher = CoordinateBatcher(lambda cmd: self.consensus.propose(cmd))
        raft = self.server.raft if self.server is not None else None
        self.telemetry = telemetry.build(config.telemetry, consensus=consensus, hub=self.hub, store=store,
                                         local=self.local.state, raft=raft)  # before extensions
        if self.server is not None:
            self.telemetry.add_gauge_source(self.server.autopilot.gauges)  # consul.autopilot.* on the leader
            self.server.sessions.telemetry = self.telemetry  # consul.session_ttl.*
        for counter in ACL_BLOCKED_COUNTERS:  # anti-entropy writes the servers' ACLs refuse, 0 from the start
            self.telemetry.incr_counter(counter, 0)
        self.local.syncer.on_blocked = self.telemetry.incr_counter
        telemetry.instrument_gossip(self.telemetry, self.gossip)  # consul.memberlist.*, consul.serf.*
        self.api = self._typed_context()
        self.extensions = load_extensions(self.api)
        self.http = HTTPServer(self.api, [*ui_content_routes(config.ui_content_path),
                                          *(r for ext in self.extensions for r in ext.routes)])
        self.dns = DNSServer(store, config, rng=rng) if config.ports.dns >= 0 else None
        if self.dns is not None:
            telemetry.instrument_dns(self.telemetry, self.dns, config.node_name)  # consul.dns.*_query
            self.dns.fetch_remote = self.federation.lookup  # <svc>.service.<dc>.consul
            self.dns.run_query = functools.partial(query.run_for_dns, self.http.dispatch)  # <q>.query.consul
            self.dns.agent_tokens = lambda kind: acl_agent(self.api).tokens.get(kind)  # set-agent-token dns
        if config.acl.enabled:  # anti-entropy and coordinates write with the agent's tokens
            self.local.syncer.tokens.agent_tokens = lambda kind: acl_agent(self.api).tokens.get(kind)
            if self.dns is not None and acl_agent(self.api).server_tokens is not None:  # a client agent
                self.dns.acl.remote = acl_agent(self.api).dns_authorizer  # its DNS token: a server resolves
                acl_agent(self.api).dns_changed = self.dns._clear_caches
            remote = acl_agent(self.api).remote  # a secondary without token replication
            if remote is not None and self.server is not None and self.server.transport is not None:
                from appliance.server import remote_writes

                self.server.transport.feed.authorize_remote = remote_writes(config, store, remote)
        self.auto_encrypt: AutoEncrypt | None = None  # auto_encrypt (appliance/rpc/autoencrypt.py)
        if self.server is not None and self.server.transport is not None:  # AutoEncrypt.Sign, allowed or refused
            from appliance.rpc.autoencrypt import SignHandler
            from appliance.rpc.frames import Kind

            self.server.transport.listener.serve_connections(Kind.AUTO_ENCRYPT, SignHandler(self._auto_encrypt_sign))
        elif config.tls.auto_encrypt_tls:  # auto_encrypt and its cryptography: loaded only when used
            from appliance.rpc.autoencrypt import AutoEncrypt

            self.auto_encrypt = AutoEncrypt(
                lambda: self.config, token=self.local.syncer.tokens.node,
                servers=lambda: self.servers.known() if self.servers is not None else [],
                roots=self._connect_roots, wait_roots=lambda t: self.hub.wait((watchkeys.CONNECT_CA,), timeout=t),
                rng=rng)
        self._stop = asyncio.Event()
        self._reload_wanted = asyncio.Event()  # SIGHUP
        self.watches = WatchService(config)  # the `watches` block; refuses a bad one
        self.stop_reason = ""

    def _connect_roots(self) -> str:
        from appliance.connect.authority import roots_pem  # the CA's cryptography: auto_encrypt only

        return roots_pem(self.store.connect)

    async def _auto_encrypt_sign(self, csr: str, token: str, datacenter: str) -> dict[str, Any]:
        from appliance.http.handlers.connect_ca import auto_encrypt_sign  # a server's, with the CA

        reply = await auto_encrypt_sign(self.api, csr, token, datacenter)
        install_auto(AutoCert(roots=(self._connect_roots(),)))  # before the agent dials with its certificate
        return reply

    async def _first_certificate(self, auto: AutoEncrypt) -> bool:
        """auto_encrypt: the agent's certificate before anything else (servers require it),
        retried until a server signs it or the agent is told to stop (False)."""
        loop = asyncio.get_running_loop()
        for sig, name in ((signal.SIGINT, "interrupt"), (signal.SIGTERM, "terminated")):
            loop.add_signal_handler(sig, self.request_shutdown, name)
        fetch, stop = asyncio.ensure_future(auto.initial()), asyncio.ensure_future(self._stop.wait())
        await asyncio.wait((fetch, stop), return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not fetch.done():
            fetch.cancel()
            self.log.info('interrupted during retrieval of auto-encrypt certificates: err="context canceled"')
            self.log.info("shutdown complete")
            return False
        fetch.result()
        return True

    def lan_coordinate(self) -> Coordinate:
        """This agent's LAN network coordinate (the origin until gossip has measured anything)."""
        return self.gossip.coordinate() or Coordinate.origin()

    def cluster_size(self) -> int:
        """LAN members (anti-entropy's aeScale)."""
        return len(self.gossip.members())

    def _typed_context(self) -> HTTPContext:
        """What HTTP handlers and extensions see of the agent (appliance/interfaces.py)."""
        server = self.server
        return HTTPContext(
            config=self.config, store=self.store, hub=self.hub, consensus=self.consensus, local=self.local.state,
            control=seams.Control(self.local.changed, self.local.syncer.sync_now, self.reload, self.leave,
                                  self.local.full_sync_soon),
            membership=seams.GossipMembership(self.gossip, self.wan),
            federation=seams.Federation(lambda: self.config, self.federation, self.wan),
            events=self.events, coordinates=seams.Coordinates(self.lan_coordinate, self.coordinate_batcher),
            info=seams.Info(lambda: self.config, lambda: node_info(self.config),
                            lambda: 0 if self.replica is None else self.replica.known_servers()),
            telemetry=self.telemetry, autopilot=server.autopilot if server is not None else None,
            raft=server.raft if server is not None else None, rng=self.rng, log=self.log)

    async def _join(self, join: Callable[[], Awaitable[int]]) -> None:
        """-retry-join and -retry-join-wan: retried every retry_interval; exit after retry_max."""
        try:
            await join()
        except JoinError as err:
            self.log.error('Retry join failed: error="%s"', err)
            self.exit_code = 1
            self.request_shutdown("retry join failed")

    async def leave(self) -> None:
        """PUT /v1/agent/leave: leave the gossip pools gracefully (WAN first), then shut down."""
        if self.wan is not None:
            await self.wan.leave()
        await self.gossip.leave()
        self.request_shutdown("leave")

    async def reload(self) -> None:
        from appliance.config import rebuild

        new = rebuild(self.config)
        await self.watches.reload(new)  # a bad `watches` block stops the reload here
        tls.install(new)  # new connections get the new certificates; a bad file fails the reload
        self.local.load_config_definitions(new)
        logs.set_level(new.log_level)
        self.config = self.api.config = new
        if self.dns is not None:
            self.dns.configure(new)  # dns_config, recursors; listeners stay
        self.local.changed()
        await self.local.syncer.sync_now()
        self.log.info("Reloaded configuration")

    def request_shutdown(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop.set()

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Two task levels: the fabric (RPC, Raft or replica, gossip), the services on it. Shutdown
        stops the services newest first (HTTP first), leaves (bounded, shielded), stops the fabric."""
        cfg = self.config
        self.local.load_config_definitions(cfg)
        if self.server is not None:
            self.server.open_log()
        loop = asyncio.get_running_loop()
        if self.auto_encrypt is not None and not await self._first_certificate(self.auto_encrypt):
            return  # stopped before a server signed
        async with Lifecycle(on_failure=self._subsystem_failed) as fabric:
            await self._start_fabric(fabric)
            async with Lifecycle(on_failure=self._subsystem_failed) as services:
                await self._start_services(services)
                for sig, name in ((signal.SIGINT, "interrupt"), (signal.SIGTERM, "terminated")):
                    loop.add_signal_handler(sig, self.request_shutdown, name)
                loop.add_signal_handler(signal.SIGHUP, self._reload_wanted.set)
                for warning in cfg.config_warnings:
                    self.log.warning(warning)
                # What is built by now lives as long as the process: keep it out of the
                # collector's scans, and collect less often (bench/raft's p99).
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLDS)
                self.log.info("Consul agent running!")
                sdnotify.ready(f"Serving HTTP on port {cfg.ports.http}, DNS on port {cfg.ports.dns}")
                try:
                    await self._stop.wait()
                finally:
                    self.log.info("Caught: signal=%s", self.stop_reason or "interrupt")
                    self.log.info("Gracefully shutting down agent...")
                    sdnotify.stopping()
            if self._leaving():  # the services are down, the fabric still runs
                await fabric.shielded(self._leave_gracefully(), LEAVE_TIMEOUT_S)
        if self.stop_reason == "leave":
            self.log.info("Graceful leave complete")
        self.log.info("shutdown complete")

    async def _start_fabric(self, fabric: Lifecycle) -> None:
        """Server RPC, the Raft log (replayed before anything reads it) or a replica, gossip."""
        if self.server is not None:
            transport = self.server.transport
            if transport is not None:
                await fabric.start("rpc", transport.serve)
            await fabric.start("raft", self.server.raft.serve, stop_timeout_s=30.0)
        elif self.replica is not None:
            await fabric.start("replica", self.replica.serve)
        await fabric.start("gossip-lan", self.gossip.serve)  # UDP and TCP on serf_lan
        if self.wan is not None:
            await fabric.start("gossip-wan", self.wan.serve)  # UDP and TCP on serf_wan
            for member in self.gossip.members():  # servers the LAN pool already knows: flood join
                self.wan.on_lan_event(None, member)

    async def _start_services(self, services: Lifecycle) -> None:
        cfg, server = self.config, self.server
        if server is not None:
            await services.start("autopilot", server.autopilot.serve)
            await services.start("session-ttl", server.sessions.serve)
            if cfg.acl.enabled:  # built-ins, initial management token, expired tokens (appliance/acl_leader.py)
                from appliance.acl_leader import AclLeader
                primary = cfg.datacenter == cfg.primary_datacenter  # the initial management token: primary only
                await services.start("acl-leader", AclLeader(
                    server.raft, self.store, cfg.acl.tokens.get("initial_management", "") if primary else "").serve)
                if not primary:  # a secondary copies the primary's ACL objects (appliance/acl_replication.py)
                    from appliance.acl_replication import AclReplicator
                    tokens = acl_agent(self.api).tokens
                    replicator = acl_agent(self.api).replication = AclReplicator(
                        datacenter=cfg.datacenter, primary=cfg.primary_datacenter,
                        tokens=cfg.acl.enable_token_replication, raft=server.raft, store=self.store,
                        request=self.federation.request, replication_token=lambda: tokens.get("replication"))
                    await services.start("acl-replication", replicator.serve)
        self.local.restore()
        # a client agent registers once a server streams to it (anti-entropy, below)
        if server is not None:
            register = server.register_node(self.local.syncer)
            if server.transport is None:
                await register  # -dev: leads from the start
            else:  # a cluster may have no leader yet
                services.start_soon("register", register)
            await services.start("reconcile-members", server.reconciler.serve)
            if cfg.config_entries_bootstrap:  # config_entries { bootstrap }: the ones not written yet
                from appliance.http.handlers.config import bootstrap as bootstrap_entries
                services.start_soon("config-entries", bootstrap_entries(
                    server.raft, self.store, cfg.config_entries_bootstrap, self.log))
        join = list(dict.fromkeys(cfg.start_join + cfg.retry_join))
        if join:
            services.start_soon("retry-join", self._join(
                lambda: retry_join(self.gossip, join, cfg.retry_interval_s, cfg.retry_max)))
        join_wan = list(dict.fromkeys(cfg.start_join_wan + cfg.retry_join_wan))
        wan = self.wan
        if join_wan and wan is not None:
            services.start_soon("retry-join-wan", self._join(
                lambda: wan.retry_join(join_wan, cfg.retry_interval_wan_s, cfg.retry_max_wan)))
        if self.auto_encrypt is not None:
            await services.start("auto-encrypt", self.auto_encrypt.serve)  # renewals, root rotations
        elif server is not None and cfg.tls.auto_encrypt_allow_tls:  # client certificates from the Connect CA
            from appliance.rpc.autoencrypt import trust_roots

            await services.start("auto-encrypt-roots", trust_roots, self._connect_roots,
                                 lambda: self.hub.wait((watchkeys.CONNECT_CA,), timeout=60.0))
        await services.start("anti-entropy", self.local.syncer.serve)
        await services.start("checks", self.local.checks.serve, stop_timeout_s=12.0)  # kills scripts
        await services.start("coordinate-batch", self.coordinate_batcher.serve)
        services.start_soon("coordinate-sync", send_coordinates(
            lambda: self.config.node_name, self.lan_coordinate, self.cluster_size, self.coordinate_batcher,
            self.rng, token=self.local.syncer.tokens.node))
        for ext in self.extensions:
            if hasattr(ext, "serve"):
                await services.start(f"extension:{type(ext).__module__}", ext.serve)
        if self.dns is not None:
            await services.start("dns", self.dns.serve, cfg.listen_addrs("dns"), cfg.ports.dns)
        await services.start("http", self.http.serve, list(cfg.client_addrs), cfg.ports.http,
                             stop_timeout_s=12.0)  # requests in flight get 10 s
        await services.start("watches", self.watches.serve)  # against the HTTP API just started
        await services.start("reload", self._reloads)

    async def _leave_gracefully(self) -> None:
        """Hand over Raft leadership and leave its configuration, then the WAN pool, then LAN."""
        if self.server is not None:
            await self.server.leave()
        if self.wan is not None:
            await self.wan.leave()
        await self.gossip.leave()

    def _subsystem_failed(self, name: str, err: BaseException) -> None:
        self.exit_code = 1  # a started subsystem broke (logged with its traceback)
        self.request_shutdown(f"{name} failed")

    def _leaving(self) -> bool:
        """Consul's rules: `leave` always; SIGTERM with leave_on_terminate; SIGINT unless
        skip_leave_on_interrupt (servers skip by default)."""
        reason, cfg = self.stop_reason, self.config
        return (reason == "leave" or (reason == "terminated" and cfg.leave_on_terminate)
                or (reason in ("interrupt", "") and not cfg.skip_leave_on_interrupt))

    async def _reloads(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:  # SIGHUP: one reload at a time, signals during one coalesce
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            self.log.info("Caught: signal=hangup")
            sdnotify.reloading()
            try:
                await self.reload()
            except Exception as err:  # noqa: BLE001 - a bad file keeps the running config
                self.log.error("Failed to reload configs: error=%s", err)
            finally:
                sdnotify.ready("Serving (configuration reloaded)")
