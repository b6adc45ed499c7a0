"""The composition root: builds the agent's subsystems from a RuntimeConfig and runs them.

Start order: logging, the state store and its Raft log (the driver in appliance/raft/driver.py: in
-dev a one-voter Raft in memory, on a server the WAL under data_dir; on a client agent a replica of
the store streamed from a server, appliance/client/replica.py), the LAN gossip pool on serf_lan
(appliance/gossip/driver.py; -join/-retry-join go there), on a server the WAN pool on serf_wan
(appliance/federation/pool.py; -join-wan/-retry-join-wan), the leader's reconciliation of gossip
members into the catalog (`serfHealth`, the `consul` service; appliance/reconcile.py), local
services and checks from config files, the anti-entropy syncer, then the HTTP server. `run()` waits
for SIGINT/SIGTERM or `/v1/agent/leave`, and handles SIGHUP as a reload (services, checks, log
level). Task tree and shutdown order: `run()` and appliance/lifecycle.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import signal
import time
from typing import Any
from urllib.parse import quote

from appliance import __version__, logs, sdnotify, seams, telemetry
from appliance.checks.manager import CheckManager, refuse_config_checks
from appliance.client.replica import Replica
from appliance.client.servers import ServerList
from appliance.config.runtime import RuntimeConfig
from appliance.coordinates import CoordinateBatcher, send_coordinates
from appliance.dns.server import DNSServer
from appliance.events import AgentEvents
from appliance.federation.forward import Exchange, Forwarder, ForwardError
from appliance.federation.pool import WanPool, runs_wan_pool
from appliance.gossip.coordinate import Coordinate
from appliance.gossip.driver import JoinError
from appliance.gossip.driver_setup import lan_driver, retry_join
from appliance.gossip.keyring import KeyringError
from appliance.gossip.serf import Member, MemberStatus, SerfEvent
from appliance.http.app import HTTPServer
from appliance.http.context import HTTPContext
from appliance.http.remote_dc import run_local
from appliance.http.render import CONSUL_COMPAT_VERSION, REVISION
from appliance.lifecycle import TASK_STATUS_IGNORED, Lifecycle, TaskStatus, serve_pair
from appliance.local import persist
from appliance.local.definitions import DefinitionError, parse_check_definition, parse_service_definition
from appliance.local.state import LocalState
from appliance.local.sync import StateSyncer
from appliance.raft.autopilot import AutopilotConfig
from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.driver_autopilot import Autopilot
from appliance.raft.messages import Configuration, Server
from appliance.raft.storage import FileStorage, StorageCorrupt
from appliance.raft.transport import RaftTransport
from appliance.reconcile import MemberReconciler
from appliance.rpc.feed import ReplicaFeed
from appliance.state.store import Store
from appliance.watch import WatchHub

# The Consul release whose HTTP API, JSON shapes and CLI output cairn follows. Clients read it
# from node meta `consul-version`, member tag `build` and /v1/agent/self.


EXTENSION_GROUP = "cairn.extensions"
GC_THRESHOLDS = (20_000, 20, 20)  # CPython's default is (700, 10, 10)
LEAVE_TIMEOUT_S = 20.0  # Raft hand-over, WAN then LAN: inside the systemd unit's TimeoutStopSec=30


def load_extensions(api: HTTPContext) -> list[Any]:
    """Mount the packages that build on the agent (metrics exporters, Prometheus SD).

    They depend on `appliance`, never the reverse, so the agent finds them through the
    `cairn.extensions` entry point group: each entry is a `mount(api) -> extension` callable
    given the agent's typed context (appliance/http/context.py), never the agent. An extension has
    `routes` (appliance.http.routes.Route), and may have `async serve(task_status=...)`, run in
    the agent's task tree like a subsystem (appliance/lifecycle.py).
    """
    from importlib.metadata import entry_points

    out = []
    for entry in sorted(entry_points(group=EXTENSION_GROUP), key=lambda e: e.name):
        out.append(entry.load()(api))
    return out


class Agent:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.log = logging.getLogger("agent")
        self.rng = random.Random()
        self.started_at = time.time()
        self.store = Store()
        self.hub = WatchHub()
        self.advertise = config.advertise_addr or config.bind_addr
        if self.advertise in ("0.0.0.0", "::", ""):
            self.advertise = "127.0.0.1"
        self.transport = None  # server RPC: servers other than -dev listen on it (peers and clients)
        if config.server:
            self.consensus = RaftDriver(
                self.store, node_id=config.node_id or config.node_name,
                address=f"{self.advertise}:{config.ports.server}",
                storage=MemoryStorage() if config.dev or not config.data_dir
                else FileStorage(os.path.join(config.data_dir, "raft")),
                config=RaftConfig(raft_multiplier=config.raft_multiplier), rng=self.rng,
                on_fatal=lambda err: self.request_shutdown("raft failure"))
            if not config.dev:
                self.transport = RaftTransport(self.consensus, bind=config.bind_addr, port=config.ports.server,
                                               bootstrap_expect=config.bootstrap_expect)  # peers: gossip
                self.transport.feed = ReplicaFeed(self.consensus, self.store)  # client agents follow it
        else:  # a client agent: a replica streamed from a server, writes forwarded (appliance/client)
            self.servers = ServerList(  # servers are the gossip members tagged role=consul
                datacenter=config.datacenter, join=(), default_port=config.ports.server, rng=self.rng,
                members=lambda: self.gossip.members())
            self.consensus = Replica(self.store, servers=self.servers, node_name=config.node_name,
                                     on_leader=lambda: self.syncer.server_up())
        self.autopilot = None  # servers: membership, autopilot, operator requests (raft/driver_autopilot.py)
        if config.server:
            self.autopilot = Autopilot(self.consensus, defaults=autopilot_defaults(config),
                                       version=CONSUL_COMPAT_VERSION, names=self._node_names_by_id)
            if self.transport is not None:
                self.transport.on_server_seen = self.autopilot.server_seen
        self.consensus.subscribe(self.hub.notify)
        # Every agent is a member of the LAN gossip pool on its serf_lan port (appliance/gossip/).
        self.gossip = lan_driver(config, self.member_tags(), rng=self.rng)
        self.gossip.subscribe(self._on_member)
        # Servers of every datacenter meet in the WAN pool on serf_wan (appliance/federation/pool.py);
        # `?dc=` and `<svc>.service.<dc>.consul` go to the other datacenter over server RPC (forward.py).
        self.wan = WanPool(config, self.member_tags(), self.rng) if runs_wan_pool(config) else None
        if self.wan is not None:
            self.gossip.subscribe(self.wan.on_lan_event)  # Consul's flood join
        self.federation = Forwarder(datacenter=config.datacenter,
                                    local=lambda exchange: run_local(self.http.dispatch, exchange),
                                    rng=self.rng, pool=self.wan, servers=None if config.server else self.servers,
                                    max_query_time_s=config.max_query_time_s,
                                    on_cross_dc=lambda dc: self.telemetry.incr_counter("rpc.cross-dc", 1,
                                                                                       {"datacenter": dc}))
        if self.transport is not None:
            self.transport.dc_requests = self.federation
        self.reconciler: MemberReconciler | None = None  # the leader keeps serfHealth (reconcile.py)
        if config.server:
            self.reconciler = MemberReconciler(
                store=self.store, consensus=self.consensus, members=self.gossip.members, member=self.gossip.member,
                datacenter=config.datacenter, self_name=config.node_name, version=CONSUL_COMPAT_VERSION,
                on_leadership=lambda: self.log.info("New leader elected: payload=%s", self.config.node_name))
            self.gossip.subscribe(self.reconciler.on_event)
        self.exit_code = 0
        self.local = LocalState(config.node_name, config.datacenter, config.check_output_max_size)
        self.events = AgentEvents(config.node_name, self._event_services, notify=self.hub.notify)
        self.events.attach(self.gossip)  # user events travel over the LAN pool (appliance/events.py)
        self.coordinate_batcher = CoordinateBatcher(lambda cmd: self.consensus.propose(cmd))
        self.syncer = StateSyncer(self.store, self.consensus, self.local, self.node_info, rng=self.rng,
                                  cluster_size=self.cluster_size)
        self.check_manager = CheckManager(self)  # runs script/HTTP/TCP/UDP/alias checks
        self.telemetry = telemetry.for_agent(self)  # before extensions: they register formatters on it
        if self.autopilot is not None:
            self.telemetry.add_gauge_source(self.autopilot.gauges)  # consul.autopilot.* on the leader
        telemetry.instrument_gossip(self.telemetry, self.gossip)  # consul.memberlist.*, consul.serf.*
        self.api = self._typed_context()
        self.extensions = load_extensions(self.api)
        self.http = HTTPServer(self.api, [r for ext in self.extensions for r in ext.routes])
        self.dns = DNSServer(self.store, config, rng=self.rng) if config.ports.dns >= 0 else None
        if self.dns is not None:
            telemetry.instrument_dns(self.telemetry, self.dns, config.node_name)  # consul.dns.*_query
            self.dns.fetch_remote = self._dns_remote  # <svc>.service.<dc>.consul
        self._stop = asyncio.Event()
        self._reload_wanted = asyncio.Event()  # SIGHUP
        self.stop_reason = ""
        # API registrations survive restarts when there is a data_dir (never in -dev)
        self.persist_dir = "" if config.dev else config.data_dir
        self._persisted: dict[str, Any] | None = None

    # ------------------------------------------------------------------ identity

    def node_info(self) -> dict[str, Any]:
        cfg = self.config
        meta = {"consul-network-segment": "", "consul-version": CONSUL_COMPAT_VERSION, **cfg.node_meta}
        return {
            "Node": cfg.node_name, "ID": cfg.node_id, "Address": self.advertise, "Datacenter": cfg.datacenter,
            "TaggedAddresses": {"lan": self.advertise, "lan_ipv4": self.advertise,
                                "wan": cfg.advertise_addr_wan or self.advertise,
                                "wan_ipv4": cfg.advertise_addr_wan or self.advertise},
            "NodeMeta": meta,
        }

    def lan_coordinate(self) -> Coordinate:
        """This agent's LAN network coordinate (the origin until gossip has measured anything)."""
        serf = self.gossip.serf
        return serf.coordinate() if serf is not None else Coordinate.origin()

    def _event_services(self) -> list[tuple[str, list[str]]]:
        """(name, tags) of this agent's services for user-event filters (ID too when it differs)."""
        out = []
        for sid, entry in self.local.services.items():
            d = entry.definition
            out.append((d.name, list(d.tags)))
            if sid != d.name:
                out.append((sid, list(d.tags)))
        return out

    def member_tags(self) -> dict[str, str]:
        cfg = self.config
        tags = {"acls": "0", "build": f"{CONSUL_COMPAT_VERSION}:{REVISION}", "dc": cfg.datacenter,
                "id": cfg.node_id, "role": "consul" if cfg.server else "node", "segment": "",
                "vsn": "2", "vsn_max": "3", "vsn_min": "2"}
        if cfg.server:
            tags.update(port=str(cfg.ports.server), raft_vsn="3", wan_join_port=str(cfg.ports.serf_wan),
                        ft_fs="1", ft_si="1")
            if cfg.bootstrap or cfg.dev:
                tags["bootstrap"] = "1"
            elif cfg.bootstrap_expect:
                tags["expect"] = str(cfg.bootstrap_expect)
        return tags

    def cluster_size(self) -> int:
        """LAN members (anti-entropy's aeScale): the gossip pool's, else the catalog's nodes."""
        return len(self.gossip.members())

    def _typed_context(self) -> HTTPContext:
        """What HTTP handlers and extensions see of the agent (appliance/interfaces.py)."""
        consensus = self.consensus
        return HTTPContext(
            config=self.config, store=self.store, hub=self.hub, consensus=consensus, local=self.local,
            control=seams.Control(self.local_changed, self.syncer.sync_now, self.reload, self.leave),
            membership=seams.GossipMembership(self.gossip, self.wan),
            federation=seams.Federation(lambda: self.config, self.federation, self.wan),
            events=self.events, coordinates=seams.Coordinates(self.lan_coordinate, self.coordinate_batcher),
            info=seams.Info(lambda: self.config, self.node_info,
                            lambda: 0 if isinstance(consensus, RaftDriver) else consensus.known_servers()),
            telemetry=self.telemetry, autopilot=self.autopilot,
            raft=consensus if isinstance(consensus, RaftDriver) else None, rng=self.rng, log=self.log)

    # ------------------------------------------------------------------ gossip membership

    def _on_member(self, event: SerfEvent, member: Member | None) -> None:
        """Member events: an alive server of this datacenter is a Raft peer to know (bootstrap_expect)."""
        if member is not None and self.autopilot is not None and member.tags.get("role") == "consul":
            if member.status == MemberStatus.FAILED:  # autopilot's SerfStatus (dead-server cleanup)
                self.autopilot.server_failed(member.tags.get("id") or member.name)
            elif member.status == MemberStatus.LEFT:
                self.autopilot.server_left(member.tags.get("id") or member.name)
            elif member.status == MemberStatus.ALIVE:
                self.autopilot.server_alive(member.tags.get("id") or member.name)
        if member is None or self.transport is None or member.status != MemberStatus.ALIVE:
            return
        tags = member.tags
        if tags.get("role") == "consul" and tags.get("dc") == self.config.datacenter and tags.get("port", "").isdigit():
            host = f"[{member.addr}]" if ":" in member.addr else member.addr
            self.transport.add_server(tags.get("id") or member.name, f"{host}:{tags['port']}")

    async def _join(self, addresses: list[str]) -> None:
        """-join / -retry-join: the LAN pool, retried every retry_interval; exit after retry_max."""
        cfg = self.config
        try:
            await retry_join(self.gossip, addresses, cfg.retry_interval_s, cfg.retry_max)
        except JoinError as err:
            self.log.error('Retry join failed: error="%s"', err)
            self.exit_code = 1
            self.request_shutdown("retry join failed")

    async def _dns_remote(self, dc: str, kind: str, name: str) -> Any:
        """A DNS lookup of another datacenter: its /v1/health/service (or /v1/catalog/node) answer,
        stale as Consul's DNS reads by default; None for a node it does not know."""
        path = ("/v1/health/service/" if kind == "service" else "/v1/catalog/node/") + quote(name, safe="")
        answer = await self.federation.request(dc, Exchange("GET", path, [("stale", "")]))
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise ForwardError(answer.body.decode("utf-8", "replace"))
        return json.loads(answer.body)

    async def _join_wan(self, addresses: list[str]) -> None:
        """-join-wan / -retry-join-wan: the WAN pool, retried every retry_interval_wan."""
        cfg = self.config
        try:
            await self.wan.retry_join(addresses, cfg.retry_interval_wan_s, cfg.retry_max_wan)
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

    # ------------------------------------------------------------------ config-defined services

    def load_config_definitions(self, cfg: RuntimeConfig) -> None:
        services = [parse_service_definition(raw, from_config=True) for raw in cfg.services]
        checks = [parse_check_definition(raw, from_config=True) for raw in cfg.checks]
        refuse_config_checks(cfg, services, checks)  # before anything changes: a refusal keeps the old set
        self.local.replace_config_definitions(services, checks, time.monotonic())

    async def reload(self) -> None:
        from appliance.config import rebuild

        new = rebuild(self.config)
        self.load_config_definitions(new)
        logs.set_level(new.log_level)
        self.config = self.api.config = new
        if self.dns is not None:
            self.dns.configure(new)  # dns_config, recursors; listeners stay
        self.local_changed()
        await self.syncer.sync_now()
        self.log.info("Reloaded configuration")

    def local_changed(self) -> None:
        if self.persist_dir:
            self._persisted = persist.save(self.persist_dir, self.local, self._persisted)
        self.hub.notify(("local",))
        self.syncer.trigger()
        self.check_manager.reconcile()

    def request_shutdown(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop.set()

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Two task levels: the fabric (RPC, Raft or replica, gossip), the services on it. Shutdown
        stops the services newest first (HTTP first), leaves (bounded, shielded), stops the fabric."""
        cfg = self.config
        self.load_config_definitions(cfg)
        # -dev and -bootstrap: a configuration of this one voter, written once into empty storage
        if cfg.server:
            self.consensus.open(Configuration((Server(self.consensus.node_id, self.consensus.address),))
                                if cfg.dev or cfg.bootstrap else None)
        loop = asyncio.get_running_loop()
        async with Lifecycle(on_failure=self._subsystem_failed) as fabric:
            await self._start_fabric(fabric)
            async with Lifecycle(on_failure=self._subsystem_failed) as services:
                await self._start_services(services)
                for sig, name in ((signal.SIGINT, "interrupt"), (signal.SIGTERM, "terminated")):
                    loop.add_signal_handler(sig, self.request_shutdown, name)
                loop.add_signal_handler(signal.SIGHUP, self._reload_wanted.set)
                for warning in getattr(cfg, "config_warnings", ()):
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
        if self.transport is not None:
            await fabric.start("rpc", serve_pair, self.transport.start, self.transport.stop)
        if isinstance(self.consensus, RaftDriver):
            await fabric.start("raft", self.consensus.serve, stop_timeout_s=30.0)
        else:
            await fabric.start("replica", serve_pair, self.consensus.start, self.consensus.stop)
        await fabric.start("gossip-lan", self.gossip.serve)  # UDP and TCP on serf_lan
        if self.wan is not None:
            await fabric.start("gossip-wan", self.wan.serve)  # UDP and TCP on serf_wan
            for member in self.gossip.members():  # servers the LAN pool already knows: flood join
                self.wan.on_lan_event(None, member)

    async def _start_services(self, services: Lifecycle) -> None:
        cfg = self.config
        if self.autopilot is not None:
            await services.start("autopilot", self.autopilot.serve)
        if self.persist_dir:
            for warning in persist.restore(self.persist_dir, self.local, time.monotonic()):
                self.log.warning(warning)
        # a client agent has neither: anti-entropy (below) registers it once a server streams to it
        if cfg.server and self.transport is None:
            await self.syncer.sync_now()  # registers this node first ("Synced node info")
            await self.reconciler.reconcile_all()  # as leader: serfHealth and the `consul` service
        elif cfg.server:  # a cluster may have no leader yet: register once there is one
            services.start_soon("register", self._register_when_led())
        if self.reconciler is not None:
            await services.start("reconcile-members", self.reconciler.serve)
        join = list(dict.fromkeys(cfg.start_join + cfg.retry_join))
        if join:
            services.start_soon("retry-join", self._join(join))
        join_wan = list(dict.fromkeys(cfg.start_join_wan + cfg.retry_join_wan))
        if join_wan and self.wan is not None:
            services.start_soon("retry-join-wan", self._join_wan(join_wan))
        await services.start("anti-entropy", self.syncer.serve)
        await services.start("checks", self.check_manager.serve, stop_timeout_s=12.0)  # kills scripts
        await services.start("coordinate-batch", self.coordinate_batcher.serve)
        services.start_soon("coordinate-sync", send_coordinates(
            lambda: self.config.node_name, self.lan_coordinate, self.cluster_size, self.coordinate_batcher,
            self.rng))
        for ext in self.extensions:
            if hasattr(ext, "serve"):
                await services.start(f"extension:{type(ext).__module__}", ext.serve)
        if self.dns is not None:
            await services.start("dns", self.dns.serve, cfg.listen_addrs("dns"), cfg.ports.dns)
        await services.start("http", self.http.serve, list(cfg.client_addrs), cfg.ports.http,
                             stop_timeout_s=12.0)  # requests in flight get 10 s
        await services.start("reload", self._reloads)

    async def _leave_gracefully(self) -> None:
        """Hand over Raft leadership and leave its configuration, then the WAN pool, then LAN."""
        if self.autopilot is not None and self.transport is not None:
            await self.autopilot.leave()
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

    def _node_names_by_id(self) -> dict[str, str]:
        return {(n.get("ID") or "").lower(): n["Node"] for n in self.store.nodes.values() if n.get("ID")}

    async def _register_when_led(self) -> None:
        while True:
            try:
                await self.syncer.sync_now()
                return
            except Exception as err:  # noqa: BLE001 - no leader yet: retry
                self.log.debug("registering with the cluster: %s", err)
                await asyncio.sleep(1.0)

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


def banner(cfg: RuntimeConfig) -> str:
    rows = [
        ("Version", f"'{__version__}' (Consul API {CONSUL_COMPAT_VERSION})"),
        ("Node ID", f"'{cfg.node_id}'"),
        ("Node name", f"'{cfg.node_name}'"),
        ("Datacenter", f"'{cfg.datacenter}' (Segment: '{'<all>' if cfg.server else ''}')"),
        ("Server", f"{str(cfg.server).lower()} (Bootstrap: {str(cfg.bootstrap).lower()})"),
        ("Client Addr", f"[{' '.join(cfg.client_addrs)}] (HTTP: {cfg.ports.http}, HTTPS: {cfg.ports.https}, "
                        f"gRPC: {cfg.ports.grpc}, gRPC-TLS: {cfg.ports.grpc_tls}, DNS: {cfg.ports.dns})"),
        ("Cluster Addr", f"{cfg.advertise_addr or cfg.bind_addr} (LAN: {cfg.ports.serf_lan}, "
                         f"WAN: {cfg.ports.serf_wan})"),
        ("Gossip Encryption", str(bool(cfg.encrypt)).lower()),
        ("ACL Enabled", "false"),
        ("ACL Default Policy", "allow"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["==> Starting Cairn agent..."]
    lines += [f"{k.rjust(width + 4)}: {v}" for k, v in rows]
    lines += ["", "==> Log data will now stream in as it occurs:", ""]
    return "\n".join(lines)


def autopilot_defaults(cfg: RuntimeConfig) -> AutopilotConfig:
    a = cfg.autopilot
    return AutopilotConfig(cleanup_dead_servers=a.cleanup_dead_servers,
                           last_contact_threshold_s=a.last_contact_threshold_s,
                           max_trailing_logs=a.max_trailing_logs, min_quorum=a.min_quorum,
                           server_stabilization_time_s=a.server_stabilization_time_s)


def run(cfg: RuntimeConfig) -> int:
    """Run the agent until it is stopped; return the process exit code."""
    logs.setup(cfg.log_level, cfg.log_json)
    if not cfg.log_json:
        print(banner(cfg), flush=True)
    if cfg.pid_file:
        with open(cfg.pid_file, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    try:
        agent = Agent(cfg)
        asyncio.run(agent.run())
        if agent.consensus.fatal is not None:
            return 1  # fail-stop: the Raft log or its storage broke (logged)
        return agent.exit_code  # 1 when retry_join gave up
    except (OSError, DefinitionError, StorageCorrupt, KeyringError) as err:
        logging.getLogger("agent").error("Error starting agent: %s", err)
        return 1
    finally:
        if cfg.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(cfg.pid_file)
