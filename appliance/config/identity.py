"""What an agent says about itself, derived from its configuration: the address it advertises, its
catalog node record, its gossip member tags and its start-up banner.

Pure functions of the RuntimeConfig (and the version constants of appliance/__init__.py), shared
by the composition root, anti-entropy (the node record it registers) and the gossip pools (the
tags servers and clients read: role, dc, port, build).
"""

from __future__ import annotations

from typing import Any

from appliance import CONSUL_COMPAT_VERSION, REVISION, __version__
from appliance.config.runtime import RuntimeConfig


def advertise_address(cfg: RuntimeConfig) -> str:
    """The LAN address others reach this agent on: advertise_addr, else bind_addr, and loopback
    when that is a wildcard."""
    addr = cfg.advertise_addr or cfg.bind_addr
    return "127.0.0.1" if addr in ("0.0.0.0", "::", "") else addr


def node_info(cfg: RuntimeConfig) -> dict[str, Any]:
    """This agent's catalog node record, as anti-entropy registers it."""
    advertise = advertise_address(cfg)
    wan = cfg.advertise_addr_wan or advertise
    meta = {"consul-network-segment": "", "consul-version": CONSUL_COMPAT_VERSION, **cfg.node_meta}
    return {
        "Node": cfg.node_name, "ID": cfg.node_id, "Address": advertise, "Datacenter": cfg.datacenter,
        "TaggedAddresses": {"lan": advertise, "lan_ipv4": advertise, "wan": wan, "wan_ipv4": wan},
        "NodeMeta": meta,
    }


def member_tags(cfg: RuntimeConfig) -> dict[str, str]:
    """Serf tags of this agent's member, Consul's: servers are `role=consul` with their RPC port."""
    tags = {"acls": "1" if cfg.acl.enabled else "0",
            "build": f"{CONSUL_COMPAT_VERSION}:{REVISION}", "dc": cfg.datacenter,
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


def _tls_rows(cfg: RuntimeConfig) -> list[tuple[str, str]]:
    """Consul's three TLS lines of the banner (appliance/config/tls.py)."""
    https, grpc, rpc = cfg.tls.https, cfg.tls.grpc, cfg.tls.internal_rpc

    def flag(value: bool) -> str:
        return str(value).lower()

    return [
        ("HTTPS TLS", f"Verify Incoming: {flag(https.verify_incoming)}, Verify Outgoing: "
                      f"{flag(https.verify_outgoing)}, Min Version: {https.tls_min_version}"),
        ("gRPC TLS", f"Verify Incoming: {flag(grpc.verify_incoming)}, Min Version: {grpc.tls_min_version}"),
        ("Internal RPC TLS", f"Verify Incoming: {flag(rpc.verify_incoming)}, Verify Outgoing: "
                             f"{flag(rpc.verify_outgoing)} (Verify Hostname: {flag(rpc.verify_server_hostname)}), "
                             f"Min Version: {rpc.tls_min_version}"),
    ]


def banner(cfg: RuntimeConfig) -> str:
    """The lines `cairn agent` prints before its log, as `consul agent` does."""
    rows = [
        ("Version", f"'{__version__}' (Consul API {CONSUL_COMPAT_VERSION})"),
        ("Node ID", f"'{cfg.node_id}'"),
        ("Node name", f"'{cfg.node_name}'"),
        ("Datacenter", f"'{cfg.datacenter}' (Segment: '{'<all>' if cfg.server else ''}')"),
        ("Server", f"{str(cfg.server).lower()} (Bootstrap: {str(cfg.bootstrap).lower()})"),
        ("Client Addr", f"[{' '.join(cfg.client_addrs)}] (HTTP: {cfg.ports.http}, HTTPS: {cfg.ports.https}, "
                        f"gRPC: -1, gRPC-TLS: -1, DNS: {cfg.ports.dns})"),  # no gRPC listener
        ("Cluster Addr", f"{cfg.advertise_addr or cfg.bind_addr} (LAN: {cfg.ports.serf_lan}, "
                         f"WAN: {cfg.ports.serf_wan})"),
        ("Gossip Encryption", str(bool(cfg.encrypt)).lower()),
        ("ACL Enabled", str(cfg.acl.enabled).lower()),
        ("ACL Default Policy", cfg.acl.default_policy),
        *_tls_rows(cfg),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["==> Starting Cairn agent..."]
    lines += [f"{k.rjust(width + 4)}: {v}" for k, v in rows]
    lines += ["", "==> Log data will now stream in as it occurs:", ""]
    return "\n".join(lines)
