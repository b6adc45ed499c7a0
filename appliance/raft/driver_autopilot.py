"""The Raft operator surface on a running server: autopilot, peer removal, leadership transfer,
graceful leave, and the leader-side handling of the operator HTTP endpoints.

How it works
------------
`Autopilot` wraps a `RaftDriver`. Its pure rules live in autopilot.py; this module feeds them
what the server knows, on a timer, and carries out their decision.

**Discovery.** Whatever finds servers calls `server_seen(id, address)` (today the server RPC's
HELLO exchange, see transport.py; gossip member events later), and may call
`server_failed(id)` / `server_left(id)` / `server_alive(id)` (the agent does, from gossip member
events). A server seen but not in the Raft configuration is a
candidate to add if it was seen within `SEEN_RECENTLY_S` (so a dead server is never added back);
one removed (by an operator or by cleanup) is added again only if it is seen *after* its
removal, and one that left gracefully is ignored for `LEFT_IGNORE_S`, so a leaving server's last
HELLO cannot bring it back.

**Status.** A server is `failed` when its discovery source says so, or when the leader has heard
nothing from it (no answer to AppendEntries or heartbeats) for `failed_after_s`: five election
timeouts (5 s at `raft_multiplier = 1`), the same order as gossip's failure detection.

**The loop.** Every `interval_s` (1 s), on the leader only: seed the replicated autopilot
configuration from the config file if none is stored (Consul's leader does this once), evaluate
health, and make the one change autopilot.py asks for (add as non-voter, promote after
`ServerStabilizationTime`, remove a dead server), waiting for it to commit before the next round.
The round's overall health and failure tolerance become Consul's `consul.autopilot.healthy` and
`consul.autopilot.failure_tolerance` gauges (leader only).

**Operator requests** (and the default-consistency read of the Raft configuration, which only
the leader can fill with every server's last index) run on the leader: the HTTP handlers propose
a command whose `Type` is registered in `RaftDriver.leader_ops` (`raft_remove_peer`,
`raft_transfer_leader`, `autopilot_health`, `raft_configuration`); `RaftDriver.propose` sends it
to the leader (forwarded over the server RPC when this server is a follower), where
`RaftDriver.propose_local` hands it to the handler registered here instead of appending it to
the log. Errors travel back as `CommandError` with Consul's texts.

**Graceful leave.** `leave()`: a leader first transfers leadership (thesis §3.10) and waits for
another server to lead; then the server asks the leader to remove it from the configuration and
waits for that to commit. A single-voter server has nobody to hand over to and does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.config.durations import format_duration
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.state.fsm import CommandError

from .autopilot import (
    ALIVE,
    FAILED,
    LEFT,
    AutopilotConfig,
    AutopilotConfigError,
    AutopilotState,
    ServerState,
    failure_tolerance,
    next_change,
    update_health,
)
from .driver import RaftDriver
from .messages import ConfChange, ConfChangeRefused, ConfChangeType, NotLeader, ProposalDropped, RaftError, Role

log = logging.getLogger("agent.server.autopilot")

LEFT_IGNORE_S = 30.0
# A server not in the configuration is added only if seen this recently: a server without Raft state
# says HELLO every 0.5 s, one with state every 5 s (so a live one is seen right after a HELLO), and a
# dead one stops, so it is never added back once its last HELLO is older than this.
SEEN_RECENTLY_S = 3.0
# refusals that pass once the change in flight commits (or the new leader's no-op does)
_TRANSIENT = ("already in progress", "not yet committed", "transfer in progress")


def rfc3339(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat().replace("+00:00", "Z")


class Autopilot:
    def __init__(self, driver: RaftDriver, *, defaults: AutopilotConfig, version: str, interval_s: float = 1.0,
                 names: Callable[[], dict[str, str]] | None = None) -> None:
        self.driver = driver
        self.defaults = defaults  # the config file's autopilot {} block
        self.version = version
        self.interval_s = interval_s
        self.names: Callable[[], dict[str, str]] = names or dict  # node ID (lower case) -> node name, from the catalog
        cfg = driver.config
        self.failed_after_s = 5 * cfg.election_timeout_ms * cfg.raft_multiplier / 1000
        self.state = AutopilotState()
        self.seen: dict[str, tuple[str, float]] = {}  # id -> (address, when last seen)
        self.failed: dict[str, float] = {}  # reported failed by discovery
        self.left: dict[str, float] = {}  # left gracefully (ignored for LEFT_IGNORE_S)
        self.removed: dict[str, float] = {}  # removed by an operator or by cleanup
        self.leading_since: float | None = None
        self._seeded_term = -1
        self.report: tuple[bool, int] | None = None  # (healthy, failure tolerance) of the last round
        driver.leader_ops.update({
            "raft_remove_peer": self._op_remove_peer,
            "raft_transfer_leader": self._op_transfer_leader,
            "autopilot_health": self._op_health,
            "raft_configuration": self._op_configuration,
        })

    # ------------------------------------------------------------------ discovery input

    def server_seen(self, node_id: str, address: str) -> None:
        if node_id and address and node_id != self.driver.node_id:
            self.seen[node_id] = (address, self._now())
            self.failed.pop(node_id, None)

    def server_failed(self, node_id: str) -> None:
        self.failed[node_id] = self._now()

    def server_left(self, node_id: str) -> None:
        self.left[node_id] = self._now()

    def server_alive(self, node_id: str) -> None:
        """Discovery sees the server alive again (it rejoined): forget that it failed or left."""
        self.failed.pop(node_id, None)
        self.left.pop(node_id, None)

    # ------------------------------------------------------------------ life cycle

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """A round every interval until cancelled (rounds act only on the leader)."""
        task_status.started()
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.reconcile()
            except (RaftError, CommandError, TimeoutError) as err:
                log.debug("autopilot round: %s", err)  # refused or leadership moved: next round
            except Exception:  # a bug in one round must not stop autopilot for good
                log.error("autopilot round failed", exc_info=True)

    # ------------------------------------------------------------------ configuration

    def configuration(self) -> AutopilotConfig:
        try:
            return AutopilotConfig.from_api(self.driver.store.autopilot, self.defaults)
        except AutopilotConfigError:
            return self.defaults

    # ------------------------------------------------------------------ state

    def _now(self) -> float:
        return time.monotonic()

    def _status(self, node_id: str, contact: float | None, now: float) -> str:
        if node_id in self.left and now - self.left[node_id] < LEFT_IGNORE_S:
            return LEFT
        if node_id in self.failed:
            return FAILED
        if contact is None:
            contact = now - (self.leading_since if self.leading_since is not None else now)
        return FAILED if contact > self.failed_after_s else ALIVE

    def server_states(self) -> list[ServerState]:
        """Every server of the configuration, plus servers seen but not in it (leader only)."""
        driver, core = self.driver, self.driver.opened_core
        now = self._now()
        names = self.names()
        conf = core.configuration
        out = []
        for s in conf.servers:
            if s.id == driver.node_id:
                out.append(ServerState(s.id, s.address, names.get(s.id.lower(), ""), True, s.voter,
                                       core.role == Role.LEADER, ALIVE, 0.0, core.log.last_term(),
                                       core.log.last_index(), self.version))
                continue
            pr = core.progress.get(s.id)
            match = pr.match if pr is not None else 0
            contact = driver.peer_last_contact_s(s.id)
            out.append(ServerState(s.id, s.address, names.get(s.id.lower(), ""), True, s.voter, False,
                                   self._status(s.id, contact, now), contact, core.log.term(match) or 0,
                                   match, self.version))
        for node_id, (address, at) in sorted(self.seen.items()):
            if conf.server(node_id) is not None or now - at > SEEN_RECENTLY_S:
                continue
            if at <= self.removed.get(node_id, float("-inf")) or node_id in self.failed:
                continue  # not seen since it was removed, or gossip says it failed
            if node_id in self.left and now - self.left[node_id] < LEFT_IGNORE_S:
                continue
            out.append(ServerState(node_id, address, names.get(node_id.lower(), ""), False, False, False,
                                   ALIVE, None, 0, 0, self.version))
        return out

    def health(self) -> dict[str, Any]:
        """/v1/operator/autopilot/health, as the leader sees it."""
        if not self.driver.is_leader:
            raise NotLeader(self.driver.leader_id)
        cfg = self.configuration()
        now = self._now()
        wall = time.time()
        core = self.driver.opened_core
        servers = [s for s in self.server_states() if s.in_configuration]
        health = update_health(self.state, cfg, servers, core.log.last_term(), core.log.last_index(), now)
        rows = []
        for s in servers:
            h = health[s.id]
            contact = s.last_contact_s
            if contact is None:  # never answered this leader: as long as it has led
                contact = now - (self.leading_since if self.leading_since is not None else now)
            rows.append({
                "ID": s.id, "Name": s.name, "Address": s.address, "SerfStatus": s.status, "Version": s.version,
                "Leader": s.leader, "LastContact": format_duration(contact),
                "LastTerm": s.last_term, "LastIndex": s.last_index, "Healthy": h.healthy, "Voter": s.voter,
                "StableSince": rfc3339(wall - (now - h.stable_since)),
            })
        return {"Healthy": all(r["Healthy"] for r in rows), "FailureTolerance": failure_tolerance(servers, health),
                "Servers": rows}

    def gauges(self) -> list[tuple[str, float, None]]:
        """Consul's `consul.autopilot.healthy` (1/0) and `consul.autopilot.failure_tolerance`,
        from the leader's last round (other servers report nothing, as in Consul)."""
        if self.report is None or not self.driver.is_leader:
            return []
        healthy, tolerance = self.report
        return [("autopilot.healthy", 1.0 if healthy else 0.0, None),
                ("autopilot.failure_tolerance", float(tolerance), None)]

    # ------------------------------------------------------------------ the loop

    def _forget(self, now: float) -> None:
        """Keep the discovery memory bounded: what is older than it can matter is dropped."""
        horizon = max(LEFT_IGNORE_S, SEEN_RECENTLY_S)
        conf = self.driver.opened_core.configuration
        for table in (self.left, self.removed):
            for node_id in [i for i, at in table.items() if now - at > horizon]:
                del table[node_id]
        for node_id in [i for i, (_, at) in self.seen.items() if now - at > horizon and conf.server(i) is None]:
            del self.seen[node_id]
            self.failed.pop(node_id, None)

    async def reconcile(self) -> None:
        driver = self.driver
        self._forget(self._now())
        if not driver.is_leader:
            self.leading_since = None
            self.state.health.clear()
            self.report = None
            return
        now = self._now()
        if self.leading_since is None:
            self.leading_since = now
        if driver.store.autopilot is None and self._seeded_term != driver.opened_core.term:
            self._seeded_term = driver.opened_core.term
            await driver.propose_local({"Type": "autopilot", "Init": True, "Config": self.defaults.to_api()})
        cfg = self.configuration()
        servers = self.server_states()
        core = driver.opened_core
        health = update_health(self.state, cfg, servers, core.log.last_term(), core.log.last_index(), now)
        members = [s for s in servers if s.in_configuration]
        self.report = (all(health[s.id].healthy for s in members), failure_tolerance(members, health))
        change = next_change(cfg, servers, health, now)
        if change is None:
            return
        verb = {ConfChangeType.ADD_NONVOTER: "adding server as non-voter",
                ConfChangeType.ADD_VOTER: "promoting server to voter",
                ConfChangeType.REMOVE_SERVER: "removing dead server"}[change.type]
        log.info("%s: id=%s address=%s", verb, change.id, change.address)
        if change.type == ConfChangeType.REMOVE_SERVER:
            self.removed[change.id] = self._now()  # before: the change is effective as soon as appended
        await driver.propose_conf_change(change)

    # ------------------------------------------------------------------ operator requests (leader)

    async def _op_remove_peer(self, cmd: dict[str, Any]) -> bool:
        node_id, address = str(cmd.get("ID") or ""), str(cmd.get("Address") or "")
        conf = self.driver.opened_core.configuration
        if node_id:
            if conf.server(node_id) is None:
                raise CommandError(f'id "{node_id}" was not found in the Raft configuration')
        else:
            match = [s for s in conf.servers if s.address == address]
            if not match:
                raise CommandError(f'address "{address}" was not found in the Raft configuration')
            node_id = match[0].id
        if cmd.get("Leaving"):
            self.left[node_id] = self._now()
        self.removed[node_id] = self._now()  # before: autopilot must not add it back meanwhile
        await self._change(ConfChange(ConfChangeType.REMOVE_SERVER, node_id))
        log.info("removed peer: id=%s", node_id)
        return True

    async def _change(self, change: ConfChange) -> None:
        # A change is refused while another is uncommitted (autopilot's, say): retry for a while.
        deadline = self._now() + 10.0
        while True:
            try:
                await self.driver.propose_conf_change(change)
                return
            except NotLeader:
                raise  # the caller's propose() asks the new leader
            except (ConfChangeRefused, ProposalDropped) as err:
                if not any(t in str(err) for t in _TRANSIENT) or self._now() > deadline:
                    raise CommandError(str(err)) from None
                await asyncio.sleep(0.05)

    async def _op_transfer_leader(self, cmd: dict[str, Any]) -> bool:
        driver = self.driver
        target = str(cmd.get("ID") or "") or None
        conf = driver.opened_core.configuration
        if target is not None and conf.server(target) is None:
            raise CommandError(f'id "{target}" was not found in the Raft configuration')
        if target == driver.node_id:
            raise CommandError("cannot transfer leadership to itself")
        try:
            target = await driver.transfer_leadership(target)
        except RaftError as err:
            raise CommandError(str(err)) from None
        deadline = self._now() + 2 * driver.config.election_timeout_ms * driver.config.raft_multiplier / 1000
        while driver.is_leader and self._now() < deadline:
            await asyncio.sleep(0.02)
        if driver.is_leader:
            raise CommandError(f"leadership transfer to {target} timed out")
        log.info("transferred leadership: to=%s", target)
        return True

    async def _op_health(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return self.health()

    async def _op_configuration(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if not self.driver.is_leader:
            raise NotLeader(self.driver.leader_id)
        return self.driver.configuration()

    # ------------------------------------------------------------------ graceful leave

    async def leave(self, timeout_s: float = 10.0) -> None:
        """Hand over leadership (if leader), then have the leader remove this server."""
        driver = self.driver
        core = driver.core
        conf = None if core is None else core.configuration
        if conf is None or not conf.server(driver.node_id) or conf.voters == (driver.node_id,):
            return
        deadline = self._now() + timeout_s
        if driver.is_leader:
            log.info("leaving: transferring leadership first")
            with contextlib.suppress(RaftError):
                await driver.transfer_leadership(None)
            while (driver.is_leader or not driver.leader_id) and self._now() < deadline:
                await asyncio.sleep(0.02)
            if driver.is_leader:
                log.warning("leaving: leadership transfer did not finish; removing this server as leader")
        try:
            await asyncio.wait_for(driver.propose({"Type": "raft_remove_peer", "ID": driver.node_id,
                                                   "Leaving": True}), max(0.1, deadline - self._now()))
            log.info("left the Raft configuration")
        except (RaftError, CommandError, TimeoutError) as err:
            log.warning("leaving: could not remove this server from the Raft configuration: %s", err)
