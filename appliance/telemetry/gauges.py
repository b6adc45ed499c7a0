"""Wiring the recorder to the agent's subsystems: the Raft hook and the state gauges.

`build` makes the agent's recorder from the `telemetry` block of the configuration and
`instrument` wires it to the subsystems it watches, each passed as the small interface it is read
through (appliance/interfaces.py), never the agent: the consensus (a `RaftDriver` on a server, a
`Replica` on a client agent) gets a `RaftTelemetry` as its metrics hook, and `state_gauges`
becomes a gauge source. State gauges describe state rather than events (blocking queries
parked, Raft indexes, term and peers, table sizes, leadership, tasks, per-check status); they are
read whenever metrics are read.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import TYPE_CHECKING

from appliance.telemetry.raft import RaftTelemetry
from appliance.telemetry.recorder import Labels, Telemetry

if TYPE_CHECKING:
    from appliance.config.runtime import Telemetry as TelemetryConfig
    from appliance.interfaces import Leadership, MeteredConsensus
    from appliance.local.state import LocalState
    from appliance.state.store import Store
    from appliance.watch import WatchHub

STATUSES = ("passing", "warning", "critical", "maintenance")
Gauges = list[tuple[str, float, Labels]]


def build(cfg: TelemetryConfig, *, consensus: MeteredConsensus, hub: WatchHub, store: Store,
          local: LocalState, raft: Leadership | None) -> Telemetry:
    """The agent's recorder, configured by `cfg` and instrumented (see `instrument`)."""
    tel = Telemetry(prefix=cfg.metrics_prefix, hostname=socket.gethostname(),
                    disable_hostname=cfg.disable_hostname, retention_s=cfg.prometheus_retention_time_s)
    instrument(tel, consensus=consensus, hub=hub, store=store, local=local, raft=raft)
    return tel


def instrument(tel: Telemetry, *, consensus: MeteredConsensus, hub: WatchHub, store: Store,
               local: LocalState, raft: Leadership | None) -> None:
    """Give the consensus its metrics hook; register the agent's state gauges. `raft` is the Raft
    driver on a server (the same object as `consensus`), None on a client agent, which runs no
    Raft and keeps no catalog of its own to report."""
    consensus.metrics = RaftTelemetry(tel)
    tel.add_gauge_source(lambda: state_gauges(consensus=consensus, hub=hub, store=store, local=local, raft=raft))


def state_gauges(*, consensus: MeteredConsensus, hub: WatchHub, store: Store, local: LocalState,
                 raft: Leadership | None) -> Gauges:
    """State gauges, read when metrics are read."""
    out: Gauges = [("rpc.queries_blocking", hub.parked, None)]
    stats = consensus.stats()
    for name, stat in (("raft.applied_index", "applied_index"), ("raft.last_index", "last_log_index"),
                       ("raft.commit_index", "commit_index"), ("raft.term", "term")):
        if stats.get(stat, "").isdigit():
            out.append((name, int(stats[stat]), None))
    if raft is not None:  # a client agent runs no Raft (appliance/client)
        out.append(("raft.peers", len(consensus.peers()), None))
        out += [
            ("state.nodes", len(store.nodes), None),
            ("state.services", len(store.service_index), None),
            ("state.service_instances", sum(len(s) for s in store.services.values()), None),
            ("state.kv_entries", len(store.kv), None),
            ("server.isLeader", 1 if raft.is_leader else 0, None),
        ]
    try:
        out.append(("runtime.num_goroutines", len(asyncio.all_tasks()), None))
    except RuntimeError:  # no running loop (tests)
        pass
    out.append(("runtime.total_gc_runs", sum(s["collections"] for s in gc.get_stats()), None))
    out += check_gauges(local)
    return out


def check_gauges(local: LocalState) -> Gauges:
    """`agent.check.status`: for each of this agent's checks, one series per status, 1 for the current one."""
    out: Gauges = []
    for cid in sorted(local.checks):
        check = local.checks[cid]
        d = check.definition
        svc = local.services.get(d.service_id) if d.service_id else None
        base = {"check_id": cid, "check_name": d.name, "service_id": d.service_id,
                "service_name": svc.definition.name if svc is not None else ""}
        for status in STATUSES:
            out.append(("agent.check.status", 1 if check.status == status else 0, {**base, "status": status}))
    return out
