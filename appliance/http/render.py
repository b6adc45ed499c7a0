"""Consul's JSON shapes of the agent itself: /v1/agent/self, /v1/agent/members, /v1/agent/version.

Rendered here, in the HTTP layer, from the typed interfaces of appliance/interfaces.py (the agent
only wires them).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from typing import TYPE_CHECKING, Any

from appliance import CONSUL_COMPAT_VERSION, REVISION, __version__

if TYPE_CHECKING:
    from appliance.gossip.serf import Member
    from appliance.http.context import HTTPContext


def version_info() -> dict[str, Any]:
    return {"SHA": REVISION, "BuildDate": "", "HumanVersion": CONSUL_COMPAT_VERSION, "FIPS": "",
            "CairnVersion": __version__}


def member_json(member: Member) -> dict[str, Any]:
    """A gossip member as /v1/agent/members shows it (Consul's api.AgentMember)."""
    return {"Name": member.name, "Addr": member.addr, "Port": member.port, "Tags": dict(member.tags),
            "Status": int(member.status), "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
            "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}


def self_info(ctx: HTTPContext) -> dict[str, Any]:
    """/v1/agent/self (Consul's agent/agent_endpoint.go AgentSelf)."""
    cfg = ctx.config
    local = ctx.local
    node_info = ctx.info.node_info()
    ttl = sum(1 for c in local.checks.values() if c.definition.kind == "ttl")
    wan_stats = ctx.membership.wan_stats()
    acl = "enabled" if cfg.acl.enabled else "disabled"
    consensus = ctx.consensus
    info: dict[str, Any] = {
        "Config": {"Datacenter": cfg.datacenter, "PrimaryDatacenter": cfg.primary_datacenter,
                   "NodeName": cfg.node_name, "NodeID": cfg.node_id, "Revision": REVISION,
                   "Server": cfg.server, "Version": CONSUL_COMPAT_VERSION, "BuildDate": "",
                   # read by Patroni (adjust_ttl) after an "Invalid Session TTL"; Consul 0.x had it here
                   "SessionTTLMin": int(cfg.session_ttl_min_s * 1e9)},
        "DebugConfig": {"Bootstrap": cfg.bootstrap, "BootstrapExpect": cfg.bootstrap_expect,
                        "ClientAddrs": list(cfg.client_addrs), "DNSPort": cfg.ports.dns,
                        "HTTPPort": cfg.ports.http, "DataDir": cfg.data_dir, "DevMode": cfg.dev,
                        "ServerPort": cfg.ports.server, "SerfPortLAN": cfg.ports.serf_lan,
                        "SerfPortWAN": cfg.ports.serf_wan, "LogLevel": cfg.log_level.upper(),
                        "EnableScriptChecks": cfg.enable_script_checks,
                        "EnableLocalScriptChecks": cfg.enable_local_script_checks,
                        "DNSDomain": cfg.domain, "UIConfig": {"Enabled": cfg.ui_enabled},
                        "ACLsEnabled": cfg.acl.enabled, "ACLResolverSettings": {
                            "ACLDefaultPolicy": cfg.acl.default_policy, "ACLDownPolicy": cfg.acl.down_policy,
                            "Datacenter": cfg.datacenter, "NodeName": cfg.node_name}},
        "Coord": ctx.coordinates.lan_coordinate().to_json(),
        "Member": member_json(ctx.membership.local_member()),
        "Stats": {
            "agent": {"check_monitors": "0", "check_ttls": str(ttl), "checks": str(len(local.checks)),
                      "services": str(len(local.services))},
            "build": {"prerelease": "", "revision": REVISION, "version": CONSUL_COMPAT_VERSION},
            "consul": {"acl": acl, "bootstrap": str(cfg.bootstrap or cfg.dev).lower(),
                       "known_datacenters": str(ctx.federation.known_datacenters()),
                       "leader": str(ctx.raft is not None and ctx.raft.is_leader).lower(),
                       "leader_addr": consensus.leader_address(), "server": str(cfg.server).lower()},
            "raft": consensus.stats(),
            "runtime": {"arch": platform.machine(), "cpu_count": str(os.cpu_count() or 1),
                        "goroutines": str(len(asyncio.all_tasks())), "max_procs": str(os.cpu_count() or 1),
                        "os": sys.platform, "version": "python" + platform.python_version()},
            "serf_lan": ctx.membership.stats(),
            **({"serf_wan": wan_stats} if wan_stats is not None else {}),
        },
        "Meta": node_info["NodeMeta"],
        # cairn serves no xDS (no gRPC listener): no Envoy version is supported and no port listens
        "xDS": {"SupportedProxies": {"envoy": []}, "Port": -1, "Ports": {"Plaintext": -1, "TLS": -1}},
    }
    if not cfg.server:  # a client runs no Raft: Consul shows the servers it knows instead
        stats = info["Stats"]
        del stats["raft"]
        stats["consul"] = {"acl": acl, "known_servers": str(ctx.info.known_servers()), "server": "false"}
    return info
