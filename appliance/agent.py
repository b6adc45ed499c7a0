"""The composition root: builds the agent's subsystems from a RuntimeConfig and runs them.

Start order: logging, the state store and its Raft log (the driver in appliance/raft/driver.py: in
-dev a one-voter Raft in memory, on a server the WAL under data_dir), the leader's own catalog entries
(this node, `serfHealth`, the `consul` service), local services and checks from config files,
the anti-entropy syncer, then the HTTP server. `run()` waits for SIGINT/SIGTERM or
`/v1/agent/leave`, and handles SIGHUP as a reload (services, checks, log level). Shutdown stops
accepting requests first, then cancels the background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import random
import signal
import sys
import time
from typing import Any

from appliance import __version__, logs, sdnotify, telemetry
from appliance.checks.manager import CheckManager, refuse_config_checks
from appliance.config.runtime import RuntimeConfig
from appliance.dns.server import DNSServer
from appliance.http.app import HTTPServer
from appliance.local import persist
from appliance.local.definitions import DefinitionError, parse_check_definition, parse_service_definition
from appliance.local.state import LocalState
from appliance.local.sync import StateSyncer
from appliance.raft.config import RaftConfig
from appliance.raft.driver import MemoryStorage, RaftDriver
from appliance.raft.messages import Configuration, Server
from appliance.raft.storage import FileStorage, StorageCorrupt
from appliance.raft.transport import RaftTransport
from appliance.state.store import Store
from appliance.watch import WatchHub

# The Consul release whose HTTP API, JSON shapes and CLI output cairn follows. Clients read it
# from node meta `consul-version`, member tag `build` and /v1/agent/self.
CONSUL_COMPAT_VERSION = "1.17.0"
REVISION = "cairn" + __version__.replace(".", "")


EXTENSION_GROUP = "cairn.extensions"


def load_extensions(agent: Agent) -> list[Any]:
    """Mount the packages that build on the agent (metrics exporters, Prometheus SD).

    They depend on `appliance`, never the reverse, so the agent finds them through the
    `cairn.extensions` entry point group: each entry is a `mount(agent) -> extension` callable.
    An extension may have `routes` [(method, path, handler)], and `async start()`/`stop()`.
    """
    from importlib.metadata import entry_points

    out = []
    for entry in sorted(entry_points(group=EXTENSION_GROUP), key=lambda e: e.name):
        out.append(entry.load()(agent))
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
        self.consensus = RaftDriver(
            self.store, node_id=config.node_id or config.node_name, address=f"{self.advertise}:{config.ports.server}",
            storage=MemoryStorage() if config.dev or not config.data_dir
            else FileStorage(os.path.join(config.data_dir, "raft")),
            config=RaftConfig(raft_multiplier=config.raft_multiplier), rng=self.rng,
            on_fatal=lambda err: self.request_shutdown("raft failure"))
        self.transport = None  # server RPC: only servers that form a cluster with others listen on it
        if config.server and not config.dev and config.bootstrap_expect > 1:
            self.transport = RaftTransport(self.consensus, bind=config.bind_addr, port=config.ports.server,
                                           join=config.start_join + config.retry_join,
                                           bootstrap_expect=config.bootstrap_expect)
        self.consensus.subscribe(self.hub.notify)
        self.local = LocalState(config.node_name, config.datacenter, config.check_output_max_size)
        self.syncer = StateSyncer(self.store, self.consensus, self.local, self.node_info, rng=self.rng)
        self.check_manager = CheckManager(self)  # runs script/HTTP/TCP/UDP/alias checks
        self.telemetry = telemetry.for_agent(self)  # before extensions: they register formatters on it
        self.extensions = load_extensions(self)
        self.http = HTTPServer(self, [r for ext in self.extensions for r in getattr(ext, "routes", ())])
        self.dns = DNSServer(self.store, config, rng=self.rng) if config.ports.dns >= 0 else None
        if self.dns is not None:
            telemetry.instrument_dns(self.telemetry, self.dns, config.node_name)  # consul.dns.*_query
        self._stop = asyncio.Event()
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

    def members(self, wan: bool = False) -> list[dict[str, Any]]:
        cfg = self.config
        name = f"{cfg.node_name}.{cfg.datacenter}" if wan else cfg.node_name
        return [{
            "Name": name, "Addr": self.advertise, "Port": cfg.ports.serf_wan if wan else cfg.ports.serf_lan,
            "Tags": self.member_tags(), "Status": 1, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
            "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
        }]

    def version_info(self) -> dict[str, Any]:
        return {"SHA": REVISION, "BuildDate": "", "HumanVersion": CONSUL_COMPAT_VERSION, "FIPS": "",
                "CairnVersion": __version__}

    def self_info(self) -> dict[str, Any]:
        cfg = self.config
        local = self.local
        node_info = self.node_info()
        ttl = sum(1 for c in local.checks.values() if c.definition.kind == "ttl")
        return {
            "Config": {"Datacenter": cfg.datacenter, "PrimaryDatacenter": cfg.primary_datacenter,
                       "NodeName": cfg.node_name, "NodeID": cfg.node_id, "Revision": REVISION,
                       "Server": cfg.server, "Version": CONSUL_COMPAT_VERSION, "BuildDate": ""},
            "DebugConfig": {"Bootstrap": cfg.bootstrap, "BootstrapExpect": cfg.bootstrap_expect,
                            "ClientAddrs": list(cfg.client_addrs), "DNSPort": cfg.ports.dns,
                            "HTTPPort": cfg.ports.http, "DataDir": cfg.data_dir, "DevMode": cfg.dev,
                            "ServerPort": cfg.ports.server, "SerfPortLAN": cfg.ports.serf_lan,
                            "SerfPortWAN": cfg.ports.serf_wan, "LogLevel": cfg.log_level.upper(),
                            "EnableScriptChecks": cfg.enable_script_checks,
                            "EnableLocalScriptChecks": cfg.enable_local_script_checks,
                            "DNSDomain": cfg.domain, "UIConfig": {"Enabled": cfg.ui_enabled}},
            "Coord": {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
            "Member": self.members()[0],
            "Stats": {
                "agent": {"check_monitors": "0", "check_ttls": str(ttl), "checks": str(len(local.checks)),
                          "services": str(len(local.services))},
                "build": {"prerelease": "", "revision": REVISION, "version": CONSUL_COMPAT_VERSION},
                "consul": {"acl": "disabled", "bootstrap": str(cfg.bootstrap or cfg.dev).lower(),
                           "known_datacenters": "1",
                           "leader": str(self.consensus.is_leader).lower(),
                           "leader_addr": self.consensus.leader_address(), "server": str(cfg.server).lower()},
                "raft": self.consensus.stats(),
                "runtime": {"arch": platform.machine(), "cpu_count": str(os.cpu_count() or 1),
                            "goroutines": str(len(asyncio.all_tasks())), "max_procs": str(os.cpu_count() or 1),
                            "os": sys.platform, "version": "python" + platform.python_version()},
                "serf_lan": {"coordinate_resets": "0", "encrypted": "false", "event_queue": "0",
                             "event_time": "1", "failed": "0", "health_score": "0", "intent_queue": "0",
                             "left": "0", "member_time": "1", "members": "1", "query_queue": "0",
                             "query_time": "1"},
            },
            "Meta": node_info["NodeMeta"],
        }

    # ------------------------------------------------------------------ leader duties (single server)

    async def reconcile_self(self) -> None:
        """What Consul's leader does for each alive member: node, serfHealth, and `consul` for servers."""
        info = self.node_info()
        await self.consensus.propose({
            "Type": "register", **info, "SkipNodeUpdate": True,
            "Checks": [{"Node": info["Node"], "CheckID": "serfHealth", "Name": "Serf Health Status",
                        "Status": "passing", "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "",
                        "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "", "Timeout": "",
                        "ExposedPort": 0, "Definition": {}}],
        })
        if self.config.server:
            cfg = self.config
            await self.consensus.propose({
                "Type": "register", **info, "SkipNodeUpdate": True,
                "Service": {"ID": "consul", "Service": "consul", "Tags": [], "Address": "",
                            "Meta": {"non_voter": "false", "raft_version": "3", "read_replica": "false",
                                     "serf_protocol_current": "2", "serf_protocol_max": "5",
                                     "serf_protocol_min": "1", "version": CONSUL_COMPAT_VERSION},
                            "Port": cfg.ports.server, "Weights": {"Passing": 1, "Warning": 1},
                            "EnableTagOverride": False, "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                            "Connect": {}, "PeerName": ""},
                "Checks": [],
            })
        self.log.info("New leader elected: payload=%s", self.config.node_name)

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
        self.config = new
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
        cfg = self.config
        self.load_config_definitions(cfg)
        # -dev and -bootstrap: a configuration of this one voter, written once into empty storage
        self.consensus.open(Configuration((Server(self.consensus.node_id, self.consensus.address),))
                            if cfg.dev or cfg.bootstrap else None)
        if self.transport is not None:
            await self.transport.start()
        await self.consensus.start()  # replays the log into the store before anything reads it
        if self.persist_dir:
            for warning in persist.restore(self.persist_dir, self.local, time.monotonic()):
                self.log.warning(warning)
        tasks = []
        if self.transport is None:
            await self.syncer.sync_now()  # registers this node first ("Synced node info")
            await self.reconcile_self()
        else:  # a cluster may have no leader yet: register once there is one
            tasks.append(asyncio.create_task(self._register_when_led(), name="register"))
        tasks.append(asyncio.create_task(self.syncer.run(), name="anti-entropy"))
        tasks.append(asyncio.create_task(self.check_manager.run(), name="checks"))
        for ext in self.extensions:
            if hasattr(ext, "start"):
                await ext.start()
        if self.dns is not None:
            await self.dns.start(cfg.listen_addrs("dns"), cfg.ports.dns)
        await self.http.start(list(cfg.client_addrs), cfg.ports.http)
        loop = asyncio.get_running_loop()
        for sig, name in ((signal.SIGINT, "interrupt"), (signal.SIGTERM, "terminated")):
            loop.add_signal_handler(sig, self.request_shutdown, name)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload_on_signal()))
        for warning in getattr(cfg, "config_warnings", ()):
            self.log.warning(warning)
        self.log.info("Consul agent running!")
        sdnotify.ready(f"Serving HTTP on port {cfg.ports.http}, DNS on port {cfg.ports.dns}")  # Type=notify
        try:
            await self._stop.wait()
        finally:
            self.log.info("Caught: signal=%s", self.stop_reason or "interrupt")
            self.log.info("Gracefully shutting down agent...")
            sdnotify.stopping()
            await self.http.stop()
            if self.dns is not None:
                await self.dns.stop()
            for ext in reversed(self.extensions):
                if hasattr(ext, "stop"):
                    await ext.stop()
            await self.check_manager.stop()  # kills running check scripts with their process groups
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.consensus.stop()
            if self.transport is not None:
                await self.transport.stop()
            if self.stop_reason == "leave":
                self.log.info("Graceful leave complete")
            self.log.info("shutdown complete")

    async def _register_when_led(self) -> None:
        while True:
            try:
                await self.syncer.sync_now()
                await self.reconcile_self()
                return
            except Exception as err:  # noqa: BLE001 - no leader yet: retry
                self.log.debug("registering with the cluster: %s", err)
                await asyncio.sleep(1.0)

    async def _reload_on_signal(self) -> None:
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


def unsupported_mode(cfg: RuntimeConfig) -> str:
    """Modes that need the replicated log or gossip, which this build does not have yet."""
    if not cfg.server:
        return ("client agents (server = false) need gossip and server RPC, which cairn does not have yet; "
                "run a server with -bootstrap or use -dev")
    if not cfg.dev and not cfg.bootstrap and cfg.bootstrap_expect < 2:
        return ("a server needs -bootstrap or -bootstrap-expect N (adding a server to a running cluster "
                "is not there yet)")
    return ""


def run(cfg: RuntimeConfig) -> int:
    """Run the agent until it is stopped; return the process exit code."""
    problem = unsupported_mode(cfg)
    if problem:
        sys.stderr.write(f"==> {problem}\n")
        return 1
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
    except (OSError, DefinitionError, StorageCorrupt) as err:
        logging.getLogger("agent").error("Error starting agent: %s", err)
        return 1
    finally:
        if cfg.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(cfg.pid_file)
    return 0
