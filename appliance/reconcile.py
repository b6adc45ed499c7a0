"""The leader keeps the catalog in step with gossip membership (Consul's leader reconcile).

How it works
------------
Only the Raft leader writes these entries (Consul's `leader.go` reconcileMember). For each LAN
member of this datacenter, `plan_member` compares the member's gossip status with the catalog and
returns the commands to propose, or nothing when the catalog already agrees (so the periodic pass
costs no log entries):

* alive: the node is registered (created from its gossip address and `id` tag if missing,
  otherwise left as its own agent registered it) with the `serfHealth` check passing, output
  "Agent alive and reachable"; a server (tag `role=consul`) also gets the `consul` service on its
  `port` tag;
* failed: `serfHealth` goes critical, output "Agent not live or unreachable" (a node not in the
  catalog is left alone). Health queries with `?passing` and DNS then drop its services;
* left, or reaped (forgotten by gossip): the node is deregistered; the leader never deregisters
  itself;
* leaving: nothing yet (it becomes left or alive shortly).

`plan_reaped` covers nodes that carry a `serfHealth` check but are no gossip member at all (a
member reaped while there was no leader): they are deregistered, as Consul's reconcileReaped does.
That pass is skipped for `REAP_GRACE_S` after the agent starts, so a leader elected right after a
whole-cluster restart does not drop nodes its gossip pool has not heard from yet.
Nodes registered through the catalog API without `serfHealth` (external services) are never
touched.

`ReconcileSchedule` decides when to reconcile what, without I/O: every member once when this
server becomes leader, then each member named by a gossip event, and everything again every
`RECONCILE_INTERVAL_S` (Consul's reconcile_interval, 60 s); a failed proposal (leadership lost, a
timeout) makes the next pass a full one. A full pass starts with a read barrier (Consul's
`raft.Barrier` in its leader loop): a leader elected with entries it has not applied yet would
otherwise plan against an older catalog and miss a change those entries make (a member marked
critical by the previous leader, back alive since, stayed critical until the next full pass).
`plan_name` is the plan for one named member, reaped ones included. `MemberReconciler` runs both
on the agent's event loop (leadership polled every `LEADER_POLL_S`); the simulator
(tests/sim/agents.py) runs the same two on simulated time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from appliance.gossip.serf import Member, MemberStatus, SerfEvent
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus

SERF_CHECK_ID = "serfHealth"
SERF_CHECK_NAME = "Serf Health Status"
ALIVE_OUTPUT = "Agent alive and reachable"
FAILED_OUTPUT = "Agent not live or unreachable"
CONSUL_SERVICE = "consul"
RECONCILE_INTERVAL_S = 60.0
LEADER_POLL_S = 0.2
REAP_GRACE_S = 30.0  # no reaped-node pass this soon after start: gossip may still be converging

log = logging.getLogger("agent.leader")

Command = dict[str, Any]


def serf_check(node: str, status: str) -> Command:
    return {"Node": node, "CheckID": SERF_CHECK_ID, "Name": SERF_CHECK_NAME, "Status": status, "Notes": "",
            "Output": ALIVE_OUTPUT if status == "passing" else FAILED_OUTPUT, "ServiceID": "",
            "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "", "Timeout": "",
            "ExposedPort": 0, "Definition": {}}


def consul_service(member: Member, version: str) -> Command:
    tags = member.tags
    port = int(tags["port"]) if tags.get("port", "").isdigit() else 8300
    return {"ID": CONSUL_SERVICE, "Service": CONSUL_SERVICE, "Tags": [], "Address": "",
            "Meta": {"non_voter": "true" if tags.get("nonvoter") == "1" else "false",
                     "raft_version": tags.get("raft_vsn", "3"), "read_replica": "false",
                     "serf_protocol_current": "2", "serf_protocol_max": "5", "serf_protocol_min": "1",
                     "version": tags.get("build", version).split(":", 1)[0] or version},
            "Port": port, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "Connect": {}, "PeerName": ""}


def is_server(member: Member) -> bool:
    return member.tags.get("role") == "consul"


def _same_service(have: dict[str, Any] | None, want: Command) -> bool:
    if have is None:
        return False
    return all(have.get(k) == want[k] for k in ("Service", "Port", "Meta", "Tags", "Address"))


def plan_member(store: Any, member: Member, *, datacenter: str, self_name: str, version: str) -> list[Command]:
    """The commands that make the catalog agree with one member's gossip status."""
    if member.tags.get("dc", datacenter) != datacenter:
        return []  # not ours (the LAN pool holds one datacenter)
    status = member.status
    node = store.node(member.name)
    if status == MemberStatus.ALIVE:
        checks = {c["CheckID"]: c for c in store.node_checks(member.name)} if node else {}
        services = {s["ID"]: s for s in store.node_services(member.name)} if node else {}
        serf = checks.get(SERF_CHECK_ID)
        service = consul_service(member, version) if is_server(member) else None
        node_ok = node is not None and node.get("Address") == member.addr
        check_ok = serf is not None and serf.get("Status") == "passing" and serf.get("Output") == ALIVE_OUTPUT
        service_ok = service is None or _same_service(services.get(CONSUL_SERVICE), service)
        if node_ok and check_ok and service_ok:
            return []
        cmd: Command = {"Type": "register", "Node": member.name, "Datacenter": datacenter,
                        "Checks": [serf_check(member.name, "passing")]}
        if node_ok:
            cmd["SkipNodeUpdate"] = True
        else:  # new, or back with another address: keep what its agent registered, fix the address
            addr = member.addr
            cmd.update(ID=(node or {}).get("ID") or member.tags.get("id", ""), Address=addr,
                       TaggedAddresses=(node or {}).get("TaggedAddresses") or {
                           "lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr},
                       NodeMeta=(node or {}).get("Meta") or {"consul-network-segment": ""})
        if service is not None and not service_ok:
            cmd["Service"] = service
        return [cmd]
    if status == MemberStatus.FAILED:
        if node is None:
            return []
        serf = next((c for c in store.node_checks(member.name) if c["CheckID"] == SERF_CHECK_ID), None)
        if serf is not None and serf.get("Status") == "critical":
            return []
        return [{"Type": "register", "Node": member.name, "Datacenter": datacenter, "SkipNodeUpdate": True,
                 "Checks": [serf_check(member.name, "critical")]}]
    if status == MemberStatus.LEFT:
        return plan_deregister(store, member.name, self_name)
    return []  # leaving (or none): wait for the outcome


def plan_deregister(store: Any, name: str, self_name: str) -> list[Command]:
    if name == self_name or store.node(name) is None:
        return []
    return [{"Type": "deregister", "Node": name}]


def plan_reaped(store: Any, member_names: Iterable[str], self_name: str) -> list[str]:
    """Nodes with a serfHealth check that gossip no longer knows (to be deregistered)."""
    known = {n.lower() for n in member_names}
    out = []
    for node in store.all_nodes():
        name = node["Node"]
        if name == self_name or name.lower() in known:
            continue
        if any(c["CheckID"] == SERF_CHECK_ID for c in store.node_checks(name)):
            out.append(name)
    return out


def plan_name(store: Any, name: str, member: Member | None, *, datacenter: str, self_name: str,
              version: str) -> tuple[list[Command], str]:
    """The commands for one named member and the reason a deregistration gives: its status's plan,
    or, once gossip has forgotten it (reaped), a deregistration if the node has `serfHealth`."""
    if member is None:
        if store.node(name) is not None and any(c["CheckID"] == SERF_CHECK_ID for c in store.node_checks(name)):
            return plan_deregister(store, name, self_name), "reaped"
        return [], "reaped"
    return plan_member(store, member, datacenter=datacenter, self_name=self_name, version=version), "left"


class ReconcileSchedule:
    """When the leader reconciles what (sans-IO; times in seconds of the caller's clock)."""

    def __init__(self, interval_s: float = RECONCILE_INTERVAL_S, reap_grace_s: float = REAP_GRACE_S) -> None:
        self.interval_s = interval_s
        self.reap_grace_s = reap_grace_s
        self.pending: set[str] = set()  # members named by gossip events since the last pass
        self.full = True  # the next pass covers every member
        self.leader = False
        self.next_full = 0.0
        self.reap_from = 0.0  # no reaped-node pass before this time

    def started(self, now: float) -> None:
        self.next_full = now
        self.reap_from = now + self.reap_grace_s

    def on_event(self, name: str) -> None:
        self.pending.add(name)

    def observe(self, leader: bool) -> bool:
        """Record leadership; True when this server has just become leader (a full pass is due).
        A follower forgets the members it was asked about: the leader reconciles them."""
        became = leader and not self.leader
        if became:
            self.full = True
        self.leader = leader
        if not leader:
            self.pending.clear()
        return became

    def full_due(self, now: float) -> bool:
        return self.full or now >= self.next_full

    def begin_full(self) -> None:
        self.pending.clear()

    def end_full(self, ok: bool, now: float) -> None:
        if ok:
            self.full = False
        self.next_full = now + self.interval_s

    def member_failed(self) -> None:
        self.full = True

    def reap_due(self, now: float) -> bool:
        return now >= self.reap_from

    def wait_s(self, now: float) -> float:
        """How long to sleep before looking again (unless a gossip event wakes the loop)."""
        if not self.leader:
            return LEADER_POLL_S
        return min(LEADER_POLL_S * 5, max(0.0, self.next_full - now))


class MemberReconciler:
    """Runs the reconciliation on the leader (see the module docstring)."""

    def __init__(self, *, store: Any, consensus: Any, members: Callable[[], list[Member]],
                 member: Callable[[str], Member | None], datacenter: str, self_name: str, version: str,
                 on_leadership: Callable[[], None] | None = None) -> None:
        self.store = store
        self.consensus = consensus
        self.members = members
        self.member = member
        self.datacenter = datacenter
        self.self_name = self_name
        self.version = version
        self.on_leadership = on_leadership
        self.proposed = 0
        self.schedule = ReconcileSchedule()
        self._wake = asyncio.Event()

    def on_event(self, event: SerfEvent, member: Member | None) -> None:
        """Gossip subscriber: reconcile this member soon (if we lead)."""
        if event.node:
            self.schedule.on_event(event.node)
            self._wake.set()

    async def reconcile_all(self) -> None:
        """Every member, then nodes gossip has forgotten (raises if a proposal fails)."""
        members = self.members()
        for member in members:
            await self._apply(member.name, self._plan(member))
        if not self.schedule.reap_due(asyncio.get_running_loop().time()):
            return
        for name in plan_reaped(self.store, (m.name for m in members), self.self_name):
            await self._apply(name, plan_deregister(self.store, name, self.self_name), "reaped")

    async def reconcile_member(self, name: str) -> None:
        commands, reason = plan_name(self.store, name, self.member(name), datacenter=self.datacenter,
                                     self_name=self.self_name, version=self.version)
        await self._apply(name, commands, reason)

    def _plan(self, member: Member) -> list[Command]:
        return plan_member(self.store, member, datacenter=self.datacenter, self_name=self.self_name,
                           version=self.version)

    async def _apply(self, name: str, commands: list[Command], reason: str = "left") -> None:
        for cmd in commands:
            if cmd["Type"] == "deregister":
                log.info("deregistering member: member=%s partition=default reason=%s", name, reason)
            elif cmd["Checks"][0]["Status"] == "critical":
                log.info("member failed, marking health critical: member=%s partition=default", name)
            elif name != self.self_name:
                log.info("member joined, marking health alive: member=%s partition=default", name)
            await self.consensus.propose(cmd)
            self.proposed += 1

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """Until cancelled: follow leadership, reconcile on events and every interval."""
        task_status.started()
        loop = asyncio.get_running_loop()
        schedule = self.schedule
        schedule.started(loop.time())
        while True:
            leader = bool(self.consensus.is_leader)
            if schedule.observe(leader) and self.on_leadership is not None:
                self.on_leadership()
            if leader:
                if schedule.full_due(loop.time()):
                    schedule.begin_full()
                    ok = True
                    try:
                        # Consul's barrier before a pass: the store has applied everything
                        # committed (a new leader's store may lag its log), so the pass plans
                        # against the state it will change, not an older one.
                        await self.consensus.read_point("consistent")
                        await self.reconcile_all()
                    except Exception as err:  # noqa: BLE001 - lost leadership or a timeout: retry
                        ok = False
                        log.warning("failed to reconcile members: error=%s", err)
                    schedule.end_full(ok, loop.time())
                while schedule.pending and self.consensus.is_leader:
                    name = schedule.pending.pop()
                    try:
                        await self.reconcile_member(name)
                    except Exception as err:  # noqa: BLE001 - try again on the next pass
                        log.warning("failed to reconcile member: member=%s error=%s", name, err)
                        schedule.member_failed()
                        break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), schedule.wait_s(loop.time()))
            except TimeoutError:
                pass
