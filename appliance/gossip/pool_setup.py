"""Building the agent's LAN gossip driver from its configuration, and Consul's retry-join loop.

How it works
------------
`lan_driver(cfg, tags, rng)` makes the `GossipDriver` every agent runs on its `serf_lan` port:

* timing: memberlist's LAN profile with Consul's overrides (a dead member's name may be taken by a
  new address after 30 s, a leaving member keeps answering for 3 s, failed members are reaped
  after `reconnect_timeout`, 72 h unless set, name conflicts are only logged), then the
  `gossip_lan` block (gossip_nodes, gossip_interval, probe_interval, probe_timeout,
  retransmit_mult, suspicion_mult);
* Consul's LAN merge delegate (`lan_merge_check`): a member whose `dc` tag names another
  datacenter (`role` node or consul) or a segment, that claims this agent's node ID under another
  name, or that shares its node ID with another member of the same table, is refused: its alive
  messages are ignored (`memberlist: ignoring alive message for 'x': Member 'x'
  part of wrong datacenter 'dc2'`) and a join that meets it fails with that text;
* member snapshot: `<data_dir>/serf/local.snapshot` (not in -dev), so a restarted agent rejoins
  the members it knew even without -retry-join (snapshot.py, snapshot_file.py);
* keyring (Consul's setupKeyrings): with a data directory (and not `disable_keyring_file`, which
  -dev sets) the ring lives in `<data_dir>/serf/local.keyring`. The file wins when it exists, so
  keys installed with `cairn keyring` survive restarts; an `encrypt` key missing from it is added.
  Without the file, the `encrypt` key starts the ring and the file is written. No key and no file:
  gossip is not encrypted.

`retry_join(driver, addresses, interval_s, max_attempts)` is Consul's retryJoiner: log "Joining
cluster...", try every address, log "Join cluster completed. Synced with initial agents" on the
first success, otherwise "Join cluster failed, will retry" and wait `interval_s`. When the
attempts after the first exceed `max_attempts` (0 = forever) it raises `JoinError("agent: max
join retry exhausted, exiting")`; the agent logs "Retry join failed" and exits with status 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from typing import Any

from appliance.cloud.discover import expand as cloud_auto_join
from appliance.gossip.config import GossipConfig
from appliance.gossip.driver import GossipDriver, JoinError
from appliance.gossip.keyring import Keyring, KeyringError, decode_key
from appliance.gossip.keyring_file import KEYRING_FILE, load_file, save_file
from appliance.gossip.serf_queries import MergeCheck
from appliance.gossip.snapshot import SNAPSHOT_FILE

log = logging.getLogger("agent")

CONSUL_LAN_OVERRIDES = dict(
    dead_node_reclaim_time_s=30.0,  # Consul sets memberlist's DeadNodeReclaimTime
    leave_propagate_delay_s=3.0,  # Consul's LeavePropagateDelay
    reconnect_timeout_s=72 * 3600.0,  # reconnect_timeout default
    nack_delay_fraction=0.8,  # Lifeguard's advice: nacks reach a healthy prober before its deadline
    name_conflict_resolution=False,  # Consul turns Serf's resolution off: a conflict is only logged
)


def lan_merge_check(datacenter: str, node_id: str = "", node_name: str = "") -> MergeCheck:
    """Consul's lanMergeDelegate: the error text for the first member refused, or ""."""

    def check(members: list[tuple[str, dict[str, str]]]) -> str:
        ids: dict[str, str] = {}
        for name, tags in members:
            member_id = tags.get("id", "")
            if member_id:
                if member_id == node_id and name.lower() != node_name.lower():
                    return f"Member '{name}' has conflicting node ID '{member_id}' with this agent's ID"
                if member_id in ids:
                    return f"Member '{name}' has conflicting node ID '{member_id}' with member '{ids[member_id]}'"
                ids[member_id] = name
            if tags.get("role") in ("node", "consul") and tags.get("dc", "") != datacenter:
                return f"Member '{name}' part of wrong datacenter '{tags.get('dc', '')}'"
            if tags.get("segment", "") != "":
                return f"Member '{name}' part of wrong segment '{tags['segment']}' (expected '')"
        return ""

    return check


def wan_merge_check(members: list[tuple[str, dict[str, str]]]) -> str:
    """Consul's wanMergeDelegate: only servers are members of the WAN pool."""
    for name, tags in members:
        if tags.get("role") != "consul":
            return f"Member '{name}' is not a server"
    return ""


def consul_lan_config(**overrides: Any) -> GossipConfig:
    """memberlist's LAN profile, Consul's overrides, then the agent's `gossip_lan` settings."""
    return GossipConfig.lan(**{**CONSUL_LAN_OVERRIDES, **overrides})


def snapshot_path(cfg: Any) -> str:
    """Serf's LAN snapshot under the data directory (none in -dev)."""
    if cfg.dev or not cfg.data_dir:
        return ""
    return os.path.join(cfg.data_dir, SNAPSHOT_FILE)


def keyring_path(cfg: Any) -> str:
    if cfg.dev or not cfg.data_dir or cfg.disable_keyring_file:
        return ""
    return os.path.join(cfg.data_dir, KEYRING_FILE)


def load_keyring(encrypt: str, path: str) -> Keyring:
    """The starting keyring (see the module docstring); KeyringError on a bad key or file."""
    key = decode_key(encrypt) if encrypt else None
    if path and os.path.exists(path):
        ring = Keyring(load_file(path))
        if key is not None and key not in ring.keys:
            log.warning("encrypt key is not in the keyring file %s: adding it (the file's primary key "
                        "stays primary)", path)
            ring.install(key)
            save_file(path, ring.keys)
        return ring
    ring = Keyring([key] if key is not None else [])
    if path and key is not None:
        save_file(path, ring.keys)
    return ring


def lan_driver(cfg: Any, tags: dict[str, str], rng: random.Random | None = None) -> GossipDriver:
    path = keyring_path(cfg)
    try:
        ring = load_keyring(cfg.encrypt, path)
    except (KeyringError, OSError) as err:
        raise KeyringError(f"Failed to configure keyring: {err}") from None
    advertise = cfg.advertise_addr or cfg.bind_addr
    return GossipDriver(
        cfg.node_name, bind=cfg.bind_addr, port=cfg.ports.serf_lan, advertise=advertise, tags=tags,
        config=consul_lan_config(reconnect_timeout_s=cfg.reconnect_timeout_s, **getattr(cfg, "gossip_lan", {})),
        keyring=ring, encrypt_verify_incoming=cfg.encrypt_verify_incoming,
        encrypt_verify_outgoing=cfg.encrypt_verify_outgoing, keyring_path=path, rng=rng,
        log_prefix="agent.server" if cfg.server else "agent.client", snapshot_path=snapshot_path(cfg),
        merge_check=lan_merge_check(cfg.datacenter, cfg.node_id, cfg.node_name))


async def retry_join(driver: GossipDriver, addresses: list[str], interval_s: float, max_attempts: int,
                     cluster: str = "LAN") -> int:
    """Consul's retry-join loop for one pool ("LAN", or "WAN" for -retry-join-wan); the number of
    agents contacted."""
    pool = cluster.lower()
    log.info("Joining cluster...: cluster=%s", cluster)
    attempt = 0
    while True:
        targets = await cloud_auto_join(addresses, cluster)  # provider=... entries, resolved on every attempt
        log.info("(%s) joining: %s_addresses=[%s]", cluster, pool, " ".join(targets))
        try:
            n = await driver.join(targets)
        except JoinError as err:
            error = json.dumps(str(err))  # hclog quotes a value with spaces or newlines
            log.warning("(%s) couldn't join: number_of_nodes=0 error=%s", cluster, error)
        else:
            log.info("(%s) joined: number_of_nodes=%d", cluster, n)
            log.info("Join cluster completed. Synced with initial agents: cluster=%s num_agents=%d", cluster, n)
            return n
        attempt += 1
        if max_attempts > 0 and attempt > max_attempts:
            raise JoinError("agent: max join retry exhausted, exiting")
        log.warning("Join cluster failed, will retry: cluster=%s retry_interval=%s error=%s", cluster,
                    _duration(interval_s), error)
        await asyncio.sleep(interval_s)


def _duration(seconds: float) -> str:
    if seconds == int(seconds) and seconds < 60:
        return f"{int(seconds)}s"
    minutes, secs = divmod(seconds, 60)
    if secs == int(secs):
        return f"{int(minutes)}m{int(secs)}s"
    return f"{seconds:g}s"
