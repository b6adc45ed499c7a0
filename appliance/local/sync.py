"""Anti-entropy: keep the catalog's view of this node equal to the agent's local state.

How it works
------------
`plan_sync()` (pure) compares the catalog records of this node with `LocalState.catalog_view()`
and returns the catalog commands that close the gap: the node itself, services and checks that
are missing or differ (a service goes with its checks in one register command, so a check never
arrives before its service), and deregistrations for what the catalog has but the agent does
not, except what the leader manages itself (the `consul` service and `serfHealth`).

`StateSyncer` is the driver: `sync_now()` proposes the plan through the log (the one write
path) under a lock; on a client agent the plan is read from its replica of the store and the
writes are forwarded to a server (appliance/client), so the comparison is the same everywhere.
`run()` syncs at once on start, then does a full sync every `interval` (1 min) plus a random
stagger in [0, scale x interval), where scale is Consul's aeScale: 1 up to 128 nodes, one more
per doubling above (so a large cluster's servers are not hit by every agent at once). It syncs
whenever `trigger()` is called (a local change), within a stagger of 3 s after `server_up()`
(a client reached a server with a leader), retries a failed sync after 15 s plus a stagger
(`failed to sync remote state`), and expires TTL checks at their deadlines. Consul's log lines
(`Synced service: service=web`) are kept, since test harnesses wait for them.

With ACLs, each write acts with the token Consul would use (`SyncTokens`: the agent token for
the node, a service's registration token for it and its checks); a client agent forwards it with
the write and the server authorizes it (appliance/acl/commands.py). A refused write is logged as
Consul logs it (`Service registration blocked by ACLs: service=web ...`) and waits for the next
full sync; the other writes of the plan go on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

from appliance.acl.caller import acting_as
from appliance.acl.commands import PermissionDenied
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.local.state import LocalState
from appliance.state.store import Store

MANAGED_CHECKS = {"serfHealth"}
MANAGED_SERVICES = {"consul"}
RETRY_S = 15.0  # Consul's retryFailIntv
SERVER_UP_S = 3.0  # Consul's serverUpIntv


def scale_factor(nodes: int) -> int:
    """Consul's aeScale: 1 up to 128 nodes, then one more for each doubling."""
    if nodes <= 128:
        return 1
    return int(math.ceil(math.log2(nodes) - math.log2(128))) + 1

log = logging.getLogger("agent")


def _strip(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("CreateIndex", "ModifyIndex", "Node")}


def plan_sync(store: Store, node_info: dict[str, Any], local: LocalState,
              dirty: tuple[set[str], set[str]] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """[(log message, catalog command)] that bring the catalog in line with the local state:
    all of it, or only the (service IDs, check IDs) in `dirty` (LocalState.take_dirty)."""
    plan: list[tuple[str, dict[str, Any]]] = []
    name = node_info["Node"]
    node = store.node(name)
    want_node = {"ID": node_info["ID"], "Address": node_info["Address"],
                 "TaggedAddresses": node_info["TaggedAddresses"], "Meta": node_info["NodeMeta"]}
    if node is None:
        dirty = None  # a new node: everything goes with it
    if node is None or any(node.get(k) != v for k, v in want_node.items()):
        plan.append(("Synced node info", {"Type": "register", **node_info}))
    stored_services = store.services.get(name.lower(), {}) if node else {}
    stored_checks = store.checks.get(name.lower(), {}) if node else {}
    if dirty is None:
        services, checks = local.catalog_view()
        have_services, have_checks = stored_services, stored_checks
    else:
        sids, cids = dirty
        services = {sid: local.node_service(local.services[sid].definition) for sid in sids if sid in local.services}
        # a changed service goes with its changed checks; the others are in the catalog already
        checks = {cid: local.health_check(local.checks[cid]) for cid in cids if cid in local.checks}
        have_services = {sid: stored_services[sid] for sid in sids if sid in stored_services}
        have_checks = {cid: stored_checks[cid] for cid in cids | checks.keys() if cid in stored_checks}

    for sid in sorted(have_services.keys() - services.keys() - MANAGED_SERVICES):
        plan.append((f"Deregistered service: service={sid}", {"Type": "deregister", "Node": name, "ServiceID": sid}))
    dropped_with_service = {cid for cid, c in have_checks.items()
                            if c["ServiceID"] and c["ServiceID"] not in local.services}
    for cid in sorted(have_checks.keys() - checks.keys() - MANAGED_CHECKS - dropped_with_service):
        plan.append((f"Deregistered check: check={cid}", {"Type": "deregister", "Node": name, "CheckID": cid}))

    by_service: dict[str, list[dict[str, Any]]] = {}
    for check in checks.values():
        by_service.setdefault(check["ServiceID"], []).append(check)
    synced_checks: set[str] = set()
    for sid, svc in services.items():
        have = have_services.get(sid)
        if have is not None and _strip(have) == svc:
            continue
        svc_checks = by_service.get(sid, [])
        synced_checks.update(c["CheckID"] for c in svc_checks)
        plan.append((f"Synced service: service={sid}",
                     {"Type": "register", **node_info, "SkipNodeUpdate": True, "Service": svc, "Checks": svc_checks}))
    for cid, check in checks.items():
        if cid in synced_checks:
            continue
        have = have_checks.get(cid)
        if have is not None and _strip(have) == _strip(check):
            continue
        plan.append((f"Synced check: check={cid}",
                     {"Type": "register", **node_info, "SkipNodeUpdate": True, "Checks": [check]}))
    return plan


class SyncTokens:
    """The secret each anti-entropy write acts with, as Consul's local state picks it: the node
    itself with the agent token (else the default token); a service with the token it was
    registered with (the request's, or the definition's `token`), one from a config file else
    with `config_file_service_registration`, else the default token; a check with its own token,
    else its service's, else the default token. A deregistration uses the token the item was last
    synced with (the agent no longer holds it), else the default token. `agent_tokens(kind)` is
    the agent's token of a kind ("" when none: the write is then the anonymous token's)."""

    def __init__(self, local: LocalState, agent_tokens: Callable[[str], str]) -> None:
        self.local = local
        self.agent_tokens = agent_tokens
        self.synced: dict[tuple[str, str], str] = {}  # (kind, ID) -> the token it was last synced with

    def node(self) -> str:
        return self.agent_tokens("agent") or self.agent_tokens("default")

    def service(self, sid: str) -> str:
        entry = self.local.services.get(sid)
        if entry is None:
            return self.synced.get(("service", sid)) or self.agent_tokens("default")
        token = entry.definition.token
        if not token and entry.source == "config":
            token = self.agent_tokens("config_file_service_registration")
        return token or self.agent_tokens("default")

    def check(self, cid: str) -> str:
        entry = self.local.checks.get(cid)
        if entry is None:
            return self.synced.get(("check", cid)) or self.agent_tokens("default")
        token = entry.definition.token
        if token:
            return token
        if entry.definition.service_id in self.local.services:
            return self.service(entry.definition.service_id)
        if entry.source == "config":
            token = self.agent_tokens("config_file_service_registration")
        return token or self.agent_tokens("default")

    def of(self, command: dict[str, Any]) -> tuple[str, str]:
        """(what the write is: "node", "service" or "check", the token it acts with)."""
        if command["Type"] == "deregister":
            if command.get("ServiceID"):
                return "service", self.service(command["ServiceID"])
            if command.get("CheckID"):
                return "check", self.check(command["CheckID"])
            return "node", self.node()
        if not command.get("SkipNodeUpdate"):
            return "node", self.node()
        if command.get("Service"):
            return "service", self.service(command["Service"]["ID"])
        return "check", self.check(command["Checks"][0]["CheckID"])

    def remember(self, command: dict[str, Any], token: str) -> None:
        """After a write went through: the token each registered item was synced with."""
        if command["Type"] == "deregister":
            self.synced.pop(("service", command.get("ServiceID", "")), None)
            self.synced.pop(("check", command.get("CheckID", "")), None)
            return
        if command.get("Service"):
            self.synced[("service", command["Service"]["ID"])] = token
        for check in command.get("Checks") or ():
            self.synced[("check", check["CheckID"])] = token


BLOCKED = {"node": "Node info update blocked by ACLs", "service": "Service registration blocked by ACLs",
           "check": "Check registration blocked by ACLs"}
# Consul's counters of refused anti-entropy writes (agent/local/state.go), present from the start at 0
ACL_BLOCKED_COUNTERS = ("acl.blocked.service.registration", "acl.blocked.service.deregistration",
                        "acl.blocked.check.registration", "acl.blocked.check.deregistration",
                        "acl.blocked.node.registration")


class StateSyncer:
    def __init__(self, store: Store, consensus: Any, local: LocalState, node_info: Callable[[], dict[str, Any]],
                 *, interval_s: float = 60.0, rng: random.Random | None = None,
                 cluster_size: Callable[[], int] = lambda: 1) -> None:
        self.tokens = SyncTokens(local, lambda kind: "")  # the agent sets agent_tokens (ACLs)
        self.store = store
        self.consensus = consensus
        self.local = local
        self.node_info = node_info
        self.interval_s = interval_s
        self.rng = rng or random.Random()
        self.cluster_size = cluster_size
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()  # a sync is asked for
        self._kick = asyncio.Event()  # the run loop looks at its timers again
        self._retry_at: float | None = None
        self.on_blocked: Callable[[str], None] = lambda counter: None  # one of ACL_BLOCKED_COUNTERS

    def stagger(self, d: float) -> float:
        """A random wait in [0, scale x d), scale growing with the cluster (aeScale)."""
        return self.rng.uniform(0, scale_factor(self.cluster_size()) * d)

    def trigger(self) -> None:
        """Something local changed: sync soon, and re-arm TTL timers."""
        self._wake.set()
        self._kick.set()

    def server_up(self) -> None:
        """A server with a leader became reachable (a client's first, or after a failover): a
        full sync after a stagger of up to 3 s (Consul's serverUpIntv), so a cluster's agents do
        not all sync in the same instant when its servers come back."""
        at = time.monotonic() + self.stagger(SERVER_UP_S)
        self._retry_at = at if self._retry_at is None else min(self._retry_at, at)
        self._kick.set()

    async def sync_now(self, full: bool = False) -> bool:
        """Bring the catalog in line now: what changed locally since the last sync, or (`full`)
        everything; False (and a full retry scheduled) if a write failed."""
        async with self._lock:
            try:
                await self.consensus.read_point("stale")  # a client's replica must have loaded
                dirty = self.local.take_dirty()
                if full:
                    dirty = None
                for message, command in plan_sync(self.store, self.node_info(), self.local, dirty):
                    await self._write(message, command)
            except Exception as err:  # noqa: BLE001 - a failed sync is retried, never fatal
                self.local.dirty_all = True
                log.error("failed to sync remote state: error=%r", str(err))
                self._retry_at = time.monotonic() + RETRY_S + self.stagger(RETRY_S)
                return False
            self._retry_at = None
            return True

    async def _write(self, message: str, command: dict[str, Any]) -> None:
        """One anti-entropy write with its token. One the servers' ACLs refuse is logged as Consul
        does and left until the next full sync rather than retried at once."""
        what, token = self.tokens.of(command)
        try:
            with acting_as(token):
                await self.consensus.propose(command)
        except PermissionDenied as err:
            ident = command.get("ServiceID") or command.get("CheckID") or ""
            if what == "service" and not ident:
                ident = command["Service"]["ID"]
            elif what == "check" and not ident:
                ident = command["Checks"][0]["CheckID"]
            subject = f"node={command['Node']}" if what == "node" else f"{what}={ident}"
            log.warning("%s: %s error=%r", BLOCKED[what], subject, str(err))
            op = "deregistration" if command["Type"] == "deregister" and what != "node" else "registration"
            self.on_blocked(f"acl.blocked.{what}.{op}")
            return
        self.tokens.remember(command, token)
        log.info(message)

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """Sync now and then: a full sync every interval (staggered), local changes soon, TTL
        checks as they expire, failed syncs retried; until cancelled."""
        task_status.started()
        log.info("started state syncer")
        next_full = 0.0
        while True:
            self._kick.clear()
            now = time.monotonic()
            expired = self.local.expire_ttls(now)
            for cid in expired:
                log.warning("Check TTL expired: check=%s", cid)
            retry_due = self._retry_at is not None and now >= self._retry_at
            if now >= next_full or expired or self._wake.is_set() or retry_due:
                self._wake.clear()
                await self.sync_now(full=now >= next_full or retry_due)
                if now >= next_full:
                    next_full = now + self.interval_s + self.stagger(self.interval_s)
            deadline = self.local.next_ttl_deadline()
            wait = next_full - time.monotonic()
            if self._retry_at is not None:
                wait = min(wait, self._retry_at - time.monotonic())
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            if wait > 0:
                try:
                    await asyncio.wait_for(self._kick.wait(), wait)
                except TimeoutError:
                    pass
