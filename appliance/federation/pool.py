"""The WAN gossip pool: the servers of every datacenter, and what the agent reads from it.

How it works
------------
Every server runs a second `GossipDriver` (appliance/gossip/driver.py), beside the LAN one, on
its `serf_wan` port (8302). Client agents do not, and neither does a server whose `serf_wan` is
-1 or a `-dev` agent (it has no server RPC listener, so other datacenters could not reach it).
As in Consul:

* timing is memberlist's WAN profile (probe every 5 s, 3 s probe timeout, suspicion multiplier 6,
  gossip every 500 ms, push-pull every 60 s) with Consul's overrides: gossip to 3 members, dead
  names reclaimable after 30 s, 3 s leave propagation, failed members reaped after 72 h;
* the member name is `<node>.<dc>` and the tags are the server's (`role=consul`, `dc`, `id`,
  `port` = server RPC port, `build`, `vsn`, ...);
* the member snapshot is `<data_dir>/serf/remote.snapshot` and the keyring
  `<data_dir>/serf/remote.keyring` (the same `encrypt` key starts both rings).

Joining: `-join-wan`/`-retry-join-wan` (retried every `retry_interval_wan`, at most
`retry_max_wan` times), `PUT /v1/agent/join/<addr>?wan=1` and `cairn join -wan`. Consul's flood
join: when an alive server of this datacenter shows up in the LAN pool and is not yet a WAN
member, this server WAN-joins it at its LAN address and its `wan_join_port` tag, so one WAN join
per datacenter brings in all of its servers.

Reading the pool:

* `server_addresses(dc)`: the RPC addresses (`addr:port` tag) of the alive servers of `dc`,
  shuffled; the forwarder (forward.py) tries them in that order.
* `datacenters()`: every datacenter with a WAN member (failed ones count until reaped), sorted by
  Consul's rule: the median of the estimated round-trip times from this server's WAN Vivaldi
  coordinate to each of that datacenter's servers' cached coordinates (its own datacenter counts
  0; a server whose coordinate is not known yet counts as infinitely far), ties by name.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from typing import Any

from appliance.client.servers import server_address
from appliance.gossip.config import GossipConfig
from appliance.gossip.driver import GossipDriver, JoinError
from appliance.gossip.keyring import KeyringError
from appliance.gossip.pool_setup import CONSUL_LAN_OVERRIDES, load_keyring, retry_join, wan_merge_check
from appliance.gossip.serf import Member, MemberStatus, SerfEvent
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus

log = logging.getLogger("agent")

WAN_SNAPSHOT_FILE = os.path.join("serf", "remote.snapshot")
WAN_KEYRING_FILE = os.path.join("serf", "remote.keyring")


def consul_wan_config(reconnect_timeout_s: float = 72 * 3600.0) -> GossipConfig:
    """memberlist's WAN profile with Consul's overrides (gossip_nodes and retransmit_mult stay
    at the LAN values, as Consul's defaults give them); failed servers are reaped after
    `reconnect_timeout_wan`."""
    return GossipConfig.wan(gossip_nodes=3, **{**CONSUL_LAN_OVERRIDES, "reconnect_timeout_s": reconnect_timeout_s})


def runs_wan_pool(cfg: Any) -> bool:
    return bool(cfg.server and not cfg.dev and cfg.ports.serf_wan >= 0)


def wan_driver(cfg: Any, tags: dict[str, str], rng: random.Random | None = None) -> GossipDriver:
    keep = bool(cfg.data_dir) and not cfg.disable_keyring_file
    keyring_path = os.path.join(cfg.data_dir, WAN_KEYRING_FILE) if keep else ""
    try:
        ring = load_keyring(cfg.encrypt, keyring_path)
    except (KeyringError, OSError) as err:
        raise KeyringError(f"Failed to configure WAN keyring: {err}") from None
    advertise = cfg.advertise_addr_wan or cfg.advertise_addr or cfg.bind_addr
    return GossipDriver(
        f"{cfg.node_name}.{cfg.datacenter}", bind=cfg.bind_addr, port=cfg.ports.serf_wan, advertise=advertise,
        tags=tags, config=consul_wan_config(cfg.reconnect_timeout_wan_s), keyring=ring,
        encrypt_verify_incoming=cfg.encrypt_verify_incoming, encrypt_verify_outgoing=cfg.encrypt_verify_outgoing,
        keyring_path=keyring_path, rng=rng, log_prefix="agent.server", pool="wan", merge_check=wan_merge_check,
        snapshot_path=os.path.join(cfg.data_dir, WAN_SNAPSHOT_FILE) if cfg.data_dir else "")


class WanPool:
    """This server's membership of the WAN pool."""

    def __init__(self, cfg: Any, tags: dict[str, str], rng: random.Random) -> None:
        self.datacenter = cfg.datacenter
        self.rng = rng
        self.driver = wan_driver(cfg, tags, rng)
        self._flooding: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """The WAN gossip driver on serf_wan until cancelled; flood joins in flight end with it."""
        try:
            await self.driver.serve(task_status=task_status)
        finally:
            floods = list(self._tasks)
            for task in floods:
                task.cancel()
            if floods:
                await asyncio.wait(floods, timeout=2.0)

    async def leave(self) -> None:
        await self.driver.leave()

    # ------------------------------------------------------------------ joining

    async def join(self, addresses: list[str]) -> int:
        return await self.driver.join(addresses)

    async def retry_join(self, addresses: list[str], interval_s: float, max_attempts: int) -> int:
        return await retry_join(self.driver, addresses, interval_s, max_attempts, cluster="WAN")

    def on_lan_event(self, event: SerfEvent | None, member: Member | None) -> None:
        """Consul's flood join: a server of this datacenter seen in the LAN pool joins the WAN."""
        if member is None or member.status != MemberStatus.ALIVE or self.driver.view() is None:
            return
        tags = member.tags
        if tags.get("role") != "consul" or tags.get("dc") != self.datacenter:
            return
        port = tags.get("wan_join_port", "")
        wan_name = f"{member.name}.{self.datacenter}"
        known = self.driver.member(wan_name)
        if not port.isdigit() or int(port) <= 0 or wan_name in self._flooding:
            return
        if known is not None and known.status == MemberStatus.ALIVE:
            return
        host = f"[{member.addr}]" if ":" in member.addr else member.addr
        self._flooding.add(wan_name)
        task = asyncio.get_running_loop().create_task(self._flood(wan_name, f"{host}:{port}"), name="wan-flood")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flood(self, wan_name: str, address: str) -> None:
        try:
            await self.driver.join([address])
            log.info("consul: Joined WAN pool through LAN server: server=%s address=%s", wan_name, address)
        except JoinError as err:
            log.debug("consul: WAN flood join failed: server=%s address=%s error=%s", wan_name, address, err)
        finally:
            self._flooding.discard(wan_name)

    # ------------------------------------------------------------------ reading

    def members(self) -> list[Member]:
        return self.driver.members()

    def servers(self) -> list[Member]:
        return [m for m in self.driver.members() if m.tags.get("role") == "consul" and m.tags.get("dc")]

    def known(self, dc: str) -> bool:
        return any(m.tags.get("dc") == dc for m in self.servers())

    def server_addresses(self, dc: str) -> list[str]:
        """RPC addresses of the alive servers of `dc`, in random order."""
        found = [a for a in (server_address(m, dc) for m in self.servers() if m.tags.get("dc") == dc) if a]
        found = list(dict.fromkeys(found))
        self.rng.shuffle(found)
        return found

    def coordinate_maps(self) -> list[dict[str, Any]]:
        """/v1/coordinate/datacenters: each datacenter (nearest first) with its servers' WAN
        coordinates as this server last heard them (its own: its current one)."""
        by_dc: dict[str, list[dict[str, Any]]] = {}
        for member in self.servers():
            coord = self.driver.cached_coordinate(member.name)
            if coord is not None:
                by_dc.setdefault(member.tags["dc"], []).append({"Node": member.name, "Coord": coord.to_json()})
        return [{"Datacenter": dc, "AreaID": "WAN", "Coordinates": sorted(by_dc.get(dc, []), key=lambda c: c["Node"])}
                for dc in self.datacenters()]

    def datacenters(self) -> list[str]:
        """Known datacenters, nearest first (see the module docstring)."""
        own = self.driver.coordinate()
        rtts: dict[str, list[float]] = {}
        for member in self.servers():
            dc = member.tags["dc"]
            if dc == self.datacenter:
                rtt = 0.0
            else:
                other = self.driver.cached_coordinate(member.name)
                rtt = math.inf
                if own is not None and other is not None and other.is_compatible_with(own):
                    rtt = own.distance_to(other)
            rtts.setdefault(dc, []).append(rtt)
        rtts.setdefault(self.datacenter, [0.0])
        medians = {dc: sorted(values)[len(values) // 2] for dc, values in rtts.items()}
        return sorted(medians, key=lambda dc: (medians[dc], dc))
